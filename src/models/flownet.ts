/**
 * `Flow`: a normalizing flow built from a FlowNet spec (`src/backend/flownet-types.ts`) — vector or
 * image Real NVP, Glow, NICE, MAF, IAF, or any stack of their layers — with exact log-likelihood,
 * sampling, encoding and decoding, optional conditioning, and checkpoints. It runs on the native
 * backend, or on the TypeScript one (`backend: 'js'`) for the specs that one trains (couplings with MLP
 * conditioners, scale and reverse layers).
 *
 * Data lives in one of two spaces:
 * - `real`: `[n, D]` float vectors, modelled as they are;
 * - `pixels`: `[n, C·H·W]` 8-bit images. Each training batch is dequantised afresh (x = (p + u)/256)
 *   and mapped by the logit transform (α = 0.05) into the flow's space; {@link Flow.bitsPerDim} and
 *   {@link Flow.testNll} account for both steps (`src/flows/preprocess.ts`), and samples come back as
 *   pixels.
 *
 * ```ts
 * const flow = Glow.create({ shape: [1, 28, 28], levels: 2, steps: 4 }, { pixels: true });
 * await flow.fit(train.images, { steps: 500, labels: train.labels });
 * const { bpd } = await flow.bitsPerDim(test.images);
 * const grid = flow.sampleImages(64, { temperature: 0.7 });
 * ```
 */
import type { FlowNetBackend, FlowNetSpec, LayerSpec, TensorInfo } from '../backend/flownet-types.js';
import type { BackendName, DeviceName } from '../backend/index.js';
import { flowNetTensorInfo } from '../backend/js/flownet.js';
import { JsFlowNetBackend } from '../backend/js/flownet-backend.js';
import { checkTrainable } from '../backend/js/flownet-grad.js';
import { checkParamCount, describeValue } from '../backend/limits.js';
import { checkDeviceName } from '../backend/native.js';
import { NativeFlowNet } from '../backend/native-flownet.js';
import { CheckpointError, ConfigError, DataError, ShapeError } from '../errors.js';
import {
  dequantize,
  LOGIT_ALPHA,
  logitForward,
  logitInverse,
  meanBitsPerDim,
  PIXEL_BITS,
  quantize,
} from '../flows/preprocess.js';
import {
  applyOptimizerState,
  checkpointContents,
  checkResumable,
  expectTensors,
  isCheckpointOf,
  readOptimizerState,
  readTrainInfo,
} from '../io/checkpoint.js';
import { loadSafetensors, type SafetensorsContents, saveSafetensors } from '../io/safetensors.js';
import { type FlowTrainOptions, type FlowTrainSummary, runFlowTraining } from '../train/flow-trainer.js';
import { Rng } from '../util/rng.js';
import {
  type GlowConfig,
  glowSpec,
  iafSpec,
  mafSpec,
  niceSpec,
  type RealNvpImageConfig,
  realNvpImageSpec,
  type VectorFlowConfig,
} from './presets.js';

export const FLOWNET_KIND = 'flow-net';
/** Examples per backend call when scoring or mapping large arrays of images: small enough that
 * activations stay under the allocator's mmap threshold (1024 scored 3× slower than 64 on the Real NVP
 * preset). */
const CHUNK = 64;
/** Values per backend call for vectors (`[D, 1, 1]`): 8192 2-D points, as few calls as a 2-D grid needs. */
const VECTOR_CHUNK_VALUES = 16384;

/** Examples per backend call for a flow of `shape`: {@link CHUNK} images, or up to 8192 vectors. */
function chunkOf([C, H, W]: readonly number[]): number {
  return H * W === 1 ? Math.max(CHUNK, Math.min(8192, Math.floor(VECTOR_CHUNK_VALUES / C))) : CHUNK;
}

/**
 * Contexts `[n, K]` as given to the API: a Float32Array, or a Float64Array or plain array of numbers
 * (converted to float32; values must be finite).
 */
export type ContextInput = Float32Array | Float64Array | readonly number[];

