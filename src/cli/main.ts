#!/usr/bin/env node
import { statSync } from 'node:fs';
/**
 * The `arflow` command line. Every command takes `--json`: it then prints one JSON object per line
 * (`{"type":"progress",…}` while working, one `{"type":"summary",…}` at the end, or
 * `{"type":"error","code",…}`), for scripts. These flags and fields are a contract: extend, never rename.
 */
import type { DeviceName } from '../backend/index.js';
import type { CellKind } from '../backend/types.js';
import { splitTrainVal } from '../data/batches.js';
import { CORPORA, type CorpusName, loadCorpus, loadTextFile } from '../data/corpora.js';
import type { UnknownPolicy } from '../data/vocab.js';
import { Vocabulary } from '../data/vocab.js';
import { ArflowError, CheckpointError, ConfigError } from '../errors.js';
import { checkpointKind } from '../io/checkpoint.js';
import { PLOT_COLORS, plotPanels } from '../io/plot.js';
import { specialFileKind } from '../io/safetensors.js';
import { CharLM, type H0Policy } from '../models/char-lm.js';
import { FLOWNET_KIND } from '../models/flownet.js';
import { type GradReport, gradReport } from '../models/grad-report.js';
import { REALNVP_V0_KIND } from '../models/realnvp-v0.js';
import { SEQ2SEQ_KIND } from '../models/seq2seq.js';
import type { TrainProgress, TrainSummary } from '../train/char-trainer.js';
import {
  checkOutputPath,
  emit,
  type FlagSpec,
  type Flags,
  HELP_FLAG,
  helpText,
  JSON_FLAG,
  JSON_RESULT_FLAG,
  parseArgs,
  samePath,
  savePicture,
} from './args.js';
import {
  CAPTION_KIND,
  cmdCaption,
  cmdEvalCaption,
  cmdSampleCaption,
  cmdTrainCaption,
  EVAL_CAPTION_FLAGS,
  SAMPLE_CAPTION_FLAGS,
} from './caption.js';
import { cmdEvalFlow, cmdSampleFlow, cmdTrainFlow } from './flow.js';
import { EVAL_FLOW_FLAGS, SAMPLE_FLOW_FLAGS } from './flow-flags.js';
import {
  cmdComplete,
  cmdEvalPixel,
  cmdSamplePixel,
  cmdTrainPixel,
  EVAL_PIXEL_FLAGS,
  PIXEL_KIND,
  SAMPLE_PIXEL_FLAGS,
} from './pixel.js';
import { formatDuration, ProgressBar } from './progress.js';
import { cmdEvalSeq2Seq, cmdTrainSeq2Seq, cmdTranslate, EVAL_SEQ2SEQ_FLAGS } from './seq2seq.js';
import {
  cmdEvalSeries,
  cmdSampleSeries,
  cmdTrainSeries,
  EVAL_SERIES_FLAGS,
  SAMPLE_SERIES_FLAGS,
  SERIES_KIND,
} from './series.js';

const CORPUS_NAMES = CORPORA.map((c) => c.name);

/** `--json` of `sample` and `eval`, which report no progress. */
const UNKNOWN_FLAG: FlagSpec = {
  type: 'string',
  help: 'characters the model never saw: error, skip or replace (default error)',
  choices: ['error', 'skip', 'replace'],
};

