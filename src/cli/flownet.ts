/**
 * The CLI for FlowNet models (`src/models/flownet.ts`): `arflow train flow --model glow|nice|maf|iaf|
 * realnvp --data fashion-mnist|<2-D density>`, and `arflow sample` / `arflow eval` of their checkpoints.
 * Image runs report bits per dimension (`testBpd`) and write a grid of samples and a PNG of latent
 * interpolations; 2-D runs write the density heat map beside a scatter of samples.
 */

import { closeSync, openSync, readSync, statSync } from 'node:fs';
import type { FlowNetSpec } from '../backend/flownet-types.js';
import { loadFashionMnist } from '../data/fashion-mnist.js';
import { CheckpointError, ConfigError, DataError, DivergenceError } from '../errors.js';
import { DENSITIES, isDensity2dName, sample2d } from '../flows/data2d.js';
import { checkpointKind } from '../io/checkpoint.js';
import { imageGrid } from '../io/png.js';
import { gaussianNll, RealNVP } from '../models/flow.js';
import { FLOWNET_KIND, type Flow, Flow as FlowModel } from '../models/flownet.js';
import { glowSpec, iafSpec, mafSpec, niceSpec, realNvpImageSpec, realNvpVectorSpec } from '../models/presets.js';
import { REALNVP_V0_KIND } from '../models/realnvp-v0.js';
import type { FlowTrainProgress } from '../train/flow-trainer.js';
import { checkOutputPath, emit, type Flags, intFlag, num, positiveFlag, samePath, savePicture, str } from './args.js';
import { formatDuration, ProgressBar } from './progress.js';

export const FLOW_MODELS = ['realnvp', 'glow', 'nice', 'maf', 'iaf'] as const;
export type FlowModelName = (typeof FLOW_MODELS)[number];
export { FLOWNET_KIND };

/** The shape of a Fashion-MNIST image, `[C, H, W]`. */
const FASHION_SHAPE: [number, number, number] = [1, 28, 28];
const SHAPE = FASHION_SHAPE;
const CLASSES = 10;

/** The FlowNet spec of `--model` for images (`[1, 28, 28]`) or `dim`-vectors, from the flags. */
export function flowSpec(model: FlowModelName, image: boolean, f: Flags, dim: number): FlowNetSpec {
  const context = f.conditional ? CLASSES : 0;
  const dimOrShape = image ? SHAPE : dim;
  const spec = (() => {
    switch (model) {
      case 'realnvp':
        if (!image)
          return realNvpVectorSpec({
            dim,
            couplings: num(f, 'couplings'),
            hidden: num(f, 'hidden'),
            depth: num(f, 'depth'),
            context,
          });
        return realNvpImageSpec({
          shape: SHAPE,
          scales: num(f, 'scales'),
          channels: num(f, 'channels'),
          blocks: num(f, 'blocks'),
          norm: str(f, 'norm') as 'actnorm' | 'batchnorm' | 'none' | undefined,
          convNorm: str(f, 'conv-norm') as 'weight' | 'batch' | 'none' | undefined,
          context,
        });
      case 'glow':
        return glowSpec({
          shape: image ? SHAPE : [dim, 1, 1],
          levels: num(f, 'levels') ?? (image ? 2 : 1),
          steps: num(f, 'flow-steps') ?? (image ? 4 : 8),
          channels: num(f, 'channels') ?? (image ? 32 : 64),
          blocks: num(f, 'blocks'),
          context,
        });
      case 'nice':
        return niceSpec({
          dim: dimOrShape,
          layers: num(f, 'layers'),
          hidden: num(f, 'hidden') ?? (image ? 256 : 64),
          depth: num(f, 'depth') ?? (image ? 4 : 2),
          context,
        });
      case 'maf':
        return mafSpec({
          dim: dimOrShape,
          layers: num(f, 'layers'),
          hidden: num(f, 'hidden') ?? (image ? 1024 : 64),
          depth: num(f, 'depth'),
          context,
        });
      case 'iaf':
        if (image)
          throw new ConfigError(
            'IAF scores data with D sequential passes per layer (784 for Fashion-MNIST): train it on 2-D data, or use maf for images',
          );
        return iafSpec({ dim, layers: num(f, 'layers'), hidden: num(f, 'hidden'), depth: num(f, 'depth'), context });
    }
  })();
  if (!image && spec.shape[1] === 1 && model === 'glow') {
    // Glow on vectors: no squeeze (1×1 "images"), couplings on alternating coordinates.
    spec.layers = spec.layers
      .filter((l) => l.type !== 'squeeze' && l.type !== 'split')
      .map((l) =>
        l.type === 'coupling'
          ? {
              ...l,
              mask: 'alternate',
              net: { type: 'mlp', hidden: num(f, 'hidden') ?? 64, depth: num(f, 'depth') ?? 2 },
            }
          : l,
      );
  }
  return spec;
}

