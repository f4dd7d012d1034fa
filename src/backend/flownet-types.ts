/**
 * The contract of the general flow network ("FlowNet"): a stack of invertible layers described by a JSON
 * spec, implemented natively (Rust on candle, `crates/arflow-core/src/flow/net/`) and by the
 * pure-TypeScript reference (`src/backend/js/flownet.ts`, float64, the test oracle), which
 * `src/backend/js/flownet-backend.ts` turns into a trainable backend for the layers it has gradients for
 * (`src/backend/js/flownet-grad.ts`). The vector and image Real NVP, Glow, NICE, MAF and IAF are all
 * presets of this spec (`src/models/presets.ts`); {@link FlowNetBackend} is what a backend offers.
 *
 * ## Tensors
 * Data is `[N, C, H, W]` row-major (vectors are `[N, D, 1, 1]`), flattened per example to `D = C·H·W`
 * values. The optional context is `[N, K]` (K = `spec.context`, e.g. a one-hot class label).
 * Layers map data → latent (`forward`); `inverse` maps back. Each layer also returns the per-example
 * `log|det ∂y/∂x|`; the inverse returns the negated value.
 *
 * ## Layers (k = position in `spec.layers`; parameter names are prefixed `layers.{k}.`)
 * - `coupling` {mask, parity, affine, net}: mask b over `[C, H, W]` (1 = passes through, and is all the
 *   conditioner sees):
 *     checkerboard: b[c,h,w] = (h + w + parity) % 2 == 0
 *     channel:      b[c,h,w] = (c < C/2) XOR (parity == 1)          (C must be even)
 *     alternate:    b[d]     = (d + parity) % 2 == 0 on the flat index d = c·H·W + h·W + w
 *     halves:       b[d]     = (d < D/2) XOR (parity == 1)            (first or second half of the flat values)
 *     random:       b[d]     = m[d] XOR (parity == 1) with m the buffer `mask [C, H, W]` (0/1, at least one
 *                   of each): native initialisation draws ⌊D/2⌋ ones at seeded random places; the reference
 *                   starts it at the alternating pattern (d % 2 == 0). It is the coupling's first buffer,
 *                   before any of its conditioner's.
 *   The conditioner gets x ⊙ b (and the context) and returns `[s_raw | t]` (affine) or `t` (additive),
 *   each `[N, C, H, W]` (as channels 0..C and C..2C of a `[N, 2C, H, W]` output, or the first and second
 *   halves of a `[N, 2D]` MLP output). Affine: s = scale[c] · tanh(s_raw),
 *     y = b⊙x + (1−b)⊙(x⊙exp(s) + t),   logdet = Σ (1−b)⊙s.
 *   Additive (NICE): y = b⊙x + (1−b)⊙(x + t), logdet = 0 (no `scale` parameter).
 *   Parameters: `scale [C]` (affine only), and the net's (below).
 * - `actnorm`: y = (x + bias[c]) · exp(logs[c]); logdet = H·W·Σ_c logs[c]. Parameters `bias [C]`,
 *   `logs [C]`; buffer `initialized [1]`. Data-dependent initialisation (Glow): the first training batch
 *   reaching an uninitialised actnorm sets bias = −mean_c, logs = −log(std_c + 1e-6) (mean and biased
 *   std over N, H, W of that layer's input), then `initialized = 1`.
 * - `batchnorm` {momentum, eps}: training: μ_c, σ²_c = mean and biased variance over N, H, W of the batch;
 *   eval and inverse: the buffers `running_mean [C]`, `running_var [C]` (initially 0 and 1). y =
 *   (x − μ)/√(σ² + eps) · exp(log_gamma[c]) + beta[c]; logdet = H·W·Σ_c (log_gamma[c] − ½ log(σ²_c + eps)).
 *   Each training step updates running = (1 − momentum)·running + momentum·batch (variance unbiased:
 *   σ²·M/(M−1) with M = N·H·W, as PyTorch). Parameters `log_gamma [C]`, `beta [C]`.
 * - `inv1x1`: Glow's invertible 1×1 convolution, LU-parameterised:
 *     W = P · (I + strict_lower(lower)) · (strict_upper(upper) + diag(sign_s ⊙ exp(log_s)))
 *   with P[i][perm[i]] = 1; y[n,:,h,w] = W · x[n,:,h,w]; logdet = H·W·Σ log_s. Parameters `lower [C, C]`,
 *   `upper [C, C]` (only their strict triangles are used), `log_s [C]`; buffers `perm [C]` (a permutation
 *   of 0..C−1 stored as floats) and `sign_s [C]` (±1). Initialised from the LU decomposition of a random
 *   orthogonal matrix.
 * - `scale` (NICE's diagonal scaling): y = x ⊙ exp(log_scale); logdet = Σ log_scale. Parameter
 *   `log_scale [C, H, W]`.
 * - `reverse`: reverses the channel order (for vectors, the coordinates). logdet 0.
 * - `squeeze`: `[C, H, W] → [4C, H/2, W/2]`, y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j] (Glow's order;
 *   H and W must be even). logdet 0.
 * - `split` (factor-out): the last C − ⌊C/2⌋ channels leave the flow and go straight to the base
 *   distribution; the first ⌊C/2⌋ continue (C ≥ 2).
 * - `made` {kind, hidden, depth, order}: a MADE-masked autoregressive affine layer on the flat `D`
 *   values (Germain et al. 2015; MAF, Papamakarios et al. 2017; IAF, Kingma et al. 2016). The MADE net
 *   is the MLP below with masked weights: degrees m_in[d] = d + 1 (order forward) or D − d (reverse),
 *   hidden unit j of every hidden layer has degree (j mod (D − 1)) + 1; hidden masks M[j, i] =
 *   m_out_of_layer[j] ≥ m_in_of_layer[i]; output masks M[o, j] = m_in[o mod D] > m_hidden[j]; context
 *   inputs connect to every first-layer unit. Its output `[μ | α_raw]` `[N, 2D]`, α = scale ⊙ tanh(α_raw).
 *     maf: forward u = (x − μ(x)) ⊙ exp(−α(x)) in one pass (logdet = −Σα); inverse D sequential passes.
 *     iaf: inverse x = u ⊙ exp(α(u)) + μ(u) in one pass (logdet of the forward = −Σ α(u)); forward D
 *          sequential passes.
 *   Parameters `scale [D]` and the MLP's (masks are fixed, not parameters). D ≥ 2.
 *
 * ## Conditioner nets (parameter names under `layers.{k}.net.`)
 * - `mlp` {hidden, depth}: on the flattened masked input (length D, then K context values):
 *   Linear(D + K → H) → ReLU → [Linear(H → H) → ReLU] × (depth − 1) → Linear(H → O) with O = 2D (affine)
 *   or D (additive). `{j}.weight [out, in]`, `{j}.bias [out]` for j = 0 … depth (PyTorch layout).
 * - `resnet` {channels F, blocks, norm}: 3×3 convolutions, stride 1, zero padding 1, on the masked input
 *   `[N, C, H, W]` concatenated (channels) with the context broadcast over H×W (`[N, C + K, H, W]`):
 *     h = conv_in(x);  for each block: h = h + conv2(relu(conv1(relu(h))));  out = conv_out(relu(h)).
 *   conv_out is plain (`out.weight [O, F, 3, 3]`, `out.bias [O]`, zero-initialised so the layer starts as
 *   the identity); O = 2C (affine) or C (additive). The others, `in` and `blocks.{b}.conv1|conv2`, are
 *   weight-normalised when norm = 'weight': weight = g · v / ‖v‖ (norm over each output channel's
 *   Cin·3·3 values) with `weight_v [F, Cin, 3, 3]`, `weight_g [F, 1, 1, 1]`, `bias [F]` (PyTorch's
 *   weight_norm names); with norm = 'none' they are `weight [F, Cin, 3, 3]`, `bias [F]`.
 *   With norm = 'batch' they are plain (`weight`, `bias`) and each is followed by batch normalisation of
 *   its F output channels (PyTorch's BatchNorm2d, eps 1e-5, momentum 0.1): y = (h − μ)/√(σ² + 1e-5) ·
 *   `bn.weight` + `bn.bias`, parameters `{conv}.bn.weight [F]` (initially 1), `{conv}.bn.bias [F]`
 *   (initially 0), listed right after that conv's `bias`; buffers `{conv}.bn.running_mean [F]`,
 *   `{conv}.bn.running_var [F]` (initially 0 and 1), in conv order. Training passes use the batch's
 *   statistics over N, H, W (biased variance) and move the running averages (unbiased variance);
 *   evaluation and every inverse use the running averages. So a block is
 *   h = h + bn2(conv2(relu(bn1(conv1(relu(h)))))) and the input is h = bn_in(conv_in(x)).
 *
 * ## Base distribution and log-likelihood
 * The latent is the concatenation, per example, of every split's factored-out part (in order) and the
 * final output, each flattened `[C, H, W]`: `z [N, D]`. normal: log p(z) = −½‖z‖² − (D/2)·log 2π;
 * logistic: log p(z) = −Σ (softplus(z) + softplus(−z)). log p(x) = log p(z) + Σ layer logdets.
 * Sampling at temperature T draws z ~ N(0, T²I) (normal) or T · Logistic(0, 1).
 */

