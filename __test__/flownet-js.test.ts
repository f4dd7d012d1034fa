/**
 * The float64 reference FlowNet (`src/backend/js/flownet.ts`) against its contract
 * (`src/backend/flownet-types.ts`): for every layer type and for whole stacks with random non-zero
 * parameters, inverse ∘ forward = id, the forward log-det against log|det J| of a central-difference
 * Jacobian, inverse log-det = −forward log-det; hand computations pinning the layouts the native side
 * must reproduce (masks, MLP/resnet outputs, context, squeeze order, inv1x1's P·L·U, MADE degrees,
 * latent order of splits, base densities); batchnorm in training mode; norm = 'batch' resnet conditioners
 * (layout, eval- and train-mode formulas); random coupling masks held in a buffer (layout, initial
 * pattern, parity, setTensor checks); spec and input errors.
 */
import { describe, expect, it } from 'vitest';
import type { FlowNetSpec, LayerSpec, MaskKind, NetSpec } from '../src/backend/flownet-types.js';
import { checkFlowNetSpec, flowNetTensorInfo, JsFlowNet } from '../src/backend/js/flownet.js';
import { ConfigError, DataError, ShapeError } from '../src/errors.js';
import { mafSpec, niceSpec, realNvpVectorConfigOf, realNvpVectorSpec } from '../src/models/presets.js';
import { Rng } from '../src/util/rng.js';
import { EPS, expectClose, logAbsDet, uniform } from './helpers/numeric.js';

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function flow(
  shape: [number, number, number],
  layers: LayerSpec[],
  context = 0,
  base: FlowNetSpec['base'] = 'normal',
): FlowNetSpec {
  return { shape, context, base, layers };
}

const mlp = (hidden: number, depth: number): NetSpec => ({ type: 'mlp', hidden, depth });
const resnet = (channels: number, blocks: number, norm: 'weight' | 'none' | 'batch' = 'weight'): NetSpec => ({
  type: 'resnet',
  channels,
  blocks,
  norm,
});
const coupling = (mask: MaskKind, parity: 0 | 1, affine: boolean, net: NetSpec): LayerSpec => ({
  type: 'coupling',
  mask,
  parity,
  affine,
  net,
});
const made = (kind: 'maf' | 'iaf', order: 'forward' | 'reverse', hidden = 12, depth = 2): LayerSpec => ({
  type: 'made',
  kind,
  hidden,
  depth,
  order,
});
const batchnorm: LayerSpec = { type: 'batchnorm', momentum: 0.1, eps: 1e-5 };

/** A permutation of 0..n−1 that is not the identity (for n ≥ 2). */
function shuffled(rng: Rng, n: number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  if (n >= 2 && p.every((v, i) => v === i)) p.push(p.shift()!);
  return p;
}

/**
 * A random 0/1 mask of n ≥ 2 values with both values present and not the reference's initial
 * alternating pattern (1 on even indices), so a test cannot pass on the initial buffer.
 */
function randomMask(rng: Rng, n: number): number[] {
  const m = Array.from({ length: n }, () => rng.int(2));
  if (m.every((v) => v === m[0])) m[0] = 1 - m[0];
  if (m.every((v, d) => v === (d % 2 === 0 ? 1 : 0))) [m[0], m[1]] = [m[1], m[0]];
  return m;
}

/** Random non-zero parameters (conv_out and the last linear included) and non-trivial buffers. */
function randomize(net: JsFlowNet, seed: number): JsFlowNet {
  const rng = new Rng(seed);
  for (const { name, shape } of net.paramInfo()) {
    const n = numel(shape);
    const positive = name.endsWith('.scale') || name.endsWith('.weight_g');
    net.setTensor(name, positive ? Float64Array.from({ length: n }, () => rng.range(0.5, 1.5)) : uniform(rng, n, 0.5));
  }
  for (const { name, shape } of net.bufferInfo()) {
    const n = numel(shape);
    if (name.endsWith('running_mean')) net.setTensor(name, uniform(rng, n, 0.5));
    else if (name.endsWith('running_var'))
      net.setTensor(
        name,
        Float64Array.from({ length: n }, () => rng.range(0.5, 2)),
      );
    else if (name.endsWith('.mask')) net.setTensor(name, randomMask(rng, n));
    else if (name.endsWith('perm')) net.setTensor(name, shuffled(rng, n));
    else if (name.endsWith('sign_s'))
      net.setTensor(
        name,
        shuffled(rng, n).map((i) => (i % 2 === 0 ? -1 : 1)),
      );
    else net.setTensor(name, [1]);
  }
  return net;
}

/** The D×D Jacobian ∂z/∂x of one example, by central differences (row i = output i). */
function jacobian(net: JsFlowNet, x0: Float64Array, ctx?: Float64Array): Float64Array {
  const D = x0.length;
  const x = x0.slice();
  const J = new Float64Array(D * D);
  for (let j = 0; j < D; j++) {
    const v = x[j];
    x[j] = v + EPS;
    const up = net.forward(x, 1, ctx).z;
    x[j] = v - EPS;
    const down = net.forward(x, 1, ctx).z;
    x[j] = v;
    for (let i = 0; i < D; i++) J[i * D + j] = (up[i] - down[i]) / (2 * EPS);
  }
  return J;
}

/**
 * A coupling's output at `d`: `x[d]` passed through exactly where `passes`, else moved, and then
 * changing `x[d]` changes no other output (the conditioner never saw it).
 */
function expectCouplingAt(net: JsFlowNet, x: Float64Array, z: Float64Array, d: number, passes: boolean, label: string) {
  if (passes) {
    expect(z[d], label).toBe(x[d]);
    return;
  }
  expect(Math.abs(z[d] - x[d]), label).toBeGreaterThan(1e-6);
  const x2 = x.slice();
  x2[d] += 0.25;
  const z2 = net.forward(x2, 1).z;
  z2[d] = z[d];
  expect(Array.from(z2), label).toEqual(Array.from(z));
}

const row = (a: Float64Array, n: number, width: number) => a.slice(n * width, (n + 1) * width);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

interface Case {
  name: string;
  spec: FlowNetSpec;
}

/** One case per layer type (and per mask, net, norm, MADE kind and order), each with some context. */
const layerCases: Case[] = [
  {
    name: 'coupling checkerboard affine resnet(weight)',
    spec: flow([2, 4, 4], [coupling('checkerboard', 0, true, resnet(4, 1))]),
  },
  {
    name: 'coupling checkerboard additive resnet(none), context',
    spec: flow([2, 4, 4], [coupling('checkerboard', 1, false, resnet(3, 2, 'none'))], 3),
  },
  {
    name: 'coupling checkerboard affine resnet(batch), context',
    spec: flow([2, 4, 4], [coupling('checkerboard', 1, true, resnet(3, 2, 'batch'))], 2),
  },
  {
    name: 'coupling channel additive resnet(batch)',
    spec: flow([4, 2, 2], [coupling('channel', 0, false, resnet(3, 1, 'batch'))]),
  },
  { name: 'coupling channel affine mlp', spec: flow([2, 3, 3], [coupling('channel', 1, true, mlp(8, 2))]) },
  {
    name: 'coupling channel affine resnet(weight), context',
    spec: flow([4, 2, 2], [coupling('channel', 0, true, resnet(3, 1))], 2),
  },
  {
    name: 'coupling alternate affine mlp, context',
    spec: flow([5, 1, 1], [coupling('alternate', 0, true, mlp(8, 1))], 3),
  },
  { name: 'coupling alternate additive mlp', spec: flow([3, 2, 1], [coupling('alternate', 1, false, mlp(6, 2))]) },
  {
    name: 'coupling halves affine mlp, odd D, context',
    spec: flow([5, 1, 1], [coupling('halves', 0, true, mlp(8, 2))], 2),
  },
  {
    name: 'coupling halves additive resnet(weight), parity 1',
    spec: flow([3, 2, 2], [coupling('halves', 1, false, resnet(3, 1))]),
  },
  {
    name: 'coupling halves affine resnet(batch), context',
    spec: flow([3, 2, 2], [coupling('halves', 0, true, resnet(3, 1, 'batch'))], 2),
  },
  { name: 'coupling halves additive mlp, parity 1', spec: flow([3, 1, 2], [coupling('halves', 1, false, mlp(6, 1))]) },
  { name: 'coupling random affine mlp, context', spec: flow([3, 2, 2], [coupling('random', 0, true, mlp(8, 2))], 2) },
  { name: 'coupling random additive mlp, parity 1', spec: flow([7, 1, 1], [coupling('random', 1, false, mlp(6, 1))]) },
  {
    name: 'coupling random affine resnet(weight), parity 1, context',
    spec: flow([2, 3, 3], [coupling('random', 1, true, resnet(3, 1))], 2),
  },
  {
    name: 'coupling random affine resnet(batch)',
    spec: flow([2, 4, 4], [coupling('random', 0, true, resnet(3, 1, 'batch'))]),
  },
  { name: 'actnorm', spec: flow([3, 2, 2], [{ type: 'actnorm' }]) },
  { name: 'batchnorm (eval)', spec: flow([3, 2, 2], [batchnorm]) },
  { name: 'inv1x1 on an image', spec: flow([3, 2, 2], [{ type: 'inv1x1' }]) },
  { name: 'inv1x1 on a vector', spec: flow([4, 1, 1], [{ type: 'inv1x1' }]) },
  { name: 'scale', spec: flow([2, 2, 3], [{ type: 'scale' }]) },
  { name: 'reverse', spec: flow([3, 2, 2], [{ type: 'reverse' }]) },
  { name: 'squeeze', spec: flow([2, 4, 2], [{ type: 'squeeze' }]) },
  { name: 'split', spec: flow([3, 2, 2], [{ type: 'split' }]) },
  { name: 'made maf forward', spec: flow([5, 1, 1], [made('maf', 'forward')]) },
  { name: 'made maf reverse, context', spec: flow([5, 1, 1], [made('maf', 'reverse')], 3) },
  { name: 'made iaf forward, context', spec: flow([5, 1, 1], [made('iaf', 'forward')], 3) },
  { name: 'made iaf reverse on an image', spec: flow([2, 2, 2], [made('iaf', 'reverse', 10, 1)]) },
];

