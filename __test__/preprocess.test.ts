/**
 * Flow preprocessing: dequantisation, the logit transform and its log-determinant, and the
 * bits-per-dimension accounting.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, ShapeError } from '../src/errors.js';
import {
  bitsPerDim,
  dequantize,
  LOGIT_ALPHA,
  logitForward,
  logitInverse,
  logitLogDet,
  logitToPixels,
  meanBitsPerDim,
  preprocessImages,
  quantize,
} from '../src/flows/preprocess.js';
import { Rng } from '../src/util/rng.js';

function allPixels(repeats: number): Uint8Array {
  const p = new Uint8Array(256 * repeats);
  for (let i = 0; i < p.length; i++) p[i] = i % 256;
  return p;
}

/** A generator whose uniforms are all just below 1, the worst case for dequantisation. */
class MaxRng extends Rng {
  override uniform(): number {
    return 4294967295 / 4294967296;
  }
}

describe('dequantize', () => {
  it('lands in [p/256, (p+1)/256) ⊂ [0, 1), quantizes back, and is deterministic per seed', () => {
    const pixels = allPixels(20);
    for (const dtype of ['f32', 'f64'] as const) {
      const x = dequantize(pixels, { seed: 3, dtype });
      expect(x).toBeInstanceOf(dtype === 'f32' ? Float32Array : Float64Array);
      for (let i = 0; i < x.length; i++) {
        expect(x[i]).toBeGreaterThanOrEqual(pixels[i] / 256);
        expect(x[i]).toBeLessThan((pixels[i] + 1) / 256);
      }
      expect(quantize(x)).toEqual(pixels);
      expect(dequantize(pixels, { seed: 3, dtype })).toEqual(x);
      const other = dequantize(pixels, { seed: 4, dtype });
      let same = 0;
      for (let i = 0; i < x.length; i++) if (other[i] === x[i]) same++;
      expect(same).toBeLessThan(5);
    }
    // The noise is uniform within each bin: its mean is ≈ ½ and its spread ≈ 1/√12.
    const u = Float64Array.from(dequantize(new Uint8Array(20000), { seed: 9, dtype: 'f64' }), (v) => v * 256);
    const mean = u.reduce((a, b) => a + b, 0) / u.length;
    const sd = Math.sqrt(u.reduce((a, b) => a + (b - mean) ** 2, 0) / u.length);
    expect(mean).toBeCloseTo(0.5, 1);
    expect(sd).toBeCloseTo(1 / Math.sqrt(12), 2);
    // Default seed is fixed; a shared generator advances.
    expect(dequantize(pixels)).toEqual(dequantize(pixels, { seed: 0 }));
    const rng = new Rng(1);
    expect(dequantize(pixels, { seed: rng })).not.toEqual(dequantize(pixels, { seed: rng }));
  });

  it('stays below 1 in f32 even when (255 + u)/256 would round up to 1', () => {
    const top = Uint8Array.from([255, 255]);
    const x32 = dequantize(top, { seed: new MaxRng(0), dtype: 'f32' });
    expect(Math.fround((255 + 4294967295 / 4294967296) / 256)).toBe(1);
    expect(x32[0]).toBeLessThan(1);
    expect(quantize(x32)).toEqual(top);
    const x64 = dequantize(top, { seed: new MaxRng(0), dtype: 'f64' });
    expect(x64[0]).toBeLessThan(1);
    expect(Number.isFinite(logitForward(x32, 1, 0).y[0])).toBe(true);
  });

  it('quantize clamps out-of-range and NaN values', () => {
    expect(Array.from(quantize(Float64Array.from([-0.3, 1.2, Number.NaN, 0.5, 1 - 1e-12])))).toEqual([
      0, 255, 0, 128, 255,
    ]);
  });
});