const TRAIN_FLAGS: Record<string, FlagSpec> = {
  corpus: { type: 'string', help: 'built-in corpus (default moby-dick)', choices: CORPUS_NAMES },
  text: { type: 'string', help: 'train on this text file instead of a built-in corpus' },
  embed: { type: 'int', help: 'embedding width (default 64)' },
  cell: {
    type: 'string',
    help: 'recurrent cell: gru (default), lstm or rnn (vanilla tanh)',
    choices: ['gru', 'lstm', 'rnn'],
  },
  hidden: { type: 'int', help: 'hidden units per layer (default 256)' },
  layers: { type: 'int', help: 'stacked recurrent layers (default 1)' },
  bidirectional: { type: 'boolean', help: 'refused: a language model cannot read ahead (encoders only)' },
  h0: {
    type: 'string',
    help: "initial state: zero (default), learned (a trained parameter), sampled (N(0, σ²) per stream); 'external' is refused",
    choices: ['zero', 'learned', 'sampled', 'external'],
  },
  'h0-sigma': { type: 'number', help: 'σ of --h0 sampled (default 0.1)' },
  'predict-ahead': {
    type: 'int',
    help: 'predict the next N characters jointly, one head each, loss summed over them (default 1: the next character)',
  },
  'grad-report': {
    type: 'string',
    help: 'after training, print ‖∂L_T/∂h_t‖ against the distance T − t (vanishing/exploding gradients) and plot it to this PNG',
  },
  seq: { type: 'int', help: 'characters per BPTT chunk (default 64)' },
  batch: { type: 'int', help: 'parallel streams per batch (default 32)' },
  steps: { type: 'int', help: 'training steps (default 1000)' },
  lr: { type: 'number', help: 'peak learning rate (default 0.002)' },
  schedule: {
    type: 'string',
    help: 'learning-rate schedule (default cosine)',
    choices: ['constant', 'cosine', 'step'],
  },
  warmup: { type: 'int', help: 'linear warm-up steps (default 0)' },
  clip: { type: 'number', help: 'clip the global gradient norm (default 1, 0 = off)' },
  'weight-decay': { type: 'number', help: 'AdamW weight decay (default 0)' },
  'val-every': { type: 'int', help: 'validate every N steps (default 100)' },
  seconds: {
    type: 'number',
    help: 'stop after this many seconds of training; the schedule follows the clock (default 0 = no limit)',
  },
  'sample-every': { type: 'int', help: 'print a sample at every Nth validation (default 0 = never)' },
  device: {
    type: 'string',
    help: 'cpu (default), cuda (needs the CUDA build of the addon) or auto (cuda when it loads, else cpu)',
    choices: ['cpu', 'cuda', 'auto'],
  },
  backend: { type: 'string', help: 'native (default) or js (pure TypeScript, slow)', choices: ['native', 'js'] },
  seed: { type: 'int', help: 'seed of initialisation and batch order (default 0)' },
  out: { type: 'string', help: 'checkpoint path (default char-lm.safetensors)' },
  'checkpoint-every': { type: 'int', help: 'also save every N steps (default: at the end only)' },
  resume: { type: 'string', help: 'continue the run saved in this checkpoint' },
  json: JSON_FLAG,
  help: HELP_FLAG,
};

