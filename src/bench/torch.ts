/**
 * `npm run bench -- --torch`: arflow against PyTorch on the same workloads, where `python3 -c "import
 * torch"` works (PyTorch is not a dependency of arflow). The PyTorch side is `bench/torch/workloads.py`,
 * one process per round (written as a PyTorch user would: eager, no torch.compile), timed inside the
 * process after its warm-up. Each row alternates arflow, PyTorch, arflow, PyTorch … for `rounds` rounds of
 * `seconds` each, so the load of a shared machine falls on both sides alike; the report gives each
 * side's median and min–max and the speed ratio arflow ÷ PyTorch (> 1: arflow faster), whose range pairs
 * each arflow round with the PyTorch round that followed it.
 *
 * Rows: char-GRU LM training on Moby-Dick (E 64, H 256 × 1 and H 512 × 2, B 32, T 64; tokens/s), its
 * sampling one token at a time with the state carried (H 256; µs/token; again with PyTorch at 1 thread,
 * which suits its batch-1 steps better), Fashion-MNIST Real NVP and Glow training (batch 64; images/s)
 * and scoring (bits/dim of dequantised images in batches of 64, no gradients; images/s), and fp32 GEMM
 * (GFLOP/s). `--quick`: 3 rounds of 2 s, else 4 of 4 s (about 6 minutes on 2 cores; the
 * PyTorch processes' start-up and warm-up come on top of their timed seconds). Before the rows, the
 * networks are checked to be the same: every parameter name and shape of the PyTorch models under
 * arflow's names (and the counts), and, with arflow's weights copied into them, the same loss (char LM)
 * and per-example log p (flows).
 *
 * Threads: 2 on each side (arflow's pool has one per core; `torch.set_num_threads(2)`). The PyTorch
 * processes run with `OMP_WAIT_POLICY=PASSIVE` unless the environment sets it: PyTorch's OpenMP threads
 * otherwise spin at every barrier, and on a machine whose cores other processes share that makes PyTorch
 * many times slower than it is on a quiet one, which would inflate arflow's ratios.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeAddon } from '../backend/native.js';
import { fashionMnistAvailable, fashionMnistDir, loadFashionMnist } from '../data/fashion-mnist.js';
import type { Vocabulary } from '../data/vocab.js';
import { CharLM } from '../models/char-lm.js';
import type { Flow } from '../models/flownet.js';
import { Rng } from '../util/rng.js';
import { CHAR_LM_BENCH_OPT, charLmStep, type Size, timeSteps, tokensPerSec } from './char-rate.js';
import { createImageFlow, FLOW_BATCH, FLOW_IMAGES, flowScoreRound, flowTrainRound, IMAGE_FLOWS } from './flows.js';

export const TORCH_MISSING = "PyTorch not found (python3 -c 'import torch' failed): skipping the --torch rows";

/** What the detector found: the interpreter that imports torch and the versions. */
export interface TorchInfo {
  python: string;
  pythonVersion: string;
  torch: string;
}

/** Resolves to the PyTorch installation to compare with, or null when there is none. */
export type TorchDetector = () => Promise<TorchInfo | null>;

/** Median, extremes and every round of one side of a row. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  rounds: number[];
}

export interface TorchRow {
  id: string;
  workload: string;
  unit: string;
  /** Whether a larger figure is faster (rates) or slower (µs per token). */
  better: 'higher' | 'lower';
  arflow: Spread;
  /** Null when the PyTorch side could not run (see `failures`). */
  torch: Spread | null;
  /** arflow's speed ÷ PyTorch's (> 1: arflow faster): of the medians, and the range over paired rounds. */
  ratio: { median: number; min: number; max: number } | null;
  /** Trainable parameters of each side's model. */
  params?: { arflow: number; torch: number | null };
  /** PyTorch's threads where a row sets them (else the run's `threads.torch`). */
  torchThreads?: number;
}

/** The same network on both sides: tensor names and shapes, counts, and outputs from arflow's weights. */
export interface TorchCheck {
  model: string;
  params: { arflow: number; torch: number };
  /** Every parameter of each side has a namesake of the same shape on the other. */
  sameTensors: boolean;
  mismatches: string[];
  /** What was compared: the char LM's mean cross-entropy, or the flows' per-example log p (nats). */
  quantity: string;
  arflow: number[];
  torch: number[];
  maxAbsDiff: number;
  maxRelDiff: number;
}

