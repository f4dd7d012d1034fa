/**
 * The gradient of the FlowNet reference (`flownet.ts`), in float64, for the layers the TypeScript
 * backend trains: couplings with MLP conditioners (affine or additive, any mask, with or without a
 * context), `scale` and `reverse`, over a normal or logistic base. That covers the vector Real NVP and
 * NICE presets; a spec with any other layer is refused by {@link checkTrainable}.
 *
 * The loss is the mean NLL of the batch, L = −(1/N) Σ_n (log p_Z(z_n) + Σ_layers logdet_n). The forward
 * pass keeps each layer's input and its conditioner's activations; the backward pass walks the layers
 * in reverse with dL/dy and dL/dlogdet (= −1/N per example):
 *
 * - affine coupling: the fused kernel of `coupling.ts` (`couplingForward` / `couplingBackward`, with
 *   the per-channel `scale` spread over each channel's values and `dscale` summed back), then the MLP's
 *   backward on [dsRaw | dt]; the gradient reaching the masked input is added to dx where b = 1;
 * - additive coupling: y = x + (1−b)⊙t, so dx = dy (plus the conditioner's share) and dt = (1−b)⊙dy;
 * - scale: y = x⊙exp(log_scale), dx = dy⊙exp(log_scale), d log_scale = Σ_n dy⊙y + dlogdet_n;
 * - reverse: the same permutation of dy.
 *
 * Every value is computed in doubles, so central differences of {@link JsFlowNet.logProb} check it.
 */
import { ConfigError } from '../../errors.js';
import type { FlowNetSpec, LayerSpec } from '../flownet-types.js';
import { couplingBackward, couplingForward } from './coupling.js';
import {
  baseLogProb,
  checkBatch,
  concatRows,
  couplingMask,
  type JsFlowNet,
  type Linear,
  linear,
  mlpDims,
  type Resolved,
  relu,
  toF64,
} from './flownet.js';

/**
 * Throws a ConfigError naming the first layer the TypeScript backend has no gradient for (and saying
 * what it trains), before anything is allocated.
 */
export function checkTrainable(spec: FlowNetSpec): void {
  spec.layers.forEach((l: LayerSpec, k) => {
    const ok = l.type === 'scale' || l.type === 'reverse' || (l.type === 'coupling' && l.net?.type === 'mlp');
    if (!ok) {
      const what = l.type === 'coupling' ? `coupling with a ${l.net?.type} conditioner` : l.type;
      throw new ConfigError(
        `the TypeScript flow backend trains couplings with MLP conditioners, scale and reverse layers only, not layer ${k} (${what}): use the native backend`,
      );
    }
  });
}

/** What the backward pass of one layer needs from the forward pass. */
type Tape =
  | {
      type: 'coupling';
      /** The layer's input `[N, D]`. */
      x: Float64Array;
      /** 1 where the value passes through, `[D]`. */
      b: Uint8Array;
      /** The conditioner's linears and their inputs: acts[0] = [x⊙b | ctx], acts[j] = ReLU output of linear j − 1. */
      net: Linear[];
      acts: Float64Array[];
      /** Affine only: `[N, D]` raw log-scales and translations, and `scale` spread to `[D]`. */
      sRaw?: Float64Array;
      t?: Float64Array;
      scale?: Float64Array;
    }
  | { type: 'scale'; y: Float64Array }
  | { type: 'reverse' };

type Grads = Record<string, Float64Array>;

/** Indices of the values of one `[C, H, W]` example with its channels reversed: y[d] = x[idx[d]]. */
function reversedChannels([C, H, W]: Resolved['input']): Int32Array {
  const HW = H * W;
  const idx = new Int32Array(C * HW);
  for (let c = 0; c < C; c++) for (let i = 0; i < HW; i++) idx[c * HW + i] = (C - 1 - c) * HW + i;
  return idx;
}

function permuteRows(a: Float64Array, idx: Int32Array, N: number): Float64Array {
  const D = idx.length;
  const out = new Float64Array(a.length);
  for (let n = 0; n < N; n++) for (let d = 0; d < D; d++) out[n * D + d] = a[n * D + idx[d]];
  return out;
}

