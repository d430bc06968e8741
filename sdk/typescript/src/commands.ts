/** Commands in a sandbox: foreground runs with their resource envelope, streamed runs,
 * background processes and PTYs on the attach WebSocket (docs/api.md). */
import WebSocket from 'ws'

import { headers, sbPath, wsUrl } from './config.js'
import { CommandExitError, errorFromResponse, NotFoundError, SafehouseError, SafehouseTimeoutError } from './errors.js'
import { Http } from './http.js'
import { certFailure, finishRequest, tlsOptions } from './tls.js'
import { CommandResult, commandResult, describeFailure, ProcessInfo, processInfo, PtySize } from './models.js'

export type Cmd = string | string[]
export type Signal = number | string

export interface RunOptions {
  envs?: Record<string, string>
  cwd?: string
  /** Seconds (default 60; 0: no limit but the daemon's maximum of a day). */
  timeout?: number
  /** Fed to the command's stdin (at most 1 MiB in a foreground run: write a file with `files.write` for more). */
  stdin?: string
  /** Memory limit of a foreground run ("256MiB" or bytes). */
  memory?: string | number
  /** Streams stdout as it comes (the run then goes through a background process). */
  onStdout?: (data: string) => void
  onStderr?: (data: string) => void
  /** Return a CommandResult with a non-zero exit instead of throwing CommandExitError. */
  raiseOnError?: boolean
}

export interface BackgroundOptions extends Omit<RunOptions, 'memory' | 'raiseOnError'> {
  background: true
}

/** Seconds to wait for a command (E2B's convention: 0 means no limit; the daemon's maximum is a day). */
const timeoutS = (t: number | undefined): number => (t === undefined ? 60 : t === 0 ? 86_400 : t)
/** Extra seconds the client waits beyond a command's own timeout. */
const GRACE_S = 30
/** The daemon's cap on a JSON request body; stdin rides in one. */
const STDIN_CAP = 1 << 20

function execBody(cmd: Cmd, o: RunOptions): Record<string, unknown> {
  const body: Record<string, unknown> = { cmd, timeout_s: timeoutS(o.timeout) }
  if (o.envs) body.env = o.envs
  if (o.cwd !== undefined) body.cwd = o.cwd
  if (o.stdin !== undefined) {
    if (Buffer.byteLength(o.stdin) > STDIN_CAP - 64 * 1024) {
      throw new SafehouseError(
        `stdin of ${Buffer.byteLength(o.stdin)} bytes is over what a foreground run carries (~1 MiB): ` +
          'write it to a file with files.write and redirect it (`cmd < /workspace/input`), or run in the ' +
          'background and use sendStdin',
      )
    }
    body.stdin = o.stdin
  }
  if (o.memory !== undefined) body.limits = { memory: o.memory }
  return body
}

/**
 * A background process or a PTY. `wait()` streams its output to the callbacks until it
 * exits; `for await (const chunk of handle)` yields `{stdout}`, `{stderr}` or `{pty}` chunks.
 * Output produced before attaching is replayed by the daemon (up to 2 MiB).
 */
export class CommandHandle {
  private ws?: WebSocket
  private opened?: Promise<WebSocket>
  private stdout: Buffer[] = []
  private stderr: Buffer[] = []
  private decOut = new TextDecoder()
  private decErr = new TextDecoder()
  private exit?: { exit_code: number | null; signal: number | null; wall_ms: number | null; cpu_ms: number | null; peak_memory_bytes: number | null }
  private waiters: Array<() => void> = []
  private queue: Array<{ stdout?: string; stderr?: string; pty?: Uint8Array }> = []
  private failure?: SafehouseError
  private timer?: NodeJS.Timeout
  /** Bytes the daemon's replay buffer dropped before this handle attached. */
  droppedBytes = 0
  /** Refusals of frames sent over the attach socket (e.g. a resize of a non-PTY process). */
  readonly errors: string[] = []

  constructor(
    private readonly commands: Commands,
    readonly pid: number,
    private onStdout?: (data: string) => void,
    private onStderr?: (data: string) => void,
    private onPty?: (data: Uint8Array) => void,
    private readonly pty = false,
  ) {}

