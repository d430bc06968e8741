// The web console in a real browser (Debian's Chromium, driven by playwright-core) against a
// real daemon: sign-in, live fleet updates, the terminal, denials in the event stream, file
// names that look like markup, tenant isolation, and the emergency stop.
//
// Screenshots of every view go to $CONSOLE_SCREENSHOTS when set (scripts/console-screenshots
// sets docs/console), else to a temporary directory.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Daemon, launch, signedIn, sleep, until } from './harness.mjs';

const SHOTS = process.env.CONSOLE_SCREENSHOTS || mkdtempSync(join(tmpdir(), 'safehouse-console-shots-'));
// For the docs, the fleet runs longer before its picture, so its sparklines have history.
const SETTLE_MS = process.env.CONSOLE_SCREENSHOTS ? 40000 : 3000;
mkdirSync(SHOTS, { recursive: true });

let daemon;
let browser;

before(async () => {
  daemon = await new Daemon().start();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  if (daemon && process.exitCode) console.error(`daemon log:\n${daemon.logTail()}`);
  await daemon?.stop();
});

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`) });
const rowOf = (page, id) => page.locator(`.fleet-body .fleet-row[data-id="${id}"]:visible`);

function noProblems(page) {
  assert.deepEqual(page.problems, [], 'no script error, CSP violation or dialog on the page');
}

test('sign in: a wrong key is refused, the admin key sees every tenant', async () => {
  const page = await browser.newPage({ viewport: { width: 1360, height: 860 } });
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(e.message));
  await page.goto(`${daemon.url}/ui/`);
  await shot(page, 'signin');
  await page.getByTestId('key').fill('sh_' + 'x'.repeat(32));
  await page.getByTestId('signin').click();
  await page.getByText('That key is not valid').waitFor();
  await page.getByTestId('key').fill(daemon.adminKey);
  await page.getByTestId('signin').click();
  await page.getByTestId('fleet').waitFor();
  assert.equal(await page.getByTestId('who').textContent(), 'admin (all tenants)');
  assert.equal(await page.locator('[data-nav="audit"]').count(), 1);
  // The key is in no URL and no cookie.
  assert.ok(!page.url().includes(daemon.adminKey));
  assert.deepEqual(await page.context().cookies(), []);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'not remembered unless asked');
  noProblems(page);
  // The page's policy is enforced: no string becomes markup (Trusted Types), no inline script runs.
  const sink = await page.evaluate(() => {
    try {
      document.body.insertAdjacentHTML('beforeend', '<img src=x onerror="window.__ran=1">');
      return 'accepted';
    } catch (e) {
      return e.name;
    }
  });
  assert.equal(sink, 'TypeError');
  const script = await page.evaluate(() => {
    try {
      const s = document.createElement('script');
      s.textContent = 'window.__ran = 1';
      document.body.appendChild(s);
      return 'accepted';
    } catch (e) {
      return e.name;
    }
  });
  assert.equal(script, 'TypeError');
  assert.equal(await page.evaluate(() => window.__ran), undefined);
  await page.close();
  // Nothing can frame it (while a document of the daemon's without those headers can be).
  const framer = await browser.newPage();
  await framer.setContent(
    `<iframe name="doc" src="${daemon.url}/v1/openapi.json"></iframe><iframe name="ui" src="${daemon.url}/ui/"></iframe>`,
  );
  await sleep(1500);
  const text = (name, js) => framer.frame({ name }).evaluate(js).catch(() => null);
  assert.match(await text('doc', () => document.body.textContent), /openapi/, 'the control frame loads');
  assert.equal(await text('ui', () => document.querySelector('#app') !== null), false, 'the console rendered inside a frame');
  await framer.close();
});

test('a sandbox created through the API appears without a reload, and goes when killed', async () => {
  const page = await signedIn(browser, daemon, daemon.adminKey);
  await page.getByTestId('fleet-status').getByText('live').waitFor();
  await page.evaluate(() => (window.__sameDocument = true));
  const sb = await daemon.admin.create({ metadata: { purpose: 'appears-live' } });
  await rowOf(page, sb.id).waitFor({ timeout: 10000 });
  assert.match(await rowOf(page, sb.id).textContent(), /running.*appears-live.*admin/s);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
  // Search finds it by metadata; a filter that matches nothing empties the list.
  await page.getByTestId('fleet-search').fill('appears-live');
  await rowOf(page, sb.id).waitFor();
  await page.getByTestId('fleet-search').fill('no-such-thing');
  await page.getByTestId('fleet-empty').getByText('No sandbox matches').waitFor();
  await page.getByTestId('fleet-search').fill('');
  await daemon.admin.call('DELETE', `/v1/sandboxes/${sb.id}`);
  await until(async () => (await rowOf(page, sb.id).count()) === 0, 'the killed sandbox to leave the fleet', 10000);
  noProblems(page);
  await page.context().close();
});

test('a command typed in the terminal shows its output', async () => {
  const sb = await daemon.admin.create({ metadata: { purpose: 'terminal' } });
  const page = await signedIn(browser, daemon, daemon.adminKey);
  await page.goto(`${daemon.url}/ui/#/sandbox/${sb.id}/terminal`);
  await page.getByTestId('new-shell').click();
  await page.getByTestId('terminal-status').getByText(/attached to pid \d+/).waitFor({ timeout: 15000 });
  await page.locator('.xterm').click();
  // The answer is computed by the shell, so the echo of what was typed cannot pass for it.
  await page.keyboard.type('echo hello-$((6*7)) from $(hostname)');
  await page.keyboard.press('Enter');
  await until(
    async () => (await page.locator('.xterm-rows').textContent()).includes('hello-42 from safehouse'),
    'the command output in the terminal',
  );
  await shot(page, 'terminal');
  noProblems(page);
  await page.context().close();
  await daemon.admin.call('DELETE', `/v1/sandboxes/${sb.id}`);
});