/** Options of {@link Flow.create} and the presets: backend, device, seed and data space. */
export interface FlowNetCreateOptions {
  /**
   * 'native' (Rust on candle, the default) or 'js' (pure TypeScript, float64 math on float32 weights:
   * slow, CPU only; it trains specs of couplings with MLP conditioners, scale and reverse layers, such
   * as the vector Real NVP and NICE, and refuses others with a ConfigError). Both start from the same
   * values for the same seed.
   */
  backend?: BackendName;
  device?: DeviceName;
  /** Seed of the initialisation. Default 0. */
  seed?: number;
  /** Model 8-bit images (dequantisation + logit) rather than real vectors. Default false. */
  pixels?: boolean;
}

/** Options of {@link Flow.sample}. */
export interface FlowNetSampleOptions {
  /** Scale of the base samples: z ~ N(0, T²I) or T·Logistic. Default 1; must be > 0. */
  temperature?: number;
  seed?: number;
  /** Class labels `[n]` (one-hot context) for a conditional flow: integers in 0..K−1. */
  labels?: ArrayLike<number>;
  /** Or the raw context `[n, K]` (not both). */
  context?: ContextInput;
}

/** Conditioning of one call: class labels or raw contexts (not both), for a conditional flow only. */
export interface FlowNetCondition {
  labels?: ArrayLike<number>;
  context?: ContextInput;
}

/** Options of {@link Flow.fit}: the flow trainer's, plus conditioning labels or contexts. */
export interface FlowNetTrainOptions extends Omit<FlowTrainOptions, 'valData'> {
  /** Labels `[n]` of the training data, turned into one-hot contexts (conditional flows). */
  labels?: ArrayLike<number>;
  /** Or raw contexts `[n, K]` (not both). */
  context?: ContextInput;
  /** Held-out data (same space as the training data) scored every `valEvery` steps and at the end. */
  valData?: Float32Array | Uint8Array;
  valLabels?: ArrayLike<number>;
  valContext?: ContextInput;
}

type Data = Float32Array | Uint8Array;

/** A seed must be a whole number ≥ 0 (NaN, −1 or 1.5 would quietly act as some other seed). */
export function checkSeed(seed: unknown, what = 'seed'): number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0)
    throw new ConfigError(`${what} must be a whole number ≥ 0, got ${describeValue(seed)}`);
  return seed;
}

/** The size fields of layer `l` that set its tensors' sizes, for a message. */
function sizeFields(l: LayerSpec): string {
  if (l.type === 'made') return `hidden ${l.hidden}, depth ${l.depth}`;
  if (l.type === 'coupling')
    return l.net.type === 'mlp'
      ? `net.hidden ${l.net.hidden}, net.depth ${l.net.depth}`
      : `net.channels ${l.net.channels}, net.blocks ${l.net.blocks}`;
  return 'no size fields of its own';
}

/** ConfigError when the flow of `spec` would hold more than 2³¹ parameters, naming the field to lower. */
function checkFlowNetSize(spec: FlowNetSpec, params: TensorInfo[]): void {
  checkParamCount('this flow', params, (big) => {
    const k = Number(/^layers\.(\d+)\./.exec(big.name)?.[1]);
    const l = spec.layers[k];
    return `layer ${k} (${l.type}) has ${sizeFields(l)} in a flow of shape [${spec.shape.join(', ')}] and context ${spec.context}; make them smaller`;
  });
}

/**
 * `xs`, samples `[n, dim]` of a flow, unchanged; a DataError when some are not finite: the flow's
 * weights are broken (a corrupt or tampered checkpoint, training that diverged) or the temperature is
 * far too high. Samples are never returned with NaN or ±Infinity in them.
 */
export function checkFiniteSamples<T extends Float32Array>(xs: T, dim: number): T {
  let rows = 0;
  let first = -1;
  for (let r = 0; r * dim < xs.length; r++) {
    for (let d = 0; d < dim; d++) {
      if (!Number.isFinite(xs[r * dim + d])) {
        if (first < 0) first = r * dim + d;
        rows++;
        break;
      }
    }
  }
  if (rows === 0) return xs;
  throw new DataError(
    `samples: the flow maps ${rows} of ${xs.length / dim} base samples to non-finite values (sample ${Math.floor(first / dim)}: ${xs[first]}): ` +
      'its weights may be broken (a corrupt or tampered checkpoint, or training that diverged), or the temperature is far too high',
  );
}

