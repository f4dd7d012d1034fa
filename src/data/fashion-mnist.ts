/**
 * Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist):
 * 70 000 grayscale 28×28 images of clothing in 10 classes, read from the IDX files that Debian's
 * `dataset-fashion-mnist` package installs under /usr/share/datasets/fashion-mnist:
 *
 *   train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz  (60 000)
 *   t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz   (10 000)
 *
 * Uncompressed files of the same names without `.gz` are read too (the gzipped one wins when both
 * exist). The directory is, in order: the `dir` option, the `ARFLOW_FASHION_MNIST` environment
 * variable, the Debian location.
 *
 * IDX (http://yann.lecun.com/exdb/mnist/): a big-endian u32 magic `0x00000800 | type << 8 | ndim`
 * (type 0x08 = unsigned byte), ndim big-endian u32 dimensions, then the data, row-major. Files are
 * untrusted input: every inconsistency is a `DataError` naming the file.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { ConfigError, DataError } from '../errors.js';

export const FASHION_MNIST_DEFAULT_DIR = '/usr/share/datasets/fashion-mnist';
export const FASHION_MNIST_ENV = 'ARFLOW_FASHION_MNIST';
export const FASHION_MNIST_PACKAGE = 'dataset-fashion-mnist';

/** Class names by label, as in the dataset's README. */
export const FASHION_MNIST_CLASSES: readonly string[] = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

/** Which Fashion-MNIST split to load. */
export type FashionMnistSplit = 'train' | 'test';

/** Where {@link loadFashionMnist} reads the IDX files from and how many examples it keeps. */
export interface FashionMnistOptions {
  /** Directory of the IDX files; defaults to $ARFLOW_FASHION_MNIST, then the Debian location. */
  dir?: string;
  /** Keep only the first `limit` examples (an integer ≥ 1; more than the split holds keeps all). */
  limit?: number;
}

/** One Fashion-MNIST split: 28×28 8-bit images and their class labels. */
export interface FashionMnist {
  /** `[n, 28, 28]` row-major pixels, 0 = background, 255 = ink. */
  images: Uint8Array;
  /** `[n]` labels in 0..9, indices into {@link FASHION_MNIST_CLASSES}. */
  labels: Uint8Array;
  n: number;
  rows: 28;
  cols: 28;
}

const IMAGES_MAGIC = 0x00000803;
const LABELS_MAGIC = 0x00000801;
const ROWS = 28;
const COLS = 28;

const FILE_STEMS: Record<FashionMnistSplit, { images: string; labels: string }> = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte' },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte' },
};

function installHint(): string {
  return (
    `Fashion-MNIST comes from the Debian package ${FASHION_MNIST_PACKAGE}: install it with ` +
    `'apt-get install ${FASHION_MNIST_PACKAGE}' (files go to ${FASHION_MNIST_DEFAULT_DIR}), or point the ` +
    `'dir' option or the ${FASHION_MNIST_ENV} environment variable at a directory holding the IDX files`
  );
}

/** The directory the loader reads, after the option and environment variable. */
export function fashionMnistDir(dir?: string): string {
  if (dir !== undefined) return dir;
  const env = process.env[FASHION_MNIST_ENV];
  return env !== undefined && env !== '' ? env : FASHION_MNIST_DEFAULT_DIR;
}