const imageStack = (context: number, base: FlowNetSpec['base']): FlowNetSpec =>
  flow(
    [2, 4, 4],
    [
      coupling('checkerboard', 0, true, resnet(4, 1, 'weight')),
      { type: 'actnorm' },
      batchnorm,
      { type: 'inv1x1' },
      { type: 'squeeze' },
      coupling('channel', 1, true, resnet(4, 1, 'none')),
      { type: 'split' },
      coupling('checkerboard', 1, false, mlp(8, 2)),
      { type: 'scale' },
    ],
    context,
    base,
  );

const stackCases: Case[] = [
  { name: 'image Real NVP-like stack', spec: imageStack(0, 'normal') },
  { name: 'image Real NVP-like stack, context, logistic base', spec: imageStack(3, 'logistic') },
  {
    name: 'vector MAF/IAF stack, context',
    spec: flow(
      [6, 1, 1],
      [
        made('maf', 'forward'),
        { type: 'reverse' },
        made('iaf', 'reverse'),
        coupling('alternate', 1, true, mlp(8, 2)),
        { type: 'actnorm' },
        batchnorm,
        { type: 'inv1x1' },
        { type: 'scale' },
      ],
      3,
    ),
  },
  {
    name: 'multi-scale Glow-like stack (two squeezes, two splits)',
    spec: flow(
      [1, 4, 4],
      [
        { type: 'squeeze' },
        { type: 'actnorm' },
        { type: 'inv1x1' },
        coupling('channel', 0, true, resnet(4, 1)),
        { type: 'split' },
        { type: 'squeeze' },
        { type: 'inv1x1' },
        coupling('channel', 1, true, mlp(6, 1)),
        { type: 'split' },
        made('maf', 'reverse', 8, 1),
      ],
    ),
  },
  {
    name: 'Glow-like stack with batch-normalised resnets, context',
    spec: flow(
      [2, 4, 4],
      [
        { type: 'actnorm' },
        { type: 'inv1x1' },
        coupling('checkerboard', 0, true, resnet(3, 1, 'batch')),
        { type: 'squeeze' },
        batchnorm,
        coupling('channel', 1, true, resnet(4, 1, 'batch')),
        { type: 'split' },
        coupling('channel', 0, false, resnet(2, 0, 'batch')),
      ],
      2,
    ),
  },
  {
    name: 'stack of random-mask couplings (squeeze, split, batch-normalised resnet), context',
    spec: flow(
      [2, 4, 4],
      [
        coupling('random', 0, true, resnet(3, 1, 'batch')),
        { type: 'actnorm' },
        coupling('random', 1, true, resnet(3, 1, 'weight')),
        { type: 'squeeze' },
        coupling('random', 0, false, mlp(6, 1)),
        { type: 'split' },
        coupling('random', 1, true, resnet(2, 0, 'batch')),
      ],
      2,
    ),
  },
];

describe.each([...layerCases, ...stackCases])('JsFlowNet: $name', ({ spec }) => {
  const net = randomize(new JsFlowNet(spec), 11);
  const D = net.dim;
  const K = spec.context;
  const rng = new Rng(5);
  const batch = 3;
  const x = uniform(rng, batch * D, 1.5);
  const ctx = K > 0 ? uniform(rng, batch * K, 1) : undefined;

  it('inverse(forward(x)) = x and the inverse log-det is minus the forward one', () => {
    const { z, logdet } = net.forward(x, batch, ctx);
    expect(z.length).toBe(batch * D);
    expect(maxAbsDiff(z, x), 'the layer does something').toBeGreaterThan(1e-3);
    const back = net.inverse(z, batch, ctx);
    expectClose('x', back.x, x, 1e-9);
    expectClose(
      'inverse logdet',
      back.logdet,
      logdet.map((v) => -v),
      1e-9,
    );
  });

  it('examples are independent: a batch equals its examples one by one', () => {
    const { z, logdet } = net.forward(x, batch, ctx);
    for (let n = 0; n < batch; n++) {
      const one = net.forward(row(x, n, D), 1, ctx ? row(ctx, n, K) : undefined);
      expectClose(`z[${n}]`, one.z, row(z, n, D), 1e-12);
      expectClose(`logdet[${n}]`, one.logdet, [logdet[n]], 1e-12);
    }
  });

  it('the forward log-det equals log|det ∂z/∂x| by central differences', () => {
    const { logdet } = net.forward(x, batch, ctx);
    for (let n = 0; n < 2; n++) {
      const J = jacobian(net, row(x, n, D), ctx ? row(ctx, n, K) : undefined);
      const want = logAbsDet(J, D);
      expect(Math.abs(logdet[n] - want), `example ${n}: ${logdet[n]} vs ${want}`).toBeLessThan(
        1e-6 * Math.max(1, Math.abs(want)),
      );
    }
  });

  it('logProb = base log-density of z + log-det', () => {
    const { z, logdet } = net.forward(x, batch, ctx);
    const lp = net.logProb(x, batch, ctx);
    for (let n = 0; n < batch; n++) {
      let base = 0;
      for (let d = 0; d < D; d++) {
        const v = z[n * D + d];
        // Logistic density e^{−v}/(1 + e^{−v})², written differently from the implementation.
        base += spec.base === 'normal' ? -0.5 * v * v - 0.5 * Math.log(2 * Math.PI) : -v - 2 * Math.log1p(Math.exp(-v));
      }
      expect(lp[n]).toBeCloseTo(base + logdet[n], 10);
    }
  });
});