/**
 * A normalizing flow built from a {@link FlowNetSpec} — vector or image Real NVP, Glow, NICE, MAF, IAF
 * or any stack of their layers — with exact log-likelihood, sampling, encoding and decoding,
 * conditioning and checkpoints. The presets ({@link MAF}, {@link Glow}, {@link RealNVP}…) build one from
 * a small config.
 *
 * ```ts
 * import { MAF, sample2d } from 'arflow';
 * const flow = MAF.create({ dim: 2, layers: 2, hidden: 16 });
 * await flow.fit(sample2d('moons', 512, 1), { steps: 20, batchSize: 64 });
 * console.log(await flow.logProb(sample2d('moons', 4, 2)), flow.sample(3, { seed: 2 }));
 * ```
 */
export class Flow {
  /** What the checkpoint recorded about training, or null. */
  trainInfo: Record<string, unknown> | null = null;
  /**
   * Whether this flow holds optimizer state a run can continue from (`fit` with `resume`): loaded from
   * a checkpoint that had it (now restored), or trained by `fit` in this process. False for a new flow
   * and for one loaded from a checkpoint saved without `{ optimizer: true }`.
   */
  hasOptimizerState = false;
  /** D = C·H·W. */
  readonly dim: number;

  /** Examples per backend call when scoring or mapping. */
  private readonly chunk: number;

  private constructor(
    readonly spec: FlowNetSpec,
    readonly backend: FlowNetBackend,
    readonly space: 'real' | 'pixels',
  ) {
    this.dim = spec.shape[0] * spec.shape[1] * spec.shape[2];
    this.chunk = chunkOf(spec.shape);
  }

  /**
   * A new flow of `spec`, initialised from `seed`. The spec is validated (ConfigError naming the layer
   * and field) and sized before anything is allocated: a flow of more than 2³¹ parameters, or one the
   * native allocator cannot hold with its optimizer state, is a ConfigError, never a crash. So is a
   * spec the TypeScript backend cannot train, with `backend: 'js'` (on a device other than cpu too).
   */
  static create(spec: FlowNetSpec, opts: FlowNetCreateOptions = {}): Flow {
    const seed = checkSeed(opts.seed ?? 0);
    checkFlowNetSize(spec, flowNetTensorInfo(spec).params);
    const device = opts.device ?? 'cpu';
    const space = opts.pixels ? 'pixels' : 'real';
    const backend = opts.backend ?? 'native';
    if (backend === 'native') return new Flow(spec, new NativeFlowNet(spec, seed, device), space);
    if (backend !== 'js') throw new ConfigError(`unknown backend ${JSON.stringify(backend)}: expected native or js`);
    if (device !== 'cpu' && device !== 'auto')
      throw new ConfigError(`the TypeScript backend runs on cpu only, not ${device}`);
    return new Flow(spec, new JsFlowNetBackend(spec, seed), space);
  }

  /** Context values per example (0 for an unconditional flow). */
  get contextSize(): number {
    return this.spec.context;
  }

  /** Checks `x` holds whole examples of finite values (or bytes, for pixel data) and returns n. */
  checkData(x: Data, what = 'data'): number {
    const D = this.dim;
    if (this.space === 'pixels' && !(x instanceof Uint8Array))
      throw new ShapeError(`${what} must be a Uint8Array of 8-bit pixels [n, ${D}] for this image flow`);
    if (this.space === 'real' && !(x instanceof Float32Array))
      throw new ShapeError(`${what} must be a Float32Array [n, ${D}]`);
    if (x.length % D !== 0 || x.length === 0)
      throw new ShapeError(`${what} holds ${x.length} values, not a whole, non-zero number of ${D}-value examples`);
    if (x instanceof Float32Array) {
      for (let i = 0; i < x.length; i++) {
        if (!Number.isFinite(x[i]))
          throw new DataError(`${what}: value ${i} (example ${Math.floor(i / D)}) is not finite (${x[i]})`);
      }
    }
    return x.length / D;
  }

