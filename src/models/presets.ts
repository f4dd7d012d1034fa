/**
 * The architectures of the literature as FlowNet specs (`src/backend/flownet-types.ts`), from small
 * typed configs with sane defaults:
 *
 * - {@link realNvpVectorSpec}: Real NVP on vectors (Dinh et al. 2017): affine couplings on alternating
 *   coordinates (parity 0, 1, 0, …) with MLP conditioners; normal base. What {@link RealNVP} runs.
 * - {@link realNvpImageSpec}: Real NVP's multi-scale architecture (Dinh et al. 2017): per scale, 3
 *   affine couplings with alternating checkerboard masks → squeeze → 3 with alternating channel masks →
 *   factor out half the channels; the final scale has 4 checkerboard couplings. ResNet conditioners
 *   with weight norm; actnorm or batch norm after each coupling.
 * - {@link glowSpec}: Glow (Kingma & Dhariwal 2018): per level, squeeze → K × (actnorm → invertible 1×1
 *   conv → affine coupling) → split (not after the last level).
 * - {@link niceSpec}: NICE (Dinh et al. 2015): additive couplings with alternating masks and MLP
 *   conditioners, then a diagonal scaling; logistic base.
 * - {@link mafSpec} / {@link iafSpec}: stacks of MADE layers whose orders alternate (Papamakarios et al.
 *   2017; Kingma et al. 2016).
 */

import type { FlowNetSpec, LayerSpec, NetSpec } from '../backend/flownet-types.js';
import { describeValue, MAX_TENSORS } from '../backend/limits.js';
import { ConfigError } from '../errors.js';
import { canonicalJson } from '../util/canonical-json.js';

/** `[C, H, W]` of one image. */
export type Shape3 = [number, number, number];

/** Architecture of a multi-scale image Real NVP, for {@link realNvpImageSpec} and {@link RealNVPImage}. */
export interface RealNvpImageConfig {
  /** `[C, H, W]` of one image. */
  shape: Shape3;
  /** Number of scales (≥ 1); every scale but the last squeezes, so H and W must halve evenly. Default 2. */
  scales?: number;
  /** ResNet width. Default 32. */
  channels?: number;
  /** Residual blocks per conditioner. Default 1 (sized for CPUs; the paper used 8 on CIFAR-10). */
  blocks?: number;
  /** Normalisation layer after each coupling. Default 'actnorm'. */
  norm?: 'actnorm' | 'batchnorm' | 'none';
  /** Normalisation inside the ResNet conditioners: weight norm or batch norm (Real NVP used both). Default 'weight'. */
  convNorm?: 'weight' | 'batch' | 'none';
  /** Context values per example (e.g. 10 for a one-hot class). Default 0. */
  context?: number;
}

/** Architecture of a Glow flow, for {@link glowSpec} and {@link Glow}. */
export interface GlowConfig {
  shape: Shape3;
  /** Levels L (each starts with a squeeze). Default 2. */
  levels?: number;
  /** Flow steps K per level. Default 8. */
  steps?: number;
  /** Conditioner width. Default 64. */
  channels?: number;
  /** Residual blocks per conditioner. Default 1. */
  blocks?: number;
  context?: number;
}

/** Architecture of a vector Real NVP, for {@link realNvpVectorSpec} (and, with every field set, {@link RealNVP}). */
export interface RealNvpVectorConfig {
  /** Data dimension D (≥ 2). */
  dim: number;
  /** Affine couplings K. Default 8. */
  couplings?: number;
  /** Conditioner width H. Default 64. */
  hidden?: number;
  /** Hidden layers of each conditioner MLP. Default 2. */
  depth?: number;
  /** Context values per example. Default 0. */
  context?: number;
}

/** Architecture of a vector flow (NICE, MAF, IAF), for {@link niceSpec}, {@link mafSpec} and {@link iafSpec}. */
export interface VectorFlowConfig {
  /** Data dimension D, or `[C, H, W]` of images treated as flat vectors. */
  dim: number | Shape3;
  /** Couplings (NICE) or MADE layers (MAF/IAF). Default 4 (NICE) or 5. */
  layers?: number;
  /** Hidden width. Default 256 (NICE) or 64. */
  hidden?: number;
  /** Hidden layers per net. Default 4 (NICE) or 2. */
  depth?: number;
  context?: number;
}

