/**
 * The image captioner in plain TypeScript: the float64 reference (the test oracle) of the native one in
 * `crates/arflow-core/src/caption.rs`.
 *
 *   pixels [B, S, S] / 255 → for each block i = 1..K: encoder.conv{i} (3×3, stride 1, zero padding 1)
 *     → ReLU → 2×2 mean pool → flatten channels-last [B, (S/2^K)²·C_K] (index (y, x, c))
 *     → bridge.{l}: s0_l = tanh(W_l · features + b_l)
 *   decIn → the shared decoder (`./decoder.ts`) from s0 → logits; masked mean cross-entropy.
 *
 * Parameters in state_dict order (`captionParamInfo`): `encoder.conv{i}.weight [C_i, C_{i−1}, 3, 3]`,
 * `encoder.conv{i}.bias [C_i]` (C_0 = 1), `bridge.{l}.weight [S·H, F]`, `bridge.{l}.bias [S·H]`, then the
 * decoder's. The CNN runs in doubles whatever `dtype` (the storage type of the decoder's activations
 * and of results). ReLU's derivative at exactly 0 is taken as 1, as candle's is.
 */
import { ConfigError } from '../../errors.js';
import { type CellKind, type ParamInfo, stateWidth } from '../types.js';
import {
  bridgeBackward,
  bridgeForward,
  checkDecoderBatch,
  checkParams,
  type DecoderSampling,
  type DecoderShape,
  decoderLossAndGrads,
  decoderNll,
  decoderParamInfo,
  decoderStep,
  type Params,
  packState,
} from './decoder.js';
import { type Conv, conv3x3 } from './flownet.js';
import { type ArrayOf, type Dtype, type FloatArray, toDtype } from './gru.js';

export interface CaptionShape {
  vocab: number;
  embed: number;
  hidden: number;
  layers: number;
  cell: CellKind;
  image: number;
  channels: number[];
}

function decoderShape(s: CaptionShape): DecoderShape {
  return { tgtVocab: s.vocab, embed: s.embed, hidden: s.hidden, layers: s.layers, cell: s.cell };
}

function checkShape(s: CaptionShape): void {
  for (const key of ['vocab', 'embed', 'hidden', 'layers', 'image'] as const) {
    if (!Number.isSafeInteger(s[key]) || s[key] < 1) {
      throw new ConfigError(`caption shape: ${key} must be an integer ≥ 1, got ${s[key]}`);
    }
  }
  if (s.vocab < 4) throw new ConfigError(`caption shape: vocab must hold PAD, BOS, EOS and a word, got ${s.vocab}`);
  if (
    !Array.isArray(s.channels) ||
    s.channels.length === 0 ||
    !s.channels.every((c) => Number.isSafeInteger(c) && c >= 1)
  )
    throw new ConfigError(
      `caption shape: channels must list ≥ 1 block of ≥ 1 channel, got ${JSON.stringify(s.channels)}`,
    );
  if (s.image % 2 ** s.channels.length !== 0)
    throw new ConfigError(`caption shape: image side ${s.image} is not divisible by 2^${s.channels.length}`);
  stateWidth(s.cell);
}

/** Features the bridge reads: (S / 2^K)² · C_K. */
export function captionFeatures(s: CaptionShape): number {
  const side = s.image / 2 ** s.channels.length;
  return side * side * s.channels[s.channels.length - 1];
}

/** Parameter names and shapes of a captioner of this shape, in state_dict order. */
export function captionParamInfo(s: CaptionShape): ParamInfo[] {
  checkShape(s);
  const info: ParamInfo[] = [];
  let cin = 1;
  s.channels.forEach((cout, i) => {
    info.push({ name: `encoder.conv${i + 1}.weight`, shape: [cout, cin, 3, 3] });
    info.push({ name: `encoder.conv${i + 1}.bias`, shape: [cout] });
    cin = cout;
  });
  const SH = stateWidth(s.cell) * s.hidden;
  for (let l = 0; l < s.layers; l++) {
    info.push(
      { name: `bridge.${l}.weight`, shape: [SH, captionFeatures(s)] },
      { name: `bridge.${l}.bias`, shape: [SH] },
    );
  }
  info.push(...decoderParamInfo(decoderShape(s)));
  return info;
}

function checkImages(s: CaptionShape, images: Uint8Array, batch: number): void {
  if (!Number.isSafeInteger(batch) || batch < 1) throw new ConfigError(`images: batch must be ≥ 1, got ${batch}`);
  const want = batch * s.image * s.image;
  if (!(images instanceof Uint8Array) || images.length !== want) {
    throw new ConfigError(
      `images: expected ${batch} images of ${s.image}×${s.image} = ${want} pixels, got ${images?.length}`,
    );
  }
}

