/**
 * The recurrent density model of a continuous time series in plain TypeScript, the reference for
 * `SeriesModel` in crates/arflow-core/src/series.rs, and the contract both backends implement.
 *
 * The previous value x_{t−1} (D floats) feeds L recurrent layers (GRU, LSTM or tanh RNN; layer 0's
 * input width is D), a linear head maps the top h to raw outputs, and a likelihood head of mixture.ts
 * (diagonal Gaussian, or a K-component mixture density network) scores x_t:
 *   raw_t = head.weight · h_t + head.bias,   loss = mean over the B·T steps of −log p(x_t | raw_t).
 *
 * Layout is batch-first: `inputs`/`targets` are `[batch, seq, dim]` row-major (`targets[b, t]` is the
 * step after `inputs[b, t]`); states are `[layers, batch, stateWidth(cell)·hidden]` (LSTM rows: h then c).
 * Parameter names are PyTorch's `state_dict` of `{GRU, LSTM, RNN}(batch_first=True) → Linear`:
 *   {cell}.weight_ih_l{l} [G·H, I]  {cell}.weight_hh_l{l} [G·H, H]  {cell}.bias_ih_l{l} [G·H]  {cell}.bias_hh_l{l} [G·H]
 *   head.weight [outSize, H]  head.bias [outSize]
 * with I = D for layer 0 and H above, outSize = 2D (gaussian) or mixtureOutputSize(D, K) (mdn).
 *
 * Joint prediction of the next n steps (`predictAhead` n > 1): heads `ahead.{k}.weight [outSize, H]`,
 * `ahead.{k}.bias [outSize]` for k = 2..n, after every other parameter, read the same top h_t and score
 * the target k − 1 rows further on. Targets are then n blocks `[n, B, T, D]` (block k−1: the target of
 * the step k − 1 after, read across the window's end); a row of a block k ≥ 2 that is NaN in every
 * column (past the end of the series) is absent. The loss is Σ_k of head k's mean NLL over its scored
 * rows, the joint −log p factorised over the n steps. With `outputs: 'last'` the loss scores only the
 * final step of each window (sequence-to-one); `nll` scores every present row either way.
 */
import { ConfigError, DataError, ShapeError } from '../../errors.js';
import {
  type Carry,
  CELL_KINDS,
  type CellKind,
  gateCount,
  type LossGrads,
  type NllResult,
  type OptimConfig,
  type ParamAccess,
  type ParamInfo,
  type StepStats,
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
import { stateShapeText } from './lm.js';
import { gaussianNll, gaussianOutputSize, type HeadLoss, mixtureNll, mixtureOutputSize } from './mixture.js';
import { JsParameters } from './parameters.js';

/** The likelihood of one step: a diagonal Gaussian, or a mixture density network (Graves 2013). */
export type Likelihood = 'gaussian' | 'mdn';

export const LIKELIHOODS: readonly Likelihood[] = ['gaussian', 'mdn'];

/** The steps of a window the training loss scores: every one, or the last (sequence-to-one). */
export type SeriesOutputs = 'every' | 'last';

export const SERIES_OUTPUTS: readonly SeriesOutputs[] = ['every', 'last'];

export interface SeriesShape {
  /** D, variables per time step. */
  dim: number;
  hidden: number;
  layers: number;
  cell: CellKind;
  likelihood: Likelihood;
  /** K, mixture components: 'mdn' only (absent for 'gaussian'). */
  components?: number;
  /** Heads predicting the next n steps jointly (absent: 1, the next step). */
  predictAhead?: number;
  /** The steps of a window the training loss scores (absent: 'every'). */
  outputs?: SeriesOutputs;
}

/** ConfigError for a shape no backend can build (the native one checks the same). */
export function checkSeriesShape(s: SeriesShape): void {
  for (const key of ['dim', 'hidden', 'layers'] as const) {
    const v = s[key];
    if (!Number.isSafeInteger(v) || v < 1)
      throw new ConfigError(`series model: ${key} must be an integer ≥ 1, got ${v}`);
  }
  if (!CELL_KINDS.includes(s.cell)) {
    throw new ConfigError(`series model: cell must be one of ${CELL_KINDS.join(', ')}, got ${JSON.stringify(s.cell)}`);
  }
  if (!LIKELIHOODS.includes(s.likelihood)) {
    throw new ConfigError(`series model: likelihood must be gaussian or mdn, got ${JSON.stringify(s.likelihood)}`);
  }
  if (s.likelihood === 'gaussian' && s.components !== undefined) {
    throw new ConfigError(`series model: components (K = ${s.components}) apply to the mdn likelihood only`);
  }
  if (s.likelihood === 'mdn' && !(Number.isSafeInteger(s.components) && (s.components as number) >= 1)) {
    throw new ConfigError(`series model: components (K) must be at least 1, got ${s.components}`);
  }
  const n = s.predictAhead ?? 1;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(`series model: predictAhead must be an integer ≥ 1, got ${s.predictAhead}`);
  }
  if (!SERIES_OUTPUTS.includes(s.outputs ?? 'every')) {
    throw new ConfigError(`series model: outputs must be every or last, got ${JSON.stringify(s.outputs)}`);
  }
}

