/**
 * The general flow network ("FlowNet") in plain TypeScript and float64: the test oracle of the native
 * implementation. `../flownet-types.ts` is the contract (layer semantics, names, shapes and canonical
 * order of parameters and buffers, masks, MADE degrees, base distributions); this file follows it
 * literally, clarity over speed: plain loops over Float64Array.
 *
 * Only evaluation lives here: `forward` (data → latent; `train: true` switches batchnorm layers and the
 * batch normalisation of norm = 'batch' resnet conditioners to the batch statistics), `inverse` and
 * `logProb`. Nothing here changes a buffer: no actnorm initialisation and no
 * running-statistics update, which belong to a training step. The gradient of the layers the
 * TypeScript backend trains is `flownet-grad.ts`; that backend is `flownet-backend.ts`.
 *
 * Per example, the latent `z` is every split's factored-out part (in layer order) followed by the
 * final output, each flattened `[C, H, W]`, so it always holds `D = C·H·W` values.
 */
import { ConfigError, DataError, ShapeError } from '../../errors.js';
import type { FlowNetSpec, LayerSpec, MaskKind, NetSpec, TensorInfo } from '../flownet-types.js';
import { describeValue, MAX_TENSORS } from '../limits.js';

/** `[C, H, W]` of one example at some point of the flow. */
export type Chw = [number, number, number];

/** A layer of the spec with the shapes around it. */
export interface Resolved {
  k: number;
  spec: LayerSpec;
  /** Shape of the layer's input. */
  input: Chw;
  /** Shape of what continues through the flow (differs from `input` only for squeeze and split). */
  output: Chw;
}

interface Plan {
  layers: Resolved[];
  params: TensorInfo[];
  buffers: TensorInfo[];
}

const LAYER_FIELDS: Record<LayerSpec['type'], readonly string[]> = {
  coupling: ['mask', 'parity', 'affine', 'net'],
  actnorm: [],
  batchnorm: ['momentum', 'eps'],
  inv1x1: [],
  scale: [],
  reverse: [],
  squeeze: [],
  split: [],
  made: ['kind', 'hidden', 'depth', 'order'],
};
const LAYER_TYPES = Object.keys(LAYER_FIELDS) as LayerSpec['type'][];
const MASKS: readonly MaskKind[] = ['checkerboard', 'channel', 'alternate', 'halves', 'random'];
const LOG_2PI = Math.log(2 * Math.PI);

// ---------------------------------------------------------------------------------------------------
// Spec validation and tensor layout

