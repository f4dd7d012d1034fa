/**
 * `arflow train flow`, and `sample` / `eval` of a flow checkpoint, through the compiled CLI
 * (`node dist/cli/main.js`; run `npx tsc -p tsconfig.json` first, as `npm test` does).
 */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

let dir: string;

beforeAll(() => {
  expect(existsSync(CLI), `${CLI} missing: build with npx tsc -p tsconfig.json`).toBe(true);
  dir = mkdtempSync(join(tmpdir(), 'arflow-flow-cli-'));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function arflow(...args: string[]): SpawnSyncReturns<string> {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return r;
}

function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

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
    expect(summary.testNll as number).toBeLessThan(summary.gaussianNll as number);
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
    expect(s.testNll as number).toBeLessThan(s.gaussianNll as number);
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
    expect(s.testNll as number).toBeLessThan((s.gaussianNll as number) - 0.2);
    expect(isPng(join(dir, s.png as string))).toBe(true);
    const sample = arflow('sample', 'flow-moons-maf.safetensors', '--n', '500', '--out', 'maf.png', '--json');
    expect(sample.status, sample.stderr).toBe(0);
    expect(isPng(join(dir, 'maf.png'))).toBe(true);
    const ev = arflow('eval', 'flow-moons-maf.safetensors', '--n', '1000', '--json');
    expect(ev.status, ev.stderr).toBe(0);
    const e = jsonLines(ev.stdout).at(-1) as Record<string, number | string>;
    expect(e.data).toBe('moons');
    expect(e.testNll as number).toBeLessThan(e.gaussianNll as number);
  }, 120_000);

  it.skipIf(!existsSync('/usr/share/datasets/fashion-mnist') && !process.env.ARFLOW_FASHION_MNIST)(
    'trains a multi-scale Real NVP on Fashion-MNIST: testBpd below 8, sample grid and interpolation PNGs, eval',
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
      expect(s.testNll as number).toBeCloseTo((s.testBpd as number) * 784 * Math.LN2, 3);
      expect(isPng(join(dir, s.png as string))).toBe(true);
      expect(isPng(join(dir, s.interpolationPng as string))).toBe(true);
      const sample = arflow('sample', 'flow-fashion-mnist.safetensors', '--n', '9', '--label', '3', '--out', 'g.png');
      expect(sample.status, sample.stderr).toBe(0);
      expect(isPng(join(dir, 'g.png'))).toBe(true);
      const badLabel = arflow('sample', 'flow-fashion-mnist.safetensors', '--label', '12', '--json');
      expect(badLabel.status).toBe(2);
      const ev = arflow('eval', 'flow-fashion-mnist.safetensors', '--n', '50', '--json');
      expect(ev.status, ev.stderr).toBe(0);
      expect(jsonLines(ev.stdout).at(-1)).toMatchObject({ type: 'summary', data: 'fashion-mnist', n: 50 });
    },
    120_000,
  );

  for (const model of ['nice', 'glow', 'iaf']) {
    it(`trains ${model} on two moons below the Gaussian baseline`, () => {
      const r = arflow('train', 'flow', '--data', 'moons', '--model', model, '--steps', '300', '--n', '4000', '--json');
      expect(r.status, r.stderr).toBe(0);
      const s = jsonLines(r.stdout).at(-1) as Record<string, number | string>;
      expect(s).toMatchObject({ type: 'summary', model, steps: 300 });
      expect(s.testNll as number, `${model}: ${s.testNll} vs ${s.gaussianNll}`).toBeLessThan(s.gaussianNll as number);
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
