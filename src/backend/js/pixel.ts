/**
 * Pixel-RNN in plain TypeScript, float64: the Row LSTM of van den Oord, Kalchbrenner and Kavukcuoglu
 * (2016, "Pixel Recurrent Neural Networks", arXiv:1601.06759) and a Row GRU built the same way, for
 * single-channel R×C images — forward, NLL, a hand-written backward, a one-row step and a slow
 * pixel-by-pixel sampler. The oracle the native kernel is tested against. Names, shapes and masks are in
 * `../pixel-types.ts`.
 *
 * ## What the paper says, and what is ours
 * Verified against the paper's text (a copy of §3–§3.6; section numbers are arXiv v3's):
 *   - §3.1 Row LSTM: processes the image row by row, top to bottom, a whole row per step, with
 *     one-dimensional k×1 convolutions (k ≥ 3); the input-to-state convolution is computed for the whole
 *     input map at once and masked to the valid context, giving the 4h gate pre-activations of every
 *     position; the layer "captures a roughly triangular context above the pixel" (Figure 4, center).
 *   - §3.3 Residual connections from one LSTM layer to the next (Figure 5). The paper's block keeps 2h
 *     features, computes h per gate, and upsamples the LSTM output back to 2h with a 1×1 convolution
 *     before adding the input map. Here every map has H features and the block is y_l = h_l + y_{l−1}
 *     with no 1×1 convolution — a simplification of ours.
 *   - §3.4 Masked convolution (masks of Figure 2, right): mask A on the first convolution only, mask B
 *     on every later input-to-state convolution; "zeroing out the corresponding weights". With one
 *     colour channel the R/G/B split of the features is void and the masks are purely spatial.
 * Taken from secondary sources only (paper reproductions, not the paper itself), so unverified here:
 *   - §4 "Specifications of Models" and its architecture table (Table 1 according to those sources, not
 *     Table 4): 7×7 conv mask A; Row LSTM residual blocks with i-s 1×3 mask B and s-s 1×3 no mask;
 *     ReLU followed by 1×1 conv (2 layers); 256-way softmax, or a sigmoid for binarised MNIST.
 *   - Equation 3 of §3.1: [o, f, i, g] = σ(K^ss ⊛ h_{i−1} + K^is ⊛ x_i), c_i = f⊙c_{i−1} + i⊙g,
 *     h_i = o⊙tanh(c_i) (σ = tanh for g). We stack the gates in PyTorch's order (i, f, g, o) instead;
 *     only the storage order differs.
 * Ours, not the paper's: the Row GRU (same convolutions, PyTorch's GRU core), class conditioning by a
 * learned per-class bias on the input-to-state pre-activations, the 1×1 head width H (the paper uses
 * 1024 or 32 maps there), no mask on the 1×1 convolutions (mask B on a 1×1 kernel of one channel is
 * the identity), and the Bernoulli head written as a logit with softplus loss.
 *
 * ## Layouts
 * Images `x [B, R, C]` row-major, model inputs (8-bit value/255 for the categorical head, 0/1 for the
 * Bernoulli head); `targets [B, R, C]` integers (0…255, or 0/1); `labels [B]` in 0…K−1; logits
 * `[B, R, C, O]`. Activations are channels-last: a map `[R, C, H]` holds (i, j, c) at (i·C + j)·H + c;
 * a row of gate pre-activations `[C, G·H]` holds block k, unit u of column j at j·G·H + k·H + u. Weights
 * are PyTorch's: input_conv.weight (h, 0, ky, kx) at h·49 + ky·7 + kx; weight_is / weight_ss
 * (g, c, 0, kx) at (g·H + c)·3 + kx; label_bias (k, g) at k·G·H + g; out1.weight (u, c) at u·H + c;
 * out2.weight (o, c) at o·H + c.
 *
 * ## Equations (one image; reads outside the image are 0; M_A = MASK_A_7X7, M_B = MASK_B_1X3)
 *   y_0[i,j,h] = b0[h] + Σ_{ky,kx<7} M_A[ky,kx]·W0[h,0,ky,kx]·x[i+ky−3, j+kx−3]
 * Row layer l = 1…L reads the map y_{l−1} and parameters rows.{l−1}.*; rows i = 0…R−1 in order, with
 * h_{−1} = c_{−1} = 0 (`[C, H]` each, one vector per column):
 *   is[i,j,g] = b_is[g] + E[label, g] + Σ_{c<H} Σ_{kx<3} M_B[kx]·W_is[g,c,0,kx]·y_{l−1}[i, j+kx−1, c]
 *   ss[i,j,g] = b_ss[g] + Σ_{c<H} Σ_{kx<3} W_ss[g,c,0,kx]·h_{i−1}[j+kx−1, c]
 *   LSTM (blocks i, f, g, o):  a = is + ss;  i, f, o = σ(a_·), g = tanh(a_g)
 *                              c_i = f⊙c_{i−1} + i⊙g;   h_i = o⊙tanh(c_i)
 *   GRU (blocks r, z, n):      r = σ(is_r + ss_r), z = σ(is_z + ss_z), n = tanh(is_n + r⊙ss_n)
 *                              h_i = (1 − z)⊙n + z⊙h_{i−1}      (ss_n includes b_ss, as PyTorch's b_hn)
 *   residual:                  y_l[i,j,:] = h_i[j,:] + y_{l−1}[i,j,:]
 * Head, per position: a1 = relu(y_L); z1 = W1·a1 + b1; a2 = relu(z1); logits = W2·a2 + b2.
 * Loss per pixel with target t: categorical −log softmax(logits)[t] = logsumexp(logits) − logits[t];
 * Bernoulli with logit s: softplus(s) − t·s (= −log σ(s) for t = 1, −log(1 − σ(s)) for t = 0). Summed
 * over the R·C pixels of an image and averaged over the batch: nats/image; bits/dim = that / (R·C·ln 2).
 *
 * ## Causality
 * Claim: logits (i, j) depend only on pixels before (i, j) in raster order (rows < i, or row i at
 * columns < j). By induction over layers, and over rows within a layer:
 *   (P1) y_l[i, j] depends only on pixels before (i, j);
 *   (P2) h_i and c_i of every layer, at every column, depend only on pixels in rows ≤ i.
 * y_0 satisfies P1: mask A keeps rows i−3…i−1 whole and row i at columns j−3…j−1 only. For a row layer,
 * is[i, j] reads y_{l−1} at (i, j−1) and (i, j) only (mask B drops (i, j+1)), both P1 by induction; ss
 * reads h_{i−1} at columns j−1…j+1 and the cells read c_{i−1}[j] and h_{i−1}[j], all of rows ≤ i−1 by
 * P2 — every pixel of which precedes (i, j). So h_i[j] and y_l[i, j] = h_i[j] + y_{l−1}[i, j] satisfy
 * P1, and h_i (every column reads only rows ≤ i) satisfies P2. The head is per position. The masks are
 * therefore exactly what enforces causality; the state-to-state convolution needs none, because it
 * only reads the row above, all of which precedes (i, j).
 *
 * ## Receptive field: triangular, as the paper says
 * The Row LSTM does not see all of the context above (§3.1, Figure 4 center; the Diagonal BiLSTM of §3.2
 * does, and is not implemented here). Following the reads above, (i, j) sees
 *   - row i at columns j−3−L … j−1 only (mask A's three taps plus one more column per row layer: within
 *     a row nothing is carried from left to right but the convolutions),
 *   - row i−1 at columns up to j+3 (the input convolution), and row i−k (k ≥ 2) up to j+3+(k−1): the
 *     1×3 state-to-state convolution widens the context by one column per row upward — a triangle.
 * The tests check both boundaries.
 *
 * ## Numerics
 * Every value is computed and kept in doubles; `pixelForward` rounds only its result to `dtype`.
 */
