/**
 * Helpers shared by the native-vs-reference oracle tests (native-oracle.test.ts, native-cells.test.ts,
 * seq2seq-native.test.ts): the native backend (Rust, through N-API) against the pure-TypeScript
 * reference, which computes every sum and gate in doubles and stores results in f32.
 *
 * Comparison rule used throughout (`expectClose`): for a tensor `got` (native) and `want` (reference),
 *
 *     max_i |got_i − want_i| ≤ tol · scale,   scale = max(floor, max_i |want_i|)
 *
 * i.e. an elementwise bound relative to the largest magnitude of the reference tensor, so elements that
 * are tiny through cancellation are not judged by their own (meaningless) relative error.
 *   - forward values (outputs, logits, states): floor 1, so the bound is `tol · max(1, max|want|)`.
 *   - gradients: floor 1e-12, i.e. relative to the tensor's own largest gradient even when that is ≪ 1
 *     (mean-loss gradients are ~1e-3; a floor of 1 would turn the bound into a 10 % error allowance).
 * Scalars (losses, NLL, gradient norms, `expectScalarClose`): |got − want| ≤ tol · |want|.
 *
 * Tolerances: forward FWD_TOL = 1e-5 (the native tanh is a rational approximation accurate to a few f32
 * ulp, and f32 GEMMs round each partial sum), gradients GRAD_TOL = 1e-4 (backward sums T·B terms per
 * weight in f32).
 *
 * Set ARFLOW_ORACLE_LOG=1 to print each comparison's error.
 */
import { expect } from 'vitest';
import { createCharLmBackend } from '../../src/backend/index.js';
import type { GruDims } from '../../src/backend/js/gru.js';
import { type CellKind, type CharLmBackend, type CharLmShape, stateWidth } from '../../src/backend/types.js';
import { Vocabulary } from '../../src/data/vocab.js';
import type { Rng } from '../../src/util/rng.js';

/** Tolerance of forward values (floor 1). */
export const FWD_TOL = 1e-5;
/** Tolerance of gradients (floor 1e-12). */
export const GRAD_TOL = 1e-4;

export type Floats = ArrayLike<number>;

/** `n` f32 values uniform in [−scale, scale). */
export function uniform(rng: Rng, n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.range(-scale, scale);
  return a;
}

/** Largest elementwise error relative to the scale of `want` (see the module comment). */
export function relErr(got: Floats, want: Floats, floor: number): { err: number; at: number; scale: number } {
  let scale = floor;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]);
    // `!(e <= worst)` also catches NaN in `got`.
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  return { err: worst / scale, at, scale };
}

/** max |got − want| ≤ tol · max(floor, max |want|) (see the module comment); returns the relative error. */
export function expectClose(name: string, got: Floats, want: Floats, tol: number, floor = 1): number {
  expect(got.length, `${name}: length`).toBe(want.length);
  expect(want.length, `${name}: empty`).toBeGreaterThan(0);
  const { err, at, scale } = relErr(got, want, floor);
  expect(
    err,
    `${name}[${at}]: native ${got[at]} vs reference ${want[at]} (scale ${scale.toExponential(3)})`,
  ).toBeLessThanOrEqual(tol);
  if (process.env.ARFLOW_ORACLE_LOG) console.log(`${name}: ${err.toExponential(2)} (tol ${tol})`);
  return err;
}

/** |got − want| ≤ tol · |want|, with `got` finite. */
export function expectScalarClose(name: string, got: number, want: number, tol: number): void {
  expect(Number.isFinite(got), `${name}: native ${got} is not finite`).toBe(true);
  const err = Math.abs(got - want);
  expect(err, `${name}: native ${got} vs reference ${want}`).toBeLessThanOrEqual(tol * Math.abs(want));
  if (process.env.ARFLOW_ORACLE_LOG) console.log(`${name}: ${(err / Math.abs(want)).toExponential(2)} (tol ${tol})`);
}

/** Guards against comparing two all-zero tensors (which would pass trivially). */
export function expectNonTrivial(name: string, a: Floats): void {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  expect(m, `${name} is all zeros: the comparison would be vacuous`).toBeGreaterThan(0);
}

/** The bytes of a float array, for bit-exact comparisons. */
export function bytes(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

// ---- state-like tensors (h, or h and c of an LSTM) ----------------------------------------------

/**
 * The parts of rows `[·, W·H]` (W = stateWidth(cell)) to compare on their own scales: the whole array
 * for W = 1, else its h and c halves as compact copies (c is unbounded while h is in (−1, 1), so judging
 * h on c's scale would loosen the bound on h).
 */
export function parts(cell: CellKind, a: Floats, hidden: number): [string, Float64Array][] {
  const W = stateWidth(cell);
  const rows = a.length / (W * hidden);
  expect(Number.isInteger(rows), `length ${a.length} is not a multiple of ${W}·${hidden}`).toBe(true);
  const out: [string, Float64Array][] = [];
  for (let p = 0; p < W; p++) {
    const part = new Float64Array(rows * hidden);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < hidden; j++) part[r * hidden + j] = a[(r * W + p) * hidden + j];
    }
    out.push([W === 1 ? '' : p === 0 ? ' (h)' : ' (c)', part]);
  }
  return out;
}

/**
 * `expectClose` on each part of a state-like tensor (floor 1 unless given); with `nonTrivial` (the
 * default) every reference part must also be nonzero.
 */
