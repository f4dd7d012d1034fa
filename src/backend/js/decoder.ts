/**
 * The recurrent decoder of a conditional sequence model in plain TypeScript, the float64-accurate
 * reference shared by the encoder–decoder of tokens (`./seq2seq.ts`) and the image captioner
 * (`./caption.ts`): an encoder of any kind hands it one initial state per layer (`h0: 'external'`).
 *
 *   decIn [B, T] → tgt_embedding → L decoder layers from state0 [L, B, S·H] → head on the top h → logits
 *   loss = mean softmax cross-entropy over the positions whose target is not PAD
 *
 * Parameters, in state_dict order (`decoderParamInfo`), G = gateCount(cell):
 *   tgt_embedding.weight [V, E]
 *   decoder.{weight_ih,weight_hh,bias_ih,bias_hh}_l{l}  [G·H, I_l] [G·H, H] [G·H] [G·H]  (I_0 = E, else H)
 *   head.weight [V, H], head.bias [V]
 *
 * Scheduled sampling (`DecoderSampling`): the decoder inputs fed are mixed sequentially, row by row:
 * in[b,0] = decIn[b,0]; for t ≥ 1, decIn[b,t] where it is PAD or flips[b,t] = 1, else the model's own
 * sample from softmax(logits at t−1 given the mixed prefix) by inverse CDF against uniforms[b,t]. The
 * loss and gradients are those of teacher forcing on the mixed inputs (no gradient through the choices).
 *
 * `dtype` is the storage type of activations and results; params may be either float type. Sums, gates
 * and the softmax are computed in doubles.
 */
import { ShapeError } from '../../errors.js';
import { type CellKind, gateCount, type ParamInfo, stateWidth } from '../types.js';
import { type CellDims, type CellWeights, cellBackward, cellForward, hiddenOf, padHidden } from './cells.js';
import { alloc, type Dtype, dot, type FloatArray, toDtype } from './gru.js';

export type Params = Record<string, FloatArray>;

/** Token ids every vocabulary of a decoder reserves. */
export const PAD = 0;
export const BOS = 1;
export const EOS = 2;

export interface DecoderShape {
  /** Target vocabulary, PAD, BOS and EOS included. */
  tgtVocab: number;
  embed: number;
  hidden: number;
  layers: number;
  cell: CellKind;
}

/** Scheduled-sampling decisions for every decoder input, both `[B, T]`. */
export interface DecoderSampling {
  /** 1 = feed the ground truth decIn[b,t]; 0 = feed the model's own sample. */
  flips: Uint8Array;
  /** In [0, 1): the inverse-CDF draw used where a sample is fed. */
  uniforms: Float32Array | Float64Array;
}

export function rnnNames(
  module: string,
  l: number,
  dir: string,
): { wIh: string; wHh: string; bIh: string; bHh: string } {
  return {
    wIh: `${module}.weight_ih_l${l}${dir}`,
    wHh: `${module}.weight_hh_l${l}${dir}`,
    bIh: `${module}.bias_ih_l${l}${dir}`,
    bHh: `${module}.bias_hh_l${l}${dir}`,
  };
}

/** The four tensors of one recurrent layer (and direction) with PyTorch's shapes. */
export function rnnParamInfo(module: string, l: number, dir: string, cell: CellKind, input: number, H: number) {
  const n = rnnNames(module, l, dir);
  const G = gateCount(cell) * H;
  return [
    { name: n.wIh, shape: [G, input] },
    { name: n.wHh, shape: [G, H] },
    { name: n.bIh, shape: [G] },
    { name: n.bHh, shape: [G] },
  ];
}

export function weightsOf(params: Params, module: string, l: number, dir: string): CellWeights {
  const n = rnnNames(module, l, dir);
  return { wIh: params[n.wIh], wHh: params[n.wHh], bIh: params[n.bIh], bHh: params[n.bHh] };
}

/** The decoder's parameter names and shapes, in state_dict order. */
export function decoderParamInfo(s: DecoderShape): ParamInfo[] {
  const { embed: E, hidden: H } = s;
  const info: ParamInfo[] = [{ name: 'tgt_embedding.weight', shape: [s.tgtVocab, E] }];
  for (let l = 0; l < s.layers; l++) info.push(...rnnParamInfo('decoder', l, '', s.cell, l === 0 ? E : H, H));
  info.push({ name: 'head.weight', shape: [s.tgtVocab, H] }, { name: 'head.bias', shape: [s.tgtVocab] });
  return info;
}

