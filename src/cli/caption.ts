/**
 * `arflow train caption`, `arflow caption FILE --image PNG`, and `arflow sample` / `arflow eval` of
 * caption checkpoints: the image captioner on the 56×56 Fashion-MNIST caption canvases.
 */
import { type CaptionCanvases, loadCaptionCanvases, mostCommonCaptionBaseline } from '../data/canvases.js';
import { CheckpointError, ConfigError } from '../errors.js';
import { expectSize, readPngGray } from '../io/png-read.js';
import { corpusBleu, exactMatch } from '../metrics/bleu.js';
import { type CaptionEval, Captioner, type CaptionerConfig, type CaptionerTrainState } from '../models/captioner.js';
import type { CaptionProgress } from '../train/caption-trainer.js';
import type { ScheduledSamplingOptions } from '../train/scheduled-sampling.js';
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
  parseArgs,
  positiveFlag,
  str,
} from './args.js';
import { checkPicturePath, saveGrid } from './flownet.js';
import { formatDuration, ProgressBar } from './progress.js';
import { FEED_FLAGS, samplingFlags } from './seq2seq.js';

export { CAPTION_KIND } from '../models/captioner.js';

const BEAM_FLAG: FlagSpec = { type: 'int', help: 'beam width (default 3; 1 = greedy only)' };

const DEFAULT_TRAIN_N = 20_000;
const DEFAULT_TEST_N = 1_000;
const DEFAULT_STEPS = 3000;

export const TRAIN_CAPTION_FLAGS: Record<string, FlagSpec> = {
  cell: { type: 'string', help: 'decoder cell: gru (default), lstm or rnn', choices: ['gru', 'lstm', 'rnn'] },
  embed: { type: 'int', help: 'word embedding width (default 32)' },
  hidden: { type: 'int', help: 'hidden units per decoder layer (default 128)' },
  layers: { type: 'int', help: 'decoder layers, each with its own bridge from the image (default 1)' },
  channels: { type: 'string', help: 'output channels of the conv blocks, comma-separated (default 8,16,32: 56 → 7)' },
  ...FEED_FLAGS,
  beam: BEAM_FLAG,
  steps: { type: 'int', help: `training steps (default ${DEFAULT_STEPS})` },
  seconds: { type: 'number', help: 'stop after this many seconds of training; the schedules follow the clock' },
  batch: { type: 'int', help: 'canvases per batch (default 32)' },
  lr: { type: 'number', help: 'peak learning rate (default 0.01, cosine decay)' },
  'train-n': {
    type: 'int',
    help: `training canvases, cut from Fashion-MNIST's train split (default ${DEFAULT_TRAIN_N})`,
  },
  'test-n': { type: 'int', help: `test canvases, cut from its test split (default ${DEFAULT_TEST_N})` },
  'val-every': {
    type: 'int',
    help: 'greedy BLEU-4 on 200 test canvases every N steps, a progress display only: nothing is chosen by it (default 500; 0: at the end)',
  },
  seed: { type: 'int', help: 'seed of the canvases, initialisation, batch order and sampling (default 0)' },
  out: { type: 'string', help: 'checkpoint path (default caption.safetensors; with --resume, the resumed file)' },
  resume: {
    type: 'string',
    help: 'continue the run saved in this checkpoint (model, data, feeding and settings from it; --steps is the total)',
  },
  json: JSON_FLAG,
  help: HELP_FLAG,
};

/** Flags a resumed run takes from its checkpoint: giving one with --resume is refused. */
const RECORDED_FLAGS = [
  'cell',
  'embed',
  'hidden',
  'layers',
  'channels',
  'feed',
  'ss-schedule',
  'ss-k',
  'ss-c',
  'ss-min',
  'batch',
  'lr',
  'train-n',
  'test-n',
  'val-every',
  'seed',
];

