/**
 * AdamW (Loshchilov & Hutter, 2019) in PyTorch's update order, and clipping by global norm: the
 * reference for crates/arflow-core/src/optim.rs. Moments are stored in f32, as the native optimizer
 * stores them; the arithmetic runs in doubles.
 */
import { ShapeError } from '../../errors.js';
import type { OptimConfig, ParamInfo } from '../types.js';
import type { FloatArray } from './gru.js';

/** First and second moments by parameter name (PyTorch's exp_avg, exp_avg_sq) and the step count. */
export interface AdamWState {
  expAvg: Record<string, Float32Array>;
  expAvgSq: Record<string, Float32Array>;
  step: number;
}

/** Zero moments for every parameter of `info`, step 0. */
export function adamwState(info: ParamInfo[]): AdamWState {
  const expAvg: Record<string, Float32Array> = {};
  const expAvgSq: Record<string, Float32Array> = {};
  for (const { name, shape } of info) {
    const n = shape.reduce((a, d) => a * d, 1);
    expAvg[name] = new Float32Array(n);
    expAvgSq[name] = new Float32Array(n);
  }
  return { expAvg, expAvgSq, step: 0 };
}

/** The L2 norm of all gradients taken together. */
export function globalNorm(grads: Record<string, FloatArray>): number {
  let sq = 0;
  for (const g of Object.values(grads)) {
    for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  }
  return Math.sqrt(sq);
}

/** The factor gradients are scaled by so that their global norm does not exceed `clip` (0: off). */
export function clipScale(norm: number, clip: number): number {
  return clip > 0 && norm > clip ? clip / (norm + 1e-6) : 1;
}

/**
 * One update of every parameter in `state`, in place: gradients scaled by `scale` (the clipping
 * factor), then m ← β1 m + (1 − β1) g, v ← β2 v + (1 − β2) g², and
 * p ← p (1 − lr·wd) − lr · m̂ / (√v̂ + eps) with m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t).
 * Every size is checked before anything is written.
 */
export function update(
  state: AdamWState,
  params: Record<string, FloatArray>,
  grads: Record<string, FloatArray>,
  cfg: OptimConfig,
  scale: number,
): void {
  const names = Object.keys(state.expAvg);
  for (const name of names) {
    const n = state.expAvg[name].length;
    const p = params[name];
    const g = grads[name];
    if (p === undefined || p.length !== n || g === undefined || g.length !== n) {
      throw new ShapeError(
        `adamw: parameter ${name} needs ${n} values and as many gradients, got ${p?.length ?? 'none'} and ${g?.length ?? 'none'}`,
      );
    }
  }
  state.step += 1;
  const { lr, beta1, beta2, eps, weightDecay } = cfg;
  const bc1 = 1 - beta1 ** state.step;
  const bc2 = 1 - beta2 ** state.step;
  const decay = 1 - lr * weightDecay;
  for (const name of names) {
    const p = params[name];
    const g = grads[name];
    const m = state.expAvg[name];
    const v = state.expAvgSq[name];
    for (let i = 0; i < p.length; i++) {
      const gi = g[i] * scale;
      m[i] = beta1 * m[i] + (1 - beta1) * gi;
      v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
      // Read the moments back from their f32 storage, as the native update uses the stored tensors.
      p[i] = p[i] * decay - (m[i] / bc1 / (Math.sqrt(v[i] / bc2) + eps)) * lr;
    }
  }
}
