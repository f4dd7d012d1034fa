/**
 * Joint prediction of the next n characters (`predictAhead` n): heads `ahead.{k}.*` for k = 2..n on the
 * same hidden state, loss Σ_k mean CE_k over the positions whose character k ahead exists. Checked:
 * the reference's loss written out directly and its gradients against finite differences, the native
 * backend against the reference, the batches' ahead targets against the text, and n = 1 being exactly
 * the plain model (names, loss, batches).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lmForward, lmLossAndGrads, lmNll, type Params } from '../src/backend/js/lm.js';
import { type CharLmShape, charLmParamInfo, IGNORE_TARGET } from '../src/backend/types.js';
import { evalBatches, StreamBatcher } from '../src/data/batches.js';
import { Vocabulary } from '../src/data/vocab.js';
import { ConfigError, ShapeError } from '../src/errors.js';
import { CharLM } from '../src/models/char-lm.js';
import { Rng } from '../src/util/rng.js';
import { jsonLines, runCli } from './helpers/cli.js';
import { expectClose, numericGrad, randomCharLmParams } from './helpers/numeric.js';
import { twinCharLms, withHead } from './helpers/oracle.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'arflow-ahead-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const TEXT = 'the cat sat on the mat. the dog sat on the log. '.repeat(40);

/** n target blocks `[n, B, T]` of random ids, with IGNORE_TARGET sprinkled over blocks k ≥ 2. */
function aheadTargets(rng: Rng, n: number, rows: number, V: number): Uint32Array {
  const t = Uint32Array.from({ length: n * rows }, () => rng.int(V));
  for (let i = rows; i < t.length; i++) if (rng.uniform() < 0.3) t[i] = IGNORE_TARGET;
  return t;
}

describe('predictAhead: the reference', () => {
  const shape: CharLmShape = { vocabSize: 6, embed: 3, hidden: 4, layers: 2, cell: 'lstm', predictAhead: 3 };
  const [B, T] = [2, 4];

  it('adds heads ahead.2 and ahead.3 after the plain parameters', () => {
    const names = charLmParamInfo(shape).map((p) => p.name);
    const plain = charLmParamInfo({ ...shape, predictAhead: 1 }).map((p) => p.name);
    expect(names.slice(0, plain.length)).toEqual(plain);
    expect(names.slice(plain.length)).toEqual(['ahead.2.weight', 'ahead.2.bias', 'ahead.3.weight', 'ahead.3.bias']);
    expect(plain.some((n) => n.startsWith('ahead'))).toBe(false);
  });

  it('the loss is Σ_k of head k’s mean cross-entropy over its scored positions, written out', () => {
    const rng = new Rng(11);
    const params = randomCharLmParams(shape, rng);
    const ids = Uint32Array.from({ length: B * T }, () => rng.int(6));
    const tg = aheadTargets(rng, 3, B * T, 6);
    const got = lmLossAndGrads(shape, params, ids, tg, B, T, null, 'f64').loss;
    // Head k's logits are the plain model's with head k in place of `head` (same stack, same h).
    const plain: CharLmShape = { ...shape, predictAhead: 1 };
    let want = 0;
    for (let k = 1; k <= 3; k++) {
      const { logits } = lmForward(plain, withHead(params, k), ids, B, T, null, 'f64');
      let sum = 0;
      let n = 0;
      for (let r = 0; r < B * T; r++) {
        const y = tg[(k - 1) * B * T + r];
        if (y === IGNORE_TARGET) continue;
        const z = Array.from(logits.subarray(r * 6, (r + 1) * 6));
        const m = Math.max(...z);
        sum += m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0)) - z[y];
        n++;
      }
      expect(n).toBeGreaterThan(0);
      want += sum / n;
      if (k > 1)
        expect(Math.abs(lmNll(shape, params, ids, tg, B, T, null, 'f64').aheadNll[k - 2] - sum)).toBeLessThan(1e-12);
    }
    expect(Math.abs(got - want)).toBeLessThan(1e-12);
  });

  it('every gradient, ahead heads included, matches central finite differences', () => {
    const rng = new Rng(12);
    const params = randomCharLmParams(shape, rng);
    const ids = Uint32Array.from({ length: B * T }, () => rng.int(6));
    const tg = aheadTargets(rng, 3, B * T, 6);
    const g = lmLossAndGrads(shape, params, ids, tg, B, T, null, 'f64');
    for (const { name } of charLmParamInfo(shape)) {
      const num = numericGrad(
        params[name] as Float64Array,
        () => lmLossAndGrads(shape, params, ids, tg, B, T, null, 'f64').loss,
      );
      expect(Math.max(...g.grads[name].map(Math.abs)), name).toBeGreaterThan(1e-5);
      // 1e-6 of the largest entry: central differences of a loss ≈ 5 carry ~1e-9 of rounding.
      expectClose(name, g.grads[name], num, 1e-6);
    }
  });

  it('a fully ignored block adds nothing; target blocks of the wrong size or ids outside V are ShapeErrors', () => {
    const rng = new Rng(13);
    const params = randomCharLmParams(shape, rng);
    const ids = Uint32Array.from({ length: B * T }, () => rng.int(6));
    const tg = aheadTargets(rng, 3, B * T, 6);
    tg.fill(IGNORE_TARGET, 2 * B * T);
    const two: CharLmShape = { ...shape, predictAhead: 2 };
    const p2: Params = { ...params };
    delete p2['ahead.3.weight'];
    delete p2['ahead.3.bias'];
    const a = lmLossAndGrads(shape, params, ids, tg, B, T, null, 'f64');
    const b = lmLossAndGrads(two, p2, ids, tg.subarray(0, 2 * B * T), B, T, null, 'f64');
    expect(a.loss).toBe(b.loss);
    expect([...a.grads['ahead.3.weight']].every((v) => v === 0)).toBe(true);
    expect(() => lmLossAndGrads(shape, params, ids, tg.subarray(0, B * T), B, T, null, 'f64')).toThrow(ShapeError);
    const bad = tg.slice();
    bad[B * T + 1] = 6;
    expect(() => lmLossAndGrads(shape, params, ids, bad, B, T, null, 'f64')).toThrow(/2 ahead/);
    // The next-character block may not be ignored.
    const first = tg.slice();
    first[0] = IGNORE_TARGET;
    expect(() => lmNll(shape, params, ids, first, B, T, null, 'f64')).toThrow(ShapeError);
  });
});

