/** The SDK against a real daemon the test starts: sandboxes, commands (foreground,
 * streamed, background, PTY), files with watch, metrics, events and typed errors. */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import {
  AuthenticationError,
  CommandExitError,
  ERROR_CODES,
  FilesystemEvent,
  InvalidRequestError,
  NotFoundError,
  RateLimitError,
  SafehouseError,
  Sandbox,
  SandboxNotRunningError,
  TenantQuotaError,
} from '../src/index.js'
import { Daemon, freePort, startDaemon } from './daemon.js'

let daemon: Daemon

before(async () => {
  // Tenant `ts-quota` has a quota of one sandbox (the errors tests); nobody else has one.
  daemon = await startDaemon(['--tenant-quota', 'ts-quota:sandboxes=1'])
  process.env.SAFEHOUSE_URL = daemon.url
  process.env.SAFEHOUSE_API_KEY = daemon.adminKey
})

after(async () => {
  await daemon?.stop()
})

async function withSandbox(fn: (s: Sandbox) => Promise<void>): Promise<void> {
  const s = await Sandbox.create({ timeout: 120, metadata: { suite: 'typescript' } })
  try {
    await fn(s)
  } finally {
    await s.kill()
  }
}

describe('sandboxes', () => {
  test('create, info, list by metadata, timeout, kill', async () => {
    const tag = Math.random().toString(36).slice(2)
    const s = await Sandbox.create({ timeout: 60, metadata: { tag } })
    assert.match(s.id, /^sb_[a-z2-7]{26}$/)
    const info = await s.getInfo()
    assert.equal(info.state, 'running')
    assert.deepEqual(info.metadata, { tag })
    const listed = await Sandbox.list({ metadata: { tag } })
    assert.deepEqual(listed.map((i) => i.id), [s.id])
    const later = await s.setTimeout(600)
    assert.ok(later.expiresAt!.getTime() - Date.now() > 590_000)
    assert.equal(await s.kill(), true)
    assert.equal(await s.isRunning(), false)
    const again = await Sandbox.connect(s.id)
    assert.equal((await again.getInfo()).state, 'killed')
  })
})

describe('commands', () => {
  test('a foreground run returns the resource envelope', async () => {
    await withSandbox(async (s) => {
      const r = await s.commands.run('echo hello from $(hostname); echo warn >&2')
      assert.equal(r.stdout, 'hello from safehouse\n')
      assert.equal(r.stderr, 'warn\n')
      assert.equal(r.exitCode, 0)
      assert.equal(r.error, null)
      assert.ok(r.wallMs !== null && r.cpuMs !== null && r.peakMemoryBytes! > 0, JSON.stringify(r))
      const a = await s.commands.run(['python3', '-c', 'import sys; print(sys.stdin.read().upper())'], { stdin: 'piped' })
      assert.equal(a.stdout, 'PIPED\n')
      const c = await s.runCode('print(6 * 7)')
      assert.equal(c.stdout, '42\n')
    })
  })

  test('a non-zero exit throws CommandExitError naming its stderr', async () => {
    await withSandbox(async (s) => {
      await assert.rejects(s.commands.run('echo boom >&2; exit 3'), (e: unknown) => {
        assert.ok(e instanceof CommandExitError)
        assert.equal(e.exitCode, 3)
        assert.equal(e.stderr, 'boom\n')
        assert.match(e.message, /exit status 3; stderr: boom/)
        return true
      })
      const r = await s.commands.run('exit 4', { raiseOnError: false })
      assert.equal(r.exitCode, 4)
      const t = await s.commands.run('sleep 10', { timeout: 1, raiseOnError: false })
      assert.equal(t.timedOut, true)
      assert.match(t.error!, /timed out/)
    })
  })

  test('callbacks stream the output as it is produced', async () => {
    await withSandbox(async (s) => {
      const seen: Array<[string, number]> = []
      const t0 = Date.now()
      const r = await s.commands.run('for i in 1 2 3; do echo tick $i; sleep 0.3; done; echo done >&2', {
        onStdout: (d) => seen.push([d, Date.now() - t0]),
        onStderr: (d) => seen.push(['err:' + d, Date.now() - t0]),
      })
      assert.equal(r.stdout, 'tick 1\ntick 2\ntick 3\n')
      assert.equal(r.stderr, 'done\n')
      assert.ok(seen.length >= 3, JSON.stringify(seen))
      assert.equal(seen.map(([d]) => d).join(''), 'tick 1\ntick 2\ntick 3\nerr:done\n')
      // The first tick arrived well before the end: streamed, not buffered.
      assert.ok(seen[0][1] < seen[seen.length - 1][1] - 400, JSON.stringify(seen))
      // The resource envelope comes with a streamed run too (three 0.3 s sleeps).
      assert.ok(r.wallMs !== null && r.wallMs >= 900 && r.wallMs <= Date.now() - t0 + 50, String(r.wallMs))
      assert.ok(r.cpuMs !== null && r.peakMemoryBytes !== null && r.peakMemoryBytes > 0, JSON.stringify(r))
    })
  })

  test('background processes: stdin, list, signal, wait', async () => {
    await withSandbox(async (s) => {
      const cat = await s.commands.run('cat', { background: true })
      await cat.sendStdin('fed through stdin\n')
      await cat.closeStdin()
      const r = await cat.wait()
      assert.equal(r.stdout, 'fed through stdin\n')

      const sleeper = await s.commands.run(['sh', '-c', 'trap "echo got TERM; exit 7" TERM; echo ready; while :; do sleep 0.1; done'], {
        background: true,
      })
      const chunks: string[] = []
      for await (const c of sleeper) {
        if (c.stdout) chunks.push(c.stdout)
        if (chunks.join('').includes('ready')) break
      }
      assert.ok((await s.commands.list()).some((p) => p.pid === sleeper.pid && p.running))
      assert.equal(await sleeper.signal('SIGTERM'), true)
      const end = await sleeper.wait({ raiseOnError: false })
      assert.equal(end.exitCode, 7)
      assert.match(end.stdout, /got TERM/)
      assert.equal(await s.commands.kill(999_999), false)
    })
  })

  test('a PTY has the size asked for and echoes what is typed', async () => {
    await withSandbox(async (s) => {
      let out = ''
      const h = await s.pty.create({ size: { rows: 30, cols: 100 }, cmd: ['/bin/sh'], onData: (d) => (out += new TextDecoder().decode(d)) })
      await s.pty.sendStdin(h.pid, 'stty size; tty; exit\n')
      const r = await h.wait({ raiseOnError: false })
      assert.equal(r.exitCode, 0)
      assert.match(out, /30 100/)
      assert.match(out, /\/dev\/pts\/\d+/)
    })
  })
})

