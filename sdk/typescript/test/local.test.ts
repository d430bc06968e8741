/** Local mode: with neither SAFEHOUSE_URL nor SAFEHOUSE_API_KEY, the SDK asks the
 * `safehouse` binary for the per-user daemon (started once, reused after). */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

import { binary } from './daemon.js'

const INDEX = resolve(dirname(fileURLToPath(import.meta.url)), '../src/index.js')
const SCRIPT = `
import { Sandbox } from ${JSON.stringify(INDEX)}
const s = await Sandbox.create({ timeout: 60 })
console.log((await s.commands.run('echo local $(hostname)')).stdout.trim())
await s.kill()
`

test('Sandbox.create starts a local daemon once and reuses it', () => {
  const data = mkdtempSync(join(tmpdir(), 'safehouse-ts-local-'))
  const env = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: process.env.HOME ?? '/root', SAFEHOUSE_BIN: binary(), SAFEHOUSE_DATA_DIR: data }
  try {
    const run = () => spawnSync(process.execPath, ['--input-type=module', '-e', SCRIPT], { env, encoding: 'utf8', timeout: 120_000 })
    const first = run()
    assert.equal(first.status, 0, first.stderr)
    assert.equal(first.stdout, 'local safehouse\n')
    assert.equal(first.stderr.split('started a local daemon').length - 1, 1, first.stderr)
    const second = run()
    assert.equal(second.status, 0, second.stderr)
    assert.equal(second.stdout, 'local safehouse\n')
    assert.ok(!second.stderr.includes('started a local daemon'), second.stderr)
  } finally {
    spawnSync(binary(), ['local', 'stop'], { env, encoding: 'utf8', timeout: 60_000 })
    rmSync(data, { recursive: true, force: true })
  }
})
