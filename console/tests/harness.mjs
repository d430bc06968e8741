// What the console's browser tests and its benchmark share: a real daemon (the binary at
// SAFEHOUSE_BIN, default ../target/safehouse) on a free loopback port with its own data dir,
// an API client, and Debian's Chromium driven by playwright-core (never a downloaded browser).

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const HERE = new URL('.', import.meta.url).pathname;
export const BIN = resolve(process.env.SAFEHOUSE_BIN || join(HERE, '../../target/safehouse'));
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value (returned) or `ms` pass (throws `what`). */
export async function until(fn, what, ms = 15000, every = 100) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

export class Api {
  constructor(url, key) {
    this.url = url;
    this.key = key;
  }

  async call(method, path, body, headers = {}) {
    const h = { Authorization: `Bearer ${this.key}`, ...headers };
    let payload = body;
    if (body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array)) {
      payload = JSON.stringify(body);
      h['Content-Type'] = 'application/json';
    }
    const r = await fetch(this.url + path, { method, headers: h, body: payload });
    const text = await r.text();
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return json;
  }

  get(path) {
    return this.call('GET', path);
  }

  post(path, body = {}) {
    return this.call('POST', path, body);
  }

  create(body = {}) {
    return this.post('/v1/sandboxes', { timeout_s: 600, ...body });
  }

  async running() {
    const r = await this.get('/v1/sandboxes?state=running');
    const f = await this.get('/v1/sandboxes?state=frozen');
    return [...r.sandboxes, ...f.sandboxes];
  }
}

export class Daemon {
  constructor() {
    this.dataDir = mkdtempSync(join(tmpdir(), 'safehouse-console-'));
    this.adminKey = 'console-test-' + randomBytes(16).toString('hex');
    this.logPath = join(this.dataDir, 'daemon.log');
  }

  async start() {
    if (!existsSync(BIN)) throw new Error(`no safehouse binary at ${BIN}: run scripts/build or set SAFEHOUSE_BIN`);
    this.port = await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    const log = openSync(this.logPath, 'a');
    this.proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${this.port}`, '--data-dir', join(this.dataDir, 'data')], {
      stdio: ['ignore', log, log],
      detached: true,
      env: {
        PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        LANG: 'C.UTF-8',
        HOME: process.env.HOME || '/root',
        SAFEHOUSE_ADMIN_KEY: this.adminKey,
        // Test names for the gateway: web.test leads to loopback (nothing is reached).
        SAFEHOUSE_GATEWAY_RESOLVE: 'web.test=127.0.0.1',
      },
    });
    await until(async () => (await fetch(`${this.url}/healthz`)).ok, 'the daemon to answer /healthz', 30000);
    this.admin = new Api(this.url, this.adminKey);
    return this;
  }

  /** A key of a new tenant. */
  async tenant(name) {
    const r = await this.admin.post('/v1/keys', { tenant: name, name: 'console test' });
    return new Api(this.url, r.key);
  }

  logTail(n = 3000) {
    try {
      return readFileSync(this.logPath, 'utf8').slice(-n);
    } catch {
      return '(no log)';
    }
  }

  async stop() {
    try {
      await this.admin?.post('/v1/kill-all');
    } catch {
      // the daemon may be gone already
    }
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill('SIGTERM');
      await Promise.race([new Promise((r) => this.proc.once('exit', r)), sleep(10000)]);
      if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/**
 * Debian's Chromium, headless, with nothing phoning home. Playwright starts it with a
 * fresh temporary profile (its own --user-data-dir, removed when the browser closes).
 */
export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/**
 * A page of a new browser context at the console, signed in with `key`. Every script
 * error, CSP violation and dialog is collected in `page.problems` (tests assert it empty).
 */
export async function signedIn(browser, daemon, key, viewport = { width: 1360, height: 860 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // An HTTP error status is logged too; what a test expects (a 404) is not a problem.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) page.problems.push(`console error: ${m.text()}`);
  });
  page.on('dialog', (d) => {
    page.problems.push(`dialog: ${d.type()} ${d.message()}`);
    void d.dismiss();
  });
  await page.goto(`${daemon.url}/ui/`);
  await page.getByTestId('key').fill(key);
  await page.getByTestId('signin').click();
  await page.getByTestId('fleet').waitFor();
  return page;
}