describe('JsFlowNet tensors', () => {
  it('lists parameters and buffers in canonical order with the shapes at each layer', () => {
    const spec = flow(
      [2, 4, 4],
      [
        coupling('checkerboard', 0, true, resnet(4, 1, 'weight')),
        { type: 'actnorm' },
        batchnorm,
        { type: 'inv1x1' },
        { type: 'squeeze' },
        coupling('channel', 1, false, resnet(3, 0, 'none')),
        { type: 'split' },
        coupling('alternate', 0, true, mlp(5, 2)),
        { type: 'scale' },
        { type: 'reverse' },
        made('maf', 'forward', 6, 1),
        { type: 'inv1x1' },
      ],
      3,
    );
    const L = (k: number, name: string, shape: number[]) => ({ name: `layers.${k}.${name}`, shape });
    const params = [
      L(0, 'net.in.weight_v', [4, 5, 3, 3]),
      L(0, 'net.in.weight_g', [4, 1, 1, 1]),
      L(0, 'net.in.bias', [4]),
      L(0, 'net.blocks.0.conv1.weight_v', [4, 4, 3, 3]),
      L(0, 'net.blocks.0.conv1.weight_g', [4, 1, 1, 1]),
      L(0, 'net.blocks.0.conv1.bias', [4]),
      L(0, 'net.blocks.0.conv2.weight_v', [4, 4, 3, 3]),
      L(0, 'net.blocks.0.conv2.weight_g', [4, 1, 1, 1]),
      L(0, 'net.blocks.0.conv2.bias', [4]),
      L(0, 'net.out.weight', [4, 4, 3, 3]),
      L(0, 'net.out.bias', [4]),
      L(0, 'scale', [2]),
      L(1, 'bias', [2]),
      L(1, 'logs', [2]),
      L(2, 'log_gamma', [2]),
      L(2, 'beta', [2]),
      L(3, 'lower', [2, 2]),
      L(3, 'upper', [2, 2]),
      L(3, 'log_s', [2]),
      // After the squeeze: [8, 2, 2]; context 3 joins as channels.
      L(5, 'net.in.weight', [3, 11, 3, 3]),
      L(5, 'net.in.bias', [3]),
      L(5, 'net.out.weight', [8, 3, 3, 3]),
      L(5, 'net.out.bias', [8]),
      // After the split: [4, 2, 2], D = 16.
      L(7, 'net.0.weight', [5, 19]),
      L(7, 'net.0.bias', [5]),
      L(7, 'net.1.weight', [5, 5]),
      L(7, 'net.1.bias', [5]),
      L(7, 'net.2.weight', [32, 5]),
      L(7, 'net.2.bias', [32]),
      L(7, 'scale', [4]),
      L(8, 'log_scale', [4, 2, 2]),
      L(10, 'net.0.weight', [6, 19]),
      L(10, 'net.0.bias', [6]),
      L(10, 'net.1.weight', [32, 6]),
      L(10, 'net.1.bias', [32]),
      L(10, 'scale', [16]),
      L(11, 'lower', [4, 4]),
      L(11, 'upper', [4, 4]),
      L(11, 'log_s', [4]),
    ];
    const buffers = [
      L(1, 'initialized', [1]),
      L(2, 'running_mean', [2]),
      L(2, 'running_var', [2]),
      L(3, 'perm', [2]),
      L(3, 'sign_s', [2]),
      L(11, 'perm', [4]),
      L(11, 'sign_s', [4]),
    ];
    expect(flowNetTensorInfo(spec)).toEqual({ params, buffers });
    const net = new JsFlowNet(spec);
    expect(net.paramInfo()).toEqual(params);
    expect(net.bufferInfo()).toEqual(buffers);
    expect(net.dim).toBe(32);
  });

  it("a norm 'batch' resnet: weight, bias, bn.weight, bn.bias per conv; its running stats are buffers", () => {
    const spec = flow(
      [2, 4, 4],
      [
        batchnorm,
        coupling('checkerboard', 0, true, resnet(3, 1, 'batch')),
        { type: 'squeeze' },
        coupling('channel', 1, false, resnet(2, 0, 'batch')),
        { type: 'actnorm' },
      ],
      1,
    );
    const L = (k: number, name: string, shape: number[]) => ({ name: `layers.${k}.${name}`, shape });
    const params = [
      L(0, 'log_gamma', [2]),
      L(0, 'beta', [2]),
      L(1, 'net.in.weight', [3, 3, 3, 3]),
      L(1, 'net.in.bias', [3]),
      L(1, 'net.in.bn.weight', [3]),
      L(1, 'net.in.bn.bias', [3]),
      L(1, 'net.blocks.0.conv1.weight', [3, 3, 3, 3]),
      L(1, 'net.blocks.0.conv1.bias', [3]),
      L(1, 'net.blocks.0.conv1.bn.weight', [3]),
      L(1, 'net.blocks.0.conv1.bn.bias', [3]),
      L(1, 'net.blocks.0.conv2.weight', [3, 3, 3, 3]),
      L(1, 'net.blocks.0.conv2.bias', [3]),
      L(1, 'net.blocks.0.conv2.bn.weight', [3]),
      L(1, 'net.blocks.0.conv2.bn.bias', [3]),
      L(1, 'net.out.weight', [4, 3, 3, 3]),
      L(1, 'net.out.bias', [4]),
      L(1, 'scale', [2]),
      // After the squeeze: [8, 2, 2]; additive, no blocks.
      L(3, 'net.in.weight', [2, 9, 3, 3]),
      L(3, 'net.in.bias', [2]),
      L(3, 'net.in.bn.weight', [2]),
      L(3, 'net.in.bn.bias', [2]),
      L(3, 'net.out.weight', [8, 2, 3, 3]),
      L(3, 'net.out.bias', [8]),
      L(4, 'bias', [8]),
      L(4, 'logs', [8]),
    ];
    const buffers = [
      L(0, 'running_mean', [2]),
      L(0, 'running_var', [2]),
      L(1, 'net.in.bn.running_mean', [3]),
      L(1, 'net.in.bn.running_var', [3]),
      L(1, 'net.blocks.0.conv1.bn.running_mean', [3]),
      L(1, 'net.blocks.0.conv1.bn.running_var', [3]),
      L(1, 'net.blocks.0.conv2.bn.running_mean', [3]),
      L(1, 'net.blocks.0.conv2.bn.running_var', [3]),
      L(3, 'net.in.bn.running_mean', [2]),
      L(3, 'net.in.bn.running_var', [2]),
      L(4, 'initialized', [1]),
    ];
    expect(flowNetTensorInfo(spec)).toEqual({ params, buffers });
    const net = new JsFlowNet(spec);
    expect(net.paramInfo()).toEqual(params);
    expect(net.bufferInfo()).toEqual(buffers);
    // Parameters start at zero (bn.weight included); running means at 0, running variances at 1.
    for (const { name } of params)
      expect(
        Array.from(net.getTensor(name)).every((v) => v === 0),
        name,
      ).toBe(true);
    for (const { name, shape } of buffers.filter((b) => b.name.includes('.bn.'))) {
      expect(Array.from(net.getTensor(name)), name).toEqual(new Array(shape[0]).fill(name.endsWith('_var') ? 1 : 0));
    }
    // With conv_out at zero a fresh coupling is the identity, in eval and in training mode.
    const fresh = new JsFlowNet(flow([2, 4, 4], [coupling('checkerboard', 0, true, resnet(3, 1, 'batch'))], 1));
    const x = uniform(new Rng(1), 64, 1);
    for (const train of [false, true]) {
      const { z, logdet } = fresh.forward(x, 2, [0.5, -1], { train });
      expect(Array.from(z), `train ${train}`).toEqual(Array.from(x));
      expect(Array.from(logdet)).toEqual([0, 0]);
    }
  });

  it("a random mask is its coupling's first buffer [C, H, W], before the resnet's batch-norm buffers", () => {
    const spec = flow(
      [2, 4, 4],
      [
        batchnorm,
        coupling('random', 1, true, resnet(3, 1, 'batch')),
        { type: 'squeeze' },
        coupling('random', 0, false, mlp(4, 1)),
        { type: 'split' },
        coupling('random', 0, false, resnet(2, 0, 'batch')),
      ],
      1,
    );
    const L = (k: number, name: string, shape: number[]) => ({ name: `layers.${k}.${name}`, shape });
    const params = [
      L(0, 'log_gamma', [2]),
      L(0, 'beta', [2]),
      L(1, 'net.in.weight', [3, 3, 3, 3]),
      L(1, 'net.in.bias', [3]),
      L(1, 'net.in.bn.weight', [3]),
      L(1, 'net.in.bn.bias', [3]),
      L(1, 'net.blocks.0.conv1.weight', [3, 3, 3, 3]),
      L(1, 'net.blocks.0.conv1.bias', [3]),
      L(1, 'net.blocks.0.conv1.bn.weight', [3]),
      L(1, 'net.blocks.0.conv1.bn.bias', [3]),
      L(1, 'net.blocks.0.conv2.weight', [3, 3, 3, 3]),
      L(1, 'net.blocks.0.conv2.bias', [3]),
      L(1, 'net.blocks.0.conv2.bn.weight', [3]),
      L(1, 'net.blocks.0.conv2.bn.bias', [3]),
      L(1, 'net.out.weight', [4, 3, 3, 3]),
      L(1, 'net.out.bias', [4]),
      L(1, 'scale', [2]),
      // After the squeeze: [8, 2, 2], D = 32; the mask is no parameter.
      L(3, 'net.0.weight', [4, 33]),
      L(3, 'net.0.bias', [4]),
      L(3, 'net.1.weight', [32, 4]),
      L(3, 'net.1.bias', [32]),
      // After the split: [4, 2, 2].
      L(5, 'net.in.weight', [2, 5, 3, 3]),
      L(5, 'net.in.bias', [2]),
      L(5, 'net.in.bn.weight', [2]),
      L(5, 'net.in.bn.bias', [2]),
      L(5, 'net.out.weight', [4, 2, 3, 3]),
      L(5, 'net.out.bias', [4]),
    ];
    const buffers = [
      L(0, 'running_mean', [2]),
      L(0, 'running_var', [2]),
      L(1, 'mask', [2, 4, 4]),
      L(1, 'net.in.bn.running_mean', [3]),
      L(1, 'net.in.bn.running_var', [3]),
      L(1, 'net.blocks.0.conv1.bn.running_mean', [3]),
      L(1, 'net.blocks.0.conv1.bn.running_var', [3]),
      L(1, 'net.blocks.0.conv2.bn.running_mean', [3]),
      L(1, 'net.blocks.0.conv2.bn.running_var', [3]),
      L(3, 'mask', [8, 2, 2]),
      L(5, 'mask', [4, 2, 2]),
      L(5, 'net.in.bn.running_mean', [2]),
      L(5, 'net.in.bn.running_var', [2]),
    ];
    expect(flowNetTensorInfo(spec)).toEqual({ params, buffers });
    const net = new JsFlowNet(spec);
    expect(net.paramInfo()).toEqual(params);
    expect(net.bufferInfo()).toEqual(buffers);
    // The reference starts every random mask at the alternating pattern: 1 on even flat indices.
    for (const [k, n] of [
      [1, 32],
      [3, 32],
      [5, 16],
    ]) {
      expect(Array.from(net.getTensor(`layers.${k}.mask`)), `layer ${k}`).toEqual(
        Array.from({ length: n }, (_, d) => (d % 2 === 0 ? 1 : 0)),
      );
    }
  });

  it('a fresh random mask acts as the alternate mask of the same parity', () => {
    for (const parity of [0, 1] as const) {
      for (const net of [mlp(6, 1), resnet(3, 1, 'batch')]) {
        const shape: [number, number, number] = [2, 3, 3];
        const random = new JsFlowNet(flow(shape, [coupling('random', parity, true, net)], 1));
        const alternate = randomize(new JsFlowNet(flow(shape, [coupling('alternate', parity, true, net)], 1)), 4);
        for (const { name } of [...alternate.paramInfo(), ...alternate.bufferInfo()])
          random.setTensor(name, alternate.getTensor(name));
        const x = uniform(new Rng(6), 36, 1);
        const ctx = [0.3, -0.7];
        for (const train of [false, true]) {
          const a = alternate.forward(x, 2, ctx, { train });
          const r = random.forward(x, 2, ctx, { train });
          expect(Array.from(r.z), `parity ${parity} ${net.type} train ${train}`).toEqual(Array.from(a.z));
          expect(Array.from(r.logdet)).toEqual(Array.from(a.logdet));
        }
      }
    }
  });

  it('starts with zero parameters and the initial buffers', () => {
    const net = new JsFlowNet(flow([3, 2, 2], [{ type: 'actnorm' }, batchnorm, { type: 'inv1x1' }]));
    for (const { name } of net.paramInfo())
      expect(
        Array.from(net.getTensor(name)).every((v) => v === 0),
        name,
      ).toBe(true);
    expect(Array.from(net.getTensor('layers.0.initialized'))).toEqual([0]);
    expect(Array.from(net.getTensor('layers.1.running_mean'))).toEqual([0, 0, 0]);
    expect(Array.from(net.getTensor('layers.1.running_var'))).toEqual([1, 1, 1]);
    expect(Array.from(net.getTensor('layers.2.perm'))).toEqual([0, 1, 2]);
    expect(Array.from(net.getTensor('layers.2.sign_s'))).toEqual([1, 1, 1]);
  });

  it('a fresh coupling (zero weight-normalised resnet) is the identity, not NaN', () => {
    const net = new JsFlowNet(flow([2, 4, 4], [coupling('checkerboard', 0, true, resnet(4, 1))], 2));
    const x = uniform(new Rng(1), 64, 1);
    const { z, logdet } = net.forward(x, 2, [1, 0, 0, 1]);
    expect(Array.from(z)).toEqual(Array.from(x));
    expect(Array.from(logdet)).toEqual([0, 0]);
  });

  it('setTensor accepts a random mask of 0s and 1s with both present, else DataError and no change', () => {
    const net = new JsFlowNet(flow([1, 2, 3], [coupling('random', 0, true, resnet(2, 1, 'batch'))]));
    const initial = [1, 0, 1, 0, 1, 0];
    expect(Array.from(net.getTensor('layers.0.mask'))).toEqual(initial);
    for (const bad of [
      [1, 1, 1, 1, 1, 1],
      [0, 0, 0, 0, 0, 0],
      [1, 0, 0.5, 0, 1, 0],
      [1, 0, 2, 0, 1, 0],
      [1, 0, -1, 0, 1, 0],
    ]) {
      expect(() => net.setTensor('layers.0.mask', bad), `[${bad}]`).toThrow(DataError);
      expect(Array.from(net.getTensor('layers.0.mask')), `[${bad}]`).toEqual(initial);
    }
    expect(() => net.setTensor('layers.0.mask', [1, 0, Number.NaN, 0, 1, 0])).toThrow(DataError);
    expect(() => net.setTensor('layers.0.mask', [1, 0, 1])).toThrow(ShapeError);
    expect(Array.from(net.getTensor('layers.0.mask'))).toEqual(initial);
    net.setTensor('layers.0.mask', [0, 0, 1, 1, 1, 0]);
    expect(Array.from(net.getTensor('layers.0.mask'))).toEqual([0, 0, 1, 1, 1, 0]);
    // A later bad value leaves the accepted one in place.
    expect(() => net.setTensor('layers.0.mask', [0, 0, 0, 0, 0, 0])).toThrow(DataError);
    expect(Array.from(net.getTensor('layers.0.mask'))).toEqual([0, 0, 1, 1, 1, 0]);
    // A single 1 (or a single 0) is a valid mask.
    net.setTensor('layers.0.mask', [0, 0, 0, 0, 1, 0]);
    net.setTensor('layers.0.mask', [1, 1, 1, 0, 1, 1]);
    expect(Array.from(net.getTensor('layers.0.mask'))).toEqual([1, 1, 1, 0, 1, 1]);
  });

  it('setTensor copies and checks, getTensor copies', () => {
    const net = new JsFlowNet(flow([3, 1, 1], [{ type: 'inv1x1' }]));
    const v = [0.1, 0.2, 0.3];
    net.setTensor('layers.0.log_s', v);
    v[0] = 9;
    const got = net.getTensor('layers.0.log_s');
    expect(Array.from(got)).toEqual([0.1, 0.2, 0.3]);
    got[1] = 9;
    expect(net.getTensor('layers.0.log_s')[1]).toBe(0.2);
    expect(() => net.setTensor('layers.0.log_s', [1, 2])).toThrow(ShapeError);
    expect(() => net.setTensor('layers.0.nope', [1])).toThrow(ConfigError);
    expect(() => net.getTensor('layers.1.log_s')).toThrow(ConfigError);
    expect(() => net.setTensor('layers.0.log_s', [0, Number.NaN, 0])).toThrow(DataError);
    expect(() => net.setTensor('layers.0.perm', [0, 0, 2])).toThrow(DataError);
    expect(() => net.setTensor('layers.0.sign_s', [1, 0.5, -1])).toThrow(DataError);
    expect(Array.from(net.getTensor('layers.0.log_s'))).toEqual([0.1, 0.2, 0.3]);
    expect(Array.from(net.getTensor('layers.0.perm'))).toEqual([0, 1, 2]);
  });
});

