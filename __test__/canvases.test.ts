/**
 * Caption canvases: the grammar over every possible layout, canvases cut from a small synthetic source
 * (always run), and from the real Fashion-MNIST splits when the Debian files are installed.
 */
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CANVAS_CELLS,
  CANVAS_SIZE,
  CAPTION_NOUNS,
  type CanvasSource,
  type CaptionCanvas,
  type CaptionCanvases,
  captionPhrasings,
  captionVocabulary,
  captionWords,
  loadCaptionCanvases,
  makeCanvases,
  mostCommonCaptionBaseline,
  parseCaption,
} from '../src/data/canvases.js';
import { FASHION_MNIST_DEFAULT_DIR, type FashionMnist, loadFashionMnist } from '../src/data/fashion-mnist.js';
import { BOS, EOS, PAD } from '../src/data/token-vocab.js';
import { ConfigError, DataError, ShapeError } from '../src/errors.js';
import { fashionMnist } from './helpers/skip.js';

const real = fashionMnist(FASHION_MNIST_DEFAULT_DIR);
const text = (words: readonly string[]) => words.join(' ');

/** Every layout: each cell empty or one of the 10 classes, at least one item (11⁴ − 1 = 14 640). */
function allLayouts(): (number | null)[][] {
  const out: (number | null)[][] = [];
  const options = [null, ...CAPTION_NOUNS.keys()];
  for (const a of options)
    for (const b of options)
      for (const c of options)
        for (const d of options) if (a !== null || b !== null || c !== null || d !== null) out.push([a, b, c, d]);
  return out;
}

/** Whether two cells (0 TL, 1 TR, 2 BL, 3 BR) share a row or a column. */
const aligned = (p: number, q: number) => p >> 1 === q >> 1 || (p & 1) === (q & 1);

/**
 * The first index where two byte arrays differ (their shorter length if one is a prefix), −1 if equal:
 * a cheap stand-in for toEqual on large pixel arrays, which vitest compares element by element slowly.
 */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/**
 * Checks a canvas against its source: every occupied cell holds the source image at `sourceIndex` and
 * its label, every empty cell is zeros, the caption is one of the references and every reference reads
 * back to the layout.
 */
function checkCanvas(set: CaptionCanvases, k: number, source: CanvasSource): void {
  const c = set.canvases[k];
  const want = new Uint8Array(56 * 56);
  for (let cell = 0; cell < 4; cell++) {
    const i = c.sourceIndex[cell];
    expect(c.layout[cell] === null).toBe(i === null);
    if (i === null) continue;
    expect(c.layout[cell]).toBe(source.labels[i]);
    const y0 = (cell >> 1) * 28;
    const x0 = (cell & 1) * 28;
    for (let r = 0; r < 28; r++) {
      for (let x = 0; x < 28; x++) want[(y0 + r) * 56 + x0 + x] = source.images[i * 784 + r * 28 + x];
    }
  }
  expect(firstDifference(set.images.subarray(k * 3136, (k + 1) * 3136), want)).toBe(-1);
  expect(c.captions.map(text)).toContain(text(c.caption));
  for (const ref of c.captions) expect(parseCaption(ref)).toEqual(c.layout);
}

/** n distinct synthetic 28×28 images: image i is all (i + 1), with a dot at pixel i; label i mod 10. */
function fakeSource(n: number): CanvasSource {
  const images = new Uint8Array(n * 784);
  for (let i = 0; i < n; i++) {
    images.fill(i + 1, i * 784, (i + 1) * 784);
    images[i * 784 + i] = 255;
  }
  return { images, labels: Uint8Array.from({ length: n }, (_, i) => i % 10), n };
}

