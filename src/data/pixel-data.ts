/**
 * Image data for the Pixel-RNN: Fashion-MNIST as 8-bit values (the 256-way softmax head) or
 * stochastically binarised (the Bernoulli head), and the independent per-pixel baselines printed beside
 * the model's likelihood.
 *
 * Binarisation (the convention of Salakhutdinov & Murray 2008 for MNIST): pixel value v becomes 1 with
 * probability v/255, else 0, decided by one uniform draw per pixel, in raster order image by image, from
 * `Rng(seed)`: `1 if u < v/255`. It is fixed and seeded, so a binarised set is the same on every
 * machine: the test set always with {@link BINARIZE_TEST_SEED}, the training set once per run with
 * {@link BINARIZE_TRAIN_SEED} (static binarisation: the model sees one binary version of each training
 * image).
 */
import type { PixelOutput } from '../backend/pixel-types.js';
import { DataError } from '../errors.js';
import { Rng } from '../util/rng.js';

/** The seed of the test set's binarisation: every run and every machine scores the same binary images. */
export const BINARIZE_TEST_SEED = 0x7e57;
/** The seed of the training set's binarisation. */
export const BINARIZE_TRAIN_SEED = 0x7a1;

/** `images` (8-bit values) binarised with `Rng(seed)`: 1 where u < v/255, one uniform per pixel in order. */
export function binarizeImages(images: Uint8Array, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const out = new Uint8Array(images.length);
  for (let i = 0; i < images.length; i++) out[i] = rng.uniform() < images[i] / 255 ? 1 : 0;
  return out;
}

/** An independent distribution per pixel, fitted on training images: the baseline a Pixel-RNN must beat. */
export interface PixelBaseline {
  output: PixelOutput;
  /** Pixels per image. */
  pixels: number;
  /** log-probability of each value at each pixel, `[pixels, levels]`. */
  logProb: Float64Array;
  levels: number;
}

/**
 * Per-pixel frequencies of `images [n, pixels]` (values 0…255, or 0/1 for 'bernoulli') with add-one
 * (Laplace) smoothing, so no test value has probability 0: p(v at pixel k) = (count + 1)/(n + levels).
 */
export function fitPixelBaseline(images: Uint8Array, pixels: number, output: PixelOutput): PixelBaseline {
  const levels = output === 'categorical' ? 256 : 2;
  if (!Number.isSafeInteger(pixels) || pixels < 1 || images.length === 0 || images.length % pixels !== 0) {
    throw new DataError(`fitPixelBaseline: ${images.length} values are not whole images of ${pixels} pixels`);
  }
  const n = images.length / pixels;
  const counts = new Float64Array(pixels * levels);
  for (let i = 0; i < images.length; i++) {
    const v = images[i];
    if (v >= levels)
      throw new DataError(`fitPixelBaseline: value ${v} at ${i} is not a ${output} pixel (0…${levels - 1})`);
    counts[(i % pixels) * levels + v]++;
  }
  const logProb = new Float64Array(pixels * levels);
  const denom = Math.log(n + levels);
  for (let k = 0; k < counts.length; k++) logProb[k] = Math.log(counts[k] + 1) - denom;
  return { output, pixels, logProb, levels };
}

/** Mean NLL in nats per image of `images [n, pixels]` under the baseline. */
export function pixelBaselineNll(b: PixelBaseline, images: Uint8Array): number {
  if (images.length === 0 || images.length % b.pixels !== 0) {
    throw new DataError(`pixelBaselineNll: ${images.length} values are not whole images of ${b.pixels} pixels`);
  }
  let sum = 0;
  for (let i = 0; i < images.length; i++) {
    const v = images[i];
    if (v >= b.levels) throw new DataError(`pixelBaselineNll: value ${v} at ${i} is out of range`);
    sum -= b.logProb[(i % b.pixels) * b.levels + v];
  }
  return sum / (images.length / b.pixels);
}