describe('JsFlowNet layouts (hand computations)', () => {
  it('coupling masks: masked values pass through, the conditioner never sees the others', () => {
    type Shape = [number, number, number];
    type Rule = (c: number, h: number, w: number, p: number) => boolean;
    const image: Shape = [2, 3, 4];
    const [, H0, W0] = image;
    // halves on the flat index d = c·H·W + h·W + w: on [2, 3, 4] it is the channel mask, so it also
    // runs on shapes where it is not ([3, 2, 2]: channel 0 and half of channel 1) and with odd D
    // ([5, 1, 1]: d < 2.5, the first 3 pass for parity 0).
    const halves =
      ([C, H, W]: Shape): Rule =>
      (c, h, w, p) =>
        c * H * W + h * W + w < (C * H * W) / 2 !== (p === 1);
    const masks: [MaskKind, Shape, Rule][] = [
      ['checkerboard', image, (_c, h, w, p) => (h + w + p) % 2 === 0],
      ['channel', image, (c, _h, _w, p) => c < image[0] / 2 !== (p === 1)],
      ['alternate', image, (c, h, w, p) => (c * H0 * W0 + h * W0 + w + p) % 2 === 0],
      ['halves', image, halves(image)],
      ['halves', [3, 2, 2], halves([3, 2, 2])],
      ['halves', [5, 1, 1], halves([5, 1, 1])],
    ];
    // The hand rule for halves on [3, 2, 2], parity 0: the first six flat values pass.
    expect(
      Array.from({ length: 12 }, (_, d) => halves([3, 2, 2])(Math.floor(d / 4), Math.floor(d / 2) % 2, d % 2, 0)),
    ).toEqual([...new Array(6).fill(true), ...new Array(6).fill(false)]);
    for (const [kind, shape, b] of masks) {
      const [C, H, W] = shape;
      const D = C * H * W;
      for (const parity of [0, 1] as const) {
        const net = randomize(new JsFlowNet(flow(shape, [coupling(kind, parity, true, mlp(6, 1))])), 3);
        const x = uniform(new Rng(2), D, 1);
        const { z } = net.forward(x, 1);
        let passed = 0;
        for (let c = 0; c < C; c++) {
          for (let h = 0; h < H; h++) {
            for (let w = 0; w < W; w++) {
              const d = (c * H + h) * W + w;
              const label = `${kind} [${shape}] parity ${parity} at ${c},${h},${w}`;
              const passes = b(c, h, w, parity);
              if (passes) passed++;
              expectCouplingAt(net, x, z, d, passes, label);
            }
          }
        }
        expect(passed, `${kind} [${shape}] parity ${parity}: both sides non-empty`).toBeGreaterThan(0);
        expect(passed).toBeLessThan(D);
      }
    }
  });

  it.each([
    ['mlp', mlp(6, 1)],
    ['resnet', resnet(3, 1, 'batch')],
  ] as const)(
    'random mask (%s): pass-through exactly where buffer XOR parity = 1, the conditioner sees only those',
    (_, cond) => {
      const shape: [number, number, number] = [2, 3, 4];
      const [C, H, W] = shape;
      const D = C * H * W;
      // A seeded random pattern (not the initial alternating one).
      const m = randomMask(new Rng(8), D);
      const build = (parity: 0 | 1, mask: number[]) => {
        const net = randomize(new JsFlowNet(flow(shape, [coupling('random', parity, true, cond)])), 3);
        net.setTensor('layers.0.mask', mask);
        return net;
      };
      const x = uniform(new Rng(2), D, 1);
      const zs: Float64Array[] = [];
      for (const parity of [0, 1] as const) {
        const net = build(parity, m);
        expect(Array.from(net.getTensor('layers.0.mask'))).toEqual(m);
        const { z, logdet } = net.forward(x, 1);
        zs.push(z);
        let passed = 0;
        for (let d = 0; d < D; d++) {
          const label = `parity ${parity} at ${d} (buffer ${m[d]})`;
          const passes = (m[d] === 1) !== (parity === 1);
          if (passes) passed++;
          expectCouplingAt(net, x, z, d, passes, label);
        }
        expect(passed).toBe(parity === 0 ? m.filter((v) => v === 1).length : m.filter((v) => v === 0).length);
        // Parity 1 on m is parity 0 on the complement of m (same parameters, same result).
        const flipped = build(
          (1 - parity) as 0 | 1,
          m.map((v) => 1 - v),
        ).forward(x, 1);
        expect(Array.from(flipped.z)).toEqual(Array.from(z));
        expect(Array.from(flipped.logdet)).toEqual(Array.from(logdet));
      }
      // The two parities transform complementary sets.
      for (let d = 0; d < D; d++) expect(zs[0][d] === x[d], `${d}`).not.toBe(zs[1][d] === x[d]);
    },
  );

  it.each([true, false])('coupling with an MLP: [s_raw | t] halves, context after the data (affine %s)', (affine) => {
    // D = 2, alternate parity 0: value 0 passes, value 1 is transformed. Hidden 1, depth 1.
    const net = new JsFlowNet(flow([2, 1, 1], [coupling('alternate', 0, affine, mlp(1, 1))], 1));
    net.setTensor('layers.0.net.0.weight', [0.7, 99, -0.4]); // [x0, x1 (masked to 0), ctx]
    net.setTensor('layers.0.net.0.bias', [0.1]);
    const w1 = affine ? [0.3, -0.8, 0.5, 1.7] : [0.5, 1.7];
    const b1 = affine ? [0.01, 0.02, 0.03, 0.04] : [0.03, 0.04];
    net.setTensor('layers.0.net.1.weight', w1);
    net.setTensor('layers.0.net.1.bias', b1);
    if (affine) net.setTensor('layers.0.scale', [5, 1.3]);
    const [x0, x1, k] = [0.9, -0.6, -0.5];
    const hid = Math.max(0.7 * x0 - 0.4 * k + 0.1, 0);
    const out = w1.map((w, o) => w * hid + b1[o]);
    const s = affine ? 1.3 * Math.tanh(out[1]) : 0;
    const t = affine ? out[3] : out[1];
    const { z, logdet } = net.forward([x0, x1], 1, [k]);
    expect(z[0]).toBe(x0);
    expect(z[1]).toBeCloseTo(x1 * Math.exp(s) + t, 14);
    expect(logdet[0]).toBeCloseTo(s, 14);
  });

  it.each(['none', 'weight'] as const)(
    'coupling with a resnet: cross-correlation, padding, blocks, context, norm %s',
    (norm) => {
      // [1, 3, 3] checkerboard parity 0: pixels with h + w odd are transformed. F = 1, one block, K = 1.
      const net = new JsFlowNet(flow([1, 3, 3], [coupling('checkerboard', 0, true, resnet(1, 1, norm))], 1));
      const conv = (name: string, taps: [number, number, number][], cin: number, gain: number) => {
        // Two taps [input channel, dh, dw], v = 3 and 4 (‖v‖ = 5): effective weights 0.6·gain and 0.8·gain.
        const v = new Float64Array(cin * 9);
        taps.forEach(([i, dh, dw], j) => {
          v[i * 9 + dh * 3 + dw] = j === 0 ? 3 : 4;
        });
        if (norm === 'none') {
          net.setTensor(
            `layers.0.net.${name}.weight`,
            v.map((a) => (a * gain) / 5),
          );
        } else {
          net.setTensor(`layers.0.net.${name}.weight_v`, v);
          net.setTensor(`layers.0.net.${name}.weight_g`, [gain]);
        }
      };
      // conv_in: 0.6 · x[h−1, w] (tap dh=0, dw=1) + 0.8 · ctx (centre); bias 0.05.
      conv(
        'in',
        [
          [0, 0, 1],
          [1, 1, 1],
        ],
        2,
        1,
      );
      net.setTensor('layers.0.net.in.bias', [0.05]);
      // Block: conv1 = 1.5·centre, conv2 = 2·centre (weight norm: v = −3 at the centre, g = −w).
      const single = (name: string, w: number) => {
        if (norm === 'none') net.setTensor(`layers.0.net.${name}.weight`, [0, 0, 0, 0, w, 0, 0, 0, 0]);
        else {
          net.setTensor(`layers.0.net.${name}.weight_v`, [0, 0, 0, 0, -3, 0, 0, 0, 0]);
          net.setTensor(`layers.0.net.${name}.weight_g`, [-w]);
        }
      };
      single('blocks.0.conv1', 1.5);
      single('blocks.0.conv2', 2);
      net.setTensor('layers.0.net.blocks.0.conv1.bias', [0]);
      net.setTensor('layers.0.net.blocks.0.conv2.bias', [0]);
      // conv_out: s_raw = 0.5·centre, t = −1·centre + 0.25.
      net.setTensor('layers.0.net.out.weight', [0, 0, 0, 0, 0.5, 0, 0, 0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0]);
      net.setTensor('layers.0.net.out.bias', [0, 0.25]);
      net.setTensor('layers.0.scale', [0.9]);
      const x = Float64Array.from({ length: 9 }, (_, i) => 0.1 + 0.1 * i);
      const k = 0.3;
      const { z, logdet } = net.forward(x, 1, [k]);
      let ld = 0;
      for (let h = 0; h < 3; h++) {
        for (let w = 0; w < 3; w++) {
          const d = h * 3 + w;
          if ((h + w) % 2 === 0) {
            expect(z[d]).toBe(x[d]);
            continue;
          }
          // The pixel above has the other parity, so it passes through and the conditioner sees it.
          const above = h > 0 ? x[d - 3] : 0;
          let a = 0.6 * above + 0.8 * k + 0.05;
          a += 2 * Math.max(1.5 * Math.max(a, 0), 0);
          const r = Math.max(a, 0);
          const s = 0.9 * Math.tanh(0.5 * r);
          expect(z[d], `pixel ${h},${w}`).toBeCloseTo(x[d] * Math.exp(s) - r + 0.25, 13);
          ld += s;
        }
      }
      expect(logdet[0]).toBeCloseTo(ld, 13);
    },
  );

  it('actnorm, scale and eval batchnorm follow their formulas per channel', () => {
    const shape: [number, number, number] = [2, 1, 3];
    const x = [0.5, -1, 2, 1.5, 0.25, -0.75];
    const an = new JsFlowNet(flow(shape, [{ type: 'actnorm' }]));
    an.setTensor('layers.0.bias', [0.2, -0.3]);
    an.setTensor('layers.0.logs', [0.4, -0.1]);
    let r = an.forward(x, 1);
    expectClose(
      'actnorm',
      r.z,
      x.map((v, i) => (i < 3 ? (v + 0.2) * Math.exp(0.4) : (v - 0.3) * Math.exp(-0.1))),
      1e-14,
    );
    expect(r.logdet[0]).toBeCloseTo(3 * (0.4 - 0.1), 14);

    const sc = new JsFlowNet(flow(shape, [{ type: 'scale' }]));
    const ls = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6];
    sc.setTensor('layers.0.log_scale', ls);
    r = sc.forward(x, 1);
    expectClose(
      'scale',
      r.z,
      x.map((v, i) => v * Math.exp(ls[i])),
      1e-14,
    );
    expect(r.logdet[0]).toBeCloseTo(0.7, 14);

    const bn = new JsFlowNet(flow(shape, [{ type: 'batchnorm', momentum: 0.1, eps: 0.01 }]));
    bn.setTensor('layers.0.log_gamma', [0.3, -0.2]);
    bn.setTensor('layers.0.beta', [0.5, -0.5]);
    bn.setTensor('layers.0.running_mean', [1, -1]);
    bn.setTensor('layers.0.running_var', [4, 0.25]);
    r = bn.forward(x, 1);
    const want = x.map((v, i) =>
      i < 3 ? ((v - 1) / Math.sqrt(4.01)) * Math.exp(0.3) + 0.5 : ((v + 1) / Math.sqrt(0.26)) * Math.exp(-0.2) - 0.5,
    );
    expectClose('batchnorm', r.z, want, 1e-14);
    expect(r.logdet[0]).toBeCloseTo(3 * (0.3 - 0.2 - 0.5 * Math.log(4.01) - 0.5 * Math.log(0.26)), 13);
  });

  it('coupling on an image: the MLP output is [s_raw | t] over the flat [C, H, W], scale is per channel', () => {
    // [2, 1, 2] checkerboard parity 0: w = 0 passes, w = 1 is transformed, in both channels. Every
    // weight 0, so the conditioner's output is the last bias: s_raw = bias[0..4], t = bias[4..8].
    const net = new JsFlowNet(flow([2, 1, 2], [coupling('checkerboard', 0, true, mlp(3, 1))]));
    const sRaw = [0.4, -0.9, 0.6, 1.2];
    const t = [5, 0.3, 6, -0.7];
    net.setTensor('layers.0.net.1.bias', [...sRaw, ...t]);
    net.setTensor('layers.0.scale', [0.7, 1.9]);
    const x = [0.5, -1.5, 2, 0.25];
    const s1 = 0.7 * Math.tanh(sRaw[1]);
    const s3 = 1.9 * Math.tanh(sRaw[3]);
    const { z, logdet } = net.forward(x, 1);
    expectClose('z', z, [0.5, -1.5 * Math.exp(s1) + 0.3, 2, 0.25 * Math.exp(s3) - 0.7], 1e-15);
    expect(logdet[0]).toBeCloseTo(s1 + s3, 15);
  });

  it('weight norm is per output channel: weight = g·v/‖v[o]‖ (same net as norm none with that weight)', () => {
    const shape: [number, number, number] = [2, 2, 2];
    const wn = randomize(new JsFlowNet(flow(shape, [coupling('checkerboard', 1, true, resnet(3, 1))], 2)), 21);
    const plain = new JsFlowNet(flow(shape, [coupling('checkerboard', 1, true, resnet(3, 1, 'none'))], 2));
    for (const { name } of wn.paramInfo()) {
      if (name.endsWith('weight_g')) continue;
      if (!name.endsWith('weight_v')) {
        plain.setTensor(name, wn.getTensor(name));
        continue;
      }
      const v = wn.getTensor(name);
      const g = wn.getTensor(name.replace('weight_v', 'weight_g'));
      const per = v.length / g.length;
      const w = v.map((a, i) => {
        const o = Math.floor(i / per);
        const norm = Math.hypot(...v.subarray(o * per, (o + 1) * per));
        return (g[o] * a) / norm;
      });
      plain.setTensor(name.replace('weight_v', 'weight'), w);
    }
    const rng = new Rng(3);
    const x = uniform(rng, 16, 1);
    const ctx = uniform(rng, 4, 1);
    const a = wn.forward(x, 2, ctx);
    const b = plain.forward(x, 2, ctx);
    expect(maxAbsDiff(a.z, x)).toBeGreaterThan(1e-3);
    expectClose('z', a.z, b.z, 1e-13);
    expectClose('logdet', a.logdet, b.logdet, 1e-13);
  });

  it('inv1x1: W = P·(I + strict_lower)·(strict_upper + diag(sign·exp(log_s))) with P[i][perm[i]] = 1', () => {
    const C = 3;
    const net = new JsFlowNet(flow([C, 1, 2], [{ type: 'inv1x1' }]));
    const lower = [9, 9, 9, 0.5, 9, 9, -0.3, 0.8, 9]; // only the strict lower triangle is used
    const upper = [9, 0.2, -0.6, 9, 9, 0.4, 9, 9, 9]; // only the strict upper triangle is used
    const logS = [0.1, -0.2, 0.3];
    const sign = [1, -1, -1];
    const perm = [2, 0, 1];
    net.setTensor('layers.0.lower', lower);
    net.setTensor('layers.0.upper', upper);
    net.setTensor('layers.0.log_s', logS);
    net.setTensor('layers.0.sign_s', sign);
    net.setTensor('layers.0.perm', perm);
    const mat = (f: (i: number, j: number) => number) =>
      Array.from({ length: C }, (_, i) => Array.from({ length: C }, (_, j) => f(i, j)));
    const mul = (a: number[][], b: number[][]) => mat((i, j) => a[i].reduce((s, v, m) => s + v * b[m][j], 0));
    const P = mat((i, j) => (perm[i] === j ? 1 : 0));
    const L = mat((i, j) => (i === j ? 1 : j < i ? lower[i * C + j] : 0));
    const U = mat((i, j) => (i === j ? sign[i] * Math.exp(logS[i]) : j > i ? upper[i * C + j] : 0));
    const Wm = mul(P, mul(L, U));
    const x = [0.3, -1.2, 0.7, 0.1, 2, -0.4]; // [C, 1, 2]: pixel p of channel c at c·2 + p
    const { z, logdet } = net.forward(x, 1);
    for (let p = 0; p < 2; p++) {
      for (let i = 0; i < C; i++) {
        const want = Wm[i].reduce((s, w, j) => s + w * x[j * 2 + p], 0);
        expect(z[i * 2 + p]).toBeCloseTo(want, 14);
      }
    }
    expect(logdet[0]).toBeCloseTo(2 * (0.1 - 0.2 + 0.3), 14);
  });

  it('reverse reverses channels, squeeze uses Glow order, split factors out the last channels first', () => {
    const iota = (n: number) => Float64Array.from({ length: n }, (_, i) => i);
    const rev = new JsFlowNet(flow([3, 2, 1], [{ type: 'reverse' }]));
    expect(Array.from(rev.forward(iota(6), 1).z)).toEqual([4, 5, 2, 3, 0, 1]);

    const [C, H, W] = [2, 4, 6];
    const sq = new JsFlowNet(flow([C, H, W], [{ type: 'squeeze' }]));
    const x = iota(C * H * W);
    const { z } = sq.forward(x, 1);
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < 2; i++) {
        for (let j = 0; j < 2; j++) {
          for (let h = 0; h < H / 2; h++) {
            for (let w = 0; w < W / 2; w++) {
              expect(z[((4 * c + 2 * i + j) * (H / 2) + h) * (W / 2) + w]).toBe(x[(c * H + 2 * h + i) * W + 2 * w + j]);
            }
          }
        }
      }
    }

    // [3, 1, 2]: split keeps channel 0, factors out channels 1 and 2; z = [factored | kept].
    const sp = new JsFlowNet(flow([3, 1, 2], [{ type: 'split' }]));
    expect(Array.from(sp.forward([0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15], 2).z)).toEqual([
      2, 3, 4, 5, 0, 1, 12, 13, 14, 15, 10, 11,
    ]);
    // Two splits: [4, 1, 1] → factor out 2, 3 → [2, 1, 1] → factor out 1 → [1, 1, 1]; a reverse in between.
    const two = new JsFlowNet(flow([4, 1, 1], [{ type: 'split' }, { type: 'reverse' }, { type: 'split' }]));
    expect(Array.from(two.forward([0, 1, 2, 3], 1).z)).toEqual([2, 3, 0, 1]);
    expect(Array.from(two.inverse([2, 3, 0, 1], 1).x)).toEqual([0, 1, 2, 3]);
  });

  describe.each([
    ['forward', [0, 1, 2]],
    ['reverse', [2, 1, 0]],
  ] as const)('MADE degrees, order %s', (order, pos) => {
    // D = 3, hidden 4, depth 1, every weight 1, biases 0, scale 1. Hidden degrees (j mod 2) + 1 = [1, 2, 1, 2].
    // In position order a, b, c (a = x[pos[0]], …): μ_a = 0, μ_b = 2a, μ_c = 4a + 2b; α_raw = μ.
    const build = (kind: 'maf' | 'iaf') => {
      const net = new JsFlowNet(flow([3, 1, 1], [made(kind, order, 4, 1)]));
      net.setTensor('layers.0.net.0.weight', new Float64Array(12).fill(1));
      net.setTensor('layers.0.net.1.weight', new Float64Array(24).fill(1));
      net.setTensor('layers.0.scale', [1, 1, 1]);
      return net;
    };
    const muOf = (v: number[]) => {
      const mu = [0, 0, 0];
      mu[pos[1]] = 2 * v[pos[0]];
      mu[pos[2]] = 4 * v[pos[0]] + 2 * v[pos[1]];
      return mu;
    };
    const v = [0.3, 0.5, 0.2];

    it('maf forward: u = (x − μ(x))·exp(−α(x)), logdet = −Σα', () => {
      const mu = muOf(v);
      const { z, logdet } = build('maf').forward(v, 1);
      expectClose(
        'u',
        z,
        v.map((x, d) => (x - mu[d]) * Math.exp(-Math.tanh(mu[d]))),
        1e-14,
      );
      expect(logdet[0]).toBeCloseTo(-mu.reduce((s, m) => s + Math.tanh(m), 0), 14);
    });

    it('iaf inverse: x = u·exp(α(u)) + μ(u), its logdet = Σα(u)', () => {
      const mu = muOf(v);
      const { x, logdet } = build('iaf').inverse(v, 1);
      expectClose(
        'x',
        x,
        v.map((u, d) => u * Math.exp(Math.tanh(mu[d])) + mu[d]),
        1e-14,
      );
      expect(logdet[0]).toBeCloseTo(
        mu.reduce((s, m) => s + Math.tanh(m), 0),
        14,
      );
    });
  });

  describe.each([
    ['maf', 'forward', 0],
    ['maf', 'reverse', 3],
    ['iaf', 'forward', 3],
    ['iaf', 'reverse', 0],
  ] as const)('MADE %s, order %s, context %i: autoregressive', (kind, order, K) => {
    const D = 5;
    const net = randomize(new JsFlowNet(flow([D, 1, 1], [made(kind, order, 16, 2)], K)), 17);
    const rng = new Rng(4);
    // Positive biases keep most ReLUs alive, so every allowed dependency shows up in the Jacobian.
    for (const { name, shape } of net.paramInfo()) {
      if (name.endsWith('bias'))
        net.setTensor(
          name,
          Float64Array.from({ length: shape[0] }, () => rng.range(0.2, 0.6)),
        );
    }
    const x = uniform(rng, D, 1);
    const ctx = K > 0 ? uniform(rng, K, 1) : undefined;
    const pos = (d: number) => (order === 'forward' ? d : D - 1 - d);

    it('∂u_i/∂x_j = 0 exactly when x_j comes at or after u_i in the order, non-zero otherwise', () => {
      const J = jacobian(net, x, ctx);
      for (let i = 0; i < D; i++) {
        for (let j = 0; j < D; j++) {
          const g = J[i * D + j];
          const label = `∂u_${i}/∂x_${j}`;
          if (i === j) expect(Math.abs(g), label).toBeGreaterThan(0.05);
          else if (pos(j) > pos(i)) expect(g, label).toBe(0);
          else expect(Math.abs(g), label).toBeGreaterThan(1e-6);
        }
      }
    });

    if (K > 0)
      it('the context reaches every output but the first in the order (whose μ, α are biases)', () => {
        const a = net.forward(x, 1, ctx).z;
        const b = net.forward(
          x,
          1,
          ctx!.map((c) => c + 0.3),
        ).z;
        for (let d = 0; d < D; d++) {
          if (pos(d) === 0) expect(b[d], `u_${d}`).toBe(a[d]);
          else expect(Math.abs(a[d] - b[d]), `u_${d}`).toBeGreaterThan(1e-6);
        }
      });
  });
});

