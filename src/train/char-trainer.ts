/**
 * The training loop of the character LM. Each batch is one native call (forward, loss, backward
 * through time, clipping, AdamW) running off the JS thread; this loop around it handles data,
 * the learning-rate schedule, validation, progress, checkpoints and stopping.
 *
 * Truncated BPTT: the corpus is cut into `batchSize` parallel streams read `seqLen` characters at a
 * time; the final hidden state of a chunk is detached and carried into the next chunk of the same
 * stream, and reset at each epoch.
 */
import type { OptimConfig } from '../backend/types.js';
import { evalBatches, StreamBatcher, splitTrainVal } from '../data/batches.js';
import { ConfigError } from '../errors.js';
import type { CharLM, TrainState } from '../models/char-lm.js';

export type Schedule = 'constant' | 'cosine' | 'step';

export interface TrainOptions {
  /** Optimizer steps (batches) in all, counting those of a resumed run. Default 1000. */
  steps?: number;
  batchSize?: number;
  seqLen?: number;
  /** Peak learning rate. Default 2e-3. */
  lr?: number;
  /** 'cosine' (default) decays to `minLr` over the run; 'step' multiplies by `gamma` every `stepSize` steps. */
  schedule?: Schedule;
  /** Linear warm-up steps before the schedule. Default 0. */
  warmup?: number;
  minLr?: number;
  stepSize?: number;
  gamma?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Clip the global gradient norm to this (0: off). Default 1. */
  clip?: number;
  /** Fraction of the text held out (its tail) for validation. Default 0.05. */
  valFraction?: number;
  /** Validate every this many steps (0: only at the end). Default 100. */
  valEvery?: number;
  /** At most this many held-out characters are scored per validation. Default 65,536. */
  valChars?: number;
  /**
   * Time budget in seconds of training steps (0: none). Training ends when it is spent, and the
   * schedule then runs on the fraction of the budget used instead of the fraction of `steps`.
   */
  seconds?: number;
  /** Seed of the batch order. Default 0. */
  seed?: number;
  signal?: AbortSignal;
  /** Called after every `logEvery` steps (default 10), after each validation and at the end. */
  onProgress?: (p: TrainProgress) => void;
  logEvery?: number;
  /** Save a resumable checkpoint here every `checkpointEvery` steps and at the end. */
  checkpoint?: { path: string; every?: number };
  /** Extra facts stored with the training state in checkpoints (the CLI records the corpus). */
  meta?: Record<string, unknown>;
  /** Continue a run saved with its training state (from `CharLM.load(...).train`). */
  resume?: TrainState | null;
}

export interface TrainProgress {
  step: number;
  steps: number;
  epoch: number;
  /** Mean training loss (nats/char) since the last report. */
  loss: number;
  gradNorm: number;
  lr: number;
  tokensPerSec: number;
  /** Validation bits per character, when this report follows a validation. */
  valBpc?: number;
  elapsedSec: number;
  etaSec: number;
}

export interface TrainSummary {
  steps: number;
  tokensPerSec: number;
  /** Mean training loss (nats/char) over the last reporting window. */
  trainLoss: number;
  /** Validation bits per character at the end (NaN without validation data). */
  valBpc: number;
  elapsedSec: number;
  /** Stopped by the AbortSignal. */
  aborted: boolean;
  /** Stopped because the `seconds` budget was spent. */
  outOfTime: boolean;
  /** Every step's training loss, for curves and reproducibility checks. */
  losses: number[];
}

interface Resolved extends Required<Omit<TrainOptions, 'signal' | 'onProgress' | 'checkpoint' | 'resume' | 'meta'>> {}

const DEFAULTS: Resolved = {
  steps: 1000,
  batchSize: 32,
  seqLen: 64,
  lr: 2e-3,
  schedule: 'cosine',
  warmup: 0,
  minLr: 2e-4,
  stepSize: 0,
  gamma: 0.5,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0,
  clip: 1,
  valFraction: 0.05,
  valEvery: 100,
  valChars: 65536,
  seconds: 0,
  seed: 0,
  logEvery: 10,
};

function resolve(o: TrainOptions): Resolved {
  const r = { ...DEFAULTS };
  for (const [k, v] of Object.entries(o)) if (v !== undefined && k in DEFAULTS) (r as Record<string, unknown>)[k] = v;
  const whole = (k: keyof Resolved, min: number) => {
    const v = r[k] as number;
    if (!Number.isInteger(v) || v < min) throw new ConfigError(`${k} must be a whole number ≥ ${min}, got ${v}`);
  };
  whole('steps', 1);
  whole('batchSize', 1);
  whole('seqLen', 1);
  whole('warmup', 0);
  whole('stepSize', 0);
  whole('valEvery', 0);
  whole('valChars', 1);
  whole('logEvery', 1);
  const positive = (k: keyof Resolved, allowZero: boolean) => {
    const v = r[k] as number;
    if (!Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
      throw new ConfigError(`${k} must be a finite number ${allowZero ? '≥' : '>'} 0, got ${v}`);
    }
  };
  positive('lr', false);
  positive('seconds', true);
  positive('minLr', true);
  positive('eps', false);
  positive('weightDecay', true);
  positive('clip', true);
  positive('gamma', false);
  for (const k of ['beta1', 'beta2'] as const) {
    if (!(r[k] >= 0 && r[k] < 1)) throw new ConfigError(`${k} must be in [0, 1), got ${r[k]}`);
  }
  if (!['constant', 'cosine', 'step'].includes(r.schedule)) {
    throw new ConfigError(`schedule must be constant, cosine or step, got ${JSON.stringify(r.schedule)}`);
  }
  if (r.stepSize === 0) r.stepSize = Math.max(1, Math.floor(r.steps / 3));
  return r;
}

