/**
 * Caption canvases for image captioning ("Show and Tell", Vinyals et al. 2015): 56×56 grayscale
 * pictures built reproducibly from Fashion-MNIST, each holding 1–4 clothing items in the cells of a
 * 2×2 grid of 28×28 cells (empty cells allowed, drawn black), with English captions that name every
 * item and its place. A caption can only be right if the model sees the picture: it is determined by
 * the layout (which item in which cell) up to a choice among a few phrasings.
 *
 * Layout distribution, per canvas, from one seeded {@link Rng} (draws in this order):
 *   1. the number of items k, uniform in minItems..maxItems (default 1..4);
 *   2. the k occupied cells, a uniform k-subset of the four (empty cells are zeros);
 *   3. for each occupied cell in reading order (top left, top right, bottom left, bottom right), a
 *      source image drawn uniformly, with replacement, from the source split; the item's class is
 *      that image's label;
 *   4. the training caption, uniform among the layout's distinct phrasings.
 *
 * Train/test split by source image: {@link loadCaptionCanvases} builds training canvases only from
 * Fashion-MNIST's train split (60 000 images) and test canvases only from its test split (10 000), so
 * no image in a test canvas was ever seen in training (the two splits share no identical image). The
 * test split's generator is seeded with `seed XOR 0x9e3779b9`, so one seed gives unrelated layouts on
 * the two splits.
 *
 * Caption grammar (words are lower case, separated by single spaces, no punctuation; "t-shirt" is one
 * word):
 *
 *   caption  ::= item { "and" item }
 *   item     ::= noun place
 *   noun     ::= "a t-shirt" | "a pair of trousers" | "a pullover" | "a dress" | "a coat"
 *              | "a sandal" | "a shirt" | "a sneaker" | "a bag" | "an ankle boot"
 *                                                        (classes 0..9, see {@link CAPTION_NOUNS})
 *   place    ::= absolute | relative
 *   absolute ::= "on the" row column | "in the" row column "corner"
 *   row      ::= "top" | "bottom"
 *   column   ::= "left" | "right"
 *   relative ::= "above it" | "below it" | "to the left of it" | "to the right of it"
 *
 * "it" is the item named just before. The phrasings of a layout ({@link captionPhrasings}) are the
 * captions that also follow these rules, one for each choice of
 *   - order: items listed in reading order, or in its reverse (bottom right first);
 *   - form: every absolute place "on the …", or every one "in the … corner";
 *   - relative or not: if relative, each item after the first that shares a row or a column with the
 *     item before it is placed relative to that item; otherwise every place is absolute. (Items on a
 *     diagonal are always placed absolutely, and the first item always is.)
 * so a layout has at most 8 phrasings (2 for a single item), e.g. for a sneaker top left and a bag
 * bottom left:
 *
 *   a sneaker on the top left and a bag on the bottom left
 *   a sneaker in the top left corner and a bag below it
 *   a bag on the bottom left and a sneaker above it            …
 *
 * All of them are the references of the canvas for BLEU and exact match; one of them, drawn at random,
 * is the training target. {@link parseCaption} reads any caption of the grammar back into a layout.
 */
import { ConfigError, DataError, ShapeError } from '../errors.js';
import { Rng } from '../util/rng.js';
import { type FashionMnistOptions, type FashionMnistSplit, loadFashionMnist } from './fashion-mnist.js';
import { TokenVocabulary } from './token-vocab.js';

/** Side of a canvas in pixels. */
export const CANVAS_SIZE = 56;
/** Side of a grid cell (and of a Fashion-MNIST image) in pixels. */
export const CELL_SIZE = 28;
/** Cells in reading order: index 0 top left, 1 top right, 2 bottom left, 3 bottom right. */
export const CANVAS_CELLS: readonly string[] = Object.freeze(['top left', 'top right', 'bottom left', 'bottom right']);

/** The noun phrase of each Fashion-MNIST class (label order), as captions spell it. */
export const CAPTION_NOUNS: readonly string[] = Object.freeze([
  'a t-shirt',
  'a pair of trousers',
  'a pullover',
  'a dress',
  'a coat',
  'a sandal',
  'a shirt',
  'a sneaker',
  'a bag',
  'an ankle boot',
]);

/** Class id (0..9) per cell in reading order (TL, TR, BL, BR), `null` for an empty cell. */
export type CanvasLayout = readonly (number | null)[];

