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

    it('five AdamW steps give the same losses and parameters', async () => {
      const { native, js } = pair(shape, 3);
      const opt = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, clip: 1 };
      for (let step = 0; step < 5; step++) {
        const a = await native.trainStep(x, batch, opt);
        const b = await js.trainStep(x, batch, opt);
        expect(Math.abs(a.loss - b.loss), `loss at step ${step}`).toBeLessThanOrEqual(1e-4 * Math.abs(b.loss));
      }
      // Adam moves each element by about ±lr whatever its gradient, so compare against lr-sized changes.
      for (const p of flowParamInfo(shape)) {
        expectCloseNonZero(p.name, native.getParam(p.name), js.getParam(p.name), 1e-3);
      }
    });
  },
);
