/**
 * Decoding over a native recurrent decoder whose state is `[L, N, S]` (every layer's state of N
 * streams) and whose step feeds one token per stream: batched greedy decoding, and the adapter that lets
 * beam search (`./beam.ts`) hold one `[L, 1, S]` state per hypothesis. Shared by the encoder–decoder of
 * tokens and the image captioner.
 */
import type { DecoderStep, Hypothesis } from './beam.js';

/** One decoder step of N streams: `state [L, N, S]`, `tokens [N]` → new state, log-probabilities `[N, V]`. */
export type StateStep = (state: Float32Array, tokens: Uint32Array) => { state: Float32Array; logProbs: Float32Array };

/** The decoder as beam search sees it: one state `[L, 1, S]` per hypothesis, batched per step. */
export function layeredStepper(
  layers: number,
  stateLen: number,
  vocabSize: number,
  step: StateStep,
): DecoderStep<Float32Array> {
  const L = layers;
  const S = stateLen;
  return {
    vocabSize,
    step(states: Float32Array[], tokens: Uint32Array) {
      const n = states.length;
      // [L, N, S] from N states of [L, 1, S].
      const stacked = new Float32Array(L * n * S);
      states.forEach((s, i) => {
        for (let l = 0; l < L; l++) stacked.set(s.subarray(l * S, (l + 1) * S), (l * n + i) * S);
      });
      const r = step(stacked, tokens);
      const next = states.map((_, i) => {
        const s = new Float32Array(L * S);
        for (let l = 0; l < L; l++) s.set(r.state.subarray((l * n + i) * S, (l * n + i + 1) * S), l * S);
        return s;
      });
      return { states: next, logProbs: r.logProbs };
    },
  };
}

/**
 * Greedy decoding of `n` streams at once from `state [L, n, S]`: the argmax token each step, until every
 * stream has produced `eos` or `limit` tokens. Scores are mean log-probabilities per token (eos included).
 */
export function greedyBatch(
  step: StateStep,
  state: Float32Array,
  n: number,
  vocabSize: number,
  opts: { limit: number; bos: number; eos: number },
): Hypothesis[] {
  const V = vocabSize;
  let tokens = new Uint32Array(n).fill(opts.bos);
  const hyps: Hypothesis[] = Array.from({ length: n }, () => ({ tokens: [], logProb: 0, score: 0, finished: false }));
  for (let t = 0; t < opts.limit && hyps.some((h) => !h.finished); t++) {
    const r = step(state, tokens);
    state = r.state;
    tokens = new Uint32Array(n);
    for (let b = 0; b < n; b++) {
      let best = 0;
      for (let v = 1; v < V; v++) if (r.logProbs[b * V + v] > r.logProbs[b * V + best]) best = v;
      tokens[b] = best;
      const h = hyps[b];
      if (h.finished) continue;
      h.logProb += r.logProbs[b * V + best];
      if (best === opts.eos) h.finished = true;
      else h.tokens.push(best);
    }
  }
  for (const h of hyps) h.score = h.logProb / (h.tokens.length + (h.finished ? 1 : 0));
  return hyps;
}

/**
 * `decode(i)` for every i < n (synchronous decoding, e.g. beam search per input), letting timers and
 * signals run and reporting `onProgress` after every `every` items.
 */
export async function decodeEach<T>(
  n: number,
  decode: (i: number) => T,
  every: number,
  onProgress?: (done: number, total: number) => void,
): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) {
    out.push(decode(i));
    if (i % every === every - 1) {
      onProgress?.(i + 1, n);
      await new Promise((r) => setImmediate(r));
    }
  }
  return out;
}