import { DataError, ShapeError } from '../../errors.js';
import {
  INPUT_KERNEL,
  INPUT_PAD,
  MASK_A_7X7,
  MASK_B_1X3,
  type PixelOutput,
  type PixelRnnShape,
  pixelBitsPerDim,
  pixelGateCount,
  pixelInputValue,
  pixelOutputWidth,
  pixelParamInfo,
  pixelTargetLevels,
  ROW_KERNEL,
} from '../pixel-types.js';
import { type ArrayOf, alloc, type Dtype, dot, type FloatArray } from './gru.js';
import { sigmoid } from './recurrent.js';

export type PixelParams = Record<string, FloatArray>;

/**
 * The masks the forward pass multiplies the convolution weights by: `a [7·7]` for the input
 * convolution, `b [3]` for the input-to-state convolutions. Defaults MASK_A_7X7 and MASK_B_1X3; other
 * values exist only so that tests can show a broken mask is caught.
 */
export interface PixelMasks {
  a: ArrayLike<number>;
  b: ArrayLike<number>;
}

export interface PixelOptions {
  /** Replace the causal masks (tests only). */
  masks?: PixelMasks;
}

/**
 * What one row step carries to the next row, for one image: `h [L, C, H]`, and `c [L, C, H]` for the
 * LSTM (null for the GRU). Zeros before row 0.
 */
export interface PixelRowState {
  h: Float64Array;
  c: Float64Array | null;
}

export interface PixelNll {
  /** Summed over every pixel of every image, nats. */
  nll: number;
  /** Mean over the batch of each image's summed NLL, nats/image. */
  natsPerImage: number;
  /** natsPerImage / (R·C·ln 2). */
  bitsPerDim: number;
  /** Each image's summed NLL, nats, `[B]`. */
  perImage: Float64Array;
}

export interface PixelLossGrads {
  /** Mean over the batch of each image's summed NLL, nats/image. */
  loss: number;
  bitsPerDim: number;
  /** dL/d(param) by name, in `pixelParamInfo` order; masked taps exactly 0. */
  grads: Record<string, Float64Array>;
}

/** Something that draws uniforms in [0, 1), as `Rng` does. */
export interface UniformSource {
  uniform(): number;
}

export interface PixelSampleOptions extends PixelOptions {
  /**
   * Completion: the first `rows` rows are given, not sampled: `values` holds integer pixel values
   * (targets' range), `[n, rows, C]`, or `[rows, C]` for the same rows in every sample.
   */
  topRows?: { rows: number; values: ArrayLike<number> };
  /** The class of every sample (a number), or of each (`[n]`); required exactly when the model has classes. */
  label?: number | ArrayLike<number>;
}

const TAPS = INPUT_KERNEL * INPUT_KERNEL;

/** One row layer's parameters; `wis` already multiplied by mask B. */
interface RowLayer {
  wis: Float64Array;
  bis: FloatArray;
  wss: FloatArray;
  bss: FloatArray;
  /** `[K, G·H]`, or null without classes. */
  labelBias: FloatArray | null;
}

/** The parameters unpacked, with the masked convolution weights in effect (weight ⊙ mask). */
interface Model {
  lstm: boolean;
  output: PixelOutput;
  H: number;
  /** G·H: gate pre-activations per position. */
  GH: number;
  L: number;
  R: number;
  C: number;
  O: number;
  /** Classes K, 0 without conditioning. */
  K: number;
  maskA: ArrayLike<number>;
  maskB: ArrayLike<number>;
  /** input_conv.weight ⊙ mask A, `[H, 49]`. */
  w0: Float64Array;
  b0: FloatArray;
  layers: RowLayer[];
  w1: FloatArray;
  b1: FloatArray;
  w2: FloatArray;
  b2: FloatArray;
}

// ---------------------------------------------------------------------------------------------------
// Checks

function checkParams(fn: string, shape: PixelRnnShape, params: PixelParams): void {
  for (const { name, shape: dims } of pixelParamInfo(shape)) {
    const p = params[name];
    const want = dims.reduce((a, d) => a * d, 1);
    if (!(p instanceof Float32Array || p instanceof Float64Array)) {
      throw new ShapeError(`${fn}: parameter ${name} is missing (expected ${want} floats for [${dims.join(', ')}])`);
    }
    if (p.length !== want) {
      throw new ShapeError(`${fn}: parameter ${name} holds ${p.length} values; [${dims.join(', ')}] needs ${want}`);
    }
  }
}

function checkMasks(fn: string, masks: PixelMasks): void {
  if (masks.a.length !== TAPS) throw new ShapeError(`${fn}: mask a holds ${masks.a.length} values; [7, 7] needs 49`);
  if (masks.b.length !== ROW_KERNEL) throw new ShapeError(`${fn}: mask b holds ${masks.b.length} values; [3] needs 3`);
}

