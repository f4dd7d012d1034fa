/**
 * The recurrent encoder–decoder in plain TypeScript: the float64-accurate reference (the test oracle) of
 * the native seq2seq model.
 *
 *   src [B, Ts] → src_embedding → L encoder layers (each optionally bidirectional) → per layer, the final
 *   states of its directions → bridge.{l}: s0_l = tanh(W · [final_fwd, final_rev] + b)
 *   decIn [B, Tt] → tgt_embedding → L decoder layers from s0 → head on the top h → logits [B·Tt, Vt]
 *   loss = mean softmax cross-entropy over the positions whose target is not PAD.
 *
 * With D = 2 directions if bidirectional else 1, S = stateWidth(cell) (2 for the LSTM: h then c),
 * G = gateCount(cell), parameters in state_dict order (see `seq2seqParamInfo`):
 *   src_embedding.weight [Vs, E]
 *   encoder.{weight_ih,weight_hh,bias_ih,bias_hh}_l{l}{'', '_reverse'}  [G·H, I_l] [G·H, H] [G·H] [G·H],
 *     I_0 = E, I_l = D·H above (PyTorch's bidirectional nn.GRU/LSTM/RNN names and order)
 *   bridge.{l}.weight [S·H, D·S·H], bridge.{l}.bias [S·H]
 *   tgt_embedding.weight [Vt, E]
 *   decoder.{weight_ih,weight_hh,bias_ih,bias_hh}_l{l}  (I_0 = E, else H)
 *   head.weight [Vt, H], head.bias [Vt]
 *
 * The reverse direction of an encoder layer runs the cell over the time-reversed input from a zero state;
 * its outputs are reversed back before the layer above reads them (forward h first, then reverse h), and
 * its final state is the one after processing t = 0. A final state is the whole state row (S·H: h then
 * c), so the bridge of an LSTM sees [h_fwd, c_fwd, h_rev, c_rev] and produces tanh'd (h0, c0).
 *
 * Scheduled sampling (`Seq2SeqSampling`): the decoder inputs fed are mixed sequentially, row by row:
 * in[b,0] = decIn[b,0]; for t ≥ 1, decIn[b,t] where it is PAD or flips[b,t] = 1, else the model's own
 * sample from softmax(logits at t−1 given the mixed prefix) by inverse CDF against uniforms[b,t]. The
 * loss and gradients are those of teacher forcing on the mixed inputs (no gradient through the choices).
 *
 * `dtype` is the storage type of activations and results; params may be either float type. Sums, gates
 * and the softmax are computed in doubles. The decoder half (and scheduled sampling) is `./decoder.ts`,
 * shared with the image captioner.
 */
import { ConfigError } from '../../errors.js';
import { type CellKind, type ParamInfo, stateWidth } from '../types.js';
import { type CellDims, cellBackward, cellForward } from './cells.js';
import {
  BOS,
  bridgeBackward,
  bridgeForward,
  checkDecoderBatch,
  checkParams as checkParamsOf,
  checkTokens,
  type DecoderSampling,
  decoderLossAndGrads,
  decoderNll,
  decoderParamInfo,
  decoderStep,
  EOS,
  embed,
  type LayerCache,
  PAD,
  type Params,
  packState,
  rnnParamInfo,
  sampleInverseCdf,
  setCellGrads,
  weightsOf,
} from './decoder.js';
import { type ArrayOf, alloc, type Dtype, type FloatArray, toDtype } from './gru.js';

export { BOS, EOS, PAD, type Params, sampleInverseCdf };

export interface Seq2SeqShape {
  srcVocab: number;
  tgtVocab: number;
  embed: number;
  hidden: number;
  layers: number;
  cell: CellKind;
  bidirectional: boolean;
}

/** Scheduled-sampling decisions for every decoder input, both `[B, Tt]` (see `./decoder.ts`). */
export type Seq2SeqSampling = DecoderSampling;

export interface Seq2SeqLossGrads<A extends FloatArray> {
  /** Mean cross-entropy over the non-PAD targets (0 when there are none), nats. */
  loss: number;
  /** dL/d(param) by name, in state_dict order. */
  grads: Record<string, A>;
  /** The decoder inputs actually fed `[B, Tt]` (decIn itself, copied, without scheduled sampling). */
  inputs: Uint32Array;
  /** Number of non-PAD targets. */
  tokens: number;
}

