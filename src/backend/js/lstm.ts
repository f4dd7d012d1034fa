/**
 * One LSTM layer over a whole sequence and its hand-written backward through time, in plain TypeScript:
 * the reference the native LSTM kernel is tested against.
 *
 * PyTorch `nn.LSTM` semantics, gate order (i, f, g, o):
 *   i  = σ(W_ii x + b_ii + W_hi h + b_hi)
 *   f  = σ(W_if x + b_if + W_hf h + b_hf)
 *   g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
 *   o  = σ(W_io x + b_io + W_ho h + b_ho)
 *   c' = f ⊙ c + i ⊙ g
 *   h' = o ⊙ tanh(c')
 * Layout is batch-first and row-major: `x [B, T, I]`; the state `s0 [B, 2H]` holds each row's h0 then
 * c0, and `out [B, T, 2H]` each step's h_t then c_t (the layer above and the head read only the h half;
 * the c half is what the next step and the final state need). Row `b·T + t` of a `[B·T, ·]` matrix is
 * batch element b at time t. Weights are PyTorch's: `wIh [4H, I]`, `wHh [4H, H]`, `bIh [4H]`, `bHh [4H]`.
 *
 * Results are stored in the requested dtype (as the native kernel stores them); every sum and gate is
 * computed in doubles.
 */

import { alloc, type Dtype, dot, dtypeOf, type FloatArray, type GruDims, type GruWeights, toDtype } from './gru.js';
import { accumulatePosition, checkLayerInputs, checkLength, sigmoid, weightGrads } from './recurrent.js';

/** Batch, sequence length, input width and hidden width of one layer (the same for every cell). */
export type LstmDims = GruDims;
/** `wIh [4H, I]`, `wHh [4H, H]`, `bIh [4H]`, `bHh [4H]`. */
export type LstmWeights = GruWeights;

export interface LstmForwardOptions {
  /** Storage type of `out` and `saved`; defaults to that of `x`. */
  dtype?: Dtype;
  /** Keep the activations `lstmBackward` needs. */
  save?: boolean;
}

export interface LstmForward {
  /** `[B, T, 2H]`: each row h_t then c_t. */
  out: FloatArray;
  /** `[B·T, 4H]` of the gates (i, f, g, o) per row, or null unless `save` was asked for. */
  saved: FloatArray | null;
}

/** Gradients of a scalar loss, given dL/d(out). Stored in the dtype of `x`. */
export interface LstmGrads {
  dx: FloatArray;
  /** dL/d(s0) `[B, 2H]`: each row dL/dh0 then dL/dc0. */
  ds0: FloatArray;
  dWIh: FloatArray;
  dWHh: FloatArray;
  dBIh: FloatArray;
  dBHh: FloatArray;
}

/** Runs the layer over the whole sequence from the initial state `s0 [B, 2H]` (h0 then c0 per row). */
export function lstmForward(
  dims: LstmDims,
  x: FloatArray,
  s0: FloatArray,
  w: LstmWeights,
  opts: LstmForwardOptions = {},
): LstmForward {
  checkLayerInputs('lstmForward', dims, x, s0, w, 4, 2);
  const { batch: B, seq: T, input: I, hidden: H } = dims;
  const G = 4 * H;
  const dtype = opts.dtype ?? dtypeOf(x);
  const out = alloc(dtype, B * T * 2 * H);
  const saved = opts.save ? alloc(dtype, B * T * G) : null;
  const { wIh, wHh, bIh, bHh } = w;
  // Pre-activations of the four gates of one row: W_ih x + b_ih + W_hh h + b_hh.
  const a = new Float64Array(G);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = b * T + t;
      const xo = row * I;
      // (h, c)_{t−1}: the initial state, or the previous output row read back from its storage.
      const sp = t === 0 ? s0 : out;
      const so = t === 0 ? b * 2 * H : (row - 1) * 2 * H;
      for (let k = 0; k < G; k++) {
        a[k] = dot(bIh[k], wIh, k * I, x, xo, I) + dot(bHh[k], wHh, k * H, sp, so, H);
      }
      const oo = row * 2 * H;
      const go = row * G;
      for (let j = 0; j < H; j++) {
        const i = sigmoid(a[j]);
        const f = sigmoid(a[H + j]);
        const g = Math.tanh(a[2 * H + j]);
        const o = sigmoid(a[3 * H + j]);
        const c = f * sp[so + H + j] + i * g;
        out[oo + j] = o * Math.tanh(c);
        out[oo + H + j] = c;
        if (saved !== null) {
          saved[go + j] = i;
          saved[go + H + j] = f;
          saved[go + 2 * H + j] = g;
          saved[go + 3 * H + j] = o;
        }
      }
    }
  }
  return { out, saved };
}

