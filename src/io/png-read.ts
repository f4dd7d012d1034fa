/**
 * A minimal PNG reader (ISO/IEC 15948, https://www.w3.org/TR/png/) for pictures a user gives, e.g. to
 * `arflow caption`: 8-bit grayscale only (colour type 0, bit depth 8), non-interlaced, no dependencies.
 *
 *   signature 89 50 4E 47 0D 0A 1A 0A
 *   chunk     [u32 BE length] [4-byte type] [data] [u32 BE CRC-32 of type + data]
 *   IHDR      first: width, height (u32 BE, ≥ 1), bit depth, colour type, compression 0, filter 0, interlace
 *   IDAT      one or more: together one zlib stream of the scanlines, each a filter byte + width bytes
 *   IEND      last; bytes after it are ignored
 *
 * All five scanline filters are undone (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth). Every chunk's CRC is
 * checked. Ancillary chunks (first letter lower case: gAMA, tEXt, tRNS…) are skipped, so gamma and
 * transparency are not applied: the stored gray levels are returned as they are. A critical chunk
 * other than IHDR, PLTE, IDAT, IEND is refused.
 *
 * Files are untrusted input: anything else (not a PNG, truncated, a bad CRC, corrupt zlib data, another
 * colour type, bit depth or interlacing) is a DataError saying what was found and, for a valid PNG in
 * another format, how to convert it. {@link expectSize} adds the size check (a ShapeError).
 */
import { readFileSync } from 'node:fs';
import { inflateSync } from 'node:zlib';
import { DataError, ShapeError } from '../errors.js';
import { crc32, type RawImage } from './png.js';

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
/** Largest image read, in pixels: far above any picture arflow needs, and it bounds what inflation allocates. */
export const PNG_MAX_PIXELS = 2 ** 28;

const COLOUR_TYPES: Record<number, string> = {
  0: 'grayscale',
  2: 'RGB',
  3: 'palette (indexed colour)',
  4: 'grayscale with alpha',
  6: 'RGBA',
};

/** How to turn another PNG into one this reader takes (ImageMagick). */
export const PNG_GRAY_CONVERSION =
  "e.g. with ImageMagick: 'convert IN.png -alpha off -colorspace Gray -depth 8 -define png:color-type=0 OUT.png'";

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

function chunkName(bytes: Uint8Array, at: number): string {
  return String.fromCharCode(...bytes.subarray(at, at + 4));
}

/**
 * The pixels of an 8-bit grayscale PNG, from a file path or the file's bytes: `pixels` row-major, top
 * row first, one byte per pixel. DataError for anything that is not such a PNG (see the module comment).
 */
