/**
 * BLEU (Papineni, Roukos, Ward & Zhu 2002, "BLEU: a method for automatic evaluation of machine
 * translation") at the corpus level, as NLTK's `corpus_bleu` and Moses' `multi-bleu.perl` compute it,
 * and exact match, for captions and other token sequences with several references each.
 *
 * For n = 1..N (N = 4 by default, BLEU-4):
 *
 *   p_n = Σ_sentences Σ_{g ∈ n-grams(cand)} min(count_cand(g), max_ref count_ref(g))
 *         ─────────────────────────────────────────────────────────────────────────
 *                      Σ_sentences Σ_{g ∈ n-grams(cand)} count_cand(g)
 *
 * (modified precision: each candidate n-gram counts at most as often as it occurs in any single
 * reference, "clipping"; numerators and denominators are summed over the corpus before dividing, so
 * the score is not a mean of sentence scores), and
 *
 *   BLEU = BP · exp( Σ_n (1/N) log p_n ),   BP = exp(1 − r/c) if c < r, else 1,
 *
 * where c is the total candidate length and r the sum over sentences of the reference length closest
 * to the candidate's length (ties → the shorter reference, as in NLTK and multi-bleu); BP = 0 when
 * c = 0, as in NLTK.
 *
 * No smoothing: if some order n has no matching n-gram (including a corpus with no n-gram of that
 * order at all, e.g. every candidate shorter than n words), BLEU is 0, as NLTK's default returns.
 * Tokens are compared exactly (`===`); lower-case or tokenise beforehand as needed.
 */
import { ConfigError, DataError } from '../errors.js';

/** A tokenised sentence. */
export type Tokens = readonly string[];

/** Options of {@link corpusBleu} and {@link bleuStatistics}. */
export interface BleuOptions {
  /** Largest n-gram order N, an integer ≥ 1 (default 4). */
  maxN?: number;
}

/** Corpus BLEU with the counts it is computed from. */
export interface BleuStatistics {
  /** The corpus BLEU-N score in [0, 1]. */
  bleu: number;
  /** Clipped n-gram matches for n = 1..N (index n − 1). */
  matches: number[];
  /** Candidate n-grams for n = 1..N. */
  totals: number[];
  /** matches / totals per order (0 where totals is 0). */
  precisions: number[];
  brevityPenalty: number;
  /** c: total candidate length. */
  candidateLength: number;
  /** r: total closest reference length. */
  referenceLength: number;
}

function checkCorpus(candidates: readonly Tokens[], references: readonly (readonly Tokens[])[]): void {
  if (candidates.length !== references.length) {
    throw new DataError(
      `${candidates.length} candidates but ${references.length} reference lists; give one reference list per candidate`,
    );
  }
  if (candidates.length === 0)
    throw new DataError('no sentences to score: the candidate and reference lists are empty');
  for (const [i, refs] of references.entries()) {
    if (refs.length === 0) throw new DataError(`sentence ${i} has no references; give at least one per sentence`);
  }
}

/** Counts of the n-grams of `tokens`, keyed by their JSON text (unambiguous whatever the tokens hold). */
function ngramCounts(tokens: Tokens, n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const key = JSON.stringify(tokens.slice(i, i + n));
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** The length of the reference closest to `length`; ties → the shorter. */
export function closestReferenceLength(length: number, references: readonly Tokens[]): number {
  let best = references[0].length;
  for (const ref of references) {
    const d = Math.abs(ref.length - length);
    const bestD = Math.abs(best - length);
    if (d < bestD || (d === bestD && ref.length < best)) best = ref.length;
  }
  return best;
}

/**
 * The counts behind corpus BLEU and the score itself. `references[i]` lists the acceptable outputs for
 * `candidates[i]`. DataError when the lists differ in length or are empty, or a sentence has no
 * reference; ConfigError for a bad `maxN`.
 */
export function bleuStatistics(
  candidates: readonly Tokens[],
  references: readonly (readonly Tokens[])[],
  opts: BleuOptions = {},
): BleuStatistics {
  const maxN = opts.maxN ?? 4;
  if (!Number.isSafeInteger(maxN) || maxN < 1) throw new ConfigError(`BLEU maxN must be an integer ≥ 1, got ${maxN}`);
  checkCorpus(candidates, references);
  const matches = new Array<number>(maxN).fill(0);
  const totals = new Array<number>(maxN).fill(0);
  let c = 0;
  let r = 0;
  for (let i = 0; i < candidates.length; i++) {
    const cand = candidates[i];
    const refs = references[i];
    c += cand.length;
    r += closestReferenceLength(cand.length, refs);
    for (let n = 1; n <= maxN; n++) {
      const counts = ngramCounts(cand, n);
      const maxRef = new Map<string, number>();
      for (const ref of refs) {
        for (const [g, k] of ngramCounts(ref, n)) if (counts.has(g)) maxRef.set(g, Math.max(maxRef.get(g) ?? 0, k));
      }
      for (const [g, k] of counts) {
        matches[n - 1] += Math.min(k, maxRef.get(g) ?? 0);
        totals[n - 1] += k;
      }
    }
  }
  const precisions = matches.map((m, n) => (totals[n] > 0 ? m / totals[n] : 0));
  const brevityPenalty = c === 0 ? 0 : c < r ? Math.exp(1 - r / c) : 1;
  const bleu = matches.some((m) => m === 0)
    ? 0
    : brevityPenalty * Math.exp(precisions.reduce((a, p) => a + Math.log(p), 0) / maxN);
  return { bleu, matches, totals, precisions, brevityPenalty, candidateLength: c, referenceLength: r };
}

/** Corpus BLEU-N (default BLEU-4) of `candidates` against their references; see {@link bleuStatistics}. */
export function corpusBleu(
  candidates: readonly Tokens[],
  references: readonly (readonly Tokens[])[],
  opts: BleuOptions = {},
): number {
  return bleuStatistics(candidates, references, opts).bleu;
}

/**
 * The share of candidates equal, token for token, to one of their references. DataError when the lists
 * differ in length or are empty, or a sentence has no reference.
 */
export function exactMatch(candidates: readonly Tokens[], references: readonly (readonly Tokens[])[]): number {
  checkCorpus(candidates, references);
  let right = 0;
  for (let i = 0; i < candidates.length; i++) {
    const cand = candidates[i];
    if (references[i].some((r) => r.length === cand.length && r.every((t, j) => t === cand[j]))) right++;
  }
  return right / candidates.length;
}
