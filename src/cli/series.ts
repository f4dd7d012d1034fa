/**
 * `arflow train series`, and `arflow sample` / `arflow eval` of series-model checkpoints (kind
 * 'series'): recurrent density models of continuous time series (the sensor motes, US daily births or
 * any numeric CSV) with a Gaussian or mixture-density likelihood, scored in nats per time step in the
 * series' original units beside the random-walk and AR(1) baselines. Output conventions as in main.ts
 * (`--json`: progress lines, then one summary; errors as `{"type":"error",…}` by main's handler).
 *
 * Wiring (main.ts): `train series` → `cmdTrainSeries(rest)`; a checkpoint whose kind is
 * {@link SERIES_KIND} → `cmdSampleSeries(file, argv)` / `cmdEvalSeries(file, argv)`, with
 * {@link SAMPLE_SERIES_FLAGS} / {@link EVAL_SERIES_FLAGS} for the option checks and help.
 */
import { basename, dirname, join, parse } from 'node:path';
import type { SeriesOutputs } from '../backend/js/series.js';
import type { CellKind } from '../backend/types.js';
import {
  DEFAULT_MOTE,
  loadSeries,
  loadSeriesCsv,
  type MoteId,
  SERIES,
  type Series,
  type SeriesSplit,
  splitSeries,
} from '../data/series.js';
import { ConfigError, DivergenceError } from '../errors.js';
import { segment } from '../io/plot.js';
import { baselineNll, type SeriesBaselines } from '../metrics/series-baselines.js';
import { DEFAULT_SERIES_MODEL, SERIES_KIND, type SeriesInput, SeriesModel } from '../models/series.js';
import { SERIES_TRAIN_DEFAULTS, type SeriesTrainOptions, type SeriesTrainProgress } from '../train/series-trainer.js';
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
  samePath,
  savePicture,
  str,
} from './args.js';
import { checkPicturePath } from './flownet.js';
import { formatDuration, ProgressBar } from './progress.js';

export { SERIES_KIND };

const DATA_HELP = `${SERIES.map((s) => s.name).join(' | ')} | FILE.csv (a numeric CSV, one row per time step, optional header)`;
const MOTE_FLAG: FlagSpec = { type: 'int', help: `sensors only: which mote, 1-4 (default ${DEFAULT_MOTE})` };

/** Fractions of the series held out, latest steps last: test, and validation just before it. */
const TEST_FRACTION = 0.2;
const VALID_FRACTION = 0.1;

export const SERIES_TRAIN_FLAGS: Record<string, FlagSpec> = {
  data: { type: 'string', help: `the series: ${DATA_HELP} (default sensors)` },
  mote: MOTE_FLAG,
  likelihood: {
    type: 'string',
    help: `per-step density: mdn (mixture, default) or gaussian (diagonal)`,
    choices: ['mdn', 'gaussian'],
  },
  components: { type: 'int', help: `mixture components K ≥ 1, mdn only (default ${DEFAULT_SERIES_MODEL.components})` },
  cell: { type: 'string', help: 'recurrent cell: gru (default), lstm or rnn', choices: ['gru', 'lstm', 'rnn'] },
  hidden: { type: 'int', help: `hidden units per layer (default ${DEFAULT_SERIES_MODEL.hidden})` },
  layers: { type: 'int', help: `stacked recurrent layers (default ${DEFAULT_SERIES_MODEL.layers})` },
  input: {
    type: 'string',
    help: 'what the network reads of the previous step: increment (default, translation-invariant) or value',
    choices: ['increment', 'value'],
  },
  'predict-ahead': {
    type: 'int',
    help: 'predict the next N steps jointly, one head each, loss summed over them (default 1: the next step; at most 64 and --seq)',
  },
  outputs: {
    type: 'string',
    help: 'steps of each window the loss scores: every (default) or last (sequence-to-one)',
    choices: ['every', 'last'],
  },
  seq: { type: 'int', help: `time steps per BPTT window (default ${SERIES_TRAIN_DEFAULTS.seqLen})` },
  batch: { type: 'int', help: `parallel streams per batch (default ${SERIES_TRAIN_DEFAULTS.batchSize})` },
  steps: { type: 'int', help: `training steps (default ${SERIES_TRAIN_DEFAULTS.steps})` },
  seconds: { type: 'number', help: 'stop after this many seconds of training (default 0 = no limit)' },
  lr: { type: 'number', help: `peak learning rate, cosine schedule (default ${SERIES_TRAIN_DEFAULTS.lr})` },
  'val-every': {
    type: 'int',
    help: `validation NLL every N steps (default ${SERIES_TRAIN_DEFAULTS.valEvery}, 0 = at the end)`,
  },
  seed: { type: 'int', help: 'seed of initialisation, window offsets and dequantisation noise (default 0)' },
  backend: { type: 'string', help: 'native (default) or js (pure TypeScript, slow)', choices: ['native', 'js'] },
  out: { type: 'string', help: 'checkpoint path (default series-<data>.safetensors)' },
  json: JSON_FLAG,
  help: HELP_FLAG,
  resume: {
    type: 'string',
    help: 'continue the run saved in this checkpoint (model, data and settings from it; --steps is the total)',
  },
};