function bad(where: string, what: string): never {
  throw new ConfigError(`flownet spec: ${where}: ${what}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkFields(where: string, obj: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) bad(where, `unknown field '${key}' (allowed: ${allowed.join(', ')})`);
  }
}

function intAtLeast(where: string, name: string, v: unknown, least: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < least) {
    bad(where, `${name} must be an integer ≥ ${least}, got ${describeValue(v)}`);
  }
  return v;
}

function oneOf<T extends string>(where: string, name: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !allowed.includes(v as T)) {
    bad(where, `${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}

const fmt = (s: Chw) => `[${s.join(', ')}]`;

function tensor(k: number, name: string, shape: number[]): TensorInfo {
  return { name: `layers.${k}.${name}`, shape };
}

/** Input and output widths of linear j of an MLP with `depth` hidden layers. */
export function mlpDims(input: number, hidden: number, depth: number, output: number, j: number): [number, number] {
  return [j === 0 ? input : hidden, j === depth ? output : hidden];
}

function mlpTensors(k: number, input: number, hidden: number, depth: number, output: number): TensorInfo[] {
  const out: TensorInfo[] = [];
  for (let j = 0; j <= depth; j++) {
    const [i, o] = mlpDims(input, hidden, depth, output, j);
    out.push(tensor(k, `net.${j}.weight`, [o, i]), tensor(k, `net.${j}.bias`, [o]));
  }
  return out;
}

/** Names of the convolutions of a resnet conditioner, in canonical order (conv_out excluded). */
function resnetConvs(blocks: number): string[] {
  const names = ['in'];
  for (let b = 0; b < blocks; b++) names.push(`blocks.${b}.conv1`, `blocks.${b}.conv2`);
  return names;
}

/**
 * Validates a conditioner spec and lists its parameters and buffers (`input`/`output`: values for an
 * MLP, channels for a resnet). Only a norm = 'batch' resnet has buffers: each normalised conv's
 * `bn.running_mean` and `bn.running_var`, conv by conv.
 */
function netTensors(
  where: string,
  k: number,
  net: unknown,
  input: number,
  output: number,
): { params: TensorInfo[]; buffers: TensorInfo[] } {
  if (!isRecord(net)) bad(where, 'net must be an object with a type');
  const type = oneOf(where, 'net.type', net.type, ['mlp', 'resnet'] as const);
  if (type === 'mlp') {
    checkFields(`${where} net`, net, ['type', 'hidden', 'depth']);
    const hidden = intAtLeast(where, 'net.hidden', net.hidden, 1);
    const depth = intAtLeast(where, 'net.depth', net.depth, 1);
    checkTensorCount(where, 'net.depth', depth, 2 * (depth + 1));
    return { params: mlpTensors(k, input, hidden, depth, output), buffers: [] };
  }
  checkFields(`${where} net`, net, ['type', 'channels', 'blocks', 'norm']);
  const f = intAtLeast(where, 'net.channels', net.channels, 1);
  const blocks = intAtLeast(where, 'net.blocks', net.blocks, 0);
  const norm = oneOf(where, 'net.norm', net.norm, ['weight', 'none', 'batch'] as const);
  checkTensorCount(where, 'net.blocks', blocks, (1 + 2 * blocks) * 4 + 2);
  const params: TensorInfo[] = [];
  const buffers: TensorInfo[] = [];
  for (const name of resnetConvs(blocks)) {
    const cin = name === 'in' ? input : f;
    if (norm === 'weight') {
      params.push(tensor(k, `net.${name}.weight_v`, [f, cin, 3, 3]), tensor(k, `net.${name}.weight_g`, [f, 1, 1, 1]));
    } else {
      params.push(tensor(k, `net.${name}.weight`, [f, cin, 3, 3]));
    }
    params.push(tensor(k, `net.${name}.bias`, [f]));
    if (norm === 'batch') {
      params.push(tensor(k, `net.${name}.bn.weight`, [f]), tensor(k, `net.${name}.bn.bias`, [f]));
      buffers.push(tensor(k, `net.${name}.bn.running_mean`, [f]), tensor(k, `net.${name}.bn.running_var`, [f]));
    }
  }
  params.push(tensor(k, 'net.out.weight', [output, f, 3, 3]), tensor(k, 'net.out.bias', [output]));
  return { params, buffers };
}

/** A size field whose value would list more than {@link MAX_TENSORS} tensors is an error. */
function checkTensorCount(where: string, name: string, v: number, tensors: number): void {
  if (tensors > MAX_TENSORS) bad(where, `${name} ${v} gives more than ${MAX_TENSORS} tensors; make it smaller`);
}

/** Validates layer k at input shape `input`, appends its tensors and returns its output shape. */
function resolveLayer(k: number, l: unknown, input: Chw, K: number, plan: Plan): Chw {
  if (!isRecord(l)) bad(`layer ${k}`, 'must be an object with a type');
  const type = oneOf(`layer ${k}`, 'type', l.type, LAYER_TYPES);
  const where = `layer ${k} (${type})`;
  checkFields(where, l, ['type', ...LAYER_FIELDS[type]]);
  const [C, H, W] = input;
  const D = C * H * W;
  const { params, buffers } = plan;
  switch (type) {
    case 'coupling': {
      const mask = oneOf(where, 'mask', l.mask, MASKS);
      if (l.parity !== 0 && l.parity !== 1) bad(where, `parity must be 0 or 1, got ${JSON.stringify(l.parity)}`);
      if (typeof l.affine !== 'boolean') bad(where, `affine must be true or false, got ${JSON.stringify(l.affine)}`);
      if (mask === 'channel' && C % 2 !== 0) {
        bad(where, `a channel mask needs an even channel count, got C = ${C} (shape ${fmt(input)} at this layer)`);
      }
      if (mask === 'checkerboard' && H * W < 2) {
        bad(where, `a checkerboard mask needs at least 2 pixels, got ${H}×${W} (shape ${fmt(input)})`);
      }
      if ((mask === 'alternate' || mask === 'halves' || mask === 'random') && D < 2)
        bad(where, `an alternating, halves or random mask needs at least 2 values, got D = ${D}`);
      const per = l.affine ? 2 : 1;
      const isMlp = isRecord(l.net) && l.net.type === 'mlp';
      const net = netTensors(where, k, l.net, isMlp ? D + K : C + K, isMlp ? per * D : per * C);
      params.push(...net.params);
      if (l.affine) params.push(tensor(k, 'scale', [C]));
      // A random mask is held in a buffer: the coupling's first, before its conditioner's.
      if (mask === 'random') buffers.push(tensor(k, 'mask', [C, H, W]));
      buffers.push(...net.buffers);
      return input;
    }
    case 'actnorm':
      params.push(tensor(k, 'bias', [C]), tensor(k, 'logs', [C]));
      buffers.push(tensor(k, 'initialized', [1]));
      return input;
    case 'batchnorm': {
      const { momentum, eps } = l;
      if (typeof momentum !== 'number' || !(momentum > 0 && momentum <= 1)) {
        bad(where, `momentum must be in (0, 1], got ${String(momentum)}`);
      }
      if (typeof eps !== 'number' || !(Number.isFinite(eps) && eps > 0))
        bad(where, `eps must be > 0, got ${String(eps)}`);
      params.push(tensor(k, 'log_gamma', [C]), tensor(k, 'beta', [C]));
      buffers.push(tensor(k, 'running_mean', [C]), tensor(k, 'running_var', [C]));
      return input;
    }
    case 'inv1x1':
      params.push(tensor(k, 'lower', [C, C]), tensor(k, 'upper', [C, C]), tensor(k, 'log_s', [C]));
      buffers.push(tensor(k, 'perm', [C]), tensor(k, 'sign_s', [C]));
      return input;
    case 'scale':
      params.push(tensor(k, 'log_scale', [C, H, W]));
      return input;
    case 'reverse':
      return input;
    case 'squeeze':
      if (H % 2 !== 0 || W % 2 !== 0) {
        bad(
          where,
          `squeeze needs an even height and width, got H = ${H}, W = ${W} (shape ${fmt(input)} at this layer)`,
        );
      }
      return [4 * C, H / 2, W / 2];
    case 'split':
      if (C < 2) bad(where, `split needs at least 2 channels, got C = ${C} (shape ${fmt(input)} at this layer)`);
      return [Math.floor(C / 2), H, W];
    case 'made': {
      oneOf(where, 'kind', l.kind, ['maf', 'iaf'] as const);
      oneOf(where, 'order', l.order, ['forward', 'reverse'] as const);
      const hidden = intAtLeast(where, 'hidden', l.hidden, 1);
      const depth = intAtLeast(where, 'depth', l.depth, 1);
      checkTensorCount(where, 'depth', depth, 2 * (depth + 1));
      if (D < 2) bad(where, `a MADE layer needs at least 2 values, got D = ${D} (shape ${fmt(input)})`);
      params.push(...mlpTensors(k, D + K, hidden, depth, 2 * D), tensor(k, 'scale', [D]));
      return input;
    }
  }
}

function planOf(spec: FlowNetSpec): Plan {
  if (!isRecord(spec)) bad('spec', 'must be an object');
  checkFields('spec', spec, ['shape', 'context', 'base', 'layers']);
  const { shape } = spec;
  if (!Array.isArray(shape) || shape.length !== 3) bad('spec', `shape must be [C, H, W], got ${JSON.stringify(shape)}`);
  for (let i = 0; i < 3; i++) intAtLeast('spec', `shape[${i}]`, shape[i], 1);
  const K = intAtLeast('spec', 'context', spec.context, 0);
  oneOf('spec', 'base', spec.base, ['normal', 'logistic'] as const);
  if (!Array.isArray(spec.layers) || spec.layers.length === 0) bad('spec', 'layers must be a non-empty array');
  const plan: Plan = { layers: [], params: [], buffers: [] };
  let at: Chw = [shape[0], shape[1], shape[2]];
  spec.layers.forEach((l, k) => {
    if (plan.params.length + plan.buffers.length > MAX_TENSORS)
      bad(`layer ${k}`, `the flow has more than ${MAX_TENSORS} tensors; make it smaller`);
    const output = resolveLayer(k, l, at, K, plan);
    plan.layers.push({ k, spec: l, input: at, output });
    at = output;
  });
  return plan;
}

/**
 * Throws a ConfigError saying which field of which layer is wrong, with the shape tracked through
 * squeezes and splits (odd H or W at a squeeze, odd C under a channel mask, split with C < 2, MADE with
 * D < 2, non-integer or non-positive sizes, unknown types or fields, context < 0, unknown base).
 */
export function checkFlowNetSpec(spec: FlowNetSpec): void {
  planOf(spec);
}

/** Parameters and buffers of the flow, each in canonical order (layer by layer; see the contract). */
export function flowNetTensorInfo(spec: FlowNetSpec): { params: TensorInfo[]; buffers: TensorInfo[] } {
  const { params, buffers } = planOf(spec);
  return { params, buffers };
}

// ---------------------------------------------------------------------------------------------------
// Building blocks on Float64Array, row-major, batch first

/** `[N, a]` and `[N, b]` (…) → `[N, a + b + …]`: per-example concatenation. */
export function concatRows(parts: Float64Array[], widths: number[], N: number): Float64Array {
  const total = widths.reduce((a, b) => a + b, 0);
  const out = new Float64Array(N * total);
  for (let n = 0; n < N; n++) {
    let o = n * total;
    parts.forEach((p, i) => {
      out.set(p.subarray(n * widths[i], (n + 1) * widths[i]), o);
      o += widths[i];
    });
  }
  return out;
}

/** Inverse of {@link concatRows}. */
function splitRows(a: Float64Array, widths: number[], N: number): Float64Array[] {
  const total = widths.reduce((x, y) => x + y, 0);
  const parts = widths.map((w) => new Float64Array(N * w));
  for (let n = 0; n < N; n++) {
    let o = n * total;
    widths.forEach((w, i) => {
      parts[i].set(a.subarray(o, o + w), n * w);
      o += w;
    });
  }
  return parts;
}

export function relu(a: Float64Array): Float64Array {
  return a.map((v) => Math.max(v, 0));
}

/** A dense layer, PyTorch layout: `w [out, in]`, `b [out]`. */
export interface Linear {
  w: Float64Array;
  b: Float64Array;
  nIn: number;
  nOut: number;
}

export function linear(x: Float64Array, N: number, l: Linear): Float64Array {
  const y = new Float64Array(N * l.nOut);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < l.nOut; o++) {
      let s = l.b[o];
      for (let i = 0; i < l.nIn; i++) s += l.w[o * l.nIn + i] * x[n * l.nIn + i];
      y[n * l.nOut + o] = s;
    }
  }
  return y;
}

