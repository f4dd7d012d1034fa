/**
 * The training loop of the image captioner: canvases shuffled into batches (each canvas's drawn training
 * caption as the target), fed to the loop every decoder model shares (`./decoder-loop.ts`: one native
 * call per batch, teacher forcing, free running or scheduled sampling, schedules, time budget,
 * checkpoints, stopping), validated by greedy corpus BLEU-4 on held-out canvases.
 */
import type { CaptionBatch } from '../backend/native-caption.js';
import { CANVAS_SIZE, type CaptionCanvases } from '../data/canvases.js';
import { BucketBatcher, type EncodedPair } from '../data/seq2seq-batches.js';
import { DataError } from '../errors.js';
import type { Captioner, CaptionerTrainState } from '../models/captioner.js';
import { type DecoderTrainOptions, resumeStep, runDecoderLoop } from './decoder-loop.js';
import { type ResolvedSchedule, resolveOptions, SCHEDULE_DEFAULTS } from './options.js';
import { validateScheduledSampling } from './scheduled-sampling.js';

/** See {@link DecoderTrainOptions}; batches hold canvases (default 32). */
export interface CaptionTrainOptions extends DecoderTrainOptions<CaptionProgress, CaptionerTrainState> {
  /** Held-out canvases scored with greedy BLEU-4 every `valEvery` steps and at the end. */
  valid?: CaptionCanvases;
  /** At most this many validation canvases per check. Default 200. */
  valCanvases?: number;
}

/** What {@link Captioner.fit} reports to `onProgress`. */
export interface CaptionProgress {
  step: number;
  steps: number;
  epoch: number;
  /** Mean training loss (nats per word) since the last report. */
  loss: number;
  gradNorm: number;
  lr: number;
  /** Probability that a decoder input is the ground truth at this step (1: teacher forcing). */
  eps: number;
  captionsPerSec: number;
  tokensPerSec: number;
  /** Greedy corpus BLEU-4 on the validation canvases, when this report follows a validation. */
  valBleu4?: number;
  elapsedSec: number;
  etaSec: number;
}

/** What {@link Captioner.fit} returns. */
export interface CaptionTrainSummary {
  steps: number;
  captionsPerSec: number;
  trainLoss: number;
  valBleu4: number;
  elapsedSec: number;
  aborted: boolean;
  outOfTime: boolean;
  losses: number[];
}

type Resolved = ResolvedSchedule & { batchSize: number; valEvery: number; valCanvases: number };

const DEFAULTS: Resolved = {
  ...SCHEDULE_DEFAULTS,
  steps: 3000,
  lr: 1e-2,
  minLr: 1e-4,
  batchSize: 32,
  valEvery: 500,
  valCanvases: 200,
};

/** The first `n` canvases of `c`. */
export function firstCanvases(c: CaptionCanvases, n: number): CaptionCanvases {
  if (n >= c.n) return c;
  const px = CANVAS_SIZE * CANVAS_SIZE;
  return { ...c, n, images: c.images.subarray(0, n * px), canvases: c.canvases.slice(0, n) };
}

export async function trainCaptioner(
  model: Captioner,
  train: CaptionCanvases,
  opts: CaptionTrainOptions = {},
): Promise<CaptionTrainSummary> {
  const r = resolveOptions(DEFAULTS, opts, { batchSize: 1, valEvery: 0, valCanvases: 1 });
  const ss = validateScheduledSampling(opts.sampling ?? {});
  if (train.n === 0) throw new DataError('no training canvases');
  const side = model.config.image;
  if (train.size !== side)
    throw new DataError(`training canvases are ${train.size}×${train.size}; the model reads ${side}×${side}`);
  const px = side * side;
  // One "pair" per canvas, its source the canvas index: every batch then has one source length and the
  // bucketed batcher of the encoder–decoder shuffles and cuts the canvases.
  const pairs: EncodedPair[] = train.canvases.map((c, i) => ({
    src: Uint32Array.of(i),
    tgt: model.vocab.encode(c.caption, 'error'),
  }));
  const batcher = new BucketBatcher(pairs, r.batchSize, r.seed);
  const startStep = resumeStep(opts.resume);
  batcher.skip(startStep);
  const next = (): CaptionBatch => {
    const b = batcher.next();
    const images = new Uint8Array(b.batch * px);
    b.src.forEach((i, k) => {
      images.set(train.images.subarray(i * px, (i + 1) * px), k * px);
    });
    return { images, decIn: b.decIn, targets: b.targets, batch: b.batch, tgtLen: b.tgtLen };
  };
  const valid = opts.valid && opts.valid.n > 0 ? firstCanvases(opts.valid, r.valCanvases) : undefined;
  const s = await runDecoderLoop<CaptionBatch, number>({
    r,
    ss,
    startStep,
    next,
    epoch: () => batcher.epoch,
    trainStep: (b, opt) => model.backend.trainStep(b, opt),
    validate: valid ? async () => (await model.evaluate(valid)).bleu4 : undefined,
    checkpoint: opts.checkpoint,
    save: (path, train) => model.save(path, { optimizer: true, train }),
    meta: opts.meta,
    signal: opts.signal,
    onProgress:
      opts.onProgress &&
      ((p) => {
        const { examplesPerSec, val, ...rest } = p;
        opts.onProgress?.({ ...rest, captionsPerSec: examplesPerSec, valBleu4: val });
      }),
  });
  return {
    steps: s.steps,
    captionsPerSec: s.examplesPerSec,
    trainLoss: s.trainLoss,
    valBleu4: s.val ?? Number.NaN,
    elapsedSec: s.elapsedSec,
    aborted: s.aborted,
    outOfTime: s.outOfTime,
    losses: s.losses,
  };
}
