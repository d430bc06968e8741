// A sandbox's event stream: every exec with its argv, file changes, network decisions
// (denials stand out), limit hits and the sandbox's own lifecycle. Newest first.

import { sb } from './api';
import { Ctx } from './ctx';
import { el, replace, setText } from './dom';
import { argv, clock } from './format';

/** Rows kept on the page; older ones are dropped (the daemon keeps its own replay ring). */
const MAX_ROWS = 2000;

export interface SandboxEvent {
  sandbox: string;
  seq: number;
  time: string;
  kind: string;
  data: Record<string, any>;
  dropped?: number;
}

type Group = 'all' | 'exec' | 'files' | 'network' | 'denials' | 'limits' | 'lifecycle';

const GROUPS: [Group, string][] = [
  ['all', 'All'],
  ['exec', 'Execs'],
  ['files', 'Files'],
  ['network', 'Network'],
  ['denials', 'Denials'],
  ['limits', 'Limits'],
  ['lifecycle', 'Lifecycle'],
];

export function isDenial(kind: string): boolean {
  return kind === 'net.denied' || kind === 'policy.violation' || kind === 'net.budget_exceeded';
}

function groupOf(kind: string): Group[] {
  const g: Group[] = ['all'];
  if (kind.startsWith('proc.') || kind.startsWith('exec.') || kind.startsWith('process.')) g.push('exec');
  if (kind.startsWith('fs.') || kind.startsWith('file.') || kind.startsWith('dir.')) g.push('files');
  if (kind.startsWith('net.')) g.push('network');
  if (isDenial(kind)) g.push('denials');
  if (kind.startsWith('limit.') || kind.startsWith('audit.') || kind === 'fs.watch_limit' || kind === 'fs.overflow')
    g.push('limits');
  if (kind.startsWith('sandbox.')) g.push('lifecycle');
  return g;
}

/** One line that says what happened, from data the sandbox may have chosen: text only. */
export function summary(e: SandboxEvent): string {
  const d = e.data || {};
  switch (e.kind) {
    case 'proc.exec':
      return `${argv(d.argv)}${d.truncated ? ' …' : ''}   (pid ${d.pid}, in ${d.cwd})`;
    case 'proc.exit':
      return `pid ${d.pid} ${d.signal ? `killed by signal ${d.signal}` : `exited ${d.exit_code ?? '?'}`} after ${d.wall_ms} ms`;
    case 'exec.started':
    case 'process.started':
      return `$ ${argv(d.argv)}   (pid ${d.pid}${d.pty ? ', pty' : ''})`;
    case 'exec.exited':
    case 'process.exited':
      return `pid ${d.pid} ${d.signal ? `killed by signal ${d.signal}` : `exited ${d.exit_code ?? '?'}`}${d.timed_out ? ', timed out' : ''}${d.oom_killed ? ', OOM-killed' : ''}`;
    case 'exec.failed':
    case 'process.failed':
      return `${argv(d.argv)}: ${d.error}`;
    case 'net.allowed':
      return `${d.target}   allowed by ${d.rule}`;
    case 'net.denied':
      return `${d.target}   DENIED: ${d.reason ?? ''} (${d.rule})`;
    case 'net.budget_exceeded':
      return `egress budget of ${d.limit} bytes exceeded: every connection closed`;
    case 'policy.violation':
      return `${d.layer}: ${argv(d.argv)} — ${d.message}`;
    case 'fs.created':
    case 'fs.deleted':
      return `${d.path}${d.dir ? '/' : ''}`;
    case 'fs.modified':
    case 'dir.created':
      return String(d.path);
    case 'file.written':
      return `${d.path} (${d.size} bytes)`;
    case 'file.deleted':
      return `${d.path}${d.recursive ? ' (recursive)' : ''}`;
    case 'fs.moved':
    case 'file.moved':
      return `${d.from ?? '(outside)'} → ${d.to ?? '(outside)'}`;
    case 'sandbox.created':
      return `created${d.preset ? ` from preset ${d.preset}` : ''}, expires ${d.expires_at}${d.network ? ', with network' : ''}`;
    case 'sandbox.killed':
    case 'sandbox.expired':
    case 'sandbox.failed':
      return d.error ? String(d.error) : e.kind.slice('sandbox.'.length);
    default:
      if (typeof d.message === 'string') return d.message;
      return JSON.stringify(d);
  }
}

