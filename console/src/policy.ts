// The sandbox's policy as the daemon recorded it, and `explain`: may it reach this host,
// read or write this path, run this program, and which rule decides.

import { sb, withQuery } from './api';
import { Ctx } from './ctx';
import { el, replace, setText } from './dom';

interface Answer {
  question: string;
  allowed: boolean;
  rule: string;
  reason: string;
  hint: string;
  notes?: string[];
}

const KINDS: [string, string][] = [
  ['net', 'pypi.org:443'],
  ['exec', '/usr/bin/python3'],
  ['read', '/etc/passwd'],
  ['write', '/workspace/out.txt'],
];

export class PolicyPanel {
  readonly el: HTMLElement;
  private doc: HTMLElement;
  private answer: HTMLElement;
  private loaded = false;

  constructor(
    private ctx: Ctx,
    private id: string,
  ) {
    this.doc = el('pre', { class: 'policy mono', 'data-testid': 'policy' }, 'loading…');
    this.answer = el('div', { class: 'answer', 'data-testid': 'explain-answer' });
    const kind = el('select', { 'aria-label': 'question' }, ...KINDS.map(([k]) => el('option', { value: k }, k)));
    const subject = el('input', { class: 'mono', placeholder: KINDS[0][1], 'aria-label': 'subject', 'data-testid': 'explain-subject' });
    kind.addEventListener('change', () => (subject.placeholder = KINDS.find(([k]) => k === kind.value)?.[1] ?? ''));
    const ask = async (ev: Event) => {
      ev.preventDefault();
      try {
        const a = await this.ctx.api.get<Answer>(withQuery(`${sb(this.id)}/policy/explain`, { [kind.value]: subject.value.trim() || subject.placeholder }));
        replace(
          this.answer,
          el('div', { class: a.allowed ? 'verdict ok' : 'verdict bad' }, a.allowed ? 'allowed' : 'denied'),
          el('dl', null, el('dt', null, 'question'), el('dd', { class: 'mono' }, a.question), el('dt', null, 'rule'), el('dd', { class: 'mono' }, a.rule), el('dt', null, 'reason'), el('dd', null, a.reason), el('dt', null, 'hint'), el('dd', null, a.hint), ...(a.notes ?? []).flatMap((n) => [el('dt', null, 'note'), el('dd', null, n)])),
        );
      } catch (e) {
        replace(this.answer, el('div', { class: 'verdict bad' }, e instanceof Error ? e.message : String(e)));
      }
    };
    this.el = el(
      'div',
      { class: 'panel policy-panel' },
      el('form', { class: 'toolbar explain', onsubmit: ask }, el('h2', null, 'Explain'), kind, subject, el('button', { class: 'primary', type: 'submit', 'data-testid': 'explain' }, 'Ask')),
      this.answer,
      el('h2', null, 'Effective policy'),
      this.doc,
    );
  }

  shown(): void {
    if (this.loaded) return;
    this.loaded = true;
    this.ctx.api
      .get<{ policy: unknown }>(`${sb(this.id)}/policy`)
      .then((r) => setText(this.doc, JSON.stringify(r.policy, null, 2)))
      .catch((e) => setText(this.doc, e instanceof Error ? e.message : String(e)));
  }
}