export interface TorchResult {
  /** False when PyTorch was not found: then `message` says so and the rows, if any, are arflow's alone. */
  available: boolean;
  message?: string;
  cpu: string;
  cores: number;
  avx512: boolean;
  /** Python and PyTorch versions (null without PyTorch). */
  python: string | null;
  torch: string | null;
  threads: { arflow: number; torch: number | null };
  /** Environment the PyTorch processes ran with, beyond the inherited one. */
  torchEnv: Record<string, string>;
  quick: boolean;
  rounds: number;
  secondsPerRound: number;
  rows: TorchRow[];
  checks: TorchCheck[];
  /** Rows or checks that did not run, and why. */
  failures: string[];
}

const SCRIPT = fileURLToPath(new URL('../../bench/torch/workloads.py', import.meta.url));
const PRIME = 'Call me Ishmael. ';

// ---------------------------------------------------------------------------------------------------
// Pure parts: summaries and the table

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function spread(rounds: number[]): Spread {
  return { median: median(rounds), min: Math.min(...rounds), max: Math.max(...rounds), rounds };
}

/** arflow's speed ÷ PyTorch's, from two figures of the same unit. */
export function speedRatio(arflow: number, torch: number, better: 'higher' | 'lower'): number {
  return better === 'higher' ? arflow / torch : torch / arflow;
}

/** A row from the figures of its rounds (round i of PyTorch ran right after round i of arflow). */
export function summarizeRow(
  def: Pick<TorchRow, 'id' | 'workload' | 'unit' | 'better' | 'params' | 'torchThreads'>,
  arflowRounds: number[],
  torchRounds: number[] | null,
): TorchRow {
  const arflow = spread(arflowRounds);
  if (!torchRounds || torchRounds.length === 0) return { ...def, arflow, torch: null, ratio: null };
  const torch = spread(torchRounds);
  const paired = torchRounds.map((t, i) =>
    speedRatio(arflowRounds[Math.min(i, arflowRounds.length - 1)], t, def.better),
  );
  return {
    ...def,
    arflow,
    torch,
    ratio: {
      median: speedRatio(arflow.median, torch.median, def.better),
      min: Math.min(...paired),
      max: Math.max(...paired),
    },
  };
}

/** Figures with 3 significant digits (at least the units), thousands separated. */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(x) || 1)));
  return x.toLocaleString('en-US', { minimumFractionDigits: 0, maximumFractionDigits: digits, useGrouping: true });
}

const ratioText = (x: number) => `${x < 10 ? x.toFixed(2) : fmt(x)}×`;
const side = (s: Spread | null) => (s ? `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})` : '—');

/** The header line of the table: versions, threads, machine and how the rounds ran. */
export function torchHeader(r: TorchResult): string {
  const env = Object.entries(r.torchEnv).map(([k, v]) => `${k}=${v}`);
  if (!r.available) {
    return (
      `${r.message ?? TORCH_MISSING}. arflow's own figures, ${r.threads.arflow} threads; ${r.cpu}` +
      `${r.avx512 ? ' (AVX-512)' : ''}, ${r.cores} cores; ${r.rounds} rounds of ${r.secondsPerRound} s: median (min–max).`
    );
  }
  return (
    `arflow vs PyTorch ${r.torch} (eager, no torch.compile; Python ${r.python}), ${r.threads.arflow} threads for ` +
    `arflow, ${r.threads.torch ?? '?'} for PyTorch${env.length > 0 ? ` (${env.join(', ')})` : ''}; ${r.cpu}` +
    `${r.avx512 ? ' (AVX-512)' : ''}, ${r.cores} cores. ${r.rounds} alternating rounds of ${r.secondsPerRound} s ` +
    `per side${r.quick ? ' (--quick)' : ''}: median (min–max). Speed ratio > 1: arflow faster.`
  );
}

