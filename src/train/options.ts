/**
 * Options every training loop shares (steps, learning-rate schedule, AdamW, clipping, budgets), their
 * validation, and the learning-rate schedule itself.
 */
import type { OptimConfig } from '../backend/types.js';
import { ConfigError } from '../errors.js';

/** Learning-rate schedule after warm-up: constant, cosine decay to `minLr`, or step decay. */
export type Schedule = 'constant' | 'cosine' | 'step';

/**
 * What the resumable training loops (char LM, series, encoder–decoder, captioner) take besides their
 * own settings: stopping, progress `P`, checkpoints and a saved training state `S` to continue.
 */
export interface RunOptions<P, S> {
  /** Stops training after the current step (the run is then saved like a finished one). */
  signal?: AbortSignal;
  /** Called every `logEvery` steps (default 10), after each validation and at the end. */
  onProgress?: (p: P) => void;
  /** Save a resumable checkpoint (with optimizer state) here every `every` steps and at the end. */
  checkpoint?: { path: string; every?: number };
  /** Extra facts stored with the training state in checkpoints (the CLI records its data and options). */
  meta?: Record<string, unknown>;
  /** Continue a run saved with its training state (what the model's `load` returns with it). */
  resume?: S | null;
}

/** Steps, learning rate and schedule, shared by every model's `fit`. */
export interface ScheduleOptions {
  /** Optimizer steps in all, counting those of a resumed run. */
  steps?: number;
  /** Peak learning rate. */
  lr?: number;
  /** 'cosine' (default) decays to `minLr` over the run; 'step' multiplies by `gamma` every `stepSize` steps. */
  schedule?: Schedule;
  /** Linear warm-up steps before the schedule. Default 0. */
  warmup?: number;
  /** Floor of the cosine schedule. */
  minLr?: number;
  /** Steps between decays of the 'step' schedule (0: a third of `steps`). */
  stepSize?: number;
  gamma?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Clip the global gradient norm to this (0: off). Default 1. */
  clip?: number;
  /**
   * Time budget in seconds of training steps (0: none). Training ends when it is spent, and the
   * schedule then runs on the fraction of the budget used instead of the fraction of `steps`.
   */
  seconds?: number;
  /** Seed of the batch order. Default 0. */
  seed?: number;
  /** Report progress every this many steps. Default 10. */
  logEvery?: number;
}

/** {@link ScheduleOptions} with every default filled in. */
export type ResolvedSchedule = Required<ScheduleOptions>;

/** Defaults shared by the loops; each loop overrides what differs (batch size, lr, minLr…). */
export const SCHEDULE_DEFAULTS: ResolvedSchedule = {
  steps: 1000,
  lr: 2e-3,
  schedule: 'cosine',
  warmup: 0,
  minLr: 0,
  stepSize: 0,
  gamma: 0.5,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0,
  clip: 1,
  seconds: 0,
  seed: 0,
  logEvery: 10,
};

/**
 * `defaults` overridden by the defined fields of `given`, validated: the shared fields here, plus the
 * loop's own whole-number fields `wholes` (name → minimum). Throws ConfigError naming the bad field.
 */
export function resolveOptions<R extends ResolvedSchedule>(
  defaults: R,
  given: object,
  wholes: Partial<Record<keyof R, number>> = {},
): R {
  const r = { ...defaults };
  for (const [k, v] of Object.entries(given))
    if (v !== undefined && k in defaults) (r as Record<string, unknown>)[k] = v;
  const whole: [string, number][] = [
    ['steps', 1],
    ['warmup', 0],
    ['stepSize', 0],
    ['logEvery', 1],
    ...(Object.entries(wholes) as [string, number][]),
  ];
  for (const [k, min] of whole) {
    const v = (r as Record<string, unknown>)[k] as number;
    if (!Number.isInteger(v) || v < min) throw new ConfigError(`${k} must be a whole number ≥ ${min}, got ${v}`);
  }
  for (const [k, allowZero] of [
    ['lr', false],
    ['seconds', true],
    ['minLr', true],
    ['eps', false],
    ['weightDecay', true],
    ['clip', true],
    ['gamma', false],
  ] as const) {
    const v = r[k];
    if (!Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
      throw new ConfigError(`${k} must be a finite number ${allowZero ? '≥' : '>'} 0, got ${v}`);
    }
  }
  for (const k of ['beta1', 'beta2'] as const) {
    if (!(r[k] >= 0 && r[k] < 1)) throw new ConfigError(`${k} must be in [0, 1), got ${r[k]}`);
  }
  if (!['constant', 'cosine', 'step'].includes(r.schedule)) {
    throw new ConfigError(`schedule must be constant, cosine or step, got ${JSON.stringify(r.schedule)}`);
  }
  if (r.stepSize === 0) r.stepSize = Math.max(1, Math.floor(r.steps / 3));
  return r;
}

/** The AdamW settings of one step at learning rate `lr`. */
export function optimConfig(r: ResolvedSchedule, lr: number): OptimConfig {
  return { lr, beta1: r.beta1, beta2: r.beta2, eps: r.eps, weightDecay: r.weightDecay, clip: r.clip };
}

/**
 * Learning rate at `step` (0-based): linear warm-up, then the schedule. `fraction`, when given, is how
 * much of the run is done (for time-budgeted runs) and replaces `step / steps` in the cosine.
 */
export function learningRate(
  o: Pick<ResolvedSchedule, 'lr' | 'schedule' | 'warmup' | 'minLr' | 'stepSize' | 'gamma' | 'steps'>,
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
