/** `Sandbox`: create, connect, list and kill sandboxes; its `commands`, `files` and `pty`. */
import { ConnectionOptions, resolveConfig, sbPath } from './config.js'
import { Commands, Pty, RunOptions } from './commands.js'
import { NotFoundError, SafehouseError } from './errors.js'
import { Filesystem } from './files.js'
import { Http, sse } from './http.js'
import { CommandResult, Metrics, metrics, SandboxEvent, sandboxEvent, SandboxInfo, sandboxInfo } from './models.js'

export interface CreateOptions extends ConnectionOptions {
  /** A policy as the API takes it (docs/POLICY.md; the TOML schema as JSON). */
  policy?: Record<string, unknown>
  /** A built-in policy (`safehouse policy show`). */
  preset?: string
  /** Seconds the sandbox lives unless killed or extended (default 300). */
  timeout?: number
  env?: Record<string, string>
  metadata?: Record<string, string>
  /** A template or image of the daemon's image store as the root filesystem (`Sandbox.listTemplates()`). */
  template?: string
}

const CODE_RUNNERS: Record<string, string[]> = {
  python: ['python3', '-c'],
  python3: ['python3', '-c'],
  bash: ['bash', '-c'],
  sh: ['/bin/sh', '-c'],
  javascript: ['node', '-e'],
  js: ['node', '-e'],
  node: ['node', '-e'],
}

/**
 * A live sandbox on a safehouse daemon.
 *
 *     const sbx = await Sandbox.create()
 *     console.log((await sbx.commands.run('echo hello')).stdout)
 *     await sbx.kill()
 */
export class Sandbox {
  readonly commands: Commands
  readonly files: Filesystem
  readonly pty: Pty

  private constructor(
    private info: SandboxInfo,
    private readonly http: Http,
  ) {
    this.commands = new Commands(http, info.id)
    this.files = new Filesystem(http, info.id)
    this.pty = new Pty(this.commands)
  }

  get id(): string {
    return this.info.id
  }

  /** E2B's name. */
  get sandboxId(): string {
    return this.info.id
  }

  static async create(opts: CreateOptions = {}): Promise<Sandbox> {
    if (typeof opts.policy === 'string') {
      throw new SafehouseError(
        'policy takes an object (the TOML schema as JSON, docs/POLICY.md), not a string: parse a TOML file ' +
          'first, or use preset for a built-in policy',
      )
    }
    const http = new Http(resolveConfig(opts))
    const body: Record<string, unknown> = { timeout_s: opts.timeout ?? 300 }
    if (opts.policy) body.policy = opts.policy
    if (opts.preset) body.preset = opts.preset
    if (opts.env) body.env = opts.env
    if (opts.metadata) body.metadata = opts.metadata
    if (opts.template) body.template = opts.template
    return new Sandbox(sandboxInfo(await http.json('POST', '/v1/sandboxes', { json: body })), http)
  }

  static async connect(sandboxId: string, opts: ConnectionOptions = {}): Promise<Sandbox> {
    const http = new Http(resolveConfig(opts))
    return new Sandbox(sandboxInfo(await http.json('GET', sbPath(sandboxId))), http)
  }

  /** The tenant's sandboxes, filtered by metadata (all pairs must match) and state. */
  static async list(opts: ConnectionOptions & { metadata?: Record<string, string>; state?: string } = {}): Promise<SandboxInfo[]> {
    const http = new Http(resolveConfig(opts))
    const query: Record<string, string> = {}
    for (const [k, v] of Object.entries(opts.metadata ?? {})) query[`metadata.${k}`] = v
    if (opts.state) query.state = opts.state
    const d = await http.json('GET', '/v1/sandboxes', { query })
    return (d.sandboxes ?? []).map(sandboxInfo)
  }

  /** The templates and images of the daemon's image store a sandbox can start from. */
  static async listTemplates(opts: ConnectionOptions = {}): Promise<Record<string, unknown>[]> {
    const d = await new Http(resolveConfig(opts)).json('GET', '/v1/templates')
    return d.templates ?? []
  }

  /** Kills a sandbox by id; false if the daemon does not know it. */
  static async killById(sandboxId: string, opts: ConnectionOptions = {}): Promise<boolean> {
    return killRequest(new Http(resolveConfig(opts)), sandboxId)
  }