const SAMPLE_FLAGS: Record<string, FlagSpec> = {
  prime: { type: 'string', help: 'text the model reads first (default: a newline)' },
  length: { type: 'int', help: 'characters to generate (default 500)' },
  temperature: { type: 'number', help: 'sampling temperature, 0 = greedy (default 0.8)' },
  'top-k': { type: 'int', help: 'sample among the k likeliest characters (default 0 = all)' },
  'top-p': { type: 'number', help: 'nucleus sampling mass (default 1 = off)' },
  seed: { type: 'int', help: 'sampling seed (default 0)' },
  unknown: UNKNOWN_FLAG,
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

const EVAL_FLAGS: Record<string, FlagSpec> = {
  text: { type: 'string', help: 'score this text file (default: the held-out tail of the training corpus)' },
  corpus: { type: 'string', help: 'score the held-out tail of this built-in corpus', choices: CORPUS_NAMES },
  unknown: UNKNOWN_FLAG,
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

const DEMO_FLAGS: Record<string, FlagSpec> = {
  seconds: { type: 'number', help: 'training time budget (default 120)' },
  out: { type: 'string', help: 'checkpoint path (default arflow-demo.safetensors)' },
  json: JSON_FLAG,
  help: HELP_FLAG,
};

function num(f: Flags, k: string): number | undefined {
  return f[k] as number | undefined;
}

function str(f: Flags, k: string): string | undefined {
  return f[k] as string | undefined;
}

interface TrainJob {
  text: string;
  corpus: string;
  flags: Flags;
  out: string;
  /** Stop after this many seconds (the demo's budget). */
  seconds?: number;
  sampleEvery: number;
  title?: string;
}

async function runTraining(job: TrainJob): Promise<void> {
  const f = job.flags;
  const json = Boolean(f.json);
  const resumePath = str(f, 'resume');
  if (f['h0-sigma'] !== undefined && str(f, 'h0') !== 'sampled') {
    throw new ConfigError('--h0-sigma applies to --h0 sampled only');
  }
  const gradPng = str(f, 'grad-report');
  if (gradPng !== undefined) {
    checkOutputPath(gradPng, '--grad-report');
    if (samePath(gradPng, job.out)) throw new ConfigError('--grad-report must not be the checkpoint path (--out)');
  }
  let model: CharLM;
  let resume = null;
  if (resumePath) {
    const loaded = CharLM.load(resumePath, {
      backend: (str(f, 'backend') ?? 'native') as 'native' | 'js',
      device: (str(f, 'device') ?? 'cpu') as DeviceName,
    });
    model = loaded.model;
    resume = loaded.train;
    if (!resume) throw new ConfigError(`${resumePath} holds no training state: it was not saved by arflow train`);
    const cell = str(f, 'cell');
    if (cell !== undefined && cell !== model.config.cell) {
      throw new ConfigError(
        `--cell ${cell} contradicts ${resumePath}, a ${model.config.cell} model; drop --cell to resume it`,
      );
    }
    const ahead = num(f, 'predict-ahead');
    if (ahead !== undefined && ahead !== model.config.predictAhead) {
      throw new ConfigError(
        `--predict-ahead ${ahead} contradicts ${resumePath}, which predicts ${model.config.predictAhead} ahead; drop --predict-ahead to resume it`,
      );
    }
  } else {
    const vocab = Vocabulary.fromText(job.text);
    model = CharLM.create(
      vocab,
      {
        embed: num(f, 'embed'),
        hidden: num(f, 'hidden'),
        layers: num(f, 'layers'),
        cell: str(f, 'cell') as CellKind | undefined,
        h0: str(f, 'h0') as H0Policy | undefined,
        h0Sigma: num(f, 'h0-sigma'),
        predictAhead: num(f, 'predict-ahead'),
        bidirectional: Boolean(f.bidirectional),
      },
      {
        backend: (str(f, 'backend') ?? 'native') as 'native' | 'js',
        device: (str(f, 'device') ?? 'cpu') as DeviceName,
        seed: num(f, 'seed'),
      },
    );
  }
  const ids = model.vocab.encode(job.text, resumePath ? 'skip' : 'error');
  const steps = num(f, 'steps') ?? 1000;
  const bar = json ? null : new ProgressBar();
  if (!json) {
    const c = model.config;
    bar?.log(
      `${job.title ?? 'training'}: ${job.corpus}, ${ids.length.toLocaleString('en-US')} chars, vocab ${model.vocab.size}; ` +
        `${c.cell.toUpperCase()} embed ${c.embed} hidden ${c.hidden} × ${c.layers} layer(s)` +
        `${c.predictAhead > 1 ? `, predicting ${c.predictAhead} characters ahead (loss summed over the heads)` : ''}, ${model.backend.kind} backend`,
    );
  }
  // Ctrl-C stops training cleanly: the checkpoint is still saved.
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.once('SIGINT', onSigint);
  let validations = 0;
  const onProgress = (p: TrainProgress) => {
    if (json) {
      emit({ type: 'progress', ...p, valBpc: p.valBpc ?? null });
      return;
    }
    const ahead = p.valBpcAhead ? ` (+${p.valBpcAhead.map((v) => v.toFixed(2)).join('/')} ahead)` : '';
    const val = p.valBpc !== undefined ? ` val ${p.valBpc.toFixed(3)} bpc${ahead}` : '';
    const byTime = job.seconds !== undefined && job.seconds > 0;
    bar?.update(
      byTime ? p.elapsedSec / (job.seconds as number) : p.step / steps,
      byTime ? `step ${p.step}` : `${p.step}/${steps}`,
      `train ${(p.loss / Math.LN2).toFixed(3)} bpc${val} · ${Math.round(p.tokensPerSec).toLocaleString('en-US')} tok/s · lr ${p.lr.toExponential(1)} · ${byTime ? `${formatDuration(p.elapsedSec)} of ${formatDuration(job.seconds as number)}` : `ETA ${formatDuration(p.etaSec)}`}`,
    );
    if (p.valBpc !== undefined) {
      validations++;
      if (job.sampleEvery > 0 && validations % job.sampleEvery === 0) {
        const s = model.sample({ length: 160, temperature: 0.8, seed: p.step });
        bar?.log(`step ${p.step}, val ${p.valBpc.toFixed(3)} bpc: ${JSON.stringify(s.trim())}`);
      }
    }
  };
  let summary: TrainSummary;
  try {
    summary = await model.fit(ids, {
      steps,
      batchSize: num(f, 'batch'),
      seqLen: num(f, 'seq'),
      lr: num(f, 'lr'),
      schedule: str(f, 'schedule') as 'constant' | 'cosine' | 'step' | undefined,
      warmup: num(f, 'warmup'),
      clip: num(f, 'clip'),
      weightDecay: num(f, 'weight-decay'),
      valEvery: num(f, 'val-every'),
      seed: num(f, 'seed'),
      seconds: job.seconds,
      signal: stop.signal,
      onProgress,
      checkpoint: { path: job.out, every: num(f, 'checkpoint-every') },
      meta: { corpus: job.corpus },
      resume,
    });
  } finally {
    // Also when training fails (diverges): the error line then starts on a line of its own.
    process.off('SIGINT', onSigint);
    bar?.end();
  }
  // The gradient diagnostic on the held-out tail (the training text when it is too short).
  let grads: GradReport | null = null;
  if (gradPng !== undefined) {
    const { val } = splitTrainVal(ids, 0.05);
    grads = gradReport(model, val.length > 101 ? val : ids, { length: 100 });
    const { width, height, pixels } = plotPanels([
      { series: [{ x: grads.distance, y: grads.norm, color: PLOT_COLORS[0] }], logY: true },
    ]);
    savePicture(gradPng, width, height, pixels, 3);
  }
  const result = {
    steps: summary.steps,
    tokensPerSec: summary.tokensPerSec,
    trainLoss: summary.trainLoss,
    valBpc: Number.isFinite(summary.valBpc) ? summary.valBpc : null,
    predictAhead: model.config.predictAhead,
    valBpcAhead: summary.valBpcAhead,
    out: job.out,
    elapsedSec: summary.elapsedSec,
    stoppedEarly: summary.aborted || summary.outOfTime,
    corpus: job.corpus,
    backend: model.backend.kind,
    ...(grads ? { gradReport: { cell: grads.cell, distance: grads.distance, norm: grads.norm, png: gradPng } } : {}),
  };
  if (json) {
    emit({ type: 'summary', ...result });
    return;
  }
  const sample = model.sample({ prime: '', length: 400, temperature: 0.8, seed: 1 });
  console.log(
    `\n${summary.aborted ? `interrupted at step ${summary.steps}` : summary.outOfTime ? `time budget spent at step ${summary.steps}` : `done: ${summary.steps} steps`} in ${formatDuration(summary.elapsedSec)}; ` +
      `${Math.round(summary.tokensPerSec).toLocaleString('en-US')} tokens/s; ` +
      `train ${(summary.trainLoss / Math.LN2).toFixed(3)} bits/char, validation ${result.valBpc === null ? 'n/a' : `${result.valBpc.toFixed(3)} bits/char`}`,
  );
  if (summary.valBpcAhead.length > 0) {
    console.log(
      `validation bits/char of the heads further ahead: ${summary.valBpcAhead.map((v, i) => `${i + 2} ahead ${v.toFixed(3)}`).join(', ')}`,
    );
  }
  if (grads) {
    const at = [0, 1, 2, 5, 10, 20, 50, 99].filter((d) => d < grads.norm.length);
    console.log(
      `\n‖∂L_T/∂h_t‖ of the ${grads.cell.toUpperCase()} against T − t (plotted to ${gradPng}):\n` +
        at.map((d) => `  T−t = ${String(d).padStart(2)}  ${grads.norm[d].toExponential(2)}`).join('\n'),
    );
  }
  console.log(`saved ${job.out}\n\nsample (temperature 0.8):\n${sample.trim()}\n`);
  console.log(`more: arflow sample ${job.out} --prime "Call me " --length 400`);
}

function corpusText(f: Flags): { text: string; corpus: string } {
  const file = str(f, 'text');
  const corpus = str(f, 'corpus');
  if (file && corpus) throw new ConfigError('give either --corpus or --text, not both');
  if (file) return { text: loadTextFile(file), corpus: file };
  const name = (corpus ?? 'moby-dick') as CorpusName;
  return { text: loadCorpus(name), corpus: name };
}

async function cmdTrain(argv: string[]): Promise<void> {
  const [kind, ...rest] = argv;
  const usage =
    'usage: arflow train char [options]\n       arflow train flow [options]   (arflow train flow --help)\n' +
    '       arflow train seq2seq [options]   (arflow train seq2seq --help)\n' +
    '       arflow train series [options]   (arflow train series --help)\n' +
    '       arflow train pixel [options]   (arflow train pixel --help)\n' +
    '       arflow train caption [options]   (arflow train caption --help)';
  if (kind === '--help' || kind === undefined) {
    console.log(helpText(usage, TRAIN_FLAGS));
    return;
  }
  if (kind === 'flow') return cmdTrainFlow(rest);
  if (kind === 'seq2seq') return cmdTrainSeq2Seq(rest);
  if (kind === 'series') return cmdTrainSeries(rest);
  if (kind === 'pixel') return cmdTrainPixel(rest);
  if (kind === 'caption') return cmdTrainCaption(rest);
  if (kind !== 'char') {
    throw new ConfigError(
      `unknown model kind ${JSON.stringify(kind)}: expected 'char', 'flow', 'seq2seq', 'series', 'pixel' or 'caption' (${usage})`,
    );
  }
  const { positional, flags } = parseArgs(rest, TRAIN_FLAGS);
  if (flags.help) {
    console.log(helpText(usage, TRAIN_FLAGS));
    return;
  }
  if (positional.length) throw new ConfigError(`unexpected argument ${JSON.stringify(positional[0])}`);
  // Checked before any training: a run must never end in a checkpoint that cannot be written.
  const out = str(flags, 'out') ?? 'char-lm.safetensors';
  checkOutputPath(out, '--out');
  const { text, corpus } = corpusText(flags);
  await runTraining({
    text,
    corpus,
    flags,
    seconds: num(flags, 'seconds'),
    out,
    sampleEvery: num(flags, 'sample-every') ?? 0,
  });
}

async function cmdDemo(argv: string[]): Promise<void> {
  const { flags } = parseArgs(argv, DEMO_FLAGS);
  if (flags.help) {
    console.log(
      helpText(
        'usage: arflow demo [options]\n\nTrains a small GRU on Moby-Dick for about two minutes, printing samples as it learns.',
        DEMO_FLAGS,
      ),
    );
    return;
  }
  const seconds = num(flags, 'seconds') ?? 120;
  if (!(seconds > 0)) throw new ConfigError(`--seconds must be > 0, got ${seconds}`);
  const out = str(flags, 'out') ?? 'arflow-demo.safetensors';
  checkOutputPath(out, '--out');
  await runTraining({
    text: loadCorpus('moby-dick'),
    corpus: 'moby-dick',
    flags: { ...flags, steps: 100_000, lr: 3e-3, 'val-every': 100, hidden: 256, batch: 32, seq: 64 },
    out,
    seconds,
    sampleEvery: 2,
    title: 'arflow demo',
  });
}

/** The metadata kind of a character-model checkpoint (src/models/char-lm.ts). */
const CHAR_LM_KIND = 'char-lm';

/**
 * The checkpoint FILE of `sample` / `eval`: the first argument that is neither an option nor the value
 * of an option (of either the character-model or the flow options).
 */
function checkpointArg(argv: string[], specs: Record<string, FlagSpec>[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) return a;
    if (a.includes('=')) continue;
    const spec = specs.map((s) => s[a.slice(2)]).find((s) => s !== undefined);
    if (spec !== undefined && spec.type !== 'boolean') i++;
  }
  return undefined;
}

/** The names of the options in `argv` (values of options skipped), known by one of `specs` or not. */
function optionNames(argv: string[], specs: Record<string, FlagSpec>[]): string[] {
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const name = a.slice(2).split('=')[0];
    names.push(name);
    const spec = specs.map((s) => s[name]).find((s) => s !== undefined);
    if (!a.includes('=') && spec !== undefined && spec.type !== 'boolean') i++;
  }
  return names;
}