describe('caption grammar', () => {
  it('phrases the issue’s examples and lists all 8 phrasings of a two-item layout', () => {
    const sneakerBag = (cell: number) => [0, 1, 2, 3].map((c) => (c === 0 ? 7 : c === cell ? 8 : null));
    const diagonal = captionPhrasings(sneakerBag(3)).map(text);
    expect(diagonal).toEqual([
      'a sneaker on the top left and a bag on the bottom right',
      'a sneaker in the top left corner and a bag in the bottom right corner',
      'a bag on the bottom right and a sneaker on the top left',
      'a bag in the bottom right corner and a sneaker in the top left corner',
    ]);
    expect(captionPhrasings(sneakerBag(2)).map(text)).toEqual([
      'a sneaker on the top left and a bag on the bottom left',
      'a sneaker on the top left and a bag below it',
      'a sneaker in the top left corner and a bag in the bottom left corner',
      'a sneaker in the top left corner and a bag below it',
      'a bag on the bottom left and a sneaker on the top left',
      'a bag on the bottom left and a sneaker above it',
      'a bag in the bottom left corner and a sneaker in the top left corner',
      'a bag in the bottom left corner and a sneaker above it',
    ]);
    expect(captionPhrasings([null, 9, null, null]).map(text)).toEqual([
      'an ankle boot on the top right',
      'an ankle boot in the top right corner',
    ]);
    expect(captionPhrasings([0, 1, 2, 3]).map(text)).toContain(
      'a t-shirt on the top left and a pair of trousers to the right of it and a pullover on the bottom left ' +
        'and a dress to the right of it',
    );
    expect(captionPhrasings([0, 1, 2, 3]).map(text)).toContain(
      'a dress in the bottom right corner and a pullover to the left of it and a pair of trousers in the top ' +
        'right corner and a t-shirt to the left of it',
    );
  });

  it('over every layout: phrasings follow the rules, are distinct, and read back to the layout', () => {
    // 14 640 layouts: problems are collected and compared once (an expect per word would take a minute).
    const words = new Set<string>();
    const problems: string[] = [];
    const nounCounts = (t: string) => CAPTION_NOUNS.map((noun) => t.split(` ${noun} `).length - 1);
    for (const layout of allLayouts()) {
      const cells = [0, 1, 2, 3].filter((c) => layout[c] !== null);
      const phrasings = captionPhrasings(layout);
      // 2 orders (1 for one item) × 2 forms × (2 if some consecutive pair, in reading order, is aligned).
      const relative = cells.some((c, i) => i > 0 && aligned(cells[i - 1], c));
      const expected = (cells.length > 1 ? 2 : 1) * 2 * (relative ? 2 : 1);
      if (phrasings.length !== expected) problems.push(`${layout}: ${phrasings.length} phrasings, not ${expected}`);
      if (new Set(phrasings.map(text)).size !== phrasings.length) problems.push(`${layout}: repeated phrasings`);
      const wantCounts = CAPTION_NOUNS.map((_, cls) => layout.filter((x) => x === cls).length);
      for (const p of phrasings) {
        const t = ` ${text(p)} `;
        const parsed = parseCaption(p);
        if (JSON.stringify(parsed) !== JSON.stringify(layout)) problems.push(`${t}: parsed as ${parsed}`);
        for (const w of p) {
          if (!/^[a-z]+(-[a-z]+)?$/.test(w)) problems.push(`${t}: word ${JSON.stringify(w)}`);
          words.add(w);
        }
        // Each class named as often as it occurs in the layout (counting noun phrases).
        if (String(nounCounts(t)) !== String(wantCounts)) problems.push(`${t}: names ${nounCounts(t)}`);
        // One form of absolute place per caption; the first item placed absolutely; reading order or its reverse.
        if (t.includes(' on the ') && t.includes(' corner ')) problems.push(`${t}: mixed forms`);
        if (p.slice(0, 6).includes('it')) problems.push(`${t}: first item placed relatively`);
        const start = / (?:on|in) the (top|bottom) (left|right) /.exec(t)?.slice(1).join(' ');
        const ends = [CANVAS_CELLS[cells[0]], CANVAS_CELLS[cells[cells.length - 1]]];
        if (!ends.includes(start ?? '')) problems.push(`${t}: starts with neither the first nor the last item`);
      }
    }
    expect(problems).toEqual([]);
    expect([...words].sort()).toEqual([...captionWords()].sort());
  });

  it('parses any sentence of the grammar but refuses malformed or inconsistent ones', () => {
    // Mixed forms and a relative place after a diagonal step are still grammatical.
    expect(
      parseCaption('a coat on the top left and a bag in the bottom right corner and a dress above it'.split(' ')),
    ).toEqual([4, 3, null, 8]);
    for (const bad of [
      '',
      'a bag',
      'a bag on the top',
      'a bag on the top middle',
      'a bag on the top left corner',
      'a bag in the top left',
      'a bag below it',
      'a bag on the top left and',
      'a bag on the top left a coat on the top right',
      'a bag on the top left and a coat on the top left',
      'a bag on the bottom left and a coat below it',
      'a bag on the top left and a coat above it',
      'a bag on the top right and a coat to the right of it',
      'a bag on the top left and a coat to the right of them',
      'a hat on the top left',
      'an bag on the top left',
      'a bag on the top left and a coat to the right of it and a dress to the left of it',
    ]) {
      expect(parseCaption(bad === '' ? [] : bad.split(' '))).toBeNull();
    }
  });

  it('refuses malformed layouts', () => {
    expect(() => captionPhrasings([null, null, null, null])).toThrow(DataError);
    expect(() => captionPhrasings([1, 2, 3])).toThrow(ShapeError);
    expect(() => captionPhrasings([10, null, null, null])).toThrow(DataError);
    expect(() => captionPhrasings([1.5, null, null, null])).toThrow(DataError);
  });
});

