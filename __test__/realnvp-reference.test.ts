/**
 * The vector Real NVP preset on the TypeScript FlowNet backend: the hand-written gradient of
 * `flownet-grad.ts` against central differences of the float64 reference's log-density (every
 * parameter; also for the other layers that backend trains), inversion and log-determinants, training,
 * and its checks.
 */
import { describe, expect, it } from 'vitest';
import type { FlowNetSpec } from '../src/backend/flownet-types.js';
import { JsFlowNet } from '../src/backend/js/flownet.js';
import { JsFlowNetBackend } from '../src/backend/js/flownet-backend.js';
import { flowNetLossAndGrads } from '../src/backend/js/flownet-grad.js';
import { DivergenceError, ShapeError } from '../src/errors.js';
import { realNvpVectorSpec } from '../src/models/presets.js';
import { Rng } from '../src/util/rng.js';
import { logAbsDet } from './helpers/numeric.js';

/** A float64 reference of `spec` with every parameter random (scales in [0.5, 1.5]). */
function randomNet(spec: FlowNetSpec, seed: number): JsFlowNet {
  const rng = new Rng(seed);
  const net = new JsFlowNet(spec);
  for (const { name, shape } of net.paramInfo()) {
    const n = shape.reduce((a, b) => a * b, 1);
    net.setTensor(
      name,
      Float64Array.from({ length: n }, () => (name.endsWith('.scale') ? rng.range(0.5, 1.5) : rng.range(-0.8, 0.8))),
    );
  }
  return net;
}

function randomX(n: number, d: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  return Float64Array.from({ length: n * d }, () => rng.normal());
}

/** Mean NLL of the reference's own log-density: what the gradient must be the gradient of. */
function meanNll(net: JsFlowNet, x: Float64Array, batch: number, ctx?: Float64Array): number {
  return -net.logProb(x, batch, ctx).reduce((a, b) => a + b, 0) / batch;
}

/** Checks every element of every parameter's gradient against central differences of {@link meanNll}. */
function checkGradients(net: JsFlowNet, x: Float64Array, batch: number, ctx?: Float64Array): void {
  const { loss, grads } = flowNetLossAndGrads(net, x, batch, ctx);
  expect(Math.abs(loss - meanNll(net, x, batch, ctx))).toBeLessThan(1e-12 * (1 + Math.abs(loss)));
  const h = 1e-6;
  let checked = 0;
  for (const { name } of net.paramInfo()) {
    const p = net.getTensor(name);
    for (let i = 0; i < p.length; i++) {
      const orig = p[i];
      p[i] = orig + h;
      net.setTensor(name, p);
      const lp = meanNll(net, x, batch, ctx);
      p[i] = orig - h;
      net.setTensor(name, p);
      const lm = meanNll(net, x, batch, ctx);
      p[i] = orig;
      net.setTensor(name, p);
      const fd = (lp - lm) / (2 * h);
      expect(Math.abs(grads[name][i] - fd), `${name}[${i}]`).toBeLessThan(1e-6 + 1e-5 * Math.abs(fd));
      checked++;
    }
    // Every parameter tensor gets a non-trivial gradient somewhere.
    expect(
      grads[name].some((g) => g !== 0),
      name,
    ).toBe(true);
  }
  expect(checked).toBe(net.paramInfo().reduce((a, p) => a + p.shape.reduce((u, v) => u * v, 1), 0));
}

describe.each([2, 3])('vector Real NVP on the TypeScript FlowNet, D=%i', (dim) => {
  const spec = realNvpVectorSpec({ dim, couplings: 2, hidden: 4, depth: 2 });
  const net = randomNet(spec, 7 + dim);
  const batch = 5;
  const x = randomX(batch, dim, 3);

  it('gradients match central finite differences for every parameter', () => {
    checkGradients(net, x, batch);
  });

  it('decode inverts encode and the log-dets are opposite', () => {
    const { z, logdet } = net.forward(x, batch);
    const back = net.inverse(z, batch);
    for (let i = 0; i < x.length; i++) expect(back.x[i]).toBeCloseTo(x[i], 10);
    for (let n = 0; n < batch; n++) expect(back.logdet[n]).toBeCloseTo(-logdet[n], 10);
  });

  it('the total log-det equals log|det J| by finite differences', () => {
    const { logdet } = net.forward(x, batch);
    const h = 1e-6;
    for (let n = 0; n < batch; n++) {
      const x0 = x.slice(n * dim, (n + 1) * dim);
      const J: number[][] = Array.from({ length: dim }, () => new Array(dim).fill(0));
      for (let c = 0; c < dim; c++) {
        const xp = x0.slice();
        const xm = x0.slice();
        xp[c] += h;
        xm[c] -= h;
        const zp = net.forward(xp, 1).z;
        const zm = net.forward(xm, 1).z;
        for (let r = 0; r < dim; r++) J[r][c] = (zp[r] - zm[r]) / (2 * h);
      }
      expect(logAbsDet(Float64Array.from(J.flat()), J.length)).toBeCloseTo(logdet[n], 6);
    }
  });
});

