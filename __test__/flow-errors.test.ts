/**
 * Bad input to the flow API gets a clear, typed error and loses nothing: sizes too big to allocate
 * (in a config, a preset or a tampered checkpoint, and at the native layer itself), non-finite
 * scores, malformed contexts and labels, unavailable devices, bad seeds; and the chunked mapping of
 * large batches, odd squeeze widths and wrong-length pixel data.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { FlowNetSpec } from '../src/backend/flownet-types.js';
import { NativeFlowNet } from '../src/backend/native-flownet.js';
import { BackendError, CheckpointError, ConfigError, DataError, ShapeError } from '../src/errors.js';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.js';
import { RealNVP } from '../src/models/flow.js';
import { Flow, Glow, IAF, MAF, NICE, RealNVPImage } from '../src/models/flownet.js';
import { mafSpec, realNvpVectorSpec } from '../src/models/presets.js';

const dir = mkdtempSync(join(tmpdir(), 'arflow-flow-errors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

/** A copy of checkpoint `src` with metadata `key` rewritten by `edit`. */
function tamper(src: string, key: string, edit: (v: string) => string): string {
  const { tensors, metadata } = loadSafetensors(src);
  metadata[key] = edit(metadata[key]);
  const out = join(dir, `tampered-${files++}.safetensors`);
  saveSafetensors(out, tensors, metadata);
  return out;
}