test('a denied network request stands out in the event stream; argv is text', async () => {
  const sb = await daemon.admin.create({
    metadata: { agent: 'researcher' },
    policy: { version: 1, network: { allow: ['web.test:80'] } },
  });
  const page = await signedIn(browser, daemon, daemon.adminKey);
  await page.goto(`${daemon.url}/ui/#/sandbox/${sb.id}/events`);
  await page.getByTestId('events').locator('[data-kind="sandbox.created"]').waitFor();
  await daemon.admin.post(`/v1/sandboxes/${sb.id}/exec`, { cmd: 'curl -s -m 5 http://denied.example/ >/dev/null; echo "<b>not bold</b>" > /tmp/x' });
  const denied = page.getByTestId('events').locator('li.ev-deny[data-kind="net.denied"]');
  await denied.first().waitFor({ timeout: 10000 });
  assert.match(await denied.first().textContent(), /denied\.example:80.*DENIED: no network\.allow entry matches/);
  // The exec of curl is in the stream with its argv.
  await page.getByTestId('events').locator('[data-kind="proc.exec"]', { hasText: 'curl -s -m 5 http://denied.example/' }).first().waitFor();
  assert.equal(await page.getByTestId('events').locator('b').count(), 0, 'argv rendered as text');
  // The Denials filter shows denials only.
  await page.locator('.chip[data-group="denials"]').click();
  const shown = await page.getByTestId('events').locator('li:visible').evaluateAll((els) => els.map((e) => e.dataset.kind));
  assert.ok(shown.length >= 1 && shown.every((k) => k === 'net.denied' || k === 'policy.violation'), shown.join());
  await page.locator('.chip[data-group="all"]').click();
  await shot(page, 'sandbox-events');
  // The policy tab explains the decision.
  await page.goto(`${daemon.url}/ui/#/sandbox/${sb.id}/policy`);
  await page.getByTestId('explain-subject').fill('denied.example:80');
  await page.getByTestId('explain').click();
  await page.getByTestId('explain-answer').getByText('denied', { exact: true }).waitFor();
  assert.match(await page.getByTestId('policy').textContent(), /"web\.test:80"/);
  await shot(page, 'sandbox-policy');
  noProblems(page);
  await page.context().close();
  await daemon.admin.call('DELETE', `/v1/sandboxes/${sb.id}`);
});

