// Processes: the ones started through the API (attach, signal) and every process the exec
// watcher saw start in the sandbox and not yet exit.

import { sb } from './api';
import { Ctx } from './ctx';
import { el, replace, setText } from './dom';
import { argv, duration } from './format';

interface ApiProcess {
  pid: number;
  cmd: string[];
  pty: boolean;
  running: boolean;
  exit_code?: number | null;
  signal?: number | null;
}

interface ExecEvent {
  kind: 'exec' | 'exit';
  pid: number;
  ppid?: number;
  host_pid: number;
  path?: string;
  argv?: string[];
  cwd?: string;
  time: number;
}

export class ProcessesPanel {
  readonly el: HTMLElement;
  private apiRows: HTMLElement;
  private liveRows: HTMLElement;
  private status: HTMLElement;
  private timer: number | undefined;

  constructor(
    private ctx: Ctx,
    private id: string,
    private attach: (pid: number) => void,
  ) {
    this.apiRows = el('tbody', { 'data-testid': 'api-processes' });
    this.liveRows = el('tbody', { 'data-testid': 'live-processes' });
    this.status = el('span', { class: 'muted' });
    this.el = el(
      'div',
      { class: 'panel' },
      el('div', { class: 'toolbar' }, el('h2', null, 'Started through the API'), el('span', { class: 'grow' }), this.status),
      el('table', { class: 'grid' }, el('thead', null, el('tr', null, el('th', null, 'pid'), el('th', null, 'command'), el('th', null, 'state'), el('th', null, ''))), this.apiRows),
      el('div', { class: 'toolbar' }, el('h2', null, 'Running in the sandbox (seen by the exec watcher)')),
      el('table', { class: 'grid' }, el('thead', null, el('tr', null, el('th', null, 'pid'), el('th', null, 'ppid'), el('th', null, 'command'), el('th', null, 'cwd'), el('th', null, 'running for'))), this.liveRows),
    );
  }

  shown(): void {
    void this.refresh();
    clearInterval(this.timer);
    this.timer = window.setInterval(() => {
      if (this.el.offsetParent !== null) void this.refresh();
    }, 2000);
  }

  async refresh(): Promise<void> {
    try {
      const [procs, execs] = await Promise.all([
        this.ctx.api.get<{ processes: ApiProcess[] }>(`${sb(this.id)}/processes`),
        this.ctx.api.get<{ events: ExecEvent[] }>(`${sb(this.id)}/execs`),
      ]);
      replace(this.apiRows, ...procs.processes.map((p) => this.apiRow(p)));
      const live = new Map<number, ExecEvent>();
      for (const e of execs.events) {
        if (e.kind === 'exec') live.set(e.host_pid, e);
        else live.delete(e.host_pid);
      }
      const now = Date.now();
      replace(
        this.liveRows,
        ...[...live.values()].sort((a, b) => a.pid - b.pid).map((e) =>
          el('tr', null, el('td', { class: 'num' }, e.pid), el('td', { class: 'num' }, e.ppid ?? ''), el('td', { class: 'mono' }, argv(e.argv)), el('td', { class: 'mono muted' }, e.cwd ?? ''), el('td', null, duration(now - e.time))),
        ),
      );
      setText(this.status, `updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      setText(this.status, e instanceof Error ? e.message : String(e));
    }
  }

  private apiRow(p: ApiProcess): HTMLElement {
    const signal = (s: string) => async () => {
      try {
        await this.ctx.api.post(`${sb(this.id)}/processes/${p.pid}/signal`, { signal: s });
      } catch (e) {
        this.ctx.toast(`signal ${p.pid}: ${e instanceof Error ? e.message : String(e)}`, 'error');
      }
      void this.refresh();
    };
    return el(
      'tr',
      null,
      el('td', { class: 'num' }, p.pid),
      el('td', { class: 'mono' }, argv(p.cmd), p.pty ? el('span', { class: 'tag' }, 'pty') : null),
      el('td', null, p.running ? 'running' : p.signal ? `killed (signal ${p.signal})` : `exited ${p.exit_code ?? ''}`),
      el(
        'td',
        { class: 'actions' },
        p.running ? el('button', { onclick: () => this.attach(p.pid) }, 'Attach') : null,
        p.running ? el('button', { onclick: signal('SIGTERM') }, 'SIGTERM') : null,
        p.running ? el('button', { class: 'danger-text', onclick: signal('SIGKILL') }, 'SIGKILL') : null,
      ),
    );
  }

  dispose(): void {
    clearInterval(this.timer);
  }
}
