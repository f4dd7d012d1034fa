/**
 * Pixel-RNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016): an exact likelihood of an image as the
 * product over pixels in raster order of p(x_i | x_<i), with the paper's Row LSTM or a Row GRU built
 * the same way (architecture and equations: `src/backend/js/pixel.ts`; names: `pixel-types.ts`). The
 * head is a 256-way softmax per pixel (8-bit images) or a Bernoulli per pixel (binarised images), and
 * class-conditional models add a learned per-class bias to every row layer.
 *
 * ```ts
 * const { images, labels } = loadFashionMnist('train');
 * const model = PixelRNN.create({ cell: 'lstm', hidden: 32, layers: 2 });
 * await model.fit(images, { steps: 500, batchSize: 16, onProgress: (p) => console.log(p.step, p.loss) });
 * const { natsPerImage, bitsPerDim } = await model.evaluate(loadFashionMnist('test').images);
 * const samples = await model.sample({ n: 16, seed: 1 });           // [16, 28, 28] pixel values
 * const halves = await model.sample({ n: 4, seed: 2, top: { rows: 14, images: someImages } });
 * await model.save('pixel.safetensors');
 * ```
 */
import type { BackendName, DeviceName } from '../backend/index.js';
import { createPixelBackend } from '../backend/native-pixel.js';
import type { PixelBackend } from '../backend/pixel-backend.js';
import {
  INPUT_KERNEL,
  type PixelCell,
  type PixelOutput,
  type PixelRnnShape,
  pixelBitsPerDim,
  pixelInputValue,
  pixelParamInfo,
  pixelTargetLevels,
  ROW_KERNEL,
  validatePixelShape,
} from '../backend/pixel-types.js';
import { CheckpointError, ConfigError, DataError, ShapeError } from '../errors.js';
import {
  applyOptimizerState,
  checkpointContents,
  checkResumable,
  expectTensors,
  isCheckpointOf,
  readOptimizerState,
  readTrainInfo,
} from '../io/checkpoint.js';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import { type FlowTrainOptions, type FlowTrainSummary, runFlowTraining } from '../train/flow-trainer.js';
import { Rng } from '../util/rng.js';

/** Architecture of a {@link PixelRNN}: cell, feature maps, layers, image size, output and classes. */
export type PixelRNNConfig = PixelRnnShape;

/** The default model: a 2-layer Row LSTM with 32 feature maps on 28×28 8-bit images. */
export const DEFAULT_PIXEL_RNN: PixelRNNConfig = Object.freeze({
  cell: 'lstm' as PixelCell,
  hidden: 32,
  layers: 2,
  rows: 28,
  cols: 28,
  output: 'categorical' as PixelOutput,
});

export const PIXEL_KIND = 'pixel-rnn';
/** Images per native call when scoring. */
const CHUNK = 64;

/** Options of {@link PixelRNN.create}: backend, device and seed. */
export interface PixelCreateOptions {
  backend?: BackendName;
  device?: DeviceName;
  /** Seed of the initial weights. Default 0. */
  seed?: number;
}

/** Training options: the shared schedule options plus the labels and held-out images. */
export interface PixelTrainOptions extends Omit<FlowTrainOptions, 'valData'> {
  /** `[n]` class ids of the training images: required exactly when the model has classes. */
  labels?: Uint8Array;
  /** Held-out images scored (nats/image) every `valEvery` steps and at the end. */
  valImages?: Uint8Array;
  valLabels?: Uint8Array;
}

/** What {@link PixelRNN.evaluate} returns: nats per image and bits per dimension. */
export interface PixelEvalResult {
  /** Mean NLL, nats per image. */
  natsPerImage: number;
  /** natsPerImage / (R·C·ln 2). */
  bitsPerDim: number;
  n: number;
}

/** Options of {@link PixelRNN.sample}. */
export interface PixelSampleOptions {
  n: number;
  /** Seed of the uniforms the pixels are drawn with. Default 0. */
  seed?: number;
  /** The class of every image, or of each (`[n]`): required exactly when the model has classes. */
  label?: number | ArrayLike<number>;
  /** Completion: the top `rows` rows of `images [n, R, C]` (pixel values) are kept; the rest is sampled. */
  top?: { rows: number; images: Uint8Array };
}