const DIRS = ['', '_reverse'] as const;

/** Parameter names and shapes of a model of this shape, in state_dict order. */
export function seq2seqParamInfo(s: Seq2SeqShape): ParamInfo[] {
  checkShape(s);
  const { embed: E, hidden: H, layers: L } = s;
  const D = s.bidirectional ? 2 : 1;
  const S = stateWidth(s.cell);
  const info: ParamInfo[] = [{ name: 'src_embedding.weight', shape: [s.srcVocab, E] }];
  for (let l = 0; l < L; l++) {
    for (let d = 0; d < D; d++) info.push(...rnnParamInfo('encoder', l, DIRS[d], s.cell, l === 0 ? E : D * H, H));
  }
  for (let l = 0; l < L; l++) {
    info.push({ name: `bridge.${l}.weight`, shape: [S * H, D * S * H] }, { name: `bridge.${l}.bias`, shape: [S * H] });
  }
  info.push(...decoderParamInfo(s));
  return info;
}

// ---------------------------------------------------------------------------------------------------
// Validation

function checkShape(s: Seq2SeqShape): void {
  for (const key of ['srcVocab', 'tgtVocab', 'embed', 'hidden', 'layers'] as const) {
    const v = s[key];
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new ConfigError(`seq2seq shape: ${key} must be an integer ≥ 1, got ${v}`);
    }
  }
  for (const key of ['srcVocab', 'tgtVocab'] as const) {
    if (s[key] < 3) throw new ConfigError(`seq2seq shape: ${key} must hold PAD, BOS and EOS (≥ 3), got ${s[key]}`);
  }
  if (typeof s.bidirectional !== 'boolean') {
    throw new ConfigError(`seq2seq shape: bidirectional must be true or false, got ${JSON.stringify(s.bidirectional)}`);
  }
  stateWidth(s.cell); // ConfigError for an unknown cell
}

function checkParams(shape: Seq2SeqShape, params: Params): void {
  checkParamsOf(seq2seqParamInfo(shape), params);
}

// ---------------------------------------------------------------------------------------------------
// Forward pieces

interface Encoded {
  /** Per layer, `[B, D·S·H]`: the forward direction's final state row, then the reverse one's. */
  finals: FloatArray[];
  /** Per layer, per direction (empty unless saved). */
  caches: LayerCache[][];
}

/** `[B, T, W]` with the time axis reversed (an involution). */
function reverseTime(a: FloatArray, B: number, T: number, W: number): FloatArray {
  const r = alloc(a instanceof Float64Array ? 'f64' : 'f32', a.length);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) r.set(a.subarray((b * T + t) * W, (b * T + t + 1) * W), (b * T + T - 1 - t) * W);
  }
  return r;
}

function runEncoder(
  shape: Seq2SeqShape,
  params: Params,
  src: Uint32Array,
  B: number,
  Ts: number,
  dtype: Dtype,
  save: boolean,
): Encoded {
  const { embed: E, hidden: H, layers: L, cell } = shape;
  const D = shape.bidirectional ? 2 : 1;
  const SH = stateWidth(cell) * H;
  let x = embed(params['src_embedding.weight'], src, E, dtype);
  const finals: FloatArray[] = [];
  const caches: LayerCache[][] = [];
  for (let l = 0; l < L; l++) {
    const dims: CellDims = { batch: B, seq: Ts, input: l === 0 ? E : D * H, hidden: H };
    const final = alloc(dtype, B * D * SH);
    const next = alloc(dtype, B * Ts * D * H);
    const layerCaches: LayerCache[] = [];
    for (let d = 0; d < D; d++) {
      const xd = d === 0 ? x : reverseTime(x, B, Ts, dims.input);
      const s0 = alloc(dtype, B * SH);
      const { out, saved } = cellForward(cell, dims, xd, s0, weightsOf(params, 'encoder', l, DIRS[d]), {
        dtype,
        save,
      });
      // In processing order the last row is the final state: t = Ts−1 forward, t = 0 reversed.
      for (let b = 0; b < B; b++) {
        final.set(out.subarray((b * Ts + Ts - 1) * SH, (b * Ts + Ts) * SH), (b * D + d) * SH);
        for (let t = 0; t < Ts; t++) {
          const row = b * Ts + (d === 0 ? t : Ts - 1 - t);
          next.set(out.subarray(row * SH, row * SH + H), ((b * Ts + t) * D + d) * H);
        }
      }
      if (save) layerCaches.push({ dims, x: xd, s0, out, saved });
    }
    finals.push(final);
    caches.push(layerCaches);
    x = next;
  }
  return { finals, caches };
}