  /**
   * `[n, K]` contexts from one-hot labels or raw contexts, or null for an unconditional flow.
   *
   * `context` may be a Float32Array (used as it is) or a Float64Array or plain array of numbers
   * (converted to float32); it must hold n·K finite values. `labels` must hold n integers in 0..K−1.
   * Giving both is a ConfigError (which one was meant?), as is giving either to an unconditional flow.
   */
  contextFor(n: number, labels?: ArrayLike<number>, context?: ContextInput, what = 'data'): Float32Array | null {
    const K = this.spec.context;
    if (K === 0) {
      if (labels !== undefined || context !== undefined)
        throw new ConfigError(`${what}: this flow is unconditional (context 0) but labels or a context were given`);
      return null;
    }
    if (labels !== undefined && context !== undefined)
      throw new ConfigError(`${what}: give labels or a context, not both`);
    if (context !== undefined) {
      let c: Float32Array;
      if (context instanceof Float32Array) c = context;
      else if (context instanceof Float64Array) c = Float32Array.from(context);
      else if (Array.isArray(context)) {
        const bad = context.findIndex((v) => typeof v !== 'number');
        if (bad >= 0)
          throw new DataError(`${what}: context value ${bad} is ${describeValue(context[bad])}, not a number`);
        c = Float32Array.from(context);
      } else {
        throw new ShapeError(
          `${what}: context must be a Float32Array [${n}, ${K}] (or a Float64Array or array of numbers), got ${describeValue(context)}`,
        );
      }
      if (c.length !== n * K)
        throw new ShapeError(`${what}: context must be [${n}, ${K}] = ${n * K} values, got ${c.length} values`);
      for (let i = 0; i < c.length; i++) {
        if (!Number.isFinite(c[i]))
          throw new DataError(
            `${what}: context value ${i} (example ${Math.floor(i / K)}) is not finite as a float32 (${context[i]})`,
          );
      }
      return c;
    }
    if (labels === undefined) throw new ConfigError(`${what}: this flow is conditional: give labels or a context`);
    if (labels === null || typeof labels !== 'object' || typeof labels.length !== 'number')
      throw new ShapeError(`${what}: labels must be an array of ${n} class indices, got ${describeValue(labels)}`);
    if (labels.length !== n) throw new ShapeError(`${what}: ${labels.length} labels for ${n} examples`);
    const c = new Float32Array(n * K);
    for (let i = 0; i < n; i++) {
      const l: unknown = labels[i];
      if (typeof l !== 'number' || !Number.isInteger(l))
        throw new DataError(`${what}: label ${i} is ${describeValue(l)}, not an integer class index in 0..${K - 1}`);
      if (l < 0 || l >= K) throw new DataError(`${what}: label ${i} is ${l}, not in 0..${K - 1}`);
      c[i * K + l] = 1;
    }
    return c;
  }

  /**
   * Flow-space values of examples `[n, D]` and the per-example log-det of the map into that space
   * (zero for real data; for pixels, dequantisation with `rng` then the logit, whose log-det is
   * returned).
   */
  toFlowSpace(x: Data, rng: Rng): { y: Float32Array; logdet: Float64Array } {
    if (x instanceof Float32Array) return { y: x, logdet: new Float64Array(x.length / this.dim) };
    const r = logitForward(dequantize(x, { seed: rng }), this.dim, LOGIT_ALPHA);
    return { y: r.y as Float32Array, logdet: r.logdet };
  }

  /**
   * Trains on `data` (see {@link FlowNetTrainOptions}). To continue a run: save it with
   * `{ optimizer: true }`, load it, and fit the same data with the same seed and options plus
   * `resume: { step }` (the steps it took; `steps` counts them too). A ConfigError when this flow
   * holds no optimizer state to continue ({@link hasOptimizerState}).
   */
  async fit(data: Data, opts: FlowNetTrainOptions = {}): Promise<FlowTrainSummary> {
    checkResumable(this.hasOptimizerState, opts.resume);
    try {
      return await this.train(data, opts);
    } finally {
      if (this.backend.getOptimStep() > 0) this.hasOptimizerState = true;
    }
  }