/** Head k's parameter prefix: `head` for the next step, `ahead.{k}` for k ≥ 2. */
function headPrefix(k: number): string {
  return k === 1 ? 'head' : `ahead.${k}`;
}

/** Raw head outputs per step. */
export function seriesOutputSize(s: SeriesShape): number {
  return s.likelihood === 'gaussian' ? gaussianOutputSize(s.dim) : mixtureOutputSize(s.dim, s.components as number);
}

/** Parameter names and shapes of a model of this shape, in state_dict order. */
export function seriesParamInfo(s: SeriesShape): ParamInfo[] {
  const g = gateCount(s.cell) * s.hidden;
  const info: ParamInfo[] = [];
  for (let l = 0; l < s.layers; l++) {
    const n = cellParamNames(s.cell, l);
    info.push(
      { name: n.wIh, shape: [g, l === 0 ? s.dim : s.hidden] },
      { name: n.wHh, shape: [g, s.hidden] },
      { name: n.bIh, shape: [g] },
      { name: n.bHh, shape: [g] },
    );
  }
  const out = seriesOutputSize(s);
  for (let k = 1; k <= (s.predictAhead ?? 1); k++) {
    info.push(
      { name: `${headPrefix(k)}.weight`, shape: [out, s.hidden] },
      { name: `${headPrefix(k)}.bias`, shape: [out] },
    );
  }
  return info;
}

/** What both backends of the series model implement (native: Rust through N-API; js: this file). */
export interface SeriesBackend extends ParamAccess {
  readonly kind: 'native' | 'js';
  readonly shape: SeriesShape;
  /** The detached final state of the last training batch, carried into the next (truncated BPTT). */
  getCarry(): Carry | null;
  setCarry(carry: Carry | null): void;
  /**
   * Forward, mean NLL per step (nats, in the units of the values given; with n heads the sum of their
   * means, `targets` all n blocks), BPTT, clipping and AdamW in one call; continues from the carried
   * state when its batch size matches, then carries the new one. A non-finite loss or gradient rejects
   * and leaves parameters, optimizer state and carry untouched.
   */
  trainStep(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    opt: OptimConfig,
  ): Promise<StepStats>;
  /** The training loss of `trainStep` and its gradients; changes nothing. `state` null means zeros. */
  lossAndGrads(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<LossGrads>;
  /**
   * Summed NLL (nats) over all B·T steps of the next steps and the final state; changes nothing.
   * `targets` is `[B, T, D]` or, for a model predicting n ahead, optionally all n blocks: then
   * `aheadNll[k − 2]` is head k's sum over the `aheadRows[k − 2]` present rows of its block. Every step
   * is scored whatever `outputs`.
   */
  nll(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<NllResult>;
  /** One step of N streams: feeds `x [N, D]` from `state` (null: zeros); raw head outputs `[N, outSize]`. */
  step(state: Float32Array | null, x: Float32Array): { state: Float32Array; raw: Float32Array };
}

type Params = Record<string, FloatArray>;

/** What one layer's backward needs from its forward. */
interface LayerCache {
  dims: CellDims;
  x: FloatArray;
  s0: FloatArray;
  out: FloatArray;
  saved: FloatArray | null;
}

function checkValues(what: string, v: FloatArray, batch: number, seq: number, dim: number): void {
  if (!Number.isSafeInteger(batch) || !Number.isSafeInteger(seq) || batch < 1 || seq < 1) {
    throw new ShapeError(`${what}: batch and sequence length must be integers ≥ 1, got ${batch} and ${seq}`);
  }
  if (v.length !== batch * seq * dim) {
    throw new ShapeError(
      `${what}: expected batch ${batch} × seq ${seq} × dim ${dim} = ${batch * seq * dim} values, got ${v.length}`,
    );
  }
  for (let i = 0; i < v.length; i++) {
    if (!Number.isFinite(v[i])) throw new DataError(`${what}: value ${i} is not finite (${v[i]})`);
  }
}

function checkState(s: SeriesShape, state: FloatArray | null, batch: number): void {
  const want = s.layers * batch * stateWidth(s.cell) * s.hidden;
  if (state !== null && state.length !== want) {
    throw new ShapeError(
      `recurrent state holds ${state.length} values; ${stateShapeText(s.cell, s.layers, batch, s.hidden)} needs ${want}`,
    );
  }
}

/** The layers over `x [B, T, D]` from `s0 [L, B, W·H]` (null: zeros): top h `[B·T, H]` and final states. */
function runStack(
  s: SeriesShape,
  params: Params,
  x0: FloatArray,
  batch: number,
  seq: number,
  s0: FloatArray | null,
  dtype: Dtype,
  save: boolean,
): { top: FloatArray; state: FloatArray; caches: LayerCache[] } {
  const { hidden: H, layers: L, cell } = s;
  const S = stateWidth(cell) * H;
  const state = alloc(dtype, L * batch * S);
  const caches: LayerCache[] = [];
  let x: FloatArray = x0;
  for (let l = 0; l < L; l++) {
    const dims: CellDims = { batch, seq, input: l === 0 ? s.dim : H, hidden: H };
    const init = s0 === null ? alloc(dtype, batch * S) : s0.subarray(l * batch * S, (l + 1) * batch * S);
    const { out, saved } = cellForward(cell, dims, x, init, cellParamsOf(cell, params, l), { dtype, save });
    for (let b = 0; b < batch; b++) {
      state.set(out.subarray((b * seq + seq - 1) * S, (b * seq + seq) * S), (l * batch + b) * S);
    }
    if (save) caches.push({ dims, x, s0: init, out, saved });
    x = hiddenOf(cell, out, batch * seq, H);
  }
  return { top: x, state, caches };
}

/** Raw outputs `[rows, outSize]` of head k (1: the next step) in doubles: h · weightᵀ + bias. */
function headRaw(s: SeriesShape, params: Params, top: FloatArray, rows: number, k = 1): Float64Array {
  const out = seriesOutputSize(s);
  const H = s.hidden;
  const w = params[`${headPrefix(k)}.weight`];
  const bias = params[`${headPrefix(k)}.bias`];
  const raw = new Float64Array(rows * out);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < out; o++) raw[r * out + o] = dot(bias[o], w, o * H, top, r * H, H);
  }
  return raw;
}

