/**
 * Sampling from the char LM in Rust (`NativeCharLm.sampler`: the packed single-step path, then the
 * draw, per token, with no round trip to JS) against the TypeScript loop it replaces:
 * - its pieces bit for bit: `Math.exp` (V8's own fdlibm port), `sampleLogits` with `Rng`;
 * - whole generations: `sample()`, `stream()`, the TS loop over the same backend's `step`, and the
 *   pure-TS reference backend all give the same text for a seed, for every cell, 1–2 layers and
 *   every h0 policy; `sampleMany` gives generation i = `sample({ seed: seed + i })`;
 * - the packed weights never go stale: after `setParam`, a training step or a checkpoint load the
 *   sampler uses the new weights.
 */
import { describe, expect, it } from 'vitest';
import { loadNative } from '../src/backend/native.js';
import type { CellKind } from '../src/backend/types.js';
import { Vocabulary } from '../src/data/vocab.js';
import { CharLM, type CharLMConfig } from '../src/models/char-lm.js';
import { type SamplingOptions, StepSampler, sampleLogits, validateSampling } from '../src/sample/sampling.js';
import { Rng } from '../src/util/rng.js';

const addon = loadNative();
const TEXT = 'It was the best of times, it was the worst of times, it was the age of wisdom.\n'.repeat(20);
const VOCAB = Vocabulary.fromText(TEXT);

/** A model whose weights are scaled up so that its distributions are far from uniform (the draws matter). */
function model(config: Partial<CharLMConfig>, seed: number, backend: 'native' | 'js' = 'native', vocab = VOCAB) {
  const lm = CharLM.create(vocab, { embed: 8, hidden: 24, ...config }, { seed, backend });
  const rng = new Rng(seed + 100);
  for (const p of lm.backend.paramInfo()) {
    const w = lm.backend.getParam(p.name);
    for (let i = 0; i < w.length; i++) w[i] = p.name === 'h0' ? rng.range(-0.5, 0.5) : w[i] * 3;
    lm.backend.setParam(p.name, w);
  }
  return lm;
}

/** What `sample()` returned before the Rust sampler: the TS loop over the backend's `step`. */
function tsLoop(lm: CharLM, opts: SamplingOptions & { prime?: string; length: number; seed: number }): string {
  const rng = new Rng(opts.seed);
  const prime = lm.vocab.encode(opts.prime ?? '');
  const state = lm.initialState(1, rng);
  const first =
    prime.length > 0 ? prime : Uint32Array.of(lm.vocab.has('\n') ? lm.vocab.encode('\n')[0] : rng.int(lm.vocab.size));
  const s = new StepSampler(lm.backend, { state, prime: first, rngs: [rng], sampling: validateSampling(opts) });
  let out = opts.prime ?? '';
  for (let i = 0; i < opts.length; i++) out += lm.vocab.decode([s.next()]);
  return out;
}

const OPTIONS: SamplingOptions[] = [
  {},
  { temperature: 0 },
  { temperature: 0.7 },
  { temperature: 1.6, topK: 5 },
  { temperature: 1, topP: 0.8 },
  { temperature: 0.9, topK: 12, topP: 0.95 },
  { temperature: 2, topK: 1000 },
];

