/**
 * The native FlowNet (Rust on candle) against the float64 TypeScript reference with identical random
 * parameters and buffers, for every layer type in image and vector stacks; then the `Flow` API:
 * learning (2-D densities below the Gaussian baseline, Fashion-MNIST below 8 bits/dim), checkpoints,
 * and clear errors for bad input.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { FlowNetSpec } from '../src/backend/flownet-types.js';
import { JsFlowNet } from '../src/backend/js/flownet.js';
import { fashionMnistAvailable, loadFashionMnist } from '../src/data/fashion-mnist.js';
import { CheckpointError, ConfigError, DataError, ShapeError } from '../src/errors.js';
import { sample2d } from '../src/flows/data2d.js';
import { gaussianNll } from '../src/models/flow.js';
import { Flow, Glow, IAF, MAF, NICE, RealNVPImage } from '../src/models/flownet.js';
import { glowSpec, realNvpImageSpec } from '../src/models/presets.js';
import { Rng } from '../src/util/rng.js';
import { expectClose } from './helpers/numeric.js';

const dir = mkdtempSync(join(tmpdir(), 'arflow-flownet-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const resnet = { type: 'resnet', channels: 6, blocks: 1, norm: 'weight' } as const;
const IMAGE_STACK: FlowNetSpec = {
  shape: [2, 4, 4],
  context: 3,
  base: 'normal',
  layers: [
    { type: 'coupling', mask: 'checkerboard', parity: 0, affine: true, net: resnet },
    { type: 'actnorm' },
    { type: 'batchnorm', momentum: 0.1, eps: 1e-4 },
    { type: 'inv1x1' },
    { type: 'squeeze' },
    { type: 'coupling', mask: 'channel', parity: 1, affine: true, net: { ...resnet, norm: 'none' } },
    { type: 'coupling', mask: 'checkerboard', parity: 0, affine: true, net: { ...resnet, norm: 'batch' } },
    { type: 'split' },
    { type: 'coupling', mask: 'checkerboard', parity: 1, affine: false, net: { type: 'mlp', hidden: 8, depth: 2 } },
    { type: 'coupling', mask: 'random', parity: 1, affine: true, net: { ...resnet, norm: 'batch' } },
    { type: 'reverse' },
    { type: 'scale' },
  ],
};
const VECTOR_STACK: FlowNetSpec = {
  shape: [5, 1, 1],
  context: 2,
  base: 'logistic',
  layers: [
    { type: 'made', kind: 'maf', hidden: 16, depth: 2, order: 'forward' },
    { type: 'reverse' },
    { type: 'made', kind: 'iaf', hidden: 16, depth: 1, order: 'reverse' },
    { type: 'coupling', mask: 'alternate', parity: 1, affine: true, net: { type: 'mlp', hidden: 8, depth: 2 } },
    { type: 'coupling', mask: 'halves', parity: 0, affine: false, net: { type: 'mlp', hidden: 8, depth: 1 } },
    { type: 'coupling', mask: 'halves', parity: 1, affine: true, net: { type: 'mlp', hidden: 8, depth: 1 } },
    { type: 'coupling', mask: 'random', parity: 0, affine: true, net: { type: 'mlp', hidden: 8, depth: 1 } },
    { type: 'inv1x1' },
  ],
};

/** A native flow and the reference holding the same random, non-trivial parameters and buffers. */
function pair(spec: FlowNetSpec, seed: number): { flow: Flow; js: JsFlowNet } {
  const flow = Flow.create(spec, { seed });
  const js = new JsFlowNet(spec);
  const rng = new Rng(seed + 1);
  for (const p of flow.tensorInfo().params) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = p.name.endsWith('weight_g') ? rng.range(0.8, 1.5) : rng.range(-0.3, 0.3);
    flow.backend.setParam(p.name, v);
    js.setTensor(p.name, v);
  }
  for (const b of flow.tensorInfo().buffers) {
    const n = b.shape.reduce((a, c) => a * c, 1);
    let v = flow.backend.getBuffer(b.name);
    if (b.name.endsWith('running_mean')) v = Float32Array.from({ length: n }, () => rng.range(-0.5, 0.5));
    if (b.name.endsWith('running_var')) v = Float32Array.from({ length: n }, () => rng.range(0.5, 2));
    if (b.name.endsWith('perm')) v = Float32Array.from({ length: n }, (_, i) => (i + 1) % n);
    if (b.name.endsWith('sign_s')) v = Float32Array.from({ length: n }, (_, i) => (i % 2 === 0 ? -1 : 1));
    flow.backend.setBuffer(b.name, v);
    js.setTensor(b.name, v);
  }
  return { flow, js };
}

