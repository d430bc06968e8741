// The daemon's HTTP API, as the console calls it: same origin, the key in the
// Authorization header of every request (never a URL, never a cookie).

import { SseEvent, SseParser } from './sse';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface Sandbox {
  id: string;
  state: string;
  created_at: string;
  expires_at: string;
  metadata: Record<string, string>;
  tenant?: string;
  preset?: string;
  template?: string;
  isolation?: string;
  pid?: number;
  error?: string;
  network?: Record<string, number>;
}

export interface Whoami {
  tenant: string;
  key_id: string | null;
  admin: boolean;
}

export interface StreamOptions {
  signal: AbortSignal;
  /** Called when the stream is (re)connected. */
  onOpen?: () => void;
  /** Called when it broke; `retrying` is false for a final error (a 4xx). */
  onError?: (e: unknown, retrying: boolean) => void;
  /** Called when the server ended it (no retry). */
  onEnd?: () => void;
  /** Reconnect after the server ends the stream (default: no). */
  reconnect?: boolean;
}

export class Api {
  constructor(private readonly key: string) {}

  private headers(extra?: Record<string, string>): Headers {
    const h = new Headers(extra);
    h.set('Authorization', `Bearer ${this.key}`);
    return h;
  }

  /** A request; throws ApiError with the daemon's code and message on 4xx/5xx. */
  async fetch(method: string, path: string, body?: BodyInit | object, signal?: AbortSignal): Promise<Response> {
    let payload: BodyInit | undefined;
    const extra: Record<string, string> = {};
    if (body instanceof Blob || typeof body === 'string' || body instanceof ArrayBuffer) {
      payload = body;
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      extra['Content-Type'] = 'application/json';
    }
    const r = await fetch(path, {
      method,
      headers: this.headers(extra),
      body: payload,
      signal,
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
    });
    if (!r.ok) throw await toError(r);
    return r;
  }

  async json<T>(method: string, path: string, body?: BodyInit | object, signal?: AbortSignal): Promise<T> {
    const r = await this.fetch(method, path, body, signal);
    if (r.status === 204) return undefined as T;
    return (await r.json()) as T;
  }

  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.json<T>('GET', path, undefined, signal);
  }

  post<T>(path: string, body?: object, signal?: AbortSignal): Promise<T> {
    return this.json<T>('POST', path, body ?? {}, signal);
  }

  /**
   * Follows a Server-Sent Events stream until `opts.signal` aborts, reconnecting after
   * network errors with a growing delay (a 4xx is final: reported and not retried).
   */
  stream(path: string, onEvent: (e: SseEvent) => void, opts: StreamOptions): void {
    let delay = 500;
    const run = async () => {
      while (!opts.signal.aborted) {
        try {
          const r = await this.fetch('GET', path, undefined, opts.signal);
          opts.onOpen?.();
          delay = 500;
          const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
          const parser = new SseParser();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            for (const e of parser.feed(value)) onEvent(e);
          }
          if (!opts.reconnect) {
            opts.onEnd?.();
            return;
          }
        } catch (e) {
          if (opts.signal.aborted) return;
          const final = e instanceof ApiError && e.status < 500;
          opts.onError?.(e, !final);
          if (final) return;
        }
        await sleep(delay, opts.signal);
        delay = Math.min(delay * 2, 10_000);
      }
    };
    void run();
  }
}

async function toError(r: Response): Promise<ApiError> {
  try {
    const j = await r.json();
    if (j && j.error) return new ApiError(r.status, String(j.error.code), String(j.error.message));
  } catch {
    // not JSON: fall through
  }
  return new ApiError(r.status, 'http_' + r.status, `${r.status} ${r.statusText}`);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/** A path with its query, every value encoded. */
export function withQuery(path: string, q: Record<string, string | number | boolean | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `${path}?${s}` : path;
}

/** Percent-encodes a sandbox id for a path (ids are plain, but never trust a string). */
export function sb(id: string): string {
  return `/v1/sandboxes/${encodeURIComponent(id)}`;
}
