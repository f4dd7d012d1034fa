/**
 * `arflow train flow`, and `arflow sample` / `arflow eval` of Real NVP checkpoints: 2-D density
 * estimation on the toy densities of `src/flows/data2d.ts`, with a PNG of the learned density and
 * samples. Output conventions as in main.ts (`--json`: progress lines, one summary).
 */
import { dirname, join, parse } from 'node:path';
import { CheckpointError, ConfigError } from '../errors.js';
import { DENSITIES, sample2d } from '../flows/data2d.js';
import { readTrainInfo } from '../io/checkpoint.js';
import { heatmapRgb, scatterRgb } from '../io/png.js';
import { loadSafetensors, specialFileKind } from '../io/safetensors.js';
import { checkpointKind, DEFAULT_FLOW, FLOW_KIND, RealNVP } from '../models/flow.js';
import { Flow } from '../models/flownet.js';
import { FLOW_TRAIN_DEFAULTS } from '../train/flow-trainer.js';
import {
  checkOutputPath,
  type FlagSpec,
  type Flags,
  helpText,
  intFlag,
  parseArgs,
  positiveFlag,
  samePath,
  savePicture,
} from './args.js';
import {
  baselineFields,
  baselineText,
  checkPicturePath,
  checkpointSamples,
  evalFlowNet,
  evalPoints,
  FASHION_TEST_IMAGES,
  FASHION_TRAIN_IMAGES,
  FLOW_MODELS,
  FLOWNET_KIND,
  type FlowModelName,
  flowProgress,
  flowSpec,
  gaussianBaseline,
  MAX_POINTS,
  sampleFlowNet,
  sampleSettings,
  scoreAfterTraining,
  TEST_SEED_OFFSET,
  trainFlowNet,
} from './flownet.js';
import { formatDuration, ProgressBar } from './progress.js';

/** The densities `train flow --data` accepts. */
export const FLOW_DATA = ['moons', '8gaussians', 'checkerboard', 'pinwheel', 'rings'] as const;
/** What `train flow --data` accepts: the 2-D densities and Fashion-MNIST. */
export const TRAIN_FLOW_DATA = [...FLOW_DATA, 'fashion-mnist'] as const;

const JSON_FLAG: FlagSpec = { type: 'boolean', help: 'print one JSON object per line (progress, then a summary)' };
/** `--json` of `sample` and `eval`, which report no progress. */
const JSON_RESULT_FLAG: FlagSpec = { type: 'boolean', help: 'print the result (or the error) as one JSON object' };
const HELP_FLAG: FlagSpec = { type: 'boolean', help: 'show this help' };

export const TRAIN_FLOW_FLAGS: Record<string, FlagSpec> = {
  data: { type: 'string', help: `2-D density or fashion-mnist (default moons)`, choices: TRAIN_FLOW_DATA },
  model: {
    type: 'string',
    help: 'realnvp (vector MLP couplings; multi-scale ResNet on images), glow, nice, maf or iaf (default realnvp)',
    choices: FLOW_MODELS,
  },
  n: {
    type: 'int',
    help: 'training examples: points (default 20000, at most 10000000) or images (default and at most all 60000)',
  },
  'test-n': {
    type: 'int',
    help: 'held-out examples scored at the end: points (default 5000, at most 10000000) or images (2 to 10000, default 10000)',
  },
  steps: { type: 'int', help: 'training steps (default 2000)' },
  batch: { type: 'int', help: 'examples per minibatch (default 256 points, at most 1000000; 64 images, at most 4096)' },
  lr: { type: 'number', help: 'peak learning rate, cosine schedule (default 0.001)' },
  clip: { type: 'number', help: 'clip the global gradient norm (default 1; 100 for images; 0 = off)' },
  couplings: { type: 'int', help: 'realnvp on points: affine couplings (default 8)' },
  hidden: { type: 'int', help: 'MLP conditioner width (default 64 on points; nice 256, maf 1024 on images)' },
  depth: { type: 'int', help: 'hidden layers per MLP conditioner (default 2; nice on images 4)' },
  layers: { type: 'int', help: 'nice: couplings (default 4); maf/iaf: MADE layers (default 5)' },
  channels: { type: 'int', help: 'realnvp/glow on images: ResNet width of the conditioners (default 32)' },
  blocks: { type: 'int', help: 'realnvp/glow on images: residual blocks per ResNet conditioner (default 1)' },
  scales: { type: 'int', help: 'realnvp on images: scales (default 2)' },
  norm: {
    type: 'string',
    help: 'realnvp on images: layer after each coupling (default actnorm)',
    choices: ['actnorm', 'batchnorm', 'none'],
  },
  'conv-norm': {
    type: 'string',
    help: 'realnvp on images: normalisation inside the ResNet conditioners (default weight)',
    choices: ['weight', 'batch', 'none'],
  },
  levels: { type: 'int', help: 'glow: levels (default 2 on images, 1 on points)' },
  'flow-steps': {
    type: 'int',
    help: 'glow: steps (actnorm, 1x1 conv, coupling) per level (default 4 on images, 8 on points)',
  },
  conditional: { type: 'boolean', help: 'fashion-mnist: condition on the class label (samples: one row per class)' },
  temperature: { type: 'number', help: 'temperature (> 0) of the sample picture (default 0.7 images, 1 points)' },
  seed: { type: 'int', help: 'seed (≥ 0) of data, initialisation and minibatches (default 0)' },
  backend: {
    type: 'string',
    help: 'native or js, js for realnvp on points only (default: native when available)',
    choices: ['native', 'js'],
  },
  seconds: {
    type: 'number',
    help: "stop after this many seconds of training; the schedule follows the clock (default 0 = no limit; with --resume: the run's own budget, and a new one is a total counting the time spent)",
  },
  out: {
    type: 'string',
    help: 'checkpoint path, saved with the optimizer state (default flow-<data>[-<model>].safetensors; with --resume, that file)',
  },
  resume: {
    type: 'string',
    help: 'continue the run saved in this checkpoint: model, data, seed, settings and time budget come from it; --steps and --seconds count its steps and training time too (default: the totals it was started with)',
  },
  png: {
    type: 'string',
    help: 'density + samples picture, or the image sample grid (default: the checkpoint path with .png; images also write <png>-interp.png)',
  },
  json: JSON_FLAG,
  help: HELP_FLAG,
};