export const SAMPLE_SERIES_FLAGS: Record<string, FlagSpec> = {
  steps: { type: 'int', help: 'values to sample per continuation (default 200)' },
  n: { type: 'int', help: 'sampled continuations drawn in colour over the real one in black (default 3, at most 20)' },
  seed: { type: 'int', help: 'sampling seed (default 0)' },
  temperature: { type: 'number', help: 'sampling temperature > 0 (default 1: the model’s own distribution)' },
  context: { type: 'int', help: 'real steps shown before the continuation (default: as many as --steps)' },
  out: { type: 'string', help: 'the plot, a PNG (default: the checkpoint path with -samples.png)' },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

export const EVAL_SERIES_FLAGS: Record<string, FlagSpec> = {
  data: {
    type: 'string',
    help: `score this series' test split instead: ${DATA_HELP} (default: what it was trained on)`,
  },
  mote: MOTE_FLAG,
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

const TRAIN_USAGE = `usage: arflow train series [options]

Trains a recurrent density model of a time series: each step x_t given all before it, as a Gaussian or a
mixture density (Graves 2013) over the increment x_t − x_{t−1}. The series is split by time (train 70 %,
validation 10 %, test 20 %, latest last); the test NLL is in nats per time step in the original units,
scored step by step after a warm-up over the training and validation data, beside the random-walk and
AR(1) baselines. Values recorded to a fixed number of decimals get uniform noise of that resolution
(dequantisation), so that no density can score a spike on the recording grid. Ctrl-C stops training and
still saves the checkpoint. Series: ${SERIES.map((s) => `${s.name} (${s.description})`).join('; ')}.`;

/** Where a run's data came from, as its checkpoint records it. */
interface DataSource {
  data: string;
  mote?: MoteId;
}

/**
 * The series `--data` / `--mote` name (else `fallback`, a checkpoint's record, else mote 3 of the
 * sensors); ConfigError for --mote with another series. Reads nothing.
 */
function sourceOf(f: Flags, fallback?: DataSource): DataSource {
  const data = str(f, 'data') ?? fallback?.data ?? 'sensors';
  const moteFlag = intFlag(f, 'mote', 1, 4) as MoteId | undefined;
  if (data === 'sensors') {
    return { data, mote: moteFlag ?? (str(f, 'data') === undefined ? fallback?.mote : undefined) ?? DEFAULT_MOTE };
  }
  if (moteFlag !== undefined) throw new ConfigError(`--mote applies to --data sensors only, not ${data}`);
  return { data };
}

/** The series of `source`: a bundled one or a CSV file (DataError when missing or not numeric). */
function loadSource(source: DataSource): Series {
  if (source.data === 'sensors') return loadSeries('sensors', { mote: source.mote });
  if (source.data === 'births') return loadSeries('births');
  return loadSeriesCsv(source.data);
}

function split(series: Series): SeriesSplit {
  return splitSeries(series, { test: TEST_FRACTION, valid: VALID_FRACTION });
}

function dataLabel(s: DataSource): string {
  return s.data === 'sensors' ? `sensors (mote ${s.mote})` : s.data;
}

function defaultOut(s: DataSource): string {
  const name = s.data === 'sensors' ? `sensors-mote${s.mote}` : s.data === 'births' ? 'births' : parse(s.data).name;
  return `series-${name}.safetensors`;
}

function baselineFields(b: SeriesBaselines) {
  return { baselineNll: b.best.nll, baselineName: b.best.name, baselines: { randomWalk: b.randomWalk, ar1: b.ar1 } };
}

/** The test NLL, refusing a non-finite one (a diverged or broken model) as a DivergenceError. */
async function testNll(model: SeriesModel, sp: SeriesSplit, out: string) {
  const r = await model.evaluateSplit(sp);
  if (!Number.isFinite(r.nll)) {
    throw new DivergenceError(
      `the model's test NLL is not finite (${r.nll}): it diverged or is numerically unstable on the test data (try a lower --lr or fewer --steps); ${out} is likely unusable`,
    );
  }
  return r;
}

/** Every `train series` flag checked before any data is read or anything written. */
function checkTrainFlags(f: Flags): void {
  for (const k of ['hidden', 'layers', 'components', 'seq', 'batch', 'steps']) intFlag(f, k, 1);
  const ahead = intFlag(f, 'predict-ahead', 1, 64);
  const seq = num(f, 'seq') ?? SERIES_TRAIN_DEFAULTS.seqLen;
  if (ahead !== undefined && ahead > seq) {
    throw new ConfigError(
      `--predict-ahead ${ahead} exceeds --seq ${seq}: a window's heads read at most one window ahead`,
    );
  }
  intFlag(f, 'val-every', 0);
  intFlag(f, 'seed', 0);
  positiveFlag(f, 'lr');
  positiveFlag(f, 'seconds', true);
  if (str(f, 'likelihood') === 'gaussian' && f.components !== undefined) {
    throw new ConfigError('--components applies to --likelihood mdn only (the Gaussian head has no components)');
  }
}

export async function cmdTrainSeries(argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, SERIES_TRAIN_FLAGS);
  if (f.help) {
    console.log(helpText(TRAIN_USAGE, SERIES_TRAIN_FLAGS));
    return;
  }
  if (positional.length) throw new ConfigError(`unexpected argument ${JSON.stringify(positional[0])}`);
  checkTrainFlags(f);
  const json = Boolean(f.json);
  const resumePath = str(f, 'resume');
  const resumed = resumePath === undefined ? null : resumeSeries(resumePath, f);
  const source = resumed ? recordedSource(resumed.model, resumePath as string, f) : sourceOf(f);
  const out = str(f, 'out') ?? resumePath ?? defaultOut(source);
  if (samePath(out, source.data))
    throw new ConfigError(`--out ${out} is the data file itself: give the checkpoint another path`);
  checkOutputPath(out, '--out');
  const series = loadSource(source);
  const sp = split(series);
  const baselines = baselineNll(sp);
  const likelihood = (str(f, 'likelihood') ?? DEFAULT_SERIES_MODEL.likelihood) as 'mdn' | 'gaussian';
  const seed = resumed ? resumed.seed : (num(f, 'seed') ?? 0);
  if (resumed) checkDim(resumed.model, series, resumePath as string);
  const model =
    resumed?.model ??
    SeriesModel.create(
      {
        dim: series.dim,
        likelihood,
        components: likelihood === 'mdn' ? num(f, 'components') : undefined,
        cell: str(f, 'cell') as CellKind | undefined,
        hidden: num(f, 'hidden'),
        layers: num(f, 'layers'),
        input: str(f, 'input') as SeriesInput | undefined,
        predictAhead: num(f, 'predict-ahead'),
        outputs: str(f, 'outputs') as SeriesOutputs | undefined,
      },
      { backend: (str(f, 'backend') ?? 'native') as 'native' | 'js', seed },
    );
  const steps = num(f, 'steps') ?? resumed?.steps ?? SERIES_TRAIN_DEFAULTS.steps;
  if (resumed && resumed.state.step >= steps) {
    throw new ConfigError(
      `${resumePath} has already trained ${resumed.state.step} of --steps ${steps}; give a larger total --steps to continue`,
    );
  }
  const seconds = num(f, 'seconds');
  const bar = json ? null : new ProgressBar();
  const c = model.config;
  bar?.log(
    `train series: ${dataLabel(source)}, ${series.length.toLocaleString('en-US')} steps × ${series.dim} (${series.columns.join(', ')}); ` +
      `train ${sp.train.length}, valid ${sp.valid.length}, test ${sp.test.length}; ${c.cell.toUpperCase()} ${c.hidden} × ${c.layers}, ` +
      `${c.likelihood === 'mdn' ? `MDN K=${c.components}` : 'Gaussian'}` +
      `${c.predictAhead > 1 ? `, predicting ${c.predictAhead} steps ahead (loss summed over the heads)` : ''}` +
      `${c.outputs === 'last' ? ', loss on the last step of each window' : ''}, ${model.backend.kind} backend`,
  );
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.once('SIGINT', onSigint);
  const onProgress = (p: SeriesTrainProgress) => {
    if (json) {
      emit({ type: 'progress', ...p, valNll: p.valNll ?? null, valNllAhead: p.valNllAhead ?? null });
      return;
    }
    const byTime = seconds !== undefined && seconds > 0;
    const val = p.valNll !== undefined ? ` · valid ${p.valNll.toFixed(3)} nats/step` : '';
    bar?.update(
      byTime ? p.elapsedSec / (seconds as number) : p.step / steps,
      `${p.step}/${steps}`,
      `loss ${p.loss.toFixed(3)}${val} · ${Math.round(p.stepsPerSec).toLocaleString('en-US')} steps/s · ETA ${formatDuration(p.etaSec)}`,
    );
  };
  const record = { ...source, test: TEST_FRACTION, valid: VALID_FRACTION, seed };
  let summary: Awaited<ReturnType<SeriesModel['fit']>>;
  try {
    summary = await model.fit(sp, {
      ...(resumed?.options ?? {
        batchSize: num(f, 'batch'),
        seqLen: num(f, 'seq'),
        lr: num(f, 'lr'),
        valEvery: num(f, 'val-every'),
      }),
      steps,
      seconds,
      seed,
      resume: resumed?.state,
      signal: stop.signal,
      onProgress,
      checkpoint: { path: out },
      meta: record,
    });
  } finally {
    process.off('SIGINT', onSigint);
    bar?.end();
  }
  const test = await testNll(model, sp, out);
  const result = {
    steps: summary.steps,
    trainLoss: summary.trainLoss,
    valNll: Number.isFinite(summary.valNll) ? summary.valNll : null,
    testNll: test.nll,
    testSteps: test.steps,
    predictAhead: c.predictAhead,
    outputs: c.outputs,
    testNllAhead: test.nllAhead,
    valNllAhead: summary.valNllAhead,
    ...baselineFields(baselines),
    out,
    elapsedSec: summary.elapsedSec,
    stepsPerSec: summary.stepsPerSec,
    stoppedEarly: summary.aborted || summary.outOfTime,
    data: source.data,
    ...(source.mote !== undefined ? { mote: source.mote } : {}),
    columns: series.columns,
    likelihood: c.likelihood,
    ...(c.components !== undefined ? { components: c.components } : {}),
    cell: c.cell,
    hidden: c.hidden,
    layers: c.layers,
    input: c.input,
    resolution: model.resolution,
    backend: model.backend.kind,
  };
  if (json) {
    emit({ type: 'summary', ...result });
    return;
  }
  const how = summary.aborted
    ? `interrupted at step ${summary.steps}`
    : summary.outOfTime
      ? `time budget spent at step ${summary.steps}`
      : `done: ${summary.steps} steps`;
  console.log(
    `\n${how} in ${formatDuration(summary.elapsedSec)}; train loss ${summary.trainLoss.toFixed(3)} nats/step (normalised increments)`,
  );
  console.log(
    `test NLL ${test.nll.toFixed(3)} nats/step over ${test.steps} steps (original units); baselines: random walk ${baselines.randomWalk.toFixed(3)}, AR(1) ${baselines.ar1.toFixed(3)}`,
  );
  aheadLine(test.nllAhead);
  console.log(`saved ${out}\nmore: arflow sample ${out} --steps 200 --out samples.png`);
}

/** The data a checkpoint was trained on, from its training record; ConfigError when it has none. */
function recordedSource(model: SeriesModel, path: string, f: Flags): DataSource {
  const info = model.trainInfo ?? {};
  const data = typeof info.data === 'string' ? info.data : undefined;
  if (data === undefined && str(f, 'data') === undefined) {
    throw new ConfigError(`${path} does not record its data: give --data`);
  }
  const mote = typeof info.mote === 'number' ? (info.mote as MoteId) : undefined;
  return { data: data ?? 'sensors', mote };
}

/** Flags a resumed run takes from its checkpoint: giving one with --resume is refused. */
const RECORDED_SERIES_FLAGS = [
  'data',
  'mote',
  'likelihood',
  'components',
  'cell',
  'hidden',
  'layers',
  'input',
  'predict-ahead',
  'outputs',
  'seq',
  'batch',
  'lr',
  'val-every',
  'seed',
  'backend',
];

/** A run continued from `path`: its model, optimizer and batch state, data and settings. */
function resumeSeries(path: string, f: Flags) {
  const given = RECORDED_SERIES_FLAGS.filter((k) => f[k] !== undefined);
  if (given.length) {
    throw new ConfigError(
      `--${given[0]} is taken from ${path} when resuming; drop it (--steps, --seconds, --out and --json apply)`,
    );
  }
  const model = SeriesModel.load(path);
  const state = model.resumeState();
  if (state === null) {
    throw new ConfigError(`${path} holds no training state: it was not saved by arflow train series`);
  }
  const { steps, seconds: _seconds, ...options } = (state.options ?? {}) as SeriesTrainOptions & { steps?: number };
  const seed = typeof state.seed === 'number' ? state.seed : 0;
  return { model, state, options, seed, steps: Number.isInteger(steps) ? (steps as number) : undefined };
}

/** `series` checked to fit `model`: the same number of variables. */
function checkDim(model: SeriesModel, series: Series, path: string): void {
  if (series.dim !== model.config.dim) {
    throw new ConfigError(
      `${series.name} has ${series.dim} variable(s) per step, but ${path} models ${model.config.dim} (${model.columns.join(', ')})`,
    );
  }
}

export async function cmdEvalSeries(path: string, argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, EVAL_SERIES_FLAGS);
  if (f.help) {
    console.log(
      helpText(
        'usage: arflow eval SERIES.safetensors [options]\n\nTest NLL (nats per step, original units) and the baselines.',
        EVAL_SERIES_FLAGS,
      ),
    );
    return;
  }
  if (positional.length !== 1) throw new ConfigError('arflow eval needs exactly one checkpoint FILE');
  intFlag(f, 'mote', 1, 4);
  const model = SeriesModel.load(path);
  const source = sourceOf(f, recordedSource(model, path, f));
  const series = loadSource(source);
  checkDim(model, series, path);
  const sp = split(series);
  const baselines = baselineNll(sp);
  const test = await testNll(model, sp, path);
  const result = {
    testNll: test.nll,
    testSteps: test.steps,
    predictAhead: model.config.predictAhead,
    testNllAhead: test.nllAhead,
    ...baselineFields(baselines),
    data: source.data,
    ...(source.mote !== undefined ? { mote: source.mote } : {}),
    likelihood: model.config.likelihood,
  };
  if (f.json) {
    emit({ type: 'summary', ...result });
    return;
  }
  console.log(
    `${dataLabel(source)}, test split (${test.steps} steps): ${test.nll.toFixed(4)} nats/step; baselines: random walk ${baselines.randomWalk.toFixed(4)}, AR(1) ${baselines.ar1.toFixed(4)}`,
  );
  aheadLine(test.nllAhead);
}