/**
 * Refuses, by name, an option of the other kind of checkpoint than `file` is: `--n` on a character
 * model, `--length` on a flow.
 */
function refuseOtherKindOptions(
  cmd: 'sample' | 'eval',
  file: string,
  argv: string[],
  own: { flags: Record<string, FlagSpec>; is: string },
  other: { flags: Record<string, FlagSpec>; of: string },
): void {
  for (const name of optionNames(argv, [own.flags, other.flags])) {
    if (own.flags[name] === undefined && other.flags[name] !== undefined)
      throw new ConfigError(
        `--${name} is an option of ${other.of}, but ${file} is ${own.is}: see arflow ${cmd} --help`,
      );
  }
}

const OF_CHAR = 'character-model checkpoints';
const OF_FLOW = 'flow checkpoints';
const IS_CHAR = 'a character language model (char-lm)';
const IS_FLOW = 'a flow checkpoint';

/**
 * The kind in the metadata of `file` when it is a regular file (null otherwise, or when it has none).
 * Nothing but a regular file is opened: opening a FIFO would block until something writes to it.
 */
function regularFileKind(file: string): string | null {
  try {
    if (!statSync(file).isFile()) return null;
  } catch {
    return null;
  }
  return checkpointKind(file);
}

/**
 * `FILE`, known not to be a flow checkpoint, checked to be a character-model checkpoint before the
 * flags are read, so that a missing file, a directory or a foreign file is reported as such rather
 * than as an option the character model lacks. Then flow-only options are refused by name.
 */
