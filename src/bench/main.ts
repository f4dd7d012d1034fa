/**
 * `npm run bench`: throughput of the char-LM training step on Moby-Dick (GRU, LSTM and tanh-RNN cells),
 * native CPU vs the pure-TS reference, in one run; achieved GFLOP/s against this machine's measured fp32 GEMM rate; and peak RSS
 * of training at growing T; the affine-coupling kernel of the flows; Fashion-MNIST Real NVP and Glow
 * training and scoring images/s; encoder–decoder training and decoding words/s on CMUdict; series-model time steps/s; Pixel-RNN
 * training pixels/s and sampling images/s; captioner training and captioning captions/s; char-LM sampling, µs per
 * character at batch 1 and characters/s batched (sampling.ts). Prints a table and writes `bench/results/<date>.json`.
 * `--peers` adds the comparison with tfjs and brain.js (peers.ts) and its bar chart `bench/results/<date>.png`;
 * `--peers-only` runs just that and the flow rows; `--sampling-only` just the sampling rows; `--quick` shortens everything.
 * `--torch` adds arflow vs PyTorch on the same workloads, alternating (torch.ts; needs `python3 -c "import torch"`,
 * else it says so and skips them); `--torch-only` runs just those rows (arflow's side alone without PyTorch).
 * Figures are only comparable within one run: the machines are shared and noisy.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { loadNative, type NativeAddon } from '../backend/native.js';
import { gateCount } from '../backend/types.js';
import { loadCorpus } from '../data/corpora.js';
import { Vocabulary } from '../data/vocab.js';
import { CharLM } from '../models/char-lm.js';
import { benchCaption } from './caption.js';
import { charLmStep, type Size, timeSteps, tokensPerSec } from './char-rate.js';
import { peerBars, saveBarChart } from './chart.js';
import { benchCoupling, benchCouplingStack } from './coupling.js';
import { benchImageFlows } from './flows.js';
import type { PeersResult } from './peers.js';
import { benchPixel } from './pixel.js';
import { benchSampling } from './sampling.js';
import { benchSeq2Seq } from './seq2seq.js';
import { benchSeries } from './series.js';
import { benchTorch, renderTorchTable, type TorchResult, torchHeader } from './torch.js';

/** FLOPs of the GEMMs in one training step: forward, and twice that again for backward (dX and dW). */
function stepFlops(s: Size, vocab: number): number {
  const bt = s.batch * s.seq;
  let fwd = 2 * bt * s.hidden * vocab;
  const g = gateCount(s.cell ?? 'gru') * s.hidden;
  for (let l = 0; l < s.layers; l++) {
    const input = l === 0 ? s.embed : s.hidden;
    fwd += 2 * bt * input * g + 2 * bt * s.hidden * g;
  }
  return 3 * fwd;
}

async function measure(model: CharLM, ids: Uint32Array, s: Size, warmup: number, minSec: number, maxSteps: number) {
  const t = await timeSteps(charLmStep(model, ids, s), warmup, { maxSteps, minSec });
  return { steps: t.steps, sec: t.sec, tokensPerSec: tokensPerSec(t, s.batch * s.seq), msPerStep: t.msPerStep };
}

/** Peak RSS of a child process that trains `steps` steps at sequence length `seq`. */
function rssAt(seq: number, s: Size): { seq: number; peakRssMiB: number; baselineRssMiB: number } {
  const out = execFileSync(
    process.execPath,
    [fileURLToPath(new URL('./rss.js', import.meta.url)), String(seq), JSON.stringify(s)],
    {
      encoding: 'utf8',
    },
  );
  return JSON.parse(out.trim().split('\n').pop() as string);
}

