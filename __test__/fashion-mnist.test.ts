/**
 * The Fashion-MNIST loader: the real Debian files when installed, and its validation on small
 * synthetic IDX files in a temporary directory (which always run).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DEFAULT_DIR,
  FASHION_MNIST_ENV,
  loadFashionMnist,
} from '../src/data/fashion-mnist.js';
import { ConfigError, DataError } from '../src/errors.js';
import { fashionMnist } from './helpers/skip.js';

const real = fashionMnist(FASHION_MNIST_DEFAULT_DIR);
const tmp = mkdtempSync(join(tmpdir(), 'arflow-fmnist-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function idx(magic: number, dims: number[], data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, magic, false);
  for (const [i, d] of dims.entries()) view.setUint32(4 + 4 * i, d, false);
  out.set(data, 4 + 4 * dims.length);
  return out;
}

interface Fake {
  images?: Uint8Array;
  labels?: Uint8Array;
  gzip?: boolean;
  split?: 'train' | 't10k';
}

let dirCount = 0;
/** A directory with one split's files; pixels of image i are (i·7 + j) mod 256, label i mod 10. */
function fakeDir(n: number, f: Fake = {}): string {
  const dir = join(tmp, `d${dirCount++}`);
  const pixels = new Uint8Array(n * 784).map((_, j) => (Math.floor(j / 784) * 7 + (j % 784)) % 256);
  const labels = new Uint8Array(n).map((_, i) => i % 10);
  const images = f.images ?? idx(0x803, [n, 28, 28], pixels);
  const lab = f.labels ?? idx(0x801, [n], labels);
  const split = f.split ?? 'train';
  const gz = f.gzip ?? true;
  const write = (stem: string, bytes: Uint8Array) =>
    writeFileSync(join(dir, gz ? `${stem}.gz` : stem), gz ? gzipSync(bytes) : bytes);
  mkdirSync(dir, { recursive: true });
  write(`${split}-images-idx3-ubyte`, images);
  write(`${split}-labels-idx1-ubyte`, lab);
  return dir;
}

