/**
 * The Pixel-RNN model (src/models/pixel-rnn.ts) and its data helpers (src/data/pixel-data.ts) on the
 * pure-TypeScript backend with small images: binarisation and the per-pixel baseline by hand, learning
 * a dependency the baseline cannot see, sampling and completion, checkpoints and exact resume, typed
 * errors. The native backend against this one: native-pixel.test.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pixelNll } from '../src/backend/js/pixel.js';
import { binarizeImages, fitPixelBaseline, pixelBaselineNll } from '../src/data/pixel-data.js';
import { CheckpointError, ConfigError, DataError, ShapeError } from '../src/errors.js';
import { saveSafetensors } from '../src/io/safetensors.js';
import { PixelRNN } from '../src/models/pixel-rnn.js';
import { Rng } from '../src/util/rng.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'arflow-pixel-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const small = { rows: 6, cols: 5, hidden: 6, layers: 1 } as const;

/**
 * Binary images whose every pixel equals the image's first pixel, a fair coin: the per-pixel baseline
 * pays ln 2 for every pixel (30 ln 2 ≈ 20.8 nats), a model that looks back pays it once.
 */
function coinImages(n: number, rng: Rng, P: number): Uint8Array {
  const out = new Uint8Array(n * P);
  for (let i = 0; i < n; i++) out.fill(rng.uniform() < 0.5 ? 1 : 0, i * P, (i + 1) * P);
  return out;
}

describe('pixel data', () => {
  it('binarises with one seeded uniform per pixel in order: 1 where u < v/255', () => {
    const v = Uint8Array.from([0, 255, 128, 64, 200, 1]);
    const rng = new Rng(9);
    const want = Uint8Array.from(v, (x) => (rng.uniform() < x / 255 ? 1 : 0));
    const got = binarizeImages(v, 9);
    expect([...got]).toEqual([...want]);
    expect(got[0]).toBe(0);
    expect(got[1]).toBe(1);
    // Reproducible, and a prefix of a longer set is binarised the same (so --test-n keeps the images).
    expect([...binarizeImages(v.subarray(0, 3), 9)]).toEqual([...got.subarray(0, 3)]);
    // The rate follows the intensity.
    const many = binarizeImages(new Uint8Array(20000).fill(51), 1);
    expect(many.reduce((a, b) => a + b, 0) / 20000).toBeCloseTo(0.2, 1);
  });

  it('fits the per-pixel baseline with add-one smoothing and scores nats per image by hand', () => {
    // Two pixels, three binary training images: pixel 0 is 1,1,0; pixel 1 is 0,0,0.
    const train = Uint8Array.from([1, 0, 1, 0, 0, 0]);
    const b = fitPixelBaseline(train, 2, 'bernoulli');
    // p(pixel0 = 1) = (2 + 1)/(3 + 2), p(pixel1 = 0) = (3 + 1)/(3 + 2).
    const want = -(Math.log(3 / 5) + Math.log(4 / 5));
    expect(pixelBaselineNll(b, Uint8Array.from([1, 0]))).toBeCloseTo(want, 12);
    // Categorical: 256 levels, a value never seen gets (0 + 1)/(n + 256).
    const c = fitPixelBaseline(Uint8Array.from([7, 7]), 1, 'categorical');
    expect(pixelBaselineNll(c, Uint8Array.from([9]))).toBeCloseTo(-Math.log(1 / 258), 12);
    expect(() => fitPixelBaseline(Uint8Array.from([2]), 1, 'bernoulli')).toThrow(DataError);
    expect(() => fitPixelBaseline(new Uint8Array(3), 2, 'bernoulli')).toThrow(DataError);
  });
});

