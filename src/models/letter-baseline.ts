/**
 * The "most frequent phoneme per letter" baseline for grapheme-to-phoneme conversion: every letter is
 * read the same way wherever it stands (C is always K, E always EH or nothing…), ignoring context.
 * It is the floor a sequence model has to beat, and shows how much of English spelling is context.
 *
 * Fitting needs letter-to-phoneme alignments, which dictionaries do not give. They are found by hard
 * EM (Viterbi training), a simplified form of the many-to-many aligners used for G2P (Jiampojamarn,
 * Kondrak & Sherif 2007, "Applying many-to-many alignments and hidden Markov models to letter-to-phoneme
 * conversion"), restricted to one letter at a time:
 *
 *   1. Each letter emits a unit: nothing (ε, e.g. silent E), one phoneme, or two phonemes (X → K S,
 *      U → Y UW). Units of a word are monotone: they spell out the pronunciation left to right.
 *   2. Initial counts c(letter, unit) come from the pairs with as many letters as phonemes, aligned
 *      one to one (most of them really are: CAT → K AE T).
 *   3. Each iteration aligns every pair by dynamic programming, maximising Σ log p(unit | letter) with
 *      p(u | l) = (c(l, u) + α) / (c(l) + α·V), α = 0.5 and V = 1 + P + P² units for P phonemes (the
 *      smoothing lets ε and two-phoneme units, unseen at first, be chosen where lengths force them);
 *      then the counts are recomputed from all the alignments. Ties prefer one phoneme, then ε, then two.
 *   4. After the last iteration each letter predicts its most frequent unit (ties: ε, then phonemes in
 *      sorted order).
 *
 * Iterations stop early once a round leaves the counts unchanged (on CMUdict the rules settle after
 * the first round). Pairs with more than two phonemes per letter cannot be aligned this way and are
 * skipped (counted in {@link LetterBaseline.skipped}): in CMUdict, 39 of the 132 271 pronunciations,
 * abbreviations read out in full such as AAA → T R IH P AH L EY and DR → D AA K T ER.
 */
import type { Pair } from '../data/cmudict.js';
import { ConfigError, DataError, VocabularyError } from '../errors.js';

/** Options of {@link LetterBaseline.fit}. */
export interface LetterBaselineOptions {
  /** Most alignment/re-counting rounds after the 1:1 initialisation, an integer in 1..100. Default 10. */
  iterations?: number;
}

const ALPHA = 0.5;
/** Units: 0 = ε, 1 + p = phoneme p, 1 + P + p·P + q = phonemes p q. */
const EPS = 0;

/**
 * A letter-to-phoneme baseline for grapheme-to-phoneme: each letter maps to zero, one or two phonemes,
 * learned by alignment; what a {@link Seq2Seq} should beat.
 *
 * ```ts
 * import { LetterBaseline, flattenPairs, loadCmudict, phonemeErrorRate } from 'arflow';
 * const pairs = flattenPairs(loadCmudict().slice(0, 2000));
 * const base = LetterBaseline.fit(pairs);
 * console.log(base.predict([...'CAT'], 'skip'));
 * ```
 */
export class LetterBaseline {
  /** Each known letter's prediction: zero, one or two phonemes. */
  readonly rules: ReadonlyMap<string, readonly string[]>;
  /** Training pairs used for the alignment. */
  readonly aligned: number;
  /** Training pairs skipped: more than two phonemes per letter, or no letters. */
  readonly skipped: number;

  private constructor(rules: Map<string, string[]>, aligned: number, skipped: number) {
    this.rules = rules;
    this.aligned = aligned;
    this.skipped = skipped;
  }

  /** Fits on training pairs (one per pronunciation, e.g. from `flattenPairs`). */
  static fit(pairs: readonly Pair[], opts: LetterBaselineOptions = {}): LetterBaseline {
    const iterations = opts.iterations ?? 10;
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > 100) {
      throw new ConfigError(`iterations must be an integer in 1..100, got ${iterations}`);
    }
    if (pairs.length === 0) throw new DataError('no training pairs to fit the letter baseline on');

    const letterIds = new Map<string, number>();
    const phonemeSet = new Set<string>();
    for (const { source, target } of pairs) {
      for (const l of source) if (!letterIds.has(l)) letterIds.set(l, letterIds.size);
      for (const p of target) phonemeSet.add(p);
    }
    const phonemes = [...phonemeSet].sort();
    const phonemeIds = new Map(phonemes.map((p, i) => [p, i]));
    const L = letterIds.size;
    const P = phonemes.length;
    const S = 1 + P; // ε and single phonemes, stored densely per letter

    // Pairs as id arrays; those that cannot be aligned are left out.
    const data: { ls: Int32Array; ps: Int32Array }[] = [];
    let skipped = 0;
    for (const { source, target } of pairs) {
      if (source.length === 0 || target.length > 2 * source.length) {
        skipped++;
        continue;
      }
      data.push({
        ls: Int32Array.from(source, (l) => letterIds.get(l) as number),
        ps: Int32Array.from(target, (p) => phonemeIds.get(p) as number),
      });
    }
    if (data.length === 0) {
      throw new DataError(
        `none of the ${pairs.length} pairs can be aligned (each has more than 2 phonemes per letter)`,
      );
    }