test('file names that look like markup are shown as text and run nothing', async () => {
  const sb = await daemon.admin.create({ metadata: { purpose: 'files' } });
  const names = ['<img src=x onerror=alert(1)>.txt', '"><svg onload=alert(2)>', 'report.csv'];
  for (const n of names) {
    await daemon.admin.call('PUT', `/v1/sandboxes/${sb.id}/files?path=${encodeURIComponent('/workspace/' + n)}`, `contents of ${n}\n`);
  }
  await daemon.admin.post(`/v1/sandboxes/${sb.id}/exec`, { cmd: ['mkdir', '-p', '/workspace/data'] });
  const page = await signedIn(browser, daemon, daemon.adminKey);
  await page.evaluate(() => (window.__pwned = false));
  await page.goto(`${daemon.url}/ui/#/sandbox/${sb.id}/files`);
  await page.getByTestId('files').locator('tr').nth(3).waitFor();
  const shown = await page.getByTestId('files').locator('td.name').allTextContents();
  for (const n of names) assert.ok(shown.includes(n), `${n} shown as text in ${JSON.stringify(shown)}`);
  assert.equal(await page.locator('main img, main svg').count(), 0, 'no element made from a file name');
  // Download hands over the bytes under the same name.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByTestId('files').locator('tr', { hasText: names[0] }).getByRole('button', { name: 'Download' }).click(),
  ]);
  // (The browser may replace characters a file system dislikes in the name it saves under.)
  assert.match(download.suggestedFilename(), /img src=x onerror=alert\(1\).\.txt$/);
  assert.equal(readFileSync(await download.path(), 'utf8'), `contents of ${names[0]}\n`);
  // Upload through the page.
  await page.getByTestId('files-upload').setInputFiles({ name: 'from-browser.txt', mimeType: 'text/plain', buffer: Buffer.from('uploaded\n') });
  await page.getByTestId('files').locator('td.name', { hasText: 'from-browser.txt' }).waitFor();
  const got = await (await fetch(`${daemon.url}/v1/sandboxes/${sb.id}/files?path=/workspace/from-browser.txt`, { headers: { Authorization: `Bearer ${daemon.adminKey}` } })).text();
  assert.equal(got, 'uploaded\n');
  await shot(page, 'sandbox-files');
  // The same names in the event stream are text too.
  await page.goto(`${daemon.url}/ui/#/sandbox/${sb.id}/events`);
  await page.getByTestId('events').locator('[data-kind="file.written"]', { hasText: names[0] }).first().waitFor();
  assert.equal(await page.locator('main img, main svg').count(), 0);
  await sleep(300);
  noProblems(page);
  await page.context().close();
  await daemon.admin.call('DELETE', `/v1/sandboxes/${sb.id}`);
});

test('another tenant never sees what is not its own', async () => {
  const a = await daemon.tenant('team-a');
  const b = await daemon.tenant('team-b');
  const mine = await a.create({ metadata: { owner: 'team-a' } });
  const theirs = await b.create({ metadata: { owner: 'team-b' } });
  const page = await signedIn(browser, daemon, a.key);
  assert.equal(await page.getByTestId('who').textContent(), 'tenant team-a');
  assert.equal(await page.locator('[data-nav="audit"]').count(), 0);
  await rowOf(page, mine.id).waitFor();
  // Another sandbox of b's, created while the page watches, never shows either.
  const later = await b.create({ metadata: { owner: 'team-b' } });
  await sleep(2500);
  const ids = await page.locator('.fleet-body .fleet-row:visible').evaluateAll((els) => els.map((e) => e.dataset.id));
  assert.deepEqual(ids, [mine.id]);
  const text = await page.locator('body').textContent();
  for (const id of [theirs.id, later.id]) assert.ok(!text.includes(id), `${id} appears in team-a's console`);
  assert.ok(!text.includes('team-b'));
  const seen = await page.evaluate(() => window.__fleet.frames.map((f) => f.sandboxes));
  assert.ok(seen.every((n) => n === 1), `every frame held team-a's one sandbox: ${seen}`);
  // Opening b's sandbox by id finds nothing.
  await page.goto(`${daemon.url}/ui/#/sandbox/${theirs.id}/events`);
  await page.getByText('No such sandbox (or not one this key can see).').waitFor();
  // b's sandboxes are there all the same (checked through the API), and the admin sees both.
  assert.equal((await b.running()).length, 2);
  const admin = await signedIn(browser, daemon, daemon.adminKey);
  await rowOf(admin, theirs.id).waitFor();
  await rowOf(admin, mine.id).waitFor();
  noProblems(page);
  noProblems(admin);
  await page.context().close();
  await admin.context().close();
  await a.call('DELETE', `/v1/sandboxes/${mine.id}`);
  for (const sb of [theirs, later]) await b.call('DELETE', `/v1/sandboxes/${sb.id}`);
});