  /** Opens the attach socket (once); output then flows to the callbacks and the iterator. */
  connect(): Promise<WebSocket> {
    if (this.opened) return this.opened
    const http = this.commands.http
    const url = wsUrl(http.config, sbPath(this.commands.sandboxId, `/processes/${this.pid}/attach`))
    this.opened = new Promise((resolve, reject) => {
      const trust = http.config.tls
      const ws = new WebSocket(url, {
        headers: headers(http.config),
        handshakeTimeout: 15_000,
        ...(trust ? { ...tlsOptions(trust), ...(trust.fingerprint ? { finishRequest: finishRequest(trust) } : {}) } : {}),
      })
      ws.on('unexpected-response', (_req, res) => {
        let body = ''
        res.on('data', (c: Buffer) => (body += c.toString()))
        res.on('end', () => reject(errorFromResponse(res.statusCode ?? 0, body)))
      })
      ws.on('open', () => {
        this.ws = ws
        resolve(ws)
      })
      ws.on('message', (data: Buffer, isBinary: boolean) => this.onFrame(data, isBinary))
      ws.on('error', (e) => {
        const err = new SafehouseError(`attach to process ${this.pid}: ${certFailure(e) ?? e.message}`)
        reject(err)
        this.fail(err)
      })
      ws.on('close', () => {
        if (!this.exit) this.fail(new SafehouseError(`attach connection to process ${this.pid} closed before its exit`))
      })
    })
    return this.opened
  }

  private fail(err: SafehouseError): void {
    if (this.exit || this.failure) return
    this.failure = err
    this.wake()
  }

  private wake(): void {
    const w = this.waiters
    this.waiters = []
    w.forEach((f) => f())
  }

  private onFrame(data: Buffer, isBinary: boolean): void {
    const frame = isBinary ? { type: 'stdout', raw: data } : JSON.parse(data.toString())
    const bytes = (): Buffer => frame.raw ?? Buffer.from(frame.data ?? '', 'base64')
    switch (frame.type) {
      case 'stdout': {
        const b = bytes()
        this.stdout.push(b)
        if (this.pty) {
          this.onPty?.(b)
          this.queue.push({ pty: b })
        } else {
          const text = this.decOut.decode(b, { stream: true })
          if (text) {
            this.onStdout?.(text)
            this.queue.push({ stdout: text })
          }
        }
        break
      }
      case 'stderr': {
        const b = bytes()
        this.stderr.push(b)
        const text = this.decErr.decode(b, { stream: true })
        if (text) {
          this.onStderr?.(text)
          this.queue.push({ stderr: text })
        }
        break
      }
      case 'truncated':
        this.droppedBytes += Number(frame.dropped_bytes ?? 0)
        break
      case 'exit':
        this.exit = {
          exit_code: frame.exit_code ?? null,
          signal: frame.signal ?? null,
          wall_ms: frame.wall_ms ?? null,
          cpu_ms: frame.cpu_ms ?? null,
          peak_memory_bytes: frame.peak_memory_bytes ?? null,
        }
        if (this.timer) clearTimeout(this.timer)
        this.ws?.close()
        break
      case 'error':
        this.errors.push(`${frame.code}: ${frame.message}`)
        break
    }
    this.wake()
  }

