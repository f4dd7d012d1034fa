/**
 * The vector Real NVP preset on the native FlowNet (Rust, candle autograd through the fused couplings)
 * against the TypeScript FlowNet backend with identical parameters: log-density, loss, every gradient,
 * encode/decode, and training; and the TypeScript backend's seeded initialisation against the native one.
 */
import { describe, expect, it } from 'vitest';
import type { FlowNetSpec } from '../src/backend/flownet-types.js';
import { flowNetTensorInfo } from '../src/backend/js/flownet.js';
import { JsFlowNetBackend } from '../src/backend/js/flownet-backend.js';
import { NativeFlowNet } from '../src/backend/native-flownet.js';
import { ConfigError } from '../src/errors.js';
import { glowSpec, type RealNvpVectorConfig, realNvpVectorSpec } from '../src/models/presets.js';
import { Rng } from '../src/util/rng.js';
import { expectCloseNonZero } from './helpers/numeric.js';

function pair(spec: FlowNetSpec, seed: number): { native: NativeFlowNet; js: JsFlowNetBackend } {
  const rng = new Rng(seed);
  const native = new NativeFlowNet(spec, 0);
  const js = new JsFlowNetBackend(spec, 0);
  for (const p of flowNetTensorInfo(spec).params) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    // Every parameter non-zero (final layers too), so every path of the gradient is exercised.
    const data = Float32Array.from({ length: n }, () => rng.range(-0.5, 0.5));
    native.setParam(p.name, data);
    js.setParam(p.name, data);
  }
  return { native, js };
}

describe.each([[{ dim: 2, couplings: 3, hidden: 8, depth: 2 }], [{ dim: 5, couplings: 4, hidden: 16, depth: 1 }]] as [
  Required<Omit<RealNvpVectorConfig, 'context'>>,
][])('Real NVP %o: native matches the TS reference', (cfg) => {
  const spec = realNvpVectorSpec(cfg);
  const params = flowNetTensorInfo(spec).params;
  const batch = 33;
  const rng = new Rng(cfg.dim * 17);
  const x = Float32Array.from({ length: batch * cfg.dim }, () => rng.normal());

  it('log p, encode and decode agree within 1e-5', async () => {
    const { native, js } = pair(spec, 1);
    expectCloseNonZero('logProb', await native.logProb(x, null, batch), await js.logProb(x, null, batch), 1e-5);
    const a = native.encode(x, null, batch);
    const b = js.encode(x, null, batch);
    expectCloseNonZero('z', a.z, b.z, 1e-5);
    expectCloseNonZero('logdet', a.logdet, b.logdet, 1e-5);
    const back = native.decode(a.z, null, batch);
    expectCloseNonZero('decode', back.x, js.decode(b.z, null, batch).x, 1e-5);
    expectCloseNonZero('round trip', back.x, x, 1e-4);
  });

  it('loss and every gradient agree (1e-5 loss, 1e-4 gradients relative to each tensor)', async () => {
    const { native, js } = pair(spec, 2);
    const a = await native.lossAndGrads(x, null, batch);
    const b = await js.lossAndGrads(x, null, batch);
    expect(Math.abs(a.loss - b.loss)).toBeLessThanOrEqual(1e-5 * Math.abs(b.loss));
    for (const p of params) expectCloseNonZero(p.name, a.grads[p.name], b.grads[p.name], 1e-4, 1e-12);
  });

  it('one AdamW step: the decoupled weight decay moves every parameter by exactly −lr·wd·θ', async () => {
    // Adam's first step is lr·g/(|g| + eps) whatever the weight decay, so the difference between a
    // run with decay and one without is the decay term alone: θ(1 − lr·wd) − θ = −lr·wd·θ. With
    // wd = 1 that is 1% of θ, 10⁵ times the float32 spacing of θ; each side is rounded once to f32
    // (±2⁻²⁴|θ'|), so the difference holds to 4·2⁻²⁴ of the largest |θ| in the tensor.
    const base = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, clip: 1 };
    const wd = 1;
    for (const kind of ['native', 'js'] as const) {
      const plain = pair(spec, 4)[kind];
      const decayed = pair(spec, 4)[kind];
      const theta0: Record<string, Float32Array> = {};
      for (const p of params) theta0[p.name] = plain.getParam(p.name);
      await plain.trainStep(x, null, batch, { ...base, weightDecay: 0 });
      await decayed.trainStep(x, null, batch, { ...base, weightDecay: wd });
      for (const p of params) {
        const t0 = theta0[p.name];
        const a = plain.getParam(p.name);
        const b = decayed.getParam(p.name);
        let err = 0;
        let big = 0;
        let decay = 0;
        for (let i = 0; i < t0.length; i++) {
          const want = -base.lr * wd * t0[i];
          err = Math.max(err, Math.abs(b[i] - a[i] - want));
          big = Math.max(big, Math.abs(a[i]), Math.abs(b[i]));
          decay = Math.max(decay, Math.abs(want));
        }
        expect(decay, `${kind} ${p.name}: no decay expected (all zeros)`).toBeGreaterThan(0);
        expect(err, `${kind} ${p.name}: decay term off (largest decay ${decay})`).toBeLessThanOrEqual(
          4 * 2 ** -24 * big,
        );
      }
    }
  });

  it('five AdamW steps with strong weight decay give the same losses and parameters', async () => {
    const { native, js } = pair(spec, 3);
    // wd = 1: over five steps the decay moves θ by ~5% (up to 0.025 here), far above the tolerance.
    const opt = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1, clip: 1 };
    for (let step = 0; step < 5; step++) {
      const a = await native.trainStep(x, null, batch, opt);
      const b = await js.trainStep(x, null, batch, opt);
      expect(Math.abs(a.loss - b.loss), `loss at step ${step}`).toBeLessThanOrEqual(1e-5 * Math.abs(b.loss));
    }
    // Both sides compute the update in doubles from f32 moments and round θ once per step; measured
    // differences are a few f32 spacings (≤ 2.1e-7 on |θ| ≤ 0.55). 1e-5 leaves room for the moments'
    // rounding order while the decay (up to 0.025) and any other change to the update are ~10³× larger.
    for (const p of params) {
      expectCloseNonZero(p.name, native.getParam(p.name), js.getParam(p.name), 1e-5);
    }
  });
});