describe('makeCanvases on a synthetic source', () => {
  const source = fakeSource(12);

  it('places the source images in their cells, zeros elsewhere, with captions of the layout', () => {
    const set = makeCanvases(source, { count: 200, seed: 5 });
    expect(set.n).toBe(200);
    expect(set.size).toBe(CANVAS_SIZE);
    expect(set.images.length).toBe(200 * 56 * 56);
    expect(set.canvases).toHaveLength(200);
    expect(set.split).toBeUndefined();
    for (let k = 0; k < set.n; k++) checkCanvas(set, k, source);
    const counts = [0, 0, 0, 0, 0];
    const cellUse = [0, 0, 0, 0];
    for (const c of set.canvases) {
      counts[c.layout.filter((x) => x !== null).length]++;
      c.layout.forEach((x, cell) => {
        if (x !== null) cellUse[cell]++;
      });
    }
    expect(counts[0]).toBe(0);
    // Uniform in 1..4: 50 expected each (σ ≈ 6).
    for (const n of counts.slice(1)) expect(n).toBeGreaterThan(25);
    // Each cell is occupied with probability (1 + 2 + 3 + 4)/16 = 5/8: 125 expected (σ ≈ 7).
    for (const n of cellUse) expect(Math.abs(n - 125)).toBeLessThan(30);
    // The training caption is drawn uniformly among the phrasings: a single item's two phrasings
    // ("on the …", "in the … corner") both occur, about half the time each.
    const singles = set.canvases.filter((c) => c.captions.length === 2);
    const first = singles.filter((c) => text(c.caption) === text(c.captions[0])).length;
    expect(singles.length).toBeGreaterThan(25);
    expect(first / singles.length).toBeGreaterThan(0.25);
    expect(first / singles.length).toBeLessThan(0.75);
  });

  it('honours minItems and maxItems', () => {
    const full = makeCanvases(source, { count: 30, seed: 1, minItems: 4 });
    expect(full.canvases.every((c) => c.layout.every((x) => x !== null))).toBe(true);
    const single = makeCanvases(source, { count: 30, seed: 1, maxItems: 1 });
    expect(single.canvases.every((c) => c.layout.filter((x) => x !== null).length === 1)).toBe(true);
    expect(single.canvases.every((c) => c.captions.length === 2)).toBe(true);
    const two = makeCanvases(source, { count: 30, seed: 1, minItems: 2, maxItems: 2 });
    expect(two.canvases.every((c) => c.layout.filter((x) => x !== null).length === 2)).toBe(true);
  });

  it('is deterministic per seed and differs between seeds', () => {
    const a = makeCanvases(source, { count: 50, seed: 9 });
    const b = makeCanvases(source, { count: 50, seed: 9 });
    expect(firstDifference(b.images, a.images)).toBe(-1);
    expect(b.canvases).toEqual(a.canvases);
    const c = makeCanvases(source, { count: 50, seed: 10 });
    expect(firstDifference(c.images, a.images)).not.toBe(-1);
    expect(c.canvases.map((x) => x.layout)).not.toEqual(a.canvases.map((x) => x.layout));
    // A longer run starts with the shorter one.
    const longer = makeCanvases(source, { count: 60, seed: 9 });
    expect(longer.canvases.slice(0, 50)).toEqual(a.canvases);
  });

  it('refuses bad options and malformed sources', () => {
    const bad = (opts: object) => () => makeCanvases(source, { count: 5, seed: 1, ...opts });
    for (const count of [0, -1, 2.5, Number.NaN, 1e9]) expect(bad({ count })).toThrow(ConfigError);
    for (const seed of [-1, 0.5, 2 ** 32, Number.NaN]) expect(bad({ seed })).toThrow(ConfigError);
    expect(bad({ minItems: 0 })).toThrow(ConfigError);
    expect(bad({ maxItems: 5 })).toThrow(ConfigError);
    expect(bad({ minItems: 3, maxItems: 2 })).toThrow(/maxItems must be an integer in 3\.\.4/);
    const opts = { count: 1, seed: 0 };
    expect(() => makeCanvases({ ...source, images: source.images.subarray(1) }, opts)).toThrow(ShapeError);
    expect(() => makeCanvases({ ...source, labels: source.labels.subarray(1) }, opts)).toThrow(ShapeError);
    expect(() => makeCanvases({ ...source, labels: new Uint8Array(12).fill(10) }, opts)).toThrow(/label 0 is 10/);
    expect(() => makeCanvases({ images: new Uint8Array(0), labels: new Uint8Array(0), n: 0 }, opts)).toThrow(DataError);
  });
});