/**
 * Pixel-RNN (van den Oord et al. 2016): an exact likelihood of an image, pixel by pixel in raster
 * order, with a Row LSTM or Row GRU.
 *
 * ```ts
 * import { PixelRNN } from 'arflow';
 * const images = Uint8Array.from({ length: 8 * 8 * 8 }, (_, i) => (i * 37) % 256);   // 8 images of 8×8
 * const model = PixelRNN.create({ hidden: 8, layers: 1, rows: 8, cols: 8 });
 * await model.fit(images, { steps: 5, batchSize: 4 });
 * console.log((await model.evaluate(images)).bitsPerDim, await model.sample({ n: 2, seed: 1 }));
 * ```
 */
export class PixelRNN {
  /** Whether this model holds optimizer state a run can continue from (`fit` with `resume`). */
  hasOptimizerState = false;
  /** The training state of a loaded checkpoint (null when none was saved). */
  trainInfo: Record<string, unknown> | null = null;

  private constructor(readonly backend: PixelBackend) {}

  /** The model's architecture. */
  get config(): PixelRNNConfig {
    return this.backend.shape;
  }

  /** Pixels per image. */
  get pixels(): number {
    return this.config.rows * this.config.cols;
  }

  /**
   * A new model with PyTorch's default initialisation of convolutions, U(−1/√fan_in, 1/√fan_in) for
   * every weight and bias (fan_in = in channels × kernel taps, the masked taps counted as PyTorch
   * counts them), class biases 0; from a seeded generator, so both backends start from the same weights.
   */
  static create(config: Partial<PixelRNNConfig> = {}, opts: PixelCreateOptions = {}): PixelRNN {
    // Fields left out or undefined take the defaults; `classes` undefined means unconditional.
    const shape: PixelRnnShape = { ...DEFAULT_PIXEL_RNN };
    for (const [k, v] of Object.entries(config))
      if (v !== undefined) (shape as unknown as Record<string, unknown>)[k] = v;
    validatePixelShape(shape);
    const backend = createPixelBackend(shape, opts.backend, opts.device);
    const rng = new Rng(opts.seed ?? 0);
    const H = shape.hidden;
    const fanIn = (name: string): number => {
      if (name.startsWith('input_conv.')) return INPUT_KERNEL * INPUT_KERNEL;
      if (name.startsWith('rows.')) return H * ROW_KERNEL;
      return H;
    };
    for (const p of backend.paramInfo()) {
      const data = new Float32Array(p.shape.reduce((a, b) => a * b, 1));
      if (!p.name.endsWith('label_bias')) {
        const bound = 1 / Math.sqrt(fanIn(p.name));
        for (let i = 0; i < data.length; i++) data[i] = rng.range(-bound, bound);
      }
      backend.setParam(p.name, data);
    }
    return new PixelRNN(backend);
  }

  /** A copy of the weights (not optimizer state) on another backend. */
  to(backend: BackendName, device: DeviceName = 'cpu'): PixelRNN {
    const other = createPixelBackend(this.config, backend, device);
    for (const p of this.backend.paramInfo()) other.setParam(p.name, this.backend.getParam(p.name));
    return new PixelRNN(other);
  }

  /**
   * The number of images in `images [n, R, C]` after checking the size and that every value is a pixel
   * of this model's head (0…255, or 0/1 for the Bernoulli head: binarise first with `binarizeImages`).
   */
  checkImages(images: Uint8Array, what: string): number {
    const P = this.pixels;
    if (!(images instanceof Uint8Array)) throw new ShapeError(`${what} must be a Uint8Array of pixel values`);
    if (images.length === 0 || images.length % P !== 0) {
      throw new ShapeError(
        `${what}: ${images.length} values are not whole ${this.config.rows}×${this.config.cols} images (${P} values each)`,
      );
    }
    const levels = pixelTargetLevels(this.config.output);
    for (let i = 0; i < images.length; i++) {
      if (images[i] >= levels) {
        throw new DataError(
          `${what}: value ${images[i]} at image ${Math.floor(i / P)}, pixel ${i % P} is not a ${this.config.output} pixel (0…${levels - 1})${this.config.output === 'bernoulli' ? ': binarise 8-bit images first' : ''}`,
        );
      }
    }
    return images.length / P;
  }

