/**
 * The character language model in plain TypeScript: embedding → L recurrent layers (GRU, LSTM or tanh
 * RNN, by `shape.cell`) → linear head → mean softmax cross-entropy, forward and backward, over a params
 * record keyed by the PyTorch state_dict names of `charLmParamInfo`. Mirrors `CharLm` in
 * crates/arflow-core/src/lm.rs.
 *
 * Recurrent states (`h0`, the returned `state`, `dh0`) are `[L, B, W·H]` with W = stateWidth(cell):
 * for the LSTM each row is h then c, and the final state holds c_T too. The layer above and the head
 * read only the h half of a layer's output.
 *
 * A model with `predictAhead` n > 1 has heads k = 2..n (`ahead.{k}.*`) on the same top h; its targets
 * are n blocks `[n, B, T]` (block k−1: the character k ahead, IGNORE_TARGET where past the text's end),
 * and its loss is Σ_k mean over scored positions of CE_k.
 *
 * `dtype` is the storage type of activations and results; params may be either float type.
 */
import { ShapeError } from '../../errors.js';
import {
  aheadOf,
  type CellKind,
  type CharLmShape,
  cellOf,
  charLmParamInfo,
  IGNORE_TARGET,
  stateWidth,
} from '../types.js';
import {
  type CellDims,
  cellBackward,
  cellForward,
  cellParamNames,
  cellParamsOf,
  hiddenOf,
  padHidden,
} from './cells.js';
import { type ArrayOf, alloc, type Dtype, dot, type FloatArray, toDtype } from './gru.js';

export type Params = Record<string, FloatArray>;

export interface LmForward<A extends FloatArray> {
  /** `[B·T, V]` */
  logits: A;
  /** Final state of every layer, `[L, B, W·H]`. */
  state: A;
}

export interface LmLossGrads<A extends FloatArray> {
  /** Mean cross-entropy over all B·T positions, nats. */
  loss: number;
  /** dL/d(param) by name, in state_dict order. */
  grads: Record<string, A>;
  /** dL/dh0, `[L, B, W·H]`. */
  dh0: A;
  /** Final state of every layer, `[L, B, W·H]`. */
  state: A;
}

/** What one layer's backward needs from its forward. */
interface LayerCache {
  dims: CellDims;
  x: FloatArray;
  s0: FloatArray;
  out: FloatArray;
  saved: FloatArray | null;
}

interface Stack {
  /** h of the top layer, `[B·T, H]`. */
  top: FloatArray;
  state: FloatArray;
  caches: LayerCache[];
}

function checkParams(shape: CharLmShape, params: Params): void {
  for (const { name, shape: dims } of charLmParamInfo(shape)) {
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

function checkTokens(what: string, ids: Uint32Array, batch: number, seq: number, vocab: number): void {
  if (!Number.isSafeInteger(batch) || !Number.isSafeInteger(seq) || batch < 1 || seq < 1) {
    throw new ShapeError(`${what}: batch and sequence length must be integers ≥ 1, got ${batch} and ${seq}`);
  }
  if (ids.length !== batch * seq) {
    throw new ShapeError(`${what}: expected batch ${batch} × seq ${seq} = ${batch * seq} ids, got ${ids.length}`);
  }
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] >= vocab) {
      throw new ShapeError(`${what}: id ${ids[i]} at position ${i} is outside the vocabulary of ${vocab}`);
    }
  }
}

/** `[layers L, batch B, hidden H]`, or `[…, 2·hidden 2H]` for a cell whose state is W·H wide. */
export function stateShapeText(cell: CellKind, layers: number, batch: number, hidden: number): string {
  const W = stateWidth(cell);
  return `[layers ${layers}, batch ${batch}, ${W === 1 ? 'hidden' : `${W}·hidden`} ${W * hidden}]`;
}

function checkState(shape: CharLmShape, state: FloatArray | null, batch: number): void {
  const cell = cellOf(shape);
  const want = shape.layers * batch * stateWidth(cell) * shape.hidden;
  if (state !== null && state.length !== want) {
    throw new ShapeError(
      `hidden state holds ${state.length} values; ${stateShapeText(cell, shape.layers, batch, shape.hidden)} needs ${want}`,
    );
  }
}

