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
 */
import { ConfigError, DataError, ShapeError } from '../../errors.js';
import {
  type Carry,
  CELL_KINDS,
  type CellKind,
  gateCount,
  type LossGrads,
  type OptimConfig,
  type OptimMoment,
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

export interface SeriesShape {
  /** D, variables per time step. */
  dim: number;
  hidden: number;
  layers: number;
  cell: CellKind;
  likelihood: Likelihood;
  /** K, mixture components: 'mdn' only (absent for 'gaussian'). */
  components?: number;
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
  info.push({ name: 'head.weight', shape: [out, s.hidden] }, { name: 'head.bias', shape: [out] });
  return info;
}

/** What both backends of the series model implement (native: Rust through N-API; js: this file). */
export interface SeriesBackend {
  readonly kind: 'native' | 'js';
  readonly shape: SeriesShape;
  paramInfo(): ParamInfo[];
  getParam(name: string): Float32Array;
  setParam(name: string, data: Float32Array): void;
  getOptimState(which: OptimMoment, name: string): Float32Array;
  setOptimState(which: OptimMoment, name: string, data: Float32Array): void;
  getOptimStep(): number;
  setOptimStep(step: number): void;
  /** The detached final state of the last training batch, carried into the next (truncated BPTT). */
  getCarry(): Carry | null;
  setCarry(carry: Carry | null): void;
  /**
   * Forward, mean NLL per step (nats, in the units of the values given), BPTT, clipping and AdamW in
   * one call; continues from the carried state when its batch size matches, then carries the new one.
   * A non-finite loss or gradient rejects and leaves parameters, optimizer state and carry untouched.
   */
  trainStep(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    opt: OptimConfig,
  ): Promise<StepStats>;
  /** Mean NLL per step and its gradients; changes nothing. `state` null means zeros. */
  lossAndGrads(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<LossGrads>;
  /** Summed NLL (nats) over all B·T steps and the final state; changes nothing. */
  nll(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<{ nll: number; state: Float32Array }>;
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

/** Raw head outputs `[rows, outSize]` in doubles: h · head.weightᵀ + head.bias. */
function headRaw(s: SeriesShape, params: Params, top: FloatArray, rows: number): Float64Array {
  const out = seriesOutputSize(s);
  const H = s.hidden;
  const w = params['head.weight'];
  const bias = params['head.bias'];
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

function validate(
  s: SeriesShape,
  inputs: FloatArray,
  targets: FloatArray | null,
  batch: number,
  seq: number,
  state: FloatArray | null,
): void {
  checkValues('inputs', inputs, batch, seq, s.dim);
  if (targets !== null) checkValues('targets', targets, batch, seq, s.dim);
  checkState(s, state, batch);
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
  validate(s, inputs, null, batch, seq, state);
  const { top, state: next } = runStack(s, params, inputs, batch, seq, state, dtype, false);
  return { raw: headRaw(s, params, top, batch * seq), state: next as ArrayOf<D> };
}

/** Summed NLL (nats) of `targets` given `inputs` and the final state; no gradient. */
export function seriesNll<D extends Dtype>(
  s: SeriesShape,
  params: Params,
  inputs: FloatArray,
  targets: FloatArray,
  batch: number,
  seq: number,
  state: FloatArray | null,
  dtype: D,
): { nll: number; state: ArrayOf<D> } {
  validate(s, inputs, targets, batch, seq, state);
  const { raw, state: next } = seriesForward(s, params, inputs, batch, seq, state, dtype);
  return { nll: headLoss(s, raw, targets, batch * seq).nll, state: next };
}

/**
 * Mean NLL per step over the B·T steps and its gradient w.r.t. every parameter and the initial state
 * (null: zeros, whose gradient is still returned). Changes nothing.
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
  validate(s, inputs, targets, batch, seq, state);
  const { hidden: H, layers: L, cell } = s;
  const S = stateWidth(cell) * H;
  const N = batch * seq;
  const out = seriesOutputSize(s);
  const { top, state: next, caches } = runStack(s, params, inputs, batch, seq, state, dtype, true);
  const raw = headRaw(s, params, top, N);
  const { nll, grad } = headLoss(s, raw, targets, N);

  // Head: dL/draw = grad / N for the mean; dW = Σ dRaw ⊗ h, db = Σ dRaw, dh = dRaw · W.
  const w = params['head.weight'];
  const dW = new Float64Array(out * H);
  const dBias = new Float64Array(out);
  let dTop: FloatArray = alloc(dtype, N * H);
  const dRow = new Float64Array(H);
  for (let r = 0; r < N; r++) {
    dRow.fill(0);
    for (let o = 0; o < out; o++) {
      const d = grad[r * out + o] / N;
      dBias[o] += d;
      for (let j = 0; j < H; j++) {
        dW[o * H + j] += d * top[r * H + j];
        dRow[j] += d * w[o * H + j];
      }
    }
    dTop.set(dRow, r * H);
  }

  const grads: Record<string, ArrayOf<D>> = {};
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
  grads['head.weight'] = toDtype(dW, dtype);
  grads['head.bias'] = toDtype(dBias, dtype);
  const ordered: Record<string, ArrayOf<D>> = {};
  for (const { name } of seriesParamInfo(s)) ordered[name] = grads[name];
  return { loss: nll / N, grads: ordered, dh0, state: next as ArrayOf<D> };
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
  ): Promise<{ nll: number; state: Float32Array }> {
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