describe('the pieces of the Rust sampler, bit for bit', () => {
  it('Math.exp: V8 port = the running V8 on 300,000 values (the sampling range, all ranges, raw bit patterns)', () => {
    const rng = new Rng(1);
    const n = 300_000;
    const xs = new Float64Array(n);
    const bits = new Uint32Array(xs.buffer);
    for (let i = 0; i < n; i++) {
      const k = i % 4;
      if (k === 0) xs[i] = -rng.uniform() * 60;
      else if (k === 1) xs[i] = (rng.uniform() - 0.5) * 1500;
      else if (k === 2) xs[i] = (rng.uniform() - 0.5) * 2;
      else {
        bits[2 * i] = rng.u32();
        bits[2 * i + 1] = rng.u32();
      }
    }
    xs.set([0, -0, 1, -1, 709.78, 709.79, -745.1, -745.2, Number.NaN, Infinity, -Infinity, 1e-300, -(2 ** -29)], 0);
    const got = addon.v8ExpOf(xs);
    let mismatches = 0;
    for (let i = 0; i < n; i++) if (!Object.is(got[i], Math.exp(xs[i]))) mismatches++;
    expect(mismatches).toBe(0);
  });

  it('sampleLogits: the same index and the same generator state after it, on random and adversarial rows', () => {
    const rng = new Rng(2);
    const rows: Float32Array[] = [];
    for (let r = 0; r < 300; r++) {
      const v = 1 + rng.int(90);
      const scale = [0.1, 1, 5, 40][r % 4];
      const row = Float32Array.from({ length: v }, () => rng.normal() * scale);
      // Ties (top-k and top-p order them by index), repeated maxima, huge spreads.
      if (r % 5 === 1) for (let i = 0; i < v; i += 2) row[i] = row[0];
      if (r % 7 === 2) row.fill(0.25);
      if (r % 11 === 3) row[rng.int(v)] = 3e38;
      rows.push(row);
    }
    const options: Required<SamplingOptions>[] = [
      ...OPTIONS.map((o) => validateSampling(o)),
      { temperature: 0.05, topK: 2, topP: 0.5 },
      { temperature: 1e-3, topK: 0, topP: 1 },
      { temperature: 1, topK: 0, topP: 1e-9 },
    ];
    let checked = 0;
    for (const row of rows) {
      for (const o of options) {
        const gen = new Rng(rng.u32());
        const native = addon.sampleLogitsRow(
          row,
          o.temperature,
          Math.min(o.topK, row.length),
          o.topP,
          Uint32Array.from(gen.state()),
        );
        const want = sampleLogits(row, o, gen);
        expect(native.index, `row of ${row.length}, ${JSON.stringify(o)}`).toBe(want);
        expect([...native.rng]).toEqual(gen.state());
        checked++;
      }
    }
    expect(checked).toBe(300 * 10);
  });

  it('Rng.state() is what the next draws continue from', () => {
    const a = new Rng(9);
    a.u32();
    const s = a.state();
    expect(s).toHaveLength(4);
    const native = addon.sampleLogitsRow(Float32Array.of(0, 0), 1, 0, 1, Uint32Array.from(s));
    // One draw (u32) from the same state: the same state after it.
    a.u32();
    expect([...native.rng]).toEqual(a.state());
  });
});

