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
import { ConfigError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import {
  bytes,
  expectClose,
  expectNonTrivial,
  expectScalarClose,
  expectStateClose,
  type Floats,
  FWD_TOL,
  GRAD_TOL,
  LAYER_CASES,
  LM_CASES,
  type LmCase,
  layerWeights,
  relErr,
  tokens,
  uniform,
  VOCAB,
} from './helpers/oracle.js';

/** The cells this file tests (the GRU has its own oracle in native-oracle.test.ts). */
const CELLS = ['lstm', 'rnn'] as const;

// ---- one layer ----------------------------------------------------------------------------------

const threads = loadNative().buildInfo().threads;

/** Which halves of the LSTM's dOut rows (h, c) carry gradient. */
type DOutMask = 'both' | 'h' | 'c';

function layerInputs(cell: CellKind, dims: GruDims, seed: number, mask: DOutMask = 'both') {
  const { batch: B, seq: T, input: I, hidden: H } = dims;
  const rng = new Rng(seed);
  const G = gateCount(cell) * H;
  const S = stateWidth(cell) * H;
  const { w, packed } = layerWeights(rng, G, I, H);
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