/**
 * Learning rate at `step` (0-based): linear warm-up, then the schedule. `fraction`, when given, is how
 * much of the run is done (for time-budgeted runs) and replaces `step / steps` in the cosine.
 */
export function learningRate(
  o: Pick<Resolved, 'lr' | 'schedule' | 'warmup' | 'minLr' | 'stepSize' | 'gamma' | 'steps'>,
  step: number,
  fraction?: number,
): number {
  if (step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
  const t = step - o.warmup;
  switch (o.schedule) {
    case 'constant':
      return o.lr;
    case 'step':
      return o.lr * o.gamma ** Math.floor(t / o.stepSize);
    case 'cosine': {
      const f = fraction ?? t / Math.max(1, o.steps - o.warmup);
      return o.minLr + 0.5 * (o.lr - o.minLr) * (1 + Math.cos(Math.PI * Math.min(1, f)));
    }
  }
}

/** Validation bits per character over (at most `valChars` of) the held-out ids, as parallel streams. */
async function validate(model: CharLM, val: Uint32Array, r: Resolved): Promise<number> {
  const ids = val.subarray(0, Math.min(val.length, r.valChars + 1));
  // B streams of T inputs need B·(T + 1) characters (each stream's last target included).
  const batch = Math.min(r.batchSize, Math.floor(ids.length / (r.seqLen + 1)));
  if (batch < 1) return (await model.evaluateIds(ids)).bpc;
  let state: Float32Array | null = null;
  let nll = 0;
  let count = 0;
  for (const b of evalBatches(ids, batch, r.seqLen)) {
    const out = await model.backend.nll(b.ids, b.targets, batch, r.seqLen, state);
    nll += out.nll;
    count += b.ids.length;
    state = out.state;
  }
  return nll / count / Math.LN2;
}

export async function trainCharLM(model: CharLM, ids: Uint32Array, opts: TrainOptions = {}): Promise<TrainSummary> {
  const r = resolve(opts);
  const { train, val } = splitTrainVal(ids, r.valFraction);
  const batcher = new StreamBatcher(train, r.batchSize, r.seqLen, { seed: r.seed });
  let step = 0;
  if (opts.resume) {
    step = opts.resume.step;
    if (opts.resume.batcher) batcher.restore(opts.resume.batcher as Parameters<StreamBatcher['restore']>[0]);
  }
  const optim = (lr: number): OptimConfig => ({
    lr,
    beta1: r.beta1,
    beta2: r.beta2,
    eps: r.eps,
    weightDecay: r.weightDecay,
    clip: r.clip,
  });
  const tokensPerStep = r.batchSize * r.seqLen;
  const startStep = step;
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
  let aborted = false;
  const losses: number[] = [];
  const trainState = (): TrainState => ({ ...opts.meta, step, batcher: batcher.state(), options: { ...r } });
  const save = async () => {
    if (opts.checkpoint) await model.save(opts.checkpoint.path, { optimizer: true, train: trainState() });
  };
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
    if (b.reset) model.backend.setCarry(null);
    lr = learningRate(r, step, budgetMs > 0 ? trainMs / budgetMs : undefined);
    const ts = performance.now();
    const s = await model.backend.trainStep(b.ids, b.targets, r.batchSize, r.seqLen, optim(lr));
    const dt = performance.now() - ts;
    trainMs += dt;
    windowTrainMs += dt;
    step++;
    losses.push(s.loss);
    windowLoss += s.loss;
    windowSteps++;
    lastNorm = s.gradNorm;
    const validateNow = val.length > 1 && r.valEvery > 0 && step % r.valEvery === 0 && step < r.steps && !spent();
    if (validateNow) valBpc = await validate(model, val, r);
    if (validateNow || step % r.logEvery === 0) report(lr, validateNow);
    if (opts.checkpoint?.every && step % opts.checkpoint.every === 0) await save();
  }
  const elapsedSec = (performance.now() - t0) / 1000;
  if (val.length > 1) valBpc = await validate(model, val, r);
  if (windowSteps > 0 || !aborted) report(lr, val.length > 1);
  await save();
  const trained = step - startStep;
  return {
    steps: step,
    tokensPerSec: trainMs > 0 ? (trained * tokensPerStep) / (trainMs / 1000) : 0,
    trainLoss: lastLoss,
    valBpc,
    elapsedSec,
    aborted,
    outOfTime,
    losses,
  };
}
