/**
 * The native Real NVP (Rust, candle autograd through the fused couplings) against the pure-TypeScript
 * reference with identical parameters: log-density, loss, every gradient, encode/decode, and training.
 */
import { describe, expect, it } from 'vitest';
import { type FlowShape, flowParamInfo } from '../src/backend/flow-types.js';
import { JsRealNvp } from '../src/backend/js/realnvp.js';
import { NativeRealNvp } from '../src/backend/native-flow.js';
import { Rng } from '../src/util/rng.js';
import { expectCloseNonZero } from './helpers/numeric.js';

function pair(shape: FlowShape, seed: number): { native: NativeRealNvp; js: JsRealNvp } {
  const rng = new Rng(seed);
  const native = new NativeRealNvp(shape);
  const js = new JsRealNvp(shape);
  for (const p of flowParamInfo(shape)) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    // Every parameter non-zero (final layers too), so every path of the gradient is exercised.
    const data = Float32Array.from({ length: n }, () => rng.range(-0.5, 0.5));
    native.setParam(p.name, data);
    js.setParam(p.name, data);
  }
  return { native, js };
}

describe.each([[{ dim: 2, couplings: 3, hidden: 8, depth: 2 }], [{ dim: 5, couplings: 4, hidden: 16, depth: 1 }]])(
  'Real NVP %o: native matches the TS reference',
  (shape) => {
    const batch = 33;
    const rng = new Rng(shape.dim * 17);
    const x = Float32Array.from({ length: batch * shape.dim }, () => rng.normal());

    it('log p, encode and decode agree within 1e-5', async () => {
      const { native, js } = pair(shape, 1);
      expectCloseNonZero('logProb', await native.logProb(x, batch), await js.logProb(x, batch), 1e-5);
      const a = native.encode(x, batch);
      const b = js.encode(x, batch);
      expectCloseNonZero('z', a.z, b.z, 1e-5);
      expectCloseNonZero('logdet', a.logdet, b.logdet, 1e-5);
      const back = native.decode(a.z, batch);
      expectCloseNonZero('decode', back.x, js.decode(b.z, batch).x, 1e-5);
      expectCloseNonZero('round trip', back.x, x, 1e-4);
    });

    it('loss and every gradient agree (1e-5 loss, 1e-4 gradients relative to each tensor)', async () => {
      const { native, js } = pair(shape, 2);
      const a = await native.lossAndGrads(x, batch);
      const b = await js.lossAndGrads(x, batch);
      expect(Math.abs(a.loss - b.loss)).toBeLessThanOrEqual(1e-5 * Math.abs(b.loss));
      for (const p of flowParamInfo(shape)) expectCloseNonZero(p.name, a.grads[p.name], b.grads[p.name], 1e-4, 1e-12);
    });

    it('one AdamW step: the decoupled weight decay moves every parameter by exactly −lr·wd·θ', async () => {
      // Adam's first step is lr·g/(|g| + eps) whatever the weight decay, so the difference between a
      // run with decay and one without is the decay term alone: θ(1 − lr·wd) − θ = −lr·wd·θ. With
      // wd = 1 that is 1% of θ, 10⁵ times the float32 spacing of θ; each side is rounded once to f32
      // (±2⁻²⁴|θ'|), so the difference holds to 4·2⁻²⁴ of the largest |θ| in the tensor.
      const base = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, clip: 1 };
      const wd = 1;
      for (const kind of ['native', 'js'] as const) {
        const plain = pair(shape, 4)[kind];
        const decayed = pair(shape, 4)[kind];
        const theta0: Record<string, Float32Array> = {};
        for (const p of flowParamInfo(shape)) theta0[p.name] = plain.getParam(p.name);
        await plain.trainStep(x, batch, { ...base, weightDecay: 0 });
        await decayed.trainStep(x, batch, { ...base, weightDecay: wd });
        for (const p of flowParamInfo(shape)) {
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
      const { native, js } = pair(shape, 3);
      // wd = 1: over five steps the decay moves θ by ~5% (up to 0.025 here), far above the tolerance.
      const opt = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1, clip: 1 };
      for (let step = 0; step < 5; step++) {
        const a = await native.trainStep(x, batch, opt);
        const b = await js.trainStep(x, batch, opt);
        expect(Math.abs(a.loss - b.loss), `loss at step ${step}`).toBeLessThanOrEqual(1e-5 * Math.abs(b.loss));
      }
      // Both sides compute the update in doubles from f32 moments and round θ once per step; measured
      // differences are a few f32 spacings (≤ 2.1e-7 on |θ| ≤ 0.55). 1e-5 leaves room for the moments'
      // rounding order while the decay (up to 0.025) and any other change to the update are ~10³× larger.
      for (const p of flowParamInfo(shape)) {
        expectCloseNonZero(p.name, native.getParam(p.name), js.getParam(p.name), 1e-5);
      }
    });
  },
);
