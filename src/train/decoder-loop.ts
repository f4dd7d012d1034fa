/**
 * The training loop every model with a recurrent decoder shares (the encoder–decoder of tokens, the
 * image captioner): one native call per batch — encoder, bridge, decoder, masked cross-entropy,
 * backward, clipping, AdamW — with the decoder fed by teacher forcing, its own samples (free running)
 * or scheduled sampling (Bengio et al. 2015). The per-token coin flips with probability ε_i and the
 * uniforms of the samples are drawn here, from a generator seeded by (seed, step), so a run is
 * reproducible and a resumed one draws what an uninterrupted one would. The loop handles the
 * learning-rate and ε schedules, the time budget, validation, progress, checkpoints and stopping; the
 * model's trainer supplies the batches, the step, the validation and the checkpoint.
 */
import type { OptimConfig } from '../backend/types.js';
import { DataError } from '../errors.js';
import { Rng } from '../util/rng.js';
import { atStep, checkpointSaver } from './divergence.js';
import { learningRate, optimConfig, type ResolvedSchedule, type RunOptions, type ScheduleOptions } from './options.js';
import {
  coinFlips,
  type ResolvedScheduledSampling,
  type ScheduledSamplingOptions,
  teacherForcingProb,
} from './scheduled-sampling.js';

/** The options of every decoder model's `fit`, reported through `P` and resumed from `S`. */
export interface DecoderTrainOptions<P, S> extends ScheduleOptions, RunOptions<P, S> {
  /** Examples per batch. */
  batchSize?: number;
  /** How the decoder is fed; see `src/train/scheduled-sampling.ts`. Default teacher forcing. */
  sampling?: ScheduledSamplingOptions;
  /** Steps between validations. Default 500 (0: only at the end). */
  valEvery?: number;
}

/** What the loop needs of a batch: its size and decoder length, and room for the sampling decisions. */
export interface DecoderBatchLike {
  batch: number;
  tgtLen: number;
  flips?: Uint8Array;
  uniforms?: Float32Array;
}

export interface DecoderLoop<B extends DecoderBatchLike, V> {
  r: ResolvedSchedule & { valEvery: number };
  ss: ResolvedScheduledSampling;
  /** Steps already taken (a resumed run); the batches before it must already be skipped. */
  startStep: number;
  next(): B;
  /** Completed passes over the data. */
  epoch(): number;
  trainStep(b: B, opt: OptimConfig): Promise<{ loss: number; gradNorm: number; tokens: number }>;
  /** Held-out scoring, run every `r.valEvery` steps and at the end; absent: none. */
  validate?: () => Promise<V>;
  /** Where and how often to checkpoint (also at the end); absent: never. */
  checkpoint?: { path: string; every?: number };
  /** Writes the checkpoint at `path` with the training state `train` (step, options, sampling, meta). */
  save(path: string, train: { step: number; [key: string]: unknown }): Promise<void>;
  /** Extra facts stored with the training state. */
  meta?: Record<string, unknown>;
  signal?: AbortSignal;
  onProgress?: (p: LoopProgress<V>) => void;
}

export interface LoopProgress<V> {
  step: number;
  steps: number;
  epoch: number;
  /** Mean training loss (nats per target token) since the last report. */
  loss: number;
  gradNorm: number;
  lr: number;
  /** Probability that a decoder input is the ground truth at this step (1: teacher forcing). */
  eps: number;
  /** Training examples (batch rows) per second of training time since the last report. */
  examplesPerSec: number;
  tokensPerSec: number;
  /** The validation result, when this report follows a validation. */
  val?: V;
  elapsedSec: number;
  etaSec: number;
}

export interface LoopSummary<V> {
  steps: number;
  examplesPerSec: number;
  trainLoss: number;
  /** The last validation (the one at the end), if any. */
  val?: V;
  elapsedSec: number;
  aborted: boolean;
  outOfTime: boolean;
  losses: number[];
}