export class EventLog {
  readonly el: HTMLElement;
  private list: HTMLElement;
  private count: HTMLElement;
  private group: Group = 'all';
  private query = '';
  private total = 0;
  private denials = 0;
  private abort = new AbortController();
  private statusEl: HTMLElement;

  constructor(ctx: Ctx, id: string) {
    this.list = el('ol', { class: 'events', 'data-testid': 'events' });
    this.count = el('span', { class: 'muted', 'data-testid': 'event-counts' });
    this.statusEl = el('span', { class: 'muted' }, 'connecting…');
    const chips = el('div', { class: 'chips', role: 'tablist' });
    for (const [g, label] of GROUPS) {
      const b = el(
        'button',
        {
          class: g === 'all' ? 'chip on' : 'chip',
          'data-group': g,
          onclick: () => {
            this.group = g;
            for (const c of chips.children) c.classList.toggle('on', c === b);
            this.refilter();
          },
        },
        label,
      );
      chips.appendChild(b);
    }
    const search = el('input', {
      type: 'search',
      placeholder: 'filter text…',
      'aria-label': 'filter events',
      oninput: () => {
        this.query = search.value.toLowerCase();
        this.refilter();
      },
    });
    this.el = el(
      'div',
      { class: 'panel events-panel' },
      el('div', { class: 'toolbar' }, chips, search, el('span', { class: 'grow' }), this.count, this.statusEl),
      this.list,
    );
    ctx.api.stream(`${sb(id)}/events`, (ev) => this.onEvent(ev.event, ev.data), {
      signal: this.abort.signal,
      onOpen: () => setText(this.statusEl, 'live'),
      onEnd: () => setText(this.statusEl, 'ended'),
      onError: (e, retrying) => setText(this.statusEl, `${retrying ? 'reconnecting' : 'stopped'} (${e instanceof Error ? e.message : String(e)})`),
    });
  }

  private onEvent(kind: string, data: string): void {
    if (kind === 'lagged') {
      const missed = (JSON.parse(data) as { missed: number }).missed;
      this.list.prepend(
        el('li', { class: 'ev ev-limit', 'data-groups': 'all limits' }, el('span', { class: 'kind' }, 'lagged'), `missed ${missed} events`),
      );
      return;
    }
    let e: SandboxEvent;
    try {
      e = JSON.parse(data) as SandboxEvent;
    } catch {
      return;
    }
    this.total++;
    if (isDenial(e.kind)) this.denials++;
    const groups = groupOf(e.kind);
    const text = summary(e);
    const details = el('pre', { class: 'details', hidden: true });
    const li = el(
      'li',
      {
        class: `ev ${isDenial(e.kind) ? 'ev-deny' : e.kind.startsWith('limit.') ? 'ev-limit' : e.kind.startsWith('sandbox.') ? 'ev-life' : ''}`,
        'data-kind': e.kind,
        'data-groups': groups.join(' '),
        onclick: () => {
          if (details.hidden) setText(details, JSON.stringify(e, null, 2));
          details.hidden = !details.hidden;
        },
      },
      el('span', { class: 'time mono' }, clock(e.time)),
      el('span', { class: 'kind' }, e.kind),
      el('span', { class: 'text mono' }, text),
      e.dropped ? el('span', { class: 'dropped' }, `${e.dropped} dropped before`) : null,
      details,
    );
    li.hidden = !this.matches(li);
    this.list.prepend(li);
    while (this.list.childElementCount > MAX_ROWS) this.list.lastElementChild?.remove();
    setText(this.count, `${this.total} events · ${this.denials} denials`);
  }

  private matches(li: HTMLElement): boolean {
    if (!(li.dataset.groups ?? '').split(' ').includes(this.group)) return false;
    return !this.query || (li.textContent ?? '').toLowerCase().includes(this.query);
  }

  private refilter(): void {
    for (const li of this.list.children) (li as HTMLElement).hidden = !this.matches(li as HTMLElement);
  }

  dispose(): void {
    this.abort.abort();
    replace(this.list);
  }
}