function headLoss(s: SeriesShape, raw: Float64Array, y: FloatArray, rows: number): HeadLoss {
  return s.likelihood === 'gaussian'
    ? gaussianNll(raw, y, rows, s.dim)
    : mixtureNll(raw, y, rows, s.dim, s.components as number);
}

function validate(s: SeriesShape, inputs: FloatArray, batch: number, seq: number, state: FloatArray | null): void {
  checkValues('inputs', inputs, batch, seq, s.dim);
  checkState(s, state, batch);
}

/** One target block: the rows of `[B·T]` it scores, and their targets `[rows.length, D]`. */
interface Block {
  rows: number[];
  y: FloatArray;
}

/**
 * The target blocks of `targets`: one (`[B, T, D]`, the next steps) or, for a model predicting n ahead,
 * n (`[n, B, T, D]`; required when `all`). Rows of blocks k ≥ 2 may be absent (NaN in every column).
 * Each block keeps its present rows, and with `last` only those of each window's final step.
 */
function targetBlocks(
  s: SeriesShape,
  targets: FloatArray,
  batch: number,
  seq: number,
  all: boolean,
  last: boolean,
): Block[] {
  const n = s.predictAhead ?? 1;
  const D = s.dim;
  const N = batch * seq;
  const size = N * D;
  const blocks = targets.length === size && !(all && n > 1) ? 1 : n;
  if (n > 1 && targets.length !== blocks * size && batch >= 1 && seq >= 1) {
    throw new ShapeError(
      `targets: expected ${n} blocks (one per predicted step) of batch ${batch} × seq ${seq} × dim ${D} = ${n * size} values` +
        `${all ? '' : ` (or ${size} for the next step only)`}, got ${targets.length}`,
    );
  }
  checkValues('targets', blocks === 1 ? targets : targets.subarray(0, size), batch, seq, D);
  const scored = (r: number) => !last || r % seq === seq - 1;
  const out: Block[] = [];
  for (let k = 1; k <= blocks; k++) {
    const b = targets.subarray((k - 1) * size, k * size);
    const rows: number[] = [];
    for (let r = 0; r < N; r++) {
      const row = b.subarray(r * D, (r + 1) * D);
      if (k > 1 && row.every(Number.isNaN)) continue;
      const d = row.findIndex((v) => !Number.isFinite(v));
      if (d >= 0) {
        throw new DataError(
          `targets: row ${r} of block ${k} (${k} ahead) is not finite at ${d} (${row[d]}): a row holds finite values, or NaN in every column when absent`,
        );
      }
      if (scored(r)) rows.push(r);
    }
    out.push({ rows, y: rows.length === N ? b : gatherRows(b, rows, D) });
  }
  return out;
}

