/**
 * The vanishing/exploding-gradient diagnostic (Bengio, Simard & Frasconi 1994; Pascanu, Mikolov &
 * Bengio 2013): how much the loss at the last step of a sequence, L_T, depends on the hidden state t
 * steps earlier, as the norm ‖∂L_T/∂h_t‖ against the distance T − t.
 *
 * For the top recurrent layer of a character model, on `batch` windows of `length` characters:
 * ∂L_T/∂s_t (s the layer's state: h, and c for the LSTM) is the gradient of L_T with respect to the
 * initial state of the same layer run over steps t+1 … T from s_t, which one fused forward + backward
 * call of the layer gives exactly (the layers below are inputs and stay fixed). The reported norm is
 * that of the h part, averaged over the windows. A curve that falls by orders of magnitude with the
 * distance is a vanishing gradient; one that grows is an exploding one.
 */
import { cellBackward, cellForward, cellParamNames } from '../backend/js/cells.js';
import { loadNative } from '../backend/native.js';
import { type CellKind, stateWidth } from '../backend/types.js';
import { ConfigError } from '../errors.js';
import type { CharLM } from './char-lm.js';

/** What {@link gradReport} measures: the gradient norm of the last step's loss by distance back in time. */
export interface GradReport {
  cell: CellKind;
  /** T − t for t = T … 1: 0 is the last state itself. */
  distance: number[];
  /** Mean over windows of ‖∂L_T/∂h_t‖ at each distance. */
  norm: number[];
  /** Mean cross-entropy L_T (nats) of the last character of the windows. */
  loss: number;
}

interface LayerCall {
  out: Float32Array;
  dh0: Float32Array;
  dx: Float32Array;
}

/** Window length and count of {@link gradReport}. */
export interface GradReportOptions {
  /** Characters per window (T). Default 100. */
  length?: number;
  /** Windows, taken evenly across `ids`. Default 8. */
  batch?: number;
}

