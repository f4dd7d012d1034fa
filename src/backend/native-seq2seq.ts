/**
 * Adapts the native addon's `NativeSeq2Seq` (the encoder–decoder in Rust on candle) to
 * {@link Seq2SeqBackend}. Errors from Rust arrive as `"<CODE>: message"` and are rethrown as arflow's
 * typed errors.
 */
import { BackendError } from '../errors.js';
import { async, NativeParameters, type NativeParamModel, onNativeDevice, sync } from './native.js';
import type { CellKind, OptimConfig } from './types.js';

/** Sizes of an encoder–decoder; see `crates/arflow-core/src/seq2seq/mod.rs` for the parameters. */
export interface Seq2SeqShape {
  srcVocab: number;
  tgtVocab: number;
  embed: number;
  hidden: number;
  layers: number;
  cell: CellKind;
  bidirectional: boolean;
}

/**
 * One batch: sources `[B, Ts]` (a batch shares one source length), decoder inputs (BOS, then the
 * target shifted right) and targets (the target, EOS, then PAD) `[B, Tt]`. For scheduled sampling,
 * per-token `flips` (1 = feed the ground truth) and the `uniforms` of the inverse-CDF samples `[B, Tt]`.
 */
export interface Seq2SeqBatch {
  src: Uint32Array;
  decIn: Uint32Array;
  targets: Uint32Array;
  batch: number;
  srcLen: number;
  tgtLen: number;
  flips?: Uint8Array;
  uniforms?: Float32Array;
}

export interface Seq2SeqStepStats {
  /** Mean cross-entropy over the non-PAD target tokens, nats. */
  loss: number;
  gradNorm: number;
  /** Target tokens the loss averages over. */
  tokens: number;
  /** The decoder inputs actually fed. */
  inputs: Uint32Array;
}

type NativeModel = NativeParamModel & {
  trainStep(b: Seq2SeqBatch, opt: OptimConfig): Promise<Seq2SeqStepStats>;
  lossAndGrads(
    b: Seq2SeqBatch,
  ): Promise<{ loss: number; grads: { name: string; data: Float32Array }[]; inputs: Uint32Array }>;
  nll(b: Seq2SeqBatch): Promise<{ nll: number; tokens: number }>;
  encode(src: Uint32Array, batch: number, srcLen: number): Float32Array;
  decodeStep(state: Float32Array, tokens: Uint32Array): { state: Float32Array; logProbs: Float32Array };
};

interface Seq2SeqAddon {
  NativeSeq2Seq?: new (shape: Seq2SeqShape, device: string) => NativeModel;
}

/** The encoder–decoder on the native backend. */
export class NativeSeq2Seq extends NativeParameters<NativeModel> {
  protected readonly m: NativeModel;
  /** The device it runs on ('auto' resolved). */
  readonly device: string;

  constructor(
    readonly shape: Seq2SeqShape,
    device = 'cpu',
  ) {
    super();
    const on = onNativeDevice(device, (addon, dev) => {
      const Ctor = (addon as unknown as Seq2SeqAddon).NativeSeq2Seq;
      if (!Ctor) {
        throw new BackendError(
          'this arflow native addon predates the encoder–decoder; rebuild it with `npm run build:native`',
        );
      }
      return sync(() => new Ctor(shape, dev));
    });
    this.m = on.model;
    this.device = on.device;
  }

  trainStep(b: Seq2SeqBatch, opt: OptimConfig): Promise<Seq2SeqStepStats> {
    return async(() => this.m.trainStep(b, opt));
  }
  async lossAndGrads(
    b: Seq2SeqBatch,
  ): Promise<{ loss: number; grads: Record<string, Float32Array>; inputs: Uint32Array }> {
    const r = await async(() => this.m.lossAndGrads(b));
    const grads: Record<string, Float32Array> = {};
    for (const g of r.grads) grads[g.name] = g.data;
    return { loss: r.loss, grads, inputs: r.inputs };
  }
  nll(b: Seq2SeqBatch): Promise<{ nll: number; tokens: number }> {
    return async(() => this.m.nll(b));
  }
  /** The decoder's initial state `[L, B, S]`. */
  encode(src: Uint32Array, batch: number, srcLen: number): Float32Array {
    return sync(() => this.m.encode(src, batch, srcLen));
  }
  /** One decoder step of N hypotheses: new state `[L, N, S]` and log-probabilities `[N, V]`. */
  decodeStep(state: Float32Array, tokens: Uint32Array): { state: Float32Array; logProbs: Float32Array } {
    return sync(() => this.m.decodeStep(state, tokens));
  }
}