/** A new flow of {@link flowSpec}, initialised from `seed`. */
function buildFlow(model: FlowModelName, image: boolean, f: Flags, dim: number, seed: number): Flow {
  return FlowModel.create(flowSpec(model, image, f, dim), { seed, pixels: image });
}

function describe(flow: Flow): string {
  const counts = new Map<string, number>();
  for (const l of flow.spec.layers) counts.set(l.type, (counts.get(l.type) ?? 0) + 1);
  const params = flow.tensorInfo().params.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  return `${[...counts].map(([k, v]) => `${v} ${k}`).join(', ')}; ${params.toLocaleString('en-US')} parameters`;
}

/** Channels a picture can show: 1 (gray) or 3 (RGB). ConfigError for the others, before any work. */
export function checkPictureShape(shape: readonly number[], path: string): void {
  const [C] = shape;
  if (C !== 1 && C !== 3)
    throw new ConfigError(
      `${path} is an image flow of shape [${shape.join(', ')}]: pictures need 1 (gray) or 3 (RGB) channels, not ${C}`,
    );
}

/**
 * `[n, C, H, W]` images (C = 1: gray, drawn dark on white as Fashion-MNIST's ink; C = 3: RGB) tiled
 * `columns` to a row, upscaled ×`scale`, saved as a PNG.
 */
export function saveGrid(
  path: string,
  images: Uint8Array,
  n: number,
  shape: readonly number[],
  columns: number,
  scale = 2,
): void {
  const [C, H, W] = shape;
  checkPictureShape(shape, path);
  const plane = H * W;
  const grids = Array.from({ length: C }, (_, c) => {
    const p = new Uint8Array(n * plane);
    for (let k = 0; k < n; k++) p.set(images.subarray((k * C + c) * plane, (k * C + c + 1) * plane), k * plane);
    return imageGrid(p, n, H, W, { columns, pad: 2, padValue: 255 });
  });
  const g = grids[0];
  const w = g.width * scale;
  const h = g.height * scale;
  const px = new Uint8Array(w * h * C);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const src = Math.floor(y / scale) * g.width + Math.floor(x / scale);
      for (let c = 0; c < C; c++) {
        const v = grids[c].pixels[src];
        px[(y * w + x) * C + c] = C === 1 ? 255 - v : v;
      }
    }
  }
  savePicture(path, w, h, px, C as 1 | 3);
}

/** Rows of the interpolation picture: one per pair of test images, at most 6. */
export function interpolationRows(testImages: number): number {
  return Math.min(6, Math.floor(testImages / 2));
}

