/**
 * The contract every backend of the vector Real NVP flow implements (Dinh et al., 2016): the native one
 * (Rust on candle) and the pure-TypeScript reference.
 *
 * Model. `f: x ↦ z` applies couplings i = 0 … K−1 in order; coupling i is the affine coupling of
 * `src/backend/js/coupling.ts` with mask `m_i[d] = (d + i) % 2 === 0 ? 1 : 0` (1 = passes through) and
 * a conditioner MLP on `m_i ⊙ x`:
 *   Linear(D → H) → ReLU → [Linear(H → H) → ReLU] × (depth − 1) → Linear(H → 2D) = [s_raw | t]
 * with `s = scale_i ⊙ tanh(s_raw)`. Base distribution N(0, I):
 *   log p(x) = −½‖z‖² − (D/2)·log(2π) + Σ_i logdet_i(x).
 * The inverse `f⁻¹: z ↦ x` applies the inverse couplings in reverse order.
 *
 * Parameters (PyTorch layout, `state_dict`-style names), for i < K and j ≤ depth:
 *   couplings.{i}.net.{j}.weight [out, in]   couplings.{i}.net.{j}.bias [out]   couplings.{i}.scale [D]
 * where net.0 is D → H, net.1 … net.{depth−1} are H → H, and net.{depth} is H → 2D.
 * Batches are row-major `[batch, D]`.
 */
import type { OptimConfig, OptimMoment, ParamInfo, StepStats } from './types.js';

export interface FlowShape {
  /** Data dimension D (≥ 2). */
  dim: number;
  /** Number of affine couplings K (≥ 1). */
  couplings: number;
  /** Conditioner width H. */
  hidden: number;
  /** Hidden layers of the conditioner MLP (≥ 1). */
  depth: number;
}

export interface FlowBackend {
  readonly kind: 'native' | 'js';
  readonly shape: FlowShape;
  /** Every parameter, in the order above (coupling by coupling: net.0 … net.depth, then scale). */
  paramInfo(): ParamInfo[];
  getParam(name: string): Float32Array;
  setParam(name: string, data: Float32Array): void;
  getOptimState(which: OptimMoment, name: string): Float32Array;
  setOptimState(which: OptimMoment, name: string, data: Float32Array): void;
  getOptimStep(): number;
  setOptimStep(step: number): void;
  /**
   * One AdamW step (same semantics as the char LM: global-norm clipping, then PyTorch's AdamW) on the
   * mean negative log-likelihood (nats) of the batch `x [batch, D]`. A non-finite loss or gradient
   * rejects with DivergenceError and changes nothing.
   */
  trainStep(x: Float32Array, batch: number, opt: OptimConfig): Promise<StepStats>;
  /** Mean NLL and its gradient for every parameter; changes nothing. */
  lossAndGrads(x: Float32Array, batch: number): Promise<{ loss: number; grads: Record<string, Float32Array> }>;
  /** Per-sample log p(x) in nats, `[batch]`. */
  logProb(x: Float32Array, batch: number): Promise<Float32Array>;
  /** z = f(x) and the per-sample log|det ∂f/∂x|. */
  encode(x: Float32Array, batch: number): { z: Float32Array; logdet: Float32Array };
  /** x = f⁻¹(z) and the per-sample log|det ∂f⁻¹/∂z| (= −logdet of f at x). */
  decode(z: Float32Array, batch: number): { x: Float32Array; logdet: Float32Array };
}

/** Parameter names and shapes of a flow of this shape, in order. */
export function flowParamInfo(s: FlowShape): ParamInfo[] {
  const info: ParamInfo[] = [];
  for (let i = 0; i < s.couplings; i++) {
    for (let j = 0; j <= s.depth; j++) {
      const input = j === 0 ? s.dim : s.hidden;
      const output = j === s.depth ? 2 * s.dim : s.hidden;
      info.push(
        { name: `couplings.${i}.net.${j}.weight`, shape: [output, input] },
        { name: `couplings.${i}.net.${j}.bias`, shape: [output] },
      );
    }
    info.push({ name: `couplings.${i}.scale`, shape: [s.dim] });
  }
  return info;
}

/** Mask of coupling `i`: 1 where the coordinate passes through (and feeds the conditioner). */
export function couplingMask(dim: number, i: number): Float32Array {
  return Float32Array.from({ length: dim }, (_, d) => ((d + i) % 2 === 0 ? 1 : 0));
}