  private next(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve))
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<{ stdout?: string; stderr?: string; pty?: Uint8Array }> {
    await this.connect()
    for (;;) {
      while (this.queue.length) yield this.queue.shift()!
      if (this.exit) return
      if (this.failure) throw this.failure
      await this.next()
    }
  }

  /** The exit code once the exit was seen, else undefined. */
  get exitCode(): number | null | undefined {
    return this.exit?.exit_code
  }

  /**
   * Streams the output until the process exits and returns its result; a non-zero exit
   * throws CommandExitError (like E2B) unless `raiseOnError: false`; `timeoutMs` throws
   * SafehouseTimeoutError (the process keeps running).
   */
  async wait(
    opts: {
      timeoutMs?: number
      onStdout?: (d: string) => void
      onStderr?: (d: string) => void
      onPty?: (d: Uint8Array) => void
      raiseOnError?: boolean
    } = {},
  ): Promise<CommandResult> {
    this.onStdout = opts.onStdout ?? this.onStdout
    this.onStderr = opts.onStderr ?? this.onStderr
    this.onPty = opts.onPty ?? this.onPty
    await this.connect()
    const deadline = opts.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs
    while (!this.exit) {
      if (this.failure) throw this.failure
      if (deadline === undefined) {
        await this.next()
        continue
      }
      const left = deadline - Date.now()
      if (left <= 0) throw new SafehouseTimeoutError(`process ${this.pid} did not exit in time`)
      let t: NodeJS.Timeout | undefined
      await Promise.race([this.next(), new Promise<void>((r) => (t = setTimeout(r, left)))])
      clearTimeout(t)
    }
    this.queue = []
    const r = {
      stdout: Buffer.concat(this.stdout).toString('utf8'),
      stderr: Buffer.concat(this.stderr).toString('utf8'),
      exitCode: this.exit.exit_code,
      signal: this.exit.signal,
      timedOut: false,
      oomKilled: false,
      wallMs: this.exit.wall_ms,
      cpuMs: this.exit.cpu_ms,
      peakMemoryBytes: this.exit.peak_memory_bytes,
      stdoutTruncated: false,
      stderrTruncated: false,
    }
    const result = { ...r, error: describeFailure(r) }
    if ((opts.raiseOnError ?? true) && result.exitCode !== 0) throw new CommandExitError(result)
    return result
  }

  sendStdin(data: string | Uint8Array): Promise<void> {
    return this.commands.sendStdin(this.pid, data)
  }

  closeStdin(): Promise<void> {
    return this.commands.closeStdin(this.pid)
  }

  signal(sig: Signal): Promise<boolean> {
    return this.commands.signal(this.pid, sig)
  }

  kill(): Promise<boolean> {
    return this.commands.kill(this.pid)
  }

  /** Sets a PTY's terminal size (SIGWINCH inside). */
  async resize(size: PtySize): Promise<void> {
    const ws = await this.connect()
    ws.send(JSON.stringify({ type: 'resize', rows: size.rows, cols: size.cols }))
  }

  /** Kills the process after `ms` unless its exit was seen first. */
  killAfter(ms: number): void {
    this.timer = setTimeout(() => void this.kill().catch(() => undefined), ms)
    this.timer.unref()
  }

  /** Stops receiving output; the process keeps running. */
  disconnect(): void {
    if (this.timer) clearTimeout(this.timer)
    this.ws?.close()
  }
}

export class Commands {
  constructor(
    readonly http: Http,
    readonly sandboxId: string,
  ) {}

  private p(rest: string): string {
    return sbPath(this.sandboxId, rest)
  }

  /**
   * Runs `cmd` (a shell string, run by /bin/sh -c, or an argv array). Foreground (default):
   * the result with its resource envelope; a non-zero exit throws CommandExitError unless
   * `raiseOnError: false`. `background: true`: starts a process and returns its handle.
   * With `onStdout`/`onStderr` the output streams to them as it is produced.
   */
  run(cmd: Cmd, opts: BackgroundOptions): Promise<CommandHandle>
  run(cmd: Cmd, opts?: RunOptions & { background?: false }): Promise<CommandResult>
  async run(cmd: Cmd, opts: (RunOptions & { background?: boolean }) = {}): Promise<CommandResult | CommandHandle> {
    if (opts.background || opts.onStdout || opts.onStderr) {
      if (opts.memory !== undefined) throw new SafehouseError('memory applies to foreground runs without callbacks')
      const handle = await this.start(cmd, opts)
      await handle.connect()
      if (opts.stdin !== undefined) {
        await this.sendStdin(handle.pid, opts.stdin)
        await this.closeStdin(handle.pid)
      }
      if (opts.background) return handle
      const t = timeoutS(opts.timeout)
      handle.killAfter(t * 1000)
      try {
        return await handle.wait({ timeoutMs: (t + GRACE_S) * 1000, raiseOnError: opts.raiseOnError })
      } finally {
        handle.disconnect()
      }
    }
    const t = timeoutS(opts.timeout)
    const d = await this.http.json('POST', this.p('/exec'), { json: execBody(cmd, opts), timeoutMs: (t + GRACE_S) * 1000 })
    const result = commandResult(d)
    if ((opts.raiseOnError ?? true) && (result.exitCode !== 0 || result.timedOut)) throw new CommandExitError(result)
    return result
  }