function checkCharCheckpoint(
  cmd: 'sample' | 'eval',
  file: string,
  argv: string[],
  charFlags: Record<string, FlagSpec>,
  flowFlags: Record<string, FlagSpec>,
): void {
  try {
    statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new CheckpointError(`checkpoint not found: ${file}`);
    throw new CheckpointError(`cannot read checkpoint ${file}: ${(e as Error).message}`);
  }
  const special = specialFileKind(file);
  if (special !== null) throw new CheckpointError(`${file} is ${special}, not a checkpoint file`);
  const kind = checkpointKind(file);
  // Not a char-lm: loading it reports what is wrong with the file (not safetensors, foreign kind…).
  if (kind !== CHAR_LM_KIND) CharLM.load(file);
  refuseOtherKindOptions(cmd, file, argv, { flags: charFlags, is: IS_CHAR }, { flags: flowFlags, of: OF_FLOW });
}

/** `sample --help` / `eval --help` without a flow checkpoint: the options of both kinds of checkpoint. */
function bothHelp(
  usage: string,
  char: { flags: Record<string, FlagSpec>; heading: string },
  flow: { flags: Record<string, FlagSpec>; heading: string },
): string {
  return `${helpText(usage, char.flags, char.heading)}\n${helpText('', flow.flags, flow.heading)}`;
}

