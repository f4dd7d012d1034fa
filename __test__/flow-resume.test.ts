/**
 * Continuing a flow's training run: optimizer state in flow checkpoints (`Flow.save` / `RealNVP.save`
 * with `{ optimizer: true }`, restored by `load`), `fit` with `resume` (N steps, save, load, M more
 * equals N + M in one go), and `arflow train flow --resume FILE` through the compiled CLI (run
 * `npx tsc -p tsconfig.json` first, as `npm test` does).
 */
import type { SpawnSyncReturns } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flowSpec } from '../src/cli/flownet.js';
import { fashionMnistAvailable, loadFashionMnist } from '../src/data/fashion-mnist.js';
import { Vocabulary } from '../src/data/vocab.js';
import { CheckpointError, ConfigError } from '../src/errors.js';
import { sample2d } from '../src/flows/data2d.js';
import { encodeSafetensors, loadSafetensors, type SafetensorsContents } from '../src/io/safetensors.js';
import { CharLM } from '../src/models/char-lm.js';
import { RealNVP } from '../src/models/flow.js';
import { Flow, Glow, MAF, RealNVPImage } from '../src/models/flownet.js';
import type { FlowTrainOptions, FlowTrainSummary } from '../src/train/flow-trainer.js';
import { Rng } from '../src/util/rng.js';
import { CLI, interruptAt, jsonLines, runCli } from './helpers/cli.js';

const _ROOT = fileURLToPath(new URL('../', import.meta.url));
const fm = fashionMnistAvailable();
const FM_SKIP = fm
  ? ''
  : ' (skipped: Fashion-MNIST not installed: apt-get install dataset-fashion-mnist or set ARFLOW_FASHION_MNIST)';

const dir = mkdtempSync(join(tmpdir(), 'arflow-flow-resume-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;
const fresh = (name: string) => join(dir, `${files++}-${name}.safetensors`);

type AnyFlow = Flow | RealNVP;
const MOMENTS = ['exp_avg', 'exp_avg_sq'] as const;

function paramNames(m: AnyFlow): string[] {
  return m.backend.paramInfo().map((p) => p.name);
}

/** Every parameter, buffer and optimizer moment of a model, by checkpoint name. */
function state(m: AnyFlow): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const name of paramNames(m)) {
    out.set(name, m.backend.getParam(name));
    for (const which of MOMENTS) out.set(`optimizer.${which}.${name}`, m.backend.getOptimState(which, name));
  }
  if (m instanceof Flow) for (const b of m.backend.bufferInfo()) out.set(b.name, m.backend.getBuffer(b.name));
  return out;
}

/** Largest |a − b| over every tensor of two models of one architecture (0: bit for bit, up to −0). */
function maxDiff(a: AnyFlow, b: AnyFlow): number {
  const sa = state(a);
  const sb = state(b);
  expect([...sb.keys()]).toEqual([...sa.keys()]);
  let d = 0;
  for (const [name, x] of sa) {
    const y = sb.get(name) as Float32Array;
    for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
  }
  return d;
}

/** Largest |a − b| between two checkpoint files' tensors (same names required). */
function fileDiff(a: string, b: string): number {
  const ta = loadSafetensors(a).tensors;
  const tb = loadSafetensors(b).tensors;
  expect(Object.keys(tb).sort()).toEqual(Object.keys(ta).sort());
  let d = 0;
  for (const [name, t] of Object.entries(ta)) {
    const x = t.data as Float32Array;
    const y = tb[name].data as Float32Array;
    for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
  }
  return d;
}

function randomPixels(n: number, d: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  // Blobs rather than noise: something to learn.
  return Uint8Array.from({ length: n * d }, (_, i) => ((i % d) * 37 + rng.int(64)) % 256);
}

