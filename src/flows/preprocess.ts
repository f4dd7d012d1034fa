/**
 * Image preprocessing for normalizing flows, with the exact log-determinant bookkeeping that turns a
 * model's negative log-likelihood into bits per dimension (Dinh et al. 2017, "Density estimation using
 * Real NVP", §4.1; Kingma & Dhariwal 2018, Glow; Theis et al. 2016, "A note on the evaluation of
 * generative models", for dequantisation).
 *
 * The chain, for one image of D 8-bit pixels p ∈ {0..255}^D:
 *
 *   1. dequantise   x = (p + u) / 256,  u ~ U[0, 1)^D          x ∈ [0, 1)^D
 *   2. logit        y = logit(α + (1 − 2α)·x),  α = 0.05       y ∈ ℝ^D (the model's space)
 *
 * A flow gives log p_Y(y). Change of variables, back along the chain:
 *
 *   log p_X(x) = log p_Y(y) + log|det ∂y/∂x|                    (logit step, {@link logitLogDet})
 *   log p_Z(z) = log p_X(x) − D·log 256, z = 256·x ∈ [0, 256)^D  (density per unit of pixel value)
 *
 * and −log p_Z(z) is, by Theis et al., an upper bound on the discrete model's −log P(p) in nats. So
 *
 *   bits/dim = (nll_logit − logdet_logit + D·log 256) / (D·ln 2)
 *            = (nll_logit − logdet_logit) / (D·ln 2) + 8
 *
 * where nll_logit = −log p_Y(y) and logdet_logit = Σ_d log|dy_d/dx_d| > 0 for each sample. A model
 * uniform on [0, 1)^D (log p_X = 0) scores exactly 8 bits/dim: the baseline of storing raw bytes.
 */
import { ConfigError, ShapeError } from '../errors.js';
import { Rng } from '../util/rng.js';

/** A float array of either precision. */
export type FloatArray = Float32Array | Float64Array;
export type Dtype = 'f32' | 'f64';

/** Real NVP's α for CIFAR-10/Fashion-MNIST-like data: keeps logit's argument in [α, 1 − α]. */
export const LOGIT_ALPHA = 0.05;

/** The largest float32 below 1: dequantised values are clamped to it so f32 storage stays < 1. */
const F32_BELOW_ONE = 1 - 2 ** -24;

function checkAlpha(alpha: number): void {
  if (!(alpha >= 0 && alpha < 0.5)) throw new ConfigError(`logit alpha must be in [0, 0.5), got ${alpha}`);
}

/** Number of samples of a `[N, dims]` array, or ShapeError. */
function samples(fn: string, a: { length: number }, dims: number): number {
  if (!Number.isSafeInteger(dims) || dims < 1) throw new ShapeError(`${fn}: dims must be an integer ≥ 1, got ${dims}`);
  if (a.length % dims !== 0) {
    throw new ShapeError(`${fn}: ${a.length} values are not a whole number of samples of ${dims} dimensions`);
  }
  return a.length / dims;
}

function alloc(dtype: Dtype, n: number): FloatArray {
  return dtype === 'f64' ? new Float64Array(n) : new Float32Array(n);
}

/** Options of {@link dequantize}. */
export interface DequantizeOptions {
  /** Seed of the noise u, or a generator to draw it from (advanced by `pixels.length` uniforms). */
  seed?: number | Rng;
  /** Storage of the result; default f32. */
  dtype?: Dtype;
}

/**
 * Uniform dequantisation `x = (p + u) / 256`, u ~ U[0, 1) drawn from the seeded generator, one per
 * pixel in order. The result lies in [0, 1) (f32 results are clamped below the largest float32 under 1,
 * which (255 + u)/256 could otherwise round up to).
 */
export function dequantize(pixels: Uint8Array, opts: DequantizeOptions = {}): FloatArray {
  const rng = opts.seed instanceof Rng ? opts.seed : new Rng(opts.seed ?? 0);
  const dtype = opts.dtype ?? 'f32';
  const out = alloc(dtype, pixels.length);
  // In doubles (255 + u)/256 ≤ 1 − 2⁻⁴⁰ < 1 already; in f32 anything above 1 − 2⁻²⁴ could round to 1.
  const cap = dtype === 'f32' ? F32_BELOW_ONE : 1;
  for (let i = 0; i < pixels.length; i++) {
    const v = (pixels[i] + rng.uniform()) / 256;
    out[i] = Math.min(v, cap);
  }
  return out;
}

/** Back to pixels: `⌊256·x⌋` clamped to 0..255 (the inverse of {@link dequantize} for any u). */
export function quantize(x: FloatArray): Uint8Array {
  const out = new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = Math.floor(x[i] * 256);
    out[i] = Number.isNaN(v) ? 0 : Math.max(0, Math.min(255, v));
  }
  return out;
}

/** log|dy/dx| of one coordinate of the logit transform at x. */
function logitLogDerivative(x: number, alpha: number): number {
  const p = alpha + (1 - 2 * alpha) * x;
  return Math.log(1 - 2 * alpha) - Math.log(p) - Math.log1p(-p);
}

/** What {@link logitForward} returns: the transformed values and the log-determinant per sample. */
export interface LogitResult {
  /** `[N, dims]` logit-space values, in the dtype of x. */
  y: FloatArray;
  /** `[N]` Σ_d log|dy_d/dx_d| per sample, in doubles. */
  logdet: Float64Array;
}

