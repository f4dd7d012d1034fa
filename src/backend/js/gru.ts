/**
 * One GRU layer over a whole sequence and its hand-written backward through time, in plain TypeScript:
 * the reference the native kernel (crates/arflow-core/src/gru/kernel.rs) is tested against.
 *
 * PyTorch `nn.GRU` semantics, gate order (r, z, n):
 *   r  = σ(W_ir x + b_ir + W_hr h + b_hr)
 *   z  = σ(W_iz x + b_iz + W_hz h + b_hz)
 *   n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
 *   h' = (1 − z) ⊙ n + z ⊙ h
 * Layout is batch-first and row-major: `x [B, T, I]`, `out [B, T, H]`, so row `b·T + t` of a `[B·T, ·]`
 * matrix is batch element b at time t. Weights are PyTorch's: `wIh [3H, I]`, `wHh [3H, H]`,
 * `bIh [3H]`, `bHh [3H]`.
 *
 * Results are stored in the requested dtype (as the native kernel stores them); every sum and gate is
 * computed in doubles, which only makes the f32 reference more accurate than the kernel it checks.
 */
import { accumulatePosition, checkLayerInputs, checkLength, sigmoid, weightGrads } from './recurrent.js';

export type FloatArray = Float32Array | Float64Array;
export type Dtype = 'f32' | 'f64';
export type ArrayOf<D extends Dtype> = D extends 'f64' ? Float64Array : Float32Array;

export interface GruDims {
  batch: number;
  seq: number;
  input: number;
  hidden: number;
}

export interface GruWeights {
  wIh: FloatArray;
  wHh: FloatArray;
  bIh: FloatArray;
  bHh: FloatArray;
}

export interface GruForwardOptions {
  /** Storage type of `out` and `saved`; defaults to that of `x`. */
  dtype?: Dtype;
  /** Keep the activations `gruBackward` needs. */
  save?: boolean;
}

export interface GruForward {
  /** `[B, T, H]` */
  out: FloatArray;
  /** `[B·T, 4H]` of (r, z, n, W_hn h + b_hn) per row, or null unless `save` was asked for. */
  saved: FloatArray | null;
}

/** Gradients of a scalar loss, given dL/d(out). Stored in the dtype of `x`. */
export interface GruGrads {
  dx: FloatArray;
  dh0: FloatArray;
  dWIh: FloatArray;
  dWHh: FloatArray;
  dBIh: FloatArray;
  dBHh: FloatArray;
}

export function alloc<D extends Dtype>(dtype: D, n: number): ArrayOf<D> {
  return (dtype === 'f64' ? new Float64Array(n) : new Float32Array(n)) as ArrayOf<D>;
}

export function dtypeOf(a: FloatArray): Dtype {
  return a instanceof Float64Array ? 'f64' : 'f32';
}

/** `acc` itself when it already has the requested dtype, else a rounded copy. */
export function toDtype<D extends Dtype>(acc: Float64Array, dtype: D): ArrayOf<D> {
  return (dtype === 'f64' ? acc : Float32Array.from(acc)) as ArrayOf<D>;
}

/**
 * init + Σ a[ao + i] · b[bo + i] over i < n. Four partial sums break the chain of dependent additions
 * that otherwise bounds a dot product in V8 by the latency of one add (about 1.5× on the forward pass).
 */
export function dot(init: number, a: FloatArray, ao: number, b: FloatArray, bo: number, n: number): number {
  let s0 = init;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    s0 += a[ao + i] * b[bo + i];
    s1 += a[ao + i + 1] * b[bo + i + 1];
    s2 += a[ao + i + 2] * b[bo + i + 2];
    s3 += a[ao + i + 3] * b[bo + i + 3];
  }
  for (; i < n; i++) s0 += a[ao + i] * b[bo + i];
  return s0 + s1 + (s2 + s3);
}