describe('optimizer state in flow checkpoints', () => {
  it('Flow.save({ optimizer }) writes both moments of every parameter (no buffer) and the step; load restores them', async () => {
    const flow = Glow.create({ shape: [1, 4, 4], levels: 1, steps: 1, channels: 4 }, { seed: 1 });
    await flow.fit(randomPixels(32, 16, 1), { steps: 3, batchSize: 8 });
    const path = fresh('glow-opt');
    await flow.save(path, { optimizer: true, train: { step: 3 } });
    const { tensors, metadata } = loadSafetensors(path);
    const { params, buffers } = flow.tensorInfo();
    expect(buffers.length).toBeGreaterThan(0);
    const want = [
      ...params.map((p) => p.name),
      ...buffers.map((b) => b.name),
      ...MOMENTS.flatMap((w) => params.map((p) => `optimizer.${w}.${p.name}`)),
    ];
    expect(Object.keys(tensors).sort()).toEqual(want.sort());
    expect(metadata.optimizer_step).toBe('3');
    for (const p of params) for (const w of MOMENTS) expect(tensors[`optimizer.${w}.${p.name}`].shape).toEqual(p.shape);
    const back = Flow.load(path);
    expect(back.hasOptimizerState).toBe(true);
    expect(back.backend.getOptimStep()).toBe(3);
    expect(back.trainInfo).toEqual({ step: 3 });
    expect(maxDiff(back, flow)).toBe(0);
    // Without `optimizer`: the file is as before (no optimizer tensors, no step), and loads with none.
    const plain = fresh('glow-plain');
    await flow.save(plain);
    const p2 = loadSafetensors(plain);
    expect(Object.keys(p2.tensors).some((n) => n.startsWith('optimizer.'))).toBe(false);
    expect(p2.metadata.optimizer_step).toBeUndefined();
    const bare = Flow.load(plain);
    expect(bare.hasOptimizerState).toBe(false);
    expect(bare.backend.getOptimStep()).toBe(0);
  });

  for (const backend of ['native', 'js'] as const) {
    it(`RealNVP (${backend}) round-trips its optimizer state`, async () => {
      const m = RealNVP.create({ dim: 2, couplings: 2, hidden: 8 }, { backend, seed: 2 });
      await m.fit(sample2d('moons', 200, 1), { steps: 4, batchSize: 16 });
      const path = fresh(`rnvp-${backend}`);
      await m.save(path, { optimizer: true });
      const { tensors, metadata } = loadSafetensors(path);
      expect(metadata.optimizer_step).toBe('4');
      expect(Object.keys(tensors)).toHaveLength(3 * paramNames(m).length);
      const back = RealNVP.load(path, { backend });
      expect(back.hasOptimizerState).toBe(true);
      expect(back.backend.getOptimStep()).toBe(4);
      expect(maxDiff(back, m)).toBe(0);
    });
  }

  it('a checkpoint with damaged, partial or foreign optimizer state is a CheckpointError naming the file', async () => {
    const maf = MAF.create({ dim: 2, layers: 2, hidden: 8 }, { seed: 3 });
    await maf.fit(sample2d('moons', 200, 1), { steps: 3, batchSize: 16 });
    const good = fresh('maf-good');
    await maf.save(good, { optimizer: true });
    const rnvp = RealNVP.create({ dim: 2, couplings: 2, hidden: 8 }, { seed: 3 });
    await rnvp.fit(sample2d('moons', 200, 1), { steps: 3, batchSize: 16 });
    const goodR = fresh('rnvp-good');
    await rnvp.save(goodR, { optimizer: true });
    for (const [src, load, first] of [
      [good, (p: string) => Flow.load(p), paramNames(maf)[0]],
      [goodR, (p: string) => RealNVP.load(p), paramNames(rnvp)[0]],
    ] as const) {
      const { tensors, metadata } = loadSafetensors(src);
      const without = (re: RegExp) => Object.fromEntries(Object.entries(tensors).filter(([n]) => !re.test(n)));
      const replaced = (name: string, t: SafetensorsContents['tensors'][string]) => ({ ...tensors, [name]: t });
      const sq = `optimizer.exp_avg_sq.${first}`;
      const avg = `optimizer.exp_avg.${first}`;
      const data = tensors[avg].data as Float32Array;
      const nan = Float32Array.from(data, (v, i) => (i === 0 ? Number.NaN : v));
      const neg = Float32Array.from(tensors[sq].data as Float32Array, (v, i) => (i === 0 ? -1 : v));
      const { optimizer_step: _step, ...noStep } = metadata;
      const variants: [string, SafetensorsContents['tensors'], Record<string, string>, RegExp][] = [
        ['one-missing', without(new RegExp(`^${sq.replace(/\./g, '\\.')}$`)), metadata, /is missing/],
        ['all-missing', without(/^optimizer\./), metadata, /is missing/],
        ['no-step', tensors, noStep, /optimizer_step/],
        [
          'shape',
          replaced(avg, { dtype: 'F32', shape: [data.length + 1], data: new Float32Array(data.length + 1) }),
          metadata,
          /needs F32\[/,
        ],
        ['nan', replaced(avg, { dtype: 'F32', shape: tensors[avg].shape, data: nan }), metadata, /NaN or Inf/],
        ['negative', replaced(sq, { dtype: 'F32', shape: tensors[sq].shape, data: neg }), metadata, /negative/],
        [
          'foreign',
          replaced('optimizer.exp_avg.nope', tensors[avg]),
          metadata,
          /unexpected tensor optimizer\.exp_avg\.nope/,
        ],
        ...['1.5', '-1', 'abc', '', '9007199254740992'].map(
          (s): [string, SafetensorsContents['tensors'], Record<string, string>, RegExp] => [
            `step-${s}`,
            tensors,
            { ...metadata, optimizer_step: s },
            /optimizer_step "[^"]*" in its metadata is not a whole number from 0 to 9007199254740991/,
          ],
        ),
      ];
      for (const [name, t, m, message] of variants) {
        const p = fresh(`bad-${name}`);
        writeFileSync(p, encodeSafetensors(t, m));
        let err: unknown;
        try {
          load(p);
        } catch (e) {
          err = e;
        }
        expect(err, name).toBeInstanceOf(CheckpointError);
        expect((err as Error).message, name).toMatch(message);
        expect((err as Error).message, name).toContain(p);
      }
    }
  });
});

/**
 * Trains `make()` for N + M steps in one go, and the same run interrupted after N steps (the
 * AbortSignal, as Ctrl-C; same `steps`, so the same schedule), saved with its optimizer, loaded and
 * resumed: returns the largest difference of any parameter, buffer or moment, and checks the losses.
 */