/**
 * The initial state `[L, B, W·H]`: `h0` when given, else the learned `h0` parameter `[L, W·H]` repeated
 * for every stream (a model with `learnedH0`), else null (zeros).
 */
function initialState(shape: CharLmShape, params: Params, h0: FloatArray | null, batch: number): FloatArray | null {
  if (h0 !== null || !shape.learnedH0) return h0;
  const S = stateWidth(cellOf(shape)) * shape.hidden;
  const p = params.h0;
  const out = new Float64Array(shape.layers * batch * S);
  for (let l = 0; l < shape.layers; l++) {
    for (let b = 0; b < batch; b++) out.set(p.subarray(l * S, (l + 1) * S), (l * batch + b) * S);
  }
  return out;
}

/** Embedding lookup, then every recurrent layer from `h0 [L, B, W·H]` (null: zeros, or the learned h0). */
function runStack(
  shape: CharLmShape,
  params: Params,
  ids: Uint32Array,
  batch: number,
  seq: number,
  h0: FloatArray | null,
  dtype: Dtype,
  save: boolean,
): Stack {
  const { embed: E, hidden: H, layers: L } = shape;
  const cell = cellOf(shape);
  h0 = initialState(shape, params, h0, batch);
  // Width of one row of state and of layer output: H, or 2H (h, c) for the LSTM.
  const S = stateWidth(cell) * H;
  const emb = params['embedding.weight'];
  let x: FloatArray = alloc(dtype, batch * seq * E);
  for (let row = 0; row < ids.length; row++) x.set(emb.subarray(ids[row] * E, (ids[row] + 1) * E), row * E);
  const state = alloc(dtype, L * batch * S);
  const caches: LayerCache[] = [];
  for (let l = 0; l < L; l++) {
    const dims: CellDims = { batch, seq, input: l === 0 ? E : H, hidden: H };
    const s0 = h0 === null ? alloc(dtype, batch * S) : h0.subarray(l * batch * S, (l + 1) * batch * S);
    const { out, saved } = cellForward(cell, dims, x, s0, cellParamsOf(cell, params, l), { dtype, save });
    // The final state of layer l is its output row at t = T−1 of every batch element.
    for (let b = 0; b < batch; b++) {
      state.set(out.subarray((b * seq + seq - 1) * S, (b * seq + seq) * S), (l * batch + b) * S);
    }
    if (save) caches.push({ dims, x, s0, out, saved });
    x = hiddenOf(cell, out, batch * seq, H);
  }
  return { top: x, state, caches };
}