/** The char-LM cells, GEMM probe, memory and every model family's own native-vs-TS rows; prints their tables. */
async function benchFamilies(quick: boolean, vocab: Vocabulary, ids: Uint32Array, addon: NativeAddon) {
  const gemm = addon.benchGemm(2048, 768, 256, quick ? 5 : 30);
  const gemmSquare = addon.benchGemm(1024, 1024, 1024, quick ? 2 : 8);
  const sizes: (Size & { name: string; js: boolean })[] = [
    { name: 'E64-H256-L1-B32-T64', cell: 'gru', embed: 64, hidden: 256, layers: 1, batch: 32, seq: 64, js: true },
    { name: 'E64-H256-L1-B32-T64', cell: 'lstm', embed: 64, hidden: 256, layers: 1, batch: 32, seq: 64, js: true },
    { name: 'E64-H256-L1-B32-T64', cell: 'rnn', embed: 64, hidden: 256, layers: 1, batch: 32, seq: 64, js: true },
    { name: 'E64-H512-L2-B32-T64', cell: 'gru', embed: 64, hidden: 512, layers: 2, batch: 32, seq: 64, js: false },
  ];
  const rows = [];
  for (const s of sizes) {
    const native = CharLM.create(vocab, s, { backend: 'native', seed: 0 });
    const n = await measure(native, ids, s, 3, quick ? 2 : 8, 10_000);
    const flops = stepFlops(s, vocab.size);
    const row: Record<string, unknown> = {
      cell: s.cell,
      size: s.name,
      nativeTokensPerSec: Math.round(n.tokensPerSec),
      nativeMsPerStep: +n.msPerStep.toFixed(2),
      nativeGflops: +(flops / (n.msPerStep / 1000) / 1e9).toFixed(1),
      nativeSteps: n.steps,
    };
    if (s.js) {
      const js = native.to('js');
      const j = await measure(js, ids, s, 0, quick ? 1 : 3, quick ? 1 : 3);
      row.jsTokensPerSec = Math.round(j.tokensPerSec);
      row.jsMsPerStep = +j.msPerStep.toFixed(1);
      row.speedupNativeOverJs = +(n.tokensPerSec / j.tokensPerSec).toFixed(1);
    }
    rows.push(row);
  }
  const base: Size = { embed: 64, hidden: 256, layers: 1, batch: 32, seq: 64 };
  const memory = (quick ? [64, 256] : [64, 256, 1024]).map((seq) => {
    const r = rssAt(seq, base);
    const savedMiB = (seq * base.batch * 4 * base.hidden * 4) / 2 ** 20;
    return {
      ...r,
      trainingMiB: +(r.peakRssMiB - r.baselineRssMiB).toFixed(1),
      gateActivationsMiB: +savedMiB.toFixed(1),
    };
  });
  const sampling = benchSampling(vocab, quick);
  const imageFlows = await benchImageFlows(quick);
  const seq2seq = await benchSeq2Seq(quick);
  const series = await benchSeries(quick);
  const pixel = await benchPixel(quick);
  const caption = await benchCaption(quick);
  console.log(
    `fp32 GEMM (measured): ${gemm.toFixed(1)} GFLOP/s at 2048×768×256, ${gemmSquare.toFixed(1)} GFLOP/s at 1024³\n`,
  );
  console.table(rows);
  console.log('char-LM sampling, E64-H256-L1 GRU (µs per character of one stream; batched: of all streams together):');
  console.table(sampling);
  console.table(memory);
  if (typeof imageFlows === 'string') console.log(`image flows: ${imageFlows}`);
  else console.table(imageFlows);
  if (typeof seq2seq === 'string') console.log(`seq2seq: ${seq2seq}`);
  else console.table(seq2seq);
  if (typeof series === 'string') console.log(`series: ${series}`);
  else console.table(series);
  if (typeof pixel === 'string') console.log(`pixel-rnn: ${pixel}`);
  else console.table(pixel);
  if (typeof caption === 'string') console.log(`captioner: ${caption}`);
  else console.table(caption);
  return {
    fp32GemmGflops: { '2048x768x256': +gemm.toFixed(1), '1024^3': +gemmSquare.toFixed(1) },
    training: rows,
    sampling,
    memory,
    imageFlows,
    seq2seq,
    series,
    pixel,
    caption,
  };
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const peersOnly = process.argv.includes('--peers-only');
  const samplingOnly = process.argv.includes('--sampling-only');
  const withPeers = peersOnly || process.argv.includes('--peers');
  const torchOnly = process.argv.includes('--torch-only');
  const withTorch = torchOnly || process.argv.includes('--torch');
  const text = loadCorpus('moby-dick');
  const vocab = Vocabulary.fromText(text);
  const ids = vocab.encode(text);
  const addon = loadNative();
  const info = addon.buildInfo();
  const date = new Date().toISOString();
  const machine = { cpu: cpus()[0]?.model, cores: cpus().length, threads: info.threads, node: process.version };
  console.log(`machine: ${machine.cpu}, ${machine.cores} cores, ${info.threads} kernel threads`);
  if (samplingOnly) {
    const sampling = benchSampling(vocab, quick);
    console.table(sampling);
    save({ date, quick, machine, sampling }, date);
    return;
  }
  if (torchOnly) {
    const torch = await runTorch(quick, vocab, ids, addon, true);
    save({ date, quick, machine, torch }, date);
    return;
  }
  const families = peersOnly ? {} : await benchFamilies(quick, vocab, ids, addon);
  const coupling = benchCoupling(addon, quick);
  const couplingStack = await benchCouplingStack(quick);
  console.table([coupling]);
  console.table([couplingStack]);
  let peers: PeersResult | undefined;
  if (withPeers) {
    // Imported only here: the peers (tfjs, brain.js) are devDependencies and slow to load.
    const { benchPeers, flowRatios } = await import('./peers.js');
    console.log('\npeers (tfjs cpu / wasm, brain.js) on the same workload; steps capped, see the table:');
    peers = await benchPeers(vocab, ids, quick, (line) => console.log(line));
    peers.flows = flowRatios(couplingStack, coupling);
    printPeers(peers);
  }
  const torch = withTorch ? await runTorch(quick, vocab, ids, addon, false) : undefined;
  const result = {
    date,
    quick,
    machine,
    ...families,
    coupling,
    couplingStack,
    ...(peers ? { peers } : {}),
    ...(torch ? { torch } : {}),
  };
  const stem = save(result, date);
  if (peers) {
    saveBarChart(`${stem}.png`, peerBars(peers));
    console.log(`wrote ${stem}.png (arflow native ÷ each engine, log scale); npm run bench:readme updates README.md`);
  }
}