/** Runs the layer over the whole sequence from the initial state `h0 [B, H]`. */
export function gruForward(
  dims: GruDims,
  x: FloatArray,
  h0: FloatArray,
  w: GruWeights,
  opts: GruForwardOptions = {},
): GruForward {
  checkLayerInputs('gruForward', dims, x, h0, w, 3, 1);
  const { batch: B, seq: T, input: I, hidden: H } = dims;
  const G = 3 * H;
  const dtype = opts.dtype ?? dtypeOf(x);
  const out = alloc(dtype, B * T * H);
  const saved = opts.save ? alloc(dtype, B * T * 4 * H) : null;
  const { wIh, wHh, bIh, bHh } = w;
  // The two projections of one row, with biases: gi = W_ih x + b_ih, gh = W_hh h + b_hh.
  const gi = new Float64Array(G);
  const gh = new Float64Array(G);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = b * T + t;
      const xo = row * I;
      // h_{t−1}: the initial state, or the previous output read back from its storage (as the kernel does).
      const hp = t === 0 ? h0 : out;
      const ho = t === 0 ? b * H : (row - 1) * H;
      for (let k = 0; k < G; k++) {
        gi[k] = dot(bIh[k], wIh, k * I, x, xo, I);
        gh[k] = dot(bHh[k], wHh, k * H, hp, ho, H);
      }
      const oo = row * H;
      const so = row * 4 * H;
      for (let j = 0; j < H; j++) {
        const r = sigmoid(gi[j] + gh[j]);
        const z = sigmoid(gi[H + j] + gh[H + j]);
        const hn = gh[2 * H + j];
        const n = Math.tanh(gi[2 * H + j] + r * hn);
        out[oo + j] = (1 - z) * n + z * hp[ho + j];
        if (saved !== null) {
          saved[so + j] = r;
          saved[so + H + j] = z;
          saved[so + 2 * H + j] = n;
          saved[so + 3 * H + j] = hn;
        }
      }
    }
  }
  return { out, saved };
}

/**
 * Backward through time. `out` and `saved` are what `gruForward` produced (with `save`), `dOut` is
 * dL/d(out) `[B, T, H]`, including whatever reaches the final state.
 */
export function gruBackward(
  dims: GruDims,
  x: FloatArray,
  h0: FloatArray,
  w: GruWeights,
  out: FloatArray,
  saved: FloatArray,
  dOut: FloatArray,
): GruGrads {
  checkLayerInputs('gruBackward', dims, x, h0, w, 3, 1);
  const { batch: B, seq: T, input: I, hidden: H } = dims;
  const G = 3 * H;
  const shape = `[B ${B}, T ${T}, H ${H}]`;
  checkLength('gruBackward: out', out, B * T * H, shape);
  checkLength('gruBackward: dOut', dOut, B * T * H, shape);
  checkLength('gruBackward: saved', saved, B * T * 4 * H, `[B·T ${B * T}, 4H ${4 * H}]`);
  const dtype = dtypeOf(x);
  const dx = alloc(dtype, B * T * I);
  const dh0 = alloc(dtype, B * H);
  const acc = weightGrads(G, I, H);
  // Gate gradients of one row w.r.t. the input projection (da_r, da_z, da_n) and the hidden one
  // (da_r, da_z, r ⊙ da_n): the only place they differ is that r multiplies W_hn h + b_hn.
  const dgi = new Float64Array(G);
  const dgh = new Float64Array(G);
  // dh: dL/dh_t through everything after t; dhPrev becomes dL/dh_{t−1}.
  let dh = new Float64Array(H);
  let dhPrev = new Float64Array(H);
  const dxRow = new Float64Array(I);
  for (let b = 0; b < B; b++) {
    dh.fill(0);
    for (let t = T - 1; t >= 0; t--) {
      const row = b * T + t;
      const so = row * 4 * H;
      const oo = row * H;
      const hp = t === 0 ? h0 : out;
      const ho = t === 0 ? b * H : (row - 1) * H;
      for (let j = 0; j < H; j++) {
        const r = saved[so + j];
        const z = saved[so + H + j];
        const n = saved[so + 2 * H + j];
        const hn = saved[so + 3 * H + j];
        const dht = dOut[oo + j] + dh[j];
        // h' = (1 − z) n + z h
        const dn = dht * (1 - z);
        const dz = dht * (hp[ho + j] - n);
        // n = tanh(a_n), a_n = gi_n + r ⊙ hn;  r = σ(a_r), z = σ(a_z)
        const daN = dn * (1 - n * n);
        const daR = daN * hn * r * (1 - r);
        const daZ = dz * z * (1 - z);
        dgi[j] = daR;
        dgi[H + j] = daZ;
        dgi[2 * H + j] = daN;
        dgh[j] = daR;
        dgh[H + j] = daZ;
        dgh[2 * H + j] = daN * r;
        // The direct path h' ← z ⊙ h; the paths through the gates are added below.
        dhPrev[j] = dht * z;
      }
      const xo = row * I;
      accumulatePosition(acc, w, dgi, dgh, x, xo, hp, ho, dxRow, dhPrev);
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