  private async train(data: Data, opts: FlowNetTrainOptions): Promise<FlowTrainSummary> {
    const D = this.dim;
    const n = this.checkData(data, 'training data');
    const ctx = this.contextFor(n, opts.labels, opts.context, 'training data');
    const K = this.spec.context;
    let validate: (() => Promise<number>) | undefined;
    if (opts.valData !== undefined) {
      const val = opts.valData;
      const m = this.checkData(val, 'validation data');
      const vctx = this.contextFor(m, opts.valLabels, opts.valContext, 'validation data');
      // Validation reports a non-finite NLL as it is rather than ending the run (testNll would throw).
      validate = async () => (await this.score(val, m, vctx, 1, 'validation data', false)).nll;
    }
    const rng = new Rng((opts.seed ?? 0) + 0x5eed);
    const bytes = data instanceof Uint8Array;
    let raw: Data = new Float32Array(0);
    let c = new Float32Array(0);
    return runFlowTraining(
      {
        n,
        step: (idx, opt) => {
          const B = idx.length;
          if (raw.length !== B * D) {
            raw = bytes ? new Uint8Array(B * D) : new Float32Array(B * D);
            c = new Float32Array(B * K);
          }
          for (let b = 0; b < B; b++) {
            raw.set(data.subarray(idx[b] * D, (idx[b] + 1) * D), b * D);
            if (ctx) c.set(ctx.subarray(idx[b] * K, (idx[b] + 1) * K), b * K);
          }
          const { y } = this.toFlowSpace(raw, rng);
          return this.backend.trainStep(y, ctx ? c : null, B, opt);
        },
        validate,
        // Each step of an image flow draws one uniform per pixel of its batch to dequantise it.
        skip: (steps, batch) => {
          if (bytes) for (let i = steps * batch * D; i > 0; i--) rng.u32();
        },
      },
      opts,
    );
  }

  /** Per-example log-density (nats) of flow-space values `[n, D]`. */
  async logProb(y: Float32Array, opts: FlowNetCondition = {}): Promise<Float32Array> {
    const D = this.dim;
    const n = this.checkReal(y, 'data');
    const ctx = this.contextFor(n, opts.labels, opts.context);
    const out = new Float32Array(n);
    for (let s = 0; s < n; s += this.chunk) {
      const e = Math.min(n, s + this.chunk);
      out.set(await this.backend.logProb(y.subarray(s * D, e * D), this.slice(ctx, s, e), e - s), s);
    }
    return out;
  }

  /**
   * Mean test NLL in nats per example of the data's own space: for real data −log p(x); for pixels the
   * dequantised bound −log p(p + u) over [0, 256)^D (one noise draw per image, from `seed`, default 0),
   * with `bpd` its bits per dimension (`meanBitsPerDim` of `src/flows/preprocess.ts` for pixels).
   *
   * A DataError when the flow's log-density is not finite for some example: the weights are broken
   * (a corrupt or tampered checkpoint, training that blew up) or the data lie far outside what the
   * flow was trained on. {@link logProb} returns such values as they are.
   */
  async testNll(data: Data, opts: FlowNetCondition & { seed?: number } = {}): Promise<{ nll: number; bpd: number }> {
    const n = this.checkData(data, 'test data');
    const seed = checkSeed(opts.seed ?? 0, 'seed (of the dequantisation noise)');
    const ctx = this.contextFor(n, opts.labels, opts.context, 'test data');
    return this.score(data, n, ctx, seed, 'test data', true);
  }

  /** Mean NLL and bits/dim of n checked examples; non-finite results throw when `strict`. */
  private async score(
    data: Data,
    n: number,
    ctx: Float32Array | null,
    seed: number,
    what: string,
    strict: boolean,
  ): Promise<{ nll: number; bpd: number }> {
    const D = this.dim;
    const { y, logdet } = this.toFlowSpace(data, new Rng(seed));
    const lp = await this.logProb(y, { context: ctx ?? undefined });
    const bad = lp.findIndex((v) => !Number.isFinite(v));
    if (strict && bad >= 0) {
      const count = lp.reduce((c, v) => c + (Number.isFinite(v) ? 0 : 1), 0);
      throw new DataError(
        `${what}: the flow's log-density is not finite for ${count} of ${n} examples (example ${bad}: ${lp[bad]}), ` +
          'so there is no NLL to report: its weights may be broken (a corrupt or tampered checkpoint, or training ' +
          'that diverged), or the data lie far outside what it was trained on',
      );
    }
    const nllY = Float64Array.from(lp, (v) => -v);
    let nll: number;
    let bpd: number;
    if (this.space === 'pixels') {
      bpd = meanBitsPerDim(nllY, D, logdet);
      let sum = 0;
      for (let i = 0; i < n; i++) sum += nllY[i] - logdet[i];
      nll = sum / n + D * PIXEL_BITS * Math.LN2;
    } else {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += nllY[i];
      nll = sum / n;
      bpd = nll / (D * Math.LN2);
    }
    return { nll, bpd };
  }