  /** The emergency stop: every sandbox the key may see (the admin key: all). */
  static async killAll(opts: ConnectionOptions = {}): Promise<{ killed: number; ms: number }> {
    return new Http(resolveConfig(opts)).json('POST', '/v1/kill-all', { json: {} })
  }

  /** Every sandbox's events of the key's tenant (an admin key: all of them). */
  static allEvents(opts: ConnectionOptions & { follow?: boolean; replay?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<SandboxEvent> {
    const query = { follow: opts.follow === false ? '0' : '1', replay: opts.replay === false ? '0' : '1' }
    return events(new Http(resolveConfig(opts)), '/v1/events', query, opts.signal)
  }

  async getInfo(): Promise<SandboxInfo> {
    this.info = sandboxInfo(await this.http.json('GET', sbPath(this.id)))
    return this.info
  }

  async isRunning(): Promise<boolean> {
    try {
      return (await this.getInfo()).state === 'running'
    } catch (e) {
      if (e instanceof NotFoundError) return false
      throw e
    }
  }

  /** The sandbox now expires `timeout` seconds from now. */
  async setTimeout(timeout: number): Promise<SandboxInfo> {
    this.info = sandboxInfo(await this.http.json('POST', sbPath(this.id, '/timeout'), { json: { timeout_s: Math.trunc(timeout) } }))
    return this.info
  }

  /** Kills the sandbox (idempotent); false if the daemon does not know it. */
  kill(): Promise<boolean> {
    return killRequest(this.http, this.id)
  }

  /** Runs a snippet (python, bash, sh, javascript); an error in the code is a result, not a throw. */
  runCode(code: string, opts: Omit<RunOptions, 'raiseOnError'> & { language?: string } = {}): Promise<CommandResult> {
    const language = (opts.language ?? 'python').toLowerCase()
    const runner = CODE_RUNNERS[language]
    if (!runner) {
      throw new SafehouseError(`runCode: unknown language ${JSON.stringify(language)}; use one of ${Object.keys(CODE_RUNNERS).sort().join(', ')}`)
    }
    return this.commands.run([...runner, code], { ...opts, raiseOnError: false })
  }

  /** Resource use now and over the last five minutes (one sample a second). */
  async getMetrics(): Promise<Metrics> {
    return metrics(await this.http.json('GET', sbPath(this.id, '/metrics')))
  }

  /** This sandbox's events: the replay, then (follow) live ones until it ends. */
  events(opts: { follow?: boolean; sinceSeq?: number; signal?: AbortSignal } = {}): AsyncGenerator<SandboxEvent> {
    const query = { follow: opts.follow === false ? '0' : '1', since_seq: String(opts.sinceSeq ?? 0) }
    return events(this.http, sbPath(this.id, '/events'), query, opts.signal)
  }

  /** Stops every process with the cgroup freezer (state `frozen`) until `thaw()`. */
  async freeze(): Promise<SandboxInfo> {
    this.info = sandboxInfo(await this.http.json('POST', sbPath(this.id, '/freeze')))
    return this.info
  }

  async thaw(): Promise<SandboxInfo> {
    this.info = sandboxInfo(await this.http.json('POST', sbPath(this.id, '/thaw')))
    return this.info
  }

  /** The daemon URL that reaches `port` inside the sandbox (requests need this client's key). */
  portUrl(port: number, path = '/'): string {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new SafehouseError(`port must be a number from 1 to 65535, not ${port}`)
    return this.http.config.url + sbPath(this.id, `/ports/${port}/${path.replace(/^\/+/, '')}`)
  }
}

async function killRequest(http: Http, id: string): Promise<boolean> {
  try {
    await http.fetch('DELETE', sbPath(id))
    return true
  } catch (e) {
    if (e instanceof NotFoundError) return false
    throw e
  }
}

async function* events(http: Http, path: string, query: Record<string, string>, signal?: AbortSignal): AsyncGenerator<SandboxEvent> {
  const resp = await http.fetch('GET', path, { query, timeoutMs: null, signal })
  try {
    for await (const [event, data] of sse(resp.body!)) yield sandboxEvent(event, data)
  } catch (e) {
    if (signal?.aborted) return
    throw http.translate(e)
  }
}