/**
 * Backward through time. `out` and `saved` are what `lstmForward` produced (with `save`), `dOut` is
 * dL/d(out) `[B, T, 2H]`: per row the gradient w.r.t. h_t then c_t, including whatever reaches the
 * final state.
 */
export function lstmBackward(
  dims: LstmDims,
  x: FloatArray,
  s0: FloatArray,
  w: LstmWeights,
  out: FloatArray,
  saved: FloatArray,
  dOut: FloatArray,
): LstmGrads {
  checkLayerInputs('lstmBackward', dims, x, s0, w, 4, 2);
  const { batch: B, seq: T, input: I, hidden: H } = dims;
  const G = 4 * H;
  const shape = `[B ${B}, T ${T}, 2H ${2 * H}]`;
  checkLength('lstmBackward: out', out, B * T * 2 * H, shape);
  checkLength('lstmBackward: dOut', dOut, B * T * 2 * H, shape);
  checkLength('lstmBackward: saved', saved, B * T * G, `[B·T ${B * T}, 4H ${G}]`);
  const dtype = dtypeOf(x);
  const dx = alloc(dtype, B * T * I);
  const ds0 = alloc(dtype, B * 2 * H);
  const acc = weightGrads(G, I, H);
  // Gradient w.r.t. the four pre-activations of one row; both projections and biases receive it whole.
  const da = new Float64Array(G);
  // dh, dc: dL/dh_t and dL/dc_t through everything after t; dhPrev and dcPrev become those of t−1.
  let dh = new Float64Array(H);
  let dc = new Float64Array(H);
  let dhPrev = new Float64Array(H);
  let dcPrev = new Float64Array(H);
  const dxRow = new Float64Array(I);
  for (let b = 0; b < B; b++) {
    dh.fill(0);
    dc.fill(0);
    for (let t = T - 1; t >= 0; t--) {
      const row = b * T + t;
      const go = row * G;
      const oo = row * 2 * H;
      const sp = t === 0 ? s0 : out;
      const so = t === 0 ? b * 2 * H : (row - 1) * 2 * H;
      for (let j = 0; j < H; j++) {
        const i = saved[go + j];
        const f = saved[go + H + j];
        const g = saved[go + 2 * H + j];
        const o = saved[go + 3 * H + j];
        const tc = Math.tanh(out[oo + H + j]);
        const dht = dOut[oo + j] + dh[j];
        // h' = o ⊙ tanh(c'): c' is reached directly (dOut, the next step) and through h'.
        const dct = dOut[oo + H + j] + dc[j] + dht * o * (1 - tc * tc);
        // c' = f ⊙ c + i ⊙ g;  i, f, o = σ(a), g = tanh(a)
        da[j] = dct * g * i * (1 - i);
        da[H + j] = dct * sp[so + H + j] * f * (1 - f);
        da[2 * H + j] = dct * i * (1 - g * g);
        da[3 * H + j] = dht * tc * o * (1 - o);
        dcPrev[j] = dct * f;
        // h_{t−1} reaches the loss only through the gates; their paths are added below.
        dhPrev[j] = 0;
      }
      const xo = row * I;
      // The gates add both projections before any nonlinearity: one gradient serves both.
      accumulatePosition(acc, w, da, da, x, xo, sp, so, dxRow, dhPrev);
      dx.set(dxRow, xo);
      let swap = dh;
      dh = dhPrev;
      dhPrev = swap;
      swap = dc;
      dc = dcPrev;
      dcPrev = swap;
    }
    ds0.set(dh, b * 2 * H);
    ds0.set(dc, b * 2 * H + H);
  }
  return {
    dx,
    ds0,
    dWIh: toDtype(acc.dWIh, dtype),
    dWHh: toDtype(acc.dWHh, dtype),
    dBIh: toDtype(acc.dBIh, dtype),
    dBHh: toDtype(acc.dBHh, dtype),
  };
}