export const SAMPLE_FLOW_FLAGS: Record<string, FlagSpec> = {
  n: { type: 'int', help: 'points (default 5000) or images (default 64, at most 10000) to sample' },
  temperature: {
    type: 'number',
    help: 'standard deviation (> 0) of the base samples (default 1 points, 0.7 images)',
  },
  seed: { type: 'int', help: 'sampling seed, ≥ 0 (default 0)' },
  label: {
    type: 'int',
    help: 'class of every sample, for a class-conditional image flow (default: cycle through classes)',
  },
  out: {
    type: 'string',
    help: 'scatter plot or image grid PNG, never the checkpoint (default: the checkpoint path with -samples.png)',
  },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

export const EVAL_FLOW_FLAGS: Record<string, FlagSpec> = {
  data: {
    type: 'string',
    help: 'data to score: a 2-D density for a 2-D flow, fashion-mnist for an image flow (default: what it was trained on)',
    choices: TRAIN_FLOW_DATA,
  },
  n: {
    type: 'int',
    help: 'held-out points (default 5000, at most 10000000) or test images (default and at most all 10000)',
  },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

const TEST_N = 5000;
/** Held-out points scored for the progress lines of a 2-D Real NVP run (the first of the test set). */
const VAL_POINTS = 5000;

function emit(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const num = (f: Flags, k: string) => f[k] as number | undefined;
const str = (f: Flags, k: string) => f[k] as string | undefined;

function withExt(path: string, suffix: string): string {
  const p = parse(path);
  return join(dirname(path), `${p.name}${suffix}`);
}

type Extent = [number, number, number, number];

/** A square-ish box around the points, padded by 10 % of each side. */
function extentOf(points: Float32Array): Extent {
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < points.length; i += 2) {
    const x = points[i];
    const y = points[i + 1];
    if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
  }
  if (!(x1 > x0)) [x0, x1] = [-3, 3];
  if (!(y1 > y0)) [y0, y1] = [-3, 3];
  const px = 0.1 * (x1 - x0);
  const py = 0.1 * (y1 - y0);
  return [x0 - px, x1 + px, y0 - py, y1 + py];
}

/** Side-by-side RGB images of equal height with a white gap. */
function sideBySide(images: Uint8Array[], w: number, h: number, gap = 8): { width: number; pixels: Uint8Array } {
  const width = images.length * w + (images.length - 1) * gap;
  const pixels = new Uint8Array(width * h * 3).fill(255);
  images.forEach((img, k) => {
    const x0 = k * (w + gap);
    for (let r = 0; r < h; r++) pixels.set(img.subarray(r * w * 3, (r + 1) * w * 3), (r * width + x0) * 3);
  });
  return { width, pixels };
}

/** log p on a grid (clamped 10 nats below its maximum, for contrast) beside a scatter of samples. */
async function densityPng(
  model: { logProb(x: Float32Array): Promise<Float32Array> },
  path: string,
  extent: Extent,
  samples: Float32Array,
): Promise<void> {
  const W = 200;
  const H = 200;
  const [x0, x1, y0, y1] = extent;
  const grid = new Float32Array(W * H * 2);
  for (let r = 0; r < H; r++) {
    for (let c = 0; c < W; c++) {
      const i = r * W + c;
      grid[2 * i] = x0 + ((c + 0.5) / W) * (x1 - x0);
      grid[2 * i + 1] = y1 - ((r + 0.5) / H) * (y1 - y0);
    }
  }
  const lp = await model.logProb(grid);
  let max = -Infinity;
  for (const v of lp) if (Number.isFinite(v) && v > max) max = v;
  for (let i = 0; i < lp.length; i++) lp[i] = Math.max(lp[i], max - 10);
  const heat = heatmapRgb(lp, W, H);
  const scatter = scatterRgb(samples, W, H, extent);
  const { width, pixels } = sideBySide([heat, scatter], W, H);
  savePicture(path, width, H, pixels, 3);
}

function dataName(f: Flags, fallback: unknown): string {
  const name = str(f, 'data') ?? (typeof fallback === 'string' ? fallback : undefined);
  if (name === undefined) throw new ConfigError('give --data NAME: the checkpoint does not record its data set');
  if (!(FLOW_DATA as readonly string[]).includes(name)) {
    throw new ConfigError(`unknown data ${JSON.stringify(name)}: choose one of ${FLOW_DATA.join(', ')}`);
  }
  return name;
}

/** Architecture flags, the runs that use them and, for the message, which those are. */
const ARCH_FLAGS: Record<string, { uses: (model: FlowModelName, image: boolean) => boolean; for: string }> = {
  couplings: { uses: (m, img) => m === 'realnvp' && !img, for: 'realnvp on 2-D data' },
  hidden: {
    uses: (m, img) => !img || m === 'nice' || m === 'maf',
    for: 'every model on 2-D data, and nice or maf on images',
  },
  depth: {
    uses: (m, img) => !img || m === 'nice' || m === 'maf',
    for: 'every model on 2-D data, and nice or maf on images',
  },
  layers: { uses: (m) => m === 'nice' || m === 'maf' || m === 'iaf', for: 'nice, maf and iaf' },
  channels: { uses: (m, img) => img && (m === 'realnvp' || m === 'glow'), for: 'realnvp and glow on images' },
  blocks: { uses: (m, img) => img && (m === 'realnvp' || m === 'glow'), for: 'realnvp and glow on images' },
  scales: { uses: (m, img) => img && m === 'realnvp', for: 'realnvp on images' },
  norm: { uses: (m, img) => img && m === 'realnvp', for: 'realnvp on images' },
  'conv-norm': { uses: (m, img) => img && m === 'realnvp', for: 'realnvp on images' },
  levels: { uses: (m) => m === 'glow', for: 'glow' },
  'flow-steps': { uses: (m) => m === 'glow', for: 'glow' },
  conditional: { uses: (_m, img) => img, for: 'labelled data: --data fashion-mnist' },
};

/**
 * Every `train flow` flag checked before any data is loaded or any training starts: flags the run
 * would ignore, ranges (with the flag's name), and the output paths.
 */
function checkTrainFlags(
  f: Flags,
  model: FlowModelName,
  data: string,
  paths: { out: string; png: string; interp?: string },
) {
  const image = data === 'fashion-mnist';
  if (model === 'iaf' && image)
    throw new ConfigError(
      'IAF scores data with D sequential passes per layer (784 for Fashion-MNIST): train it on 2-D data, or use maf for images',
    );
  if (str(f, 'backend') === 'js' && (image || model !== 'realnvp'))
    throw new ConfigError(`--model ${model} and image data run on the native backend only`);
  for (const [flag, a] of Object.entries(ARCH_FLAGS)) {
    if (f[flag] !== undefined && !a.uses(model, image))
      throw new ConfigError(
        `--${flag} does not apply to --model ${model} on ${image ? 'fashion-mnist' : '2-D data'} (it would be ignored): it is for ${a.for}`,
      );
  }
  for (const flag of ['couplings', 'hidden', 'depth', 'layers', 'channels', 'scales', 'levels', 'flow-steps'])
    intFlag(f, flag, 1);
  intFlag(f, 'blocks', 0);
  intFlag(f, 'batch', 1, image ? 4096 : 1_000_000);
  positiveFlag(f, 'lr');
  positiveFlag(f, 'clip', true);
  positiveFlag(f, 'seconds', true);
  const seed = intFlag(f, 'seed', 0) ?? 0;
  const steps = intFlag(f, 'steps', 1) ?? 2000;
  const n = intFlag(f, 'n', 1, image ? FASHION_TRAIN_IMAGES : MAX_POINTS) ?? (image ? FASHION_TRAIN_IMAGES : 20000);
  const testN =
    intFlag(f, 'test-n', image ? 2 : 1, image ? FASHION_TEST_IMAGES : MAX_POINTS) ??
    (image ? FASHION_TEST_IMAGES : TEST_N);
  const temperature = positiveFlag(f, 'temperature') ?? (image ? 0.7 : 1);
  checkOutputPath(paths.out, '--out');
  // Without --png the picture's path is --out's with .png: say so rather than blame a --png never given.
  if (f.png === undefined && samePath(paths.png, paths.out))
    throw new ConfigError(
      `--out ${paths.out}: the picture would be written over the checkpoint; give --out a .safetensors name or set --png`,
    );
  checkPicturePath(paths.png, '--png', [paths.out]);
  if (paths.interp !== undefined) checkPicturePath(paths.interp, 'the interpolation picture', [paths.out, paths.png]);
  return { seed, steps, n, testN, temperature };
}

/** The facts of a run that `--resume` takes from its checkpoint, and flags that must agree with them. */
const RUN_FLAGS = ['data', 'model', 'n', 'seed', 'batch', 'lr', 'clip'] as const;

/**
 * What `train flow` records in a checkpoint's `train` metadata besides `seconds` and `trainSec` (which
 * checkpoints written before time budgets were recorded lack: their runs resume without one). A file
 * saved through the API without them holds no run's settings to continue with.
 */
const RECORDED = ['data', 'model', 'n', 'seed', 'steps', 'totalSteps', 'batch', 'lr', 'clip', 'testN', 'arch'] as const;

/** A run to continue: its flow and how far it got, and the flags with the run's own settings filled in. */
interface Resumed {
  from: string;
  step: number;
  /** The run's time budget in seconds (0: none, the schedule follows the steps). */
  seconds: number;
  /** Seconds of training the run has spent (what its budget counts). */
  trainSec: number;
  flags: Flags;
  /** What the checkpoint recorded of its architecture flags (those given to the run it continues). */
  arch: Record<string, string | number | boolean>;
  flow?: Flow;
  realnvp?: RealNVP;
}

const show = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));
/** A value read from a file, for a message: a string says that it is one. */
const shown = (v: unknown) => (typeof v === 'string' ? `${JSON.stringify(v)} (a string)` : JSON.stringify(v));
/** A flag as typed: `--conditional`, `--hidden 16`. */
const flagText = (k: string, v: unknown) => (v === true ? `--${k}` : `--${k} ${show(v)}`);
/** Seconds for a message, to 0.01 s. */
const secs = (s: number) => `${Number(s.toFixed(2))} s`;

