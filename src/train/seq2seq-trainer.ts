/**
 * The training loop of the encoder–decoder: pairs bucketed by source length, fed to the loop every
 * decoder model shares (`./decoder-loop.ts`: one native call per batch, teacher forcing, free running
 * or scheduled sampling, schedules, time budget, checkpoints, stopping), validated by greedy PER/WER on
 * held-out words.
 */
import type { Seq2SeqBatch } from '../backend/native-seq2seq.js';
import type { PronEntry } from '../data/cmudict.js';
import { BucketBatcher } from '../data/seq2seq-batches.js';
import { DataError } from '../errors.js';
import type { Seq2Seq, Seq2SeqTrainState } from '../models/seq2seq.js';
import { type DecoderTrainOptions, resumeStep, runDecoderLoop } from './decoder-loop.js';
import { type ResolvedSchedule, resolveOptions, SCHEDULE_DEFAULTS } from './options.js';
import { validateScheduledSampling } from './scheduled-sampling.js';

/** See {@link DecoderTrainOptions}; batches hold pairs of one source length (default 64). */
export interface Seq2SeqTrainOptions extends DecoderTrainOptions<Seq2SeqProgress, Seq2SeqTrainState> {
  /** Held-out words scored with greedy PER/WER every `valEvery` steps and at the end. */
  valid?: readonly PronEntry[];
  /** At most this many validation words per check. Default 500. */
  valWords?: number;
}

/** What {@link Seq2Seq.fit} reports to `onProgress`. */
export interface Seq2SeqProgress {
  step: number;
  steps: number;
  epoch: number;
  /** Mean training loss (nats per target token) since the last report. */
  loss: number;
  gradNorm: number;
  lr: number;
  /** Probability that a decoder input is the ground truth at this step (1: teacher forcing). */
  eps: number;
  wordsPerSec: number;
  tokensPerSec: number;
  /** Greedy PER / WER on the validation words, when this report follows a validation. */
  valPer?: number;
  valWer?: number;
  elapsedSec: number;
  etaSec: number;
}

/** What {@link Seq2Seq.fit} returns. */
export interface Seq2SeqTrainSummary {
  steps: number;
  wordsPerSec: number;
  trainLoss: number;
  valPer: number;
  valWer: number;
  elapsedSec: number;
  aborted: boolean;
  outOfTime: boolean;
  losses: number[];
}

type Resolved = ResolvedSchedule & { batchSize: number; valEvery: number; valWords: number };

const DEFAULTS: Resolved = {
  ...SCHEDULE_DEFAULTS,
  steps: 4000,
  lr: 3e-3,
  minLr: 1e-4,
  batchSize: 64,
  valEvery: 500,
  valWords: 500,
};

export async function trainSeq2Seq(
  model: Seq2Seq,
  entries: readonly PronEntry[],
  opts: Seq2SeqTrainOptions = {},
): Promise<Seq2SeqTrainSummary> {
  const r = resolveOptions(DEFAULTS, opts, { batchSize: 1, valEvery: 0, valWords: 1 });
  const ss = validateScheduledSampling(opts.sampling ?? {});
  const pairs = model.encodePairs(entries);
  if (pairs.length === 0) throw new DataError('no training pairs: every entry was empty');
  const batcher = new BucketBatcher(pairs, r.batchSize, r.seed);
  const startStep = resumeStep(opts.resume);
  // The batch order up to the resumed step, replayed without building the batches.
  batcher.skip(startStep);
  const valid = (opts.valid ?? []).slice(0, r.valWords);
  const s = await runDecoderLoop<Seq2SeqBatch, { per: number; wer: number }>({
    r,
    ss,
    startStep,
    next: () => batcher.next(),
    epoch: () => batcher.epoch,
    trainStep: (b, opt) => model.backend.trainStep(b, opt),
    validate: valid.length > 0 ? () => model.evaluate(valid) : undefined,
    checkpoint: opts.checkpoint,
    save: (path, train) => model.save(path, { optimizer: true, train }),
    meta: opts.meta,
    signal: opts.signal,
    onProgress:
      opts.onProgress &&
      ((p) => {
        const { examplesPerSec, val, ...rest } = p;
        opts.onProgress?.({ ...rest, wordsPerSec: examplesPerSec, valPer: val?.per, valWer: val?.wer });
      }),
  });
  return {
    steps: s.steps,
    wordsPerSec: s.examplesPerSec,
    trainLoss: s.trainLoss,
    valPer: s.val?.per ?? Number.NaN,
    valWer: s.val?.wer ?? Number.NaN,
    elapsedSec: s.elapsedSec,
    aborted: s.aborted,
    outOfTime: s.outOfTime,
    losses: s.losses,
  };
}
