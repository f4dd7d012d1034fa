/**
 * `arflow train seq2seq`, `arflow translate` and `arflow eval` of encoder–decoder checkpoints:
 * grapheme-to-phoneme on CMUdict (default) or any `source<TAB>target` TSV file.
 */
import type { CellKind } from '../backend/types.js';
import { loadCmudict, type PronEntry, type StressMode, splitCmudict } from '../data/cmudict.js';
import { loadPairsTsv } from '../data/pairs.js';
import { CheckpointError, ConfigError } from '../errors.js';
import { Seq2Seq, type Seq2SeqConfig, type Seq2SeqEval, type Seq2SeqTrainState } from '../models/seq2seq.js';
import type { Feed, ScheduledSamplingOptions, SsSchedule } from '../train/scheduled-sampling.js';
import type { Seq2SeqProgress, Seq2SeqTrainOptions } from '../train/seq2seq-trainer.js';
import {
  checkOutputPath,
  emit,
  type FlagSpec,
  type Flags,
  HELP_FLAG,
  helpText,
  intFlag,
  JSON_FLAG,
  JSON_RESULT_FLAG,
  num,
  parseArgs,
  positiveFlag,
  str,
} from './args.js';
import { formatDuration, ProgressBar } from './progress.js';

const BEAM_FLAG: FlagSpec = { type: 'int', help: 'beam width of the beam-search scores (default 5; 1 = greedy only)' };

/** How a decoder is fed in training: the flags of every `arflow train` of a decoder model. */
export const FEED_FLAGS: Record<string, FlagSpec> = {
  feed: {
    type: 'string',
    help: 'decoder inputs: teacher (default), free (its own samples) or scheduled (Bengio et al. 2015)',
    choices: ['teacher', 'free', 'scheduled'],
  },
  'ss-schedule': {
    type: 'string',
    help: 'decay of ε (the probability of feeding the truth) for --feed scheduled (default inverse-sigmoid)',
    choices: ['linear', 'exponential', 'inverse-sigmoid'],
  },
  'ss-k': { type: 'number', help: 'k of the schedule (linear: ε₀; exponential: k^i, k < 1; inverse-sigmoid: k ≥ 1)' },
  'ss-c': { type: 'number', help: 'slope c of the linear schedule ε = max(min, k − c·i)' },
  'ss-min': { type: 'number', help: 'floor of ε in [0, 1] (default 0)' },
};

/** The scheduled-sampling options of `--feed` and `--ss-*`; ConfigError for `--ss-*` without `--feed scheduled`. */
export function samplingFlags(f: Flags): ScheduledSamplingOptions {
  const feed = (str(f, 'feed') ?? 'teacher') as Feed;
  const ssFlags = ['ss-schedule', 'ss-k', 'ss-c', 'ss-min'].filter((k) => f[k] !== undefined);
  if (feed !== 'scheduled' && ssFlags.length) {
    throw new ConfigError(`--${ssFlags[0]} only applies with --feed scheduled (got --feed ${feed})`);
  }
  return {
    feed,
    schedule: str(f, 'ss-schedule') as SsSchedule | undefined,
    k: num(f, 'ss-k'),
    c: num(f, 'ss-c'),
    min: num(f, 'ss-min'),
  };
}

export const TRAIN_SEQ2SEQ_FLAGS: Record<string, FlagSpec> = {
  data: { type: 'string', help: 'cmudict (default) or a FILE.tsv of source<TAB>target lines' },
  stress: {
    type: 'string',
    help: 'CMUdict stress digits: strip (default, 39 phonemes) or keep',
    choices: ['strip', 'keep'],
  },
  cell: { type: 'string', help: 'gru, lstm (default) or rnn', choices: ['gru', 'lstm', 'rnn'] },
  bidirectional: { type: 'boolean', help: 'bidirectional encoder (default: forward only)' },
  embed: { type: 'int', help: 'embedding width (default 64)' },
  hidden: { type: 'int', help: 'hidden units per layer and direction (default 256)' },
  layers: { type: 'int', help: 'layers of the encoder and of the decoder (default 1)' },
  ...FEED_FLAGS,
  beam: BEAM_FLAG,
  steps: { type: 'int', help: 'training steps (default 4000)' },
  seconds: { type: 'number', help: 'stop after this many seconds of training; the schedules follow the clock' },
  batch: { type: 'int', help: 'pairs per batch (default 64)' },
  lr: { type: 'number', help: 'peak learning rate (default 0.003, cosine decay)' },
  'val-every': { type: 'int', help: 'greedy PER/WER on 500 validation words every N steps (default 500)' },
  seed: { type: 'int', help: 'seed of initialisation, batch order and sampling (default 0)' },
  out: { type: 'string', help: 'checkpoint path (default seq2seq.safetensors; with --resume, the resumed file)' },
  resume: {
    type: 'string',
    help: 'continue the run saved in this checkpoint (model, data, feeding and settings from it; --steps is the total)',
  },
  json: JSON_FLAG,
  help: HELP_FLAG,
};