/** Measures ‖∂L_T/∂h_t‖ against the distance T − t on windows of `ids`: how far back the model's gradients reach. */
export function gradReport(model: CharLM, ids: Uint32Array, opts: GradReportOptions = {}): GradReport {
  const T = opts.length ?? 100;
  const B = opts.batch ?? 8;
  if (!Number.isInteger(T) || T < 2) throw new ConfigError(`grad report: length must be a whole number ≥ 2, got ${T}`);
  if (!Number.isInteger(B) || B < 1) throw new ConfigError(`grad report: batch must be a whole number ≥ 1, got ${B}`);
  if (ids.length < T + 1) throw new ConfigError(`grad report: needs at least ${T + 1} characters, got ${ids.length}`);
  const { cell, embed: E, hidden: H, layers: L } = model.config;
  const S = stateWidth(cell) * H;
  const V = model.vocab.size;
  const b = model.backend;
  const native = b.kind === 'native' ? loadNative() : null;
  // Each layer's weights, read from the backend once (the report calls the top layer T times).
  const weights = Array.from({ length: L }, (_, l) => {
    const n = cellParamNames(cell, l);
    return { wIh: b.getParam(n.wIh), wHh: b.getParam(n.wHh), bIh: b.getParam(n.bIh), bHh: b.getParam(n.bHh) };
  });
  const packed = weights.map(({ wIh, wHh, bIh, bHh }) => {
    const out = new Float32Array(wIh.length + wHh.length + bIh.length + bHh.length);
    out.set(wIh, 0);
    out.set(wHh, wIh.length);
    out.set(bIh, wIh.length + wHh.length);
    out.set(bHh, wIh.length + wHh.length + bIh.length);
    return out;
  });
  // One layer forward + backward on raw arrays: the native kernel, or the reference for the js backend.
  const layer = (
    l: number,
    batch: number,
    seq: number,
    x: Float32Array,
    s0: Float32Array,
    dOut: Float32Array,
  ): LayerCall => {
    const dims = { batch, seq, input: l === 0 ? E : H, hidden: H };
    if (native) return native.rnnLayerGrads({ cell, ...dims }, x, s0, packed[l], dOut);
    const w = weights[l];
    const f = cellForward(cell, dims, x, s0, w, { dtype: 'f32', save: true });
    const g = cellBackward(cell, dims, x, s0, w, f.out, f.saved, dOut);
    return { out: f.out as Float32Array, dh0: g.ds0 as Float32Array, dx: g.dx as Float32Array };
  };

  // Windows of T inputs and the character after the last, spread evenly across the text.
  const stride = Math.max(1, Math.floor((ids.length - T - 1) / Math.max(1, B - 1)));
  const starts = Array.from({ length: B }, (_, i) => Math.min(i * stride, ids.length - T - 1));
  const emb = b.getParam('embedding.weight');
  let x: Float32Array = new Float32Array(B * T * E);
  starts.forEach((s, r) => {
    for (let t = 0; t < T; t++) x.set(emb.subarray(ids[s + t] * E, (ids[s + t] + 1) * E), (r * T + t) * E);
  });
  // Every layer from its initial state (zeros, or the learned h0); the top layer's input is what the
  // layers below it produce.
  const h0 = b.paramInfo().some((p) => p.name === 'h0') ? b.getParam('h0') : null;
  const init = (l: number) => {
    const s = new Float32Array(B * S);
    if (h0) for (let r = 0; r < B; r++) s.set(h0.subarray(l * S, (l + 1) * S), r * S);
    return s;
  };
  let states: Float32Array = new Float32Array(0);
  for (let l = 0; l < L; l++) {
    states = layer(l, B, T, x, init(l), new Float32Array(B * T * S)).out;
    if (l < L - 1) {
      const h = new Float32Array(B * T * H);
      for (let r = 0; r < B * T; r++) h.set(states.subarray(r * S, r * S + H), r * H);
      x = h;
    }
  }
  const top = L - 1;
  const In = top === 0 ? E : H;
  // L_T: mean cross-entropy of the character after each window, given the top layer's last h.
  const hw = b.getParam('head.weight');
  const hb = b.getParam('head.bias');
  const dLast = new Float32Array(B * S);
  let loss = 0;
  for (let r = 0; r < B; r++) {
    const h = states.subarray((r * T + T - 1) * S, (r * T + T - 1) * S + H);
    const logits = new Float64Array(V);
    let max = -Infinity;
    for (let v = 0; v < V; v++) {
      let s = hb[v];
      for (let j = 0; j < H; j++) s += hw[v * H + j] * h[j];
      logits[v] = s;
      max = Math.max(max, s);
    }
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[v] - max);
    const y = ids[starts[r] + T];
    loss += (max + Math.log(z) - logits[y]) / B;
    for (let v = 0; v < V; v++) {
      const d = (Math.exp(logits[v] - max) / z - (v === y ? 1 : 0)) / B;
      for (let j = 0; j < H; j++) dLast[r * S + j] += d * hw[v * H + j];
    }
  }
  const norm: number[] = [];
  const distance: number[] = [];
  const hNorm = (d: Float32Array) => {
    let sum = 0;
    for (let r = 0; r < B; r++) {
      let s = 0;
      for (let j = 0; j < H; j++) s += d[r * S + j] ** 2;
      sum += Math.sqrt(s);
    }
    return sum / B;
  };
  distance.push(0);
  norm.push(hNorm(dLast));
  // ∂L_T/∂s_t: the layer run from s_t over inputs t+1 … T−1 (0-based), the gradient reaching its last state.
  for (let t = T - 2; t >= 0; t--) {
    const seq = T - 1 - t;
    const xs = new Float32Array(B * seq * In);
    const s0 = new Float32Array(B * S);
    const dOut = new Float32Array(B * seq * S);
    for (let r = 0; r < B; r++) {
      xs.set(x.subarray((r * T + t + 1) * In, (r * T + T) * In), r * seq * In);
      s0.set(states.subarray((r * T + t) * S, (r * T + t + 1) * S), r * S);
      dOut.set(dLast.subarray(r * S, (r + 1) * S), (r * seq + seq - 1) * S);
    }
    distance.push(seq);
    norm.push(hNorm(layer(top, B, seq, xs, s0, dOut).dh0));
  }
  return { cell, distance, norm, loss };
}