/** Runs `f` and returns what it threw (failing when it throws nothing). */
async function thrown(f: () => unknown): Promise<Error> {
  try {
    await f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, got none');
}

const HUGE = 1_000_000_000;

describe('sizes too big to allocate are errors, not aborts (finding 1)', () => {
  it('MAF, IAF, NICE and RealNVP with hidden 10⁹ are ConfigErrors naming the count and the field', async () => {
    for (const make of [
      () => MAF.create({ dim: 2, hidden: HUGE }),
      () => IAF.create({ dim: 2, hidden: HUGE }),
      () => NICE.create({ dim: 2, hidden: HUGE }),
    ]) {
      const e = await thrown(make);
      expect(e).toBeInstanceOf(ConfigError);
      expect(e.message).toMatch(/would have [\d.e]+ parameters, more than the 2\^31/);
      expect(e.message).toContain(`hidden ${HUGE}`);
    }
    const e = await thrown(() => RealNVP.create({ dim: 2, hidden: HUGE }));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain(`hidden ${HUGE}`);
    expect(e.message).toContain('parameters');
    for (const backend of ['js', 'native'] as const) {
      expect(() => RealNVP.create({ dim: 2, hidden: HUGE }, { backend })).toThrow(ConfigError);
    }
  });

  it('image presets with a huge conditioner width, and runaway depths, are ConfigErrors', () => {
    expect(() => Glow.create({ shape: [1, 8, 8], levels: 1, steps: 1, channels: 10_000_000 })).toThrow(
      /net\.channels 10000000/,
    );
    expect(() => RealNVPImage.create({ shape: [1, 8, 8], channels: 10_000_000 })).toThrow(ConfigError);
    expect(() => NICE.create({ dim: 2, depth: HUGE })).toThrow(/depth 1000000000 gives more than \d+ tensors/);
    expect(() => MAF.create({ dim: 2, depth: HUGE })).toThrow(ConfigError);
    expect(() => RealNVPImage.create({ shape: [1, 8, 8], blocks: HUGE })).toThrow(ConfigError);
  });

  it('the native layer itself refuses them with a ConfigError (no JS check in front)', () => {
    expect(() => new NativeFlowNet(mafSpec({ dim: 2, hidden: HUGE }), 0, 'cpu')).toThrow(/too large/);
    expect(() => new NativeFlowNet(mafSpec({ dim: 2, hidden: HUGE }), 0, 'cpu')).toThrow(ConfigError);
    expect(() => new NativeFlowNet(mafSpec({ dim: 2, hidden: 2, depth: HUGE }), 0, 'cpu')).toThrow(ConfigError);
    const wide: FlowNetSpec = { shape: [1e7, 1e7, 1e7], context: 0, base: 'normal', layers: [{ type: 'reverse' }] };
    expect(() => new NativeFlowNet(wide, 0, 'cpu')).toThrow(ConfigError);
    const rnvp = realNvpVectorSpec({ dim: 2, couplings: 1, hidden: HUGE, depth: 2 });
    expect(() => new NativeFlowNet(rnvp, 0, 'cpu')).toThrow(ConfigError);
  });

  it('a Flow checkpoint whose spec was tampered to hidden 10⁹ is a CheckpointError', async () => {
    const path = join(dir, 'maf.safetensors');
    await MAF.create({ dim: 2, hidden: 8, layers: 2 }).save(path);
    const big = tamper(path, 'spec', (v) => v.replaceAll('"hidden":8', `"hidden":${HUGE}`));
    const e = await thrown(() => Flow.load(big));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain('parameters');
    expect(e.message).toContain(`hidden ${HUGE}`);
    // A small change of size is caught by comparing the file's tensors with the spec's.
    const other = tamper(path, 'spec', (v) => v.replaceAll('"hidden":8', '"hidden":9'));
    expect(() => Flow.load(other)).toThrow(
      /tensor layers\.0\.net\.0\.weight is F32\[8,2\] but the spec needs F32\[9,2\]/,
    );
    expect(Flow.load(path).dim).toBe(2);
  });

  it('a RealNVP checkpoint whose spec was tampered to hidden 10⁹ (or dim "2") is a CheckpointError', async () => {
    const path = join(dir, 'rnvp.safetensors');
    await RealNVP.create({ dim: 2, hidden: 8, couplings: 2 }).save(path);
    const big = tamper(path, 'spec', (v) => v.replaceAll('"hidden":8', `"hidden":${HUGE}`));
    const e = await thrown(() => RealNVP.load(big));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(`hidden ${HUGE}`);
    const str = tamper(path, 'spec', (v) => v.replace('"shape":[2,1,1]', '"shape":["2",1,1]'));
    expect(() => RealNVP.load(str)).toThrow(/shape\[0\] must be an integer ≥ 1, got the string "2"/);
    const other = tamper(path, 'spec', (v) => v.replaceAll('"hidden":8', '"hidden":9'));
    expect(() => RealNVP.load(other)).toThrow(CheckpointError);
    expect(RealNVP.load(path).config.hidden).toBe(8);
  });

  it('so is a vector Real NVP checkpoint of arflow ≤ 0.1.0 whose config was tampered', async () => {
    const path = join(dir, 'rnvp-v0.safetensors');
    await RealNVP.create({ dim: 2, hidden: 8, couplings: 2 }).save(path);
    const { tensors } = loadSafetensors(path);
    const old = Object.fromEntries(Object.entries(tensors).map(([n, t]) => [n.replace(/^layers\./, 'couplings.'), t]));
    const config = JSON.stringify({ dim: 2, couplings: 2, hidden: 8, depth: 2 });
    saveSafetensors(path, old, { format: 'arflow', format_version: '1', kind: 'flow-realnvp', config });
    expect(RealNVP.load(path).config.hidden).toBe(8);
    const big = tamper(path, 'config', (v) => v.replace('"hidden":8', `"hidden":${HUGE}`));
    const e = await thrown(() => RealNVP.load(big));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(`hidden ${HUGE}`);
    const str = tamper(path, 'config', (v) => v.replace('"dim":2', '"dim":"2"'));
    expect(() => RealNVP.load(str)).toThrow(/arflow ≤ 0\.1\.0.*dim must be a whole number ≥ 2, got the string "2"/);
    const other = tamper(path, 'config', (v) => v.replace('"hidden":8', '"hidden":9'));
    expect(() => RealNVP.load(other)).toThrow(/needs F32\[9,2\]/);
  });
});

describe('non-finite scores are errors, not NLLs (finding 10)', () => {
  it('RealNVP.nll of no points is a ShapeError, of a point with log p = −∞ a DataError', async () => {
    const flow = RealNVP.create({ dim: 2, hidden: 8, couplings: 2 });
    await expect(flow.nll(new Float32Array(0))).rejects.toThrow(ShapeError);
    const far = Float32Array.from([0, 0, 3e38, -3e38]);
    expect((await flow.logProb(far))[1]).toBe(Number.NEGATIVE_INFINITY);
    const e = await thrown(() => flow.nll(far));
    expect(e).toBeInstanceOf(DataError);
    expect(e.message).toMatch(/not finite for 1 of 2 points \(point 1: -Infinity\)/);
    expect(e.message).toMatch(/corrupt|diverged/);
    expect(await flow.nll(Float32Array.from([0, 0]))).toBeCloseTo(Math.log(2 * Math.PI), 5);
  });

  it('Flow.testNll and bitsPerDim with broken weights are DataErrors naming likely causes', async () => {
    const maf = MAF.create({ dim: 2, hidden: 8, layers: 1 });
    await expect(maf.testNll(Float32Array.from([0, 0, 3e38, 3e38]))).rejects.toThrow(/not finite for 1 of 2 examples/);
    const spec: FlowNetSpec = { shape: [1, 2, 2], context: 0, base: 'normal', layers: [{ type: 'actnorm' }] };
    const img = Flow.create(spec, { pixels: true });
    img.backend.setParam('layers.0.logs', Float32Array.from([100])); // exp(100) overflows float32
    const e = await thrown(() => img.bitsPerDim(Uint8Array.from([0, 64, 128, 255])));
    expect(e).toBeInstanceOf(DataError);
    expect(e.message).toMatch(/tampered checkpoint|diverged/);
  });
});

describe('samples: counts and non-finite results (re-check items 3 and API)', () => {
  it('RealNVP.sample, like Flow.sample, refuses a count that is not a whole number ≥ 1', () => {
    const rnvp = RealNVP.create({ dim: 2, hidden: 4, couplings: 1 });
    const maf = MAF.create({ dim: 2, hidden: 4, layers: 1 });
    for (const n of [0, -1, 1.5, Number.NaN]) {
      for (const flow of [rnvp, maf]) {
        const e = (() => {
          try {
            flow.sample(n);
          } catch (err) {
            return err as Error;
          }
          throw new Error(`sample(${n}) returned`);
        })();
        expect(e).toBeInstanceOf(ConfigError);
        expect(e.message).toMatch(/sample count must be a whole number ≥ 1/);
      }
    }
    expect(rnvp.sample(1)).toHaveLength(2);
  });

  it('samples that are not finite (broken weights) are a DataError, never returned', () => {
    const rnvp = RealNVP.create({ dim: 2, hidden: 4, couplings: 2 });
    for (const { name } of rnvp.backend.paramInfo())
      if (/weight/.test(name)) rnvp.backend.setParam(name, rnvp.backend.getParam(name).fill(1e30));
    expect(() => rnvp.sample(50)).toThrow(DataError);
    expect(() => rnvp.sample(50)).toThrow(/non-finite values .*corrupt or tampered checkpoint/);
    const spec: FlowNetSpec = { shape: [1, 2, 2], context: 0, base: 'normal', layers: [{ type: 'actnorm' }] };
    const img = Flow.create(spec, { pixels: true });
    img.backend.setParam('layers.0.logs', Float32Array.from([-100])); // decoding multiplies by exp(100)
    expect(() => img.sampleImages(3)).toThrow(/maps 3 of 3 base samples to non-finite values/);
    expect(() => img.sample(3)).toThrow(DataError);
  });
});

describe('a tensor the native side refuses (re-check item 4)', () => {
  it('is named once in the CheckpointError, not twice', async () => {
    const src = join(dir, 'glow-perm.safetensors');
    await Glow.create({ shape: [1, 4, 4], levels: 1, steps: 1, channels: 4 }).save(src);
    const { tensors, metadata } = loadSafetensors(src);
    const perm = Object.keys(tensors).find((n) => n.endsWith('.perm')) as string;
    (tensors[perm].data as Float32Array).fill(0); // not a permutation
    const bad = join(dir, 'glow-perm-zero.safetensors');
    saveSafetensors(bad, tensors, metadata);
    const e = await thrown(() => Flow.load(bad));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(`${bad}: tensor ${perm}: invalid values`);
    expect(e.message.split(perm)).toHaveLength(2);
  });
});

describe('contexts and labels (finding 12)', () => {
  const cond = () => MAF.create({ dim: 3, hidden: 8, layers: 2, context: 3 }, { seed: 1 });
  const y = Float32Array.from([0.1, -0.2, 0.3, 1, 0.5, -1]);

  it('a Float64Array or a plain array of numbers is converted; other types are a ShapeError', async () => {
    const flow = cond();
    const ctx = [1, 0, 0, 0, 0.5, 0.5];
    const want = await flow.logProb(y, { context: Float32Array.from(ctx) });
    expect(await flow.logProb(y, { context: ctx })).toEqual(want);
    expect(await flow.logProb(y, { context: Float64Array.from(ctx) })).toEqual(want);
    expect(flow.encode(y, { context: ctx })).toEqual(flow.encode(y, { context: Float32Array.from(ctx) }));
    const bad = { context: 'abc' } as unknown as { context: number[] };
    await expect(flow.logProb(y, bad)).rejects.toThrow(/context must be a Float32Array \[2, 3\].*got the string "abc"/);
    await expect(flow.logProb(y, { context: [1, 0, 0, 0, 1, '0'] as unknown as number[] })).rejects.toThrow(
      /context value 5 is the string "0", not a number/,
    );
    await expect(flow.logProb(y, { context: [1, 0, 0, 0, 1, Number.NaN] })).rejects.toThrow(DataError);
    await expect(flow.logProb(y, { context: [1, 0, 0] })).rejects.toThrow(ShapeError);
    await expect(flow.testNll(y, { context: [1, 0, 0, 0, 1, Number.POSITIVE_INFINITY] })).rejects.toThrow(DataError);
  });

  it('labels and a context together are a ConfigError; labels must be integers in range', async () => {
    const flow = cond();
    await expect(flow.logProb(y, { labels: [0, 1], context: new Float32Array(6) })).rejects.toThrow(
      /labels or a context, not both/,
    );
    expect(() => flow.sample(2, { labels: [0, 1], context: new Float32Array(6) })).toThrow(ConfigError);
    await expect(flow.testNll(y, { labels: [0, 1], context: new Float32Array(6) })).rejects.toThrow(ConfigError);
    const e = await thrown(() => flow.logProb(y, { labels: ['1', 0] as unknown as number[] }));
    expect(e).toBeInstanceOf(DataError);
    expect(e.message).toContain('label 0 is the string "1", not an integer class index in 0..2');
    await expect(flow.logProb(y, { labels: [0, 1.5] })).rejects.toThrow(/label 1 is 1.5, not an integer/);
    await expect(flow.logProb(y, { labels: [0, 3] })).rejects.toThrow(/label 1 is 3, not in 0..2/);
    expect(await flow.logProb(y, { labels: [0, 2] })).toEqual(await flow.logProb(y, { context: [1, 0, 0, 0, 0, 1] }));
  });
});

describe('devices (finding 13) and seeds (finding 15)', () => {
  it('Flow.load with an unavailable or unknown device blames the device, not the checkpoint', async () => {
    const path = join(dir, 'dev.safetensors');
    await MAF.create({ dim: 2, hidden: 4, layers: 1 }).save(path);
    const rpath = join(dir, 'dev-rnvp.safetensors');
    await RealNVP.create({ dim: 2, hidden: 4, couplings: 1 }).save(rpath);
    for (const load of [
      (device: string) => Flow.load(path, { device: device as 'cpu' }),
      (device: string) => RealNVP.load(rpath, { device: device as 'cpu' }),
    ]) {
      const tpu = await thrown(() => load('tpu'));
      expect(tpu).toBeInstanceOf(ConfigError);
      expect(tpu.message).toContain('unknown device "tpu"');
      // Without a GPU (CI), the CUDA build of the addon is absent or cannot load.
      const cuda = await thrown(() => load('cuda')).catch(() => null);
      if (cuda) {
        expect(cuda).toBeInstanceOf(BackendError);
        expect(cuda).not.toBeInstanceOf(CheckpointError);
        expect(cuda.message).toMatch(/^device cuda is not available: .*CUDA build/);
        expect(cuda.message).toContain("use device 'cpu'");
      }
    }
  });

  it('sample, testNll and create refuse seeds that are not whole numbers ≥ 0', async () => {
    const flow = MAF.create({ dim: 2, hidden: 4, layers: 1 });
    const rnvp = RealNVP.create({ dim: 2, hidden: 4, couplings: 1 });
    for (const seed of [-1, 1.5, Number.NaN, '3' as unknown as number]) {
      expect(() => flow.sample(2, { seed })).toThrow(/seed must be a whole number ≥ 0/);
      expect(() => rnvp.sample(2, { seed })).toThrow(ConfigError);
      await expect(flow.testNll(new Float32Array(2), { seed })).rejects.toThrow(ConfigError);
      expect(() => RealNVP.create({ dim: 2 }, { seed })).toThrow(ConfigError);
    }
    expect(() => flow.sample(2, { seed: Number.NaN })).toThrow(/got NaN/);
    expect(flow.sample(2, { seed: 3 })).toEqual(flow.sample(2, { seed: 3 }));
  });

  it('a size given as a string says it is a string', () => {
    expect(() => MAF.create({ dim: '2' as unknown as number })).toThrow(
      /dim must be a whole number ≥ 2, got the string "2"/,
    );
    expect(() => RealNVP.create({ dim: '2' as unknown as number })).toThrow(/got the string "2"/);
    const spec = mafSpec({ dim: 2, hidden: 4 });
    (spec.layers[0] as { hidden: unknown }).hidden = '4';
    expect(() => Flow.create(spec)).toThrow(/hidden must be an integer ≥ 1, got the string "4"/);
  });
});

describe('batches, squeezes and pixel data', () => {
  it('encode, decode and logProb of n > 64 (across chunks) match row-by-row, with per-row labels', async () => {
    const flow = MAF.create({ dim: 3, hidden: 8, layers: 2, context: 4 }, { seed: 2 });
    const n = 150;
    const y = Float32Array.from({ length: n * 3 }, (_, i) => Math.sin(i * 0.37) * 2);
    const labels = Array.from({ length: n }, (_, i) => (i * 7) % 4);
    const z = flow.encode(y, { labels });
    const back = flow.decode(z, { labels });
    const lp = await flow.logProb(y, { labels });
    for (let i = 0; i < n; i++) {
      const row = y.subarray(i * 3, (i + 1) * 3);
      const zi = flow.encode(row, { labels: [labels[i]] });
      for (let d = 0; d < 3; d++) {
        expect(z[i * 3 + d]).toBeCloseTo(zi[d], 5);
        expect(back[i * 3 + d]).toBeCloseTo(row[d], 3);
      }
      expect(lp[i]).toBeCloseTo((await flow.logProb(row, { labels: [labels[i]] }))[0], 4);
    }
  });

  it('a squeeze of an odd width (even height) is a ConfigError naming W, in JS and natively', () => {
    const spec: FlowNetSpec = { shape: [1, 4, 3], context: 0, base: 'normal', layers: [{ type: 'squeeze' }] };
    expect(() => Flow.create(spec)).toThrow(/squeeze needs an even height and width, got H = 4, W = 3/);
    expect(() => new NativeFlowNet(spec, 0, 'cpu')).toThrow(ConfigError);
    expect(() => Glow.create({ shape: [1, 4, 6], levels: 2, steps: 1, channels: 4 })).toThrow(/W = 3/);
  });

  it('pixel data of the wrong length is a ShapeError everywhere', async () => {
    const flow = Glow.create({ shape: [1, 4, 4], levels: 1, steps: 1, channels: 4 });
    const bad = new Uint8Array(16 + 5);
    await expect(flow.bitsPerDim(bad)).rejects.toThrow(/21 values, not a whole, non-zero number of 16-value examples/);
    await expect(flow.testNll(bad)).rejects.toThrow(ShapeError);
    await expect(flow.fit(bad, { steps: 1 })).rejects.toThrow(ShapeError);
    expect(() => flow.interpolate(bad, new Uint8Array(16), 3)).toThrow(ShapeError);
    await expect(flow.bitsPerDim(new Uint8Array(0))).rejects.toThrow(ShapeError);
  });
});