/** The images the canvases are cut from: `[n, 28, 28]` pixels and `[n]` labels in 0..9 (e.g. a {@link loadFashionMnist} split). */
export interface CanvasSource {
  images: Uint8Array;
  labels: Uint8Array;
  n: number;
}

/** How {@link makeCanvases} and {@link loadCaptionCanvases} draw canvases. */
export interface CanvasOptions {
  /** Number of canvases, an integer ≥ 1. */
  count: number;
  /** Seed of the layout, image and phrasing draws: an integer in 0..2³²−1. */
  seed: number;
  /** Fewest items on a canvas, 1..4 (default 1). */
  minItems?: number;
  /** Most items on a canvas, minItems..4 (default 4). */
  maxItems?: number;
}

/** One canvas of a caption data set: its layout, the images placed in it and its reference captions. */
export interface CaptionCanvas {
  /** Class id per cell (TL, TR, BL, BR), `null` where the cell is empty. */
  layout: (number | null)[];
  /** Index into the source of the image in each cell, `null` where the cell is empty. */
  sourceIndex: (number | null)[];
  /** Every phrasing of the layout, tokenised: the references. */
  captions: string[][];
  /** The phrasing drawn as the training target (one of `captions`). */
  caption: string[];
}

/** A caption data set: `n` 56×56 canvases with their layouts and reference captions. */
export interface CaptionCanvases {
  /** `[n, 56, 56]` row-major pixels, 0 = background, 255 = ink. */
  images: Uint8Array;
  n: number;
  size: typeof CANVAS_SIZE;
  canvases: CaptionCanvas[];
  /** The Fashion-MNIST split the images come from, when built by {@link loadCaptionCanvases}. */
  split?: FashionMnistSplit;
}

const CELL_PIXELS = CELL_SIZE * CELL_SIZE;
const CANVAS_PIXELS = CANVAS_SIZE * CANVAS_SIZE;
const TEST_SEED_SALT = 0x9e3779b9;
const NOUN_WORDS: readonly (readonly string[])[] = CAPTION_NOUNS.map((p) => p.split(' '));
const ROW_WORDS = ['top', 'bottom'];
const COLUMN_WORDS = ['left', 'right'];

function checkLayout(layout: CanvasLayout): void {
  if (!Array.isArray(layout) || layout.length !== 4) {
    throw new ShapeError(`a canvas layout lists 4 cells (TL, TR, BL, BR), got ${JSON.stringify(layout)}`);
  }
  for (const c of layout) {
    if (c !== null && !(Number.isInteger(c) && c >= 0 && c < CAPTION_NOUNS.length)) {
      throw new DataError(`a canvas layout holds class ids 0..9 or null, got ${JSON.stringify(layout)}`);
    }
  }
  if (layout.every((c) => c === null))
    throw new DataError('a canvas layout needs at least one item, got 4 empty cells');
}

/** The relative place of cell `to` seen from cell `from`, or null when they are on a diagonal. */
function relation(from: number, to: number): string | null {
  if (from >> 1 === to >> 1) return (to & 1) > (from & 1) ? 'to the right of it' : 'to the left of it';
  if ((from & 1) === (to & 1)) return to >> 1 > from >> 1 ? 'below it' : 'above it';
  return null;
}

function absolute(cell: number, corner: boolean): string {
  return corner ? `in the ${CANVAS_CELLS[cell]} corner` : `on the ${CANVAS_CELLS[cell]}`;
}

/**
 * Every phrasing of `layout` under the module's rules, tokenised, without repeats, in a fixed order
 * (reading order before reverse, "on the" before "in the … corner", absolute before relative).
 * ShapeError for a layout that is not 4 cells, DataError for a class id outside 0..9 or no item.
 */
export function captionPhrasings(layout: CanvasLayout): string[][] {
  checkLayout(layout);
  const cells = [0, 1, 2, 3].filter((c) => layout[c] !== null);
  const orders = cells.length > 1 ? [cells, [...cells].reverse()] : [cells];
  const seen = new Set<string>();
  const out: string[][] = [];
  for (const order of orders) {
    for (const corner of [false, true]) {
      for (const relative of [false, true]) {
        const parts = order.map((cell, i) => {
          const rel = relative && i > 0 ? relation(order[i - 1], cell) : null;
          return `${CAPTION_NOUNS[layout[cell] as number]} ${rel ?? absolute(cell, corner)}`;
        });
        const text = parts.join(' and ');
        if (!seen.has(text)) {
          seen.add(text);
          out.push(text.split(' '));
        }
      }
    }
  }
  return out;
}