describe('predictAhead: native against the reference', () => {
  for (const cell of ['gru', 'lstm', 'rnn'] as const) {
    it(`${cell}: loss, every gradient and dh0 agree; nll per head too`, async () => {
      const shape: CharLmShape = { vocabSize: 7, embed: 4, hidden: 5, layers: 2, cell, predictAhead: 3 };
      const rng = new Rng(21);
      const { native, js } = twinCharLms(shape, rng);
      const ids = Uint32Array.from({ length: 12 }, () => rng.int(7));
      const tg = aheadTargets(rng, 3, 12, 7);
      const a = await native.lossAndGrads(ids, tg, 3, 4, null);
      const b = await js.lossAndGrads(ids, tg, 3, 4, null);
      expect(a.loss).toBeCloseTo(b.loss, 5);
      expect(Object.keys(a.grads)).toEqual(Object.keys(b.grads));
      for (const k of Object.keys(b.grads)) expectClose(k, a.grads[k], b.grads[k], 1e-4);
      expectClose('dh0', a.dh0, b.dh0, 1e-4);
      const na = await native.nll(ids, tg, 3, 4, null);
      const nb = await js.nll(ids, tg, 3, 4, null);
      expectClose('nll per head', [na.nll, ...na.aheadNll], [nb.nll, ...nb.aheadNll], 1e-5);
      expect(na.aheadNll).toHaveLength(2);
      // The next characters alone give head 1's sum and no ahead figures.
      const n1 = await native.nll(ids, tg.subarray(0, 12), 3, 4, null);
      expect(n1.nll).toBeCloseTo(na.nll, 4);
      expect(n1.aheadNll).toEqual([]);
      // Training needs every block.
      const opt = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 1 };
      await expect(native.trainStep(ids, tg.subarray(0, 12), 3, 4, opt)).rejects.toThrow(/3 blocks/);
      const bad = tg.slice();
      bad[20] = 99;
      await expect(native.lossAndGrads(ids, bad, 3, 4, null)).rejects.toThrow(ShapeError);
    });
  }
});

describe('predictAhead: batches', () => {
  it('block k − 1 holds the character k after each input, IGNORE past the end of the data', () => {
    const data = Uint32Array.from({ length: 53 }, (_, i) => i);
    const n = 4;
    const b = new StreamBatcher(data, 2, 5, { seed: 1, ahead: n });
    const plain = new StreamBatcher(data, 2, 5, { seed: 1 });
    let sawIgnore = false;
    for (let s = 0; s < 3 * b.stepsPerEpoch; s++) {
      const x = b.next();
      const y = plain.next();
      expect(x.ids).toEqual(y.ids);
      expect(x.targets.subarray(0, 10)).toEqual(y.targets);
      for (let k = 1; k <= n; k++) {
        for (let r = 0; r < 10; r++) {
          const want = x.ids[r] + k < data.length ? x.ids[r] + k : IGNORE_TARGET;
          expect(x.targets[(k - 1) * 10 + r]).toBe(want);
          if (want === IGNORE_TARGET) sawIgnore = true;
        }
      }
    }
    expect(sawIgnore).toBe(true);
    const ev = [...evalBatches(data, 2, 5, n)];
    const last = ev.at(-1)?.targets as Uint32Array;
    expect(last).toHaveLength(n * 10);
    expect([...last].filter((v) => v === IGNORE_TARGET).length).toBeGreaterThan(0);
    expect(() => new StreamBatcher(data, 2, 5, { ahead: 0 })).toThrow(ConfigError);
  });
});