describe('the gradient of the other layers the TypeScript backend trains', () => {
  it('additive and affine couplings on every mask, reverse and scale, with a context, on a logistic base', () => {
    const mlp = (hidden: number, depth: number) => ({ type: 'mlp' as const, hidden, depth });
    const spec: FlowNetSpec = {
      shape: [2, 2, 2],
      context: 2,
      base: 'logistic',
      layers: [
        { type: 'coupling', mask: 'random', parity: 1, affine: false, net: mlp(4, 1) },
        { type: 'coupling', mask: 'checkerboard', parity: 0, affine: true, net: mlp(3, 2) },
        { type: 'reverse' },
        { type: 'coupling', mask: 'channel', parity: 1, affine: true, net: mlp(3, 1) },
        { type: 'scale' },
        { type: 'coupling', mask: 'halves', parity: 0, affine: false, net: mlp(3, 1) },
      ],
    };
    const batch = 4;
    const ctx = Float64Array.from({ length: batch * 2 }, (_, i) => ((i * 5) % 3) - 1);
    checkGradients(randomNet(spec, 21), randomX(batch, 8, 4), batch, ctx);
  });
});

describe('JsFlowNetBackend of the vector Real NVP', () => {
  const spec = realNvpVectorSpec({ dim: 2, couplings: 4, hidden: 16, depth: 2 });
  const opt = { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 1 };

  function init(m: JsFlowNetBackend, seed: number): void {
    const rng = new Rng(seed);
    for (const { name, shape: dims } of m.paramInfo()) {
      const n = dims.reduce((a, b) => a * b, 1);
      const fanIn = dims.length === 2 ? dims[1] : 16;
      const b = 1 / Math.sqrt(fanIn);
      m.setParam(
        name,
        Float32Array.from({ length: n }, () => (name.endsWith('scale') ? 1 : rng.range(-b, b))),
      );
    }
  }

  it('trainStep lowers the loss on correlated 2-D data', async () => {
    const m = new JsFlowNetBackend(spec, 0);
    init(m, 1);
    const rng = new Rng(5);
    const n = 256;
    const x = new Float32Array(n * 2);
    for (let i = 0; i < n; i++) {
      const a = rng.normal();
      x[2 * i] = 2 * a;
      x[2 * i + 1] = 1.5 * a + 0.2 * rng.normal();
    }
    const first = (await m.lossAndGrads(x, null, n)).loss;
    for (let s = 0; s < 150; s++) await m.trainStep(x, null, n, opt);
    const last = (await m.lossAndGrads(x, null, n)).loss;
    expect(last).toBeLessThan(first - 0.5);
    expect(m.getOptimStep()).toBe(150);
    // What it trained is what it scores.
    const lp = await m.logProb(x, null, n);
    expect(-lp.reduce((a, b) => a + b, 0) / n).toBeCloseTo(last, 4);
  });

  it('validates shapes, copies params, and rejects divergence without changes', async () => {
    const m = new JsFlowNetBackend(spec, 0);
    init(m, 2);
    expect(() => m.encode(new Float32Array(5), null, 2)).toThrow(ShapeError);
    await expect(m.logProb(new Float32Array(3), null, 2)).rejects.toThrow(ShapeError);
    expect(() => m.setParam('layers.0.scale', new Float32Array(3))).toThrow(ShapeError);
    const p = m.getParam('layers.0.scale');
    p[0] = 42;
    expect(m.getParam('layers.0.scale')[0]).toBe(1);
    const before = m.getParam('layers.0.net.0.weight');
    // Finite in float64, but its gradients overflow float32.
    await expect(m.trainStep(Float32Array.from([1e30, -1e30]), null, 1, opt)).rejects.toThrow(DivergenceError);
    expect(m.getParam('layers.0.net.0.weight')).toEqual(before);
    expect(m.getOptimStep()).toBe(0);
  });
});
