// The console's entry: sign in with an API key, then the fleet, a sandbox, or the audit
// log, chosen by the URL's fragment (#/, #/sandbox/ID/TAB, #/audit).
//
// The key lives in this page's memory. "Stay signed in" keeps it in sessionStorage too
// (this tab only, gone when the tab closes), so a reload does not ask again. It is never
// put in a URL, a cookie or localStorage.

import './style.css';

import { Api, ApiError, Whoami } from './api';
import { auditView } from './audit';
import { Ctx } from './ctx';
import { el, replace, View } from './dom';
import { fleetView } from './fleet';
import { sandboxView } from './sandbox';
import { stopButton } from './stop';

const STORE = 'safehouse.key';
const app = document.getElementById('app')!;

function signIn(message?: string): void {
  const key = el('input', {
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: 'sh_…',
    'aria-label': 'API key',
    'data-testid': 'key',
    required: true,
  });
  const remember = el('input', { type: 'checkbox', 'data-testid': 'remember' });
  const error = el('p', { class: 'bad', 'data-testid': 'signin-error' }, message ?? '');
  const form = el(
    'form',
    {
      class: 'signin',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        const k = key.value.trim();
        try {
          await start(k, remember.checked);
        } catch (e) {
          replace(error, e instanceof ApiError && e.status === 401 ? 'That key is not valid (or was revoked).' : `Sign-in failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      },
    },
    el('h1', null, 'safehouse'),
    el('p', { class: 'muted' }, 'Sign in with an API key: the admin key sees every sandbox, a tenant key its own.'),
    key,
    el('label', { class: 'check' }, remember, 'Stay signed in in this tab'),
    el('button', { class: 'primary', type: 'submit', 'data-testid': 'signin' }, 'Sign in'),
    error,
  );
  replace(app, form);
  key.focus();
}

async function start(key: string, remember: boolean): Promise<void> {
  const api = new Api(key);
  // The API's routes gate buttons for what a newer daemon has (pause); asked alongside.
  const paths = fetch('/v1/openapi.json', { credentials: 'omit' })
    .then((r) => r.json())
    .then((doc) => Object.keys(doc.paths ?? {}))
    .catch(() => [] as string[]);
  const [who, known] = await Promise.all([api.get<Whoami>('/v1/whoami'), paths]);
  if (remember) sessionStorage.setItem(STORE, key);
  const routes = new Set<string>(known);
  shell({ api, who, routes, navigate: (h) => (location.hash = h), toast });
}

const toasts = el('div', { class: 'toasts', 'aria-live': 'polite' });

function toast(message: string, kind: 'info' | 'error' = 'info'): void {
  const t = el('div', { class: `toast ${kind}` }, message, el('button', { class: 'link', onclick: () => t.remove() }, '×'));
  toasts.appendChild(t);
  if (kind === 'info') setTimeout(() => t.remove(), 5000);
}

function shell(ctx: Ctx): void {
  const main = el('main');
  const nav = el(
    'nav',
    { class: 'nav' },
    el('a', { href: '#/', 'data-nav': 'fleet' }, 'Fleet'),
    ctx.who.admin ? el('a', { href: '#/audit', 'data-nav': 'audit' }, 'Audit') : null,
  );
  const top = el(
    'header',
    { class: 'top' },
    el('span', { class: 'brand' }, 'safehouse'),
    nav,
    el('span', { class: 'grow' }),
    el('span', { class: 'who', 'data-testid': 'who' }, ctx.who.admin ? 'admin (all tenants)' : `tenant ${ctx.who.tenant}`),
    stopButton(ctx),
    el(
      'button',
      {
        onclick: () => {
          sessionStorage.removeItem(STORE);
          location.hash = '#/';
          location.reload();
        },
      },
      'Sign out',
    ),
  );
  replace(app, top, main, toasts);

  let current: (View & { tab?: (t: string) => void }) | null = null;
  let currentKey = '';
  function route(): void {
    const parts = location.hash.replace(/^#\/?/, '').split('/');
    const [page, id, tab] = parts;
    const key = page === 'sandbox' ? `sandbox/${id}` : page === 'audit' ? 'audit' : 'fleet';
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('on', a.dataset.nav === key.split('/')[0]);
    if (key === currentKey && current?.tab) {
      current.tab(tab ?? 'events');
      return;
    }
    current?.dispose();
    currentKey = key;
    if (page === 'sandbox' && id) current = sandboxView(ctx, decodeURIComponent(id), tab ?? 'events');
    else if (page === 'audit') current = auditView(ctx);
    else current = fleetView(ctx);
    replace(main, current.el);
  }
  window.addEventListener('hashchange', route);
  route();
}

const saved = sessionStorage.getItem(STORE);
if (saved) {
  start(saved, true).catch(() => {
    sessionStorage.removeItem(STORE);
    signIn('Your saved key no longer works: sign in again.');
  });
} else {
  signIn();
}
