/**
 * The fused affine coupling of Real NVP (Dinh et al. 2017, "Density estimation using Real NVP") and
 * its hand-written backward, in plain TypeScript: the reference the native kernel is tested against.
 *
 * Shapes, row-major: `x [N, D]`, mask `b [D]` (each 0 or 1; 1 = the coordinate passes through),
 * `sRaw [N, D]` and `t [N, D]` (the conditioner network's outputs for each sample), `scale [D]` (a
 * learned per-dimension scale that bounds the log-scale). With `s = scale ⊙ tanh(sRaw)`:
 *
 *   forward   y = b⊙x + (1−b)⊙(x⊙exp(s) + t),        logdet[n] =  Σ_d (1−b_d)·s[n,d]
 *   inverse   x = b⊙y + (1−b)⊙((y − t)⊙exp(−s)),     logdet[n] = −Σ_d (1−b_d)·s[n,d]
 *
 * The backward of the forward takes dL/dy `[N, D]` and dL/dlogdet `[N]` and returns
 *
 *   dx     = dy ⊙ (b + (1−b)⊙exp(s))
 *   ds     = (1−b) ⊙ (dy ⊙ x ⊙ exp(s) + dlogdet[n])
 *   dsRaw  = ds ⊙ scale ⊙ (1 − tanh²(sRaw))
 *   dt     = (1−b) ⊙ dy
 *   dscale = Σ_n ds ⊙ tanh(sRaw)                               [D]
 *
 * (the gradient reaching sRaw and t flows on into the conditioner, which is not this kernel's
 * business; nor is the gradient through b⊙x into the conditioner, which the caller adds to dx).
 *
 * Results are stored in the dtype of the data (`x` or `y`) unless asked otherwise; every value is
 * computed in doubles and log-determinants and `dscale` are accumulated in doubles.
 */
import { ConfigError, ShapeError } from '../../errors.js';
import { alloc, type Dtype, dtypeOf, type FloatArray, toDtype } from './gru.js';

export interface CouplingDims {
  /** Samples N. */
  batch: number;
  /** Dimensions D of one sample. */
  dim: number;
}

/** Everything but the data: the mask, the conditioner's outputs and the learned scale. */
export interface CouplingParams {
  /** `[D]`, each exactly 0 or 1; 1 = passes through unchanged. */
  mask: FloatArray;
  /** `[N, D]` raw log-scales, squashed as `scale ⊙ tanh(sRaw)`. */
  sRaw: FloatArray;
  /** `[N, D]` translations. */
  t: FloatArray;
  /** `[D]` */
  scale: FloatArray;
}

export interface CouplingOptions {
  /** Storage type of the result; defaults to that of the data. */
  dtype?: Dtype;
}

export interface CouplingForward {
  /** `[N, D]` */
  y: FloatArray;
  /** `[N]` log|det ∂y/∂x| per sample. */
  logdet: FloatArray;
}

export interface CouplingInverse {
  /** `[N, D]` */
  x: FloatArray;
  /** `[N]` log|det ∂x/∂y| per sample: minus the forward's. */
  logdet: FloatArray;
}

/** Gradients of a scalar loss, stored in the dtype of `x`. */
export interface CouplingGrads {
  dx: FloatArray;
  dsRaw: FloatArray;
  dt: FloatArray;
  dscale: FloatArray;
}

function checkLength(what: string, a: FloatArray, want: number, shape: string): void {
  if (!(a instanceof Float32Array || a instanceof Float64Array)) {
    throw new ShapeError(`${what} must be a Float32Array or Float64Array`);
  }
  if (a.length !== want) throw new ShapeError(`${what} holds ${a.length} values; ${shape} needs ${want}`);
}

function checkInputs(fn: string, dims: CouplingDims, data: FloatArray, dataName: string, p: CouplingParams): void {
  for (const key of ['batch', 'dim'] as const) {
    const v = dims[key];
    const least = key === 'dim' ? 1 : 0;
    if (!Number.isSafeInteger(v) || v < least) {
      throw new ShapeError(`${fn}: dims.${key} must be an integer ≥ ${least}, got ${v}`);
    }
  }
  const { batch: N, dim: D } = dims;
  const nd = `[N ${N}, D ${D}]`;
  checkLength(`${fn}: ${dataName}`, data, N * D, nd);
  checkLength(`${fn}: mask`, p.mask, D, `[D ${D}]`);
  checkLength(`${fn}: sRaw`, p.sRaw, N * D, nd);
  checkLength(`${fn}: t`, p.t, N * D, nd);
  checkLength(`${fn}: scale`, p.scale, D, `[D ${D}]`);
  for (let d = 0; d < D; d++) {
    const b = p.mask[d];
    if (b !== 0 && b !== 1) throw new ConfigError(`${fn}: mask[${d}] is ${b}; a coupling mask holds only 0 and 1`);
  }
}