describe('predictAhead: the model', () => {
  it('n = 1 is the plain model: same names, the same loss and training trajectory bit for bit', async () => {
    const v = Vocabulary.fromText(TEXT);
    const a = CharLM.create(v, { hidden: 24 }, { seed: 4 });
    const b = CharLM.create(v, { hidden: 24, predictAhead: 1 }, { seed: 4 });
    expect(b.backend.paramInfo()).toEqual(a.backend.paramInfo());
    const sa = await a.fit(TEXT, { steps: 12, batchSize: 4, seqLen: 16, valEvery: 0 });
    const sb = await b.fit(TEXT, { steps: 12, batchSize: 4, seqLen: 16, valEvery: 0 });
    expect(sb.losses).toEqual(sa.losses);
    expect(sb.valBpcAhead).toEqual([]);
  });

  it('trains, reports each head, round-trips through a checkpoint, and the far heads are worse', async () => {
    const v = Vocabulary.fromText(TEXT);
    const lm = CharLM.create(v, { hidden: 48, predictAhead: 3 }, { seed: 5 });
    const s = await lm.fit(TEXT, { steps: 150, batchSize: 8, seqLen: 24, valEvery: 0, valFraction: 0.1, lr: 5e-3 });
    expect(s.valBpcAhead).toHaveLength(2);
    // Predicting further ahead is harder: 1 < 2 < 3 ahead (bits/char).
    expect(s.valBpc).toBeLessThan(s.valBpcAhead[0]);
    expect(s.valBpcAhead[0]).toBeLessThan(s.valBpcAhead[1]);
    // All heads learned something: below the uniform log2(V).
    expect(s.valBpcAhead[1]).toBeLessThan(Math.log2(v.size) - 0.5);
    const path = join(dir, 'ahead.safetensors');
    await lm.save(path);
    const { model } = CharLM.load(path);
    expect(model.config.predictAhead).toBe(3);
    expect(model.backend.paramInfo().map((p) => p.name)).toContain('ahead.3.bias');
    const text = TEXT.slice(0, 400);
    const e1 = await lm.evaluate(text);
    const e2 = await model.evaluate(text);
    expect(e2.bpc).toBe(e1.bpc);
    expect(e2.bpcAhead).toEqual(e1.bpcAhead);
    expect(e2.bpcAhead).toHaveLength(2);
    // The same figures as the reference backend computes from the same weights.
    const js = model.to('js');
    const e3 = await js.evaluate(text);
    expect(e3.bpc).toBeCloseTo(e1.bpc, 4);
    expect(e3.bpcAhead[1]).toBeCloseTo(e1.bpcAhead[1], 4);
  });

  it('bad values are ConfigErrors', () => {
    const v = Vocabulary.fromText(TEXT);
    for (const n of [0, -1, 1.5, 65, Number.NaN]) {
      expect(() => CharLM.create(v, { predictAhead: n }), String(n)).toThrow(ConfigError);
    }
  });
});

describe('predictAhead: CLI', () => {
  it('train char --predict-ahead reports each head; eval reads n from the checkpoint; resume refuses another n', () => {
    const out = join(dir, 'cli-ahead.safetensors');
    const text = join(dir, 'text.txt');
    writeFileSync(text, TEXT);
    const r = runCli(dir, [
      'train',
      'char',
      '--text',
      text,
      '--hidden',
      '16',
      '--steps',
      '20',
      '--batch',
      '4',
      '--seq',
      '16',
      '--predict-ahead',
      '2',
      '--out',
      out,
      '--json',
    ]);
    expect(r.status, r.stderr).toBe(0);
    const summary = jsonLines(r.stdout).at(-1) as Record<string, unknown>;
    expect(summary.predictAhead).toBe(2);
    expect(summary.valBpcAhead as number[]).toHaveLength(1);
    const e = runCli(dir, ['eval', out, '--text', text, '--json']);
    expect(e.status, e.stderr).toBe(0);
    expect((jsonLines(e.stdout).at(-1) as { bpcAhead: number[] }).bpcAhead).toHaveLength(1);
    const bad = runCli(dir, ['train', 'char', '--text', text, '--resume', out, '--predict-ahead', '3', '--out', out]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--predict-ahead 3 contradicts/);
    const zero = runCli(dir, ['train', 'char', '--text', text, '--predict-ahead', '0', '--out', join(dir, 'z.st')]);
    expect(zero.status).toBe(2);
    expect(zero.stderr).toMatch(/predictAhead/);
  });
});
