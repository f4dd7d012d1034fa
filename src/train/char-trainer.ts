/**
 * The training loop of the character LM. Each batch is one native call (forward, loss, backward
 * through time, clipping, AdamW) running off the JS thread; this loop around it handles data,
 * the learning-rate schedule, validation, progress, checkpoints and stopping.
 *
 * Truncated BPTT: the corpus is cut into `batchSize` parallel streams read `seqLen` characters at a
 * time; the final hidden state of a chunk is detached and carried into the next chunk of the same
 * stream, and reset at each epoch.
 */
import { IGNORE_TARGET } from '../backend/types.js';
import { evalBatches, StreamBatcher, splitTrainVal } from '../data/batches.js';
import type { CharLM, TrainState } from '../models/char-lm.js';
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

/** Defaults: 1000 steps, batch 32 × seq 64, lr 2e-3 cosine to 2e-4, clip 1 (see {@link ScheduleOptions}). */
export interface TrainOptions extends ScheduleOptions, RunOptions<TrainProgress, TrainState> {
  /** Parallel streams per batch. Default 32. */
  batchSize?: number;
  /** Characters per BPTT chunk. Default 64. */
  seqLen?: number;
  /** Fraction of the text held out (its tail) for validation. Default 0.05. */
  valFraction?: number;
  /** Validate every this many steps (0: only at the end). Default 100. */
  valEvery?: number;
  /** At most this many held-out characters are scored per validation. Default 65,536. */
  valChars?: number;
}

/** What {@link CharLM.fit} reports to `onProgress`. */
export interface TrainProgress {
  step: number;
  steps: number;
  epoch: number;
  /**
   * Mean training loss (nats/char) since the last report; for a model predicting n ahead, the sum over
   * its n heads of their mean cross-entropies.
   */
  loss: number;
  gradNorm: number;
  lr: number;
  tokensPerSec: number;
  /** Validation bits per character, when this report follows a validation. */
  valBpc?: number;
  /** With it, for a model predicting n ahead: bits per character of heads 2..n (index k − 2). */
  valBpcAhead?: number[];
  elapsedSec: number;
  etaSec: number;
}

/** What {@link CharLM.fit} returns. */
export interface TrainSummary {
  steps: number;
  tokensPerSec: number;
  /** Mean training loss (nats/char) over the last reporting window. */
  trainLoss: number;
  /** Validation bits per character at the end (NaN without validation data). */
  valBpc: number;
  /** For a model predicting n ahead: validation bits per character of heads 2..n at the end (else empty). */
  valBpcAhead: number[];
  elapsedSec: number;
  /** Stopped by the AbortSignal. */
  aborted: boolean;
  /** Stopped because the `seconds` budget was spent. */
  outOfTime: boolean;
  /** Every step's training loss, for curves and reproducibility checks. */
  losses: number[];
}

type Resolved = ResolvedSchedule & {
  batchSize: number;
  seqLen: number;
  valFraction: number;
  valEvery: number;
  valChars: number;
};

const DEFAULTS: Resolved = {
  ...SCHEDULE_DEFAULTS,
  minLr: 2e-4,
  batchSize: 32,
  seqLen: 64,
  valFraction: 0.05,
  valEvery: 100,
  valChars: 65536,
};

function resolve(o: TrainOptions): Resolved {
  return resolveOptions(DEFAULTS, o, { batchSize: 1, seqLen: 1, valEvery: 0, valChars: 1 });
}

/**
 * Validation bits per character over (at most `valChars` of) the held-out ids, as parallel streams; for
 * a model predicting n ahead also each head k ≥ 2's, over the positions with a character k ahead.
 */
async function validate(model: CharLM, val: Uint32Array, r: Resolved): Promise<{ bpc: number; ahead: number[] }> {
  const ids = val.subarray(0, Math.min(val.length, r.valChars + 1));
  // B streams of T inputs need B·(T + 1) characters (each stream's last target included).
  const batch = Math.min(r.batchSize, Math.floor(ids.length / (r.seqLen + 1)));
  if (batch < 1) {
    const e = await model.evaluateIds(ids);
    return { bpc: e.bpc, ahead: e.bpcAhead };
  }
  const n = model.config.predictAhead;
  let state: Float32Array | null = null;
  let nll = 0;
  let count = 0;
  const aheadNll = new Array<number>(n - 1).fill(0);
  const aheadCount = new Array<number>(n - 1).fill(0);
  for (const b of evalBatches(ids, batch, r.seqLen, n)) {
    const out = await model.backend.nll(b.ids, b.targets, batch, r.seqLen, state);
    nll += out.nll;
    count += b.ids.length;
    const rows = b.ids.length;
    for (let k = 2; k <= n; k++) {
      aheadNll[k - 2] += out.aheadNll[k - 2];
      for (let i = (k - 1) * rows; i < k * rows; i++) if (b.targets[i] !== IGNORE_TARGET) aheadCount[k - 2]++;
    }
    state = out.state;
  }
  return { bpc: nll / count / Math.LN2, ahead: aheadNll.map((v, i) => v / aheadCount[i] / Math.LN2) };
}