/** The Markdown table of the rows, then the network checks and what failed. */
export function renderTorchTable(r: TorchResult): string {
  const lines = [
    '| workload | unit | parameters (arflow / PyTorch) | arflow | PyTorch | arflow ÷ PyTorch (speed) |',
    '|---|---|---|---|---|---|',
  ];
  for (const row of r.rows) {
    const params = row.params
      ? `${row.params.arflow.toLocaleString('en-US')} / ${row.params.torch === null ? '—' : row.params.torch.toLocaleString('en-US')}`
      : '—';
    const ratio = row.ratio
      ? `**${ratioText(row.ratio.median)}** (${ratioText(row.ratio.min)}–${ratioText(row.ratio.max)})`
      : '—';
    lines.push(`| ${row.workload} | ${row.unit} | ${params} | ${side(row.arflow)} | ${side(row.torch)} | ${ratio} |`);
  }
  if (r.checks.length > 0) {
    lines.push('', 'Same networks (PyTorch model loaded with arflow’s weights):');
    for (const c of r.checks) {
      const tensors = c.sameTensors
        ? 'every parameter name and shape matches'
        : `tensors differ: ${c.mismatches.slice(0, 4).join('; ')}`;
      lines.push(
        `- ${c.model}: ${c.params.arflow.toLocaleString('en-US')} / ${c.params.torch.toLocaleString('en-US')} ` +
          `parameters, ${tensors}; ${c.quantity} max |Δ| ${c.maxAbsDiff.toExponential(1)} ` +
          `(relative ${c.maxRelDiff.toExponential(1)}${c.maxRelDiff > 1e-4 ? ': the outputs DIFFER' : ''}).`,
      );
    }
  }
  if (r.failures.length > 0) lines.push('', `Not measured: ${r.failures.join('; ')}.`);
  return lines.join('\n');
}

/** Name → shape differences between two parameter lists (empty when they agree). */
export function tensorMismatches(arflow: [string, number[]][], torch: [string, number[]][]): string[] {
  const a = new Map(arflow.map(([n, s]) => [n, s.join('×')]));
  const t = new Map(torch.map(([n, s]) => [n, s.join('×')]));
  const out: string[] = [];
  for (const [n, s] of a) {
    if (!t.has(n)) out.push(`${n} [${s}] missing in PyTorch`);
    else if (t.get(n) !== s) out.push(`${n}: arflow [${s}], PyTorch [${t.get(n)}]`);
  }
  for (const [n, s] of t) if (!a.has(n)) out.push(`${n} [${s}] only in PyTorch`);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Running PyTorch

/** Runs `python args…`; its stdout (rejects with the end of its stderr when it fails). */
function pythonOut(python: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(python, args, { env, timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const tail = String(stderr).trim().split('\n').slice(-3).join(' | ');
        reject(new Error(`${python} ${args.slice(0, 2).join(' ')}: ${tail || err.message}`));
      } else resolve(String(stdout));
    });
  });
}

/** The default detector: `python3` (or $PYTHON) imports torch. */
export const detectTorch: TorchDetector = async () => {
  const python = process.env.PYTHON || 'python3';
  const code = 'import json, platform, torch; print(json.dumps([platform.python_version(), torch.__version__]))';
  try {
    const out = await pythonOut(python, ['-c', code], process.env, 120_000);
    const [pythonVersion, torch] = JSON.parse(out.trim().split('\n').pop() as string);
    return { python, pythonVersion, torch };
  } catch {
    return null;
  }
};

function torchEnvOf(env: NodeJS.ProcessEnv): Record<string, string> {
  return env.OMP_WAIT_POLICY === undefined ? { OMP_WAIT_POLICY: 'PASSIVE' } : {};
}

/** One run of the workload script; its JSON line. */
async function runWorkload(
  info: TorchInfo,
  env: Record<string, string>,
  args: string[],
  seconds: number,
  threads = 2,
): Promise<Record<string, unknown>> {
  const out = await pythonOut(
    info.python,
    [SCRIPT, ...args, '--seconds', String(seconds), '--threads', String(threads)],
    { ...process.env, ...env },
    (seconds + 300) * 1000,
  );
  return JSON.parse(out.trim().split('\n').pop() as string);
}

// ---------------------------------------------------------------------------------------------------
// The rows

interface RowDef {
  id: string;
  workload: string;
  unit: string;
  better: 'higher' | 'lower';
  /** Builds and warms up arflow's side; `round` measures one round. */
  arflow: () => Promise<{ round: (seconds: number, r: number) => Promise<number>; params?: number }>;
  /** Arguments of `workloads.py` (without --seconds). */
  torch: string[];
  /** PyTorch's threads, where not the 2 of every other row. */
  torchThreads?: number;
}