/** The number of images in `x [B, R, C]` (ShapeError unless a whole number ≥ 1); every value finite (DataError). */
function batchOf(fn: string, shape: PixelRnnShape, x: ArrayLike<number>): number {
  const D = shape.rows * shape.cols;
  if (x.length === 0 || x.length % D !== 0) {
    throw new ShapeError(
      `${fn}: images hold ${x.length} values, not a whole number ≥ 1 of [rows ${shape.rows}, cols ${shape.cols}] images`,
    );
  }
  for (let k = 0; k < x.length; k++) {
    if (!Number.isFinite(x[k])) throw new DataError(`${fn}: image value ${k} is ${x[k]}, not a finite number`);
  }
  return x.length / D;
}

/** Labels `[B]` in 0…K−1, required exactly when the model has classes. */
function checkLabels(fn: string, shape: PixelRnnShape, labels: ArrayLike<number> | null, batch: number): void {
  const K = shape.classes;
  if (K === undefined) {
    if (labels !== null) throw new ShapeError(`${fn}: this model has no classes, but labels were given`);
    return;
  }
  if (labels === null)
    throw new ShapeError(`${fn}: this model is class-conditional (${K} classes): labels are required`);
  if (labels.length !== batch) {
    throw new ShapeError(`${fn}: labels hold ${labels.length} values; [batch ${batch}] needs ${batch}`);
  }
  for (let b = 0; b < batch; b++) checkLabel(fn, K, labels[b], `label ${b}`);
}

function checkLabel(fn: string, K: number, v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v >= K) {
    throw new DataError(`${fn}: ${what} is ${v}, not a class in 0…${K - 1}`);
  }
}

/** Targets `[B, R, C]`: integers in 0…255 (categorical) or 0/1 (Bernoulli). */
function checkTargets(fn: string, shape: PixelRnnShape, targets: ArrayLike<number>, batch: number): void {
  const want = batch * shape.rows * shape.cols;
  if (targets.length !== want) {
    throw new ShapeError(
      `${fn}: targets hold ${targets.length} values; [batch ${batch}, rows ${shape.rows}, cols ${shape.cols}] needs ${want}`,
    );
  }
  checkPixelValues(fn, shape.output, targets, 'target');
}

function checkPixelValues(fn: string, output: PixelOutput, values: ArrayLike<number>, what: string): void {
  const levels = pixelTargetLevels(output);
  for (let k = 0; k < values.length; k++) {
    const v = values[k];
    if (!Number.isInteger(v) || v < 0 || v >= levels) {
      throw new DataError(`${fn}: ${what} ${k} is ${v}, not an integer in 0…${levels - 1} (${output} output)`);
    }
  }
}

/** Checks shape and params and unpacks them, with the masks multiplied into the masked weights. */
function modelOf(fn: string, shape: PixelRnnShape, params: PixelParams, opts: PixelOptions): Model {
  checkParams(fn, shape, params);
  const masks = opts.masks ?? { a: MASK_A_7X7, b: MASK_B_1X3 };
  checkMasks(fn, masks);
  const H = shape.hidden;
  const GH = pixelGateCount(shape.cell) * H;
  const w0 = Float64Array.from(params['input_conv.weight']);
  for (let h = 0; h < H; h++) for (let t = 0; t < TAPS; t++) w0[h * TAPS + t] *= masks.a[t];
  const layers: RowLayer[] = [];
  for (let l = 0; l < shape.layers; l++) {
    const wis = Float64Array.from(params[`rows.${l}.weight_is`]);
    for (let k = 0; k < wis.length; k++) wis[k] *= masks.b[k % ROW_KERNEL];
    layers.push({
      wis,
      bis: params[`rows.${l}.bias_is`],
      wss: params[`rows.${l}.weight_ss`],
      bss: params[`rows.${l}.bias_ss`],
      labelBias: shape.classes === undefined ? null : params[`rows.${l}.label_bias`],
    });
  }
  return {
    lstm: shape.cell === 'lstm',
    output: shape.output,
    H,
    GH,
    L: shape.layers,
    R: shape.rows,
    C: shape.cols,
    O: pixelOutputWidth(shape.output),
    K: shape.classes ?? 0,
    maskA: masks.a,
    maskB: masks.b,
    w0,
    b0: params['input_conv.bias'],
    layers,
    w1: params['out1.weight'],
    b1: params['out1.bias'],
    w2: params['out2.weight'],
    b2: params['out2.bias'],
  };
}

// ---------------------------------------------------------------------------------------------------
// Building blocks, shared by the whole-image forward, the row step and the backward

/**
 * Row i of y_0 into `out [C, H]` at `oo`: the 7×7 convolution (weights ⊙ mask A, zero padding 3) of the
 * image `x [R, C]` that starts at `xo`.
 */
function inputConvRow(m: Model, x: ArrayLike<number>, xo: number, i: number, out: Float64Array, oo: number): void {
  const { H, R, C, w0, b0 } = m;
  for (let j = 0; j < C; j++) {
    const o = oo + j * H;
    for (let h = 0; h < H; h++) out[o + h] = b0[h];
    for (let ky = 0; ky < INPUT_KERNEL; ky++) {
      const r = i + ky - INPUT_PAD;
      if (r < 0 || r >= R) continue;
      for (let kx = 0; kx < INPUT_KERNEL; kx++) {
        const col = j + kx - INPUT_PAD;
        if (col < 0 || col >= C) continue;
        const v = x[xo + r * C + col];
        const t = ky * INPUT_KERNEL + kx;
        for (let h = 0; h < H; h++) out[o + h] += w0[h * TAPS + t] * v;
      }
    }
  }
}

/**
 * A 1×3 convolution along one row, `out[j, g] = init[g] + Σ_c Σ_kx w[g, c, 0, kx]·row[j + kx − 1, c]`
 * (zero padded), with `row [C, H]` and `out [C, G·H]`. It is the input-to-state convolution with
 * w = W_is ⊙ mask B and init = b_is + E[label], and the state-to-state one with w = W_ss, init = b_ss.
 */
function rowConv(m: Model, w: ArrayLike<number>, init: Float64Array, row: Float64Array, out: Float64Array): void {
  const { H, GH, C } = m;
  for (let j = 0; j < C; j++) {
    for (let g = 0; g < GH; g++) {
      let s = init[g];
      for (let kx = 0; kx < ROW_KERNEL; kx++) {
        const col = j + kx - 1;
        if (col < 0 || col >= C) continue;
        for (let c = 0; c < H; c++) s += w[(g * H + c) * ROW_KERNEL + kx] * row[col * H + c];
      }
      out[j * GH + g] = s;
    }
  }
}

