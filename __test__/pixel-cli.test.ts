/**
 * The Pixel-RNN commands (src/cli/pixel.ts) on real Fashion-MNIST with the native backend: `train
 * pixel` (summary fields, a short binarised run beating the per-pixel baseline on held-out images, the
 * samples picture), `eval`, `sample` (a row per class for a conditional model), `complete`, resume,
 * and typed errors with nothing written.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cmdComplete, cmdEvalPixel, cmdSamplePixel, cmdTrainPixel } from '../src/cli/pixel.js';
import { Vocabulary } from '../src/data/vocab.js';
import { CheckpointError, ConfigError } from '../src/errors.js';
import { readPngGray } from '../src/io/png-read.js';
import { CharLM } from '../src/models/char-lm.js';
import { PixelRNN } from '../src/models/pixel-rnn.js';
import { failsWritingNothing, jsonLines, runCli, runInProcess } from './helpers/cli.js';
import { fashionMnist } from './helpers/skip.js';

const fm = fashionMnist();
const dir = mkdtempSync(join(tmpdir(), 'arflow-pixel-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ckpt = join(dir, 'pixel.safetensors');
const TEST_N = 200;
let summary: Record<string, unknown>;
let progress: Record<string, unknown>[];

beforeAll(async () => {
  if (!fm.present) return;
  const lines = await runInProcess(() =>
    cmdTrainPixel([
      '--binarize',
      '--hidden',
      '16',
      '--layers',
      '1',
      '--steps',
      '150',
      '--batch',
      '16',
      '--lr',
      '0.005',
      '--train-n',
      '4000',
      '--test-n',
      String(TEST_N),
      '--samples',
      '4',
      '--out',
      ckpt,
      '--json',
    ]),
  );
  summary = lines[lines.length - 1];
  progress = lines.filter((l) => l.type === 'progress');
}, 240_000);

describe.skipIf(!fm.present)(`arflow train pixel / eval / sample / complete${fm.note}`, () => {
  it('trains, saves, writes samples and reports the test NLL beside the per-pixel baseline', () => {
    expect(summary.type).toBe('summary');
    expect(summary.steps).toBe(150);
    expect(summary.testImages).toBe(TEST_N);
    expect(summary.out).toBe(ckpt);
    expect(summary.binarize).toBe(true);
    expect(summary.testBpd as number).toBeCloseTo((summary.testNll as number) / (784 * Math.LN2), 10);
    expect(summary.baselineBpd as number).toBeCloseTo((summary.baselineNll as number) / (784 * Math.LN2), 10);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress[0].pixelsPerSec as number).toBeGreaterThan(0);
    const png = summary.png as string;
    expect(existsSync(png)).toBe(true);
    // 4 samples, 2 to a row, 28×28 each with 2-pixel padding, drawn ×2.
    const img = readPngGray(png);
    expect([img.width, img.height]).toEqual([(2 * 30 + 2) * 2, (2 * 30 + 2) * 2]);
    const model = PixelRNN.load(ckpt);
    expect(model.config.output).toBe('bernoulli');
    expect(model.hasOptimizerState).toBe(true);
  });

  it('a short run beats the independent per-pixel Bernoulli clearly on held-out images', () => {
    const nll = summary.testNll as number;
    const base = summary.baselineNll as number;
    expect(Number.isFinite(nll)).toBe(true);
    expect(nll).toBeLessThan(0.9 * base);
  });

  it('eval scores the recorded test images to the same NLL', async () => {
    const [r] = await runInProcess(() => cmdEvalPixel(ckpt, [ckpt, '--json']));
    expect(r.testImages).toBe(TEST_N);
    expect(r.testNll as number).toBeCloseTo(summary.testNll as number, 6);
    expect(r.baselineNll as number).toBeCloseTo(summary.baselineNll as number, 6);
  });

  it('sample writes a grid; complete keeps the top halves of test images', async () => {
    const out = join(dir, 'samples.png');
    const [s] = await runInProcess(() =>
      cmdSamplePixel(ckpt, [ckpt, '--n', '6', '--seed', '3', '--out', out, '--json']),
    );
    expect(s.n).toBe(6);
    expect(existsSync(out)).toBe(true);
    const comp = join(dir, 'complete.png');
    const [c] = await runInProcess(() =>
      cmdComplete([ckpt, '--n', '2', '--completions', '3', '--out', comp, '--json']),
    );
    expect(c.givenRows).toBe(14);
    const img = readPngGray(comp);
    // 2 rows of 1 original + 3 completions.
    expect([img.width, img.height]).toEqual([(4 * 30 + 2) * 2, (2 * 30 + 2) * 2]);
    // The top half of every completion is its original's (pixels of the upscaled grid compared).
    const at = (x: number, y: number) => img.pixels[y * img.width + x];
    for (let row = 0; row < 2; row++) {
      for (let k = 1; k <= 3; k++) {
        for (let y = 0; y < 14 * 2; y++) {
          for (let x = 0; x < 28 * 2; x++) {
            const y0 = (2 + row * 30) * 2 + y;
            expect(at((2 + k * 30) * 2 + x, y0)).toBe(at(2 * 2 + x, y0));
          }
        }
      }
    }
  });

  it('resumes a run to a larger total and refuses recorded flags', async () => {
    const first = join(dir, 'resume.safetensors');
    const args = ['--binarize', '--hidden', '4', '--layers', '1', '--batch', '4', '--train-n', '100', '--test-n', '10'];
    await runInProcess(() => cmdTrainPixel([...args, '--steps', '2', '--samples', '0', '--out', first, '--json']));
    const lines = await runInProcess(() =>
      cmdTrainPixel(['--resume', first, '--steps', '4', '--samples', '0', '--json']),
    );
    const r = lines[lines.length - 1];
    expect(r.steps).toBe(4);
    expect(r.out).toBe(first);
    const e = await failsWritingNothing(dir, () => cmdTrainPixel(['--resume', first, '--hidden', '8', '--steps', '6']));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toMatch(/--hidden is taken from/);
    const done = await failsWritingNothing(dir, () => cmdTrainPixel(['--resume', first, '--steps', '4']));
    expect(done.message).toMatch(/already trained 4/);
  });

  it('a conditional model samples one row per class', async () => {
    const cond = join(dir, 'cond.safetensors');
    const lines = await runInProcess(() =>
      cmdTrainPixel([
        '--conditional',
        '--hidden',
        '4',
        '--layers',
        '1',
        '--steps',
        '1',
        '--batch',
        '2',
        '--train-n',
        '20',
        '--test-n',
        '4',
        '--samples',
        '0',
        '--out',
        cond,
        '--json',
      ]),
    );
    expect(lines[lines.length - 1].conditional).toBe(true);
    const out = join(dir, 'cond.png');
    const [s] = await runInProcess(() => cmdSamplePixel(cond, [cond, '--n', '2', '--out', out, '--json']));
    expect(s.n).toBe(20);
    const e = await failsWritingNothing(dir, () =>
      cmdSamplePixel(cond, [cond, '--label', '10', '--out', join(dir, 'x.png')]),
    );
    expect(e).toBeInstanceOf(ConfigError);
  });

  it('refuses bad input with typed errors and writes nothing', async () => {
    const png = join(dir, 'never.png');
    expect(
      await failsWritingNothing(dir, () => cmdSamplePixel(ckpt, [ckpt, '--label', '1', '--out', png])),
    ).toBeInstanceOf(ConfigError);
    expect(await failsWritingNothing(dir, () => cmdTrainPixel(['--test-n', '0']))).toBeInstanceOf(ConfigError);
    expect(
      await failsWritingNothing(dir, () =>
        cmdTrainPixel(['--out', join(dir, 'a.safetensors'), '--png', join(dir, 'a.safetensors')]),
      ),
    ).toBeInstanceOf(ConfigError);
    expect(await failsWritingNothing(dir, () => cmdComplete([ckpt, '--out', ckpt]))).toBeInstanceOf(ConfigError);
    // complete on a checkpoint of another kind.
    const charCkpt = join(dir, 'foreign.safetensors');
    await CharLM.create(Vocabulary.fromText('abc'), { hidden: 4, embed: 2 }).save(charCkpt);
    expect(await failsWritingNothing(dir, () => cmdComplete([charCkpt, '--out', join(dir, 'c.png')]))).toBeInstanceOf(
      CheckpointError,
    );
    rmSync(charCkpt);
    // Through main: exit code 2 and a JSON error for a usage error.
    const r = runCli(dir, ['complete', join(dir, 'missing.safetensors'), '--json']);
    expect(r.status).not.toBe(0);
    const [err] = jsonLines(r.stdout);
    expect(err.type).toBe('error');
    expect(statSync(dir).isDirectory()).toBe(true);
  });
});
