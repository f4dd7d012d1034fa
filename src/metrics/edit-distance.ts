/**
 * Sequence metrics for grapheme-to-phoneme and other sequence-to-sequence tasks.
 *
 * A word may have several correct outputs (CMUdict lists alternate pronunciations, e.g. TOMATO), so
 * each hypothesis is scored against a list of references:
 *
 *   - {@link phonemeErrorRate} (PER) = Σ_words d(hyp, r*) / Σ_words |r*|, where d is the Levenshtein
 *     distance and r* is the word's reference with the smallest distance to the hypothesis; among
 *     references tied at that distance, the shortest (and among those, the first listed). Choosing the
 *     closest reference is the usual multi-reference convention (the hypothesis is judged against the
 *     pronunciation it was aiming at); breaking ties towards the shorter one makes the rate the larger
 *     of the tied candidates, so the choice never flatters a system. It is a ratio of totals (errors
 *     pooled over words), not a mean of per-word rates, so long words weigh more.
 *   - {@link wordErrorRate} (WER) = share of words whose hypothesis is exactly equal to none of its
 *     references.
 */
import { DataError } from '../errors.js';

/**
 * Levenshtein distance: the least number of insertions, deletions and substitutions (each costing 1)
 * that turn `a` into `b`. Elements are compared with `===`. O(|a|·|b|) time, O(min) memory.
 */
export function editDistance<T>(a: readonly T[], b: readonly T[]): number {
  // Keep the row over the shorter sequence; the distance is symmetric.
  if (a.length < b.length) [a, b] = [b, a];
  const n = b.length;
  let prev = new Uint32Array(n + 1);
  let cur = new Uint32Array(n + 1);
  for (let j = 0; j <= n; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    const ai = a[i - 1];
    for (let j = 1; j <= n; j++) {
      const sub = prev[j - 1] + (ai === b[j - 1] ? 0 : 1);
      const del = prev[j] + 1;
      const ins = cur[j - 1] + 1;
      cur[j] = Math.min(sub, del, ins);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[n];
}

/** The reference PER scores `hyp` against, with its distance: see the module comment for the rule. */
export function bestReference(
  hyp: readonly string[],
  refs: readonly (readonly string[])[],
): { index: number; distance: number } {
  if (refs.length === 0) throw new DataError('a word has no reference sequences; give at least one per word');
  let index = 0;
  let distance = editDistance(hyp, refs[0]);
  for (let k = 1; k < refs.length; k++) {
    const d = editDistance(hyp, refs[k]);
    if (d < distance || (d === distance && refs[k].length < refs[index].length)) {
      index = k;
      distance = d;
    }
  }
  return { index, distance };
}

function checkLengths(hyps: readonly unknown[], refs: readonly unknown[]): void {
  if (hyps.length !== refs.length) {
    throw new DataError(
      `${hyps.length} hypotheses but ${refs.length} reference lists; give one reference list per hypothesis`,
    );
  }
  if (hyps.length === 0) throw new DataError('no words to score: the hypothesis and reference lists are empty');
}

/**
 * Phoneme (token) error rate over words: Σ min-distance / Σ length of the reference achieving it
 * (ties → the shorter reference). `refs[i]` lists the acceptable outputs for `hyps[i]`. DataError when
 * the lists differ in length or are empty, when a word has no reference, or when every chosen reference
 * is empty (the rate would be 0/0).
 */
export function phonemeErrorRate(
  hyps: readonly (readonly string[])[],
  refs: readonly (readonly (readonly string[])[])[],
): number {
  checkLengths(hyps, refs);
  let errors = 0;
  let length = 0;
  for (let i = 0; i < hyps.length; i++) {
    if (refs[i].length === 0) throw new DataError(`word ${i} has no reference sequences; give at least one per word`);
    const { index, distance } = bestReference(hyps[i], refs[i]);
    errors += distance;
    length += refs[i][index].length;
  }
  if (length === 0) throw new DataError('every chosen reference is empty, so the error rate is undefined (0/0)');
  return errors / length;
}

/**
 * Word error rate: the share of words whose hypothesis equals none of its references, token for token.
 * DataError when the lists differ in length or are empty, or when a word has no reference.
 */
export function wordErrorRate(
  hyps: readonly (readonly string[])[],
  refs: readonly (readonly (readonly string[])[])[],
): number {
  checkLengths(hyps, refs);
  let wrong = 0;
  for (let i = 0; i < hyps.length; i++) {
    if (refs[i].length === 0) throw new DataError(`word ${i} has no reference sequences; give at least one per word`);
    const hyp = hyps[i];
    const right = refs[i].some((r) => r.length === hyp.length && r.every((t, j) => t === hyp[j]));
    if (!right) wrong++;
  }
  return wrong / hyps.length;
}
