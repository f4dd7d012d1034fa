/**
 * The pure-TypeScript Real NVP flow (see `../flow-types.ts` for the model): conditioner MLPs with a
 * hand-written backward, the affine couplings of `coupling.ts`, a N(0, I) base, and AdamW + global-norm
 * clipping exactly like the char-LM JS backend. The reference the native flow is tested against.
 */
import { ConfigError, ShapeError } from '../../errors.js';
import { couplingMask, type FlowBackend, type FlowShape, flowParamInfo } from '../flow-types.js';
import { describeValue } from '../limits.js';
import type { OptimConfig, StepStats } from '../types.js';
import { couplingBackward, couplingForward, couplingInverse } from './coupling.js';
import { type ArrayOf, alloc, type Dtype, type FloatArray } from './gru.js';
import { JsParameters } from './parameters.js';

export type FlowParams = Record<string, FloatArray>;

const LOG_2PI = Math.log(2 * Math.PI);

export function checkFlowShape(shape: FlowShape): void {
  for (const key of ['dim', 'couplings', 'hidden', 'depth'] as const) {
    const v = shape[key];
    if (!Number.isSafeInteger(v) || v < 1)
      throw new ConfigError(`flow shape: ${key} must be an integer ≥ 1, got ${describeValue(v)}`);
  }
  if (shape.dim < 2)
    throw new ConfigError(`flow shape: dim must be ≥ 2 (a coupling needs two halves), got ${shape.dim}`);
}

/** Checks `x` holds `[batch, D]` values. */
export function checkBatch(fn: string, shape: FlowShape, x: FloatArray, batch: number): void {
  if (!(x instanceof Float32Array || x instanceof Float64Array)) {
    throw new ShapeError(`${fn}: data must be a Float32Array or Float64Array`);
  }
  if (!Number.isSafeInteger(batch) || batch < 0)
    throw new ShapeError(`${fn}: batch must be an integer ≥ 0, got ${batch}`);
  if (x.length !== batch * shape.dim) {
    throw new ShapeError(
      `${fn}: data holds ${x.length} values; [batch ${batch}, dim ${shape.dim}] needs ${batch * shape.dim}`,
    );
  }
}

interface MlpCache {
  /** Inputs of each layer: acts[0] = masked x, acts[j] = ReLU output of layer j−1. */
  acts: Float64Array[];
  sRaw: Float64Array;
  t: Float64Array;
}

/** Conditioner MLP of coupling i on `xm [N, D]` (already masked). */
function mlpForward(shape: FlowShape, params: FlowParams, i: number, xm: Float64Array, N: number): MlpCache {
  const { dim: D, hidden: H, depth } = shape;
  const acts: Float64Array[] = [xm];
  let inp = xm;
  let inDim = D;
  let out = xm;
  for (let j = 0; j <= depth; j++) {
    const outDim = j === depth ? 2 * D : H;
    const W = params[`couplings.${i}.net.${j}.weight`];
    const b = params[`couplings.${i}.net.${j}.bias`];
    out = new Float64Array(N * outDim);
    for (let n = 0; n < N; n++) {
      for (let o = 0; o < outDim; o++) {
        let s = b[o];
        const wo = o * inDim;
        const io = n * inDim;
        for (let k = 0; k < inDim; k++) s += W[wo + k] * inp[io + k];
        out[n * outDim + o] = j === depth ? s : Math.max(s, 0);
      }
    }
    if (j < depth) acts.push(out);
    inp = out;
    inDim = outDim;
  }
  const sRaw = new Float64Array(N * D);
  const t = new Float64Array(N * D);
  for (let n = 0; n < N; n++) {
    for (let d = 0; d < D; d++) {
      sRaw[n * D + d] = out[n * 2 * D + d];
      t[n * D + d] = out[n * 2 * D + D + d];
    }
  }
  return { acts, sRaw, t };
}