/** Samples (one row per class for a conditional flow) and interpolations between pairs of test images. */
function imagePictures(
  flow: Flow,
  test: { images: Uint8Array; labels: Uint8Array },
  out: string,
  interp: string,
  temperature: number,
  seed: number,
): void {
  const conditional = flow.contextSize > 0;
  const shape = flow.spec.shape;
  const n = 100;
  const labels = conditional ? Array.from({ length: n }, (_, i) => Math.floor(i / 10) % flow.contextSize) : undefined;
  saveGrid(out, flow.sampleImages(n, { temperature, seed, labels }), n, shape, 10);
  const rows = interpolationRows(test.labels.length);
  if (rows < 1) throw new ConfigError('the interpolation picture needs at least 2 test images');
  const steps = 10;
  const D = flow.dim;
  const all = new Uint8Array(rows * steps * D);
  for (let r = 0; r < rows; r++) {
    const a = test.images.subarray(2 * r * D, (2 * r + 1) * D);
    const b = test.images.subarray((2 * r + 1) * D, (2 * r + 2) * D);
    const label = conditional ? test.labels[2 * r] : undefined;
    all.set(flow.interpolate(a, b, steps, { label }) as Uint8Array, r * steps * D);
  }
  saveGrid(interp, all, rows * steps, shape, steps);
}

/**
 * The progress reporter of `train flow`: a JSON line per report with `--json`, else the progress bar
 * (by steps, or by the clock with `--seconds`).
 */
export function flowProgress(o: {
  json: boolean;
  bar: ProgressBar | null;
  steps: number;
  seconds?: number;
  unit: string;
  digits: number;
}): (p: FlowTrainProgress) => void {
  const byTime = o.seconds !== undefined && o.seconds > 0;
  const budget = o.seconds ?? 0;
  return (p) => {
    if (o.json) {
      emit({ type: 'progress', ...p, valNll: p.valNll ?? null, etaSec: Number.isFinite(p.etaSec) ? p.etaSec : null });
      return;
    }
    const rate = `${Math.round(p.samplesPerSec).toLocaleString('en-US')} ${o.unit}`;
    // A timed run's clock counts the training time of the run it resumes (trainSec).
    const when = byTime
      ? `${formatDuration(p.trainSec)} of ${formatDuration(budget)}`
      : `ETA ${formatDuration(p.etaSec)}`;
    o.bar?.update(
      byTime ? p.trainSec / budget : p.step / o.steps,
      byTime ? `step ${p.step}` : `${p.step}/${o.steps}`,
      `nll ${p.loss.toFixed(o.digits)} · ${rate} · lr ${p.lr.toExponential(1)} · ${when}`,
    );
  };
}

/** Largest `--n` / `--test-n` of 2-D points, a sane bound on memory. */
export const MAX_POINTS = 10_000_000;
/** Images in Fashion-MNIST's training and test splits: the most `--n` and `--test-n` can ask for. */
export const FASHION_TRAIN_IMAGES = 60_000;
export const FASHION_TEST_IMAGES = 10_000;
/** Largest `sample --n` of an image flow (the grid of 10 000 images is ~6000 px wide). */
export const MAX_SAMPLE_IMAGES = 10_000;
/** The held-out set of 2-D points is drawn with this offset from the training seed. */
export const TEST_SEED_OFFSET = 1_000_003;

/**
 * Whether `path` is an existing safetensors file (a readable header of a JSON object), of arflow or not.
 * Only regular files are opened: opening a FIFO would block until something writes to it.
 */