describe('the TypeScript FlowNet backend beside the native one', () => {
  /** Every layer kind the TypeScript backend trains, conditional, on a logistic base. */
  const mixed: FlowNetSpec = {
    shape: [2, 2, 2],
    context: 3,
    base: 'logistic',
    layers: [
      { type: 'coupling', mask: 'random', parity: 1, affine: true, net: { type: 'mlp', hidden: 6, depth: 2 } },
      { type: 'reverse' },
      { type: 'coupling', mask: 'checkerboard', parity: 0, affine: false, net: { type: 'mlp', hidden: 5, depth: 1 } },
      { type: 'scale' },
      { type: 'coupling', mask: 'channel', parity: 1, affine: true, net: { type: 'mlp', hidden: 4, depth: 1 } },
    ],
  };

  it('starts from the native initialisation: the same values for the same seed', () => {
    for (const [spec, seed] of [
      [realNvpVectorSpec({ dim: 3, couplings: 3, hidden: 7, depth: 2 }), 5],
      [mixed, 11],
    ] as const) {
      const native = new NativeFlowNet(spec, seed);
      const js = new JsFlowNetBackend(spec, seed);
      const { params, buffers } = flowNetTensorInfo(spec);
      expect(js.paramInfo()).toEqual(params);
      expect(js.bufferInfo()).toEqual(buffers);
      let nonZero = 0;
      for (const p of params) {
        const want = native.getParam(p.name);
        expect(js.getParam(p.name), p.name).toEqual(want);
        nonZero += want.some((v) => v !== 0 && v !== 1) ? 1 : 0;
      }
      expect(nonZero).toBeGreaterThan(params.length / 3);
      for (const b of buffers) expect(js.getBuffer(b.name), b.name).toEqual(native.getBuffer(b.name));
    }
  });

  it('agrees on log p, loss and gradients for every layer it trains, with a context', async () => {
    const { native, js } = pair(mixed, 6);
    // A random mask of the native initialisation, copied over (the pair sets parameters only).
    js.setBuffer('layers.0.mask', native.getBuffer('layers.0.mask'));
    const batch = 9;
    const rng = new Rng(3);
    const x = Float32Array.from({ length: batch * 8 }, () => rng.normal());
    const ctx = Float32Array.from({ length: batch * 3 }, (_, i) => ((i * 7) % 5) / 4 - 0.5);
    expectCloseNonZero('logProb', await native.logProb(x, ctx, batch), await js.logProb(x, ctx, batch), 1e-5);
    const a = await native.lossAndGrads(x, ctx, batch);
    const b = await js.lossAndGrads(x, ctx, batch);
    expect(Math.abs(a.loss - b.loss)).toBeLessThanOrEqual(1e-5 * Math.abs(b.loss));
    for (const p of flowNetTensorInfo(mixed).params)
      expectCloseNonZero(p.name, a.grads[p.name], b.grads[p.name], 1e-4, 1e-12);
  });

  it('refuses, before allocating, a spec with a layer it has no gradient for', () => {
    expect(() => new JsFlowNetBackend(glowSpec({ shape: [1, 4, 4], levels: 1, steps: 1, channels: 2 }), 0)).toThrow(
      /not layer 0 \(squeeze\): use the native backend/,
    );
    expect(() => new JsFlowNetBackend(glowSpec({ shape: [1, 4, 4], levels: 1, steps: 1, channels: 2 }), 0)).toThrow(
      ConfigError,
    );
  });
});