/** Backward of the MLP: accumulates weight grads into `grads` and returns d(masked input). */
function mlpBackward(
  shape: FlowShape,
  params: FlowParams,
  grads: Record<string, Float64Array>,
  i: number,
  cache: MlpCache,
  dsRaw: FloatArray,
  dt: FloatArray,
  N: number,
): Float64Array {
  const { dim: D, hidden: H, depth } = shape;
  let dout = new Float64Array(N * 2 * D);
  for (let n = 0; n < N; n++) {
    for (let d = 0; d < D; d++) {
      dout[n * 2 * D + d] = dsRaw[n * D + d];
      dout[n * 2 * D + D + d] = dt[n * D + d];
    }
  }
  for (let j = depth; j >= 0; j--) {
    const outDim = j === depth ? 2 * D : H;
    const inDim = j === 0 ? D : H;
    const W = params[`couplings.${i}.net.${j}.weight`];
    const gW = grads[`couplings.${i}.net.${j}.weight`];
    const gb = grads[`couplings.${i}.net.${j}.bias`];
    const inp = cache.acts[j];
    const din = new Float64Array(N * inDim);
    for (let n = 0; n < N; n++) {
      for (let o = 0; o < outDim; o++) {
        const g = dout[n * outDim + o];
        if (g === 0) continue;
        gb[o] += g;
        const wo = o * inDim;
        const io = n * inDim;
        for (let k = 0; k < inDim; k++) {
          gW[wo + k] += g * inp[io + k];
          din[io + k] += g * W[wo + k];
        }
      }
    }
    if (j > 0) {
      // ReLU of the layer below: its output is inp (= acts[j]).
      for (let q = 0; q < din.length; q++) if (inp[q] <= 0) din[q] = 0;
    }
    dout = din;
  }
  return dout;
}

function masked(x: FloatArray, mask: Float32Array, N: number, D: number): Float64Array {
  const xm = new Float64Array(N * D);
  for (let n = 0; n < N; n++) for (let d = 0; d < D; d++) xm[n * D + d] = mask[d] === 1 ? x[n * D + d] : 0;
  return xm;
}

/** z = f(x) and per-sample log-det, computed in doubles, stored in `dtype`. */
export function flowEncode<D extends Dtype>(
  shape: FlowShape,
  params: FlowParams,
  x: FloatArray,
  batch: number,
  dtype: D,
): { z: ArrayOf<D>; logdet: ArrayOf<D> } {
  checkBatch('encode', shape, x, batch);
  const { dim: Dm, couplings: K } = shape;
  let h: Float64Array = Float64Array.from(x);
  const logdet = new Float64Array(batch);
  for (let i = 0; i < K; i++) {
    const mask = couplingMask(Dm, i);
    const { sRaw, t } = mlpForward(shape, params, i, masked(h, mask, batch, Dm), batch);
    const r = couplingForward({ batch, dim: Dm }, h, { mask, sRaw, t, scale: params[`couplings.${i}.scale`] });
    h = r.y as Float64Array;
    for (let n = 0; n < batch; n++) logdet[n] += r.logdet[n];
  }
  const z = alloc(dtype, h.length);
  z.set(h);
  const ld = alloc(dtype, batch);
  ld.set(logdet);
  return { z, logdet: ld };
}

/** x = f⁻¹(z) and per-sample log-det of the inverse. */
export function flowDecode<D extends Dtype>(
  shape: FlowShape,
  params: FlowParams,
  z: FloatArray,
  batch: number,
  dtype: D,
): { x: ArrayOf<D>; logdet: ArrayOf<D> } {
  checkBatch('decode', shape, z, batch);
  const { dim: Dm, couplings: K } = shape;
  let h: Float64Array = Float64Array.from(z);
  const logdet = new Float64Array(batch);
  for (let i = K - 1; i >= 0; i--) {
    const mask = couplingMask(Dm, i);
    // Masked coordinates pass through unchanged, so the conditioner sees the same input as forward.
    const { sRaw, t } = mlpForward(shape, params, i, masked(h, mask, batch, Dm), batch);
    const r = couplingInverse({ batch, dim: Dm }, h, { mask, sRaw, t, scale: params[`couplings.${i}.scale`] });
    h = r.x as Float64Array;
    for (let n = 0; n < batch; n++) logdet[n] += r.logdet[n];
  }
  const x = alloc(dtype, h.length);
  x.set(h);
  const ld = alloc(dtype, batch);
  ld.set(logdet);
  return { x, logdet: ld };
}

/** Per-sample log p(x) in nats. */
export function flowLogProb<D extends Dtype>(
  shape: FlowShape,
  params: FlowParams,
  x: FloatArray,
  batch: number,
  dtype: D,
): ArrayOf<D> {
  const { z, logdet } = flowEncode(shape, params, x, batch, 'f64');
  const Dm = shape.dim;
  const out = alloc(dtype, batch);
  for (let n = 0; n < batch; n++) {
    let sq = 0;
    for (let d = 0; d < Dm; d++) sq += z[n * Dm + d] ** 2;
    out[n] = -0.5 * sq - 0.5 * Dm * LOG_2PI + logdet[n];
  }
  return out;
}

/**
 * Mean NLL of `x [batch, D]` and its gradient for every parameter, in doubles; gradients are stored in
 * `dtype` (use 'f64' with Float64Array parameters for finite-difference checks).
 */