/** s0_l = tanh(W_l · final_l + b_l) in doubles, `[B, S·H]` per layer. */
function runBridge(shape: Seq2SeqShape, params: Params, finals: FloatArray[], B: number): Float64Array[] {
  return bridgeForward(params, finals, B, stateWidth(shape.cell) * shape.hidden);
}

function validate(
  shape: Seq2SeqShape,
  params: Params,
  src: Uint32Array,
  decIn: Uint32Array,
  tgt: Uint32Array,
  batch: number,
  srcLen: number,
  tgtLen: number,
  ss: Seq2SeqSampling | undefined,
): void {
  checkShape(shape);
  checkParams(shape, params);
  checkTokens('source', src, batch, srcLen, shape.srcVocab);
  checkDecoderBatch(shape, decIn, tgt, batch, tgtLen, ss);
}

// ---------------------------------------------------------------------------------------------------
// Public API

/**
 * The decoder's initial state `[L, B, S·H]`: the encoder over `src [B, Ts]`, then the bridge. For the
 * LSTM each row is h0 then c0.
 */
export function seq2seqEncode<D extends Dtype>(
  shape: Seq2SeqShape,
  params: Params,
  src: Uint32Array,
  batch: number,
  srcLen: number,
  dtype: D,
): ArrayOf<D> {
  checkShape(shape);
  checkParams(shape, params);
  checkTokens('source', src, batch, srcLen, shape.srcVocab);
  const { finals } = runEncoder(shape, params, src, batch, srcLen, dtype, false);
  return packState(runBridge(shape, params, finals, batch), dtype) as ArrayOf<D>;
}

/**
 * The encoder's final states before the bridge, `[L, B, D·S·H]`: per layer and row, the forward
 * direction's state after t = Ts−1, then (bidirectional) the reverse direction's after t = 0.
 */
export function seq2seqEncoderFinals<D extends Dtype>(
  shape: Seq2SeqShape,
  params: Params,
  src: Uint32Array,
  batch: number,
  srcLen: number,
  dtype: D,
): ArrayOf<D> {
  checkShape(shape);
  checkParams(shape, params);
  checkTokens('source', src, batch, srcLen, shape.srcVocab);
  const { finals } = runEncoder(shape, params, src, batch, srcLen, dtype, false);
  const n = finals[0].length;
  const out = alloc(dtype, shape.layers * n);
  for (let l = 0; l < shape.layers; l++) out.set(finals[l], l * n);
  return out;
}

/**
 * One decoder step of N streams: feeds `tokens [N]` from `state [L, N, S·H]`; the next state and the
 * log-softmax of the head `[N, Vt]`.
 */
export function seq2seqDecodeStep<D extends Dtype>(
  shape: Seq2SeqShape,
  params: Params,
  state: FloatArray,
  tokens: Uint32Array,
  dtype: D,
): { state: ArrayOf<D>; logProbs: ArrayOf<D> } {
  checkShape(shape);
  checkParams(shape, params);
  return decoderStep(shape, params, state, tokens, dtype) as { state: ArrayOf<D>; logProbs: ArrayOf<D> };
}

/**
 * Summed NLL (nats) of the non-PAD targets and their count; no gradient. With `ss`, on the mixed
 * decoder inputs (as `seq2seqLossAndGrads`).
 */
export function seq2seqNll(
  shape: Seq2SeqShape,
  params: Params,
  src: Uint32Array,
  decIn: Uint32Array,
  tgt: Uint32Array,
  batch: number,
  srcLen: number,
  tgtLen: number,
  dtype: Dtype,
  ss?: Seq2SeqSampling,
): { nll: number; tokens: number } {
  validate(shape, params, src, decIn, tgt, batch, srcLen, tgtLen, ss);
  const { finals } = runEncoder(shape, params, src, batch, srcLen, dtype, false);
  const state0 = packState(runBridge(shape, params, finals, batch), dtype);
  return decoderNll(shape, params, state0, decIn, tgt, batch, tgtLen, dtype, ss);
}