export function readPngGray(input: string | Uint8Array): RawImage {
  let bytes: Uint8Array;
  const what = typeof input === 'string' ? `PNG file ${input}` : 'PNG data';
  if (typeof input === 'string') {
    try {
      bytes = readFileSync(input);
    } catch (err) {
      throw new DataError(`cannot read PNG file ${input}: ${(err as Error).message}`);
    }
  } else if (input instanceof Uint8Array) {
    bytes = input;
  } else {
    throw new DataError('readPngGray takes a file path or the bytes of a PNG file (a Uint8Array)');
  }
  if (bytes.length < SIGNATURE.length || SIGNATURE.some((b, i) => bytes[i] !== b)) {
    throw new DataError(`${what} is not a PNG: it does not start with the PNG signature 89 50 4E 47 0D 0A 1A 0A`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = SIGNATURE.length;
  let width = 0;
  let height = 0;
  const idat: Uint8Array[] = [];
  let sawEnd = false;
  while (!sawEnd) {
    if (pos + 8 > bytes.length) throw new DataError(`${what} is truncated: it ends before its IEND chunk`);
    const length = view.getUint32(pos, false);
    const type = chunkName(bytes, pos + 4);
    if (!/^[A-Za-z]{4}$/.test(type)) {
      throw new DataError(`${what} is corrupt: bytes at offset ${pos + 4} are not a chunk type`);
    }
    if (pos + 12 + length > bytes.length) {
      throw new DataError(
        `${what} is truncated: chunk ${type} at offset ${pos} needs ${length} data bytes and its CRC`,
      );
    }
    const data = bytes.subarray(pos + 8, pos + 8 + length);
    const stored = view.getUint32(pos + 8 + length, false);
    const computed = crc32(bytes.subarray(pos + 4, pos + 8 + length));
    if (stored !== computed) {
      throw new DataError(
        `${what} is corrupt: chunk ${type} at offset ${pos} has CRC 0x${stored.toString(16).padStart(8, '0')}, ` +
          `its bytes give 0x${computed.toString(16).padStart(8, '0')}`,
      );
    }
    const first = pos === SIGNATURE.length;
    pos += 12 + length;
    if (first !== (type === 'IHDR')) {
      throw new DataError(
        first ? `${what} is corrupt: the first chunk is ${type}, not IHDR` : `${what} is corrupt: a second IHDR chunk`,
      );
    }
    if (type === 'IHDR') {
      if (length !== 13) throw new DataError(`${what} is corrupt: IHDR holds ${length} bytes, not 13`);
      ({ width, height } = readHeader(what, data));
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      sawEnd = true;
    } else if (type !== 'PLTE' && type.charCodeAt(0) < 0x61) {
      throw new DataError(`${what} holds an unknown critical chunk ${type}; it cannot be read safely`);
    }
  }
  if (idat.length === 0) throw new DataError(`${what} is corrupt: no IDAT (image data) chunk`);
  return { width, height, pixels: unfilter(what, inflate(what, idat, width, height), width, height) };
}

function readHeader(what: string, data: Uint8Array): { width: number; height: number } {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const width = view.getUint32(0, false);
  const height = view.getUint32(4, false);
  const [depth, colour, compression, filter, interlace] = data.subarray(8, 13);
  if (width === 0 || height === 0) throw new DataError(`${what} is corrupt: its size is ${width}×${height}`);
  if (!(colour in COLOUR_TYPES)) throw new DataError(`${what} is corrupt: colour type ${colour} does not exist`);
  if (colour !== 0) {
    throw new DataError(
      `${what} is ${COLOUR_TYPES[colour]} (colour type ${colour}); arflow needs an 8-bit grayscale PNG ` +
        `(colour type 0): convert it first, ${PNG_GRAY_CONVERSION}`,
    );
  }
  if (![1, 2, 4, 8, 16].includes(depth)) throw new DataError(`${what} is corrupt: bit depth ${depth} does not exist`);
  if (depth !== 8) {
    throw new DataError(
      `${what} is ${depth}-bit grayscale; arflow needs an 8-bit grayscale PNG: convert it first, ${PNG_GRAY_CONVERSION}`,
    );
  }
  if (compression !== 0 || filter !== 0) {
    throw new DataError(
      `${what} is corrupt: compression method ${compression}, filter method ${filter} (only 0 exists)`,
    );
  }
  if (interlace > 1) throw new DataError(`${what} is corrupt: interlace method ${interlace} does not exist`);
  if (interlace !== 0) {
    throw new DataError(
      `${what} is interlaced (Adam7); arflow reads non-interlaced PNGs only: convert it first, ` +
        `e.g. with ImageMagick: 'convert IN.png -interlace none OUT.png'`,
    );
  }
  if (width * height > PNG_MAX_PIXELS) {
    throw new DataError(`${what} is ${width}×${height}, more than the ${PNG_MAX_PIXELS} pixels arflow reads`);
  }
  return { width, height };
}

function inflate(what: string, idat: Uint8Array[], width: number, height: number): Uint8Array {
  const expected = (width + 1) * height;
  let raw: Uint8Array;
  try {
    // The limit bounds what a hostile stream can allocate; one byte of room lets the length check
    // below name a stream one byte too long like any other wrong length.
    raw = inflateSync(Buffer.concat(idat), { maxOutputLength: expected + 1 });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') {
      throw new DataError(
        `${what} is corrupt: its image data inflates to more than ${expected} bytes; ${width}×${height} needs ${expected}`,
      );
    }
    throw new DataError(`${what} is corrupt or truncated: its image data does not inflate (${(err as Error).message})`);
  }
  if (raw.length !== expected) {
    throw new DataError(
      `${what} is corrupt: its image data inflates to ${raw.length} bytes; ${width}×${height} needs ${expected}`,
    );
  }
  return raw;
}

/** Undoes the scanline filters of 1-byte pixels (`raw`: each row a filter byte then `width` bytes). */
function unfilter(what: string, raw: Uint8Array, width: number, height: number): Uint8Array {
  const out = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (width + 1)];
    const src = y * (width + 1) + 1;
    const row = y * width;
    const up = row - width;
    for (let x = 0; x < width; x++) {
      const a = x > 0 ? out[row + x - 1] : 0;
      const b = y > 0 ? out[up + x] : 0;
      const c = x > 0 && y > 0 ? out[up + x - 1] : 0;
      let pred: number;
      if (filter === 0) pred = 0;
      else if (filter === 1) pred = a;
      else if (filter === 2) pred = b;
      else if (filter === 3) pred = (a + b) >> 1;
      else if (filter === 4) pred = paeth(a, b, c);
      else throw new DataError(`${what} is corrupt: row ${y} has filter type ${filter} (only 0..4 exist)`);
      out[row + x] = (raw[src + x] + pred) & 0xff;
    }
  }
  return out;
}

/**
 * Checks that `img` is `width × height`; ShapeError "expected a 56×56 image, got W×H" otherwise (with
 * `source`, e.g. the file name, in front when given).
 */
export function expectSize(img: RawImage, width: number, height: number, source?: string): void {
  if (img.width !== width || img.height !== height) {
    const prefix = source === undefined ? '' : `${source}: `;
    throw new ShapeError(
      `${prefix}expected a ${width}×${height} image, got ${img.width}×${img.height}; ` +
        `resize it first, e.g. with ImageMagick: 'convert IN.png -resize ${width}x${height}! OUT.png'`,
    );
  }
}