/** b_is + E[label] (`[G·H]`): the input-to-state convolution's bias for this image. */
function isBias(m: Model, layer: RowLayer, label: number | null): Float64Array {
  const bias = Float64Array.from(layer.bis);
  if (layer.labelBias !== null && label !== null) {
    for (let g = 0; g < m.GH; g++) bias[g] += layer.labelBias[label * m.GH + g];
  }
  return bias;
}

/**
 * The cell on one row: from the pre-activations `is`, `ss` `[C, G·H]` and the previous row's state
 * `hPrev`, `cPrev` `[C, H]` (cPrev null for the GRU) writes `hOut`, `cOut` `[C, H]` and, when `saved`
 * is given, per column `[4H]`: LSTM (i, f, g, o), GRU (r, z, n, ss_n).
 */
function cellRow(
  m: Model,
  is: Float64Array,
  ss: Float64Array,
  hPrev: Float64Array,
  cPrev: Float64Array | null,
  hOut: Float64Array,
  cOut: Float64Array | null,
  saved: Float64Array | null,
): void {
  const { H, GH, C } = m;
  for (let j = 0; j < C; j++) {
    const go = j * GH;
    const so = j * 4 * H;
    for (let u = 0; u < H; u++) {
      const p = j * H + u;
      if (m.lstm) {
        const i = sigmoid(is[go + u] + ss[go + u]);
        const f = sigmoid(is[go + H + u] + ss[go + H + u]);
        const g = Math.tanh(is[go + 2 * H + u] + ss[go + 2 * H + u]);
        const o = sigmoid(is[go + 3 * H + u] + ss[go + 3 * H + u]);
        const c = f * (cPrev as Float64Array)[p] + i * g;
        (cOut as Float64Array)[p] = c;
        hOut[p] = o * Math.tanh(c);
        if (saved !== null) {
          saved[so + u] = i;
          saved[so + H + u] = f;
          saved[so + 2 * H + u] = g;
          saved[so + 3 * H + u] = o;
        }
      } else {
        const r = sigmoid(is[go + u] + ss[go + u]);
        const z = sigmoid(is[go + H + u] + ss[go + H + u]);
        const hn = ss[go + 2 * H + u];
        const n = Math.tanh(is[go + 2 * H + u] + r * hn);
        hOut[p] = (1 - z) * n + z * hPrev[p];
        if (saved !== null) {
          saved[so + u] = r;
          saved[so + H + u] = z;
          saved[so + 2 * H + u] = n;
          saved[so + 3 * H + u] = hn;
        }
      }
    }
  }
}

/** Scratch of the head at one position: a1 = relu(y), z1 = W1·a1 + b1, a2 = relu(z1). */
interface HeadScratch {
  a1: Float64Array;
  z1: Float64Array;
  a2: Float64Array;
}

function headScratch(m: Model): HeadScratch {
  return { a1: new Float64Array(m.H), z1: new Float64Array(m.H), a2: new Float64Array(m.H) };
}

/** The head at one position: logits `[O]` at `lo` from y_L `[H]` at `yo`; fills `s`. */
function headAt(m: Model, y: Float64Array, yo: number, s: HeadScratch, logits: Float64Array, lo: number): void {
  const { H, O } = m;
  for (let c = 0; c < H; c++) s.a1[c] = Math.max(0, y[yo + c]);
  for (let u = 0; u < H; u++) {
    s.z1[u] = dot(m.b1[u], m.w1, u * H, s.a1, 0, H);
    s.a2[u] = Math.max(0, s.z1[u]);
  }
  for (let o = 0; o < O; o++) logits[lo + o] = dot(m.b2[o], m.w2, o * H, s.a2, 0, H);
}

/** log Σ exp(logits[lo … lo+n)), shifted by the max so no term overflows. */
function logSumExp(logits: Float64Array, lo: number, n: number): number {
  let max = -Infinity;
  for (let v = 0; v < n; v++) if (logits[lo + v] > max) max = logits[lo + v];
  let sum = 0;
  for (let v = 0; v < n; v++) sum += Math.exp(logits[lo + v] - max);
  return max + Math.log(sum);
}

/** softplus(s) = log(1 + e^s), without overflow. */
function softplus(s: number): number {
  return s > 0 ? s + Math.log1p(Math.exp(-s)) : Math.log1p(Math.exp(s));
}

/** NLL of target t given the logits `[O]` at `lo`; writes dNLL/dlogits · scale into `dlogits` when given. */
function pixelLoss(
  m: Model,
  logits: Float64Array,
  lo: number,
  t: number,
  scale: number,
  dlogits: Float64Array | null,
): number {
  if (m.output === 'bernoulli') {
    const s = logits[lo];
    if (dlogits !== null) dlogits[0] = scale * (sigmoid(s) - t);
    return softplus(s) - t * s;
  }
  const lse = logSumExp(logits, lo, m.O);
  if (dlogits !== null) {
    for (let o = 0; o < m.O; o++) dlogits[o] = scale * (Math.exp(logits[lo + o] - lse) - (o === t ? 1 : 0));
  }
  return lse - logits[lo + t];
}

// ---------------------------------------------------------------------------------------------------
// Whole image: layer by layer, each layer row by row (the paper's order)

/** Everything the backward of one image needs. */
interface ImageRun {
  /** y_0 … y_L, `[R, C, H]` each. */
  ys: Float64Array[];
  /** h of every layer, `[R, C, H]`. */
  hs: Float64Array[];
  /** c of every layer (LSTM), `[R, C, H]`; null for the GRU. */
  cs: (Float64Array | null)[];
  /** Per layer `[R, C, 4H]` (see `cellRow`); empty unless saved. */
  saved: Float64Array[];
}