export function flowLossAndGrads<D extends Dtype>(
  shape: FlowShape,
  params: FlowParams,
  x: FloatArray,
  batch: number,
  dtype: D,
): { loss: number; grads: Record<string, ArrayOf<D>> } {
  checkBatch('lossAndGrads', shape, x, batch);
  if (batch < 1) throw new ShapeError('lossAndGrads: batch must be ≥ 1');
  const { dim: Dm, couplings: K } = shape;
  const N = batch;
  // Forward, keeping each coupling's input and conditioner cache.
  const inputs: Float64Array[] = [];
  const caches: MlpCache[] = [];
  let h: Float64Array = Float64Array.from(x);
  const logdet = new Float64Array(N);
  for (let i = 0; i < K; i++) {
    const mask = couplingMask(Dm, i);
    const cache = mlpForward(shape, params, i, masked(h, mask, N, Dm), N);
    inputs.push(h);
    caches.push(cache);
    const r = couplingForward({ batch: N, dim: Dm }, h, {
      mask,
      sRaw: cache.sRaw,
      t: cache.t,
      scale: params[`couplings.${i}.scale`],
    });
    h = r.y as Float64Array;
    for (let n = 0; n < N; n++) logdet[n] += r.logdet[n];
  }
  let loss = 0;
  for (let n = 0; n < N; n++) {
    let sq = 0;
    for (let d = 0; d < Dm; d++) sq += h[n * Dm + d] ** 2;
    loss += 0.5 * sq + 0.5 * Dm * LOG_2PI - logdet[n];
  }
  loss /= N;
  // Backward: L = mean(½‖z‖² − logdet) + const.
  const g64: Record<string, Float64Array> = {};
  for (const p of flowParamInfo(shape)) g64[p.name] = new Float64Array(p.shape.reduce((a, b) => a * b, 1));
  let dy: Float64Array = new Float64Array(N * Dm);
  for (let q = 0; q < dy.length; q++) dy[q] = h[q] / N;
  const dlogdet = new Float64Array(N).fill(-1 / N);
  for (let i = K - 1; i >= 0; i--) {
    const mask = couplingMask(Dm, i);
    const cache = caches[i];
    const scale = params[`couplings.${i}.scale`];
    const g = couplingBackward(
      { batch: N, dim: Dm },
      inputs[i],
      { mask, sRaw: cache.sRaw, t: cache.t, scale },
      dy,
      dlogdet,
    );
    const gs = g64[`couplings.${i}.scale`];
    for (let d = 0; d < Dm; d++) gs[d] += g.dscale[d];
    const dxm = mlpBackward(shape, params, g64, i, cache, g.dsRaw, g.dt, N);
    const dx = new Float64Array(N * Dm);
    for (let n = 0; n < N; n++) {
      for (let d = 0; d < Dm; d++) {
        const q = n * Dm + d;
        dx[q] = g.dx[q] + (mask[d] === 1 ? dxm[q] : 0);
      }
    }
    dy = dx;
  }
  const grads = {} as Record<string, ArrayOf<D>>;
  for (const [name, g] of Object.entries(g64)) {
    const a = alloc(dtype, g.length);
    a.set(g);
    grads[name] = a;
  }
  return { loss, grads };
}

export class JsRealNvp extends JsParameters implements FlowBackend {
  readonly kind = 'js' as const;
  readonly shape: FlowShape;

  /** A flow with every parameter zero; callers load an initialisation with `setParam`. */
  constructor(shape: FlowShape) {
    checkFlowShape(shape);
    const frozen = Object.freeze({
      dim: shape.dim,
      couplings: shape.couplings,
      hidden: shape.hidden,
      depth: shape.depth,
    });
    super(flowParamInfo(frozen), 'Real NVP flow');
    this.shape = frozen;
  }

  async trainStep(x: Float32Array, batch: number, opt: OptimConfig): Promise<StepStats> {
    this.checkLr(opt);
    const { loss, grads } = flowLossAndGrads(this.shape, this.params, x, batch, 'f32');
    return this.optimizerStep(loss, grads, opt);
  }

  async lossAndGrads(x: Float32Array, batch: number): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
    return flowLossAndGrads(this.shape, this.params, x, batch, 'f32');
  }

  async logProb(x: Float32Array, batch: number): Promise<Float32Array> {
    return flowLogProb(this.shape, this.params, x, batch, 'f32');
  }

  encode(x: Float32Array, batch: number): { z: Float32Array; logdet: Float32Array } {
    return flowEncode(this.shape, this.params, x, batch, 'f32');
  }

  decode(z: Float32Array, batch: number): { x: Float32Array; logdet: Float32Array } {
    return flowDecode(this.shape, this.params, z, batch, 'f32');
  }
}
