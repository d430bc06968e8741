// A terminal in the sandbox: xterm.js over the attach WebSocket.
//
// A browser cannot put an Authorization header on a WebSocket, and the key must never be
// in a URL. So the console first asks the API for a ticket (POST /v1/tickets, with the
// key in the header as usual): a random one-time string, good for 30 seconds and only
// for this one attach path of this tenant; the WebSocket URL carries the ticket instead.

import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';

import { sb } from './api';
import { Ctx } from './ctx';
import { el, setText } from './dom';

/** Starts a login-ish shell: bash where the sandbox has it, else sh. */
const SHELL = 'if command -v bash >/dev/null 2>&1; then exec bash -i; else exec sh -i; fi';

export function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fromBase64(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export class TerminalPanel {
  readonly el: HTMLElement;
  private term: Terminal | null = null;
  private fit = new FitAddon();
  private ws: WebSocket | null = null;
  private screen: HTMLElement;
  private status: HTMLElement;
  private resize = new ResizeObserver(() => this.refit());
  private enc = new TextEncoder();

  constructor(
    private ctx: Ctx,
    private id: string,
  ) {
    this.screen = el('div', { class: 'term-screen', 'data-testid': 'terminal' });
    this.status = el('span', { class: 'muted', 'data-testid': 'terminal-status' }, 'no shell yet');
    this.el = el(
      'div',
      { class: 'panel term-panel' },
      el(
        'div',
        { class: 'toolbar' },
        el('button', { class: 'primary', 'data-testid': 'new-shell', onclick: () => void this.newShell() }, 'New shell'),
        el('span', { class: 'grow' }),
        this.status,
      ),
      this.screen,
    );
  }

  /** Called when the tab is shown: xterm needs a visible element to measure. */
  shown(): void {
    if (!this.term) {
      this.term = new Terminal({
        convertEol: false,
        cursorBlink: true,
        fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
        fontSize: 13,
        scrollback: 5000,
        theme: { background: '#0d1117', foreground: '#e6edf3' },
      });
      this.term.loadAddon(this.fit);
      this.term.open(this.screen);
      this.term.onData((d) => this.send({ type: 'stdin', data: toBase64(this.enc.encode(d)) }));
      this.term.onResize(({ rows, cols }) => this.send({ type: 'resize', rows, cols }));
      this.resize.observe(this.screen);
    }
    this.refit();
    this.term.focus();
  }

  private refit(): void {
    if (this.term && this.screen.offsetParent !== null) {
      try {
        this.fit.fit();
      } catch {
        // not laid out yet
      }
    }
  }

  private send(msg: object): void {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  async newShell(): Promise<void> {
    this.shown();
    const term = this.term!;
    try {
      const { pid } = await this.ctx.api.post<{ pid: number }>(`${sb(this.id)}/processes`, {
        cmd: SHELL,
        env: { TERM: 'xterm-256color' },
        pty: { rows: term.rows, cols: term.cols },
      });
      await this.attach(pid);
    } catch (e) {
      setText(this.status, `could not start a shell: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** Connects the terminal to process `pid` of the sandbox (its output is replayed first). */
  async attach(pid: number): Promise<void> {
    this.shown();
    const term = this.term!;
    this.ws?.close();
    const path = `${sb(this.id)}/processes/${pid}/attach`;
    const { ticket } = await this.ctx.api.post<{ ticket: string }>('/v1/tickets', { path });
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}${path}?ticket=${encodeURIComponent(ticket)}`);
    this.ws = ws;
    term.reset();
    setText(this.status, `connecting to pid ${pid}…`);
    ws.onopen = () => {
      setText(this.status, `attached to pid ${pid}`);
      this.send({ type: 'resize', rows: term.rows, cols: term.cols });
      term.focus();
    };
    ws.onmessage = (m) => {
      if (typeof m.data !== 'string') return;
      const f = JSON.parse(m.data) as { type: string; data?: string; exit_code?: number; signal?: number; dropped_bytes?: number; message?: string };
      switch (f.type) {
        case 'stdout':
        case 'stderr':
          if (f.data) term.write(fromBase64(f.data));
          break;
        case 'truncated':
          term.write(`\r\n[${f.dropped_bytes} bytes of earlier output dropped]\r\n`);
          break;
        case 'exit':
          term.write(`\r\n[process exited${f.signal ? ` by signal ${f.signal}` : ` with status ${f.exit_code}`}]\r\n`);
          setText(this.status, `pid ${pid} exited`);
          break;
        case 'error':
          setText(this.status, `error: ${f.message ?? ''}`);
          break;
      }
    };
    ws.onclose = (ev) => {
      if (this.ws === ws && !ev.wasClean) setText(this.status, `disconnected from pid ${pid} (${ev.code})`);
    };
  }

  dispose(): void {
    this.ws?.close();
    this.resize.disconnect();
    this.term?.dispose();
  }
}
