// The fleet view at scale, measured in the browser: first render and live updates with
// N real sandboxes on a real daemon, against the same page with a small fleet and against
// the raw API call, all in this one invocation. Prints medians; BENCHMARKS.md keeps them.
//
//   node bench/fleet.mjs [--sandboxes 1000] [--loads 5] [--watch 60]
// (scripts/bench_console builds the binary first and runs this.)

import { execSync } from 'node:child_process';
import { Daemon, launch, sleep, until } from '../tests/harness.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const N = arg('sandboxes', 1000);
const LOADS = arg('loads', 5);
const WATCH = arg('watch', 60);
const SMALL = 10;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
const f1 = (x) => x.toFixed(1);

async function createUpTo(daemon, n) {
  let have = (await daemon.admin.running()).length;
  const t0 = performance.now();
  const want = n - have;
  let next = 0;
  const worker = async () => {
    while (next < want) {
      next++;
      await daemon.admin.create({ metadata: { bench: 'fleet', n: String(have + next) }, timeout_s: 3600 });
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  have = (await daemon.admin.running()).length;
  return { have, ms: performance.now() - t0 };
}

/** Page loads (key preloaded in sessionStorage, as "stay signed in" leaves it): ms from
 * navigation start to the first frame painted with every sandbox. */
async function firstRenders(browser, daemon, n) {
  const times = [];
  for (let i = 0; i < LOADS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1360, height: 860 } });
    await ctx.addInitScript((key) => sessionStorage.setItem('safehouse.key', key), daemon.adminKey);
    const page = await ctx.newPage();
    await page.goto(`${daemon.url}/ui/`);
    const t = await page.waitForFunction((want) => {
      const s = window.__fleet;
      return s && s.firstRender !== undefined && s.frames[0]?.sandboxes >= want ? s.firstRender : false;
    }, n, { timeout: 30000 });
    times.push(await t.jsonValue());
    await ctx.close();
  }
  return times;
}

let bigFirst = 0;
async function rawApi(daemon) {
  const times = [];
  for (let i = 0; i < LOADS; i++) {
    const t0 = performance.now();
    const r = await fetch(`${daemon.url}/v1/metrics?history=60&follow=false`, { headers: { Authorization: `Bearer ${daemon.adminKey}` } });
    bigFirst = (await r.text()).length;
    times.push(performance.now() - t0);
  }
  return times;
}

async function watch(browser, daemon, seconds) {
  const ctx = await browser.newContext({ viewport: { width: 1360, height: 860 } });
  await ctx.addInitScript((key) => sessionStorage.setItem('safehouse.key', key), daemon.adminKey);
  const page = await ctx.newPage();
  await page.goto(`${daemon.url}/ui/`);
  await page.waitForFunction(() => window.__fleet?.firstRender !== undefined, null, { timeout: 30000 });
  // Long tasks on the page's main thread while it follows the fleet.
  await page.evaluate(() => {
    window.__long = [];
    new PerformanceObserver((l) => l.getEntries().forEach((e) => window.__long.push(e.duration))).observe({ type: 'longtask', buffered: false });
  });
  const start = await page.evaluate(() => window.__fleet.frames.length);
  const startRenders = await page.evaluate(() => window.__fleet.renders.length);
  // Scroll through the list meanwhile, as a person would.
  const t0 = Date.now();
  while (Date.now() - t0 < seconds * 1000) {
    await page.mouse.move(600, 500);
    await page.mouse.wheel(0, 400);
    await sleep(500);
  }
  const frames = await page.evaluate((s) => window.__fleet.frames.slice(s), start);
  const long = await page.evaluate(() => window.__long);
  const renders = await page.evaluate((s) => window.__fleet.renders.slice(s), startRenders);
  await ctx.close();
  return { frames, long, renders };
}

