/**
 * The native affine-coupling kernel against the pure-TypeScript reference: forward, inverse, log-det
 * and every gradient, on sizes that take the kernel's single- and multi-threaded paths.
 */
import { describe, expect, it } from 'vitest';
import { couplingBackward, couplingForward, couplingInverse } from '../src/backend/js/coupling.js';
import { loadNative } from '../src/backend/native.js';
import { ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { expectCloseNonZero } from './helpers/numeric.js';

const native = loadNative();

function rand(n: number, rng: Rng, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal() * scale);
}

describe.each([
  [3, 5],
  [70, 96], // N·D ≥ 4096: rows split across threads
])('affine coupling, N=%i D=%i: native matches the TS reference', (n, d) => {
  const rng = new Rng(n * 1000 + d);
  const x = rand(n * d, rng);
  const mask = Float32Array.from({ length: d }, (_, j) => j % 2);
  const p = { mask, sRaw: rand(n * d, rng), t: rand(n * d, rng), scale: rand(d, rng, 0.8) };

  it('forward, inverse and log-det agree within 1e-5', () => {
    const want = couplingForward({ batch: n, dim: d }, x, p);
    const got = native.couplingForward(n, d, x, mask, p.sRaw, p.t, p.scale, false);
    expectCloseNonZero('y', got.out, want.y, 1e-5);
    expectCloseNonZero('logdet', got.logdet, want.logdet, 1e-5);
    const back = native.couplingForward(n, d, got.out, mask, p.sRaw, p.t, p.scale, true);
    const wantBack = couplingInverse({ batch: n, dim: d }, want.y, p);
    expectCloseNonZero('x', back.out, wantBack.x, 1e-5);
    expectCloseNonZero('x round trip', back.out, x, 1e-5);
    expectCloseNonZero('inverse logdet', back.logdet, wantBack.logdet, 1e-5);
  });

  it('gradients agree within 1e-4', () => {
    const dy = rand(n * d, rng);
    const dlogdet = rand(n, rng);
    const want = couplingBackward({ batch: n, dim: d }, x, p, dy, dlogdet);
    const got = native.couplingBackward(n, d, x, mask, p.sRaw, p.scale, dy, dlogdet);
    expectCloseNonZero('dx', got.dx, want.dx, 1e-4);
    expectCloseNonZero('dsRaw', got.dsRaw, want.dsRaw, 1e-4);
    expectCloseNonZero('dt', got.dt, want.dt, 1e-4);
    expectCloseNonZero('dscale', got.dscale, want.dscale, 1e-4);
  });
});

describe('affine coupling: bad input', () => {
  it('wrong sizes and a non-binary mask are clear errors', async () => {
    const { mapNativeError } = await import('../src/backend/native.js');
    const one = Float32Array.of(1, 2, 3, 4);
    const call = (mask: Float32Array, x = one) => {
      try {
        return native.couplingForward(2, 2, x, mask, one, one, Float32Array.of(1, 1), false);
      } catch (e) {
        throw mapNativeError(e);
      }
    };
    expect(() => call(Float32Array.of(1, 0), Float32Array.of(1, 2, 3))).toThrow(ShapeError);
    expect(() => call(Float32Array.of(1, 0), Float32Array.of(1, 2, 3))).toThrow(/x holds 3 values/);
    expect(() => call(Float32Array.of(0.5, 0))).toThrow(/mask entries must be 0 or 1/);
  });
});
