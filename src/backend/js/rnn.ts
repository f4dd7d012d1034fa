/**
 * One vanilla (Elman) RNN layer over a whole sequence and its hand-written backward through time, in
 * plain TypeScript: the reference the native RNN kernel is tested against.
 *
 * PyTorch `nn.RNN` semantics with nonlinearity tanh:
 *   h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
 * Layout is batch-first and row-major: `x [B, T, I]`, `h0 [B, H]`, `out [B, T, H]`. Weights are
 * PyTorch's: `wIh [H, I]`, `wHh [H, H]`, `bIh [H]`, `bHh [H]`.
 *
 * The backward needs nothing beyond `out` (tanh' = 1 − h'²), so the forward saves nothing: its `saved`
 * is always null and `rnnBackward` takes no saved activations.
 *
 * Results are stored in the requested dtype; every sum is computed in doubles.
 */

import { alloc, type Dtype, dot, dtypeOf, type FloatArray, type GruDims, type GruWeights, toDtype } from './gru.js';
import { accumulatePosition, checkLayerInputs, checkLength, weightGrads } from './recurrent.js';

/** Batch, sequence length, input width and hidden width of one layer (the same for every cell). */
export type RnnDims = GruDims;
/** `wIh [H, I]`, `wHh [H, H]`, `bIh [H]`, `bHh [H]`. */
export type RnnWeights = GruWeights;

export interface RnnForwardOptions {
  /** Storage type of `out`; defaults to that of `x`. */
  dtype?: Dtype;
}

export interface RnnForward {
  /** `[B, T, H]` */
  out: FloatArray;
  /** Always null: the backward reads only `out`. */
  saved: null;
}

/** Gradients of a scalar loss, given dL/d(out). Stored in the dtype of `x`. */
export interface RnnGrads {
  dx: FloatArray;
  dh0: FloatArray;
  dWIh: FloatArray;
  dWHh: FloatArray;
  dBIh: FloatArray;
  dBHh: FloatArray;
}

/** Runs the layer over the whole sequence from the initial state `h0 [B, H]`. */
export function rnnForward(
  dims: RnnDims,
  x: FloatArray,
  h0: FloatArray,
  w: RnnWeights,
  opts: RnnForwardOptions = {},
): RnnForward {
  checkLayerInputs('rnnForward', dims, x, h0, w, 1, 1);
  const { batch: B, seq: T, input: I, hidden: H } = dims;
  const dtype = opts.dtype ?? dtypeOf(x);
  const out = alloc(dtype, B * T * H);
  const { wIh, wHh, bIh, bHh } = w;
  // The pre-activation of one row is computed whole before any of it is written over h_{t−1}'s storage.
  const a = new Float64Array(H);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = b * T + t;
      const xo = row * I;
      // h_{t−1}: the initial state, or the previous output read back from its storage.
      const hp = t === 0 ? h0 : out;
      const ho = t === 0 ? b * H : (row - 1) * H;
      for (let k = 0; k < H; k++) {
        a[k] = dot(bIh[k], wIh, k * I, x, xo, I) + dot(bHh[k], wHh, k * H, hp, ho, H);
      }
      const oo = row * H;
      for (let j = 0; j < H; j++) out[oo + j] = Math.tanh(a[j]);
    }
  }
  return { out, saved: null };
}

/**
 * Backward through time. `out` is what `rnnForward` produced, `dOut` is dL/d(out) `[B, T, H]`,
 * including whatever reaches the final state.
 */
export function rnnBackward(
  dims: RnnDims,
  x: FloatArray,
  h0: FloatArray,
  w: RnnWeights,
  out: FloatArray,
  dOut: FloatArray,
): RnnGrads {
  checkLayerInputs('rnnBackward', dims, x, h0, w, 1, 1);
  const { batch: B, seq: T, input: I, hidden: H } = dims;
  const shape = `[B ${B}, T ${T}, H ${H}]`;
  checkLength('rnnBackward: out', out, B * T * H, shape);
  checkLength('rnnBackward: dOut', dOut, B * T * H, shape);
  const dtype = dtypeOf(x);
  const dx = alloc(dtype, B * T * I);
  const dh0 = alloc(dtype, B * H);
  const acc = weightGrads(H, I, H);
  // Gradient w.r.t. the pre-activation of one row.
  const da = new Float64Array(H);
  // dh: dL/dh_t through everything after t; dhPrev becomes dL/dh_{t−1}.
  let dh = new Float64Array(H);
  let dhPrev = new Float64Array(H);
  const dxRow = new Float64Array(I);
  for (let b = 0; b < B; b++) {
    dh.fill(0);
    for (let t = T - 1; t >= 0; t--) {
      const row = b * T + t;
      const oo = row * H;
      const hp = t === 0 ? h0 : out;
      const ho = t === 0 ? b * H : (row - 1) * H;
      for (let j = 0; j < H; j++) {
        const h = out[oo + j];
        da[j] = (dOut[oo + j] + dh[j]) * (1 - h * h);
      }
      dhPrev.fill(0);
      const xo = row * I;
      accumulatePosition(acc, w, da, da, x, xo, hp, ho, dxRow, dhPrev);
      dx.set(dxRow, xo);
      const swap = dh;
      dh = dhPrev;
      dhPrev = swap;
    }
    dh0.set(dh, b * H);
  }
  return {
    dx,
    dh0,
    dWIh: toDtype(acc.dWIh, dtype),
    dWHh: toDtype(acc.dWHh, dtype),
    dBIh: toDtype(acc.dBIh, dtype),
    dBHh: toDtype(acc.dBHh, dtype),
  };
}