function runImage(m: Model, x: ArrayLike<number>, xo: number, label: number | null, save: boolean): ImageRun {
  const { H, GH, R, C } = m;
  const row = C * H;
  const y0 = new Float64Array(R * row);
  for (let i = 0; i < R; i++) inputConvRow(m, x, xo, i, y0, i * row);
  const run: ImageRun = { ys: [y0], hs: [], cs: [], saved: [] };
  const is = new Float64Array(C * GH);
  const ss = new Float64Array(C * GH);
  const zeros = new Float64Array(row);
  for (let l = 0; l < m.L; l++) {
    const layer = m.layers[l];
    const yIn = run.ys[l];
    const h = new Float64Array(R * row);
    const c = m.lstm ? new Float64Array(R * row) : null;
    const saved = save ? new Float64Array(R * C * 4 * H) : null;
    const bias = isBias(m, layer, label);
    const ssBias = Float64Array.from(layer.bss);
    for (let i = 0; i < R; i++) {
      const cur = i * row;
      const hPrev = i === 0 ? zeros : h.subarray(cur - row, cur);
      const cPrev = c === null ? null : i === 0 ? zeros : c.subarray(cur - row, cur);
      rowConv(m, layer.wis, bias, yIn.subarray(cur, cur + row), is);
      rowConv(m, layer.wss, ssBias, hPrev, ss);
      cellRow(
        m,
        is,
        ss,
        hPrev,
        cPrev,
        h.subarray(cur, cur + row),
        c === null ? null : c.subarray(cur, cur + row),
        saved === null ? null : saved.subarray(i * C * 4 * H, (i + 1) * C * 4 * H),
      );
    }
    const y = new Float64Array(R * row);
    for (let k = 0; k < y.length; k++) y[k] = h[k] + yIn[k];
    run.ys.push(y);
    run.hs.push(h);
    run.cs.push(c);
    if (saved !== null) run.saved.push(saved);
  }
  return run;
}

function labelOf(labels: ArrayLike<number> | null, b: number): number | null {
  return labels === null ? null : labels[b];
}

/**
 * Logits `[B, R, C, O]` of every pixel of `x [B, R, C]` (B = x.length / (R·C)), each from the pixels
 * before it; `labels [B]` exactly when the model has classes, else null.
 */
export function pixelForward<D extends Dtype>(
  shape: PixelRnnShape,
  params: PixelParams,
  x: ArrayLike<number>,
  labels: ArrayLike<number> | null,
  dtype: D,
  opts: PixelOptions = {},
): ArrayOf<D> {
  const m = modelOf('pixelForward', shape, params, opts);
  const B = batchOf('pixelForward', shape, x);
  checkLabels('pixelForward', shape, labels, B);
  const { R, C, H, O, L } = m;
  const out = alloc(dtype, B * R * C * O);
  const logits = new Float64Array(O);
  const s = headScratch(m);
  for (let b = 0; b < B; b++) {
    const yL = runImage(m, x, b * R * C, labelOf(labels, b), false).ys[L];
    for (let p = 0; p < R * C; p++) {
      headAt(m, yL, p * H, s, logits, 0);
      out.set(logits, (b * R * C + p) * O);
    }
  }
  return out;
}

/** NLL of `targets [B, R, C]` given `x [B, R, C]` (usually the same image, as model inputs); no gradient. */
export function pixelNll(
  shape: PixelRnnShape,
  params: PixelParams,
  x: ArrayLike<number>,
  targets: ArrayLike<number>,
  labels: ArrayLike<number> | null,
  opts: PixelOptions = {},
): PixelNll {
  const m = modelOf('pixelNll', shape, params, opts);
  const B = batchOf('pixelNll', shape, x);
  checkLabels('pixelNll', shape, labels, B);
  checkTargets('pixelNll', shape, targets, B);
  const { R, C, H, O, L } = m;
  const logits = new Float64Array(O);
  const s = headScratch(m);
  const perImage = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    const yL = runImage(m, x, b * R * C, labelOf(labels, b), false).ys[L];
    let sum = 0;
    for (let p = 0; p < R * C; p++) {
      headAt(m, yL, p * H, s, logits, 0);
      sum += pixelLoss(m, logits, 0, targets[b * R * C + p], 1, null);
    }
    perImage[b] = sum;
  }
  let nll = 0;
  for (let b = 0; b < B; b++) nll += perImage[b];
  return { nll, natsPerImage: nll / B, bitsPerDim: pixelBitsPerDim(shape, nll / B), perImage };
}

// ---------------------------------------------------------------------------------------------------
// Backward

/**
 * Gradient accumulators by parameter name, in doubles; for the masked weights, w.r.t. the effective
 * weights (weight ⊙ mask) until `pixelLossAndGrads` multiplies the mask in.
 */
type Grads = Record<string, Float64Array>;

/**
 * The head's backward at one position (forward recomputed into `s`): accumulates out1/out2 gradients
 * and writes dL/dy_L `[H]` at `dyo`. `dlogits` holds dL/dlogits.
 */
function headBackward(
  m: Model,
  g: Grads,
  y: Float64Array,
  yo: number,
  s: HeadScratch,
  dlogits: Float64Array,
  dy: Float64Array,
  dyo: number,
): void {
  const { H, O, w1, w2 } = m;
  const dW1 = g['out1.weight'];
  const db1 = g['out1.bias'];
  const dW2 = g['out2.weight'];
  const db2 = g['out2.bias'];
  // logits = W2·a2 + b2
  const dz1 = new Float64Array(H);
  for (let o = 0; o < O; o++) {
    const d = dlogits[o];
    db2[o] += d;
    for (let u = 0; u < H; u++) {
      dW2[o * H + u] += d * s.a2[u];
      dz1[u] += d * w2[o * H + u];
    }
  }
  // a2 = relu(z1), z1 = W1·a1 + b1
  for (let u = 0; u < H; u++) if (!(s.z1[u] > 0)) dz1[u] = 0;
  for (let c = 0; c < H; c++) dy[dyo + c] = 0;
  for (let u = 0; u < H; u++) {
    const d = dz1[u];
    db1[u] += d;
    for (let c = 0; c < H; c++) {
      dW1[u * H + c] += d * s.a1[c];
      dy[dyo + c] += d * w1[u * H + c];
    }
  }
  // a1 = relu(y_L)
  for (let c = 0; c < H; c++) if (!(y[yo + c] > 0)) dy[dyo + c] = 0;
}

/**
 * Backward of row layer l through time (rows R−1 … 0): given dOut = dL/dy_{l+1} `[R, C, H]`, accumulates
 * the layer's parameter gradients and returns dL/dy_l (the residual path plus the input-to-state
 * convolution's).
 */