describe('JsFlowNet batchnorm in training mode', () => {
  const shape: [number, number, number] = [2, 2, 2];
  const eps = 1e-3;
  const make = () => {
    const net = randomize(
      new JsFlowNet(flow(shape, [{ type: 'actnorm' }, { type: 'batchnorm', momentum: 0.1, eps }])),
      8,
    );
    net.setTensor('layers.0.initialized', [0]);
    return net;
  };
  const N = 3;
  const x = uniform(new Rng(9), N * 8, 2);

  it('uses the batch mean and biased variance (hand computation)', () => {
    const net = make();
    const bias = net.getTensor('layers.0.bias');
    const logs = net.getTensor('layers.0.logs');
    const lg = net.getTensor('layers.1.log_gamma');
    const beta = net.getTensor('layers.1.beta');
    const a = x.map((v, i) => (v + bias[Math.floor(i / 4) % 2]) * Math.exp(logs[Math.floor(i / 4) % 2]));
    const want = new Float64Array(N * 8);
    let ld = 4 * (logs[0] + logs[1]);
    for (let c = 0; c < 2; c++) {
      const vals: number[] = [];
      for (let n = 0; n < N; n++) for (let p = 0; p < 4; p++) vals.push(a[n * 8 + c * 4 + p]);
      const mean = vals.reduce((s, v) => s + v, 0) / vals.length;
      const variance = vals.reduce((s, v) => s + (v - mean) ** 2, 0) / vals.length;
      for (let n = 0; n < N; n++) {
        for (let p = 0; p < 4; p++) {
          const i = n * 8 + c * 4 + p;
          want[i] = ((a[i] - mean) / Math.sqrt(variance + eps)) * Math.exp(lg[c]) + beta[c];
        }
      }
      ld += 4 * (lg[c] - 0.5 * Math.log(variance + eps));
    }
    const { z, logdet } = net.forward(x, N, undefined, { train: true });
    expectClose('z', z, want, 1e-13);
    expectClose('logdet', logdet, [ld, ld, ld], 1e-13);
    // Per channel, the output has mean β.
    for (let c = 0; c < 2; c++) {
      let s = 0;
      for (let n = 0; n < N; n++) for (let p = 0; p < 4; p++) s += z[n * 8 + c * 4 + p];
      expect(s / (N * 4)).toBeCloseTo(beta[c], 12);
    }
    const lp = net.logProb(x, N, undefined, { train: true });
    const lpEval = net.logProb(x, N);
    expect(maxAbsDiff(lp, lpEval)).toBeGreaterThan(1e-3);
  });

  it('equals eval mode once the running statistics are the batch statistics', () => {
    const net = make();
    const a = net.forward(x, N, undefined, { train: true });
    expect(maxAbsDiff(a.z, net.forward(x, N).z), 'eval uses the running statistics').toBeGreaterThan(1e-3);
    // The batchnorm input is the actnorm output; its statistics by channel.
    const bias = net.getTensor('layers.0.bias');
    const logs = net.getTensor('layers.0.logs');
    const mean = [0, 0];
    const sq = [0, 0];
    for (let i = 0; i < x.length; i++) {
      const c = Math.floor(i / 4) % 2;
      const v = (x[i] + bias[c]) * Math.exp(logs[c]);
      mean[c] += v / (N * 4);
      sq[c] += (v * v) / (N * 4);
    }
    net.setTensor('layers.1.running_mean', mean);
    net.setTensor(
      'layers.1.running_var',
      mean.map((m, c) => sq[c] - m * m),
    );
    const b = net.forward(x, N);
    expectClose('z', b.z, a.z, 1e-10);
    expectClose('logdet', b.logdet, a.logdet, 1e-10);
  });

  it('changes no buffer and does not initialise actnorm', () => {
    const net = make();
    const before = net.bufferInfo().map(({ name }) => Array.from(net.getTensor(name)));
    const bias = Array.from(net.getTensor('layers.0.bias'));
    net.forward(x, N, undefined, { train: true });
    net.logProb(x, N, undefined, { train: true });
    expect(net.bufferInfo().map(({ name }) => Array.from(net.getTensor(name)))).toEqual(before);
    expect(Array.from(net.getTensor('layers.0.initialized'))).toEqual([0]);
    expect(Array.from(net.getTensor('layers.0.bias'))).toEqual(bias);
  });
});

