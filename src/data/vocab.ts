/**
 * Character vocabulary of a language model: the sorted distinct characters of its training text.
 *
 * A "character" is a Unicode code point, not a UTF-16 unit, so emoji and other characters outside
 * the Basic Multilingual Plane are one token and never split into unpaired surrogates. Ids are the
 * positions in code-point order, which makes the vocabulary a pure function of the set of characters
 * (the same corpus gives the same ids on every machine) and lets it be stored as that list.
 *
 * Characters unseen at training time have no embedding row, so text to encode (a sampling prompt,
 * an evaluation file) may only contain vocabulary characters. What happens otherwise is the
 * {@link UnknownPolicy}:
 *   - `'error'` (default): throw a VocabularyError listing the unknown characters. Silent changes to
 *     a prompt or to evaluation text would make results misleading, so this is opt-out, not opt-in.
 *   - `'skip'`: drop them; the rest of the text is encoded as is.
 *   - `'replace'`: encode each as {@link Vocabulary.replacement}: a space when the vocabulary has one
 *     (the most neutral character of natural-language text), else its first character.
 */
import { CheckpointError, ConfigError, DataError, VocabularyError } from '../errors.js';

/** What encoding does with a character not in the vocabulary: throw ('error'), drop it ('skip') or replace it ('replace'). */
export type UnknownPolicy = 'error' | 'skip' | 'replace';

export const UNKNOWN_POLICIES: readonly UnknownPolicy[] = ['error', 'skip', 'replace'];

/** The serialised form, e.g. stored as JSON text in a checkpoint's metadata. */
export interface VocabularyJSON {
  /** The characters in id order. */
  chars: string[];
}

/** How many distinct unknown characters an error message quotes before summarising the rest. */
const MAX_LISTED_UNKNOWN = 10;

function byCodePoint(a: string, b: string): number {
  return (a.codePointAt(0) as number) - (b.codePointAt(0) as number);
}

/** The characters a {@link CharLM} reads and writes, each with an integer id. */
export class Vocabulary {
  /** The characters in id order. */
  readonly chars: readonly string[];
  /** What the `'replace'` policy encodes an unknown character as. */
  readonly replacement: string;
  private readonly ids: Map<string, number>;

  private constructor(chars: string[]) {
    this.chars = Object.freeze(chars);
    this.ids = new Map(chars.map((ch, i) => [ch, i]));
    this.replacement = this.ids.has(' ') ? ' ' : chars[0];
  }

  /** The vocabulary of a training text; DataError if it has fewer than 2 distinct characters. */
  static fromText(text: string): Vocabulary {
    const chars = [...new Set(text)].sort(byCodePoint);
    if (chars.length < 2) {
      throw new DataError(
        `corpus needs at least 2 distinct characters to train a language model, but it has ${chars.length}` +
          (text.length === 0 ? ' (it is empty)' : ''),
      );
    }
    return new Vocabulary(chars);
  }

  /**
   * Restores a vocabulary saved with {@link toJSON}, given as the object or its JSON text. The stored
   * order is kept (the model's ids depend on it). A malformed value is a CheckpointError, since it
   * comes from a checkpoint.
   */
  static fromJSON(json: unknown): Vocabulary {
    const fail = (problem: string) => new CheckpointError(`invalid vocabulary: ${problem}`);
    let value = json;
    if (typeof value === 'string') {
      try {
        value = JSON.parse(value);
      } catch {
        throw fail('not JSON');
      }
    }
    const chars = (value as Partial<VocabularyJSON> | null)?.chars;
    if (!Array.isArray(chars)) throw fail('expected an object with a "chars" array');
    for (const ch of chars) {
      if (typeof ch !== 'string' || Array.from(ch).length !== 1) {
        throw fail(`entry ${JSON.stringify(ch)} is not a single character`);
      }
    }
    if (new Set(chars).size !== chars.length) throw fail('duplicate characters');
    if (chars.length < 2) throw fail(`${chars.length} characters, at least 2 needed`);
    return new Vocabulary([...chars]);
  }

  /** Number of characters. */
  get size(): number {
    return this.chars.length;
  }

  /** Whether `ch` is in the vocabulary. */
  has(ch: string): boolean {
    return this.ids.has(ch);
  }

  /** The ids of `text`'s characters; characters outside the vocabulary are handled per `policy`. */
  encode(text: string, policy: UnknownPolicy = 'error'): Uint32Array {
    if (!UNKNOWN_POLICIES.includes(policy)) {
      throw new ConfigError(
        `unknown policy ${JSON.stringify(policy)} for unseen characters; use ${UNKNOWN_POLICIES.join(', ')}`,
      );
    }
    const out = new Uint32Array(text.length); // UTF-16 length bounds the number of code points
    const unknown = new Set<string>();
    const replacementId = this.ids.get(this.replacement) as number;
    let n = 0;
    for (const ch of text) {
      const id = this.ids.get(ch);
      if (id !== undefined) out[n++] = id;
      else if (policy === 'replace') out[n++] = replacementId;
      else if (policy === 'error') unknown.add(ch);
    }
    if (unknown.size > 0) {
      const list = [...unknown];
      const shown = list.slice(0, MAX_LISTED_UNKNOWN).map((ch) => JSON.stringify(ch));
      const more = list.length > MAX_LISTED_UNKNOWN ? ` and ${list.length - MAX_LISTED_UNKNOWN} more` : '';
      throw new VocabularyError(
        `text contains ${list.length} character(s) not in the model's vocabulary: ${shown.join(', ')}${more}; ` +
          `use the 'skip' policy to drop them or 'replace' to encode them as ${JSON.stringify(this.replacement)}`,
        list,
      );
    }
    return out.slice(0, n);
  }

  /** The text of `ids`; DataError for an id outside the vocabulary. */
  decode(ids: ArrayLike<number>): string {
    const parts = new Array<string>(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const ch = this.chars[ids[i]];
      if (ch === undefined) {
        throw new DataError(`id ${ids[i]} at position ${i} is outside the vocabulary (ids 0..${this.size - 1})`);
      }
      parts[i] = ch;
    }
    return parts.join('');
  }

  /** A plain-JSON form of the vocabulary, for {@link Vocabulary.fromJSON}. */
  toJSON(): VocabularyJSON {
    return { chars: [...this.chars] };
  }
}