  /** `[n]` labels as the backend takes them, checked against the model's classes. */
  labelsFor(n: number, labels: ArrayLike<number> | number | undefined, what: string): Int32Array | null {
    const K = this.config.classes;
    if (K === undefined) {
      if (labels !== undefined) throw new ConfigError(`${what}: this model is not class-conditional; give no labels`);
      return null;
    }
    if (labels === undefined)
      throw new ConfigError(`${what}: this model is class-conditional (${K} classes): labels are required`);
    const out = typeof labels === 'number' ? new Int32Array(n).fill(labels) : Int32Array.from(labels);
    if (out.length !== n) throw new ShapeError(`${what}: ${out.length} labels for ${n} images`);
    for (let i = 0; i < n; i++) {
      const v = typeof labels === 'number' ? labels : labels[i];
      if (!Number.isInteger(v) || v < 0 || v >= K) {
        throw new DataError(`${what}: label ${v} of image ${i} is not a class of this model (0…${K - 1})`);
      }
    }
    return out;
  }

  /** The model inputs of pixel values: v/255 (categorical head) or the bits themselves (Bernoulli). */
  inputs(images: Uint8Array): Float32Array {
    const out = new Float32Array(images.length);
    for (let i = 0; i < images.length; i++) out[i] = pixelInputValue(this.config.output, images[i]);
    return out;
  }

  /**
   * Trains on `images [n, R, C]` (pixel values of the head's range): minibatches drawn with
   * replacement from a seeded generator, AdamW, the schedule of {@link FlowTrainOptions}. To continue
   * a run, save with `{ optimizer: true }`, load, and fit the same data with `resume: { step }`.
   */
  async fit(images: Uint8Array, opts: PixelTrainOptions = {}): Promise<FlowTrainSummary> {
    checkResumable(this.hasOptimizerState, opts.resume);
    const n = this.checkImages(images, 'training images');
    const labels = this.labelsFor(n, opts.labels, 'training images');
    let validate: (() => Promise<number>) | undefined;
    if (opts.valImages !== undefined) {
      const val = opts.valImages;
      this.checkImages(val, 'validation images');
      const valLabels = opts.valLabels;
      validate = async () => (await this.evaluate(val, valLabels)).natsPerImage;
    }
    const P = this.pixels;
    let x = new Float32Array(0);
    let t = new Uint8Array(0);
    let l: Int32Array | null = null;
    try {
      return await runFlowTraining(
        {
          n,
          step: (idx, opt) => {
            const B = idx.length;
            if (t.length !== B * P) {
              x = new Float32Array(B * P);
              t = new Uint8Array(B * P);
              l = labels ? new Int32Array(B) : null;
            }
            for (let b = 0; b < B; b++) {
              const src = images.subarray(idx[b] * P, (idx[b] + 1) * P);
              t.set(src, b * P);
              for (let k = 0; k < P; k++) x[b * P + k] = pixelInputValue(this.config.output, src[k]);
              if (l && labels) l[b] = labels[idx[b]];
            }
            return this.backend.trainStep(x, t, l, B, opt);
          },
          validate,
        },
        opts,
      );
    } finally {
      if (this.backend.getOptimStep() > 0) this.hasOptimizerState = true;
    }
  }

  /** Each image's NLL in nats, `[n]`. */
  async nll(images: Uint8Array, labels?: ArrayLike<number>): Promise<Float64Array> {
    const n = this.checkImages(images, 'images');
    const l = this.labelsFor(n, labels, 'images');
    const P = this.pixels;
    const out = new Float64Array(n);
    for (let s = 0; s < n; s += CHUNK) {
      const e = Math.min(n, s + CHUNK);
      const t = images.subarray(s * P, e * P);
      out.set(await this.backend.nll(this.inputs(t), t, l ? l.subarray(s, e) : null, e - s), s);
    }
    return out;
  }

