/**
 * The 2-D toy densities: shapes, determinism per seed, and statistics that only hold when each one
 * is drawn with FFJORD's constants.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/errors.js';
import {
  checkerboardCell,
  DENSITIES,
  EIGHT_CENTERS,
  FFJORD_DIVISOR,
  isDensity2dName,
  RING_RADII,
  sample2d,
} from '../src/flows/data2d.js';

const N = 4000;

function mean(xy: Float32Array, axis: 0 | 1): number {
  let s = 0;
  for (let i = axis; i < xy.length; i += 2) s += xy[i];
  return s / (xy.length / 2);
}

function std(xy: Float32Array, axis: 0 | 1): number {
  const m = mean(xy, axis);
  let s = 0;
  for (let i = axis; i < xy.length; i += 2) s += (xy[i] - m) ** 2;
  return Math.sqrt(s / (xy.length / 2));
}

describe('2-D densities', () => {
  for (const name of Object.keys(DENSITIES)) {
    it(`${name}: [n, 2] finite, deterministic per seed, different across seeds`, () => {
      for (const n of [1, 2, 3, 7, 101]) {
        const a = sample2d(name, n, 5);
        expect(a).toBeInstanceOf(Float32Array);
        expect(a.length).toBe(2 * n);
      }
      const a = sample2d(name, 1000, 42);
      expect(a.every(Number.isFinite)).toBe(true);
      expect(sample2d(name, 1000, 42)).toEqual(a);
      const b = sample2d(name, 1000, 43);
      let differing = 0;
      for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) differing++;
      expect(differing).toBeGreaterThan(a.length / 2);
      // The default seed is fixed too.
      expect(DENSITIES[name as keyof typeof DENSITIES].generate(50)).toEqual(sample2d(name, 50));
      expect(DENSITIES[name as keyof typeof DENSITIES].description.length).toBeGreaterThan(10);
    });
  }

  it('moons: FFJORD scaling (mean (0, 0.3)), points near the two half circles', () => {
    const xy = sample2d('moons', N, 1);
    expect(mean(xy, 0)).toBeCloseTo(0, 1);
    expect(mean(xy, 1)).toBeCloseTo(0.3, 1);
    // Undo the ×2 + (−1, −0.2) map; every point is within a few noise σ (0.1) of its nearest moon.
    let far = 0;
    let upper = 0;
    for (let i = 0; i < N; i++) {
      const u = (xy[2 * i] + 1) / 2;
      const v = (xy[2 * i + 1] + 0.2) / 2;
      const dOuter = Math.abs(Math.hypot(u, v) - 1) + (v < -0.3 ? 1 : 0);
      const dInner = Math.abs(Math.hypot(u - 1, v - 0.5) - 1) + (v > 0.8 ? 1 : 0);
      if (Math.min(dOuter, dInner) > 0.45) far++;
      if (dOuter < dInner) upper++;
    }
    expect(far).toBe(0);
    expect(upper / N).toBeGreaterThan(0.45);
    expect(upper / N).toBeLessThan(0.55);
  });

  it('8gaussians: 8 equally used clusters of σ ≈ 0.354 on the circle of radius 2√2', () => {
    const xy = sample2d('8gaussians', N, 2);
    const counts = new Array(8).fill(0);
    let sq = 0;
    for (let i = 0; i < N; i++) {
      let best = 0;
      let bestD = Number.POSITIVE_INFINITY;
      for (let c = 0; c < 8; c++) {
        const [cx, cy] = EIGHT_CENTERS[c];
        const d = Math.hypot(xy[2 * i] - (4 * cx) / FFJORD_DIVISOR, xy[2 * i + 1] - (4 * cy) / FFJORD_DIVISOR);
        if (d < bestD) {
          bestD = d;
          best = c;
        }
      }
      counts[best]++;
      sq += bestD ** 2;
    }
    for (const c of counts) expect(Math.abs(c / N - 1 / 8)).toBeLessThan(0.025);
    // E‖p − c‖² = 2σ² for a 2-D isotropic Gaussian.
    expect(Math.sqrt(sq / N / 2)).toBeCloseTo(0.5 / FFJORD_DIVISOR, 1);
    expect(4 / FFJORD_DIVISOR).toBeCloseTo(2 * Math.SQRT2, 2);
    // Mean 0 with a standard error of ≈ 2/√N ≈ 0.032 per coordinate.
    expect(Math.abs(mean(xy, 0))).toBeLessThan(0.15);
    expect(Math.abs(mean(xy, 1))).toBeLessThan(0.15);
  });

  it('checkerboard: every point on a filled square of [−4, 4]², all 8 squares used evenly', () => {
    const xy = sample2d('checkerboard', N, 3);
    const cells = new Map<string, number>();
    for (let i = 0; i < N; i++) {
      const x = xy[2 * i];
      const y = xy[2 * i + 1];
      expect(Math.abs(x)).toBeLessThanOrEqual(4);
      expect(Math.abs(y)).toBeLessThanOrEqual(4);
      expect(checkerboardCell(x, y)).toBe(true);
      const key = `${Math.floor(x / 2)},${Math.floor(y / 2)}`;
      cells.set(key, (cells.get(key) ?? 0) + 1);
    }
    expect(cells.size).toBe(8);
    for (const c of cells.values()) expect(Math.abs(c / N - 1 / 8)).toBeLessThan(0.025);
    expect(cells.has('-2,-2')).toBe(true);
    expect(cells.has('-2,-1')).toBe(false);
  });

  it('pinwheel: 5 arms, radius ≈ 2·|N(1, 0.3²)|, symmetric about the origin', () => {
    const xy = sample2d('pinwheel', N, 4);
    let r = 0;
    for (let i = 0; i < N; i++) r += Math.hypot(xy[2 * i], xy[2 * i + 1]);
    expect(r / N).toBeCloseTo(2 * Math.sqrt(1 + 0.01), 1);
    expect(mean(xy, 0)).toBeCloseTo(0, 1);
    expect(mean(xy, 1)).toBeCloseTo(0, 1);
    // The angle histogram of the points near radius 2 has five peaks 72° apart.
    const bins = new Array(360).fill(0);
    for (let i = 0; i < N; i++) {
      const rr = Math.hypot(xy[2 * i], xy[2 * i + 1]);
      if (Math.abs(rr - 2) > 0.2) continue;
      const deg = ((Math.atan2(xy[2 * i + 1], xy[2 * i]) * 180) / Math.PI + 360) % 360;
      bins[Math.floor(deg)]++;
    }
    // At f0 = 1 the arm k sits at angle −(72k° + 0.25·e rad) (y is −f0 sin).
    const peak = (-0.25 * Math.E * 180) / Math.PI;
    for (let k = 0; k < 5; k++) {
      const centre = (((peak - 72 * k) % 360) + 360) % 360;
      const gap = (centre + 36) % 360;
      let near = 0;
      let between = 0;
      for (let d = -6; d <= 6; d++) {
        near += bins[(Math.round(centre) + d + 360) % 360];
        between += bins[(Math.round(gap) + d + 360) % 360];
      }
      expect(near).toBeGreaterThan(5 * between + 20);
    }
  });

  it('rings: radii cluster at 0.75, 1.5, 2.25, 3 with σ ≈ 0.08', () => {
    const xy = sample2d('rings', N, 5);
    const counts = [0, 0, 0, 0];
    let sq = 0;
    for (let i = 0; i < N; i++) {
      const r = Math.hypot(xy[2 * i], xy[2 * i + 1]);
      let best = 0;
      for (let k = 1; k < 4; k++) if (Math.abs(r - RING_RADII[k]) < Math.abs(r - RING_RADII[best])) best = k;
      counts[best]++;
      sq += (r - RING_RADII[best]) ** 2;
      expect(Math.abs(r - RING_RADII[best])).toBeLessThan(0.375);
    }
    expect(counts).toEqual([N / 4, N / 4, N / 4, N / 4]);
    expect(Math.sqrt(sq / N)).toBeCloseTo(0.08, 2);
  });

  it('circles, 2spirals, swissroll: scale as in FFJORD', () => {
    const c = sample2d('circles', N, 6);
    let outer = 0;
    for (let i = 0; i < N; i++) if (Math.hypot(c[2 * i], c[2 * i + 1]) > 2.25) outer++;
    expect(outer / N).toBeCloseTo(0.5, 1);
    const s = sample2d('2spirals', N, 7);
    expect(std(s, 0)).toBeGreaterThan(1);
    expect(std(s, 0)).toBeLessThan(3);
    const w = sample2d('swissroll', N, 8);
    for (let i = 0; i < N; i++) expect(Math.hypot(w[2 * i], w[2 * i + 1])).toBeLessThan((4.5 * Math.PI) / 5 + 1.2);
  });

  it('rejects unknown names, non-positive or fractional counts, bad seeds', () => {
    expect(() => sample2d('swirl', 10)).toThrow(ConfigError);
    expect(() => sample2d('__proto__', 10)).toThrow(/unknown 2-D density/);
    expect(isDensity2dName('toString')).toBe(false);
    expect(() => sample2d('moons', 0)).toThrow(ConfigError);
    expect(() => sample2d('rings', -3)).toThrow(ConfigError);
    expect(() => sample2d('rings', 2.5)).toThrow(ConfigError);
    expect(() => sample2d('rings', Number.NaN)).toThrow(ConfigError);
    expect(() => sample2d('moons', 10, Number.NaN)).toThrow(ConfigError);
  });
});
