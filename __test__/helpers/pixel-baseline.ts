/**
 * The bits/dim of a per-pixel diagonal Gaussian in the logit space of the image flows, written out
 * from the formulas (not from `src/flows/preprocess.ts`) so the learning tests have an independent
 * baseline that a flow must beat. The chain, for D 8-bit pixels p and noise u ~ U[0, 1)^D:
 *
 *   x = (p + u)/256,   q = α + (1 − 2α)·x,   y = logit(q) = log q − log(1 − q),   α = 0.05
 *   log|dy/dx| per dim = log(1 − 2α) − log q − log(1 − q)
 *   −log p(p + u) = −log N(y; μ, σ²) − Σ_d log|dy_d/dx_d| + D·log 256      (density per pixel unit)
 *   bits/dim = mean over images of that / (D·ln 2)
 *
 * μ and σ² are the per-dimension mean and (biased, maximum-likelihood) variance of y over one
 * dequantised draw of the training images. The noise is drawn with `Rng(seed).uniform()`, one per
 * pixel in order, as the flows' own dequantisation does, so with the same seed both see the same u.
 */
import { Rng } from '../../src/util/rng.js';

export const ALPHA = 0.05;

/** y = logit(α + (1 − 2α)·x) of x = (p + u)/256 and log|dy/dx|, in doubles. */
function logitOf(p: number, u: number): { y: number; logdet: number } {
  const x = (p + u) / 256;
  const q = ALPHA + (1 - 2 * ALPHA) * x;
  return { y: Math.log(q) - Math.log(1 - q), logdet: Math.log(1 - 2 * ALPHA) - Math.log(q) - Math.log(1 - q) };
}

export interface DiagonalGaussian {
  mean: Float64Array;
  variance: Float64Array;
}

/** Maximum-likelihood per-dimension mean and variance of the logit-space values of `[n, D]` pixels. */
export function fitDiagonalGaussian(pixels: Uint8Array, D: number, seed: number): DiagonalGaussian {
  const n = pixels.length / D;
  const rng = new Rng(seed);
  // Welford's update: no cancellation between Σy² and (Σy)² for the near-constant background pixels.
  const mean = new Float64Array(D);
  const m2 = new Float64Array(D);
  for (let i = 0; i < n; i++) {
    for (let d = 0; d < D; d++) {
      const { y } = logitOf(pixels[i * D + d], rng.uniform());
      const delta = y - mean[d];
      mean[d] += delta / (i + 1);
      m2[d] += delta * (y - mean[d]);
    }
  }
  const variance = m2.map((s) => s / n);
  return { mean, variance };
}

/** Bits/dim of `[n, D]` test pixels under the Gaussian, dequantised with `Rng(seed)` (see above). */
export function diagonalGaussianBpd(g: DiagonalGaussian, pixels: Uint8Array, D: number, seed: number): number {
  const n = pixels.length / D;
  const rng = new Rng(seed);
  let nll = 0;
  for (let i = 0; i < n; i++) {
    for (let d = 0; d < D; d++) {
      const { y, logdet } = logitOf(pixels[i * D + d], rng.uniform());
      const v = g.variance[d];
      const r = y - g.mean[d];
      nll += 0.5 * Math.log(2 * Math.PI * v) + (r * r) / (2 * v) - logdet + Math.log(256);
    }
  }
  return nll / (n * D * Math.LN2);
}
