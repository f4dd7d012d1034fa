/**
 * The pure-TypeScript affine coupling: its hand-written backward against central finite differences
 * in float64, invertibility, and its log-determinant against log|det J| of a finite-difference
 * Jacobian (LU with partial pivoting).
 */
import { describe, expect, it } from 'vitest';
import {
  type CouplingDims,
  type CouplingParams,
  couplingBackward,
  couplingForward,
  couplingInverse,
} from '../src/backend/js/coupling.js';
import type { FloatArray } from '../src/backend/js/gru.js';
import { ConfigError, ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { EPS, expectClose, logAbsDet, numericGrad, uniform } from './helpers/numeric.js';

function setup(seed: number, dims: CouplingDims) {
  const rng = new Rng(seed);
  const { batch: N, dim: D } = dims;
  const mask = Float64Array.from({ length: D }, (_, d) => (d % 2 === 0 ? 1 : 0));
  const p: CouplingParams = {
    mask,
    sRaw: uniform(rng, N * D, 1.5),
    t: uniform(rng, N * D, 1),
    scale: uniform(rng, D, 2),
  };
  return { rng, x: uniform(rng, N * D, 2), p };
}

/** The D×D Jacobian of f: ℝ^D → ℝ^D at x, by central differences. */
function jacobian(f: (x: Float64Array) => Float64Array, x: Float64Array): Float64Array {
  const D = x.length;
  const J = new Float64Array(D * D);
  for (let j = 0; j < D; j++) {
    const v = x[j];
    x[j] = v + EPS;
    const up = f(x);
    x[j] = v - EPS;
    const down = f(x);
    x[j] = v;
    for (let i = 0; i < D; i++) J[i * D + j] = (up[i] - down[i]) / (2 * EPS);
  }
  return J;
}

describe('affine coupling reference', () => {
  it('matches a hand computation (N=1, D=2)', () => {
    const p: CouplingParams = {
      mask: Float64Array.of(1, 0),
      sRaw: Float64Array.of(0.7, 0.4),
      t: Float64Array.of(9, -0.5),
      scale: Float64Array.of(3, 0.8),
    };
    const { y, logdet } = couplingForward({ batch: 1, dim: 2 }, Float64Array.of(1.5, 2), p);
    const s = 0.8 * Math.tanh(0.4);
    expect(y[0]).toBe(1.5);
    expect(y[1]).toBeCloseTo(2 * Math.exp(s) - 0.5, 14);
    expect(logdet[0]).toBeCloseTo(s, 14);
  });

  it('backward matches central finite differences in f64 for x, sRaw, t and scale', () => {
    const dims = { batch: 3, dim: 5 };
    const { rng, x, p } = setup(1, dims);
    // L = Σ wY ⊙ y + Σ wL ⊙ logdet, so dL/dy = wY and dL/dlogdet = wL.
    const wY = uniform(rng, 15, 1);
    const wL = uniform(rng, 3, 1);
    const loss = () => {
      const { y, logdet } = couplingForward(dims, x, p);
      let l = 0;
      for (let i = 0; i < y.length; i++) l += wY[i] * y[i];
      for (let n = 0; n < 3; n++) l += wL[n] * logdet[n];
      return l;
    };
    const g = couplingBackward(dims, x, p, wY, wL);
    expect(g.dx).toBeInstanceOf(Float64Array);
    expectClose('dx', g.dx, numericGrad(x, loss), 1e-8);
    expectClose('dsRaw', g.dsRaw, numericGrad(p.sRaw as Float64Array, loss), 1e-8);
    expectClose('dt', g.dt, numericGrad(p.t as Float64Array, loss), 1e-8);
    expectClose('dscale', g.dscale, numericGrad(p.scale as Float64Array, loss), 1e-8);
    // Masked coordinates: dx = dy, no gradient to their s and t.
    for (let n = 0; n < 3; n++) {
      for (const d of [0, 2, 4]) {
        expect(g.dx[n * 5 + d]).toBe(wY[n * 5 + d]);
        expect(g.dsRaw[n * 5 + d]).toBe(0);
        expect(g.dt[n * 5 + d]).toBe(0);
      }
    }
    // dlogdet alone reaches only s.
    const only = couplingBackward(dims, x, p, new Float64Array(15), wL);
    expect(Array.from(only.dx).every((v) => v === 0)).toBe(true);
    expect(Array.from(only.dt).every((v) => v === 0)).toBe(true);
    expect(only.dsRaw[1]).not.toBe(0);
  });

  it('f32 inputs give f32 results close to the f64 ones', () => {
    const dims = { batch: 4, dim: 6 };
    const { rng, x, p } = setup(2, dims);
    const dy = uniform(rng, 24, 1);
    const dl = uniform(rng, 4, 1);
    const f32 = (a: FloatArray) => Float32Array.from(a);
    const p32: CouplingParams = { mask: f32(p.mask), sRaw: f32(p.sRaw), t: f32(p.t), scale: f32(p.scale) };
    const fwd32 = couplingForward(dims, f32(x), p32);
    expect(fwd32.y).toBeInstanceOf(Float32Array);
    expect(fwd32.logdet).toBeInstanceOf(Float32Array);
    const fwd64 = couplingForward(dims, x, p);
    expectClose('y', fwd32.y, fwd64.y, 1e-6);
    expectClose('logdet', fwd32.logdet, fwd64.logdet, 1e-6);
    expect(couplingForward(dims, f32(x), p32, { dtype: 'f64' }).y).toBeInstanceOf(Float64Array);
    const g32 = couplingBackward(dims, f32(x), p32, f32(dy), f32(dl));
    const g64 = couplingBackward(dims, x, p, dy, dl);
    for (const k of ['dx', 'dsRaw', 'dt', 'dscale'] as const) {
      expect(g32[k]).toBeInstanceOf(Float32Array);
      expectClose(k, g32[k], g64[k], 1e-5);
    }
  });

  it('inverse undoes forward and its log-det is minus the forward one', () => {
    const dims = { batch: 5, dim: 7 };
    const { x, p } = setup(3, dims);
    const fwd = couplingForward(dims, x, p);
    const inv = couplingInverse(dims, fwd.y, p);
    expectClose('x', inv.x, x, 1e-13);
    for (let n = 0; n < 5; n++) expect(inv.logdet[n]).toBeCloseTo(-fwd.logdet[n], 13);
    expect(fwd.logdet.some((v) => Math.abs(v) > 0.1)).toBe(true);
    // And the other way round.
    const back = couplingForward(dims, couplingInverse(dims, x, p).x, p);
    expectClose('y', back.y, x, 1e-13);
    // A mask of all ones is the identity with zero log-det.
    const id = couplingForward(dims, x, { ...p, mask: new Float64Array(7).fill(1) });
    expect(id.y).toEqual(x);
    expect(Array.from(id.logdet)).toEqual([0, 0, 0, 0, 0]);
  });

  it('log-det equals log|det J| of the D×D Jacobian, with fixed and with x-dependent s and t', () => {
    const D = 6;
    const { rng, x, p } = setup(4, { batch: 2, dim: D });
    // Fixed conditioner outputs: J is diagonal, one sample at a time.
    for (let n = 0; n < 2; n++) {
      const one = (): CouplingParams => ({
        mask: p.mask,
        sRaw: p.sRaw.slice(n * D, (n + 1) * D),
        t: p.t.slice(n * D, (n + 1) * D),
        scale: p.scale,
      });
      const xn = x.slice(n * D, (n + 1) * D);
      const f = (xs: Float64Array) => couplingForward({ batch: 1, dim: D }, xs, one()).y as Float64Array;
      const want = logAbsDet(jacobian(f, xn), D);
      const got = couplingForward({ batch: 1, dim: D }, xn, one()).logdet[0];
      expect(Math.abs(got - want)).toBeLessThan(1e-7);
    }
    // Real NVP proper: sRaw and t computed from the passed-through half, sRaw = W(b⊙x), t = V(b⊙x).
    // The Jacobian is no longer diagonal, but (triangular after permutation) its det is unchanged.
    const W = uniform(rng, D * D, 0.8);
    const V = uniform(rng, D * D, 0.8);
    const conditioner = (xs: Float64Array): CouplingParams => {
      const sRaw = new Float64Array(D);
      const t = new Float64Array(D);
      for (let i = 0; i < D; i++) {
        for (let j = 0; j < D; j++) {
          sRaw[i] += W[i * D + j] * p.mask[j] * xs[j];
          t[i] += V[i * D + j] * p.mask[j] * xs[j];
        }
      }
      return { mask: p.mask, sRaw, t, scale: p.scale };
    };
    const f = (xs: Float64Array) => couplingForward({ batch: 1, dim: D }, xs, conditioner(xs)).y as Float64Array;
    const xn = x.slice(0, D);
    const J = jacobian(f, xn);
    let offDiagonal = 0;
    for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) if (i !== j) offDiagonal += Math.abs(J[i * D + j]);
    expect(offDiagonal).toBeGreaterThan(0.1);
    const want = logAbsDet(J, D);
    const got = couplingForward({ batch: 1, dim: D }, xn, conditioner(xn)).logdet[0];
    expect(Math.abs(got - want)).toBeLessThan(1e-7);
    // The test's LU itself: a permuted triangular matrix with known determinant −2·3·4 = −24.
    expect(logAbsDet(Float64Array.of(0, 3, 1, 2, 5, 7, 0, 0, 4), 3)).toBeCloseTo(Math.log(24), 12);
  });

  it('rejects mismatched sizes with ShapeError and a non-binary mask with ConfigError', () => {
    const dims = { batch: 2, dim: 3 };
    const { x, p } = setup(5, dims);
    expect(() => couplingForward(dims, x.subarray(0, 5), p)).toThrow(ShapeError);
    expect(() => couplingForward(dims, x, { ...p, mask: new Float64Array(4) })).toThrow(/mask holds 4 values/);
    expect(() => couplingForward(dims, x, { ...p, sRaw: new Float64Array(5) })).toThrow(/sRaw/);
    expect(() => couplingInverse(dims, x, { ...p, t: new Float64Array(7) })).toThrow(/t holds 7/);
    expect(() => couplingInverse(dims, x, { ...p, scale: new Float64Array(2) })).toThrow(ShapeError);
    expect(() => couplingBackward(dims, x, p, new Float64Array(5), new Float64Array(2))).toThrow(/dy/);
    expect(() => couplingBackward(dims, x, p, new Float64Array(6), new Float64Array(3))).toThrow(/dlogdet/);
    expect(() => couplingForward({ batch: 2, dim: 0 }, new Float64Array(0), p)).toThrow(ShapeError);
    expect(() => couplingForward({ batch: -1, dim: 3 }, x, p)).toThrow(ShapeError);
    expect(() => couplingForward({ batch: 1.5, dim: 3 }, x, p)).toThrow(ShapeError);
    expect(() => couplingForward(dims, Array.from(x) as unknown as Float64Array, p)).toThrow(ShapeError);
    expect(() => couplingForward(dims, x, { ...p, mask: Float64Array.of(1, 0.5, 0) })).toThrow(ConfigError);
    // An empty batch is fine.
    expect(
      couplingForward({ batch: 0, dim: 3 }, new Float64Array(0), {
        ...p,
        sRaw: new Float64Array(0),
        t: new Float64Array(0),
      }).y.length,
    ).toBe(0);
  });
});