function rowLayerBackward(
  m: Model,
  g: Grads,
  l: number,
  run: ImageRun,
  label: number | null,
  dOut: Float64Array,
): Float64Array {
  const { H, GH, R, C } = m;
  const row = C * H;
  const layer = m.layers[l];
  const yIn = run.ys[l];
  const h = run.hs[l];
  const c = run.cs[l];
  const saved = run.saved[l];
  const dWis = g[`rows.${l}.weight_is`];
  const dBis = g[`rows.${l}.bias_is`];
  const dWss = g[`rows.${l}.weight_ss`];
  const dBss = g[`rows.${l}.bias_ss`];
  const dE = layer.labelBias === null ? null : g[`rows.${l}.label_bias`];
  // y_{l+1} = h + y_l: the residual passes dOut through unchanged.
  const dIn = Float64Array.from(dOut);
  // Gradients w.r.t. the pre-activations of one row: dIs reaches W_is, b_is, E and y_l; dSs reaches
  // W_ss, b_ss and h_{i−1}. They differ only in the GRU's n block, where r multiplies ss_n.
  const dIs = new Float64Array(C * GH);
  const dSs = new Float64Array(C * GH);
  // dL/dh_i and dL/dc_i from rows after i (dhNext, dcNext); the row's step fills dhPrev, dcPrev.
  let dhNext = new Float64Array(row);
  let dcNext = new Float64Array(row);
  let dhPrev = new Float64Array(row);
  let dcPrev = new Float64Array(row);
  const zeros = new Float64Array(row);
  for (let i = R - 1; i >= 0; i--) {
    const cur = i * row;
    const hPrev = i === 0 ? zeros : h.subarray(cur - row, cur);
    const cPrev = c === null || i === 0 ? zeros : c.subarray(cur - row, cur);
    for (let j = 0; j < C; j++) {
      const go = j * GH;
      const so = (i * C + j) * 4 * H;
      for (let u = 0; u < H; u++) {
        const p = j * H + u;
        const dh = dOut[cur + p] + dhNext[p];
        if (m.lstm) {
          const gi = saved[so + u];
          const gf = saved[so + H + u];
          const gg = saved[so + 2 * H + u];
          const go_ = saved[so + 3 * H + u];
          const tc = Math.tanh((c as Float64Array)[cur + p]);
          // h = o ⊙ tanh(c): c is reached from the next row (dcNext) and through h.
          const dc = dcNext[p] + dh * go_ * (1 - tc * tc);
          // c = f ⊙ c_{i−1} + i ⊙ g;  i, f, o = σ(a), g = tanh(a)
          const dai = dc * gg * gi * (1 - gi);
          const daf = dc * cPrev[p] * gf * (1 - gf);
          const dag = dc * gi * (1 - gg * gg);
          const dao = dh * tc * go_ * (1 - go_);
          dIs[go + u] = dSs[go + u] = dai;
          dIs[go + H + u] = dSs[go + H + u] = daf;
          dIs[go + 2 * H + u] = dSs[go + 2 * H + u] = dag;
          dIs[go + 3 * H + u] = dSs[go + 3 * H + u] = dao;
          dcPrev[p] = dc * gf;
          // h_{i−1} reaches the loss only through ss; added below.
          dhPrev[p] = 0;
        } else {
          const r = saved[so + u];
          const z = saved[so + H + u];
          const n = saved[so + 2 * H + u];
          const hn = saved[so + 3 * H + u];
          // h = (1 − z) ⊙ n + z ⊙ h_{i−1}
          const dn = dh * (1 - z);
          const dz = dh * (hPrev[p] - n);
          // n = tanh(is_n + r ⊙ ss_n);  r = σ(is_r + ss_r), z = σ(is_z + ss_z)
          const dan = dn * (1 - n * n);
          const dar = dan * hn * r * (1 - r);
          const daz = dz * z * (1 - z);
          dIs[go + u] = dSs[go + u] = dar;
          dIs[go + H + u] = dSs[go + H + u] = daz;
          dIs[go + 2 * H + u] = dan;
          dSs[go + 2 * H + u] = dan * r;
          // The direct path h ← z ⊙ h_{i−1}; the path through ss is added below.
          dhPrev[p] = dh * z;
        }
      }
    }
    // ss[j, g] = b_ss[g] + Σ_c Σ_kx W_ss[g, c, kx]·h_{i−1}[j + kx − 1, c]
    // is[j, g] = b_is[g] + E[label, g] + Σ_c Σ_kx W_is_eff[g, c, kx]·y_l[i, j + kx − 1, c]
    const yRow = yIn.subarray(cur, cur + row);
    for (let j = 0; j < C; j++) {
      for (let gate = 0; gate < GH; gate++) {
        const ds = dSs[j * GH + gate];
        const di = dIs[j * GH + gate];
        dBss[gate] += ds;
        dBis[gate] += di;
        if (dE !== null && label !== null) dE[label * GH + gate] += di;
        for (let kx = 0; kx < ROW_KERNEL; kx++) {
          const col = j + kx - 1;
          if (col < 0 || col >= C) continue;
          for (let ch = 0; ch < H; ch++) {
            const w = (gate * H + ch) * ROW_KERNEL + kx;
            dWss[w] += ds * hPrev[col * H + ch];
            dhPrev[col * H + ch] += ds * layer.wss[w];
            dWis[w] += di * yRow[col * H + ch];
            dIn[cur + col * H + ch] += di * layer.wis[w];
          }
        }
      }
    }
    // dhPrev, dcPrev of row 0 are gradients w.r.t. the fixed zero state, and are dropped.
    let swap = dhNext;
    dhNext = dhPrev;
    dhPrev = swap;
    swap = dcNext;
    dcNext = dcPrev;
    dcPrev = swap;
  }
  return dIn;
}

/** Backward of the input convolution: accumulates dL/d(weight ⊙ mask A) and dL/d(bias) from dL/dy_0. */
function inputConvBackward(m: Model, g: Grads, x: ArrayLike<number>, xo: number, dy0: Float64Array): void {
  const { H, R, C } = m;
  const dW = g['input_conv.weight'];
  const db = g['input_conv.bias'];
  for (let i = 0; i < R; i++) {
    for (let j = 0; j < C; j++) {
      const o = (i * C + j) * H;
      for (let h = 0; h < H; h++) db[h] += dy0[o + h];
      for (let ky = 0; ky < INPUT_KERNEL; ky++) {
        const r = i + ky - INPUT_PAD;
        if (r < 0 || r >= R) continue;
        for (let kx = 0; kx < INPUT_KERNEL; kx++) {
          const col = j + kx - INPUT_PAD;
          if (col < 0 || col >= C) continue;
          const v = x[xo + r * C + col];
          const t = ky * INPUT_KERNEL + kx;
          for (let h = 0; h < H; h++) dW[h * TAPS + t] += dy0[o + h] * v;
        }
      }
    }
  }
}

