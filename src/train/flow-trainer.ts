/**
 * Maximum-likelihood training of a flow (`Flow.fit`, and through it `RealNVP.fit`): minibatches drawn
 * with a seeded generator (with replacement), AdamW with global-norm clipping, a cosine (or other)
 * learning-rate schedule, progress reports, an AbortSignal and a time budget, and optional held-out NLL.
 */
import type { OptimConfig, StepStats } from '../backend/types.js';
import { ConfigError } from '../errors.js';
import { Rng } from '../util/rng.js';
import { atStep } from './divergence.js';
import {
  learningRate,
  optimConfig,
  type ResolvedSchedule,
  resolveOptions,
  SCHEDULE_DEFAULTS,
  type ScheduleOptions,
} from './options.js';

/** Defaults: 1000 steps, batch 256, lr 1e-3 cosine to 0, clip 1 (see {@link ScheduleOptions}). */
export interface FlowTrainOptions extends ScheduleOptions {
  /** Samples per minibatch. Default 256. */
  batchSize?: number;
  signal?: AbortSignal;
  /** Called every `logEvery` steps (default 10), after validations and at the end. */
  onProgress?: (p: FlowTrainProgress) => void;
  /** Held-out data `[m, dim]` scored (mean NLL, nats) every `valEvery` steps and at the end. */
  valData?: Float32Array;
  /** Default 0: only at the end. */
  valEvery?: number;
  /**
   * Continue a run that has taken `step` steps (saved with its optimizer state and loaded again):
   * the step count, the learning-rate schedule and the minibatch order (and, for images, the
   * dequantisation noise) pick up where it stopped, so with the same data, seed and options the
   * continued run ends where the uninterrupted one would. `steps` counts the steps already taken.
   * `trainSec` (default 0) is the training time the run has spent already (its summary's
   * `trainSec`): a timed run (`seconds`) continues its clock-driven schedule from
   * (trainSec + time spent now) / seconds and stops when `seconds` is spent in all. Which step a timed
   * run reaches depends on the machine's speed, so only step-driven runs continue exactly.
   */
  resume?: { step: number; trainSec?: number } | null;
}

/** What a flow's or {@link PixelRNN}'s `fit` reports to `onProgress`. */
export interface FlowTrainProgress {
  step: number;
  steps: number;
  /** Mean training NLL (nats) since the last report. */
  loss: number;
  gradNorm: number;
  lr: number;
  samplesPerSec: number;
  /** Held-out NLL (nats), when this report follows a validation. */
  valNll?: number;
  /** Wall-clock seconds of this call. */
  elapsedSec: number;
  /** Seconds of training steps in all, counting those of a resumed run (what `seconds` budgets). */
  trainSec: number;
  etaSec: number;
}

/** What a flow's or {@link PixelRNN}'s `fit` returns. */
export interface FlowTrainSummary {
  /** Steps taken in all, counting those of a resumed run. */
  steps: number;
  samplesPerSec: number;
  /** Mean training NLL (nats) over the last reporting window. */
  trainLoss: number;
  /** Held-out NLL at the end (NaN without `valData`). */
  valNll: number;
  /** Wall-clock seconds of this call. */
  elapsedSec: number;
  /** Seconds of training steps in all, counting `resume.trainSec` (what `seconds` budgets). */
  trainSec: number;
  aborted: boolean;
  outOfTime: boolean;
  /** The loss of every step of this call (not those of the run it resumed). */
  losses: number[];
}

type Resolved = ResolvedSchedule & { batchSize: number; valEvery: number };

const DEFAULTS: Resolved = { ...SCHEDULE_DEFAULTS, lr: 1e-3, batchSize: 256, valEvery: 0 };
/** The defaults of the flow training options (what a run used when an option was left out). */
export const FLOW_TRAIN_DEFAULTS: Readonly<Resolved> = Object.freeze({ ...DEFAULTS });

function resolve(o: FlowTrainOptions): Resolved {
  return resolveOptions(DEFAULTS, o, { batchSize: 1, valEvery: 0 });
}

/** What a training loop needs of a model and its data. */
export interface FlowTrainSource {
  /** Examples available (≥ 1). */
  n: number;
  /** One optimizer step on the examples at `indices` (drawn with replacement). */
  step(indices: Int32Array, opt: OptimConfig): Promise<StepStats>;
  /** Held-out NLL (nats per example), or undefined when there is no held-out data. */
  validate?: () => Promise<number>;
  /**
   * Advances whatever randomness `step` draws of its own (the dequantisation noise of images) past
   * `steps` steps of `batch` examples: called once, before the first step of a resumed run.
   */
  skip?: (steps: number, batch: number) => void;
}

/**
 * The loop every flow trains with: seeded minibatch indices, the learning-rate schedule, progress
 * reports, validation, an AbortSignal and a time budget.
 */
