/**
 * `arflow train flow`, and `sample` / `eval` of a flow checkpoint, through the compiled CLI
 * (`node dist/cli/main.js`; run `npx tsc -p tsconfig.json` first, as `npm test` does).
 */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fashionMnistAvailable } from '../src/data/fashion-mnist.js';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.js';
import { RealNVP } from '../src/models/flow.js';
import { Glow, MAF, RealNVPImage } from '../src/models/flownet.js';
import { CLI, interruptAt, jsonLines, runCli, watchCli } from './helpers/cli.js';

const _ROOT = fileURLToPath(new URL('../', import.meta.url));
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
/**
 * How far below the full-covariance Gaussian a trained flow's held-out NLL on two moons must be (nats).
 * The runs below reach 0.45–0.6 nats below it (seeds 0–2); an untrained flow (the identity, N(0, I))
 * scores ~0.45 nats above it.
 */
const MOONS_MARGIN = 0.3;
/** Fashion-MNIST is installed (Debian package dataset-fashion-mnist, or $ARFLOW_FASHION_MNIST). */
const fm = fashionMnistAvailable();
const FM_SKIP = fm
  ? ''
  : ' (skipped: Fashion-MNIST not installed: apt-get install dataset-fashion-mnist or set ARFLOW_FASHION_MNIST)';

let dir: string;

