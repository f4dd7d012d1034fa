/**
 * The training loop of the series model. Each batch is one native call (forward, mean NLL, backward
 * through time, clipping, AdamW) off the JS thread; this loop around it handles the data (normalising,
 * dequantising, windows), the learning-rate schedule, validation, progress, checkpoints and stopping.
 *
 * Truncated BPTT over `seriesWindows`: the training split is cut into `batchSize` contiguous streams
 * read `seqLen` steps at a time, the final state of a window carried into the next window of the same
 * stream and reset at each epoch. Every epoch starts the streams at a fresh random offset below `seqLen`
 * and draws fresh dequantisation noise, both from `seed` and the epoch number, so that a run is
 * reproducible and a resumed run sees exactly the batches it would have seen. A model predicting n
 * steps ahead gets n target blocks per window (`seriesWindows` with `ahead`): the heads of a window's
 * last steps read up to n − 1 steps into the next window, so n may not exceed `seqLen`.
 *
 * Dequantisation (Theis et al. 2016, "A note on the evaluation of generative models"): recorded values
 * are often rounded (the sensor readings to 0.01), and a continuous density fitted to rounded values can
 * grow without bound by putting spikes on the grid. Each value x gets uniform noise of the recording
 * resolution q ({@link detectResolution}), x + q·(u − ½) with u ~ U(0, 1), in training and in
 * evaluation; the NLL of the noisy values is then an honest density score (for a grid of step q,
 * E[−log p(x + noise)] ≥ −log P(the recorded values) − log q per variable), and no spike narrower
 * than the recording resolution pays off.
 */
import type { SeriesSplit } from '../data/series.js';
import { seriesWindows } from '../data/series.js';
import { ConfigError } from '../errors.js';
import type { SeriesModel } from '../models/series.js';
import { Rng } from '../util/rng.js';
import { atStep, checkpointSaver } from './divergence.js';
import {
  learningRate,
  optimConfig,
  type ResolvedSchedule,
  type RunOptions,
  resolveOptions,
  SCHEDULE_DEFAULTS,
  type ScheduleOptions,
} from './options.js';

/**
 * The recording resolution of every column of `[N, dim]` values, the width of its dequantisation noise:
 * the largest 10⁻ᵏ (k = 0 … 6) of which every value is a whole multiple (0.01 for readings printed with
 * two decimals, 1 for counts), or 0 when there is none (values recorded at full precision: no noise).
 */
export function detectResolution(values: Float64Array, dim: number): number[] {
  const out: number[] = [];
  for (let d = 0; d < dim; d++) {
    const whole = (scale: number) => {
      for (let i = d; i < values.length; i += dim) {
        const v = values[i] * scale;
        if (Math.abs(v - Math.round(v)) > 1e-6 * Math.max(1, Math.abs(v))) return false;
      }
      return true;
    };
    let k = 0;
    while (k <= 6 && !whole(10 ** k)) k++;
    out.push(k <= 6 ? 10 ** -k : 0);
  }
  return out;
}

/** `values [N, dim]` plus uniform noise of width `resolution[d]` centred on each value (a new array). */
export function dequantize(values: Float64Array, resolution: readonly number[], rng: Rng): Float64Array {
  const dim = resolution.length;
  const out = Float64Array.from(values);
  if (resolution.every((q) => q === 0)) return out;
  for (let i = 0; i < out.length; i++) out[i] += resolution[i % dim] * (rng.uniform() - 0.5);
  return out;
}

/** Defaults: 800 steps, batch 16 × seq 64, lr 2e-3 cosine to 1e-4, clip 1 (see {@link ScheduleOptions}). */
export interface SeriesTrainOptions extends ScheduleOptions, RunOptions<SeriesTrainProgress, SeriesTrainState> {
  /** Parallel streams per batch. Default 16. */
  batchSize?: number;
  /** Time steps per BPTT window. Default 64. */
  seqLen?: number;
  /** Validate every this many steps (0: only at the end). Default 200. */
  valEvery?: number;
}

/** What {@link SeriesModel.fit} reports to `onProgress`. */
export interface SeriesTrainProgress {
  step: number;
  steps: number;
  epoch: number;
  /**
   * Mean training loss since the last report: nats per time step in normalised units (a model predicting
   * n ahead: the sum over its n heads of their mean NLLs).
   */
  loss: number;
  gradNorm: number;
  lr: number;
  /** Training time steps (B·T per batch) per second. */
  stepsPerSec: number;
  /** Validation NLL, nats per time step in the original units, when this report follows a validation. */
  valNll?: number;
  /** With it: per horizon k = 1..n, head k's validation NLL (see `SeriesEvalResult.nllAhead`). */
  valNllAhead?: number[];
  elapsedSec: number;
  etaSec: number;
}

