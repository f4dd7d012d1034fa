/**
 * Behaviour of the public CharLM API on the native backend: it learns, checkpoints round-trip exactly
 * and atomically, resume continues a run bit for bit, sampling is seeded, training leaves the event
 * loop free and stops on an AbortSignal, and bad input gives typed errors with nothing written.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadCorpus } from '../src/data/corpora.js';
import { Vocabulary } from '../src/data/vocab.js';
import { CheckpointError, ConfigError, DataError, VocabularyError } from '../src/errors.js';
import { decodeSafetensors, encodeSafetensors } from '../src/io/safetensors.js';
import { CharLM } from '../src/models/char-lm.js';

/**
 * Lets a test make the next `writeFileSync` to a file descriptor fail half-way, as a full disk would:
 * the checkpoint writer writes its temp file through a descriptor.
 */
const injected = vi.hoisted(() => ({ failNextFdWrite: false }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const writeFileSync = ((file: unknown, data: unknown, ...rest: unknown[]) => {
    if (injected.failNextFdWrite && typeof file === 'number' && data instanceof Uint8Array) {
      injected.failNextFdWrite = false;
      (fs.writeFileSync as (...a: unknown[]) => void)(file, data.subarray(0, Math.floor(data.length / 2)));
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    }
    return (fs.writeFileSync as (...a: unknown[]) => void)(file, data, ...rest);
  }) as typeof fs.writeFileSync;
  return { ...fs, default: { ...fs, writeFileSync }, writeFileSync };
});

afterEach(() => {
  injected.failNextFdWrite = false;
});

const MOBY = loadCorpus('moby-dick');
/** ~60k characters for the learning test. */
const TEXT_60K = MOBY.slice(0, 60_000);
/** A smaller text for the fast tests. */
const TEXT_8K = MOBY.slice(0, 8_000);

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'arflow-char-lm-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A fresh empty directory for one test. */
function freshDir(name: string): string {
  const d = join(dir, name);
  rmSync(d, { recursive: true, force: true });
  return mkdtempSync(`${d}-`);
}

function snapshot(model: CharLM): Map<string, Float32Array> {
  return new Map(model.backend.paramInfo().map((p) => [p.name, model.backend.getParam(p.name)]));
}

function expectSameParams(model: CharLM, before: Map<string, Float32Array>): void {
  for (const [name, data] of before) {
    const now = model.backend.getParam(name);
    expect(Buffer.from(now.buffer, now.byteOffset, now.byteLength).equals(Buffer.from(data.buffer)), name).toBe(true);
  }
}

/** Catches what `fn` throws or rejects with (failing the test if it does not). */
async function caught(fn: () => unknown): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error, but the call succeeded');
}

/** Shannon entropy in bits of the character (code point) frequencies of `text`. */
function unigramEntropy(text: string): number {
  const counts = new Map<string, number>();
  let n = 0;
  for (const ch of text) {
    counts.set(ch, (counts.get(ch) ?? 0) + 1);
    n++;
  }
  let h = 0;
  for (const c of counts.values()) h -= (c / n) * Math.log2(c / n);
  return h;
}

/** A small trained model shared by the sampling and checkpoint tests. */
let small: CharLM;
beforeAll(async () => {
  small = CharLM.create(Vocabulary.fromText(TEXT_8K), { embed: 16, hidden: 48 }, { seed: 3 });
  await small.fit(TEXT_8K, { steps: 40, batchSize: 8, seqLen: 32, valEvery: 0, lr: 5e-3 });
});

