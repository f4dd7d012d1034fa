/**
 * `npm run bench -- --peers`: the char-GRU workload on Moby-Dick trained by arflow (native, and its
 * TypeScript reference backend) and by the pure-JS libraries people use for it — TensorFlow.js 4 on its
 * `cpu` and `wasm` backends (peers-tfjs.ts) and brain.js (peers-brain.ts, batch 1) — in one process,
 * each through its own API, with the same model sizes and the same loss (mean softmax cross-entropy of
 * the next character); then sampling latency, arflow carrying the hidden state from token to token vs
 * tfjs re-feeding the window through `model.predict`.
 *
 * Fairness: every engine gets the same batches (or, for brain.js, rows of them), warm-up steps that are
 * not timed, then a capped number of timed steps (the peers are slow; the caps are in the result).
 * arflow native is timed before (A) and after (B) each workload's peers and the ratios use the mean, so a
 * load change on a shared machine shows up as an A/B gap instead of skewing one side.
 * The peers are devDependencies, imported here only (this module is itself imported only under --peers).
 */

import { StreamBatcher } from '../data/batches.js';
import type { Vocabulary } from '../data/vocab.js';
import { CharLM } from '../models/char-lm.js';
import { Rng } from '../util/rng.js';
import { charLmStep, type Size, type StepTiming, timeSteps, tokensPerSec } from './char-rate.js';
import type { benchCoupling, benchCouplingStack } from './coupling.js';

export interface PeerWorkload extends Size {
  name: string;
}

export const PEER_WORKLOADS: readonly PeerWorkload[] = [
  { name: 'E64-H256-L1-B32-T64', cell: 'gru', embed: 64, hidden: 256, layers: 1, batch: 32, seq: 64 },
  { name: 'E64-H512-L2-B32-T64', cell: 'gru', embed: 64, hidden: 512, layers: 2, batch: 32, seq: 64 },
];

export type Engine = 'arflow native' | 'arflow TS' | 'tfjs cpu' | 'tfjs wasm' | 'brain.js';

export interface TrainRow {
  workload: string;
  engine: Engine;
  api: string;
  /** Sequences per step (brain.js trains one at a time). */
  batch: number;
  warmupSteps: number;
  timedSteps: number;
  tokensPerSec: number;
  msPerStep: number;
  /** arflow native's tokens/s over this engine's (native: 1). */
  nativeOverThis: number;
  notes?: string;
}

export interface SampleRow {
  workload: string;
  engine: Engine;
  method: string;
  tokens: number;
  tokensPerSec: number;
  msPerToken: number;
  nativeOverThis: number;
}

export interface FlowRow {
  workload: string;
  unit: string;
  nativePerSec: number;
  tsPerSec: number;
  nativeOverThis: number;
}

export interface PeersResult {
  versions: Record<string, string>;
  training: TrainRow[];
  sampling: SampleRow[];
  /** No JS library has normalizing flows: arflow's TypeScript reference is the pure-JS baseline. */
  flows: FlowRow[];
  /** Engines that could not run, with the reason. */
  skipped: string[];
}

/** [warm-up, timed] steps per engine and workload (index into PEER_WORKLOADS); brain.js steps are sequences. */
const CAPS: Record<Exclude<Engine, 'arflow native'>, readonly [number, number][]> = {
  'arflow TS': [
    [1, 3],
    [1, 2],
  ],
  'tfjs cpu': [
    [1, 2],
    [1, 1],
  ],
  'tfjs wasm': [
    [1, 3],
    [1, 2],
  ],
  'brain.js': [
    [2, 16],
    [1, 4],
  ],
};

/** [warm-up, timed] tokens of sampling per engine and workload. */
const SAMPLE_CAPS: Record<Exclude<Engine, 'brain.js'>, readonly [number, number][]> = {
  'arflow native': [
    [50, 2000],
    [50, 1000],
  ],
  'arflow TS': [
    [5, 200],
    [5, 50],
  ],
  // 6.5 s and 53 s a token on a 2-core Xeon: most of it the cpu backend's SplitV of the recurrent kernel at every time step.
  'tfjs cpu': [
    [1, 4],
    [1, 2],
  ],
  'tfjs wasm': [
    [2, 32],
    [2, 16],
  ],
};

const round = (x: number, digits = 0) => +x.toFixed(digits);
/** Four significant digits: the slowest peers make well under one token per second. */
const sig = (x: number) => +x.toPrecision(4);

function caps(engine: keyof typeof CAPS, w: number, quick: boolean): [number, number] {
  const [warm, steps] = CAPS[engine][w];
  return quick ? [Math.min(warm, 1), Math.max(1, Math.ceil(steps / 4))] : [warm, steps];
}