  private async start(cmd: Cmd, opts: RunOptions, pty?: PtySize, onPty?: (d: Uint8Array) => void): Promise<CommandHandle> {
    const body: Record<string, unknown> = { cmd }
    if (opts.envs) body.env = opts.envs
    if (opts.cwd !== undefined) body.cwd = opts.cwd
    if (pty) body.pty = { rows: pty.rows, cols: pty.cols }
    const d = await this.http.json('POST', this.p('/processes'), { json: body })
    return new CommandHandle(this, Number(d.pid), opts.onStdout, opts.onStderr, onPty, Boolean(pty))
  }

  /** @internal */
  startPty(cmd: Cmd, size: PtySize, opts: RunOptions, onData?: (d: Uint8Array) => void): Promise<CommandHandle> {
    return this.start(cmd, opts, size, onData)
  }

  /** A handle to a running (or exited, still listed) process. */
  async connect(pid: number, opts: { onStdout?: (d: string) => void; onStderr?: (d: string) => void } = {}): Promise<CommandHandle> {
    if (!(await this.list()).some((p) => p.pid === pid)) {
      throw new NotFoundError(`no process ${pid} in sandbox ${this.sandboxId}`, { status: 404, code: 'not_found' })
    }
    const h = new CommandHandle(this, pid, opts.onStdout, opts.onStderr)
    await h.connect()
    return h
  }

  async list(): Promise<ProcessInfo[]> {
    const d = await this.http.json('GET', this.p('/processes'))
    return (d.processes ?? []).map(processInfo)
  }

  /** Sends a signal (a number or a name such as "SIGTERM"); false if there is no such process. */
  async signal(pid: number, sig: Signal): Promise<boolean> {
    try {
      await this.http.json('POST', this.p(`/processes/${pid}/signal`), { json: { signal: sig } })
      return true
    } catch (e) {
      if (e instanceof NotFoundError) return false
      throw e
    }
  }

  kill(pid: number): Promise<boolean> {
    return this.signal(pid, 'SIGKILL')
  }

  async sendStdin(pid: number, data: string | Uint8Array): Promise<void> {
    await this.http.fetch('POST', this.p(`/processes/${pid}/stdin`), {
      body: typeof data === 'string' ? data : Buffer.from(data),
      headers: { 'Content-Type': 'application/octet-stream' },
    })
  }

  async closeStdin(pid: number): Promise<void> {
    await this.http.fetch('POST', this.p(`/processes/${pid}/stdin`), {
      query: { eof: '1' },
      body: '',
      headers: { 'Content-Type': 'application/octet-stream' },
    })
  }
}

/** Interactive terminals (E2B's `sandbox.pty`). */
export class Pty {
  constructor(private readonly commands: Commands) {}

  /** Starts `cmd` (an interactive login bash by default) on a terminal; output goes to `onData`. */
  async create(
    opts: {
      size?: PtySize
      onData?: (data: Uint8Array) => void
      cwd?: string
      envs?: Record<string, string>
      cmd?: Cmd
      timeoutMs?: number
    } = {},
  ): Promise<CommandHandle> {
    const envs = { TERM: 'xterm-256color', ...(opts.envs ?? {}) }
    const h = await this.commands.startPty(opts.cmd ?? ['/bin/bash', '-i', '-l'], opts.size ?? { rows: 24, cols: 80 }, { envs, cwd: opts.cwd }, opts.onData)
    await h.connect()
    if (opts.timeoutMs) h.killAfter(opts.timeoutMs)
    return h
  }

  /** Types into the terminal ("\x03" is Ctrl-C). */
  sendStdin(pid: number, data: string | Uint8Array): Promise<void> {
    return this.commands.sendStdin(pid, data)
  }

  kill(pid: number): Promise<boolean> {
    return this.commands.kill(pid)
  }
}