/** Whether `words` continues with `want` at `pos`. */
function startsWith(words: readonly string[], pos: number, want: readonly string[]): boolean {
  return want.every((w, i) => words[pos + i] === w);
}

/**
 * The layout a caption describes, or null when `words` is not a caption of the grammar or is not
 * consistent (a relative place off the grid or without an item before it, two items in one cell).
 * Order and form rules are not enforced: any sentence of the grammar is read, so a model's caption
 * that mixes forms still yields its layout.
 */
export function parseCaption(words: readonly string[]): (number | null)[] | null {
  const layout: (number | null)[] = [null, null, null, null];
  let pos = 0;
  let prev = -1;
  while (pos < words.length || prev < 0) {
    if (prev >= 0) {
      if (words[pos] !== 'and') return null;
      pos++;
    }
    const cls = NOUN_WORDS.findIndex((noun) => startsWith(words, pos, noun));
    if (cls < 0) return null;
    pos += NOUN_WORDS[cls].length;
    let cell = -1;
    const row = ROW_WORDS.indexOf(words[pos + 2]);
    const column = COLUMN_WORDS.indexOf(words[pos + 3]);
    if ((words[pos] === 'on' || words[pos] === 'in') && words[pos + 1] === 'the' && row >= 0 && column >= 0) {
      cell = 2 * row + column;
      pos += 4;
      if (words[pos - 4] === 'in') {
        if (words[pos] !== 'corner') return null;
        pos++;
      }
    } else if (prev >= 0) {
      for (const candidate of [0, 1, 2, 3]) {
        const rel = relation(prev, candidate);
        if (candidate !== prev && rel !== null && startsWith(words, pos, rel.split(' '))) {
          cell = candidate;
          pos += rel.split(' ').length;
          break;
        }
      }
    }
    if (cell < 0 || layout[cell] !== null) return null;
    layout[cell] = cls;
    prev = cell;
  }
  return layout;
}

function checkCount(what: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < lo || v > hi) {
    throw new ConfigError(`caption canvases: ${what} must be an integer in ${lo}..${hi}, got ${v}`);
  }
  return v;
}

function checkSource(source: CanvasSource): void {
  const { images, labels, n } = source;
  if (!Number.isSafeInteger(n) || n < 1)
    throw new DataError(`caption canvases: the source holds ${n} images; need ≥ 1`);
  if (!(images instanceof Uint8Array) || images.length !== n * CELL_PIXELS) {
    throw new ShapeError(
      `caption canvases: source images must be a Uint8Array of ${n}×28×28 = ${n * CELL_PIXELS} bytes, got ${images?.length}`,
    );
  }
  if (!(labels instanceof Uint8Array) || labels.length !== n) {
    throw new ShapeError(`caption canvases: source labels must be a Uint8Array of ${n} labels, got ${labels?.length}`);
  }
  const bad = labels.findIndex((l) => l >= CAPTION_NOUNS.length);
  if (bad >= 0) throw new DataError(`caption canvases: source label ${bad} is ${labels[bad]}, outside 0..9`);
}

/**
 * `count` canvases cut from `source` (see the module comment for the distribution), deterministic
 * given the source and seed. ConfigError for a bad count, seed or item range; ShapeError or DataError
 * for a malformed source.
 */