async function resumeDiff(
  make: () => AnyFlow,
  fit: (m: AnyFlow, o: FlowTrainOptions) => Promise<FlowTrainSummary>,
  load: (path: string) => AnyFlow,
  N: number,
  M: number,
  opts: FlowTrainOptions,
): Promise<number> {
  const full = make();
  const all = await fit(full, { ...opts, steps: N + M });
  expect(all.losses).toHaveLength(N + M);
  const part = make();
  const stop = new AbortController();
  const first = await fit(part, {
    ...opts,
    steps: N + M,
    logEvery: 1,
    signal: stop.signal,
    onProgress: (p) => {
      if (p.step === N) stop.abort();
    },
  });
  expect(first).toMatchObject({ steps: N, aborted: true });
  const path = fresh('resume');
  await part.save(path, { optimizer: true, train: { steps: N } });
  const loaded = load(path);
  const rest = await fit(loaded, { ...opts, steps: N + M, resume: { step: N } });
  expect(rest.steps).toBe(N + M);
  expect(rest.losses).toEqual(all.losses.slice(N));
  return maxDiff(loaded, full);
}

describe('resumed training equals uninterrupted training (N + M vs N+M)', () => {
  const moons = sample2d('moons', 600, 5);
  const fitMoons = (m: AnyFlow, o: FlowTrainOptions) => (m instanceof RealNVP ? m.fit(moons, o) : m.fit(moons, o));
  const fitFlow = (data: Float32Array | Uint8Array, extra: { labels?: number[] } = {}) => {
    return (m: AnyFlow, o: FlowTrainOptions) => (m as Flow).fit(data, { ...o, ...extra });
  };

  it('MAF on 2-D points, cosine schedule with warm-up: bit for bit', async () => {
    const d = await resumeDiff(
      () => MAF.create({ dim: 2, layers: 2, hidden: 16 }, { seed: 7 }),
      fitFlow(moons),
      (p) => Flow.load(p),
      7,
      6,
      { batchSize: 32, seed: 11, lr: 3e-3, warmup: 3 },
    );
    expect(d).toBe(0);
  });

  it('conditional Glow on pixels (actnorm init, dequantisation noise, LU buffers): bit for bit', async () => {
    const px = randomPixels(40, 16, 2);
    const labels = Array.from({ length: 40 }, (_, i) => i % 3);
    const d = await resumeDiff(
      () => Glow.create({ shape: [1, 4, 4], levels: 1, steps: 2, channels: 4, context: 3 }, { seed: 8 }),
      fitFlow(px, { labels }),
      (p) => Flow.load(p),
      4,
      4,
      { batchSize: 8, seed: 12 },
    );
    expect(d).toBe(0);
  });

  it('image Real NVP with batch norm (running statistics in buffers): bit for bit', async () => {
    const d = await resumeDiff(
      () =>
        RealNVPImage.create(
          { shape: [1, 4, 4], scales: 1, channels: 4, norm: 'batchnorm', convNorm: 'batch' },
          { seed: 9 },
        ),
      fitFlow(randomPixels(40, 16, 3)),
      (p) => Flow.load(p),
      3,
      4,
      { batchSize: 8, seed: 13 },
    );
    expect(d).toBe(0);
  });

  for (const backend of ['native', 'js'] as const) {
    it(`vector RealNVP (${backend}): bit for bit`, async () => {
      const d = await resumeDiff(
        () => RealNVP.create({ dim: 2, couplings: 2, hidden: 8 }, { backend, seed: 10 }),
        (m, o) => (m as RealNVP).fit(moons, o),
        (p) => RealNVP.load(p, { backend }),
        5,
        5,
        { batchSize: 32, seed: 14 },
      );
      expect(d).toBe(0);
    });
  }

  it('a constant schedule needs no interruption: fit N, save, load, fit to N+M equals fit N+M', async () => {
    const opts = { batchSize: 32, seed: 3, schedule: 'constant' as const };
    const make = () => MAF.create({ dim: 2, layers: 2, hidden: 16 }, { seed: 4 });
    const full = make();
    await full.fit(moons, { ...opts, steps: 10 });
    const part = make();
    await part.fit(moons, { ...opts, steps: 4 });
    const path = fresh('const');
    await part.save(path, { optimizer: true });
    const loaded = Flow.load(path);
    await loaded.fit(moons, { ...opts, steps: 10, resume: { step: 4 } });
    expect(maxDiff(loaded, full)).toBe(0);
  });

  it('resume.step at or past steps, or not a whole number, is a ConfigError (nothing left to train)', async () => {
    const m = MAF.create({ dim: 2, layers: 1, hidden: 4 });
    await m.fit(moons, { steps: 3 });
    await expect(m.fit(moons, { steps: 3, resume: { step: 4 } })).rejects.toThrow(/resume\.step 4 is past steps 3/);
    await expect(m.fit(moons, { steps: 3, resume: { step: 1.5 } })).rejects.toThrow(/resume\.step/);
    const r = RealNVP.create({ dim: 2, couplings: 2, hidden: 4 });
    await r.fit(moons, { steps: 3 });
    for (const model of [m, r]) {
      const fit = (o: FlowTrainOptions) => fitMoons(model, o);
      await expect(fit({ steps: 3, resume: { step: 3 } })).rejects.toThrow(ConfigError);
      await expect(fit({ steps: 3, resume: { step: 3 } })).rejects.toThrow(/equals steps 3: nothing left to train/);
      await expect(fit({ steps: 9, seconds: 2, resume: { step: 3, trainSec: 2 } })).rejects.toThrow(
        /trainSec 2 has spent the time budget of seconds 2: nothing left to train/,
      );
    }
  });

  it('fit({ resume }) needs optimizer state: a flow that is new or loaded without it is refused; one trained in this process continues', async () => {
    const make = () => MAF.create({ dim: 2, layers: 1, hidden: 4 }, { seed: 1 });
    const plain = fresh('maf-noopt');
    await make().save(plain, { train: { steps: 2 } });
    const plainR = fresh('rnvp-noopt');
    await RealNVP.create({ dim: 2, couplings: 2, hidden: 4 }).save(plainR);
    for (const m of [
      make(),
      Flow.load(plain),
      RealNVP.create({ dim: 2, couplings: 2, hidden: 4 }),
      RealNVP.load(plainR),
    ]) {
      expect(m.hasOptimizerState).toBe(false);
      const fit = () => fitMoons(m, { steps: 4, resume: { step: 2 } });
      await expect(fit()).rejects.toThrow(ConfigError);
      await expect(fit()).rejects.toThrow(/holds no optimizer state/);
      // Nothing was trained.
      expect(m.backend.getOptimStep()).toBe(0);
      expect(m.hasOptimizerState).toBe(false);
    }
    // Trained here, the flow holds the optimizer state of its steps: resuming it in place continues
    // the run (a constant schedule: the same as one fit of all the steps).
    const opts = { batchSize: 32, seed: 3, schedule: 'constant' as const };
    const part = make();
    await part.fit(moons, { ...opts, steps: 3 });
    expect(part.hasOptimizerState).toBe(true);
    await part.fit(moons, { ...opts, steps: 7, resume: { step: 3 } });
    const full = make();
    await full.fit(moons, { ...opts, steps: 7 });
    expect(maxDiff(part, full)).toBe(0);
  });

  it('a timed run resumed with resume.trainSec continues the clock-driven schedule and counts the time spent', async () => {
    const m = MAF.create({ dim: 2, layers: 1, hidden: 4 }, { seed: 2 });
    await m.fit(moons, { steps: 4, batchSize: 16 });
    const lrs: number[] = [];
    const trainSecs: number[] = [];
    const s = await m.fit(moons, {
      steps: 8,
      batchSize: 16,
      lr: 1e-3,
      seconds: 100,
      logEvery: 1,
      resume: { step: 4, trainSec: 50 },
      onProgress: (p) => {
        lrs.push(p.lr);
        trainSecs.push(p.trainSec);
      },
    });
    // Step 4 starts at half the budget: the cosine is at its midpoint, not at its peak.
    expect(lrs[0]).toBeCloseTo(5e-4, 9);
    for (let i = 1; i < lrs.length; i++) expect(lrs[i]).toBeLessThanOrEqual(lrs[i - 1]);
    expect(trainSecs[0]).toBeGreaterThan(50);
    expect(s.trainSec).toBeGreaterThan(50);
    expect(s.trainSec).toBeLessThan(60);
    expect(s.elapsedSec).toBeLessThan(10);
    expect(s.steps).toBe(8);
  });
});

