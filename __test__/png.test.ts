/**
 * The PNG writer, checked by an independent decoder written here (chunk walk, bitwise CRC-32, zlib
 * inflate, filter type 0), and the grid / heatmap / scatter helpers.
 */
import { spawnSync } from 'node:child_process';
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { FASHION_MNIST_DEFAULT_DIR, fashionMnistAvailable, loadFashionMnist } from '../src/data/fashion-mnist.js';
import { CheckpointError, ConfigError, ShapeError } from '../src/errors.js';
import { sample2d } from '../src/flows/data2d.js';
import { crc32, encodePng, heatmapRgb, imageGrid, savePng, scatterRgb, viridis } from '../src/io/png.js';
import { saveSafetensors } from '../src/io/safetensors.js';

const tmp = mkdtempSync(join(tmpdir(), 'arflow-png-'));
afterAll(() => {
  if (!process.env.ARFLOW_KEEP_PNG) rmSync(tmp, { recursive: true, force: true });
});

/** CRC-32 bit by bit, without a table: independent of the module's implementation. */
function bitwiseCrc(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return (crc ^ 0xffffffff) >>> 0;
}

interface Decoded {
  width: number;
  height: number;
  channels: number;
  pixels: Uint8Array;
  chunks: string[];
}

function decodePng(png: Uint8Array): Decoded {
  expect(Array.from(png.subarray(0, 8))).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  let o = 8;
  const chunks: string[] = [];
  const idat: Uint8Array[] = [];
  let width = 0;
  let height = 0;
  let channels = 0;
  while (o < png.length) {
    const len = view.getUint32(o, false);
    const type = String.fromCharCode(...png.subarray(o + 4, o + 8));
    const data = png.subarray(o + 8, o + 8 + len);
    const crc = view.getUint32(o + 8 + len, false);
    expect(crc, `CRC of ${type}`).toBe(bitwiseCrc(png.subarray(o + 4, o + 8 + len)));
    chunks.push(type);
    if (type === 'IHDR') {
      expect(len).toBe(13);
      width = view.getUint32(o + 8, false);
      height = view.getUint32(o + 12, false);
      expect(data[8]).toBe(8); // bit depth
      channels = ({ 0: 1, 2: 3, 6: 4 } as Record<number, number>)[data[9]];
      expect(Array.from(data.subarray(10))).toEqual([0, 0, 0]);
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      expect(len).toBe(0);
    }
    o += 12 + len;
  }
  expect(o).toBe(png.length);
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  expect(raw.length).toBe((stride + 1) * height);
  const pixels = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    expect(raw[y * (stride + 1)], 'filter type').toBe(0);
    pixels.set(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)), y * stride);
  }
  return { width, height, channels, pixels, chunks };
}

describe('crc32', () => {
  it('matches the standard check value and a bitwise implementation', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 131 + 7) & 0xff);
    expect(crc32(bytes)).toBe(bitwiseCrc(bytes));
    // Incremental use agrees with one pass.
    expect(crc32(bytes.subarray(300), crc32(bytes.subarray(0, 300)))).toBe(crc32(bytes));
  });
});