/** What the CNN's backward needs from its forward, per block (NCHW). */
interface Block {
  conv: Conv;
  /** Side of the block's input. */
  side: number;
  x: Float64Array;
  pre: Float64Array;
}

interface Encoded {
  blocks: Block[];
  /** `[B, F]`, channels-last. */
  features: Float64Array;
}

function convOf(params: Params, i: number, cin: number, cout: number): Conv {
  return {
    w: Float64Array.from(params[`encoder.conv${i + 1}.weight`]),
    b: Float64Array.from(params[`encoder.conv${i + 1}.bias`]),
    cin,
    cout,
  };
}

/** The CNN over `batch` images: blocks of conv → ReLU → 2×2 mean pool, then the channels-last flatten. */
function runCnn(s: CaptionShape, params: Params, images: Uint8Array, B: number): Encoded {
  let x: Float64Array = Float64Array.from(images, (p) => p / 255);
  let side = s.image;
  let cin = 1;
  const blocks: Block[] = [];
  s.channels.forEach((cout, i) => {
    const conv = convOf(params, i, cin, cout);
    const pre = conv3x3(x, B, side, side, conv);
    blocks.push({ conv, side, x, pre });
    const half = side / 2;
    const pooled = new Float64Array(B * cout * half * half);
    for (let p = 0; p < pooled.length; p++) {
      const xx = p % half;
      const yy = Math.floor(p / half) % half;
      const plane = Math.floor(p / (half * half)) * side * side;
      let sum = 0;
      for (const [dy, dx] of [
        [0, 0],
        [0, 1],
        [1, 0],
        [1, 1],
      ])
        sum += Math.max(0, pre[plane + (2 * yy + dy) * side + 2 * xx + dx]);
      pooled[p] = sum / 4;
    }
    x = pooled;
    side = half;
    cin = cout;
  });
  const C = cin;
  const features = new Float64Array(B * side * side * C);
  const scale = 1 / Math.sqrt(captionFeatures(s));
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let q = 0; q < side * side; q++)
        features[(b * side * side + q) * C + c] = x[(b * C + c) * side * side + q] * scale;
    }
  }
  return { blocks, features };
}

/** Gradients of the conv blocks from dL/d(features); stores them in `grads`. */
function cnnBackward(
  s: CaptionShape,
  enc: Encoded,
  dFeatures: Float64Array,
  B: number,
  grads: Record<string, FloatArray>,
  dtype: Dtype,
): void {
  const K = s.channels.length;
  let side = enc.blocks[K - 1].side / 2;
  const C = s.channels[K - 1];
  // dL/d(pooled output of the block), NCHW.
  let dOut = new Float64Array(B * C * side * side);
  const scale = 1 / Math.sqrt(captionFeatures(s));
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let q = 0; q < side * side; q++)
        dOut[(b * C + c) * side * side + q] = dFeatures[(b * side * side + q) * C + c] * scale;
    }
  }
  for (let i = K - 1; i >= 0; i--) {
    const { conv, x, pre } = enc.blocks[i];
    side = enc.blocks[i].side;
    const half = side / 2;
    const { cin, cout, w } = conv;
    // Through the pool (each input gets a quarter) and the ReLU.
    const dPre = new Float64Array(pre.length);
    for (let p = 0; p < pre.length; p++) {
      const xx = p % side;
      const yy = Math.floor(p / side) % side;
      const plane = Math.floor(p / (side * side));
      if (pre[p] >= 0) dPre[p] = dOut[(plane * half + (yy >> 1)) * half + (xx >> 1)] / 4;
    }
    const dW = new Float64Array(w.length);
    const dB = new Float64Array(cout);
    const dX = i > 0 ? new Float64Array(x.length) : null;
    for (let n = 0; n < B; n++) {
      for (let o = 0; o < cout; o++) {
        for (let h = 0; h < side; h++) {
          for (let ww = 0; ww < side; ww++) {
            const g = dPre[((n * cout + o) * side + h) * side + ww];
            if (g === 0) continue;
            dB[o] += g;
            for (let ci = 0; ci < cin; ci++) {
              const xi = (n * cin + ci) * side * side;
              const wi = (o * cin + ci) * 9;
              for (let dh = 0; dh < 3; dh++) {
                const hh = h + dh - 1;
                if (hh < 0 || hh >= side) continue;
                for (let dw = 0; dw < 3; dw++) {
                  const xw = ww + dw - 1;
                  if (xw < 0 || xw >= side) continue;
                  dW[wi + dh * 3 + dw] += g * x[xi + hh * side + xw];
                  if (dX) dX[xi + hh * side + xw] += g * w[wi + dh * 3 + dw];
                }
              }
            }
          }
        }
      }
    }
    grads[`encoder.conv${i + 1}.weight`] = toDtype(dW, dtype);
    grads[`encoder.conv${i + 1}.bias`] = toDtype(dB, dtype);
    if (dX) dOut = dX;
  }
}

