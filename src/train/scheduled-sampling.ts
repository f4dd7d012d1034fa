/**
 * Scheduled sampling (Bengio et al., 2015, "Scheduled Sampling for Sequence Prediction with Recurrent
 * Neural Networks"): at training step i each decoder input token is the ground truth with probability ε_i
 * and the model's own previous prediction otherwise, with ε_i decaying from 1 (teacher forcing) towards
 * 0 (free running) so that training moves towards the conditions of generation.
 */
import { ConfigError } from '../errors.js';
import type { Rng } from '../util/rng.js';

/** What the decoder is fed: always the ground truth, always its own predictions, or a coin flip with ε_i. */
export type Feed = 'teacher' | 'free' | 'scheduled';

/** The paper's three decay schedules of ε_i. */
export type SsSchedule = 'linear' | 'exponential' | 'inverse-sigmoid';

export const FEEDS: readonly Feed[] = ['teacher', 'free', 'scheduled'];
export const SS_SCHEDULES: readonly SsSchedule[] = ['linear', 'exponential', 'inverse-sigmoid'];

/** Scheduled sampling (Bengio et al. 2015): what the decoder is fed while training, and how ε_i decays. */
export interface ScheduledSamplingOptions {
  /** Default 'teacher' (plain teacher forcing), so that nothing changes unless scheduled sampling is asked for. */
  feed?: Feed;
  /** Decay of ε_i when `feed` is 'scheduled'. Default 'inverse-sigmoid'. */
  schedule?: SsSchedule;
  /**
   * linear: offset, ε_i = k − c·i (default 1, any finite value; k > 1 holds ε at 1 for (k − 1)/c steps);
   * exponential: ε_i = k^i with 0 < k < 1 (default 0.9993: ε = 0.5 near step 990);
   * inverse-sigmoid: ε_i = k / (k + exp(i/k)) with k ≥ 1 (default 190: ε = 0.5 at i = k·ln k ≈ 997).
   */
  k?: number;
  /** Slope of the linear schedule, ≥ 0. Default 5e-4: ε = 0.5 at step 1000 and 0 at step 2000. Unused otherwise. */
  c?: number;
  /** Floor of ε_i under 'scheduled', in [0, 1]. Default 0, so that exponential and inverse sigmoid are exactly the paper's. */
  min?: number;
}

/** {@link ScheduledSamplingOptions} with every default filled in. */
export type ResolvedScheduledSampling = Required<ScheduledSamplingOptions>;

/**
 * Default k of each schedule. They are chosen so that ε_i crosses 0.5 near step 1000, the middle of a run
 * of a couple of thousand steps; for a run of S steps, scale them: linear c = 1/S, exponential
 * k = 0.5^(2/S), inverse sigmoid k with k·ln k = S/2.
 */
export const SS_DEFAULT_K: Readonly<Record<SsSchedule, number>> = {
  linear: 1,
  exponential: 0.9993,
  'inverse-sigmoid': 190,
};

export const SS_DEFAULT_C = 5e-4;

/** `opts` with defaults filled in, checked; throws ConfigError naming the bad field and its valid range. */
export function validateScheduledSampling(opts: ScheduledSamplingOptions = {}): ResolvedScheduledSampling {
  const feed = opts.feed ?? 'teacher';
  const schedule = opts.schedule ?? 'inverse-sigmoid';
  if (!FEEDS.includes(feed)) {
    throw new ConfigError(`feed must be one of ${FEEDS.join(', ')}, got ${JSON.stringify(feed)}`);
  }
  if (!SS_SCHEDULES.includes(schedule)) {
    throw new ConfigError(`schedule must be one of ${SS_SCHEDULES.join(', ')}, got ${JSON.stringify(schedule)}`);
  }
  const k = opts.k ?? SS_DEFAULT_K[schedule];
  const c = opts.c ?? SS_DEFAULT_C;
  const min = opts.min ?? 0;
  if (typeof k !== 'number' || !Number.isFinite(k)) throw new ConfigError(`k must be a finite number, got ${k}`);
  if (typeof c !== 'number' || !Number.isFinite(c)) throw new ConfigError(`c must be a finite number, got ${c}`);
  if (typeof min !== 'number' || !(min >= 0 && min <= 1)) throw new ConfigError(`min must be in [0, 1], got ${min}`);
  if (schedule === 'exponential' && !(k > 0 && k < 1)) {
    throw new ConfigError(`k of the exponential schedule (ε = k^i) must be in (0, 1) so that ε decays, got ${k}`);
  }
  // k < 1 would start ε below 1/2 (ε_0 = k/(k+1)) and the paper requires k ≥ 1.
  if (schedule === 'inverse-sigmoid' && k < 1) {
    throw new ConfigError(`k of the inverse-sigmoid schedule (ε = k/(k + exp(i/k))) must be ≥ 1, got ${k}`);
  }
  if (schedule === 'linear' && c < 0) {
    throw new ConfigError(`c of the linear schedule (ε = k − c·i) must be ≥ 0 so that ε does not grow, got ${c}`);
  }
  return { feed, schedule, k, c, min };
}

/**
 * ε_i: the probability that a decoder input token is the ground truth at training step `step` (0-based).
 * 'teacher' → 1 and 'free' → 0 whatever `min`; 'scheduled' → the schedule, floored at `min` and clamped to
 * [0, 1]. Non-increasing in `step` for every valid option set.
 */
export function teacherForcingProb(step: number, r: ResolvedScheduledSampling): number {
  if (!Number.isFinite(step) || step < 0) throw new ConfigError(`step must be a finite number ≥ 0, got ${step}`);
  if (r.feed === 'teacher') return 1;
  if (r.feed === 'free') return 0;
  let eps: number;
  switch (r.schedule) {
    case 'linear':
      eps = r.k - r.c * step;
      break;
    case 'exponential':
      eps = r.k ** step;
      break;
    case 'inverse-sigmoid':
      // exp overflows to Infinity for large steps, which gives exactly 0: the limit.
      eps = r.k / (r.k + Math.exp(step / r.k));
      break;
  }
  return Math.min(1, Math.max(0, r.min, eps));
}

/**
 * `n` independent Bernoulli(ε) decisions, one per decoder input token: 1 = feed the ground truth, 0 = feed
 * the model's own prediction. Exactly one `rng.uniform()` is drawn per token whatever ε is, including 0 and
 * 1, so the random stream that follows (e.g. the sampling of the model's tokens) does not shift when the
 * schedule changes; since uniform() lies in [0, 1), `u < ε` gives all ones at ε = 1 and all zeros at ε = 0.
 */
export function coinFlips(eps: number, n: number, rng: Rng): Uint8Array {
  if (typeof eps !== 'number' || !(eps >= 0 && eps <= 1)) {
    throw new ConfigError(`eps must be a probability in [0, 1], got ${eps}`);
  }
  if (!Number.isInteger(n) || n < 0) throw new ConfigError(`n must be a whole number ≥ 0, got ${n}`);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.uniform() < eps ? 1 : 0;
  return out;
}