/**
 * Opens the checkpoint of `--resume` (a FlowNet or 2-D Real NVP checkpoint saved by `train flow`, with
 * its optimizer state) and fills `f` with the settings of its run. A flag that contradicts them is a
 * ConfigError naming it; a checkpoint without training or optimizer state, or without the settings
 * `train flow` records (one saved through the API), a ConfigError that says so; a damaged one (a value
 * of its training state out of range, an architecture that is not the flow it holds, an optimizer
 * step that is not the run's) a CheckpointError naming the file and the field.
 */
function openResume(path: string, f: Flags): Resumed {
  const special = specialFileKind(path);
  if (special !== null) throw new CheckpointError(`--resume ${path} is ${special}, not a checkpoint file`);
  const kind = checkpointKind(path);
  if (kind === 'char-lm')
    throw new ConfigError(
      `--resume ${path} is a character-model checkpoint: continue it with arflow train char --resume ${path}`,
    );
  let flow: Flow | undefined;
  let realnvp: RealNVP | undefined;
  if (kind === FLOW_KIND) {
    // The backend the run used, unless --backend says otherwise (a small 2-D model: read twice).
    const recorded = readTrainInfo(path, loadSafetensors(path).metadata)?.backend;
    const backend = str(f, 'backend') ?? (recorded === 'js' ? 'js' : undefined);
    realnvp = RealNVP.load(path, { backend: backend as 'native' | 'js' | undefined });
  } else {
    flow = Flow.load(path);
  }
  const model = (realnvp ?? flow) as RealNVP | Flow;
  const info = model.trainInfo;
  if (info === null)
    throw new ConfigError(
      `--resume ${path} holds no training state: it was not saved by arflow train flow, so there is no run to continue`,
    );
  if (!model.hasOptimizerState)
    throw new ConfigError(
      `--resume ${path} holds no optimizer state (it was saved without it: by an older arflow, or by Flow.save without { optimizer: true }), so its run cannot be continued exactly; start a new run`,
    );
  const missing = RECORDED.filter((k) => info[k] === undefined);
  if (missing.length > 0)
    throw new ConfigError(
      `--resume ${path}: its training state has no ${missing.join(', ')}: it was not saved by arflow train flow, so the settings of its run are unknown; continue it through the API (fit with resume and the run's own options), or start a new run`,
    );
  const bad = (key: string, what: string, v: unknown = info[key]) =>
    new CheckpointError(`${path}: train.${key} in its metadata is ${shown(v)}, not ${what}`);
  const whole = (key: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const v = info[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max)
      throw bad(key, max < Number.MAX_SAFE_INTEGER ? `a whole number in ${min}..${max}` : `a whole number ≥ ${min}`);
    return v;
  };
  const positive = (key: string, allowZero: boolean, fallback?: number): number => {
    const v = info[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0))
      throw bad(key, `a number ${allowZero ? '≥' : '>'} 0`);
    return v;
  };
  const data = info.data;
  if (typeof data !== 'string' || !(TRAIN_FLOW_DATA as readonly string[]).includes(data))
    throw bad('data', `one of ${TRAIN_FLOW_DATA.join(', ')}`);
  const image = data === 'fashion-mnist';
  const m = info.model;
  if (typeof m !== 'string' || !(FLOW_MODELS as readonly string[]).includes(m))
    throw bad('model', `one of ${FLOW_MODELS.join(', ')}`);
  const modelName = m as FlowModelName;
  if (realnvp) {
    if (modelName !== 'realnvp') throw bad('model', 'realnvp (a Real NVP checkpoint)');
    if (image || realnvp.config.dim !== 2)
      throw new CheckpointError(
        `${path}: a Real NVP of dim ${realnvp.config.dim} whose training state says data ${data}: train flow resumes 2-D Real NVPs on the 2-D densities`,
      );
  } else {
    const fl = flow as Flow;
    const fits = image
      ? fl.space === 'pixels' && fl.spec.shape.join(',') === '1,28,28'
      : fl.space === 'real' && fl.dim === 2 && modelName !== 'realnvp';
    if (!fits)
      throw new CheckpointError(
        `${path}: its training state says ${modelName} on ${data}, but it holds a ${fl.space === 'pixels' ? 'pixel' : 'vector'} flow of shape [${fl.spec.shape.join(', ')}]`,
      );
  }
  const step = whole('steps', 0);
  const n = whole('n', 1, image ? FASHION_TRAIN_IMAGES : MAX_POINTS);
  const seed = whole('seed', 0);
  const total = whole('totalSteps', 1);
  if (step > total) throw bad('steps', `a count of steps taken ≤ its totalSteps ${total}`);
  const batch = whole('batch', 1, image ? 4096 : 1_000_000);
  const testN = whole('testN', image ? 2 : 1, image ? FASHION_TEST_IMAGES : MAX_POINTS);
  const lr = positive('lr', false);
  const clip = positive('clip', true);
  const seconds = positive('seconds', true, 0);
  const trainSec = positive('trainSec', true, 0);
  // The optimizer state must be that of the run's last step: AdamW's bias correction counts its steps.
  const optimStep = model.backend.getOptimStep();
  if (optimStep !== step)
    throw new CheckpointError(
      `${path}: optimizer_step ${optimStep} in its metadata is not the ${step} steps its training state records (train.steps): its optimizer state is not that of the run's last step, so the run cannot be continued exactly`,
    );
  const arch = readArch(path, info.arch, modelName, image);
  // The architecture recorded must describe the flow in the file (and so must the model's name: a
  // MAF labelled glow is not a Glow).
  const describes = realnvp
    ? (['couplings', 'hidden', 'depth'] as const).every((k) => (arch[k] ?? DEFAULT_FLOW[k]) === realnvp.config[k])
    : canonical(flowSpec(modelName, image, arch, 2)) === canonical((flow as Flow).spec);
  if (!describes)
    throw new CheckpointError(
      `${path}: its training state (train.model ${modelName}, train.arch ${JSON.stringify(arch)}) does not describe the flow it holds: the metadata is not that of these tensors`,
    );
  const run: Record<string, unknown> = { data, model: modelName, n, seed, batch, lr, clip };
  for (const k of RUN_FLAGS) {
    if (f[k] === undefined || f[k] === run[k]) continue;
    throw new ConfigError(
      `${flagText(k, f[k])} contradicts --resume ${path}, whose run used ${flagText(k, run[k])}: a resumed run keeps its own settings (leave --${k} out, or start a new run)`,
    );
  }
  const flags: Flags = { ...f };
  const fill: Record<string, unknown> = { ...run, 'test-n': testN, ...arch, steps: total, seconds };
  for (const [k, v] of Object.entries(fill))
    if (flags[k] === undefined && v !== undefined) flags[k] = v as string | number | boolean;
  return { from: path, step, seconds, trainSec, flags, arch, flow, realnvp };
}

