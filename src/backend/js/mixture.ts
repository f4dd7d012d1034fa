/**
 * Likelihood heads for real-valued outputs, in plain TypeScript: the negative log-likelihood of
 * targets under the distribution a network's raw outputs parameterise, its gradient with respect to
 * those raw outputs, and sampling. The reference for native heads; everything is computed in doubles.
 *
 * Diagonal Gaussian, per row `[μ (D), s (D)]`, σ = exp(s):
 *   NLL = Σ_d [½ log 2π + s_d + ½ ((y_d − μ_d) / σ_d)²]
 *
 * Mixture density network (Graves 2013, "Generating Sequences With Recurrent Neural Networks",
 * eqs. 18–26), K components, per row `[π logits (K), μ (K·D), s (K·D), ρ raw (K) for D = 2 only]`,
 * component-major (`μ[k·D + d]`):
 *   π = softmax(logits) (eq. 19), σ = exp(s) (eq. 21), ρ = RHO_SCALE · tanh(raw) (eq. 22);
 *   NLL = −log Σ_k π_k N(y | μ_k, Σ_k) (eq. 26), by log-sum-exp over log π_k + log N_k.
 * For D = 2 each component is the bivariate normal of eqs. 24–25 with correlation ρ_k; for any other D
 * the components are diagonal (no ρ outputs).
 *
 * Numerical choices:
 *  - s is not clamped and σ has no floor: exp(s) is smooth and positive, and log σ = s enters the NLL
 *    exactly. In doubles everything is finite as long as |y − μ|·exp(−s) < ~1e154 (e.g. s ≥ −300 with
 *    |y − μ| < 1e20); past that z² overflows and the NLL is +∞, which is then the honest value to
 *    double precision. Note that a continuous density over quantised data (readings rounded to 0.01)
 *    is unbounded as σ → 0: dequantise such data rather than expect a floor here.
 *  - ρ = RHO_SCALE · tanh(raw) with RHO_SCALE = 1 − 1e-6 keeps 1 − ρ² ≥ ~2e-6 for every raw value
 *    (tanh is exactly ±1 in doubles for |raw| > 19), so log(1 − ρ²) ≥ −13.1 and a component never
 *    degenerates onto a line. The quadratic form is evaluated as (z₁ − ρz₂)²/(1 − ρ²) + z₂² (the
 *    conditional y₁ | y₂ decomposition), which has no cancellation when ρ → ±1, and 1 − ρ² as
 *    (1 − ρ)(1 + ρ).
 *  - log π by log-softmax and the mixture by log-sum-exp, both shifted by their maximum, so logits a
 *    thousand apart and components thousands of nats apart stay finite; the gradient uses the
 *    responsibilities γ_k = π_k N_k / Σ_j π_j N_j computed from the same shifted terms.
 */
import { ConfigError, ShapeError } from '../../errors.js';
import type { Rng } from '../../util/rng.js';
import type { FloatArray } from './gru.js';

/** ρ = RHO_SCALE · tanh(raw): bounds |ρ| away from 1 (see the module comment). */
export const RHO_SCALE = 1 - 1e-6;

const LOG_2PI = Math.log(2 * Math.PI);
const HALF_LOG_2PI = 0.5 * LOG_2PI;

export interface HeadLoss {
  /** NLL in nats summed over rows. */
  nll: number;
  /** d nll / d raw, the same `[rows, outputSize]` layout as the raw outputs. */
  grad: Float64Array;
}

function positiveInt(name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 1) throw new ConfigError(`${name} must be a positive integer, got ${v}`);
}

/** Raw outputs per row of the diagonal Gaussian head: 2D. */
export function gaussianOutputSize(dim: number): number {
  positiveInt('dim', dim);
  return 2 * dim;
}

/** Raw outputs per row of the mixture head: K (π) + K·D (μ) + K·D (s) + K (ρ, D = 2 only). */
export function mixtureOutputSize(dim: number, components: number): number {
  positiveInt('dim', dim);
  positiveInt('components (K)', components);
  return components * (1 + 2 * dim + (dim === 2 ? 1 : 0));
}

function checkSizes(head: string, raw: FloatArray, y: FloatArray, rows: number, size: number, dim: number): void {
  if (!Number.isSafeInteger(rows) || rows < 0)
    throw new ShapeError(`${head}: rows must be an integer ≥ 0, got ${rows}`);
  if (raw.length !== rows * size) {
    throw new ShapeError(
      `${head}: raw outputs have ${raw.length} values, expected rows ${rows} × ${size} = ${rows * size}`,
    );
  }
  if (y.length !== rows * dim) {
    throw new ShapeError(
      `${head}: targets have ${y.length} values, expected rows ${rows} × dim ${dim} = ${rows * dim}`,
    );
  }
}