describe('learning', () => {
  it('brings validation bits/char on 60k characters of Moby-Dick clearly below the unigram entropy', async () => {
    const unigram = unigramEntropy(TEXT_60K);
    // Sanity of the baseline itself: English text sits near 4.1–4.5 bits/char by unigram frequencies.
    expect(unigram).toBeGreaterThan(3.5);
    expect(unigram).toBeLessThan(5);
    const model = CharLM.create(Vocabulary.fromText(TEXT_60K), { hidden: 128 }, { seed: 1 });
    expect(model.backend.kind).toBe('native');
    const t0 = performance.now();
    const summary = await model.fit(TEXT_60K, { steps: 150, batchSize: 16, seqLen: 64, valEvery: 0, lr: 3e-3 });
    const sec = (performance.now() - t0) / 1000;
    expect(summary.steps).toBe(150);
    expect(summary.aborted).toBe(false);
    expect(summary.losses).toHaveLength(150);
    expect(summary.losses.every(Number.isFinite)).toBe(true);
    // The loss starts near ln V (uniform guessing) and falls.
    expect(summary.losses[0]).toBeGreaterThan(Math.log(model.vocab.size) - 1);
    expect(summary.trainLoss).toBeLessThan(summary.losses[0] - 1);
    expect(Number.isFinite(summary.valBpc)).toBe(true);
    // Below the best a model without context can do, by a clear margin (a unigram model would sit at
    // `unigram`, and one that memorised nothing above it).
    expect(summary.valBpc, `valBpc ${summary.valBpc} vs unigram ${unigram} (${sec.toFixed(1)} s)`).toBeLessThan(
      unigram - 0.5,
    );
    // evaluate() of the same held-out tail (one stream instead of the trainer's parallel ones) is
    // below the unigram rate by the same margin.
    const tail = TEXT_60K.slice(TEXT_60K.length - Math.floor(TEXT_60K.length * 0.05));
    const ev = await model.evaluate(tail);
    expect(ev.bpc).toBeLessThan(unigram - 0.5);
    expect(ev.chars).toBe(tail.length - 1);
  });

  for (const cell of ['lstm', 'rnn'] as const) {
    it(`an ${cell.toUpperCase()} model also falls clearly below the unigram entropy`, async () => {
      const unigram = unigramEntropy(TEXT_60K);
      const model = CharLM.create(Vocabulary.fromText(TEXT_60K), { hidden: 128, cell }, { seed: 1 });
      expect(model.backend.paramInfo()[1].name).toBe(`${cell}.weight_ih_l0`);
      const summary = await model.fit(TEXT_60K, { steps: 150, batchSize: 16, seqLen: 64, valEvery: 0, lr: 3e-3 });
      expect(summary.losses.every(Number.isFinite)).toBe(true);
      expect(summary.valBpc, `${cell} valBpc ${summary.valBpc} vs unigram ${unigram}`).toBeLessThan(unigram - 0.5);
    });
  }
});

describe('validation', () => {
  it('works for every held-out length, e.g. a 257-character tail with the default batch 32 × seq 64', async () => {
    // 5140 characters → floor(5140 · 0.05) = 257 held out. The trainer picks batch
    // floor((257 − 1) / 64) = 4 validation streams, but 4 streams × (64 + 1) need 260 characters.
    const text = MOBY.slice(0, 5140);
    const model = CharLM.create(Vocabulary.fromText(text), { embed: 8, hidden: 16 }, { seed: 1 });
    const d = freshDir('val-length');
    const path = join(d, 'model.safetensors');
    const summary = await model.fit(text, { steps: 1, checkpoint: { path } });
    expect(summary.steps).toBe(1);
    expect(Number.isFinite(summary.valBpc)).toBe(true);
    expect(readdirSync(d)).toEqual(['model.safetensors']);
  });
});

