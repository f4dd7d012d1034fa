/**
 * Vector Real NVP checkpoints of arflow ≤ 0.1.0 (kind 'flow-realnvp', tensors `couplings.{k}.…`) load as
 * the FlowNet preset that computes the same function. `fixtures/realnvp-v0.1.0.safetensors` was written
 * by arflow 0.1.0 itself:
 *
 *   arflow train flow --data moons --n 500 --test-n 200 --steps 30 --batch 32 --couplings 2 --hidden 4 \
 *     --depth 1 --lr 0.01 --seed 3 --out realnvp-v0.1.0.safetensors
 *
 * and the log-densities, latents and CLI results below are what arflow 0.1.0 computed from it.
 */
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../src/errors.js';
import { checkpointKind } from '../src/io/checkpoint.js';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.js';
import { RealNVP } from '../src/models/flow.js';
import { Flow } from '../src/models/flownet.js';
import { jsonLines, runCli } from './helpers/cli.js';
import { expectCloseNonZero } from './helpers/numeric.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/realnvp-v0.1.0.safetensors', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'arflow-realnvp-v0-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Points scored by arflow 0.1.0, and what it gave for them. */
const POINTS = Float32Array.from([0, 0, 1, -0.5, -1.2, 0.8, 2, 0.25, -0.3, -1.7]);
const OLD_LOG_PROB = {
  native: [-2.0531225204467773, -2.3617067337036133, -2.6404173374176025, -3.1442694664001465, -4.209150314331055],
  js: [-2.0531225204467773, -2.3617069721221924, -2.6404173374176025, -3.1442694664001465, -4.209150314331055],
};
const OLD_LATENT = [
  -0.0702657625079155, -0.15071704983711243, 0.6219934225082397, -0.5983190536499023, -0.8549550175666809,
  0.5110855102539062, 1.5412137508392334, 0.3676624298095703, -0.48368415236473083, -1.9421290159225464,
];