/** What {@link SeriesModel.fit} returns. */
export interface SeriesTrainSummary {
  steps: number;
  /** Mean training loss over the last reporting window (nats per step, normalised units). */
  trainLoss: number;
  /** Validation NLL at the end, nats per step in original units (NaN without a validation split). */
  valNll: number;
  /** Per horizon k = 1..n, head k's validation NLL at the end (see `SeriesEvalResult.nllAhead`; empty without a validation split). */
  valNllAhead: number[];
  stepsPerSec: number;
  elapsedSec: number;
  aborted: boolean;
  outOfTime: boolean;
  /** Every step's training loss. */
  losses: number[];
}

/** Where a run stands, as checkpoints record it: enough to resume on the same batches. */
export interface SeriesTrainState {
  step: number;
  epoch: number;
  /** The next window of `epoch` to train on. */
  window: number;
  [key: string]: unknown;
}

type Resolved = ResolvedSchedule & { batchSize: number; seqLen: number; valEvery: number };

export const SERIES_TRAIN_DEFAULTS: Resolved = {
  ...SCHEDULE_DEFAULTS,
  steps: 800,
  lr: 2e-3,
  minLr: 1e-4,
  batchSize: 16,
  seqLen: 64,
  valEvery: 200,
};

/** The windows of one epoch: a random start offset below seqLen and fresh dequantisation noise. */
function epochWindows(model: SeriesModel, train: Float64Array, r: Resolved, epoch: number) {
  const dim = model.config.dim;
  const rng = new Rng((r.seed * 1_000_003 + epoch * 7919) >>> 0);
  const n = train.length / dim;
  const slack = n - r.batchSize * (r.seqLen + 1);
  const offset = slack > 0 ? rng.int(Math.min(r.seqLen, slack + 1)) : 0;
  const noisy = dequantize(train.subarray(offset * dim), model.resolution, rng);
  // Windows over rows [x_t normalised, (x_t − x_{t−1}) normalised]: inputs take the first half of a
  // row, targets (the row after, and for n heads the n − 1 after that) the second.
  const { inputs, targets } = model.encode(noisy);
  const rows = new Float64Array(inputs.length * 2);
  for (let t = 0; t < inputs.length / dim; t++) {
    rows.set(inputs.subarray(t * dim, (t + 1) * dim), t * 2 * dim);
    rows.set(targets.subarray(t * dim, (t + 1) * dim), (t * 2 + 1) * dim);
  }
  return seriesWindows(rows, 2 * dim, r.batchSize, r.seqLen, model.config.predictAhead).map((w) => ({
    reset: w.reset,
    inputs: half(w.inputs, dim, 0),
    targets: half(w.targets, dim, 1),
  }));
}

/** The `which`-th half (0 or 1) of every row of `[·, 2·dim]` values, as f32 `[·, dim]` (NaN stays NaN). */
function half(rows: Float64Array, dim: number, which: 0 | 1): Float32Array {
  const out = new Float32Array(rows.length / 2);
  for (let t = 0; t < out.length / dim; t++) {
    for (let d = 0; d < dim; d++) out[t * dim + d] = rows[(t * 2 + which) * dim + d];
  }
  return out;
}

/**
 * Trains `model` on `split.train` (its normaliser must be set: `SeriesModel.fit` does that) and reports
 * the NLL of `split.valid`, conditioned on the training data before it, every `valEvery` steps.
 */
