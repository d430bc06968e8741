// One sandbox: its state and controls, live charts, and tabs for its events, a terminal,
// files, processes and policy.

import { ApiError, Sandbox, sb } from './api';
import { lineChart } from './chart';
import { Ctx } from './ctx';
import { el, replace, setText, View } from './dom';
import { EventLog } from './events';
import { FilesPanel } from './files';
import { age, bytes, pct } from './format';
import { PolicyPanel } from './policy';
import { ProcessesPanel } from './processes';
import type { TerminalPanel } from './terminal';

interface Sample {
  t: number;
  cpu_pct: number;
  memory_bytes: number;
  pids: number;
  disk_bytes: number;
  net_in: number;
  net_out: number;
}

interface Metrics {
  current: Sample & { state: string; violations: number; memory_peak_bytes: number | null };
  history: Sample[];
}

const TABS = ['events', 'terminal', 'files', 'processes', 'policy'] as const;
type Tab = (typeof TABS)[number];

/** Seconds of history the charts show (the daemon keeps 300). */
const WINDOW = 300;

export function sandboxView(ctx: Ctx, id: string, initialTab: string): View {
  let info: Sandbox | null = null;
  let ended = false;
  const abort = new AbortController();

  const title = el('h1', { class: 'mono' }, id);
  const state = el('span', { class: 'state', 'data-testid': 'sandbox-state' });
  const facts = el('div', { class: 'facts' });
  const actions = el('div', { class: 'actions' });

  interface ChartSpec {
    key: string;
    title: string;
    color: string;
    pick: (s: Sample, prev?: Sample) => number;
    fmt: (v: number) => string;
  }
  const specs: ChartSpec[] = [
    { key: 'cpu', title: 'CPU', color: '#58a6ff', pick: (s) => s.cpu_pct, fmt: pct },
    { key: 'mem', title: 'Memory', color: '#3fb950', pick: (s) => s.memory_bytes, fmt: bytes },
    { key: 'pids', title: 'Processes', color: '#d29922', pick: (s) => s.pids, fmt: (v) => String(Math.round(v)) },
    { key: 'disk', title: 'Disk', color: '#a371f7', pick: (s) => s.disk_bytes, fmt: bytes },
    { key: 'net', title: 'Egress', color: '#f778ba', pick: (s, p) => (p ? Math.max(0, s.net_in + s.net_out - p.net_in - p.net_out) : 0), fmt: (v) => `${bytes(v)}/s` },
  ];
  const charts = specs.map((c) => ({ ...c, canvas: el('canvas', { class: 'chart', height: 90 }), value: el('span', { class: 'value' }) }));
  const chartRow = el(
    'div',
    { class: 'charts', 'data-testid': 'charts' },
    ...charts.map((c) => el('figure', { class: 'chart-box' }, el('figcaption', null, c.title, c.value), c.canvas)),
  );

  // Tabs: each panel is built the first time it is shown and kept (the terminal stays
  // connected while another tab is open).
  const events = new EventLog(ctx, id);
  let terminal: TerminalPanel | null = null;
  let files: FilesPanel | null = null;
  let processes: ProcessesPanel | null = null;
  let policy: PolicyPanel | null = null;
  const panelArea = el('div', { class: 'tab-area' }, events.el);
  const tabButtons = new Map<Tab, HTMLElement>();
  const tabBar = el('nav', { class: 'tabs', role: 'tablist' });
  for (const t of TABS) {
    const b = el('button', { role: 'tab', 'data-tab': t, onclick: () => ctx.navigate(`#/sandbox/${id}/${t}`) }, t[0].toUpperCase() + t.slice(1));
    tabButtons.set(t, b);
    tabBar.appendChild(b);
  }

  // xterm.js is loaded the first time a terminal is wanted (a chunk of its own), so the
  // other views do not parse it.
  let terminalLoading: Promise<TerminalPanel> | null = null;
  function terminalPanel(): Promise<TerminalPanel> {
    terminalLoading ??= import('./terminal').then(({ TerminalPanel }) => {
      terminal = new TerminalPanel(ctx, id);
      return terminal;
    });
    return terminalLoading;
  }

  let shownTab: Tab = 'events';
  async function show(tab: Tab): Promise<void> {
    shownTab = tab;
    for (const [t, b] of tabButtons) b.classList.toggle('on', t === tab);
    let panel: { el: HTMLElement; shown?: () => void };
    switch (tab) {
      case 'terminal':
        panel = await terminalPanel();
        if (shownTab !== 'terminal') return;
        break;
      case 'files':
        files ??= new FilesPanel(ctx, id);
        panel = files;
        break;
      case 'processes':
        processes ??= new ProcessesPanel(ctx, id, (pid) => {
          ctx.navigate(`#/sandbox/${id}/terminal`);
          void terminalPanel().then((t) => t.attach(pid));
        });
        panel = processes;
        break;
      case 'policy':
        policy ??= new PolicyPanel(ctx, id);
        panel = policy;
        break;
      default:
        panel = events;
    }
    if (panel.el.parentNode !== panelArea) panelArea.appendChild(panel.el);
    for (const c of panelArea.children) (c as HTMLElement).hidden = c !== panel.el;
    panel.shown?.();
  }

  function button(label: string, cls: string, run: () => Promise<unknown>, confirmText?: string): HTMLElement {
    return el(
      'button',
      {
        class: cls,
        'data-action': label.toLowerCase(),
        onclick: async () => {
          if (confirmText && !confirm(confirmText)) return;
          try {
            await run();
          } catch (e) {
            ctx.toast(`${label}: ${e instanceof Error ? e.message : String(e)}`, 'error');
          }
          await loadInfo();
        },
      },
      label,
    );
  }

  function renderHeader(): void {
    if (!info) return;
    setText(state, info.state);
    state.className = `state s-${info.state}`;
    const items: [string, string][] = [
      ['tenant', info.tenant ?? ctx.who.tenant],
      ['template', info.template ?? info.preset ?? '—'],
      ['tier', info.isolation ?? 'namespaces'],
      ['age', age(info.created_at)],
      ['expires', new Date(info.expires_at).toLocaleString()],
    ];
    for (const [k, v] of Object.entries(info.metadata ?? {})) items.push([k, v]);
    if (info.error) items.push(['error', info.error]);
    replace(facts, ...items.map(([k, v]) => el('span', { class: 'fact' }, el('span', { class: 'muted' }, k), ' ', v)));
    const live = info.state === 'running' || info.state === 'frozen';
    replace(
      actions,
      info.state === 'running' ? button('Freeze', '', () => ctx.api.post(`${sb(id)}/freeze`)) : null,
      info.state === 'frozen' ? button('Thaw', '', () => ctx.api.post(`${sb(id)}/thaw`)) : null,
      live && ctx.routes.has('/v1/sandboxes/{id}/pause') ? button('Pause', '', () => ctx.api.post(`${sb(id)}/pause`)) : null,
      live ? button('Kill', 'danger', () => ctx.api.fetch('DELETE', sb(id)), `Kill sandbox ${id}? Its processes and files are gone for good.`) : null,
    );
  }

  async function loadInfo(): Promise<void> {
    try {
      info = await ctx.api.get<Sandbox>(sb(id), abort.signal);
      ended = !(info.state === 'running' || info.state === 'frozen');
      renderHeader();
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        replace(facts, el('span', { class: 'bad' }, 'No such sandbox (or not one this key can see).'));
        ended = true;
      }
    }
  }

  async function loadMetrics(): Promise<void> {
    if (ended) return;
    try {
      const m = await ctx.api.get<Metrics>(`${sb(id)}/metrics`, abort.signal);
      if (info && info.state !== m.current.state) await loadInfo();
      const h = m.history;
      for (const c of charts) {
        const points = h.map((s, i) => c.pick(s, h[i - 1]));
        lineChart(c.canvas, points.slice(1), c.color, c.fmt, WINDOW);
        setText(c.value, points.length ? c.fmt(points[points.length - 1]) : '');
      }
    } catch (e) {
      if (e instanceof ApiError && (e.status === 409 || e.status === 404)) await loadInfo();
    }
  }

  void loadInfo();
  void loadMetrics();
  const timer = window.setInterval(() => void loadMetrics(), 1000);

  const root = el(
    'section',
    { class: 'sandbox', 'data-testid': 'sandbox' },
    el('div', { class: 'crumbs' }, el('a', { href: '#/' }, '← Fleet')),
    el('div', { class: 'toolbar head' }, title, state, el('span', { class: 'grow' }), actions),
    facts,
    chartRow,
    tabBar,
    panelArea,
  );
  void show((TABS as readonly string[]).includes(initialTab) ? (initialTab as Tab) : 'events');

  return {
    el: root,
    /** The router calls this when only the tab changed. */
    tab(t: string) {
      void show((TABS as readonly string[]).includes(t) ? (t as Tab) : 'events');
    },
    dispose() {
      abort.abort();
      clearInterval(timer);
      events.dispose();
      terminal?.dispose();
      processes?.dispose();
    },
  } as View & { tab(t: string): void };
}