/** Linear → ReLU → … → Linear (no activation after the last). */
function mlp(layers: Linear[], x: Float64Array, N: number): Float64Array {
  let h = x;
  layers.forEach((l, j) => {
    h = linear(h, N, l);
    if (j < layers.length - 1) h = relu(h);
  });
  return h;
}

/** A 3×3 convolution: `w [cout, cin, 3, 3]`, `b [cout]`. */
export interface Conv {
  w: Float64Array;
  b: Float64Array;
  cin: number;
  cout: number;
}

/** Cross-correlation (PyTorch's conv2d), stride 1, zero padding 1, NCHW. */
export function conv3x3(x: Float64Array, N: number, H: number, W: number, c: Conv): Float64Array {
  const HW = H * W;
  const y = new Float64Array(N * c.cout * HW);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < c.cout; o++) {
      const yo = (n * c.cout + o) * HW;
      for (let h = 0; h < H; h++) {
        for (let w = 0; w < W; w++) {
          let s = c.b[o];
          for (let i = 0; i < c.cin; i++) {
            const xi = (n * c.cin + i) * HW;
            const wi = (o * c.cin + i) * 9;
            for (let dh = 0; dh < 3; dh++) {
              const hh = h + dh - 1;
              if (hh < 0 || hh >= H) continue;
              for (let dw = 0; dw < 3; dw++) {
                const ww = w + dw - 1;
                if (ww < 0 || ww >= W) continue;
                s += c.w[wi + dh * 3 + dw] * x[xi + hh * W + ww];
              }
            }
          }
          y[yo + h * W + w] = s;
        }
      }
    }
  }
  return y;
}

/**
 * weight = g · v / ‖v‖ with the norm over each output channel's `cin·3·3` values. An all-zero `v`
 * row gives a zero weight row (PyTorch would give NaN), so a freshly built, all-zero net is finite.
 */
function weightNorm(v: Float64Array, g: Float64Array, cout: number): Float64Array {
  const per = v.length / cout;
  const w = new Float64Array(v.length);
  for (let o = 0; o < cout; o++) {
    let sq = 0;
    for (let i = 0; i < per; i++) sq += v[o * per + i] ** 2;
    const f = sq > 0 ? g[o] / Math.sqrt(sq) : 0;
    for (let i = 0; i < per; i++) w[o * per + i] = f * v[o * per + i];
  }
  return w;
}

function softplus(v: number): number {
  return Math.max(v, 0) + Math.log1p(Math.exp(-Math.abs(v)));
}

/** log p(z) per example under the base distribution, `z [N, D]`. */
export function baseLogProb(base: FlowNetSpec['base'], z: Float64Array, N: number, D: number): Float64Array {
  const lp = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let d = 0; d < D; d++) {
      const v = z[n * D + d];
      s += base === 'normal' ? -0.5 * v * v : -(softplus(v) + softplus(-v));
    }
    lp[n] = base === 'normal' ? s - 0.5 * D * LOG_2PI : s;
  }
  return lp;
}

/**
 * The coupling mask b over `[C, H, W]`, flattened: 1 = passes through and is seen by the conditioner.
 * `random` reads the layer's 0/1 buffer `m` (b = m XOR (parity == 1)).
 */