function rowsOf(head: string, raw: FloatArray, size: number): number {
  if (raw.length % size !== 0) {
    throw new ShapeError(`${head}: ${raw.length} raw outputs are not whole rows of ${size}`);
  }
  return raw.length / size;
}

function checkTemperature(temperature: number): void {
  if (!(Number.isFinite(temperature) && temperature > 0)) {
    throw new ConfigError(`temperature must be a finite number > 0, got ${temperature}`);
  }
}

/** NLL and gradient of the diagonal Gaussian head over `rows` rows of `y [rows, dim]`. */
export function gaussianNll(raw: FloatArray, y: FloatArray, rows: number, dim: number): HeadLoss {
  const size = gaussianOutputSize(dim);
  checkSizes('gaussian head', raw, y, rows, size, dim);
  const grad = new Float64Array(raw.length);
  let nll = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * size;
    for (let d = 0; d < dim; d++) {
      const s = raw[o + dim + d];
      const inv = Math.exp(-s);
      const z = (y[r * dim + d] - raw[o + d]) * inv;
      nll += HALF_LOG_2PI + s + 0.5 * z * z;
      grad[o + d] = -z * inv;
      grad[o + dim + d] = 1 - z * z;
    }
  }
  return { nll, grad };
}

/** NLL and gradient of the mixture head (K components) over `rows` rows of `y [rows, dim]`. */
export function mixtureNll(raw: FloatArray, y: FloatArray, rows: number, dim: number, components: number): HeadLoss {
  const K = components;
  const size = mixtureOutputSize(dim, K);
  checkSizes('mixture head', raw, y, rows, size, dim);
  const bivariate = dim === 2;
  const grad = new Float64Array(raw.length);
  // Per component: log π_k + log N_k, then the responsibilities; z of every (k, d).
  const ell = new Float64Array(K);
  const z = new Float64Array(K * dim);
  let nll = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * size;
    const mu = o + K;
    const ls = mu + K * dim;
    const rh = ls + K * dim;
    const yo = r * dim;

    let amax = Number.NEGATIVE_INFINITY;
    for (let k = 0; k < K; k++) amax = Math.max(amax, raw[o + k]);
    let asum = 0;
    for (let k = 0; k < K; k++) asum += Math.exp(raw[o + k] - amax);
    const logZ = amax + Math.log(asum);

    for (let k = 0; k < K; k++) {
      let logN = 0;
      for (let d = 0; d < dim; d++) {
        const s = raw[ls + k * dim + d];
        const zz = (y[yo + d] - raw[mu + k * dim + d]) * Math.exp(-s);
        z[k * dim + d] = zz;
        logN -= HALF_LOG_2PI + s;
        if (!bivariate) logN -= 0.5 * zz * zz;
      }
      if (bivariate) {
        const rho = RHO_SCALE * Math.tanh(raw[rh + k]);
        const omr = (1 - rho) * (1 + rho);
        const z1 = z[k * 2];
        const z2 = z[k * 2 + 1];
        const u = z1 - rho * z2;
        logN -= 0.5 * Math.log(omr) + 0.5 * ((u * u) / omr + z2 * z2);
      }
      ell[k] = raw[o + k] - logZ + logN;
    }

    let lmax = Number.NEGATIVE_INFINITY;
    for (let k = 0; k < K; k++) lmax = Math.max(lmax, ell[k]);
    let lsum = 0;
    for (let k = 0; k < K; k++) lsum += Math.exp(ell[k] - lmax);
    const lse = lmax + Math.log(lsum);
    nll -= lse;

    for (let k = 0; k < K; k++) {
      const gamma = Math.exp(ell[k] - lse);
      // d(−log Σ π N)/d logit_k = π_k − γ_k (softmax through the log-sum-exp).
      grad[o + k] = Math.exp(raw[o + k] - logZ) - gamma;
      if (bivariate) {
        const rr = raw[rh + k];
        const rho = RHO_SCALE * Math.tanh(rr);
        const omr = (1 - rho) * (1 + rho);
        const z1 = z[k * 2];
        const z2 = z[k * 2 + 1];
        const u = z1 - rho * z2;
        const v = z2 - rho * z1;
        const w = (u * u) / omr + z2 * z2;
        // ∂ log N / ∂μ₁ = (z₁ − ρz₂) / ((1 − ρ²) σ₁), ∂ log N / ∂s₁ = −1 + z₁(z₁ − ρz₂) / (1 − ρ²);
        // the same for variable 2 with z₁ and z₂ swapped.
        grad[mu + k * 2] = (-gamma * u * Math.exp(-raw[ls + k * 2])) / omr;
        grad[mu + k * 2 + 1] = (-gamma * v * Math.exp(-raw[ls + k * 2 + 1])) / omr;
        grad[ls + k * 2] = gamma * (1 - (z1 * u) / omr);
        grad[ls + k * 2 + 1] = gamma * (1 - (z2 * v) / omr);
        // ∂ log N / ∂ρ = (ρ + z₁z₂ − ρQ) / (1 − ρ²) with Q the quadratic form (z₁² + z₂² − 2ρz₁z₂) / (1 − ρ²);
        // dρ/d raw = RHO_SCALE · sech²(raw).
        const sech = 1 / Math.cosh(rr);
        grad[rh + k] = ((-gamma * (rho + z1 * z2 - rho * w)) / omr) * RHO_SCALE * sech * sech;
      } else {
        for (let d = 0; d < dim; d++) {
          const zz = z[k * dim + d];
          grad[mu + k * dim + d] = -gamma * zz * Math.exp(-raw[ls + k * dim + d]);
          grad[ls + k * dim + d] = gamma * (1 - zz * zz);
        }
      }
    }
  }
  return { nll, grad };
}