function isSafetensorsFile(path: string): boolean {
  let fd: number | undefined;
  try {
    if (!statSync(path).isFile()) return false;
    fd = openSync(path, 'r');
    const head = Buffer.alloc(8);
    if (readSync(fd, head, 0, 8, 0) !== 8) return false;
    const len = Number(head.readBigUInt64LE(0));
    if (!(len >= 2 && len < 100_000_000)) return false;
    const json = Buffer.alloc(len);
    if (readSync(fd, json, 0, len, 8) !== len) return false;
    const header: unknown = JSON.parse(json.toString('utf8'));
    return typeof header === 'object' && header !== null && !Array.isArray(header);
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Checks that a picture may be written at `path` (given by `flag`): a writable file path that is not
 * one of the `checkpoints` (the one being read or written) and not an existing safetensors checkpoint.
 */
export function checkPicturePath(path: string, flag: string, checkpoints: string[]): void {
  for (const c of checkpoints)
    if (samePath(path, c))
      throw new ConfigError(`${flag} ${path} is the checkpoint itself: give the picture another path`);
  checkOutputPath(path, flag);
  if (isSafetensorsFile(path))
    throw new ConfigError(
      `${flag} ${path} is an existing safetensors checkpoint: refusing to overwrite it with a picture`,
    );
}

/**
 * The full-covariance Gaussian baseline of a 2-D run, or null with the reason when it cannot be fitted
 * (a singular covariance: too few or collinear training points). A missing baseline never fails a run.
 */
export function gaussianBaseline(train: Float32Array, test: Float32Array): { nll: number | null; note?: string } {
  try {
    const nll = gaussianNll(train, test, 2);
    if (Number.isFinite(nll)) return { nll };
    return { nll: null, note: `the Gaussian baseline is not finite (${nll})` };
  } catch (e) {
    if (!(e instanceof DataError)) throw e;
    return {
      nll: null,
      note: `no Gaussian baseline: ${e.message.replace(/^gaussianNll: /, '')} (${train.length / 2} training points)`,
    };
  }
}

/** The human-readable baseline in parentheses after a 2-D NLL. */
export function baselineText(g: { nll: number | null; note?: string }, digits: number, label: string): string {
  return g.nll === null ? `(${g.note})` : `(${label} ${g.nll.toFixed(digits)})`;
}

/** The `--json` fields of a baseline: `gaussianNll` (null when missing) and, then, `gaussianNote`. */
export function baselineFields(g: { nll: number | null; note?: string }): Record<string, unknown> {
  return g.nll === null ? { gaussianNll: null, gaussianNote: g.note } : { gaussianNll: g.nll };
}

export interface SampleSettings {
  n: number;
  temperature: number;
  seed: number;
  label?: number;
  out: string;
}

/**
 * `sample` flags of a flow checkpoint at `path`, checked before any sampling: `--n` in 1..max (64
 * images or 5000 points by default), `--temperature` > 0, `--seed` ≥ 0, `--label` a class of a
 * conditional flow (`classes` > 0) and refused otherwise, `--out` a writable picture path that is not
 * the checkpoint.
 */
export function sampleSettings(
  path: string,
  f: Flags,
  o: { pixels: boolean; classes: number; defaultOut: string; defaultTemperature: number },
): SampleSettings {
  const n = intFlag(f, 'n', 1, o.pixels ? MAX_SAMPLE_IMAGES : MAX_POINTS) ?? (o.pixels ? 64 : 5000);
  const temperature = positiveFlag(f, 'temperature') ?? o.defaultTemperature;
  const seed = intFlag(f, 'seed', 0) ?? 0;
  const label = num(f, 'label');
  if (label !== undefined) {
    if (o.classes === 0)
      throw new ConfigError(
        `--label needs a class-conditional flow (trained with --conditional); ${path} is unconditional`,
      );
    if (!(Number.isInteger(label) && label >= 0 && label < o.classes))
      throw new ConfigError(`--label must be a class in 0..${o.classes - 1}, got ${label}`);
  }
  const out = str(f, 'out') ?? o.defaultOut;
  checkPicturePath(out, '--out', [path]);
  return { n, temperature, seed, label, out };
}

/**
 * Samples drawn by `draw` from the checkpoint at `path`: non-finite samples (a DataError of the model:
 * broken weights) are an error naming the checkpoint, never a picture with points missing.
 */
export function checkpointSamples<T>(path: string, draw: () => T): T {
  try {
    return draw();
  } catch (e) {
    if (e instanceof DataError) throw new DataError(`${path}: ${e.message}`);
    throw e;
  }
}

/**
 * A non-finite held-out NLL from `eval`: never a result. The likely causes are a corrupt checkpoint
 * (edited or damaged weights) or a model that diverged in training.
 */
function nonFiniteEval(path: string, nll: number, data: string): CheckpointError {
  return new CheckpointError(
    `${path}: the flow's held-out NLL on ${data} is ${nll}, not a number: the checkpoint is probably corrupt ` +
      '(damaged or edited weights) or its model diverged in training; retrain it or use another checkpoint',
  );
}

/**
 * Scores the held-out set at the end of `train flow`, after the checkpoint was saved to `out`: a
 * non-finite NLL (returned, or thrown as a DataError by the model) is a DivergenceError that says so.
 */
export async function scoreAfterTraining<T extends { nll: number }>(score: () => Promise<T>, out: string): Promise<T> {
  const fail = (detail: string) =>
    new DivergenceError(
      `training ended with a model whose held-out NLL is not finite (${detail}): it diverged or is numerically ` +
        `unstable on the test data (try a lower --lr, a smaller --clip or fewer --steps); the checkpoint was saved to ${out} but is likely unusable`,
    );
  let r: T;
  try {
    r = await score();
  } catch (e) {
    if (e instanceof DataError) throw fail(e.message);
    throw e;
  }
  if (!Number.isFinite(r.nll)) throw fail(`NLL ${r.nll}`);
  return r;
}

/** Scores for `eval` of the checkpoint at `path`: a non-finite NLL is never reported as a result. */
async function scoreCheckpoint<T extends { nll: number }>(
  path: string,
  data: string,
  score: () => Promise<T>,
): Promise<T> {
  let r: T;
  try {
    r = await score();
  } catch (e) {
    if (e instanceof DataError) throw new DataError(`${path}: ${e.message}`);
    throw e;
  }
  if (!Number.isFinite(r.nll)) throw nonFiniteEval(path, r.nll, data);
  return r;
}

/** `train.n` and `train.seed` of a 2-D checkpoint's metadata, checked (a corrupt value is a CheckpointError). */
export function pointsTrainInfo(path: string, info: Record<string, unknown>): { n: number; seed: number } {
  const n = info.n ?? 20000;
  const seed = info.seed ?? 0;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1 || n > MAX_POINTS)
    throw new CheckpointError(
      `${path}: train.n in its metadata is ${JSON.stringify(n)}, not a count of training points in 1..${MAX_POINTS.toLocaleString('en-US')}`,
    );
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0)
    throw new CheckpointError(`${path}: train.seed in its metadata is ${JSON.stringify(seed)}, not a whole number ≥ 0`);
  return { n, seed };
}