/** A model predicting n ahead: the test NLL of each further head (of its increment, original units). */
function aheadLine(nllAhead: number[]): void {
  if (nllAhead.length < 2) return;
  console.log(
    `  heads further ahead (nats/step of the increment k steps on): ${nllAhead
      .slice(1)
      .map((v, i) => `${i + 2} ahead ${v.toFixed(3)}`)
      .join(', ')}`,
  );
}

/** At most this many continuations in one picture (distinct colours). */
const MAX_SAMPLE_N = 20;

export async function cmdSampleSeries(path: string, argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, SAMPLE_SERIES_FLAGS);
  if (f.help) {
    console.log(
      helpText(
        'usage: arflow sample SERIES.safetensors --steps N --out plot.png [options]\n\nSampled continuations (colours) of the real series after its training and validation steps, over the real continuation (black), one panel per variable.',
        SAMPLE_SERIES_FLAGS,
      ),
    );
    return;
  }
  if (positional.length !== 1) throw new ConfigError('arflow sample needs exactly one checkpoint FILE');
  const steps = intFlag(f, 'steps', 1, 1_000_000) ?? 200;
  const n = intFlag(f, 'n', 1, MAX_SAMPLE_N) ?? 3;
  const seed = intFlag(f, 'seed', 0) ?? 0;
  const temperature = positiveFlag(f, 'temperature') ?? 1;
  const shown = intFlag(f, 'context', 1, 1_000_000) ?? steps;
  const out = str(f, 'out') ?? join(dirname(path), `${parse(path).name}-samples.png`);
  checkPicturePath(out, '--out', [path]);
  const model = SeriesModel.load(path);
  const source = sourceOf({}, recordedSource(model, path, {}));
  const series = loadSource(source);
  checkDim(model, series, path);
  const sp = split(series);
  const D = series.dim;
  const context = new Float64Array([...sp.train.values, ...sp.valid.values]);
  const t0 = performance.now();
  const samples = model.sample({ context, steps, n, seed, temperature });
  const sec = (performance.now() - t0) / 1000;
  const c = context.length / D;
  const before = Math.min(shown, c);
  const real = Math.min(steps, sp.test.length);
  const panels = Array.from({ length: D }, (_, d) => {
    const truth = new Float64Array(before + real);
    for (let t = 0; t < before; t++) truth[t] = context[(c - before + t) * D + d];
    for (let t = 0; t < real; t++) truth[before + t] = sp.test.values[t * D + d];
    const lines: PlotLine[] = samples.map((s, k) => ({
      from: before,
      values: Float64Array.from({ length: steps }, (_, t) => s[t * D + d]),
      color: PALETTE[k % PALETTE.length],
      thick: false,
    }));
    // The real series last, on top of the samples.
    lines.push({ from: 0, values: truth, color: [0, 0, 0], thick: true });
    return { lines, length: before + steps, marker: before };
  });
  const { width, height, pixels } = drawPanels(panels);
  savePicture(out, width, height, pixels, 3);
  const result = {
    out,
    n,
    steps,
    seed,
    temperature,
    contextSteps: before,
    realSteps: real,
    data: source.data,
    ...(source.mote !== undefined ? { mote: source.mote } : {}),
    columns: model.columns,
    stepsPerSec: sec > 0 ? (n * steps) / sec : null,
  };
  if (f.json) emit({ type: 'summary', ...result });
  else
    console.log(
      `${n} continuation(s) of ${steps} steps after ${dataLabel(source)}'s first ${c} steps → ${out} (${basename(path)})`,
    );
}