test('the fleet view, the processes tab and the audit log', async () => {
  // A few busy sandboxes so the screenshots show live numbers.
  const busy = [];
  for (const [i, cmd] of ['while :; do :; done', 'head -c 60m /dev/zero | tail > /dev/null; sleep 600', 'sleep 600'].entries()) {
    const sb = await daemon.admin.create({ metadata: { job: ['train', 'etl', 'idle'][i] } });
    await daemon.admin.post(`/v1/sandboxes/${sb.id}/processes`, { cmd });
    busy.push(sb);
  }
  // Another tenant's, and one whose agent keeps hitting the gateway's default deny.
  const ops = await daemon.tenant('ops');
  busy.push(await ops.create({ metadata: { job: 'report' } }));
  const nosy = await daemon.admin.create({ metadata: { job: 'scraper' }, policy: { version: 1, network: { allow: ['web.test:80'] } } });
  await daemon.admin.post(`/v1/sandboxes/${nosy.id}/processes`, {
    cmd: 'for h in metadata.google.internal evil.example 169.254.169.254; do curl -s -m 2 http://$h/ >/dev/null; done; sleep 600',
  });
  const page = await signedIn(browser, daemon, daemon.adminKey);
  await rowOf(page, busy[0].id).waitFor();
  await sleep(SETTLE_MS);
  await shot(page, 'fleet');
  await page.goto(`${daemon.url}/ui/#/sandbox/${busy[0].id}/processes`);
  await page.getByTestId('api-processes').locator('tr').first().waitFor();
  await page.getByTestId('live-processes').locator('tr').first().waitFor();
  await sleep(1500);
  await shot(page, 'sandbox-processes');
  await page.goto(`${daemon.url}/ui/#/audit`);
  await page.getByTestId('audit-verify-verdict').getByText('chain verified').waitFor({ timeout: 15000 });
  await page.getByTestId('audit-records').locator('tr').first().waitFor();
  // Filtered by sandbox and kind.
  await page.getByTestId('audit-sandbox').fill(busy[0].id);
  await page.locator('[data-kind="event"]').check();
  await page.getByTestId('audit-load').click();
  await until(async () => {
    const rows = await page.getByTestId('audit-records').locator('tr').allTextContents();
    return rows.length > 0 && rows.every((r) => r.includes(busy[0].id) && r.includes('event'));
  }, 'the audit records of one sandbox');
  await shot(page, 'audit');
  noProblems(page);
  await page.context().close();
});

test('the emergency stop empties the fleet and says how many and how fast', async () => {
  const t = await daemon.tenant('team-c');
  for (let i = 0; i < 3; i++) await daemon.admin.create({ metadata: { batch: 'stop' } });
  for (let i = 0; i < 2; i++) await t.create({ metadata: { batch: 'stop' } });
  const before = (await daemon.admin.running()).length;
  assert.ok(before >= 5, `${before} live sandboxes`);
  const page = await signedIn(browser, daemon, daemon.adminKey);
  await until(async () => (await page.locator('.fleet-body .fleet-row:visible').count()) === before, 'every sandbox in the fleet');
  await page.getByTestId('stop').click();
  await page.getByTestId('stop-count').getByText(String(before), { exact: true }).waitFor();
  await shot(page, 'stop-confirm');
  await page.getByTestId('stop-confirm').click();
  await page.getByTestId('stop-result').getByText(new RegExp(`Killed ${before} sandboxes in \\d+ ms`)).waitFor({ timeout: 30000 });
  await shot(page, 'stop-done');
  // Checked through the API: nothing of any tenant runs.
  assert.deepEqual(await daemon.admin.running(), []);
  assert.deepEqual(await t.running(), []);
  await page.keyboard.press('Escape');
  await page.getByTestId('fleet-empty').getByText('No sandboxes.').waitFor({ timeout: 10000 });
  assert.equal(await page.locator('.fleet-body .fleet-row:visible').count(), 0, 'no row left on screen');
  noProblems(page);
  await page.context().close();
});
