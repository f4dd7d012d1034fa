/**
 * Batching for truncated backpropagation through time (TBPTT).
 *
 * The token sequence is cut into `batch` contiguous streams, one per batch row, and each training
 * step takes the next `seq` characters of every stream. Because row b of batch k+1 continues exactly
 * where row b of batch k stopped, the model's final hidden state of one step is the right initial
 * state of the next: gradients are truncated at `seq` steps but the state carries context across
 * the whole stream. The caller zeroes the carried state when a batch says `reset`.
 */
import { IGNORE_TARGET } from '../backend/types.js';
import { ConfigError, DataError } from '../errors.js';
import { Rng } from '../util/rng.js';

export interface Batch {
  /** `[batch, seq]` row-major input ids. */
  ids: Uint32Array;
  /**
   * `[batch, seq]` the id following each input: `targets[b, t]` is the stream's next character. With
   * `ahead` n > 1, `[n, batch, seq]`: block k−1 holds the character k after each input (the text's
   * continuation, read across the stream's end), IGNORE_TARGET where that runs past the end of the data.
   */
  targets: Uint32Array;
  /** First batch of an epoch (or of an evaluation): the streams start afresh, zero the carried state. */
  reset: boolean;
}

/** Everything {@link StreamBatcher.restore} needs; plain JSON. */
export interface BatcherState {
  epoch: number;
  step: number;
  seed: number;
  batch: number;
  seq: number;
  length: number;
}

/**
 * Splits ids into a training head and a validation tail (contiguous, so validation text is text the
 * model has not seen in any context). `valFraction` 0 gives an empty validation set. The results
 * are views sharing memory with `ids`.
 */
export function splitTrainVal(ids: Uint32Array, valFraction = 0.05): { train: Uint32Array; val: Uint32Array } {
  if (!(Number.isFinite(valFraction) && valFraction >= 0 && valFraction < 0.5)) {
    throw new ConfigError(`validation fraction must be in [0, 0.5), got ${valFraction}`);
  }
  if (valFraction === 0) return { train: ids, val: ids.subarray(ids.length) };
  if (ids.length < 2) {
    throw new DataError(`cannot split ${ids.length} character(s) into training and validation data; need at least 2`);
  }
  // At least one validation character; fraction < 0.5 keeps the training part at least as long.
  const valLength = Math.max(1, Math.floor(ids.length * valFraction));
  const cut = ids.length - valLength;
  return { train: ids.subarray(0, cut), val: ids.subarray(cut) };
}