export function expectStateClose(
  cell: CellKind,
  name: string,
  got: Floats,
  want: Floats,
  hidden: number,
  tol: number,
  floor = 1,
  nonTrivial = true,
): void {
  expect(got.length, `${name}: length`).toBe(want.length);
  const g = parts(cell, got, hidden);
  const w = parts(cell, want, hidden);
  for (let p = 0; p < w.length; p++) {
    if (nonTrivial) expectNonTrivial(`${name}${w[p][0]}`, w[p][1]);
    expectClose(`${name}${w[p][0]}`, g[p][1], w[p][1], tol, floor);
  }
}

// ---- one recurrent layer ------------------------------------------------------------------------

export interface LayerCase {
  dims: GruDims;
  why: string;
}

/**
 * The sizes of the one-layer tests. The kernels of every cell split the batch across threads when
 * B·H ≥ 4096 (PAR_MIN_ELEMS in crates/arflow-core/src/rnn/common.rs).
 */
export const LAYER_CASES: LayerCase[] = [
  { dims: { batch: 1, seq: 1, input: 1, hidden: 1 }, why: 'smallest' },
  { dims: { batch: 3, seq: 5, input: 7, hidden: 9 }, why: 'odd sizes, not multiples of a SIMD width' },
  { dims: { batch: 2, seq: 11, input: 8, hidden: 33 }, why: 'longer sequence' },
  // B·H = 5120 ≥ 4096: the batch is split across the kernel's threads.
  { dims: { batch: 32, seq: 7, input: 16, hidden: 160 }, why: 'multi-threaded path' },
  // B = 33: the batch does not divide evenly between threads (17 + 16 on 2 threads).
  { dims: { batch: 33, seq: 7, input: 16, hidden: 160 }, why: 'multi-threaded, uneven batch split' },
];

export interface LayerWeights {
  wIh: Float32Array;
  wHh: Float32Array;
  bIh: Float32Array;
  bHh: Float32Array;
}

/**
 * Random weights of one layer with G gate rows (G = gates·H), drawn from `rng` in the order w_ih, w_hh,
 * b_ih, b_hh, and the same weights packed as the native layer call takes them.
 */
export function layerWeights(rng: Rng, G: number, I: number, H: number): { w: LayerWeights; packed: Float32Array } {
  // Weights twice PyTorch's init bound, so pre-activations reach |a| ≈ 2–3 where the tanh and sigmoid
  // curve (and the rational tanh approximation is exercised away from its linear part).
  const bound = 2 / Math.sqrt(H);
  const w = {
    wIh: uniform(rng, G * I, bound),
    wHh: uniform(rng, G * H, bound),
    bIh: uniform(rng, G, bound),
    bHh: uniform(rng, G, bound),
  };
  const packed = new Float32Array(w.wIh.length + w.wHh.length + 2 * G);
  packed.set(w.wIh, 0);
  packed.set(w.wHh, w.wIh.length);
  packed.set(w.bIh, w.wIh.length + w.wHh.length);
  packed.set(w.bHh, w.wIh.length + w.wHh.length + G);
  return { w, packed };
}

// ---- the whole language model -------------------------------------------------------------------

export const TEXT =
  'Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse';
export const VOCAB = Vocabulary.fromText(TEXT);

export interface LmCase {
  batch: number;
  seq: number;
  embed: number;
  hidden: number;
  why: string;
}

export const LM_CASES: LmCase[] = [
  { batch: 3, seq: 9, embed: 12, hidden: 24, why: 'small' },
  // B·H = 33·128 = 4224 ≥ 4096: both layers take the threaded path, split unevenly.
  { batch: 33, seq: 6, embed: 16, hidden: 128, why: 'threaded, uneven split' },
];

/** `n` token ids drawn uniformly from VOCAB. */
export function tokens(rng: Rng, n: number): Uint32Array {
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.int(VOCAB.size);
  return a;
}

/** A native and a JS char LM of one shape with every parameter set to the same U(−scale, scale) values. */
export function twinCharLms(shape: CharLmShape, rng: Rng, scale = 0.5): { native: CharLmBackend; js: CharLmBackend } {
  return twins(createCharLmBackend(shape, 'native'), createCharLmBackend(shape, 'js'), rng, scale);
}

interface Parameterised {
  paramInfo(): { name: string; shape: number[] }[];
  setParam(name: string, data: Float32Array): void;
}

/** Two backends of one model (native and JS) given the same U(−scale, scale) value for every parameter. */
export function twins<B extends Parameterised>(native: B, js: B, rng: Rng, scale: number): { native: B; js: B } {
  expect(native.paramInfo()).toEqual(js.paramInfo());
  for (const { name, shape: dims } of native.paramInfo()) {
    const data = uniform(
      rng,
      dims.reduce((a, b) => a * b, 1),
      scale,
    );
    native.setParam(name, data);
    js.setParam(name, data);
  }
  return { native, js };
}

/**
 * `params` of a model predicting n ahead with head k's tensors (`ahead.{k}.*`) in place of `head.*`
 * (k = 1: as they are): the plain model that scores with head k.
 */
export function withHead<P>(params: Record<string, P>, k: number): Record<string, P> {
  if (k === 1) return { ...params };
  return { ...params, 'head.weight': params[`ahead.${k}.weight`], 'head.bias': params[`ahead.${k}.bias`] };
}