function randomData(n: number, d: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * d }, () => rng.normal());
}

function oneHot(labels: number[], k: number): Float32Array {
  const c = new Float32Array(labels.length * k);
  labels.forEach((l, i) => {
    c[i * k + l] = 1;
  });
  return c;
}

describe('native FlowNet against the TypeScript reference', () => {
  for (const [name, spec] of [
    ['image stack (couplings, actnorm, batchnorm, 1x1 conv, squeeze, split, reverse, scale)', IMAGE_STACK],
    ['vector stack (MAF, IAF, coupling, 1x1 conv, logistic base)', VECTOR_STACK],
  ] as const) {
    it(`${name}: encode, decode, log-density and training loss agree`, async () => {
      const { flow, js } = pair(spec, 3);
      const n = 4;
      const x = randomData(n, flow.dim, 5);
      const ctx =
        spec.context > 0
          ? oneHot(
              [0, 1, 2, 1].map((l) => l % spec.context),
              spec.context,
            )
          : undefined;
      const want = js.forward(x, n, ctx);
      const r = flow.backend.encode(x, ctx ?? null, n);
      expectClose(`${name} z`, r.z, want.z, 1e-4);
      expectClose(`${name} logdet`, r.logdet, want.logdet, 1e-4);
      const back = flow.backend.decode(r.z, ctx ?? null, n);
      const inv = js.inverse(want.z, n, ctx);
      expectClose(`${name} decode`, back.x, inv.x, 1e-4);
      expectClose(`${name} decode vs x`, back.x, x, 1e-4);
      const lp = await flow.logProb(x, { context: ctx });
      expectClose(`${name} logProb`, lp, js.logProb(x, n, ctx), 1e-4);
      // Training mode: batch statistics in batch norm.
      const { loss } = await flow.backend.lossAndGrads(x, ctx ?? null, n);
      const trainLp = js.logProb(x, n, ctx, { train: true });
      const jsLoss = -trainLp.reduce((a, b) => a + b, 0) / n;
      expect(Math.abs(loss - jsLoss)).toBeLessThan(1e-4 * Math.max(1, Math.abs(jsLoss)));
    });
  }

  it('the presets agree with the reference (Real NVP multi-scale with batch norm, Glow)', async () => {
    for (const spec of [
      realNvpImageSpec({ shape: [1, 8, 8], channels: 4, blocks: 1, norm: 'batchnorm' }),
      realNvpImageSpec({ shape: [1, 8, 8], channels: 4, blocks: 1, convNorm: 'batch' }),
      glowSpec({ shape: [1, 8, 8], levels: 2, steps: 2, channels: 4 }),
    ]) {
      const { flow, js } = pair(spec, 9);
      const x = randomData(3, 64, 2);
      expectClose('preset logProb', await flow.logProb(x), js.logProb(x, 3), 1e-4);
    }
  });
});

describe('Flow: learning', () => {
  const train = sample2d('moons', 4000, 1);
  const test = sample2d('moons', 2000, 2);
  const gauss = gaussianNll(train, test, 2);
  for (const [name, make, steps] of [
    ['MAF', () => MAF.create({ dim: 2, layers: 4, hidden: 32 }), 400],
    ['NICE', () => NICE.create({ dim: 2, layers: 4, hidden: 32, depth: 2 }), 400],
    ['IAF', () => IAF.create({ dim: 2, layers: 4, hidden: 32 }), 300],
  ] as const) {
    it(`${name} on two moons: test NLL clearly below a full-covariance Gaussian`, async () => {
      const flow = make();
      const s = await flow.fit(train, { steps, batchSize: 128, lr: 3e-3, seed: 1 });
      expect(s.steps).toBe(steps);
      const { nll } = await flow.testNll(test);
      expect(nll, `${name} ${nll} vs Gaussian ${gauss}`).toBeLessThan(gauss - 0.3);
    });
  }

  it.skipIf(!fashionMnistAvailable())(
    'Glow and Real NVP on a Fashion-MNIST subset: test bits/dim clearly below the uniform 8',
    async () => {
      const tr = loadFashionMnist('train', { limit: 1000 });
      const te = loadFashionMnist('test', { limit: 200 });
      for (const flow of [
        Glow.create({ shape: [1, 28, 28], levels: 2, steps: 2, channels: 16 }),
        RealNVPImage.create({ shape: [1, 28, 28], scales: 2, channels: 8, blocks: 1 }),
      ]) {
        const before = (await flow.bitsPerDim(te.images)).bpd;
        await flow.fit(tr.images, { steps: 25, batchSize: 32, lr: 2e-3, clip: 100 });
        const { bpd } = await flow.bitsPerDim(te.images);
        expect(bpd, `bits/dim ${before} → ${bpd}`).toBeLessThan(7);
        expect(bpd).toBeLessThan(before - 1);
        const imgs = flow.sampleImages(4, { temperature: 0.7 });
        expect(imgs.length).toBe(4 * 784);
      }
    },
  );

  it('a class-conditional flow changes its samples with the label', async () => {
    const spec = glowSpec({ shape: [1, 4, 4], levels: 1, steps: 2, channels: 4, context: 3 });
    const { flow } = pair(spec, 4);
    const z = flow.sampleLatent(2, { seed: 1 });
    const same = new Float32Array([...z.subarray(0, 16), ...z.subarray(0, 16)]);
    const y = flow.decode(same, { labels: [0, 2] });
    let diff = 0;
    for (let i = 0; i < 16; i++) diff = Math.max(diff, Math.abs(y[i] - y[16 + i]));
    expect(diff).toBeGreaterThan(1e-3);
  });
});