export async function trainCharLM(model: CharLM, ids: Uint32Array, opts: TrainOptions = {}): Promise<TrainSummary> {
  const r = resolve(opts);
  const { train, val } = splitTrainVal(ids, r.valFraction);
  const batcher = new StreamBatcher(train, r.batchSize, r.seqLen, {
    seed: r.seed,
    ahead: model.config.predictAhead,
  });
  let step = 0;
  if (opts.resume) {
    step = opts.resume.step;
    if (opts.resume.batcher) batcher.restore(opts.resume.batcher as Parameters<StreamBatcher['restore']>[0]);
  }
  const tokensPerStep = r.batchSize * r.seqLen;
  const startStep = step;
  // Draws of a 'sampled' h0 come from their own stream, so they do not change the batch order.
  const h0Rng = new Rng((r.seed ^ 0x68305eed) >>> 0);
  const t0 = performance.now();
  // Tokens/s counts time inside training steps only, not validation or checkpoints.
  let windowTrainMs = 0;
  let trainMs = 0;
  let windowLoss = 0;
  let windowSteps = 0;
  let lastLoss = Number.NaN;
  let lastNorm = 0;
  let lastTokensPerSec = 0;
  let valBpc = Number.NaN;
  let valBpcAhead: number[] = [];
  let aborted = false;
  const losses: number[] = [];
  const trainState = (): TrainState => ({ ...opts.meta, step, batcher: batcher.state(), options: { ...r } });
  // A DivergenceError (broken weights refused) names the step; the file keeps the last good save.
  const { record: saved, save } = checkpointSaver(
    opts.checkpoint?.path,
    () => step,
    (path) => model.save(path, { optimizer: true, train: trainState() }),
  );
  const report = (lr: number, withVal: boolean) => {
    const now = performance.now();
    const elapsed = (now - t0) / 1000;
    const done = step - startStep;
    const loss = windowSteps > 0 ? windowLoss / windowSteps : lastLoss;
    // A report right after another (the final one, after validation) repeats the last measured rate.
    const tokensPerSec = windowSteps > 0 ? (windowSteps * tokensPerStep) / (windowTrainMs / 1000) : lastTokensPerSec;
    lastTokensPerSec = tokensPerSec;
    lastLoss = loss;
    opts.onProgress?.({
      step,
      steps: r.steps,
      epoch: batcher.epoch,
      loss,
      gradNorm: lastNorm,
      lr,
      tokensPerSec,
      valBpc: withVal ? valBpc : undefined,
      ...(withVal && valBpcAhead.length > 0 ? { valBpcAhead } : {}),
      elapsedSec: elapsed,
      etaSec: done > 0 ? (elapsed / done) * (r.steps - step) : Number.NaN,
    });
    windowTrainMs = 0;
    windowLoss = 0;
    windowSteps = 0;
  };
  let lr = learningRate(r, step);
  const budgetMs = r.seconds * 1000;
  const spent = () => budgetMs > 0 && trainMs >= budgetMs;
  let outOfTime = false;
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
    // A new epoch starts every stream again from the model's initial state (zeros, the learned h0, or
    // a fresh draw for a 'sampled' h0).
    if (b.reset) {
      const s0 = model.initialState(r.batchSize, h0Rng);
      model.backend.setCarry(s0 === null ? null : { batch: r.batchSize, state: s0 });
    }
    lr = learningRate(r, step, budgetMs > 0 ? trainMs / budgetMs : undefined);
    const ts = performance.now();
    const s = await atStep(
      step + 1,
      () => model.backend.trainStep(b.ids, b.targets, r.batchSize, r.seqLen, optimConfig(r, lr)),
      saved,
    );
    const dt = performance.now() - ts;
    trainMs += dt;
    windowTrainMs += dt;
    step++;
    losses.push(s.loss);
    windowLoss += s.loss;
    windowSteps++;
    lastNorm = s.gradNorm;
    const validateNow = val.length > 1 && r.valEvery > 0 && step % r.valEvery === 0 && step < r.steps && !spent();
    if (validateNow) ({ bpc: valBpc, ahead: valBpcAhead } = await validate(model, val, r));
    if (validateNow || step % r.logEvery === 0) report(lr, validateNow);
    if (opts.checkpoint?.every && step % opts.checkpoint.every === 0) await save();
  }
  const elapsedSec = (performance.now() - t0) / 1000;
  if (val.length > 1) ({ bpc: valBpc, ahead: valBpcAhead } = await validate(model, val, r));
  if (windowSteps > 0 || !aborted) report(lr, val.length > 1);
  await save();
  const trained = step - startStep;
  return {
    steps: step,
    tokensPerSec: trainMs > 0 ? (trained * tokensPerStep) / (trainMs / 1000) : 0,
    trainLoss: lastLoss,
    valBpc,
    valBpcAhead,
    elapsedSec,
    aborted,
    outOfTime,
    losses,
  };
}