    // Counts: ε and singles dense, two-phoneme units sparse (P² per letter would be mostly zeros).
    let single = new Float64Array(L * S);
    let double = new Map<number, number>();
    let total = new Float64Array(L);
    const doubleKey = (l: number, p: number, q: number) => (l * P + p) * P + q;
    let initialised = 0;
    for (const { ls, ps } of data) {
      if (ls.length !== ps.length) continue;
      initialised++;
      for (let i = 0; i < ls.length; i++) {
        single[ls[i] * S + 1 + ps[i]]++;
        total[ls[i]]++;
      }
    }
    if (initialised === 0) {
      throw new DataError('no training pair has as many letters as phonemes, so the alignment cannot be initialised');
    }

    const V = 1 + P + P * P;
    // Dynamic-programming tables, reused across pairs and grown as needed.
    let best = new Float64Array(0);
    let back = new Int8Array(0);
    for (let it = 0; it < iterations; it++) {
      const logDen = Float64Array.from(total, (t) => Math.log(t + ALPHA * V));
      const logSingle = new Float64Array(L * S);
      for (let k = 0; k < L * S; k++) logSingle[k] = Math.log(single[k] + ALPHA) - logDen[Math.floor(k / S)];
      const logDouble = (l: number, p: number, q: number) =>
        Math.log((double.get(doubleKey(l, p, q)) ?? 0) + ALPHA) - logDen[l];

      const nextSingle = new Float64Array(L * S);
      const nextDouble = new Map<number, number>();
      const nextTotal = new Float64Array(L);
      for (const { ls, ps } of data) {
        const m = ls.length;
        const n = ps.length;
        const w = n + 1;
        // best[i·w + j]: best score of letters 0..i-1 emitting phonemes 0..j-1; back: the unit size used.
        if (best.length < (m + 1) * w) {
          best = new Float64Array(2 * (m + 1) * w);
          back = new Int8Array(best.length);
        }
        best.fill(Number.NEGATIVE_INFINITY, 0, (m + 1) * w);
        best[0] = 0;
        for (let i = 1; i <= m; i++) {
          const l = ls[i - 1];
          const row = (i - 1) * w;
          const logEps = logSingle[l * S + EPS];
          for (let j = 0; j <= n; j++) {
            let score = Number.NEGATIVE_INFINITY;
            let size = -1;
            if (j >= 1) {
              const s = best[row + j - 1] + logSingle[l * S + 1 + ps[j - 1]];
              if (s > score) {
                score = s;
                size = 1;
              }
            }
            const e = best[row + j] + logEps;
            if (e > score) {
              score = e;
              size = 0;
            }
            if (j >= 2 && best[row + j - 2] > Number.NEGATIVE_INFINITY) {
              const d = best[row + j - 2] + logDouble(l, ps[j - 2], ps[j - 1]);
              if (d > score) {
                score = d;
                size = 2;
              }
            }
            best[i * w + j] = score;
            back[i * w + j] = size;
          }
        }
        // n ≤ 2m guarantees a finite path; walk it back and count its units.
        for (let i = m, j = n; i > 0; i--) {
          const l = ls[i - 1];
          const size = back[i * w + j];
          if (size === 2) {
            const key = doubleKey(l, ps[j - 2], ps[j - 1]);
            nextDouble.set(key, (nextDouble.get(key) ?? 0) + 1);
          } else {
            nextSingle[l * S + (size === 1 ? 1 + ps[j - 1] : EPS)]++;
          }
          nextTotal[l]++;
          j -= size;
        }
      }
      const unchanged =
        nextSingle.every((c, k) => c === single[k]) &&
        nextDouble.size === double.size &&
        [...nextDouble].every(([key, c]) => double.get(key) === c);
      single = nextSingle;
      double = nextDouble;
      total = nextTotal;
      if (unchanged) break;
    }

    // Most frequent unit per letter; strict > keeps the lowest unit id on ties.
    const rules = new Map<string, string[]>();
    for (const [letter, l] of letterIds) {
      if (total[l] === 0) continue;
      let bestCount = -1;
      let unit: string[] = [];
      for (let u = 0; u < S; u++) {
        if (single[l * S + u] > bestCount) {
          bestCount = single[l * S + u];
          unit = u === EPS ? [] : [phonemes[u - 1]];
        }
      }
      const doubles = [...double].filter(([key]) => Math.floor(key / (P * P)) === l).sort((a, b) => a[0] - b[0]);
      for (const [key, count] of doubles) {
        if (count > bestCount) {
          bestCount = count;
          unit = [phonemes[Math.floor(key / P) % P], phonemes[key % P]];
        }
      }
      rules.set(letter, unit);
    }
    return new LetterBaseline(rules, data.length, skipped);
  }

  /**
   * The pronunciation of `letters`: each letter's rule, concatenated. Letters never seen in training
   * throw a VocabularyError listing them (`'error'`, default) or are read as nothing (`'skip'`).
   */
  predict(letters: readonly string[], unknown: 'error' | 'skip' = 'error'): string[] {
    if (unknown !== 'error' && unknown !== 'skip') {
      throw new ConfigError(`unknown policy ${JSON.stringify(unknown)} for unseen letters; use error or skip`);
    }
    const out: string[] = [];
    const missing = new Set<string>();
    for (const letter of letters) {
      const rule = this.rules.get(letter);
      if (rule === undefined) missing.add(letter);
      else out.push(...rule);
    }
    if (missing.size > 0 && unknown === 'error') {
      const list = [...missing];
      throw new VocabularyError(
        `letter(s) not seen in training: ${list.map((l) => JSON.stringify(l)).join(', ')}; ` +
          "use the 'skip' policy to read them as nothing",
        list,
      );
    }
    return out;
  }
}
