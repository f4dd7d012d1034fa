/**
 * What the reference recurrent cells (GRU, LSTM, tanh RNN) share, as `crates/arflow-core/src/rnn/common.rs`
 * does for the kernels: the size checks of a layer call, and the per-position step of backward that turns
 * the gate gradients into weight, bias, input and previous-state gradients.
 */
import { ShapeError } from '../../errors.js';
import type { FloatArray, GruDims, GruWeights } from './gru.js';

export function sigmoid(a: number): number {
  return 1 / (1 + Math.exp(-a));
}

export function checkLength(what: string, a: FloatArray, want: number, shape: string): void {
  if (a.length !== want) {
    throw new ShapeError(`${what} holds ${a.length} values; ${shape} needs ${want}`);
  }
}

/**
 * The size checks every recurrent layer makes: `x [B, T, I]`, state `[B, width·H]`, weights of
 * `gates·H` rows.
 */
export function checkLayerInputs(
  fn: string,
  dims: GruDims,
  x: FloatArray,
  s0: FloatArray,
  w: GruWeights,
  gates: number,
  width: number,
): void {
  for (const key of ['batch', 'seq', 'input', 'hidden'] as const) {
    const v = dims[key];
    const least = key === 'input' || key === 'hidden' ? 1 : 0;
    if (!Number.isSafeInteger(v) || v < least) {
      throw new ShapeError(`${fn}: dims.${key} must be an integer ≥ ${least}, got ${v}`);
    }
  }
  const { batch: B, seq: T, input: I, hidden: H } = dims;
  const g = gates === 1 ? 'H' : `${gates}H`;
  const s = width === 1 ? 'H' : `${width}H`;
  checkLength(`${fn}: x`, x, B * T * I, `[B ${B}, T ${T}, I ${I}]`);
  checkLength(`${fn}: ${width === 1 ? 'h0' : 's0'}`, s0, B * width * H, `[B ${B}, ${s} ${width * H}]`);
  checkLength(`${fn}: wIh`, w.wIh, gates * H * I, `[${g} ${gates * H}, I ${I}]`);
  checkLength(`${fn}: wHh`, w.wHh, gates * H * H, `[${g} ${gates * H}, H ${H}]`);
  checkLength(`${fn}: bIh`, w.bIh, gates * H, `[${g} ${gates * H}]`);
  checkLength(`${fn}: bHh`, w.bHh, gates * H, `[${g} ${gates * H}]`);
}

/** The parameter gradients of one layer, accumulated in doubles over every position. */
export interface WeightGrads {
  dWIh: Float64Array;
  dWHh: Float64Array;
  dBIh: Float64Array;
  dBHh: Float64Array;
}

export function weightGrads(gateRows: number, input: number, hidden: number): WeightGrads {
  return {
    dWIh: new Float64Array(gateRows * input),
    dWHh: new Float64Array(gateRows * hidden),
    dBIh: new Float64Array(gateRows),
    dBHh: new Float64Array(gateRows),
  };
}

/**
 * One position of backward: with `dgi` the gradient w.r.t. the input projection's `G` rows and `dgh`
 * w.r.t. the hidden projection's (the same array for cells that add both before any nonlinearity),
 * accumulates dW_ih += dgi ⊗ x, dW_hh += dgh ⊗ h_{t−1} and the biases into `acc`, writes
 * dx = dgi · W_ih into `dxRow` and adds dgh · W_hh to `dhPrev`. `x`/`hp` are read at offsets `xo`/`ho`.
 */
export function accumulatePosition(
  acc: WeightGrads,
  w: GruWeights,
  dgi: Float64Array,
  dgh: Float64Array,
  x: FloatArray,
  xo: number,
  hp: FloatArray,
  ho: number,
  dxRow: Float64Array,
  dhPrev: Float64Array,
): void {
  const G = dgi.length;
  const I = dxRow.length;
  const H = dhPrev.length;
  const { wIh, wHh } = w;
  const { dWIh, dWHh, dBIh, dBHh } = acc;
  dxRow.fill(0);
  for (let k = 0; k < G; k++) {
    const gI = dgi[k];
    const gH = dgh[k];
    const ki = k * I;
    const kh = k * H;
    for (let i = 0; i < I; i++) {
      dWIh[ki + i] += gI * x[xo + i];
      dxRow[i] += gI * wIh[ki + i];
    }
    for (let j = 0; j < H; j++) {
      dWHh[kh + j] += gH * hp[ho + j];
      dhPrev[j] += gH * wHh[kh + j];
    }
    dBIh[k] += gI;
    dBHh[k] += gH;
  }
}