function sampleCaps(engine: keyof typeof SAMPLE_CAPS, w: number, quick: boolean): [number, number] {
  const [warm, tokens] = SAMPLE_CAPS[engine][w];
  return quick ? [Math.min(warm, 2), Math.max(1, Math.ceil(tokens / 4))] : [warm, tokens];
}

/** Tokens/s of generating `tokens` characters with the state carried (CharLM.stream), after `warm`. */
function streamRate(model: CharLM, warm: number, tokens: number): number {
  for (const _ of model.stream({ length: warm, seed: 1 }));
  const t0 = performance.now();
  for (const _ of model.stream({ length: tokens, seed: 2 }));
  return tokens / ((performance.now() - t0) / 1000);
}

/** Tokens/s of generating with `next(window)` re-reading a sliding window of `seq` ids, after `warm`. */
function windowRate(next: (window: Uint32Array, rng: Rng) => number, prime: Uint32Array, warm: number, tokens: number) {
  const window = Uint32Array.from(prime);
  const rng = new Rng(3);
  const one = () => {
    const c = next(window, rng);
    window.copyWithin(0, 1);
    window[window.length - 1] = c;
  };
  for (let i = 0; i < warm; i++) one();
  const t0 = performance.now();
  for (let i = 0; i < tokens; i++) one();
  return tokens / ((performance.now() - t0) / 1000);
}

const message = (e: unknown) => (e instanceof Error ? e.message.split('\n')[0] : String(e));

/**
 * Runs every engine on every workload and the sampling comparison. `log` reports progress (a tfjs-cpu
 * step at H 512 × 2 takes minutes).
 */