export async function runDecoderLoop<B extends DecoderBatchLike, V>(o: DecoderLoop<B, V>): Promise<LoopSummary<V>> {
  const { r, ss } = o;
  let step = o.startStep;
  const t0 = performance.now();
  let trainMs = 0;
  let window = { ms: 0, loss: 0, steps: 0, examples: 0, tokens: 0 };
  let last = { loss: Number.NaN, norm: 0, examplesPerSec: 0, tokensPerSec: 0 };
  let val: V | undefined;
  let aborted = false;
  let outOfTime = false;
  let examples = 0;
  const losses: number[] = [];
  // A DivergenceError (broken weights refused) names the step; the file keeps the last good save.
  const { record: saved, save } = checkpointSaver(
    o.checkpoint?.path,
    () => step,
    (path) => o.save(path, { ...o.meta, step, options: { ...r }, sampling: ss }),
  );
  const validate = async () => {
    if (o.validate) val = await o.validate();
  };
  const report = (lr: number, eps: number, withVal: boolean) => {
    const elapsed = (performance.now() - t0) / 1000;
    const done = step - o.startStep;
    if (window.steps > 0) {
      last = {
        loss: window.loss / window.steps,
        norm: last.norm,
        examplesPerSec: window.examples / (window.ms / 1000),
        tokensPerSec: window.tokens / (window.ms / 1000),
      };
    }
    o.onProgress?.({
      step,
      steps: r.steps,
      epoch: o.epoch(),
      loss: last.loss,
      gradNorm: last.norm,
      lr,
      eps,
      examplesPerSec: last.examplesPerSec,
      tokensPerSec: last.tokensPerSec,
      val: withVal ? val : undefined,
      elapsedSec: elapsed,
      etaSec: done > 0 ? (elapsed / done) * (r.steps - step) : Number.NaN,
    });
    window = { ms: 0, loss: 0, steps: 0, examples: 0, tokens: 0 };
  };
  const budgetMs = r.seconds * 1000;
  const spent = () => budgetMs > 0 && trainMs >= budgetMs;
  let lr = learningRate(r, step);
  let eps = teacherForcingProb(step, ss);
  while (step < r.steps) {
    if (o.signal?.aborted) {
      aborted = true;
      break;
    }
    if (spent()) {
      outOfTime = true;
      break;
    }
    const b = o.next();
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
    const s = await atStep(step + 1, () => o.trainStep(b, optimConfig(r, lr)), saved);
    const dt = performance.now() - ts;
    trainMs += dt;
    step++;
    examples += b.batch;
    losses.push(s.loss);
    window = {
      ms: window.ms + dt,
      loss: window.loss + s.loss,
      steps: window.steps + 1,
      examples: window.examples + b.batch,
      tokens: window.tokens + s.tokens,
    };
    last.norm = s.gradNorm;
    const validateNow =
      o.validate !== undefined && r.valEvery > 0 && step % r.valEvery === 0 && step < r.steps && !spent();
    if (validateNow) await validate();
    if (validateNow || step % r.logEvery === 0) report(lr, eps, validateNow);
    if (o.checkpoint?.every && step % o.checkpoint.every === 0) await save();
  }
  const elapsedSec = (performance.now() - t0) / 1000;
  await save();
  await validate();
  if (window.steps > 0 || !aborted) report(lr, eps, o.validate !== undefined);
  return {
    steps: step,
    examplesPerSec: trainMs > 0 ? examples / (trainMs / 1000) : 0,
    trainLoss: last.loss,
    val,
    elapsedSec,
    aborted,
    outOfTime,
    losses,
  };
}

/** The step a run resumes from (0 for a fresh run); DataError for a step that is not a whole number ≥ 0. */
export function resumeStep(resume: { step: number } | null | undefined): number {
  if (!resume) return 0;
  const step = resume.step;
  if (!Number.isInteger(step) || step < 0) throw new DataError(`resume: step ${step} is not a whole number ≥ 0`);
  return step;
}
