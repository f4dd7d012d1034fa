/** Numerical tools shared by the oracle tests: seeded arrays, finite differences, LU log-determinants. */
import { expect } from 'vitest';
import type { Params } from '../../src/backend/js/lm.js';
import { type CharLmShape, charLmParamInfo } from '../../src/backend/types.js';
import type { Rng } from '../../src/util/rng.js';

/** Step of the central differences: float64 gradients to ~1e-9 for the smooth functions tested here. */
export const EPS = 1e-6;

export function uniform(rng: Rng, n: number, scale: number): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.range(-scale, scale);
  return a;
}

/** Central differences of `loss` w.r.t. every element of `a`, perturbing `a` in place. */
export function numericGrad(a: Float64Array, loss: () => number): Float64Array {
  const g = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    a[i] = v + EPS;
    const up = loss();
    a[i] = v - EPS;
    const down = loss();
    a[i] = v;
    g[i] = (up - down) / (2 * EPS);
  }
  return g;
}

/** Every element within `tol` of the largest |want| (at least 1e-3), so tiny values are not judged relatively. */
export function expectClose(name: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: number): void {
  expect(got.length, `${name}: length`).toBe(want.length);
  let scale = 1e-3;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  expect(worst, `${name}[${at}]: got ${got[at]}, want ${want[at]} (scale ${scale})`).toBeLessThanOrEqual(tol * scale);
}

/** log|det A| of a row-major n×n matrix by LU with partial pivoting (A is overwritten). */
export function logAbsDet(a: Float64Array, n: number): number {
  let logdet = 0;
  for (let k = 0; k < n; k++) {
    let piv = k;
    for (let i = k + 1; i < n; i++) if (Math.abs(a[i * n + k]) > Math.abs(a[piv * n + k])) piv = i;
    if (a[piv * n + k] === 0) return Number.NEGATIVE_INFINITY;
    if (piv !== k) {
      for (let j = 0; j < n; j++) {
        const tmp = a[k * n + j];
        a[k * n + j] = a[piv * n + j];
        a[piv * n + j] = tmp;
      }
    }
    const akk = a[k * n + k];
    logdet += Math.log(Math.abs(akk));
    for (let i = k + 1; i < n; i++) {
      const f = a[i * n + k] / akk;
      for (let j = k; j < n; j++) a[i * n + j] -= f * a[k * n + j];
    }
  }
  return logdet;
}

/**
 * max |got − want| ≤ tol · max(floor, max |want|), and `want` is not all zeros (a comparison against
 * zeros would pass for any kernel that writes nothing).
 */
export function expectCloseNonZero(
  name: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
  floor = 1,
): void {
  expect(got.length, name).toBe(want.length);
  let scale = 0;
  let err = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    err = Math.max(err, Math.abs(got[i] - want[i]));
  }
  expect(scale, `${name} is all zeros`).toBeGreaterThan(0);
  expect(err, name).toBeLessThanOrEqual(tol * Math.max(floor, scale));
}

/** Every parameter of a char LM of `shape`, uniform in [−0.5, 0.5), in float64. */
export function randomCharLmParams(shape: CharLmShape, rng: Rng): Params {
  const p: Params = {};
  for (const { name, shape: dims } of charLmParamInfo(shape)) {
    p[name] = uniform(
      rng,
      dims.reduce((a, b) => a * b, 1),
      0.5,
    );
  }
  return p;
}