export function couplingMask(kind: MaskKind, parity: number, [C, H, W]: Chw, m: Float64Array | null): Uint8Array {
  const b = new Uint8Array(C * H * W);
  if (kind === 'random') {
    if (!m || m.length !== b.length) throw new Error('unreachable: a random mask needs its buffer');
    for (let d = 0; d < b.length; d++) b[d] = (m[d] === 1) !== (parity === 1) ? 1 : 0;
    return b;
  }
  for (let c = 0; c < C; c++) {
    for (let h = 0; h < H; h++) {
      for (let w = 0; w < W; w++) {
        const d = (c * H + h) * W + w;
        if (kind === 'checkerboard') b[d] = (h + w + parity) % 2 === 0 ? 1 : 0;
        else if (kind === 'channel') b[d] = c < C / 2 !== (parity === 1) ? 1 : 0;
        else if (kind === 'halves') b[d] = d < (C * H * W) / 2 !== (parity === 1) ? 1 : 0;
        else b[d] = (d + parity) % 2 === 0 ? 1 : 0;
      }
    }
  }
  return b;
}

/**
 * MADE masks for an MLP from `D` values (+ `K` context inputs, connected to every first-layer unit)
 * to `[μ | α_raw]` `[2D]`: one `[out, in]` 0/1 mask per linear.
 */
function madeMasks(D: number, K: number, hidden: number, depth: number, order: 'forward' | 'reverse'): Float64Array[] {
  const mIn = Array.from({ length: D }, (_, d) => (order === 'forward' ? d + 1 : D - d));
  const mHid = Array.from({ length: hidden }, (_, j) => (j % (D - 1)) + 1);
  const masks: Float64Array[] = [];
  for (let j = 0; j <= depth; j++) {
    const [nIn, nOut] = mlpDims(D + K, hidden, depth, 2 * D, j);
    const m = new Float64Array(nOut * nIn);
    for (let o = 0; o < nOut; o++) {
      for (let i = 0; i < nIn; i++) {
        let on: boolean;
        if (j === depth) on = mIn[o % D] > mHid[i];
        else if (j === 0) on = i >= D || mHid[o] >= mIn[i];
        else on = mHid[o] >= mHid[i];
        m[o * nIn + i] = on ? 1 : 0;
      }
    }
    masks.push(m);
  }
  return masks;
}

/** `[N, C, H, W]` data and `[N, K]` context → `[N, C + K, H, W]`, the context broadcast over H×W. */
function withContextChannels(x: Float64Array, ctx: Float64Array, N: number, C: number, HW: number, K: number) {
  const out = new Float64Array(N * (C + K) * HW);
  for (let n = 0; n < N; n++) {
    out.set(x.subarray(n * C * HW, (n + 1) * C * HW), n * (C + K) * HW);
    for (let k = 0; k < K; k++) out.fill(ctx[n * K + k], (n * (C + K) + C + k) * HW, (n * (C + K) + C + k + 1) * HW);
  }
  return out;
}

/** Index map of the squeeze: y[o] = x[src[o]] for one example `[C, H, W] → [4C, H/2, W/2]`. */
function squeezeSource([C, H, W]: Chw): Int32Array {
  const [h2, w2] = [H / 2, W / 2];
  const src = new Int32Array(C * H * W);
  for (let c = 0; c < C; c++) {
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 2; j++) {
        for (let h = 0; h < h2; h++) {
          for (let w = 0; w < w2; w++) {
            src[((4 * c + 2 * i + j) * h2 + h) * w2 + w] = (c * H + 2 * h + i) * W + 2 * w + j;
          }
        }
      }
    }
  }
  return src;
}

// ---------------------------------------------------------------------------------------------------
// The network

/** What a layer sees: its tensors, its shape, the batch and the context. */
interface Env {
  /** Tensor `layers.{k}.{name}`. */
  get: (name: string) => Float64Array;
  shape: Chw;
  N: number;
  /** `[N, K]` */
  ctx: Float64Array;
  K: number;
}

type Coupling = Extract<LayerSpec, { type: 'coupling' }>;
type Made = Extract<LayerSpec, { type: 'made' }>;

function mlpLayers(env: Env, input: number, hidden: number, depth: number, output: number): Linear[] {
  return Array.from({ length: depth + 1 }, (_, j) => {
    const [nIn, nOut] = mlpDims(input, hidden, depth, output, j);
    return { w: env.get(`net.${j}.weight`), b: env.get(`net.${j}.bias`), nIn, nOut };
  });
}

type ResnetNorm = Extract<NetSpec, { type: 'resnet' }>['norm'];

/** The weight and bias of a resnet conv (`in` or `blocks.{b}.conv1|conv2`): plain, or weight-normalised. */
function resnetConv(env: Env, name: string, norm: ResnetNorm, cin: number, cout: number): Conv {
  const b = env.get(`net.${name}.bias`);
  if (norm !== 'weight') return { w: env.get(`net.${name}.weight`), b, cin, cout };
  return { w: weightNorm(env.get(`net.${name}.weight_v`), env.get(`net.${name}.weight_g`), cout), b, cin, cout };
}

/** eps of the batch normalisation in norm = 'batch' resnets (PyTorch's BatchNorm2d default). */
const RESNET_BN_EPS = 1e-5;

/**
 * A resnet conv followed, when norm = 'batch', by its batch normalisation: y = (h − μ)/√(σ² + 1e-5) ·
 * bn.weight + bn.bias per channel, with the batch's mean and biased variance over N, H, W when `train`,
 * else the running averages. The running averages are read, never updated.
 */
function resnetLayer(
  env: Env,
  name: string,
  norm: ResnetNorm,
  x: Float64Array,
  cin: number,
  cout: number,
  train: boolean,
): Float64Array {
  const [, H, W] = env.shape;
  const h = conv3x3(x, env.N, H, W, resnetConv(env, name, norm, cin, cout));
  if (norm !== 'batch') return h;
  const HW = H * W;
  const { mean, variance } = train
    ? batchStats(h, env.N, cout, HW)
    : { mean: env.get(`net.${name}.bn.running_mean`), variance: env.get(`net.${name}.bn.running_var`) };
  const gamma = env.get(`net.${name}.bn.weight`);
  const beta = env.get(`net.${name}.bn.bias`);
  return h.map((v, i) => {
    const c = Math.floor(i / HW) % cout;
    return ((v - mean[c]) / Math.sqrt(variance[c] + RESNET_BN_EPS)) * gamma[c] + beta[c];
  });
}