/** Logits of one row into `logits` (doubles): h · head.weightᵀ + head.bias. */
function headRow(top: FloatArray, row: number, w: FloatArray, bias: FloatArray, H: number, logits: Float64Array): void {
  const ho = row * H;
  for (let v = 0; v < logits.length; v++) logits[v] = dot(bias[v], w, v * H, top, ho, H);
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
 * The number of target blocks in `targets`: 1 (`[B, T]`, the next characters) or, for a model predicting
 * n ahead, n (`[n, B, T]`; required when `all`). Blocks after the first may hold IGNORE_TARGET.
 */
function targetBlocks(shape: CharLmShape, targets: Uint32Array, batch: number, seq: number, all: boolean): number {
  const n = aheadOf(shape);
  const rows = batch * seq;
  const blocks = targets.length === rows && !(all && n > 1) ? 1 : n;
  if (targets.length !== blocks * rows) {
    throw new ShapeError(
      `targets: expected ${n > 1 ? `${n} blocks (one per predicted step) of ` : ''}batch ${batch} × seq ${seq} = ${n * rows} ids` +
        `${n > 1 && !all ? ` (or ${rows} for the next character only)` : ''}, got ${targets.length}`,
    );
  }
  checkTokens('targets', targets.subarray(0, rows), batch, seq, shape.vocabSize);
  for (let i = rows; i < targets.length; i++) {
    const t = targets[i];
    if (t !== IGNORE_TARGET && t >= shape.vocabSize) {
      const k = Math.floor(i / rows) + 1;
      throw new ShapeError(`targets: id ${t} (${k} ahead) is outside the vocabulary of ${shape.vocabSize}`);
    }
  }
  return blocks;
}

/** Head k's weight and bias (k = 1: `head`, the next character). */
function headParams(params: Params, k: number): { w: FloatArray; b: FloatArray } {
  const p = k === 1 ? 'head' : `ahead.${k}`;
  return { w: params[`${p}.weight`], b: params[`${p}.bias`] };
}

function validate(
  shape: CharLmShape,
  params: Params,
  ids: Uint32Array,
  batch: number,
  seq: number,
  h0: FloatArray | null,
): void {
  checkParams(shape, params);
  checkTokens('inputs', ids, batch, seq, shape.vocabSize);
  checkState(shape, h0, batch);
}

/** Logits `[B·T, V]` and the final state `[L, B, W·H]`, from `h0` (null: zeros). */
export function lmForward<D extends Dtype>(
  shape: CharLmShape,
  params: Params,
  ids: Uint32Array,
  batch: number,
  seq: number,
  h0: FloatArray | null,
  dtype: D,
): LmForward<ArrayOf<D>> {
  validate(shape, params, ids, batch, seq, h0);
  const { vocabSize: V, hidden: H } = shape;
  const { top, state } = runStack(shape, params, ids, batch, seq, h0, dtype, false);
  const logits = alloc(dtype, batch * seq * V);
  const row = new Float64Array(V);
  for (let r = 0; r < batch * seq; r++) {
    headRow(top, r, params['head.weight'], params['head.bias'], H, row);
    logits.set(row, r * V);
  }
  return { logits, state: state as ArrayOf<D> };
}

/**
 * Summed negative log-likelihood (nats) of the next characters and the final state; no gradient. With
 * all n target blocks of a model predicting n ahead, also each head k ≥ 2's sum over its scored
 * positions (`aheadNll[k − 2]`).
 */
export function lmNll<D extends Dtype>(
  shape: CharLmShape,
  params: Params,
  ids: Uint32Array,
  targets: Uint32Array,
  batch: number,
  seq: number,
  h0: FloatArray | null,
  dtype: D,
): { nll: number; aheadNll: number[]; aheadRows: number[]; state: ArrayOf<D> } {
  validate(shape, params, ids, batch, seq, h0);
  const blocks = targetBlocks(shape, targets, batch, seq, false);
  const { top, state } = runStack(shape, params, ids, batch, seq, h0, dtype, false);
  const logits = new Float64Array(shape.vocabSize);
  const N = batch * seq;
  const sums: number[] = [];
  const rows: number[] = [];
  for (let k = 1; k <= blocks; k++) {
    const { w, b } = headParams(params, k);
    let nll = 0;
    let scored = 0;
    for (let r = 0; r < N; r++) {
      const y = targets[(k - 1) * N + r];
      if (y === IGNORE_TARGET) continue;
      headRow(top, r, w, b, shape.hidden, logits);
      // −log softmax(logits)[y] = logsumexp(logits) − logits[y]
      nll += logSumExp(logits) - logits[y];
      scored++;
    }
    sums.push(nll);
    rows.push(scored);
  }
  return { nll: sums[0], aheadNll: sums.slice(1), aheadRows: rows.slice(1), state: state as ArrayOf<D> };
}

/**
 * Mean cross-entropy over all B·T positions (for a model predicting n ahead, Σ_k of head k's mean over
 * its scored positions) and its gradient w.r.t. every parameter and `h0` (null: zeros, whose gradient is
 * still returned). Changes nothing.
 */
export function lmLossAndGrads<D extends Dtype>(
  shape: CharLmShape,
  params: Params,
  ids: Uint32Array,
  targets: Uint32Array,
  batch: number,
  seq: number,
  h0: FloatArray | null,
  dtype: D,
): LmLossGrads<ArrayOf<D>> {
  validate(shape, params, ids, batch, seq, h0);
  const blocks = targetBlocks(shape, targets, batch, seq, true);
  const { vocabSize: V, embed: E, hidden: H, layers: L } = shape;
  const cell = cellOf(shape);
  const S = stateWidth(cell) * H;
  const N = batch * seq;
  const { top, state, caches } = runStack(shape, params, ids, batch, seq, h0, dtype, true);

  // Heads and loss, row by row: dL/dlogits = (softmax − onehot(y)) / N_k for head k's mean over its
  // N_k scored rows; every head adds into dL/dh of the top layer.
  const grads: Record<string, ArrayOf<D>> = {};
  const dTopAll = new Float64Array(N * H);
  const logits = new Float64Array(V);
  let loss = 0;
  for (let k = 1; k <= blocks; k++) {
    const { w, b } = headParams(params, k);
    const yk = targets.subarray((k - 1) * N, k * N);
    let scored = 0;
    for (let r = 0; r < N; r++) if (yk[r] !== IGNORE_TARGET) scored++;
    const dW = new Float64Array(V * H);
    const dBias = new Float64Array(V);
    let sum = 0;
    for (let r = 0; r < N; r++) {
      const y = yk[r];
      if (y === IGNORE_TARGET) continue;
      headRow(top, r, w, b, H, logits);
      const lse = logSumExp(logits);
      sum += lse - logits[y];
      const ho = r * H;
      for (let v = 0; v < V; v++) {
        const d = (Math.exp(logits[v] - lse) - (v === y ? 1 : 0)) / scored;
        dBias[v] += d;
        const vo = v * H;
        for (let j = 0; j < H; j++) {
          dW[vo + j] += d * top[ho + j];
          dTopAll[ho + j] += d * w[vo + j];
        }
      }
    }
    if (scored > 0) loss += sum / scored;
    const p = k === 1 ? 'head' : `ahead.${k}`;
    grads[`${p}.weight`] = toDtype(dW, dtype);
    grads[`${p}.bias`] = toDtype(dBias, dtype);
  }
  let dTop: FloatArray = toDtype(dTopAll, dtype);

  const dh0 = alloc(dtype, L * batch * S);
  // Down the stack: each layer's dx is the dL/dh of the layer below (its other state parts, the LSTM's
  // c, reach the loss only through later steps of the same layer).
  for (let l = L - 1; l >= 0; l--) {
    const c = caches[l];
    const dOut = padHidden(cell, dTop, N, H);
    const g = cellBackward(cell, c.dims, c.x, c.s0, cellParamsOf(cell, params, l), c.out, c.saved, dOut);
    const names = cellParamNames(cell, l);
    grads[names.wIh] = g.dWIh as ArrayOf<D>;
    grads[names.wHh] = g.dWHh as ArrayOf<D>;
    grads[names.bIh] = g.dBIh as ArrayOf<D>;
    grads[names.bHh] = g.dBHh as ArrayOf<D>;
    dh0.set(g.ds0, l * batch * S);
    dTop = g.dx;
  }
  // The embedding lookup scatters each row's gradient back onto its id's row.
  const dEmb = new Float64Array(V * E);
  for (let r = 0; r < N; r++) {
    const eo = ids[r] * E;
    const xo = r * E;
    for (let e = 0; e < E; e++) dEmb[eo + e] += dTop[xo + e];
  }
  grads['embedding.weight'] = toDtype(dEmb, dtype);
  if (shape.learnedH0) {
    // Without a given state every stream started from the learned h0: its gradient sums over them.
    const dP = new Float64Array(L * S);
    if (h0 === null) {
      for (let l = 0; l < L; l++) {
        for (let b = 0; b < batch; b++) {
          for (let j = 0; j < S; j++) dP[l * S + j] += dh0[(l * batch + b) * S + j];
        }
      }
    }
    grads.h0 = toDtype(dP, dtype);
  }

  const ordered: Record<string, ArrayOf<D>> = {};
  for (const { name } of charLmParamInfo(shape)) ordered[name] = grads[name];
  return { loss, grads: ordered, dh0, state: state as ArrayOf<D> };
}

/** One step of N streams: feeds `tokens [N]` from `state [L, N, W·H]` (null: zeros); logits `[N, V]`. */
export function lmStep<D extends Dtype = 'f32'>(
  shape: CharLmShape,
  params: Params,
  state: FloatArray | null,
  tokens: Uint32Array,
  dtype: D = 'f32' as D,
): { state: ArrayOf<D>; logits: ArrayOf<D> } {
  const { logits, state: next } = lmForward(shape, params, tokens, tokens.length, 1, state, dtype);
  return { state: next, logits };
}