// ---- the CLI -------------------------------------------------------------------------------------

const arflow = (...args: string[]): SpawnSyncReturns<string> => runCli(dir, args);

/** Runs `arflow train flow ...args --json`, Ctrl-C at its first progress line: every line it printed. */
async function interruptedRun(args: string[]): Promise<Record<string, unknown>[]> {
  const run = await interruptAt(dir, ['train', 'flow', ...args, '--json'], '"type":"progress"');
  expect(run.code, run.stdout).toBe(0);
  return jsonLines(run.stdout);
}

function summaryOf(r: SpawnSyncReturns<string>): Record<string, unknown> {
  expect(r.status, r.stdout + r.stderr).toBe(0);
  const s = jsonLines(r.stdout).at(-1) as Record<string, unknown>;
  expect(s.type).toBe('summary');
  return s;
}

function errorOf(r: SpawnSyncReturns<string>, status: number, code: string): string {
  expect(r.status, r.stdout + r.stderr).toBe(status);
  const lines = jsonLines(r.stdout);
  expect(lines.filter((l) => l.type === 'progress')).toEqual([]);
  expect(lines.at(-1)).toMatchObject({ type: 'error', code });
  return (lines.at(-1) as { message: string }).message;
}

describe('arflow train flow --resume', () => {
  beforeAll(() => {
    expect(existsSync(CLI), `${CLI} missing: build with npx tsc -p tsconfig.json`).toBe(true);
  });

  const MAF_RUN = ['--model', 'maf', '--data', 'moons', '--n', '500', '--test-n', '50', '--hidden', '16'];
  const mafRun = [...MAF_RUN, '--layers', '2', '--batch', '64'];

  it('documents --resume in train flow --help', () => {
    const h = arflow('train', 'flow', '--help');
    expect(h.status).toBe(0);
    expect(h.stdout).toMatch(/--resume <value>\s+continue the run saved in this checkpoint/);
  });

  it('MAF on moons: 6 steps, then --resume to 10 replaces the file with the run the API continues identically', async () => {
    const s1 = summaryOf(arflow('train', 'flow', ...mafRun, '--steps', '6', '--out', 'maf.safetensors', '--json'));
    expect(s1).toMatchObject({ steps: 6, model: 'maf' });
    expect(s1.resumedFrom).toBeUndefined();
    const saved = Flow.load(join(dir, 'maf.safetensors'));
    expect(saved.hasOptimizerState).toBe(true);
    expect(saved.trainInfo).toMatchObject({
      data: 'moons',
      model: 'maf',
      n: 500,
      seed: 0,
      steps: 6,
      totalSteps: 6,
      batch: 64,
      lr: 0.001,
      clip: 1,
      testN: 50,
      arch: { hidden: 16, layers: 2 },
      seconds: 0,
    });
    expect(saved.trainInfo?.trainSec).toBeGreaterThan(0);
    expect(saved.trainInfo?.trainSec).toBe(s1.trainSec);
    copyFileSync(join(dir, 'maf.safetensors'), join(dir, 'maf-6.safetensors'));

    const s2 = summaryOf(arflow('train', 'flow', '--resume', 'maf.safetensors', '--steps', '10', '--json'));
    expect(s2).toMatchObject({
      steps: 10,
      out: 'maf.safetensors',
      png: 'maf.png',
      model: 'maf',
      data: 'moons',
      resumedFrom: 'maf.safetensors',
      resumedAtStep: 6,
    });
    const resumed = Flow.load(join(dir, 'maf.safetensors'));
    expect(resumed.backend.getOptimStep()).toBe(10);
    expect(resumed.trainInfo).toMatchObject({ steps: 10, totalSteps: 10, arch: { hidden: 16, layers: 2 } });
    // The training time counts both parts of the run.
    expect(resumed.trainInfo?.trainSec).toBe(s2.trainSec);
    expect(s2.trainSec).toBeGreaterThan(s1.trainSec as number);

    // The same continuation through the API, from the 6-step file: the CLI used the run's data, seed
    // and settings.
    const api = Flow.load(join(dir, 'maf-6.safetensors'));
    await api.fit(sample2d('moons', 500, 0), {
      steps: 10,
      batchSize: 64,
      lr: 0.001,
      clip: 1,
      seed: 0,
      resume: { step: 6 },
    });
    expect(maxDiff(resumed, api)).toBe(0);

    // sample and eval work on checkpoints with optimizer state.
    expect(summaryOf(arflow('sample', 'maf.safetensors', '--n', '100', '--out', 'maf-s.png', '--json'))).toMatchObject({
      n: 100,
    });
    expect(summaryOf(arflow('eval', 'maf.safetensors', '--n', '100', '--json'))).toMatchObject({
      data: 'moons',
      n: 100,
    });
  }, 60_000);

  it('2-D Real NVP interrupted by Ctrl-C, resumed to its own total, ends bit for bit where the uninterrupted run does', async () => {
    const run = [
      '--data',
      'moons',
      '--n',
      '2000',
      '--test-n',
      '50',
      '--couplings',
      '2',
      '--hidden',
      '16',
      '--steps',
      '3000',
    ];
    summaryOf(arflow('train', 'flow', ...run, '--out', 'full.safetensors', '--json'));
    const cut = (await interruptedRun([...run, '--out', 'part.safetensors'])).at(-1) as Record<string, unknown>;
    expect(cut).toMatchObject({ type: 'summary', stoppedEarly: true });
    const at = cut.steps as number;
    expect(at).toBeGreaterThan(0);
    expect(at).toBeLessThan(3000);
    const s = summaryOf(arflow('train', 'flow', '--resume', 'part.safetensors', '--json'));
    expect(s).toMatchObject({ steps: 3000, model: 'realnvp', resumedAtStep: at, stoppedEarly: false });
    expect(fileDiff(join(dir, 'part.safetensors'), join(dir, 'full.safetensors'))).toBe(0);
  }, 120_000);

  it.skipIf(!fm)(
    `tiny Glow on Fashion-MNIST: resumed into another file, the original untouched${FM_SKIP}`,
    async () => {
      const run = ['--data', 'fashion-mnist', '--model', 'glow', '--n', '64', '--test-n', '4', '--levels', '1'];
      const glow = [...run, '--flow-steps', '1', '--channels', '4', '--batch', '16'];
      summaryOf(arflow('train', 'flow', ...glow, '--steps', '2', '--out', 'fm.safetensors', '--json'));
      const before = readFileSync(join(dir, 'fm.safetensors'));
      const s = summaryOf(
        arflow('train', 'flow', '--resume', 'fm.safetensors', '--steps', '4', '--out', 'fm4.safetensors', '--json'),
      );
      expect(s).toMatchObject({ steps: 4, model: 'glow', out: 'fm4.safetensors', testImages: 4, resumedAtStep: 2 });
      expect(readFileSync(join(dir, 'fm.safetensors')).equals(before)).toBe(true);
      const api = Flow.load(join(dir, 'fm.safetensors'));
      await api.fit(loadFashionMnist('train', { limit: 64 }).images, {
        steps: 4,
        batchSize: 16,
        lr: 0.001,
        clip: 100,
        seed: 0,
        resume: { step: 2 },
      });
      expect(maxDiff(Flow.load(join(dir, 'fm4.safetensors')), api)).toBe(0);
      expect(summaryOf(arflow('eval', 'fm4.safetensors', '--n', '4', '--json'))).toMatchObject({ n: 4 });
    },
    120_000,
  );

  it('flags that contradict the checkpoint, and --steps with nothing left to do, are refused with exit 2; the file is untouched', () => {
    summaryOf(arflow('train', 'flow', ...mafRun, '--steps', '4', '--out', 'c.safetensors', '--json'));
    const before = readFileSync(join(dir, 'c.safetensors'));
    for (const [args, mentions] of [
      [['--model', 'glow'], '--model glow contradicts'],
      [['--data', 'rings'], '--data rings contradicts'],
      [['--n', '400'], '--n 400 contradicts'],
      [['--seed', '1'], '--seed 1 contradicts'],
      [['--batch', '32'], '--batch 32 contradicts'],
      [['--lr', '0.01'], '--lr 0.01 contradicts'],
      [['--clip', '5'], '--clip 5 contradicts'],
      [['--hidden', '32'], '--hidden 32 contradicts'],
      [['--layers', '3'], '--layers 3 contradicts'],
      [['--depth', '3'], 'the default depth'],
      [['--channels', '4'], '--channels does not apply'],
      [['--steps', '4'], '--steps 4 leaves nothing to do'],
      [['--seconds', '5'], '--seconds 5 contradicts --resume c.safetensors, whose run had no time budget'],
      [[], 'has taken all 4 steps'],
    ] as const) {
      const msg = errorOf(arflow('train', 'flow', '--resume', 'c.safetensors', ...args, '--json'), 2, 'E_CONFIG');
      expect(msg, args.join(' ')).toContain(mentions);
    }
    expect(readFileSync(join(dir, 'c.safetensors')).equals(before)).toBe(true);
    // Flags that agree with the checkpoint are fine.
    const ok = arflow(
      'train',
      'flow',
      '--resume',
      'c.safetensors',
      ...MAF_RUN,
      '--depth',
      '2',
      '--seed',
      '0',
      '--steps',
      '5',
      '--json',
    );
    expect(summaryOf(ok)).toMatchObject({ steps: 5, resumedAtStep: 4 });
  }, 60_000);

  it('a checkpoint without training or optimizer state, or not a flow, cannot be resumed: a clear error', async () => {
    await MAF.create({ dim: 2, layers: 2, hidden: 8 }).save(join(dir, 'bare.safetensors'));
    const moons = { data: 'moons', n: 100, seed: 0, steps: 3, model: 'maf' };
    await MAF.create({ dim: 2, layers: 2, hidden: 8 }).save(join(dir, 'no-opt.safetensors'), { train: moons });
    await RealNVP.create({ dim: 2, couplings: 2, hidden: 8 }).save(join(dir, 'rnvp-no-opt.safetensors'), {
      train: moons,
    });
    expect(errorOf(arflow('train', 'flow', '--resume', 'bare.safetensors', '--json'), 2, 'E_CONFIG')).toMatch(
      /no training state/,
    );
    for (const f of ['no-opt.safetensors', 'rnvp-no-opt.safetensors'])
      expect(errorOf(arflow('train', 'flow', '--resume', f, '--json'), 2, 'E_CONFIG')).toMatch(/no optimizer state/);
    expect(errorOf(arflow('train', 'flow', '--resume', 'missing.safetensors', '--json'), 1, 'E_CHECKPOINT')).toMatch(
      /not found/,
    );
    await CharLM.create(Vocabulary.fromText('hello world'), { embed: 4, hidden: 4 }).save(join(dir, 'lm.safetensors'));
    expect(errorOf(arflow('train', 'flow', '--resume', 'lm.safetensors', '--json'), 2, 'E_CONFIG')).toContain(
      'arflow train char --resume',
    );
    writeFileSync(join(dir, 'junk.safetensors'), 'not a checkpoint');
    errorOf(arflow('train', 'flow', '--resume', 'junk.safetensors', '--json'), 1, 'E_CHECKPOINT');
    // Tampered optimizer state in a CLI checkpoint: a CheckpointError (exit 1) naming the tensor.
    summaryOf(arflow('train', 'flow', ...mafRun, '--steps', '3', '--out', 't.safetensors', '--json'));
    const { tensors, metadata } = loadSafetensors(join(dir, 't.safetensors'));
    const victim = Object.keys(tensors).find((n) => n.startsWith('optimizer.exp_avg_sq.')) as string;
    delete tensors[victim];
    writeFileSync(join(dir, 't-bad.safetensors'), encodeSafetensors(tensors, metadata));
    const msg = errorOf(arflow('train', 'flow', '--resume', 't-bad.safetensors', '--json'), 1, 'E_CHECKPOINT');
    expect(msg).toContain(`tensor ${victim} is missing`);
  }, 60_000);

  /** A copy of checkpoint `src` (in `dir`) as `dst` with `edit` applied to its tensors' metadata and training state. */
  function tampered(
    src: string,
    dst: string,
    edit: (train: Record<string, unknown>, metadata: Record<string, string>) => void,
  ): string {
    const { tensors, metadata } = loadSafetensors(join(dir, src));
    const train = JSON.parse(metadata.train ?? '{}') as Record<string, unknown>;
    edit(train, metadata);
    writeFileSync(join(dir, dst), encodeSafetensors(tensors, { ...metadata, train: JSON.stringify(train) }));
    return dst;
  }

  const progressLrs = (lines: Record<string, unknown>[]) =>
    lines.filter((l) => l.type === 'progress').map((l) => l.lr as number);
  /** The cosine schedule's learning rate (peak 1e-3, floor 0) at `fraction` of the run. */
  const cosineLr = (fraction: number) => 0.5e-3 * (1 + Math.cos(Math.PI * Math.min(1, fraction)));

  it('a --seconds run records its budget and the time spent; resumed, its schedule continues on the clock and it stops when the budget is spent', async () => {
    const BUDGET = 2;
    const cutLines = await interruptedRun([
      ...mafRun,
      '--steps',
      '1000000',
      '--seconds',
      String(BUDGET),
      '--out',
      'timed.safetensors',
    ]);
    const cut = cutLines.at(-1) as Record<string, unknown>;
    expect(cut).toMatchObject({ type: 'summary', stoppedEarly: true });
    const spent = cut.trainSec as number;
    expect(spent).toBeGreaterThan(0);
    expect(spent).toBeLessThan(BUDGET);
    expect(Flow.load(join(dir, 'timed.safetensors')).trainInfo).toMatchObject({
      steps: cut.steps,
      totalSteps: 1_000_000,
      seconds: BUDGET,
      trainSec: spent,
    });
    const cutLr = progressLrs(cutLines).at(-1) as number;
    expect(cutLr).toBeLessThan(1e-3);

    // Resumed with no flags: the schedule goes on from the time spent (never back to the peak), and
    // the run ends when the original budget is spent, long before its million steps.
    const lines = jsonLines(arflow('train', 'flow', '--resume', 'timed.safetensors', '--json').stdout);
    const s = lines.at(-1) as Record<string, unknown>;
    expect(s).toMatchObject({ type: 'summary', resumedAtStep: cut.steps, stoppedEarly: true });
    const lrs = progressLrs(lines);
    expect(lrs[0]).toBeLessThanOrEqual(cutLr);
    expect(lrs[0]).toBeLessThanOrEqual(cosineLr(spent / BUDGET) + 1e-12);
    expect(lrs.at(-1)).toBeLessThan(1e-5);
    expect(s.steps as number).toBeLessThan(1_000_000);
    expect(s.trainSec as number).toBeGreaterThanOrEqual(BUDGET);
    const done = Flow.load(join(dir, 'timed.safetensors')).trainInfo as Record<string, unknown>;
    expect(done).toMatchObject({ steps: s.steps, seconds: BUDGET, trainSec: s.trainSec, totalSteps: 1_000_000 });

    // Its budget is spent: resuming needs a larger total, which counts the time spent.
    for (const [args, mentions] of [
      [[], `has spent all ${BUDGET} s of its time budget`],
      [['--seconds', '1'], '--seconds 1 leaves nothing to do'],
      [
        ['--seconds', '0'],
        `--seconds 0 contradicts --resume timed.safetensors, whose run had a time budget of ${BUDGET} s`,
      ],
    ] as const) {
      const msg = errorOf(arflow('train', 'flow', '--resume', 'timed.safetensors', ...args, '--json'), 2, 'E_CONFIG');
      expect(msg, args.join(' ')).toContain(mentions);
    }
    const total = (s.trainSec as number) + 0.3;
    const more = jsonLines(
      arflow('train', 'flow', '--resume', 'timed.safetensors', '--seconds', String(total), '--json').stdout,
    );
    const s2 = more.at(-1) as Record<string, unknown>;
    expect(s2).toMatchObject({ type: 'summary', stoppedEarly: true, resumedAtStep: s.steps });
    expect(progressLrs(more)[0]).toBeLessThanOrEqual(cosineLr((s.trainSec as number) / total) + 1e-12);
    expect(s2.trainSec as number).toBeGreaterThanOrEqual(total);
    expect(Flow.load(join(dir, 'timed.safetensors')).trainInfo).toMatchObject({
      seconds: total,
      trainSec: s2.trainSec,
    });
  }, 120_000);

  it('train flow --help says what --seconds counts on resume and which runs resume exactly', () => {
    const h = arflow('train', 'flow', '--help');
    expect(h.status).toBe(0);
    expect(h.stdout).toContain('within --seconds in all');
    expect(h.stdout).toContain('A run driven by its steps, resumed to its own total, ends exactly where');
    expect(h.stdout).toContain("depends on the machine's speed");
    expect(h.stdout).toMatch(/--seconds <n>\s+stop after .*a new one is a total counting the time spent/);
  });

  it("an optimizer_step that is not the run's step count is a CheckpointError (exit 1)", () => {
    summaryOf(arflow('train', 'flow', ...mafRun, '--steps', '6', '--out', 'os.safetensors', '--json'));
    for (const step of ['0', '5', '7']) {
      const f = tampered('os.safetensors', `os-${step}.safetensors`, (_t, m) => {
        m.optimizer_step = step;
      });
      const msg = errorOf(arflow('train', 'flow', '--resume', f, '--steps', '10', '--json'), 1, 'E_CHECKPOINT');
      expect(msg).toContain(`${f}: optimizer_step ${step} in its metadata is not the 6 steps`);
      expect(msg).toContain('train.steps');
    }
  }, 60_000);

  it('invalid training state in a checkpoint is a CheckpointError naming the file and the field (exit 1), never a flag error', () => {
    summaryOf(arflow('train', 'flow', ...mafRun, '--steps', '3', '--out', 'ts.safetensors', '--json'));
    const cases: [Record<string, unknown>, string][] = [
      [{ model: 'glow' }, 'train.arch.layers in its metadata is 2, but --layers does not apply to glow'],
      [
        { model: 'nice' },
        '(train.model nice, train.arch {"hidden":16,"layers":2}) does not describe the flow it holds',
      ],
      [{ arch: { hidden: 32, layers: 2 } }, 'does not describe the flow it holds'],
      [
        { arch: { hidden: 'abc', layers: 2 } },
        'train.arch.hidden in its metadata is "abc" (a string), not a whole number ≥ 1',
      ],
      [
        { arch: { hidden: 16, layers: 2, couplings: 4 } },
        'train.arch.couplings in its metadata is 4, but --couplings does not apply',
      ],
      [{ arch: { hidden: 16, layers: 2, depth: 0 } }, 'train.arch.depth in its metadata is 0, not a whole number ≥ 1'],
      [{ arch: { hidden: 16, layers: 2, bogus: 1 } }, 'train.arch.bogus'],
      [{ batch: 2_000_000 }, 'train.batch in its metadata is 2000000, not a whole number in 1..1000000'],
      [{ lr: '0.1' }, 'train.lr in its metadata is "0.1" (a string), not a number > 0'],
      [{ testN: 0 }, 'train.testN in its metadata is 0'],
      [{ seconds: -1 }, 'train.seconds in its metadata is -1'],
      [{ trainSec: '3' }, 'train.trainSec in its metadata is "3" (a string)'],
      [{ steps: 5 }, 'train.steps in its metadata is 5, not a count of steps taken ≤ its totalSteps 3'],
    ];
    cases.forEach(([edit, mentions], i) => {
      const f = tampered('ts.safetensors', `ts-${i}.safetensors`, (t) => Object.assign(t, edit));
      const msg = errorOf(arflow('train', 'flow', '--resume', f, '--steps', '6', '--json'), 1, 'E_CHECKPOINT');
      expect(msg, JSON.stringify(edit)).toContain(`${f}: `);
      expect(msg, JSON.stringify(edit)).toContain(mentions);
    });
  }, 60_000);

  it('a checkpoint saved through the API without the settings train flow records is refused, naming what it lacks', async () => {
    const moons = sample2d('moons', 100, 0);
    const maf = MAF.create({ dim: 2, layers: 2, hidden: 8 });
    await maf.fit(moons, { steps: 3, batchSize: 16 });
    await maf.save(join(dir, 'api.safetensors'), {
      optimizer: true,
      train: { data: 'moons', n: 100, seed: 0, steps: 3, model: 'maf' },
    });
    const rnvp = RealNVP.create({ dim: 2, couplings: 2, hidden: 8 });
    await rnvp.fit(moons, { steps: 3, batchSize: 16 });
    await rnvp.save(join(dir, 'api-rnvp.safetensors'), {
      optimizer: true,
      train: { data: 'moons', n: 100, seed: 0, steps: 3, model: 'realnvp', lr: 0.001 },
    });
    for (const [f, lacks] of [
      ['api.safetensors', 'totalSteps, batch, lr, clip, testN, arch'],
      ['api-rnvp.safetensors', 'totalSteps, batch, clip, testN, arch'],
    ]) {
      const msg = errorOf(arflow('train', 'flow', '--resume', f, '--steps', '6', '--json'), 2, 'E_CONFIG');
      expect(msg).toContain(`--resume ${f}: its training state has no ${lacks}: it was not saved by arflow train flow`);
    }
  }, 60_000);

  it('a contradicting --conditional is named as typed (no "true")', async () => {
    const arch = { levels: 1, 'flow-steps': 1, channels: 4 };
    const glow = Flow.create(flowSpec('glow', true, arch, 2), { pixels: true });
    await glow.save(join(dir, 'uncond.safetensors'), {
      optimizer: true,
      train: {
        data: 'fashion-mnist',
        model: 'glow',
        n: 64,
        seed: 0,
        steps: 0,
        totalSteps: 2,
        batch: 16,
        lr: 0.001,
        clip: 100,
        testN: 4,
        arch,
        seconds: 0,
        trainSec: 0,
      },
    });
    const msg = errorOf(
      arflow('train', 'flow', '--resume', 'uncond.safetensors', '--conditional', '--json'),
      2,
      'E_CONFIG',
    );
    expect(msg).toContain(
      '--conditional contradicts --resume uncond.safetensors, whose flow was built without --conditional',
    );
    expect(msg).not.toContain('true');
  }, 60_000);
});