/**
 * The architecture flags a checkpoint's `train.arch` records, checked as the flags are (type and range)
 * and against the model and data (a flag the run would have refused): a CheckpointError naming the
 * file and the field otherwise.
 */
function readArch(
  path: string,
  raw: unknown,
  model: FlowModelName,
  image: boolean,
): Record<string, string | number | boolean> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new CheckpointError(`${path}: train.arch in its metadata is ${shown(raw)}, not an object`);
  const arch: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(raw)) {
    const a = ARCH_FLAGS[k];
    const spec = TRAIN_FLOW_FLAGS[k];
    const bad = (what: string) =>
      new CheckpointError(`${path}: train.arch.${k} in its metadata is ${shown(v)}, not ${what}`);
    if (a === undefined || spec === undefined) throw bad('an architecture flag (no such flag)');
    if (spec.type === 'int') {
      const min = k === 'blocks' ? 0 : 1;
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw bad(`a whole number ≥ ${min}`);
    } else if (spec.type === 'boolean') {
      if (v !== true) throw bad('true (a flag that was given)');
    } else if (typeof v !== 'string' || !(spec.choices ?? []).includes(v)) {
      throw bad(`one of ${(spec.choices ?? []).join(', ')}`);
    }
    if (!a.uses(model, image))
      throw new CheckpointError(
        `${path}: train.arch.${k} in its metadata is ${shown(v)}, but --${k} does not apply to ${model} on ${image ? 'fashion-mnist' : '2-D data'} (it is for ${a.for})`,
      );
    arch[k] = v as string | number | boolean;
  }
  return arch;
}