describe("JsFlowNet resnet conditioner with norm 'batch'", () => {
  // [1, 3, 3] checkerboard parity 0 (pixels with h + w odd are transformed), affine, F = 2, one block,
  // K = 1. conv_in: channel o = taps[o][0]·x[h−1, w] + taps[o][1]·ctx (the context tap at the centre)
  // + bias; every other conv uses its centre tap only, so it mixes the two channels of each pixel.
  const inTaps = [
    [0.6, 0.8],
    [-0.5, 0.3],
  ];
  const inBias = [0.05, -0.1];
  const M1 = [
    [1.2, -0.4],
    [0.3, 0.9],
  ];
  const b1 = [0.02, -0.05];
  const M2 = [
    [-0.6, 0.5],
    [0.7, 0.2],
  ];
  const b2 = [0.03, 0.01];
  // conv_out: row 0 gives s_raw, row 1 gives t.
  const U = [
    [0.5, -0.3],
    [-1, 0.4],
  ];
  const bOut = [0, 0.25];
  const scale = 0.9;
  type Bn = { weight: number[]; bias: number[]; mean: number[]; variance: number[] };
  const bn: Record<'in' | 'blocks.0.conv1' | 'blocks.0.conv2', Bn> = {
    in: { weight: [1.5, -0.7], bias: [0.1, 0.4], mean: [0.2, -0.3], variance: [0.5, 2] },
    'blocks.0.conv1': { weight: [0.9, 1.1], bias: [-0.2, 0.05], mean: [-0.1, 0.25], variance: [1.5, 0.8] },
    'blocks.0.conv2': { weight: [1.3, -0.8], bias: [0.02, -0.04], mean: [0.05, -0.15], variance: [0.7, 1.3] },
  };
  const convs = Object.keys(bn) as (keyof typeof bn)[];

  const build = () => {
    const net = new JsFlowNet(flow([1, 3, 3], [coupling('checkerboard', 0, true, resnet(2, 1, 'batch'))], 1));
    const set = (name: string, v: ArrayLike<number>) => net.setTensor(`layers.0.${name}`, v);
    const centre = (M: number[][]) => {
      const w = new Float64Array(M.length * M[0].length * 9);
      M.forEach((r, o) => {
        r.forEach((v, i) => {
          w[(o * r.length + i) * 9 + 4] = v;
        });
      });
      return w;
    };
    const wIn = new Float64Array(2 * 2 * 9);
    inTaps.forEach(([above, k], o) => {
      wIn[(o * 2 + 0) * 9 + 0 * 3 + 1] = above; // input channel 0 (data), tap dh = 0, dw = 1
      wIn[(o * 2 + 1) * 9 + 1 * 3 + 1] = k; // input channel 1 (context), centre tap
    });
    set('net.in.weight', wIn);
    set('net.in.bias', inBias);
    set('net.blocks.0.conv1.weight', centre(M1));
    set('net.blocks.0.conv1.bias', b1);
    set('net.blocks.0.conv2.weight', centre(M2));
    set('net.blocks.0.conv2.bias', b2);
    set('net.out.weight', centre(U));
    set('net.out.bias', bOut);
    set('scale', [scale]);
    for (const name of convs) {
      set(`net.${name}.bn.weight`, bn[name].weight);
      set(`net.${name}.bn.bias`, bn[name].bias);
      set(`net.${name}.bn.running_mean`, bn[name].mean);
      set(`net.${name}.bn.running_var`, bn[name].variance);
    }
    return net;
  };

  type Stats = { mean: number[]; variance: number[] };
  /**
   * z and the log-det computed pixel by pixel (each pixel a 2-vector of channels). `train`: every bn uses
   * the mean and biased variance over all N·3·3 pixels, else its running averages. Also returns the
   * statistics each bn used.
   */
  function expected(xs: number[][], ks: number[], train: boolean) {
    const used = {} as Record<keyof typeof bn, Stats>;
    const relu2 = (v: number[]) => v.map((a) => Math.max(a, 0));
    const mix = (M: number[][], b: number[], v: number[]) => M.map((r, o) => r[0] * v[0] + r[1] * v[1] + b[o]);
    const norm = (name: keyof typeof bn, hs: number[][]) => {
      const p = bn[name];
      let st: Stats = { mean: p.mean, variance: p.variance };
      if (train) {
        const mean = [0, 1].map((c) => hs.reduce((s, h) => s + h[c], 0) / hs.length);
        const variance = [0, 1].map((c) => hs.reduce((s, h) => s + (h[c] - mean[c]) ** 2, 0) / hs.length);
        st = { mean, variance };
      }
      used[name] = st;
      return hs.map((h) =>
        h.map((v, c) => ((v - st.mean[c]) / Math.sqrt(st.variance[c] + 1e-5)) * p.weight[c] + p.bias[c]),
      );
    };
    const pre: number[][] = []; // conv_in at pixel (n, h, w), index n·9 + h·3 + w
    xs.forEach((x, n) => {
      for (let h = 0; h < 3; h++) {
        for (let w = 0; w < 3; w++) {
          // The conditioner sees only the passing pixels (h + w even); above (h − 1, w) is zero padding at h = 0.
          const above = h > 0 && (h - 1 + w) % 2 === 0 ? x[(h - 1) * 3 + w] : 0;
          pre.push(inTaps.map((t, o) => t[0] * above + t[1] * ks[n] + inBias[o]));
        }
      }
    });
    const h0 = norm('in', pre);
    const a = norm(
      'blocks.0.conv1',
      h0.map((v) => mix(M1, b1, relu2(v))),
    );
    const r = norm(
      'blocks.0.conv2',
      a.map((v) => mix(M2, b2, relu2(v))),
    );
    const out = h0.map((v, i) => mix(U, bOut, relu2([v[0] + r[i][0], v[1] + r[i][1]])));
    const z: number[] = [];
    const logdet: number[] = [];
    xs.forEach((x, n) => {
      let ld = 0;
      for (let p = 0; p < 9; p++) {
        if ((Math.floor(p / 3) + (p % 3)) % 2 === 0) {
          z.push(x[p]);
          continue;
        }
        const s = scale * Math.tanh(out[n * 9 + p][0]);
        z.push(x[p] * Math.exp(s) + out[n * 9 + p][1]);
        ld += s;
      }
      logdet.push(ld);
    });
    return { z, logdet, used };
  }

  const xs = [
    [0.3, -1.1, 0.8, 1.4, -0.2, 0.6, -0.9, 0.5, 1.7],
    [-0.7, 0.4, -1.5, 0.2, 1.1, -0.3, 0.9, -1.2, 0.1],
  ];
  const ks = [0.4, -0.8];
  const N = xs.length;
  const x = xs.flat();

  it('eval: y = (h − running_mean)/√(running_var + 1e-5)·bn.weight + bn.bias after each conv (hand computation)', () => {
    const net = build();
    for (const n of [0, 1]) {
      const want = expected([xs[n]], [ks[n]], false);
      const got = net.forward(xs[n], 1, [ks[n]]);
      expect(maxAbsDiff(got.z, xs[n]), 'the layer does something').toBeGreaterThan(1e-2);
      expectClose(`z[${n}]`, got.z, want.z, 1e-14);
      expectClose(`logdet[${n}]`, got.logdet, want.logdet, 1e-14);
    }
    const want = expected(xs, ks, false);
    const { z, logdet } = net.forward(x, N, ks);
    expectClose('z', z, want.z, 1e-14);
    expectClose('logdet', logdet, want.logdet, 1e-14);
    expectClose('inverse', net.inverse(z, N, ks).x, x, 1e-13);
  });

  it('train: batch mean and biased variance over N, H, W per channel (hand computation); inverse stays in eval mode', () => {
    const net = build();
    const want = expected(xs, ks, true);
    const { z, logdet } = net.forward(x, N, ks, { train: true });
    expectClose('z', z, want.z, 1e-13);
    expectClose('logdet', logdet, want.logdet, 1e-13);
    expect(maxAbsDiff(z, net.forward(x, N, ks).z), 'train differs from eval').toBeGreaterThan(1e-2);
    expect(maxAbsDiff(net.logProb(x, N, ks, { train: true }), net.logProb(x, N, ks)), 'logProb').toBeGreaterThan(1e-3);
    // The inverse uses the running averages, so it undoes the eval forward, not the training one.
    expect(maxAbsDiff(net.inverse(z, N, ks).x, x)).toBeGreaterThan(1e-2);
    expectClose('inverse of eval', net.inverse(net.forward(x, N, ks).z, N, ks).x, x, 1e-13);
  });

  it('train ignores the running averages and the normalised convs’ biases, changes no buffer; eval depends on both', () => {
    const net = build();
    const before = net.bufferInfo().map(({ name }) => Array.from(net.getTensor(name)));
    const train = net.forward(x, N, ks, { train: true });
    const evalZ = net.forward(x, N, ks).z;
    expect(net.bufferInfo().map(({ name }) => Array.from(net.getTensor(name)))).toEqual(before);
    for (const name of convs) {
      // A constant added to a channel before its batch normalisation cancels against the batch mean.
      const shifted = build();
      shifted.setTensor(`layers.0.net.${name}.bias`, [0.7, -0.45]);
      expectClose(`${name}.bias, train`, shifted.forward(x, N, ks, { train: true }).z, train.z, 1e-12);
      expect(maxAbsDiff(shifted.forward(x, N, ks).z, evalZ), `${name}.bias, eval`).toBeGreaterThan(1e-3);
      for (const stat of ['running_mean', 'running_var']) {
        const other = build();
        other.setTensor(`layers.0.net.${name}.bn.${stat}`, [1.7, 0.35]);
        expect(Array.from(other.forward(x, N, ks, { train: true }).z), `${name} ${stat}, train`).toEqual(
          Array.from(train.z),
        );
        expect(maxAbsDiff(other.forward(x, N, ks).z, evalZ), `${name} ${stat}, eval`).toBeGreaterThan(1e-3);
      }
    }
  });

  it('train couples the examples through the batch statistics; eval does not', () => {
    const net = build();
    const other = x.slice();
    for (let p = 9; p < 18; p++) other[p] += 0.5; // only example 1 changes
    const a = net.forward(x, N, ks, { train: true }).z.slice(0, 9);
    const b = net.forward(other, N, ks, { train: true }).z.slice(0, 9);
    expect(maxAbsDiff(a, b), 'train').toBeGreaterThan(1e-3);
    expect(Array.from(net.forward(other, N, ks).z.slice(0, 9)), 'eval').toEqual(
      Array.from(net.forward(x, N, ks).z.slice(0, 9)),
    );
  });

  it('eval equals train once every running average is the batch statistic of its conv', () => {
    const net = build();
    const train = net.forward(x, N, ks, { train: true });
    expect(maxAbsDiff(net.forward(x, N, ks).z, train.z)).toBeGreaterThan(1e-2);
    const { used } = expected(xs, ks, true);
    for (const name of convs) {
      net.setTensor(`layers.0.net.${name}.bn.running_mean`, used[name].mean);
      net.setTensor(`layers.0.net.${name}.bn.running_var`, used[name].variance);
    }
    const ev = net.forward(x, N, ks);
    expectClose('z', ev.z, train.z, 1e-12);
    expectClose('logdet', ev.logdet, train.logdet, 1e-12);
  });
});