/** y and the per-sample log-determinant. */
export function couplingForward(
  dims: CouplingDims,
  x: FloatArray,
  p: CouplingParams,
  opts: CouplingOptions = {},
): CouplingForward {
  checkInputs('couplingForward', dims, x, 'x', p);
  const { batch: N, dim: D } = dims;
  const dtype = opts.dtype ?? dtypeOf(x);
  const y = alloc(dtype, N * D);
  const logdet = new Float64Array(N);
  const { mask, sRaw, t, scale } = p;
  for (let n = 0; n < N; n++) {
    let ld = 0;
    for (let d = 0; d < D; d++) {
      const i = n * D + d;
      if (mask[d] === 1) {
        y[i] = x[i];
      } else {
        const s = scale[d] * Math.tanh(sRaw[i]);
        y[i] = x[i] * Math.exp(s) + t[i];
        ld += s;
      }
    }
    logdet[n] = ld;
  }
  return { y, logdet: toDtype(logdet, dtype) };
}

/** x from y, and the inverse's log-determinant (minus the forward's). */
export function couplingInverse(
  dims: CouplingDims,
  y: FloatArray,
  p: CouplingParams,
  opts: CouplingOptions = {},
): CouplingInverse {
  checkInputs('couplingInverse', dims, y, 'y', p);
  const { batch: N, dim: D } = dims;
  const dtype = opts.dtype ?? dtypeOf(y);
  const x = alloc(dtype, N * D);
  const logdet = new Float64Array(N);
  const { mask, sRaw, t, scale } = p;
  for (let n = 0; n < N; n++) {
    let ld = 0;
    for (let d = 0; d < D; d++) {
      const i = n * D + d;
      if (mask[d] === 1) {
        x[i] = y[i];
      } else {
        const s = scale[d] * Math.tanh(sRaw[i]);
        x[i] = (y[i] - t[i]) * Math.exp(-s);
        ld -= s;
      }
    }
    logdet[n] = ld;
  }
  return { x, logdet: toDtype(logdet, dtype) };
}

/**
 * Backward of {@link couplingForward}: `dy [N, D]` is dL/dy and `dlogdet [N]` dL/dlogdet. Needs only
 * the forward's inputs (s is recomputed, which is cheaper than storing it).
 */
export function couplingBackward(
  dims: CouplingDims,
  x: FloatArray,
  p: CouplingParams,
  dy: FloatArray,
  dlogdet: FloatArray,
): CouplingGrads {
  checkInputs('couplingBackward', dims, x, 'x', p);
  const { batch: N, dim: D } = dims;
  checkLength('couplingBackward: dy', dy, N * D, `[N ${N}, D ${D}]`);
  checkLength('couplingBackward: dlogdet', dlogdet, N, `[N ${N}]`);
  const dtype = dtypeOf(x);
  const dx = alloc(dtype, N * D);
  const dsRaw = alloc(dtype, N * D);
  const dt = alloc(dtype, N * D);
  const dscale = new Float64Array(D);
  const { mask, sRaw, scale } = p;
  for (let n = 0; n < N; n++) {
    const dl = dlogdet[n];
    for (let d = 0; d < D; d++) {
      const i = n * D + d;
      const g = dy[i];
      if (mask[d] === 1) {
        dx[i] = g;
        // dsRaw and dt stay 0: masked coordinates ignore s and t.
      } else {
        const th = Math.tanh(sRaw[i]);
        const e = Math.exp(scale[d] * th);
        const ds = g * x[i] * e + dl;
        dx[i] = g * e;
        dt[i] = g;
        dsRaw[i] = ds * scale[d] * (1 - th * th);
        dscale[d] += ds * th;
      }
    }
  }
  return { dx, dsRaw, dt, dscale: toDtype(dscale, dtype) };
}