const SAMPLE_USAGE =
  'usage: arflow sample FILE [options]\n\nText from a character-model checkpoint, or a PNG of samples from a flow checkpoint.';
const EVAL_USAGE =
  'usage: arflow eval FILE [options]\n\nBits per character of a character model on held-out text, or the held-out NLL of a flow.';

/**
 * What `sample` / `eval` do before the options of a character model are read: a flow checkpoint goes
 * to the flow command (char-model options refused by name), `--help` shows both kinds' options, an
 * option of neither kind is reported as unknown, a missing FILE as missing. Returns true when done.
 */
async function dispatchCheckpoint(
  cmd: 'sample' | 'eval',
  argv: string[],
  charFlags: Record<string, FlagSpec>,
  flowFlags: Record<string, FlagSpec>,
  help: string,
  runFlow: (file: string, argv: string[]) => Promise<void>,
): Promise<boolean> {
  const ckpt = checkpointArg(argv, [charFlags, flowFlags]);
  const kind = ckpt === undefined ? null : regularFileKind(ckpt);
  if (ckpt !== undefined && (kind === REALNVP_V0_KIND || kind === FLOWNET_KIND)) {
    if (!argv.includes('--help'))
      refuseOtherKindOptions(cmd, ckpt, argv, { flags: flowFlags, is: IS_FLOW }, { flags: charFlags, of: OF_CHAR });
    await runFlow(ckpt, argv);
    return true;
  }
  if (argv.includes('--help')) {
    console.log(help);
    return true;
  }
  // Options of neither kind of checkpoint are reported first, as such (with a hint).
  parseArgs(argv, { ...flowFlags, ...charFlags });
  if (ckpt === undefined)
    throw new ConfigError(
      `arflow ${cmd} needs a checkpoint FILE: arflow ${cmd} FILE [options] (see arflow ${cmd} --help)`,
    );
  checkCharCheckpoint(cmd, ckpt, argv, charFlags, flowFlags);
  return false;
}

