/**
 * Timing shared by the char-LM rows of `npm run bench` and its `--peers` comparison: the workload's
 * geometry, a step timer (warm-up steps first, then timed steps until a step cap or a time floor) and
 * arflow's training step on Moby-Dick batches.
 */
import type { CellKind } from '../backend/types.js';
import { StreamBatcher } from '../data/batches.js';
import type { CharLM } from '../models/char-lm.js';

export interface Size {
  cell?: CellKind;
  embed: number;
  hidden: number;
  layers: number;
  batch: number;
  seq: number;
}

export interface StepTiming {
  warmup: number;
  steps: number;
  sec: number;
  msPerStep: number;
}

/**
 * Runs `warmup` untimed steps, then timed ones until `maxSteps` are done or, with `minSec`, until that
 * many seconds have passed (whichever comes first; at least one timed step).
 */
export async function timeSteps(
  step: () => unknown,
  warmup: number,
  limit: { maxSteps: number; minSec?: number },
): Promise<StepTiming> {
  for (let i = 0; i < warmup; i++) await step();
  let steps = 0;
  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  do {
    await step();
    steps++;
  } while (steps < limit.maxSteps && (limit.minSec === undefined || elapsed() < limit.minSec));
  const sec = elapsed();
  return { warmup, steps, sec, msPerStep: (sec / steps) * 1000 };
}

/** The optimizer of the benchmarked step (the `--torch` rows give PyTorch's AdamW the same). */
export const CHAR_LM_BENCH_OPT = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 1 } as const;

/** One AdamW training step of `model` on the next batch of `ids` (TBPTT streams, as `arflow train char`). */
export function charLmStep(model: CharLM, ids: Uint32Array, s: Size, seed = 0): () => Promise<number> {
  const batcher = new StreamBatcher(ids, s.batch, s.seq, { seed });
  const opt = { ...CHAR_LM_BENCH_OPT };
  return async () => {
    const b = batcher.next();
    return (await model.backend.trainStep(b.ids, b.targets, s.batch, s.seq, opt)).loss;
  };
}

/** Tokens (characters) per second of a timing whose steps each train `tokensPerStep` characters. */
export function tokensPerSec(t: StepTiming, tokensPerStep: number): number {
  return (t.steps * tokensPerStep) / t.sec;
}