import type { OptimConfig, ParamAccess, StepStats } from './types.js';

export type MaskKind = 'checkerboard' | 'channel' | 'alternate' | 'halves' | 'random';
export type NetSpec =
  | { type: 'mlp'; hidden: number; depth: number }
  | { type: 'resnet'; channels: number; blocks: number; norm: 'weight' | 'none' | 'batch' };

export type LayerSpec =
  | { type: 'coupling'; mask: MaskKind; parity: 0 | 1; affine: boolean; net: NetSpec }
  | { type: 'actnorm' }
  | { type: 'batchnorm'; momentum: number; eps: number }
  | { type: 'inv1x1' }
  | { type: 'scale' }
  | { type: 'reverse' }
  | { type: 'squeeze' }
  | { type: 'split' }
  | { type: 'made'; kind: 'maf' | 'iaf'; hidden: number; depth: number; order: 'forward' | 'reverse' };

export interface FlowNetSpec {
  /** `[C, H, W]` of one example; vectors are `[D, 1, 1]`. */
  shape: [number, number, number];
  /** Context values per example (0: unconditional). */
  context: number;
  base: 'normal' | 'logistic';
  layers: LayerSpec[];
}

/** A named tensor of the model: a trainable parameter or a buffer (running statistics, fixed LU parts). */
export interface TensorInfo {
  name: string;
  shape: number[];
}

