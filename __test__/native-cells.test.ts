/**
 * The native LSTM and tanh-RNN (Rust, through N-API) against the pure-TypeScript reference, which
 * computes every sum and gate in doubles and stores results in f32: one raw layer (`rnnLayerGrads`) and
 * the whole two-layer LM (`createCharLmBackend(shape, 'native' | 'js')`), plus the parameter layout and
 * the refusal of an unknown cell.
 *
 * Same comparison rule and tolerances as the GRU oracle (native-oracle.test.ts):
 *
 *     max_i |got_i − want_i| ≤ tol · scale,   scale = max(floor, max_i |want_i|)
 *
 *   - forward values (outputs, logits, states): floor 1, tolerance FWD_TOL = 1e-5;
 *   - gradients: floor 1e-12 (relative to the tensor's own largest gradient), tolerance GRAD_TOL = 1e-4;
 *   - scalars (losses, NLL, gradient norms): |got − want| ≤ tol · |want|.
 * Each parameter block is compared on its own scale, and so is each half (h, c) of an LSTM state or
 * output: c is unbounded while h is in (−1, 1), so judging h on c's scale would loosen the bound on h.
 */
import { describe, expect, it } from 'vitest';
import { createCharLmBackend } from '../src/backend/index.js';
import { cellBackward, cellForward } from '../src/backend/js/cells.js';
import type { GruDims } from '../src/backend/js/gru.js';
import { JsCharLm } from '../src/backend/js/index.js';
import { loadNative, mapNativeError, NativeCharLm } from '../src/backend/native.js';
import {
  type CellKind,
  type CharLmBackend,
  type CharLmShape,
  charLmParamInfo,
  gateCount,
  type OptimConfig,
  stateWidth,
} from '../src/backend/types.js';
import { Vocabulary } from '../src/data/vocab.js';
import { ConfigError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';

const FWD_TOL = 1e-5;
const GRAD_TOL = 1e-4;

/** The cells this file tests (the GRU has its own oracle in native-oracle.test.ts). */
const CELLS = ['lstm', 'rnn'] as const;

type Floats = ArrayLike<number>;

function uniform(rng: Rng, n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.range(-scale, scale);
  return a;
}

/** Largest elementwise error relative to the scale of `want` (see the module comment). */
function relErr(got: Floats, want: Floats, floor: number): { err: number; at: number; scale: number } {
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

function expectClose(name: string, got: Floats, want: Floats, tol: number, floor = 1): number {
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

function expectScalarClose(name: string, got: number, want: number, tol: number): void {
  expect(Number.isFinite(got), `${name}: native ${got} is not finite`).toBe(true);
  const err = Math.abs(got - want);
  expect(err, `${name}: native ${got} vs reference ${want}`).toBeLessThanOrEqual(tol * Math.abs(want));
  if (process.env.ARFLOW_ORACLE_LOG) console.log(`${name}: ${(err / Math.abs(want)).toExponential(2)} (tol ${tol})`);
}

/** Guards against comparing two all-zero tensors (which would pass trivially). */
function expectNonTrivial(name: string, a: Floats): void {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  expect(m, `${name} is all zeros: the comparison would be vacuous`).toBeGreaterThan(0);
}

/** The bytes of a float array, for bit-exact comparisons. */
function bytes(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * The parts of rows `[·, W·H]` (W = stateWidth(cell)) to compare on their own scales: the whole array
 * for W = 1, else its h and c halves as compact copies.
 */
function parts(cell: CellKind, a: Floats, hidden: number): [string, Float64Array][] {
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

/** `expectClose` on each part of a state-like tensor; `nonTrivial` also checks each reference part. */
function expectStateClose(
  cell: CellKind,
  name: string,
  got: Floats,
  want: Floats,
  hidden: number,
  tol: number,
  floor: number,
  nonTrivial = false,
): void {
  expect(got.length, `${name}: length`).toBe(want.length);
  const g = parts(cell, got, hidden);
  const w = parts(cell, want, hidden);
  for (let p = 0; p < w.length; p++) {
    if (nonTrivial) expectNonTrivial(`${name}${w[p][0]}`, w[p][1]);
    expectClose(`${name}${w[p][0]}`, g[p][1], w[p][1], tol, floor);
  }
}

// ---- one layer ----------------------------------------------------------------------------------

interface LayerCase {
  dims: GruDims;
  why: string;
}

const threads = loadNative().buildInfo().threads;

// The sizes of the GRU layer test. The kernels of every cell split the batch across threads when
// B·H ≥ 4096 (PAR_MIN_ELEMS in crates/arflow-core/src/rnn/common.rs).
const LAYER_CASES: LayerCase[] = [
  { dims: { batch: 1, seq: 1, input: 1, hidden: 1 }, why: 'smallest' },
  { dims: { batch: 3, seq: 5, input: 7, hidden: 9 }, why: 'odd sizes, not multiples of a SIMD width' },
  { dims: { batch: 2, seq: 11, input: 8, hidden: 33 }, why: 'longer sequence' },
  // B·H = 5120 ≥ 4096: the batch is split across the kernel's threads.
  { dims: { batch: 32, seq: 7, input: 16, hidden: 160 }, why: 'multi-threaded path' },
  // B = 33: the batch does not divide evenly between threads (17 + 16 on 2 threads).
  { dims: { batch: 33, seq: 7, input: 16, hidden: 160 }, why: 'multi-threaded, uneven batch split' },
];

/** Which halves of the LSTM's dOut rows (h, c) carry gradient. */
type DOutMask = 'both' | 'h' | 'c';

function layerInputs(cell: CellKind, dims: GruDims, seed: number, mask: DOutMask = 'both') {
  const { batch: B, seq: T, input: I, hidden: H } = dims;
  const rng = new Rng(seed);
  const G = gateCount(cell) * H;
  const S = stateWidth(cell) * H;
  // Weights twice PyTorch's init bound, so pre-activations reach |a| ≈ 2–3 where the tanh and sigmoid
  // curve (and the rational tanh approximation is exercised away from its linear part).
  const bound = 2 / Math.sqrt(H);
  const w = {
    wIh: uniform(rng, G * I, bound),
    wHh: uniform(rng, G * H, bound),
    bIh: uniform(rng, G, bound),
    bHh: uniform(rng, G, bound),
  };
  const x = uniform(rng, B * T * I, 1);
  // The LSTM's rows are h0 then c0: both nonzero.
  const h0 = uniform(rng, B * S, 0.8);
  const dOut = uniform(rng, B * T * S, 1);
  if (mask !== 'both') {
    // Zero the other half of every row, so the gradient reaches the layer through one path only.
    const off = mask === 'h' ? H : 0;
    for (let r = 0; r < B * T; r++) dOut.fill(0, r * S + off, r * S + off + H);
  }
  // Note: unlike the GRU's (whose b_hn sits inside r ⊙ ·), the LSTM's and RNN's biases enter only as
  // b_ih + b_hh and get equal gradients, so a swap of the two bias blocks cannot be seen here.
  const packed = new Float32Array(w.wIh.length + w.wHh.length + 2 * G);
  packed.set(w.wIh, 0);
  packed.set(w.wHh, w.wIh.length);
  packed.set(w.bIh, w.wIh.length + w.wHh.length);
  packed.set(w.bHh, w.wIh.length + w.wHh.length + G);
  return { w, x, h0, dOut, packed };
}

function checkLayer(cell: CellKind, dims: GruDims, seed: number, mask: DOutMask = 'both'): void {
  const { input: I, hidden: H } = dims;
  const { w, x, h0, dOut, packed } = layerInputs(cell, dims, seed, mask);
  const native = loadNative().rnnLayerGrads({ cell, ...dims }, x, h0, packed, dOut);

  const ref = cellForward(cell, dims, x, h0, w, { dtype: 'f32', save: true });
  expect(native.out.length).toBe(ref.out.length);
  expectStateClose(cell, 'out', native.out, ref.out, H, FWD_TOL, 1, true);

  // Backward of the reference from its own forward: both sides then differ only by their own
  // rounding, not by a shared input.
  const g = cellBackward(cell, dims, x, h0, w, ref.out, ref.saved, dOut);
  const G = gateCount(cell) * H;
  expect(native.dparams.length).toBe(G * I + G * H + 2 * G);
  const blocks: [string, Floats, number, number][] = [
    ['dW_ih', g.dWIh, 0, G * I],
    ['dW_hh', g.dWHh, G * I, G * H],
    ['db_ih', g.dBIh, G * I + G * H, G],
    ['db_hh', g.dBHh, G * I + G * H + G, G],
  ];
  expectNonTrivial('dx', g.dx);
  expectClose('dx', native.dx, g.dx, GRAD_TOL, 1e-12);
  // dL/dc0 is nonzero even with dOut on the h half only (c_0 reaches h_1); dL/dh0 likewise.
  expectStateClose(cell, 'dh0', native.dh0, g.ds0, H, GRAD_TOL, 1e-12, true);
  for (const [name, want, off, len] of blocks) {
    expectNonTrivial(name, want);
    expectClose(name, native.dparams.subarray(off, off + len), want, GRAD_TOL, 1e-12);
  }
}

describe('native LSTM and tanh-RNN layers vs TypeScript reference', () => {
  it('the addon reports its kernel thread count', () => {
    // The multi-threaded cases below only split the batch when the pool has ≥ 2 threads.
    expect(threads).toBeGreaterThanOrEqual(1);
  });

  for (const cell of CELLS) {
    describe(cell, () => {
      for (const { dims, why } of LAYER_CASES) {
        const { batch: B, seq: T, input: I, hidden: H } = dims;
        const label = `B=${B} T=${T} I=${I} H=${H} (${why})`;
        it(`forward output and every gradient agree: ${label}`, () => {
          checkLayer(cell, dims, 1000 + B * 31 + H);
        });
      }

      if (cell === 'lstm') {
        // Each path into the cell on its own: dL/dh_t only (c reached through h = o ⊙ tanh c), and
        // dL/dc_t only (what the final state's c half receives), on a single and a threaded batch.
        for (const mask of ['h', 'c'] as const) {
          for (const k of [1, 4]) {
            const { dims, why } = LAYER_CASES[k];
            const { batch: B, seq: T, input: I, hidden: H } = dims;
            it(`dOut on the ${mask} half only: B=${B} T=${T} I=${I} H=${H} (${why})`, () => {
              checkLayer(cell, dims, 2000 + B * 31 + H + (mask === 'c' ? 1 : 0), mask);
            });
          }
        }
      }

      it('gives the same result on repeated calls (the threaded split is deterministic)', () => {
        const dims = LAYER_CASES[4].dims;
        const { x, h0, dOut, packed } = layerInputs(cell, dims, 99);
        const a = loadNative().rnnLayerGrads({ cell, ...dims }, x, h0, packed, dOut);
        const b = loadNative().rnnLayerGrads({ cell, ...dims }, x, h0, packed, dOut);
        for (const k of ['out', 'dx', 'dh0', 'dparams'] as const) {
          expectNonTrivial(k, a[k]);
          expect(bytes(b[k]).equals(bytes(a[k])), `${k} differs between calls`).toBe(true);
        }
      });
    });
  }

  it('an unknown cell is refused by the raw layer call with E_CONFIG (a ConfigError once mapped)', () => {
    const dims = { batch: 1, seq: 1, input: 1, hidden: 1 };
    const one = new Float32Array(1);
    let caught: unknown = null;
    try {
      loadNative().rnnLayerGrads({ cell: 'tcn' as CellKind, ...dims }, one, one, new Float32Array(4), one);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(Error);
    expect((caught as Error).message).toMatch(/^E_CONFIG: .*tcn/);
    expect(mapNativeError(caught)).toBeInstanceOf(ConfigError);
  });
});

// ---- the whole language model -------------------------------------------------------------------

const TEXT = 'Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse';
const VOCAB = Vocabulary.fromText(TEXT);

interface LmCase {
  batch: number;
  seq: number;
  embed: number;
  hidden: number;
  why: string;
}

const LM_CASES: LmCase[] = [
  { batch: 3, seq: 9, embed: 12, hidden: 24, why: 'small' },
  // B·H = 33·128 = 4224 ≥ 4096: both layers take the threaded path, split unevenly.
  { batch: 33, seq: 6, embed: 16, hidden: 128, why: 'threaded, uneven split' },
];

const LAYERS = 2;

function lmShape(cell: CellKind, c: LmCase): CharLmShape {
  return { vocabSize: VOCAB.size, embed: c.embed, hidden: c.hidden, layers: LAYERS, cell };
}

/**
 * A native and a JS model of one shape with every parameter set to the same values: PyTorch's init
 * scales (embedding ±1 for its N(0, 1), recurrent and head weights ±1/√H).
 */
function pair(cell: CellKind, c: LmCase, seed: number): { native: CharLmBackend; js: CharLmBackend } {
  const shape = lmShape(cell, c);
  const native = createCharLmBackend(shape, 'native');
  const js = createCharLmBackend(shape, 'js');
  expect(native).toBeInstanceOf(NativeCharLm);
  expect(js).toBeInstanceOf(JsCharLm);
  const rng = new Rng(seed);
  for (const { name, shape: dims } of charLmParamInfo(shape)) {
    const n = dims.reduce((a, d) => a * d, 1);
    const p = uniform(rng, n, name === 'embedding.weight' ? 1 : 1 / Math.sqrt(c.hidden));
    native.setParam(name, p);
    js.setParam(name, p);
    expect(bytes(native.getParam(name)).equals(bytes(p)), `native ${name} was not set`).toBe(true);
    expect(bytes(js.getParam(name)).equals(bytes(p)), `js ${name} was not set`).toBe(true);
  }
  return { native, js };
}

function tokens(rng: Rng, n: number): Uint32Array {
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.int(VOCAB.size);
  return a;
}

/** Values of a whole-model state `[L, B, W·H]`. */
function stateLen(cell: CellKind, batch: number, hidden: number): number {
  return LAYERS * batch * stateWidth(cell) * hidden;
}

for (const cell of CELLS) {
  describe(`NativeCharLm vs JsCharLm, cell ${cell} (2 layers, identical parameters)`, () => {
    for (const c of LM_CASES) {
      const label = `B=${c.batch} T=${c.seq} E=${c.embed} H=${c.hidden} (${c.why})`;

      it(`lossAndGrads: loss, every parameter gradient and dh0 agree: ${label}`, async () => {
        const { native, js } = pair(cell, c, 11);
        const rng = new Rng(5);
        const ids = tokens(rng, c.batch * c.seq);
        const targets = tokens(rng, c.batch * c.seq);
        const state = uniform(rng, stateLen(cell, c.batch, c.hidden), 0.8);
        const a = await native.lossAndGrads(ids, targets, c.batch, c.seq, state);
        const b = await js.lossAndGrads(ids, targets, c.batch, c.seq, state);
        expectScalarClose('loss', a.loss, b.loss, GRAD_TOL);
        const names = native.paramInfo().map((p) => p.name);
        expect(names.some((n) => n.startsWith(`${cell}.`))).toBe(true);
        expect(Object.keys(a.grads).sort()).toEqual([...names].sort());
        expect(Object.keys(b.grads).sort()).toEqual([...names].sort());
        for (const name of names) {
          expectNonTrivial(`grad ${name}`, b.grads[name]);
          expectClose(`grad ${name}`, a.grads[name], b.grads[name], GRAD_TOL, 1e-12);
        }
        expect(a.dh0.length).toBe(state.length);
        expectStateClose(cell, 'dh0', a.dh0, b.dh0, c.hidden, GRAD_TOL, 1e-12, true);
        // lossAndGrads changes nothing.
        expect(native.getOptimStep()).toBe(0);
        expect(native.getCarry()).toBeNull();
      });

      it(`nll and step agree: ${label}`, async () => {
        const { native, js } = pair(cell, c, 12);
        const rng = new Rng(6);
        const ids = tokens(rng, c.batch * c.seq);
        const targets = tokens(rng, c.batch * c.seq);
        const state = uniform(rng, stateLen(cell, c.batch, c.hidden), 0.8);
        for (const s of [null, state]) {
          const given = s ? 'given' : 'zero';
          const a = await native.nll(ids, targets, c.batch, c.seq, s);
          const b = await js.nll(ids, targets, c.batch, c.seq, s);
          expectScalarClose(`nll (state ${given})`, a.nll, b.nll, FWD_TOL);
          expect(a.state.length).toBe(state.length);
          // For the LSTM: h_T and c_T of each layer, each on its own scale.
          expectStateClose(cell, `nll final state (state ${given})`, a.state, b.state, c.hidden, FWD_TOL, 1, true);
        }
        // Several sampling steps of B streams, carrying each backend's own state.
        const step0 = tokens(rng, c.batch);
        let sa: Float32Array | null = null;
        let sb: Float32Array | null = null;
        for (let k = 0; k < 4; k++) {
          const toks = k === 0 ? step0 : tokens(rng, c.batch);
          const ra = native.step(k === 1 ? state : sa, toks);
          const rb = js.step(k === 1 ? state : sb, toks);
          expectNonTrivial('logits', rb.logits);
          expectClose(`step ${k} logits`, ra.logits, rb.logits, FWD_TOL, 1);
          expect(ra.state.length).toBe(state.length);
          expectStateClose(cell, `step ${k} state`, ra.state, rb.state, c.hidden, FWD_TOL, 1, true);
          sa = ra.state;
          sb = rb.state;
        }
      });
    }

    it('trainStep: 5 AdamW steps from the same init give the same losses, parameters and carry', async () => {
      // As in the GRU test: same init, same 5 batches (the carried state — for the LSTM h and c — flows
      // from step to step on both backends), clipping active and weight decay on. Losses and gradient
      // norms 1e-4 relative; parameters and the carry 1e-3 relative to each tensor's largest |value|
      // (see native-oracle.test.ts for why Adam's per-element normalisation needs the looser bound).
      const c: LmCase = { batch: 4, seq: 12, embed: 8, hidden: 24, why: 'train' };
      const { native, js } = pair(cell, c, 21);
      const opt: OptimConfig = { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, clip: 0.1 };
      const rng = new Rng(8);
      const init = Object.fromEntries(native.paramInfo().map((p) => [p.name, native.getParam(p.name)]));
      for (let s = 0; s < 5; s++) {
        const ids = tokens(rng, c.batch * c.seq);
        const targets = tokens(rng, c.batch * c.seq);
        const a = await native.trainStep(ids, targets, c.batch, c.seq, opt);
        const b = await js.trainStep(ids, targets, c.batch, c.seq, opt);
        expect(b.gradNorm, 'clipping should be active for this test to exercise it').toBeGreaterThan(opt.clip);
        expectScalarClose(`step ${s} loss`, a.loss, b.loss, 1e-4);
        expectScalarClose(`step ${s} grad norm`, a.gradNorm, b.gradNorm, 1e-4);
      }
      expect(native.getOptimStep()).toBe(5);
      expect(js.getOptimStep()).toBe(5);
      for (const { name } of native.paramInfo()) {
        const pa = native.getParam(name);
        const pb = js.getParam(name);
        // The parameters did move (by ~lr per step), so the comparison is not of two unchanged copies.
        const moved = relErr(pb, init[name], 1e-12);
        expect(moved.err * moved.scale, `${name} did not move`).toBeGreaterThan(opt.lr);
        expectClose(`param ${name}`, pa, pb, 1e-3, 1e-12);
      }
      const ca = native.getCarry();
      const cb = js.getCarry();
      expect(ca?.batch).toBe(c.batch);
      expect(cb?.batch).toBe(c.batch);
      expect(ca?.state.length).toBe(stateLen(cell, c.batch, c.hidden));
      expectStateClose(cell, 'carried state', ca?.state ?? [], cb?.state ?? [], c.hidden, 1e-3, 1, true);
    });
  });
}

// ---- parameter layout and cell names ------------------------------------------------------------

describe('cell selection on both backends', () => {
  const base = { vocabSize: VOCAB.size, embed: 6, hidden: 5, layers: 2 };

  for (const cell of [undefined, 'gru', 'lstm', 'rnn'] as const) {
    it(`paramInfo of the native backend equals charLmParamInfo: cell ${cell ?? '(absent: gru)'}`, () => {
      const shape: CharLmShape = cell === undefined ? base : { ...base, cell };
      const want = charLmParamInfo(shape);
      const G = gateCount(cell ?? 'gru');
      expect(want.find((p) => p.name === `${cell ?? 'gru'}.weight_ih_l1`)?.shape).toEqual([G * 5, 5]);
      expect(createCharLmBackend(shape, 'native').paramInfo()).toEqual(want);
      expect(createCharLmBackend(shape, 'js').paramInfo()).toEqual(want);
    });
  }

  for (const backend of ['native', 'js'] as const) {
    it(`an unknown cell name is refused with a ConfigError: ${backend}`, () => {
      const shape = { ...base, cell: 'tcn' as CellKind };
      let caught: unknown = null;
      try {
        createCharLmBackend(shape, backend);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(ConfigError);
      expect((caught as Error).message).toMatch(/tcn/);
    });
  }
});