/**
 * `eval` of a 2-D flow: the held-out NLL on `--data` (default: the density it was trained on, from
 * its metadata) against the Gaussian baseline. `nll` scores `[n, 2]` points.
 */
export async function evalPoints(
  path: string,
  f: Flags,
  info: Record<string, unknown>,
  dim: number,
  nll: (x: Float32Array) => Promise<number>,
): Promise<void> {
  const asked = str(f, 'data');
  if (asked === 'fashion-mnist')
    throw new ConfigError(`${path} is a flow on ${dim}-D points: it cannot score fashion-mnist images`);
  const data = asked ?? (typeof info.data === 'string' ? info.data : undefined);
  if (data === undefined) throw new ConfigError('give --data NAME: the checkpoint does not record its data set');
  if (!isDensity2dName(data))
    throw new ConfigError(
      `${path} was trained on ${JSON.stringify(data)}, not a 2-D density: give --data with one of ${Object.keys(DENSITIES).join(', ')}`,
    );
  if (dim !== 2) throw new ConfigError(`eval on the 2-D densities needs a 2-D flow; this one has dim ${dim}`);
  const n = intFlag(f, 'n', 1, MAX_POINTS) ?? 5000;
  const trained = pointsTrainInfo(path, info);
  const test = sample2d(data, n, trained.seed + TEST_SEED_OFFSET);
  const testNll = (await scoreCheckpoint(path, data, async () => ({ nll: await nll(test) }))).nll;
  const gauss = gaussianBaseline(sample2d(data, trained.n, trained.seed), test);
  if (f.json) emit({ type: 'summary', data, n, testNll, ...baselineFields(gauss) });
  else
    console.log(
      `${data}: held-out NLL ${testNll.toFixed(4)} nats over ${n} points ${baselineText(gauss, 4, 'Gaussian')}`,
    );
}

