/**
 * `arflow train seq2seq`, `arflow translate` and `arflow eval` of encoder–decoder checkpoints:
 * grapheme-to-phoneme on CMUdict (default) or any `source<TAB>target` TSV file.
 */
import type { CellKind } from '../backend/types.js';
import { loadCmudict, type PronEntry, type StressMode, splitCmudict } from '../data/cmudict.js';
import { loadPairsTsv } from '../data/pairs.js';
import { ConfigError } from '../errors.js';
import { Seq2Seq, type Seq2SeqEval } from '../models/seq2seq.js';
import type { Feed, SsSchedule } from '../train/scheduled-sampling.js';
import type { Seq2SeqProgress } from '../train/seq2seq-trainer.js';
import { checkOutputPath, type FlagSpec, type Flags, helpText, intFlag, parseArgs, positiveFlag } from './args.js';
import { formatDuration, ProgressBar } from './progress.js';

const num = (f: Flags, k: string) => f[k] as number | undefined;
const str = (f: Flags, k: string) => f[k] as string | undefined;

function emit(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const JSON_FLAG: FlagSpec = { type: 'boolean', help: 'print one JSON object per line (progress, then a summary)' };
const HELP_FLAG: FlagSpec = { type: 'boolean', help: 'show this help' };
const BEAM_FLAG: FlagSpec = { type: 'int', help: 'beam width of the beam-search scores (default 5; 1 = greedy only)' };

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
  beam: BEAM_FLAG,
  steps: { type: 'int', help: 'training steps (default 4000)' },
  seconds: { type: 'number', help: 'stop after this many seconds of training; the schedules follow the clock' },
  batch: { type: 'int', help: 'pairs per batch (default 64)' },
  lr: { type: 'number', help: 'peak learning rate (default 0.003, cosine decay)' },
  'val-every': { type: 'int', help: 'greedy PER/WER on 500 validation words every N steps (default 500)' },
  seed: { type: 'int', help: 'seed of initialisation, batch order and sampling (default 0)' },
  out: { type: 'string', help: 'checkpoint path (default seq2seq.safetensors)' },
  json: JSON_FLAG,
  help: HELP_FLAG,
};

export const TRANSLATE_FLAGS: Record<string, FlagSpec> = {
  input: { type: 'string', help: 'the source: a word (letters) for CMUdict models, or space-separated tokens' },
  beam: { type: 'int', help: 'beam width (default 5; 1 = greedy)' },
  'n-best': { type: 'int', help: 'outputs to print, best first (default 1, at most the beam width)' },
  unknown: {
    type: 'string',
    help: 'source symbols the model never saw: error (default) or skip',
    choices: ['error', 'skip'],
  },
  json: { type: 'boolean', help: 'print the result (or the error) as one JSON object' },
  help: HELP_FLAG,
};

export const EVAL_SEQ2SEQ_FLAGS: Record<string, FlagSpec> = {
  data: { type: 'string', help: "the data to split (default: the model's training data)" },
  beam: BEAM_FLAG,
  json: { type: 'boolean', help: 'print the result (or the error) as one JSON object' },
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
  const out = str(f, 'out') ?? 'seq2seq.safetensors';
  checkOutputPath(out, '--out');
  const beam = intFlag(f, 'beam', 1, 64) ?? 5;
  const feed = (str(f, 'feed') ?? 'teacher') as Feed;
  const ssFlags = ['ss-schedule', 'ss-k', 'ss-c', 'ss-min'].filter((k) => f[k] !== undefined);
  if (feed !== 'scheduled' && ssFlags.length) {
    throw new ConfigError(`--${ssFlags[0]} only applies with --feed scheduled (got --feed ${feed})`);
  }
  const sampling = {
    feed,
    schedule: str(f, 'ss-schedule') as SsSchedule | undefined,
    k: num(f, 'ss-k'),
    c: num(f, 'ss-c'),
    min: num(f, 'ss-min'),
  };
  const data = str(f, 'data') ?? 'cmudict';
  const stress = (str(f, 'stress') ?? 'strip') as StressMode;
  if (data !== 'cmudict' && f.stress !== undefined) throw new ConfigError('--stress applies to --data cmudict only');
  const seed = intFlag(f, 'seed', 0) ?? 0;
  const entries = loadData(data, stress);
  const { train, valid, test } = splitCmudict(entries, { seed });
  if (train.length === 0 || test.length === 0) {
    throw new ConfigError(`${data} has too few entries (${entries.length}) for a train/validation/test split`);
  }
  const model = Seq2Seq.forEntries(
    train,
    {
      embed: intFlag(f, 'embed', 1),
      hidden: intFlag(f, 'hidden', 1),
      layers: intFlag(f, 'layers', 1, 16),
      cell: str(f, 'cell') as CellKind | undefined,
      bidirectional: Boolean(f.bidirectional),
    },
    { seed },
  );
  const steps = intFlag(f, 'steps', 1) ?? 4000;
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
  const summary = await model.fit(train, {
    steps,
    seconds,
    batchSize: intFlag(f, 'batch', 1),
    lr: positiveFlag(f, 'lr'),
    valEvery: intFlag(f, 'val-every', 0),
    seed,
    sampling,
    valid,
    signal: stop.signal,
    onProgress,
    checkpoint: { path: out },
    meta: { data, stress, seed },
  });
  process.off('SIGINT', onSigint);
  bar?.end();
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
