// The console is served by the daemon at /ui/ (crates/console embeds dist/). No inline
// script may end up in the page: its Content-Security-Policy allows only 'self' scripts.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/ui/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    // The preload polyfill would be an inline script; every browser the console supports
    // has modulepreload.
    modulePreload: { polyfill: false },
    // Every asset a file of its own (no data: URLs to reason about).
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
});
