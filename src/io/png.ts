/**
 * A minimal PNG writer (ISO/IEC 15948, https://www.w3.org/TR/png/) for pictures of samples and
 * densities, with no dependencies: 8-bit grayscale, RGB or RGBA, non-interlaced, every scanline with
 * filter type 0 (None), one IDAT chunk compressed by node:zlib.
 *
 *   signature 89 50 4E 47 0D 0A 1A 0A
 *   chunk     [u32 BE length] [4-byte type] [data] [u32 BE CRC-32 of type + data]
 *   IHDR      width, height (u32 BE), bit depth 8, colour type (0 gray, 2 RGB, 6 RGBA), 0, 0, 0
 *   IDAT      zlib stream of the rows, each prefixed by its filter byte
 *   IEND      empty
 *
 * Also: a grid of grayscale images, a viridis heatmap and a 2-D scatter (density) plot, all returning
 * raw pixels for {@link encodePng}.
 */
import { deflateSync } from 'node:zlib';
import { ConfigError, ShapeError } from '../errors.js';
import { writeFileAtomic } from './safetensors.js';

/** Channels per pixel of a PNG: 1 gray, 3 RGB, 4 RGBA. */
export type PngChannels = 1 | 3 | 4;

const SIGNATURE = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const COLOR_TYPE: Record<PngChannels, number> = { 1: 0, 3: 2, 4: 6 };
/** PNG limits width and height to 2³¹ − 1; far below that the pixel buffer is the real limit. */
const MAX_SIDE = 2 ** 31 - 1;

/** CRC-32 (ISO 3309 / ITU-T V.42, reflected polynomial 0xEDB88320), as PNG's chunks use. */
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

function checkSide(what: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 1 || v > MAX_SIDE) {
    throw new ShapeError(`${what} must be an integer in 1..${MAX_SIDE}, got ${v}`);
  }
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length, false);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)), false);
  return out;
}

/**
 * Encodes `height` rows of `width` pixels of `channels` bytes each (`pixels` row-major, top row
 * first: gray, RGB or RGBA) as a PNG file. ShapeError for a bad size or channel count.
 */
export function encodePng(width: number, height: number, pixels: Uint8Array, channels: PngChannels): Uint8Array {
  checkSide('PNG width', width);
  checkSide('PNG height', height);
  if (channels !== 1 && channels !== 3 && channels !== 4) {
    throw new ShapeError(`PNG channels must be 1 (gray), 3 (RGB) or 4 (RGBA), got ${channels}`);
  }
  if (!(pixels instanceof Uint8Array)) throw new ShapeError('PNG pixels must be a Uint8Array');
  const stride = width * channels;
  if (pixels.length !== stride * height) {
    throw new ShapeError(
      `PNG pixels hold ${pixels.length} bytes; ${width}×${height} with ${channels} channel(s) needs ${stride * height}`,
    );
  }
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, width, false);
  view.setUint32(4, height, false);
  ihdr[8] = 8;
  ihdr[9] = COLOR_TYPE[channels];
  // compression 0 (deflate), filter method 0, interlace 0: already zero.
  const raw = new Uint8Array((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0; // filter type None
    raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }
  const parts = [SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array(0))];
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * {@link encodePng} written atomically to `path` (a crash never leaves half a picture). ShapeError for
 * bad pixels (nothing written); a path that cannot be written (a directory, a parent that is a file, no
 * permission, a full disk) is a ConfigError naming the path.
 */
export function savePng(path: string, width: number, height: number, pixels: Uint8Array, channels: PngChannels): void {
  const bytes = encodePng(width, height, pixels, channels);
  try {
    writeFileAtomic(path, bytes);
  } catch (err) {
    throw new ConfigError(`cannot write picture ${path}: ${(err as Error).message}`);
  }
}

/** An uncompressed image: `width × height` pixels, one or more bytes each. */
export interface RawImage {
  width: number;
  height: number;
  /** Row-major, top row first. */
  pixels: Uint8Array;
}

/** Layout of {@link imageGrid}. */
export interface GridOptions {
  /** Images per row; default ⌈√n⌉. */
  columns?: number;
  /** Pixels of border around and between images; default 2. */
  pad?: number;
  /** Gray level of the border, 0..255; default 0 (black). */
  padValue?: number;
}

function checkCount(what: string, v: number, least: number): void {
  if (!Number.isSafeInteger(v) || v < least) throw new ShapeError(`${what} must be an integer ≥ ${least}, got ${v}`);
}

/**
 * Tiles `n` grayscale `rows × cols` images (`[n, rows, cols]`) into one grayscale picture, row by row.
 * Uint8Array images are used as they are; float images are taken as intensities in [0, 1] (clamped,
 * NaN as 0) and scaled to 0..255.
 */
