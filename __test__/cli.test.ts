/**
 * The compiled `arflow` CLI, run as a child process: its `--json` output contract, determinism of
 * `sample`, `eval`, and exit codes and messages on bad input.
 *
 * Runs `node dist/cli/main.js`. `npm test` builds first (`npm run build`); when the tests run on their
 * own (`npx vitest run`) and any `src/**\/*.ts` is newer than its compiled `dist/` counterpart (or
 * that is missing), `beforeAll` recompiles with `tsc -p tsconfig.json` so the CLI under test is the
 * current source. The native addon is the one in the package root.
 */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCorpus } from '../src/data/corpora.js';
import { CLI, jsonLines, runCli } from './helpers/cli.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return tsFiles(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** Source files whose compiled output is missing or older than they are. */
function staleSources(): string[] {
  const src = join(ROOT, 'src');
  return tsFiles(src).filter((f) => {
    const out = join(ROOT, 'dist', relative(src, f).replace(/\.ts$/, '.js'));
    return !existsSync(out) || statSync(out).mtimeMs < statSync(f).mtimeMs;
  });
}

let dir: string;
let textFile: string;
let model: string;

beforeAll(() => {
  const stale = staleSources();
  if (stale.length > 0) {
    const tsc = spawnSync(
      process.execPath,
      [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'],
      {
        cwd: ROOT,
        encoding: 'utf8',
      },
    );
    if (tsc.status !== 0) {
      throw new Error(`dist/ was stale (${stale.length} files) and tsc failed:\n${tsc.stdout}${tsc.stderr}`);
    }
  }
  expect(existsSync(CLI), `${CLI} missing`).toBe(true);
  dir = mkdtempSync(join(tmpdir(), 'arflow-cli-'));
  textFile = join(dir, 'moby.txt');
  writeFileSync(textFile, loadCorpus('moby-dick').slice(0, 6000));
  model = join(dir, 'out', 'm.safetensors');
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const arflow = (...args: string[]): SpawnSyncReturns<string> => runCli(dir, args, 60_000);

function show(r: SpawnSyncReturns<string>): string {
  return `exit ${r.status}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}

describe('arflow CLI', () => {
  it('train char --json prints progress lines then one summary, and writes the checkpoint', () => {
    const r = arflow(
      'train',
      'char',
      '--text',
      textFile,
      '--hidden',
      '32',
      '--steps',
      '30',
      '--batch',
      '4',
      '--seq',
      '16',
      '--val-every',
      '10',
      '--json',
      '--out',
      model,
    );
    expect(r.status, show(r)).toBe(0);
    const lines = jsonLines(r.stdout);
    expect(lines.length).toBeGreaterThanOrEqual(2);
    const progress = lines.slice(0, -1);
    for (const p of progress) {
      expect(p.type).toBe('progress');
      expect(typeof p.step).toBe('number');
      expect(Number.isFinite(p.loss)).toBe(true);
    }
    // Reported every 10 steps (logEvery) and after each validation (steps 10, 20), then at the end.
    const steps = progress.map((p) => p.step as number);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));
    expect(steps).toContain(10);
    expect(steps).toContain(20);
    expect(steps.at(-1)).toBe(30);
    const validated = progress.filter((p) => p.valBpc !== null);
    expect(validated.map((p) => p.step)).toEqual(expect.arrayContaining([10, 20]));
    const summary = lines.at(-1) as Record<string, unknown>;
    expect(summary.type).toBe('summary');
    for (const k of ['steps', 'tokensPerSec', 'trainLoss', 'valBpc', 'out']) expect(summary, k).toHaveProperty(k);
    expect(summary.steps).toBe(30);
    expect(summary.tokensPerSec as number).toBeGreaterThan(0);
    expect(Number.isFinite(summary.trainLoss)).toBe(true);
    expect(summary.valBpc as number).toBeGreaterThan(0);
    expect(Number.isFinite(summary.valBpc)).toBe(true);
    expect(summary.out).toBe(model);
    expect(statSync(model).isFile()).toBe(true);
    // Only the checkpoint in its directory: the write went through a temp file that was renamed.
    expect(readdirSync(join(dir, 'out'))).toEqual(['m.safetensors']);
  });

  it('sample --seed is deterministic and eval --json reports a finite positive bpc', () => {
    expect(existsSync(model), 'needs the checkpoint of the training test').toBe(true);
    const a = arflow('sample', model, '--length', '50', '--seed', '3', '--json');
    const b = arflow('sample', model, '--length', '50', '--seed', '3', '--json');
    expect(a.status, show(a)).toBe(0);
    expect(b.status, show(b)).toBe(0);
    const la = jsonLines(a.stdout);
    const lb = jsonLines(b.stdout);
    expect(la).toHaveLength(1);
    expect(la[0].type).toBe('summary');
    expect(typeof la[0].text).toBe('string');
    expect([...(la[0].text as string)]).toHaveLength(50);
    expect(lb[0].text).toBe(la[0].text);
    const c = arflow('sample', model, '--length', '50', '--seed', '4', '--json');
    expect(c.status, show(c)).toBe(0);
    expect(jsonLines(c.stdout)[0].text).not.toBe(la[0].text);

    const e = arflow('eval', model, '--text', textFile, '--json');
    expect(e.status, show(e)).toBe(0);
    const le = jsonLines(e.stdout);
    expect(le).toHaveLength(1);
    expect(le[0].type).toBe('summary');
    const bpc = le[0].bpc as number;
    expect(typeof bpc).toBe('number');
    expect(Number.isFinite(bpc)).toBe(true);
    expect(bpc).toBeGreaterThan(0);
    // 30 steps of a tiny model: better than uniform guessing over the vocabulary, not magic.
    expect(bpc).toBeLessThan(8);
    expect(le[0].chars).toBe(6000 - 1);
  });

  it('a missing --text file exits non-zero with a clear message (and an E_DATA error line with --json)', () => {
    const missing = join(dir, 'no-such-file.txt');
    const out = join(dir, 'never', 'm.safetensors');
    const plain = arflow('train', 'char', '--text', missing, '--steps', '2', '--out', out);
    expect(plain.status, show(plain)).not.toBe(0);
    expect(plain.status).toBe(1);
    expect(plain.stderr).toContain(`text file not found: ${missing}`);
    // No stack trace for a user error.
    expect(plain.stderr).not.toMatch(/\n\s+at /);

    const json = arflow('train', 'char', '--text', missing, '--steps', '2', '--out', out, '--json');
    expect(json.status, show(json)).toBe(1);
    const lines = jsonLines(json.stdout);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ type: 'error', code: 'E_DATA' });
    expect(lines[0].message).toContain(missing);
    expect(existsSync(join(dir, 'never'))).toBe(false);
  });

  it('--lr nan is a ConfigError: exit code 2', () => {
    const out = join(dir, 'nan', 'm.safetensors');
    const r = arflow('train', 'char', '--text', textFile, '--lr', 'nan', '--steps', '2', '--out', out);
    expect(r.status, show(r)).toBe(2);
    expect(r.stderr).toMatch(/--lr/);
    const j = arflow('train', 'char', '--text', textFile, '--lr', 'nan', '--steps', '2', '--out', out, '--json');
    expect(j.status, show(j)).toBe(2);
    expect(jsonLines(j.stdout)).toEqual([expect.objectContaining({ type: 'error', code: 'E_CONFIG' })]);
    expect(existsSync(join(dir, 'nan'))).toBe(false);
  });

  it('sample/eval of a char-lm checkpoint with flow options names the option and the file', () => {
    expect(existsSync(model), 'needs the checkpoint of the training test').toBe(true);
    const s = arflow('sample', model, '--n', '10', '--json');
    expect(s.status, show(s)).toBe(2);
    const err = jsonLines(s.stdout);
    expect(err).toEqual([expect.objectContaining({ type: 'error', code: 'E_CONFIG' })]);
    expect(err[0].message).toContain('--n is an option of flow checkpoints');
    expect(err[0].message).toContain(model);
    const e = arflow('eval', model, '--data', 'moons');
    expect(e.status, show(e)).toBe(2);
    expect(e.stderr).toContain('--data is an option of flow checkpoints');
    // A missing checkpoint is reported as missing, whatever the options.
    const missing = arflow('eval', join(dir, 'none.safetensors'), '--data', 'moons');
    expect(missing.status, show(missing)).toBe(1);
    expect(missing.stderr).toContain('checkpoint not found');
    // --help of sample and eval lists the options of both kinds of checkpoint.
    const help = arflow('eval', '--help');
    expect(help.status).toBe(0);
    for (const flag of ['--text', '--corpus', '--data', '--n']) expect(help.stdout).toContain(flag);
  });

  it('train char and demo check --out before training: a directory or a parent that is a file is exit code 2', () => {
    mkdirSync(join(dir, 'adir'));
    writeFileSync(join(dir, 'afile'), 'not a directory');
    for (const args of [
      ['train', 'char', '--text', textFile, '--seconds', '1', '--hidden', '8', '--out', 'adir'],
      ['train', 'char', '--text', textFile, '--seconds', '1', '--hidden', '8', '--out', 'afile/x.safetensors'],
      ['demo', '--seconds', '1', '--out', 'adir'],
    ]) {
      const r = arflow(...args, '--json');
      expect(r.status, show(r)).toBe(2);
      // One error line and nothing before it: no training started.
      const lines = jsonLines(r.stdout);
      expect(lines).toEqual([expect.objectContaining({ type: 'error', code: 'E_CONFIG' })]);
      expect(lines[0].message).toContain(args.at(-1)?.split('/')[0]);
    }
    expect(readdirSync(join(dir, 'adir'))).toEqual([]);
    expect(statSync(join(dir, 'afile')).isFile()).toBe(true);
  });

  it('an unknown flag exits 2 with a hint', () => {
    const r = arflow('train', 'char', '--text', textFile, '--hiden', '32');
    expect(r.status, show(r)).toBe(2);
    expect(r.stderr).toContain('unknown option --hiden');
    expect(r.stderr).toContain('did you mean --hidden?');
  });
});