describe('JsFlowNet base distributions', () => {
  it('normal: −½‖z‖² − (D/2)·log 2π', () => {
    const net = new JsFlowNet(flow([2, 1, 1], [{ type: 'scale' }]));
    net.setTensor('layers.0.log_scale', [0.5, -0.25]);
    const lp = net.logProb([1, -2], 1);
    const z = [Math.exp(0.5), -2 * Math.exp(-0.25)];
    expect(lp[0]).toBeCloseTo(-0.5 * (z[0] ** 2 + z[1] ** 2) - Math.log(2 * Math.PI) + 0.25, 13);
  });

  it('logistic: −Σ(softplus(z) + softplus(−z)), stable far in the tails', () => {
    const net = new JsFlowNet(flow([4, 1, 1], [{ type: 'reverse' }], 0, 'logistic'));
    const lp = net.logProb([0, 1.5, 800, -800], 1);
    const mid = -2 * Math.log(2) + (-1.5 - 2 * Math.log1p(Math.exp(-1.5)));
    expect(lp[0]).toBeCloseTo(mid - 1600, 9);
    expect(Number.isFinite(lp[0])).toBe(true);
  });
});

describe('JsFlowNet errors', () => {
  const expectConfig = (spec: unknown, message: RegExp) => {
    expect(() => checkFlowNetSpec(spec as FlowNetSpec)).toThrow(ConfigError);
    expect(() => checkFlowNetSpec(spec as FlowNetSpec)).toThrow(message);
    expect(() => new JsFlowNet(spec as FlowNetSpec)).toThrow(ConfigError);
  };

  it('rejects invalid specs with a ConfigError naming the layer and the size', () => {
    // The second squeeze sees [4, 3, 3].
    expectConfig(flow([1, 6, 6], [{ type: 'squeeze' }, { type: 'squeeze' }]), /layer 1 \(squeeze\).*H = 3, W = 3/);
    expectConfig(flow([3, 2, 2], [coupling('channel', 0, true, mlp(4, 1))]), /layer 0 \(coupling\).*C = 3/);
    // A channel mask after a split of 4 channels into 2 is fine; after a split of 2 into 1 it is not.
    expect(() =>
      checkFlowNetSpec(flow([4, 2, 2], [{ type: 'split' }, coupling('channel', 0, true, mlp(4, 1))])),
    ).not.toThrow();
    expectConfig(flow([2, 2, 2], [{ type: 'split' }, coupling('channel', 0, true, mlp(4, 1))]), /layer 1.*C = 1/);
    expectConfig(flow([2, 2, 2], [{ type: 'split' }, { type: 'split' }]), /layer 1 \(split\).*C = 1/);
    expectConfig(flow([1, 1, 1], [made('maf', 'forward')]), /layer 0 \(made\).*D = 1/);
    expectConfig(flow([1, 1, 1], [coupling('random', 0, true, mlp(4, 1))]), /layer 0 \(coupling\).*random.*D = 1/);
    expectConfig(flow([2, 1, 1], [{ type: 'split' }, coupling('random', 1, false, mlp(4, 1))]), /layer 1.*D = 1/);
    expect(() => checkFlowNetSpec(flow([2, 1, 1], [coupling('random', 0, true, mlp(4, 1))]))).not.toThrow();
    expectConfig(
      flow([4, 1, 1], [{ type: 'split' }, { type: 'split' }, made('iaf', 'forward')]),
      /layer 2 \(made\).*D = 1/,
    );
    expectConfig(flow([2, 1, 1], [{ type: 'nope' } as unknown as LayerSpec]), /layer 0.*type/);
    expectConfig(flow([2, 1, 1], [coupling('diagonal' as 'channel', 0, true, mlp(4, 1))]), /mask/);
    expectConfig(flow([2, 1, 1], [coupling('alternate', 2 as unknown as 0, true, mlp(4, 1))]), /parity/);
    expectConfig(
      flow([2, 1, 1], [coupling('alternate', 0, true, { type: 'transformer' } as unknown as NetSpec)]),
      /net.type/,
    );
    expectConfig(flow([2, 1, 1], [coupling('alternate', 0, true, mlp(0, 1))]), /hidden/);
    expectConfig(flow([2, 1, 1], [coupling('alternate', 0, true, mlp(4, 1.5))]), /depth/);
    expectConfig(flow([2, 2, 2], [coupling('checkerboard', 0, true, resnet(-1, 1))]), /channels/);
    expectConfig(
      flow([2, 2, 2], [coupling('checkerboard', 0, true, resnet(2, 1, 'group' as 'batch'))]),
      /layer 0 \(coupling\).*norm.*'batch'/,
    );
    expectConfig(flow([2, 1, 1], [{ type: 'batchnorm', momentum: 0, eps: 1e-5 }]), /momentum/);
    expectConfig(flow([2, 1, 1], [{ type: 'batchnorm', momentum: 0.1, eps: 0 }]), /eps/);
    expectConfig(flow([2, 1, 1], [{ type: 'actnorm', bias: 1 } as LayerSpec]), /unknown field 'bias'/);
    expectConfig(flow([2, 0, 1], [{ type: 'actnorm' }]), /shape\[1\]/);
    expectConfig(flow([2.5, 1, 1], [{ type: 'actnorm' }]), /shape\[0\]/);
    expectConfig(flow([2, 1, 1], [{ type: 'actnorm' }], -1), /context/);
    expectConfig(flow([2, 1, 1], [{ type: 'actnorm' }], 0, 'cauchy' as unknown as 'normal'), /base/);
    expectConfig(flow([2, 1, 1], []), /layers/);
    expectConfig(null, /object/);
  });

  it('rejects wrong inputs: ShapeError for sizes and a missing context, DataError for non-finite values', () => {
    const net = new JsFlowNet(flow([2, 2, 2], [coupling('checkerboard', 0, true, resnet(2, 0))], 3));
    const x = new Float64Array(16);
    const ctx = new Float64Array(6);
    expect(() => net.forward(x, 2, ctx)).not.toThrow();
    expect(() => net.forward(x.subarray(1), 2, ctx)).toThrow(ShapeError);
    expect(() => net.forward(x, 2)).toThrow(/context missing/);
    expect(() => net.forward(x, 2)).toThrow(ShapeError);
    expect(() => net.forward(x, 2, ctx.subarray(1))).toThrow(ShapeError);
    expect(() => net.forward(x, 1.5, ctx)).toThrow(ShapeError);
    expect(() => net.inverse(x.subarray(2), 2, ctx)).toThrow(ShapeError);
    expect(() => net.logProb(x, 2)).toThrow(ShapeError);
    const bad = x.slice();
    bad[5] = Number.NaN;
    expect(() => net.forward(bad, 2, ctx)).toThrow(DataError);
    expect(() => net.inverse(bad, 2, ctx)).toThrow(DataError);
    expect(() => net.forward(x, 2, [0, 0, Number.POSITIVE_INFINITY, 0, 0, 0])).toThrow(DataError);
    const plain = new JsFlowNet(flow([2, 1, 1], [{ type: 'actnorm' }]));
    expect(() => plain.forward([1, 2], 1, [1])).toThrow(ShapeError);
    expect(plain.forward([], 0).z.length).toBe(0);
  });
});