// ---------------------------------------------------------------------------------------------------
// Validation

/** ShapeError unless `params` holds a float array of the right length for every entry of `info`. */
export function checkParams(info: readonly ParamInfo[], params: Params): void {
  for (const { name, shape: dims } of info) {
    const p = params[name];
    const want = dims.reduce((a, d) => a * d, 1);
    if (!(p instanceof Float32Array || p instanceof Float64Array)) {
      throw new ShapeError(`parameter ${name} is missing (expected ${want} floats for [${dims.join(', ')}])`);
    }
    if (p.length !== want) {
      throw new ShapeError(`parameter ${name} holds ${p.length} values; [${dims.join(', ')}] needs ${want}`);
    }
  }
}

export function checkTokens(what: string, ids: Uint32Array, rows: number, cols: number, vocab: number): void {
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 1 || cols < 1) {
    throw new ShapeError(`${what}: batch and sequence length must be integers ≥ 1, got ${rows} and ${cols}`);
  }
  if (!(ids instanceof Uint32Array) || ids.length !== rows * cols) {
    throw new ShapeError(`${what}: expected batch ${rows} × length ${cols} = ${rows * cols} ids, got ${ids?.length}`);
  }
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] >= vocab) {
      throw new ShapeError(`${what}: id ${ids[i]} at position ${i} is outside the vocabulary of ${vocab}`);
    }
  }
}

export function checkSampling(ss: DecoderSampling, batch: number, tgtLen: number): void {
  const n = batch * tgtLen;
  if (!(ss.flips instanceof Uint8Array) || ss.flips.length !== n) {
    throw new ShapeError(`scheduled sampling: flips must be a Uint8Array of [B ${batch}, Tt ${tgtLen}] = ${n}`);
  }
  if (!(ss.uniforms instanceof Float32Array || ss.uniforms instanceof Float64Array) || ss.uniforms.length !== n) {
    throw new ShapeError(`scheduled sampling: uniforms must be a float array of [B ${batch}, Tt ${tgtLen}] = ${n}`);
  }
  for (let i = 0; i < n; i++) {
    if (ss.flips[i] > 1) throw new ShapeError(`scheduled sampling: flips[${i}] is ${ss.flips[i]}; expected 0 or 1`);
    const u = ss.uniforms[i];
    if (!(u >= 0 && u < 1)) throw new ShapeError(`scheduled sampling: uniforms[${i}] is ${u}; expected [0, 1)`);
  }
}

/** Decoder inputs and targets `[B, T]` (and sampling decisions) of one batch. */
export function checkDecoderBatch(
  shape: DecoderShape,
  decIn: Uint32Array,
  tgt: Uint32Array,
  batch: number,
  tgtLen: number,
  ss: DecoderSampling | undefined,
): void {
  checkTokens('decoder inputs', decIn, batch, tgtLen, shape.tgtVocab);
  checkTokens('targets', tgt, batch, tgtLen, shape.tgtVocab);
  if (ss !== undefined) checkSampling(ss, batch, tgtLen);
}