describe('logit transform', () => {
  it('round trips through logitInverse (f64 and f32) and back to pixels', () => {
    const pixels = allPixels(4);
    const x = dequantize(pixels, { seed: 1, dtype: 'f64' });
    const { y } = logitForward(x, 256);
    expect(y).toBeInstanceOf(Float64Array);
    const back = logitInverse(y);
    for (let i = 0; i < x.length; i++) expect(Math.abs(back[i] - x[i])).toBeLessThan(1e-14);
    expect(logitToPixels(y)).toEqual(pixels);
    const x32 = dequantize(pixels, { seed: 1 });
    const y32 = logitForward(x32, 256).y;
    expect(y32).toBeInstanceOf(Float32Array);
    const back32 = logitInverse(y32);
    for (let i = 0; i < x.length; i++) expect(Math.abs(back32[i] - x32[i])).toBeLessThan(1e-6);
    // y spans [logit α, logit(1 − α)].
    const edge = logitForward(Float64Array.from([0, 1]), 1).y;
    expect(edge[0]).toBeCloseTo(Math.log(LOGIT_ALPHA / (1 - LOGIT_ALPHA)), 12);
    expect(edge[1]).toBeCloseTo(-edge[0], 12);
    // Large |y| does not overflow σ.
    expect(Array.from(logitInverse(Float64Array.from([-1000, 1000]), 0))).toEqual([0, 1]);
  });

  it('log-det is the per-sample sum of log|dy/dx|, checked by central differences in f64', () => {
    const dims = 7;
    const x = dequantize(
      Uint8Array.from({ length: 3 * dims }, (_, i) => (i * 37) % 256),
      { seed: 2, dtype: 'f64' },
    );
    expect(x.length).toBe(3 * dims);
    for (const alpha of [LOGIT_ALPHA, 0.01, 0.2]) {
      const { logdet } = logitForward(x, dims, alpha);
      expect(logitLogDet(x, dims, alpha)).toEqual(logdet);
      const h = 1e-6;
      for (let s = 0; s < 3; s++) {
        let want = 0;
        for (let d = 0; d < dims; d++) {
          const i = s * dims + d;
          const up = logitForward(Float64Array.of(x[i] + h), 1, alpha).y[0];
          const down = logitForward(Float64Array.of(x[i] - h), 1, alpha).y[0];
          want += Math.log(Math.abs((up - down) / (2 * h)));
        }
        expect(Math.abs(logdet[s] - want)).toBeLessThan(1e-7);
        expect(logdet[s]).toBeGreaterThan(0);
      }
    }
  });

  it('rejects bad alpha and shapes', () => {
    const x = new Float64Array(6).fill(0.5);
    expect(() => logitForward(x, 4)).toThrow(ShapeError);
    expect(() => logitForward(x, 0)).toThrow(ShapeError);
    expect(() => logitLogDet(x, 1.5)).toThrow(ShapeError);
    expect(() => logitForward(x, 3, 0.5)).toThrow(ConfigError);
    expect(() => logitInverse(x, -0.1)).toThrow(ConfigError);
    expect(() => preprocessImages(new Uint8Array(10), 3)).toThrow(ShapeError);
  });
});

describe('bits per dimension', () => {
  it('a uniform density on [0, 1)^D scores exactly 8 bits/dim, in [0,1) space and in logit space', () => {
    expect(bitsPerDim(0, 784)).toBe(8);
    expect(bitsPerDim(0, 1)).toBe(8);
    // In logit space, the uniform-on-x model has density p_Y(y) = 1/|dy/dx|, so nll_logit = logdet.
    const pixels = allPixels(784 * 2).subarray(0, 784 * 4);
    const pre = preprocessImages(pixels, 784, { seed: 5 });
    expect(pre.x.length).toBe(4 * 784);
    for (let s = 0; s < 4; s++) expect(bitsPerDim(pre.logdet[s], 784, pre.logdet[s])).toBe(8);
    expect(meanBitsPerDim(pre.logdet, 784, pre.logdet)).toBe(8);
    // And equals the brief's formula (nll − logdet + D log 256) / (D ln 2).
    const D = 784;
    const nll = 1234.5;
    const ld = pre.logdet[0];
    expect(bitsPerDim(nll, D, ld)).toBeCloseTo((nll - ld + D * Math.log(256)) / (D * Math.LN2), 12);
    // One nat more per dimension is 1/ln 2 bits more.
    expect(bitsPerDim(D, D) - 8).toBeCloseTo(1 / Math.LN2, 12);
  });

  it('the accounting has the right sign: a normalised density in logit space has mass 1 − 2α on [0, 1]', () => {
    // Model: a standard logistic density in y, log p_Y(y) = −y − 2·log(1 + e^−y). The density it implies
    // on x ∈ [0, 1] is 2^−(bpd − 8) (D = 1), and its integral is the logistic CDF's mass on
    // [logit α, logit(1 − α)]: σ(logit(1 − α)) − σ(logit α) = 1 − 2α. A flipped log-det sign fails this.
    const steps = 20000;
    let mass = 0;
    for (let k = 0; k < steps; k++) {
      const x = Float64Array.of((k + 0.5) / steps);
      const { y, logdet } = logitForward(x, 1);
      const nll = y[0] + 2 * Math.log1p(Math.exp(-y[0]));
      mass += 2 ** -(bitsPerDim(nll, 1, logdet[0]) - 8) / steps;
    }
    expect(mass).toBeCloseTo(1 - 2 * LOGIT_ALPHA, 6);
  });

  it('meanBitsPerDim averages per-sample NLLs and rejects mismatched inputs', () => {
    expect(meanBitsPerDim([10, 20], 10, [1, 3])).toBeCloseTo(bitsPerDim(13, 10), 12);
    expect(meanBitsPerDim(Float64Array.of(10, 20), 10)).toBeCloseTo(bitsPerDim(15, 10), 12);
    expect(() => meanBitsPerDim([], 10)).toThrow(ShapeError);
    expect(() => meanBitsPerDim([1, 2], 10, [1])).toThrow(ShapeError);
    expect(() => bitsPerDim(1, 0)).toThrow(ShapeError);
  });
});