/**
 * What a FlowNet backend offers (the native one, `NativeFlowNet`, and the TypeScript one,
 * `JsFlowNetBackend`): batches are `[batch, D]`, contexts `[batch, K]` or null for an unconditional
 * flow. Parameters and buffers are f32, by the names of the contract above; training is AdamW with
 * global-norm clipping on the mean NLL (nats per example), and a non-finite loss or gradient rejects
 * with a DivergenceError that changes nothing.
 */
export interface FlowNetBackend extends ParamAccess {
  readonly kind: 'native' | 'js';
  readonly spec: FlowNetSpec;
  readonly device: string;
  bufferInfo(): TensorInfo[];
  getBuffer(name: string): Float32Array;
  setBuffer(name: string, data: Float32Array): void;
  /** Runs every uninitialised actnorm's data-dependent initialisation on this batch; whether there was one. */
  dataInit(x: Float32Array, ctx: Float32Array | null, batch: number): boolean;
  /** One AdamW step on the batch's mean NLL (after a pending data-dependent initialisation). */
  trainStep(x: Float32Array, ctx: Float32Array | null, batch: number, opt: OptimConfig): Promise<StepStats>;
  /** Mean training-mode NLL and its gradient for every parameter; changes nothing. */
  lossAndGrads(
    x: Float32Array,
    ctx: Float32Array | null,
    batch: number,
  ): Promise<{ loss: number; grads: Record<string, Float32Array> }>;
  /** Per-example log p(x) in nats (evaluation statistics). */
  logProb(x: Float32Array, ctx: Float32Array | null, batch: number): Promise<Float32Array>;
  /** z = f(x) and the per-example log|det ∂z/∂x|. */
  encode(x: Float32Array, ctx: Float32Array | null, batch: number): { z: Float32Array; logdet: Float32Array };
  /** x = f⁻¹(z) and the per-example log|det ∂x/∂z|. */
  decode(z: Float32Array, ctx: Float32Array | null, batch: number): { x: Float32Array; logdet: Float32Array };
}