const daemon = await new Daemon().start();
const browser = await launch();
try {
  const cpu = execSync("awk '/model name/ {sub(/^.*: /, \"\"); print; exit}' /proc/cpuinfo").toString().trim();
  console.log(`machine: ${execSync('nproc').toString().trim()} cores (${cpu}), ${execSync("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")}, kernel ${execSync('uname -r').toString().trim()}`);
  console.log(`browser: ${browser.version()} (Debian chromium, headless)`);
  console.log(`date:    ${new Date().toISOString().slice(0, 16)}Z\n`);

  const small = await createUpTo(daemon, SMALL);
  await sleep(1500);
  const smallRender = await firstRenders(browser, daemon, small.have);
  const smallApi = await rawApi(daemon);
  const big = await createUpTo(daemon, N);
  console.log(`created ${big.have} sandboxes in ${(big.ms / 1000).toFixed(1)} s`);
  await sleep(3000);
  const bigRender = await firstRenders(browser, daemon, big.have);
  const bigApi = await rawApi(daemon);

  console.log(`\n${'first render (navigation start to painted rows)'.padEnd(52)}${'median ms'.padStart(10)}${'max ms'.padStart(10)}`);
  console.log(`${`  fleet of ${small.have}`.padEnd(52)}${f1(median(smallRender)).padStart(10)}${f1(Math.max(...smallRender)).padStart(10)}`);
  console.log(`${`  fleet of ${big.have}`.padEnd(52)}${f1(median(bigRender)).padStart(10)}${f1(Math.max(...bigRender)).padStart(10)}`);
  console.log(`${`  raw API call, ${small.have} (GET /v1/metrics?history=60)`.padEnd(52)}${f1(median(smallApi)).padStart(10)}`);
  console.log(`${`  raw API call, ${big.have}`.padEnd(52)}${f1(median(bigApi)).padStart(10)}`);
  console.log(`  ratio ${big.have}/${small.have}: ${(median(bigRender) / median(smallRender)).toFixed(2)}x; target <= 1000 ms: ${median(bigRender) <= 1000 ? 'met' : 'MISSED'}`);

  const { frames, long, renders } = await watch(browser, daemon, WATCH);
  const work = frames.map((f) => f.done - f.received);
  const lag = frames.map((f) => f.wall - f.t * 1000);
  const gaps = frames.slice(1).map((f, i) => f.received - frames[i].received);
  const sampler = await (await fetch(`${daemon.url}/metrics`, { headers: { Authorization: `Bearer ${daemon.adminKey}` } })).text();
  console.log(`\nlive updates, ${WATCH} s with ${big.have} sandboxes while scrolling: ${frames.length} frames`);
  console.log(`  per frame, parse + apply + render: median ${f1(median(work))} ms, p95 ${f1(pct(work, 0.95))} ms, max ${f1(Math.max(...work))} ms (budget 1000 ms)`);
  console.log(`  sampler round to frame handled (lag): median ${f1(median(lag))} ms, max ${f1(Math.max(...lag))} ms; first half median ${f1(median(lag.slice(0, lag.length >> 1)))}, second half ${f1(median(lag.slice(lag.length >> 1)))}`);
  console.log(`  frame size: median ${f1(median(frames.map((f) => f.bytes)) / 1024)} KiB of JSON (the first of a stream, with 60 s of history: ${f1(bigFirst / 1024)} KiB)`);
  console.log(`  interval between frames: median ${f1(median(gaps))} ms, max ${f1(Math.max(...gaps))} ms`);
  console.log(`  renders (frames and scrolls): ${renders.length}, median ${f1(median(renders))} ms, p95 ${f1(pct(renders, 0.95))} ms, max ${f1(Math.max(...renders))} ms`);
  console.log(`  long tasks (> 50 ms) on the page: ${long.length}${long.length ? `, longest ${f1(Math.max(...long))} ms` : ''}`);
  const last = /safehouse_sampler_last_duration_seconds ([0-9.e-]+)/.exec(sampler);
  if (last) console.log(`  daemon: last sampler round ${f1(Number(last[1]) * 1000)} ms for ${big.have} sandboxes`);
  console.log(`  falling behind: ${median(lag.slice(lag.length >> 1)) > median(lag.slice(0, lag.length >> 1)) + 500 ? 'YES' : 'no'}`);
} finally {
  await browser.close();
  await daemon.stop();
}
