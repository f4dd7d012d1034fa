/**
 * Training guards, for every model and backend: a run that diverges (a non-finite loss or gradient, or
 * an update that sends the f32 parameters to ±Infinity) ends with a DivergenceError naming the step
 * (1-based, as progress reports count), and never writes a checkpoint with broken weights: the file a
 * trainer or the CLI was given holds the last good weights (loadable, finite, equal to the weights
 * before the bad step), or is left as it was, or was never written.
 *
 * Divergence is real, not mocked: a 'step' learning-rate schedule trains steps 1 and 2 at 1e-3 and
 * then multiplies the rate by 1e45. Step 3's loss and gradient are still finite, but its AdamW update
 * overflows f32 (the parameters become ±Infinity); step 4's forward pass then yields a NaN loss, which
 * the backend refuses. A checkpoint due after step 3 would hold the infinite weights: saving refuses
 * them. The CLI checks run the compiled `dist/cli/main.js` (build with `npx tsc -p tsconfig.json`).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackendName } from '../src/backend/index.js';
import { type CanvasSource, makeCanvases } from '../src/data/canvases.js';
import type { PronEntry } from '../src/data/cmudict.js';
import type { Series } from '../src/data/series.js';
import { Vocabulary } from '../src/data/vocab.js';
import { type ArflowError, DivergenceError } from '../src/errors.js';
import { Captioner } from '../src/models/captioner.js';
import { CharLM } from '../src/models/char-lm.js';
import { RealNVP } from '../src/models/flow.js';
import { type Flow, Glow } from '../src/models/flownet.js';
import { PixelRNN } from '../src/models/pixel-rnn.js';
import { Seq2Seq } from '../src/models/seq2seq.js';
import { SeriesModel } from '../src/models/series.js';
import { Rng } from '../src/util/rng.js';
import { CLI, jsonLines, runCli } from './helpers/cli.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'arflow-divergence-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Steps 1–2 at lr 1e-3, then lr 1e42: step 3's update overflows f32, step 4's loss is NaN. */
const JUMP = { steps: 6, lr: 1e-3, schedule: 'step', stepSize: 2, gamma: 1e45, clip: 0, logEvery: 1 } as const;
/** The step whose update sends the parameters to ±Infinity, and the step whose loss is then NaN. */
const OVERFLOW_STEP = 3;
const NAN_STEP = 4;

/** What a backend offers for reading its weights. */
interface ParamSource {
  paramInfo(): { name: string }[];
  getParam(name: string): Float32Array;
}

type Params = Map<string, Float32Array>;

function snapshot(b: ParamSource): Params {
  return new Map(b.paramInfo().map((p) => [p.name, b.getParam(p.name)]));
}

/** `got` holds exactly the finite weights `want`. */
function expectWeights(got: Params, want: Params | undefined): void {
  expect(want, 'no snapshot of the last good step').toBeDefined();
  expect([...got.keys()].sort()).toEqual([...(want as Params).keys()].sort());
  for (const [name, w] of want as Params) {
    const g = got.get(name) as Float32Array;
    expect(
      g.every((v) => Number.isFinite(v)),
      `${name} holds a non-finite value`,
    ).toBe(true);
    expect(g, name).toEqual(w);
  }
}

/** The error `p` rejects with (failing when it resolves). */
async function rejection(p: Promise<unknown>): Promise<ArflowError> {
  return p.then(
    () => {
      throw new Error('training did not diverge');
    },
    (e: unknown) => e as ArflowError,
  );
}

/** A DivergenceError whose message starts by naming `step`, with nothing after it on another line. */
function expectDiverged(e: ArflowError, step: number): void {
  expect(e).toBeInstanceOf(DivergenceError);
  expect(e.code).toBe('E_DIVERGED');
  expect(e.message).toMatch(new RegExp(`^step ${step}: `));
  expect(e.message).toMatch(/diverged/);
  expect(e.message).not.toMatch(/\n/);
}

// ---- tiny data sets -----------------------------------------------------------------------------

const TEXT = 'the quick brown fox jumps over the lazy dog. '.repeat(40);

function sineSeries(): Series {
  const length = 400;
  const values = new Float64Array(length);
  for (let t = 0; t < length; t++) values[t] = Math.round(100 * Math.sin(t / 7)) / 100;
  return { name: 'sine', columns: ['y'], values, length, dim: 1 };
}

function toyEntries(n: number): PronEntry[] {
  const rng = new Rng(7);
  const letters = 'abcdef';
  return Array.from({ length: n }, () => {
    const w = Array.from({ length: 2 + rng.int(3) }, () => letters[rng.int(letters.length)]);
    return { word: w.join(''), letters: w, prons: [w.map((c) => c.toUpperCase())] };
  });
}

function canvases() {
  const rng = new Rng(3);
  const n = 10;
  const source: CanvasSource = {
    n,
    images: Uint8Array.from({ length: n * 28 * 28 }, () => rng.int(256)),
    labels: Uint8Array.from({ length: n }, (_, i) => i % 10),
  };
  return makeCanvases(source, { count: 12, seed: 1, minItems: 1, maxItems: 1 });
}

