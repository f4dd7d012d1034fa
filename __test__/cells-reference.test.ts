/**
 * The LSTM and tanh-RNN cells of the pure-TypeScript reference: each layer's hand-written backward
 * against central finite differences in float64, a tiny sequence against a direct hand computation of
 * PyTorch's equations, the whole LM built on each cell against finite differences, the parameter
 * names and shapes per cell, and the JsCharLm backend training with each.
 */
import { describe, expect, it } from 'vitest';
import { JsCharLm } from '../src/backend/js/index.js';
import { lmForward, lmLossAndGrads, lmNll, lmStep } from '../src/backend/js/lm.js';
import { type LstmDims, type LstmWeights, lstmBackward, lstmForward } from '../src/backend/js/lstm.js';
import { type RnnDims, type RnnWeights, rnnBackward, rnnForward } from '../src/backend/js/rnn.js';
import {
  type CellKind,
  type CharLmShape,
  charLmParamInfo,
  gateCount,
  type OptimConfig,
  stateWidth,
} from '../src/backend/types.js';
import { ConfigError, ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { expectClose, expectCloseNonZero, numericGrad, uniform } from './helpers/numeric.js';

const sig = (a: number) => 1 / (1 + Math.exp(-a));

describe('lstm kernel', () => {
  it('matches a direct hand computation of PyTorch nn.LSTM over two steps (B=1, I=1, H=2)', () => {
    const H = 2;
    // Rows of W are gates (i, f, g, o) × units, stacked as in PyTorch's weight_ih_l0; every row differs,
    // so a swapped gate order or unit layout shows.
    const wIh = Float64Array.from([0.2, -0.3, 0.5, 0.1, -0.6, 0.7, 0.4, -0.2]);
    const wHh = Float64Array.from([
      0.1, -0.2, 0.3, 0.4, -0.5, 0.2, 0.6, -0.1, 0.2, 0.3, -0.4, 0.5, 0.7, -0.3, -0.2, 0.1,
    ]);
    const bIh = Float64Array.from([0.05, -0.1, 0.2, 0.15, -0.05, 0.1, -0.2, 0.3]);
    const bHh = Float64Array.from([0.1, 0.05, -0.15, 0.2, 0.25, -0.1, 0.05, -0.05]);
    const x = Float64Array.from([0.8, -0.5]);
    // s0 = (h0, c0)
    const s0 = Float64Array.from([0.3, -0.2, 0.5, -0.4]);
    const { out, saved } = lstmForward(
      { batch: 1, seq: 2, input: 1, hidden: H },
      x,
      s0,
      { wIh, wHh, bIh, bHh },
      {
        save: true,
      },
    );

    let h = [s0[0], s0[1]];
    let c = [s0[2], s0[3]];
    const want: number[] = [];
    const wantSaved: number[] = [];
    for (let t = 0; t < 2; t++) {
      // W_{·k} x + b_{i·k} + W_{h·k} h + b_{h·k} for row k = gate·H + unit.
      const pre = (k: number) => wIh[k] * x[t] + bIh[k] + wHh[2 * k] * h[0] + wHh[2 * k + 1] * h[1] + bHh[k];
      const i = [sig(pre(0)), sig(pre(1))];
      const f = [sig(pre(2)), sig(pre(3))];
      const g = [Math.tanh(pre(4)), Math.tanh(pre(5))];
      const o = [sig(pre(6)), sig(pre(7))];
      c = [f[0] * c[0] + i[0] * g[0], f[1] * c[1] + i[1] * g[1]];
      h = [o[0] * Math.tanh(c[0]), o[1] * Math.tanh(c[1])];
      want.push(...h, ...c);
      wantSaved.push(...i, ...f, ...g, ...o);
    }
    expect(out).toBeInstanceOf(Float64Array);
    expect(out.length).toBe(8);
    for (let k = 0; k < 8; k++) expect(out[k], `out[${k}]`).toBeCloseTo(want[k], 14);
    expect(saved?.length).toBe(16);
    for (let k = 0; k < 16; k++) expect(saved?.[k], `saved[${k}]`).toBeCloseTo(wantSaved[k], 14);
    // The same two steps computed independently in Python (math.exp, math.tanh), so an error shared by
    // the kernel and the lines above shows. Rows are (h_t, c_t).
    const python = [
      0.07279092087429, -0.06002801792049, 0.120247158900995, -0.120031903707147, 0.121512074138018, -0.155355307700394,
      0.290348223793527, -0.273745524240075,
    ];
    for (let k = 0; k < 8; k++) expect(out[k], `out[${k}] vs Python`).toBeCloseTo(python[k], 12);
  });

  it('backward matches central finite differences in float64 for dx, ds0 (h0 and c0) and every weight', () => {
    const rng = new Rng(17);
    const dims: LstmDims = { batch: 3, seq: 4, input: 3, hidden: 4 };
    const { batch: B, seq: T, input: I, hidden: H } = dims;
    const x = uniform(rng, B * T * I, 1);
    const s0 = uniform(rng, B * 2 * H, 0.8);
    const w = {
      wIh: uniform(rng, 4 * H * I, 0.6),
      wHh: uniform(rng, 4 * H * H, 0.6),
      bIh: uniform(rng, 4 * H, 0.6),
      bHh: uniform(rng, 4 * H, 0.6),
    } satisfies LstmWeights;
    // L = Σ k ⊙ out over both halves of every row, so dL/d(out) = k reaches h_t and c_t directly.
    const k = uniform(rng, B * T * 2 * H, 1);
    const loss = () => {
      const { out } = lstmForward(dims, x, s0, w);
      let s = 0;
      for (let i = 0; i < out.length; i++) s += k[i] * out[i];
      return s;
    };
    const { out, saved } = lstmForward(dims, x, s0, w, { save: true });
    if (saved === null) throw new Error('saved activations missing');
    const g = lstmBackward(dims, x, s0, w, out, saved, k);
    expect(g.dx).toBeInstanceOf(Float64Array);
    expectClose('dx', g.dx, numericGrad(x, loss), 1e-6);
    const ds0 = numericGrad(s0, loss);
    expectClose('ds0', g.ds0, ds0, 1e-6);
    // Both halves of every row carry gradient (c0 through f ⊙ c, h0 through the gates).
    for (let b = 0; b < B; b++) {
      expectCloseNonZero(
        `dh0 b${b}`,
        g.ds0.subarray(b * 2 * H, b * 2 * H + H),
        ds0.subarray(b * 2 * H, b * 2 * H + H),
        1e-6,
        0,
      );
      expectCloseNonZero(
        `dc0 b${b}`,
        g.ds0.subarray(b * 2 * H + H, (b + 1) * 2 * H),
        ds0.subarray(b * 2 * H + H, (b + 1) * 2 * H),
        1e-6,
        0,
      );
    }
    expectClose('dWIh', g.dWIh, numericGrad(w.wIh, loss), 1e-6);
    expectClose('dWHh', g.dWHh, numericGrad(w.wHh, loss), 1e-6);
    expectClose('dBIh', g.dBIh, numericGrad(w.bIh, loss), 1e-6);
    expectClose('dBHh', g.dBHh, numericGrad(w.bHh, loss), 1e-6);
  });

  it('backward with dOut on the c half only still matches finite differences', () => {
    const rng = new Rng(23);
    const dims: LstmDims = { batch: 2, seq: 3, input: 2, hidden: 3 };
    const { batch: B, seq: T, input: I, hidden: H } = dims;
    const x = uniform(rng, B * T * I, 1);
    const s0 = uniform(rng, B * 2 * H, 0.8);
    const w = {
      wIh: uniform(rng, 4 * H * I, 0.7),
      wHh: uniform(rng, 4 * H * H, 0.7),
      bIh: uniform(rng, 4 * H, 0.7),
      bHh: uniform(rng, 4 * H, 0.7),
    } satisfies LstmWeights;
    const k = uniform(rng, B * T * 2 * H, 1);
    for (let r = 0; r < B * T; r++) k.fill(0, r * 2 * H, r * 2 * H + H);
    const loss = () => {
      const { out } = lstmForward(dims, x, s0, w);
      let s = 0;
      for (let i = 0; i < out.length; i++) s += k[i] * out[i];
      return s;
    };
    const { out, saved } = lstmForward(dims, x, s0, w, { save: true });
    const g = lstmBackward(dims, x, s0, w, out, saved ?? new Float64Array(0), k);
    expectCloseNonZero('dx', g.dx, numericGrad(x, loss), 1e-6, 0);
    expectCloseNonZero('ds0', g.ds0, numericGrad(s0, loss), 1e-6, 0);
    expectCloseNonZero('dWHh', g.dWHh, numericGrad(w.wHh, loss), 1e-6, 0);
  });

  it('stores in the requested dtype and rejects wrong sizes with ShapeError', () => {
    const dims: LstmDims = { batch: 2, seq: 2, input: 3, hidden: 2 };
    const w: LstmWeights = {
      wIh: new Float32Array(24),
      wHh: new Float32Array(16),
      bIh: new Float32Array(8),
      bHh: new Float32Array(8),
    };
    const x = new Float32Array(12);
    // s0 is [B, 2H]: an [B, H] state is refused.
    expect(() => lstmForward(dims, x, new Float32Array(4), w)).toThrow(/s0 holds 4 values; \[B 2, 2H 4\] needs 8/);
    expect(() => lstmForward(dims, x, new Float32Array(8), { ...w, wIh: new Float32Array(18) })).toThrow(ShapeError);
    const { out, saved } = lstmForward(dims, x, new Float32Array(8), w, { save: true });
    expect(out).toBeInstanceOf(Float32Array);
    expect(out.length).toBe(16);
    expect(saved?.length).toBe(32);
    expect(lstmForward(dims, x, new Float32Array(8), w, { dtype: 'f64' }).out).toBeInstanceOf(Float64Array);
    expect(() => lstmBackward(dims, x, new Float32Array(8), w, out, new Float32Array(24), out)).toThrow(/saved/);
    expect(() => lstmBackward(dims, x, new Float32Array(8), w, out, saved ?? out, out.subarray(8))).toThrow(/dOut/);
  });
});

describe('rnn kernel', () => {
  it('matches a direct hand computation of PyTorch nn.RNN (tanh) over two steps (B=1, I=1, H=2)', () => {
    const wIh = Float64Array.from([0.7, -0.4]);
    const wHh = Float64Array.from([0.5, -0.3, 0.2, 0.6]);
    const bIh = Float64Array.from([0.1, -0.2]);
    const bHh = Float64Array.from([-0.05, 0.15]);
    const x = Float64Array.from([0.9, -1.1]);
    const h0 = Float64Array.from([0.2, -0.4]);
    const { out, saved } = rnnForward({ batch: 1, seq: 2, input: 1, hidden: 2 }, x, h0, { wIh, wHh, bIh, bHh });
    expect(saved).toBeNull();
    let h = [h0[0], h0[1]];
    const want: number[] = [];
    for (let t = 0; t < 2; t++) {
      h = [
        Math.tanh(wIh[0] * x[t] + bIh[0] + wHh[0] * h[0] + wHh[1] * h[1] + bHh[0]),
        Math.tanh(wIh[1] * x[t] + bIh[1] + wHh[2] * h[0] + wHh[3] * h[1] + bHh[1]),
      ];
      want.push(...h);
    }
    expect(out).toBeInstanceOf(Float64Array);
    expect(out.length).toBe(4);
    for (let k = 0; k < 4; k++) expect(out[k], `out[${k}]`).toBeCloseTo(want[k], 14);
    // Computed independently in Python.
    const python = [0.716297870199024, -0.544127098853567, -0.196041927183612, 0.203885561098757];
    for (let k = 0; k < 4; k++) expect(out[k], `out[${k}] vs Python`).toBeCloseTo(python[k], 12);
  });

  it('backward matches central finite differences in float64 for dx, dh0 and every weight', () => {
    const rng = new Rng(29);
    const dims: RnnDims = { batch: 3, seq: 5, input: 3, hidden: 4 };
    const { batch: B, seq: T, input: I, hidden: H } = dims;
    const x = uniform(rng, B * T * I, 1);
    const h0 = uniform(rng, B * H, 0.8);
    const w = {
      wIh: uniform(rng, H * I, 0.6),
      wHh: uniform(rng, H * H, 0.6),
      bIh: uniform(rng, H, 0.6),
      bHh: uniform(rng, H, 0.6),
    } satisfies RnnWeights;
    const k = uniform(rng, B * T * H, 1);
    const loss = () => {
      const { out } = rnnForward(dims, x, h0, w);
      let s = 0;
      for (let i = 0; i < out.length; i++) s += k[i] * out[i];
      return s;
    };
    const { out } = rnnForward(dims, x, h0, w);
    const g = rnnBackward(dims, x, h0, w, out, k);
    expect(g.dx).toBeInstanceOf(Float64Array);
    expectCloseNonZero('dx', g.dx, numericGrad(x, loss), 1e-6, 0);
    expectCloseNonZero('dh0', g.dh0, numericGrad(h0, loss), 1e-6, 0);
    expectCloseNonZero('dWIh', g.dWIh, numericGrad(w.wIh, loss), 1e-6, 0);
    expectCloseNonZero('dWHh', g.dWHh, numericGrad(w.wHh, loss), 1e-6, 0);
    expectCloseNonZero('dBIh', g.dBIh, numericGrad(w.bIh, loss), 1e-6, 0);
    expectCloseNonZero('dBHh', g.dBHh, numericGrad(w.bHh, loss), 1e-6, 0);
  });

  it('rejects wrong sizes with ShapeError', () => {
    const dims: RnnDims = { batch: 1, seq: 2, input: 3, hidden: 2 };
    const w: RnnWeights = {
      wIh: new Float32Array(6),
      wHh: new Float32Array(4),
      bIh: new Float32Array(2),
      bHh: new Float32Array(2),
    };
    expect(() =>
      rnnForward(dims, new Float32Array(6), new Float32Array(2), { ...w, wHh: new Float32Array(12) }),
    ).toThrow(/wHh holds 12 values; \[H 2, H 2\] needs 4/);
    const { out } = rnnForward(dims, new Float32Array(6), new Float32Array(2), w);
    expect(out).toBeInstanceOf(Float32Array);
    expect(() => rnnBackward(dims, new Float32Array(6), new Float32Array(2), w, out, out.subarray(1))).toThrow(
      ShapeError,
    );
  });
});

function randomParams(shape: CharLmShape, rng: Rng, scale: number): Record<string, Float64Array> {
  const params: Record<string, Float64Array> = {};
  for (const { name, shape: dims } of charLmParamInfo(shape)) {
    params[name] = uniform(
      rng,
      dims.reduce((a, d) => a * d, 1),
      scale,
    );
  }
  return params;
}

function randomIds(rng: Rng, n: number, vocab: number): Uint32Array {
  const ids = new Uint32Array(n);
  for (let i = 0; i < n; i++) ids[i] = rng.int(vocab);
  return ids;
}

describe('cell kinds', () => {
  it('gateCount and stateWidth follow PyTorch, and an unknown cell is a ConfigError', () => {
    expect([gateCount('gru'), gateCount('lstm'), gateCount('rnn')]).toEqual([3, 4, 1]);
    expect([stateWidth('gru'), stateWidth('lstm'), stateWidth('rnn')]).toEqual([1, 2, 1]);
    expect(() => gateCount('gur' as CellKind)).toThrow(ConfigError);
    expect(() => charLmParamInfo({ vocabSize: 5, embed: 2, hidden: 3, layers: 1, cell: 'lstm2' as CellKind })).toThrow(
      ConfigError,
    );
  });

  it('charLmParamInfo names each cell like PyTorch and sizes its gates', () => {
    const base = { vocabSize: 5, embed: 2, hidden: 3, layers: 2 };
    const want = (cell: string, g: number) => [
      { name: 'embedding.weight', shape: [5, 2] },
      { name: `${cell}.weight_ih_l0`, shape: [g, 2] },
      { name: `${cell}.weight_hh_l0`, shape: [g, 3] },
      { name: `${cell}.bias_ih_l0`, shape: [g] },
      { name: `${cell}.bias_hh_l0`, shape: [g] },
      { name: `${cell}.weight_ih_l1`, shape: [g, 3] },
      { name: `${cell}.weight_hh_l1`, shape: [g, 3] },
      { name: `${cell}.bias_ih_l1`, shape: [g] },
      { name: `${cell}.bias_hh_l1`, shape: [g] },
      { name: 'head.weight', shape: [5, 3] },
      { name: 'head.bias', shape: [5] },
    ];
    expect(charLmParamInfo(base)).toEqual(want('gru', 9));
    expect(charLmParamInfo({ ...base, cell: 'gru' })).toEqual(want('gru', 9));
    expect(charLmParamInfo({ ...base, cell: 'lstm' })).toEqual(want('lstm', 12));
    expect(charLmParamInfo({ ...base, cell: 'rnn' })).toEqual(want('rnn', 3));
  });
});

describe.each(['lstm', 'rnn'] as const)('language model on the %s cell', (cell) => {
  const shape: CharLmShape = { vocabSize: 7, embed: 3, hidden: 4, layers: 2, cell };
  const W = stateWidth(cell);
  const batch = 2;
  const seq = 4;

  it('lmLossAndGrads matches central finite differences in float64 for every parameter and the initial state', () => {
    const rng = new Rng(cell === 'lstm' ? 31 : 37);
    const params = randomParams(shape, rng, 0.7);
    const ids = randomIds(rng, batch * seq, shape.vocabSize);
    const targets = randomIds(rng, batch * seq, shape.vocabSize);
    const h0 = uniform(rng, shape.layers * batch * W * shape.hidden, 0.5);
    const meanLoss = () => lmNll(shape, params, ids, targets, batch, seq, h0, 'f64').nll / (batch * seq);

    const got = lmLossAndGrads(shape, params, ids, targets, batch, seq, h0, 'f64');
    expect(got.loss).toBeCloseTo(meanLoss(), 12);
    expect(Object.keys(got.grads)).toEqual(charLmParamInfo(shape).map((p) => p.name));
    expect(Object.keys(got.grads)).toContain(`${cell}.weight_hh_l1`);
    for (const name of Object.keys(params)) {
      expect(got.grads[name]).toBeInstanceOf(Float64Array);
      expectCloseNonZero(name, got.grads[name], numericGrad(params[name], meanLoss), 1e-6, 0);
    }
    expect(got.dh0.length).toBe(shape.layers * batch * W * shape.hidden);
    expectCloseNonZero('dh0', got.dh0, numericGrad(h0, meanLoss), 1e-6, 0);
    const fwd = lmNll(shape, params, ids, targets, batch, seq, h0, 'f64');
    expect(got.state.length).toBe(shape.layers * batch * W * shape.hidden);
    expect(Array.from(got.state)).toEqual(Array.from(fwd.state));
  });

  it('the final state of layer 0 is its last output row (h_T, and c_T for the LSTM)', () => {
    const rng = new Rng(41);
    const params = randomParams(shape, rng, 0.7);
    const ids = randomIds(rng, batch * seq, shape.vocabSize);
    const { state } = lmForward(shape, params, ids, batch, seq, null, 'f64');
    const { embed: E, hidden: H } = shape;
    const x = new Float64Array(batch * seq * E);
    for (let r = 0; r < ids.length; r++)
      x.set(params['embedding.weight'].subarray(ids[r] * E, (ids[r] + 1) * E), r * E);
    const w = {
      wIh: params[`${cell}.weight_ih_l0`],
      wHh: params[`${cell}.weight_hh_l0`],
      bIh: params[`${cell}.bias_ih_l0`],
      bHh: params[`${cell}.bias_hh_l0`],
    };
    const dims = { batch, seq, input: E, hidden: H };
    const s0 = new Float64Array(batch * W * H);
    const { out } = cell === 'lstm' ? lstmForward(dims, x, s0, w) : rnnForward(dims, x, s0, w);
    for (let b = 0; b < batch; b++) {
      const last = out.subarray((b * seq + seq - 1) * W * H, (b * seq + seq) * W * H);
      expect(Array.from(state.subarray(b * W * H, (b + 1) * W * H)), `b${b}`).toEqual(Array.from(last));
    }
  });

  it('lmStep fed one token at a time reproduces lmForward, carrying the whole state', () => {
    const rng = new Rng(3);
    const params = randomParams(shape, rng, 0.7);
    const ids = randomIds(rng, batch * seq, shape.vocabSize);
    const h0 = uniform(rng, shape.layers * batch * W * shape.hidden, 0.5);
    const full = lmForward(shape, params, ids, batch, seq, h0, 'f64');
    let state: Float64Array = h0;
    for (let t = 0; t < seq; t++) {
      const tokens = Uint32Array.from({ length: batch }, (_, b) => ids[b * seq + t]);
      const next: { state: Float64Array; logits: Float64Array } = lmStep(shape, params, state, tokens, 'f64');
      expect(next.state.length).toBe(shape.layers * batch * W * shape.hidden);
      for (let b = 0; b < batch; b++) {
        const row = (b * seq + t) * shape.vocabSize;
        expectClose(
          `logits b${b} t${t}`,
          next.logits.subarray(b * shape.vocabSize, (b + 1) * shape.vocabSize),
          full.logits.subarray(row, row + shape.vocabSize),
          1e-12,
        );
      }
      state = next.state;
    }
    expectClose('final state', state, full.state, 1e-12);
  });

  it('rejects a state of the wrong width with ShapeError', () => {
    const params = randomParams(shape, new Rng(1), 0.5);
    const ok = new Uint32Array(batch * seq);
    const wrong = new Float64Array(shape.layers * batch * shape.hidden * (W === 2 ? 1 : 2));
    expect(() => lmNll(shape, params, ok, ok, batch, seq, wrong, 'f64')).toThrow(ShapeError);
    // Parameters named for another cell are missing for this one.
    const gruParams = randomParams({ ...shape, cell: 'gru' }, new Rng(1), 0.5);
    expect(() => lmNll(shape, gruParams, ok, ok, batch, seq, null, 'f64')).toThrow(
      new RegExp(`${cell}\\.weight_ih_l0 is missing`),
    );
  });
});

describe('language model on the gru cell', () => {
  const base: CharLmShape = { vocabSize: 7, embed: 3, hidden: 4, layers: 2 };

  it("cell 'gru' and an absent cell give bit-identical results", () => {
    const rng = new Rng(43);
    const params = randomParams(base, rng, 0.7);
    const ids = randomIds(rng, 10, base.vocabSize);
    const targets = randomIds(rng, 10, base.vocabSize);
    const h0 = uniform(rng, 2 * 2 * base.hidden, 0.5);
    const a = lmLossAndGrads(base, params, ids, targets, 2, 5, h0, 'f32');
    const b = lmLossAndGrads({ ...base, cell: 'gru' }, params, ids, targets, 2, 5, h0, 'f32');
    expect(b).toEqual(a);
  });
});

/** A model with small random weights (PyTorch's U(−1/√H, 1/√H) scale), stored in f32. */
function model(shape: CharLmShape, seed: number): JsCharLm {
  const m = new JsCharLm(shape);
  const rng = new Rng(seed);
  for (const { name, shape: dims } of m.paramInfo()) {
    const n = dims.reduce((a, d) => a * d, 1);
    m.setParam(name, Float32Array.from(uniform(rng, n, 1 / Math.sqrt(shape.hidden))));
  }
  return m;
}

const OPT: OptimConfig = { lr: 0.02, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 1 };

describe.each(['lstm', 'rnn'] as const)('JsCharLm on the %s cell', (cell) => {
  const shape: CharLmShape = { vocabSize: 4, embed: 4, hidden: 8, layers: 2, cell };
  const W = stateWidth(cell);
  const batch = 2;
  const seq = 8;
  /** Batch `s` of two streams of the repeating text 0 1 2 3 0 1 …, continuing across batches. */
  const data = (s: number) => {
    const ids = new Uint32Array(batch * seq);
    const targets = new Uint32Array(batch * seq);
    for (let b = 0; b < batch; b++) {
      for (let t = 0; t < seq; t++) {
        ids[b * seq + t] = (b + s * seq + t) % 4;
        targets[b * seq + t] = (b + s * seq + t + 1) % 4;
      }
    }
    return { ids, targets };
  };

  it('keeps the cell in its shape, names its parameters after it and rejects unknown cells', () => {
    const m = new JsCharLm(shape);
    expect(m.shape).toEqual(shape);
    expect(m.paramInfo()).toEqual(charLmParamInfo(shape));
    expect(m.paramInfo()[1].name).toBe(`${cell}.weight_ih_l0`);
    expect(() => new JsCharLm({ ...shape, cell: 'tcn' as CellKind })).toThrow(ConfigError);
    // An absent cell stays absent (a GRU), so shapes from before cells existed compare equal.
    expect(new JsCharLm({ vocabSize: 4, embed: 4, hidden: 8, layers: 2 }).shape).toEqual({
      vocabSize: 4,
      embed: 4,
      hidden: 8,
      layers: 2,
    });
  });

  it('carries, takes and returns states of shape [L, B, stateWidth·H]', async () => {
    const m = model(shape, 7);
    const { ids, targets } = data(0);
    const n = shape.layers * batch * W * shape.hidden;
    await m.trainStep(ids, targets, batch, seq, { ...OPT, lr: 0 });
    const carry = m.getCarry();
    expect(carry?.batch).toBe(batch);
    expect(carry?.state.length).toBe(n);
    // The carry is the final state of the forward pass, c_T included for the LSTM.
    expect(Array.from(carry?.state ?? [])).toEqual(Array.from((await m.nll(ids, targets, batch, seq, null)).state));
    const lg = await m.lossAndGrads(data(1).ids, data(1).targets, batch, seq, carry?.state ?? null);
    expect(lg.dh0.length).toBe(n);
    expect(lg.dh0.some((v) => v !== 0)).toBe(true);
    expect((await m.trainStep(data(1).ids, data(1).targets, batch, seq, { ...OPT, lr: 0 })).loss).toBe(lg.loss);
    const step = m.step(null, Uint32Array.of(1, 2, 3));
    expect(step.state.length).toBe(shape.layers * 3 * W * shape.hidden);
    expect(step.logits.length).toBe(3 * shape.vocabSize);
    expect(() => m.setCarry({ batch, state: new Float32Array(shape.layers * batch * shape.hidden * (3 - W)) })).toThrow(
      ShapeError,
    );
    expect(() => m.step(new Float32Array(5), Uint32Array.of(1))).toThrow(ShapeError);
  });

  it('reduces the loss over 40 steps on a repeating sequence', async () => {
    const m = model(shape, 1);
    const losses: number[] = [];
    for (let s = 0; s < 40; s++) {
      const { ids, targets } = data(s);
      losses.push((await m.trainStep(ids, targets, batch, seq, OPT)).loss);
    }
    expect(losses[0]).toBeGreaterThan(Math.log(4) - 0.3);
    expect(losses[39]).toBeLessThan(0.25 * losses[0]);
  });
});