describe('files', () => {
  test('write, read, list, stat, rename, remove, make_dir', async () => {
    await withSandbox(async (s) => {
      const info = await s.files.write('/workspace/a/b.txt', 'hello')
      assert.equal(info.size, 5)
      assert.equal(await s.files.read('/workspace/a/b.txt'), 'hello')
      assert.deepEqual(await s.files.read('/workspace/a/b.txt', { format: 'bytes' }), new TextEncoder().encode('hello'))
      assert.equal((await s.commands.run('cat /workspace/a/b.txt')).stdout, 'hello')
      assert.deepEqual((await s.files.list('/workspace/a')).map((e) => [e.name, e.type]), [['b.txt', 'file']])
      assert.equal((await s.files.getInfo('/workspace/a')).type, 'dir')
      await s.files.rename('/workspace/a/b.txt', '/workspace/a/c.txt')
      assert.equal(await s.files.exists('/workspace/a/b.txt'), false)
      assert.equal(await s.files.exists('/workspace/a/c.txt'), true)
      assert.equal(await s.files.makeDir('/workspace/x/y'), true)
      assert.equal(await s.files.makeDir('/workspace/x/y'), false)
      await s.files.remove('/workspace/a')
      assert.equal(await s.files.exists('/workspace/a'), false)
      await assert.rejects(s.files.read('/workspace/missing'), NotFoundError)
    })
  })

  test('large files stream both ways', async () => {
    await withSandbox(async (s) => {
      const size = 8 << 20
      const chunk = new Uint8Array(1 << 20).map((_, i) => i % 251)
      let sent = 0
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent >= size) return c.close()
          sent += chunk.length
          c.enqueue(chunk)
        },
      })
      const info = await s.files.write('/workspace/big.bin', body)
      assert.equal(info.size, size)
      const stream = await s.files.read('/workspace/big.bin', { format: 'stream' })
      let got = 0
      for await (const c of stream as unknown as AsyncIterable<Uint8Array>) got += c.length
      assert.equal(got, size)
    })
  })

  test('watchDir reports changes made by commands inside', async () => {
    await withSandbox(async (s) => {
      await s.files.makeDir('/workspace/w')
      const events: FilesystemEvent[] = []
      const w = await s.files.watchDir('/workspace/w', (e) => void events.push(e))
      await s.commands.run('echo x > /workspace/w/new.txt')
      const deadline = Date.now() + 10_000
      while (!events.some((e) => e.name === 'new.txt' && e.type === 'create') && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50))
      }
      await w.stop()
      assert.ok(events.some((e) => e.name === 'new.txt' && e.type === 'create' && e.path === '/workspace/w/new.txt'), JSON.stringify(events))
    })
  })
})