/** dL/dW = mask ⊙ dL/d(W ⊙ mask), with masked taps exactly +0; `period` taps per mask cycle. */
function applyMask(d: Float64Array, mask: ArrayLike<number>, period: number): void {
  for (let k = 0; k < d.length; k++) {
    const mk = mask[k % period];
    d[k] = mk === 0 ? 0 : d[k] * mk;
  }
}

/**
 * The loss (mean over the batch of each image's summed NLL, nats/image) of `targets` given `x` and its
 * gradient w.r.t. every parameter: backward through the head, the row layers (through time, over rows,
 * and through the residual stream) and the input convolution. Changes nothing.
 */
export function pixelLossAndGrads(
  shape: PixelRnnShape,
  params: PixelParams,
  x: ArrayLike<number>,
  targets: ArrayLike<number>,
  labels: ArrayLike<number> | null,
  opts: PixelOptions = {},
): PixelLossGrads {
  const fn = 'pixelLossAndGrads';
  const m = modelOf(fn, shape, params, opts);
  const B = batchOf(fn, shape, x);
  checkLabels(fn, shape, labels, B);
  checkTargets(fn, shape, targets, B);
  const { R, C, H, O, L } = m;
  const info = pixelParamInfo(shape);
  const g: Grads = {};
  for (const { name, shape: dims } of info) g[name] = new Float64Array(dims.reduce((a, d) => a * d, 1));
  const logits = new Float64Array(O);
  const dlogits = new Float64Array(O);
  const s = headScratch(m);
  let sum = 0;
  for (let b = 0; b < B; b++) {
    const xo = b * R * C;
    const label = labelOf(labels, b);
    const run = runImage(m, x, xo, label, true);
    const yL = run.ys[L];
    // dL/dy_L, position by position through the head; L = (1/B) Σ_b Σ_pixels nll.
    let dy: Float64Array = new Float64Array(R * C * H);
    for (let p = 0; p < R * C; p++) {
      headAt(m, yL, p * H, s, logits, 0);
      sum += pixelLoss(m, logits, 0, targets[xo + p], 1 / B, dlogits);
      headBackward(m, g, yL, p * H, s, dlogits, dy, p * H);
    }
    for (let l = L - 1; l >= 0; l--) dy = rowLayerBackward(m, g, l, run, label, dy);
    inputConvBackward(m, g, x, xo, dy);
  }
  applyMask(g['input_conv.weight'], m.maskA, TAPS);
  for (let l = 0; l < L; l++) applyMask(g[`rows.${l}.weight_is`], m.maskB, ROW_KERNEL);
  const grads: Record<string, Float64Array> = {};
  for (const { name } of info) grads[name] = g[name];
  return { loss: sum / B, bitsPerDim: pixelBitsPerDim(shape, sum / B), grads };
}

// ---------------------------------------------------------------------------------------------------
// Row by row, for sampling

/** The state before row 0: zeros, `h [L, C, H]` and (LSTM) `c [L, C, H]`. */
export function pixelInitialRowState(shape: PixelRnnShape): PixelRowState {
  const n = shape.layers * shape.cols * shape.hidden;
  return { h: new Float64Array(n), c: shape.cell === 'lstm' ? new Float64Array(n) : null };
}

/**
 * Row `row` of the input convolution's output y_0, `[C, H]`, for one image `image [R, C]` of model
 * inputs. Only pixels before (row, j) reach column j, so pixels not generated yet may hold anything.
 */
export function pixelInputConvRow(
  shape: PixelRnnShape,
  params: PixelParams,
  image: ArrayLike<number>,
  row: number,
  opts: PixelOptions = {},
): Float64Array {
  const fn = 'pixelInputConvRow';
  const m = modelOf(fn, shape, params, opts);
  if (batchOf(fn, shape, image) !== 1) {
    throw new ShapeError(`${fn}: expected one image of ${m.R * m.C} values, got ${image.length}`);
  }
  if (!Number.isInteger(row) || row < 0 || row >= m.R) {
    throw new ShapeError(`${fn}: row must be an integer in 0…${m.R - 1}, got ${row}`);
  }
  const out = new Float64Array(m.C * m.H);
  inputConvRow(m, image, 0, row, out, 0);
  return out;
}

/**
 * One row through every row layer and the head, for one image: from the state left by the previous
 * row and `y0Row [C, H]` (this row of the input convolution, `pixelInputConvRow`), returns the new
 * state and the row's logits `[C, O]`. The same arithmetic as `pixelForward`, in row-major order
 * (layer l of row i needs only layer l−1 of row i and layer l of row i−1). `state` is not changed.
 */
export function pixelRowStep(
  shape: PixelRnnShape,
  params: PixelParams,
  state: PixelRowState,
  y0Row: ArrayLike<number>,
  label: number | null,
  opts: PixelOptions = {},
): { state: PixelRowState; logits: Float64Array } {
  const fn = 'pixelRowStep';
  const m = modelOf(fn, shape, params, opts);
  const n = m.L * m.C * m.H;
  if (state.h.length !== n || (m.lstm ? state.c === null || state.c.length !== n : state.c !== null)) {
    throw new ShapeError(
      `${fn}: state must hold h [layers ${m.L}, cols ${m.C}, hidden ${m.H}]${m.lstm ? ' and c of the same shape' : ' and c = null (GRU)'}`,
    );
  }
  if (y0Row.length !== m.C * m.H) {
    throw new ShapeError(`${fn}: y0Row holds ${y0Row.length} values; [cols ${m.C}, hidden ${m.H}] needs ${m.C * m.H}`);
  }
  if (m.K === 0) {
    if (label !== null) throw new ShapeError(`${fn}: this model has no classes, but a label was given`);
  } else {
    if (label === null) throw new ShapeError(`${fn}: this model is class-conditional: a label is required`);
    checkLabel(fn, m.K, label, 'label');
  }
  return rowStep(m, state, Float64Array.from(y0Row), label);
}

