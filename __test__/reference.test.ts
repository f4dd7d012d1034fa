/**
 * The pure-TypeScript reference backend: its hand-written backward passes against central finite
 * differences in float64, the GRU cell against a direct hand computation, and the training step.
 */
import { describe, expect, it } from 'vitest';
import { globalNorm } from '../src/backend/js/adamw.js';
import { type GruDims, type GruWeights, gruBackward, gruForward } from '../src/backend/js/gru.js';
import { JsCharLm } from '../src/backend/js/index.js';
import { lmForward, lmLossAndGrads, lmNll, lmStep, type Params } from '../src/backend/js/lm.js';
import { type CharLmShape, charLmParamInfo, type OptimConfig } from '../src/backend/types.js';
import { ConfigError, DataError, DivergenceError, ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { expectClose, numericGrad, uniform } from './helpers/numeric.js';

describe('gru kernel', () => {
  it('matches a direct hand computation of one step (B=1, I=2, H=2)', () => {
    // Rows of W are gates (r, z, n) × units; each gate gets distinct values so a swapped order shows.
    const wIh = Float64Array.from([0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, 0.8, -0.9, 1.0, 0.2, -0.3]);
    const wHh = Float64Array.from([0.5, -0.1, 0.2, 0.3, 0.4, -0.6, -0.2, 0.1, 0.9, -0.4, 0.3, 0.7]);
    const bIh = Float64Array.from([0.01, -0.02, 0.03, -0.04, 0.05, -0.06]);
    const bHh = Float64Array.from([-0.1, 0.2, -0.3, 0.4, 0.6, -0.5]);
    const x = Float64Array.from([0.7, -1.3]);
    const h = Float64Array.from([0.25, -0.6]);
    const { out, saved } = gruForward(
      { batch: 1, seq: 1, input: 2, hidden: 2 },
      x,
      h,
      { wIh, wHh, bIh, bHh },
      {
        save: true,
      },
    );

    const sig = (a: number) => 1 / (1 + Math.exp(-a));
    // Row k of W_ih / W_hh dotted with x / h, written out.
    const ix = (k: number) => wIh[2 * k] * x[0] + wIh[2 * k + 1] * x[1] + bIh[k];
    const hh = (k: number) => wHh[2 * k] * h[0] + wHh[2 * k + 1] * h[1] + bHh[k];
    const r0 = sig(ix(0) + hh(0));
    const r1 = sig(ix(1) + hh(1));
    const z0 = sig(ix(2) + hh(2));
    const z1 = sig(ix(3) + hh(3));
    // b_hn sits inside the reset product (PyTorch), not next to b_in.
    const n0 = Math.tanh(ix(4) + r0 * hh(4));
    const n1 = Math.tanh(ix(5) + r1 * hh(5));
    const want = [(1 - z0) * n0 + z0 * h[0], (1 - z1) * n1 + z1 * h[1]];
    expect(out).toBeInstanceOf(Float64Array);
    expect(out[0]).toBeCloseTo(want[0], 14);
    expect(out[1]).toBeCloseTo(want[1], 14);
    const wantSaved = [r0, r1, z0, z1, n0, n1, hh(4), hh(5)];
    expect(saved?.length).toBe(8);
    for (let i = 0; i < 8; i++) expect(saved?.[i], `saved[${i}]`).toBeCloseTo(wantSaved[i], 14);
    // The same step computed independently with NumPy, so an error shared by the kernel and the lines above shows.
    expect(out[0]).toBeCloseTo(-0.5369220651076, 12);
    expect(out[1]).toBeCloseTo(-0.1968768186042, 12);
  });

  it('backward matches central finite differences in float64 for dx, dh0 and every weight', () => {
    const rng = new Rng(7);
    const dims: GruDims = { batch: 2, seq: 5, input: 3, hidden: 4 };
    const { batch: B, seq: T, input: I, hidden: H } = dims;
    const x = uniform(rng, B * T * I, 1);
    const h0 = uniform(rng, B * H, 0.5);
    const w = {
      wIh: uniform(rng, 3 * H * I, 0.6),
      wHh: uniform(rng, 3 * H * H, 0.6),
      bIh: uniform(rng, 3 * H, 0.6),
      bHh: uniform(rng, 3 * H, 0.6),
    } satisfies GruWeights;
    // L = Σ c ⊙ out, so dL/d(out) = c.
    const c = uniform(rng, B * T * H, 1);
    const loss = () => {
      const { out } = gruForward(dims, x, h0, w);
      let s = 0;
      for (let i = 0; i < out.length; i++) s += c[i] * out[i];
      return s;
    };
    const { out, saved } = gruForward(dims, x, h0, w, { save: true });
    if (saved === null) throw new Error('saved activations missing');
    const g = gruBackward(dims, x, h0, w, out, saved, c);
    expect(g.dx).toBeInstanceOf(Float64Array);
    expectClose('dx', g.dx, numericGrad(x, loss), 1e-6);
    expectClose('dh0', g.dh0, numericGrad(h0, loss), 1e-6);
    expectClose('dWIh', g.dWIh, numericGrad(w.wIh, loss), 1e-6);
    expectClose('dWHh', g.dWHh, numericGrad(w.wHh, loss), 1e-6);
    expectClose('dBIh', g.dBIh, numericGrad(w.bIh, loss), 1e-6);
    expectClose('dBHh', g.dBHh, numericGrad(w.bHh, loss), 1e-6);
  });

  it('rejects wrong sizes with ShapeError', () => {
    const dims: GruDims = { batch: 1, seq: 2, input: 3, hidden: 2 };
    const w: GruWeights = {
      wIh: new Float32Array(18),
      wHh: new Float32Array(12),
      bIh: new Float32Array(6),
      bHh: new Float32Array(6),
    };
    expect(() => gruForward(dims, new Float32Array(5), new Float32Array(2), w)).toThrow(ShapeError);
    expect(() =>
      gruForward(dims, new Float32Array(6), new Float32Array(2), { ...w, wHh: new Float32Array(4) }),
    ).toThrow(/wHh holds 4 values/);
    const { out } = gruForward(dims, new Float32Array(6), new Float32Array(2), w);
    expect(out).toBeInstanceOf(Float32Array);
    expect(() => gruBackward(dims, new Float32Array(6), new Float32Array(2), w, out, new Float32Array(3), out)).toThrow(
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

describe('language model', () => {
  const shape: CharLmShape = { vocabSize: 7, embed: 3, hidden: 4, layers: 2 };
  const batch = 2;
  const seq = 4;

  it('lmLossAndGrads matches central finite differences in float64 for every parameter and h0', () => {
    const rng = new Rng(11);
    const params = randomParams(shape, rng, 0.7);
    const ids = randomIds(rng, batch * seq, shape.vocabSize);
    const targets = randomIds(rng, batch * seq, shape.vocabSize);
    const h0 = uniform(rng, shape.layers * batch * shape.hidden, 0.5);
    const meanLoss = () => lmNll(shape, params, ids, targets, batch, seq, h0, 'f64').nll / (batch * seq);

    const got = lmLossAndGrads(shape, params, ids, targets, batch, seq, h0, 'f64');
    expect(got.loss).toBeCloseTo(meanLoss(), 12);
    expect(Object.keys(got.grads)).toEqual(charLmParamInfo(shape).map((p) => p.name));
    for (const name of Object.keys(params)) {
      expect(got.grads[name]).toBeInstanceOf(Float64Array);
      expectClose(name, got.grads[name], numericGrad(params[name], meanLoss), 1e-6);
    }
    expectClose('dh0', got.dh0, numericGrad(h0, meanLoss), 1e-6);
    expect(Array.from(got.state)).toEqual(Array.from(lmNll(shape, params, ids, targets, batch, seq, h0, 'f64').state));
  });

  it('lmStep fed one token at a time reproduces lmForward over the sequence', () => {
    const rng = new Rng(3);
    const params: Params = randomParams(shape, rng, 0.7);
    const ids = randomIds(rng, batch * seq, shape.vocabSize);
    const full = lmForward(shape, params, ids, batch, seq, null, 'f64');
    let state: Float64Array | null = null;
    for (let t = 0; t < seq; t++) {
      const tokens = Uint32Array.from({ length: batch }, (_, b) => ids[b * seq + t]);
      const next: { state: Float64Array; logits: Float64Array } = lmStep(shape, params, state, tokens, 'f64');
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
    expectClose('final state', state ?? new Float64Array(0), full.state, 1e-12);
  });

  it('computes the softmax cross-entropy stably for logits of ±1000', () => {
    const params = randomParams(shape, new Rng(2), 0.5);
    // A zero head makes every row's logits the bias: [1000, −1000, 0, …].
    params['head.weight'].fill(0);
    params['head.bias'].fill(0);
    params['head.bias'][0] = 1000;
    params['head.bias'][1] = -1000;
    const ids = new Uint32Array(batch * seq);
    const targets = Uint32Array.from({ length: batch * seq }, (_, i) => i % 3);
    // −log softmax is 0, 2000 and 1000 for targets 0, 1, 2 (the other terms vanish below 1e−400).
    const want = [0, 2000, 1000].reduce((s, v, k) => s + v * targets.filter((y) => y === k).length, 0);
    expect(lmNll(shape, params, ids, targets, batch, seq, null, 'f64').nll).toBe(want);
    const { loss, grads } = lmLossAndGrads(shape, params, ids, targets, batch, seq, null, 'f64');
    expect(loss).toBe(want / (batch * seq));
    // d loss / d bias = mean(softmax − onehot) = mean([1, 0, …] − onehot(y)).
    const dBias = new Float64Array(shape.vocabSize);
    for (const y of targets) {
      dBias[0] += 1 / (batch * seq);
      dBias[y] -= 1 / (batch * seq);
    }
    expectClose('head.bias', grads['head.bias'], dBias, 1e-12);
  });

  it('rejects ids outside the vocabulary and states of the wrong size', () => {
    const params = randomParams(shape, new Rng(1), 0.5);
    const ok = new Uint32Array(batch * seq);
    const bad = ok.slice();
    bad[5] = shape.vocabSize;
    expect(() => lmNll(shape, params, bad, ok, batch, seq, null, 'f64')).toThrow(/id 7 at position 5/);
    expect(() => lmLossAndGrads(shape, params, ok, bad, batch, seq, null, 'f64')).toThrow(ShapeError);
    expect(() => lmNll(shape, params, ok, ok, batch, seq, new Float64Array(3), 'f64')).toThrow(ShapeError);
    expect(() => lmNll(shape, params, ok.subarray(1), ok, batch, seq, null, 'f64')).toThrow(ShapeError);
    const { 'head.bias': _, ...missing } = params;
    expect(() => lmNll(shape, missing, ok, ok, batch, seq, null, 'f64')).toThrow(/head.bias is missing/);
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

describe('JsCharLm', () => {
  const shape: CharLmShape = { vocabSize: 4, embed: 4, hidden: 8, layers: 1 };
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
  const snapshot = (m: JsCharLm) => ({
    params: m.paramInfo().map((p) => m.getParam(p.name)),
    avg: m.paramInfo().map((p) => m.getOptimState('exp_avg', p.name)),
    avgSq: m.paramInfo().map((p) => m.getOptimState('exp_avg_sq', p.name)),
    step: m.getOptimStep(),
    carry: m.getCarry(),
  });

  it('validates its shape and parameter writes', () => {
    expect(() => new JsCharLm({ ...shape, vocabSize: 1 })).toThrow(ConfigError);
    expect(() => new JsCharLm({ ...shape, hidden: 0 })).toThrow(ConfigError);
    expect(() => new JsCharLm({ ...shape, layers: 1.5 })).toThrow(ConfigError);
    const m = new JsCharLm(shape);
    expect(() => m.setParam('head.bias', new Float32Array(3))).toThrow(ShapeError);
    expect(() => m.setParam('head.bias', Float32Array.from([0, Number.NaN, 0, 0]))).toThrow(DataError);
    expect(() => m.getParam('constructor')).toThrow(ConfigError);
    const copy = m.getParam('head.bias');
    copy[0] = 5;
    expect(m.getParam('head.bias')[0]).toBe(0);
  });

  it('one trainStep is lossAndGrads followed by clipped AdamW (PyTorch order)', async () => {
    const m = model(shape, 5);
    const { ids, targets } = data(0);
    const before = snapshot(m);
    const lg = await m.lossAndGrads(ids, targets, batch, seq, null);
    const opt: OptimConfig = { lr: 0.01, beta1: 0.8, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, clip: 0.05 };
    const stats = await m.trainStep(ids, targets, batch, seq, opt);
    expect(stats.loss).toBe(lg.loss);
    const norm = globalNorm(lg.grads);
    expect(stats.gradNorm).toBe(norm);
    expect(norm).toBeGreaterThan(opt.clip);
    const scale = opt.clip / (norm + 1e-6);
    m.paramInfo().forEach(({ name }, k) => {
      const g = lg.grads[name];
      const p = before.params[k];
      const want = new Float64Array(p.length);
      for (let i = 0; i < p.length; i++) {
        const gs = g[i] * scale;
        // First step: m̂ = g, v̂ = g² after bias correction.
        const mHat = ((1 - opt.beta1) * gs) / (1 - opt.beta1);
        const vHat = ((1 - opt.beta2) * gs * gs) / (1 - opt.beta2);
        want[i] = p[i] * (1 - opt.lr * opt.weightDecay) - (opt.lr * mHat) / (Math.sqrt(vHat) + opt.eps);
      }
      expectClose(name, m.getParam(name), want, 1e-6);
      expectClose(
        `${name} exp_avg`,
        m.getOptimState('exp_avg', name),
        g.map((v) => (1 - opt.beta1) * v * scale),
        1e-6,
      );
      expectClose(
        `${name} exp_avg_sq`,
        m.getOptimState('exp_avg_sq', name),
        g.map((v) => (1 - opt.beta2) * (v * scale) ** 2),
        1e-6,
      );
    });
    expect(m.getOptimStep()).toBe(1);
    const carry = m.getCarry();
    expect(carry?.batch).toBe(batch);
    // The new carry is the final state of the forward pass, made with the parameters before the update.
    const fresh = model(shape, 5);
    expect(Array.from(carry?.state ?? [])).toEqual(Array.from((await fresh.nll(ids, targets, batch, seq, null)).state));
  });

  it('continues from the carry when the batch matches and from zeros when it does not', async () => {
    const m = model(shape, 9);
    await m.trainStep(data(0).ids, data(0).targets, batch, seq, { ...OPT, lr: 0 });
    const carry = m.getCarry();
    if (carry === null) throw new Error('no carry after a training step');
    const { ids, targets } = data(1);
    const fromCarry = await m.lossAndGrads(ids, targets, batch, seq, carry.state);
    expect((await m.trainStep(ids, targets, batch, seq, { ...OPT, lr: 0 })).loss).toBe(fromCarry.loss);
    const one = { ids: ids.subarray(0, seq), targets: targets.subarray(0, seq) };
    const fromZeros = await m.lossAndGrads(one.ids, one.targets, 1, seq, null);
    expect((await m.trainStep(one.ids, one.targets, 1, seq, { ...OPT, lr: 0 })).loss).toBe(fromZeros.loss);
    expect(m.getCarry()?.batch).toBe(1);
  });

  it('reduces the loss over 50 steps on a repeating sequence', async () => {
    const m = model(shape, 1);
    const losses: number[] = [];
    for (let s = 0; s < 50; s++) {
      const { ids, targets } = data(s);
      losses.push((await m.trainStep(ids, targets, batch, seq, OPT)).loss);
    }
    expect(losses[0]).toBeGreaterThan(Math.log(4) - 0.3);
    expect(losses[49]).toBeLessThan(0.25 * losses[0]);
  });

  it('rejects a NaN learning rate with ConfigError and changes nothing', async () => {
    const m = model(shape, 2);
    const before = snapshot(m);
    const { ids, targets } = data(0);
    await expect(m.trainStep(ids, targets, batch, seq, { ...OPT, lr: Number.NaN })).rejects.toThrow(ConfigError);
    await expect(m.trainStep(ids, targets, batch, seq, { ...OPT, lr: -1 })).rejects.toThrow(ConfigError);
    expect(snapshot(m)).toEqual(before);
  });

  it('rejects a step whose loss is not finite with DivergenceError and changes nothing', async () => {
    const m = model(shape, 4);
    // A finite learning rate beyond f32's range sends the f32 parameters to ±Infinity; the next forward
    // pass then yields a NaN loss.
    await m.trainStep(data(0).ids, data(0).targets, batch, seq, { ...OPT, lr: 1e39, clip: 0 });
    expect(m.getParam('head.bias').some((v) => !Number.isFinite(v))).toBe(true);
    const before = snapshot(m);
    const { ids, targets } = data(1);
    await expect(m.trainStep(ids, targets, batch, seq, OPT)).rejects.toThrow(DivergenceError);
    expect(snapshot(m)).toEqual(before);
    expect(m.getOptimStep()).toBe(1);
  });
});
