/**
 * The grayscale PNG reader: round trips through the project's encoder, hand-built files exercising
 * every scanline filter and several IDAT chunks, and a typed error for each kind of bad input.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { DataError, ShapeError } from '../src/errors.js';
import { crc32, encodePng } from '../src/io/png.js';
import { expectSize, readPngGray } from '../src/io/png-read.js';
import { Rng } from '../src/util/rng.js';
import { thrown } from './helpers/thrown.js';

const tmp = mkdtempSync(join(tmpdir(), 'arflow-pngread-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function chunk(type: string, data: ArrayLike<number>): number[] {
  const body = Uint8Array.from([...type].map((c) => c.charCodeAt(0)).concat(Array.from(data)));
  const crc = crc32(body);
  const len = data.length;
  return [
    len >>> 24,
    (len >>> 16) & 255,
    (len >>> 8) & 255,
    len & 255,
    ...body,
    crc >>> 24,
    (crc >>> 16) & 255,
    (crc >>> 8) & 255,
    crc & 255,
  ];
}

function ihdr(width: number, height: number, depth = 8, colour = 0, interlace = 0): number[] {
  const d = new Uint8Array(13);
  const v = new DataView(d.buffer);
  v.setUint32(0, width, false);
  v.setUint32(4, height, false);
  d.set([depth, colour, 0, 0, interlace], 8);
  return chunk('IHDR', d);
}

/** A PNG from its chunks (signature added). */
function png(...chunks: number[][]): Uint8Array {
  return Uint8Array.from([...SIGNATURE, ...chunks.flat()]);
}

/** A grayscale PNG whose IDAT stream holds `raw` (filter bytes included), split into `parts` chunks. */
function grayPng(width: number, height: number, raw: Uint8Array, parts = 1): Uint8Array {
  const z = deflateSync(raw);
  const idats: number[][] = [];
  for (let p = 0; p < parts; p++) {
    idats.push(chunk('IDAT', z.subarray(Math.floor((p * z.length) / parts), Math.floor(((p + 1) * z.length) / parts))));
  }
  return png(ihdr(width, height), ...idats, chunk('IEND', []));
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** The scanlines of `pixels` filtered with `filters[y]` on row y (the encoder's side of the filters). */
function filterRows(pixels: Uint8Array, width: number, height: number, filters: number[]): Uint8Array {
  const raw = new Uint8Array((width + 1) * height);
  const at = (x: number, y: number) => (x < 0 || y < 0 ? 0 : pixels[y * width + x]);
  for (let y = 0; y < height; y++) {
    const f = filters[y];
    raw[y * (width + 1)] = f;
    for (let x = 0; x < width; x++) {
      const [a, b, c] = [at(x - 1, y), at(x, y - 1), at(x - 1, y - 1)];
      const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][f];
      raw[y * (width + 1) + 1 + x] = (at(x, y) - pred) & 255;
    }
  }
  return raw;
}

function randomPixels(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: n }, () => rng.int(256));
}

function expectDataError(bytes: Uint8Array, re: RegExp): void {
  const err = thrown(() => readPngGray(bytes));
  expect(err).toBeInstanceOf(DataError);
  expect(err.message).toMatch(re);
}

