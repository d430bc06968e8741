// The console's source never turns a string into markup or code: none of the DOM's HTML
// sinks, no eval. (The page's Trusted Types policy makes the browser refuse them too; this
// catches them before a browser does.) And the built page has no inline script.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const SRC = new URL('../src/', import.meta.url).pathname;
const DIST = new URL('../dist/', import.meta.url).pathname;

const FORBIDDEN = [
  /\.innerHTML\b/,
  /\.outerHTML\b/,
  /insertAdjacentHTML/,
  /document\.write/,
  /\beval\s*\(/,
  /new\s+Function\s*\(/,
  /createContextualFragment/,
  /DOMParser/,
  /dangerouslySetInnerHTML/,
  /setAttribute\(\s*['"]on/,
  /setTimeout\(\s*['"`]/,
];

test('no HTML sink or eval in the console source', () => {
  const files = readdirSync(SRC).filter((f) => f.endsWith('.ts'));
  assert.ok(files.length > 5, 'source files found');
  for (const f of files) {
    const lines = readFileSync(join(SRC, f), 'utf8').split('\n');
    lines.forEach((line, i) => {
      for (const re of FORBIDDEN) assert.ok(!re.test(line), `${f}:${i + 1}: ${line.trim()} (${re})`);
    });
  }
});

test('the built page loads only its own scripts', { skip: !existsSync(join(DIST, 'index.html')) && 'not built' }, () => {
  const page = readFileSync(join(DIST, 'index.html'), 'utf8');
  const scripts = [...page.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
  assert.ok(scripts.length >= 1);
  for (const [, attrs, body] of scripts) {
    assert.match(attrs, /\bsrc="\/ui\/assets\/[^"]+\.js"/, 'a script from /ui/assets');
    assert.equal(body.trim(), '', 'no inline code');
  }
  assert.ok(!/\son[a-z]+=/i.test(page), 'no inline event handler');
});