function rowStep(
  m: Model,
  state: PixelRowState,
  y0Row: Float64Array,
  label: number | null,
): { state: PixelRowState; logits: Float64Array } {
  const { H, GH, C, L, O } = m;
  const row = C * H;
  const next: PixelRowState = { h: new Float64Array(L * row), c: m.lstm ? new Float64Array(L * row) : null };
  const is = new Float64Array(C * GH);
  const ss = new Float64Array(C * GH);
  let y = y0Row;
  for (let l = 0; l < L; l++) {
    const layer = m.layers[l];
    const hPrev = state.h.subarray(l * row, (l + 1) * row);
    const hOut = next.h.subarray(l * row, (l + 1) * row);
    rowConv(m, layer.wis, isBias(m, layer, label), y, is);
    rowConv(m, layer.wss, Float64Array.from(layer.bss), hPrev, ss);
    cellRow(
      m,
      is,
      ss,
      hPrev,
      state.c === null ? null : state.c.subarray(l * row, (l + 1) * row),
      hOut,
      next.c === null ? null : next.c.subarray(l * row, (l + 1) * row),
      null,
    );
    const yNext = new Float64Array(row);
    for (let k = 0; k < row; k++) yNext[k] = hOut[k] + y[k];
    y = yNext;
  }
  const logits = new Float64Array(C * O);
  const s = headScratch(m);
  for (let j = 0; j < C; j++) headAt(m, y, j * H, s, logits, j * O);
  return { state: next, logits };
}

/**
 * A pixel value drawn with the uniform `u ∈ [0, 1)` from the logits `[O]` at `offset`:
 *   categorical: the smallest v with u·S < Σ_{w ≤ v} e^{ℓ_w − max ℓ}, S = Σ_w e^{ℓ_w − max ℓ} (sums in
 *                order of w; if rounding leaves none, the largest v of nonzero weight);
 *   Bernoulli:   1 if u < σ(s), else 0.
 */
export function pixelDrawValue(output: PixelOutput, logits: ArrayLike<number>, offset: number, u: number): number {
  if (output === 'bernoulli') return u < sigmoid(logits[offset]) ? 1 : 0;
  const O = pixelOutputWidth(output);
  let max = -Infinity;
  for (let v = 0; v < O; v++) if (logits[offset + v] > max) max = logits[offset + v];
  let total = 0;
  for (let v = 0; v < O; v++) total += Math.exp(logits[offset + v] - max);
  const target = u * total;
  let acc = 0;
  let last = 0;
  for (let v = 0; v < O; v++) {
    const e = Math.exp(logits[offset + v] - max);
    acc += e;
    if (e > 0) last = v;
    if (target < acc) return v;
  }
  return last;
}

/**
 * `n` images `[n, R, C]` of pixel values (targets' range), sampled pixel by pixel in raster order: for
 * each pixel the current row's input convolution and row step are recomputed from the pixels drawn so
 * far and the state after the previous row, and its value is drawn with `pixelDrawValue` from one
 * `rng.uniform()` — one uniform per sampled pixel, image by image, in raster order; given rows
 * (`topRows`) are copied and use none. Slow (C row steps per row); the check of the native sampler.
 */
export function pixelSampleReference(
  shape: PixelRnnShape,
  params: PixelParams,
  n: number,
  rng: UniformSource,
  opts: PixelSampleOptions = {},
): Uint8Array {
  const fn = 'pixelSampleReference';
  const m = modelOf(fn, shape, params, opts);
  const { R, C, H } = m;
  if (!Number.isSafeInteger(n) || n < 0) throw new ShapeError(`${fn}: n must be an integer ≥ 0, got ${n}`);
  const given = opts.topRows ?? { rows: 0, values: [] };
  if (!Number.isInteger(given.rows) || given.rows < 0 || given.rows > R) {
    throw new ShapeError(`${fn}: topRows.rows must be an integer in 0…${R}, got ${given.rows}`);
  }
  const perImage = given.rows * C;
  const shared = given.values.length === perImage;
  if (!shared && given.values.length !== n * perImage) {
    throw new ShapeError(
      `${fn}: topRows.values hold ${given.values.length} values; [rows ${given.rows}, cols ${C}] needs ${perImage}, or ${n * perImage} for [n ${n}, …]`,
    );
  }
  checkPixelValues(fn, m.output, given.values, 'given pixel');
  const labels = sampleLabels(fn, m, n, opts.label);
  const out = new Uint8Array(n * R * C);
  for (let s = 0; s < n; s++) {
    const label = labels === null ? null : labels[s];
    const values = out.subarray(s * R * C, (s + 1) * R * C);
    const image = new Float64Array(R * C);
    let state = pixelInitialRowState(shape);
    const y0Row = new Float64Array(C * H);
    for (let i = 0; i < R; i++) {
      if (i < given.rows) {
        const go = (shared ? 0 : s * perImage) + i * C;
        for (let j = 0; j < C; j++) {
          values[i * C + j] = given.values[go + j];
          image[i * C + j] = pixelInputValue(m.output, values[i * C + j]);
        }
      } else {
        for (let j = 0; j < C; j++) {
          inputConvRow(m, image, 0, i, y0Row, 0);
          const { logits } = rowStep(m, state, y0Row, label);
          const v = pixelDrawValue(m.output, logits, j * m.O, rng.uniform());
          values[i * C + j] = v;
          image[i * C + j] = pixelInputValue(m.output, v);
        }
      }
      inputConvRow(m, image, 0, i, y0Row, 0);
      state = rowStep(m, state, y0Row, label).state;
    }
  }
  return out;
}

/** The label of each of n samples, or null for a model without classes. */
function sampleLabels(
  fn: string,
  m: Model,
  n: number,
  label: number | ArrayLike<number> | undefined,
): ArrayLike<number> | null {
  if (m.K === 0) {
    if (label !== undefined) throw new ShapeError(`${fn}: this model has no classes, but a label was given`);
    return null;
  }
  if (label === undefined) throw new ShapeError(`${fn}: this model is class-conditional: a label is required`);
  const labels = typeof label === 'number' ? new Array<number>(n).fill(label) : label;
  if (typeof label === 'number') checkLabel(fn, m.K, label, 'label');
  if (labels.length !== n) throw new ShapeError(`${fn}: labels hold ${labels.length} values; [n ${n}] needs ${n}`);
  for (let s = 0; s < n; s++) checkLabel(fn, m.K, labels[s], `label ${s}`);
  return labels;
}