  /** Bits per dimension of 8-bit images (see {@link testNll}). */
  async bitsPerDim(
    pixels: Uint8Array,
    opts: FlowNetCondition & { seed?: number } = {},
  ): Promise<{ bpd: number; nll: number }> {
    if (this.space !== 'pixels') throw new ConfigError('bitsPerDim needs an image flow (created with pixels: true)');
    return this.testNll(pixels, opts);
  }

  /** z = f(y) for flow-space values `[n, D]`. */
  encode(y: Float32Array, opts: FlowNetCondition = {}): Float32Array {
    const n = this.checkReal(y, 'data');
    const ctx = this.contextFor(n, opts.labels, opts.context);
    return this.mapChunks(y, ctx, (a, c, b) => this.backend.encode(a, c, b).z);
  }

  /** y = f⁻¹(z) in flow space `[n, D]`. */
  decode(z: Float32Array, opts: FlowNetCondition = {}): Float32Array {
    const n = this.checkReal(z, 'latent');
    const ctx = this.contextFor(n, opts.labels, opts.context);
    return this.mapChunks(z, ctx, (a, c, b) => this.backend.decode(a, c, b).x);
  }

  /** `n` base samples at temperature T, `[n, D]`. */
  sampleLatent(n: number, opts: FlowNetSampleOptions = {}): Float32Array {
    const T = opts.temperature ?? 1;
    if (!(Number.isFinite(T) && T > 0)) throw new ConfigError(`temperature must be a finite number > 0, got ${T}`);
    if (!Number.isSafeInteger(n) || n < 1)
      throw new ConfigError(`sample count must be a whole number ≥ 1, got ${describeValue(n)}`);
    const rng = new Rng(checkSeed(opts.seed ?? 0));
    const z = new Float32Array(n * this.dim);
    if (this.spec.base === 'logistic') {
      for (let i = 0; i < z.length; i++) {
        const u = Math.min(Math.max(rng.uniform(), 1e-7), 1 - 1e-7);
        z[i] = T * Math.log(u / (1 - u));
      }
    } else {
      for (let i = 0; i < z.length; i++) z[i] = T * rng.normal();
    }
    return z;
  }

  /** `n` samples in flow space `[n, D]`. */
  sample(n: number, opts: FlowNetSampleOptions = {}): Float32Array {
    const z = this.sampleLatent(n, opts);
    return checkFiniteSamples(this.decode(z, { labels: opts.labels, context: opts.context }), this.dim);
  }

  /** `n` sampled images as 8-bit pixels `[n, D]` (image flows). */
  sampleImages(n: number, opts: FlowNetSampleOptions = {}): Uint8Array {
    if (this.space !== 'pixels') throw new ConfigError('sampleImages needs an image flow (created with pixels: true)');
    return quantize(logitInverse(this.sample(n, opts), LOGIT_ALPHA));
  }

  /**
   * `steps` (≥ 2) examples from a to b (one example each, in the data's space), linear in the latent:
   * pixels for an image flow, flow-space vectors otherwise.
   */
  interpolate(a: Data, b: Data, steps: number, opts: { label?: number } = {}): Data {
    const D = this.dim;
    if (this.checkData(a, 'a') !== 1 || this.checkData(b, 'b') !== 1)
      throw new ShapeError(`interpolate: a and b must each hold one example of ${D} values`);
    if (!Number.isSafeInteger(steps) || steps < 2)
      throw new ConfigError(`interpolate: steps must be a whole number ≥ 2, got ${steps}`);
    const rng = new Rng(0);
    const one = opts.label === undefined ? undefined : [opts.label];
    const za = this.encode(this.toFlowSpace(a, rng).y, { labels: one });
    const zb = this.encode(this.toFlowSpace(b, rng).y, { labels: one });
    const z = new Float32Array(steps * D);
    for (let s = 0; s < steps; s++) {
      const t = s / (steps - 1);
      for (let d = 0; d < D; d++) z[s * D + d] = (1 - t) * za[d] + t * zb[d];
    }
    const labels = opts.label === undefined ? undefined : new Array(steps).fill(opts.label);
    const y = this.decode(z, { labels });
    return this.space === 'pixels' ? quantize(logitInverse(y, LOGIT_ALPHA)) : y;
  }

