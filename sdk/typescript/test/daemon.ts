/** A real `safehouse serve` for the tests: the binary under test (SAFEHOUSE_BIN, else the
 * repository's target/safehouse) on a free loopback port with its own data dir. */
import { ChildProcess, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Agent, fetch as undiciFetch } from 'undici'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..')

export function binary(): string {
  return process.env.SAFEHOUSE_BIN ?? join(REPO, 'target', 'safehouse')
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => res(port))
    })
    s.on('error', rej)
  })
}

export interface Daemon {
  url: string
  adminKey: string
  dataDir: string
  /** Kills every sandbox, then the daemon; removes the data dir. */
  stop(): Promise<void>
  /** A key of a new tenant. */
  tenantKey(tenant: string): Promise<string>
  /** With `--tls-self-signed`: the CA file clients trust (DATA_DIR/tls/ca.crt). */
  caFile?: string
}

/** `args`: more `serve` flags (`--tenant-quota ...`). */
export async function startDaemon(args: string[] = []): Promise<Daemon> {
  const dataDir = mkdtempSync(join(tmpdir(), 'safehouse-ts-'))
  const port = await freePort()
  const adminKey = 'sh_' + randomBytes(24).toString('base64').replace(/[^A-Za-z0-9]/g, '').slice(0, 32).padEnd(32, 'a')
  // `--tls-self-signed`: HTTPS, trusted here through the CA file the daemon writes.
  const https = args.includes('--tls-self-signed')
  const url = `${https ? 'https' : 'http'}://127.0.0.1:${port}`
  const caFile = https ? join(dataDir, 'tls', 'ca.crt') : undefined
  let agent: Agent | undefined
  const fetch = async (u: string, init: Record<string, unknown> = {}): Promise<Response> => {
    if (!caFile) return globalThis.fetch(u, init)
    if (!agent) {
      if (!existsSync(caFile)) throw new Error('the CA file is not written yet')
      agent = new Agent({ connect: { ca: readFileSync(caFile, 'utf8') } })
    }
    return (await undiciFetch(u, { ...init, dispatcher: agent })) as unknown as Response
  }
  const log = openSync(join(dataDir, 'daemon.log'), 'a')
  const proc: ChildProcess = spawn(binary(), ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...args], {
    env: {
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      LANG: 'C.UTF-8',
      SAFEHOUSE_ADMIN_KEY: adminKey,
      HOME: process.env.HOME ?? '/root',
      SAFEHOUSE_STORAGE_SIZE: '2GiB',
    },
    stdio: ['ignore', log, log],
    detached: true,
  })
  const deadline = Date.now() + 30_000
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`daemon exited: ${readFileSync(join(dataDir, 'daemon.log'), 'utf8').slice(-2000)}`)
    try {
      if ((await fetch(`${url}/healthz`)).status === 200) break
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error('daemon not healthy within 30 s')
    await new Promise((r) => setTimeout(r, 100))
  }
  const auth = { Authorization: `Bearer ${adminKey}`, 'Content-Type': 'application/json' }
  return {
    url,
    adminKey,
    dataDir,
    caFile,
    async tenantKey(tenant: string) {
      const r = await fetch(`${url}/v1/keys`, { method: 'POST', headers: auth, body: JSON.stringify({ tenant, name: 'ts' }) })
      return (await r.json()).key
    },
    async stop() {
      try {
        await fetch(`${url}/v1/kill-all`, { method: 'POST', headers: auth, body: '{}' })
      } catch {
        // already down
      }
      const exited = new Promise((r) => proc.once('exit', r))
      proc.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))])
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
      // The storage pool (E2B sandboxes keep their files on disk) stays mounted after its
      // daemon, for the sandboxes that use it: unmount it before removing the data dir.
      const pool = join(dataDir, 'storage', 'pool')
      if (existsSync(pool)) spawnSync('umount', ['-l', pool])
      rmSync(dataDir, { recursive: true, force: true })
    },
  }
}