function whole(name: string, v: number, min: number): number {
  if (!Number.isSafeInteger(v) || v < min)
    throw new ConfigError(`${name} must be a whole number ≥ ${min}, got ${describeValue(v)}`);
  return v;
}

function checkShape(shape: Shape3): Shape3 {
  if (!Array.isArray(shape) || shape.length !== 3)
    throw new ConfigError(
      `shape must be [C, H, W], got ${Array.isArray(shape) ? JSON.stringify(shape) : describeValue(shape)}`,
    );
  for (let i = 0; i < 3; i++) whole(`shape[${i}]`, shape[i], 1);
  return shape;
}

function vectorShape(dim: number | Shape3): Shape3 {
  return Array.isArray(dim) ? checkShape(dim) : [whole('dim', dim, 2), 1, 1];
}

/**
 * The FlowNet spec of the vector Real NVP (Dinh et al. 2017), shape `[D, 1, 1]`: K affine couplings,
 * coupling k with the alternating mask of parity k mod 2 (coordinate d passes through when
 * (d + k) mod 2 = 0) and an MLP conditioner Linear(D → H) → ReLU → [Linear(H → H) → ReLU] × (depth − 1)
 * → Linear(H → 2D) = [s_raw | t] on the masked input, s = scale ⊙ tanh(s_raw); normal base. The
 * parameters of coupling k are `layers.{k}.net.{j}.weight|bias` and `layers.{k}.scale [D]`.
 */
export function realNvpVectorSpec(cfg: RealNvpVectorConfig): FlowNetSpec {
  const D = whole('dim', cfg.dim, 2);
  const net: NetSpec = {
    type: 'mlp',
    hidden: whole('hidden', cfg.hidden ?? 64, 1),
    depth: whole('depth', cfg.depth ?? 2, 1),
  };
  const couplings = whole('couplings', cfg.couplings ?? 8, 1);
  // Each coupling has at least 5 tensors: refuse a count no flow may have before building its layers.
  if (couplings > MAX_TENSORS)
    throw new ConfigError(`couplings ${couplings} gives more than ${MAX_TENSORS} tensors; make it smaller`);
  const layers: LayerSpec[] = [];
  for (let k = 0; k < couplings; k++) {
    layers.push({ type: 'coupling', mask: 'alternate', parity: (k % 2) as 0 | 1, affine: true, net });
  }
  return { shape: [D, 1, 1], context: whole('context', cfg.context ?? 0, 0), base: 'normal', layers };
}

/**
 * The config whose {@link realNvpVectorSpec} is `spec` (every field set), or null when `spec` is not a
 * vector Real NVP (another stack of layers, another base, a shape that is not `[D, 1, 1]`).
 */
export function realNvpVectorConfigOf(spec: FlowNetSpec): Required<RealNvpVectorConfig> | null {
  const first = Array.isArray(spec?.layers) ? spec.layers[0] : undefined;
  if (first?.type !== 'coupling' || first.net?.type !== 'mlp' || !Array.isArray(spec.shape)) return null;
  const cfg = {
    dim: spec.shape[0],
    couplings: spec.layers.length,
    hidden: first.net.hidden,
    depth: first.net.depth,
    context: spec.context,
  };
  try {
    return canonicalJson(realNvpVectorSpec(cfg)) === canonicalJson(spec) ? cfg : null;
  } catch (e) {
    if (e instanceof ConfigError) return null;
    throw e;
  }
}

