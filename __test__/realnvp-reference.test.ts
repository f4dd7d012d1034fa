import { describe, expect, it } from 'vitest';
import { type FlowShape, flowParamInfo } from '../src/backend/flow-types.js';
import { flowDecode, flowEncode, flowLossAndGrads, JsRealNvp } from '../src/backend/js/realnvp.js';
import { DivergenceError, ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { logAbsDet } from './helpers/numeric.js';

function randomParams(shape: FlowShape, seed: number): Record<string, Float64Array> {
  const rng = new Rng(seed);
  const p: Record<string, Float64Array> = {};
  for (const { name, shape: dims } of flowParamInfo(shape)) {
    const n = dims.reduce((a, b) => a * b, 1);
    p[name] = Float64Array.from({ length: n }, () =>
      name.endsWith('scale') ? rng.range(0.5, 1.5) : rng.range(-0.8, 0.8),
    );
  }
  return p;
}

function randomX(n: number, d: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  return Float64Array.from({ length: n * d }, () => rng.normal());
}

describe.each([2, 3])('JsRealNvp reference, D=%i', (dim) => {
  const shape: FlowShape = { dim, couplings: 2, hidden: 4, depth: 2 };
  const params = randomParams(shape, 7 + dim);
  const batch = 5;
  const x = randomX(batch, dim, 3);

  it('gradients match central finite differences for every parameter', () => {
    const { grads } = flowLossAndGrads(shape, params, x, batch, 'f64');
    const h = 1e-6;
    let checked = 0;
    for (const { name } of flowParamInfo(shape)) {
      const p = params[name];
      for (let i = 0; i < p.length; i++) {
        const orig = p[i];
        p[i] = orig + h;
        const lp = flowLossAndGrads(shape, params, x, batch, 'f64').loss;
        p[i] = orig - h;
        const lm = flowLossAndGrads(shape, params, x, batch, 'f64').loss;
        p[i] = orig;
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
    expect(checked).toBe(flowParamInfo(shape).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0));
  });

  it('decode inverts encode and the log-dets are opposite', () => {
    const { z, logdet } = flowEncode(shape, params, x, batch, 'f64');
    const back = flowDecode(shape, params, z, batch, 'f64');
    for (let i = 0; i < x.length; i++) expect(back.x[i]).toBeCloseTo(x[i], 10);
    for (let n = 0; n < batch; n++) expect(back.logdet[n]).toBeCloseTo(-logdet[n], 10);
  });

  it('the total log-det equals log|det J| by finite differences', () => {
    const { logdet } = flowEncode(shape, params, x, batch, 'f64');
    const h = 1e-6;
    for (let n = 0; n < batch; n++) {
      const x0 = x.slice(n * dim, (n + 1) * dim);
      const J: number[][] = Array.from({ length: dim }, () => new Array(dim).fill(0));
      for (let c = 0; c < dim; c++) {
        const xp = x0.slice();
        const xm = x0.slice();
        xp[c] += h;
        xm[c] -= h;
        const zp = flowEncode(shape, params, xp, 1, 'f64').z;
        const zm = flowEncode(shape, params, xm, 1, 'f64').z;
        for (let r = 0; r < dim; r++) J[r][c] = (zp[r] - zm[r]) / (2 * h);
      }
      expect(logAbsDet(Float64Array.from(J.flat()), J.length)).toBeCloseTo(logdet[n], 6);
    }
  });
});

describe('JsRealNvp backend', () => {
  const shape: FlowShape = { dim: 2, couplings: 4, hidden: 16, depth: 2 };
  const opt = { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 1 };

  function init(m: JsRealNvp, seed: number): void {
    const rng = new Rng(seed);
    for (const { name, shape: dims } of m.paramInfo()) {
      const n = dims.reduce((a, b) => a * b, 1);
      const fanIn = dims.length === 2 ? dims[1] : shape.hidden;
      const b = 1 / Math.sqrt(fanIn);
      m.setParam(
        name,
        Float32Array.from({ length: n }, () => (name.endsWith('scale') ? 1 : rng.range(-b, b))),
      );
    }
  }

  it('trainStep lowers the loss on correlated 2-D data', async () => {
    const m = new JsRealNvp(shape);
    init(m, 1);
    const rng = new Rng(5);
    const n = 256;
    const x = new Float32Array(n * 2);
    for (let i = 0; i < n; i++) {
      const a = rng.normal();
      x[2 * i] = 2 * a;
      x[2 * i + 1] = 1.5 * a + 0.2 * rng.normal();
    }
    const first = (await m.lossAndGrads(x, n)).loss;
    for (let s = 0; s < 150; s++) await m.trainStep(x, n, opt);
    const last = (await m.lossAndGrads(x, n)).loss;
    expect(last).toBeLessThan(first - 0.5);
    expect(m.getOptimStep()).toBe(150);
  });

  it('validates shapes, copies params, and rejects divergence without changes', async () => {
    const m = new JsRealNvp(shape);
    init(m, 2);
    expect(() => m.encode(new Float32Array(5), 2)).toThrow(ShapeError);
    await expect(m.logProb(new Float32Array(3), 2)).rejects.toThrow(ShapeError);
    expect(() => m.setParam('couplings.0.scale', new Float32Array(3))).toThrow(ShapeError);
    const p = m.getParam('couplings.0.scale');
    p[0] = 42;
    expect(m.getParam('couplings.0.scale')[0]).toBe(1);
    const before = m.getParam('couplings.0.net.0.weight');
    await expect(m.trainStep(Float32Array.from([Number.NaN, 0]), 1, opt)).rejects.toThrow(DivergenceError);
    expect(m.getParam('couplings.0.net.0.weight')).toEqual(before);
    expect(m.getOptimStep()).toBe(0);
  });
});
