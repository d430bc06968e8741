/**
 * Where the daemon is and which key to use. `SAFEHOUSE_URL` and `SAFEHOUSE_API_KEY` (or the
 * `url` and `apiKey` options); with neither set, the per-user local daemon that the
 * `safehouse` binary starts or reuses (`safehouse local start`; found through
 * `SAFEHOUSE_BIN` or PATH), as in the Python SDK.
 */
import { execFileSync } from 'node:child_process'
import { accessSync, constants, readFileSync } from 'node:fs'
import { delimiter, join } from 'node:path'

import { SafehouseError } from './errors.js'
import { resolveTrust, TlsTrust } from './tls.js'

export const DEFAULT_URL = 'http://127.0.0.1:8700'

export interface ConnectionOptions {
  /** The daemon's URL (default: SAFEHOUSE_URL, else local mode). */
  url?: string
  /** The API key (default: SAFEHOUSE_API_KEY, else local mode's key). */
  apiKey?: string
  /** Milliseconds a plain request may take (default 60 000). */
  requestTimeoutMs?: number
  /** An https:// daemon's CA certificate file (PEM; default: SAFEHOUSE_CA_CERT; docs/tls.md). */
  caCert?: string
  /** An https:// daemon's pinned SHA-256 fingerprint (default: SAFEHOUSE_TLS_FINGERPRINT). */
  tlsFingerprint?: string
}

export interface ConnectionConfig {
  url: string
  apiKey?: string
  requestTimeoutMs: number
  /** How an https:// daemon is verified; undefined: Node's default trust store (or plain http). */
  tls?: TlsTrust
}

let local: { url: string; apiKey: string } | undefined

export function resolveConfig(opts: ConnectionOptions = {}): ConnectionConfig {
  const envUrl = process.env.SAFEHOUSE_URL || undefined
  const envKey = process.env.SAFEHOUSE_API_KEY || undefined
  let url = opts.url ?? envUrl
  let apiKey = opts.apiKey ?? envKey
  if (!url && !apiKey) {
    ;({ url, apiKey } = localDaemon())
  }
  const base = (url ?? DEFAULT_URL).replace(/\/+$/, '')
  return {
    url: base,
    apiKey: apiKey || undefined,
    requestTimeoutMs: opts.requestTimeoutMs ?? 60_000,
    tls: resolveTrust(base, opts.caCert, opts.tlsFingerprint),
  }
}

function findBinary(): string | undefined {
  if (process.env.SAFEHOUSE_BIN) return process.env.SAFEHOUSE_BIN
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue
    const p = join(dir, 'safehouse')
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {
      // not here
    }
  }
  return undefined
}

/** The local daemon's URL and key, started by the binary on the process's first call. */
function localDaemon(): { url: string; apiKey: string } {
  if (local) return local
  const bin = findBinary()
  if (!bin) {
    throw new SafehouseError(
      'no daemon given (SAFEHOUSE_URL and SAFEHOUSE_API_KEY are unset) and no `safehouse` binary found to ' +
        'start a local one: pip install safehouse-runtime (it puts `safehouse` on PATH), name the binary in ' +
        'SAFEHOUSE_BIN, or set SAFEHOUSE_URL and SAFEHOUSE_API_KEY',
    )
  }
  let out: string
  try {
    // stderr is inherited: the binary says once that it started a daemon.
    out = execFileSync(bin, ['local', 'start', '--json'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      timeout: 120_000,
    })
  } catch (e) {
    throw new SafehouseError(`could not start the local safehouse daemon with ${bin}: ${(e as Error).message}`)
  }
  const info = JSON.parse(out)
  let apiKey: string
  try {
    apiKey = readFileSync(info.key_file, 'utf8').trim()
  } catch (e) {
    throw new SafehouseError(`cannot read the local daemon's key ${info.key_file}: ${(e as Error).message}`)
  }
  local = { url: info.url, apiKey }
  return local
}

export function headers(cfg: ConnectionConfig): Record<string, string> {
  const h: Record<string, string> = { 'User-Agent': 'safehouse-typescript/0.1.0' }
  if (cfg.apiKey) h.Authorization = `Bearer ${cfg.apiKey}`
  return h
}

export function wsUrl(cfg: ConnectionConfig, path: string): string {
  return cfg.url.replace(/^http(s?):\/\//, 'ws$1://') + path
}

export function sbPath(id: string, rest = ''): string {
  return `/v1/sandboxes/${encodeURIComponent(id)}${rest}`
}