describe('caption vocabulary and baseline', () => {
  it('builds a TokenVocabulary of the captions (or the whole grammar) that round-trips them', () => {
    const set = makeCanvases(fakeSource(10), { count: 300, seed: 2 });
    const all = set.canvases.flatMap((c) => c.captions);
    const vocab = captionVocabulary(all);
    expect(vocab.tokens.slice(0, 3)).toEqual(['<pad>', '<s>', '</s>']);
    expect([PAD, BOS, EOS]).toEqual([0, 1, 2]);
    for (const c of all) expect(vocab.decode([BOS, ...vocab.encode(c), EOS])).toEqual(c);
    // 300 canvases use every word, so the sample's vocabulary is the grammar's.
    expect(captionVocabulary().tokens).toEqual(vocab.tokens);
    expect(captionVocabulary().size).toBe(3 + captionWords().length);
    expect(captionVocabulary([['a', 'bag']]).tokens).toEqual(['<pad>', '<s>', '</s>', 'a', 'bag']);
    expect(() => captionVocabulary([])).toThrow(DataError);
  });

  it('returns, per number of items, the most common training caption (ties → alphabetically first)', () => {
    const canvas = (layout: (number | null)[], caption: string): CaptionCanvas => ({
      layout,
      sourceIndex: layout.map((x) => (x === null ? null : 0)),
      captions: captionPhrasings(layout),
      caption: caption.split(' '),
    });
    const train = [
      canvas([8, null, null, null], 'a bag on the top left'),
      canvas([null, 4, null, null], 'a coat on the top right'),
      canvas([null, 4, null, null], 'a coat on the top right'),
      canvas([8, null, null, null], 'a bag in the top left corner'),
      canvas([8, null, null, null], 'a bag on the top left'),
      canvas([8, 4, null, null], 'a coat on the top right and a bag to the left of it'),
      canvas([8, 4, null, null], 'a bag on the top left and a coat on the top right'),
    ];
    const baseline = mostCommonCaptionBaseline(train);
    expect(text(baseline(1))).toBe('a bag on the top left');
    // Two 2-item captions once each: the alphabetically first wins.
    expect(text(baseline(2))).toBe('a bag on the top left and a coat on the top right');
    expect(baseline(1)).not.toBe(baseline(1)); // a fresh array each call
    expect(() => baseline(3)).toThrow(DataError);
    expect(() => baseline(3)).toThrow(/no training canvas holds 3 item\(s\) \(training counts: 1, 2\)/);
    expect(() => mostCommonCaptionBaseline([])).toThrow(DataError);
    // Accepts a whole canvas set, and its answers have the right number of items.
    const set = makeCanvases(fakeSource(10), { count: 400, seed: 3 });
    const fromSet = mostCommonCaptionBaseline(set);
    for (const items of [1, 2, 3, 4]) {
      const best = text(fromSet(items));
      const layout = parseCaption(fromSet(items));
      expect(layout?.filter((x) => x !== null)).toHaveLength(items);
      const tally = new Map<string, number>();
      for (const c of set.canvases) {
        if (c.layout.filter((x) => x !== null).length === items) {
          tally.set(text(c.caption), (tally.get(text(c.caption)) ?? 0) + 1);
        }
      }
      for (const n of tally.values()) expect(n).toBeLessThanOrEqual(tally.get(best) ?? 0);
    }
  });
});