/** Rows `rows` of `[·, width]` values, packed. */
function gatherRows(a: FloatArray, rows: number[], width: number): FloatArray {
  const out = new Float64Array(rows.length * width);
  rows.forEach((r, i) => {
    out.set(a.subarray(r * width, (r + 1) * width), i * width);
  });
  return out;
}

/** Raw head outputs `[B·T, outSize]` (doubles) and the final state `[L, B, W·H]`. */
export function seriesForward<D extends Dtype>(
  s: SeriesShape,
  params: Params,
  inputs: FloatArray,
  batch: number,
  seq: number,
  state: FloatArray | null,
  dtype: D,
): { raw: Float64Array; state: ArrayOf<D> } {
  validate(s, inputs, batch, seq, state);
  const { top, state: next } = runStack(s, params, inputs, batch, seq, state, dtype, false);
  return { raw: headRaw(s, params, top, batch * seq), state: next as ArrayOf<D> };
}

/** The top h of a block's scored rows, `[rows, H]`, and their raw outputs of head k. */
function blockRaw(s: SeriesShape, params: Params, top: FloatArray, N: number, b: Block, k: number) {
  const h = b.rows.length === N ? top : gatherRows(top, b.rows, s.hidden);
  return { h, raw: headRaw(s, params, h, b.rows.length, k) };
}

/**
 * Summed NLL (nats) of the next steps given `inputs` and the final state; no gradient. With all n target
 * blocks of a model predicting n ahead, also head k ≥ 2's sum over the present rows of its block.
 */
export function seriesNll<D extends Dtype>(
  s: SeriesShape,
  params: Params,
  inputs: FloatArray,
  targets: FloatArray,
  batch: number,
  seq: number,
  state: FloatArray | null,
  dtype: D,
): { nll: number; aheadNll: number[]; aheadRows: number[]; state: ArrayOf<D> } {
  validate(s, inputs, batch, seq, state);
  const blocks = targetBlocks(s, targets, batch, seq, false, false);
  const N = batch * seq;
  const { top, state: next } = runStack(s, params, inputs, batch, seq, state, dtype, false);
  const sums = blocks.map((b, i) => {
    if (b.rows.length === 0) return 0;
    return headLoss(s, blockRaw(s, params, top, N, b, i + 1).raw, b.y, b.rows.length).nll;
  });
  const rows = blocks.map((b) => b.rows.length);
  return { nll: sums[0], aheadNll: sums.slice(1), aheadRows: rows.slice(1), state: next as ArrayOf<D> };
}

/**
 * The training loss, mean NLL per step over the B·T steps (for a model predicting n ahead, Σ_k of head
 * k's mean over the rows it scores; with `outputs: 'last'` only each window's final step), and its
 * gradient w.r.t. every parameter and the initial state (null: zeros, whose gradient is still
 * returned). Changes nothing.
 */
