/**
 * Continuing a flow's training run: optimizer state in flow checkpoints (`Flow.save` / `RealNVP.save`
 * with `{ optimizer: true }`, restored by `load`), `fit` with `resume` (N steps, save, load, M more
 * equals N + M in one go), and `arflow train flow --resume FILE` through the compiled CLI (run
 * `npx tsc -p tsconfig.json` first, as `npm test` does).
 */
import { type SpawnSyncReturns, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fashionMnistAvailable, loadFashionMnist } from '../src/data/fashion-mnist.js';
import { Vocabulary } from '../src/data/vocab.js';
import { CheckpointError } from '../src/errors.js';
import { sample2d } from '../src/flows/data2d.js';
import { encodeSafetensors, loadSafetensors, type SafetensorsContents } from '../src/io/safetensors.js';
import { CharLM } from '../src/models/char-lm.js';
import { RealNVP } from '../src/models/flow.js';
import { Flow, Glow, MAF, RealNVPImage } from '../src/models/flownet.js';
import type { FlowTrainOptions, FlowTrainSummary } from '../src/train/flow-trainer.js';
import { Rng } from '../src/util/rng.js';
import { CLI, jsonLines, runCli } from './helpers/cli.js';

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
        ...['1.5', '-1', 'abc', ''].map(
          (s): [string, SafetensorsContents['tensors'], Record<string, string>, RegExp] => [
            `step-${s}`,
            tensors,
            { ...metadata, optimizer_step: s },
            /optimizer_step/,
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

  it('resume.step past steps, or not a whole number, is a ConfigError', async () => {
    const m = MAF.create({ dim: 2, layers: 1, hidden: 4 });
    await expect(m.fit(moons, { steps: 3, resume: { step: 4 } })).rejects.toThrow(/resume\.step 4 is past steps 3/);
    await expect(m.fit(moons, { steps: 3, resume: { step: 1.5 } })).rejects.toThrow(/resume\.step/);
  });
});

// ---- the CLI -------------------------------------------------------------------------------------

const arflow = (...args: string[]): SpawnSyncReturns<string> => runCli(dir, args);

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
    });
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
    const child = spawn(process.execPath, [CLI, 'train', 'flow', ...run, '--out', 'part.safetensors', '--json'], {
      cwd: dir,
    });
    let stdout = '';
    let signalled = false;
    const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    child.stdout.on('data', (d) => {
      stdout += d;
      if (!signalled && stdout.includes('"type":"progress"')) {
        signalled = true;
        child.kill('SIGINT');
      }
    });
    expect(await exited, stdout).toBe(0);
    const cut = jsonLines(stdout).at(-1) as Record<string, unknown>;
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
});