export function imageGrid(
  images: Float32Array | Float64Array | Uint8Array,
  n: number,
  rows: number,
  cols: number,
  opts: GridOptions = {},
): RawImage {
  checkCount('imageGrid: n', n, 1);
  checkCount('imageGrid: rows', rows, 1);
  checkCount('imageGrid: cols', cols, 1);
  const columns = opts.columns ?? Math.ceil(Math.sqrt(n));
  const pad = opts.pad ?? 2;
  checkCount('imageGrid: columns', columns, 1);
  checkCount('imageGrid: pad', pad, 0);
  const padValue = opts.padValue ?? 0;
  if (!Number.isInteger(padValue) || padValue < 0 || padValue > 255) {
    throw new ShapeError(`imageGrid: padValue must be an integer in 0..255, got ${padValue}`);
  }
  if (images.length !== n * rows * cols) {
    throw new ShapeError(`imageGrid: ${images.length} values; ${n} images of ${rows}×${cols} need ${n * rows * cols}`);
  }
  const gridRows = Math.ceil(n / columns);
  const width = columns * (cols + pad) + pad;
  const height = gridRows * (rows + pad) + pad;
  const pixels = new Uint8Array(width * height).fill(padValue);
  const bytes = images instanceof Uint8Array;
  for (let k = 0; k < n; k++) {
    const x0 = pad + (k % columns) * (cols + pad);
    const y0 = pad + Math.floor(k / columns) * (rows + pad);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const v = images[(k * rows + r) * cols + c];
        pixels[(y0 + r) * width + x0 + c] = bytes ? v : v > 0 ? (v < 1 ? Math.round(v * 255) : 255) : 0;
      }
    }
  }
  return { width, height, pixels };
}

/** Viridis (matplotlib, van der Walt & Smith 2015) sampled at 9 evenly spaced points, linearly interpolated. */
const VIRIDIS: readonly (readonly [number, number, number])[] = [
  [0x44, 0x01, 0x54],
  [0x47, 0x2c, 0x7a],
  [0x3b, 0x52, 0x8b],
  [0x2c, 0x72, 0x8e],
  [0x21, 0x91, 0x8c],
  [0x28, 0xae, 0x80],
  [0x5e, 0xc9, 0x62],
  [0xad, 0xdc, 0x30],
  [0xfd, 0xe7, 0x25],
];

/** The colormap at t ∈ [0, 1] (clamped), written into `out` at `o`. */
export function viridis(t: number, out: Uint8Array, o: number): void {
  // NaN fails t > 0 and maps to the low end.
  const s = (t > 0 ? Math.min(t, 1) : 0) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(s), VIRIDIS.length - 2);
  const f = s - i;
  const a = VIRIDIS[i];
  const b = VIRIDIS[i + 1];
  for (let k = 0; k < 3; k++) out[o + k] = Math.round(a[k] + (b[k] - a[k]) * f);
}

function checkImageSize(fn: string, width: number, height: number): void {
  checkSide(`${fn}: width`, width);
  checkSide(`${fn}: height`, height);
}

/**
 * RGB pixels of a `[height, width]` field of values (row 0 at the top) through viridis, normalised to
 * the finite values' min..max (a constant field is drawn at the colormap's low end). Non-finite values
 * are drawn black.
 */
export function heatmapRgb(values: Float32Array | Float64Array, width: number, height: number): Uint8Array {
  checkImageSize('heatmapRgb', width, height);
  if (values.length !== width * height) {
    throw new ShapeError(`heatmapRgb: ${values.length} values; ${width}×${height} needs ${width * height}`);
  }
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const span = hi > lo ? hi - lo : 1;
  const out = new Uint8Array(3 * values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isFinite(v)) viridis((v - lo) / span, out, 3 * i);
  }
  return out;
}

/**
 * RGB pixels of a scatter plot of `[n, 2]` points over `extent = [xmin, xmax, ymin, ymax]` (x to the
 * right, y up): each pixel counts the points that fall in it; empty pixels are white, the others are
 * coloured by viridis of log(1 + count) / log(1 + max count), so dense regions are yellow. Points
 * outside the extent or not finite are skipped.
 */
export function scatterRgb(
  points: Float32Array | Float64Array,
  width: number,
  height: number,
  extent: readonly [number, number, number, number],
): Uint8Array {
  checkImageSize('scatterRgb', width, height);
  if (points.length % 2 !== 0) throw new ShapeError(`scatterRgb: ${points.length} values are not [n, 2] points`);
  const [xmin, xmax, ymin, ymax] = extent;
  if (!(extent.length === 4 && extent.every(Number.isFinite) && xmax > xmin && ymax > ymin)) {
    throw new ShapeError(`scatterRgb: extent must be finite [xmin, xmax, ymin, ymax] with max > min, got [${extent}]`);
  }
  const counts = new Uint32Array(width * height);
  let max = 0;
  for (let i = 0; i < points.length; i += 2) {
    const px = Math.floor(((points[i] - xmin) / (xmax - xmin)) * width);
    const py = Math.floor(((ymax - points[i + 1]) / (ymax - ymin)) * height);
    // NaN fails every comparison, so it is skipped with the out-of-range points.
    if (!(px >= 0 && px < width && py >= 0 && py < height)) continue;
    const c = ++counts[py * width + px];
    if (c > max) max = c;
  }
  const out = new Uint8Array(3 * width * height).fill(255);
  const norm = Math.log1p(max);
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] > 0) viridis(max > 1 ? Math.log1p(counts[i]) / norm : 1, out, 3 * i);
  }
  return out;
}
