/**
 * The bar chart of `npm run bench -- --peers`: one bar per engine and workload, its height the ratio
 * arflow native ÷ that engine on a log axis (grid lines at decades, the baseline at 1, bars below it for
 * an engine faster than native), bars grouped by workload, each ratio written above its bar and each
 * decade at the left in a 3×5 pixel digit font. Pixels for `savePng`, in the colours of `plot.ts`.
 */

import { PLOT_COLORS, type Rgb } from '../io/plot.js';
import { savePng } from '../io/png.js';
import type { PeersResult } from './peers.js';

export interface Bar {
  /** Bars with the same group stand together; groups are separated by a wider gap. */
  group: string;
  ratio: number;
  color: Rgb;
}

/** The axis in decades: [lo, hi] with lo ≤ 0 ≤ hi, lo < hi, covering every ratio. */
export function logAxis(ratios: readonly number[]): [number, number] {
  const logs = ratios.filter((r) => r > 0 && Number.isFinite(r)).map(Math.log10);
  const lo = Math.min(0, Math.floor(Math.min(0, ...logs)));
  const hi = Math.max(lo + 1, Math.ceil(Math.max(0, ...logs)));
  return [lo, hi];
}

/** Pixel row of `value` on a log axis of decades [lo, hi] drawn from row `bottom` up to row `top`. */
export function logRow(value: number, [lo, hi]: readonly [number, number], top: number, bottom: number): number {
  return Math.round(bottom - ((Math.log10(value) - lo) / (hi - lo)) * (bottom - top));
}

// 3×5 glyphs, rows top to bottom, 3 bits each (4 = left column).
const GLYPHS: Record<string, readonly number[]> = {
  '0': [7, 5, 5, 5, 7],
  '1': [2, 6, 2, 2, 7],
  '2': [7, 1, 7, 4, 7],
  '3': [7, 1, 7, 1, 7],
  '4': [5, 5, 7, 1, 1],
  '5': [7, 4, 7, 1, 7],
  '6': [7, 4, 7, 5, 7],
  '7': [7, 1, 1, 1, 1],
  '8': [7, 5, 7, 5, 7],
  '9': [7, 5, 7, 1, 7],
  '.': [0, 0, 0, 0, 2],
};
const SCALE = 2;
const GLYPH_W = 4 * SCALE;

/** A ratio as the chart writes it: one decimal below 10, whole numbers from there. */
export function ratioLabel(r: number): string {
  return r < 10 ? r.toFixed(1) : String(Math.round(r));
}

const GRID: Rgb = [225, 225, 225];
const FRAME: Rgb = [90, 90, 90];
const TEXT: Rgb = [40, 40, 40];

export interface ChartOptions {
  height?: number;
  barWidth?: number;
}

export function barChart(bars: readonly Bar[], opts: ChartOptions = {}) {
  const barW = opts.barWidth ?? 36;
  const axis = logAxis(bars.map((b) => b.ratio));
  const decadeLabel = (d: number) => (d >= 0 ? String(10 ** d) : (10 ** d).toFixed(-d));
  const left = 12 + Math.max(decadeLabel(axis[0]).length, decadeLabel(axis[1]).length) * GLYPH_W;
  const [gap, groupGap, right, top, bottom] = [6, 26, 14, 24, 14];
  const groups = [...new Set(bars.map((b) => b.group))];
  const width = left + right + bars.length * (barW + gap) + (groups.length - 1) * groupGap;
  const height = opts.height ?? 360;
  const pixels = new Uint8Array(width * height * 3).fill(255);
  const put = (x: number, y: number, c: Rgb) => {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    pixels.set(c, (y * width + x) * 3);
  };
  const fill = (x0: number, y0: number, x1: number, y1: number, c: Rgb) => {
    for (let y = Math.min(y0, y1); y <= Math.max(y0, y1); y++) for (let x = x0; x <= x1; x++) put(x, y, c);
  };
  const text = (s: string, x: number, y: number) => {
    for (const [i, ch] of [...s].entries()) {
      GLYPHS[ch]?.forEach((bits, row) => {
        for (let col = 0; col < 3; col++) {
          if (bits & (4 >> col))
            fill(
              x + i * GLYPH_W + col * SCALE,
              y + row * SCALE,
              x + i * GLYPH_W + col * SCALE + 1,
              y + row * SCALE + 1,
              TEXT,
            );
        }
      });
    }
  };
  const [plotTop, plotBottom] = [top, height - bottom];
  const row = (v: number) => logRow(v, axis, plotTop, plotBottom);
  for (let d = axis[0]; d <= axis[1]; d++) {
    const y = row(10 ** d);
    fill(left, y, width - right, y, GRID);
    const label = decadeLabel(d);
    text(label, left - 6 - label.length * GLYPH_W, y - 2 * SCALE);
  }
  fill(left, plotTop, left, plotBottom, FRAME);
  fill(left, row(1), width - right, row(1), FRAME);
  let x = left + gap;
  bars.forEach((b, i) => {
    if (i > 0 && b.group !== bars[i - 1].group) x += groupGap;
    if (b.ratio > 0 && Number.isFinite(b.ratio)) {
      const y = row(b.ratio);
      fill(x, row(1), x + barW - 1, y, b.color);
      const label = ratioLabel(b.ratio);
      const labelY = b.ratio >= 1 ? y - 6 * SCALE : y + 2 * SCALE;
      text(label, x + Math.round((barW - label.length * GLYPH_W + SCALE) / 2), labelY);
    }
    x += barW + gap;
  });
  return { width, height, pixels };
}

/** The engine colours of the chart and of the README legend. */
export const ENGINE_COLORS: Record<string, Rgb> = {
  'arflow TS': PLOT_COLORS[0],
  'tfjs cpu': PLOT_COLORS[1],
  'tfjs wasm': PLOT_COLORS[2],
  'brain.js': PLOT_COLORS[3],
};

export function saveBarChart(path: string, bars: readonly Bar[]): void {
  const { width, height, pixels } = barChart(bars);
  savePng(path, width, height, pixels, 3);
}

/** The chart of a `--peers` run: training and sampling per workload, then the flows (arflow TS reference). */
export function peerBars(peers: PeersResult): Bar[] {
  const bars: Bar[] = [];
  for (const [kind, rows] of [
    ['train', peers.training],
    ['sample', peers.sampling],
  ] as const) {
    for (const r of rows) {
      if (r.engine !== 'arflow native') {
        bars.push({ group: `${kind} ${r.workload}`, ratio: r.nativeOverThis, color: ENGINE_COLORS[r.engine] });
      }
    }
  }
  for (const f of peers.flows)
    bars.push({ group: 'flows', ratio: f.nativeOverThis, color: ENGINE_COLORS['arflow TS'] });
  return bars;
}