describe('the vector Real NVP preset', () => {
  it('is K affine couplings of MLP conditioners on alternating coordinates, parities 0, 1, 0, …', () => {
    const spec = realNvpVectorSpec({ dim: 3, couplings: 3, hidden: 5, depth: 2 });
    expect(spec).toMatchObject({ shape: [3, 1, 1], context: 0, base: 'normal' });
    const net = { type: 'mlp', hidden: 5, depth: 2 };
    expect(spec.layers).toEqual(
      [0, 1, 0].map((parity) => ({ type: 'coupling', mask: 'alternate', parity, affine: true, net })),
    );
    // Coupling k's tensors: the MLP D → H → H → 2D, then scale [D] (what arflow ≤ 0.1.0 named couplings.{k}.…).
    const k1 = flowNetTensorInfo(spec).params.filter((p) => p.name.startsWith('layers.1.'));
    expect(k1).toEqual([
      { name: 'layers.1.net.0.weight', shape: [5, 3] },
      { name: 'layers.1.net.0.bias', shape: [5] },
      { name: 'layers.1.net.1.weight', shape: [5, 5] },
      { name: 'layers.1.net.1.bias', shape: [5] },
      { name: 'layers.1.net.2.weight', shape: [6, 5] },
      { name: 'layers.1.net.2.bias', shape: [6] },
      { name: 'layers.1.scale', shape: [3] },
    ]);
    // Coupling k passes coordinate d through when (d + k) is even: y_d = x_d exactly there.
    const js = new JsFlowNet(spec);
    const rng = new Rng(2);
    for (const { name, shape } of js.paramInfo())
      js.setTensor(
        name,
        uniform(
          rng,
          shape.reduce((a, b) => a * b, 1),
          0.5,
        ),
      );
    const single = new JsFlowNet({ ...spec, layers: [spec.layers[1]] });
    for (const { name } of single.paramInfo())
      single.setTensor(name, js.getTensor(name.replace('layers.0.', 'layers.1.')));
    const x = [0.3, -1.1, 0.8];
    const { z } = single.forward(x, 1);
    expect(z[1]).toBe(x[1]);
    expect(z[0]).not.toBe(x[0]);
    expect(z[2]).not.toBe(x[2]);
  });

  it('realNvpVectorConfigOf inverts it and refuses every other spec', () => {
    const cfg = { dim: 4, couplings: 5, hidden: 7, depth: 1, context: 2 };
    expect(realNvpVectorConfigOf(realNvpVectorSpec(cfg))).toEqual(cfg);
    expect(realNvpVectorConfigOf(realNvpVectorSpec({ dim: 2 }))).toEqual({
      dim: 2,
      couplings: 8,
      hidden: 64,
      depth: 2,
      context: 0,
    });
    const base = realNvpVectorSpec({ dim: 2, couplings: 2 });
    const swapped = { ...base, layers: [base.layers[1], base.layers[0]] };
    for (const other of [
      niceSpec({ dim: 2 }),
      mafSpec({ dim: 2 }),
      swapped,
      { ...base, base: 'logistic' as const },
      { ...base, shape: [2, 2, 1] as [number, number, number] },
      { ...base, layers: [...base.layers, { type: 'reverse' as const }] },
    ]) {
      expect(realNvpVectorConfigOf(other), JSON.stringify(other)).toBeNull();
    }
    expect(() => realNvpVectorSpec({ dim: 1 })).toThrow(/dim must be a whole number ≥ 2, got 1/);
    expect(() => realNvpVectorSpec({ dim: 2, couplings: 2 ** 31 })).toThrow(/couplings 2147483648 gives more than/);
  });
});
