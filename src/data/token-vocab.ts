/**
 * Token vocabulary of a sequence-to-sequence model (letters in, phonemes out, or any other token
 * streams): three special tokens with fixed ids, then the sorted distinct symbols of the training data.
 *
 *   id 0 `<pad>` ({@link PAD}): fills batches of unequal length; never a real position.
 *   id 1 `<s>`   ({@link BOS}): start of sequence, the decoder's first input.
 *   id 2 `</s>`  ({@link EOS}): end of sequence, what the decoder emits to stop.
 *
 * The fixed ids let model code refer to the specials by constant, independently of the data. Symbols
 * follow in code-point order of their text (compared as UTF-8 bytes, which orders the same way), so
 * the vocabulary is a pure function of the set of symbols and the same on every machine.
 *
 * Specials are never spelled in the data: callers add them by id. A data sequence containing the text
 * `<s>` etc. is rejected when building the vocabulary, and `encode` treats such text as unknown, so a
 * literal token can never be confused with a structural one.
 */
import { CheckpointError, ConfigError, DataError, VocabularyError } from '../errors.js';

/** Id of the padding token `<pad>`. */
export const PAD = 0;
/** Id of the start-of-sequence token `<s>`. */
export const BOS = 1;
/** Id of the end-of-sequence token `</s>`. */
export const EOS = 2;

/** The special tokens' texts, at their ids. */
export const SPECIAL_TOKENS: readonly string[] = Object.freeze(['<pad>', '<s>', '</s>']);

/** What encoding does with a token not in the vocabulary: throw ('error') or drop it ('skip'). */
export type TokenUnknownPolicy = 'error' | 'skip';

const POLICIES: readonly TokenUnknownPolicy[] = ['error', 'skip'];

/** How many distinct unknown symbols an error message quotes before summarising the rest. */
const MAX_LISTED_UNKNOWN = 10;

/** The serialised form, e.g. JSON text in a checkpoint's metadata. */
export interface TokenVocabularyJSON {
  /** All tokens in id order, the three specials first. */
  tokens: string[];
}

function byCodePoints(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function quoteList(list: readonly string[]): string {
  const shown = list.slice(0, MAX_LISTED_UNKNOWN).map((t) => JSON.stringify(t));
  const more = list.length > MAX_LISTED_UNKNOWN ? ` and ${list.length - MAX_LISTED_UNKNOWN} more` : '';
  return `${shown.join(', ')}${more}`;
}

/** A vocabulary of whole tokens (words, phonemes) with the specials `<pad>`, `<s>`, `</s>` at ids 0–2. */
export class TokenVocabulary {
  /** All tokens in id order: `<pad>`, `<s>`, `</s>`, then the symbols. */
  readonly tokens: readonly string[];
  /** Ids of the symbols only (not the specials). */
  private readonly ids: Map<string, number>;

  private constructor(tokens: string[]) {
    this.tokens = Object.freeze(tokens);
    this.ids = new Map();
    for (let i = SPECIAL_TOKENS.length; i < tokens.length; i++) this.ids.set(tokens[i], i);
  }

  /**
   * The vocabulary of the symbols in `seqs`. DataError for an empty symbol, a symbol spelled like a
   * special token, or data without any symbol.
   */
  static fromSequences(seqs: readonly (readonly string[])[]): TokenVocabulary {
    const symbols = new Set<string>();
    for (const [i, seq] of seqs.entries()) {
      for (const tok of seq) {
        if (typeof tok !== 'string' || tok.length === 0) {
          throw new DataError(`sequence ${i} contains an empty or non-string token; tokens must be non-empty text`);
        }
        if (SPECIAL_TOKENS.includes(tok)) {
          throw new DataError(
            `sequence ${i} contains ${JSON.stringify(tok)}, the text of a special token; ` +
              'specials are added by id (PAD, BOS, EOS), so remove or rename it in the data',
          );
        }
        symbols.add(tok);
      }
    }
    if (symbols.size === 0) {
      throw new DataError(`no symbols in ${seqs.length} sequence(s); a token vocabulary needs at least one`);
    }
    return new TokenVocabulary([...SPECIAL_TOKENS, ...[...symbols].sort(byCodePoints)]);
  }

  /**
   * Restores a vocabulary saved with {@link toJSON}, given as the object or its JSON text. The stored
   * order is kept (a model's ids depend on it). Malformed input (not JSON, no `tokens` array, specials
   * missing or misplaced, empty or duplicate tokens, no symbol) is a CheckpointError.
   */
  static fromJSON(json: unknown): TokenVocabulary {
    const fail = (problem: string) => new CheckpointError(`invalid token vocabulary: ${problem}`);
    let value = json;
    if (typeof value === 'string') {
      try {
        value = JSON.parse(value);
      } catch {
        throw fail('not JSON');
      }
    }
    const tokens = (value as Partial<TokenVocabularyJSON> | null)?.tokens;
    if (!Array.isArray(tokens)) throw fail('expected an object with a "tokens" array');
    for (const [i, tok] of tokens.entries()) {
      if (typeof tok !== 'string' || tok.length === 0) throw fail(`entry ${i} (${JSON.stringify(tok)}) is not text`);
    }
    for (const [i, special] of SPECIAL_TOKENS.entries()) {
      if (tokens[i] !== special) {
        throw fail(`id ${i} must be ${JSON.stringify(special)}, found ${JSON.stringify(tokens[i])}`);
      }
    }
    const seen = new Set<string>();
    for (const tok of tokens) {
      if (seen.has(tok)) throw fail(`duplicate token ${JSON.stringify(tok)}`);
      seen.add(tok);
    }
    if (tokens.length === SPECIAL_TOKENS.length) throw fail('no symbols after the special tokens');
    return new TokenVocabulary([...tokens]);
  }

  /** Number of ids, specials included. */
  get size(): number {
    return this.tokens.length;
  }

  /** Whether `token` is a symbol (specials are not). */
  has(token: string): boolean {
    return this.ids.has(token);
  }

  /** The ids of `tokens` (no BOS/EOS added); unknown symbols throw (`'error'`) or are dropped (`'skip'`). */
  encode(tokens: readonly string[], unknown: TokenUnknownPolicy = 'error'): Uint32Array {
    if (!POLICIES.includes(unknown)) {
      throw new ConfigError(`unknown policy ${JSON.stringify(unknown)} for unseen symbols; use ${POLICIES.join(', ')}`);
    }
    const out = new Uint32Array(tokens.length);
    const missing = new Set<string>();
    let n = 0;
    for (const tok of tokens) {
      const id = this.ids.get(tok);
      if (id !== undefined) out[n++] = id;
      else if (unknown === 'error') missing.add(tok);
    }
    if (missing.size > 0) {
      const list = [...missing];
      throw new VocabularyError(
        `${list.length} symbol(s) not in the vocabulary: ${quoteList(list)}; ` +
          "use the 'skip' policy to drop them, or rebuild the vocabulary from data that contains them",
        list,
      );
    }
    return out.slice(0, n);
  }

  /** The symbols of `ids`, special tokens dropped; DataError for an id outside the vocabulary. */
  decode(ids: ArrayLike<number>): string[] {
    const out: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= this.size) {
        throw new DataError(`id ${id} at position ${i} is outside the vocabulary (ids 0..${this.size - 1})`);
      }
      if (id >= SPECIAL_TOKENS.length) out.push(this.tokens[id]);
    }
    return out;
  }

  /** A plain-JSON form of the vocabulary, for {@link TokenVocabulary.fromJSON}. */
  toJSON(): TokenVocabularyJSON {
    return { tokens: [...this.tokens] };
  }
}
