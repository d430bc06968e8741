// The fleet view: every sandbox the key can see, live. One stream (GET /v1/metrics) gives
// a frame a second with every live sandbox's numbers; a sandbox's details (created_at,
// metadata, ...) and recent history come in the first frame that names it. Rows are
// virtualised: only the ones on screen exist in the DOM, so 1,000 sandboxes cost what 30 do.

import { Sandbox } from './api';
import { Ring, sparkline } from './chart';
import { Ctx } from './ctx';
import { el, setText, View } from './dom';
import { age, bytes, pct } from './format';

/** Samples kept per sandbox for the sparklines (one a second). */
const HISTORY = 60;
const ROW_H = 34;
/** Sparkline size, CSS pixels (fixed: no layout read per row). */
const SPARK_W = 72;
const SPARK_H = 20;
const OVERSCAN = 6;

interface Entry {
  id: string;
  state: string;
  cpu_pct: number;
  memory_bytes: number;
  pids: number;
  disk_bytes: number;
  net_in: number;
  net_out: number;
  violations: number;
  info?: Sandbox;
  history?: { cpu_pct: number[]; memory_bytes: number[] };
}

interface Frame {
  t: number;
  full?: boolean;
  sandboxes: Entry[];
  gone?: string[];
}

interface Row {
  id: string;
  info?: Sandbox;
  e: Entry;
  cpu: Ring;
  mem: Ring;
  /** Lower-cased text the search box matches. */
  haystack: string;
}

type SortKey = 'created' | 'id' | 'cpu' | 'memory' | 'net' | 'violations';

/** What the benchmark (scripts/bench_console.mjs) and the tests read. */
export interface FleetStats {
  mountedAt: number;
  firstRender?: number;
  /** Per frame: the sampler round's time (unix s), when it arrived (performance.now and
   * Date.now), when it was on screen, how many sandboxes it held, its size (characters). */
  frames: { t: number; received: number; wall: number; done: number; sandboxes: number; bytes: number }[];
  /** Milliseconds of each render (a frame's, or a scroll's). */
  renders: number[];
}

declare global {
  interface Window {
    __fleet?: FleetStats;
  }
}