/**
 * The conditioner on the masked input `xm [N, D]`: `[N, per·D]` (`[s_raw | t]` or `t`). `train` only
 * matters to a norm = 'batch' resnet (batch statistics instead of the running averages).
 */
function conditioner(net: NetSpec, env: Env, xm: Float64Array, per: number, train: boolean): Float64Array {
  const { N, K, ctx } = env;
  const [C, H, W] = env.shape;
  const D = C * H * W;
  if (net.type === 'mlp') {
    return mlp(mlpLayers(env, D + K, net.hidden, net.depth, per * D), concatRows([xm, ctx], [D, K], N), N);
  }
  const F = net.channels;
  let h = resnetLayer(env, 'in', net.norm, withContextChannels(xm, ctx, N, C, H * W, K), C + K, F, train);
  for (let b = 0; b < net.blocks; b++) {
    const a = resnetLayer(env, `blocks.${b}.conv1`, net.norm, relu(h), F, F, train);
    const r = resnetLayer(env, `blocks.${b}.conv2`, net.norm, relu(a), F, F, train);
    h = h.map((v, i) => v + r[i]);
  }
  return conv3x3(relu(h), N, H, W, { w: env.get('net.out.weight'), b: env.get('net.out.bias'), cin: F, cout: per * C });
}

/** The coupling layer; `train` reaches the conditioner (the inverse always passes false: eval mode). */
function coupling(
  l: Coupling,
  env: Env,
  x: Float64Array,
  inverse: boolean,
  train: boolean,
  logdet: Float64Array,
): Float64Array {
  const { N } = env;
  const [C, H, W] = env.shape;
  const HW = H * W;
  const D = C * HW;
  const b = couplingMask(l.mask, l.parity, env.shape, l.mask === 'random' ? env.get('mask') : null);
  // Masked values pass through unchanged, so forward and inverse give the conditioner the same input.
  const xm = x.map((v, i) => (b[i % D] === 1 ? v : 0));
  const per = l.affine ? 2 : 1;
  const out = conditioner(l.net, env, xm, per, train);
  const scale = l.affine ? env.get('scale') : null;
  const y = new Float64Array(x.length);
  for (let n = 0; n < N; n++) {
    let ld = 0;
    for (let d = 0; d < D; d++) {
      const i = n * D + d;
      if (b[d] === 1) {
        y[i] = x[i];
        continue;
      }
      const t = out[n * per * D + (per - 1) * D + d];
      const s = scale ? scale[Math.floor(d / HW)] * Math.tanh(out[n * per * D + d]) : 0;
      y[i] = inverse ? (x[i] - t) * Math.exp(-s) : x[i] * Math.exp(s) + t;
      ld += s;
    }
    logdet[n] += inverse ? -ld : ld;
  }
  return y;
}

function actnorm(env: Env, x: Float64Array, inverse: boolean, logdet: Float64Array): Float64Array {
  const [C, H, W] = env.shape;
  const HW = H * W;
  const bias = env.get('bias');
  const logs = env.get('logs');
  const y = x.map((v, i) => {
    const c = Math.floor(i / HW) % C;
    return inverse ? v * Math.exp(-logs[c]) - bias[c] : (v + bias[c]) * Math.exp(logs[c]);
  });
  const ld = HW * logs.reduce((a, v) => a + v, 0);
  for (let n = 0; n < env.N; n++) logdet[n] += inverse ? -ld : ld;
  return y;
}

/** Per-channel mean and biased variance over N, H, W. */
function batchStats(x: Float64Array, N: number, C: number, HW: number): { mean: Float64Array; variance: Float64Array } {
  const mean = new Float64Array(C);
  const variance = new Float64Array(C);
  const M = N * HW;
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let n = 0; n < N; n++) for (let p = 0; p < HW; p++) s += x[(n * C + c) * HW + p];
    mean[c] = s / M;
    let q = 0;
    for (let n = 0; n < N; n++) for (let p = 0; p < HW; p++) q += (x[(n * C + c) * HW + p] - mean[c]) ** 2;
    variance[c] = q / M;
  }
  return { mean, variance };
}

function batchnorm(
  eps: number,
  env: Env,
  x: Float64Array,
  inverse: boolean,
  train: boolean,
  logdet: Float64Array,
): Float64Array {
  const [C, H, W] = env.shape;
  const HW = H * W;
  const { mean, variance } = train
    ? batchStats(x, env.N, C, HW)
    : { mean: env.get('running_mean'), variance: env.get('running_var') };
  const lg = env.get('log_gamma');
  const beta = env.get('beta');
  const y = x.map((v, i) => {
    const c = Math.floor(i / HW) % C;
    const sd = Math.sqrt(variance[c] + eps);
    return inverse ? (v - beta[c]) * Math.exp(-lg[c]) * sd + mean[c] : ((v - mean[c]) / sd) * Math.exp(lg[c]) + beta[c];
  });
  let ld = 0;
  for (let c = 0; c < C; c++) ld += lg[c] - 0.5 * Math.log(variance[c] + eps);
  for (let n = 0; n < env.N; n++) logdet[n] += inverse ? -HW * ld : HW * ld;
  return y;
}

/** The LU factors of inv1x1's W = P·L·U as dense `[C, C]` matrices, and the permutation. */
function inv1x1Factors(env: Env, C: number): { L: Float64Array; U: Float64Array; perm: number[] } {
  const lower = env.get('lower');
  const upper = env.get('upper');
  const logS = env.get('log_s');
  const sign = env.get('sign_s');
  const L = new Float64Array(C * C);
  const U = new Float64Array(C * C);
  for (let i = 0; i < C; i++) {
    for (let j = 0; j < C; j++) {
      if (j < i) L[i * C + j] = lower[i * C + j];
      if (j > i) U[i * C + j] = upper[i * C + j];
    }
    L[i * C + i] = 1;
    U[i * C + i] = sign[i] * Math.exp(logS[i]);
  }
  return { L, U, perm: Array.from(env.get('perm')) };
}