describe('readPngGray', () => {
  it('reads back what encodePng writes, from bytes and from a file', () => {
    for (const [w, h] of [
      [1, 1],
      [3, 7],
      [56, 56],
      [100, 2],
    ]) {
      const pixels = randomPixels(w * h, w * 1000 + h);
      const img = readPngGray(encodePng(w, h, pixels, 1));
      expect(img.width).toBe(w);
      expect(img.height).toBe(h);
      expect(img.pixels).toEqual(pixels);
    }
    const pixels = randomPixels(56 * 56, 3);
    const path = join(tmp, 'canvas.png');
    writeFileSync(path, encodePng(56, 56, pixels, 1));
    const img = readPngGray(path);
    expect(img.pixels).toEqual(pixels);
    expect(() => expectSize(img, 56, 56)).not.toThrow();
  });

  it('undoes each filter type on hand-computed scanlines, with wrap-around modulo 256', () => {
    // Image [[10, 20], [30, 45]]. Row 0 with Sub: 10, 20 − 10 = 10.
    // Row 1 with Up: 30 − 10 = 20, 45 − 20 = 25.
    // Row 1 with Average: 30 − ⌊(0 + 10)/2⌋ = 25, 45 − ⌊(30 + 20)/2⌋ = 20.
    // Row 1 with Paeth: x=0: a=0, b=10, c=0, p=10 → |p−a|=10, |p−b|=0, |p−c|=10 → b=10, 30 − 10 = 20;
    //                   x=1: a=30, b=20, c=10, p=40 → 10, 20, 30 → a=30, 45 − 30 = 15.
    const want = Uint8Array.from([10, 20, 30, 45]);
    for (const row1 of [
      [0, 30, 45],
      [2, 20, 25],
      [3, 25, 20],
      [4, 20, 15],
    ]) {
      const img = readPngGray(grayPng(2, 2, Uint8Array.from([1, 10, 10, ...row1])));
      expect(img.pixels).toEqual(want);
    }
    // Sub of [250, 5]: 5 − 250 = −245 ≡ 11 (mod 256). Average of [200, 250] over [255, 255]:
    // x=0: 200 − ⌊255/2⌋ = 73; x=1: 250 − ⌊(200 + 255)/2⌋ = 250 − 227 = 23.
    expect(readPngGray(grayPng(2, 1, Uint8Array.from([1, 250, 11]))).pixels).toEqual(Uint8Array.from([250, 5]));
    const avg = readPngGray(grayPng(2, 2, Uint8Array.from([0, 255, 255, 3, 73, 23])));
    expect(avg.pixels).toEqual(Uint8Array.from([255, 255, 200, 250]));
    // Paeth's ties (the predictor takes a over b over c when they are equally close to p = a + b − c):
    // [[100, 105], [90, 95]]: row 1, x=0: a=0, b=100, c=0, p=100 → b, 90 − 100 ≡ 246;
    //   x=1: a=90, b=105, c=100, p=95 → |p−a|=5, |p−b|=10, |p−c|=5 → a (tie with c), 95 − 90 = 5.
    // [[100, 90], [105, 80]]: x=0: b=100, 105 − 100 = 5; x=1: a=105, b=90, c=100, p=95 → 10, 5, 5 → b
    //   (tie with c), 80 − 90 ≡ 246.
    const tieA = readPngGray(grayPng(2, 2, Uint8Array.from([0, 100, 105, 4, 246, 5])));
    expect(tieA.pixels).toEqual(Uint8Array.from([100, 105, 90, 95]));
    const tieB = readPngGray(grayPng(2, 2, Uint8Array.from([0, 100, 90, 4, 5, 246])));
    expect(tieB.pixels).toEqual(Uint8Array.from([100, 90, 105, 80]));
  });

  it('reads every filter type, mixed row by row, over several IDAT chunks and skipped ancillary chunks', () => {
    const [w, h] = [13, 11];
    const pixels = randomPixels(w * h, 42);
    for (const filters of [
      new Array(h).fill(1),
      new Array(h).fill(2),
      new Array(h).fill(3),
      new Array(h).fill(4),
      Array.from({ length: h }, (_, y) => y % 5),
      Array.from({ length: h }, (_, y) => (y * 3 + 4) % 5),
    ]) {
      const raw = filterRows(pixels, w, h, filters);
      for (const parts of [1, 3]) expect(readPngGray(grayPng(w, h, raw, parts)).pixels).toEqual(pixels);
    }
    // An empty IDAT between two halves, a tEXt chunk before the data and bytes after IEND.
    const z = deflateSync(filterRows(pixels, w, h, new Array(h).fill(4)));
    const half = Math.floor(z.length / 2);
    const text = chunk(
      'tEXt',
      [...'Comment\0hi'].map((c) => c.charCodeAt(0)),
    );
    const bytes = png(
      ihdr(w, h),
      text,
      chunk('IDAT', z.subarray(0, half)),
      chunk('IDAT', []),
      chunk('IDAT', z.subarray(half)),
      chunk('IEND', []),
      [1, 2, 3],
    );
    expect(readPngGray(bytes).pixels).toEqual(pixels);
  });

  it('refuses bytes that are not a PNG, or a missing file', () => {
    expectDataError(new Uint8Array(0), /not a PNG/);
    expectDataError(Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 0x4a, 0x46, 0x49, 0x46]), /not a PNG.*signature/);
    expectDataError(new TextEncoder().encode('P5 56 56 255\n'), /not a PNG/);
    const missing = join(tmp, 'nowhere.png');
    const err = thrown(() => readPngGray(missing));
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toContain(`cannot read PNG file ${missing}`);
    writeFileSync(join(tmp, 'text.png'), 'hello');
    expect(thrown(() => readPngGray(join(tmp, 'text.png'))).message).toMatch(/PNG file .*text\.png is not a PNG/);
  });

  it('refuses truncated files, bad CRCs and corrupt image data', () => {
    const good = encodePng(8, 8, randomPixels(64, 1), 1);
    // Cut anywhere from inside IHDR to just before IEND's last byte.
    for (const cut of [10, 20, 33, 40, good.length - 12, good.length - 1]) {
      expectDataError(good.subarray(0, cut), /truncated/);
    }
    // One bit flipped in each chunk's data or CRC: IHDR data, IDAT data, IEND CRC.
    for (const at of [20, 45, good.length - 1]) {
      const bad = Uint8Array.from(good);
      bad[at] ^= 0x04;
      expectDataError(bad, /corrupt: chunk (IHDR|IDAT|IEND) at offset \d+ has CRC 0x[0-9a-f]{8}, its bytes give/);
    }
    const raw = filterRows(randomPixels(64, 2), 8, 8, new Array(8).fill(0));
    // Not zlib at all, a zlib stream cut short, too few and too many scanline bytes.
    expectDataError(png(ihdr(8, 8), chunk('IDAT', [1, 2, 3, 4, 5]), chunk('IEND', [])), /does not inflate/);
    const z = deflateSync(raw);
    expectDataError(png(ihdr(8, 8), chunk('IDAT', z.subarray(0, z.length - 6)), chunk('IEND', [])), /does not inflate/);
    expectDataError(grayPng(8, 8, raw.subarray(0, raw.length - 9)), /inflates to 63 bytes; 8×8 needs 72/);
    expectDataError(grayPng(8, 8, Uint8Array.from([...raw, 0])), /inflates to 73 bytes; 8×8 needs 72/);
    expectDataError(grayPng(8, 8, new Uint8Array(10_000)), /inflates to more than 72 bytes; 8×8 needs 72/);
    // A filter byte that does not exist.
    const badFilter = Uint8Array.from(raw);
    badFilter[3 * 9] = 5;
    expectDataError(grayPng(8, 8, badFilter), /row 3 has filter type 5/);
    // Chunks out of place or missing.
    expectDataError(
      png(chunk('IDAT', deflateSync(raw)), ihdr(8, 8), chunk('IEND', [])),
      /first chunk is IDAT, not IHDR/,
    );
    expectDataError(png(ihdr(8, 8), chunk('IEND', [])), /no IDAT/);
    expectDataError(png(ihdr(8, 8), chunk('IDAT', deflateSync(raw))), /truncated: it ends before its IEND/);
    expectDataError(
      png(ihdr(8, 8), chunk('XYZW', [0]), chunk('IDAT', deflateSync(raw)), chunk('IEND', [])),
      /unknown critical chunk XYZW/,
    );
    expectDataError(png(ihdr(0, 8), chunk('IDAT', deflateSync(raw)), chunk('IEND', [])), /size is 0×8/);
  });

  it('refuses colour, grayscale-with-alpha and palette PNGs, other bit depths and interlacing, saying how to convert', () => {
    const rgb = encodePng(4, 4, new Uint8Array(48), 3);
    let err = thrown(() => readPngGray(rgb));
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toContain('PNG data is RGB (colour type 2); arflow needs an 8-bit grayscale PNG');
    expect(err.message).toContain('convert it first');
    expect(err.message).toContain('-colorspace Gray');
    expectDataError(encodePng(4, 4, new Uint8Array(64), 4), /RGBA \(colour type 6\)/);
    const raw = deflateSync(new Uint8Array(5 * 4));
    const withHeader = (header: number[]) => png(header, chunk('IDAT', raw), chunk('IEND', []));
    expectDataError(withHeader(ihdr(4, 4, 8, 3)), /palette \(indexed colour\) \(colour type 3\)/);
    expectDataError(withHeader(ihdr(4, 4, 8, 4)), /grayscale with alpha \(colour type 4\)/);
    expectDataError(withHeader(ihdr(4, 4, 8, 5)), /colour type 5 does not exist/);
    expectDataError(withHeader(ihdr(4, 4, 16, 0)), /16-bit grayscale; arflow needs an 8-bit grayscale PNG: convert/);
    expectDataError(withHeader(ihdr(4, 4, 1, 0)), /1-bit grayscale/);
    expectDataError(withHeader(ihdr(4, 4, 7, 0)), /bit depth 7 does not exist/);
    err = thrown(() => readPngGray(withHeader(ihdr(4, 4, 8, 0, 1))));
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toMatch(/interlaced \(Adam7\).*-interlace none/);
    const path = join(tmp, 'colour.png');
    writeFileSync(path, rgb);
    expect(thrown(() => readPngGray(path)).message).toContain(`PNG file ${path} is RGB (colour type 2)`);
  });
});

describe('expectSize', () => {
  it('passes the right size and gives a ShapeError naming both sizes otherwise', () => {
    const img = readPngGray(encodePng(28, 28, new Uint8Array(784), 1));
    expect(() => expectSize(img, 28, 28)).not.toThrow();
    let err = thrown(() => expectSize(img, 56, 56));
    expect(err).toBeInstanceOf(ShapeError);
    expect(err.message).toMatch(/^expected a 56×56 image, got 28×28; resize it first/);
    err = thrown(() => expectSize({ width: 56, height: 57, pixels: new Uint8Array(56 * 57) }, 56, 56, 'x.png'));
    expect(err.message).toMatch(/^x\.png: expected a 56×56 image, got 56×57/);
  });
});