describe('vector Real NVP checkpoints of arflow ≤ 0.1.0', () => {
  it('the fixture is one: kind flow-realnvp, tensors couplings.*', () => {
    const { metadata, tensors } = loadSafetensors(FIXTURE);
    expect(metadata.kind).toBe('flow-realnvp');
    expect(JSON.parse(metadata.config)).toEqual({ dim: 2, couplings: 2, hidden: 4, depth: 1 });
    expect(Object.keys(tensors)).toContain('couplings.1.scale');
    expect(Object.keys(tensors)).toContain('optimizer.exp_avg_sq.couplings.0.net.1.weight');
  });

  for (const backend of ['native', 'js'] as const) {
    it(`loads (${backend}) to the log-densities and latents arflow 0.1.0 computed, with its training state`, async () => {
      const m = RealNVP.load(FIXTURE, { backend });
      expect(m.backend.kind).toBe(backend);
      expect(m.config).toEqual({ dim: 2, couplings: 2, hidden: 4, depth: 1 });
      // float32 results of the same arithmetic in another order: within a few units in the last place.
      expectCloseNonZero('logProb', await m.logProb(POINTS), OLD_LOG_PROB[backend], 1e-6);
      expectCloseNonZero('encode', m.encode(POINTS), OLD_LATENT, 1e-6);
      expectCloseNonZero('decode', m.decode(Float32Array.from(OLD_LATENT)), POINTS, 1e-5);
      expect(m.trainInfo).toMatchObject({ data: 'moons', model: 'realnvp', steps: 30, seed: 3, n: 500 });
      expect(m.hasOptimizerState).toBe(true);
      expect(m.backend.getOptimStep()).toBe(30);
      expect(m.backend.paramInfo().map((p) => p.name)).toContain('layers.1.scale');
    });
  }

  it('saves as a FlowNet checkpoint that Flow.load and RealNVP.load read to the same flow', async () => {
    const m = RealNVP.load(FIXTURE);
    const path = join(dir, 'resaved.safetensors');
    await m.save(path, { optimizer: true, train: m.trainInfo ?? undefined });
    expect(checkpointKind(path)).toBe('flow-net');
    const want = await m.logProb(POINTS);
    expect(await RealNVP.load(path).logProb(POINTS)).toEqual(want);
    const flow = Flow.load(path);
    expect(await flow.logProb(POINTS)).toEqual(want);
    expect(flow.backend.getOptimStep()).toBe(30);
  });

  it('an old file written from any flow holds the same tensors, moments and step as that flow', async () => {
    const m = RealNVP.create({ dim: 3, couplings: 3, hidden: 5, depth: 2 }, { seed: 4 });
    const data = Float32Array.from({ length: 3 * 64 }, (_, i) => Math.sin(i * 0.7) * 2);
    await m.fit(data, { steps: 5, batchSize: 16 });
    const path = join(dir, 'made-old.safetensors');
    await m.save(path, { optimizer: true });
    const { tensors, metadata } = loadSafetensors(path);
    const old = Object.fromEntries(Object.entries(tensors).map(([n, t]) => [n.replace('layers.', 'couplings.'), t]));
    expect(Object.keys(old).every((n) => !n.includes('layers.'))).toBe(true);
    saveSafetensors(path, old, {
      format: 'arflow',
      format_version: '1',
      kind: 'flow-realnvp',
      config: JSON.stringify(m.config),
      optimizer_step: metadata.optimizer_step,
    });
    for (const backend of ['native', 'js'] as const) {
      const back = RealNVP.load(path, { backend });
      expect(back.config).toEqual(m.config);
      for (const { name } of m.backend.paramInfo()) {
        expect(back.backend.getParam(name), name).toEqual(m.backend.getParam(name));
        expect(back.backend.getOptimState('exp_avg_sq', name), name).toEqual(
          m.backend.getOptimState('exp_avg_sq', name),
        );
      }
      expect(back.backend.getOptimStep()).toBe(5);
    }
    expect(await RealNVP.load(path).logProb(data)).toEqual(await m.logProb(data));
  });

  it('an old file whose config cannot be read says what it is and what to do', () => {
    const { tensors, metadata } = loadSafetensors(FIXTURE);
    const path = join(dir, 'bad-config.safetensors');
    saveSafetensors(path, tensors, { ...metadata, config: '{"dim": 2,' });
    expect(() => RealNVP.load(path)).toThrow(CheckpointError);
    expect(() => RealNVP.load(path)).toThrow(
      /is a vector Real NVP checkpoint of arflow ≤ 0\.1\.0 \(kind flow-realnvp\), but its config is unreadable .*train it again/,
    );
    // Flow.load reads FlowNet checkpoints only, and says what the file is.
    expect(() => Flow.load(FIXTURE)).toThrow(/not an arflow flow checkpoint .*kind=flow-realnvp/);
  });

  it('arflow eval, sample and train flow --resume use it as arflow 0.1.0 did', () => {
    const work = join(dir, 'cli');
    const ckpt = join(dir, 'cli.safetensors');
    copyFileSync(FIXTURE, ckpt);
    const ev = runCli(dir, ['eval', ckpt, '--json']);
    expect(ev.status, ev.stderr).toBe(0);
    // arflow 0.1.0: {"data":"moons","n":5000,"testNll":3.384298968744278,"gaussianNll":3.291476496984193}
    const e = jsonLines(ev.stdout).at(-1) as Record<string, number>;
    expect(e.testNll).toBeCloseTo(3.384298968744278, 6);
    expect(e.gaussianNll).toBe(3.291476496984193);
    const sa = runCli(dir, ['sample', ckpt, '--n', '50', '--out', `${work}-samples.png`, '--json']);
    expect(sa.status, sa.stderr).toBe(0);
    expect(jsonLines(sa.stdout).at(-1)).toMatchObject({ type: 'summary', n: 50, out: `${work}-samples.png` });
    // arflow 0.1.0, resumed to 40 steps: trainLoss 3.2750340700149536, testNll 3.3594738268852233.
    const tr = runCli(dir, ['train', 'flow', '--resume', ckpt, '--steps', '40', '--png', `${work}.png`, '--json']);
    expect(tr.status, tr.stderr).toBe(0);
    const s = jsonLines(tr.stdout).at(-1) as Record<string, unknown>;
    expect(s).toMatchObject({ steps: 40, resumedAtStep: 30, model: 'realnvp', backend: 'native', data: 'moons' });
    expect(s.trainLoss as number).toBeCloseTo(3.2750340700149536, 6);
    expect(s.testNll as number).toBeCloseTo(3.3594738268852233, 6);
    // The continued run is saved in today's format.
    expect(checkpointKind(ckpt)).toBe('flow-net');
    expect(RealNVP.load(ckpt).trainInfo).toMatchObject({ steps: 40, totalSteps: 40 });
  });
});