// ---- a small line-plot rasteriser ----------------------------------------------------------------

type Rgb = [number, number, number];

/** Distinct colours for the samples (Tableau 10 without its grey). */
const PALETTE: Rgb[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [188, 189, 34],
  [23, 190, 207],
];

interface PlotLine {
  /** x index of `values[0]`. */
  from: number;
  values: Float64Array;
  color: Rgb;
  thick: boolean;
}

interface Panel {
  lines: PlotLine[];
  /** x positions 0 … length − 1. */
  length: number;
  /** x position of a dashed vertical line (where the real context ends). */
  marker: number;
}

const PANEL_W = 900;
const PANEL_H = 220;
const MARGIN = 12;

/**
 * One panel per variable, stacked: a frame, a dashed line where the context ends, every line scaled to
 * the panel's own range of values (padded 5 %). Returns RGB pixels.
 */
function drawPanels(panels: Panel[]): { width: number; height: number; pixels: Uint8Array } {
  const width = PANEL_W + 2 * MARGIN;
  const height = panels.length * (PANEL_H + MARGIN) + MARGIN;
  const pixels = new Uint8Array(width * height * 3).fill(255);
  const put = (x: number, y: number, c: Rgb) => {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    const i = (y * width + x) * 3;
    pixels[i] = c[0];
    pixels[i + 1] = c[1];
    pixels[i + 2] = c[2];
  };
  panels.forEach((p, k) => {
    const top = MARGIN + k * (PANEL_H + MARGIN);
    let lo = Infinity;
    let hi = -Infinity;
    for (const l of p.lines) {
      for (const v of l.values) {
        if (Number.isFinite(v)) {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
      }
    }
    if (!(hi > lo)) [lo, hi] = [lo - 1, lo + 1];
    const pad = 0.05 * (hi - lo);
    [lo, hi] = [lo - pad, hi + pad];
    const xOf = (t: number) => MARGIN + Math.round((t / Math.max(1, p.length - 1)) * (PANEL_W - 1));
    const yOf = (v: number) => top + Math.round(((hi - v) / (hi - lo)) * (PANEL_H - 1));
    const grey: Rgb = [190, 190, 190];
    for (let x = MARGIN; x < MARGIN + PANEL_W; x++) {
      put(x, top, grey);
      put(x, top + PANEL_H - 1, grey);
    }
    for (let y = top; y < top + PANEL_H; y++) {
      put(MARGIN, y, grey);
      put(MARGIN + PANEL_W - 1, y, grey);
      if ((y - top) % 6 < 3) put(xOf(p.marker), y, grey);
    }
    for (const l of p.lines) {
      for (let i = 1; i < l.values.length; i++) {
        const [a, b] = [l.values[i - 1], l.values[i]];
        if (!Number.isFinite(a) || !Number.isFinite(b)) continue;
        segment(xOf(l.from + i - 1), yOf(a), xOf(l.from + i), yOf(b), (x, y) => {
          put(x, y, l.color);
          if (l.thick) put(x, y + 1, l.color);
        });
      }
    }
  });
  return { width, height, pixels };
}

/** Bresenham's line from (x0, y0) to (x1, y1), both ends included. */