/** Writes `bench/results/<date>.json`; returns its path without the extension. */
function save(result: object, date: string): string {
  const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const stem = `${dir}${date.replace(/[:.]/g, '-')}`;
  writeFileSync(`${stem}.json`, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`\nwrote ${stem}.json`);
  return stem;
}

/** The `--torch` rows (torch.ts), printed as a Markdown table. */
async function runTorch(
  quick: boolean,
  vocab: Vocabulary,
  ids: Uint32Array,
  addon: NativeAddon,
  arflowWithoutTorch: boolean,
): Promise<TorchResult> {
  console.log('\narflow vs PyTorch, alternating rounds (torch.ts):');
  const torch = await benchTorch({ quick, vocab, ids, addon, arflowWithoutTorch });
  if (torch.rows.length > 0 || torch.failures.length > 0) {
    console.log(`\n${torchHeader(torch)}\n\n${renderTorchTable(torch)}`);
  }
  return torch;
}

function printPeers(p: PeersResult): void {
  console.log('\ntraining (tokens/s; nativeOverThis = arflow native ÷ this engine):');
  console.table(
    p.training.map(({ workload, engine, batch, warmupSteps, timedSteps, tokensPerSec, msPerStep, nativeOverThis }) => ({
      workload,
      engine,
      batch,
      warmupSteps,
      timedSteps,
      tokensPerSec,
      msPerStep,
      nativeOverThis,
    })),
  );
  console.log('sampling (tokens/s, one stream):');
  console.table(
    p.sampling.map(({ workload, engine, tokens, tokensPerSec, msPerToken, nativeOverThis }) => ({
      workload,
      engine,
      tokens,
      tokensPerSec,
      msPerToken,
      nativeOverThis,
    })),
  );
  console.log("flows (no JS library has them: the pure-JS baseline is arflow's TypeScript reference):");
  console.table(p.flows);
  for (const s of p.skipped) console.log(`not measured: ${s}`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