export async function runFlowTraining(
  src: FlowTrainSource,
  opts: Omit<FlowTrainOptions, 'valData'> = {},
): Promise<FlowTrainSummary> {
  const r = resolve(opts);
  const n = src.n;
  if (n < 1) throw new ConfigError('training data is empty');
  const start = opts.resume?.step ?? 0;
  if (!Number.isSafeInteger(start) || start < 0)
    throw new ConfigError(`resume.step must be a whole number ≥ 0, got ${start}`);
  if (start > r.steps)
    throw new ConfigError(
      `resume.step ${start} is past steps ${r.steps}: steps counts the steps of the resumed run too, so give more`,
    );
  if (start === r.steps)
    throw new ConfigError(
      `resume.step ${start} equals steps ${r.steps}: nothing left to train (steps counts the steps of the resumed run too, so give more)`,
    );
  const priorSec = opts.resume?.trainSec ?? 0;
  if (typeof priorSec !== 'number' || !Number.isFinite(priorSec) || priorSec < 0)
    throw new ConfigError(`resume.trainSec must be a finite number ≥ 0, got ${String(priorSec)}`);
  if (r.seconds > 0 && priorSec >= r.seconds)
    throw new ConfigError(
      `resume.trainSec ${priorSec} has spent the time budget of seconds ${r.seconds}: nothing left to train (seconds counts the resumed run's training time too, so give more)`,
    );
  const rng = new Rng(r.seed);
  const B = r.batchSize;
  // The minibatch order is a function of the seed and the step: each step draws B indices, one
  // 32-bit draw each. A resumed run skips the draws of the steps already taken.
  for (let i = start * B; i > 0; i--) rng.u32();
  if (start > 0) src.skip?.(start, B);
  const idx = new Int32Array(B);
  const t0 = performance.now();
  let step = start;
  // Training time in all (ms), counting the resumed run's: the budget and the clock-driven schedule use it.
  let trainMs = priorSec * 1000;
  let thisMs = 0;
  let windowMs = 0;
  let windowLoss = 0;
  let windowSteps = 0;
  let lastLoss = Number.NaN;
  let lastNorm = 0;
  let valNll = Number.NaN;
  let aborted = false;
  let outOfTime = false;
  const losses: number[] = [];
  let lastSamplesPerSec = 0;
  const hasVal = src.validate !== undefined;
  const validate = async () => {
    if (src.validate) valNll = await src.validate();
  };
  const report = (lr: number, withVal: boolean) => {
    const elapsed = (performance.now() - t0) / 1000;
    const loss = windowSteps > 0 ? windowLoss / windowSteps : lastLoss;
    lastLoss = loss;
    // A report right after another (the final one, after validation) repeats the last measured rate.
    if (windowSteps > 0 && windowMs > 0) lastSamplesPerSec = (windowSteps * B) / (windowMs / 1000);
    opts.onProgress?.({
      step,
      steps: r.steps,
      loss,
      gradNorm: lastNorm,
      lr,
      samplesPerSec: lastSamplesPerSec,
      valNll: withVal ? valNll : undefined,
      elapsedSec: elapsed,
      trainSec: trainMs / 1000,
      etaSec: step > start ? (elapsed / (step - start)) * (r.steps - step) : Number.NaN,
    });
    windowMs = 0;
    windowLoss = 0;
    windowSteps = 0;
  };
  const budgetMs = r.seconds * 1000;
  const spent = () => budgetMs > 0 && trainMs >= budgetMs;
  const fraction = () => (budgetMs > 0 ? trainMs / budgetMs : undefined);
  let lr = learningRate(r, start, fraction());
  while (step < r.steps) {
    if (opts.signal?.aborted) {
      aborted = true;
      break;
    }
    if (spent()) {
      outOfTime = true;
      break;
    }
    for (let b = 0; b < B; b++) idx[b] = rng.int(n);
    lr = learningRate(r, step, fraction());
    const ts = performance.now();
    const s = await atStep(step + 1, () => src.step(idx, optimConfig(r, lr)));
    const dt = performance.now() - ts;
    trainMs += dt;
    thisMs += dt;
    windowMs += dt;
    step++;
    losses.push(s.loss);
    windowLoss += s.loss;
    windowSteps++;
    lastNorm = s.gradNorm;
    const validateNow = hasVal && r.valEvery > 0 && step % r.valEvery === 0 && step < r.steps;
    if (validateNow) await validate();
    if (validateNow || step % r.logEvery === 0) report(lr, validateNow);
  }
  const elapsedSec = (performance.now() - t0) / 1000;
  await validate();
  if (windowSteps > 0 || !aborted) report(lr, hasVal);
  return {
    steps: step,
    samplesPerSec: thisMs > 0 ? ((step - start) * B) / (thisMs / 1000) : 0,
    trainLoss: lastLoss,
    valNll,
    elapsedSec,
    trainSec: trainMs / 1000,
    aborted,
    outOfTime,
    losses,
  };
}
