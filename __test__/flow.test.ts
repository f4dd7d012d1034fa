import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError, ConfigError, DataError, ShapeError } from '../src/errors.js';
import { sample2d } from '../src/flows/data2d.js';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.js';
import { gaussianNll, RealNVP } from '../src/models/flow.js';
import { realNvpVectorSpec } from '../src/models/presets.js';

const dir = mkdtempSync(join(tmpdir(), 'arflow-flow-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('RealNVP (js backend)', () => {
  it('starts as the identity', async () => {
    const flow = RealNVP.create({ dim: 2, couplings: 4, hidden: 8 }, { backend: 'js', seed: 1 });
    const x = Float32Array.from([0.3, -1.2, 2, 0.5]);
    expect(Array.from(flow.encode(x))).toEqual(Array.from(x));
    const lp = await flow.logProb(x);
    expect(lp[0]).toBeCloseTo(-0.5 * (0.09 + 1.44) - Math.log(2 * Math.PI), 5);
  });

  it('gaussianNll of a standard normal is about log(2π) + 1 in 2-D', () => {
    const a = sample2d('8gaussians', 4000, 1);
    const g = gaussianNll(a, a, 2);
    expect(Number.isFinite(g)).toBe(true);
    // The MLE Gaussian on its own training data: NLL = ½(D log 2π + log det Σ + D).
    const n = 4000;
    let mx = 0;
    let my = 0;
    for (let i = 0; i < n; i++) {
      mx += a[2 * i] / n;
      my += a[2 * i + 1] / n;
    }
    let sxx = 0;
    let syy = 0;
    let sxy = 0;
    for (let i = 0; i < n; i++) {
      const dx = a[2 * i] - mx;
      const dy = a[2 * i + 1] - my;
      sxx += (dx * dx) / n;
      syy += (dy * dy) / n;
      sxy += (dx * dy) / n;
    }
    expect(g).toBeCloseTo(0.5 * (2 * Math.log(2 * Math.PI) + Math.log(sxx * syy - sxy * sxy) + 2), 4);
  });

  const train = sample2d('moons', 4000, 11);
  const test = sample2d('moons', 2000, 12);
  let flow: RealNVP;

  it('a short fit on two moons beats the Gaussian baseline', async () => {
    flow = RealNVP.create({ dim: 2, couplings: 6, hidden: 32 }, { backend: 'js', seed: 3 });
    const progress: number[] = [];
    const s = await flow.fit(train, {
      steps: 300,
      batchSize: 128,
      lr: 5e-3,
      seed: 1,
      valData: test,
      onProgress: (p) => progress.push(p.step),
    });
    expect(s.steps).toBe(300);
    expect(progress.at(-1)).toBe(300);
    const nll = await flow.nll(test);
    expect(nll).toBeCloseTo(s.valNll, 5);
    const g = gaussianNll(train, test, 2);
    expect(nll).toBeLessThan(g - 0.15);
  }, 60_000);

  it('save → load gives identical logProb; foreign files are rejected', async () => {
    const path = join(dir, 'moons.safetensors');
    await flow.save(path);
    const back = RealNVP.load(path, { backend: 'js' });
    expect(back.config).toEqual(flow.config);
    expect(await back.logProb(test)).toEqual(await flow.logProb(test));
    const foreign = join(dir, 'foreign.safetensors');
    saveSafetensors(
      foreign,
      { w: { dtype: 'F32', shape: [1], data: new Float32Array(1) } },
      { format: 'arflow', kind: 'char-lm' },
    );
    expect(() => RealNVP.load(foreign, { backend: 'js' })).toThrow(CheckpointError);
    // A saved file with one value made NaN, or with a config that does not match its tensors.
    const { tensors, metadata } = loadSafetensors(path);
    const nan = join(dir, 'nan.safetensors');
    const scale = Float32Array.from(tensors['layers.0.scale'].data as Float32Array);
    scale[0] = Number.NaN;
    saveSafetensors(nan, { ...tensors, 'layers.0.scale': { dtype: 'F32', shape: [2], data: scale } }, metadata);
    expect(() => RealNVP.load(nan, { backend: 'js' })).toThrow(CheckpointError);
    const mismatch = join(dir, 'mismatch.safetensors');
    saveSafetensors(mismatch, tensors, {
      ...metadata,
      spec: JSON.stringify(realNvpVectorSpec({ ...flow.config, hidden: 7 })),
    });
    expect(() => RealNVP.load(mismatch, { backend: 'js' })).toThrow(CheckpointError);
  });

  it('samples deterministically per seed; encode/decode/interpolate', () => {
    const a = flow.sample(50, { seed: 4 });
    expect(flow.sample(50, { seed: 4 })).toEqual(a);
    expect(flow.sample(50, { seed: 5 })).not.toEqual(a);
    expect(a.every(Number.isFinite)).toBe(true);
    expect(() => flow.sample(5, { temperature: 0 })).toThrow(ConfigError);
    expect(() => flow.sample(5, { temperature: -1 })).toThrow(ConfigError);
    const x = test.subarray(0, 20);
    const back = flow.decode(flow.encode(x));
    for (let i = 0; i < x.length; i++) expect(back[i]).toBeCloseTo(x[i], 4);
    const path = flow.interpolate(x.subarray(0, 2), x.subarray(2, 4), 5);
    expect(path.length).toBe(10);
    expect(path[0]).toBeCloseTo(x[0], 4);
    expect(path[9]).toBeCloseTo(x[3], 4);
  });

  it('validates inputs', async () => {
    await expect(flow.logProb(new Float32Array(3))).rejects.toThrow(ShapeError);
    expect(() => flow.encode(new Float32Array(5))).toThrow(ShapeError);
    await expect(flow.fit(Float32Array.from([0, 1, Number.NaN, 2]), { steps: 1 })).rejects.toThrow(DataError);
    await expect(flow.logProb(Float32Array.from([0, Number.POSITIVE_INFINITY]))).rejects.toThrow(DataError);
    expect(() => RealNVP.create({ dim: 1 }, { backend: 'js' })).toThrow(ConfigError);
  });
});