/** The FlowNet spec of Real NVP's multi-scale image architecture (Dinh et al. 2016). */
export function realNvpImageSpec(cfg: RealNvpImageConfig): FlowNetSpec {
  const shape = checkShape(cfg.shape);
  const scales = whole('scales', cfg.scales ?? 2, 1);
  const net: NetSpec = {
    type: 'resnet',
    channels: whole('channels', cfg.channels ?? 32, 1),
    blocks: whole('blocks', cfg.blocks ?? 1, 0),
    norm: cfg.convNorm ?? 'weight',
  };
  if (!['weight', 'batch', 'none'].includes(net.norm))
    throw new ConfigError(`convNorm must be weight, batch or none, got ${JSON.stringify(net.norm)}`);
  const norm = cfg.norm ?? 'actnorm';
  if (!['actnorm', 'batchnorm', 'none'].includes(norm))
    throw new ConfigError(`norm must be actnorm, batchnorm or none, got ${JSON.stringify(norm)}`);
  const layers: LayerSpec[] = [];
  const coupling = (mask: 'checkerboard' | 'channel', i: number) => {
    layers.push({ type: 'coupling', mask, parity: (i % 2) as 0 | 1, affine: true, net });
    if (norm === 'actnorm') layers.push({ type: 'actnorm' });
    if (norm === 'batchnorm') layers.push({ type: 'batchnorm', momentum: 0.05, eps: 1e-4 });
  };
  for (let s = 0; s < scales - 1; s++) {
    for (let i = 0; i < 3; i++) coupling('checkerboard', i);
    layers.push({ type: 'squeeze' });
    for (let i = 0; i < 3; i++) coupling('channel', i);
    layers.push({ type: 'split' });
  }
  for (let i = 0; i < 4; i++) coupling('checkerboard', i);
  return { shape, context: whole('context', cfg.context ?? 0, 0), base: 'normal', layers };
}

/** The FlowNet spec of Glow (Kingma & Dhariwal 2018): multi-scale levels of actnorm, invertible 1×1 convolution and affine coupling steps. */
export function glowSpec(cfg: GlowConfig): FlowNetSpec {
  const shape = checkShape(cfg.shape);
  const levels = whole('levels', cfg.levels ?? 2, 1);
  const steps = whole('steps', cfg.steps ?? 8, 1);
  const net: NetSpec = {
    type: 'resnet',
    channels: whole('channels', cfg.channels ?? 64, 1),
    blocks: whole('blocks', cfg.blocks ?? 1, 0),
    norm: 'weight',
  };
  const layers: LayerSpec[] = [];
  for (let l = 0; l < levels; l++) {
    layers.push({ type: 'squeeze' });
    for (let k = 0; k < steps; k++) {
      layers.push({ type: 'actnorm' }, { type: 'inv1x1' });
      layers.push({ type: 'coupling', mask: 'channel', parity: (k % 2) as 0 | 1, affine: true, net });
    }
    if (l < levels - 1) layers.push({ type: 'split' });
  }
  return { shape, context: whole('context', cfg.context ?? 0, 0), base: 'normal', layers };
}

/** The FlowNet spec of NICE (Dinh et al. 2014): additive couplings on alternating coordinates, then a diagonal scale, on a logistic base. */
export function niceSpec(cfg: VectorFlowConfig): FlowNetSpec {
  const shape = vectorShape(cfg.dim);
  const net: NetSpec = {
    type: 'mlp',
    hidden: whole('hidden', cfg.hidden ?? 256, 1),
    depth: whole('depth', cfg.depth ?? 4, 1),
  };
  const layers: LayerSpec[] = [];
  for (let i = 0; i < whole('layers', cfg.layers ?? 4, 1); i++) {
    layers.push({ type: 'coupling', mask: 'alternate', parity: (i % 2) as 0 | 1, affine: false, net });
  }
  layers.push({ type: 'scale' });
  return { shape, context: whole('context', cfg.context ?? 0, 0), base: 'logistic', layers };
}

function madeStack(kind: 'maf' | 'iaf', cfg: VectorFlowConfig): FlowNetSpec {
  const shape = vectorShape(cfg.dim);
  const hidden = whole('hidden', cfg.hidden ?? 64, 1);
  const depth = whole('depth', cfg.depth ?? 2, 1);
  const layers: LayerSpec[] = [];
  for (let i = 0; i < whole('layers', cfg.layers ?? 5, 1); i++) {
    layers.push({ type: 'made', kind, hidden, depth, order: i % 2 === 0 ? 'forward' : 'reverse' });
  }
  return { shape, context: whole('context', cfg.context ?? 0, 0), base: 'normal', layers };
}

/** MAF: fast density (one pass per layer), sampling D passes per layer. */
export function mafSpec(cfg: VectorFlowConfig): FlowNetSpec {
  return madeStack('maf', cfg);
}

/** IAF: fast sampling (one pass per layer), density D passes per layer (so keep D small to train it). */
export function iafSpec(cfg: VectorFlowConfig): FlowNetSpec {
  return madeStack('iaf', cfg);
}
