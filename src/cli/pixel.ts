/**
 * `arflow train pixel`, `arflow complete`, and `arflow sample` / `arflow eval` of Pixel-RNN checkpoints
 * (kind 'pixel-rnn'): the Row LSTM / Row GRU of `src/models/pixel-rnn.ts` on Fashion-MNIST, 8-bit
 * (bits/dim) or binarised (nats/image), beside the independent per-pixel baseline. Output conventions
 * as in main.ts (`--json`: progress lines, then one summary; errors by main's handler).
 *
 * Wiring (main.ts): `train pixel` → `cmdTrainPixel(rest)`; `complete FILE` → `cmdComplete`; a
 * checkpoint whose kind is {@link PIXEL_KIND} → `cmdSamplePixel` / `cmdEvalPixel`.
 */
import { dirname, join, parse } from 'node:path';
import type { PixelCell } from '../backend/pixel-types.js';
import { FASHION_MNIST_CLASSES, loadFashionMnist } from '../data/fashion-mnist.js';
import {
  BINARIZE_TEST_SEED,
  BINARIZE_TRAIN_SEED,
  binarizeImages,
  fitPixelBaseline,
  pixelBaselineNll,
} from '../data/pixel-data.js';
import { ConfigError, DataError, DivergenceError } from '../errors.js';
import { DEFAULT_PIXEL_RNN, PIXEL_KIND, PixelRNN } from '../models/pixel-rnn.js';
import type { FlowTrainProgress } from '../train/flow-trainer.js';
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
import { checkPicturePath, saveGrid } from './flownet.js';
import { formatDuration, ProgressBar } from './progress.js';

export { PIXEL_KIND };

const CLASSES = FASHION_MNIST_CLASSES.length;
const TEST_IMAGES = 10_000;
/** `--steps` of a run given only `--seconds`: more than any budget reaches. */
const UNBOUNDED_STEPS = 1_000_000_000;
/** Defaults of the training loop that differ from the flows'. */
const PIXEL_DEFAULTS = { steps: 500, batchSize: 16, lr: 2e-3 };

export const PIXEL_TRAIN_FLAGS: Record<string, FlagSpec> = {
  data: { type: 'string', help: 'the images: fashion-mnist (default)', choices: ['fashion-mnist'] },
  binarize: {
    type: 'boolean',
    help: 'binarised images and a Bernoulli head (nats/image); default 8-bit with a 256-way softmax (bits/dim)',
  },
  cell: { type: 'string', help: 'row cell: lstm (the paper’s Row LSTM, default) or gru', choices: ['lstm', 'gru'] },
  layers: { type: 'int', help: `row layers (default ${DEFAULT_PIXEL_RNN.layers})` },
  hidden: { type: 'int', help: `feature maps per layer (default ${DEFAULT_PIXEL_RNN.hidden})` },
  conditional: { type: 'boolean', help: 'class-conditional: a learned bias per class in every row layer' },
  steps: {
    type: 'int',
    help: `training steps (default ${PIXEL_DEFAULTS.steps}; with --seconds alone, until the time is spent)`,
  },
  seconds: { type: 'number', help: 'stop after this many seconds of training (default 0 = no limit)' },
  batch: { type: 'int', help: `images per step (default ${PIXEL_DEFAULTS.batchSize})` },
  lr: { type: 'number', help: `peak learning rate, cosine schedule (default ${PIXEL_DEFAULTS.lr})` },
  'train-n': { type: 'int', help: 'train on the first N training images (default all 60000)' },
  'test-n': { type: 'int', help: `score the first N test images (default all ${TEST_IMAGES})` },
  samples: { type: 'int', help: 'images in the samples picture written after training (default 16, 0 = none)' },
  png: { type: 'string', help: 'the samples picture (default: the checkpoint path with -samples.png)' },
  seed: { type: 'int', help: 'seed of initialisation, minibatches and samples (default 0)' },
  backend: { type: 'string', help: 'native (default) or js (pure TypeScript, slow)', choices: ['native', 'js'] },
  out: { type: 'string', help: 'checkpoint path (default pixel-rnn.safetensors)' },
  resume: {
    type: 'string',
    help: 'continue the run saved in this checkpoint (model, data and settings from it; --steps is the total)',
  },
  json: JSON_FLAG,
  help: HELP_FLAG,
};