export const CAPTION_FLAGS: Record<string, FlagSpec> = {
  image: { type: 'string', help: 'a 56×56 8-bit grayscale PNG, white (255) items on black (0) as the canvases' },
  invert: { type: 'boolean', help: 'the PNG is dark on white (as `arflow sample` draws): invert it first' },
  beam: { type: 'int', help: 'beam width (default 3; 1 = greedy)' },
  'n-best': { type: 'int', help: 'captions to print, best first (default 1, at most the beam width)' },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

export const SAMPLE_CAPTION_FLAGS: Record<string, FlagSpec> = {
  n: { type: 'int', help: 'test canvases to caption (default 8, at most 64)' },
  out: { type: 'string', help: 'the PNG grid of the canvases (default captions.png)' },
  beam: { type: 'int', help: 'beam width (default 3; 1 = greedy)' },
  columns: { type: 'int', help: 'canvases per row of the grid (default 4)' },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

export const EVAL_CAPTION_FLAGS: Record<string, FlagSpec> = {
  beam: BEAM_FLAG,
  'test-n': { type: 'int', help: "test canvases (default: the model's own test set)" },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

/** What a run's data is, recorded in its checkpoint so that eval and sample see the same test canvases. */
interface DataSpec {
  trainN: number;
  testN: number;
  seed: number;
}

function testCanvases(d: DataSpec): CaptionCanvases {
  return loadCaptionCanvases('test', { count: d.testN, seed: d.seed });
}

function channelsFlag(f: Flags): number[] | undefined {
  const raw = str(f, 'channels');
  if (raw === undefined) return undefined;
  const parts = raw.split(',').map((s) => s.trim());
  const out = parts.map(Number);
  if (parts.length === 0 || out.some((c, i) => parts[i] === '' || !Number.isInteger(c) || c < 1 || c > 1024)) {
    throw new ConfigError(
      `--channels must be whole numbers from 1 to 1024, comma-separated, got ${JSON.stringify(raw)}`,
    );
  }
  return out;
}

/** Test metrics of the most-common-caption baseline (per number of items, from the training canvases). */
function baseline(train: CaptionCanvases, test: CaptionCanvases): { bleu4: number; exactMatch: number } {
  const pick = mostCommonCaptionBaseline(train);
  const hyps = test.canvases.map((c) => pick(c.layout.filter((x) => x !== null).length));
  const refs = test.canvases.map((c) => c.captions);
  return { bleu4: corpusBleu(hyps, refs), exactMatch: exactMatch(hyps, refs) };
}

function testFields(e: CaptionEval) {
  return {
    testCanvases: e.canvases,
    testBleu4: e.bleu4,
    testBleu4Beam: e.bleu4Beam ?? null,
    exactMatch: e.exactMatch,
    exactMatchBeam: e.exactMatchBeam ?? null,
    beam: e.beam ?? 1,
  };
}

function describeEval(e: CaptionEval): string {
  const beam =
    e.bleu4Beam !== undefined
      ? ` · beam ${e.beam} BLEU-4 ${pct(e.bleu4Beam)}, exact ${pct(e.exactMatchBeam as number)}`
      : '';
  return `greedy BLEU-4 ${pct(e.bleu4)}, exact ${pct(e.exactMatch)}${beam}`;
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

/** What a training run is made of, from the flags or from a resumed checkpoint. */
interface RunSetup {
  data: DataSpec;
  sampling: ScheduledSamplingOptions;
  options: { batchSize?: number; lr?: number; valEvery?: number };
  steps: number;
  arch: Partial<CaptionerConfig>;
  model?: Captioner;
  resume?: CaptionerTrainState;
}

function newRun(f: Flags): RunSetup {
  return {
    data: {
      trainN: intFlag(f, 'train-n', 1, 1_000_000) ?? DEFAULT_TRAIN_N,
      testN: intFlag(f, 'test-n', 1, 100_000) ?? DEFAULT_TEST_N,
      seed: intFlag(f, 'seed', 0, 0xffffffff) ?? 0,
    },
    sampling: samplingFlags(f),
    options: { batchSize: intFlag(f, 'batch', 1), lr: positiveFlag(f, 'lr'), valEvery: intFlag(f, 'val-every', 0) },
    steps: DEFAULT_STEPS,
    arch: {
      embed: intFlag(f, 'embed', 1),
      hidden: intFlag(f, 'hidden', 1),
      layers: intFlag(f, 'layers', 1, 16),
      cell: str(f, 'cell') as CaptionerConfig['cell'] | undefined,
      channels: channelsFlag(f),
    },
  };
}

/** A run continued from `path`: its model, optimizer state, data, feeding and settings. */
function resumeRun(path: string, f: Flags): RunSetup {
  const given = RECORDED_FLAGS.filter((k) => f[k] !== undefined);
  if (given.length) {
    throw new ConfigError(
      `--${given[0]} is taken from ${path} when resuming; drop it (--steps, --seconds, --beam, --out and --json apply)`,
    );
  }
  const { model, train } = Captioner.load(path);
  if (train === null)
    throw new ConfigError(`${path} holds no training state: it was not saved by arflow train caption`);
  const data = dataOf(path, train);
  if (!Number.isInteger(train.step) || train.step < 0) throw badState(path, 'step');
  if (model.backend.getOptimStep() !== train.step) {
    throw new CheckpointError(
      `${path}: optimizer_step ${model.backend.getOptimStep()} does not match the ${train.step} steps recorded`,
    );
  }
  const { steps, seconds: _seconds, ...options } = (train.options ?? {}) as { steps?: number; seconds?: number };
  return {
    data,
    sampling: (train.sampling ?? {}) as ScheduledSamplingOptions,
    options,
    steps: Number.isInteger(steps) ? (steps as number) : DEFAULT_STEPS,
    arch: model.config,
    model,
    resume: train,
  };
}

const badState = (path: string, what: string) =>
  new CheckpointError(`${path}: the training state's ${what} is missing or malformed`);

function dataOf(path: string, train: Record<string, unknown>): DataSpec {
  const d = train.data as Partial<DataSpec> | undefined;
  for (const k of ['trainN', 'testN', 'seed'] as const) {
    if (!Number.isInteger(d?.[k]) || (d?.[k] as number) < 0) throw badState(path, `data.${k}`);
  }
  return d as DataSpec;
}

const USAGE_TRAIN = `usage: arflow train caption [options]

Trains an image captioner (a CNN encoder sets a GRU/LSTM decoder's initial state; Show and Tell,
Vinyals et al. 2015) on 56×56 Fashion-MNIST caption canvases, then reports corpus BLEU-4 and exact
match of greedy and beam-search captions on test canvases built from the test split, beside the
most-common-caption baseline.`;

export async function cmdTrainCaption(argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, TRAIN_CAPTION_FLAGS);
  if (f.help) {
    console.log(helpText(USAGE_TRAIN, TRAIN_CAPTION_FLAGS));
    return;
  }
  if (positional.length) throw new ConfigError(`unexpected argument ${JSON.stringify(positional[0])}`);
  const json = Boolean(f.json);
  const resumePath = str(f, 'resume');
  const out = str(f, 'out') ?? resumePath ?? 'caption.safetensors';
  checkOutputPath(out, '--out');
  const beam = intFlag(f, 'beam', 1, 64) ?? 3;
  const run = resumePath === undefined ? newRun(f) : resumeRun(resumePath, f);
  const { data, sampling } = run;
  const steps = intFlag(f, 'steps', 1) ?? run.steps;
  if (run.resume && run.resume.step >= steps) {
    throw new ConfigError(
      `${resumePath} has already trained ${run.resume.step} of --steps ${steps}; give a larger total --steps to continue`,
    );
  }
  const seconds = positiveFlag(f, 'seconds');
  const model = run.model ?? Captioner.create(run.arch, { seed: data.seed });
  const train = loadCaptionCanvases('train', { count: data.trainN, seed: data.seed });
  const test = testCanvases(data);
  const feed = sampling.feed ?? 'teacher';
  const bar = json ? null : new ProgressBar();
  const c = model.config;
  bar?.log(
    `train caption: ${data.trainN.toLocaleString('en-US')} train / ${data.testN.toLocaleString('en-US')} test canvases; ` +
      `CNN ${c.channels.join('-')} → ${c.cell.toUpperCase()} hidden ${c.hidden} × ${c.layers}, ${model.vocab.size} words, feed ${feed}`,
  );
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.once('SIGINT', onSigint);
  const onProgress = (p: CaptionProgress) => {
    if (json) {
      emit({ type: 'progress', ...p, valBleu4: p.valBleu4 ?? null });
      return;
    }
    const val = p.valBleu4 !== undefined ? ` · val BLEU-4 ${pct(p.valBleu4)}` : '';
    const byTime = seconds !== undefined && seconds > 0;
    bar?.update(
      byTime ? p.elapsedSec / seconds : p.step / steps,
      byTime ? `step ${p.step}` : `${p.step}/${steps}`,
      `loss ${p.loss.toFixed(3)} · ε ${p.eps.toFixed(2)}${val} · ${Math.round(p.captionsPerSec)} captions/s · ` +
        `${byTime ? `${formatDuration(p.elapsedSec)} of ${formatDuration(seconds)}` : `ETA ${formatDuration(p.etaSec)}`}`,
    );
  };
  let summary: Awaited<ReturnType<Captioner['fit']>>;
  try {
    summary = await model.fit(train, {
      ...run.options,
      steps,
      seconds,
      seed: data.seed,
      sampling,
      valid: test,
      signal: stop.signal,
      onProgress,
      checkpoint: { path: out },
      meta: { data },
      resume: run.resume,
    });
  } finally {
    // Also when training fails (diverges): the error line then starts on a line of its own.
    process.off('SIGINT', onSigint);
    bar?.end();
  }
  bar?.log(`saved ${out}; captioning ${test.n.toLocaleString('en-US')} test canvases (greedy and beam ${beam})…`);
  const t0 = performance.now();
  const greedy = model.caption(test.images);
  const greedySec = (performance.now() - t0) / 1000;
  const e = await model.evaluate(test, { beam });
  const base = baseline(train, test);
  const result = {
    steps: summary.steps,
    trainLoss: summary.trainLoss,
    valBleu4: summary.valBleu4,
    ...testFields(e),
    baselineBleu4: base.bleu4,
    baselineExactMatch: base.exactMatch,
    captionsPerSec: summary.captionsPerSec,
    greedyCaptionsPerSec: greedy.length / greedySec,
    elapsedSec: summary.elapsedSec,
    stoppedEarly: summary.aborted || summary.outOfTime,
    cell: c.cell,
    feed,
    out,
  };
  if (json) emit({ type: 'summary', ...result });
  else {
    console.log(
      `\n${test.n.toLocaleString('en-US')} test canvases after ${summary.steps} steps: ${describeEval(e)}` +
        ` · most-common-caption baseline BLEU-4 ${pct(base.bleu4)}`,
    );
    for (const [i, g] of greedy.slice(0, 3).entries())
      console.log(`  ${g.text}\n    (truth: ${test.canvases[i].caption.join(' ')})`);
    console.log(`try: arflow sample ${out} --out captions.png`);
  }
}

/** The pixels of a user's PNG as the model reads them; DataError/ShapeError for another format or size. */
function readCanvasPng(path: string, side: number, invert: boolean): Uint8Array {
  const img = readPngGray(path);
  expectSize(img, side, side, path);
  return invert ? img.pixels.map((v) => 255 - v) : img.pixels;
}

export async function cmdCaption(argv: string[]): Promise<void> {
  const usage =
    'usage: arflow caption FILE --image PNG [options]\n\nCaptions a 56×56 8-bit grayscale PNG with a caption checkpoint (white items on black, as the\ncanvases; --invert for dark on white). Other sizes or colour PNGs are refused, with a conversion hint.';
  const { positional, flags: f } = parseArgs(argv, CAPTION_FLAGS);
  if (f.help) {
    console.log(helpText(usage, CAPTION_FLAGS));
    return;
  }
  if (positional.length !== 1)
    throw new ConfigError(`arflow caption needs one checkpoint FILE (${usage.split('\n')[0]})`);
  const image = str(f, 'image');
  if (image === undefined || image === '') throw new ConfigError('arflow caption needs --image PNG');
  const beam = intFlag(f, 'beam', 1, 256) ?? 3;
  const nBest = intFlag(f, 'n-best', 1, 256) ?? 1;
  if (nBest > beam) throw new ConfigError(`--n-best ${nBest} is more than the beam width ${beam}`);
  const { model } = Captioner.load(positional[0]);
  const pixels = readCanvasPng(image, model.config.image, Boolean(f.invert));
  const hyps = model.beam(pixels, { beam, nBest });
  const captions = hyps.map((h) => ({ text: model.vocab.decode(h.tokens).join(' '), logProb: h.logProb }));
  if (f.json) {
    emit({ type: 'summary', image, beam, captions });
    return;
  }
  for (const c of captions) console.log(`${c.text}\t${c.logProb.toFixed(4)}`);
}

function loadForData(file: string): { model: Captioner; data: DataSpec } {
  const { model, train } = Captioner.load(file);
  const data = train === null ? { trainN: DEFAULT_TRAIN_N, testN: DEFAULT_TEST_N, seed: 0 } : dataOf(file, train);
  return { model, data };
}

/** `arflow sample FILE` of a caption checkpoint: a PNG grid of test canvases and their captions. */
export async function cmdSampleCaption(file: string, argv: string[]): Promise<void> {
  const usage =
    'usage: arflow sample FILE [options]\n\nA PNG grid of test canvases, with the captions the model gives them.';
  const { positional, flags: f } = parseArgs(argv, SAMPLE_CAPTION_FLAGS);
  if (f.help) {
    console.log(helpText(usage, SAMPLE_CAPTION_FLAGS));
    return;
  }
  if (positional.length !== 1) throw new ConfigError('arflow sample needs exactly one checkpoint FILE');
  const n = intFlag(f, 'n', 1, 64) ?? 8;
  const beam = intFlag(f, 'beam', 1, 64) ?? 3;
  const columns = intFlag(f, 'columns', 1, 64) ?? 4;
  const out = str(f, 'out') ?? 'captions.png';
  checkPicturePath(out, '--out', [file]);
  const { model, data } = loadForData(file);
  const test = loadCaptionCanvases('test', { count: n, seed: data.seed });
  const captions = model.caption(test.images, { beam });
  const side = model.config.image;
  saveGrid(out, test.images, n, [1, side, side], Math.min(columns, n));
  const rows = captions.map((c, i) => ({ index: i, caption: c.text, truth: test.canvases[i].caption.join(' ') }));
  if (f.json) {
    emit({ type: 'summary', out, n, beam, captions: rows });
    return;
  }
  console.log(`wrote ${out}: ${n} test canvases, ${columns} to a row, reading order; their captions (beam ${beam}):`);
  for (const r of rows) console.log(`  ${r.index + 1}. ${r.caption}`);
}

/** `arflow eval FILE` of a caption checkpoint: BLEU-4 and exact match on its test canvases. */
export async function cmdEvalCaption(file: string, argv: string[]): Promise<void> {
  const usage =
    'usage: arflow eval FILE [options]\n\nGreedy and beam BLEU-4 and exact match of a captioner on its test canvases.';
  const { positional, flags: f } = parseArgs(argv, EVAL_CAPTION_FLAGS);
  if (f.help) {
    console.log(helpText(usage, EVAL_CAPTION_FLAGS));
    return;
  }
  if (positional.length !== 1) throw new ConfigError('arflow eval needs exactly one checkpoint FILE');
  const beam = intFlag(f, 'beam', 1, 64) ?? 3;
  const { model, data } = loadForData(file);
  const testN = intFlag(f, 'test-n', 1, 100_000) ?? data.testN;
  const e = await model.evaluate(testCanvases({ ...data, testN }), { beam });
  if (f.json) emit({ type: 'summary', ...testFields(e) });
  else console.log(`${e.canvases.toLocaleString('en-US')} test canvases: ${describeEval(e)}`);
}
