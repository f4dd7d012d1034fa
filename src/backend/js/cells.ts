/**
 * The recurrent cells of the reference LM behind one interface, so the LM itself has no per-cell
 * branches: parameter lookup, forward and backward of one layer by `CellKind`, and the conversions
 * between a layer's output rows (`stateWidth·H` wide: h, then c for the LSTM) and the h half that the
 * layer above and the head read.
 *
 * Per layer and cell (see gru.ts, lstm.ts, rnn.ts):
 *   state `[B, W·H]`, out `[B, T, W·H]`, saved `[B·T, S·H]` or null, with
 *   gru: W = 1, S = 4 (r, z, n, W_hn h + b_hn);  lstm: W = 2 (h, c), S = 4 (i, f, g, o);  rnn: W = 1, null.
 */
import { type CellKind, stateWidth } from '../types.js';
import {
  alloc,
  type Dtype,
  dtypeOf,
  type FloatArray,
  type GruDims,
  type GruWeights,
  gruBackward,
  gruForward,
} from './gru.js';
import { lstmBackward, lstmForward } from './lstm.js';
import { rnnBackward, rnnForward } from './rnn.js';

/** Batch, sequence length, input width and hidden width of one layer. */
export type CellDims = GruDims;
/** `wIh [G·H, I]`, `wHh [G·H, H]`, `bIh [G·H]`, `bHh [G·H]` with G = gateCount(cell). */
export type CellWeights = GruWeights;

export interface CellForwardOptions {
  /** Storage type of `out` and `saved`; defaults to that of `x`. */
  dtype?: Dtype;
  /** Keep the activations `cellBackward` needs. */
  save?: boolean;
}

export interface CellForward {
  /** `[B, T, W·H]` */
  out: FloatArray;
  /** What the cell's backward needs besides `out`; null unless `save` was asked for, and always for the RNN. */
  saved: FloatArray | null;
}

/** Gradients of a scalar loss, given dL/d(out). Stored in the dtype of `x`. */
export interface CellGrads {
  dx: FloatArray;
  /** dL/d(initial state) `[B, W·H]`. */
  ds0: FloatArray;
  dWIh: FloatArray;
  dWHh: FloatArray;
  dBIh: FloatArray;
  dBHh: FloatArray;
}

/** The state_dict names of layer `l`'s weights. */
export function cellParamNames(cell: CellKind, l: number): { wIh: string; wHh: string; bIh: string; bHh: string } {
  return {
    wIh: `${cell}.weight_ih_l${l}`,
    wHh: `${cell}.weight_hh_l${l}`,
    bIh: `${cell}.bias_ih_l${l}`,
    bHh: `${cell}.bias_hh_l${l}`,
  };
}

/** Layer `l`'s weights out of a params record keyed by state_dict names. */
export function cellParamsOf(cell: CellKind, params: Record<string, FloatArray>, l: number): CellWeights {
  const n = cellParamNames(cell, l);
  return { wIh: params[n.wIh], wHh: params[n.wHh], bIh: params[n.bIh], bHh: params[n.bHh] };
}

/** Runs one layer of `cell` over the whole sequence from the initial state `s0 [B, W·H]`. */
export function cellForward(
  cell: CellKind,
  dims: CellDims,
  x: FloatArray,
  s0: FloatArray,
  w: CellWeights,
  opts: CellForwardOptions = {},
): CellForward {
  switch (cell) {
    case 'gru':
      return gruForward(dims, x, s0, w, opts);
    case 'lstm':
      return lstmForward(dims, x, s0, w, opts);
    case 'rnn':
      return rnnForward(dims, x, s0, w, { dtype: opts.dtype });
  }
  stateWidth(cell); // throws ConfigError for a kind outside CellKind
  throw new Error('unreachable');
}

/**
 * Backward through time of one layer: `out` and `saved` are what `cellForward` produced with `save`,
 * `dOut` is dL/d(out) `[B, T, W·H]`.
 */
export function cellBackward(
  cell: CellKind,
  dims: CellDims,
  x: FloatArray,
  s0: FloatArray,
  w: CellWeights,
  out: FloatArray,
  saved: FloatArray | null,
  dOut: FloatArray,
): CellGrads {
  // Missing activations fail the callee's size check (a ShapeError naming `saved`).
  const need = saved ?? alloc(dtypeOf(x), 0);
  switch (cell) {
    case 'gru': {
      const { dh0, ...g } = gruBackward(dims, x, s0, w, out, need, dOut);
      return { ...g, ds0: dh0 };
    }
    case 'lstm':
      return lstmBackward(dims, x, s0, w, out, need, dOut);
    case 'rnn': {
      const { dh0, ...g } = rnnBackward(dims, x, s0, w, out, dOut);
      return { ...g, ds0: dh0 };
    }
  }
  stateWidth(cell);
  throw new Error('unreachable');
}

/**
 * The h half `[rows, H]` of a layer's output `[rows, W·H]`: `out` itself when W = 1, else a compact
 * copy in the same dtype.
 */
export function hiddenOf(cell: CellKind, out: FloatArray, rows: number, hidden: number): FloatArray {
  const W = stateWidth(cell);
  if (W === 1) return out;
  const h = alloc(dtypeOf(out), rows * hidden);
  for (let r = 0; r < rows; r++) h.set(out.subarray(r * W * hidden, r * W * hidden + hidden), r * hidden);
  return h;
}

/**
 * dL/d(out) `[rows, W·H]` of a layer whose h half received `dH [rows, H]` and whose other parts (the
 * LSTM's c) reach the loss only through later steps: `dH` itself when W = 1, else zero-padded.
 */
export function padHidden(cell: CellKind, dH: FloatArray, rows: number, hidden: number): FloatArray {
  const W = stateWidth(cell);
  if (W === 1) return dH;
  const d = alloc(dtypeOf(dH), rows * W * hidden);
  for (let r = 0; r < rows; r++) d.set(dH.subarray(r * hidden, (r + 1) * hidden), r * W * hidden);
  return d;
}