  private checkReal(y: Float32Array, what: string): number {
    if (!(y instanceof Float32Array)) throw new ShapeError(`${what} must be a Float32Array [n, ${this.dim}]`);
    if (y.length % this.dim !== 0 || y.length === 0)
      throw new ShapeError(
        `${what} holds ${y.length} values, not a whole, non-zero number of ${this.dim}-value examples`,
      );
    for (let i = 0; i < y.length; i++) {
      if (!Number.isFinite(y[i])) throw new DataError(`${what}: value ${i} is not finite (${y[i]})`);
    }
    return y.length / this.dim;
  }

  private slice(ctx: Float32Array | null, s: number, e: number): Float32Array | null {
    const K = this.spec.context;
    return ctx ? ctx.subarray(s * K, e * K) : null;
  }

  private mapChunks(
    x: Float32Array,
    ctx: Float32Array | null,
    f: (a: Float32Array, c: Float32Array | null, b: number) => Float32Array,
  ): Float32Array {
    const D = this.dim;
    const n = x.length / D;
    const out = new Float32Array(x.length);
    for (let s = 0; s < n; s += this.chunk) {
      const e = Math.min(n, s + this.chunk);
      out.set(f(x.subarray(s * D, e * D), this.slice(ctx, s, e), e - s), s * D);
    }
    return out;
  }

  /** Every parameter and buffer by name. */
  tensorInfo(): { params: TensorInfo[]; buffers: TensorInfo[] } {
    return { params: this.backend.paramInfo(), buffers: this.backend.bufferInfo() };
  }

  /**
   * One safetensors file (written atomically): parameters and buffers under their names; spec, space
   * and `train` in the metadata. With `optimizer`, also the AdamW moments of every parameter (not the
   * buffers) as `optimizer.exp_avg.<name>` / `optimizer.exp_avg_sq.<name>` and the step count as
   * `optimizer_step` (the char LM's names), so that training can continue exactly: {@link Flow.load},
   * then `fit` with `resume`.
   */
  async save(path: string, opts: { optimizer?: boolean; train?: Record<string, unknown> } = {}): Promise<void> {
    const { tensors, metadata } = checkpointContents(
      this.backend,
      FLOWNET_KIND,
      { spec: JSON.stringify(this.spec), space: this.space },
      opts,
    );
    for (const b of this.backend.bufferInfo())
      tensors[b.name] = { dtype: 'F32', shape: b.shape, data: this.backend.getBuffer(b.name) };
    saveSafetensors(path, tensors, metadata);
  }

  /**
   * Loads a checkpoint of {@link Flow.save}. CheckpointError for foreign, corrupt or mismatched files:
   * the spec in the metadata is validated and every tensor of the file checked against the names,
   * shapes and dtype it implies (and for finite values) before any native model is built, so a
   * tampered size is an error, not an allocation of whatever it says. Optimizer state, when the file
   * has it, is checked the same way (all of it or none: see {@link Flow.save}) and restored
   * ({@link hasOptimizerState}). A device that is unknown (ConfigError) or cannot be opened here
   * (BackendError), or a spec the chosen backend cannot run (ConfigError), is not the checkpoint's fault.
   */
  static load(path: string, opts: { device?: DeviceName; backend?: BackendName } = {}): Flow {
    return flowFromCheckpoint(path, loadSafetensors(path), opts);
  }
}

/**
 * The flow of a checkpoint's contents, read from `path` (named in messages): {@link Flow.load} after
 * reading the file; the vector Real NVP also loads the files of older versions through it.
 */