function gaussian2d(n: number): Float32Array {
  const rng = new Rng(5);
  return Float32Array.from({ length: n * 2 }, () => rng.normal());
}

function bytes(n: number, max: number): Uint8Array {
  const rng = new Rng(9);
  return Uint8Array.from({ length: n }, () => rng.int(max + 1));
}

// ---- trainers that write checkpoints --------------------------------------------------------------

/** A model whose `fit` saves checkpoints itself (`checkpoint: { path, every }`). */
interface CheckpointingCase {
  name: string;
  make(): { backend: ParamSource; fit(opts: Record<string, unknown>): Promise<unknown> };
  load(path: string): ParamSource;
}

const backends: BackendName[] = ['native', 'js'];

const checkpointing: CheckpointingCase[] = [
  ...backends.map(
    (backend): CheckpointingCase => ({
      name: `char LM (GRU, ${backend})`,
      make: () => {
        const m = CharLM.create(Vocabulary.fromText(TEXT), { embed: 8, hidden: 16, cell: 'gru' }, { backend, seed: 1 });
        return { backend: m.backend, fit: (o) => m.fit(TEXT, { batchSize: 4, seqLen: 16, valEvery: 0, ...o }) };
      },
      load: (path) => CharLM.load(path, { backend }).model.backend,
    }),
  ),
  ...backends.map(
    (backend): CheckpointingCase => ({
      name: `series (${backend})`,
      make: () => {
        const m = SeriesModel.create({ dim: 1, hidden: 8, components: 2 }, { backend, seed: 1 });
        return { backend: m.backend, fit: (o) => m.fit(sineSeries(), { batchSize: 4, seqLen: 8, valEvery: 0, ...o }) };
      },
      load: (path) => SeriesModel.load(path, { backend }).backend,
    }),
  ),
  {
    name: 'seq2seq (native)',
    make: () => {
      const entries = toyEntries(40);
      const m = Seq2Seq.forEntries(entries, { hidden: 16, embed: 8, cell: 'gru' }, { seed: 1 });
      return { backend: m.backend, fit: (o) => m.fit(entries, { batchSize: 8, valEvery: 0, ...o }) };
    },
    load: (path) => Seq2Seq.load(path).model.backend,
  },
  {
    name: 'captioner (native)',
    make: () => {
      const data = canvases();
      const m = Captioner.create({ hidden: 16, embed: 8, channels: [4, 4, 4] }, { seed: 1 });
      return { backend: m.backend, fit: (o) => m.fit(data, { batchSize: 4, valEvery: 0, ...o }) };
    },
    load: (path) => Captioner.load(path).model.backend,
  },
];

describe.each(checkpointing)('$name', (c) => {
  /** Trains with JUMP, saving every `every` steps; the error, the weights after step 2, the path. */
  async function diverge(every: number) {
    const path = join(dir, `${c.name.replace(/\W+/g, '-')}-every${every}.safetensors`);
    const m = c.make();
    const seen = new Map<number, Params>();
    const err = await rejection(
      m.fit({
        ...JUMP,
        checkpoint: { path, every },
        onProgress: (p: { step: number }) => seen.set(p.step, snapshot(m.backend)),
      }),
    );
    return { err, good: seen.get(2), path, backend: m.backend, seen };
  }

  it('a NaN loss: DivergenceError naming the step; the checkpoint keeps the last good weights', async () => {
    const { err, good, path, backend, seen } = await diverge(2);
    expectDiverged(err, NAN_STEP);
    expect(err.message).toMatch(/loss|gradient/);
    expect(err.message).toContain(path);
    expectWeights(snapshot(c.load(path)), good);
    // The failed step changed nothing: the weights are step 3's (broken by its update), not step 4's.
    const after = snapshot(backend);
    for (const [name, w] of seen.get(OVERFLOW_STEP) as Params) expect(after.get(name), name).toEqual(w);
  });

  it('an update that overflows f32: the checkpoint due after it is refused and keeps the last good weights', async () => {
    const { err, good, path } = await diverge(1);
    expectDiverged(err, OVERFLOW_STEP);
    expectWeights(snapshot(c.load(path)), good);
  });
});

// ---- flows and the Pixel-RNN: fit keeps no checkpoint; the CLI saves after fit --------------------

interface FitCase {
  name: string;
  make(): {
    backend: ParamSource;
    fit(opts: Record<string, unknown>): Promise<unknown>;
    save(path: string): Promise<void>;
  };
}