describe('checkpoints', () => {
  it('save → load gives identical logits, vocabulary and config, written atomically', async () => {
    const d = freshDir('roundtrip');
    const path = join(d, 'model.safetensors');
    await small.save(path);
    // Atomic write: exactly the target file in the directory, no temp file left behind.
    expect(readdirSync(d)).toEqual(['model.safetensors']);
    const { model, train } = CharLM.load(path);
    expect(train).toBeNull();
    expect(model.backend.kind).toBe('native');
    expect(model.vocab.chars).toEqual(small.vocab.chars);
    expect(model.config).toEqual(small.config);
    expect(model.shape).toEqual(small.shape);
    const text = TEXT_8K.slice(1000, 1300);
    const a = small.logits(text);
    const b = model.logits(text);
    expect(b.length).toBe(text.length * small.vocab.size);
    expect(Buffer.from(b.buffer).equals(Buffer.from(a.buffer))).toBe(true);
    // Overwriting an existing checkpoint is atomic too.
    await small.save(path, { optimizer: true, train: { step: 40 } });
    expect(readdirSync(d)).toEqual(['model.safetensors']);
    expect(CharLM.load(path).train).toEqual({ step: 40 });
  });

  it('resume: N/2 steps, save, load, continue to N reproduces the uninterrupted losses exactly', async () => {
    const N = 24;
    const text = TEXT_8K;
    const vocab = Vocabulary.fromText(text);
    // 7600 training chars / 8 streams = 950 per stream = 14 steps of 64 per epoch: the continued half
    // crosses an epoch boundary (new offsets, carried state reset) after the resume.
    const opts = { steps: N, batchSize: 8, seqLen: 64, valEvery: 5, lr: 4e-3, seed: 9, warmup: 3 };
    const make = () => CharLM.create(vocab, { embed: 16, hidden: 40, layers: 2 }, { seed: 4 });

    const full = await make().fit(text, opts);
    expect(full.losses).toHaveLength(N);

    // Interrupt the same run (same `steps`, so the cosine schedule is the same) at N/2 with the
    // AbortSignal, as Ctrl-C does; the final checkpoint is written on the way out.
    const path = join(freshDir('resume'), 'run.safetensors');
    const stop = new AbortController();
    const first = await make().fit(text, {
      ...opts,
      logEvery: 1,
      checkpoint: { path },
      signal: stop.signal,
      onProgress: (p) => {
        if (p.step === N / 2) stop.abort();
      },
    });
    expect(first.aborted).toBe(true);
    expect(first.steps).toBe(N / 2);
    expect(first.losses).toHaveLength(N / 2);

    const loaded = CharLM.load(path);
    expect(loaded.train?.step).toBe(N / 2);
    expect(loaded.model.backend.getOptimStep()).toBe(N / 2);
    const rest = await loaded.model.fit(text, { ...opts, resume: loaded.train });
    expect(rest.steps).toBe(N);
    expect(rest.losses).toHaveLength(N / 2);
    // Exact: the checkpoint stores parameters, AdamW moments, the carried state and the batcher
    // position in f32/JSON without loss, and the native step is deterministic.
    expect([...first.losses, ...rest.losses]).toEqual(full.losses);
  });

  it('resume with a constant schedule: a separate N/2-step run then `fit` to N matches exactly', async () => {
    const N = 16;
    const text = TEXT_8K;
    const vocab = Vocabulary.fromText(text);
    const opts = { batchSize: 4, seqLen: 32, valEvery: 0, lr: 3e-3, seed: 2, schedule: 'constant' as const };
    const make = () => CharLM.create(vocab, { embed: 8, hidden: 32 }, { seed: 5 });
    const full = await make().fit(text, { ...opts, steps: N });
    const path = join(freshDir('resume-const'), 'half.safetensors');
    const first = await make().fit(text, { ...opts, steps: N / 2, checkpoint: { path } });
    expect(first.aborted).toBe(false);
    const loaded = CharLM.load(path);
    const rest = await loaded.model.fit(text, { ...opts, steps: N, resume: loaded.train });
    expect([...first.losses, ...rest.losses]).toEqual(full.losses);
  });
});