export async function trainSeries(
  model: SeriesModel,
  split: SeriesSplit,
  opts: SeriesTrainOptions = {},
): Promise<SeriesTrainSummary> {
  const r = resolveOptions(SERIES_TRAIN_DEFAULTS, opts, { batchSize: 1, seqLen: 1, valEvery: 0 });
  const ahead = model.config.predictAhead;
  if (ahead > r.seqLen) {
    throw new ConfigError(
      `predictAhead ${ahead} exceeds the window of seqLen ${r.seqLen} steps: a window's heads may read at most one window ahead; use a longer seqLen or a smaller predictAhead`,
    );
  }
  const { train, valid } = split;
  let step = 0;
  let epoch = 0;
  let next = 0;
  if (opts.resume) {
    ({ step, epoch, window: next } = opts.resume);
    if (!(Number.isSafeInteger(step) && Number.isSafeInteger(epoch) && Number.isSafeInteger(next))) {
      throw new ConfigError('resume: step, epoch and window must be whole numbers');
    }
  } else {
    model.backend.setCarry(null);
  }
  const hasValid = valid.length > 0;
  const validate = () => model.evaluate(valid.values, { context: train.values, seed: r.seed + 1 });
  const stepsPerBatch = r.batchSize * r.seqLen;
  const startStep = step;
  const t0 = performance.now();
  let trainMs = 0;
  let windowMs = 0;
  let windowLoss = 0;
  let windowSteps = 0;
  let lastLoss = Number.NaN;
  let lastNorm = 0;
  let lastRate = 0;
  let valNll = Number.NaN;
  let valNllAhead: number[] = [];
  let aborted = false;
  let outOfTime = false;
  const losses: number[] = [];
  const state = (): SeriesTrainState => ({ ...opts.meta, step, epoch, window: next, options: { ...r } });
  // A DivergenceError (broken weights refused) names the step; the file keeps the last good save.
  const { record: saved, save } = checkpointSaver(
    opts.checkpoint?.path,
    () => step,
    (path) => model.save(path, { optimizer: true, train: state() }),
  );
  const report = (lr: number, withVal: boolean) => {
    const elapsed = (performance.now() - t0) / 1000;
    const done = step - startStep;
    const loss = windowSteps > 0 ? windowLoss / windowSteps : lastLoss;
    const rate = windowSteps > 0 ? (windowSteps * stepsPerBatch) / (windowMs / 1000) : lastRate;
    lastLoss = loss;
    lastRate = rate;
    opts.onProgress?.({
      step,
      steps: r.steps,
      epoch,
      loss,
      gradNorm: lastNorm,
      lr,
      stepsPerSec: rate,
      valNll: withVal ? valNll : undefined,
      ...(withVal ? { valNllAhead } : {}),
      elapsedSec: elapsed,
      etaSec: done > 0 ? (elapsed / done) * (r.steps - step) : Number.NaN,
    });
    windowMs = 0;
    windowLoss = 0;
    windowSteps = 0;
  };
  const budgetMs = r.seconds * 1000;
  const spent = () => budgetMs > 0 && trainMs >= budgetMs;
  let lr = learningRate(r, step);
  let windows = epochWindows(model, train.values, r, epoch);
  while (step < r.steps) {
    if (opts.signal?.aborted) {
      aborted = true;
      break;
    }
    if (spent()) {
      outOfTime = true;
      break;
    }
    if (next >= windows.length) {
      epoch++;
      next = 0;
      windows = epochWindows(model, train.values, r, epoch);
    }
    const w = windows[next++];
    if (w.reset) model.backend.setCarry(null);
    lr = learningRate(r, step, budgetMs > 0 ? trainMs / budgetMs : undefined);
    const ts = performance.now();
    const s = await atStep(
      step + 1,
      () => model.backend.trainStep(w.inputs, w.targets, r.batchSize, r.seqLen, optimConfig(r, lr)),
      saved,
    );
    const dt = performance.now() - ts;
    trainMs += dt;
    windowMs += dt;
    step++;
    losses.push(s.loss);
    windowLoss += s.loss;
    windowSteps++;
    lastNorm = s.gradNorm;
    const validateNow = hasValid && r.valEvery > 0 && step % r.valEvery === 0 && step < r.steps && !spent();
    if (validateNow) ({ nll: valNll, nllAhead: valNllAhead } = await validate());
    if (validateNow || step % r.logEvery === 0) report(lr, validateNow);
    if (opts.checkpoint?.every && step % opts.checkpoint.every === 0) await save();
  }
  const elapsedSec = (performance.now() - t0) / 1000;
  if (hasValid) ({ nll: valNll, nllAhead: valNllAhead } = await validate());
  if (windowSteps > 0 || !aborted) report(lr, hasValid);
  await save();
  return {
    steps: step,
    trainLoss: lastLoss,
    valNll,
    valNllAhead,
    stepsPerSec: trainMs > 0 ? ((step - startStep) * stepsPerBatch) / (trainMs / 1000) : 0,
    elapsedSec,
    aborted,
    outOfTime,
    losses,
  };
}
