/**
 * The native backend (Rust, through N-API) against the pure-TypeScript reference, which computes every
 * sum and gate in doubles and stores results in f32.
 *
 * Comparison rule used throughout (`expectClose`): for a tensor `got` (native) and `want` (reference),
 *
 *     max_i |got_i − want_i| ≤ tol · scale,   scale = max(floor, max_i |want_i|)
 *
 * i.e. an elementwise bound relative to the largest magnitude of the reference tensor, so elements that
 * are tiny through cancellation are not judged by their own (meaningless) relative error.
 *   - forward values (GRU outputs, logits, states): floor 1, so the bound is `tol · max(1, max|want|)`.
 *   - gradients: floor 1e-12, i.e. relative to the tensor's own largest gradient even when that is ≪ 1
 *     (mean-loss gradients are ~1e-3; a floor of 1 would turn the bound into a 10 % error allowance).
 * Each parameter block (w_ih, w_hh, b_ih, b_hh) is compared on its own scale.
 * Scalars (losses, NLL, gradient norms): |got − want| ≤ tol · |want|.
 *
 * Tolerances: forward 1e-5 (the native tanh is a rational approximation accurate to a few f32 ulp, and
 * f32 GEMMs round each partial sum), gradients 1e-4 (backward sums T·B terms per weight in f32).
 */
