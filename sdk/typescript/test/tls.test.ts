/** The SDK against a daemon serving HTTPS (`serve --tls-self-signed`; docs/tls.md): a daemon
 * it does not trust and a wrong pin are refused with the fix named; the outside controls,
 * the CA file or the right pin, work for requests and the attach WebSocket alike. */
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, test } from 'node:test'

import { SafehouseError, Sandbox } from '../src/index.js'
import { Daemon, startDaemon } from './daemon.js'

let daemon: Daemon
let fingerprint: string

const FIX = "set SAFEHOUSE_CA_CERT to the CA certificate that issued the daemon's certificate"

before(async () => {
  daemon = await startDaemon(['--tls-self-signed'])
  process.env.SAFEHOUSE_URL = daemon.url
  process.env.SAFEHOUSE_API_KEY = daemon.adminKey
  delete process.env.SAFEHOUSE_CA_CERT
  delete process.env.SAFEHOUSE_TLS_FINGERPRINT
  // Node's own X.509 parser computes the fingerprint the daemon prints.
  fingerprint = new X509Certificate(readFileSync(join(daemon.dataDir, 'tls', 'server.crt'))).fingerprint256
  assert.match(readFileSync(join(daemon.dataDir, 'daemon.log'), 'utf8'), new RegExp(`fingerprint ${fingerprint}`))
})

after(async () => {
  await daemon?.stop()
})

async function refusal(opts: Record<string, string>): Promise<string> {
  const err = await Sandbox.list(opts).then(
    () => undefined,
    (e: unknown) => e,
  )
  assert.ok(err instanceof SafehouseError, `expected a refusal, got ${String(err)}`)
  return err.message
}

test('an untrusted daemon is refused, naming the fix', async () => {
  const msg = await refusal({})
  assert.ok(msg.startsWith(`cannot talk to the safehouse daemon at ${daemon.url}: the daemon's TLS certificate is not trusted: `), msg)
  assert.ok(msg.includes(FIX), msg)
})

test('a wrong pin is refused before the request', async () => {
  const wrong = 'AB:'.repeat(31) + 'AB'
  const msg = await refusal({ tlsFingerprint: wrong })
  assert.ok(msg.includes(`the daemon's certificate fingerprint is ${fingerprint}, not the pinned SAFEHOUSE_TLS_FINGERPRINT ${wrong}`), msg)
})

for (const [name, opts] of [
  ['the CA file', () => ({ caCert: daemon.caFile! })],
  ['the pinned fingerprint', () => ({ tlsFingerprint: fingerprint.replace(/:/g, '').toLowerCase() })],
] as const) {
  test(`with ${name}: requests and the attach WebSocket work`, async () => {
    const s = await Sandbox.create({ timeout: 120, ...opts() })
    try {
      assert.equal((await s.commands.run('echo hi')).stdout, 'hi\n')
      const h = await s.commands.run('echo one; echo two >&2', { background: true })
      const r = await h.wait()
      assert.equal(r.stdout, 'one\n')
      await s.files.write('/tmp/x', 'data')
      assert.equal(await s.files.read('/tmp/x'), 'data')
    } finally {
      await s.kill()
    }
  })
}

test('the environment variables work as the options do', async () => {
  process.env.SAFEHOUSE_CA_CERT = daemon.caFile!
  try {
    assert.ok(Array.isArray(await Sandbox.list()))
  } finally {
    delete process.env.SAFEHOUSE_CA_CERT
  }
})
