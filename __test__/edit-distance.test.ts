import { describe, expect, it } from 'vitest';
import { DataError } from '../src/errors.js';
import { bestReference, editDistance, phonemeErrorRate, wordErrorRate } from '../src/metrics/edit-distance.js';
import { Rng } from '../src/util/rng.js';

/** The textbook recursive definition, exponential but obviously right for short sequences. */
function naive<T>(a: readonly T[], b: readonly T[]): number {
  if (a.length === 0) return b.length;
  if (b.length === 0) return a.length;
  const cost = a[a.length - 1] === b[b.length - 1] ? 0 : 1;
  return Math.min(
    naive(a.slice(0, -1), b) + 1,
    naive(a, b.slice(0, -1)) + 1,
    naive(a.slice(0, -1), b.slice(0, -1)) + cost,
  );
}

const chars = (s: string) => [...s];

describe('editDistance', () => {
  it('matches hand-computed cases', () => {
    // kitten → sitten (k→s) → sittin (e→i) → sitting (+g)
    expect(editDistance(chars('kitten'), chars('sitting'))).toBe(3);
    expect(editDistance(chars('flaw'), chars('lawn'))).toBe(2);
    expect(editDistance(chars('abc'), chars('abc'))).toBe(0);
    expect(editDistance(['K', 'AE', 'T'], ['K', 'AA', 'T'])).toBe(1);
    expect(editDistance(['AB'], ['A', 'B'])).toBe(2); // tokens, not characters
  });

  it('is the other length against an empty sequence', () => {
    for (let n = 0; n <= 5; n++) {
      const s = Array.from({ length: n }, (_, i) => i);
      expect(editDistance([], s)).toBe(n);
      expect(editDistance(s, [])).toBe(n);
    }
  });

  it('is symmetric', () => {
    const rng = new Rng(3);
    for (let t = 0; t < 100; t++) {
      const a = Array.from({ length: rng.int(8) }, () => rng.int(3));
      const b = Array.from({ length: rng.int(8) }, () => rng.int(3));
      expect(editDistance(a, b)).toBe(editDistance(b, a));
    }
  });

  it('agrees with the recursive definition on random short sequences', () => {
    const rng = new Rng(42);
    for (let t = 0; t < 300; t++) {
      const a = Array.from({ length: rng.int(7) }, () => 'xyz'[rng.int(3)]);
      const b = Array.from({ length: rng.int(7) }, () => 'xyz'[rng.int(3)]);
      expect(editDistance(a, b), `${a.join('')} vs ${b.join('')}`).toBe(naive(a, b));
    }
  });
});

describe('phonemeErrorRate / wordErrorRate', () => {
  it('pools errors over words and divides by total reference length', () => {
    const hyps = [
      ['K', 'AE', 'T'],
      ['D', 'AO'],
    ];
    const refs = [[['K', 'AE', 'T']], [['D', 'AO', 'G']]];
    // 0 + 1 errors over 3 + 3 reference phonemes (a mean of per-word rates would be 1/6 too here, so
    // also check a case where they differ).
    expect(phonemeErrorRate(hyps, refs)).toBeCloseTo(1 / 6, 12);
    const long = [[['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J']], [['X']]];
    // 0 errors / 10 and 1 error / 1: pooled 1/11, not the mean (0 + 1) / 2.
    expect(phonemeErrorRate([long[0][0], []], long)).toBeCloseTo(1 / 11, 12);
    expect(wordErrorRate(hyps, refs)).toBe(0.5);
  });

  it('scores each word against its closest reference', () => {
    const hyps = [['T', 'AH', 'M', 'AA', 'T', 'OW']];
    const refs = [
      [
        ['T', 'AH', 'M', 'EY', 'T', 'OW'],
        ['T', 'AH', 'M', 'AA', 'T', 'OW'],
      ],
    ];
    expect(phonemeErrorRate(hyps, refs)).toBe(0);
    expect(wordErrorRate(hyps, refs)).toBe(0);
    expect(bestReference(hyps[0], refs[0])).toEqual({ index: 1, distance: 0 });
    // A hypothesis matching neither: 1 substitution from each, first listed wins among equal lengths.
    const off = [['T', 'AH', 'M', 'IY', 'T', 'OW']];
    expect(bestReference(off[0], refs[0])).toEqual({ index: 0, distance: 1 });
    expect(phonemeErrorRate(off, refs)).toBeCloseTo(1 / 6, 12);
    expect(wordErrorRate(off, refs)).toBe(1);
  });

  it('breaks distance ties towards the shorter reference', () => {
    // [A B] is 1 edit from both [A B C] and [A]: the shorter one is used, so PER = 1/1, not 1/3.
    const refs = [[['A', 'B', 'C'], ['A']]];
    expect(bestReference(['A', 'B'], refs[0])).toEqual({ index: 1, distance: 1 });
    expect(phonemeErrorRate([['A', 'B']], refs)).toBe(1);
    // Order of the references does not matter.
    expect(phonemeErrorRate([['A', 'B']], [[['A'], ['A', 'B', 'C']]])).toBe(1);
  });

  it('rejects unusable input with a DataError', () => {
    expect(() => phonemeErrorRate([['A']], [])).toThrow(DataError);
    expect(() => wordErrorRate([], [[['A']]])).toThrow(/1 reference lists/);
    expect(() => phonemeErrorRate([], [])).toThrow(/no words/);
    expect(() => wordErrorRate([], [])).toThrow(DataError);
    expect(() => phonemeErrorRate([['A'], ['B']], [[['A']], []])).toThrow(/word 1 has no reference/);
    expect(() => wordErrorRate([['A']], [[]])).toThrow(/word 0 has no reference/);
    expect(() => phonemeErrorRate([[]], [[[]]])).toThrow(/0\/0/);
    expect(() => bestReference(['A'], [])).toThrow(DataError);
  });
});