describe('Fashion-MNIST', () => {
  const savedEnv = process.env[FASHION_MNIST_ENV];
  afterEach(() => {
    if (savedEnv === undefined) delete process.env[FASHION_MNIST_ENV];
    else process.env[FASHION_MNIST_ENV] = savedEnv;
  });

  it.skipIf(!real.present)(
    `loads the real Debian files: 60000 train / 10000 test, plausible pixels${real.note}`,
    () => {
      const train = loadFashionMnist('train', { dir: FASHION_MNIST_DEFAULT_DIR });
      const test = loadFashionMnist('test', { dir: FASHION_MNIST_DEFAULT_DIR });
      expect(train.n).toBe(60000);
      expect(test.n).toBe(10000);
      for (const split of [train, test]) {
        expect(split.rows).toBe(28);
        expect(split.cols).toBe(28);
        expect(split.images.length).toBe(split.n * 784);
        expect(split.labels.length).toBe(split.n);
        // Balanced classes: exactly n/10 of each label.
        const counts = new Array(10).fill(0);
        for (const l of split.labels) counts[l]++;
        expect(counts).toEqual(new Array(10).fill(split.n / 10));
        // Mean pixel of Fashion-MNIST is ≈ 72.9 (0.286 · 255), about half the pixels are background.
        let sum = 0;
        let zeros = 0;
        let max = 0;
        for (const p of split.images) {
          sum += p;
          if (p === 0) zeros++;
          if (p > max) max = p;
        }
        expect(sum / split.images.length).toBeGreaterThan(68);
        expect(sum / split.images.length).toBeLessThan(78);
        expect(zeros / split.images.length).toBeGreaterThan(0.3);
        expect(zeros / split.images.length).toBeLessThan(0.7);
        expect(max).toBe(255);
        // Image borders are mostly background.
        let corner = 0;
        for (let i = 0; i < split.n; i++) corner += split.images[i * 784];
        expect(corner / split.n).toBeLessThan(5);
      }
      // The first training example of the official files is an ankle boot (label 9); the first test one too.
      expect(train.labels[0]).toBe(9);
      expect(test.labels[0]).toBe(9);
      const head = loadFashionMnist('test', { dir: FASHION_MNIST_DEFAULT_DIR, limit: 16 });
      expect(head.n).toBe(16);
      expect(head.images).toEqual(test.images.subarray(0, 16 * 784));
      expect(head.labels).toEqual(test.labels.subarray(0, 16));
    },
  );

  it('has the 10 class names in label order', () => {
    expect(FASHION_MNIST_CLASSES).toHaveLength(10);
    expect(FASHION_MNIST_CLASSES[0]).toBe('T-shirt/top');
    expect(FASHION_MNIST_CLASSES[9]).toBe('Ankle boot');
  });

  it('reads gzipped and plain IDX files, test split from t10k-*, and applies limit', () => {
    for (const gzip of [true, false]) {
      const dir = fakeDir(5, { gzip });
      const d = loadFashionMnist('train', { dir });
      expect(d.n).toBe(5);
      expect(Array.from(d.labels)).toEqual([0, 1, 2, 3, 4]);
      expect(d.images[784 * 3 + 10]).toBe((3 * 7 + 10) % 256);
      expect(d.images.length).toBe(5 * 784);
      const lim = loadFashionMnist('train', { dir, limit: 2 });
      expect(lim.n).toBe(2);
      expect(lim.images).toEqual(d.images.subarray(0, 2 * 784));
      expect(loadFashionMnist('train', { dir, limit: 99 }).n).toBe(5);
    }
    const testDir = fakeDir(3, { split: 't10k' });
    expect(loadFashionMnist('test', { dir: testDir }).n).toBe(3);
    expect(() => loadFashionMnist('train', { dir: testDir })).toThrow(/train-images-idx3-ubyte\.gz.*missing/);
  });

  it('honours ARFLOW_FASHION_MNIST when no dir is given', () => {
    const dir = fakeDir(4);
    process.env[FASHION_MNIST_ENV] = dir;
    expect(loadFashionMnist('train').n).toBe(4);
    process.env[FASHION_MNIST_ENV] = join(tmp, 'nowhere');
    expect(() => loadFashionMnist('train')).toThrow(DataError);
  });

  it('a missing directory or file names the Debian package, apt-get, the option and the env var', () => {
    const missing = join(tmp, 'does-not-exist');
    let err: unknown;
    try {
      loadFashionMnist('train', { dir: missing });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DataError);
    const msg = (err as Error).message;
    expect(msg).toContain(missing);
    expect(msg).toContain('apt-get install dataset-fashion-mnist');
    expect(msg).toContain(FASHION_MNIST_ENV);
    expect(msg).toContain("'dir' option");
    const dir = fakeDir(2);
    rmSync(join(dir, 'train-labels-idx1-ubyte.gz'));
    expect(() => loadFashionMnist('train', { dir })).toThrow(/train-labels-idx1-ubyte.*apt-get install/);
  });

  it('rejects bad magic numbers, wrong dimensions, truncation, mismatched counts, bad labels, bad gzip', () => {
    const pixels = new Uint8Array(2 * 784);
    const expectData = (dir: string, re: RegExp) => {
      expect(() => loadFashionMnist('train', { dir })).toThrow(DataError);
      expect(() => loadFashionMnist('train', { dir })).toThrow(re);
    };
    // Images and labels swapped: magic of each is the other's.
    expectData(fakeDir(2, { images: idx(0x801, [2 * 784], pixels) }), /train-images.*magic number 0x00000801/);
    expectData(fakeDir(2, { labels: idx(0x803, [2, 1, 1], new Uint8Array(2)) }), /train-labels.*magic number/);
    expectData(fakeDir(2, { images: idx(0x803, [2, 14, 56], pixels) }), /14×56 images/);
    expectData(fakeDir(2, { images: idx(0x803, [2, 28, 28], pixels.subarray(0, 1000)) }), /truncated.*1000/);
    expectData(fakeDir(2, { images: idx(0x803, [2, 28, 28], new Uint8Array(2 * 784 + 1)) }), /too long/);
    expectData(fakeDir(2, { images: new Uint8Array([0, 0, 8]) }), /truncated.*shorter than an IDX header/);
    expectData(fakeDir(2, { labels: idx(0x801, [3], new Uint8Array(3)) }), /2 images but .* 3 labels/);
    expectData(fakeDir(2, { labels: idx(0x801, [2], Uint8Array.from([1, 10])) }), /label 1 is 10/);
    expectData(fakeDir(0, { images: idx(0x803, [0, 28, 28], new Uint8Array(0)) }), /no images/);
    const dir = fakeDir(2);
    const gz = gzipSync(idx(0x803, [2, 28, 28], pixels));
    writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), gz.subarray(0, gz.length - 10));
    expectData(dir, /train-images-idx3-ubyte\.gz is not valid gzip/);
    // Plain data under a .gz name is not gzip either.
    const plain = fakeDir(2);
    writeFileSync(join(plain, 'train-labels-idx1-ubyte.gz'), idx(0x801, [2], new Uint8Array(2)));
    expectData(plain, /train-labels-idx1-ubyte\.gz is not valid gzip/);
  });

  it('rejects a bad split or limit with ConfigError', () => {
    const dir = fakeDir(2);
    expect(() => loadFashionMnist('valid' as 'train', { dir })).toThrow(ConfigError);
    for (const limit of [0, -1, 1.5, Number.NaN]) {
      expect(() => loadFashionMnist('train', { dir, limit })).toThrow(ConfigError);
    }
  });
});