function initialStates(s: CaptionShape, params: Params, features: Float64Array, B: number): Float64Array[] {
  const SH = stateWidth(s.cell) * s.hidden;
  return bridgeForward(params, new Array(s.layers).fill(features), B, SH);
}

/** The decoder's initial state `[L, B, S·H]` for `batch` images of `image × image` pixels. */
export function captionEncode<D extends Dtype>(
  shape: CaptionShape,
  params: Params,
  images: Uint8Array,
  batch: number,
  dtype: D,
): ArrayOf<D> {
  checkParams(captionParamInfo(shape), params);
  checkImages(shape, images, batch);
  const { features } = runCnn(shape, params, images, batch);
  return packState(initialStates(shape, params, features, batch), dtype) as ArrayOf<D>;
}

/** One decoder step of N streams (see `decoderStep`). */
export function captionDecodeStep<D extends Dtype>(
  shape: CaptionShape,
  params: Params,
  state: FloatArray,
  tokens: Uint32Array,
  dtype: D,
): { state: ArrayOf<D>; logProbs: ArrayOf<D> } {
  checkParams(captionParamInfo(shape), params);
  return decoderStep(decoderShape(shape), params, state, tokens, dtype) as { state: ArrayOf<D>; logProbs: ArrayOf<D> };
}

function validate(
  shape: CaptionShape,
  params: Params,
  images: Uint8Array,
  decIn: Uint32Array,
  tgt: Uint32Array,
  batch: number,
  tgtLen: number,
  ss: DecoderSampling | undefined,
): void {
  checkParams(captionParamInfo(shape), params);
  checkImages(shape, images, batch);
  checkDecoderBatch(decoderShape(shape), decIn, tgt, batch, tgtLen, ss);
}

/** Summed NLL (nats) of the non-PAD targets and their count; no gradient. */
export function captionNll(
  shape: CaptionShape,
  params: Params,
  images: Uint8Array,
  decIn: Uint32Array,
  tgt: Uint32Array,
  batch: number,
  tgtLen: number,
  dtype: Dtype,
  ss?: DecoderSampling,
): { nll: number; tokens: number } {
  validate(shape, params, images, decIn, tgt, batch, tgtLen, ss);
  const { features } = runCnn(shape, params, images, batch);
  const state0 = packState(initialStates(shape, params, features, batch), dtype);
  return decoderNll(decoderShape(shape), params, state0, decIn, tgt, batch, tgtLen, dtype, ss);
}

/**
 * Mean cross-entropy over the non-PAD targets and its gradient w.r.t. every parameter (the convs
 * included); changes nothing. With `ss`, the decoder inputs are mixed first and returned in `inputs`.
 */
export function captionLossAndGrads<D extends Dtype>(
  shape: CaptionShape,
  params: Params,
  images: Uint8Array,
  decIn: Uint32Array,
  tgt: Uint32Array,
  batch: number,
  tgtLen: number,
  dtype: D,
  ss?: DecoderSampling,
): { loss: number; grads: Record<string, ArrayOf<D>>; inputs: Uint32Array; tokens: number } {
  validate(shape, params, images, decIn, tgt, batch, tgtLen, ss);
  const B = batch;
  const SH = stateWidth(shape.cell) * shape.hidden;
  const enc = runCnn(shape, params, images, B);
  const s0 = initialStates(shape, params, enc.features, B);
  const dec = decoderLossAndGrads(decoderShape(shape), params, packState(s0, dtype), decIn, tgt, B, tgtLen, dtype, ss);
  const grads = dec.grads;
  const perLayer = bridgeBackward(params, grads, new Array(shape.layers).fill(enc.features), s0, dec.ds0, B, SH, dtype);
  // Every layer's bridge reads the same features: their gradients add up.
  const dFeatures = new Float64Array(enc.features.length);
  for (const d of perLayer) for (let j = 0; j < d.length; j++) dFeatures[j] += d[j];
  cnnBackward(shape, enc, dFeatures, B, grads, dtype);
  const ordered: Record<string, ArrayOf<D>> = {};
  for (const { name } of captionParamInfo(shape)) ordered[name] = grads[name] as ArrayOf<D>;
  return { loss: dec.loss, grads: ordered, inputs: dec.inputs, tokens: dec.tokens };
}