/** Flags a resumed run takes from its checkpoint: giving one with --resume is refused. */
const RECORDED_FLAGS = [
  'data',
  'stress',
  'cell',
  'bidirectional',
  'embed',
  'hidden',
  'layers',
  'feed',
  'ss-schedule',
  'ss-k',
  'ss-c',
  'ss-min',
  'batch',
  'lr',
  'val-every',
  'seed',
];

export const TRANSLATE_FLAGS: Record<string, FlagSpec> = {
  input: { type: 'string', help: 'the source: a word (letters) for CMUdict models, or space-separated tokens' },
  beam: { type: 'int', help: 'beam width (default 5; 1 = greedy)' },
  'n-best': { type: 'int', help: 'outputs to print, best first (default 1, at most the beam width)' },
  unknown: {
    type: 'string',
    help: 'source symbols the model never saw: error (default) or skip',
    choices: ['error', 'skip'],
  },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

export const EVAL_SEQ2SEQ_FLAGS: Record<string, FlagSpec> = {
  data: { type: 'string', help: "the data to split (default: the model's training data)" },
  beam: BEAM_FLAG,
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

/** The entries of `--data`: CMUdict (stress as asked) or a TSV file (sources split into characters). */
function loadData(data: string, stress: StressMode): PronEntry[] {
  if (data === 'cmudict') return loadCmudict({ stress });
  if (!data.endsWith('.tsv')) {
    throw new ConfigError(
      `--data must be cmudict or a .tsv file of source<TAB>target lines, got ${JSON.stringify(data)}`,
    );
  }
  return loadPairsTsv(data);
}

const USAGE_TRAIN = `usage: arflow train seq2seq [options]

Trains an encoder–decoder: grapheme-to-phoneme on CMUdict by default (a fixed 90/5/5 split by word),
then reports greedy and beam-search phoneme and word error rates (PER, WER) on the test words.`;

export async function cmdTrainSeq2Seq(argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, TRAIN_SEQ2SEQ_FLAGS);
  if (f.help) {
    console.log(helpText(USAGE_TRAIN, TRAIN_SEQ2SEQ_FLAGS));
    return;
  }
  if (positional.length) throw new ConfigError(`unexpected argument ${JSON.stringify(positional[0])}`);
  const json = Boolean(f.json);
  const resumePath = str(f, 'resume');
  const out = str(f, 'out') ?? resumePath ?? 'seq2seq.safetensors';
  checkOutputPath(out, '--out');
  const beam = intFlag(f, 'beam', 1, 64) ?? 5;
  const run = resumePath === undefined ? newRun(f) : resumeRun(resumePath, f);
  const { data, stress, seed, sampling } = run;
  const feed = sampling.feed ?? 'teacher';
  const { train, valid, test } = splitCmudict(loadData(data, stress), { seed });
  if (train.length === 0 || test.length === 0) {
    throw new ConfigError(`${data} has too few entries for a train/validation/test split`);
  }
  const model = run.model ?? Seq2Seq.forEntries(train, run.arch, { seed });
  const steps = intFlag(f, 'steps', 1) ?? run.steps;
  if (run.resume && run.resume.step >= steps) {
    throw new ConfigError(
      `${resumePath} has already trained ${run.resume.step} of --steps ${steps}; give a larger total --steps to continue`,
    );
  }
  const seconds = positiveFlag(f, 'seconds');
  const bar = json ? null : new ProgressBar();
  const c = model.config;
  bar?.log(
    `train seq2seq: ${data}, ${train.length.toLocaleString('en-US')} train / ${valid.length.toLocaleString('en-US')} valid / ` +
      `${test.length.toLocaleString('en-US')} test words; ${c.bidirectional ? 'bidirectional ' : ''}${c.cell.toUpperCase()} ` +
      `hidden ${c.hidden} × ${c.layers}, vocab ${model.src.size} → ${model.tgt.size}, feed ${feed}`,
  );
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.once('SIGINT', onSigint);
  const onProgress = (p: Seq2SeqProgress) => {
    if (json) {
      emit({ type: 'progress', ...p, valPer: p.valPer ?? null, valWer: p.valWer ?? null });
      return;
    }
    const val = p.valPer !== undefined ? ` · val PER ${pct(p.valPer)} WER ${pct(p.valWer as number)}` : '';
    const byTime = seconds !== undefined && seconds > 0;
    bar?.update(
      byTime ? p.elapsedSec / seconds : p.step / steps,
      byTime ? `step ${p.step}` : `${p.step}/${steps}`,
      `loss ${p.loss.toFixed(3)} · ε ${p.eps.toFixed(2)}${val} · ${Math.round(p.wordsPerSec)} words/s · ` +
        `${byTime ? `${formatDuration(p.elapsedSec)} of ${formatDuration(seconds)}` : `ETA ${formatDuration(p.etaSec)}`}`,
    );
  };
  let summary: Awaited<ReturnType<Seq2Seq['fit']>>;
  try {
    summary = await model.fit(train, {
      ...run.options,
      steps,
      seconds,
      seed,
      sampling,
      valid,
      signal: stop.signal,
      onProgress,
      checkpoint: { path: out },
      meta: { data, stress, seed },
      resume: run.resume,
    });
  } finally {
    // Also when training fails (diverges): the error line then starts on a line of its own.
    process.off('SIGINT', onSigint);
    bar?.end();
  }
  bar?.log(`saved ${out}; scoring ${test.length.toLocaleString('en-US')} test words (greedy and beam ${beam})…`);
  const t0 = performance.now();
  const e = await model.evaluate(test, { beam });
  const result = {
    steps: summary.steps,
    trainLoss: summary.trainLoss,
    valPer: summary.valPer,
    valWer: summary.valWer,
    ...testFields(e),
    wordsPerSec: summary.wordsPerSec,
    beamWordsPerSec: e.words / ((performance.now() - t0) / 1000),
    elapsedSec: summary.elapsedSec,
    stoppedEarly: summary.aborted || summary.outOfTime,
    data,
    feed,
    out,
  };
  if (json) emit({ type: 'summary', ...result });
  else {
    console.log(
      `\n${result.testWords.toLocaleString('en-US')} test words after ${summary.steps} steps: ` +
        `greedy PER ${pct(e.per)} WER ${pct(e.wer)}` +
        (e.perBeam !== undefined ? ` · beam ${beam} PER ${pct(e.perBeam)} WER ${pct(e.werBeam as number)}` : ''),
    );
    console.log(`try: arflow translate ${out} --input ${data === 'cmudict' ? 'ZUCCHINI' : '"…"'} --beam 5 --n-best 3`);
  }
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

function testFields(e: Seq2SeqEval) {
  return {
    testWords: e.words,
    testPer: e.per,
    testWer: e.wer,
    testPerBeam: e.perBeam ?? null,
    testWerBeam: e.werBeam ?? null,
    beam: e.beam ?? 1,
  };
}

/** What a training run is made of, from the flags or from a resumed checkpoint. */
interface RunSetup {
  data: string;
  stress: StressMode;
  seed: number;
  sampling: ScheduledSamplingOptions;
  /** Training options other than steps, seconds and seed (batch, lr, validation…). */
  options: Seq2SeqTrainOptions;
  steps: number;
  arch: Partial<Seq2SeqConfig>;
  /** The resumed model and its training state; absent for a new run. */
  model?: Seq2Seq;
  resume?: Seq2SeqTrainState;
}

function newRun(f: Flags): RunSetup {
  const sampling = samplingFlags(f);
  const data = str(f, 'data') ?? 'cmudict';
  if (data !== 'cmudict' && f.stress !== undefined) throw new ConfigError('--stress applies to --data cmudict only');
  return {
    data,
    stress: (str(f, 'stress') ?? 'strip') as StressMode,
    seed: intFlag(f, 'seed', 0) ?? 0,
    sampling,
    options: { batchSize: intFlag(f, 'batch', 1), lr: positiveFlag(f, 'lr'), valEvery: intFlag(f, 'val-every', 0) },
    steps: 4000,
    arch: {
      embed: intFlag(f, 'embed', 1),
      hidden: intFlag(f, 'hidden', 1),
      layers: intFlag(f, 'layers', 1, 16),
      cell: str(f, 'cell') as CellKind | undefined,
      bidirectional: Boolean(f.bidirectional),
    },
  };
}

/**
 * A run continued from `path`: its model, optimizer state, data, split seed, feeding and settings, so
 * that a step-driven run resumed to its own total ends with the weights of one that never stopped.
 */
function resumeRun(path: string, f: Flags): RunSetup {
  const given = RECORDED_FLAGS.filter((k) => f[k] !== undefined);
  if (given.length) {
    throw new ConfigError(
      `--${given[0]} is taken from ${path} when resuming; drop it (--steps, --seconds, --beam, --out and --json apply)`,
    );
  }
  const { model, train } = Seq2Seq.load(path);
  if (train === null)
    throw new ConfigError(`${path} holds no training state: it was not saved by arflow train seq2seq`);
  const bad = (what: string) => new CheckpointError(`${path}: the training state's ${what} is missing or malformed`);
  if (typeof train.data !== 'string') throw bad('data');
  if (train.stress !== 'strip' && train.stress !== 'keep') throw bad('stress');
  if (!Number.isInteger(train.seed)) throw bad('seed');
  if (!Number.isInteger(train.step) || train.step < 0) throw bad('step');
  if (model.backend.getOptimStep() !== train.step) {
    throw new CheckpointError(
      `${path}: optimizer_step ${model.backend.getOptimStep()} does not match the ${train.step} steps recorded`,
    );
  }
  const options = (train.options ?? {}) as Seq2SeqTrainOptions & { steps?: number };
  const { steps, seconds: _seconds, ...rest } = options;
  return {
    data: train.data,
    stress: train.stress,
    seed: train.seed as number,
    sampling: (train.sampling ?? {}) as ScheduledSamplingOptions,
    options: rest,
    steps: Number.isInteger(steps) ? (steps as number) : 4000,
    arch: model.config,
    model,
    resume: train,
  };
}

export async function cmdTranslate(argv: string[]): Promise<void> {
  const usage =
    'usage: arflow translate FILE --input WORD [options]\n\nThe output sequence(s) of an encoder–decoder checkpoint, with their log-probabilities.';
  const { positional, flags: f } = parseArgs(argv, TRANSLATE_FLAGS);
  if (f.help) {
    console.log(helpText(usage, TRANSLATE_FLAGS));
    return;
  }
  if (positional.length !== 1)
    throw new ConfigError(`arflow translate needs one checkpoint FILE (${usage.split('\n')[0]})`);
  const input = str(f, 'input');
  if (input === undefined || input.trim() === '') throw new ConfigError('arflow translate needs --input WORD');
  const beam = intFlag(f, 'beam', 1, 256) ?? 5;
  const nBest = intFlag(f, 'n-best', 1, 256) ?? 1;
  if (nBest > beam) throw new ConfigError(`--n-best ${nBest} is more than the beam width ${beam}`);
  const { model } = Seq2Seq.load(positional[0]);
  // A CMUdict model reads letters; upper-case input so `zucchini` works as well as `ZUCCHINI`.
  const cmudict = model.src.has('A') && !model.src.has('a');
  const text = cmudict ? input.trim().toUpperCase() : input.trim();
  const source = text.includes(' ') ? text.split(/\s+/) : [...text];
  const outs = model.translate(source, { beam, nBest, unknown: (str(f, 'unknown') ?? 'error') as 'error' | 'skip' });
  if (f.json) {
    emit({ type: 'summary', input: text, beam, outputs: outs.map((o) => ({ ...o, text: o.tokens.join(' ') })) });
    return;
  }
  for (const o of outs) console.log(`${o.tokens.join(' ')}\t${o.logProb.toFixed(4)}`);
}

export async function cmdEvalSeq2Seq(file: string, argv: string[]): Promise<void> {
  const usage = 'usage: arflow eval FILE [options]\n\nGreedy and beam PER/WER of an encoder–decoder on its test split.';
  const { positional, flags: f } = parseArgs(argv, EVAL_SEQ2SEQ_FLAGS);
  if (f.help) {
    console.log(helpText(usage, EVAL_SEQ2SEQ_FLAGS));
    return;
  }
  if (positional.length !== 1) throw new ConfigError(`arflow eval needs exactly one checkpoint FILE`);
  const { model, train } = Seq2Seq.load(file);
  const data = str(f, 'data') ?? (train?.data as string | undefined) ?? 'cmudict';
  const stress = ((train?.stress as string | undefined) ?? 'strip') as StressMode;
  const seed = (train?.seed as number | undefined) ?? 0;
  const { test } = splitCmudict(loadData(data, stress), { seed });
  const beam = intFlag(f, 'beam', 1, 64) ?? 5;
  const e = await model.evaluate(test, { beam });
  if (f.json) emit({ type: 'summary', ...testFields(e), data });
  else
    console.log(
      `${data} test split, ${e.words.toLocaleString('en-US')} words: greedy PER ${pct(e.per)} WER ${pct(e.wer)}` +
        (e.perBeam !== undefined ? ` · beam ${beam} PER ${pct(e.perBeam)} WER ${pct(e.werBeam as number)}` : ''),
    );
}