describe('sampling', () => {
  it('is deterministic for a fixed seed and differs between seeds', () => {
    const a = small.sample({ prime: 'The ', length: 120, temperature: 1, seed: 7 });
    const b = small.sample({ prime: 'The ', length: 120, temperature: 1, seed: 7 });
    const c = small.sample({ prime: 'The ', length: 120, temperature: 1, seed: 8 });
    expect(a.startsWith('The ')).toBe(true);
    expect([...a]).toHaveLength(4 + 120);
    expect(b).toBe(a);
    expect(c).not.toBe(a);
    // stream() yields the same characters as sample().
    expect(`The ${[...small.stream({ prime: 'The ', length: 120, temperature: 1, seed: 7 })].join('')}`).toBe(a);
  });

  it('temperature 0 is greedy: the same for every seed, equal to topK 1, and the argmax of the logits', () => {
    const g1 = small.sample({ prime: 'Call me', length: 60, temperature: 0, seed: 1 });
    const g2 = small.sample({ prime: 'Call me', length: 60, temperature: 0, seed: 2 });
    expect(g2).toBe(g1);
    const k1 = small.sample({ prime: 'Call me', length: 60, temperature: 1, topK: 1, seed: 3 });
    expect(k1).toBe(g1);
    // The first generated character is the argmax of the logits after the prime.
    const logits = small.logits('Call me');
    const V = small.vocab.size;
    const last = logits.subarray(logits.length - V);
    let best = 0;
    for (let i = 1; i < V; i++) if (last[i] > last[best]) best = i;
    expect(g1[7]).toBe(small.vocab.chars[best]);
  });

  it('a prime with an unseen character throws VocabularyError by default and works with skip/replace', () => {
    const prime = 'a €1 coin';
    expect(small.vocab.has('€')).toBe(false);
    expect([...prime.replace('€', '')].every((ch) => small.vocab.has(ch))).toBe(true);
    let err: unknown = null;
    try {
      small.sample({ prime, length: 10, seed: 1 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VocabularyError);
    expect((err as VocabularyError).unknown).toEqual(['€']);
    expect((err as Error).message).toMatch(/€/);
    expect(() => small.sample({ prime, length: 10, seed: 1, unknown: 'error' })).toThrow(VocabularyError);
    const skipped = small.sample({ prime, length: 10, seed: 1, unknown: 'skip' });
    expect(skipped.startsWith('a 1 coin')).toBe(true);
    expect([...skipped]).toHaveLength('a 1 coin'.length + 10);
    // The same as priming with the text that has the character dropped.
    expect(skipped).toBe(small.sample({ prime: 'a 1 coin', length: 10, seed: 1 }));
    const replaced = small.sample({ prime, length: 10, seed: 1, unknown: 'replace' });
    expect(replaced.startsWith('a  1 coin')).toBe(true);
    expect([...replaced]).toHaveLength('a  1 coin'.length + 10);
    expect(replaced).toBe(small.sample({ prime: 'a  1 coin', length: 10, seed: 1 }));
  });
});

describe('concurrency', () => {
  it('fit leaves the event loop responsive', async () => {
    const model = CharLM.create(Vocabulary.fromText(TEXT_60K), { hidden: 128 }, { seed: 2 });
    let ticks = 0;
    let last = performance.now();
    let maxGap = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
      ticks++;
    }, 5);
    const t0 = performance.now();
    let ticksAtEnd: number;
    try {
      // A time budget makes the run last ≥ 300 ms on any machine; steps is only an upper bound.
      await model.fit(TEXT_60K, { steps: 100_000, seconds: 0.3, batchSize: 16, seqLen: 64, valEvery: 0 });
      ticksAtEnd = ticks;
    } finally {
      clearInterval(timer);
    }
    const ms = performance.now() - t0;
    expect(ms, 'the run must be long enough for the check to mean something').toBeGreaterThanOrEqual(300);
    // A blocked loop would fire no timer at all until fit resolved. One tick per 50 ms on average is
    // loose enough for a busy 2-core machine (every batch runs on the other threads).
    expect(
      ticksAtEnd,
      `${ticksAtEnd} ticks in ${ms.toFixed(0)} ms, longest gap ${maxGap.toFixed(0)} ms`,
    ).toBeGreaterThanOrEqual(Math.max(5, Math.floor(ms / 50)));
  });

  it('an AbortSignal stops training early', async () => {
    const model = CharLM.create(Vocabulary.fromText(TEXT_60K), { hidden: 128 }, { seed: 2 });
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), 100);
    const t0 = performance.now();
    const summary = await model.fit(TEXT_60K, {
      steps: 10_000,
      batchSize: 16,
      seqLen: 64,
      valEvery: 0,
      // A safety net: were the signal ignored, the run ends by this budget (outOfTime) and the
      // assertions below fail in seconds rather than by the test timeout.
      seconds: 10,
      signal: stop.signal,
    });
    clearTimeout(timer);
    const ms = performance.now() - t0;
    expect(summary.aborted).toBe(true);
    expect(summary.outOfTime).toBe(false);
    expect(summary.steps).toBeGreaterThanOrEqual(1);
    expect(summary.steps).toBeLessThan(10_000);
    expect(summary.losses).toHaveLength(summary.steps);
    // It stopped soon after the abort (one batch is tens of ms), not after thousands of steps.
    expect(ms).toBeLessThan(5_000);
  });
});

