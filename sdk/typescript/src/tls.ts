/**
 * How the SDK trusts an `https://` daemon (docs/tls.md), as the CLI and the Python SDK do:
 * the CA file in `SAFEHOUSE_CA_CERT` (or the `caCert` option), the leaf certificate's SHA-256
 * in `SAFEHOUSE_TLS_FINGERPRINT` (or `tlsFingerprint`: a pin, the name and issuer then do not
 * matter), both (chain and pin must hold), or else Node's default trust store. Verification
 * is never skipped. The pin is checked once the handshake is done and before the request is
 * written, so the API key never reaches a server that fails it.
 */
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import * as tls from 'node:tls'
import type { ClientRequest } from 'node:http'

import { Agent, buildConnector } from 'undici'

import { SafehouseError } from './errors.js'

export const ENV_CA = 'SAFEHOUSE_CA_CERT'
export const ENV_FINGERPRINT = 'SAFEHOUSE_TLS_FINGERPRINT'

export const FIX =
  "set SAFEHOUSE_CA_CERT to the CA certificate that issued the daemon's certificate (DATA_DIR/tls/ca.crt for " +
  '`safehouse serve --tls-self-signed`) or SAFEHOUSE_TLS_FINGERPRINT to the SHA-256 fingerprint `safehouse serve` printed'

export interface TlsTrust {
  /** PEM CA certificates (the file's contents). */
  ca?: string
  /** `AB:CD:...`, upper case. */
  fingerprint?: string
  /** The undici dispatcher for fetch. */
  dispatcher: Agent
}

/** `AB:CD:...`, `abcd...` or `sha256:...` → `AB:CD:...`. */
export function normalizeFingerprint(value: string): string {
  const hex = value.trim().replace(/^sha256:/i, '').replace(/:/g, '')
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new SafehouseError(
      `${ENV_FINGERPRINT}=${JSON.stringify(value)}: write the 64 hex digits of a SHA-256 fingerprint ` +
        '(AB:CD:... as `safehouse serve` prints it)',
    )
  }
  return hex.toUpperCase().match(/../g)!.join(':')
}

/** The trust for `url` the options and environment ask for; undefined: Node's defaults (or plain http). */
export function resolveTrust(url: string, caCert?: string, fingerprint?: string): TlsTrust | undefined {
  if (!url.startsWith('https://')) return undefined
  const caPath = caCert ?? (process.env[ENV_CA] || undefined)
  const fpText = fingerprint ?? (process.env[ENV_FINGERPRINT]?.trim() || undefined)
  if (!caPath && !fpText) return undefined
  let ca: string | undefined
  if (caPath) {
    try {
      ca = readFileSync(caPath, 'utf8')
    } catch (e) {
      throw new SafehouseError(`${ENV_CA}=${caPath}: cannot read it (${(e as Error).message})`)
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) {
      throw new SafehouseError(`${ENV_CA}=${caPath}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)`)
    }
  }
  const fp = fpText ? normalizeFingerprint(fpText) : undefined
  const trust = { ca, fingerprint: fp } as TlsTrust
  trust.dispatcher = new Agent({ connect: connector(trust) })
  return trust
}

/** The options of a TLS connection with this trust (ws, tls.connect). */
export function tlsOptions(trust: TlsTrust): tls.ConnectionOptions {
  return trust.ca ? { ca: trust.ca, rejectUnauthorized: true } : { rejectUnauthorized: false }
}

/** The pin's verdict on a connected socket: undefined when it holds (or there is none). */
export function pinFailure(trust: TlsTrust, socket: tls.TLSSocket): Error | undefined {
  if (!trust.fingerprint) return undefined
  const got = socket.getPeerCertificate()?.fingerprint256
  if (got === trust.fingerprint) return undefined
  return new SafehouseError(
    `the daemon's TLS certificate is not trusted: the daemon's certificate fingerprint is ${got}, not the pinned ` +
      `${ENV_FINGERPRINT} ${trust.fingerprint}; ${FIX}`,
  )
}

function connector(trust: TlsTrust): buildConnector.connector {
  return (opts, cb) => {
    const host = opts.hostname.replace(/^\[|\]$/g, '')
    const socket = tls.connect({
      host,
      port: Number(opts.port) || 443,
      servername: isIP(host) ? undefined : host,
      ALPNProtocols: ['http/1.1'],
      ...tlsOptions(trust),
    })
    let done = false
    socket.once('secureConnect', () => {
      done = true
      const bad = pinFailure(trust, socket)
      if (bad) {
        socket.destroy()
        cb(bad, null)
      } else {
        cb(null, socket)
      }
    })
    socket.once('error', (e) => {
      if (!done) cb(e, null)
    })
  }
}

/** ws's `finishRequest`: the request is sent only once the pin holds. */
export function finishRequest(trust: TlsTrust): (req: ClientRequest) => void {
  return (req) => {
    req.once('socket', (socket) => {
      ;(socket as tls.TLSSocket).once('secureConnect', () => {
        const bad = pinFailure(trust, socket as tls.TLSSocket)
        if (bad) req.destroy(bad)
        else req.end()
      })
    })
  }
}

/** The message for a refused certificate in `e` or its causes, or undefined. */
export function certFailure(e: unknown): string | undefined {
  let cur = e as { message?: string; code?: string; cause?: unknown } | undefined
  for (let i = 0; cur && i < 5; i++) {
    if (cur instanceof SafehouseError && cur.message.includes('not trusted')) return cur.message
    const code = cur.code ?? ''
    if (
      /^(UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|CERT_|ERR_TLS_CERT_ALTNAME_INVALID|UNABLE_TO_VERIFY_LEAF_SIGNATURE)/.test(code)
    ) {
      return `the daemon's TLS certificate is not trusted: ${cur.message ?? code} (${code}); ${FIX}`
    }
    if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number/i.test(cur.message ?? '')) {
      return `the daemon did not answer in TLS (${cur.message}); if it serves plain HTTP, use http:// in SAFEHOUSE_URL`
    }
    cur = cur.cause as typeof cur
  }
  return undefined
}
