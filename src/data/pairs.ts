/**
 * Sequence pairs from a tab-separated file, one `source<TAB>target` per line, for grapheme-to-phoneme
 * data other than CMUdict (another language's lexicon, a held-out test set) or any token-to-token task:
 *
 *   cat	K AE T
 *   read	R IY D
 *   read	R EH D
 *
 * Tokens:
 *   - The target is always a sequence of tokens separated by spaces (runs of spaces count as one;
 *     leading and trailing spaces are ignored), so multi-letter symbols like `AE` or `CH` are one token.
 *   - The source, by default (`sourceChars: true`, the natural form for G2P), is a word written as is and
 *     split into characters (Unicode code points). A space in such a source is refused rather than
 *     guessed at (one letter? a word boundary?): pass `sourceChars: false` for sources that are already
 *     space-separated tokens, which are then read like targets.
 *
 * Lines with the same source are alternates (like CMUdict's `WORD(1)`) and are grouped into one
 * {@link PronEntry}, in order of first appearance; a repeated identical line adds nothing and is dropped.
 * `\r\n` line ends and a leading byte-order mark are accepted.
 *
 * Errors are DataErrors naming the file and line: an empty or blank line before the last pair (trailing
 * newlines are fine), a line with one column or more than two, an empty side, an empty file, a missing
 * or non-UTF-8 file.
 */
import { readFileSync } from 'node:fs';
import { DataError } from '../errors.js';
import type { PronEntry } from './cmudict.js';

/** How {@link loadPairsTsv} and {@link parsePairsTsv} tokenise the two columns. */
export interface PairsTsvOptions {
  /**
   * Split the source into characters (default true). When false, the source is space-separated tokens
   * like the target.
   */
  sourceChars?: boolean;
}

function tokens(side: string): string[] {
  return side.split(' ').filter((t) => t !== '');
}

/** Parses TSV text (see the module comment); `name` (a path or label) is quoted in errors. */
export function parsePairsTsv(text: string, name: string, opts: PairsTsvOptions = {}): PronEntry[] {
  const sourceChars = opts.sourceChars ?? true;
  if (text.startsWith('\ufeff')) text = text.slice(1);
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  // Trailing newlines end the file; only blank lines before the last pair are errors.
  let end = lines.length;
  while (end > 0 && lines[end - 1].trim() === '') end--;
  if (end === 0) throw new DataError(`pairs file ${name} is empty; expected lines of source<TAB>target`);
  const groups = new Map<string, { letters: string[]; prons: string[][]; seen: Set<string> }>();
  for (let i = 0; i < end; i++) {
    const line = lines[i];
    const where = `${name} line ${i + 1}`;
    if (line.trim() === '') {
      throw new DataError(`${where} is empty; remove blank lines between pairs (only trailing newlines are allowed)`);
    }
    const cols = line.split('\t');
    if (cols.length !== 2) {
      throw new DataError(
        `${where} has ${cols.length} tab-separated column(s), expected 2 (source<TAB>target): ` +
          JSON.stringify(line.length > 80 ? `${line.slice(0, 80)}…` : line),
      );
    }
    const source = cols[0].trim();
    const target = tokens(cols[1]);
    if (source === '') throw new DataError(`${where} has an empty source (first column)`);
    if (target.length === 0) throw new DataError(`${where} has an empty target (second column)`);
    let letters: string[];
    if (sourceChars) {
      if (/\s/.test(source)) {
        throw new DataError(
          `${where}: source ${JSON.stringify(source)} contains whitespace, but sources are split into characters; ` +
            'pass { sourceChars: false } if sources are space-separated tokens',
        );
      }
      letters = [...source];
    } else {
      letters = tokens(source);
    }
    const word = sourceChars ? source : letters.join(' ');
    let group = groups.get(word);
    if (group === undefined) {
      group = { letters, prons: [], seen: new Set() };
      groups.set(word, group);
    }
    const key = target.join(' ');
    if (!group.seen.has(key)) {
      group.seen.add(key);
      group.prons.push(target);
    }
  }
  return [...groups].map(([word, g]) => ({ word, letters: g.letters, prons: g.prons }));
}

/** Reads and parses a UTF-8 TSV pairs file; DataError naming the path when missing or unreadable. */
export function loadPairsTsv(path: string, opts: PairsTsvOptions = {}): PronEntry[] {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DataError(`pairs file not found: ${path}`);
    if (code === 'EISDIR') throw new DataError(`${path} is a directory, not a pairs file`);
    throw new DataError(`cannot read pairs file ${path}: ${(err as Error).message}`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new DataError(`pairs file ${path} is not valid UTF-8 text`);
  }
  return parsePairsTsv(text, path, opts);
}