/** Dense W = P·L·U with P[i][perm[i]] = 1, i.e. row i of W is row perm[i] of L·U. */
function inv1x1Weight(L: Float64Array, U: Float64Array, perm: number[], C: number): Float64Array {
  const W = new Float64Array(C * C);
  for (let i = 0; i < C; i++) {
    const r = perm[i];
    for (let j = 0; j < C; j++) {
      let s = 0;
      for (let m = 0; m < C; m++) s += L[r * C + m] * U[m * C + j];
      W[i * C + j] = s;
    }
  }
  return W;
}

/** Solves W·x = y for one pixel through the factors: L·U·x = Pᵀ·y, then forward and back substitution. */
function inv1x1Solve(L: Float64Array, U: Float64Array, perm: number[], y: Float64Array): Float64Array {
  const C = y.length;
  const v = new Float64Array(C);
  for (let i = 0; i < C; i++) v[perm[i]] = y[i];
  for (let i = 0; i < C; i++) for (let m = 0; m < i; m++) v[i] -= L[i * C + m] * v[m];
  for (let i = C - 1; i >= 0; i--) {
    for (let m = i + 1; m < C; m++) v[i] -= U[i * C + m] * v[m];
    v[i] /= U[i * C + i];
  }
  return v;
}

function inv1x1(env: Env, x: Float64Array, inverse: boolean, logdet: Float64Array): Float64Array {
  const [C, H, W] = env.shape;
  const HW = H * W;
  const { L, U, perm } = inv1x1Factors(env, C);
  const Wm = inv1x1Weight(L, U, perm, C);
  const y = new Float64Array(x.length);
  const pix = new Float64Array(C);
  for (let n = 0; n < env.N; n++) {
    for (let p = 0; p < HW; p++) {
      for (let c = 0; c < C; c++) pix[c] = x[(n * C + c) * HW + p];
      let out: Float64Array;
      if (inverse) {
        out = inv1x1Solve(L, U, perm, pix);
      } else {
        out = new Float64Array(C);
        for (let i = 0; i < C; i++) for (let j = 0; j < C; j++) out[i] += Wm[i * C + j] * pix[j];
      }
      for (let c = 0; c < C; c++) y[(n * C + c) * HW + p] = out[c];
    }
  }
  const ld = HW * env.get('log_s').reduce((a, v) => a + v, 0);
  for (let n = 0; n < env.N; n++) logdet[n] += inverse ? -ld : ld;
  return y;
}

function scaleLayer(env: Env, x: Float64Array, inverse: boolean, logdet: Float64Array): Float64Array {
  const ls = env.get('log_scale');
  const D = ls.length;
  const y = x.map((v, i) => v * Math.exp(inverse ? -ls[i % D] : ls[i % D]));
  const ld = ls.reduce((a, v) => a + v, 0);
  for (let n = 0; n < env.N; n++) logdet[n] += inverse ? -ld : ld;
  return y;
}

/** Reverses the channel order (its own inverse). */
function reverseChannels(env: Env, x: Float64Array): Float64Array {
  const [C, H, W] = env.shape;
  const HW = H * W;
  const y = new Float64Array(x.length);
  for (let n = 0; n < env.N; n++) {
    for (let c = 0; c < C; c++) y.set(x.subarray((n * C + C - 1 - c) * HW, (n * C + C - c) * HW), (n * C + c) * HW);
  }
  return y;
}

function squeeze(env: Env, x: Float64Array, inverse: boolean): Float64Array {
  const src = squeezeSource(env.shape);
  const D = src.length;
  const y = new Float64Array(x.length);
  for (let n = 0; n < env.N; n++) {
    for (let o = 0; o < D; o++) {
      if (inverse) y[n * D + src[o]] = x[n * D + o];
      else y[n * D + o] = x[n * D + src[o]];
    }
  }
  return y;
}

/** The MADE net with its masks applied to the weights, and `scale [D]`. */
function madeNet(l: Made, env: Env, D: number): { layers: Linear[]; scale: Float64Array } {
  const masks = madeMasks(D, env.K, l.hidden, l.depth, l.order);
  const layers = mlpLayers(env, D + env.K, l.hidden, l.depth, 2 * D).map((lin, j) => ({
    ...lin,
    w: lin.w.map((v, i) => v * masks[j][i]),
  }));
  return { layers, scale: env.get('scale') };
}

/** μ and α = scale ⊙ tanh(α_raw) of the MADE net at `v [N, D]`. */
function madeCond(
  net: { layers: Linear[]; scale: Float64Array },
  env: Env,
  v: Float64Array,
  D: number,
): { mu: Float64Array; alpha: Float64Array } {
  const { N } = env;
  const out = mlp(net.layers, concatRows([v, env.ctx], [D, env.K], N), N);
  const mu = new Float64Array(N * D);
  const alpha = new Float64Array(N * D);
  for (let n = 0; n < N; n++) {
    for (let d = 0; d < D; d++) {
      mu[n * D + d] = out[n * 2 * D + d];
      alpha[n * D + d] = net.scale[d] * Math.tanh(out[n * 2 * D + D + d]);
    }
  }
  return { mu, alpha };
}

/** Adds `sign · Σ_d α[n, d]` to each example's log-det. */
function addAlpha(logdet: Float64Array, alpha: Float64Array, D: number, sign: number): void {
  for (let n = 0; n < logdet.length; n++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += alpha[n * D + d];
    logdet[n] += sign * s;
  }
}

/**
 * The MADE layer. The one-pass directions (MAF forward, IAF inverse) evaluate the net once; the others
 * run D passes, each recomputing every value from the previous estimate: after pass p the values of
 * degree ≤ p are exact, so after D passes all are, and the last pass's α is α at the result.
 */