  /**
   * The mean NLL of `images` in nats per image and its bits per dimension. This is the exact discrete
   * likelihood of the pixel values (no dequantisation): for 8-bit images it is comparable with a flow's
   * dequantised `testBpd`, which is an upper bound on the same discrete quantity.
   */
  async evaluate(images: Uint8Array, labels?: ArrayLike<number>): Promise<PixelEvalResult> {
    const per = await this.nll(images, labels);
    let sum = 0;
    for (const v of per) sum += v;
    const natsPerImage = sum / per.length;
    if (!Number.isFinite(natsPerImage)) {
      throw new DataError(`the model's NLL is ${natsPerImage}: its weights are broken (a diverged run?)`);
    }
    return { natsPerImage, bitsPerDim: pixelBitsPerDim(this.config, natsPerImage), n: per.length };
  }

  /**
   * `n` images `[n, R, C]` of pixel values drawn pixel by pixel in raster order (exact ancestral
   * sampling), or with `top` the completions of given top rows.
   */
  async sample(opts: PixelSampleOptions): Promise<Uint8Array> {
    const { n } = opts;
    if (!Number.isSafeInteger(n) || n < 1) throw new ConfigError(`sample: n must be a whole number ≥ 1, got ${n}`);
    const { rows: R, cols: C } = this.config;
    const labels = this.labelsFor(n, opts.label, 'sample');
    let topRows = 0;
    let top: Uint8Array | null = null;
    if (opts.top) {
      topRows = opts.top.rows;
      if (!Number.isInteger(topRows) || topRows < 0 || topRows > R) {
        throw new ConfigError(`sample: top.rows must be a whole number in 0…${R}, got ${topRows}`);
      }
      const m = this.checkImages(opts.top.images, 'sample: top images');
      if (m !== n) throw new ShapeError(`sample: ${m} top images for n = ${n}`);
      top = new Uint8Array(n * topRows * C);
      for (let s = 0; s < n; s++)
        top.set(opts.top.images.subarray(s * R * C, s * R * C + topRows * C), s * topRows * C);
    }
    const rng = new Rng(opts.seed ?? 0);
    const uniforms = new Float32Array(n * R * C);
    for (let i = 0; i < uniforms.length; i++) uniforms[i] = rng.uniform();
    return this.backend.sample({ n, uniforms, labels, topRows, top });
  }

  /**
   * One safetensors file, written atomically: the weights under their PyTorch names, the config in the
   * metadata (kind 'pixel-rnn'). With `optimizer`, the AdamW state under the char LM's names, for resume.
   */
  async save(path: string, opts: { optimizer?: boolean; train?: Record<string, unknown> } = {}): Promise<void> {
    const { tensors, metadata } = checkpointContents(
      this.backend,
      PIXEL_KIND,
      { config: JSON.stringify(this.config) },
      opts,
    );
    saveSafetensors(path, tensors, metadata);
  }

  /**
   * Loads a checkpoint of {@link PixelRNN.save}: CheckpointError for a foreign, corrupt or mismatched
   * file; the config and every tensor are checked before a backend is built.
   */
  static load(path: string, opts: { backend?: BackendName; device?: DeviceName } = {}): PixelRNN {
    const { tensors, metadata } = loadSafetensors(path);
    if (!isCheckpointOf(metadata, PIXEL_KIND)) {
      throw new CheckpointError(
        `${path} is not an arflow Pixel-RNN checkpoint (metadata format=${metadata.format ?? 'none'}, kind=${metadata.kind ?? 'none'}; expected kind=${PIXEL_KIND})`,
      );
    }
    let config: PixelRNNConfig;
    let params: { name: string; shape: number[] }[];
    try {
      config = JSON.parse(metadata.config) as PixelRNNConfig;
      params = pixelParamInfo(config);
    } catch (e) {
      throw new CheckpointError(
        `${path}: unreadable or invalid Pixel-RNN config in metadata (${(e as Error).message})`,
      );
    }
    const needs = `a Pixel-RNN of config ${metadata.config}`;
    const { rest, optimizer } = readOptimizerState(path, tensors, metadata, params, needs);
    const checked = expectTensors(path, rest, params, needs);
    const trainInfo = readTrainInfo(path, metadata);
    const model = new PixelRNN(createPixelBackend(config, opts.backend, opts.device));
    for (const [name, data] of checked) model.backend.setParam(name, data);
    if (optimizer) applyOptimizerState(path, model.backend, optimizer);
    model.hasOptimizerState = optimizer !== null;
    model.trainInfo = trainInfo;
    return model;
  }
}