/** The conditioner's linears of layer k, reading the net's stored weights. */
function mlpOf(net: JsFlowNet, layer: Resolved, input: number, output: number): Linear[] {
  const l = layer.spec as Extract<LayerSpec, { type: 'coupling' }>;
  if (l.net.type !== 'mlp') throw new Error('unreachable: checkTrainable admits MLP conditioners only');
  const { hidden, depth } = l.net;
  return Array.from({ length: depth + 1 }, (_, j) => {
    const [nIn, nOut] = mlpDims(input, hidden, depth, output, j);
    const at = `layers.${layer.k}.net.${j}`;
    return { w: net.tensorView(`${at}.weight`), b: net.tensorView(`${at}.bias`), nIn, nOut };
  });
}

/**
 * Backward of the MLP: accumulates dW and db of every linear into `grads` (under `prefix`.{j}) and
 * returns dL/d(input).
 */
function mlpBackward(
  layers: Linear[],
  acts: Float64Array[],
  dout: Float64Array,
  N: number,
  grads: Grads,
  prefix: string,
): Float64Array {
  let g = dout;
  for (let j = layers.length - 1; j >= 0; j--) {
    const { w, nIn, nOut } = layers[j];
    const gW = grads[`${prefix}.${j}.weight`];
    const gb = grads[`${prefix}.${j}.bias`];
    const inp = acts[j];
    const din = new Float64Array(N * nIn);
    for (let n = 0; n < N; n++) {
      const io = n * nIn;
      for (let o = 0; o < nOut; o++) {
        const v = g[n * nOut + o];
        if (v === 0) continue;
        gb[o] += v;
        const wo = o * nIn;
        for (let i = 0; i < nIn; i++) {
          gW[wo + i] += v * inp[io + i];
          din[io + i] += v * w[wo + i];
        }
      }
    }
    // Through the ReLU whose output was this linear's input.
    if (j > 0) for (let q = 0; q < din.length; q++) if (inp[q] <= 0) din[q] = 0;
    g = din;
  }
  return g;
}

/**
 * Mean NLL (nats per example) of `x [batch, D]` (with its context `[batch, K]` for a conditional flow)
 * and its gradient for every parameter, from the net's stored values. ConfigError for a spec with a
 * layer {@link checkTrainable} refuses; ShapeError / DataError for bad inputs, as the net's `forward`.
 */