async function cmdSample(argv: string[]): Promise<void> {
  const help = bothHelp(
    SAMPLE_USAGE,
    { flags: SAMPLE_FLAGS, heading: 'Options of a character-model checkpoint (text):' },
    { flags: SAMPLE_FLOW_FLAGS, heading: 'Options of a flow checkpoint (a PNG of samples):' },
  );
  const file = checkpointArg(argv, [
    SAMPLE_FLAGS,
    SAMPLE_FLOW_FLAGS,
    SAMPLE_SERIES_FLAGS,
    SAMPLE_PIXEL_FLAGS,
    SAMPLE_CAPTION_FLAGS,
  ]);
  const fileKind = file === undefined ? null : regularFileKind(file);
  if (file !== undefined && fileKind === SERIES_KIND) return cmdSampleSeries(file, argv);
  if (file !== undefined && fileKind === PIXEL_KIND) return cmdSamplePixel(file, argv);
  if (file !== undefined && fileKind === CAPTION_KIND) return cmdSampleCaption(file, argv);
  if (file !== undefined && fileKind === SEQ2SEQ_KIND) {
    throw new ConfigError(
      `${file} is an encoder–decoder (seq2seq) checkpoint: use arflow translate ${file} --input WORD`,
    );
  }
  if (await dispatchCheckpoint('sample', argv, SAMPLE_FLAGS, SAMPLE_FLOW_FLAGS, help, cmdSampleFlow)) return;
  const { positional, flags } = parseArgs(argv, SAMPLE_FLAGS);
  if (positional.length !== 1)
    throw new ConfigError(
      `arflow sample needs exactly one checkpoint FILE, got ${positional.length}: ${positional.join(' ')}`,
    );
  const { model } = CharLM.load(positional[0]);
  const opts = {
    prime: str(flags, 'prime') ?? '',
    length: num(flags, 'length') ?? 500,
    temperature: num(flags, 'temperature') ?? 0.8,
    topK: num(flags, 'top-k') ?? 0,
    topP: num(flags, 'top-p') ?? 1,
    seed: num(flags, 'seed') ?? 0,
    unknown: (str(flags, 'unknown') ?? 'error') as UnknownPolicy,
  };
  const t0 = performance.now();
  const text = model.sample(opts);
  const sec = (performance.now() - t0) / 1000;
  if (flags.json) emit({ type: 'summary', text, chars: opts.length, charsPerSec: opts.length / sec, ...opts });
  else console.log(text);
}

