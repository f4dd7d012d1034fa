/**
 * Adapts the native addon's `NativeCaptioner` (the CNN encoder + recurrent decoder in Rust on candle;
 * see `crates/arflow-core/src/caption.rs`) for `src/models/captioner.ts`. Errors from Rust arrive as
 * `"<CODE>: message"` and are rethrown as arflow's typed errors.
 */
import { BackendError } from '../errors.js';
import { async, NativeParameters, type NativeParamModel, onNativeDevice, sync } from './native.js';
import type { Seq2SeqStepStats } from './native-seq2seq.js';
import type { CellKind, OptimConfig } from './types.js';

/** Sizes of a captioner. */
export interface CaptionShape {
  /** Words, PAD, BOS and EOS included. */
  vocab: number;
  embed: number;
  hidden: number;
  layers: number;
  cell: CellKind;
  /** Side of the square grayscale images, divisible by 2^channels.length. */
  image: number;
  /** Output channels of each 3×3 conv → ReLU → 2×2 mean-pool block. */
  channels: number[];
}

/**
 * One batch: `batch` images of `image × image` 8-bit pixels (row-major, 0 = black), decoder inputs (BOS,
 * then the caption) and targets (the caption, EOS, then PAD) `[B, T]`; for scheduled sampling, per-token
 * `flips` (1 = feed the ground truth) and the `uniforms` of the inverse-CDF samples `[B, T]`.
 */
export interface CaptionBatch {
  images: Uint8Array;
  decIn: Uint32Array;
  targets: Uint32Array;
  batch: number;
  tgtLen: number;
  flips?: Uint8Array;
  uniforms?: Float32Array;
}

type NativeModel = NativeParamModel & {
  trainStep(b: CaptionBatch, opt: OptimConfig): Promise<Seq2SeqStepStats>;
  lossAndGrads(
    b: CaptionBatch,
  ): Promise<{ loss: number; grads: { name: string; data: Float32Array }[]; inputs: Uint32Array }>;
  nll(b: CaptionBatch): Promise<{ nll: number; tokens: number }>;
  encode(images: Uint8Array, batch: number): Float32Array;
  decodeStep(state: Float32Array, tokens: Uint32Array): { state: Float32Array; logProbs: Float32Array };
};

interface CaptionAddon {
  NativeCaptioner?: new (shape: CaptionShape, device: string) => NativeModel;
}

/** The captioner on the native backend. */
export class NativeCaptioner extends NativeParameters<NativeModel> {
  protected readonly m: NativeModel;
  /** The device it runs on ('auto' resolved). */
  readonly device: string;

  constructor(
    readonly shape: CaptionShape,
    device = 'cpu',
  ) {
    super();
    const on = onNativeDevice(device, (addon, dev) => {
      const Ctor = (addon as unknown as CaptionAddon).NativeCaptioner;
      if (!Ctor) {
        throw new BackendError(
          'this arflow native addon predates the captioner; rebuild it with `npm run build:native`',
        );
      }
      return sync(() => new Ctor(shape, dev));
    });
    this.m = on.model;
    this.device = on.device;
  }

  trainStep(b: CaptionBatch, opt: OptimConfig): Promise<Seq2SeqStepStats> {
    return async(() => this.m.trainStep(b, opt));
  }
  async lossAndGrads(
    b: CaptionBatch,
  ): Promise<{ loss: number; grads: Record<string, Float32Array>; inputs: Uint32Array }> {
    const r = await async(() => this.m.lossAndGrads(b));
    const grads: Record<string, Float32Array> = {};
    for (const g of r.grads) grads[g.name] = g.data;
    return { loss: r.loss, grads, inputs: r.inputs };
  }
  nll(b: CaptionBatch): Promise<{ nll: number; tokens: number }> {
    return async(() => this.m.nll(b));
  }
  /** The decoder's initial state `[L, B, S]` for `batch` images. */
  encode(images: Uint8Array, batch: number): Float32Array {
    return sync(() => this.m.encode(images, batch));
  }
  /** One decoder step of N hypotheses: new state `[L, N, S]` and log-probabilities `[N, V]`. */
  decodeStep(state: Float32Array, tokens: Uint32Array): { state: Float32Array; logProbs: Float32Array } {
    return sync(() => this.m.decodeStep(state, tokens));
  }
}