describe('encodePng', () => {
  for (const channels of [1, 3, 4] as const) {
    it(`round trips ${channels}-channel pixels through an independent decoder`, () => {
      for (const [w, h] of [
        [1, 1],
        [7, 3],
        [31, 17],
      ]) {
        const pixels = Uint8Array.from({ length: w * h * channels }, (_, i) => (i * 97 + w) & 0xff);
        const d = decodePng(encodePng(w, h, pixels, channels));
        expect(d.chunks).toEqual(['IHDR', 'IDAT', 'IEND']);
        expect([d.width, d.height, d.channels]).toEqual([w, h, channels]);
        expect(d.pixels).toEqual(pixels);
      }
    });
  }

  it('rejects bad sizes, channel counts and pixel lengths with ShapeError', () => {
    const p = new Uint8Array(12);
    expect(() => encodePng(0, 4, p, 3)).toThrow(ShapeError);
    expect(() => encodePng(4, 0, p, 3)).toThrow(ShapeError);
    expect(() => encodePng(2.5, 2, p, 3)).toThrow(ShapeError);
    expect(() => encodePng(-2, -2, p, 3)).toThrow(ShapeError);
    expect(() => encodePng(2 ** 31, 1, p, 1)).toThrow(ShapeError);
    expect(() => encodePng(2, 2, p, 2 as 1)).toThrow(/channels/);
    expect(() => encodePng(2, 2, p, 4)).toThrow(/needs 16/);
    expect(() => encodePng(2, 2, new Uint8Array(13), 3)).toThrow(ShapeError);
    expect(() => encodePng(2, 2, new Float32Array(12) as unknown as Uint8Array, 3)).toThrow(ShapeError);
  });

  it('savePng writes the same bytes atomically', () => {
    const path = join(tmp, 'sub', 'tiny.png');
    const pixels = Uint8Array.from([0, 128, 255, 64]);
    savePng(path, 2, 2, pixels, 1);
    expect(new Uint8Array(readFileSync(path))).toEqual(encodePng(2, 2, pixels, 1));
  });

  it('savePng to a path it cannot write is a ConfigError naming the path, and leaves nothing behind', () => {
    const box = join(tmp, 'unwritable');
    mkdirSync(join(box, 'adir'), { recursive: true });
    writeFileSync(join(box, 'afile'), 'a file, not a directory');
    const pixels = Uint8Array.from([0, 128, 255, 64]);
    for (const path of [join(box, 'afile', 'x.png'), join(box, 'adir')]) {
      let err: unknown;
      try {
        savePng(path, 2, 2, pixels, 1);
      } catch (e) {
        err = e;
      }
      expect(err, path).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain(`cannot write picture ${path}`);
    }
    expect(readdirSync(box).sort()).toEqual(['adir', 'afile']);
    expect(readdirSync(join(box, 'adir'))).toEqual([]);
    expect(statSync(join(box, 'afile')).isFile()).toBe(true);
    // Bad pixels are still a ShapeError, before anything is written.
    expect(() => savePng(join(box, 'bad.png'), 2, 2, new Uint8Array(3), 1)).toThrow(ShapeError);
    expect(readdirSync(box).sort()).toEqual(['adir', 'afile']);
  });

  it.skipIf(process.platform === 'win32')(
    'savePng and saveSafetensors refuse a FIFO or a link to a device, and leave them as they were',
    () => {
      const box = join(tmp, 'special');
      mkdirSync(box);
      const fifo = join(box, 'fifo');
      const mk = spawnSync('mkfifo', [fifo]);
      expect(mk.status, String(mk.stderr)).toBe(0);
      const link = join(box, 'null-link');
      symlinkSync('/dev/null', link);
      const pixels = Uint8Array.from([0, 128, 255, 64]);
      for (const [path, what] of [
        [fifo, 'a FIFO'],
        [link, 'a character device'],
      ]) {
        expect(() => savePng(path, 2, 2, pixels, 1)).toThrow(ConfigError);
        expect(() => savePng(path, 2, 2, pixels, 1)).toThrow(`${path} is ${what}`);
        const t = { x: { dtype: 'F32' as const, shape: [1], data: new Float32Array(1) } };
        expect(() => saveSafetensors(path, t)).toThrow(CheckpointError);
      }
      expect(lstatSync(fifo).isFIFO()).toBe(true);
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(statSync(link).isCharacterDevice()).toBe(true);
      // No temp file left behind.
      expect(readdirSync(box).sort()).toEqual(['fifo', 'null-link']);
    },
  );
});

describe('imageGrid', () => {
  it('tiles images with padding, row by row', () => {
    // 5 images of 2×3, image k filled with 10·(k+1) + its pixel index.
    const imgs = Uint8Array.from({ length: 5 * 6 }, (_, i) => 10 * (Math.floor(i / 6) + 1) + (i % 6));
    const g = imageGrid(imgs, 5, 2, 3, { columns: 2, pad: 1, padValue: 255 });
    expect(g.width).toBe(2 * (3 + 1) + 1);
    expect(g.height).toBe(3 * (2 + 1) + 1);
    expect(g.pixels.length).toBe(g.width * g.height);
    const at = (x: number, y: number) => g.pixels[y * g.width + x];
    expect(at(0, 0)).toBe(255);
    expect(at(1, 1)).toBe(10); // image 0, pixel (0, 0)
    expect(at(3, 2)).toBe(15); // image 0, pixel (1, 2)
    expect(at(5, 1)).toBe(20); // image 1
    expect(at(1, 4)).toBe(30); // image 2, second grid row
    expect(at(3, 8)).toBe(55); // image 4 (third grid row, first column), pixel (1, 2)
    expect(at(5, 7)).toBe(255); // the empty sixth cell stays padding
    // Default: ⌈√n⌉ columns, pad 2, black padding; float images scaled from [0, 1] and clamped.
    const f = imageGrid(Float32Array.from([0, 0.5, 1, 2, -1, Number.NaN, 0.2, 0.8]), 2, 2, 2);
    expect([f.width, f.height]).toEqual([2 * 4 + 2, 4 + 2]);
    expect(Array.from(f.pixels.subarray(2 * f.width + 2, 2 * f.width + 4))).toEqual([0, 128]);
    expect(Array.from(f.pixels.subarray(3 * f.width + 2, 3 * f.width + 4))).toEqual([255, 255]);
    expect(Array.from(f.pixels.subarray(2 * f.width + 6, 2 * f.width + 8))).toEqual([0, 0]);
    expect(Array.from(f.pixels.subarray(3 * f.width + 6, 3 * f.width + 8))).toEqual([51, 204]);
    expect(f.pixels[0]).toBe(0);
  });

  it('rejects inconsistent sizes', () => {
    expect(() => imageGrid(new Uint8Array(10), 2, 2, 2)).toThrow(ShapeError);
    expect(() => imageGrid(new Uint8Array(8), 0, 2, 2)).toThrow(ShapeError);
    expect(() => imageGrid(new Uint8Array(8), 2, 2, 2, { columns: 0 })).toThrow(ShapeError);
    expect(() => imageGrid(new Uint8Array(8), 2, 2, 2, { pad: -1 })).toThrow(ShapeError);
    expect(() => imageGrid(new Uint8Array(8), 2, 2, 2, { padValue: 256 })).toThrow(ShapeError);
  });
});