export interface FlowNetTrainArgs {
  f: Flags;
  json: boolean;
  data: string;
  model: FlowModelName;
  seed: number;
  steps: number;
  seconds?: number;
  /** Training examples asked for (images: at most the 60 000 of the split). */
  n: number;
  /** Held-out examples asked for (images: at most 10 000, at least 2). */
  testN: number;
  temperature: number;
  out: string;
  png: string;
  /** The interpolation picture of an image run. */
  interp?: string;
  densityPng: (model: Flow, path: string, train: Float32Array) => Promise<void>;
  /** Minibatch size, peak learning rate and clipping norm of the run (resolved: no defaults left). */
  batch: number;
  lr: number;
  clip: number;
  /**
   * What the checkpoint's `train` records besides data, n, seed, steps, model and the training time
   * spent, `trainSec` (for `--resume`).
   */
  record: Record<string, unknown>;
  /**
   * Continue this run: the flow loaded (with its optimizer state) from `from`, which took `step` steps
   * in `trainSec` seconds of training.
   */
  resume?: { flow: Flow; step: number; trainSec: number; from: string };
}

/** `train flow` of a FlowNet model; every flag is checked by the caller before this starts. */
export async function trainFlowNet(a: FlowNetTrainArgs): Promise<void> {
  const { f, json, data, model: modelName, seed, steps, seconds, out, png, n, testN, temperature } = a;
  const image = data === 'fashion-mnist';
  const bar = json ? null : new ProgressBar();
  let train: Float32Array | Uint8Array;
  let test: Float32Array | Uint8Array;
  let trainLabels: Uint8Array | undefined;
  let testLabels: Uint8Array | undefined;
  let testImages: { images: Uint8Array; labels: Uint8Array } | undefined;
  if (image) {
    const tr = loadFashionMnist('train', { limit: n });
    const te = loadFashionMnist('test', { limit: testN });
    train = tr.images;
    test = te.images;
    trainLabels = tr.labels;
    testLabels = te.labels;
    testImages = te;
  } else {
    train = sample2d(data, n, seed);
    test = sample2d(data, testN, seed + TEST_SEED_OFFSET);
  }
  const resume = a.resume;
  const flow = resume?.flow ?? buildFlow(modelName, image, f, 2, seed);
  const conditional = flow.contextSize > 0;
  const nTrain = train.length / flow.dim;
  bar?.log(
    `train flow: ${data}, ${nTrain.toLocaleString('en-US')} examples; ${modelName}${conditional ? ' (class-conditional)' : ''}: ${describe(flow)}`,
  );
  if (resume) {
    const secs = (t: number) => `${Number(t.toFixed(2))} s`;
    const budget =
      seconds !== undefined && seconds > 0 ? `, ${secs(resume.trainSec)} of its ${secs(seconds)} budget spent` : '';
    bar?.log(`resuming ${resume.from} at step ${resume.step} of ${steps}${budget}`);
  }
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.once('SIGINT', onSigint);
  const unit = image ? 'img/s' : 'pts/s';
  const onProgress = flowProgress({ json, bar, steps, seconds, unit, digits: image ? 1 : 3 });
  let summary: Awaited<ReturnType<Flow['fit']>>;
  try {
    summary = await flow.fit(train, {
      steps,
      batchSize: a.batch,
      lr: a.lr,
      clip: a.clip,
      seed,
      seconds,
      signal: stop.signal,
      onProgress,
      logEvery: Math.max(1, Math.min(image ? 10 : 50, Math.floor(steps / 20))),
      labels: conditional ? trainLabels : undefined,
      resume: resume ? { step: resume.step, trainSec: resume.trainSec } : undefined,
    });
  } finally {
    process.off('SIGINT', onSigint);
    bar?.end();
  }
  // Saved before scoring: Ctrl-C or an error while scoring the test set cannot lose the trained model.
  // With the optimizer state, so that every run can be continued (`--resume`).
  await flow.save(out, {
    optimizer: true,
    train: { data, n: nTrain, seed, steps: summary.steps, model: modelName, ...a.record, trainSec: summary.trainSec },
  });
  bar?.log(`saved ${out}; scoring the test set…`);
  const t0 = performance.now();
  const scored = await scoreAfterTraining(
    () => flow.testNll(test, { labels: conditional ? testLabels : undefined, seed: seed + 7 }),
    out,
  );
  const evalSec = (performance.now() - t0) / 1000;
  let interp: string | undefined;
  if (image && testImages) {
    interp = a.interp ?? `${png.replace(/\.png$/, '')}-interp.png`;
    imagePictures(flow, testImages, png, interp, temperature, seed + 1);
  } else {
    await a.densityPng(flow, png, train as Float32Array);
  }
  const result: Record<string, unknown> = {
    steps: summary.steps,
    samplesPerSec: summary.samplesPerSec,
    trainLoss: summary.trainLoss,
    testNll: scored.nll,
    out,
    png,
    elapsedSec: summary.elapsedSec,
    trainSec: summary.trainSec,
    stoppedEarly: summary.aborted || summary.outOfTime,
    data,
    model: modelName,
    backend: 'native',
  };
  if (resume) Object.assign(result, { resumedFrom: resume.from, resumedAtStep: resume.step });
  let gauss: { nll: number | null; note?: string } | undefined;
  if (image) {
    result.testBpd = scored.bpd;
    result.testImages = test.length / flow.dim;
    result.interpolationPng = interp;
    result.evalImagesPerSec = (result.testImages as number) / evalSec;
  } else {
    gauss = gaussianBaseline(train as Float32Array, test as Float32Array);
    Object.assign(result, baselineFields(gauss));
  }
  if (json) {
    emit({ type: 'summary', ...result });
    return;
  }
  console.log(
    `\n${summary.aborted ? `interrupted at step ${summary.steps}` : summary.outOfTime ? `time budget spent at step ${summary.steps}` : `done: ${summary.steps} steps`} in ${formatDuration(summary.elapsedSec)}; ${Math.round(summary.samplesPerSec).toLocaleString('en-US')} ${unit}`,
  );
  if (image) {
    console.log(
      `test: ${scored.bpd.toFixed(3)} bits/dim (${scored.nll.toFixed(1)} nats per image) over ${result.testImages} images; uniform baseline 8`,
    );
    console.log(`saved ${out}\nsamples ${png} (temperature ${temperature})\ninterpolations ${interp}`);
  } else {
    console.log(
      `held-out NLL ${scored.nll.toFixed(3)} nats ${baselineText(gauss ?? { nll: null }, 3, 'full-covariance Gaussian:')}`,
    );
    console.log(`saved ${out}\npicture ${png} (log-density | samples)`);
  }
}

