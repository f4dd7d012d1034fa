/**
 * Line plots as RGB pixels (for `savePng`): panels stacked vertically, each a framed plot area with
 * light grid lines (at powers of ten on a log axis, else at five even steps) and any number of
 * polylines. No text: the numbers go to stdout and `--json`; the picture shows the shape.
 */
import { ConfigError } from '../errors.js';

export type Rgb = readonly [number, number, number];

export interface LineSeries {
  /** x of each point (default 0, 1, 2, …). */
  x?: readonly number[];
  y: readonly number[];
  color: Rgb;
}

/** One panel of a {@link plotPanels} picture: its line series and axis scale. */
export interface PlotPanel {
  series: readonly LineSeries[];
  /** A logarithmic y axis (non-positive values are left out). */
  logY?: boolean;
}

/** Size of the picture {@link plotPanels} draws, in pixels. */
export interface PlotOptions {
  width?: number;
  panelHeight?: number;
}

const MARGIN = 12;
const GRID: Rgb = [225, 225, 225];
const FRAME: Rgb = [90, 90, 90];

/** A palette of distinguishable line colours. */
export const PLOT_COLORS: readonly Rgb[] = [
  [31, 119, 180],
  [214, 39, 40],
  [44, 160, 44],
  [255, 127, 14],
  [148, 103, 189],
  [140, 86, 75],
];

/** Calls `plot` for every pixel of the segment (x0, y0) → (x1, y1) (Bresenham). */
export function segment(x0: number, y0: number, x1: number, y1: number, plot: (x: number, y: number) => void): void {
  let x = Math.round(x0);
  let y = Math.round(y0);
  const xe = Math.round(x1);
  const ye = Math.round(y1);
  const dx = Math.abs(xe - x);
  const dy = -Math.abs(ye - y);
  const sx = x < xe ? 1 : -1;
  const sy = y < ye ? 1 : -1;
  let err = dx + dy;
  for (;;) {
    plot(x, y);
    if (x === xe && y === ye) return;
    const e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y += sy;
    }
  }
}

function range(values: number[]): [number, number] {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) {
    lo -= 0.5;
    hi += 0.5;
  }
  return [lo, hi];
}

/** The panels drawn one under another: `{ width, height, pixels }` with 3 channels. */
export function plotPanels(panels: readonly PlotPanel[], opts: PlotOptions = {}) {
  const width = opts.width ?? 640;
  const ph = opts.panelHeight ?? 240;
  if (panels.length === 0) throw new ConfigError('a plot needs at least one panel');
  if (!Number.isInteger(width) || width < 4 * MARGIN || !Number.isInteger(ph) || ph < 4 * MARGIN) {
    throw new ConfigError(`plot size must be whole numbers ≥ ${4 * MARGIN}, got ${width} × ${ph}`);
  }
  const height = ph * panels.length;
  const pixels = new Uint8Array(width * height * 3).fill(255);
  const put = (x: number, y: number, c: Rgb) => {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    const o = (y * width + x) * 3;
    pixels[o] = c[0];
    pixels[o + 1] = c[1];
    pixels[o + 2] = c[2];
  };
  panels.forEach((panel, p) => {
    const top = p * ph + MARGIN;
    const bottom = (p + 1) * ph - MARGIN;
    const left = MARGIN;
    const right = width - MARGIN;
    const ty = (v: number) => (panel.logY ? Math.log10(v) : v);
    const pts = panel.series.map((s) =>
      s.y
        .map((v, i) => [s.x?.[i] ?? i, v] as const)
        .filter(([x, v]) => Number.isFinite(x) && Number.isFinite(v) && (!panel.logY || v > 0)),
    );
    const all = pts.flat();
    if (all.length === 0) return;
    const [x0, x1] = range(all.map(([x]) => x));
    let [y0, y1] = range(all.map(([, v]) => ty(v)));
    if (panel.logY) {
      y0 = Math.floor(y0);
      y1 = Math.ceil(y1);
      if (y0 === y1) y1 = y0 + 1;
    }
    const px = (x: number) => left + ((x - x0) / (x1 - x0)) * (right - left);
    const py = (v: number) => bottom - ((ty(v) - y0) / (y1 - y0)) * (bottom - top);
    // Grid: decades on a log axis, else five even steps; then the frame.
    const lines = panel.logY
      ? Array.from({ length: y1 - y0 + 1 }, (_, i) => bottom - (i / (y1 - y0)) * (bottom - top))
      : Array.from({ length: 6 }, (_, i) => bottom - (i / 5) * (bottom - top));
    for (const gy of lines) for (let x = left; x <= right; x++) put(x, Math.round(gy), GRID);
    for (let i = 0; i <= 5; i++) {
      const gx = Math.round(left + (i / 5) * (right - left));
      for (let y = top; y <= bottom; y++) put(gx, y, GRID);
    }
    for (let x = left; x <= right; x++) {
      put(x, top, FRAME);
      put(x, bottom, FRAME);
    }
    for (let y = top; y <= bottom; y++) {
      put(left, y, FRAME);
      put(right, y, FRAME);
    }
    panel.series.forEach((s, k) => {
      const line = pts[k];
      for (let i = 1; i < line.length; i++) {
        const [xa, ya] = line[i - 1];
        const [xb, yb] = line[i];
        // Two pixels thick, so lines read at a glance.
        segment(px(xa), py(ya), px(xb), py(yb), (x, y) => {
          put(x, y, s.color);
          put(x, y + 1, s.color);
        });
      }
    });
  });
  return { width, height, pixels };
}
