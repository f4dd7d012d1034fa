/**
 * Seedable two-dimensional toy densities for normalizing flows, after the `inf_train_gen` function of
 * FFJORD's `lib/toy_data.py` (Grathwohl et al., "FFJORD: Free-form Continuous Dynamics for Scalable
 * Reversible Generative Models", ICLR 2019, https://github.com/rtqichen/ffjord), which is also what
 * later flow papers (e.g. Neural Spline Flows, Durkan et al. 2019) plot. The constants are FFJORD's;
 * the scikit-learn generators it calls (`make_moons`, `make_circles`, `make_swiss_roll`) are
 * re-implemented from their definitions. Numerically the samples differ from FFJORD's (NumPy's
 * Mersenne Twister is replaced by arflow's seeded {@link Rng}), distributionally they are the same,
 * with one deliberate change: FFJORD's `pinwheel` returns `5·⌊n/5⌋` points, this one exactly `n`.
 *
 * Every generator returns a `Float32Array` of `n` rows `(x, y)`, row-major (`[n, 2]`), and is a pure
 * function of `(n, seed)`.
 */
import { ConfigError } from '../errors.js';
import { Rng } from '../util/rng.js';

export type Density2d = (n: number, seed?: number) => Float32Array;

/** Name of a built-in 2-D toy density, for {@link sample2d}. */
export type Density2dName =
  | 'moons'
  | '8gaussians'
  | 'checkerboard'
  | 'pinwheel'
  | 'rings'
  | 'circles'
  | '2spirals'
  | 'swissroll';

/** A built-in 2-D density: its sampler and a one-line description. */
export interface Density2dInfo {
  generate: Density2d;
  /** One line, for CLI help. */
  description: string;
}

const DEFAULT_SEED = 0;

function checkCount(name: string, n: number): void {
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new ConfigError(`2-D density '${name}': the number of samples must be an integer ≥ 1, got ${n}`);
  }
}

/** Row permutation in place (FFJORD shuffles the deterministic generators' rows). */
function shuffleRows(xy: Float32Array, rng: Rng): Float32Array {
  const n = xy.length / 2;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const x = xy[2 * i];
    const y = xy[2 * i + 1];
    xy[2 * i] = xy[2 * j];
    xy[2 * i + 1] = xy[2 * j + 1];
    xy[2 * j] = x;
    xy[2 * j + 1] = y;
  }
  return xy;
}

/** `np.linspace(0, stop, count, endpoint)`. */
function linspace(stop: number, count: number, endpoint: boolean): number[] {
  const out: number[] = [];
  const steps = endpoint ? count - 1 : count;
  for (let i = 0; i < count; i++) out.push(steps === 0 ? 0 : (stop * i) / steps);
  return out;
}

/**
 * sklearn `make_moons(n, noise=0.1)` (⌊n/2⌋ points on the upper half circle of radius 1 centred at
 * (0, 0), the rest on the lower one centred at (1, 0.5), N(0, 0.1²) noise on both coordinates,
 * shuffled), then FFJORD's `data * 2 + [-1, -0.2]`: x spans about [−3, 3], y about [−1.6, 2.2];
 * the mean is (0, 0.3) and the noise standard deviation 0.2 in these units.
 */
export function moons(n: number, seed = DEFAULT_SEED): Float32Array {
  checkCount('moons', n);
  const rng = new Rng(seed);
  const nOut = Math.floor(n / 2);
  const nIn = n - nOut;
  const out = new Float32Array(2 * n);
  let k = 0;
  for (const a of linspace(Math.PI, nOut, true)) {
    out[k++] = Math.cos(a);
    out[k++] = Math.sin(a);
  }
  for (const a of linspace(Math.PI, nIn, true)) {
    out[k++] = 1 - Math.cos(a);
    out[k++] = 1 - Math.sin(a) - 0.5;
  }
  shuffleRows(out, rng);
  for (let i = 0; i < n; i++) {
    out[2 * i] = (out[2 * i] + 0.1 * rng.normal()) * 2 - 1;
    out[2 * i + 1] = (out[2 * i + 1] + 0.1 * rng.normal()) * 2 - 0.2;
  }
  return out;
}

/**
 * FFJORD's `8gaussians`: a uniform mixture of 8 isotropic Gaussians, σ = 0.5/1.414, centred on the
 * circle of radius 4/1.414 ≈ 2√2 at angles kπ/4 (FFJORD draws `randn(2)·0.5 + 4·center` and divides by
 * 1.414, which these constants reproduce).
 */