describe('observation', () => {
  test('metrics and events', async () => {
    await withSandbox(async (s) => {
      await s.commands.run('python3 -c "x = bytearray(32 << 20)"')
      const m = await s.getMetrics()
      assert.equal(m.state, 'running')
      assert.ok(m.memoryBytes > 0 && m.pids >= 1, JSON.stringify(m))
      const kinds: string[] = []
      for await (const e of s.events({ follow: false })) kinds.push(e.kind)
      assert.equal(kinds[0], 'sandbox.created')
      assert.ok(kinds.includes('exec.started') && kinds.includes('exec.exited'), kinds.join(' '))
    })
  })
})

describe('errors', () => {
  test('each daemon error is its typed class', async () => {
    await assert.rejects(Sandbox.connect('sb_' + 'a'.repeat(26)), (e: unknown) => {
      assert.ok(e instanceof NotFoundError && e.status === 404 && e.code === 'not_found', String(e))
      assert.equal((e as Error).message, 'no such sandbox; check the id with Sandbox.list()')
      return true
    })
    await assert.rejects(Sandbox.list({ apiKey: 'sh_' + 'x'.repeat(32) }), AuthenticationError)
    await assert.rejects(Sandbox.create({ policy: { limits: { memory: 'lots' } } }), (e: unknown) => {
      assert.ok(e instanceof InvalidRequestError && /lots/.test(e.message), String(e))
      return true
    })
    await assert.rejects(Sandbox.create({ policy: 'version = 1' as unknown as Record<string, unknown> }), /policy takes an object/)
    const s = await Sandbox.create({ timeout: 30 })
    await s.kill()
    await assert.rejects(s.commands.run('true'), SandboxNotRunningError)
  })

  test('over a tenant quota is TenantQuotaError, a RateLimitError', async () => {
    const apiKey = await daemon.tenantKey('ts-quota')
    const first = await Sandbox.create({ timeout: 60, apiKey })
    try {
      await assert.rejects(Sandbox.create({ timeout: 60, apiKey }), (e: unknown) => {
        assert.ok(e instanceof TenantQuotaError && e instanceof RateLimitError, String(e))
        assert.equal(e.status, 429)
        assert.equal(e.code, 'tenant_quota')
        assert.match(e.message, /^tenant ts-quota has 1 of its 1 sandboxes running \(quota sandboxes=1\)/)
        return true
      })
      // Outside control: the admin tenant creates meanwhile.
      await (await Sandbox.create({ timeout: 60 })).kill()
    } finally {
      await first.kill()
    }
    // The slot is free again.
    await (await Sandbox.create({ timeout: 60, apiKey })).kill()
  })

  test('a daemon that is not there is named with its URL and the fix', async () => {
    const url = `http://127.0.0.1:${await freePort()}`
    await assert.rejects(Sandbox.create({ url, apiKey: 'sh_x' }), (e: unknown) => {
      assert.ok(e instanceof SafehouseError)
      assert.match(e.message, new RegExp(`cannot reach the safehouse daemon at ${url}`))
      assert.match(e.message, /SAFEHOUSE_URL/)
      return true
    })
  })

  test('the error codes are the Python SDK\'s', () => {
    const here = dirname(fileURLToPath(import.meta.url))
    const py = readFileSync(resolve(here, '../../../python/src/safehouse/exceptions.py'), 'utf8')
    const table = py.slice(py.indexOf('ERROR_CODES: Dict'), py.indexOf('_BY_CODE = ERROR_CODES'))
    const pyCodes = [...table.matchAll(/^\s+"([a-z_]+)": (\w+),$/gm)].map((m) => [m[1], m[2].replace('Exception', 'Error')])
    assert.ok(pyCodes.length > 20, table)
    const tsCodes = Object.entries(ERROR_CODES).map(([code, cls]) => [code, cls.name])
    assert.deepEqual(tsCodes.sort(), pyCodes.sort())
  })
})
