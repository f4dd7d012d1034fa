/**
 * Corpus BLEU and exact match against values computed by hand: the n-gram counts of each example are
 * written out next to it.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, DataError } from '../src/errors.js';
import { bleuStatistics, closestReferenceLength, corpusBleu, exactMatch } from '../src/metrics/bleu.js';

const w = (s: string) => (s === '' ? [] : s.split(' '));

describe('corpus BLEU', () => {
  it('clips each candidate n-gram to its largest count in any one reference (Papineni et al.’s example)', () => {
    // cand "the the the the the the the" (7 words); refs R1 "the cat is on the mat" (6), R2 "there is a
    // cat on the mat" (7).
    //   1-grams: {the: 7}; "the" occurs 2× in R1, 1× in R2 → clipped to 2 → p1 = 2/7
    //   2-grams: {the the: 6}, in no reference → 0/6; 3-grams 0/5; 4-grams 0/4
    //   c = 7, closest reference length 7 (R2, distance 0) → r = 7, BP = 1
    // BLEU-4 = 0 (a zero precision, no smoothing); BLEU-1 = 2/7.
    const cand = [w('the the the the the the the')];
    const refs = [[w('the cat is on the mat'), w('there is a cat on the mat')]];
    const s = bleuStatistics(cand, refs);
    expect(s.matches).toEqual([2, 0, 0, 0]);
    expect(s.totals).toEqual([7, 6, 5, 4]);
    expect(s.candidateLength).toBe(7);
    expect(s.referenceLength).toBe(7);
    expect(s.brevityPenalty).toBe(1);
    expect(s.bleu).toBe(0);
    expect(corpusBleu(cand, refs, { maxN: 1 })).toBeCloseTo(2 / 7, 15);

    // "the the the the" vs "the cat": {the: 4} clipped to 1 → p1 = 1/4; c = 4 > r = 2 → BP = 1.
    expect(corpusBleu([w('the the the the')], [[w('the cat')]], { maxN: 1 })).toBe(0.25);
    // The clip is the maximum over references, not their sum: {the: 2} vs "the cat" and "the dog"
    // (1 each) → 1/2.
    expect(bleuStatistics([w('the the')], [[w('the cat'), w('the dog')]], { maxN: 1 }).matches).toEqual([1]);
  });

  it('pools counts over the corpus before dividing (a zero sentence does not zero the corpus)', () => {
    // S1: cand "the cat sat on the mat" (6); refs R1 "the cat is on the mat" (6), R2 "there is a cat on the mat" (7)
    //   1-grams: the×2 (R1 has 2) → 2, cat 1, sat 0, on 1, mat 1               → 5/6
    //   2-grams: the cat ✓(R1), cat sat ✗, sat on ✗, on the ✓, the mat ✓          → 3/5
    //   3-grams: the cat sat ✗, cat sat on ✗, sat on the ✗, on the mat ✓          → 1/4
    //   4-grams: the cat sat on ✗, cat sat on the ✗, sat on the mat ✗              → 0/3
    //   closest reference length 6 (R1)
    // S2: cand "a bag on the top left" = its only reference: 6/6, 5/5, 4/4, 3/3, r = 6
    // Corpus: p = 11/12, 8/10, 5/8, 3/6; c = r = 12, BP = 1
    // BLEU = (11/12 · 4/5 · 5/8 · 1/2)^(1/4) = (220/960)^(1/4) = (11/48)^(1/4) ≈ 0.691891
    const cands = [w('the cat sat on the mat'), w('a bag on the top left')];
    const refs = [[w('the cat is on the mat'), w('there is a cat on the mat')], [w('a bag on the top left')]];
    const s = bleuStatistics(cands, refs);
    expect(s.matches).toEqual([11, 8, 5, 3]);
    expect(s.totals).toEqual([12, 10, 8, 6]);
    expect(s.precisions).toEqual([11 / 12, 8 / 10, 5 / 8, 3 / 6]);
    expect(s.candidateLength).toBe(12);
    expect(s.referenceLength).toBe(12);
    expect(s.bleu).toBeCloseTo((11 / 48) ** 0.25, 14);
    expect(s.bleu).toBeCloseTo(0.691891, 6);
    // S1 on its own scores 0 (no 4-gram matches), S2 on its own 1.
    expect(corpusBleu(cands.slice(0, 1), refs.slice(0, 1))).toBe(0);
    expect(corpusBleu(cands.slice(1), refs.slice(1))).toBe(1);
  });

  it('applies the brevity penalty exp(1 − r/c) when the candidates are shorter, summing r over sentences', () => {
    // cand "the cat sat on the mat" (6), ref "the cat sat on the mat today" (7): every candidate n-gram is
    // in the reference (the×2 in both): 6/6, 5/5, 4/4, 3/3. c = 6 < r = 7 → BLEU = exp(1 − 7/6) = exp(−1/6).
    const cand = w('the cat sat on the mat');
    const ref = w('the cat sat on the mat today');
    const s = bleuStatistics([cand], [[ref]]);
    expect(s.precisions).toEqual([1, 1, 1, 1]);
    expect(s.brevityPenalty).toBeCloseTo(Math.exp(-1 / 6), 15);
    expect(s.bleu).toBeCloseTo(0.8464817248906141, 14);
    // With a second, perfect 6-word sentence: c = 12, r = 7 + 6 = 13 → exp(1 − 13/12) = exp(−1/12).
    const two = bleuStatistics([cand, w('a bag on the top left')], [[ref], [w('a bag on the top left')]]);
    expect(two.candidateLength).toBe(12);
    expect(two.referenceLength).toBe(13);
    expect(two.bleu).toBeCloseTo(Math.exp(-1 / 12), 14);
    // A candidate longer than its reference is not penalised (its precisions are, by the extra n-grams).
    expect(bleuStatistics([ref], [[cand]]).brevityPenalty).toBe(1);
  });

  it('takes the closest reference length, the shorter one on a tie', () => {
    // cand "a b c d e" (5); refs "a b c d" (4) and "a b c d e f" (6) are both at distance 1 → r = 4, so
    // c = 5 > r and BP = 1. All candidate n-grams are in the 6-word reference: 5/5, 4/4, 3/3, 2/2 → BLEU = 1.
    // (Taking the longer, r = 6, would give exp(1 − 6/5) ≈ 0.8187.)
    const cand = [w('a b c d e')];
    for (const refs of [
      [w('a b c d'), w('a b c d e f')],
      [w('a b c d e f'), w('a b c d')],
    ]) {
      const s = bleuStatistics(cand, [refs]);
      expect(s.referenceLength).toBe(4);
      expect(s.bleu).toBe(1);
    }
    expect(closestReferenceLength(5, [w('a b c d e f'), w('a b c d')])).toBe(4);
    expect(closestReferenceLength(5, [w('a b c d e f g'), w('a b'), w('a b c d e f')])).toBe(6);
    expect(closestReferenceLength(3, [w('a'), w('a b c d e')])).toBe(1);
  });

  it('is 1 for a perfect corpus and 0 without smoothing when an order has no n-gram at all', () => {
    const cands = [w('a bag on the top left'), w('a coat in the bottom right corner and a dress above it')];
    expect(
      corpusBleu(
        cands,
        cands.map((c) => [w('something else'), c]),
      ),
    ).toBe(1);
    // "a bag" has no 3- or 4-grams: BLEU-4 is 0 though the caption is exactly right; BLEU-2 is 1.
    expect(corpusBleu([w('a bag')], [[w('a bag')]])).toBe(0);
    expect(corpusBleu([w('a bag')], [[w('a bag')]], { maxN: 2 })).toBe(1);
    // An empty candidate: c = 0, nothing matches, BP = 0.
    const empty = bleuStatistics([[]], [[w('a bag')]]);
    expect(empty.bleu).toBe(0);
    expect(empty.brevityPenalty).toBe(0);
    // Tokens are compared exactly and n-grams are not confused by tokens holding spaces.
    expect(corpusBleu([['a b', 'c']], [[['a', 'b c']]], { maxN: 1 })).toBe(0);
    expect(bleuStatistics([['a b', 'c']], [[['a', 'b c']]], { maxN: 2 }).matches).toEqual([0, 0]);
  });

  it('refuses an empty corpus, mismatched lists, a sentence without references and a bad maxN', () => {
    expect(() => corpusBleu([], [])).toThrow(DataError);
    expect(() => corpusBleu([], [])).toThrow(/empty/);
    expect(() => corpusBleu([w('a')], [])).toThrow(/1 candidates but 0 reference lists/);
    expect(() => corpusBleu([w('a')], [[]])).toThrow(/sentence 0 has no references/);
    for (const maxN of [0, -1, 1.5, Number.NaN]) {
      expect(() => corpusBleu([w('a')], [[w('a')]], { maxN })).toThrow(ConfigError);
    }
  });
});

describe('exact match', () => {
  it('is the share of candidates equal to one of their references', () => {
    const cands = [w('a bag on the top left'), w('a bag in the top left corner'), w('a bag on the top')];
    const refs = [
      [w('a bag on the top left'), w('a bag in the top left corner')],
      [w('a bag on the top left'), w('a bag in the top left corner')],
      [w('a bag on the top left')],
    ];
    expect(exactMatch(cands, refs)).toBeCloseTo(2 / 3, 15);
    expect(exactMatch([w('a bag on the top left extra')], [[w('a bag on the top left')]])).toBe(0);
    expect(exactMatch([[]], [[[]]])).toBe(1);
    expect(() => exactMatch([], [])).toThrow(DataError);
    expect(() => exactMatch([w('a')], [[]])).toThrow(DataError);
    expect(() => exactMatch([w('a')], [[w('a')], [w('b')]])).toThrow(DataError);
  });
});