const charSizes: (Size & { id: string; cell: 'gru' | 'lstm' })[] = [
  { id: 'char-gru-h256', embed: 64, hidden: 256, layers: 1, batch: 32, seq: 64, cell: 'gru' },
  { id: 'char-gru-h512-l2', embed: 64, hidden: 512, layers: 2, batch: 32, seq: 64, cell: 'gru' },
  { id: 'char-lstm-h256', embed: 64, hidden: 256, layers: 1, batch: 32, seq: 64, cell: 'lstm' },
];

function paramCount(infos: { shape: number[] }[]): number {
  return infos.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
}

function rowDefs(
  quick: boolean,
  vocab: Vocabulary,
  ids: Uint32Array,
  idsFile: string,
  addon: NativeAddon,
  failures: string[],
): RowDef[] {
  const rows: RowDef[] = [];
  for (const s of charSizes) {
    rows.push({
      id: s.id,
      workload: `char-${s.cell.toUpperCase()} LM training, Moby-Dick, E ${s.embed}, H ${s.hidden} × ${s.layers}, B ${s.batch}, T ${s.seq}`,
      unit: 'tokens/s',
      better: 'higher',
      arflow: async () => {
        const model = CharLM.create(vocab, s, { backend: 'native', seed: 0 });
        const step = charLmStep(model, ids, s);
        await timeSteps(step, 2, { maxSteps: 1 });
        return {
          params: paramCount(model.backend.paramInfo()),
          round: async (seconds) =>
            tokensPerSec(await timeSteps(step, 0, { maxSteps: 1e9, minSec: seconds }), s.batch * s.seq),
        };
      },
      torch: [
        'char-train',
        ...['--vocab', vocab.size, '--ids', idsFile, '--embed', s.embed, '--hidden', s.hidden, '--layers', s.layers],
        ...['--cell', s.cell],
        ...['--batch', s.batch, '--seq', s.seq, '--lr', CHAR_LM_BENCH_OPT.lr, '--clip', CHAR_LM_BENCH_OPT.clip],
      ].map(String),
    });
  }
  const length = quick ? 400 : 2000;
  // Batch-1 steps are a few small products each: PyTorch's second thread costs more in wake-ups than it
  // saves, so the row is repeated with PyTorch at 1 thread, its better setting for this workload.
  for (const torchThreads of [undefined, 1]) {
    rows.push({
      id: `char-gru-sample-h256${torchThreads ? `-torch-${torchThreads}t` : ''}`,
      workload:
        `char-GRU sampling, H 256 × 1, one token at a time (prime of ${PRIME.length}, then ${length} characters)` +
        (torchThreads ? `, PyTorch at ${torchThreads} thread` : ''),
      torchThreads,
      unit: 'µs/token',
      better: 'lower',
      arflow: async () => {
        const model = CharLM.create(vocab, { embed: 64, hidden: 256, layers: 1, cell: 'gru' }, { seed: 0 });
        model.sample({ prime: PRIME, length, seed: 1000 });
        return {
          params: paramCount(model.backend.paramInfo()),
          round: async (seconds, r) => {
            let calls = 0;
            const t0 = performance.now();
            do model.sample({ prime: PRIME, length, seed: r * 1000 + calls++ });
            while (performance.now() - t0 < seconds * 1000);
            return ((performance.now() - t0) * 1000) / (calls * length);
          },
        };
      },
      torch: [
        'char-sample',
        '--vocab',
        String(vocab.size),
        '--prime-ids',
        vocab.encode(PRIME).join(','),
        '--length',
        String(length),
      ],
    });
  }
  if (fashionMnistAvailable()) {
    let images: Uint8Array | undefined;
    for (const which of ['realnvp', 'glow'] as const) {
      const f = IMAGE_FLOWS[which];
      const cfg = f.config as { scales?: number; levels?: number; steps?: number; channels?: number; blocks?: number };
      const sizes =
        which === 'realnvp'
          ? ['--scales', cfg.scales ?? 2, '--channels', cfg.channels ?? 32, '--blocks', cfg.blocks ?? 1]
          : ['--levels', cfg.levels ?? 2, '--flow-steps', cfg.steps ?? 8, '--channels', cfg.channels ?? 64];
      rows.push({
        id: which,
        workload: `Fashion-MNIST ${f.name} training, batch ${FLOW_BATCH}`,
        unit: 'images/s',
        better: 'higher',
        arflow: async () => {
          images ??= loadFashionMnist('train', { limit: FLOW_IMAGES }).images;
          const flow = createImageFlow(which);
          await flowTrainRound(flow, images, { steps: 2 });
          return {
            params: paramCount(flow.tensorInfo().params),
            round: async (seconds, r) =>
              (await flowTrainRound(flow, images as Uint8Array, { seconds, seed: r + 1 })).wallImagesPerSec,
          };
        },
        torch: [which, '--data-dir', fashionMnistDir(), '--limit', FLOW_IMAGES, '--batch', FLOW_BATCH, ...sizes].map(
          String,
        ),
      });
      rows.push({
        id: `${which}-score`,
        workload: `Fashion-MNIST ${f.name} scoring (bits/dim), batches of ${FLOW_BATCH}`,
        unit: 'images/s',
        better: 'higher',
        arflow: async () => {
          images ??= loadFashionMnist('train', { limit: FLOW_IMAGES }).images;
          const flow = createImageFlow(which);
          // Two training steps: the actnorms' data-dependent initialisation, and weights that are not the
          // identity (the output convolutions start at zero).
          await flowTrainRound(flow, images, { steps: 2 });
          return {
            params: paramCount(flow.tensorInfo().params),
            round: async (seconds) => flowScoreRound(flow, images as Uint8Array, seconds),
          };
        },
        torch: [
          `${which}-score`,
          '--data-dir',
          fashionMnistDir(),
          '--limit',
          FLOW_IMAGES,
          '--batch',
          FLOW_BATCH,
          ...sizes,
        ].map(String),
      });
    }
  } else failures.push('Fashion-MNIST flows: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)');
  for (const [m, n, k] of [
    [2048, 768, 256],
    [1024, 1024, 1024],
  ]) {
    rows.push({
      id: `gemm-${m}x${n}x${k}`,
      workload: `fp32 GEMM m×n×k ${m}×${n}×${k}`,
      unit: 'GFLOP/s',
      better: 'higher',
      arflow: async () => {
        const probe = addon.benchGemm(m, n, k, 2);
        return {
          round: async (seconds) =>
            addon.benchGemm(m, n, k, Math.max(2, Math.round((seconds * probe * 1e9) / (2 * m * n * k)))),
        };
      },
      torch: ['gemm', '--m', String(m), '--n', String(n), '--k', String(k)],
    });
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------------
// The checks: the same network on both sides

type Tensor = { name: string; dtype: 'f32' | 'u32'; shape: number[]; data: Float32Array | Uint32Array };

/** Writes `<path>.json` (names, dtypes, shapes, byte offsets) and `<path>.bin` (little-endian data). */
function writeBundle(path: string, tensors: Tensor[]): void {
  let offset = 0;
  const meta = tensors.map((t) => {
    const m = { name: t.name, dtype: t.dtype, shape: t.shape, offset };
    offset += t.data.byteLength;
    return m;
  });
  const bin = Buffer.alloc(offset);
  tensors.forEach((t, i) => {
    bin.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), meta[i].offset);
  });
  writeFileSync(`${path}.json`, JSON.stringify({ tensors: meta }));
  writeFileSync(`${path}.bin`, bin);
}