function made(l: Made, env: Env, x: Float64Array, inverse: boolean, logdet: Float64Array): Float64Array {
  const [C, H, W] = env.shape;
  const D = C * H * W;
  const net = madeNet(l, env, D);
  // u → x: x = u ⊙ exp(α) + μ (log-det +Σα); x → u: u = (x − μ) ⊙ exp(−α) (log-det −Σα).
  const toX = (u: Float64Array, c: { mu: Float64Array; alpha: Float64Array }) =>
    u.map((v, i) => v * Math.exp(c.alpha[i]) + c.mu[i]);
  const toU = (v: Float64Array, c: { mu: Float64Array; alpha: Float64Array }) =>
    v.map((xv, i) => (xv - c.mu[i]) * Math.exp(-c.alpha[i]));
  const onePass = (l.kind === 'maf') !== inverse;
  if (onePass) {
    // maf forward: α(x); iaf inverse: α(u). Both are functions of this layer's input.
    const c = madeCond(net, env, x, D);
    addAlpha(logdet, c.alpha, D, inverse ? 1 : -1);
    return inverse ? toX(x, c) : toU(x, c);
  }
  // maf inverse: x from u, the conditioner on x; iaf forward: u from x, the conditioner on u.
  let est: Float64Array = new Float64Array(x.length);
  let alpha = est;
  for (let p = 0; p < D; p++) {
    const c = madeCond(net, env, est, D);
    est = inverse ? toX(x, c) : toU(x, c);
    alpha = c.alpha;
  }
  addAlpha(logdet, alpha, D, inverse ? 1 : -1);
  return est;
}

/** Copies `a` into a Float64Array after checking its length (ShapeError) and that every value is finite (DataError). */
/** `a` as float64, checked: `want` finite numbers (ShapeError for a wrong count, DataError for a bad value). */
export function toF64(fn: string, what: string, a: ArrayLike<number>, want: number, shape: string): Float64Array {
  if (a === null || typeof a !== 'object' || typeof a.length !== 'number') {
    throw new ShapeError(`${fn}: ${what} must be an array of numbers`);
  }
  if (a.length !== want) throw new ShapeError(`${fn}: ${what} holds ${a.length} values; ${shape} needs ${want}`);
  const out = new Float64Array(want);
  for (let i = 0; i < want; i++) {
    const v = a[i];
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw new DataError(`${fn}: ${what}[${i}] is ${v}, not a finite number`);
    out[i] = v;
  }
  return out;
}

/** `batch` when it is a whole number ≥ 0; a ShapeError naming `fn` otherwise. */
export function checkBatch(fn: string, batch: number): number {
  if (!Number.isSafeInteger(batch) || batch < 0)
    throw new ShapeError(`${fn}: batch must be an integer ≥ 0, got ${batch}`);
  return batch;
}

/** The float64 reference FlowNet. Parameters start at zero, buffers at their initial values. */
export class JsFlowNet {
  readonly spec: FlowNetSpec;
  /** D = C·H·W of the input (and of the latent). */
  readonly dim: number;
  private readonly plan: Plan;
  private readonly tensors = new Map<string, Float64Array>();
  /** Values per example of each split's factored-out part, then of the final output. */
  private readonly latentWidths: number[];

  constructor(spec: FlowNetSpec) {
    planOf(spec); // validate before copying
    this.spec = structuredClone(spec);
    this.plan = planOf(this.spec);
    const [C, H, W] = spec.shape;
    this.dim = C * H * W;
    for (const { name, shape } of [...this.plan.params, ...this.plan.buffers]) {
      this.tensors.set(name, new Float64Array(shape.reduce((a, b) => a * b, 1)));
    }
    for (const { k, spec: l, input } of this.plan.layers) {
      if (l.type === 'batchnorm') this.tensors.get(`layers.${k}.running_var`)!.fill(1);
      // A random mask starts at the alternating pattern, 1 on even flat indices.
      if (l.type === 'coupling' && l.mask === 'random') {
        const m = this.tensors.get(`layers.${k}.mask`)!;
        for (let d = 0; d < m.length; d += 2) m[d] = 1;
      }
      if (l.type === 'coupling' && l.net.type === 'resnet' && l.net.norm === 'batch') {
        for (const name of resnetConvs(l.net.blocks))
          this.tensors.get(`layers.${k}.net.${name}.bn.running_var`)!.fill(1);
      }
      if (l.type === 'inv1x1') {
        this.tensors.set(
          `layers.${k}.perm`,
          Float64Array.from({ length: input[0] }, (_, i) => i),
        );
        this.tensors.get(`layers.${k}.sign_s`)!.fill(1);
      }
    }
    this.latentWidths = [];
    for (const { spec: l, input, output } of this.plan.layers) {
      if (l.type === 'split') this.latentWidths.push((input[0] - output[0]) * input[1] * input[2]);
    }
    const [c, h, w] = this.plan.layers[this.plan.layers.length - 1].output;
    this.latentWidths.push(c * h * w);
  }

  paramInfo(): TensorInfo[] {
    return this.plan.params.map(({ name, shape }) => ({ name, shape: [...shape] }));
  }

  bufferInfo(): TensorInfo[] {
    return this.plan.buffers.map(({ name, shape }) => ({ name, shape: [...shape] }));
  }

  /**
   * Sets a parameter or buffer by name (copied). `perm` must be a permutation, `sign_s` ±1 and a coupling
   * `mask` 0/1 with both values present (DataError); a rejected value leaves the tensor unchanged.
   */
  setTensor(name: string, data: ArrayLike<number>): void {
    const cur = this.tensors.get(name);
    if (!cur) throw new ConfigError(`setTensor: no parameter or buffer named '${name}'`);
    const v = toF64('setTensor', name, data, cur.length, `${name} [${this.shapeOf(name).join(', ')}]`);
    if (name.endsWith('.perm')) {
      const seen = new Set(v);
      if (seen.size !== v.length || v.some((p) => !Number.isInteger(p) || p < 0 || p >= v.length)) {
        throw new DataError(`setTensor: ${name} must be a permutation of 0..${v.length - 1}, got [${v.join(', ')}]`);
      }
    }
    if (name.endsWith('.sign_s') && v.some((s) => s !== 1 && s !== -1)) {
      throw new DataError(`setTensor: ${name} must hold only +1 and −1, got [${v.join(', ')}]`);
    }
    if (name.endsWith('.mask')) {
      if (v.some((b) => b !== 0 && b !== 1)) {
        throw new DataError(`setTensor: ${name} must hold only 0 and 1, got [${v.join(', ')}]`);
      }
      if (!v.includes(0) || !v.includes(1)) {
        throw new DataError(
          `setTensor: ${name} must hold at least one 0 and one 1 (a coupling needs values on both sides), got [${v.join(', ')}]`,
        );
      }
    }
    cur.set(v);
  }

