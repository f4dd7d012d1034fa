/**
 * Two char LMs training at once in one process (two `fit` promises in flight together, each batch on
 * the libuv pool) end with exactly the weights and losses each reaches when trained alone, bit for
 * bit, and the event loop keeps ticking while they train. Then the same in two worker threads.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { loadCorpus } from '../src/data/corpora.js';
import { Vocabulary } from '../src/data/vocab.js';
import { CharLM } from '../src/models/char-lm.js';

const TEXT = loadCorpus('moby-dick').slice(0, 40_000);
const VOCAB = Vocabulary.fromText(TEXT);
const STEPS = 60;

interface Spec {
  config: Record<string, unknown>;
  seed: number;
  batchSize: number;
}
const A: Spec = { config: { embed: 32, hidden: 96, cell: 'gru' }, seed: 11, batchSize: 16 };
const B: Spec = { config: { embed: 24, hidden: 64, layers: 2, cell: 'lstm' }, seed: 12, batchSize: 8 };

interface Outcome {
  losses: number[];
  params: Record<string, Float32Array>;
}

function start(spec: Spec): { model: CharLM; run: Promise<Outcome> } {
  const model = CharLM.create(VOCAB, spec.config, { seed: spec.seed });
  const losses: number[] = [];
  const run = model
    .fit(TEXT, {
      steps: STEPS,
      batchSize: spec.batchSize,
      seqLen: 48,
      valEvery: 0,
      seed: spec.seed,
      onProgress: (p) => losses.push(p.loss),
    })
    .then(() => ({ losses, params: params(model) }));
  return { model, run };
}

function params(model: CharLM): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  for (const p of model.backend.paramInfo()) out[p.name] = model.backend.getParam(p.name);
  return out;
}

function expectBitIdentical(got: Outcome, want: Outcome, label: string): void {
  expect(got.losses, `${label} losses`).toEqual(want.losses);
  expect(Object.keys(got.params).sort(), `${label} parameter names`).toEqual(Object.keys(want.params).sort());
  for (const [name, w] of Object.entries(want.params)) {
    const g = got.params[name];
    const same = Buffer.from(g.buffer, g.byteOffset, g.byteLength).equals(
      Buffer.from(w.buffer, w.byteOffset, w.byteLength),
    );
    expect(same, `${label} ${name} bit-identical`).toBe(true);
  }
}

describe('two models training at once', () => {
  it('concurrent fit calls in one process give bit-identical results to each alone; the loop ticks', async () => {
    const aloneA = await start(A).run;
    const aloneB = await start(B).run;
    // The check is void if training is a no-op: the weights must have moved from their initial values.
    const fresh = params(CharLM.create(VOCAB, A.config, { seed: A.seed }));
    expect(Object.keys(fresh).some((k) => fresh[k].some((v, i) => v !== aloneA.params[k][i]))).toBe(true);

    let ticks = 0;
    const timer = setInterval(() => ticks++, 2);
    const t0 = performance.now();
    let both: Outcome[];
    try {
      both = await Promise.all([start(A).run, start(B).run]);
    } finally {
      clearInterval(timer);
    }
    const ms = performance.now() - t0;
    expectBitIdentical(both[0], aloneA, 'A');
    expectBitIdentical(both[1], aloneB, 'B');
    // A blocked loop fires no timer until both fits resolve; one tick per 50 ms is loose for 2 busy cores.
    expect(ticks, `${ticks} ticks in ${ms.toFixed(0)} ms`).toBeGreaterThanOrEqual(Math.max(3, Math.floor(ms / 50)));
  });

  const DIST = join(fileURLToPath(new URL('../', import.meta.url)), 'dist', 'index.js');
  it.skipIf(!existsSync(DIST))(
    'two worker threads training at once match the in-process runs bit for bit',
    async () => {
      const alone = [await start(A).run, await start(B).run];
      const code = `
      import { workerData, parentPort } from 'node:worker_threads';
      const { CharLM, Vocabulary, loadCorpus } = await import(workerData.dist);
      const text = loadCorpus('moby-dick').slice(0, 40000);
      const s = workerData.spec;
      const model = CharLM.create(Vocabulary.fromText(text), s.config, { seed: s.seed });
      const losses = [];
      await model.fit(text, { steps: ${STEPS}, batchSize: s.batchSize, seqLen: 48, valEvery: 0, seed: s.seed,
        onProgress: (p) => losses.push(p.loss) });
      const params = {};
      for (const p of model.backend.paramInfo()) params[p.name] = model.backend.getParam(p.name);
      parentPort.postMessage({ losses, params });`;
      let ticks = 0;
      const timer = setInterval(() => ticks++, 2);
      let results: Outcome[];
      try {
        results = await Promise.all(
          [A, B].map(
            (spec) =>
              new Promise<Outcome>((resolve, reject) => {
                const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(code)}`), {
                  workerData: { dist: pathToFileURL(DIST).href, spec },
                });
                w.once('message', resolve);
                w.once('error', reject);
                w.once('exit', (c) => c !== 0 && reject(new Error(`worker exited ${c}`)));
              }),
          ),
        );
      } finally {
        clearInterval(timer);
      }
      expectBitIdentical(results[0], alone[0], 'worker A');
      expectBitIdentical(results[1], alone[1], 'worker B');
      expect(ticks).toBeGreaterThanOrEqual(3);
    },
  );
});
