/**
 * Choosing the next token from logits: temperature, top-k and nucleus (top-p) sampling
 * (Holtzman et al., 2020, "The Curious Case of Neural Text Degeneration"), seeded.
 */
import type { CharLmBackend, SamplerInit, TokenSampler } from '../backend/types.js';
import { ConfigError } from '../errors.js';
import type { Rng } from '../util/rng.js';

/** How a token is drawn from logits: temperature, top-k, top-p and seed. */
export interface SamplingOptions {
  /** Divides the logits; < 1 sharpens, > 1 flattens. 0 means greedy (argmax). Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens (0: all). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability sums to at least p (1: all). */
  topP?: number;
}

export function validateSampling(o: SamplingOptions): Required<SamplingOptions> {
  const temperature = o.temperature ?? 1;
  const topK = o.topK ?? 0;
  const topP = o.topP ?? 1;
  if (!Number.isFinite(temperature) || temperature < 0) {
    throw new ConfigError(`temperature must be a finite number ≥ 0 (0 = greedy), got ${temperature}`);
  }
  if (!Number.isInteger(topK) || topK < 0)
    throw new ConfigError(`topK must be a whole number ≥ 0 (0 = off), got ${topK}`);
  if (!Number.isFinite(topP) || topP <= 0 || topP > 1) throw new ConfigError(`topP must be in (0, 1], got ${topP}`);
  return { temperature, topK, topP };
}

/** Draws one index from `logits` (one row). */
export function sampleLogits(logits: ArrayLike<number>, opts: Required<SamplingOptions>, rng: Rng): number {
  const v = logits.length;
  let best = 0;
  for (let i = 1; i < v; i++) if (logits[i] > logits[best]) best = i;
  if (opts.temperature === 0) return best;
  // Softmax at temperature, stabilised by the maximum.
  const p = new Float64Array(v);
  const max = logits[best];
  for (let i = 0; i < v; i++) p[i] = Math.exp((logits[i] - max) / opts.temperature);
  let order: number[] | null = null;
  if (opts.topK > 0 && opts.topK < v) {
    order = Array.from({ length: v }, (_, i) => i).sort((a, b) => p[b] - p[a]);
    for (const i of order.slice(opts.topK)) p[i] = 0;
  }
  if (opts.topP < 1) {
    order ??= Array.from({ length: v }, (_, i) => i).sort((a, b) => p[b] - p[a]);
    let total = 0;
    for (let i = 0; i < v; i++) total += p[i];
    let kept = 0;
    for (const i of order) {
      if (kept >= opts.topP * total) p[i] = 0;
      else kept += p[i];
    }
  }
  let total = 0;
  for (let i = 0; i < v; i++) total += p[i];
  let u = rng.uniform() * total;
  for (let i = 0; i < v; i++) {
    u -= p[i];
    if (u < 0 && p[i] > 0) return i;
  }
  return best;
}

/**
 * The sampling loop over a backend's `step`, in TypeScript: reads each stream's prime (one step per
 * id), then per draw samples every stream's logits with its own generator and feeds the draws back.
 * A draw is fed only when the next one is asked for, so `take(n)` steps n − 1 times after the prime.
 * What a backend's own {@link CharLmBackend.sampler} must reproduce exactly.
 */
export class StepSampler implements TokenSampler {
  private state: Float32Array | null;
  private logits: Float32Array;
  private readonly streams: number;
  private readonly rngs: Rng[];
  private readonly sampling: Required<SamplingOptions>;
  /** The last draws, fed before the next ones. */
  private pending: Uint32Array | null = null;

  constructor(
    private readonly backend: Pick<CharLmBackend, 'step'>,
    init: SamplerInit,
  ) {
    const n = init.rngs.length;
    const p = init.prime.length / n;
    if (n < 1 || !Number.isInteger(p) || p < 1) {
      throw new ConfigError(
        `a sampler needs ≥ 1 stream and a prime of ≥ 1 id per stream, got ${init.prime.length} ids for ${n}`,
      );
    }
    this.streams = n;
    this.rngs = init.rngs;
    this.sampling = init.sampling;
    let state = init.state;
    let logits: Float32Array = new Float32Array(0);
    const column = new Uint32Array(n);
    for (let t = 0; t < p; t++) {
      for (let r = 0; r < n; r++) column[r] = init.prime[r * p + t];
      ({ state, logits } = backend.step(state, column));
    }
    this.state = state;
    this.logits = logits;
  }

  next(): number {
    if (this.streams !== 1) throw new ConfigError(`next() is for one stream; this sampler has ${this.streams}`);
    return this.take(1)[0];
  }

  take(n: number): Uint32Array {
    const ns = this.streams;
    const out = new Uint32Array(ns * n);
    for (let i = 0; i < n; i++) {
      if (this.pending) ({ state: this.state, logits: this.logits } = this.backend.step(this.state, this.pending));
      const v = this.logits.length / ns;
      const drawn = new Uint32Array(ns);
      for (let r = 0; r < ns; r++) {
        drawn[r] = sampleLogits(this.logits.subarray(r * v, (r + 1) * v), this.sampling, this.rngs[r]);
        out[r * n + i] = drawn[r];
      }
      this.pending = drawn;
    }
    return out;
  }
}