describe('heatmap and scatter', () => {
  it('heatmapRgb maps min to viridis purple, max to yellow, monotone in lightness, NaN to black', () => {
    const values = Float64Array.from([3, 5, 7, Number.NaN]);
    const rgb = heatmapRgb(values, 2, 2);
    expect(Array.from(rgb.subarray(0, 3))).toEqual([0x44, 0x01, 0x54]);
    expect(Array.from(rgb.subarray(3, 6))).toEqual([0x21, 0x91, 0x8c]);
    expect(Array.from(rgb.subarray(6, 9))).toEqual([0xfd, 0xe7, 0x25]);
    expect(Array.from(rgb.subarray(9, 12))).toEqual([0, 0, 0]);
    const px = new Uint8Array(3);
    let last = -1;
    for (let t = 0; t <= 1.0001; t += 0.01) {
      viridis(t, px, 0);
      const luma = 0.2126 * px[0] + 0.7152 * px[1] + 0.0722 * px[2];
      expect(luma).toBeGreaterThan(last);
      last = luma;
    }
    // A constant field is drawn in one colour.
    const flat = heatmapRgb(new Float32Array(6).fill(2), 3, 2);
    expect(new Set(Array.from({ length: 6 }, (_, i) => flat.subarray(3 * i, 3 * i + 3).join())).size).toBe(1);
    expect(() => heatmapRgb(new Float32Array(5), 2, 2)).toThrow(ShapeError);
    expect(() => heatmapRgb(new Float32Array(0), 0, 0)).toThrow(ShapeError);
  });

  it('scatterRgb puts points in the right pixels (y up), leaves the rest white, skips outliers', () => {
    const pts = Float64Array.from([0.15, 0.15, 0.15, 0.15, 0.95, 0.95, 5, 5, Number.NaN, 0.5, 0.5, -0.1]);
    const rgb = scatterRgb(pts, 10, 10, [0, 1, 0, 1]);
    const at = (x: number, y: number) => Array.from(rgb.subarray(3 * (y * 10 + x), 3 * (y * 10 + x) + 3));
    expect(at(1, 8)).toEqual([0xfd, 0xe7, 0x25]); // two points: the maximum
    expect(at(9, 0)).not.toEqual([255, 255, 255]); // one point, top right
    let white = 0;
    for (let i = 0; i < 100; i++) if (rgb[3 * i] === 255 && rgb[3 * i + 1] === 255 && rgb[3 * i + 2] === 255) white++;
    expect(white).toBe(98);
    expect(() => scatterRgb(Float32Array.of(1, 2, 3), 4, 4, [0, 1, 0, 1])).toThrow(ShapeError);
    expect(() => scatterRgb(Float32Array.of(1, 2), 4, 4, [1, 0, 0, 1])).toThrow(ShapeError);
    expect(() => scatterRgb(Float32Array.of(1, 2), 4, 0, [0, 1, 0, 1])).toThrow(ShapeError);
  });

  it('writes a real picture: 16 Fashion-MNIST images if installed, else a heatmap; plus a 2-D scatter', () => {
    const gridPath = join(tmp, 'grid.png');
    if (fashionMnistAvailable(FASHION_MNIST_DEFAULT_DIR)) {
      const d = loadFashionMnist('test', { dir: FASHION_MNIST_DEFAULT_DIR, limit: 16 });
      const g = imageGrid(d.images, 16, 28, 28);
      savePng(gridPath, g.width, g.height, g.pixels, 1);
      const back = decodePng(new Uint8Array(readFileSync(gridPath)));
      expect([back.width, back.height]).toEqual([4 * 30 + 2, 4 * 30 + 2]);
      expect(back.pixels).toEqual(g.pixels);
    } else {
      const w = 64;
      const v = Float32Array.from({ length: w * w }, (_, i) => Math.sin((i % w) / 8) * Math.cos(Math.floor(i / w) / 8));
      savePng(gridPath, w, w, heatmapRgb(v, w, w), 3);
      expect(decodePng(new Uint8Array(readFileSync(gridPath))).width).toBe(w);
    }
    const scatterPath = join(tmp, 'moons.png');
    savePng(scatterPath, 200, 200, scatterRgb(sample2d('moons', 5000, 1), 200, 200, [-4, 4, -4, 4]), 3);
    expect(decodePng(new Uint8Array(readFileSync(scatterPath))).channels).toBe(3);
    if (process.env.ARFLOW_KEEP_PNG) console.log(`pictures in ${tmp}`);
  });
});