function compare(
  model: string,
  quantity: string,
  arflowParams: [string, number[]][],
  out: Record<string, unknown>,
  arflow: number[],
  torch: number[],
): TorchCheck {
  const torchParams = out.params as [string, number[]][];
  const mismatches = tensorMismatches(arflowParams, torchParams);
  const abs = arflow.map((a, i) => Math.abs(a - torch[i]));
  const rel = abs.map((d, i) => d / Math.max(Math.abs(arflow[i]), 1e-12));
  return {
    model,
    params: { arflow: paramCount(arflowParams.map(([, shape]) => ({ shape }))), torch: out.count as number },
    sameTensors: mismatches.length === 0 && torch.length === arflow.length,
    mismatches,
    quantity,
    arflow,
    torch,
    maxAbsDiff: Math.max(...abs),
    maxRelDiff: Math.max(...rel),
  };
}

async function checkCharLm(
  info: TorchInfo,
  env: Record<string, string>,
  dir: string,
  vocab: Vocabulary,
  ids: Uint32Array,
): Promise<TorchCheck> {
  const [B, T] = [8, 64];
  const model = CharLM.create(vocab, { embed: 64, hidden: 256, layers: 1, cell: 'gru' }, { seed: 0 });
  const x = ids.slice(0, B * T);
  const y = ids.slice(1, B * T + 1);
  const loss = (await model.backend.lossAndGrads(x, y, B, T, null)).loss;
  const params = model.backend.paramInfo();
  const path = join(dir, 'char');
  writeBundle(path, [
    ...params.map((p) => ({
      name: p.name,
      dtype: 'f32' as const,
      shape: p.shape,
      data: model.backend.getParam(p.name),
    })),
    { name: 'input.ids', dtype: 'u32', shape: [B * T], data: x },
    { name: 'input.targets', dtype: 'u32', shape: [B * T], data: y },
  ]);
  const out = await runWorkload(
    info,
    env,
    [
      'check',
      '--model',
      'char',
      '--vocab',
      String(vocab.size),
      '--batch',
      String(B),
      '--seq',
      String(T),
      '--bundle',
      path,
    ],
    0,
  );
  const named = params.map((p): [string, number[]] => [p.name, p.shape]);
  return compare('char-GRU LM, H 256 × 1', 'mean cross-entropy (nats)', named, out, [loss], [out.loss as number]);
}