function checkState(shape: DecoderShape, state: FloatArray, n: number): void {
  const W = stateWidth(shape.cell) * shape.hidden;
  const want = shape.layers * n * W;
  if (!(state instanceof Float32Array || state instanceof Float64Array) || state.length !== want) {
    throw new ShapeError(
      `decoder state holds ${state?.length} values; [layers ${shape.layers}, N ${n}, ${W}] needs ${want}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------
// Forward pieces

/** What one layer/direction's backward needs from its forward (x in processing order). */
export interface LayerCache {
  dims: CellDims;
  x: FloatArray;
  s0: FloatArray;
  out: FloatArray;
  saved: FloatArray | null;
}

export function embed(table: FloatArray, ids: Uint32Array, E: number, dtype: Dtype): FloatArray {
  const x = alloc(dtype, ids.length * E);
  for (let r = 0; r < ids.length; r++) x.set(table.subarray(ids[r] * E, (ids[r] + 1) * E), r * E);
  return x;
}

/** Per-layer initial states `[B, S·H]` as one `[L, B, S·H]` array of `dtype`. */
export function packState(s0: Float64Array[], dtype: Dtype): FloatArray {
  const n = s0.length === 0 ? 0 : s0[0].length;
  const state = alloc(dtype, s0.length * n);
  for (let l = 0; l < s0.length; l++) state.set(s0[l], l * n);
  return state;
}

interface Decoded {
  /** h of the top layer, `[B·T, H]`. */
  top: FloatArray;
  /** Final state of every layer, `[L, B, S·H]`. */
  state: FloatArray;
  caches: LayerCache[];
}

/** The decoder layers over `ids [B, T]` from `state0 [L, B, S·H]`. */
function runDecoder(
  shape: DecoderShape,
  params: Params,
  ids: Uint32Array,
  B: number,
  T: number,
  state0: FloatArray,
  dtype: Dtype,
  save: boolean,
): Decoded {
  const { embed: E, hidden: H, layers: L, cell } = shape;
  const SH = stateWidth(cell) * H;
  let x = embed(params['tgt_embedding.weight'], ids, E, dtype);
  const state = alloc(dtype, L * B * SH);
  const caches: LayerCache[] = [];
  for (let l = 0; l < L; l++) {
    const dims: CellDims = { batch: B, seq: T, input: l === 0 ? E : H, hidden: H };
    const s0 = alloc(dtype, B * SH);
    s0.set(state0.subarray(l * B * SH, (l + 1) * B * SH));
    const { out, saved } = cellForward(cell, dims, x, s0, weightsOf(params, 'decoder', l, ''), { dtype, save });
    for (let b = 0; b < B; b++) {
      state.set(out.subarray((b * T + T - 1) * SH, (b * T + T) * SH), (l * B + b) * SH);
    }
    if (save) caches.push({ dims, x, s0, out, saved });
    x = hiddenOf(cell, out, B * T, H);
  }
  return { top: x, state, caches };
}

/** Logits of one row into `logits` (doubles): h · head.weightᵀ + head.bias. */
function headRow(params: Params, top: FloatArray, row: number, H: number, logits: Float64Array): void {
  const w = params['head.weight'];
  const bias = params['head.bias'];
  for (let v = 0; v < logits.length; v++) logits[v] = dot(bias[v], w, v * H, top, row * H, H);
}

/** log Σ exp(logits), shifted by the max so no term overflows. */
function logSumExp(logits: Float64Array): number {
  let max = -Infinity;
  for (let v = 0; v < logits.length; v++) if (logits[v] > max) max = logits[v];
  let sum = 0;
  for (let v = 0; v < logits.length; v++) sum += Math.exp(logits[v] - max);
  return max + Math.log(sum);
}

/**
 * Inverse-CDF sample of softmax(logits): the smallest k with Σ_{j≤k} p_j > u, p_j = exp(logits_j − lse)
 * summed in doubles in vocabulary order; if rounding leaves the total ≤ u, the last k with p_k > 0.
 */
export function sampleInverseCdf(logits: Float64Array, u: number): number {
  const lse = logSumExp(logits);
  let cum = 0;
  let last = 0;
  for (let k = 0; k < logits.length; k++) {
    const p = Math.exp(logits[k] - lse);
    cum += p;
    if (cum > u) return k;
    if (p > 0) last = k;
  }
  return last;
}

/** The decoder inputs fed under scheduled sampling (module comment), decoding step by step. */
function mixInputs(
  shape: DecoderShape,
  params: Params,
  state0: FloatArray,
  decIn: Uint32Array,
  B: number,
  Tt: number,
  dtype: Dtype,
  ss: DecoderSampling,
): Uint32Array {
  const inputs = decIn.slice();
  const sampled = (b: number, t: number) => decIn[b * Tt + t] !== PAD && ss.flips[b * Tt + t] !== 1;
  let lastT = 0;
  for (let b = 0; b < B; b++) for (let t = 1; t < Tt; t++) if (sampled(b, t) && t > lastT) lastT = t;
  let state = state0;
  const tokens = new Uint32Array(B);
  const logits = new Float64Array(shape.tgtVocab);
  for (let t = 0; t < lastT; t++) {
    for (let b = 0; b < B; b++) tokens[b] = inputs[b * Tt + t];
    const dec = runDecoder(shape, params, tokens, B, 1, state, dtype, false);
    state = dec.state;
    for (let b = 0; b < B; b++) {
      if (!sampled(b, t + 1)) continue;
      headRow(params, dec.top, b, shape.hidden, logits);
      inputs[b * Tt + t + 1] = sampleInverseCdf(logits, ss.uniforms[b * Tt + t + 1]);
    }
  }
  return inputs;
}

// ---------------------------------------------------------------------------------------------------
// What the models call (inputs already checked)

/**
 * One decoder step of N streams: feeds `tokens [N]` from `state [L, N, S·H]`; the next state and the
 * log-softmax of the head `[N, V]`. Checks the tokens and the state, not the parameters.
 */
export function decoderStep(
  shape: DecoderShape,
  params: Params,
  state: FloatArray,
  tokens: Uint32Array,
  dtype: Dtype,
): { state: FloatArray; logProbs: FloatArray } {
  checkTokens('tokens', tokens, tokens.length, 1, shape.tgtVocab);
  const N = tokens.length;
  checkState(shape, state, N);
  const V = shape.tgtVocab;
  const dec = runDecoder(shape, params, tokens, N, 1, state, dtype, false);
  const logProbs = alloc(dtype, N * V);
  const logits = new Float64Array(V);
  for (let n = 0; n < N; n++) {
    headRow(params, dec.top, n, shape.hidden, logits);
    const lse = logSumExp(logits);
    for (let v = 0; v < V; v++) logProbs[n * V + v] = logits[v] - lse;
  }
  return { state: dec.state, logProbs };
}

/** Summed NLL (nats) of the non-PAD targets from `state0`, and their count; no gradient. */
export function decoderNll(
  shape: DecoderShape,
  params: Params,
  state0: FloatArray,
  decIn: Uint32Array,
  tgt: Uint32Array,
  batch: number,
  tgtLen: number,
  dtype: Dtype,
  ss?: DecoderSampling,
): { nll: number; tokens: number } {
  const inputs = ss === undefined ? decIn : mixInputs(shape, params, state0, decIn, batch, tgtLen, dtype, ss);
  const { top } = runDecoder(shape, params, inputs, batch, tgtLen, state0, dtype, false);
  const logits = new Float64Array(shape.tgtVocab);
  let nll = 0;
  let tokens = 0;
  for (let r = 0; r < batch * tgtLen; r++) {
    const y = tgt[r];
    if (y === PAD) continue;
    headRow(params, top, r, shape.hidden, logits);
    nll += logSumExp(logits) - logits[y];
    tokens++;
  }
  return { nll, tokens };
}

export interface DecoderGrads {
  /** Mean cross-entropy over the non-PAD targets (0 when there are none), nats. */
  loss: number;
  /** dL/d(param) of the decoder's parameters, by name. */
  grads: Record<string, FloatArray>;
  /** dL/d(initial state) of each layer, `[B, S·H]`. */
  ds0: FloatArray[];
  /** The decoder inputs actually fed `[B, T]`. */
  inputs: Uint32Array;
  tokens: number;
}

/**
 * The decoder's forward from `state0 [L, B, S·H]` (after mixing the inputs under `ss`), the mean
 * cross-entropy and its backward: the decoder's gradients and the gradient of each initial state.
 */
export function decoderLossAndGrads(
  shape: DecoderShape,
  params: Params,
  state0: FloatArray,
  decIn: Uint32Array,
  tgt: Uint32Array,
  B: number,
  Tt: number,
  dtype: Dtype,
  ss?: DecoderSampling,
): DecoderGrads {
  const { tgtVocab: V, embed: E, hidden: H, layers: L, cell } = shape;
  const N = B * Tt;
  const inputs = ss === undefined ? decIn.slice() : mixInputs(shape, params, state0, decIn, B, Tt, dtype, ss);
  const dec = runDecoder(shape, params, inputs, B, Tt, state0, dtype, true);

  let tokens = 0;
  for (let r = 0; r < N; r++) if (tgt[r] !== PAD) tokens++;
  const scale = tokens > 0 ? 1 / tokens : 0;

  // Head and loss: dL/dlogits = (softmax − onehot(y)) / tokens on non-PAD rows, 0 on PAD rows.
  const hw = params['head.weight'];
  const dHeadW = new Float64Array(V * H);
  const dHeadB = new Float64Array(V);
  let dTop: FloatArray = alloc(dtype, N * H);
  const logits = new Float64Array(V);
  const dTopRow = new Float64Array(H);
  let sum = 0;
  for (let r = 0; r < N; r++) {
    const y = tgt[r];
    if (y === PAD) continue;
    headRow(params, dec.top, r, H, logits);
    const lse = logSumExp(logits);
    sum += lse - logits[y];
    const ho = r * H;
    dTopRow.fill(0);
    for (let v = 0; v < V; v++) {
      const d = (Math.exp(logits[v] - lse) - (v === y ? 1 : 0)) * scale;
      dHeadB[v] += d;
      const vo = v * H;
      for (let j = 0; j < H; j++) {
        dHeadW[vo + j] += d * dec.top[ho + j];
        dTopRow[j] += d * hw[vo + j];
      }
    }
    dTop.set(dTopRow, ho);
  }

  const grads: Record<string, FloatArray> = {};
  // Decoder, top layer down; each layer's ds0 goes to the encoder's bridge.
  const ds0: FloatArray[] = new Array(L);
  for (let l = L - 1; l >= 0; l--) {
    const c = dec.caches[l];
    const w = weightsOf(params, 'decoder', l, '');
    const g = cellBackward(cell, c.dims, c.x, c.s0, w, c.out, c.saved, padHidden(cell, dTop, N, H));
    setCellGrads(grads, 'decoder', l, '', g);
    ds0[l] = g.ds0;
    dTop = g.dx;
  }
  const dTgtEmb = new Float64Array(V * E);
  for (let r = 0; r < N; r++) {
    const eo = inputs[r] * E;
    for (let e = 0; e < E; e++) dTgtEmb[eo + e] += dTop[r * E + e];
  }
  grads['tgt_embedding.weight'] = toDtype(dTgtEmb, dtype);
  grads['head.weight'] = toDtype(dHeadW, dtype);
  grads['head.bias'] = toDtype(dHeadB, dtype);
  return { loss: sum * scale, grads, ds0, inputs, tokens };
}

/** Stores one recurrent layer's weight gradients under their names. */
export function setCellGrads(
  grads: Record<string, FloatArray>,
  module: string,
  l: number,
  dir: string,
  g: ReturnType<typeof cellBackward>,
): void {
  const n = rnnNames(module, l, dir);
  grads[n.wIh] = g.dWIh;
  grads[n.wHh] = g.dWHh;
  grads[n.bIh] = g.dBIh;
  grads[n.bHh] = g.dBHh;
}

/**
 * The bridge's backward: with s0_l = tanh(W_l · f + b_l) for features `f [B, K]` shared by every layer
 * (or per layer), d(pre) = ds0 ⊙ (1 − s0²); dW_l += d(pre) ⊗ f; d(f) += W_lᵀ d(pre). Stores
 * `bridge.{l}.weight/bias` gradients and returns dL/d(features) per layer, `[B, K]`.
 */
export function bridgeBackward(
  params: Params,
  grads: Record<string, FloatArray>,
  features: readonly FloatArray[],
  s0: readonly Float64Array[],
  ds0: readonly FloatArray[],
  B: number,
  SH: number,
  dtype: Dtype,
): Float64Array[] {
  const K = features[0].length / B;
  const dFeatures: Float64Array[] = [];
  for (let l = 0; l < s0.length; l++) {
    const w = params[`bridge.${l}.weight`];
    const dW = new Float64Array(SH * K);
    const dBias = new Float64Array(SH);
    const dF = new Float64Array(B * K);
    const f = features[l];
    for (let b = 0; b < B; b++) {
      for (let k = 0; k < SH; k++) {
        const s = s0[l][b * SH + k];
        const dPre = ds0[l][b * SH + k] * (1 - s * s);
        dBias[k] += dPre;
        for (let j = 0; j < K; j++) {
          dW[k * K + j] += dPre * f[b * K + j];
          dF[b * K + j] += dPre * w[k * K + j];
        }
      }
    }
    grads[`bridge.${l}.weight`] = toDtype(dW, dtype);
    grads[`bridge.${l}.bias`] = toDtype(dBias, dtype);
    dFeatures.push(dF);
  }
  return dFeatures;
}

/** s0_l = tanh(W_l · f_l + b_l) in doubles, `[B, S·H]` per layer, for features `f_l [B, K]`. */
export function bridgeForward(params: Params, features: readonly FloatArray[], B: number, SH: number): Float64Array[] {
  const out: Float64Array[] = [];
  for (let l = 0; l < features.length; l++) {
    const K = features[l].length / B;
    const w = params[`bridge.${l}.weight`];
    const bias = params[`bridge.${l}.bias`];
    const s = new Float64Array(B * SH);
    for (let b = 0; b < B; b++) {
      for (let k = 0; k < SH; k++) s[b * SH + k] = Math.tanh(dot(bias[k], w, k * K, features[l], b * K, K));
    }
    out.push(s);
  }
  return out;
}
