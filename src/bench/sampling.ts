/**
 * Char-LM sampling latency and throughput (CPU), E 64, H 256, one GRU layer, weights of a fresh model,
 * the Moby-Dick vocabulary, prime "Call me Ishmael. " then `length` characters:
 * - batch 1, µs per generated character: `CharLM.sample` (one call: the loop steps and draws in Rust),
 *   `CharLM.stream` (one N-API call per character), the same loop in TS over the native `step` (one
 *   step call per character, the draw in TS: how `sample` ran before the Rust sampler), and the
 *   pure-TS backend;
 * - batched, `CharLM.sampleMany(count)`: every stream steps together (the products become
 *   count-row GEMMs), characters per second over all streams.
 * Each method runs in alternating rounds; the median round is reported (the machines are shared).
 */
import type { Vocabulary } from '../data/vocab.js';
import { CharLM } from '../models/char-lm.js';
import { StepSampler, validateSampling } from '../sample/sampling.js';
import { Rng } from '../util/rng.js';

const PRIME = 'Call me Ishmael. ';

export interface SamplingRow {
  method: string;
  streams: number;
  /** Characters generated per stream per timed round. */
  length: number;
  /** Wall time per generated character of one stream (batched: per character of all streams together). */
  usPerToken: number;
  /** Characters per second over all streams. */
  tokensPerSec: number;
}

/** The TS loop over `step` (what `sample` did before the backend's own sampler). */
function stepLoop(model: CharLM, length: number, seed: number): string {
  const rng = new Rng(seed);
  const s = new StepSampler(model.backend, {
    state: null,
    prime: model.vocab.encode(PRIME),
    rngs: [rng],
    sampling: validateSampling({}),
  });
  return PRIME + model.vocab.decode(s.take(length));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

export function benchSampling(vocab: Vocabulary, quick: boolean): SamplingRow[] {
  const native = CharLM.create(vocab, { embed: 64, hidden: 256, layers: 1, cell: 'gru' }, { seed: 0 });
  const js = native.to('js');
  const length = quick ? 400 : 2000;
  const rounds = quick ? 3 : 7;
  const methods: { method: string; streams: number; length: number; run: (seed: number) => unknown }[] = [
    { method: 'CharLM.sample', streams: 1, length, run: (seed) => native.sample({ prime: PRIME, length, seed }) },
    {
      method: 'CharLM.stream',
      streams: 1,
      length,
      run: (seed) => {
        for (const _ of native.stream({ prime: PRIME, length, seed }));
      },
    },
    { method: 'TS loop over native step', streams: 1, length, run: (seed) => stepLoop(native, length, seed) },
    {
      method: 'CharLM.sample, backend js',
      streams: 1,
      length: quick ? 20 : 100,
      run: (seed) => js.sample({ prime: PRIME, length: quick ? 20 : 100, seed }),
    },
    ...[16, 64, 256].map((count) => {
      const n = Math.max(50, Math.round((quick ? 40_000 : 200_000) / count));
      return {
        method: `CharLM.sampleMany(${count})`,
        streams: count,
        length: n,
        run: (seed: number) => native.sampleMany(count, { prime: PRIME, length: n, seed }),
      };
    }),
  ];
  for (const m of methods) m.run(1000); // warm-up: JIT, packing, allocator pools
  const times = methods.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    methods.forEach((m, i) => {
      const t0 = performance.now();
      m.run(r);
      times[i].push((performance.now() - t0) / 1000);
    });
  }
  return methods.map((m, i) => {
    const sec = median(times[i]);
    return {
      method: m.method,
      streams: m.streams,
      length: m.length,
      usPerToken: +((sec / m.length) * 1e6).toPrecision(3),
      tokensPerSec: Math.round((m.streams * m.length) / sec),
    };
  });
}