function checkGeometry(batch: number, seq: number): void {
  for (const [flag, v] of [
    ['batch', batch],
    ['seq', seq],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new ConfigError(`--${flag} must be a positive integer, got ${v}`);
  }
}

/** Steps of `seq` characters (plus one target) that fit in streams of `streamLength`. */
function stepsIn(streamLength: number, seq: number): number {
  return Math.floor((streamLength - 1) / seq);
}

function tooShort(what: string, length: number, batch: number, seq: number): DataError {
  const need = batch * (seq + 1);
  return new DataError(
    `${what} has ${length} characters, but one batch of --batch ${batch} streams × (--seq ${seq} + 1) needs ` +
      `${need}; use a smaller --batch or --seq, or more text`,
  );
}

function checkAhead(ahead: number): number {
  if (!Number.isSafeInteger(ahead) || ahead < 1) {
    throw new ConfigError(`predict-ahead must be a whole number ≥ 1, got ${ahead}`);
  }
  return ahead;
}

/**
 * Builds one batch: row b holds `seq` inputs from `starts[b] + from` and the characters after them
 * (`ahead` blocks of them; see {@link Batch.targets}).
 */
function gather(
  data: Uint32Array,
  starts: readonly number[],
  from: number,
  seq: number,
  reset: boolean,
  ahead = 1,
): Batch {
  const rows = starts.length * seq;
  const ids = new Uint32Array(rows);
  const targets = new Uint32Array(ahead * rows);
  starts.forEach((start, b) => {
    const p = start + from;
    ids.set(data.subarray(p, p + seq), b * seq);
    targets.set(data.subarray(p + 1, p + seq + 1), b * seq);
    for (let k = 2; k <= ahead; k++) {
      const block = targets.subarray((k - 1) * rows + b * seq, (k - 1) * rows + (b + 1) * seq);
      const have = data.subarray(p + k, p + seq + k);
      block.set(have);
      block.fill(IGNORE_TARGET, have.length);
    }
  });
  return { ids, targets, reset };
}

/**
 * Endless training batches over `ids` as `batch` streams (see the module comment), epoch after epoch.
 *
 * Why offsets rather than shuffled chunks: with the state carried from chunk to chunk, reordering
 * chunks would feed each one a state computed from unrelated text. What can vary without breaking
 * continuity is where the chunk boundaries fall. With `shuffleOffsets` (default) every epoch starts
 * its streams at a seeded random offset in [0, seq) (limited by the characters to spare), so the
 * truncation points, and the contexts the model is trained to predict from, differ between epochs.
 *
 * The offset of epoch e is a function of (seed, e) alone, so the state is just a position:
 * `restore(state())` continues with exactly the batches the original run would have produced.
 * `ids` is not copied; do not modify it while the batcher is in use.
 */
export class StreamBatcher {
  /** Batches per epoch; the same in every epoch. */
  readonly stepsPerEpoch: number;
  private readonly seed: number;
  private readonly shuffleOffsets: boolean;
  private readonly ahead: number;
  /** Characters each stream spans in an epoch: its inputs plus the final target. */
  private readonly span: number;
  private epochIndex = 0;
  private stepIndex = 0;
  private starts: number[];

  constructor(
    private readonly data: Uint32Array,
    private readonly batch: number,
    private readonly seq: number,
    opts: { seed?: number; shuffleOffsets?: boolean; ahead?: number } = {},
  ) {
    checkGeometry(batch, seq);
    this.ahead = checkAhead(opts.ahead ?? 1);
    if (data.length < batch * (seq + 1)) throw tooShort('the training data', data.length, batch, seq);
    this.seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(this.seed)) throw new ConfigError(`seed must be an integer, got ${this.seed}`);
    this.shuffleOffsets = opts.shuffleOffsets ?? true;
    this.stepsPerEpoch = stepsIn(Math.floor(data.length / batch), seq);
    this.span = this.stepsPerEpoch * seq + 1;
    this.starts = this.streamStarts();
  }

  /** Completed epochs, which is also the epoch the next batch belongs to. */
  get epoch(): number {
    return this.epochIndex;
  }

  /** Index of the next batch within its epoch. */
  get step(): number {
    return this.stepIndex;
  }

  /** The next batch; after the last batch of an epoch the next epoch begins, with `reset` set. */
  next(): Batch {
    const batch = gather(this.data, this.starts, this.stepIndex * this.seq, this.seq, this.stepIndex === 0, this.ahead);
    if (++this.stepIndex === this.stepsPerEpoch) {
      this.epochIndex++;
      this.stepIndex = 0;
      this.starts = this.streamStarts();
    }
    return batch;
  }

  state(): BatcherState {
    return {
      epoch: this.epochIndex,
      step: this.stepIndex,
      seed: this.seed,
      batch: this.batch,
      seq: this.seq,
      length: this.data.length,
    };
  }

  /**
   * Continues from a saved {@link state}. The batcher must have been built over the same data with the
   * same batch, seq and seed (otherwise the batches could not be the same): ConfigError if not.
   */
  restore(state: BatcherState): void {
    const mine = this.state();
    for (const key of ['seed', 'batch', 'seq', 'length'] as const) {
      if (state[key] !== mine[key]) {
        throw new ConfigError(
          `cannot resume the batch order: it was saved with ${key} ${state[key]}, this run has ${mine[key]}`,
        );
      }
    }
    const { epoch, step } = state;
    if (
      !Number.isSafeInteger(epoch) ||
      epoch < 0 ||
      !Number.isSafeInteger(step) ||
      step < 0 ||
      step >= this.stepsPerEpoch
    ) {
      throw new ConfigError(`invalid batcher state: epoch ${epoch}, step ${step} of ${this.stepsPerEpoch}`);
    }
    this.epochIndex = epoch;
    this.stepIndex = step;
    this.starts = this.streamStarts();
  }

  /**
   * Where each stream starts in the current epoch: after the epoch's offset, `stride` apart. The
   * offset is at most the characters the streams leave unused, so every stream fits and none overlap.
   */
  private streamStarts(): number[] {
    const spare = this.data.length - this.batch * this.span;
    const maxOffset = this.shuffleOffsets ? Math.min(this.seq - 1, spare) : 0;
    const offset =
      maxOffset > 0 ? new Rng((this.seed + Math.imul(this.epochIndex, 0x9e3779b9)) >>> 0).int(maxOffset + 1) : 0;
    const stride = Math.floor((this.data.length - offset) / this.batch);
    return Array.from({ length: this.batch }, (_, b) => offset + b * stride);
  }
}

/** One pass of evaluation batches; iterate it with `for…of` (each iteration starts over). */
export interface EvalBatches extends Iterable<Batch> {
  /** Number of batches. */
  readonly steps: number;
  /** Characters predicted over the pass (`batch · steps · seq`): the denominator of the mean loss. */
  readonly chars: number;
}

/**
 * The whole of `ids` once, as `batch` streams of consecutive chunks (no offset), for validation loss
 * with carried state. The last partial chunk of each stream (fewer than `seq` characters) and the
 * `ids.length mod batch` characters at the end are not predicted. DataError if not even one batch fits.
 * With `ahead` n > 1 the targets hold n blocks (see {@link Batch.targets}).
 */
export function evalBatches(ids: Uint32Array, batch: number, seq: number, ahead = 1): EvalBatches {
  checkGeometry(batch, seq);
  checkAhead(ahead);
  if (ids.length < batch * (seq + 1)) throw tooShort('the evaluation data', ids.length, batch, seq);
  const stride = Math.floor(ids.length / batch);
  const steps = stepsIn(stride, seq);
  const starts = Array.from({ length: batch }, (_, b) => b * stride);
  return {
    steps,
    chars: batch * steps * seq,
    *[Symbol.iterator]() {
      for (let k = 0; k < steps; k++) yield gather(ids, starts, k * seq, seq, k === 0, ahead);
    },
  };
}