export function fleetView(ctx: Ctx): View {
  const stats: FleetStats = { mountedAt: performance.now(), frames: [], renders: [] };
  window.__fleet = stats;
  const rows = new Map<string, Row>();
  let order: Row[] = [];
  let dirtyOrder = true;
  let scheduled = false;
  let connected = false;
  let sort: { key: SortKey; desc: boolean } = { key: 'created', desc: true };
  let query = '';
  let stateFilter = '';
  let onlyViolations = false;

  const status = el('span', { class: 'muted', 'data-testid': 'fleet-status' }, 'connecting…');
  const counts = el('span', { class: 'counts', 'data-testid': 'fleet-counts' });
  const search = el('input', {
    type: 'search',
    placeholder: 'Search id, tenant, metadata…',
    'aria-label': 'search sandboxes',
    'data-testid': 'fleet-search',
    oninput: () => {
      query = search.value.trim().toLowerCase();
      dirtyOrder = true;
      schedule();
    },
  });
  const stateSel = el(
    'select',
    {
      'aria-label': 'state',
      onchange: () => {
        stateFilter = stateSel.value;
        dirtyOrder = true;
        schedule();
      },
    },
    el('option', { value: '' }, 'all states'),
    el('option', { value: 'running' }, 'running'),
    el('option', { value: 'frozen' }, 'frozen'),
  );
  const violBox = el('input', {
    type: 'checkbox',
    onchange: () => {
      onlyViolations = violBox.checked;
      dirtyOrder = true;
      schedule();
    },
  });

  const cols: [string, SortKey | null, string][] = [
    ['state', null, 'c-state'],
    ['sandbox', 'id', 'c-id'],
    ...(ctx.who.admin ? ([['tenant', null, 'c-tenant']] as [string, SortKey | null, string][]) : []),
    ['age', 'created', 'c-age'],
    ['template', null, 'c-tpl'],
    ['tier', null, 'c-tier'],
    ['CPU', 'cpu', 'c-cpu'],
    ['memory', 'memory', 'c-mem'],
    ['pids', null, 'c-pids'],
    ['network ↓ / ↑', 'net', 'c-net'],
    ['violations', 'violations', 'c-viol'],
  ];
  const header = el('div', { class: 'fleet-row fleet-head', role: 'row' });
  for (const [label, key, cls] of cols) {
    const cell = el('div', { class: `cell ${cls}`, role: 'columnheader' }, label);
    if (key) {
      cell.classList.add('sortable');
      cell.addEventListener('click', () => {
        sort = sort.key === key ? { key, desc: !sort.desc } : { key, desc: true };
        dirtyOrder = true;
        for (const c of header.children) c.classList.remove('sorted', 'asc');
        cell.classList.add('sorted');
        if (!sort.desc) cell.classList.add('asc');
        schedule();
      });
      if (key === sort.key) cell.classList.add('sorted');
    }
    header.appendChild(cell);
  }

  const spacer = el('div', { class: 'fleet-spacer' });
  const body = el('div', { class: 'fleet-body', role: 'rowgroup', 'data-testid': 'fleet-body' }, spacer);
  const empty = el('div', { class: 'empty', hidden: true, 'data-testid': 'fleet-empty' }, 'No sandboxes.');
  body.addEventListener('scroll', () => schedule(), { passive: true });
  const resize = new ResizeObserver(() => schedule());
  resize.observe(body);

  const root = el(
    'section',
    { class: ctx.who.admin ? 'fleet admin' : 'fleet', 'data-testid': 'fleet' },
    el(
      'div',
      { class: 'toolbar' },
      el('h1', null, 'Fleet'),
      counts,
      el('span', { class: 'grow' }),
      search,
      stateSel,
      el('label', { class: 'check' }, violBox, 'with violations'),
      status,
    ),
    el('div', { class: 'fleet-table', role: 'table', 'aria-label': 'sandboxes' }, header, body, empty),
  );

  // Row elements on screen, reused as the list scrolls.
  interface Dom {
    root: HTMLElement;
    state: HTMLElement;
    id: HTMLElement;
    meta: HTMLElement;
    tenant?: HTMLElement;
    age: HTMLElement;
    tpl: HTMLElement;
    tier: HTMLElement;
    cpuCanvas: HTMLCanvasElement;
    cpu: HTMLElement;
    memCanvas: HTMLCanvasElement;
    mem: HTMLElement;
    pids: HTMLElement;
    net: HTMLElement;
    viol: HTMLElement;
    rowId?: string;
  }
  const pool: Dom[] = [];

  function makeDom(): Dom {
    const d: Dom = {
      root: el('div', { class: 'fleet-row', role: 'row', tabindex: 0 }),
      state: el('span', { class: 'state' }),
      id: el('span', { class: 'mono' }),
      meta: el('span', { class: 'muted small' }),
      tenant: ctx.who.admin ? el('div', { class: 'cell c-tenant' }) : undefined,
      age: el('div', { class: 'cell c-age' }),
      tpl: el('div', { class: 'cell c-tpl' }),
      tier: el('div', { class: 'cell c-tier' }),
      cpuCanvas: el('canvas', { class: 'spark', width: 72, height: 20 }),
      cpu: el('span', { class: 'num' }),
      memCanvas: el('canvas', { class: 'spark', width: 72, height: 20 }),
      mem: el('span', { class: 'num' }),
      pids: el('div', { class: 'cell c-pids num' }),
      net: el('div', { class: 'cell c-net num' }),
      viol: el('div', { class: 'cell c-viol num' }),
    };
    d.root.append(
      el('div', { class: 'cell c-state' }, d.state),
      el('div', { class: 'cell c-id' }, d.id, d.meta),
    );
    if (d.tenant) d.root.append(d.tenant);
    d.root.append(
      d.age,
      d.tpl,
      d.tier,
      el('div', { class: 'cell c-cpu' }, d.cpuCanvas, d.cpu),
      el('div', { class: 'cell c-mem' }, d.memCanvas, d.mem),
      d.pids,
      d.net,
      d.viol,
    );
    const open = () => d.rowId && ctx.navigate(`#/sandbox/${d.rowId}`);
    d.root.addEventListener('click', open);
    d.root.addEventListener('keydown', (ev: KeyboardEvent) => ev.key === 'Enter' && open());
    body.appendChild(d.root);
    return d;
  }

  function fill(d: Dom, r: Row, now: number): void {
    if (d.rowId !== r.id) {
      d.rowId = r.id;
      d.root.setAttribute('data-id', r.id);
    }
    const st = r.e.state;
    setText(d.state, st);
    d.state.className = `state s-${st}`;
    setText(d.id, r.id);
    const md = r.info ? Object.entries(r.info.metadata || {}).map(([k, v]) => `${k}=${v}`).join(' ') : '';
    setText(d.meta, md);
    if (d.tenant) setText(d.tenant, r.info?.tenant ?? '');
    setText(d.age, r.info ? age(r.info.created_at, now) : '');
    setText(d.tpl, r.info?.template ?? r.info?.preset ?? '—');
    setText(d.tier, r.info?.isolation ?? 'namespaces');
    setText(d.cpu, pct(r.e.cpu_pct));
    setText(d.mem, bytes(r.e.memory_bytes));
    setText(d.pids, String(r.e.pids));
    setText(d.net, `${bytes(r.e.net_in)} / ${bytes(r.e.net_out)}`);
    setText(d.viol, String(r.e.violations));
    d.viol.classList.toggle('bad', r.e.violations > 0);
    sparkline(d.cpuCanvas, r.cpu, '#58a6ff', 100, SPARK_W, SPARK_H);
    sparkline(d.memCanvas, r.mem, '#3fb950', undefined, SPARK_W, SPARK_H);
  }

  function visible(r: Row): boolean {
    if (stateFilter && r.e.state !== stateFilter) return false;
    if (onlyViolations && r.e.violations === 0) return false;
    return !query || r.haystack.includes(query);
  }

  function key(r: Row): number | string {
    switch (sort.key) {
      case 'id':
        return r.id;
      case 'cpu':
        return r.e.cpu_pct;
      case 'memory':
        return r.e.memory_bytes;
      case 'net':
        return r.e.net_in + r.e.net_out;
      case 'violations':
        return r.e.violations;
      default:
        return r.info?.created_at ?? '';
    }
  }

  function reorder(): void {
    order = [...rows.values()].filter(visible);
    const dir = sort.desc ? -1 : 1;
    order.sort((a, b) => {
      const ka = key(a);
      const kb = key(b);
      return ka < kb ? -dir : ka > kb ? dir : a.id < b.id ? -1 : 1;
    });
    dirtyOrder = false;
  }

  function render(): void {
    const t0 = performance.now();
    scheduled = false;
    // Numbers change every frame, so a sort by them is redone every frame too.
    if (dirtyOrder || sort.key !== 'created') reorder();
    const now = Date.now();
    spacer.style.height = `${order.length * ROW_H}px`;
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_H) - OVERSCAN);
    const count = Math.ceil((body.clientHeight || 600) / ROW_H) + 2 * OVERSCAN;
    const slice = order.slice(first, first + count);
    while (pool.length < slice.length) pool.push(makeDom());
    pool.forEach((d, i) => {
      const r = slice[i];
      if (!r) {
        d.root.hidden = true;
        d.rowId = undefined;
        return;
      }
      d.root.hidden = false;
      d.root.style.transform = `translateY(${(first + i) * ROW_H}px)`;
      fill(d, r, now);
    });
    let running = 0;
    let frozen = 0;
    for (const r of rows.values()) r.e.state === 'frozen' ? frozen++ : running++;
    setText(counts, `${running} running · ${frozen} frozen${order.length !== rows.size ? ` · ${order.length} shown` : ''}`);
    empty.hidden = !connected || order.length > 0;
    setText(empty, rows.size ? 'No sandbox matches the filter.' : 'No sandboxes.');
    stats.renders.push(performance.now() - t0);
    if (stats.renders.length > 2000) stats.renders.splice(0, 1000);
    if (stats.firstRender === undefined && connected) {
      // After the browser painted this frame.
      requestAnimationFrame(() => {
        if (stats.firstRender === undefined) stats.firstRender = performance.now();
      });
    }
  }

  function schedule(): void {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(render);
    }
  }

  function apply(frame: Frame): void {
    if (frame.full) {
      const seen = new Set(frame.sandboxes.map((e) => e.id));
      for (const id of rows.keys()) if (!seen.has(id)) rows.delete(id);
    }
    for (const e of frame.sandboxes) {
      let r = rows.get(e.id);
      if (!r) {
        r = { id: e.id, e, cpu: new Ring(HISTORY), mem: new Ring(HISTORY), haystack: e.id };
        rows.set(e.id, r);
        dirtyOrder = true;
        if (e.history) {
          for (const v of e.history.cpu_pct) r.cpu.push(v);
          for (const v of e.history.memory_bytes) r.mem.push(v);
        }
      }
      if (!e.history) {
        r.cpu.push(e.cpu_pct);
        r.mem.push(e.memory_bytes);
      }
      if (e.info) {
        r.info = e.info;
        const i = e.info;
        r.haystack = [e.id, i.tenant, i.preset, i.template, i.isolation, ...Object.entries(i.metadata || {}).flat()]
          .filter(Boolean)
          .join(' ')
          .toLowerCase();
        dirtyOrder = true;
      }
      if (r.e.state !== e.state) dirtyOrder = true;
      r.e = e;
    }
    for (const id of frame.gone ?? []) if (rows.delete(id)) dirtyOrder = true;
  }

  const abort = new AbortController();
  ctx.api.stream(
    `/v1/metrics?history=${HISTORY}`,
    (ev) => {
      if (ev.event !== 'fleet') return;
      const received = performance.now();
      const wall = Date.now();
      const frame = JSON.parse(ev.data) as Frame;
      apply(frame);
      connected = true;
      render();
      stats.frames.push({ t: frame.t, received, wall, done: performance.now(), sandboxes: frame.sandboxes.length, bytes: ev.data.length });
      if (stats.frames.length > 600) stats.frames.splice(0, stats.frames.length - 600);
    },
    {
      signal: abort.signal,
      reconnect: true,
      onOpen: () => {
        setText(status, 'live');
        status.className = 'live';
      },
      onError: (e, retrying) => {
        setText(status, `${retrying ? 'reconnecting' : 'stopped'} (${e instanceof Error ? e.message : String(e)})`);
        status.className = 'muted';
      },
    },
  );

  return {
    el: root,
    dispose() {
      abort.abort();
      resize.disconnect();
    },
  };
}

