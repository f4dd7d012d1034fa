/**
 * `arflow train seq2seq`, `arflow translate` and `arflow eval` of encoder–decoder checkpoints, run as a
 * child process on a small TSV file (CMUdict runs are too long for a test): the `--json` contract,
 * agreement of `eval` with the training summary, and typed errors that write nothing.
 * Runs `dist/cli/main.js`; `npm test` builds it first.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonLines, runCli } from './helpers/cli.js';

let dir: string;
let tsv: string;
let model: string;
let summary: Record<string, unknown>;

/** Words over 6 letters, each letter spelled by a fixed token pair: learnable, and enough for a split. */
function toyTsv(n: number): string {
  const letters = 'abcdef';
  let s = 99;
  const next = () => {
    s = (s * 1103515245 + 12345) >>> 0;
    return s / 2 ** 32;
  };
  const seen = new Set<string>();
  const lines: string[] = [];
  while (lines.length < n) {
    const w = Array.from({ length: 2 + Math.floor(next() * 4) }, () => letters[Math.floor(next() * 6)]).join('');
    if (seen.has(w)) continue;
    seen.add(w);
    lines.push(`${w}\t${[...w].map((c) => `${c.toUpperCase()} ${c === 'a' ? 'X' : 'Y'}`).join(' ')}`);
  }
  return `${lines.join('\n')}\n`;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'arflow-s2s-cli-'));
  tsv = join(dir, 'toy.tsv');
  writeFileSync(tsv, toyTsv(600));
  model = join(dir, 'toy.safetensors');
  const r = runCli(dir, [
    'train',
    'seq2seq',
    '--data',
    tsv,
    '--cell',
    'gru',
    '--hidden',
    '48',
    '--embed',
    '16',
    '--bidirectional',
    '--steps',
    '400',
    '--batch',
    '32',
    '--lr',
    '0.01',
    '--val-every',
    '100',
    '--beam',
    '3',
    '--out',
    model,
    '--json',
  ]);
  expect(r.status, r.stderr).toBe(0);
  const lines = jsonLines(r.stdout);
  summary = lines[lines.length - 1];
  expect(lines.some((l) => l.type === 'progress' && typeof l.eps === 'number' && l.valPer !== null)).toBe(true);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('arflow train seq2seq', () => {
  it('prints the summary contract and writes the checkpoint', () => {
    expect(summary.type).toBe('summary');
    for (const k of ['steps', 'testPer', 'testWer', 'testPerBeam', 'testWerBeam', 'out'])
      expect(summary).toHaveProperty(k);
    expect(summary.steps).toBe(400);
    expect(summary.out).toBe(model);
    expect(existsSync(model)).toBe(true);
    // The mapping is learnable: most test words come out right.
    expect(summary.testPer as number).toBeLessThan(0.15);
    expect(summary.testPerBeam as number).toBeLessThan(0.15);
  });

  it('eval reproduces the summary on the same test split', () => {
    const r = runCli(dir, ['eval', model, '--beam', '3', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const e = jsonLines(r.stdout)[0];
    expect(e.testWords).toBe(summary.testWords);
    expect(e.testPer).toBeCloseTo(summary.testPer as number, 12);
    expect(e.testWerBeam).toBeCloseTo(summary.testWerBeam as number, 12);
  });

  it('translate prints the n best outputs with their log-probabilities, best first', () => {
    const r = runCli(dir, ['translate', model, '--input', 'abc', '--beam', '4', '--n-best', '3', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const out = jsonLines(r.stdout)[0] as { outputs: { text: string; logProb: number; score: number }[] };
    expect(out.outputs).toHaveLength(3);
    expect(out.outputs[0].text).toBe('A X B Y C Y');
    expect(out.outputs[0].score).toBeGreaterThanOrEqual(out.outputs[1].score);
    const plain = runCli(dir, ['translate', model, '--input', 'abc']);
    expect(plain.stdout.split('\t')[0]).toBe('A X B Y C Y');
  });

  it('feeds scheduled samples and reports ε below 1', () => {
    const out = join(dir, 'ss.safetensors');
    const r = runCli(dir, [
      ...['train', 'seq2seq', '--data', tsv, '--hidden', '16', '--embed', '8', '--steps', '20', '--beam', '1'],
      ...['--feed', 'scheduled', '--ss-schedule', 'linear', '--ss-k', '1', '--ss-c', '0.05', '--out', out, '--json'],
    ]);
    expect(r.status, r.stderr).toBe(0);
    const progress = jsonLines(r.stdout).filter((l) => l.type === 'progress');
    // ε at step i is max(0, 1 − 0.05 i); the report at step 20 was made with the last step's ε (i = 19).
    expect(progress.at(-1)?.eps).toBeCloseTo(0.05, 12);
  });
});

describe('arflow train seq2seq --resume', () => {
  it('continues a run to its new total and refuses flags the checkpoint fixes', () => {
    const out = join(dir, 'resume.safetensors');
    const base = ['train', 'seq2seq', '--data', tsv, '--hidden', '16', '--embed', '8', '--beam', '1', '--json'];
    const first = runCli(dir, [...base, '--steps', '10', '--out', out]);
    expect(first.status, first.stderr).toBe(0);
    const r = runCli(dir, ['train', 'seq2seq', '--resume', out, '--steps', '20', '--beam', '1', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const lines = jsonLines(r.stdout);
    expect(lines.filter((l) => l.type === 'progress')[0].step).toBe(20);
    expect(lines.at(-1)?.steps).toBe(20);
    expect(lines.at(-1)?.out).toBe(out);
    const again = runCli(dir, ['train', 'seq2seq', '--resume', out, '--steps', '20', '--json']);
    expect(again.status).toBe(2);
    expect(jsonLines(again.stdout).at(-1)?.message).toMatch(/already trained 20/);
    const clash = runCli(dir, ['train', 'seq2seq', '--resume', out, '--hidden', '32', '--steps', '30', '--json']);
    expect(clash.status).toBe(2);
    expect(jsonLines(clash.stdout).at(-1)?.message).toMatch(/--hidden is taken from/);
  });
});

describe('bad input is a typed error and writes nothing', () => {
  const fails = (args: string[], code: string, status: number) => {
    const r = runCli(dir, [...args, '--json']);
    expect(r.status, r.stdout + r.stderr).toBe(status);
    const last = jsonLines(r.stdout).at(-1);
    expect(last?.type).toBe('error');
    expect(last?.code).toBe(code);
    return last?.message as string;
  };

  it('a TSV with one column, or an empty line in the middle', () => {
    const bad = join(dir, 'bad.tsv');
    writeFileSync(bad, 'abc\tA B C\nabd\n');
    const out = join(dir, 'never.safetensors');
    expect(fails(['train', 'seq2seq', '--data', bad, '--out', out], 'E_DATA', 1)).toMatch(/line 2/);
    writeFileSync(bad, 'abc\tA B C\n\nabd\tA B D\n');
    fails(['train', 'seq2seq', '--data', bad, '--out', out], 'E_DATA', 1);
    expect(existsSync(out)).toBe(false);
  });

  it('bad scheduled-sampling parameters', () => {
    const out = join(dir, 'never.safetensors');
    const base = ['train', 'seq2seq', '--data', tsv, '--out', out, '--feed', 'scheduled'];
    expect(fails([...base, '--ss-schedule', 'exponential', '--ss-k', '1'], 'E_CONFIG', 2)).toMatch(/k/);
    fails([...base, '--ss-schedule', 'inverse-sigmoid', '--ss-k', '0.5'], 'E_CONFIG', 2);
    fails([...base, '--ss-schedule', 'linear', '--ss-c', '-1'], 'E_CONFIG', 2);
    fails([...base, '--ss-min', '1.5'], 'E_CONFIG', 2);
    fails(['train', 'seq2seq', '--data', tsv, '--out', out, '--ss-k', '0.9'], 'E_CONFIG', 2);
    expect(existsSync(out)).toBe(false);
  });

  it('unknown letters in translate, and checkpoints of the wrong kind', () => {
    expect(fails(['translate', model, '--input', 'abz'], 'E_VOCAB', 1)).toMatch(/"z"/);
    const r = runCli(dir, ['translate', model, '--input', 'abz', '--unknown', 'skip', '--json']);
    expect(r.status).toBe(0);
    fails(['sample', model], 'E_CONFIG', 2);
    fails(['translate', tsv, '--input', 'abc'], 'E_CHECKPOINT', 1);
    fails(['translate', join(dir, 'missing.safetensors'), '--input', 'abc'], 'E_CHECKPOINT', 1);
    fails(['translate', model, '--input', 'abc', '--beam', '2', '--n-best', '3'], 'E_CONFIG', 2);
  });

  it('a bidirectional language model is refused', () => {
    fails(['train', 'char', '--bidirectional', '--steps', '1', '--out', join(dir, 'lm.safetensors')], 'E_CONFIG', 2);
  });
});
