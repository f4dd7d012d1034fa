#!/usr/bin/env node
/**
 * Soak: trains a small char LM for --steps steps (default 10,000), then makes --calls (default
 * 100,000) `sample`/`logits`/`evaluate` calls through the API, sampling RSS as it goes. After a
 * warm-up (the first 20% of each phase) RSS must grow less than 5% to the end of the phase.
 *
 *   node scripts/hardening/soak.mjs [--steps 10000] [--calls 100000] [--max-growth 0.05]
 *
 * Needs the compiled dist/ (`npx tsc -p tsconfig.json`). RSS is read after a forced garbage collection
 * (the script re-runs itself with --expose-gc). Prints the RSS samples' figures per phase and exits 1
 * when a phase grew too much. Not run by `npm test` (minutes).
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// RSS is sampled after a full garbage collection, so that what V8 has not collected yet is not
// read as growth: re-run this script with --expose-gc when it was started without it.
if (typeof globalThis.gc !== 'function') {
  const r = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
  });
  process.exit(r.status ?? 1);
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const { CharLM, Vocabulary, loadCorpus } = await import(join(ROOT, 'dist', 'index.js'));
const { values: opt } = parseArgs({
  options: {
    steps: { type: 'string', default: '10000' },
    calls: { type: 'string', default: '100000' },
    'max-growth': { type: 'string', default: '0.05' },
  },
});
const STEPS = Number(opt.steps);
const CALLS = Number(opt.calls);
const MAX = Number(opt['max-growth']);
const MB = (b) => Math.round((b / 2 ** 20) * 10) / 10;

const text = loadCorpus('moby-dick').slice(0, 200_000);
const lm = CharLM.create(Vocabulary.fromText(text), { embed: 16, hidden: 64, layers: 1 }, { seed: 0 });

/** Runs `chunks` rounds of `work`, RSS sampled after each; returns the growth after warm-up. */
async function phase(name, chunks, work) {
  const rss = [];
  const t0 = performance.now();
  for (let c = 0; c < chunks; c++) {
    await work(c);
    // Let the event loop turn and collect before reading RSS, so that garbage not yet collected is
    // not read as growth (the addon's results live in V8-owned ArrayBuffers, freed by the GC).
    await new Promise((r) => setImmediate(r));
    globalThis.gc();
    await new Promise((r) => setImmediate(r));
    rss.push(process.memoryUsage().rss);
  }
  const warm = Math.max(1, Math.floor(chunks * 0.2));
  const base = rss[warm - 1];
  const end = rss.at(-1);
  // Growth from the warmed-up sample to the mean of the last 10% (one noisy sample is not a trend).
  const tail = rss.slice(-Math.max(1, Math.floor(chunks / 10)));
  const tailMean = tail.reduce((a, b) => a + b, 0) / tail.length;
  const growth = (tailMean - base) / base;
  const r = {
    phase: name,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
    rssStartMB: MB(rss[0]),
    rssAfterWarmupMB: MB(base),
    rssEndMB: MB(end),
    rssMaxMB: MB(Math.max(...rss)),
    growthAfterWarmupPct: Math.round(growth * 1000) / 10,
    ok: growth < MAX,
  };
  console.log(JSON.stringify(r));
  return r;
}

const CHUNKS = 50;
const perChunk = Math.max(1, Math.round(STEPS / CHUNKS));
const results = [];
results.push(
  await phase(`train ${perChunk * CHUNKS} steps`, CHUNKS, async () => {
    // Consecutive fits of one model (weights and optimizer state carry over), constant learning rate.
    await lm.fit(text, { steps: perChunk, batchSize: 16, seqLen: 64, valEvery: 0, schedule: 'constant' });
  }),
);

const callsPerChunk = Math.max(1, Math.round(CALLS / CHUNKS));
const probe = text.slice(1000, 1064);
results.push(
  await phase(`${callsPerChunk * CHUNKS} sample/logits/evaluate calls`, CHUNKS, async (c) => {
    for (let i = 0; i < callsPerChunk; i++) {
      const k = c * callsPerChunk + i;
      if (k % 3 === 0) lm.sample({ prime: 'Call me ', length: 16, temperature: 0.9, seed: k });
      else if (k % 3 === 1) lm.logits(probe);
      else await lm.evaluate(probe);
    }
  }),
);
if (results.some((r) => !r.ok)) {
  console.error(`FAIL: RSS grew ${MAX * 100}% or more after warm-up`);
  process.exit(1);
}