export async function benchPeers(
  vocab: Vocabulary,
  ids: Uint32Array,
  quick: boolean,
  log: (line: string) => void = () => {},
): Promise<PeersResult> {
  const versions: Record<string, string> = {};
  const skipped: string[] = [];
  const tfjs = await import('./peers-tfjs.js')
    .then(async (m) => ({ m, lib: await m.loadTfjs() }))
    .catch((e: unknown) => {
      skipped.push(`tfjs: could not load @tensorflow/tfjs-* (${message(e)}); run npm install`);
      return null;
    });
  if (tfjs) {
    versions['@tensorflow/tfjs-core'] = tfjs.lib.versions.core;
    versions['@tensorflow/tfjs-layers'] = tfjs.lib.versions.layers;
    versions['@tensorflow/tfjs-backend-wasm'] = tfjs.lib.versions.wasm;
  }
  const brainjs = await import('./peers-brain.js')
    .then(async (m) => ({ m, ...(await m.loadBrain()) }))
    .catch((e: unknown) => {
      skipped.push(`brain.js: could not load (${message(e)}); run npm install`);
      return null;
    });
  if (brainjs) versions['brain.js'] = brainjs.version;

  const training: TrainRow[] = [];
  const sampling: SampleRow[] = [];
  for (const [w, s] of PEER_WORKLOADS.entries()) {
    const tokensPerStep = s.batch * s.seq;
    const rows: Omit<TrainRow, 'nativeOverThis'>[] = [];
    const samples: Omit<SampleRow, 'nativeOverThis'>[] = [];
    const row = (engine: Engine, api: string, t: StepTiming, batch: number, notes?: string) => {
      const r = { workload: s.name, engine, api, batch, warmupSteps: t.warmup, timedSteps: t.steps };
      const rate = sig(tokensPerSec(t, batch * s.seq));
      rows.push({ ...r, tokensPerSec: rate, msPerStep: sig(t.msPerStep), notes });
      log(`  ${s.name} ${engine}: ${rate} tokens/s (${t.warmup} warm-up + ${t.steps} timed steps)`);
    };
    const sample = (engine: Engine, method: string, tokens: number, rate: number) => {
      samples.push({ workload: s.name, engine, method, tokens, tokensPerSec: sig(rate), msPerToken: sig(1000 / rate) });
      log(`  ${s.name} ${engine} sampling: ${sig(rate)} tokens/s (${tokens} tokens)`);
    };
    const native = CharLM.create(vocab, s, { backend: 'native', seed: 0 });
    const nativeTrain = () => timeSteps(charLmStep(native, ids, s), 3, { maxSteps: 10_000, minSec: quick ? 1 : 4 });
    const [nsWarm, nsTokens] = sampleCaps('arflow native', w, quick);
    const nativeA = await nativeTrain();
    const nativeSampleA = streamRate(native, nsWarm, nsTokens);

    const ts = native.to('js');
    const [tsWarm, tsSteps] = caps('arflow TS', w, quick);
    row(
      'arflow TS',
      'CharLM backend: js, trainStep',
      await timeSteps(charLmStep(ts, ids, s), tsWarm, { maxSteps: tsSteps }),
      s.batch,
    );
    const [tsSampleWarm, tsTokens] = sampleCaps('arflow TS', w, quick);
    sample('arflow TS', 'CharLM.stream, state carried', tsTokens, streamRate(ts, tsSampleWarm, tsTokens));

    if (tfjs) {
      for (const backend of ['cpu', 'wasm'] as const) {
        const engine: Engine = `tfjs ${backend}`;
        try {
          const model = await tfjs.m.tfjsCharGru(tfjs.lib, backend, s, vocab.size);
          try {
            const batcher = new StreamBatcher(ids, s.batch, s.seq, { seed: 0 });
            const [warm, steps] = caps(engine, w, quick);
            const t = await timeSteps(() => model.train(batcher.next()), warm, { maxSteps: steps });
            row(engine, 'Layers API, model.trainOnBatch', t, s.batch, `${model.params} parameters, ${model.notes}`);
            const [sWarm, sTokens] = sampleCaps(engine, w, quick);
            const rate = windowRate(model.next, ids.subarray(0, s.seq), sWarm, sTokens);
            sample(engine, `model.predict on the last ${s.seq} characters`, sTokens, rate);
          } finally {
            model.dispose();
          }
        } catch (e) {
          skipped.push(`${engine} ${s.name}: ${message(e)}`);
        }
      }
    }

    if (brainjs) {
      const net = brainjs.m.brainCharGru(brainjs.brain, s, vocab.size);
      const batcher = new StreamBatcher(ids, s.batch, s.seq, { seed: 0 });
      let batch = batcher.next();
      let r = 0;
      const one = () => {
        if (r === s.batch) [batch, r] = [batcher.next(), 0];
        net.train(batch.ids.subarray(r * s.seq, ++r * s.seq));
      };
      const [warm, steps] = caps('brain.js', w, quick);
      const t = await timeSteps(one, warm, { maxSteps: steps });
      row(
        'brain.js',
        'recurrent.GRU, trainPattern as its train loop calls it',
        t,
        1,
        'batch 1: one sequence per update',
      );
    }

    const nativeB = await nativeTrain();
    const nativeSampleB = streamRate(native, nsWarm, nsTokens);
    const nativeRate = (tokensPerSec(nativeA, tokensPerStep) + tokensPerSec(nativeB, tokensPerStep)) / 2;
    const nativeSample = (nativeSampleA + nativeSampleB) / 2;
    const nativeNotes =
      `mean of A ${Math.round(tokensPerSec(nativeA, tokensPerStep))} (before the others) and ` +
      `B ${Math.round(tokensPerSec(nativeB, tokensPerStep))} (after)`;
    training.push({
      workload: s.name,
      engine: 'arflow native',
      api: 'CharLM backend: native, trainStep',
      batch: s.batch,
      warmupSteps: 3,
      timedSteps: nativeA.steps + nativeB.steps,
      tokensPerSec: round(nativeRate),
      msPerStep: round((tokensPerStep / nativeRate) * 1000, 2),
      nativeOverThis: 1,
      notes: nativeNotes,
    });
    training.push(...rows.map((r) => ({ ...r, nativeOverThis: round(nativeRate / r.tokensPerSec, 1) })));
    sampling.push({
      workload: s.name,
      engine: 'arflow native',
      method: 'CharLM.stream, state carried',
      tokens: 2 * nsTokens,
      tokensPerSec: round(nativeSample),
      msPerToken: round(1000 / nativeSample, 3),
      nativeOverThis: 1,
    });
    sampling.push(...samples.map((r) => ({ ...r, nativeOverThis: round(nativeSample / r.tokensPerSec, 1) })));
  }
  return { versions, training, sampling, flows: [], skipped };
}

/** The flow rows of the same bench run, as ratios: arflow native over its TypeScript reference. */
export function flowRatios(
  stack: Awaited<ReturnType<typeof benchCouplingStack>>,
  kernel: ReturnType<typeof benchCoupling>,
): FlowRow[] {
  return [
    {
      workload: stack.model,
      unit: 'training samples/s',
      nativePerSec: stack.nativeTrainSamplesPerSec,
      tsPerSec: stack.jsTrainSamplesPerSec,
      nativeOverThis: stack.speedupNativeOverJs,
    },
    {
      workload: `${kernel.layer} (through the binding)`,
      unit: 'samples/s',
      nativePerSec: kernel.nativeSamplesPerSec,
      tsPerSec: kernel.jsSamplesPerSec,
      nativeOverThis: kernel.speedupNativeOverJs,
    },
  ];
}
