/**
 * The series commands of the CLI (src/cli/series.ts): `train series`, and `sample` / `eval` of a series
 * checkpoint, called in-process with standard output captured, as main.ts calls them: their `--json`
 * lines (progress, then one summary with the test NLL beside the baselines), the sample plot, and the
 * typed errors (which main.ts turns into `{"type":"error","code",…}` and exit code 2 for ConfigError)
 * with nothing written.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cmdEvalSeries, cmdSampleSeries, cmdTrainSeries, SERIES_TRAIN_FLAGS } from '../src/cli/series.js';
import { loadSeries, splitSeries } from '../src/data/series.js';
import { Vocabulary } from '../src/data/vocab.js';
import { CheckpointError, ConfigError, DataError } from '../src/errors.js';
import { baselineNll } from '../src/metrics/series-baselines.js';
import { CharLM } from '../src/models/char-lm.js';
import { failsWritingNothing, interruptAt, jsonLines, runCli, runInProcess } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'arflow-series-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const run = runInProcess;
const failure = (cmd: () => Promise<void>) => failsWritingNothing(dir, cmd);

const ckpt = join(dir, 'sensors.safetensors');
let summary: Record<string, unknown>;
let progress: Record<string, unknown>[];

beforeAll(async () => {
  const lines = await run(() =>
    cmdTrainSeries([
      '--steps',
      '80',
      '--val-every',
      '40',
      '--hidden',
      '16',
      '--components',
      '4',
      '--out',
      ckpt,
      '--json',
    ]),
  );
  progress = lines.filter((l) => l.type === 'progress');
  const summaries = lines.filter((l) => l.type === 'summary');
  expect(summaries).toHaveLength(1);
  summary = summaries[0];
});

describe('arflow train series', () => {
  it('prints progress lines and one summary with the test NLL beside the baselines, and saves the checkpoint', () => {
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress.some((p) => typeof p.valNll === 'number')).toBe(true);
    for (const p of progress) expect(Object.keys(p)).toEqual(expect.arrayContaining(['step', 'loss', 'lr', 'valNll']));
    const base = baselineNll(splitSeries(loadSeries('sensors'), { test: 0.2, valid: 0.1 }));
    expect(summary).toMatchObject({
      steps: 80,
      out: ckpt,
      data: 'sensors',
      mote: 3,
      likelihood: 'mdn',
      components: 4,
      hidden: 16,
      baselineNll: base.best.nll,
      baselines: { randomWalk: base.randomWalk, ar1: base.ar1 },
      stoppedEarly: false,
    });
    expect(Number.isFinite(summary.testNll)).toBe(true);
    expect(Number.isFinite(summary.trainLoss)).toBe(true);
    expect(existsSync(ckpt)).toBe(true);
  });

  it('has the flags the contract names', () => {
    for (const flag of [
      'data',
      'mote',
      'likelihood',
      'components',
      'cell',
      'hidden',
      'layers',
      'seq',
      'batch',
      'steps',
      'seconds',
      'lr',
      'seed',
      'out',
      'json',
    ]) {
      expect(SERIES_TRAIN_FLAGS[flag], flag).toBeDefined();
    }
  });

  it('trains on a CSV file, and refuses bad input with a typed error, writing nothing', async () => {
    const csv = join(dir, 'wave.csv');
    const rows = [
      'a,b',
      ...Array.from({ length: 400 }, (_, t) => `${Math.sin(t / 7).toFixed(3)},${Math.cos(t / 11).toFixed(3)}`),
    ];
    writeFileSync(csv, rows.join('\n'));
    const out = join(dir, 'wave.safetensors');
    const lines = await run(() =>
      cmdTrainSeries([
        '--data',
        csv,
        '--steps',
        '5',
        '--batch',
        '4',
        '--seq',
        '16',
        '--hidden',
        '8',
        '--out',
        out,
        '--json',
      ]),
    );
    expect(lines.at(-1)).toMatchObject({ type: 'summary', data: csv, columns: ['a', 'b'], resolution: [0.001, 0.001] });
    rmSync(out);
    rmSync(csv);

    const bad = join(dir, 'bad.csv');
    writeFileSync(bad, 'x,y\n1,2\n3,oops\n5,6\n');
    const badOut = join(dir, 'bad.safetensors');
    // The data file is the only new file before each attempt.
    const e1 = await failure(() => cmdTrainSeries(['--data', bad, '--out', badOut, '--json']));
    expect(e1).toBeInstanceOf(DataError);
    expect(e1.message).toMatch(/line 3, column 2 \('y'\)/);
    rmSync(bad);

    const e2 = await failure(() => cmdTrainSeries(['--data', join(dir, 'missing.csv'), '--out', badOut]));
    expect(e2).toBeInstanceOf(DataError);
    expect(e2.message).toMatch(/not found/);

    const e3 = await failure(() => cmdTrainSeries(['--components', '0', '--out', badOut]));
    expect(e3).toBeInstanceOf(ConfigError);
    expect(e3.message).toMatch(/--components must be a whole number ≥ 1, got 0/);

    const e4 = await failure(() => cmdTrainSeries(['--likelihood', 'gaussian', '--components', '3', '--out', badOut]));
    expect(e4).toBeInstanceOf(ConfigError);
    const e5 = await failure(() => cmdTrainSeries(['--data', 'births', '--mote', '2', '--out', badOut]));
    expect(e5).toBeInstanceOf(ConfigError);
    const e6 = await failure(() => cmdTrainSeries(['--out', dir]));
    expect(e6).toBeInstanceOf(ConfigError);
  });
});

describe('arflow eval / sample of a series checkpoint', () => {
  it('eval reports the same test NLL and baselines as the training run', async () => {
    const [r] = await run(() => cmdEvalSeries(ckpt, [ckpt, '--json']));
    expect(r).toMatchObject({
      type: 'summary',
      testNll: summary.testNll,
      baselineNll: summary.baselineNll,
      baselines: summary.baselines,
      data: 'sensors',
      mote: 3,
    });
    expect(r.testSteps).toBe(1008);
  });

  it('sample draws N continuations over the real one into a PNG, the same for the same seed', async () => {
    const png = join(dir, 'plot.png');
    const [r] = await run(() =>
      cmdSampleSeries(ckpt, [ckpt, '--steps', '60', '--n', '3', '--seed', '4', '--out', png, '--json']),
    );
    expect(r).toMatchObject({ type: 'summary', out: png, n: 3, steps: 60, seed: 4, realSteps: 60, contextSteps: 60 });
    const bytes = readFileSync(png);
    expect(bytes.subarray(1, 4).toString('latin1')).toBe('PNG');
    // IHDR: width 900 + 2·12, height two panels of 220 + 12 margins.
    expect(bytes.readUInt32BE(16)).toBe(924);
    expect(bytes.readUInt32BE(20)).toBe(2 * (220 + 12) + 12);
    const again = join(dir, 'again.png');
    await run(() =>
      cmdSampleSeries(ckpt, [ckpt, '--steps', '60', '--n', '3', '--seed', '4', '--out', again, '--json']),
    );
    expect(readFileSync(again).equals(bytes)).toBe(true);
    const other = join(dir, 'other.png');
    await run(() =>
      cmdSampleSeries(ckpt, [ckpt, '--steps', '60', '--n', '3', '--seed', '5', '--out', other, '--json']),
    );
    expect(readFileSync(other).equals(bytes)).toBe(false);
    for (const f of [png, again, other]) rmSync(f);
  });

  it('a character-model checkpoint given to series eval or sample is a CheckpointError, nothing written', async () => {
    const char = join(dir, 'char.safetensors');
    await CharLM.create(Vocabulary.fromText('abcd'), { hidden: 4, embed: 2 }).save(char);
    const e1 = await failure(() => cmdEvalSeries(char, [char, '--json']));
    expect(e1).toBeInstanceOf(CheckpointError);
    expect(e1.message).toMatch(/kind=char-lm/);
    const e2 = await failure(() => cmdSampleSeries(char, [char, '--out', join(dir, 'never.png')]));
    expect(e2).toBeInstanceOf(CheckpointError);
    const e3 = await failure(() => cmdSampleSeries(ckpt, [ckpt, '--out', ckpt]));
    expect(e3).toBeInstanceOf(ConfigError);
    const e4 = await failure(() => cmdSampleSeries(ckpt, [ckpt, '--n', '0']));
    expect(e4).toBeInstanceOf(ConfigError);
    const e5 = await failure(() => cmdEvalSeries(ckpt, [ckpt, '--data', 'births']));
    expect(e5).toBeInstanceOf(ConfigError);
    expect(e5.message).toMatch(/1 variable/);
    rmSync(char);
  });
});

describe('arflow train series --resume (the compiled CLI)', () => {
  it('an interrupted run resumed to its total ends where an uninterrupted one does; fixed flags are refused', async () => {
    const args = ['train', 'series', '--steps', '300', '--val-every', '0', '--json'];
    const full = join(dir, 'full.safetensors');
    const r = runCli(dir, [...args, '--out', full]);
    expect(r.status, r.stderr).toBe(0);
    const whole = jsonLines(r.stdout).at(-1) as { testNll: number };
    // Ctrl-C at step 150 (the checkpoint is written on the way out), then continue to the same total.
    const half = join(dir, 'half.safetensors');
    const cut = await interruptAt(dir, [...args, '--out', half], '"step":150,');
    expect(cut.signalled).toBe(true);
    const resumed = runCli(dir, ['train', 'series', '--resume', half, '--steps', '300', '--json']);
    expect(resumed.status, resumed.stderr).toBe(0);
    const lines = jsonLines(resumed.stdout);
    expect(lines.find((l) => l.type === 'progress')?.step).toBeGreaterThan(150);
    expect((lines.at(-1) as { testNll: number }).testNll).toBe(whole.testNll);
    const clash = runCli(dir, ['train', 'series', '--resume', half, '--cell', 'lstm', '--json']);
    expect(clash.status).toBe(2);
    expect(jsonLines(clash.stdout).at(-1)?.message).toMatch(/--cell is taken from/);
  });
});