export function flowNetLossAndGrads(
  net: JsFlowNet,
  x: ArrayLike<number>,
  batch: number,
  ctx?: ArrayLike<number>,
): { loss: number; grads: Record<string, Float64Array> } {
  checkTrainable(net.spec);
  const N = checkBatch('lossAndGrads', batch);
  if (N < 1) throw new ConfigError('lossAndGrads: batch must be ≥ 1');
  const D = net.dim;
  const K = net.spec.context;
  const c = net.context('lossAndGrads', ctx, N);
  let h = toF64('lossAndGrads', 'x', x, N * D, `[batch ${N}, D ${D}]`);
  const logdet = new Float64Array(N);
  const tapes: Tape[] = [];
  for (const layer of net.layers) {
    const l = layer.spec;
    const at = `layers.${layer.k}`;
    if (l.type === 'reverse') {
      tapes.push({ type: 'reverse' });
      h = permuteRows(h, reversedChannels(layer.input), N);
    } else if (l.type === 'scale') {
      const ls = net.tensorView(`${at}.log_scale`);
      const y = new Float64Array(h.length);
      for (let n = 0; n < N; n++) for (let d = 0; d < D; d++) y[n * D + d] = h[n * D + d] * Math.exp(ls[d]);
      let sum = 0;
      for (let d = 0; d < D; d++) sum += ls[d];
      for (let n = 0; n < N; n++) logdet[n] += sum;
      tapes.push({ type: 'scale', y });
      h = y;
    } else if (l.type === 'coupling') {
      const mask = l.mask === 'random' ? net.tensorView(`${at}.mask`) : null;
      const b = couplingMask(l.mask, l.parity, layer.input, mask);
      const xm = new Float64Array(h.length);
      for (let n = 0; n < N; n++) for (let d = 0; d < D; d++) if (b[d] === 1) xm[n * D + d] = h[n * D + d];
      const per = l.affine ? 2 : 1;
      const mlp = mlpOf(net, layer, D + K, per * D);
      const acts = [concatRows([xm, c], [D, K], N)];
      let a = acts[0];
      mlp.forEach((lin, j) => {
        a = linear(a, N, lin);
        if (j < mlp.length - 1) {
          a = relu(a);
          acts.push(a);
        }
      });
      if (l.affine) {
        const [, H, W] = layer.input;
        const perChannel = net.tensorView(`${at}.scale`);
        const scale = Float64Array.from({ length: D }, (_, d) => perChannel[Math.floor(d / (H * W))]);
        const sRaw = new Float64Array(N * D);
        const t = new Float64Array(N * D);
        for (let n = 0; n < N; n++) {
          sRaw.set(a.subarray(n * 2 * D, n * 2 * D + D), n * D);
          t.set(a.subarray(n * 2 * D + D, (n + 1) * 2 * D), n * D);
        }
        const r = couplingForward({ batch: N, dim: D }, h, { mask: Float64Array.from(b), sRaw, t, scale });
        for (let n = 0; n < N; n++) logdet[n] += r.logdet[n];
        tapes.push({ type: 'coupling', x: h, b, net: mlp, acts, sRaw, t, scale });
        h = r.y as Float64Array;
      } else {
        const y = new Float64Array(h.length);
        for (let n = 0; n < N; n++)
          for (let d = 0; d < D; d++) y[n * D + d] = h[n * D + d] + (b[d] === 1 ? 0 : a[n * D + d]);
        tapes.push({ type: 'coupling', x: h, b, net: mlp, acts });
        h = y;
      }
    } else {
      throw new Error(`unreachable: checkTrainable refuses a ${l.type} layer`);
    }
  }
  const lp = baseLogProb(net.spec.base, h, N, D);
  let loss = 0;
  for (let n = 0; n < N; n++) loss -= (lp[n] + logdet[n]) / N;

  const grads: Grads = {};
  for (const p of net.paramInfo()) grads[p.name] = new Float64Array(p.shape.reduce((u, v) => u * v, 1));
  // dL/dz of −(1/N)·log p_Z(z): z/N (normal), tanh(z/2)/N (logistic: d/dz of softplus(z) + softplus(−z)).
  let dy: Float64Array = h.map((z) => (net.spec.base === 'normal' ? z : Math.tanh(z / 2)) / N);
  const dlogdet = new Float64Array(N).fill(-1 / N);
  for (let i = net.layers.length - 1; i >= 0; i--) {
    const layer = net.layers[i];
    const tape = tapes[i];
    const at = `layers.${layer.k}`;
    if (tape.type === 'reverse') {
      // The reversal is its own inverse: dx[idx[d]] = dy[d] is dx = reversed dy.
      dy = permuteRows(dy, reversedChannels(layer.input), N);
    } else if (tape.type === 'scale') {
      const ls = net.tensorView(`${at}.log_scale`);
      const g = grads[`${at}.log_scale`];
      const dx = new Float64Array(dy.length);
      for (let n = 0; n < N; n++) {
        for (let d = 0; d < D; d++) {
          const q = n * D + d;
          g[d] += dy[q] * tape.y[q] + dlogdet[n];
          dx[q] = dy[q] * Math.exp(ls[d]);
        }
      }
      dy = dx;
    } else {
      const { x: xin, b, net: mlp, acts } = tape;
      let dx: Float64Array;
      let dout: Float64Array;
      if (tape.sRaw && tape.t && tape.scale) {
        const params = { mask: Float64Array.from(b), sRaw: tape.sRaw, t: tape.t, scale: tape.scale };
        const g = couplingBackward({ batch: N, dim: D }, xin, params, dy, dlogdet);
        dx = g.dx as Float64Array;
        dout = concatRows([g.dsRaw as Float64Array, g.dt as Float64Array], [D, D], N);
        const [, H, W] = layer.input;
        const gs = grads[`${at}.scale`];
        for (let d = 0; d < D; d++) gs[Math.floor(d / (H * W))] += g.dscale[d];
      } else {
        dx = dy.slice();
        dout = dy.map((v, q) => (b[q % D] === 1 ? 0 : v));
      }
      const dinp = mlpBackward(mlp, acts, dout, N, grads, `${at}.net`);
      for (let n = 0; n < N; n++) {
        for (let d = 0; d < D; d++) if (b[d] === 1) dx[n * D + d] += dinp[n * (D + K) + d];
      }
      dy = dx;
    }
  }
  return { loss, grads };
}