const fitting: FitCase[] = [
  ...backends.map(
    (backend): FitCase => ({
      name: `vector Real NVP (${backend})`,
      make: () => {
        const m = RealNVP.create({ dim: 2, couplings: 2, hidden: 8, depth: 1 }, { backend, seed: 1 });
        const data = gaussian2d(64);
        return { backend: m.backend, fit: (o) => m.fit(data, { batchSize: 16, ...o }), save: (p) => m.save(p) };
      },
    }),
  ),
  {
    name: 'Glow (FlowNet, native)',
    make: () => {
      const m: Flow = Glow.create({ shape: [1, 4, 4], levels: 1, steps: 1, channels: 4 }, { seed: 1 });
      const data = bytes(32 * 16, 255);
      return { backend: m.backend, fit: (o) => m.fit(data, { batchSize: 8, ...o }), save: (p) => m.save(p) };
    },
  },
  ...backends.map(
    (backend): FitCase => ({
      name: `Pixel-RNN (${backend})`,
      make: () => {
        const m = PixelRNN.create(
          { cell: 'lstm', hidden: 4, layers: 1, rows: 4, cols: 4, output: 'bernoulli' },
          { backend, seed: 1 },
        );
        const data = bytes(16 * 16, 1);
        return { backend: m.backend, fit: (o) => m.fit(data, { batchSize: 4, ...o }), save: (p) => m.save(p) };
      },
    }),
  ),
];

describe.each(fitting)('$name', (c) => {
  it('a NaN loss: DivergenceError naming the step, and the broken weights are never saved', async () => {
    const path = join(dir, `${c.name.replace(/\W+/g, '-')}.safetensors`);
    const m = c.make();
    await m.save(path);
    const before = readFileSync(path);
    const seen = new Map<number, Params>();
    const err = await rejection(
      m.fit({ ...JUMP, onProgress: (p: { step: number }) => seen.set(p.step, snapshot(m.backend)) }),
    );
    expectDiverged(err, NAN_STEP);
    expect(err.message).toMatch(/loss|gradient/);
    // The failed step changed nothing: the weights are step 3's (broken by its update), not step 4's.
    const after = snapshot(m.backend);
    for (const [name, w] of seen.get(OVERFLOW_STEP) as Params) expect(after.get(name), name).toEqual(w);
    expect([...after.values()].some((w) => w.some((v) => !Number.isFinite(v)))).toBe(true);
    // Saving the broken model is refused, and the file there is left as it was.
    const refused = await rejection(m.save(path));
    expect(refused).toBeInstanceOf(DivergenceError);
    expect(refused.message).toMatch(/not finite|non-finite|Infinity|NaN/);
    expect(readFileSync(path).equals(before)).toBe(true);
  });
});

// ---- the CLI: exit code 1, one clear line (or the --json error object), the checkpoint untouched ----

describe('CLI', () => {
  beforeAll(() => {
    expect(existsSync(CLI), `${CLI} missing: build with npx tsc -p tsconfig.json`).toBe(true);
  });

  const arflow = (...args: string[]) => runCli(dir, args);
  const lastLine = (s: string) => s.trim().split('\n').at(-1) as string;

  it('train char: a diverging run leaves the checkpoint of an earlier run as it was', () => {
    const text = join(dir, 'fox.txt');
    writeFileSync(text, TEXT);
    const out = join(dir, 'char.safetensors');
    const base = ['train', 'char', '--text', text, '--hidden', '8', '--embed', '8', '--batch', '4', '--seq', '16'];
    expect(arflow(...base, '--steps', '2', '--out', out, '--json').status).toBe(0);
    const good = readFileSync(out);
    // --checkpoint-every 1: step 1's update overflows, and the checkpoint due after it is refused.
    const j = arflow(
      ...base,
      '--steps',
      '4',
      '--lr',
      '1e39',
      '--clip',
      '0',
      '--checkpoint-every',
      '1',
      '--out',
      out,
      '--json',
    );
    expect(j.status).toBe(1);
    const e = jsonLines(j.stdout).at(-1) as Record<string, unknown>;
    expect(e).toMatchObject({ type: 'error', code: 'E_DIVERGED' });
    expect(e.message).toMatch(/^step 1: /);
    expect(readFileSync(out).equals(good)).toBe(true);
    // Without periodic checkpoints: step 2's loss is NaN; one line on stderr names the step.
    const r = arflow(...base, '--steps', '4', '--lr', '1e39', '--clip', '0', '--out', out);
    expect(r.status).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/^arflow: step 2: training diverged: the (loss|gradient norm) is/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(readFileSync(out).equals(good)).toBe(true);
  });

  it.each([
    ['realnvp', ['--couplings', '2', '--hidden', '8', '--depth', '1']],
    ['maf', ['--layers', '1', '--hidden', '8']],
  ])('train flow --model %s: a diverging run writes no checkpoint', (model, arch) => {
    const out = join(dir, `flow-${model}.safetensors`);
    const png = join(dir, `flow-${model}.png`);
    const r = arflow(
      'train',
      'flow',
      '--model',
      model,
      '--data',
      'moons',
      '--n',
      '256',
      '--test-n',
      '64',
      '--batch',
      '32',
      '--steps',
      '4',
      '--lr',
      '1e39',
      '--clip',
      '0',
      ...arch,
      '--out',
      out,
      '--png',
      png,
      '--json',
    );
    expect(r.status).toBe(1);
    const e = jsonLines(r.stdout).at(-1) as Record<string, unknown>;
    expect(e).toMatchObject({ type: 'error', code: 'E_DIVERGED' });
    expect(e.message).toMatch(/^step 2: training diverged/);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(png)).toBe(false);
  });
});
