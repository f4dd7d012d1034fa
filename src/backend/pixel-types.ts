/**
 * The shape, parameters and masks of the Pixel-RNN image model (van den Oord, Kalchbrenner and
 * Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", arXiv:1601.06759): the Row LSTM of the paper and
 * a Row GRU built the same way, for single-channel images of `rows × cols` pixels. The float64
 * reference is `src/backend/js/pixel.ts`; its module comment states every equation.
 *
 * Parameters (PyTorch `state_dict` names and layouts, convolution weights `[out, in, kh, kw]`), in order:
 *   input_conv.weight [H, 1, 7, 7]   input_conv.bias [H]                      7×7 conv, mask A
 *   for l < L:
 *     rows.{l}.weight_is [G·H, H, 1, 3]   rows.{l}.bias_is [G·H]             1×3 input-to-state conv, mask B
 *     rows.{l}.weight_ss [G·H, H, 1, 3]   rows.{l}.bias_ss [G·H]             1×3 state-to-state conv, no mask
 *     rows.{l}.label_bias [K, G·H]                                           only with `classes: K`
 *   out1.weight [H, H, 1, 1]   out1.bias [H]                                  1×1 conv
 *   out2.weight [O, H, 1, 1]   out2.bias [O]                                  1×1 conv
 * with G = 4 (LSTM gates i, f, g, o) or 3 (GRU gates r, z, n), stacked in blocks of H output channels in
 * that order as PyTorch stacks `weight_ih`; O = 256 (categorical) or 1 (Bernoulli logit).
 *
 * Masked taps stay in the stored weights; the forward pass multiplies the weights by the mask, so a
 * masked tap has no effect and its gradient is exactly 0.
 */
import { ConfigError } from '../errors.js';
import { checkParamCount, describeValue } from './limits.js';
import type { ParamInfo } from './types.js';

/** The recurrent cell of each row layer: the paper's Row LSTM, or the same layer with a GRU core. */
export type PixelCell = 'lstm' | 'gru';
export const PIXEL_CELLS: readonly PixelCell[] = ['lstm', 'gru'];

/**
 * The per-pixel distribution: a 256-way softmax over 8-bit values (inputs are value/255), or a
 * Bernoulli over binarised pixels (inputs are 0/1) with one logit.
 */
export type PixelOutput = 'categorical' | 'bernoulli';
export const PIXEL_OUTPUTS: readonly PixelOutput[] = ['categorical', 'bernoulli'];

export interface PixelRnnShape {
  cell: PixelCell;
  /** Feature maps H of every layer (the residual stream, each gate block, the 1×1 head layer). */
  hidden: number;
  /** Row layers L (≥ 1). */
  layers: number;
  /** Image height R. */
  rows: number;
  /** Image width C. */
  cols: number;
  output: PixelOutput;
  /** Class conditioning: K classes, a learned bias per class and layer. Absent: unconditional. */
  classes?: number;
}

/** Side of the input convolution's square kernel, and its zero padding (same-size output). */
export const INPUT_KERNEL = 7;
export const INPUT_PAD = 3;
/** Width of the row convolutions' `1 × 3` kernels; they pad one column on each side. */
export const ROW_KERNEL = 3;
/** Values an 8-bit pixel takes. */
export const PIXEL_LEVELS = 256;

/**
 * The causal mask of a `kh × kw` kernel centred at (⌊kh/2⌋, ⌊kw/2⌋), row-major `[kh·kw]`, 1 where a tap
 * is kept. Kernel tap (ky, kx) of PyTorch's cross-correlation reads the input at (i + ky − ⌊kh/2⌋,
 * j + kx − ⌊kw/2⌋) for output (i, j), so the mask keeps exactly the taps that read pixels before (i, j)
 * in raster order:
 *   A: ky < cy, or ky = cy and kx < cx           (the centre, i.e. the pixel itself, is masked)
 *   B: ky < cy, or ky = cy and kx ≤ cx           (the centre is kept)
 * Paper §3.4: mask A is applied to the first convolution only, mask B to every later input-to-state
 * convolution. With one colour channel the paper's split of the features into R, G, B groups is void,
 * so the masks are purely spatial.
 */
export function causalMask(type: 'A' | 'B', kh: number, kw: number): number[] {
  const cy = Math.floor(kh / 2);
  const cx = Math.floor(kw / 2);
  const m: number[] = [];
  for (let ky = 0; ky < kh; ky++) {
    for (let kx = 0; kx < kw; kx++) m.push(ky < cy || (ky === cy && (kx < cx || (type === 'B' && kx === cx))) ? 1 : 0);
  }
  return m;
}

/**
 * Mask A of the 7×7 input convolution, `[7·7]` row-major over (ky, kx): rows ky = 0…2 (image rows
 * i−3…i−1) whole, and row ky = 3 (image row i) at kx = 0…2 (columns j−3…j−1). 24 of 49 taps.
 */