describe('bad input: typed errors, nothing written or changed', () => {
  it('an empty or one-character corpus is a DataError', () => {
    expect(() => Vocabulary.fromText('')).toThrow(DataError);
    expect(() => Vocabulary.fromText('aaaaaaa')).toThrow(DataError);
    expect(() => Vocabulary.fromText('a')).toThrow(/at least 2 distinct characters/);
  });

  it('a NaN or negative learning rate is a ConfigError; parameters, optimizer and disk are untouched', async () => {
    const model = CharLM.create(Vocabulary.fromText(TEXT_8K), { embed: 8, hidden: 16 }, { seed: 1 });
    const before = snapshot(model);
    const d = freshDir('bad-lr');
    const path = join(d, 'never.safetensors');
    for (const lr of [Number.NaN, -1e-3, Number.POSITIVE_INFINITY]) {
      const err = await caught(() =>
        model.fit(TEXT_8K, { steps: 5, batchSize: 4, seqLen: 16, lr, checkpoint: { path } }),
      );
      expect(err, `lr ${lr}`).toBeInstanceOf(ConfigError);
      expect(err.message).toMatch(/lr/);
      expectSameParams(model, before);
      expect(model.backend.getOptimStep()).toBe(0);
      expect(model.backend.getCarry()).toBeNull();
    }
    expect(readdirSync(d)).toEqual([]);
  });

  it('a NaN learning rate given straight to the native trainStep is rejected and changes nothing', async () => {
    const model = CharLM.create(Vocabulary.fromText(TEXT_8K), { embed: 8, hidden: 16 }, { seed: 1 });
    const before = snapshot(model);
    const ids = model.vocab.encode(TEXT_8K.slice(0, 32));
    const targets = model.vocab.encode(TEXT_8K.slice(1, 33));
    for (const lr of [Number.NaN, -1]) {
      const err = await caught(() =>
        model.backend.trainStep(ids, targets, 2, 16, {
          lr,
          beta1: 0.9,
          beta2: 0.999,
          eps: 1e-8,
          weightDecay: 0,
          clip: 1,
        }),
      );
      expect(err, `lr ${lr}`).toBeInstanceOf(ConfigError);
      expectSameParams(model, before);
      expect(model.backend.getOptimStep()).toBe(0);
    }
  });

  it('hidden size 0 (or any non-positive size) is a ConfigError from CharLM.create', () => {
    const vocab = Vocabulary.fromText('ab');
    expect(() => CharLM.create(vocab, { hidden: 0 })).toThrow(ConfigError);
    expect(() => CharLM.create(vocab, { hidden: 0 })).toThrow(/hidden/);
    expect(() => CharLM.create(vocab, { embed: -1 })).toThrow(ConfigError);
    expect(() => CharLM.create(vocab, { layers: 1.5 })).toThrow(ConfigError);
  });

  it('a truncated checkpoint is a CheckpointError', async () => {
    const d = freshDir('truncated');
    const good = join(d, 'good.safetensors');
    await small.save(good);
    const bytes = readFileSync(good);
    for (const keep of [0, 4, 100, Math.floor(bytes.length / 2), bytes.length - 1]) {
      const cut = join(d, `cut-${keep}.safetensors`);
      writeFileSync(cut, bytes.subarray(0, keep));
      const err = await caught(() => CharLM.load(cut));
      expect(err, `truncated to ${keep} bytes`).toBeInstanceOf(CheckpointError);
      expect(err.message).toContain(cut);
    }
    // A missing file too.
    expect(() => CharLM.load(join(d, 'absent.safetensors'))).toThrow(CheckpointError);
  });

  it('a valid safetensors file without arflow metadata is a CheckpointError', () => {
    const d = freshDir('foreign');
    const withMeta = join(d, 'foreign.safetensors');
    writeFileSync(
      withMeta,
      encodeSafetensors(
        { 'embedding.weight': { dtype: 'F32', shape: [2, 3], data: new Float32Array(6) } },
        { format: 'pt' },
      ),
    );
    const noMeta = join(d, 'bare.safetensors');
    writeFileSync(noMeta, encodeSafetensors({ w: { dtype: 'F32', shape: [4], data: new Float32Array(4) } }));
    for (const p of [withMeta, noMeta]) {
      // The file itself is valid safetensors: only the model loader rejects it.
      expect(() => decodeSafetensors(readFileSync(p))).not.toThrow();
      expect(() => CharLM.load(p)).toThrow(CheckpointError);
      expect(() => CharLM.load(p)).toThrow(/not an arflow char-lm checkpoint/);
    }
  });

  it('a config/vocabulary mismatch between metadata and tensors is a CheckpointError', async () => {
    const d = freshDir('mismatch');
    const good = join(d, 'good.safetensors');
    await small.save(good);
    const { tensors, metadata } = decodeSafetensors(readFileSync(good));
    // One more character in the vocabulary than the embedding and head have rows.
    const chars = [...small.vocab.chars, '€'];
    const moreVocab = join(d, 'vocab.safetensors');
    writeFileSync(moreVocab, encodeSafetensors(tensors, { ...metadata, vocab: JSON.stringify({ chars }) }));
    const err = await caught(() => CharLM.load(moreVocab));
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/mismatch|embedding\.weight/);
    // A hidden size the tensors do not have.
    const cfg = { ...small.config, hidden: small.config.hidden + 1 };
    const moreHidden = join(d, 'hidden.safetensors');
    writeFileSync(moreHidden, encodeSafetensors(tensors, { ...metadata, config: JSON.stringify(cfg) }));
    expect(() => CharLM.load(moreHidden)).toThrow(CheckpointError);
    // An unreadable config.
    const badJson = join(d, 'json.safetensors');
    writeFileSync(badJson, encodeSafetensors(tensors, { ...metadata, config: '{"hidden":' }));
    expect(() => CharLM.load(badJson)).toThrow(CheckpointError);
  });

  it('corrupt optimizer state, carry or step in a resumable checkpoint is a CheckpointError naming the file', async () => {
    const d = freshDir('optim');
    const good = join(d, 'good.safetensors');
    await small.save(good, { optimizer: true, train: { step: 40 } });
    const { tensors, metadata } = decodeSafetensors(readFileSync(good));
    expect(tensors['train.carry']).toBeDefined();
    const variants: [string, typeof tensors, Record<string, string>, RegExp][] = [];
    const nan = new Float32Array(tensors['optimizer.exp_avg.head.bias'].data as Float32Array);
    nan[0] = Number.NaN;
    variants.push([
      'nan-moment',
      { ...tensors, 'optimizer.exp_avg.head.bias': { dtype: 'F32', shape: [nan.length], data: nan } },
      metadata,
      /NaN or Inf/,
    ]);
    variants.push([
      'carry-shape',
      { ...tensors, 'train.carry': { dtype: 'F32', shape: [1, 2, 3], data: new Float32Array(6) } },
      metadata,
      /train\.carry has shape/,
    ]);
    for (const step of ['abc', '-1', '1.5']) {
      variants.push([`step-${step}`, tensors, { ...metadata, optimizer_step: step }, /optimizer_step/]);
    }
    for (const [name, t, m, message] of variants) {
      const p = join(d, `${name}.safetensors`);
      writeFileSync(p, encodeSafetensors(t, m));
      const err = await caught(() => CharLM.load(p));
      expect(err, name).toBeInstanceOf(CheckpointError);
      expect(err.message, name).toMatch(message);
      expect(err.message, name).toContain(p);
    }
  });

  it('save into a directory that cannot be created fails with CheckpointError and leaves the file in the way intact', async () => {
    const d = freshDir('no-dir');
    // The would-be parent directory is an existing (checkpoint) file.
    const existing = join(d, 'existing.safetensors');
    await small.save(existing);
    const bytes = readFileSync(existing);
    const err = await caught(() => small.save(join(existing, 'sub', 'model.safetensors')));
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/cannot write checkpoint/);
    expect(statSync(existing).isFile()).toBe(true);
    expect(readFileSync(existing).equals(bytes)).toBe(true);
    expect(readdirSync(d)).toEqual(['existing.safetensors']);
  });

  it('a write that fails half-way (disk full) leaves the existing checkpoint intact and no temp file', async () => {
    const d = freshDir('disk-full');
    const path = join(d, 'model.safetensors');
    await small.save(path);
    const bytes = readFileSync(path);
    // A different model, so a successful overwrite would change the file.
    const other = CharLM.create(small.vocab, small.config, { seed: 99 });
    injected.failNextFdWrite = true;
    const err = await caught(() => other.save(path, { optimizer: true }));
    expect(injected.failNextFdWrite, 'the injected failure was not reached').toBe(false);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/ENOSPC/);
    expect(readFileSync(path).equals(bytes)).toBe(true);
    expect(readdirSync(d)).toEqual(['model.safetensors']);
    // And the original still loads to the original model.
    const { model } = CharLM.load(path);
    expect(Buffer.from(model.logits('the').buffer).equals(Buffer.from(small.logits('the').buffer))).toBe(true);
  });
});