async function checkFlow(
  info: TorchInfo,
  env: Record<string, string>,
  dir: string,
  which: 'realnvp' | 'glow',
  images: Uint8Array,
): Promise<TorchCheck> {
  const flow: Flow = createImageFlow(which);
  // One training step runs the actnorms' data-dependent initialisation; the output convolutions, zero at
  // first (every coupling the identity), get random weights so that the couplings matter.
  await flow.fit(images, { steps: 1, batchSize: FLOW_BATCH });
  const rng = new Rng(11);
  const { params, buffers } = flow.tensorInfo();
  for (const p of params) {
    if (/\.net\.out\.(weight|bias)$/.test(p.name)) {
      const v = new Float32Array(paramCount([p]));
      for (let i = 0; i < v.length; i++) v[i] = rng.range(-0.05, 0.05);
      flow.backend.setParam(p.name, v);
    }
  }
  const n = 16;
  const y = flow.toFlowSpace(images.slice(0, n * 784), new Rng(7)).y;
  const logp = Array.from(await flow.logProb(y));
  const path = join(dir, which);
  writeBundle(path, [
    ...params.map((p) => ({
      name: p.name,
      dtype: 'f32' as const,
      shape: p.shape,
      data: flow.backend.getParam(p.name),
    })),
    ...buffers.map((b) => ({
      name: b.name,
      dtype: 'f32' as const,
      shape: b.shape,
      data: flow.backend.getBuffer(b.name),
    })),
    { name: 'input.y', dtype: 'f32', shape: [n, 784], data: y },
  ]);
  const cfg = IMAGE_FLOWS[which].config as { scales?: number; levels?: number; steps?: number; channels?: number };
  const sizes =
    which === 'realnvp'
      ? ['--scales', cfg.scales ?? 2, '--channels', cfg.channels ?? 32]
      : ['--levels', cfg.levels ?? 2, '--flow-steps', cfg.steps ?? 8, '--channels', cfg.channels ?? 64];
  const out = await runWorkload(info, env, ['check', '--model', which, ...sizes.map(String), '--bundle', path], 0);
  const named = params.map((p): [string, number[]] => [p.name, p.shape]);
  return compare(IMAGE_FLOWS[which].name, 'log p of 16 images (nats)', named, out, logp, out.logp as number[]);
}

// ---------------------------------------------------------------------------------------------------

export interface TorchBenchOptions {
  quick: boolean;
  vocab: Vocabulary;
  ids: Uint32Array;
  addon: NativeAddon;
  log?: (line: string) => void;
  /** How to find PyTorch (tests inject one). */
  detect?: TorchDetector;
  /** Without PyTorch, still measure arflow's side of the rows (`--torch-only`); else return at once. */
  arflowWithoutTorch?: boolean;
  rounds?: number;
  secondsPerRound?: number;
}