describe('whole generations', () => {
  const cases: [string, Partial<CharLMConfig>][] = [
    ['gru', { cell: 'gru' }],
    ['lstm', { cell: 'lstm' }],
    ['rnn', { cell: 'rnn' }],
    ['gru ×2, learned h0', { cell: 'gru', layers: 2, h0: 'learned' }],
    ['lstm ×2, sampled h0', { cell: 'lstm', layers: 2, h0: 'sampled' }],
    ['rnn ×2, predict-ahead 3', { cell: 'rnn', layers: 2, predictAhead: 3 }],
  ];
  for (const [label, config] of cases) {
    it(`${label}: sample = stream = the TS loop over the same step = the pure-TS backend`, () => {
      const lm = model(config, 3);
      const js = lm.to('js');
      for (const [k, o] of OPTIONS.entries()) {
        const opts = { ...o, prime: k % 3 === 0 ? '' : 'it was ', length: 80, seed: 40 + k };
        const a = lm.sample(opts);
        expect([...a]).toHaveLength((opts.prime ?? '').length + 80);
        expect(`${opts.prime}${[...lm.stream(opts)].join('')}`, JSON.stringify(opts)).toBe(a);
        expect(tsLoop(lm, opts), JSON.stringify(opts)).toBe(a);
        // The f64 reference's logits differ from the f32 native ones by rounding only: no draw here
        // lands that close to a boundary.
        expect(js.sample(opts), JSON.stringify(opts)).toBe(a);
      }
    });
  }

  it('no prime and no newline in the corpus: the random start character is drawn from the same generator', () => {
    const vocab = Vocabulary.fromText('abcdefgh ');
    const lm = model({ cell: 'gru' }, 5, 'native', vocab);
    for (const seed of [1, 2, 3, 4]) {
      const opts = { length: 30, seed, temperature: 0.8 };
      expect(lm.sample(opts)).toBe(tsLoop(lm, opts));
      expect([...lm.stream(opts)].join('')).toBe(lm.sample(opts));
    }
  });

  it('sampleMany: generation i is sample({ seed: seed + i }), on both backends', () => {
    for (const config of [
      { cell: 'gru' as CellKind },
      { cell: 'lstm' as CellKind, layers: 2, h0: 'sampled' as const },
    ]) {
      const lm = model(config, 7);
      for (const opts of [
        { prime: 'the ', length: 60, seed: 5, temperature: 0.9, topK: 8 },
        { length: 40, seed: 11, topP: 0.9 },
      ]) {
        const many = lm.sampleMany(9, opts);
        expect(many).toHaveLength(9);
        for (const [i, text] of many.entries()) {
          expect(text, `native #${i}`).toBe(lm.sample({ ...opts, seed: opts.seed + i }));
        }
        expect(new Set(many).size).toBeGreaterThan(1);
        const js = lm.to('js');
        for (const [i, text] of js.sampleMany(3, opts).entries()) {
          expect(text, `js #${i}`).toBe(js.sample({ ...opts, seed: opts.seed + i }));
        }
      }
    }
    const lm = model({}, 1);
    expect(() => lm.sampleMany(0)).toThrow(/count/);
    expect(() => lm.sampleMany(1.5)).toThrow(/count/);
    expect(lm.sampleMany(2, { length: 0, prime: 'it' })).toEqual(['it', 'it']);
  });

  it('a stream in progress keeps its own state; length 0 and invalid options behave as before', () => {
    const lm = model({}, 2);
    const a = lm.stream({ length: 20, seed: 1 });
    const b = lm.stream({ length: 20, seed: 1 });
    let ta = '';
    let tb = '';
    for (let i = 0; i < 20; i++) {
      ta += a.next().value;
      tb += b.next().value;
    }
    expect(ta).toBe(tb);
    expect(a.next().done).toBe(true);
    expect(lm.sample({ prime: 'it', length: 0 })).toBe('it');
    expect(() => lm.sample({ temperature: -1 })).toThrow(/temperature/);
    expect(() => lm.sample({ topP: 0 })).toThrow(/topP/);
    expect(() => lm.sample({ length: -1 })).toThrow(/length/);
  });
});

describe('the packed weights follow the parameters', () => {
  it('setParam and a training step are seen by the next sample, and by a stream already running', async () => {
    const lm = model({ cell: 'gru', layers: 2 }, 4);
    const opts = { prime: 'it was', length: 100, seed: 3, temperature: 0.8 };
    const first = lm.sample(opts);
    // A fresh copy has nothing packed: it samples from exactly the weights the model holds now.
    const fresh = () => lm.to('native').sample(opts);
    expect(fresh()).toBe(first);

    const w = lm.backend.getParam('gru.weight_hh_l1');
    lm.backend.setParam(
      'gru.weight_hh_l1',
      w.map((x) => -x),
    );
    const afterSet = lm.sample(opts);
    expect(afterSet).not.toBe(first);
    expect(afterSet).toBe(fresh());

    await lm.fit(TEXT, { steps: 1, batchSize: 2, seqLen: 16, lr: 0.05, valEvery: 0 });
    const afterFit = lm.sample(opts);
    expect(afterFit).not.toBe(afterSet);
    expect(afterFit).toBe(fresh());

    // A stream already running steps with the weights of the moment, as the per-token loop did.
    const s = lm.stream({ ...opts, length: 40 });
    let text = '';
    for (let i = 0; i < 20; i++) text += s.next().value;
    lm.backend.setParam(
      'head.bias',
      new Float32Array(VOCAB.size).map((_, i) => (i === 3 ? 50 : 0)),
    );
    for (const ch of s) text += ch;
    expect(text.slice(20)).toBe(VOCAB.chars[3].repeat(20));
  });
});