beforeAll(() => {
  expect(existsSync(CLI), `${CLI} missing: build with npx tsc -p tsconfig.json`).toBe(true);
  dir = mkdtempSync(join(tmpdir(), 'arflow-flow-cli-'));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const arflow = (...args: string[]): SpawnSyncReturns<string> => runCli(dir, args);

function isPng(path: string): boolean {
  const b = readFileSync(path);
  return PNG_SIGNATURE.every((v, i) => b[i] === v);
}

describe('arflow train flow / sample / eval', () => {
  it('trains on two moons and beats the Gaussian baseline', () => {
    const r = arflow(
      'train',
      'flow',
      '--data',
      'moons',
      '--steps',
      '200',
      '--backend',
      'js',
      '--json',
      '--out',
      'moons.safetensors',
    );
    expect(r.status, r.stderr).toBe(0);
    const lines = jsonLines(r.stdout);
    expect(lines.filter((l) => l.type === 'progress').length).toBeGreaterThan(0);
    const summary = lines.at(-1) as Record<string, number | string>;
    expect(summary.type).toBe('summary');
    for (const k of ['steps', 'samplesPerSec', 'trainLoss', 'testNll', 'gaussianNll', 'out'])
      expect(summary).toHaveProperty(k);
    expect(summary.steps).toBe(200);
    expect(summary.backend).toBe('js');
    expect(summary.testNll as number).toBeLessThan((summary.gaussianNll as number) - MOONS_MARGIN);
    expect(existsSync(join(dir, 'moons.safetensors'))).toBe(true);
    expect(summary.png).toBe('moons.png');
    expect(isPng(join(dir, 'moons.png'))).toBe(true);
  }, 120_000);

  it('samples a PNG from the checkpoint, deterministically', () => {
    const a = arflow('sample', 'moons.safetensors', '--n', '2000', '--seed', '3', '--out', 'a.png', '--json');
    expect(a.status, a.stderr).toBe(0);
    const s = jsonLines(a.stdout).at(-1) as Record<string, unknown>;
    expect(s).toMatchObject({ type: 'summary', n: 2000, out: 'a.png' });
    expect(isPng(join(dir, 'a.png'))).toBe(true);
    const b = arflow('sample', 'moons.safetensors', '--n', '2000', '--seed', '3', '--out', 'b.png');
    expect(b.status, b.stderr).toBe(0);
    expect(readFileSync(join(dir, 'b.png'))).toEqual(readFileSync(join(dir, 'a.png')));
    const bad = arflow('sample', 'moons.safetensors', '--temperature', '0', '--out', 'c.png', '--json');
    expect(bad.status).toBe(2);
  });

  it('evaluates held-out NLL against the Gaussian baseline', () => {
    const r = arflow('eval', 'moons.safetensors', '--json');
    expect(r.status, r.stderr).toBe(0);
    const s = jsonLines(r.stdout).at(-1) as Record<string, number | string>;
    expect(s.type).toBe('summary');
    expect(s.data).toBe('moons');
    expect(s.testNll as number).toBeLessThan((s.gaussianNll as number) - MOONS_MARGIN);
    const other = arflow('eval', 'moons.safetensors', '--data', 'rings', '--n', '500', '--json');
    expect(other.status, other.stderr).toBe(0);
    expect(jsonLines(other.stdout).at(-1)).toMatchObject({ type: 'summary', data: 'rings', n: 500 });
  });

  it('rejects an unknown data set with exit code 2', () => {
    const r = arflow('train', 'flow', '--data', 'nope', '--json');
    expect(r.status).toBe(2);
    const err = jsonLines(r.stdout).at(-1) as Record<string, unknown>;
    expect(err).toMatchObject({ type: 'error', code: 'E_CONFIG' });
  });
});

describe('arflow train flow --model … (FlowNet models)', () => {
  it('trains MAF on two moons below the Gaussian, then samples and evaluates its checkpoint', () => {
    const r = arflow('train', 'flow', '--data', 'moons', '--model', 'maf', '--steps', '300', '--n', '4000', '--json');
    expect(r.status, r.stderr).toBe(0);
    const s = jsonLines(r.stdout).at(-1) as Record<string, number | string>;
    expect(s).toMatchObject({ type: 'summary', model: 'maf', out: 'flow-moons-maf.safetensors', steps: 300 });
    expect(s.testNll as number).toBeLessThan((s.gaussianNll as number) - MOONS_MARGIN);
    expect(isPng(join(dir, s.png as string))).toBe(true);
    const sample = arflow('sample', 'flow-moons-maf.safetensors', '--n', '500', '--out', 'maf.png', '--json');
    expect(sample.status, sample.stderr).toBe(0);
    expect(isPng(join(dir, 'maf.png'))).toBe(true);
    const ev = arflow('eval', 'flow-moons-maf.safetensors', '--n', '1000', '--json');
    expect(ev.status, ev.stderr).toBe(0);
    const e = jsonLines(ev.stdout).at(-1) as Record<string, number | string>;
    expect(e.data).toBe('moons');
    expect(e.testNll as number).toBeLessThan((e.gaussianNll as number) - MOONS_MARGIN);
  }, 120_000);

  it.skipIf(!fm)(
    `trains a multi-scale Real NVP on Fashion-MNIST: testBpd below 8, sample grid and interpolation PNGs, eval${FM_SKIP}`,
    () => {
      const r = arflow(
        'train',
        'flow',
        '--data',
        'fashion-mnist',
        '--steps',
        '20',
        '--n',
        '1000',
        '--test-n',
        '100',
        '--channels',
        '8',
        '--blocks',
        '1',
        '--conditional',
        '--json',
      );
      expect(r.status, r.stderr).toBe(0);
      const s = jsonLines(r.stdout).at(-1) as Record<string, number | string>;
      expect(s).toMatchObject({
        type: 'summary',
        model: 'realnvp',
        out: 'flow-fashion-mnist.safetensors',
        testImages: 100,
      });
      expect(s.testBpd as number).toBeLessThan(7.5);
      expect(isPng(join(dir, s.png as string))).toBe(true);
      expect(isPng(join(dir, s.interpolationPng as string))).toBe(true);
      const sample = arflow('sample', 'flow-fashion-mnist.safetensors', '--n', '9', '--label', '3', '--out', 'g.png');
      expect(sample.status, sample.stderr).toBe(0);
      expect(isPng(join(dir, 'g.png'))).toBe(true);
      const badLabel = arflow('sample', 'flow-fashion-mnist.safetensors', '--label', '12', '--json');
      expect(badLabel.status).toBe(2);
      // eval of the saved checkpoint on the same 100 test images (same dequantisation noise) reproduces
      // the score of training: the checkpoint round-trips and both use one protocol.
      const ev = arflow('eval', 'flow-fashion-mnist.safetensors', '--n', '100', '--json');
      expect(ev.status, ev.stderr).toBe(0);
      const e = jsonLines(ev.stdout).at(-1) as Record<string, number | string>;
      expect(e).toMatchObject({ type: 'summary', data: 'fashion-mnist', n: 100 });
      expect(e.testBpd as number).toBeCloseTo(s.testBpd as number, 4);
    },
    120_000,
  );

  for (const model of ['nice', 'glow', 'iaf']) {
    it(`trains ${model} on two moons below the Gaussian baseline`, () => {
      // NICE's additive couplings learn slowly at the default rate (0.07 nats below the Gaussian).
      const lr = model === 'nice' ? ['--lr', '0.005'] : [];
      const r = arflow(
        'train',
        'flow',
        '--data',
        'moons',
        '--model',
        model,
        '--steps',
        '300',
        '--n',
        '4000',
        ...lr,
        '--json',
      );
      expect(r.status, r.stderr).toBe(0);
      const s = jsonLines(r.stdout).at(-1) as Record<string, number | string>;
      expect(s).toMatchObject({ type: 'summary', model, steps: 300 });
      expect(s.testNll as number, `${model}: ${s.testNll} vs ${s.gaussianNll}`).toBeLessThan(
        (s.gaussianNll as number) - MOONS_MARGIN,
      );
      const sample = arflow('sample', s.out as string, '--n', '300', '--temperature', '0.8', '--out', `${model}.png`);
      expect(sample.status, sample.stderr).toBe(0);
      expect(isPng(join(dir, `${model}.png`))).toBe(true);
    }, 120_000);
  }

  it('refuses IAF on images and the JS backend for FlowNet models, with exit code 2', () => {
    const iaf = arflow('train', 'flow', '--data', 'fashion-mnist', '--model', 'iaf', '--json');
    expect(iaf.status).toBe(2);
    expect(jsonLines(iaf.stdout).at(-1)).toMatchObject({ type: 'error', code: 'E_CONFIG' });
    const js = arflow('train', 'flow', '--model', 'glow', '--backend', 'js', '--json');
    expect(js.status).toBe(2);
  });
});

/** Width, height and colour type (0 gray, 2 RGB) from a PNG's IHDR. */
function pngInfo(path: string): { width: number; height: number; colorType: number } {
  const b = readFileSync(path);
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20), colorType: b[25] };
}