export const SAMPLE_PIXEL_FLAGS: Record<string, FlagSpec> = {
  n: { type: 'int', help: 'images (default 16; a conditional model without --label: this many per class)' },
  label: { type: 'int', help: `class 0-${CLASSES - 1} of every image (conditional models)` },
  seed: { type: 'int', help: 'sampling seed (default 0)' },
  out: { type: 'string', help: 'the picture, a PNG (default: the checkpoint path with -samples.png)' },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

export const COMPLETE_FLAGS: Record<string, FlagSpec> = {
  n: { type: 'int', help: 'test images whose top halves are given (default 8)' },
  completions: { type: 'int', help: 'sampled bottom halves per image (default 5)' },
  rows: { type: 'int', help: 'given rows at the top (default half the image)' },
  seed: { type: 'int', help: 'sampling seed (default 0)' },
  out: { type: 'string', help: 'the picture, a PNG (default: the checkpoint path with -complete.png)' },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

export const EVAL_PIXEL_FLAGS: Record<string, FlagSpec> = {
  'test-n': { type: 'int', help: `score the first N test images (default all ${TEST_IMAGES})` },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

const TRAIN_USAGE = `usage: arflow train pixel [options]

Trains a Pixel-RNN (van den Oord et al. 2016): p(x) = Π p(x_i | x_<i) over the pixels of a Fashion-MNIST
image in raster order, with the paper's Row LSTM (or a Row GRU): a 7×7 mask-A convolution, row layers with
1×3 mask-B input-to-state and 1×3 state-to-state convolutions and residual connections, and a 1×1 head.
8-bit images get a 256-way softmax per pixel (test bits/dim); --binarize gives a Bernoulli per pixel on
images binarised with a fixed seed (test nats/image). The independent per-pixel distribution fitted on
the training images is the baseline. Ctrl-C stops training and still saves the checkpoint.`;

/** What a run records about its data, in its checkpoint. */
interface PixelData {
  data: 'fashion-mnist';
  binarize: boolean;
  trainN?: number;
  testN?: number;
}

/** The images of one split as the model's head takes them (binarised with the split's fixed seed). */
function loadSplit(split: 'train' | 'test', d: PixelData, limit: number | undefined) {
  const { images, labels, n } = loadFashionMnist(split, { limit });
  const seed = split === 'test' ? BINARIZE_TEST_SEED : BINARIZE_TRAIN_SEED;
  return { images: d.binarize ? binarizeImages(images, seed) : images, labels, n };
}

/** The test NLL with both units, refusing a non-finite one as a DivergenceError. */
async function testScore(model: PixelRNN, test: { images: Uint8Array; labels: Uint8Array }, out: string) {
  try {
    return await model.evaluate(test.images, model.config.classes ? test.labels : undefined);
  } catch (e) {
    if (e instanceof DataError && /NLL is/.test(e.message)) {
      throw new DivergenceError(`${e.message}; ${out} is likely unusable (try a lower --lr)`);
    }
    throw e;
  }
}

/** Both units of a likelihood: nats per image and bits per dimension. */
function units(natsPerImage: number, pixels: number) {
  return { nats: natsPerImage, bpd: natsPerImage / (pixels * Math.LN2) };
}

/**
 * A samples picture: `n` images tiled `columns` to a row, gray dark on white as Fashion-MNIST's ink;
 * binarised images drawn black and white.
 */
function savePixelGrid(path: string, model: PixelRNN, images: Uint8Array, n: number, columns: number): void {
  const { rows, cols, output } = model.config;
  const px = output === 'bernoulli' ? images.map((v) => v * 255) : images;
  saveGrid(path, px, n, [1, rows, cols], columns, 2);
}

/** Samples of a model: one row per class for a conditional model without a label. */
async function drawSamples(model: PixelRNN, n: number, seed: number, label: number | undefined) {
  const K = model.config.classes;
  if (K !== undefined && label === undefined) {
    const labels = Array.from({ length: K * n }, (_, i) => Math.floor(i / n));
    return { images: await model.sample({ n: K * n, seed, label: labels }), count: K * n, columns: n };
  }
  return { images: await model.sample({ n, seed, label }), count: n, columns: Math.ceil(Math.sqrt(n)) };
}

/** Flags a resumed run takes from its checkpoint: giving one with --resume is refused. */
const RECORDED_FLAGS = [
  'data',
  'binarize',
  'cell',
  'layers',
  'hidden',
  'conditional',
  'batch',
  'lr',
  'train-n',
  'test-n',
  'seed',
  'backend',
];

function checkTrainFlags(f: Flags): void {
  for (const k of ['layers', 'hidden', 'steps', 'batch', 'train-n', 'test-n']) intFlag(f, k, 1);
  intFlag(f, 'samples', 0, 1000);
  intFlag(f, 'seed', 0);
  positiveFlag(f, 'lr');
  positiveFlag(f, 'seconds', true);
}

export async function cmdTrainPixel(argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, PIXEL_TRAIN_FLAGS);
  if (f.help) {
    console.log(helpText(TRAIN_USAGE, PIXEL_TRAIN_FLAGS));
    return;
  }
  if (positional.length) throw new ConfigError(`unexpected argument ${JSON.stringify(positional[0])}`);
  checkTrainFlags(f);
  const json = Boolean(f.json);
  const resumePath = str(f, 'resume');
  if (resumePath !== undefined) {
    const given = RECORDED_FLAGS.filter((k) => f[k] !== undefined);
    if (given.length) {
      throw new ConfigError(
        `--${given[0]} is taken from ${resumePath} when resuming; drop it (--steps, --seconds, --out, --png, --samples and --json apply)`,
      );
    }
  }
  const resumed = resumePath === undefined ? null : PixelRNN.load(resumePath);
  const info = resumed?.trainInfo ?? null;
  if (resumed && (info === null || typeof info.step !== 'number')) {
    throw new ConfigError(`${resumePath} holds no training state: it was not saved by arflow train pixel`);
  }
  const recorded = (info?.options ?? {}) as { batchSize?: number; lr?: number; steps?: number };
  const d: PixelData = resumed
    ? {
        data: 'fashion-mnist',
        binarize: Boolean(info?.binarize),
        trainN: info?.trainN as number | undefined,
        testN: info?.testN as number | undefined,
      }
    : {
        data: 'fashion-mnist',
        binarize: Boolean(f.binarize),
        trainN: num(f, 'train-n'),
        testN: num(f, 'test-n'),
      };
  const seed = resumed ? ((info?.seed as number | undefined) ?? 0) : (num(f, 'seed') ?? 0);
  const out = str(f, 'out') ?? resumePath ?? 'pixel-rnn.safetensors';
  checkOutputPath(out, '--out');
  const nSamples = num(f, 'samples') ?? 16;
  const png = str(f, 'png') ?? join(dirname(out), `${parse(out).name}-samples.png`);
  if (nSamples > 0) checkPicturePath(png, '--png', [out]);
  // A time budget without --steps runs until the budget is spent.
  const budgetOnly = num(f, 'seconds') !== undefined && num(f, 'seconds') !== 0 && num(f, 'steps') === undefined;
  const steps = num(f, 'steps') ?? recorded.steps ?? (budgetOnly ? UNBOUNDED_STEPS : PIXEL_DEFAULTS.steps);
  const startStep = resumed ? (info?.step as number) : 0;
  if (startStep >= steps) {
    throw new ConfigError(
      `${resumePath} has already trained ${startStep} of --steps ${steps}; give a larger total --steps to continue`,
    );
  }
  const train = loadSplit('train', d, d.trainN);
  const test = loadSplit('test', d, d.testN);
  const model =
    resumed ??
    PixelRNN.create(
      {
        cell: str(f, 'cell') as PixelCell | undefined,
        layers: num(f, 'layers'),
        hidden: num(f, 'hidden'),
        output: d.binarize ? 'bernoulli' : 'categorical',
        classes: f.conditional ? CLASSES : undefined,
      },
      { backend: (str(f, 'backend') ?? 'native') as 'native' | 'js', seed },
    );
  const c = model.config;
  const P = c.rows * c.cols;
  const baseline = pixelBaselineNll(fitPixelBaseline(train.images, P, c.output), test.images);
  const batchSize = recorded.batchSize ?? num(f, 'batch') ?? PIXEL_DEFAULTS.batchSize;
  const lr = recorded.lr ?? num(f, 'lr') ?? PIXEL_DEFAULTS.lr;
  const seconds = num(f, 'seconds');
  const bar = json ? null : new ProgressBar();
  bar?.log(
    `train pixel: Fashion-MNIST ${d.binarize ? 'binarised' : '8-bit'}, ${train.n.toLocaleString('en-US')} train / ${test.n.toLocaleString('en-US')} test images; ` +
      `Row ${c.cell.toUpperCase()} ${c.hidden} × ${c.layers}${c.classes ? `, ${c.classes} classes` : ''}, ${model.backend.kind} backend` +
      (resumed ? `; resuming at step ${startStep}` : ''),
  );
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.once('SIGINT', onSigint);
  const onProgress = (p: FlowTrainProgress) => {
    const pixelsPerSec = p.samplesPerSec * P;
    if (json) {
      emit({ type: 'progress', ...p, pixelsPerSec, valNll: p.valNll ?? null });
      return;
    }
    const byTime = seconds !== undefined && seconds > 0;
    const loss =
      c.output === 'categorical'
        ? `${(p.loss / (P * Math.LN2)).toFixed(3)} bits/dim`
        : `${p.loss.toFixed(1)} nats/image`;
    bar?.update(
      byTime ? p.trainSec / (seconds as number) : p.step / steps,
      steps === UNBOUNDED_STEPS ? `step ${p.step}` : `${p.step}/${steps}`,
      `loss ${loss} · ${Math.round(pixelsPerSec).toLocaleString('en-US')} pixels/s · ETA ${formatDuration(byTime ? (seconds as number) - p.trainSec : p.etaSec)}`,
    );
  };
  const options = { batchSize, lr, steps };
  let summary: Awaited<ReturnType<PixelRNN['fit']>>;
  try {
    summary = await model.fit(train.images, {
      ...options,
      seconds,
      seed,
      labels: c.classes ? train.labels : undefined,
      resume: resumed ? { step: startStep, trainSec: (info?.trainSec as number | undefined) ?? 0 } : undefined,
      signal: stop.signal,
      onProgress,
    });
  } finally {
    process.off('SIGINT', onSigint);
    bar?.end();
  }
  // Saved before scoring: an interrupted or failing evaluation never loses the trained model.
  await model.save(out, {
    optimizer: true,
    train: { ...d, seed, step: summary.steps, trainSec: summary.trainSec, options },
  });
  const score = await testScore(model, test, out);
  const base = units(baseline, P);
  let samplesOut: string | null = null;
  if (nSamples > 0) {
    const s = await drawSamples(model, nSamples, seed, undefined);
    savePixelGrid(png, model, s.images, s.count, s.columns);
    samplesOut = png;
  }
  const result = {
    steps: summary.steps,
    trainLoss: summary.trainLoss,
    testNll: score.natsPerImage,
    testBpd: score.bitsPerDim,
    baselineNll: base.nats,
    baselineBpd: base.bpd,
    testImages: score.n,
    out,
    png: samplesOut,
    binarize: d.binarize,
    cell: c.cell,
    hidden: c.hidden,
    layers: c.layers,
    conditional: c.classes !== undefined,
    pixelsPerSec: summary.samplesPerSec * P,
    trainSec: summary.trainSec,
    elapsedSec: summary.elapsedSec,
    stoppedEarly: summary.aborted || summary.outOfTime,
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
  console.log(`\n${how} in ${formatDuration(summary.elapsedSec)}`);
  console.log(
    `test: ${score.natsPerImage.toFixed(2)} nats/image = ${score.bitsPerDim.toFixed(4)} bits/dim over ${score.n} images; ` +
      `per-pixel baseline ${base.nats.toFixed(2)} nats/image = ${base.bpd.toFixed(4)} bits/dim`,
  );
  console.log(
    `saved ${out}${samplesOut ? ` and ${samplesOut}` : ''}\nmore: arflow complete ${out} --out completions.png`,
  );
}

/** The data a checkpoint was trained and scored on (its record), binarised as it was. */
function recordedData(model: PixelRNN): PixelData {
  const info = model.trainInfo ?? {};
  return {
    data: 'fashion-mnist',
    binarize: model.config.output === 'bernoulli',
    trainN: typeof info.trainN === 'number' ? info.trainN : undefined,
    testN: typeof info.testN === 'number' ? info.testN : undefined,
  };
}

export async function cmdEvalPixel(path: string, argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, EVAL_PIXEL_FLAGS);
  if (f.help) {
    console.log(
      helpText(
        'usage: arflow eval PIXEL.safetensors [options]\n\nTest NLL of a Pixel-RNN (nats/image and bits/dim) and the per-pixel baseline.',
        EVAL_PIXEL_FLAGS,
      ),
    );
    return;
  }
  if (positional.length !== 1) throw new ConfigError('arflow eval needs exactly one checkpoint FILE');
  intFlag(f, 'test-n', 1);
  const model = PixelRNN.load(path);
  const d = recordedData(model);
  const testN = num(f, 'test-n') ?? d.testN;
  const test = loadSplit('test', d, testN);
  // The baseline is fitted on the training images the run used, as `train pixel` fitted it.
  const train = loadSplit('train', d, d.trainN);
  const P = model.pixels;
  const base = units(pixelBaselineNll(fitPixelBaseline(train.images, P, model.config.output), test.images), P);
  const score = await testScore(model, test, path);
  const result = {
    testNll: score.natsPerImage,
    testBpd: score.bitsPerDim,
    baselineNll: base.nats,
    baselineBpd: base.bpd,
    testImages: score.n,
    binarize: d.binarize,
  };
  if (f.json) {
    emit({ type: 'summary', ...result });
    return;
  }
  console.log(
    `Fashion-MNIST test (${score.n} images${d.binarize ? ', binarised' : ''}): ${score.natsPerImage.toFixed(2)} nats/image = ${score.bitsPerDim.toFixed(4)} bits/dim; ` +
      `per-pixel baseline ${base.nats.toFixed(2)} nats/image = ${base.bpd.toFixed(4)} bits/dim`,
  );
}

export async function cmdSamplePixel(path: string, argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, SAMPLE_PIXEL_FLAGS);
  if (f.help) {
    console.log(
      helpText(
        'usage: arflow sample PIXEL.safetensors --n N [--label C] --out grid.png\n\nImages drawn pixel by pixel from a Pixel-RNN; a conditional model without --label draws one row per class.',
        SAMPLE_PIXEL_FLAGS,
      ),
    );
    return;
  }
  if (positional.length !== 1) throw new ConfigError('arflow sample needs exactly one checkpoint FILE');
  const n = intFlag(f, 'n', 1, 1000) ?? 16;
  const label = intFlag(f, 'label', 0);
  const seed = intFlag(f, 'seed', 0) ?? 0;
  const out = str(f, 'out') ?? join(dirname(path), `${parse(path).name}-samples.png`);
  checkPicturePath(out, '--out', [path]);
  const model = PixelRNN.load(path);
  const K = model.config.classes;
  if (label !== undefined && K === undefined) {
    throw new ConfigError(`${path} is not class-conditional: --label does not apply`);
  }
  if (label !== undefined && K !== undefined && label >= K) {
    throw new ConfigError(`--label ${label} is not a class of ${path} (0-${K - 1})`);
  }
  const t0 = performance.now();
  const s = await drawSamples(model, n, seed, label);
  const sec = (performance.now() - t0) / 1000;
  savePixelGrid(out, model, s.images, s.count, s.columns);
  const result = { out, n: s.count, seed, label: label ?? null, imagesPerSec: s.count / sec };
  if (f.json) emit({ type: 'summary', ...result });
  else console.log(`wrote ${s.count} samples to ${out} (${(s.count / sec).toFixed(1)} images/s)`);
}

export async function cmdComplete(argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, COMPLETE_FLAGS);
  if (f.help) {
    console.log(
      helpText(
        'usage: arflow complete PIXEL.safetensors [--n N] [--completions K] --out grid.png\n\n' +
          'The top halves of test images given, the bottom halves sampled: each row shows the original, then K completions.\n' +
          'A Pixel-RNN can only complete downwards (raster order): the rows above are all it conditions on.',
        COMPLETE_FLAGS,
      ),
    );
    return;
  }
  if (positional.length !== 1) throw new ConfigError('arflow complete needs exactly one checkpoint FILE');
  const path = positional[0];
  const n = intFlag(f, 'n', 1, 100) ?? 8;
  const k = intFlag(f, 'completions', 1, 20) ?? 5;
  const seed = intFlag(f, 'seed', 0) ?? 0;
  const out = str(f, 'out') ?? join(dirname(path), `${parse(path).name}-complete.png`);
  checkPicturePath(out, '--out', [path]);
  const model = PixelRNN.load(path);
  const { rows: R, cols: C } = model.config;
  const given = intFlag(f, 'rows', 0, R) ?? Math.floor(R / 2);
  const d = recordedData(model);
  const test = loadSplit('test', d, n);
  if (test.n < n) throw new DataError(`only ${test.n} test images: lower --n`);
  const P = R * C;
  // Row r of the picture: original r, then k completions of it.
  const tops = new Uint8Array(n * k * P);
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) {
      tops.set(test.images.subarray(i * P, (i + 1) * P), (i * k + j) * P);
      labels.push(test.labels[i]);
    }
  }
  const t0 = performance.now();
  const done = await model.sample({
    n: n * k,
    seed,
    label: model.config.classes ? labels : undefined,
    top: { rows: given, images: tops },
  });
  const sec = (performance.now() - t0) / 1000;
  const grid = new Uint8Array(n * (k + 1) * P);
  for (let i = 0; i < n; i++) {
    grid.set(test.images.subarray(i * P, (i + 1) * P), i * (k + 1) * P);
    for (let j = 0; j < k; j++)
      grid.set(done.subarray((i * k + j) * P, (i * k + j + 1) * P), (i * (k + 1) + 1 + j) * P);
  }
  savePixelGrid(out, model, grid, n * (k + 1), k + 1);
  const result = { out, n, completions: k, givenRows: given, seed, imagesPerSec: (n * k) / sec };
  if (f.json) emit({ type: 'summary', ...result });
  else
    console.log(
      `wrote ${out}: ${n} test images (first column) with ${k} completions each of their bottom ${R - given} rows`,
    );
}
