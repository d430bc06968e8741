// Sparklines and small line charts on canvas: a few hundred points, redrawn once a second.

/** Fixed-size ring of numbers, oldest first when read. */
export class Ring {
  private buf: Float64Array;
  private start = 0;
  length = 0;

  constructor(readonly capacity: number) {
    this.buf = new Float64Array(capacity);
  }

  push(v: number): void {
    if (this.length < this.capacity) {
      this.buf[(this.start + this.length) % this.capacity] = v;
      this.length++;
    } else {
      this.buf[this.start] = v;
      this.start = (this.start + 1) % this.capacity;
    }
  }

  at(i: number): number {
    return this.buf[(this.start + i) % this.capacity];
  }

  last(): number | undefined {
    return this.length ? this.at(this.length - 1) : undefined;
  }

  max(): number {
    let m = 0;
    for (let i = 0; i < this.length; i++) m = Math.max(m, this.at(i));
    return m;
  }
}

/** Sizes the canvas's backing store to `w`×`h` CSS pixels (measured when not given: a
 * layout read, so callers drawing many canvases pass their size). */
function fit(canvas: HTMLCanvasElement, w = canvas.clientWidth || 80, h = canvas.clientHeight || 20): CanvasRenderingContext2D | null {
  const ratio = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext('2d');
  if (!ctx) return null;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return ctx;
}

/** A sparkline of `ring` on a `w`×`h` canvas, scaled to `max` (or its own maximum). */
export function sparkline(canvas: HTMLCanvasElement, ring: Ring, color: string, max: number | undefined, w: number, h: number): void {
  const ctx = fit(canvas, w, h);
  if (!ctx || ring.length === 0) return;
  const top = Math.max(max ?? 0, ring.max(), 1e-9);
  const n = ring.capacity;
  const x0 = w - ((ring.length - 1) / (n - 1)) * w;
  ctx.beginPath();
  for (let i = 0; i < ring.length; i++) {
    const x = x0 + (i / (n - 1)) * w;
    const y = h - 1 - (ring.at(i) / top) * (h - 2);
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  }
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.25;
  ctx.stroke();
  ctx.lineTo(w, h);
  ctx.lineTo(x0, h);
  ctx.closePath();
  ctx.globalAlpha = 0.15;
  ctx.fillStyle = color;
  ctx.fill();
  ctx.globalAlpha = 1;
}

/** A line chart with a baseline, a top label and the latest value. */
export function lineChart(
  canvas: HTMLCanvasElement,
  points: number[],
  color: string,
  label: (v: number) => string,
  capacity: number,
): void {
  const ctx = fit(canvas);
  if (!ctx) return;
  const w = canvas.width / (window.devicePixelRatio || 1);
  const h = canvas.height / (window.devicePixelRatio || 1);
  const top = niceMax(Math.max(...points, 0));
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#8b949e';
  ctx.strokeStyle = '#30363d';
  ctx.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const y = Math.round(4 + (1 - f) * (h - 18)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(0, y);
    ctx.lineTo(w, y);
    ctx.stroke();
  }
  ctx.fillText(label(top), 4, 14);
  if (points.length === 0) return;
  const x0 = w - ((points.length - 1) / Math.max(capacity - 1, 1)) * w;
  ctx.beginPath();
  points.forEach((v, i) => {
    const x = x0 + (i / Math.max(capacity - 1, 1)) * w;
    const y = 4 + (1 - v / top) * (h - 18);
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.stroke();
  ctx.fillStyle = '#8b949e';
  ctx.fillText(`${Math.round(capacity)} s`, 4, h - 3);
}

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