function errorLine(r: SpawnSyncReturns<string>): Record<string, unknown> {
  const lines = jsonLines(r.stdout);
  expect(
    lines.filter((l) => l.type === 'progress'),
    'no training started',
  ).toEqual([]);
  const last = lines.at(-1) as Record<string, unknown>;
  expect(last?.type, r.stdout + r.stderr).toBe('error');
  return last;
}

/** Fills every tensor whose name matches `re` with `value` (a damaged checkpoint). */
function tamper(path: string, out: string, re: RegExp, value: number): void {
  const { tensors, metadata } = loadSafetensors(path);
  for (const [name, t] of Object.entries(tensors)) if (re.test(name)) (t.data as Float32Array).fill(value);
  saveSafetensors(out, tensors, metadata);
}

describe('arflow train flow / sample / eval on bad input: a clear error, nothing lost', () => {
  const moons = { data: 'moons', n: 1000, seed: 0 };

  beforeAll(async () => {
    mkdirSync(join(dir, 'adir'));
    writeFileSync(join(dir, 'afile'), 'not a directory');
    await MAF.create({ dim: 2, layers: 2, hidden: 8 }).save(join(dir, 'maf2.safetensors'), { train: moons });
    await RealNVP.create({ dim: 2, couplings: 2, hidden: 8 }).save(join(dir, 'rnvp2.safetensors'), { train: moons });
  });

  it('checks --out and --png before training: a directory, a parent that is a file, the picture over a checkpoint', () => {
    const base = ['train', 'flow', '--model', 'maf', '--steps', '3', '--n', '100', '--test-n', '50', '--json'];
    const victim = readFileSync(join(dir, 'maf2.safetensors'));
    for (const [args, mentions] of [
      [['--out', 'adir'], 'adir'],
      [['--out', 'afile/x.safetensors'], 'afile'],
      [['--out', 'p1.safetensors', '--png', 'afile/x.png'], 'afile'],
      [['--out', 'x.png'], 'x.png'],
      [['--out', 'p2.safetensors', '--png', 'maf2.safetensors'], 'maf2.safetensors'],
      [['--out', 'p3.safetensors', '--png', 'p3.safetensors'], 'p3.safetensors'],
    ] as const) {
      const r = arflow(...base, ...args);
      expect(r.status, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(2);
      const err = errorLine(r);
      expect(err.code).toBe('E_CONFIG');
      expect(err.message).toContain(mentions);
    }
    for (const f of ['x.png', 'p1.safetensors', 'p2.safetensors', 'p3.safetensors'])
      expect(existsSync(join(dir, f)), f).toBe(false);
    expect(readFileSync(join(dir, 'maf2.safetensors'))).toEqual(victim);
  }, 60_000);

  it('refuses flags a run would ignore and out-of-range values before training, naming the flag', () => {
    const cases: [string[], string][] = [
      [['--test-n', '-3'], '--test-n'],
      [['--conditional'], '--conditional'],
      [['--scales', '0'], '--scales'],
      [['--channels', '-5'], '--channels'],
      [['--seed', '-1'], '--seed'],
      [['--model', 'maf', '--couplings', '4'], '--couplings'],
      [['--model', 'glow', '--flow-steps', '0'], '--flow-steps'],
      [['--model', 'maf', '--temperature', '0'], '--temperature'],
      [['--data', 'fashion-mnist', '--model', 'glow', '--temperature', '0'], '--temperature'],
      [['--data', 'fashion-mnist', '--model', 'glow', '--test-n', '1'], '--test-n'],
      [['--n', '1000000000000'], '--n'],
      [['--model', 'maf', '--test-n', '1000000000000'], '--test-n'],
    ];
    for (const [args, flag] of cases) {
      const r = arflow('train', 'flow', '--steps', '3', '--n', '100', '--out', 'never.safetensors', ...args, '--json');
      expect(r.status, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(2);
      const err = errorLine(r);
      expect(err.code).toBe('E_CONFIG');
      expect(err.message, args.join(' ')).toContain(flag);
    }
    expect(existsSync(join(dir, 'never.safetensors'))).toBe(false);
  }, 60_000);

  it('2-D Real NVP scores --test-n points and draws its samples at --temperature', () => {
    const run = (out: string, ...extra: string[]) => {
      const r = arflow('train', 'flow', '--steps', '20', '--n', '500', '--out', out, '--json', ...extra);
      expect(r.status, r.stderr).toBe(0);
      return jsonLines(r.stdout).at(-1) as Record<string, number | string>;
    };
    // Same seed, data and steps: the same model. Only the test set and the sample temperature differ.
    const a = run('t50.safetensors', '--test-n', '50');
    const b = run('t60.safetensors', '--test-n', '60', '--temperature', '0.3');
    expect(a.testNll).not.toBe(b.testNll);
    expect(readFileSync(join(dir, 't50.png'))).not.toEqual(readFileSync(join(dir, 't60.png')));
    const maf = (out: string, ...extra: string[]) =>
      arflow('train', 'flow', '--model', 'maf', '--steps', '5', '--n', '500', '--test-n', '50', '--out', out, ...extra);
    const c = maf('tm.safetensors', '--temperature', '0.3');
    expect(c.status, c.stderr).toBe(0);
    const d = maf('tn.safetensors');
    expect(d.status, d.stderr).toBe(0);
    expect(readFileSync(join(dir, 'tm.png'))).not.toEqual(readFileSync(join(dir, 'tn.png')));
  }, 60_000);

  it('a run on 1 or 2 points succeeds with gaussianNll null and a note (the baseline is singular)', () => {
    for (const model of ['realnvp', 'maf']) {
      const r = arflow(
        'train',
        'flow',
        '--model',
        model,
        '--n',
        '2',
        '--steps',
        '3',
        '--test-n',
        '50',
        '--out',
        `tiny-${model}.safetensors`,
        '--json',
      );
      expect(r.status, `${model}: ${r.stdout}${r.stderr}`).toBe(0);
      const s = jsonLines(r.stdout).at(-1) as Record<string, unknown>;
      expect(s.type).toBe('summary');
      expect(s).toHaveProperty('gaussianNll', null);
      expect(s.gaussianNote).toMatch(/singular/);
      expect(Number.isFinite(s.testNll)).toBe(true);
    }
  }, 60_000);

  it('sample checks its flags and never writes its picture over the checkpoint or into a directory', () => {
    for (const ckpt of ['maf2.safetensors', 'rnvp2.safetensors']) {
      const before = readFileSync(join(dir, ckpt));
      for (const [args, mentions] of [
        [['--out', ckpt], ckpt],
        [['--out', 'adir'], 'adir'],
        [['--out', 'afile/s.png'], 'afile'],
        [['--n', '0'], '--n'],
        [['--n', '1000000000000'], '--n'],
        [['--label', '3'], '--label'],
        [['--temperature', '0'], '--temperature'],
        [['--seed', '-1'], '--seed'],
      ] as const) {
        const r = arflow('sample', ckpt, ...args, '--json');
        expect(r.status, `${ckpt} ${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(2);
        expect(errorLine(r)).toMatchObject({ code: 'E_CONFIG', message: expect.stringContaining(mentions) });
      }
      expect(readFileSync(join(dir, ckpt))).toEqual(before);
    }
  }, 60_000);

  it('image flows are drawn in their own shape, and eval refuses a flow that is not [1, 28, 28] or 2-D data', async () => {
    await Glow.create({ shape: [1, 14, 14], levels: 1, steps: 1, channels: 4 }).save(join(dir, 'g14.safetensors'), {
      train: { data: 'custom' },
    });
    await RealNVPImage.create({ shape: [3, 8, 8], scales: 1, channels: 4 }).save(join(dir, 'rgb8.safetensors'));
    await Glow.create({ shape: [1, 28, 28], levels: 1, steps: 1, channels: 4 }).save(join(dir, 'g28.safetensors'));
    const g = arflow('sample', 'g14.safetensors', '--n', '4', '--out', 'g14.png');
    expect(g.status, g.stderr).toBe(0);
    // 2 × 2 images of 14 px with 2 px borders, upscaled ×2; gray.
    expect(pngInfo(join(dir, 'g14.png'))).toEqual({ width: 68, height: 68, colorType: 0 });
    const c = arflow('sample', 'rgb8.safetensors', '--n', '4', '--out', 'rgb8.png');
    expect(c.status, c.stderr).toBe(0);
    expect(pngInfo(join(dir, 'rgb8.png'))).toEqual({ width: 44, height: 44, colorType: 2 });
    const e = arflow('eval', 'g14.safetensors', '--n', '10', '--json');
    expect(e.status, e.stdout).toBe(2);
    expect(errorLine(e).message).toContain('[1, 14, 14]');
    const d = arflow('eval', 'g28.safetensors', '--data', 'moons', '--json');
    expect(d.status, d.stdout).toBe(2);
    expect(errorLine(d).message).toContain('moons');
    const p = arflow('eval', 'maf2.safetensors', '--data', 'fashion-mnist', '--json');
    expect(p.status, p.stdout).toBe(2);
  }, 60_000);

  it('eval of a damaged checkpoint is an error, never a NaN or Infinity result', () => {
    tamper(join(dir, 'maf2.safetensors'), join(dir, 'maf-huge.safetensors'), /weight/, 1e8);
    tamper(join(dir, 'rnvp2.safetensors'), join(dir, 'rnvp-huge.safetensors'), /weight/, 1e4);
    for (const ckpt of ['maf-huge.safetensors', 'rnvp-huge.safetensors']) {
      const r = arflow('eval', ckpt, '--n', '50', '--json');
      expect(r.status, `${ckpt}: ${r.stdout}`).toBe(1);
      const err = errorLine(r);
      expect(err.message).toContain(ckpt);
      expect(err.message).toMatch(/corrupt|diverged/);
    }
    // A training-set size of 10¹² in the metadata is reported, not allocated.
    const { tensors, metadata } = loadSafetensors(join(dir, 'maf2.safetensors'));
    saveSafetensors(join(dir, 'maf-n.safetensors'), tensors, {
      ...metadata,
      train: JSON.stringify({ ...moons, n: 1e12 }),
    });
    const n = arflow('eval', 'maf-n.safetensors', '--n', '50', '--json');
    expect(n.status, n.stdout + n.stderr).toBe(1);
    expect(errorLine(n)).toMatchObject({ code: 'E_CHECKPOINT', message: expect.stringContaining('train.n') });
  }, 60_000);

  it.skipIf(!fm)(`eval of an image flow with broken actnorm scales is an error${FM_SKIP}`, () => {
    tamper(join(dir, 'g28.safetensors'), join(dir, 'g28-nan.safetensors'), /logs$/, 100);
    const r = arflow('eval', 'g28-nan.safetensors', '--n', '10', '--json');
    expect(r.status, r.stdout + r.stderr).toBe(1);
    expect(errorLine(r).message).toMatch(/corrupt|diverged/);
  });

  it('a file that is not a flow checkpoint gets a message about the file, not about the options', () => {
    writeFileSync(
      join(dir, 'random.safetensors'),
      Buffer.from(Array.from({ length: 500 }, (_, i) => (i * 37 + 11) % 256)),
    );
    for (const [args, code, mentions] of [
      [['sample', 'missing.safetensors', '--n', '10'], 'E_CHECKPOINT', 'not found'],
      [['sample', 'random.safetensors', '--n', '10'], 'E_CHECKPOINT', 'random.safetensors'],
      [['sample', 'adir', '--n', '10'], 'E_CHECKPOINT', 'directory'],
      [['eval', 'missing.safetensors', '--data', 'moons'], 'E_CHECKPOINT', 'not found'],
    ] as const) {
      const r = arflow(...args, '--json');
      expect(r.status, `${args.join(' ')}: ${r.stdout}`).toBe(1);
      const err = errorLine(r);
      expect(err.code).toBe(code);
      expect(err.message).toContain(mentions);
      expect(err.message).not.toMatch(/unknown option/);
    }
    const help = arflow('sample', '--help');
    expect(help.status).toBe(0);
    for (const flag of ['--prime', '--n', '--label', '--out']) expect(help.stdout).toContain(flag);
    expect(arflow('train', 'flow', '--help').stdout).toMatch(/--seconds[^\n]*0 = no limit/);
  }, 60_000);

  it('Ctrl-C while the test set is scored leaves the trained checkpoint saved', async () => {
    // A million held-out points take a second or more to score; the checkpoint must already be on disk.
    const args = ['train', 'flow', '--model', 'maf', '--steps', '5', '--n', '1000', '--test-n', '1000000'];
    const run = await interruptAt(dir, [...args, '--out', 'sigint.safetensors'], 'scoring the test set');
    expect(run.signalled, run.stdout).toBe(true);
    expect(run.signal ?? run.code).toBe('SIGINT');
    const e = arflow('eval', 'sigint.safetensors', '--n', '100', '--json');
    expect(e.status, e.stdout + e.stderr).toBe(0);
    expect(jsonLines(e.stdout).at(-1)).toMatchObject({ type: 'summary', data: 'moons', n: 100 });
  }, 60_000);

  it.skipIf(!fm)(
    `image training with fewer than 12 test images still writes its pictures and summary${FM_SKIP}`,
    () => {
      const r = arflow(
        'train',
        'flow',
        '--data',
        'fashion-mnist',
        '--model',
        'glow',
        '--n',
        '64',
        '--test-n',
        '5',
        '--steps',
        '2',
        '--levels',
        '1',
        '--flow-steps',
        '1',
        '--channels',
        '4',
        '--out',
        'g5.safetensors',
        '--json',
      );
      expect(r.status, r.stdout + r.stderr).toBe(0);
      const s = jsonLines(r.stdout).at(-1) as Record<string, unknown>;
      expect(s).toMatchObject({ type: 'summary', testImages: 5, interpolationPng: 'g5-interp.png' });
      // 2 rows (pairs of the 5 test images) of 10 interpolation steps: 2 × (28 + 2) + 2 px, ×2.
      expect(pngInfo(join(dir, 'g5-interp.png'))).toEqual({ width: 604, height: 124, colorType: 0 });
      expect(isPng(join(dir, 'g5.png'))).toBe(true);
    },
    60_000,
  );
});

/** `arflow` that must end by itself within `ms` (a FIFO opened by mistake would block it forever). */
function arflowWithin(ms: number, ...args: string[]): SpawnSyncReturns<string> {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: dir, encoding: 'utf8', timeout: ms });
  expect(r.error, `${args.join(' ')}: did not exit by itself within ${ms} ms`).toBeUndefined();
  expect(r.signal, args.join(' ')).toBeNull();
  return r;
}

describe('re-check: special files, non-finite samples, messages, exit codes and help', () => {
  const moons = { data: 'moons', n: 1000, seed: 0 };

  beforeAll(async () => {
    mkdirSync(join(dir, 'rc'));
    await MAF.create({ dim: 2, layers: 2, hidden: 8 }).save(join(dir, 'rc', 'maf.safetensors'), { train: moons });
    await RealNVP.create({ dim: 2, couplings: 2, hidden: 8 }).save(join(dir, 'rc', 'rnvp.safetensors'), {
      train: moons,
    });
    await Glow.create({ shape: [1, 4, 4], levels: 1, steps: 1, channels: 4 }).save(join(dir, 'rc', 'g4.safetensors'));
    await Glow.create({ shape: [1, 28, 28], levels: 1, steps: 1, channels: 4 }).save(
      join(dir, 'rc', 'g28.safetensors'),
    );
  });

  it.skipIf(process.platform === 'win32')(
    'a FIFO, a device or a symbolic link as --out, --png or FILE is refused at once: nothing hangs, nothing is replaced',
    () => {
      const fifo = join('rc', 'fifo');
      const mk = spawnSync('mkfifo', [join(dir, fifo)]);
      expect(mk.status, String(mk.stderr)).toBe(0);
      const link = join('rc', 'null-link');
      symlinkSync('/dev/null', join(dir, link));
      // A link to a regular file: the rename would replace the link, not write through it.
      writeFileSync(join(dir, 'rc', 'real.png'), 'old picture');
      symlinkSync('real.png', join(dir, 'rc', 'png-link'));
      const train = ['train', 'flow', '--model', 'maf', '--steps', '3', '--n', '100', '--test-n', '50'];
      for (const [args, mentions] of [
        [[...train, '--out', 'rc/f1.safetensors', '--png', fifo], 'FIFO'],
        [[...train, '--out', fifo, '--png', 'rc/f2.png'], 'FIFO'],
        [[...train, '--out', 'rc/f3.safetensors', '--png', link], 'character device'],
        [['sample', 'rc/maf.safetensors', '--out', fifo], 'FIFO'],
        [['sample', 'rc/rnvp.safetensors', '--out', link], 'character device'],
        [['sample', 'rc/maf.safetensors', '--out', 'rc/png-link'], 'symbolic link'],
        [['train', 'char', '--steps', '2', '--hidden', '8', '--out', fifo], 'FIFO'],
      ] as const) {
        const r = arflowWithin(20_000, ...args, '--json');
        expect(r.status, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(2);
        expect(errorLine(r)).toMatchObject({ code: 'E_CONFIG', message: expect.stringContaining(mentions) });
      }
      for (const cmd of ['sample', 'eval']) {
        const r = arflowWithin(20_000, cmd, fifo, '--json');
        expect(r.status, `${cmd} ${fifo}: ${r.stdout}${r.stderr}`).toBe(1);
        expect(errorLine(r)).toMatchObject({ code: 'E_CHECKPOINT', message: expect.stringContaining('FIFO') });
      }
      expect(lstatSync(join(dir, fifo)).isFIFO()).toBe(true);
      expect(lstatSync(join(dir, link)).isSymbolicLink()).toBe(true);
      expect(lstatSync(join(dir, 'rc', 'png-link')).isSymbolicLink()).toBe(true);
      expect(readFileSync(join(dir, 'rc', 'real.png'), 'utf8')).toBe('old picture');
      for (const f of ['f1.safetensors', 'f2.png', 'f3.safetensors'])
        expect(existsSync(join(dir, 'rc', f)), f).toBe(false);
    },
    60_000,
  );

  it('sample of a checkpoint whose samples are not finite is an error naming it, for 2-D and image flows', () => {
    tamper(join(dir, 'rc', 'rnvp.safetensors'), join(dir, 'rc', 'rnvp-w.safetensors'), /weight/, 1e30);
    tamper(join(dir, 'rc', 'maf.safetensors'), join(dir, 'rc', 'maf-w.safetensors'), /scale|weight/, 1e4);
    // Decoding an actnorm multiplies by exp(−logs): exp(100) overflows float32.
    tamper(join(dir, 'rc', 'g4.safetensors'), join(dir, 'rc', 'g4-logs.safetensors'), /logs$/, -100);
    for (const ckpt of ['rnvp-w', 'maf-w', 'g4-logs']) {
      const r = arflow('sample', `rc/${ckpt}.safetensors`, '--n', '50', '--out', `rc/${ckpt}.png`, '--json');
      expect(r.status, `${ckpt}: ${r.stdout}${r.stderr}`).toBe(1);
      const err = errorLine(r);
      expect(err.code).toBe('E_DATA');
      expect(err.message).toContain(`${ckpt}.safetensors`);
      expect(err.message).toMatch(/not finite|non-finite/);
      expect(err.message).toMatch(/corrupt|diverged/);
      expect(existsSync(join(dir, 'rc', `${ckpt}.png`)), ckpt).toBe(false);
    }
  });

  it('messages: a missing FILE, the other kind’s options, the picture over the checkpoint; --json stdout stays JSON', () => {
    for (const args of [['sample', '--n', '10'], ['eval', '--n', '5'], ['eval'], ['sample', '--length', '5']]) {
      const r = arflow(...args, '--json');
      expect(r.status, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(2);
      // jsonLines parses every stdout line: no help text before the error.
      const lines = jsonLines(r.stdout);
      expect(lines, args.join(' ')).toHaveLength(1);
      expect(lines[0]).toMatchObject({ type: 'error', code: 'E_CONFIG' });
      expect(lines[0].message).toContain('needs a checkpoint FILE');
      expect(lines[0].message).not.toContain('unknown option');
    }
    for (const [args, flag] of [
      [['sample', 'rc/maf.safetensors', '--length', '5'], '--length'],
      [['sample', 'rc/rnvp.safetensors', '--prime', 'x'], '--prime'],
      [['eval', 'rc/maf.safetensors', '--text', 'x.txt'], '--text'],
    ] as const) {
      const r = arflow(...args, '--json');
      expect(r.status, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(2);
      expect(errorLine(r).message).toContain(`${flag} is an option of character-model checkpoints`);
    }
    const over = arflow('train', 'flow', '--steps', '3', '--out', 'rc/over.png', '--json');
    expect(over.status).toBe(2);
    const msg = errorLine(over).message as string;
    expect(msg).toContain('--out rc/over.png: the picture would be written over the checkpoint');
    expect(msg).not.toContain('--png rc/over.png');
  });

  it('a picture that cannot be written at the end is an I/O error (exit code 1), and the checkpoint is saved', async () => {
    // --png's directory is created at the end; a file put in its way during training makes that fail.
    const args = ['train', 'flow', '--model', 'maf', '--steps', '1000000', '--seconds', '1', '--n', '500'];
    const out = ['--test-n', '50', '--out', 'rc/w.safetensors', '--png', 'rc/wsub/w.png', '--json'];
    let blocked = false;
    const { code, stdout } = await watchCli(dir, [...args, ...out], () => {
      if (!blocked) writeFileSync(join(dir, 'rc', 'wsub'), 'in the way');
      blocked = true;
    });
    expect(code, stdout).toBe(1);
    const last = jsonLines(stdout).at(-1);
    expect(last).toMatchObject({ type: 'error', code: 'E_IO', message: expect.stringContaining('rc/wsub/w.png') });
    const e = arflow('eval', 'rc/w.safetensors', '--n', '50', '--json');
    expect(e.status, e.stdout + e.stderr).toBe(0);
  }, 60_000);

  it('2-D Real NVP runs report model realnvp and a periodic held-out valNll in their progress lines', () => {
    const r = arflow(
      'train',
      'flow',
      '--steps',
      '100',
      '--n',
      '500',
      '--test-n',
      '100',
      '--out',
      'rc/v.safetensors',
      '--json',
    );
    expect(r.status, r.stderr).toBe(0);
    const lines = jsonLines(r.stdout);
    const summary = lines.at(-1) as Record<string, unknown>;
    expect(summary).toMatchObject({ type: 'summary', model: 'realnvp', backend: 'native' });
    const validated = lines.filter((l) => l.type === 'progress' && typeof l.valNll === 'number');
    // Every 5th report (every 25 steps here) and at the end.
    expect(validated.map((l) => l.step)).toEqual([25, 50, 75, 100]);
    expect(validated.at(-1)?.valNll).toBeCloseTo(summary.testNll as number, 4);
  });

  it('help: sample and eval have their own headings and --json text; defaults and limits are documented and enforced', () => {
    const headings = (cmd: string) => {
      const h = arflow(cmd, '--help');
      expect(h.status).toBe(0);
      expect(h.stdout).toMatch(/--json\s+print the result \(or the error\) as one JSON object/);
      expect(h.stdout).not.toContain('progress');
      return h.stdout.split('\n').filter((l) => l.startsWith('Options of'));
    };
    const s = headings('sample');
    const e = headings('eval');
    expect(s).toHaveLength(2);
    expect(e).toHaveLength(2);
    for (const l of s) expect(e).not.toContain(l);
    expect(s.join('\n')).toContain('PNG of samples');
    expect(e.join('\n')).toContain('held-out NLL');
    const flowHelp = arflow('sample', 'rc/maf.safetensors', '--help').stdout;
    expect(flowHelp).not.toContain('progress');
    const train = arflow('train', 'flow', '--help').stdout;
    expect(train).toMatch(/--flow-steps[^\n]*8 on points/);
    expect(train).toMatch(/--n [^\n]*60000/);
    expect(train).toMatch(/--test-n [^\n]*10000 images|--test-n [^\n]*images \(2 to 10000/);
    for (const [args, flag] of [
      [
        ['train', 'flow', '--data', 'fashion-mnist', '--model', 'glow', '--n', '60001', '--out', 'rc/n.safetensors'],
        '--n',
      ],
      [
        [
          'train',
          'flow',
          '--data',
          'fashion-mnist',
          '--model',
          'glow',
          '--test-n',
          '10001',
          '--out',
          'rc/n.safetensors',
        ],
        '--test-n',
      ],
      [['eval', 'rc/g28.safetensors', '--n', '10001'], '--n'],
    ] as const) {
      const r = arflow(...args, '--json');
      expect(r.status, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(2);
      expect(errorLine(r).message).toContain(flag);
    }
  });
});