export const MASK_A_7X7: readonly number[] = Object.freeze(causalMask('A', INPUT_KERNEL, INPUT_KERNEL));

/**
 * Mask B of the 1×3 input-to-state convolution, `[3]` over kx: [1, 1, 0] — columns j−1 and j are read,
 * column j+1 is not.
 */
export const MASK_B_1X3: readonly number[] = Object.freeze(causalMask('B', 1, ROW_KERNEL));

function checkOneOf<T extends string>(what: string, v: T, allowed: readonly T[]): void {
  if (!allowed.includes(v)) {
    throw new ConfigError(`pixel shape: unknown ${what} ${describeValue(v)}: expected one of ${allowed.join(', ')}`);
  }
}

/** Gate blocks per layer: 4 (i, f, g, o) for the LSTM, 3 (r, z, n) for the GRU. */
export function pixelGateCount(cell: PixelCell): number {
  checkOneOf('cell', cell, PIXEL_CELLS);
  return cell === 'lstm' ? 4 : 3;
}

/** Output channels O of the head: 256 logits (categorical) or 1 logit (Bernoulli). */
export function pixelOutputWidth(output: PixelOutput): number {
  checkOneOf('output', output, PIXEL_OUTPUTS);
  return output === 'categorical' ? PIXEL_LEVELS : 1;
}

/** Values a target pixel may take: 0…255 (categorical) or 0/1 (Bernoulli). */
export function pixelTargetLevels(output: PixelOutput): number {
  checkOneOf('output', output, PIXEL_OUTPUTS);
  return output === 'categorical' ? PIXEL_LEVELS : 2;
}

/** The model input of pixel value `v`: v/255 for 8-bit data (categorical), v itself for binarised data. */
export function pixelInputValue(output: PixelOutput, v: number): number {
  return output === 'categorical' ? v / (PIXEL_LEVELS - 1) : v;
}

/** Bits per dimension of a negative log-likelihood in nats per image: nats / (R·C·ln 2). */
export function pixelBitsPerDim(shape: PixelRnnShape, natsPerImage: number): number {
  return natsPerImage / (shape.rows * shape.cols * Math.LN2);
}

/** Throws ConfigError unless every field of `shape` is usable (integers ≥ 1, known cell and output). */
export function validatePixelShape(shape: PixelRnnShape): void {
  if (typeof shape !== 'object' || shape === null) {
    throw new ConfigError(`pixel shape must be an object, got ${describeValue(shape)}`);
  }
  checkOneOf('cell', shape.cell, PIXEL_CELLS);
  checkOneOf('output', shape.output, PIXEL_OUTPUTS);
  for (const key of ['hidden', 'layers', 'rows', 'cols'] as const) {
    const v = shape[key];
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new ConfigError(`pixel shape: ${key} must be an integer ≥ 1, got ${describeValue(v)}`);
    }
  }
  if (shape.classes !== undefined && (!Number.isSafeInteger(shape.classes) || shape.classes < 1)) {
    throw new ConfigError(
      `pixel shape: classes must be an integer ≥ 1 (leave it out for an unconditional model), got ${describeValue(shape.classes)}`,
    );
  }
  checkParamCount('this pixel model', paramInfoOf(shape), (big) =>
    big.name.endsWith('label_bias') ? 'lower classes or hidden' : 'lower hidden',
  );
}

/** Parameter names and shapes of a model of this shape, in the order of the module comment. */
export function pixelParamInfo(shape: PixelRnnShape): ParamInfo[] {
  validatePixelShape(shape);
  return paramInfoOf(shape);
}

/** `pixelParamInfo` of a shape whose fields are already checked. */
function paramInfoOf(shape: PixelRnnShape): ParamInfo[] {
  const H = shape.hidden;
  const GH = pixelGateCount(shape.cell) * H;
  const info: ParamInfo[] = [
    { name: 'input_conv.weight', shape: [H, 1, INPUT_KERNEL, INPUT_KERNEL] },
    { name: 'input_conv.bias', shape: [H] },
  ];
  for (let l = 0; l < shape.layers; l++) {
    info.push(
      { name: `rows.${l}.weight_is`, shape: [GH, H, 1, ROW_KERNEL] },
      { name: `rows.${l}.bias_is`, shape: [GH] },
      { name: `rows.${l}.weight_ss`, shape: [GH, H, 1, ROW_KERNEL] },
      { name: `rows.${l}.bias_ss`, shape: [GH] },
    );
    if (shape.classes !== undefined) info.push({ name: `rows.${l}.label_bias`, shape: [shape.classes, GH] });
  }
  const O = pixelOutputWidth(shape.output);
  info.push(
    { name: 'out1.weight', shape: [H, H, 1, 1] },
    { name: 'out1.bias', shape: [H] },
    { name: 'out2.weight', shape: [O, H, 1, 1] },
    { name: 'out2.bias', shape: [O] },
  );
  return info;
}