export function flowFromCheckpoint(
  path: string,
  { tensors, metadata }: SafetensorsContents,
  opts: { device?: DeviceName; backend?: BackendName } = {},
): Flow {
  const device = checkDeviceName(opts.device ?? 'cpu') as DeviceName;
  if (!isCheckpointOf(metadata, FLOWNET_KIND)) {
    throw new CheckpointError(
      `${path} is a safetensors file but not an arflow flow checkpoint (metadata format=${metadata.format ?? 'none'}, kind=${metadata.kind ?? 'none'})`,
    );
  }
  let spec: FlowNetSpec;
  try {
    spec = JSON.parse(metadata.spec) as FlowNetSpec;
  } catch (e) {
    throw new CheckpointError(`${path}: unreadable spec in metadata (${(e as Error).message})`);
  }
  if (metadata.space !== 'real' && metadata.space !== 'pixels')
    throw new CheckpointError(`${path}: unknown data space ${JSON.stringify(metadata.space)} in metadata`);
  let params: TensorInfo[];
  let buffers: TensorInfo[];
  try {
    ({ params, buffers } = flowNetTensorInfo(spec));
    checkFlowNetSize(spec, params);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    throw new CheckpointError(`${path}: the spec in its metadata is not a valid flow (${e.message})`);
  }
  // A spec the TypeScript backend has no gradients for is that backend's limit, not the file's fault.
  if (opts.backend === 'js') checkTrainable(spec);
  const { rest, optimizer } = readOptimizerState(path, tensors, metadata, params, 'the spec');
  const checked = expectTensors(path, rest, [...params, ...buffers], 'the spec');
  const trainInfo = readTrainInfo(path, metadata);
  let flow: Flow;
  try {
    flow = Flow.create(spec, { device, backend: opts.backend, pixels: metadata.space === 'pixels' });
  } catch (e) {
    // The device was not available (BackendError): the checkpoint is fine, as is a backend name
    // unknown (ConfigError before any work). What else the backend refuses (a spec it reads
    // differently, a size it cannot allocate) is the checkpoint's.
    if (!(e instanceof ConfigError || e instanceof ShapeError) || /unknown backend|cpu only/.test(e.message)) throw e;
    throw new CheckpointError(`${path}: cannot build the flow its metadata describes (${e.message})`);
  }
  const bufferNames = new Set(buffers.map((b) => b.name));
  for (const [name, data] of checked) {
    try {
      if (bufferNames.has(name)) flow.backend.setBuffer(name, data);
      else flow.backend.setParam(name, data);
    } catch (e) {
      const m = (e as Error).message;
      throw new CheckpointError(`${path}: tensor ${name}: ${m.startsWith(`${name}: `) ? m.slice(name.length + 2) : m}`);
    }
  }
  if (optimizer) applyOptimizerState(path, flow.backend, optimizer);
  flow.trainInfo = trainInfo;
  flow.hasOptimizerState = optimizer !== null;
  return flow;
}

/** Real NVP's multi-scale image architecture ({@link realNvpImageSpec}); a pixel-space flow by default. */
export const RealNVPImage = {
  /** Builds an image Real NVP from its config; `opts` as for {@link Flow.create}. */
  create: (cfg: RealNvpImageConfig, opts: FlowNetCreateOptions = {}): Flow =>
    Flow.create(realNvpImageSpec(cfg), { pixels: true, ...opts }),
};

/** Glow ({@link glowSpec}); a pixel-space flow by default. */
export const Glow = {
  /** Builds a Glow flow from its config; `opts` as for {@link Flow.create}. */
  create: (cfg: GlowConfig, opts: FlowNetCreateOptions = {}): Flow =>
    Flow.create(glowSpec(cfg), { pixels: true, ...opts }),
};

/** NICE ({@link niceSpec}). */
export const NICE = {
  /** Builds a NICE flow from its config; `opts` as for {@link Flow.create}. */
  create: (cfg: VectorFlowConfig, opts: FlowNetCreateOptions = {}): Flow => Flow.create(niceSpec(cfg), opts),
};

/** MAF ({@link mafSpec}). */
export const MAF = {
  /** Builds a MAF flow from its config; `opts` as for {@link Flow.create}. */
  create: (cfg: VectorFlowConfig, opts: FlowNetCreateOptions = {}): Flow => Flow.create(mafSpec(cfg), opts),
};

/** IAF ({@link iafSpec}). */
export const IAF = {
  /** Builds an IAF flow from its config; `opts` as for {@link Flow.create}. */
  create: (cfg: VectorFlowConfig, opts: FlowNetCreateOptions = {}): Flow => Flow.create(iafSpec(cfg), opts),
};