export function eightGaussians(n: number, seed = DEFAULT_SEED): Float32Array {
  checkCount('8gaussians', n);
  const rng = new Rng(seed);
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const px = 0.5 * rng.normal();
    const py = 0.5 * rng.normal();
    const [cx, cy] = EIGHT_CENTERS[rng.int(8)];
    out[2 * i] = (px + 4 * cx) / FFJORD_DIVISOR;
    out[2 * i + 1] = (py + 4 * cy) / FFJORD_DIVISOR;
  }
  return out;
}

const R = 1 / Math.sqrt(2);

/** FFJORD divides `8gaussians` by this literal (not by √2); kept so the spread matches its plots. */
// biome-ignore lint/suspicious/noApproximativeNumericConstant: FFJORD's literal divisor, on purpose not Math.SQRT2
export const FFJORD_DIVISOR = 1.414;
/** FFJORD's unit-circle centers, in its order. */
export const EIGHT_CENTERS: readonly (readonly [number, number])[] = [
  [1, 0],
  [-1, 0],
  [0, 1],
  [0, -1],
  [R, R],
  [R, -R],
  [-R, R],
  [-R, -R],
];

/**
 * FFJORD's `checkerboard`: x₁ ~ U[−2, 2), x₂ ~ U[0, 1) − 2·Bernoulli(½) + (⌊x₁⌋ mod 2), all times 2 —
 * uniform on the 8 filled 2×2 squares of a 4×4 board covering [−4, 4]² (see {@link checkerboardCell}).
 */
export function checkerboard(n: number, seed = DEFAULT_SEED): Float32Array {
  checkCount('checkerboard', n);
  const rng = new Rng(seed);
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const x1 = rng.uniform() * 4 - 2;
    const x2 = rng.uniform() - rng.int(2) * 2 + (((Math.floor(x1) % 2) + 2) % 2);
    out[2 * i] = x1 * 2;
    out[2 * i + 1] = x2 * 2;
  }
  return out;
}

/**
 * Whether a point lies on a filled square of FFJORD's checkerboard (in output units): with cells
 * i = ⌊x/2⌋, j = ⌊y/2⌋ in −2..1, the filled cells are those where i + j is even.
 */
export function checkerboardCell(x: number, y: number): boolean {
  const i = Math.floor(x / 2);
  const j = Math.floor(y / 2);
  return (((i + j) % 2) + 2) % 2 === 0;
}

/**
 * FFJORD's `pinwheel` (from Johnson et al. 2016, "Composing graphical models with neural networks"):
 * 5 arms; radial N(1, 0.3²) and tangential N(0, 0.1²) features rotated by `2πk/5 + 0.25·exp(radial)`,
 * times 2, rows shuffled. Arm k gets rows ⌊k·n/5⌋ … (so exactly n points, arm sizes differing by ≤ 1).
 */
export function pinwheel(n: number, seed = DEFAULT_SEED): Float32Array {
  checkCount('pinwheel', n);
  const rng = new Rng(seed);
  const radialStd = 0.3;
  const tangentialStd = 0.1;
  const classes = 5;
  const rate = 0.25;
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const label = Math.floor((i * classes) / n);
    const f0 = rng.normal() * radialStd + 1;
    const f1 = rng.normal() * tangentialStd;
    const angle = (2 * Math.PI * label) / classes + rate * Math.exp(f0);
    const c = Math.cos(angle);
    const s = Math.sin(angle);
    // einsum("ti,tij->tj") with R = [[cos, −sin], [sin, cos]]: (f0 cos + f1 sin, −f0 sin + f1 cos).
    out[2 * i] = 2 * (f0 * c + f1 * s);
    out[2 * i + 1] = 2 * (-f0 * s + f1 * c);
  }
  return shuffleRows(out, rng);
}

/** Ring radii of {@link rings}, outermost first, in output units. */
export const RING_RADII: readonly number[] = [3, 2.25, 1.5, 0.75];

/**
 * FFJORD's `rings`: 4 concentric circles of radii 3, 2.25, 1.5, 0.75 (FFJORD's 1, ¾, ½, ¼ times 3),
 * ⌊n/4⌋ evenly spaced points on each of the outer three and the rest on the innermost, rows shuffled,
 * plus N(0, 0.08²) noise on both coordinates.
 */
export function rings(n: number, seed = DEFAULT_SEED): Float32Array {
  checkCount('rings', n);
  const rng = new Rng(seed);
  const quarter = Math.floor(n / 4);
  const counts = [quarter, quarter, quarter, n - 3 * quarter];
  const out = new Float32Array(2 * n);
  let k = 0;
  for (let r = 0; r < 4; r++) {
    for (const a of linspace(2 * Math.PI, counts[r], false)) {
      out[k++] = RING_RADII[r] * Math.cos(a);
      out[k++] = RING_RADII[r] * Math.sin(a);
    }
  }
  shuffleRows(out, rng);
  for (let i = 0; i < 2 * n; i++) out[i] += 0.08 * rng.normal();
  return out;
}

