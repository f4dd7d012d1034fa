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
 * and the softmax are computed in doubles.
 */
import { ConfigError, ShapeError } from '../../errors.js';
import { type CellKind, gateCount, type ParamInfo, stateWidth } from '../types.js';
import { type CellDims, type CellWeights, cellBackward, cellForward, hiddenOf, padHidden } from './cells.js';
import { type ArrayOf, alloc, type Dtype, dot, type FloatArray, toDtype } from './gru.js';

export type Params = Record<string, FloatArray>;

/** Token ids shared by both vocabularies. */
export const PAD = 0;
export const BOS = 1;
export const EOS = 2;

export interface Seq2SeqShape {
  srcVocab: number;
  tgtVocab: number;
  embed: number;
  hidden: number;
  layers: number;
  cell: CellKind;
  bidirectional: boolean;
}

/** Scheduled-sampling decisions for every decoder input, both `[B, Tt]`. */
export interface Seq2SeqSampling {
  /** 1 = feed the ground truth decIn[b,t]; 0 = feed the model's own sample. */
  flips: Uint8Array;
  /** In [0, 1): the inverse-CDF draw used where a sample is fed. */
  uniforms: Float32Array | Float64Array;
}

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
  const G = gateCount(s.cell) * H;
  const info: ParamInfo[] = [{ name: 'src_embedding.weight', shape: [s.srcVocab, E] }];
  for (let l = 0; l < L; l++) {
    const input = l === 0 ? E : D * H;
    for (let d = 0; d < D; d++) {
      const n = rnnNames('encoder', l, DIRS[d]);
      info.push(
        { name: n.wIh, shape: [G, input] },
        { name: n.wHh, shape: [G, H] },
        { name: n.bIh, shape: [G] },
        { name: n.bHh, shape: [G] },
      );
    }
  }
  for (let l = 0; l < L; l++) {
    info.push({ name: `bridge.${l}.weight`, shape: [S * H, D * S * H] }, { name: `bridge.${l}.bias`, shape: [S * H] });
  }
  info.push({ name: 'tgt_embedding.weight', shape: [s.tgtVocab, E] });
  for (let l = 0; l < L; l++) {
    const n = rnnNames('decoder', l, '');
    const input = l === 0 ? E : H;
    info.push(
      { name: n.wIh, shape: [G, input] },
      { name: n.wHh, shape: [G, H] },
      { name: n.bIh, shape: [G] },
      { name: n.bHh, shape: [G] },
    );
  }
  info.push({ name: 'head.weight', shape: [s.tgtVocab, H] }, { name: 'head.bias', shape: [s.tgtVocab] });
  return info;
}

function rnnNames(module: string, l: number, dir: string): { wIh: string; wHh: string; bIh: string; bHh: string } {
  return {
    wIh: `${module}.weight_ih_l${l}${dir}`,
    wHh: `${module}.weight_hh_l${l}${dir}`,
    bIh: `${module}.bias_ih_l${l}${dir}`,
    bHh: `${module}.bias_hh_l${l}${dir}`,
  };
}