describe('caption canvases from Fashion-MNIST', () => {
  let train: FashionMnist;
  let test: FashionMnist;
  beforeAll(() => {
    if (!real.present) return;
    train = loadFashionMnist('train', { dir: FASHION_MNIST_DEFAULT_DIR });
    test = loadFashionMnist('test', { dir: FASHION_MNIST_DEFAULT_DIR });
  });

  it.skipIf(!real.present)(`builds training canvases from the train split only${real.note}`, () => {
    const set = loadCaptionCanvases('train', { count: 300, seed: 7, dir: FASHION_MNIST_DEFAULT_DIR });
    expect(set.split).toBe('train');
    for (let k = 0; k < set.n; k++) checkCanvas(set, k, train);
    // Indices beyond the test split's 10 000 occur: the images are drawn from all 60 000.
    expect(set.canvases.some((c) => c.sourceIndex.some((i) => i !== null && i >= 10000))).toBe(true);
    // The loader is makeCanvases on the train split with the seed as given.
    const again = makeCanvases(train, { count: 300, seed: 7 });
    expect(firstDifference(again.images, set.images)).toBe(-1);
    expect(again.canvases).toEqual(set.canvases);
  });

  it.skipIf(!real.present)(`builds test canvases from the test split only: no train image in them${real.note}`, () => {
    const set = loadCaptionCanvases('test', { count: 500, seed: 7, dir: FASHION_MNIST_DEFAULT_DIR });
    expect(set.split).toBe('test');
    for (let k = 0; k < set.n; k++) checkCanvas(set, k, test);
    const hash = (bytes: Uint8Array) => createHash('sha1').update(bytes).digest('hex');
    const trainImages = new Set<string>();
    for (let i = 0; i < train.n; i++) trainImages.add(hash(train.images.subarray(i * 784, (i + 1) * 784)));
    let cells = 0;
    for (let k = 0; k < set.n; k++) {
      for (let cell = 0; cell < 4; cell++) {
        if (set.canvases[k].layout[cell] === null) continue;
        const img = new Uint8Array(784);
        const y0 = (cell >> 1) * 28;
        const x0 = (cell & 1) * 28;
        for (let r = 0; r < 28; r++) {
          const from = k * 3136 + (y0 + r) * 56 + x0;
          img.set(set.images.subarray(from, from + 28), r * 28);
        }
        expect(trainImages.has(hash(img))).toBe(false);
        cells++;
      }
    }
    expect(cells).toBeGreaterThan(1000);
    // The same seed gives other layouts on the test split than on the train split.
    const trainSet = makeCanvases(train, { count: 500, seed: 7 });
    const cellsOf = (s: CaptionCanvases) => s.canvases.map((c) => c.layout.map((x) => x !== null));
    expect(cellsOf(set)).not.toEqual(cellsOf(trainSet));
    // …namely makeCanvases on the test split with the seed XOR 0x9e3779b9.
    expect(makeCanvases(test, { count: 500, seed: (7 ^ 0x9e3779b9) >>> 0 }).canvases).toEqual(set.canvases);
  });
});