async function cmdEval(argv: string[]): Promise<void> {
  const help = bothHelp(
    EVAL_USAGE,
    { flags: EVAL_FLAGS, heading: 'Options of a character-model checkpoint (bits per character):' },
    { flags: EVAL_FLOW_FLAGS, heading: 'Options of a flow checkpoint (held-out NLL):' },
  );
  const ckpt = checkpointArg(argv, [
    EVAL_FLAGS,
    EVAL_FLOW_FLAGS,
    EVAL_SEQ2SEQ_FLAGS,
    EVAL_SERIES_FLAGS,
    EVAL_PIXEL_FLAGS,
    EVAL_CAPTION_FLAGS,
  ]);
  const ckptKind = ckpt === undefined ? null : regularFileKind(ckpt);
  if (ckpt !== undefined && ckptKind === SEQ2SEQ_KIND) return cmdEvalSeq2Seq(ckpt, argv);
  if (ckpt !== undefined && ckptKind === SERIES_KIND) return cmdEvalSeries(ckpt, argv);
  if (ckpt !== undefined && ckptKind === PIXEL_KIND) return cmdEvalPixel(ckpt, argv);
  if (ckpt !== undefined && ckptKind === CAPTION_KIND) return cmdEvalCaption(ckpt, argv);
  if (await dispatchCheckpoint('eval', argv, EVAL_FLAGS, EVAL_FLOW_FLAGS, help, cmdEvalFlow)) return;
  const { positional, flags } = parseArgs(argv, EVAL_FLAGS);
  if (positional.length !== 1)
    throw new ConfigError(
      `arflow eval needs exactly one checkpoint FILE, got ${positional.length}: ${positional.join(' ')}`,
    );
  const { model, train } = CharLM.load(positional[0]);
  let ids: Uint32Array;
  let source: string;
  const unknown = (str(flags, 'unknown') ?? 'error') as UnknownPolicy;
  const file = str(flags, 'text');
  if (file) {
    ids = model.vocab.encode(loadTextFile(file), unknown);
    source = file;
  } else {
    // The held-out tail of the corpus the model was trained on (the same split as training).
    const trained = (train?.corpus as string | undefined) ?? 'moby-dick';
    const name = (str(flags, 'corpus') ?? trained) as CorpusName;
    const options = (train?.options ?? {}) as { valFraction?: number };
    const all = CORPUS_NAMES.includes(name) ? loadCorpus(name) : loadTextFile(name);
    const frac = options.valFraction ?? 0.05;
    ids = splitTrainVal(model.vocab.encode(all, unknown), frac).val;
    source = `${name} (held-out tail, ${Math.round(frac * 100)}%)`;
  }
  const r = await model.evaluateIds(ids);
  if (flags.json) {
    emit({ type: 'summary', bpc: r.bpc, nll: r.nll, chars: r.chars, text: source, bpcAhead: r.bpcAhead });
    return;
  }
  console.log(`${source}: ${r.bpc.toFixed(4)} bits/char over ${r.chars.toLocaleString('en-US')} characters`);
  if (r.bpcAhead.length > 0) {
    console.log(
      `  heads further ahead: ${r.bpcAhead.map((v, i) => `${i + 2} ahead ${v.toFixed(4)}`).join(', ')} bits/char`,
    );
  }
}

const USAGE = `arflow — autoregressive and invertible generative models for Node.js

usage:
  arflow demo                     train a GRU on Moby-Dick for ~2 minutes and watch it write
  arflow train char [options]     train a character language model (arflow train char --help)
  arflow train flow [options]     fit a normalizing flow to a 2-D density or Fashion-MNIST (arflow train flow --help)
  arflow train seq2seq [options]  train an encoder–decoder, grapheme-to-phoneme on CMUdict (arflow train seq2seq --help)
  arflow train series [options]   fit a recurrent mixture-density model to a real time series (arflow train series --help)
  arflow train pixel [options]    train a Pixel-RNN (Row LSTM/GRU) on Fashion-MNIST (arflow train pixel --help)
  arflow train caption [options]  train an image captioner on Fashion-MNIST canvases (arflow train caption --help)
  arflow sample FILE [options]    generate text (a flow: a PNG of samples; a series: sampled continuations plotted) (--help)
  arflow complete FILE [options]  a Pixel-RNN completes the bottom halves of test images, as a PNG (--help)
  arflow translate FILE --input WORD   the output sequence(s) of an encoder–decoder, with log-probabilities (--help)
  arflow caption FILE --image PNG     caption a 56×56 grayscale PNG with a caption checkpoint (--help)
  arflow eval FILE [options]      bits per character on held-out text (a flow or series: held-out NLL; seq2seq: PER/WER) (--help)

Corpora: ${CORPORA.map((c) => `${c.name} (${c.description})`).join('; ')}
Every command takes --json for machine-readable output.`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const json = rest.includes('--json');
  try {
    switch (cmd) {
      case 'demo':
        await cmdDemo(rest);
        break;
      case 'train':
        await cmdTrain(rest);
        break;
      case 'sample':
        await cmdSample(rest);
        break;
      case 'eval':
        await cmdEval(rest);
        break;
      case 'translate':
        await cmdTranslate(rest);
        break;
      case 'caption':
        await cmdCaption(rest);
        break;
      case 'complete':
        await cmdComplete(rest);
        break;
      case undefined:
      case '--help':
      case 'help':
        console.log(USAGE);
        break;
      default:
        throw new ConfigError(`unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`);
    }
    return 0;
  } catch (e) {
    const err = e as Error;
    const code = e instanceof ArflowError ? e.code : 'E_INTERNAL';
    if (json) emit({ type: 'error', code, message: err.message });
    else console.error(`arflow: ${err.message}`);
    if (!(e instanceof ArflowError)) console.error(err.stack);
    return e instanceof ConfigError ? 2 : 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