function weightsOf(params: Params, module: string, l: number, dir: string): CellWeights {
  const n = rnnNames(module, l, dir);
  return { wIh: params[n.wIh], wHh: params[n.wHh], bIh: params[n.bIh], bHh: params[n.bHh] };
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
  for (const { name, shape: dims } of seq2seqParamInfo(shape)) {
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

function checkTokens(what: string, ids: Uint32Array, rows: number, cols: number, vocab: number): void {
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

function checkSampling(ss: Seq2SeqSampling, batch: number, tgtLen: number): void {
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

function checkState(shape: Seq2SeqShape, state: FloatArray, n: number): void {
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
interface LayerCache {
  dims: CellDims;
  x: FloatArray;
  s0: FloatArray;
  out: FloatArray;
  saved: FloatArray | null;
}

interface Encoded {
  /** Per layer, `[B, D·S·H]`: the forward direction's final state row, then the reverse one's. */
  finals: FloatArray[];
  /** Per layer, per direction (empty unless saved). */
  caches: LayerCache[][];
}

function embed(table: FloatArray, ids: Uint32Array, E: number, dtype: Dtype): FloatArray {
  const x = alloc(dtype, ids.length * E);
  for (let r = 0; r < ids.length; r++) x.set(table.subarray(ids[r] * E, (ids[r] + 1) * E), r * E);
  return x;
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
  const D = shape.bidirectional ? 2 : 1;
  const SH = stateWidth(shape.cell) * shape.hidden;
  const K = D * SH;
  const out: Float64Array[] = [];
  for (let l = 0; l < shape.layers; l++) {
    const w = params[`bridge.${l}.weight`];
    const bias = params[`bridge.${l}.bias`];
    const s = new Float64Array(B * SH);
    for (let b = 0; b < B; b++) {
      for (let k = 0; k < SH; k++) s[b * SH + k] = Math.tanh(dot(bias[k], w, k * K, finals[l], b * K, K));
    }
    out.push(s);
  }
  return out;
}

/** The bridged states as one `[L, B, S·H]` array of `dtype`. */
function packState(s0: Float64Array[], dtype: Dtype): FloatArray {
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
  shape: Seq2SeqShape,
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
  shape: Seq2SeqShape,
  params: Params,
  state0: FloatArray,
  decIn: Uint32Array,
  B: number,
  Tt: number,
  dtype: Dtype,
  ss: Seq2SeqSampling,
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
  checkTokens('decoder inputs', decIn, batch, tgtLen, shape.tgtVocab);
  checkTokens('targets', tgt, batch, tgtLen, shape.tgtVocab);
  if (ss !== undefined) checkSampling(ss, batch, tgtLen);
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
  return { state: dec.state as ArrayOf<D>, logProbs };
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
  const { srcVocab: Vs, tgtVocab: V, embed: E, hidden: H, layers: L, cell } = shape;
  const D = shape.bidirectional ? 2 : 1;
  const SH = stateWidth(cell) * H;
  const B = batch;
  const Ts = srcLen;
  const Tt = tgtLen;
  const N = B * Tt;

  const enc = runEncoder(shape, params, src, B, Ts, dtype, true);
  const s0 = runBridge(shape, params, enc.finals, B);
  const state0 = packState(s0, dtype);
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
  const setCell = (module: string, l: number, dir: string, g: ReturnType<typeof cellBackward>) => {
    const n = rnnNames(module, l, dir);
    grads[n.wIh] = g.dWIh;
    grads[n.wHh] = g.dWHh;
    grads[n.bIh] = g.dBIh;
    grads[n.bHh] = g.dBHh;
  };

  // Decoder, top layer down; each layer's ds0 goes to its bridge.
  const ds0: FloatArray[] = new Array(L);
  for (let l = L - 1; l >= 0; l--) {
    const c = dec.caches[l];
    const g = cellBackward(
      cell,
      c.dims,
      c.x,
      c.s0,
      weightsOf(params, 'decoder', l, ''),
      c.out,
      c.saved,
      padHidden(cell, dTop, N, H),
    );
    setCell('decoder', l, '', g);
    ds0[l] = g.ds0;
    dTop = g.dx;
  }
  const dTgtEmb = new Float64Array(V * E);
  for (let r = 0; r < N; r++) {
    const eo = inputs[r] * E;
    for (let e = 0; e < E; e++) dTgtEmb[eo + e] += dTop[r * E + e];
  }

  // Bridge: d(pre) = ds0 ⊙ (1 − s0²); dW += d(pre) ⊗ final; d(final) = Wᵀ d(pre).
  const K = D * SH;
  const dFinals: Float64Array[] = [];
  for (let l = 0; l < L; l++) {
    const w = params[`bridge.${l}.weight`];
    const dW = new Float64Array(SH * K);
    const dBias = new Float64Array(SH);
    const dFinal = new Float64Array(B * K);
    const final = enc.finals[l];
    for (let b = 0; b < B; b++) {
      for (let k = 0; k < SH; k++) {
        const s = s0[l][b * SH + k];
        const dPre = ds0[l][b * SH + k] * (1 - s * s);
        dBias[k] += dPre;
        for (let j = 0; j < K; j++) {
          dW[k * K + j] += dPre * final[b * K + j];
          dFinal[b * K + j] += dPre * w[k * K + j];
        }
      }
    }
    grads[`bridge.${l}.weight`] = toDtype(dW, dtype);
    grads[`bridge.${l}.bias`] = toDtype(dBias, dtype);
    dFinals.push(dFinal);
  }

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
      setCell('encoder', l, DIRS[d], g);
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
  grads['tgt_embedding.weight'] = toDtype(dTgtEmb, dtype);
  grads['head.weight'] = toDtype(dHeadW, dtype);
  grads['head.bias'] = toDtype(dHeadB, dtype);

  const ordered: Record<string, ArrayOf<D>> = {};
  for (const { name } of seq2seqParamInfo(shape)) ordered[name] = grads[name] as ArrayOf<D>;
  return { loss: sum * scale, grads: ordered, inputs, tokens };
}
