import { describe, expect, it } from 'vitest';
import { BOS, EOS, PAD, SPECIAL_TOKENS, TokenVocabulary } from '../src/data/token-vocab.js';
import { CheckpointError, ConfigError, DataError, VocabularyError } from '../src/errors.js';
import { thrown } from './helpers/thrown.js';

const seqs = [
  ['K', 'AE', 'T'],
  ['D', 'AO', 'G'],
  ['AE', 'K', 'T'],
];

describe('TokenVocabulary', () => {
  it('puts the specials at 0, 1, 2 and the sorted distinct symbols after them', () => {
    expect([PAD, BOS, EOS]).toEqual([0, 1, 2]);
    const v = TokenVocabulary.fromSequences(seqs);
    expect(v.tokens).toEqual(['<pad>', '<s>', '</s>', 'AE', 'AO', 'D', 'G', 'K', 'T']);
    expect(v.size).toBe(9);
    expect(v.has('AE')).toBe(true);
    expect(v.has('<s>')).toBe(false);
    // The same set of symbols in another order gives the same ids.
    expect(TokenVocabulary.fromSequences([...seqs].reverse().map((s) => [...s].reverse())).tokens).toEqual(v.tokens);
  });

  it('sorts by code point, not UTF-16 unit', () => {
    const v = TokenVocabulary.fromSequences([['😀', '\uff01', 'é', 'b', 'ab', 'a']]);
    // U+FF01 sorts before U+1F600 by code point; UTF-16 units (0xD83D…) would put it after.
    expect(v.tokens.slice(3)).toEqual(['a', 'ab', 'b', 'é', '\uff01', '😀']);
  });

  it('encodes and decodes, without adding or keeping specials', () => {
    const v = TokenVocabulary.fromSequences(seqs);
    const ids = v.encode(['K', 'AE', 'T']);
    expect(ids).toBeInstanceOf(Uint32Array);
    expect([...ids]).toEqual([7, 3, 8]);
    expect(v.decode(ids)).toEqual(['K', 'AE', 'T']);
    expect(v.decode([BOS, 7, PAD, 3, 8, EOS, PAD])).toEqual(['K', 'AE', 'T']);
    expect(v.encode([])).toHaveLength(0);
  });

  it('throws a VocabularyError listing unknown symbols, or skips them', () => {
    const v = TokenVocabulary.fromSequences(seqs);
    const err = thrown(() => v.encode(['K', 'ZH', 'AE', 'Q', 'ZH', '<s>']));
    expect(err).toBeInstanceOf(VocabularyError);
    // Each unknown once, in order of appearance; the spelled-out special is unknown too.
    expect((err as VocabularyError).unknown).toEqual(['ZH', 'Q', '<s>']);
    expect(err.message).toMatch(/"ZH".*"Q".*'skip'/);
    expect([...v.encode(['K', 'ZH', 'AE', '<s>'], 'skip')]).toEqual([7, 3]);
    expect(() => v.encode(['K'], 'replace' as 'skip')).toThrow(ConfigError);
  });

  it('rejects ids outside the vocabulary when decoding', () => {
    const v = TokenVocabulary.fromSequences(seqs);
    expect(() => v.decode([3, 9])).toThrow(/id 9 at position 1.*0\.\.8/);
    expect(() => v.decode([-1])).toThrow(DataError);
    expect(() => v.decode([1.5])).toThrow(DataError);
  });

  it('refuses data it cannot build a vocabulary from', () => {
    expect(() => TokenVocabulary.fromSequences([['A', '</s>']])).toThrow(/sequence 0.*special token/);
    expect(() => TokenVocabulary.fromSequences([['A'], ['']])).toThrow(/sequence 1.*empty/);
    expect(() => TokenVocabulary.fromSequences([[], []])).toThrow(DataError);
    expect(() => TokenVocabulary.fromSequences([])).toThrow(/no symbols/);
  });

  it('round-trips through JSON, keeping the stored order', () => {
    const v = TokenVocabulary.fromSequences(seqs);
    const back = TokenVocabulary.fromJSON(JSON.stringify(v));
    expect(back.tokens).toEqual(v.tokens);
    expect([...back.encode(['T', 'AO'])]).toEqual([...v.encode(['T', 'AO'])]);
    // An unsorted stored list is kept as is: a model's ids depend on it.
    const custom = TokenVocabulary.fromJSON({ tokens: [...SPECIAL_TOKENS, 'Z', 'A'] });
    expect([...custom.encode(['A', 'Z'])]).toEqual([4, 3]);
  });

  it('rejects malformed JSON with a CheckpointError', () => {
    const bad: unknown[] = [
      'not json',
      null,
      {},
      { tokens: 'abc' },
      { tokens: ['<s>', '<pad>', '</s>', 'A'] },
      { tokens: ['<pad>', '<s>', 'A'] },
      { tokens: [...SPECIAL_TOKENS, 'A', 'A'] },
      { tokens: [...SPECIAL_TOKENS, 'A', '<s>'] },
      { tokens: [...SPECIAL_TOKENS, ''] },
      { tokens: [...SPECIAL_TOKENS, 3] },
      { tokens: [...SPECIAL_TOKENS] },
    ];
    for (const json of bad) {
      expect(() => TokenVocabulary.fromJSON(json), JSON.stringify(json)).toThrow(CheckpointError);
    }
    expect(() => TokenVocabulary.fromJSON({ tokens: [...SPECIAL_TOKENS, 'A', 'A'] })).toThrow(/duplicate token "A"/);
    expect(() => TokenVocabulary.fromJSON({ tokens: ['<pad>', '<s>', 'A'] })).toThrow(/id 2 must be "<\/s>"/);
  });
});