/** The flow of a checkpoint: a FlowNet one, or a vector Real NVP one of arflow ≤ 0.1.0. */
function loadCheckpointFlow(path: string): Flow {
  return checkpointKind(path) === REALNVP_V0_KIND ? RealNVP.load(path).flow : FlowModel.load(path);
}

/**
 * `sample` of a flow checkpoint: a grid of images, or `scatter` of 2-D points (given the checkpoint's
 * training record, for the data's extent).
 */
export async function sampleFlowNet(
  path: string,
  f: Flags,
  defaultOut: string,
  scatter: (xs: Float32Array, out: string, trainInfo: Record<string, unknown> | null) => void,
): Promise<void> {
  const flow = loadCheckpointFlow(path);
  const pixels = flow.space === 'pixels';
  if (pixels) checkPictureShape(flow.spec.shape, path);
  else if (flow.dim !== 2)
    throw new ConfigError(`sample pictures need a 2-D or image flow; ${path} has dim ${flow.dim}`);
  const s = sampleSettings(path, f, {
    pixels,
    classes: flow.contextSize,
    defaultOut,
    defaultTemperature: pixels ? 0.7 : 1,
  });
  const { n, temperature, seed, out } = s;
  const K = flow.contextSize;
  const labels = K > 0 ? Array.from({ length: n }, (_, i) => s.label ?? i % K) : undefined;
  const t0 = performance.now();
  if (pixels) {
    const imgs = checkpointSamples(path, () => flow.sampleImages(n, { temperature, seed, labels }));
    const sec = (performance.now() - t0) / 1000;
    saveGrid(out, imgs, n, flow.spec.shape, Math.ceil(Math.sqrt(n)));
    if (f.json) emit({ type: 'summary', n, temperature, seed, out, samplesPerSec: sec > 0 ? n / sec : null });
    else console.log(`${n} samples (temperature ${temperature}) → ${out}`);
    return;
  }
  const xs = checkpointSamples(path, () => flow.sample(n, { temperature, seed, labels }));
  const sec = (performance.now() - t0) / 1000;
  scatter(xs, out, flow.trainInfo);
  if (f.json) emit({ type: 'summary', n, temperature, seed, out, samplesPerSec: sec > 0 ? n / sec : null });
  else console.log(`${n} samples (temperature ${temperature}) → ${out}`);
}

