// The emergency stop: one button, a confirmation naming how many sandboxes it will stop,
// and the result (how many, how fast). Freeze-all is the gentler choice in the same dialog:
// everything stops, nothing is lost, for investigation.

import { Ctx } from './ctx';
import { el, replace, setText } from './dom';

interface Live {
  running: number;
  frozen: number;
}

async function count(ctx: Ctx): Promise<Live> {
  const [r, f] = await Promise.all([
    ctx.api.get<{ sandboxes: unknown[] }>('/v1/sandboxes?state=running'),
    ctx.api.get<{ sandboxes: unknown[] }>('/v1/sandboxes?state=frozen'),
  ]);
  return { running: r.sandboxes.length, frozen: f.sandboxes.length };
}

export function stopButton(ctx: Ctx): HTMLElement {
  const text = el('p', { 'data-testid': 'stop-text' });
  const result = el('p', { class: 'result', 'data-testid': 'stop-result' });
  const killBtn = el('button', { class: 'danger big', 'data-testid': 'stop-confirm' }, 'Kill all');
  const freezeBtn = el('button', { class: 'big', 'data-testid': 'freeze-all' }, 'Freeze all');
  const cancel = el('button', { type: 'button' }, 'Close');
  const dialog = el(
    'dialog',
    { class: 'stop-dialog', 'data-testid': 'stop-dialog' },
    el('h2', null, 'Emergency stop'),
    text,
    el('div', { class: 'toolbar' }, killBtn, freezeBtn, el('span', { class: 'grow' }), cancel),
    result,
  );
  cancel.addEventListener('click', () => dialog.close());
  document.body.appendChild(dialog);

  const scope = ctx.who.admin ? 'every tenant' : `tenant ${ctx.who.tenant}`;
  async function run(what: 'kill' | 'freeze'): Promise<void> {
    killBtn.disabled = freezeBtn.disabled = true;
    setText(result, what === 'kill' ? 'stopping…' : 'freezing…');
    const t0 = performance.now();
    try {
      if (what === 'kill') {
        const r = await ctx.api.post<{ killed: number; ms: number }>('/v1/kill-all');
        setText(result, `Killed ${r.killed} sandbox${r.killed === 1 ? '' : 'es'} in ${r.ms} ms (round trip ${Math.round(performance.now() - t0)} ms).`);
      } else {
        const r = await ctx.api.post<{ frozen: number; ms: number }>('/v1/freeze-all');
        setText(result, `Froze ${r.frozen} sandbox${r.frozen === 1 ? '' : 'es'} in ${r.ms} ms (round trip ${Math.round(performance.now() - t0)} ms). Thaw them one by one from their pages, or kill them.`);
      }
      result.className = 'result ok';
    } catch (e) {
      setText(result, `Failed: ${e instanceof Error ? e.message : String(e)}`);
      result.className = 'result bad';
    }
    killBtn.disabled = freezeBtn.disabled = false;
  }
  killBtn.addEventListener('click', () => void run('kill'));
  freezeBtn.addEventListener('click', () => void run('freeze'));

  return el(
    'button',
    {
      class: 'danger stop',
      'data-testid': 'stop',
      title: 'Emergency stop',
      onclick: async () => {
        replace(result);
        result.className = 'result';
        setText(text, 'Counting…');
        dialog.showModal();
        try {
          const n = await count(ctx);
          replace(
            text,
            `Kill all stops every sandbox this key can see (${scope}): `,
            el('strong', { 'data-testid': 'stop-count' }, String(n.running + n.frozen)),
            ` (${n.running} running, ${n.frozen} frozen). Their processes die at once and their files are gone. Freeze all stops every process but keeps everything, for investigation.`,
          );
          setText(killBtn, `Kill all ${n.running + n.frozen}`);
          setText(freezeBtn, `Freeze all ${n.running}`);
        } catch (e) {
          setText(text, `Could not count the sandboxes: ${e instanceof Error ? e.message : String(e)}`);
        }
      },
    },
    'STOP ALL',
  );
}