/**
 * FFJORD's `circles`: sklearn `make_circles(n, factor=0.5, noise=0.08)` times 3 — two concentric
 * circles of radii 3 and 1.5 (⌊n/2⌋ points on the outer), noise σ = 0.24 in output units.
 */
export function circles(n: number, seed = DEFAULT_SEED): Float32Array {
  checkCount('circles', n);
  const rng = new Rng(seed);
  const nOut = Math.floor(n / 2);
  const nIn = n - nOut;
  const out = new Float32Array(2 * n);
  let k = 0;
  for (const [count, radius] of [
    [nOut, 1],
    [nIn, 0.5],
  ]) {
    for (const a of linspace(2 * Math.PI, count, false)) {
      out[k++] = radius * Math.cos(a);
      out[k++] = radius * Math.sin(a);
    }
  }
  shuffleRows(out, rng);
  for (let i = 0; i < 2 * n; i++) out[i] = (out[i] + 0.08 * rng.normal()) * 3;
  return out;
}

/**
 * FFJORD's `2spirals`: t = √U · 3π, arm (−t cos t, t sin t) + U[0, ½)² jitter, the second arm its
 * point reflection, all divided by 3, plus N(0, 0.1²) noise. The first ⌊n/2⌋ rows form one arm, the
 * rest (⌈n/2⌉) the other, shuffled.
 */
export function twoSpirals(n: number, seed = DEFAULT_SEED): Float32Array {
  checkCount('2spirals', n);
  const rng = new Rng(seed);
  const out = new Float32Array(2 * n);
  const half = Math.floor(n / 2);
  for (let i = 0; i < n; i++) {
    const t = Math.sqrt(rng.uniform()) * 540 * ((2 * Math.PI) / 360);
    const sign = i < half ? 1 : -1;
    const dx = -Math.cos(t) * t + rng.uniform() * 0.5;
    const dy = Math.sin(t) * t + rng.uniform() * 0.5;
    out[2 * i] = (sign * dx) / 3 + 0.1 * rng.normal();
    out[2 * i + 1] = (sign * dy) / 3 + 0.1 * rng.normal();
  }
  return shuffleRows(out, rng);
}

/**
 * FFJORD's `swissroll`: sklearn `make_swiss_roll(n, noise=1.0)` — t = 1.5π(1 + 2U), the (x, z)
 * coordinates (t cos t, t sin t) with N(0, 1) noise — divided by 5.
 */
export function swissroll(n: number, seed = DEFAULT_SEED): Float32Array {
  checkCount('swissroll', n);
  const rng = new Rng(seed);
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const t = 1.5 * Math.PI * (1 + 2 * rng.uniform());
    out[2 * i] = (t * Math.cos(t) + rng.normal()) / 5;
    out[2 * i + 1] = (t * Math.sin(t) + rng.normal()) / 5;
  }
  return out;
}

/** The built-in 2-D toy densities, each with its generator and a one-line description. */
export const DENSITIES: Readonly<Record<Density2dName, Density2dInfo>> = {
  moons: {
    generate: moons,
    description: 'two interleaving half circles (sklearn make_moons, noise 0.1, FFJORD scaling)',
  },
  '8gaussians': { generate: eightGaussians, description: '8 Gaussians (σ ≈ 0.35) on a circle of radius 2√2' },
  checkerboard: {
    generate: checkerboard,
    description: 'uniform on the 8 filled squares of a 4×4 checkerboard on [−4, 4]²',
  },
  pinwheel: { generate: pinwheel, description: '5 curved Gaussian arms of a pinwheel' },
  rings: { generate: rings, description: '4 noisy concentric rings of radii 0.75, 1.5, 2.25, 3' },
  circles: { generate: circles, description: '2 noisy concentric circles of radii 1.5 and 3 (sklearn make_circles)' },
  '2spirals': { generate: twoSpirals, description: 'two interleaved spirals' },
  swissroll: { generate: swissroll, description: 'a 2-D swiss roll (sklearn make_swiss_roll, x/z plane)' },
};

export function isDensity2dName(name: string): name is Density2dName {
  return Object.hasOwn(DENSITIES, name);
}

/** `n` samples of the named density; ConfigError for an unknown name or a count that is not ≥ 1. */
export function sample2d(name: string, n: number, seed = DEFAULT_SEED): Float32Array {
  if (!isDensity2dName(name)) {
    throw new ConfigError(`unknown 2-D density '${name}'; choose one of: ${Object.keys(DENSITIES).join(', ')}`);
  }
  if (!Number.isSafeInteger(seed)) throw new ConfigError(`2-D density '${name}': seed must be an integer, got ${seed}`);
  return DENSITIES[name].generate(n, seed);
}