/** `eval` of a flow checkpoint: held-out NLL on 2-D points, or bits per dimension on Fashion-MNIST. */
export async function evalFlowNet(path: string, f: Flags): Promise<void> {
  const flow = loadCheckpointFlow(path);
  const info = flow.trainInfo ?? {};
  const conditional = flow.contextSize > 0;
  if (flow.space !== 'pixels') {
    if (conditional)
      throw new ConfigError(`${path} is a class-conditional flow on points: eval has no labels to give it`);
    return evalPoints(path, f, info, flow.dim, async (x) => (await flow.testNll(x)).nll);
  }
  const data = str(f, 'data') ?? 'fashion-mnist';
  if (data !== 'fashion-mnist')
    throw new ConfigError(`${path} is an image flow: it scores fashion-mnist images, not --data ${data}`);
  const shape = flow.spec.shape;
  if (shape.join(',') !== FASHION_SHAPE.join(','))
    throw new ConfigError(
      `${path} is an image flow of shape [${shape.join(', ')}]; eval scores Fashion-MNIST test images, which are [${FASHION_SHAPE.join(', ')}]`,
    );
  const seed = typeof info.seed === 'number' && Number.isSafeInteger(info.seed) ? info.seed : 0;
  const n = intFlag(f, 'n', 1, FASHION_TEST_IMAGES) ?? FASHION_TEST_IMAGES;
  const te = loadFashionMnist('test', { limit: n });
  const t0 = performance.now();
  const r = await scoreCheckpoint(path, 'fashion-mnist', () =>
    flow.testNll(te.images, { labels: conditional ? te.labels : undefined, seed: seed + 7 }),
  );
  const sec = (performance.now() - t0) / 1000;
  if (f.json)
    emit({
      type: 'summary',
      data: 'fashion-mnist',
      n: te.n,
      testNll: r.nll,
      testBpd: r.bpd,
      imagesPerSec: te.n / sec,
    });
  else
    console.log(
      `fashion-mnist test: ${r.bpd.toFixed(4)} bits/dim (${r.nll.toFixed(2)} nats per image) over ${te.n} images`,
    );
}