function cpuModel(): { cpu: string; avx512: boolean } {
  try {
    const text = readFileSync('/proc/cpuinfo', 'utf8');
    const name = /^model name\s*:\s*(.+)$/m.exec(text)?.[1]?.trim();
    return { cpu: name ?? cpus()[0]?.model ?? 'unknown CPU', avx512: /^flags\s*:.*\bavx512f\b/m.test(text) };
  } catch {
    return { cpu: cpus()[0]?.model ?? 'unknown CPU', avx512: false };
  }
}

/**
 * The `--torch` rows. Without PyTorch, says so (through `log`) and returns with no rows, having run
 * nothing, unless `arflowWithoutTorch` asks for arflow's side alone.
 */
export async function benchTorch(opts: TorchBenchOptions): Promise<TorchResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const info = await (opts.detect ?? detectTorch)();
  const rounds = opts.rounds ?? (opts.quick ? 3 : 4);
  const seconds = opts.secondsPerRound ?? (opts.quick ? 2 : 4);
  const env = info ? torchEnvOf(process.env) : {};
  const failures: string[] = [];
  const rows: TorchRow[] = [];
  const checks: TorchCheck[] = [];
  let torchThreads: number | null = null;
  const result = (): TorchResult => ({
    available: info !== null,
    ...(info ? {} : { message: TORCH_MISSING }),
    ...cpuModel(),
    cores: cpus().length,
    python: info?.pythonVersion ?? null,
    torch: info?.torch ?? null,
    threads: { arflow: opts.addon.buildInfo().threads, torch: torchThreads },
    torchEnv: env,
    quick: opts.quick,
    rounds,
    secondsPerRound: seconds,
    rows,
    checks,
    failures,
  });
  if (!info) {
    log(TORCH_MISSING);
    if (!opts.arflowWithoutTorch) return result();
  }
  const dir = mkdtempSync(join(tmpdir(), 'arflow-torch-'));
  try {
    const idsFile = join(dir, 'moby-dick.u32');
    writeFileSync(idsFile, new Uint8Array(opts.ids.buffer, opts.ids.byteOffset, opts.ids.byteLength));
    const jobs: [string, () => Promise<TorchCheck>][] = [];
    if (info) {
      log(`PyTorch ${info.torch} (Python ${info.pythonVersion}); checking that both sides build the same networks…`);
      jobs.push(['char-GRU LM', () => checkCharLm(info, env, dir, opts.vocab, opts.ids)]);
    }
    if (info && fashionMnistAvailable()) {
      const images = loadFashionMnist('train', { limit: 64 }).images;
      jobs.push(['Real NVP', () => checkFlow(info, env, dir, 'realnvp', images)]);
      jobs.push(['Glow', () => checkFlow(info, env, dir, 'glow', images)]);
    }
    for (const [name, job] of jobs) {
      try {
        const c = await job();
        checks.push(c);
        const same = c.sameTensors ? 'same tensors' : `TENSORS DIFFER (${c.mismatches.length})`;
        log(`  ${c.model}: ${same}, max |Δ| ${c.quantity} ${c.maxAbsDiff.toExponential(1)}`);
      } catch (e) {
        failures.push(`${name} check: ${(e as Error).message}`);
      }
    }
    for (const def of rowDefs(opts.quick, opts.vocab, opts.ids, idsFile, opts.addon, failures)) {
      const a: number[] = [];
      let t: number[] | null = info ? [] : null;
      let torchParams: number | null = null;
      const side = await def.arflow();
      for (let r = 0; r < rounds; r++) {
        a.push(await side.round(seconds, r));
        if (t && info) {
          try {
            const out = await runWorkload(info, env, def.torch, seconds, def.torchThreads);
            t.push(out.rate as number);
            if (typeof out.params === 'number') torchParams = out.params;
            if (typeof out.threads === 'number' && def.torchThreads === undefined) torchThreads = out.threads;
          } catch (e) {
            failures.push(`PyTorch ${def.id}: ${(e as Error).message}`);
            t = null;
          }
        }
        const last = (xs: number[] | null) => (xs && xs.length > r ? fmt(xs[r]) : '—');
        log(`  ${def.id} round ${r + 1}/${rounds}: arflow ${last(a)}, PyTorch ${last(t)} ${def.unit}`);
      }
      const { id, workload, unit, better } = def;
      const params = side.params === undefined ? undefined : { arflow: side.params, torch: torchParams };
      rows.push(summarizeRow({ id, workload, unit, better, params, torchThreads: def.torchThreads }, a, t));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return result();
}