/**
 * Checks, once the flags are known good, that the architecture flags given with `--resume` describe
 * the flow in the checkpoint, and that `steps` (a total, counting the steps taken) and `seconds` (a
 * total budget, counting the training time spent) leave something to do. A run keeps the kind of
 * schedule it had: `--seconds` cannot give a step-driven run a budget, nor take a timed run's away.
 */
function checkResume(r: Resumed, f: Flags, model: FlowModelName, image: boolean, steps: number, seconds: number): void {
  for (const k of Object.keys(ARCH_FLAGS)) {
    const v = f[k];
    if (v === undefined) continue;
    const was =
      r.arch[k] !== undefined
        ? `with ${flagText(k, r.arch[k])}`
        : TRAIN_FLOW_FLAGS[k].type === 'boolean'
          ? `without --${k}`
          : `with the default ${k}`;
    const fail = () =>
      new ConfigError(
        `${flagText(k, v)} contradicts --resume ${r.from}, whose flow was built ${was}: a resumed run keeps its architecture (leave --${k} out, or start a new run)`,
      );
    if (r.realnvp) {
      const c = r.realnvp.config as unknown as Record<string, unknown>;
      if (c[k] !== v) throw fail();
    } else if (r.flow) {
      const spec = flowSpec(model, image, { ...r.arch, [k]: v }, 2);
      if (canonical(spec) !== canonical(r.flow.spec)) throw fail();
    }
  }
  const given = num(f, 'seconds');
  if (given !== undefined && given > 0 !== r.seconds > 0)
    throw new ConfigError(
      r.seconds > 0
        ? `--seconds ${given} contradicts --resume ${r.from}, whose run had a time budget of ${secs(r.seconds)}: its learning-rate schedule follows the clock, and a step-driven one would not continue it (leave --seconds out, or give a larger total than the ${secs(r.trainSec)} spent)`
        : `--seconds ${given} contradicts --resume ${r.from}, whose run had no time budget: its learning-rate schedule follows its steps, and a clock-driven one would not continue it (leave --seconds out, or start a new run)`,
    );
  if (steps <= r.step) {
    if (f.steps === undefined)
      throw new ConfigError(
        `--resume ${r.from} has taken all ${r.step} steps of its run: give --steps with a larger total (it counts the ${r.step} taken)`,
      );
    throw new ConfigError(
      `--steps ${steps} leaves nothing to do: --resume ${r.from} has taken ${r.step} steps and --steps counts them; give a larger total`,
    );
  }
  if (seconds > 0 && seconds <= r.trainSec) {
    if (given === undefined)
      throw new ConfigError(
        `--resume ${r.from} has spent all ${secs(r.seconds)} of its time budget (it trained for ${secs(r.trainSec)}): give --seconds with a larger total (it counts the time spent)`,
      );
    throw new ConfigError(
      `--seconds ${given} leaves nothing to do: --resume ${r.from} has trained for ${secs(r.trainSec)} and --seconds counts that time; give a larger total`,
    );
  }
}