export function seriesLossAndGrads<D extends Dtype>(
  s: SeriesShape,
  params: Params,
  inputs: FloatArray,
  targets: FloatArray,
  batch: number,
  seq: number,
  state: FloatArray | null,
  dtype: D,
): { loss: number; grads: Record<string, ArrayOf<D>>; dh0: ArrayOf<D>; state: ArrayOf<D> } {
  validate(s, inputs, batch, seq, state);
  const blocks = targetBlocks(s, targets, batch, seq, true, s.outputs === 'last');
  const { hidden: H, layers: L, cell } = s;
  const S = stateWidth(cell) * H;
  const N = batch * seq;
  const out = seriesOutputSize(s);
  const { top, state: next, caches } = runStack(s, params, inputs, batch, seq, state, dtype, true);

  // Heads, each over the c rows it scores: dL/draw = grad / c for its mean; dW = Σ dRaw ⊗ h,
  // db = Σ dRaw, dh = dRaw · W, every head adding into dL/dh of the top layer.
  const grads: Record<string, ArrayOf<D>> = {};
  const dTopAll = new Float64Array(N * H);
  let loss = 0;
  blocks.forEach((b, i) => {
    const c = b.rows.length;
    const w = params[`${headPrefix(i + 1)}.weight`];
    const dW = new Float64Array(out * H);
    const dBias = new Float64Array(out);
    if (c > 0) {
      const { h, raw } = blockRaw(s, params, top, N, b, i + 1);
      const { nll, grad } = headLoss(s, raw, b.y, c);
      loss += nll / c;
      for (let q = 0; q < c; q++) {
        const ho = b.rows[q] * H;
        for (let o = 0; o < out; o++) {
          const d = grad[q * out + o] / c;
          dBias[o] += d;
          for (let j = 0; j < H; j++) {
            dW[o * H + j] += d * h[q * H + j];
            dTopAll[ho + j] += d * w[o * H + j];
          }
        }
      }
    }
    grads[`${headPrefix(i + 1)}.weight`] = toDtype(dW, dtype);
    grads[`${headPrefix(i + 1)}.bias`] = toDtype(dBias, dtype);
  });
  let dTop: FloatArray = toDtype(dTopAll, dtype);

  const dh0 = alloc(dtype, L * batch * S);
  for (let l = L - 1; l >= 0; l--) {
    const c = caches[l];
    const g = cellBackward(
      cell,
      c.dims,
      c.x,
      c.s0,
      cellParamsOf(cell, params, l),
      c.out,
      c.saved,
      padHidden(cell, dTop, N, H),
    );
    const names = cellParamNames(cell, l);
    grads[names.wIh] = g.dWIh as ArrayOf<D>;
    grads[names.wHh] = g.dWHh as ArrayOf<D>;
    grads[names.bIh] = g.dBIh as ArrayOf<D>;
    grads[names.bHh] = g.dBHh as ArrayOf<D>;
    dh0.set(g.ds0, l * batch * S);
    dTop = g.dx;
  }
  const ordered: Record<string, ArrayOf<D>> = {};
  for (const { name } of seriesParamInfo(s)) ordered[name] = grads[name];
  return { loss, grads: ordered, dh0, state: next as ArrayOf<D> };
}

/** The series model on the pure-TypeScript backend: f32 parameters and states, sums in doubles. */
export class JsSeriesModel extends JsParameters implements SeriesBackend {
  readonly kind = 'js' as const;
  readonly shape: SeriesShape;
  private carry: Carry | null = null;

  /** A model with every parameter zero; callers load an initialisation with `setParam`. */
  constructor(shape: SeriesShape) {
    checkSeriesShape(shape);
    const frozen: SeriesShape = Object.freeze({ ...shape });
    super(seriesParamInfo(frozen), 'series model');
    this.shape = frozen;
  }

  getCarry(): Carry | null {
    return this.carry === null ? null : { batch: this.carry.batch, state: this.carry.state.slice() };
  }

  setCarry(carry: Carry | null): void {
    if (carry !== null) {
      if (!Number.isSafeInteger(carry.batch) || carry.batch < 1) {
        throw new ShapeError(`carry: batch must be an integer ≥ 1, got ${carry.batch}`);
      }
      checkState(this.shape, carry.state, carry.batch);
    }
    this.carry = carry === null ? null : { batch: carry.batch, state: carry.state.slice() };
  }

  async trainStep(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    opt: OptimConfig,
  ): Promise<StepStats> {
    this.checkLr(opt);
    const h0 = this.carry !== null && this.carry.batch === batch ? this.carry.state : null;
    const { loss, grads, state } = seriesLossAndGrads(this.shape, this.params, inputs, targets, batch, seq, h0, 'f32');
    const stats = this.optimizerStep(loss, grads, opt);
    this.carry = { batch, state };
    return stats;
  }

  async lossAndGrads(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<LossGrads> {
    const { loss, grads, dh0 } = seriesLossAndGrads(this.shape, this.params, inputs, targets, batch, seq, state, 'f32');
    return { loss, grads, dh0 };
  }

  async nll(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<NllResult> {
    return seriesNll(this.shape, this.params, inputs, targets, batch, seq, state, 'f32');
  }

  step(state: Float32Array | null, x: Float32Array): { state: Float32Array; raw: Float32Array } {
    const D = this.shape.dim;
    if (x.length === 0 || x.length % D !== 0) {
      throw new ShapeError(`step: ${x.length} values are not whole rows of dim ${D} (pass [N, ${D}], N ≥ 1)`);
    }
    const r = seriesForward(this.shape, this.params, x, x.length / D, 1, state, 'f32');
    return { state: r.state, raw: Float32Array.from(r.raw) };
  }
}
