// The only way the console builds DOM. Everything a sandbox controls (file names, argv,
// hosts, output, metadata) reaches the page as a Text node, never as markup: there is no
// innerHTML anywhere in the console, and the page's Trusted Types policy makes the
// browser refuse one if it ever appeared (scripts/check in tests/static.test.mjs looks too).

export type Child = Node | string | number | null | undefined | false;

type Handler = (ev: any) => void;
export type Attrs = {
  [name: string]: string | number | boolean | Handler | null | undefined;
};

/** An element with attributes, event handlers (`on<event>`: a function) and children. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith('on')) {
        if (typeof value !== 'function') throw new Error(`el: ${name} must be a function`);
        node.addEventListener(name.slice(2), value as EventListener);
      } else if (typeof value === 'function') {
        throw new Error(`el: ${name} is not an event`);
      } else if (name === 'href' && !safeHref(String(value))) {
        throw new Error('el: only in-console links (#/...) and blob: URLs');
      } else {
        node.setAttribute(name, value === true ? '' : String(value));
      }
    }
  }
  append(node, ...children);
  return node;
}

function safeHref(v: string): boolean {
  return v.startsWith('#') || v.startsWith('blob:');
}

/** Appends children: strings and numbers as text. */
export function append(parent: Node, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

/** Replaces every child of `parent`. */
export function replace(parent: Node, ...children: Child[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, ...children);
}

/** Sets an element's text if it changed (cheap enough to call every frame). */
export function setText(node: Node, text: string): void {
  if (node.textContent !== text) node.textContent = text;
}

/** What a view gives the router: its element, and how to stop its streams and timers. */
export interface View {
  el: HTMLElement;
  dispose(): void;
}