  /** The layers of the spec with the shapes around each, in order. */
  get layers(): readonly Resolved[] {
    return this.plan.layers;
  }

  /**
   * The stored values of a parameter or buffer, not a copy (for the gradient of `flownet-grad.ts`, which
   * reads them at every step, and for the TypeScript backend, which copies its float32 parameters in
   * after every update as they are: an update that overflowed leaves ±Infinity there, for the next
   * step to report as divergence). {@link setTensor} is the checked way to store values.
   */
  tensorView(name: string): Float64Array {
    const cur = this.tensors.get(name);
    if (!cur) throw new ConfigError(`tensorView: no parameter or buffer named '${name}'`);
    return cur;
  }

  /** A copy of a parameter or buffer. */
  getTensor(name: string): Float64Array {
    const cur = this.tensors.get(name);
    if (!cur) throw new ConfigError(`getTensor: no parameter or buffer named '${name}'`);
    return cur.slice();
  }

  /**
   * z = f(x) `[batch, D]` and the per-example log|det ∂z/∂x|. `train: true` makes batchnorm layers and
   * the batch normalisation inside norm = 'batch' resnet conditioners use the batch's statistics (biased
   * variance); no buffer changes either way and actnorm is not initialised.
   */
  forward(
    x: ArrayLike<number>,
    batch: number,
    ctx?: ArrayLike<number>,
    opts: { train?: boolean } = {},
  ): { z: Float64Array; logdet: Float64Array } {
    const N = checkBatch('forward', batch);
    let h = toF64('forward', 'x', x, N * this.dim, `[batch ${N}, D ${this.dim}]`);
    const c = this.context('forward', ctx, N);
    const logdet = new Float64Array(N);
    const outs: Float64Array[] = [];
    for (const layer of this.plan.layers) {
      if (layer.spec.type === 'split') {
        const [kept, out] = splitRows(
          h,
          [this.width(layer.output), this.width(layer.input) - this.width(layer.output)],
          N,
        );
        outs.push(out);
        h = kept;
      } else {
        h = this.apply(layer, h, N, c, false, opts.train === true, logdet);
      }
    }
    return { z: concatRows([...outs, h], this.latentWidths, N), logdet };
  }

  /** x = f⁻¹(z) and the per-example log|det ∂x/∂z| (minus the forward's), with eval-mode statistics. */
  inverse(z: ArrayLike<number>, batch: number, ctx?: ArrayLike<number>): { x: Float64Array; logdet: Float64Array } {
    const N = checkBatch('inverse', batch);
    const parts = splitRows(
      toF64('inverse', 'z', z, N * this.dim, `[batch ${N}, D ${this.dim}]`),
      this.latentWidths,
      N,
    );
    const c = this.context('inverse', ctx, N);
    const logdet = new Float64Array(N);
    let h = parts.pop()!;
    for (let k = this.plan.layers.length - 1; k >= 0; k--) {
      const layer = this.plan.layers[k];
      if (layer.spec.type === 'split') {
        const kept = this.width(layer.output);
        h = concatRows([h, parts.pop()!], [kept, this.width(layer.input) - kept], N);
      } else {
        h = this.apply(layer, h, N, c, true, false, logdet);
      }
    }
    return { x: h, logdet };
  }

  /** log p(x) per example in nats: the base log-density of z plus the forward log-det. */
  logProb(x: ArrayLike<number>, batch: number, ctx?: ArrayLike<number>, opts: { train?: boolean } = {}): Float64Array {
    const { z, logdet } = this.forward(x, batch, ctx, opts);
    const lp = baseLogProb(this.spec.base, z, batch, this.dim);
    return lp.map((v, n) => v + logdet[n]);
  }

  private width([c, h, w]: Chw): number {
    return c * h * w;
  }

  private shapeOf(name: string): number[] {
    return [...this.plan.params, ...this.plan.buffers].find((t) => t.name === name)!.shape;
  }

  /** The context as `[N, K]`: required (ShapeError) when the spec has K > 0, refused when K = 0. */
  context(fn: string, ctx: ArrayLike<number> | undefined, N: number): Float64Array {
    const K = this.spec.context;
    if (K === 0) {
      if (ctx !== undefined && ctx.length !== 0) {
        throw new ShapeError(`${fn}: this flow takes no context (spec.context = 0), got ${ctx.length} context values`);
      }
      return new Float64Array(0);
    }
    if (ctx === undefined) {
      throw new ShapeError(`${fn}: context missing: spec.context = ${K} needs [batch ${N}, K ${K}] = ${N * K} values`);
    }
    return toF64(fn, 'context', ctx, N * K, `[batch ${N}, K ${K}]`);
  }

  /** One layer (not a split) in either direction; adds its log-det to `logdet`. */
  private apply(
    layer: Resolved,
    x: Float64Array,
    N: number,
    ctx: Float64Array,
    inverse: boolean,
    train: boolean,
    logdet: Float64Array,
  ): Float64Array {
    const { k, spec: l } = layer;
    const env: Env = {
      get: (name) => this.tensors.get(`layers.${k}.${name}`)!,
      shape: layer.input,
      N,
      ctx,
      K: this.spec.context,
    };
    if (N === 0) return new Float64Array(0);
    switch (l.type) {
      case 'coupling':
        return coupling(l, env, x, inverse, train, logdet);
      case 'actnorm':
        return actnorm(env, x, inverse, logdet);
      case 'batchnorm':
        return batchnorm(l.eps, env, x, inverse, train, logdet);
      case 'inv1x1':
        return inv1x1(env, x, inverse, logdet);
      case 'scale':
        return scaleLayer(env, x, inverse, logdet);
      case 'reverse':
        return reverseChannels(env, x);
      case 'squeeze':
        return squeeze(env, x, inverse);
      case 'made':
        return made(l, env, x, inverse, logdet);
      case 'split':
        throw new Error('unreachable: splits are handled by forward and inverse');
    }
  }
}