/**
 * One draw per row from the diagonal Gaussian head, `[rows, dim]`; rows = raw.length / (2·dim).
 * `temperature` τ scales the variance (σ → σ√τ); τ = 1 samples the model's distribution.
 */
export function sampleGaussian(raw: FloatArray, dim: number, rng: Rng, temperature = 1): Float64Array {
  const size = gaussianOutputSize(dim);
  checkTemperature(temperature);
  const rows = rowsOf('gaussian head', raw, size);
  const scale = Math.sqrt(temperature);
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    for (let d = 0; d < dim; d++) {
      out[r * dim + d] = raw[r * size + d] + scale * Math.exp(raw[r * size + dim + d]) * rng.normal();
    }
  }
  return out;
}

/**
 * One draw per row from the mixture head, `[rows, dim]`; rows = raw.length / mixtureOutputSize(dim, K).
 * `temperature` τ as in sketch-rnn (Ha & Eck 2017): component weights softmax(logits / τ), component
 * variances scaled by τ (σ → σ√τ, ρ unchanged). τ = 1 samples the model's distribution; τ → 0 tends
 * to the mean of the most likely component.
 */
export function sampleMixture(
  raw: FloatArray,
  dim: number,
  components: number,
  rng: Rng,
  temperature = 1,
): Float64Array {
  const K = components;
  const size = mixtureOutputSize(dim, K);
  checkTemperature(temperature);
  const rows = rowsOf('mixture head', raw, size);
  const scale = Math.sqrt(temperature);
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const o = r * size;
    const mu = o + K;
    const ls = mu + K * dim;
    let amax = Number.NEGATIVE_INFINITY;
    for (let k = 0; k < K; k++) amax = Math.max(amax, raw[o + k] / temperature);
    let asum = 0;
    for (let k = 0; k < K; k++) asum += Math.exp(raw[o + k] / temperature - amax);
    // Inverse-CDF pick of the component; the last one catches a cumulative sum that rounds below u.
    const u = rng.uniform() * asum;
    let k = 0;
    for (let acc = Math.exp(raw[o] / temperature - amax); k < K - 1 && acc <= u; ) {
      k++;
      acc += Math.exp(raw[o + k] / temperature - amax);
    }
    if (dim === 2) {
      const rho = RHO_SCALE * Math.tanh(raw[ls + K * 2 + k]);
      const e1 = rng.normal();
      const e2 = rng.normal();
      out[r * 2] = raw[mu + k * 2] + scale * Math.exp(raw[ls + k * 2]) * e1;
      out[r * 2 + 1] =
        raw[mu + k * 2 + 1] +
        scale * Math.exp(raw[ls + k * 2 + 1]) * (rho * e1 + Math.sqrt((1 - rho) * (1 + rho)) * e2);
    } else {
      for (let d = 0; d < dim; d++) {
        out[r * dim + d] = raw[mu + k * dim + d] + scale * Math.exp(raw[ls + k * dim + d]) * rng.normal();
      }
    }
  }
  return out;
}
