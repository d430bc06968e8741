/** Files in and out of a sandbox: raw bytes streamed both ways, the fs routes, watches. */
import { sbPath } from './config.js'
import { NotFoundError, SafehouseError } from './errors.js'
import { Http, sse } from './http.js'
import { EntryInfo, entryInfo, FilesystemEvent, filesystemEvent } from './models.js'

export type WriteData = string | Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array>

/** A running directory watch: `stop()`; events go to the callback given to `watchDir`. */
export class WatchHandle {
  constructor(
    private readonly abort: AbortController,
    private readonly done: Promise<void>,
  ) {}

  /** Ends the watch (idempotent). */
  async stop(): Promise<void> {
    this.abort.abort()
    await this.done
  }
}

export class Filesystem {
  constructor(
    private readonly http: Http,
    private readonly sandboxId: string,
  ) {}

  private p(rest: string): string {
    return sbPath(this.sandboxId, rest)
  }

  /** The file's content: text (default), bytes, or a stream of chunks (never the whole file in memory). */
  read(path: string, opts?: { format?: 'text' }): Promise<string>
  read(path: string, opts: { format: 'bytes' }): Promise<Uint8Array>
  read(path: string, opts: { format: 'stream' }): Promise<ReadableStream<Uint8Array>>
  async read(path: string, opts: { format?: 'text' | 'bytes' | 'stream' } = {}): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    const format = opts.format ?? 'text'
    const resp = await this.http.fetch('GET', this.p('/files'), { query: { path }, timeoutMs: format === 'stream' ? null : undefined })
    if (format === 'stream') return resp.body!
    const buf = new Uint8Array(await resp.arrayBuffer())
    return format === 'bytes' ? buf : new TextDecoder().decode(buf)
  }

  /** Writes `data` (streamed when it is a ReadableStream) to `path`; parents are created. */
  async write(path: string, data: WriteData): Promise<EntryInfo> {
    const body = data instanceof ArrayBuffer ? new Uint8Array(data) : data
    const d = await this.http.json('PUT', this.p('/files'), {
      query: { path },
      body: body as BodyInit,
      headers: { 'Content-Type': 'application/octet-stream' },
      timeoutMs: null,
    })
    return entryInfo(d)
  }

  /** Writes several files one after the other; stops at the first error. */
  async writeFiles(files: Array<{ path: string; data: WriteData }>): Promise<EntryInfo[]> {
    const out: EntryInfo[] = []
    for (const f of files) out.push(await this.write(f.path, f.data))
    return out
  }

  async list(path: string, opts: { depth?: number } = {}): Promise<EntryInfo[]> {
    const d = await this.http.json('GET', this.p('/fs/list'), { query: { path, depth: String(opts.depth ?? 1) } })
    return (d.entries ?? []).map(entryInfo)
  }

  async getInfo(path: string): Promise<EntryInfo> {
    return entryInfo(await this.http.json('GET', this.p('/fs/stat'), { query: { path } }))
  }

  async exists(path: string): Promise<boolean> {
    try {
      await this.getInfo(path)
      return true
    } catch (e) {
      if (e instanceof NotFoundError) return false
      throw e
    }
  }

  /** Removes a file, or a directory with its content. */
  async remove(path: string): Promise<void> {
    await this.http.fetch('DELETE', this.p('/fs'), { query: { path, recursive: '1' } })
  }

  async rename(oldPath: string, newPath: string): Promise<EntryInfo> {
    return entryInfo(await this.http.json('POST', this.p('/fs/move'), { json: { from: oldPath, to: newPath } }))
  }

  /** Creates `path` with its parents; false if it already existed (E2B's contract). */
  async makeDir(path: string): Promise<boolean> {
    try {
      await this.http.json('POST', this.p('/fs/mkdir'), { json: { path, parents: false } })
      return true
    } catch (e) {
      if (e instanceof NotFoundError) {
        // a parent is missing: create them all
        await this.http.json('POST', this.p('/fs/mkdir'), { json: { path, parents: true } })
        return true
      }
      if (e instanceof SafehouseError && e.code === 'already_exists') return false
      throw e
    }
  }

  /**
   * Watches `path` (a directory) for changes made through the API or by commands inside;
   * `onEvent` gets each one. The watch is in place when the promise resolves. `onExit` is
   * called once the watch ends (with the error, if it ended by one).
   */
  async watchDir(
    path: string,
    onEvent: (e: FilesystemEvent) => void | Promise<void>,
    opts: { recursive?: boolean; onExit?: (err?: Error) => void } = {},
  ): Promise<WatchHandle> {
    const abort = new AbortController()
    const resp = await this.http.fetch('GET', this.p('/fs/watch'), {
      query: { path, recursive: opts.recursive ? '1' : '0' },
      timeoutMs: null,
      signal: abort.signal,
    })
    const done = (async () => {
      let err: Error | undefined
      try {
        for await (const [event, data] of sse(resp.body!)) {
          if (event === 'fs') await onEvent(filesystemEvent(data, path))
        }
      } catch (e) {
        if (!abort.signal.aborted) err = this.http.translate(e)
      }
      opts.onExit?.(err)
    })()
    return new WatchHandle(abort, done)
  }
}
