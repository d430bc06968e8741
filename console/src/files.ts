// The sandbox's files: list a directory, go in and up, download, upload, delete. Names come
// from the sandbox and are shown as text, whatever they contain.

import { sb, withQuery } from './api';
import { Ctx } from './ctx';
import { el, replace, setText } from './dom';
import { bytes } from './format';

interface FileInfo {
  path: string;
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtime: string;
  symlink_target?: string;
}

function parent(path: string): string {
  const p = path.replace(/\/+$/, '');
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

function join(dir: string, name: string): string {
  return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}

export class FilesPanel {
  readonly el: HTMLElement;
  private path = '/workspace';
  private pathInput: HTMLInputElement;
  private list: HTMLElement;
  private status: HTMLElement;
  private upload: HTMLInputElement;

  constructor(
    private ctx: Ctx,
    private id: string,
  ) {
    this.pathInput = el('input', {
      class: 'mono path',
      value: this.path,
      'aria-label': 'directory',
      'data-testid': 'files-path',
      onkeydown: (e: KeyboardEvent) => e.key === 'Enter' && void this.open(this.pathInput.value.trim() || '/'),
    });
    this.upload = el('input', {
      type: 'file',
      multiple: true,
      hidden: true,
      'data-testid': 'files-upload',
      onchange: () => void this.uploadFiles(),
    });
    this.status = el('span', { class: 'muted', 'data-testid': 'files-status' });
    this.list = el('tbody', { 'data-testid': 'files' });
    this.el = el(
      'div',
      { class: 'panel files-panel' },
      el(
        'div',
        { class: 'toolbar' },
        el('button', { onclick: () => void this.open(parent(this.path)), title: 'parent directory' }, '↑ Up'),
        this.pathInput,
        el('button', { onclick: () => void this.open(this.pathInput.value.trim() || '/') }, 'Go'),
        el('button', { onclick: () => void this.open(this.path) }, 'Refresh'),
        el('button', { class: 'primary', onclick: () => this.upload.click() }, 'Upload…'),
        this.upload,
        el('span', { class: 'grow' }),
        this.status,
      ),
      el(
        'table',
        { class: 'grid' },
        el('thead', null, el('tr', null, el('th', null, 'name'), el('th', null, 'type'), el('th', { class: 'num' }, 'size'), el('th', null, 'modified'), el('th', null, ''))),
        this.list,
      ),
    );
  }

  shown(): void {
    void this.open(this.path);
  }

  async open(path: string): Promise<void> {
    setText(this.status, 'loading…');
    try {
      const r = await this.ctx.api.get<{ entries: FileInfo[] }>(withQuery(`${sb(this.id)}/fs/list`, { path }));
      this.path = path;
      this.pathInput.value = path;
      const entries = r.entries.sort((a, b) => (a.type === 'dir') !== (b.type === 'dir') ? (a.type === 'dir' ? -1 : 1) : a.name < b.name ? -1 : 1);
      replace(this.list, ...entries.map((f) => this.row(f)));
      setText(this.status, `${entries.length} entries`);
    } catch (e) {
      setText(this.status, e instanceof Error ? e.message : String(e));
    }
  }

  private row(f: FileInfo): HTMLElement {
    const name =
      f.type === 'dir'
        ? el('button', { class: 'link mono', onclick: () => void this.open(f.path) }, `${f.name}/`)
        : el('span', { class: 'mono' }, f.name, f.symlink_target ? ` → ${f.symlink_target}` : '');
    return el(
      'tr',
      { 'data-name': f.name },
      el('td', { class: 'name' }, name),
      el('td', null, f.type),
      el('td', { class: 'num' }, f.type === 'file' ? bytes(f.size) : ''),
      el('td', { class: 'muted' }, new Date(f.mtime).toLocaleString()),
      el(
        'td',
        { class: 'actions' },
        f.type === 'file' ? el('button', { onclick: () => void this.download(f) }, 'Download') : null,
        el('button', { class: 'danger-text', onclick: () => void this.remove(f) }, 'Delete'),
      ),
    );
  }

  private async download(f: FileInfo): Promise<void> {
    try {
      const r = await this.ctx.api.fetch('GET', withQuery(`${sb(this.id)}/files`, { path: f.path }));
      const url = URL.createObjectURL(await r.blob());
      const a = el('a', { href: url, download: f.name });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      this.ctx.toast(`download ${f.path}: ${e instanceof Error ? e.message : String(e)}`, 'error');
    }
  }

  private async uploadFiles(): Promise<void> {
    const files = [...(this.upload.files ?? [])];
    for (const file of files) {
      setText(this.status, `uploading ${file.name}…`);
      try {
        await this.ctx.api.fetch('PUT', withQuery(`${sb(this.id)}/files`, { path: join(this.path, file.name) }), file);
      } catch (e) {
        this.ctx.toast(`upload ${file.name}: ${e instanceof Error ? e.message : String(e)}`, 'error');
      }
    }
    this.upload.value = '';
    await this.open(this.path);
  }

  private async remove(f: FileInfo): Promise<void> {
    if (!confirm(`Delete ${f.path}${f.type === 'dir' ? ' and everything in it' : ''}?`)) return;
    try {
      await this.ctx.api.fetch('DELETE', withQuery(`${sb(this.id)}/fs`, { path: f.path, recursive: f.type === 'dir' ? 1 : undefined }));
    } catch (e) {
      this.ctx.toast(`delete ${f.path}: ${e instanceof Error ? e.message : String(e)}`, 'error');
    }
    await this.open(this.path);
  }
}