/**
 * Mean cross-entropy over the non-PAD targets and its gradient w.r.t. every parameter; changes nothing.
 * With `ss`, the decoder inputs are mixed first (module comment) and returned in `inputs`.
 */
export function seq2seqLossAndGrads<D extends Dtype>(
  shape: Seq2SeqShape,
  params: Params,
  src: Uint32Array,
  decIn: Uint32Array,
  tgt: Uint32Array,
  batch: number,
  srcLen: number,
  tgtLen: number,
  dtype: D,
  ss?: Seq2SeqSampling,
): Seq2SeqLossGrads<ArrayOf<D>> {
  validate(shape, params, src, decIn, tgt, batch, srcLen, tgtLen, ss);
  const { srcVocab: Vs, embed: E, hidden: H, layers: L, cell } = shape;
  const D = shape.bidirectional ? 2 : 1;
  const SH = stateWidth(cell) * H;
  const B = batch;
  const Ts = srcLen;

  const enc = runEncoder(shape, params, src, B, Ts, dtype, true);
  const s0 = runBridge(shape, params, enc.finals, B);
  const dec = decoderLossAndGrads(shape, params, packState(s0, dtype), decIn, tgt, B, tgtLen, dtype, ss);
  const grads = dec.grads;
  const dFinals = bridgeBackward(params, grads, enc.finals, s0, dec.ds0, B, SH, dtype);

  // Encoder, top layer down. dAbove: dL/d(layer output) `[B, Ts, D·H]` from the layer above (none at the top).
  let dAbove: Float64Array | null = null;
  for (let l = L - 1; l >= 0; l--) {
    const I = l === 0 ? E : D * H;
    const dBelow = new Float64Array(B * Ts * I);
    for (let d = 0; d < D; d++) {
      const c = enc.caches[l][d];
      // dL/d(out) in processing order τ: the h part from the layer above at real time t (τ = t forward,
      // Ts−1−t reversed), plus the bridge's gradient on the final row τ = Ts−1.
      const dOut = new Float64Array(B * Ts * SH);
      for (let b = 0; b < B; b++) {
        for (let tau = 0; tau < Ts; tau++) {
          const o = (b * Ts + tau) * SH;
          if (dAbove !== null) {
            const t = d === 0 ? tau : Ts - 1 - tau;
            const a = ((b * Ts + t) * D + d) * H;
            for (let j = 0; j < H; j++) dOut[o + j] = dAbove[a + j];
          }
          if (tau === Ts - 1) {
            for (let j = 0; j < SH; j++) dOut[o + j] += dFinals[l][(b * D + d) * SH + j];
          }
        }
      }
      const g = cellBackward(
        cell,
        c.dims,
        c.x,
        c.s0,
        weightsOf(params, 'encoder', l, DIRS[d]),
        c.out,
        c.saved,
        toDtype(dOut, dtype),
      );
      setCellGrads(grads, 'encoder', l, DIRS[d], g);
      for (let b = 0; b < B; b++) {
        for (let tau = 0; tau < Ts; tau++) {
          const t = d === 0 ? tau : Ts - 1 - tau;
          const from = (b * Ts + tau) * I;
          const to = (b * Ts + t) * I;
          for (let i = 0; i < I; i++) dBelow[to + i] += g.dx[from + i];
        }
      }
    }
    dAbove = dBelow;
  }
  const dSrcEmb = new Float64Array(Vs * E);
  const dx0 = dAbove as Float64Array;
  for (let r = 0; r < B * Ts; r++) {
    const eo = src[r] * E;
    for (let e = 0; e < E; e++) dSrcEmb[eo + e] += dx0[r * E + e];
  }
  grads['src_embedding.weight'] = toDtype(dSrcEmb, dtype);

  const ordered: Record<string, ArrayOf<D>> = {};
  for (const { name } of seq2seqParamInfo(shape)) ordered[name] = grads[name] as ArrayOf<D>;
  return { loss: dec.loss, grads: ordered, inputs: dec.inputs, tokens: dec.tokens };
}