/** Whether both splits' files are present in the directory the loader would read. */
export function fashionMnistAvailable(dir?: string): boolean {
  const d = fashionMnistDir(dir);
  return Object.values(FILE_STEMS).every(
    (s) => findFile(d, s.images) !== undefined && findFile(d, s.labels) !== undefined,
  );
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function findFile(dir: string, stem: string): string | undefined {
  for (const name of [`${stem}.gz`, stem]) {
    const path = join(dir, name);
    if (isFile(path)) return path;
  }
  return undefined;
}

function locate(dir: string, stem: string): string {
  const path = findFile(dir, stem);
  if (path !== undefined) return path;
  if (!existsSync(dir)) throw new DataError(`Fashion-MNIST directory ${dir} does not exist. ${installHint()}`);
  throw new DataError(`Fashion-MNIST file ${join(dir, `${stem}.gz`)} (or ${stem}) is missing. ${installHint()}`);
}

/** The file's bytes, gunzipped when its name ends in `.gz`. */
function readBytes(path: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (err) {
    throw new DataError(`cannot read Fashion-MNIST file ${path}: ${(err as Error).message}`);
  }
  if (!path.endsWith('.gz')) return raw;
  try {
    return gunzipSync(raw);
  } catch (err) {
    throw new DataError(`Fashion-MNIST file ${path} is not valid gzip (${(err as Error).message}); reinstall it`);
  }
}

/** Parses an IDX header and checks the magic and that the data fills the file exactly. */
function parseIdx(path: string, bytes: Uint8Array, magic: number): { dims: number[]; data: Uint8Array } {
  const ndim = magic & 0xff;
  const headerLength = 4 + 4 * ndim;
  if (bytes.length < headerLength) {
    throw new DataError(`Fashion-MNIST file ${path} is truncated: ${bytes.length} bytes, shorter than an IDX header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const got = view.getUint32(0, false);
  if (got !== magic) {
    throw new DataError(
      `Fashion-MNIST file ${path} is not an IDX ${ndim === 3 ? 'image' : 'label'} file: magic number ` +
        `0x${got.toString(16).padStart(8, '0')}, expected 0x${magic.toString(16).padStart(8, '0')}`,
    );
  }
  const dims: number[] = [];
  for (let i = 0; i < ndim; i++) dims.push(view.getUint32(4 + 4 * i, false));
  const want = dims.reduce((a, b) => a * b, 1);
  const have = bytes.length - headerLength;
  if (have !== want) {
    throw new DataError(
      `Fashion-MNIST file ${path} is ${have < want ? 'truncated' : 'too long'}: dimensions [${dims.join(', ')}] ` +
        `need ${want} data bytes after the header, found ${have}`,
    );
  }
  return { dims, data: bytes.subarray(headerLength) };
}

/**
 * One split of Fashion-MNIST. Throws DataError when a file is missing, unreadable or inconsistent,
 * ConfigError for a bad split or limit.
 */
export function loadFashionMnist(split: FashionMnistSplit, opts: FashionMnistOptions = {}): FashionMnist {
  if (split !== 'train' && split !== 'test') {
    throw new ConfigError(`Fashion-MNIST split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  }
  const { limit } = opts;
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) {
    throw new ConfigError(`Fashion-MNIST limit must be an integer ≥ 1, got ${limit}`);
  }
  const dir = fashionMnistDir(opts.dir);
  const stems = FILE_STEMS[split];
  const imagesPath = locate(dir, stems.images);
  const labelsPath = locate(dir, stems.labels);

  const images = parseIdx(imagesPath, readBytes(imagesPath), IMAGES_MAGIC);
  const [count, rows, cols] = images.dims;
  if (rows !== ROWS || cols !== COLS) {
    throw new DataError(`Fashion-MNIST file ${imagesPath} holds ${rows}×${cols} images; expected ${ROWS}×${COLS}`);
  }
  if (count === 0) throw new DataError(`Fashion-MNIST file ${imagesPath} holds no images`);
  const labels = parseIdx(labelsPath, readBytes(labelsPath), LABELS_MAGIC);
  if (labels.dims[0] !== count) {
    throw new DataError(
      `Fashion-MNIST files disagree: ${imagesPath} holds ${count} images but ${labelsPath} ${labels.dims[0]} labels`,
    );
  }
  const n = limit === undefined ? count : Math.min(limit, count);
  const labelData = labels.data.slice(0, n);
  for (let i = 0; i < n; i++) {
    if (labelData[i] > 9) {
      throw new DataError(`Fashion-MNIST file ${labelsPath}: label ${i} is ${labelData[i]}, outside 0..9`);
    }
  }
  return { images: images.data.slice(0, n * ROWS * COLS), labels: labelData, n, rows: ROWS, cols: COLS };
}