describe('Flow: checkpoints and errors', () => {
  it('save/load keeps parameters, buffers and log-densities; bad files are CheckpointErrors', async () => {
    const { flow } = pair(IMAGE_STACK, 6);
    const x = randomData(3, flow.dim, 8);
    const ctx = oneHot([0, 1, 2], 3);
    const path = join(dir, 'net.safetensors');
    await flow.save(path, { train: { steps: 1 } });
    const back = Flow.load(path);
    expect(back.trainInfo).toEqual({ steps: 1 });
    expectClose(
      'reloaded logProb',
      await back.logProb(x, { context: ctx }),
      await flow.logProb(x, { context: ctx }),
      1e-6,
    );
    expect(Array.from(back.backend.getBuffer('layers.3.perm'))).toEqual(
      Array.from(flow.backend.getBuffer('layers.3.perm')),
    );
    const rv = 'layers.6.net.in.bn.running_var';
    expect(Array.from(back.backend.getBuffer(rv))).toEqual(Array.from(flow.backend.getBuffer(rv)));
    // A corrupt buffer (not a permutation), a truncated file and a foreign file.
    const bytes = readFileSync(path);
    const header = Number(bytes.readBigUInt64LE(0));
    const meta = JSON.parse(bytes.subarray(8, 8 + header).toString()) as Record<
      string,
      { data_offsets: [number, number] }
    >;
    const [start] = meta['layers.3.perm'].data_offsets;
    const bad = Buffer.from(bytes);
    bad.writeFloatLE(0, 8 + header + start);
    bad.writeFloatLE(0, 8 + header + start + 4);
    writeFileSync(join(dir, 'bad-perm.safetensors'), bad);
    expect(() => Flow.load(join(dir, 'bad-perm.safetensors'))).toThrow(CheckpointError);
    writeFileSync(join(dir, 'short.safetensors'), bytes.subarray(0, bytes.length - 10));
    expect(() => Flow.load(join(dir, 'short.safetensors'))).toThrow(CheckpointError);
  });

  it('bad input gets clear, typed errors', async () => {
    expect(() => Flow.create({ shape: [1, 5, 4], context: 0, base: 'normal', layers: [{ type: 'squeeze' }] })).toThrow(
      /squeeze needs an even height and width/,
    );
    expect(() => RealNVPImage.create({ shape: [1, 28, 28], scales: 4 })).toThrow(ConfigError);
    const flow = MAF.create({ dim: 3, layers: 1 });
    await expect(flow.logProb(new Float32Array(4))).rejects.toThrow(ShapeError);
    await expect(flow.logProb(new Float32Array([0, Number.NaN, 0]))).rejects.toThrow(DataError);
    expect(() => flow.sample(2, { temperature: 0 })).toThrow(ConfigError);
    expect(() => flow.sample(2, { temperature: -1 })).toThrow(/temperature/);
    await expect(flow.fit(new Float32Array([1, 2, Number.POSITIVE_INFINITY]), { steps: 1 })).rejects.toThrow(DataError);
    const cond = Glow.create({ shape: [1, 4, 4], levels: 1, steps: 1, channels: 2, context: 10 });
    await expect(cond.fit(new Uint8Array(32), { steps: 1 })).rejects.toThrow(/conditional/);
    await expect(cond.fit(new Uint8Array(32), { steps: 1, labels: [1, 12] })).rejects.toThrow(DataError);
    expect(() => cond.sampleImages(1, { labels: [3] })).not.toThrow();
    await expect(cond.fit(new Float32Array(32), { steps: 1, labels: [1, 2] })).rejects.toThrow(/Uint8Array/);
  });
});