/** The line a resumed run starts with: where it stopped, of its steps and of its time budget. */
function resumingText(r: Resumed, steps: number, seconds: number | undefined): string {
  const budget =
    seconds !== undefined && seconds > 0 ? `, ${secs(r.trainSec)} of its ${secs(seconds)} budget spent` : '';
  return `resuming ${r.from} at step ${r.step} of ${steps}${budget}`;
}

/** JSON with the keys of every object sorted: equal for equal specs whatever their key order. */
function canonical(x: unknown): string {
  return JSON.stringify(x, (_k, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/** The architecture flags of a run, as given (what `--resume` checks new flags against). */
function archOf(f: Flags): Record<string, string | number | boolean> {
  const arch: Record<string, string | number | boolean> = {};
  for (const k of Object.keys(ARCH_FLAGS)) if (f[k] !== undefined) arch[k] = f[k] as string | number | boolean;
  return arch;
}

export async function cmdTrainFlow(argv: string[]): Promise<void> {
  const usage = `usage: arflow train flow [options]\n\nFits a normalizing flow (--model realnvp, glow, nice, maf or iaf) to fashion-mnist or a 2-D density: ${FLOW_DATA.map((d) => `${d} (${DENSITIES[d].description})`).join('; ')}.\nArchitecture options that the chosen model and data would ignore are refused. Ctrl-C stops training and still saves the checkpoint, with the optimizer state: --resume FILE continues that run with its model, data, seed, settings and time budget, to --steps in all and within --seconds in all (both count what the run has done already; defaults: the run's own totals). A run driven by its steps, resumed to its own total, ends exactly where it would have ended had it never stopped. A --seconds run continues its clock-driven schedule and stops when its budget is spent, but how many steps that takes depends on the machine's speed, so it does not end on the same step or weights as an unstopped run.`;
  const { positional, flags: f } = parseArgs(argv, TRAIN_FLOW_FLAGS);
  if (f.help) {
    console.log(helpText(usage, TRAIN_FLOW_FLAGS));
    return;
  }
  if (positional.length) throw new ConfigError(`unexpected argument ${JSON.stringify(positional[0])}`);
  const json = Boolean(f.json);
  const resumePath = str(f, 'resume');
  // A resumed run takes its model, data and settings from the checkpoint: `g` is `f` with them filled in.
  const resumed = resumePath === undefined ? null : openResume(resumePath, f);
  const g = resumed?.flags ?? f;
  const data = str(g, 'data') === 'fashion-mnist' ? 'fashion-mnist' : dataName(g, 'moons');
  const image = data === 'fashion-mnist';
  const modelName = (str(g, 'model') ?? 'realnvp') as FlowModelName;
  const out =
    str(f, 'out') ?? resumePath ?? `flow-${data}${modelName === 'realnvp' ? '' : `-${modelName}`}.safetensors`;
  const png = str(f, 'png') ?? withExt(out, '.png');
  const interp = image ? `${png.replace(/\.png$/, '')}-interp.png` : undefined;
  const { seed, steps, n, testN, temperature } = checkTrainFlags(g, modelName, data, { out, png, interp });
  // With --resume, the run's own budget unless --seconds gives a new total (counting the time spent).
  const seconds = num(g, 'seconds');
  if (resumed) checkResume(resumed, f, modelName, image, steps, seconds ?? 0);
  // Resolved here (no defaults left to the trainer) so that the checkpoint records what the run used.
  const batch = num(g, 'batch') ?? (image ? 64 : FLOW_TRAIN_DEFAULTS.batchSize);
  const lr = num(g, 'lr') ?? FLOW_TRAIN_DEFAULTS.lr;
  const clip = num(g, 'clip') ?? (image ? 100 : FLOW_TRAIN_DEFAULTS.clip);
  // `seconds` is the run's time budget (0: none); the checkpoint adds `trainSec`, the training time spent.
  const record = { totalSteps: steps, batch, lr, clip, testN, arch: archOf(g), seconds: seconds ?? 0 };
  if (image || modelName !== 'realnvp') {
    return trainFlowNet({
      f: g,
      json,
      data,
      model: modelName,
      seed,
      steps,
      seconds,
      n,
      testN,
      temperature,
      out,
      png,
      interp,
      densityPng: (m, path, train) =>
        densityPng(m, path, extentOf(train), m.sample(5000, { seed: seed + 1, temperature })),
      batch,
      lr,
      clip,
      record,
      resume: resumed?.flow && {
        flow: resumed.flow,
        step: resumed.step,
        trainSec: resumed.trainSec,
        from: resumed.from,
      },
    });
  }
  const train = sample2d(data, n, seed);
  const test = sample2d(data, testN, seed + TEST_SEED_OFFSET);
  const model =
    resumed?.realnvp ??
    RealNVP.create(
      { dim: 2, couplings: num(f, 'couplings'), hidden: num(f, 'hidden'), depth: num(f, 'depth') },
      { backend: str(f, 'backend') as 'native' | 'js' | undefined, seed },
    );
  const bar = json ? null : new ProgressBar();
  const c = model.config;
  bar?.log(
    `train flow: ${data}, ${n.toLocaleString('en-US')} points; Real NVP ${c.couplings} couplings, MLP ${c.hidden} × ${c.depth}, ${model.backend.kind} backend`,
  );
  if (resumed) bar?.log(resumingText(resumed, steps, seconds));
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.once('SIGINT', onSigint);
  const onProgress = flowProgress({ json, bar, steps, seconds, unit: 'pts/s', digits: 3 });
  const logEvery = Math.max(1, Math.min(50, Math.floor(steps / 20)));
  let summary: Awaited<ReturnType<RealNVP['fit']>>;
  try {
    summary = await model.fit(train, {
      steps,
      batchSize: batch,
      lr,
      clip,
      seed,
      seconds,
      signal: stop.signal,
      onProgress,
      logEvery,
      // Progress lines carry the held-out NLL (valNll) every 5th report, on at most the first
      // VAL_POINTS test points (milliseconds in 2-D). The reported testNll scores all of them, after saving.
      valData: test.subarray(0, Math.min(testN, VAL_POINTS) * 2),
      valEvery: 5 * logEvery,
      resume: resumed ? { step: resumed.step, trainSec: resumed.trainSec } : undefined,
    });
  } finally {
    process.off('SIGINT', onSigint);
    bar?.end();
  }
  // Saved before scoring: Ctrl-C or an error while scoring the held-out set cannot lose the model.
  // With the optimizer state, so that every run can be continued (`--resume`).
  await model.save(out, {
    optimizer: true,
    train: {
      data,
      n,
      seed,
      steps: summary.steps,
      model: 'realnvp',
      backend: model.backend.kind,
      ...record,
      trainSec: summary.trainSec,
    },
  });
  const { nll: testNll } = await scoreAfterTraining(async () => ({ nll: await model.nll(test) }), out);
  const samples = model.sample(5000, { seed: seed + 1, temperature });
  await densityPng(model, png, extentOf(train), samples);
  const gauss = gaussianBaseline(train, test);
  const result = {
    steps: summary.steps,
    samplesPerSec: summary.samplesPerSec,
    trainLoss: summary.trainLoss,
    testNll,
    ...baselineFields(gauss),
    out,
    png,
    elapsedSec: summary.elapsedSec,
    trainSec: summary.trainSec,
    stoppedEarly: summary.aborted || summary.outOfTime,
    data,
    model: 'realnvp',
    backend: model.backend.kind,
    ...(resumed ? { resumedFrom: resumed.from, resumedAtStep: resumed.step } : {}),
  };
  if (json) {
    emit({ type: 'summary', ...result });
    return;
  }
  console.log(
    `\n${summary.aborted ? `interrupted at step ${summary.steps}` : summary.outOfTime ? `time budget spent at step ${summary.steps}` : `done: ${summary.steps} steps`} in ${formatDuration(summary.elapsedSec)}; ` +
      `${Math.round(summary.samplesPerSec).toLocaleString('en-US')} points/s; train NLL ${summary.trainLoss.toFixed(3)} nats`,
  );
  console.log(`held-out NLL ${result.testNll.toFixed(3)} nats ${baselineText(gauss, 3, 'full-covariance Gaussian:')}`);
  console.log(`saved ${out}\npicture ${png} (log-density | samples)`);
}

export async function cmdSampleFlow(path: string, argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, SAMPLE_FLOW_FLAGS);
  if (f.help) {
    console.log(helpText('usage: arflow sample FLOW.safetensors [options]', SAMPLE_FLOW_FLAGS));
    return;
  }
  if (positional.length !== 1) throw new ConfigError('arflow sample needs exactly one checkpoint FILE');
  const defaultOut = withExt(path, '-samples.png');
  if (checkpointKind(path) === FLOWNET_KIND) {
    return sampleFlowNet(path, f, defaultOut, (xs, out) => {
      savePicture(out, 256, 256, scatterRgb(xs, 256, 256, extentOf(xs)), 3);
    });
  }
  const model = RealNVP.load(path);
  if (model.config.dim !== 2)
    throw new ConfigError(`sample pictures need a 2-D flow; this one has dim ${model.config.dim}`);
  const { n, temperature, seed, out } = sampleSettings(path, f, {
    pixels: false,
    classes: 0,
    defaultOut,
    defaultTemperature: 1,
  });
  const t0 = performance.now();
  const xs = checkpointSamples(path, () => model.sample(n, { temperature, seed }));
  const sec = (performance.now() - t0) / 1000;
  const info = model.trainInfo;
  const extent =
    info && typeof info.data === 'string' && (FLOW_DATA as readonly string[]).includes(info.data)
      ? extentOf(sample2d(info.data, 5000, 0))
      : extentOf(xs);
  savePicture(out, 256, 256, scatterRgb(xs, 256, 256, extent), 3);
  if (f.json) emit({ type: 'summary', n, temperature, seed, out, samplesPerSec: sec > 0 ? n / sec : null });
  else console.log(`${n} samples (temperature ${temperature}) → ${out}`);
}

export async function cmdEvalFlow(path: string, argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, EVAL_FLOW_FLAGS);
  if (f.help) {
    console.log(helpText('usage: arflow eval FLOW.safetensors [options]', EVAL_FLOW_FLAGS));
    return;
  }
  if (positional.length !== 1) throw new ConfigError('arflow eval needs exactly one checkpoint FILE');
  if (checkpointKind(path) === FLOWNET_KIND) return evalFlowNet(path, f);
  const model = RealNVP.load(path);
  return evalPoints(path, f, model.trainInfo ?? {}, model.config.dim, (x) => model.nll(x));
}
