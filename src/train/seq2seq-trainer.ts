/**
 * The training loop of the encoder–decoder. Each batch (pairs bucketed by source length) is one native
 * call: encoder, bridge, decoder, masked cross-entropy, backward, clipping, AdamW, with the decoder fed
 * by teacher forcing, its own samples (free running) or scheduled sampling (Bengio et al. 2015): the
 * per-token coin flips with probability ε_i and the uniforms of the samples are drawn here, from one
 * seeded generator, so a run is reproducible. This loop handles data, the learning-rate and ε schedules,
 * validation (greedy PER/WER on held-out words), progress, checkpoints and stopping.
 */
import type { PronEntry } from '../data/cmudict.js';
import { BucketBatcher } from '../data/seq2seq-batches.js';
import { DataError } from '../errors.js';
import type { Seq2Seq, Seq2SeqTrainState } from '../models/seq2seq.js';
import { Rng } from '../util/rng.js';
import {
  learningRate,
  optimConfig,
  type ResolvedSchedule,
  resolveOptions,
  SCHEDULE_DEFAULTS,
  type ScheduleOptions,
} from './options.js';
import {
  coinFlips,
  type ScheduledSamplingOptions,
  teacherForcingProb,
  validateScheduledSampling,
} from './scheduled-sampling.js';

export interface Seq2SeqTrainOptions extends ScheduleOptions {
  /** Pairs per batch (all of one source length). Default 64. */
  batchSize?: number;
  /** How the decoder is fed; see `src/train/scheduled-sampling.ts`. Default teacher forcing. */
  sampling?: ScheduledSamplingOptions;
  /** Held-out words scored with greedy PER/WER every `valEvery` steps and at the end. */
  valid?: readonly PronEntry[];
  /** Default 500 (0: only at the end). */
  valEvery?: number;
  /** At most this many validation words per check. Default 500. */
  valWords?: number;
  signal?: AbortSignal;
  /** Called every `logEvery` steps (default 10), after each validation and at the end. */
  onProgress?: (p: Seq2SeqProgress) => void;
  /** Save a checkpoint (with optimizer state) here every `checkpoint.every` steps and at the end. */
  checkpoint?: { path: string; every?: number };
  /** Extra facts stored with the training state (the CLI records the data and feeding options). */
  meta?: Record<string, unknown>;
  /** Continue a run saved with its training state. */
  resume?: Seq2SeqTrainState | null;
}

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
  let step = 0;
  if (opts.resume) {
    step = opts.resume.step;
    if (!Number.isInteger(step) || step < 0) throw new DataError(`resume: step ${step} is not a whole number ≥ 0`);
    // The batch order up to the resumed step, replayed without building the batches.
    batcher.skip(step);
  }
  const valid = (opts.valid ?? []).slice(0, r.valWords);
  const startStep = step;
  const t0 = performance.now();
  let trainMs = 0;
  let window = { ms: 0, loss: 0, steps: 0, words: 0, tokens: 0 };
  let last = { loss: Number.NaN, norm: 0, wordsPerSec: 0, tokensPerSec: 0 };
  let val = { per: Number.NaN, wer: Number.NaN };
  let aborted = false;
  let outOfTime = false;
  let wordsTrained = 0;
  const losses: number[] = [];
  const trainState = (): Seq2SeqTrainState => ({ ...opts.meta, step, options: { ...r }, sampling: ss });
  const save = async () => {
    if (opts.checkpoint) await model.save(opts.checkpoint.path, { optimizer: true, train: trainState() });
  };
  const validate = async () => {
    if (valid.length === 0) return;
    const e = await model.evaluate(valid);
    val = { per: e.per, wer: e.wer };
  };
  const report = (lr: number, eps: number, withVal: boolean) => {
    const elapsed = (performance.now() - t0) / 1000;
    const done = step - startStep;
    if (window.steps > 0) {
      last = {
        loss: window.loss / window.steps,
        norm: last.norm,
        wordsPerSec: window.words / (window.ms / 1000),
        tokensPerSec: window.tokens / (window.ms / 1000),
      };
    }
    opts.onProgress?.({
      step,
      steps: r.steps,
      epoch: batcher.epoch,
      loss: last.loss,
      gradNorm: last.norm,
      lr,
      eps,
      wordsPerSec: last.wordsPerSec,
      tokensPerSec: last.tokensPerSec,
      valPer: withVal ? val.per : undefined,
      valWer: withVal ? val.wer : undefined,
      elapsedSec: elapsed,
      etaSec: done > 0 ? (elapsed / done) * (r.steps - step) : Number.NaN,
    });
    window = { ms: 0, loss: 0, steps: 0, words: 0, tokens: 0 };
  };
  const budgetMs = r.seconds * 1000;
  const spent = () => budgetMs > 0 && trainMs >= budgetMs;
  let lr = learningRate(r, step);
  let eps = teacherForcingProb(step, ss);
  while (step < r.steps) {
    if (opts.signal?.aborted) {
      aborted = true;
      break;
    }
    if (spent()) {
      outOfTime = true;
      break;
    }
    const b = batcher.next();
    lr = learningRate(r, step, budgetMs > 0 ? trainMs / budgetMs : undefined);
    eps = teacherForcingProb(step, ss);
    if (eps < 1) {
      // Coin flips and sample uniforms of step i come from a generator seeded by (seed, i): a resumed
      // run draws exactly what an uninterrupted one would, and the batch order does not depend on them.
      const rng = new Rng(Math.imul(r.seed ^ 0x5eed5eed, 0x9e3779b1) ^ step);
      const n = b.batch * b.tgtLen;
      b.flips = coinFlips(eps, n, rng);
      b.uniforms = Float32Array.from({ length: n }, () => Math.min(rng.uniform(), 1 - 2 ** -24));
    }
    const ts = performance.now();
    const s = await model.backend.trainStep(b, optimConfig(r, lr));
    const dt = performance.now() - ts;
    trainMs += dt;
    step++;
    wordsTrained += b.batch;
    losses.push(s.loss);
    window = {
      ms: window.ms + dt,
      loss: window.loss + s.loss,
      steps: window.steps + 1,
      words: window.words + b.batch,
      tokens: window.tokens + s.tokens,
    };
    last.norm = s.gradNorm;
    const validateNow = valid.length > 0 && r.valEvery > 0 && step % r.valEvery === 0 && step < r.steps && !spent();
    if (validateNow) await validate();
    if (validateNow || step % r.logEvery === 0) report(lr, eps, validateNow);
    if (opts.checkpoint?.every && step % opts.checkpoint.every === 0) await save();
  }
  const elapsedSec = (performance.now() - t0) / 1000;
  await save();
  await validate();
  if (window.steps > 0 || !aborted) report(lr, eps, valid.length > 0);
  return {
    steps: step,
    wordsPerSec: trainMs > 0 ? wordsTrained / (trainMs / 1000) : 0,
    trainLoss: last.loss,
    valPer: val.per,
    valWer: val.wer,
    elapsedSec,
    aborted,
    outOfTime,
    losses,
  };
}
