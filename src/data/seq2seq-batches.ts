/**
 * Batches for an encoder–decoder, bucketed by source length: every batch's sources have one length, so
 * the encoder runs without padding or masks and its final states are exact. Targets are padded: the
 * decoder reads `BOS y₁ … y_n` and predicts `y₁ … y_n EOS`, PAD after that (positions the loss skips).
 *
 * Each epoch shuffles every bucket with the seeded generator, cuts it into batches of at most
 * `batchSize`, and shuffles the order of all batches, so consecutive steps see different lengths.
 */
import type { Seq2SeqBatch } from '../backend/native-seq2seq.js';
import { ConfigError, DataError } from '../errors.js';
import { Rng } from '../util/rng.js';
import { BOS, EOS, PAD } from './token-vocab.js';

/** One source and one target, encoded (no BOS/EOS). */
export interface EncodedPair {
  src: Uint32Array;
  tgt: Uint32Array;
}

/**
 * Decoder rows of `tgts` (encoded, no BOS/EOS): inputs `BOS y₁ … y_n` and targets `y₁ … y_n EOS`, PAD
 * after that, `[B, T]` with T = 1 + the longest target.
 */
export function decoderRows(tgts: readonly Uint32Array[]): {
  decIn: Uint32Array;
  targets: Uint32Array;
  tgtLen: number;
} {
  const tgtLen = 1 + Math.max(...tgts.map((t) => t.length));
  const decIn = new Uint32Array(tgts.length * tgtLen).fill(PAD);
  const targets = new Uint32Array(tgts.length * tgtLen).fill(PAD);
  tgts.forEach((tgt, b) => {
    const o = b * tgtLen;
    decIn[o] = BOS;
    decIn.set(tgt, o + 1);
    targets.set(tgt, o);
    targets[o + tgt.length] = EOS;
  });
  return { decIn, targets, tgtLen };
}

/** The batch of `pairs`, which must share one source length. */
export function makeBatch(pairs: readonly EncodedPair[]): Seq2SeqBatch {
  if (pairs.length === 0) throw new DataError('a batch needs at least one pair');
  const srcLen = pairs[0].src.length;
  if (srcLen === 0) throw new DataError('a source sequence is empty');
  const batch = pairs.length;
  const src = new Uint32Array(batch * srcLen);
  pairs.forEach((p, b) => {
    if (p.src.length !== srcLen) throw new DataError(`a batch mixes source lengths ${srcLen} and ${p.src.length}`);
    src.set(p.src, b * srcLen);
  });
  return { src, ...decoderRows(pairs.map((p) => p.tgt)), batch, srcLen };
}

/** Pairs grouped by source length, in order of length. */
export function bucketBySourceLength<T extends { src: ArrayLike<unknown> }>(pairs: readonly T[]): T[][] {
  const buckets = new Map<number, T[]>();
  for (const p of pairs) {
    const b = buckets.get(p.src.length);
    if (b) b.push(p);
    else buckets.set(p.src.length, [p]);
  }
  return [...buckets.entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v);
}

export class BucketBatcher {
  private readonly buckets: EncodedPair[][];
  private readonly rng: Rng;
  private queue: EncodedPair[][] = [];
  private started = false;
  /** Completed passes over the data. */
  epoch = 0;

  constructor(
    pairs: readonly EncodedPair[],
    readonly batchSize: number,
    seed = 0,
  ) {
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new ConfigError(`batch size must be a whole number ≥ 1, got ${batchSize}`);
    }
    if (pairs.length === 0) throw new DataError('no training pairs');
    this.buckets = bucketBySourceLength(pairs);
    this.rng = new Rng(seed);
  }

  /** Batches per epoch. */
  get batchesPerEpoch(): number {
    return this.buckets.reduce((n, b) => n + Math.ceil(b.length / this.batchSize), 0);
  }

  private refill(): void {
    const batches: EncodedPair[][] = [];
    for (const bucket of this.buckets) {
      const order = this.rng.shuffle([...bucket]);
      for (let i = 0; i < order.length; i += this.batchSize) batches.push(order.slice(i, i + this.batchSize));
    }
    this.queue = this.rng.shuffle(batches);
  }

  next(): Seq2SeqBatch {
    return makeBatch(this.take());
  }

  /** Moves past `n` batches without building them: a resumed run continues the same order. */
  skip(n: number): void {
    for (let i = 0; i < n; i++) this.take();
  }

  private take(): EncodedPair[] {
    if (this.queue.length === 0) {
      if (this.started) this.epoch++;
      this.started = true;
      this.refill();
    }
    return this.queue.pop() as EncodedPair[];
  }
}