export function makeCanvases(source: CanvasSource, opts: CanvasOptions): CaptionCanvases {
  const count = checkCount('count', opts.count, 1, Math.floor(2 ** 31 / CANVAS_PIXELS));
  const seed = checkCount('seed', opts.seed, 0, 0xffffffff);
  const minItems = checkCount('minItems', opts.minItems ?? 1, 1, 4);
  const maxItems = checkCount('maxItems', opts.maxItems ?? 4, minItems, 4);
  checkSource(source);
  const rng = new Rng(seed);
  const images = new Uint8Array(count * CANVAS_PIXELS);
  const canvases: CaptionCanvas[] = [];
  for (let k = 0; k < count; k++) {
    const items = minItems + rng.int(maxItems - minItems + 1);
    const cells = rng.shuffle([0, 1, 2, 3]).slice(0, items);
    const layout: (number | null)[] = [null, null, null, null];
    const sourceIndex: (number | null)[] = [null, null, null, null];
    for (let cell = 0; cell < 4; cell++) {
      if (!cells.includes(cell)) continue;
      const i = rng.int(source.n);
      layout[cell] = source.labels[i];
      sourceIndex[cell] = i;
      const y0 = (cell >> 1) * CELL_SIZE;
      const x0 = (cell & 1) * CELL_SIZE;
      for (let r = 0; r < CELL_SIZE; r++) {
        const from = i * CELL_PIXELS + r * CELL_SIZE;
        images.set(source.images.subarray(from, from + CELL_SIZE), k * CANVAS_PIXELS + (y0 + r) * CANVAS_SIZE + x0);
      }
    }
    const captions = captionPhrasings(layout);
    const caption = captions[rng.int(captions.length)];
    canvases.push({ layout, sourceIndex, captions, caption });
  }
  return { images, n: count, size: CANVAS_SIZE, canvases };
}

/**
 * Canvases of one Fashion-MNIST split: training canvases only from the train split, test canvases only
 * from the test split (seeded with `seed XOR 0x9e3779b9`). `dir`/`limit` go to {@link loadFashionMnist}
 * (its DataError when the files are missing).
 */
export function loadCaptionCanvases(
  split: FashionMnistSplit,
  opts: CanvasOptions & FashionMnistOptions,
): CaptionCanvases {
  const { dir, limit, ...canvasOpts } = opts;
  checkCount('seed', opts.seed, 0, 0xffffffff);
  const source = loadFashionMnist(split, { dir, limit });
  const seed = split === 'train' ? opts.seed : (opts.seed ^ TEST_SEED_SALT) >>> 0;
  return { ...makeCanvases(source, { ...canvasOpts, seed }), split };
}

/**
 * Every word a caption of the grammar can use, in no particular order (the captions' vocabulary
 * whatever the sample).
 */
export function captionWords(): string[] {
  const words = new Set<string>();
  for (const noun of NOUN_WORDS) for (const w of noun) words.add(w);
  const places = 'and on in the top bottom left right corner above below to of it';
  for (const w of places.split(' ')) words.add(w);
  return [...words];
}

/**
 * The token vocabulary (PAD, BOS, EOS, then the sorted words) of `captions`; without an argument, of
 * every word of the grammar ({@link captionWords}), which is what a sample large enough to use every
 * word gives too. DataError for captions without a word.
 */
export function captionVocabulary(captions?: readonly (readonly string[])[]): TokenVocabulary {
  return TokenVocabulary.fromSequences(captions ?? [captionWords()]);
}

/**
 * The baseline captioner of the issue: for each number of items, the most common training caption
 * (the drawn targets, `caption`) among training canvases with that many items; ties go to the
 * alphabetically first caption text. The function it returns throws DataError for a
 * number of items that no training canvas has. DataError for no canvases.
 */
export function mostCommonCaptionBaseline(
  train: CaptionCanvases | readonly CaptionCanvas[],
): (items: number) => string[] {
  const canvases = Array.isArray(train) ? (train as readonly CaptionCanvas[]) : (train as CaptionCanvases).canvases;
  if (canvases.length === 0) throw new DataError('the caption baseline needs training canvases, got none');
  const counts = new Map<number, Map<string, number>>();
  for (const c of canvases) {
    const items = c.layout.filter((x) => x !== null).length;
    const text = c.caption.join(' ');
    let m = counts.get(items);
    if (m === undefined) {
      m = new Map();
      counts.set(items, m);
    }
    m.set(text, (m.get(text) ?? 0) + 1);
  }
  const best = new Map<number, string[]>();
  for (const [items, m] of counts) {
    let top = '';
    let topCount = 0;
    for (const [text, n] of m) {
      if (n > topCount || (n === topCount && text < top)) {
        top = text;
        topCount = n;
      }
    }
    best.set(items, top.split(' '));
  }
  return (items: number) => {
    const caption = best.get(items);
    if (caption === undefined) {
      const have = [...best.keys()].sort((a, b) => a - b).join(', ');
      throw new DataError(`no training canvas holds ${items} item(s) (training counts: ${have}); no baseline caption`);
    }
    return [...caption];
  };
}