import { describe, expect, it } from 'vitest';
import { type GruDims, gruBackward, gruForward } from '../src/backend/js/gru.js';
import { JsCharLm } from '../src/backend/js/index.js';
import { loadNative, NativeCharLm } from '../src/backend/native.js';
import type { CharLmBackend, OptimConfig } from '../src/backend/types.js';
import { CharLM } from '../src/models/char-lm.js';
import { Rng } from '../src/util/rng.js';
import {
  bytes,
  expectClose,
  expectNonTrivial,
  expectScalarClose,
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

// ---- one GRU layer -----------------------------------------------------------------------------

const threads = loadNative().buildInfo().threads;

function layerInputs(dims: GruDims, seed: number) {
  const { batch: B, seq: T, input: I, hidden: H } = dims;
  const rng = new Rng(seed);
  const { w, packed } = layerWeights(rng, 3 * H, I, H);
  const x = uniform(rng, B * T * I, 1);
  const h0 = uniform(rng, B * H, 0.8);
  const dOut = uniform(rng, B * T * H, 1);
  return { w, x, h0, dOut, packed };
}

describe('native GRU layer vs TypeScript reference', () => {
  it('the addon reports its kernel thread count', () => {
    // The multi-threaded cases below only split the batch when the pool has ≥ 2 threads.
    expect(threads).toBeGreaterThanOrEqual(1);
  });

  for (const { dims, why } of LAYER_CASES) {
    const { batch: B, seq: T, input: I, hidden: H } = dims;
    const label = `B=${B} T=${T} I=${I} H=${H} (${why})`;

    it(`forward output and every gradient agree: ${label}`, () => {
      const { w, x, h0, dOut, packed } = layerInputs(dims, 1000 + B * 31 + H);
      const native = loadNative().rnnLayerGrads(dims, x, h0, packed, dOut);

      const ref = gruForward(dims, x, h0, w, { dtype: 'f32', save: true });
      if (ref.saved === null) throw new Error('reference saved no activations');
      expectNonTrivial('out', ref.out);
      expectClose('out', native.out, ref.out, FWD_TOL, 1);

      // Backward of the reference from its own forward: both sides then differ only by their own
      // rounding, not by a shared input.
      const g = gruBackward(dims, x, h0, w, ref.out, ref.saved, dOut);
      const G = 3 * H;
      expect(native.dparams.length).toBe(G * I + G * H + 2 * G);
      const blocks: [string, Floats, number, number][] = [
        ['dW_ih', g.dWIh, 0, G * I],
        ['dW_hh', g.dWHh, G * I, G * H],
        ['db_ih', g.dBIh, G * I + G * H, G],
        ['db_hh', g.dBHh, G * I + G * H + G, G],
      ];
      expectNonTrivial('dx', g.dx);
      expectNonTrivial('dh0', g.dh0);
      expectClose('dx', native.dx, g.dx, GRAD_TOL, 1e-12);
      expectClose('dh0', native.dh0, g.dh0, GRAD_TOL, 1e-12);
      for (const [name, want, off, len] of blocks) {
        expectNonTrivial(name, want);
        expectClose(name, native.dparams.subarray(off, off + len), want, GRAD_TOL, 1e-12);
      }
    });
  }

  it('gives the same result on repeated calls (the threaded split is deterministic)', () => {
    const dims = LAYER_CASES[4].dims;
    const { x, h0, dOut, packed } = layerInputs(dims, 99);
    const a = loadNative().rnnLayerGrads(dims, x, h0, packed, dOut);
    const b = loadNative().rnnLayerGrads(dims, x, h0, packed, dOut);
    for (const k of ['out', 'dx', 'dh0', 'dparams'] as const) {
      expect(bytes(b[k]).equals(bytes(a[k])), `${k} differs between calls`).toBe(true);
    }
  });
});

// ---- the whole language model -------------------------------------------------------------------

function pair(c: LmCase, seed: number): { native: CharLmBackend; js: CharLmBackend } {
  const model = CharLM.create(VOCAB, { embed: c.embed, hidden: c.hidden, layers: 2 }, { backend: 'native', seed });
  const js = model.to('js');
  expect(model.backend).toBeInstanceOf(NativeCharLm);
  expect(js.backend).toBeInstanceOf(JsCharLm);
  return { native: model.backend, js: js.backend };
}

describe('NativeCharLm vs JsCharLm (2 layers, identical parameters)', () => {
  for (const c of LM_CASES) {
    const label = `B=${c.batch} T=${c.seq} E=${c.embed} H=${c.hidden} (${c.why})`;

    it(`lossAndGrads: loss, every parameter gradient and dh0 agree: ${label}`, async () => {
      const { native, js } = pair(c, 11);
      const rng = new Rng(5);
      const ids = tokens(rng, c.batch * c.seq);
      const targets = tokens(rng, c.batch * c.seq);
      const state = uniform(rng, 2 * c.batch * c.hidden, 0.8);
      const a = await native.lossAndGrads(ids, targets, c.batch, c.seq, state);
      const b = await js.lossAndGrads(ids, targets, c.batch, c.seq, state);
      expectScalarClose('loss', a.loss, b.loss, GRAD_TOL);
      const names = native.paramInfo().map((p) => p.name);
      expect(Object.keys(a.grads).sort()).toEqual([...names].sort());
      expect(Object.keys(b.grads).sort()).toEqual([...names].sort());
      for (const name of names) {
        expectNonTrivial(`grad ${name}`, b.grads[name]);
        expectClose(`grad ${name}`, a.grads[name], b.grads[name], GRAD_TOL, 1e-12);
      }
      expectNonTrivial('dh0', b.dh0);
      expectClose('dh0', a.dh0, b.dh0, GRAD_TOL, 1e-12);
      // lossAndGrads changes nothing.
      expect(native.getOptimStep()).toBe(0);
      expect(native.getCarry()).toBeNull();
    });

    it(`nll and step agree: ${label}`, async () => {
      const { native, js } = pair(c, 12);
      const rng = new Rng(6);
      const ids = tokens(rng, c.batch * c.seq);
      const targets = tokens(rng, c.batch * c.seq);
      const state = uniform(rng, 2 * c.batch * c.hidden, 0.8);
      for (const s of [null, state]) {
        const a = await native.nll(ids, targets, c.batch, c.seq, s);
        const b = await js.nll(ids, targets, c.batch, c.seq, s);
        expectScalarClose(`nll (state ${s ? 'given' : 'zero'})`, a.nll, b.nll, FWD_TOL);
        expectClose(`nll final state (state ${s ? 'given' : 'zero'})`, a.state, b.state, FWD_TOL, 1);
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
        expectClose(`step ${k} state`, ra.state, rb.state, FWD_TOL, 1);
        sa = ra.state;
        sb = rb.state;
      }
    });
  }

  it('trainStep: 5 AdamW steps from the same init give the same losses and parameters', async () => {
    // Same init, same 5 batches (the carried state flows from step to step on both backends),
    // clipping active (clip below the initial gradient norm) and weight decay on.
    //
    // Tolerances: losses 1e-4 relative. Parameters 1e-3 relative to each tensor's largest |value|.
    // Why looser than a gradient: Adam normalises each gradient element by its own magnitude, so at
    // step 1 every parameter with a non-zero gradient moves by exactly ±lr; an element whose gradient is
    // at rounding-noise level could move in opposite directions on the two backends (a 2·lr gap), and
    // later steps feed ratios of gradients through √v. 1e-3·max|p| keeps the check far below the
    // per-step movement lr = 2e-3 of the ±1/√H weights (max|p| ≈ 0.2 → 2e-4), so a wrong update
    // rule (bias correction, eps placement, decay, clipping) is still caught.
    const c: LmCase = { batch: 4, seq: 12, embed: 8, hidden: 24, why: 'train' };
    const { native, js } = pair(c, 21);
    const opt: OptimConfig = { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, clip: 0.1 };
    const rng = new Rng(8);
    const init = Object.fromEntries(native.paramInfo().map((p) => [p.name, native.getParam(p.name)]));
    const lossesA: number[] = [];
    const lossesB: number[] = [];
    for (let s = 0; s < 5; s++) {
      const ids = tokens(rng, c.batch * c.seq);
      const targets = tokens(rng, c.batch * c.seq);
      const a = await native.trainStep(ids, targets, c.batch, c.seq, opt);
      const b = await js.trainStep(ids, targets, c.batch, c.seq, opt);
      expect(b.gradNorm, 'clipping should be active for this test to exercise it').toBeGreaterThan(opt.clip);
      expectScalarClose(`step ${s} loss`, a.loss, b.loss, 1e-4);
      expectScalarClose(`step ${s} grad norm`, a.gradNorm, b.gradNorm, 1e-4);
      lossesA.push(a.loss);
      lossesB.push(b.loss);
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
    expectClose('carried state', ca?.state ?? [], cb?.state ?? [], 1e-3, 1);
  });
});
