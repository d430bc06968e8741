/** One request path for every call: the key, timeouts, and failures as typed errors. */
import { ConnectionConfig, headers } from './config.js'
import { errorFromResponse, SafehouseError, SafehouseTimeoutError } from './errors.js'
import { certFailure } from './tls.js'
import { fetch as undiciFetch } from 'undici'

export interface RequestOptions {
  query?: Record<string, string>
  json?: unknown
  body?: BodyInit
  headers?: Record<string, string>
  /** Milliseconds; null: no overall limit (streams). Default: the config's request timeout. */
  timeoutMs?: number | null
  signal?: AbortSignal
}

export class Http {
  constructor(readonly config: ConnectionConfig) {}

  url(path: string, query?: Record<string, string>): string {
    const q = query && Object.keys(query).length ? '?' + new URLSearchParams(query).toString() : ''
    return this.config.url + path + q
  }

  /** Sends the request; an error status throws the typed error (the body is read for it). */
  async fetch(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const h: Record<string, string> = { ...headers(this.config), ...(opts.headers ?? {}) }
    let body = opts.body
    if (opts.json !== undefined) {
      h['Content-Type'] = 'application/json'
      body = JSON.stringify(opts.json)
    }
    const timeoutMs = opts.timeoutMs === undefined ? this.config.requestTimeoutMs : opts.timeoutMs
    const signals = [opts.signal, timeoutMs === null ? undefined : AbortSignal.timeout(timeoutMs)].filter(
      (s): s is AbortSignal => s !== undefined,
    )
    const init: RequestInit & { duplex?: string } = {
      method,
      headers: h,
      body,
      signal: signals.length ? AbortSignal.any(signals) : undefined,
    }
    if (body && typeof (body as ReadableStream).getReader === 'function') init.duplex = 'half'
    let resp: Response
    try {
      const tls = this.config.tls
      resp = tls
        ? ((await undiciFetch(this.url(path, opts.query), {
            ...(init as Parameters<typeof undiciFetch>[1]),
            dispatcher: tls.dispatcher,
          })) as unknown as Response)
        : await fetch(this.url(path, opts.query), init)
    } catch (e) {
      throw this.translate(e)
    }
    if (resp.status >= 400) {
      throw errorFromResponse(resp.status, await resp.text())
    }
    return resp
  }

  async json(method: string, path: string, opts: RequestOptions = {}): Promise<any> {
    const resp = await this.fetch(method, path, opts)
    if (resp.status === 204) return null
    const text = await resp.text()
    return text ? JSON.parse(text) : null
  }

  translate(e: unknown): SafehouseError {
    if (e instanceof SafehouseError) return e
    const err = e as Error & { cause?: { message?: string; code?: string } }
    if (err.name === 'TimeoutError') return new SafehouseTimeoutError(`request to ${this.config.url} timed out`)
    if (err.name === 'AbortError') return new SafehouseError('request aborted')
    const tls = certFailure(e)
    if (tls) return new SafehouseError(`cannot talk to the safehouse daemon at ${this.config.url}: ${tls}`)
    const detail = err.cause?.code ?? err.cause?.message ?? err.message
    return new SafehouseError(
      `cannot reach the safehouse daemon at ${this.config.url} (${detail}); start it (\`safehouse serve\`) or ` +
        'set SAFEHOUSE_URL to where it listens (with neither SAFEHOUSE_URL nor SAFEHOUSE_API_KEY set, the SDK ' +
        'starts a local daemon itself)',
    )
  }
}

/** Server-Sent Events from a response body: `(event, data)` pairs; comments skipped. */
export async function* sse(body: ReadableStream<Uint8Array>): AsyncGenerator<[string, string]> {
  const decoder = new TextDecoder()
  let buf = ''
  let event = ''
  let data: string[] = []
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true })
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '')
      buf = buf.slice(nl + 1)
      if (line === '') {
        if (data.length || event) yield [event || 'message', data.join('\n')]
        event = ''
        data = []
        continue
      }
      if (line.startsWith(':')) continue
      const i = line.indexOf(':')
      const field = i < 0 ? line : line.slice(0, i)
      let value = i < 0 ? '' : line.slice(i + 1)
      if (value.startsWith(' ')) value = value.slice(1)
      if (field === 'event') event = value
      else if (field === 'data') data.push(value)
    }
  }
}