describe('PixelRNN on the TypeScript backend', () => {
  it('starts from seeded PyTorch-style weights and scores what the reference scores', async () => {
    const a = PixelRNN.create({ ...small, output: 'bernoulli' }, { backend: 'js', seed: 3 });
    const b = PixelRNN.create({ ...small, output: 'bernoulli' }, { backend: 'js', seed: 3 });
    const c = PixelRNN.create({ ...small, output: 'bernoulli' }, { backend: 'js', seed: 4 });
    const names = a.backend.paramInfo().map((p) => p.name);
    for (const name of names) expect([...a.backend.getParam(name)]).toEqual([...b.backend.getParam(name)]);
    expect([...a.backend.getParam('out2.weight')]).not.toEqual([...c.backend.getParam('out2.weight')]);
    // Bounds 1/√fan_in: the input conv's fan-in is 49.
    const w0 = a.backend.getParam('input_conv.weight');
    expect(Math.max(...w0.map(Math.abs))).toBeLessThanOrEqual(1 / 7);
    expect(Math.max(...w0.map(Math.abs))).toBeGreaterThan(0.1);
    const images = coinImages(3, new Rng(1), 30);
    const per = await a.nll(images);
    const params: Record<string, Float32Array> = {};
    for (const name of names) params[name] = a.backend.getParam(name);
    const ref = pixelNll(a.config, params, Float64Array.from(images), images, null).perImage;
    for (let i = 0; i < 3; i++) expect(per[i]).toBeCloseTo(ref[i], 9);
    const e = await a.evaluate(images);
    expect(e.natsPerImage).toBeCloseTo((ref[0] + ref[1] + ref[2]) / 3, 9);
    expect(e.bitsPerDim).toBeCloseTo(e.natsPerImage / (30 * Math.LN2), 12);
  });

  it('learns a dependency the per-pixel baseline cannot see, on held-out images', async () => {
    const P = 30;
    const rng = new Rng(5);
    const train = coinImages(256, rng, P);
    const test = coinImages(64, rng, P);
    const baseline = pixelBaselineNll(fitPixelBaseline(train, P, 'bernoulli'), test);
    expect(baseline).toBeGreaterThan(0.95 * P * Math.LN2);
    const model = PixelRNN.create({ ...small, output: 'bernoulli' }, { backend: 'js', seed: 1 });
    const before = (await model.evaluate(test)).natsPerImage;
    const s = await model.fit(train, { steps: 150, batchSize: 16, lr: 1e-2, logEvery: 1000 });
    expect(s.steps).toBe(150);
    const after = (await model.evaluate(test)).natsPerImage;
    // The first pixel costs ln 2 at best; the baseline pays about P·ln 2.
    expect(after).toBeLessThan(before / 2);
    expect(after).toBeLessThan(baseline / 3);
  }, 60_000);

  it('samples: seeded, completions keep the given rows, labels pick the class bias', async () => {
    const model = PixelRNN.create({ ...small, output: 'categorical', classes: 3 }, { backend: 'js', seed: 2 });
    const a = await model.sample({ n: 2, seed: 7, label: 1 });
    const b = await model.sample({ n: 2, seed: 7, label: [1, 1] });
    const c = await model.sample({ n: 2, seed: 8, label: 1 });
    expect(a.length).toBe(2 * 30);
    expect([...a]).toEqual([...b]);
    expect([...a]).not.toEqual([...c]);
    const given = new Uint8Array(2 * 30).map((_, i) => (i * 37) % 256);
    const done = await model.sample({ n: 2, seed: 7, label: [0, 2], top: { rows: 3, images: given } });
    for (let s = 0; s < 2; s++) {
      expect([...done.subarray(s * 30, s * 30 + 15)]).toEqual([...given.subarray(s * 30, s * 30 + 15)]);
    }
    await expect(model.sample({ n: 2, seed: 7 })).rejects.toThrow(ConfigError);
    await expect(model.sample({ n: 1, label: 3 })).rejects.toThrow(DataError);
    await expect(model.sample({ n: 1, label: 0, top: { rows: 7, images: given.subarray(0, 30) } })).rejects.toThrow(
      ConfigError,
    );
    await expect(model.sample({ n: 0 })).rejects.toThrow(ConfigError);
  });

  it('refuses images and labels that do not fit, with typed errors', async () => {
    const bern = PixelRNN.create({ ...small, output: 'bernoulli' }, { backend: 'js' });
    await expect(bern.nll(new Uint8Array(31))).rejects.toThrow(ShapeError);
    // An 8-bit image given to a Bernoulli model: binarise first.
    await expect(bern.nll(new Uint8Array(30).fill(3))).rejects.toThrow(/binarise/);
    await expect(bern.nll(new Uint8Array(30), [0])).rejects.toThrow(ConfigError);
    const cond = PixelRNN.create({ ...small, output: 'bernoulli', classes: 2 }, { backend: 'js' });
    await expect(cond.nll(new Uint8Array(30))).rejects.toThrow(ConfigError);
    await expect(cond.nll(new Uint8Array(30), [2])).rejects.toThrow(DataError);
    await expect(cond.fit(new Uint8Array(60), { steps: 1, labels: Uint8Array.from([0]) })).rejects.toThrow(ShapeError);
    expect(() => PixelRNN.create({ ...small, hidden: 0 }, { backend: 'js' })).toThrow(ConfigError);
    expect(() => PixelRNN.create({ ...small, cell: 'rnn' as 'lstm' }, { backend: 'js' })).toThrow(ConfigError);
  });

  it('saves and loads atomically; a resumed run ends bit-identical to the uninterrupted one', async () => {
    const P = 30;
    const train = coinImages(64, new Rng(3), P);
    const opts = { batchSize: 4, lr: 5e-3, seed: 11, logEvery: 1000 };
    const whole = PixelRNN.create({ ...small, cell: 'gru', output: 'bernoulli' }, { backend: 'js', seed: 6 });
    await whole.fit(train, { ...opts, steps: 6 });
    const first = PixelRNN.create({ ...small, cell: 'gru', output: 'bernoulli' }, { backend: 'js', seed: 6 });
    // The same run (6 steps, same schedule) stopped after its third step.
    const stop = new AbortController();
    const part = await first.fit(train, {
      ...opts,
      steps: 6,
      logEvery: 1,
      signal: stop.signal,
      onProgress: (p) => {
        if (p.step === 3) stop.abort();
      },
    });
    expect(part.steps).toBe(3);
    const path = join(dir, 'half.safetensors');
    await first.save(path, { optimizer: true, train: { step: 3 } });
    const loaded = PixelRNN.load(path, { backend: 'js' });
    expect(loaded.config).toEqual(first.config);
    expect(loaded.trainInfo).toEqual({ step: 3 });
    expect(loaded.hasOptimizerState).toBe(true);
    await loaded.fit(train, { ...opts, steps: 6, resume: { step: 3 } });
    for (const { name } of whole.backend.paramInfo()) {
      expect(Buffer.from(loaded.backend.getParam(name).buffer)).toEqual(
        Buffer.from(whole.backend.getParam(name).buffer),
      );
    }
    // Weights only: no resume.
    const plain = join(dir, 'plain.safetensors');
    await whole.save(plain);
    const w = PixelRNN.load(plain, { backend: 'js' });
    expect(w.hasOptimizerState).toBe(false);
    await expect(w.fit(train, { ...opts, steps: 8, resume: { step: 6 } })).rejects.toThrow(ConfigError);
  }, 30_000);

  it('refuses foreign, corrupt and mismatched checkpoints with CheckpointError', async () => {
    const model = PixelRNN.create({ ...small, output: 'bernoulli' }, { backend: 'js' });
    const good = join(dir, 'good.safetensors');
    await model.save(good);
    const foreign = join(dir, 'foreign.safetensors');
    saveSafetensors(
      foreign,
      { x: { dtype: 'F32', shape: [1], data: new Float32Array(1) } },
      { format: 'arflow', kind: 'series' },
    );
    expect(() => PixelRNN.load(foreign, { backend: 'js' })).toThrow(CheckpointError);
    const garbage = join(dir, 'garbage.safetensors');
    writeFileSync(garbage, 'not a checkpoint');
    expect(() => PixelRNN.load(garbage, { backend: 'js' })).toThrow(CheckpointError);
    // A config whose tensors the file does not hold.
    const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    for (const p of model.backend.paramInfo()) {
      tensors[p.name] = { dtype: 'F32', shape: p.shape, data: model.backend.getParam(p.name) };
    }
    const wider = join(dir, 'wider.safetensors');
    saveSafetensors(wider, tensors, {
      format: 'arflow',
      kind: 'pixel-rnn',
      config: JSON.stringify({ ...model.config, hidden: 7 }),
    });
    expect(() => PixelRNN.load(wider, { backend: 'js' })).toThrow(CheckpointError);
    const badConfig = join(dir, 'bad-config.safetensors');
    saveSafetensors(badConfig, tensors, { format: 'arflow', kind: 'pixel-rnn', config: '{"cell":"tanh"}' });
    expect(() => PixelRNN.load(badConfig, { backend: 'js' })).toThrow(CheckpointError);
  });
});
