/** The official `e2b` npm SDK, unchanged, against the daemon's E2B-compatible front
 * (docs/e2b.md): only E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY point it there. */
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { CommandExitError, NotFoundError, Sandbox } from 'e2b'

import { Daemon, startDaemon } from './daemon.js'

let daemon: Daemon

before(async () => {
  daemon = await startDaemon()
  process.env.E2B_API_URL = daemon.url
  process.env.E2B_SANDBOX_URL = daemon.url
  process.env.E2B_API_KEY = await daemon.tenantKey('e2b-npm')
  delete process.env.E2B_DEBUG
})

after(async () => {
  await daemon?.stop()
})

test('create, run, files, background, kill with the e2b npm SDK', async () => {
  const sbx = await Sandbox.create({ metadata: { suite: 'e2b-npm' }, envs: { GREETING: 'hello' }, timeoutMs: 120_000 })
  try {
    assert.match(sbx.sandboxId, /^sb_/)
    const r = await sbx.commands.run('echo $GREETING from $(hostname)')
    assert.equal(r.stdout, 'hello from safehouse\n')
    assert.equal(r.exitCode, 0)

    await assert.rejects(sbx.commands.run('echo no >&2; exit 3'), (e: unknown) => {
      assert.ok(e instanceof CommandExitError)
      assert.equal(e.exitCode, 3)
      assert.equal(e.stderr, 'no\n')
      return true
    })

    const chunks: string[] = []
    await sbx.commands.run('for i in 1 2 3; do echo line $i; done', { onStdout: (d) => void chunks.push(d) })
    assert.equal(chunks.join(''), 'line 1\nline 2\nline 3\n')

    await sbx.files.write('/home/user/data.txt', 'written by e2b')
    assert.equal(await sbx.files.read('/home/user/data.txt'), 'written by e2b')
    assert.equal((await sbx.commands.run('cat /home/user/data.txt')).stdout, 'written by e2b')
    const names = (await sbx.files.list('/home/user')).map((e) => e.name)
    assert.ok(names.includes('data.txt'), names.join(' '))

    const bg = await sbx.commands.run('sleep 30', { background: true })
    assert.ok((await sbx.commands.list()).some((p) => p.pid === bg.pid))
    assert.equal(await bg.kill(), true)

    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.deepEqual(info.metadata, { suite: 'e2b-npm' })
  } finally {
    await sbx.kill()
  }
  await assert.rejects(Sandbox.connect(sbx.sandboxId), NotFoundError)
})