/**
 * `y = logit(α + (1 − 2α)·x)` elementwise on `[N, dims]` data in [0, 1], with the per-sample
 * log-determinant. `dims` is the number of dimensions of one sample (28·28 for Fashion-MNIST).
 */
export function logitForward(x: FloatArray, dims: number, alpha = LOGIT_ALPHA): LogitResult {
  checkAlpha(alpha);
  const n = samples('logitForward', x, dims);
  const y = x instanceof Float64Array ? new Float64Array(x.length) : new Float32Array(x.length);
  const logdet = new Float64Array(n);
  for (let s = 0; s < n; s++) {
    let ld = 0;
    for (let d = 0; d < dims; d++) {
      const i = s * dims + d;
      const p = alpha + (1 - 2 * alpha) * x[i];
      y[i] = Math.log(p) - Math.log1p(-p);
      ld += Math.log(1 - 2 * alpha) - Math.log(p) - Math.log1p(-p);
    }
    logdet[s] = ld;
  }
  return { y, logdet };
}

/** Per-sample Σ_d log|dy_d/dx_d| of {@link logitForward}, without computing y. */
export function logitLogDet(x: FloatArray, dims: number, alpha = LOGIT_ALPHA): Float64Array {
  checkAlpha(alpha);
  const n = samples('logitLogDet', x, dims);
  const logdet = new Float64Array(n);
  for (let s = 0; s < n; s++) {
    let ld = 0;
    for (let d = 0; d < dims; d++) ld += logitLogDerivative(x[s * dims + d], alpha);
    logdet[s] = ld;
  }
  return logdet;
}

/**
 * The inverse: `x = (σ(y) − α) / (1 − 2α)`, in the dtype of y. Values of a model's samples can fall
 * slightly outside [0, 1] (σ(y) < α); {@link quantize} clamps them.
 */
export function logitInverse(y: FloatArray, alpha = LOGIT_ALPHA): FloatArray {
  checkAlpha(alpha);
  const x = y instanceof Float64Array ? new Float64Array(y.length) : new Float32Array(y.length);
  for (let i = 0; i < y.length; i++) {
    const v = y[i];
    // σ written both ways so neither exp overflows.
    const s = v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v));
    x[i] = (s - alpha) / (1 - 2 * alpha);
  }
  return x;
}

/** Logit-space values back to 8-bit pixels: {@link logitInverse} then {@link quantize}. */
export function logitToPixels(y: FloatArray, alpha = LOGIT_ALPHA): Uint8Array {
  return quantize(logitInverse(y, alpha));
}

/** Options of {@link preprocessImages}: the dequantisation's, plus the logit's α (default {@link LOGIT_ALPHA}). */
export interface PreprocessOptions extends DequantizeOptions {
  alpha?: number;
}

/** What {@link preprocessImages} returns: the dequantised data, its logit transform and the log-determinant. */
export interface Preprocessed extends LogitResult {
  /** The dequantised data in [0, 1), `[N, dims]`. */
  x: FloatArray;
}

/** Dequantise then logit: the whole forward chain of a batch of `[N, dims]` images. */
export function preprocessImages(pixels: Uint8Array, dims: number, opts: PreprocessOptions = {}): Preprocessed {
  samples('preprocessImages', pixels, dims);
  const x = dequantize(pixels, opts);
  return { x, ...logitForward(x, dims, opts.alpha ?? LOGIT_ALPHA) };
}

/** log 256 / ln 2, exactly: the bits per dimension of raw bytes. */
export const PIXEL_BITS = 8;

/**
 * Bits per dimension of one image (or of a mean over images) from a negative log-likelihood in nats.
 *
 * `nllNats` is −log p of the sample in the space the model works in; `logdetLogit` the
 * log|det ∂y/∂x| of the logit step from [0, 1)^D into that space ({@link logitLogDet}, the same
 * sample(s) and averaging as nllNats), or 0 (the default) when the model works on [0, 1)^D directly.
 *
 *   bits/dim = (nllNats − logdetLogit) / (dims·ln 2) + 8
 *
 * which is `(nll − logdet + D·log 256) / (D·ln 2)` written so a uniform density on [0, 1)^D
 * (nll = logdet = 0) gives exactly 8.
 */
export function bitsPerDim(nllNats: number, dims: number, logdetLogit = 0): number {
  if (!Number.isSafeInteger(dims) || dims < 1)
    throw new ShapeError(`bitsPerDim: dims must be an integer ≥ 1, got ${dims}`);
  return (nllNats - logdetLogit) / (dims * Math.LN2) + PIXEL_BITS;
}

/**
 * Mean bits per dimension of a batch: per-sample NLLs in the model's (logit) space `[N]` and the
 * matching per-sample logit log-determinants `[N]` (omit for a model on [0, 1)^D).
 */
export function meanBitsPerDim(nllNats: ArrayLike<number>, dims: number, logdetLogit?: ArrayLike<number>): number {
  const n = nllNats.length;
  if (n === 0) throw new ShapeError('meanBitsPerDim: no samples');
  if (logdetLogit !== undefined && logdetLogit.length !== n) {
    throw new ShapeError(`meanBitsPerDim: ${n} NLLs but ${logdetLogit.length} log-determinants`);
  }
  let sum = 0;
  for (let i = 0; i < n; i++) sum += nllNats[i] - (logdetLogit === undefined ? 0 : logdetLogit[i]);
  return bitsPerDim(sum / n, dims);
}
