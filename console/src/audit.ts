// The audit log (admin key): records filtered by sandbox, kind and time, and whether the
// hash chain and its signed checkpoints verify.

import { ApiError, withQuery } from './api';
import { Ctx } from './ctx';
import { el, replace, setText, View } from './dom';
import { clock } from './format';

interface AuditRecord {
  seq: number;
  time: string;
  kind: string;
  sandbox?: string | null;
  tenant?: string | null;
  data: any;
  dropped?: number;
}

interface Verify {
  ok: boolean;
  files: number;
  records: number;
  last_seq: number;
  last_hash: string;
  checkpoints: number;
  last_checkpoint: number | null;
  unsigned_tail: number;
  dropped: number;
  warnings: string[];
  problem: { file: string; line: number; seq: number | null; what: string } | null;
}

const KINDS = ['api', 'event', 'policy', 'checkpoint', 'log'];

function describe(r: AuditRecord): string {
  const d = r.data ?? {};
  switch (r.kind) {
    case 'api':
      return `${d.method} ${d.path} → ${d.status}${d.ms !== undefined ? ` (${d.ms} ms)` : ''}${d.key_id ? ` key ${d.key_id}` : ''}`;
    case 'event':
      return `${d.kind ?? ''} ${d.data ? JSON.stringify(d.data) : ''}`;
    case 'policy':
      return `policy sha256 ${String(d.sha256 ?? '').slice(0, 16)}…`;
    default:
      return JSON.stringify(d);
  }
}

/** datetime-local (local time) → RFC 3339 UTC, or undefined. */
function rfc3339(v: string): string | undefined {
  if (!v) return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

export function auditView(ctx: Ctx, initialSandbox = ''): View {
  const sandbox = el('input', { class: 'mono', placeholder: 'sb_…', value: initialSandbox, 'aria-label': 'sandbox', 'data-testid': 'audit-sandbox' });
  const boxes = KINDS.map((k) => el('input', { type: 'checkbox', value: k, 'data-kind': k }));
  const since = el('input', { type: 'datetime-local', step: 1, 'aria-label': 'since' });
  const until = el('input', { type: 'datetime-local', step: 1, 'aria-label': 'until' });
  const limit = el('select', { 'aria-label': 'limit' }, ...['100', '1000', '10000'].map((n) => el('option', { value: n, selected: n === '1000' }, `${n} records`)));
  const rows = el('tbody', { 'data-testid': 'audit-records' });
  const status = el('span', { class: 'muted', 'data-testid': 'audit-status' });
  const verifyBox = el('div', { class: 'verify', 'data-testid': 'audit-verify' }, 'checking the chain…');
  const abort = new AbortController();

  async function load(ev?: Event): Promise<void> {
    ev?.preventDefault();
    setText(status, 'loading…');
    const kinds = boxes.filter((b) => b.checked).map((b) => b.value);
    const path = withQuery('/v1/audit', {
      sandbox: sandbox.value.trim() || undefined,
      kind: kinds.length ? kinds.join(',') : undefined,
      since: rfc3339(since.value),
      until: rfc3339(until.value),
      limit: limit.value,
    });
    try {
      const r = await ctx.api.fetch('GET', path, undefined, abort.signal);
      const truncated = r.headers.get('x-safehouse-truncated') === 'true';
      const text = await r.text();
      const recs: AuditRecord[] = [];
      for (const line of text.split('\n')) if (line) recs.push(JSON.parse(line));
      recs.reverse();
      replace(
        rows,
        ...recs.map((r) =>
          el(
            'tr',
            { class: r.kind === 'event' && /denied|violation/.test(r.data?.kind ?? '') ? 'bad-row' : '' },
            el('td', { class: 'num' }, r.seq),
            el('td', { class: 'mono', title: r.time }, `${r.time.slice(0, 10)} ${clock(r.time)}`),
            el('td', null, el('span', { class: `tag k-${r.kind}` }, r.kind)),
            el('td', null, r.tenant ?? ''),
            el('td', { class: 'mono' }, r.sandbox ? el('a', { href: `#/sandbox/${r.sandbox}` }, r.sandbox) : ''),
            el('td', { class: 'mono wrap' }, describe(r)),
          ),
        ),
      );
      setText(status, `${recs.length} records, newest first${truncated ? ` (more matched: narrow the filter)` : ''}`);
    } catch (e) {
      setText(status, e instanceof ApiError && e.status === 403 ? 'The audit log is for the admin key only.' : e instanceof Error ? e.message : String(e));
    }
  }

  async function verify(): Promise<void> {
    replace(verifyBox, 'checking the chain…');
    try {
      const v = await ctx.api.get<Verify>('/v1/audit/verify', abort.signal);
      replace(
        verifyBox,
        el('span', { class: v.ok ? 'verdict ok' : 'verdict bad', 'data-testid': 'audit-verify-verdict' }, v.ok ? 'chain verified' : 'CHAIN BROKEN'),
        el('span', null, `${v.records} records in ${v.files} files · last seq ${v.last_seq} · ${v.checkpoints} signed checkpoints · ${v.unsigned_tail} records after the last checkpoint${v.dropped ? ` · ${v.dropped} events dropped` : ''}`),
        v.problem ? el('div', { class: 'bad' }, `${v.problem.file}:${v.problem.line}${v.problem.seq !== null ? ` (seq ${v.problem.seq})` : ''}: ${v.problem.what}`) : null,
        ...v.warnings.map((w) => el('div', { class: 'muted' }, w)),
        el('button', { onclick: () => void verify() }, 'Verify again'),
      );
    } catch (e) {
      replace(verifyBox, el('span', { class: 'verdict bad' }, 'not verified'), ` ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  const root = el(
    'section',
    { class: 'audit', 'data-testid': 'audit' },
    el('div', { class: 'toolbar' }, el('h1', null, 'Audit log')),
    verifyBox,
    el(
      'form',
      { class: 'toolbar filters', onsubmit: load },
      el('label', null, 'sandbox ', sandbox),
      el('span', { class: 'kinds' }, ...boxes.map((b) => el('label', { class: 'check' }, b, b.value))),
      el('label', null, 'since ', since),
      el('label', null, 'until ', until),
      limit,
      el('button', { class: 'primary', type: 'submit', 'data-testid': 'audit-load' }, 'Show'),
      status,
    ),
    el('table', { class: 'grid audit-table' }, el('thead', null, el('tr', null, ...['seq', 'time', 'kind', 'tenant', 'sandbox', 'record'].map((h) => el('th', null, h)))), rows),
  );
  void verify();
  void load();
  return { el: root, dispose: () => abort.abort() };
}
