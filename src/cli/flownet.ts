/**
 * The CLI for FlowNet models (`src/models/flownet.ts`): `arflow train flow --model glow|nice|maf|iaf|
 * realnvp --data fashion-mnist|<2-D density>`, and `arflow sample` / `arflow eval` of their checkpoints.
 * Image runs report bits per dimension (`testBpd`) and write a grid of samples and a PNG of latent
 * interpolations; 2-D runs write the density heat map beside a scatter of samples.
 */

import { loadFashionMnist } from '../data/fashion-mnist.js';
import { ConfigError } from '../errors.js';
import { sample2d } from '../flows/data2d.js';
import { imageGrid, savePng } from '../io/png.js';
import { gaussianNll } from '../models/flow.js';
import { FLOWNET_KIND, type Flow, Flow as FlowModel } from '../models/flownet.js';
import { glowSpec, iafSpec, mafSpec, niceSpec, realNvpImageSpec } from '../models/presets.js';
import type { FlowTrainProgress } from '../train/flow-trainer.js';
import type { Flags } from './args.js';
import { formatDuration, ProgressBar } from './progress.js';

export const FLOW_MODELS = ['realnvp', 'glow', 'nice', 'maf', 'iaf'] as const;
export type FlowModelName = (typeof FLOW_MODELS)[number];
export { FLOWNET_KIND };

const num = (f: Flags, k: string) => f[k] as number | undefined;
const str = (f: Flags, k: string) => f[k] as string | undefined;
const SHAPE: [number, number, number] = [1, 28, 28];
const CLASSES = 10;

function emit(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** The FlowNet of `--model` for images (`[1, 28, 28]`) or `dim`-vectors, from the flags. */
function buildFlow(model: FlowModelName, image: boolean, f: Flags, dim: number, seed: number): Flow {
  const context = f.conditional ? CLASSES : 0;
  const dimOrShape = image ? SHAPE : dim;
  const spec = (() => {
    switch (model) {
      case 'realnvp':
        if (!image) throw new ConfigError('internal: the vector Real NVP has its own class');
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
  return FlowModel.create(spec, { seed, pixels: image });
}

function describe(flow: Flow): string {
  const counts = new Map<string, number>();
  for (const l of flow.spec.layers) counts.set(l.type, (counts.get(l.type) ?? 0) + 1);
  const params = flow.tensorInfo().params.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  return `${[...counts].map(([k, v]) => `${v} ${k}`).join(', ')}; ${params.toLocaleString('en-US')} parameters`;
}

/** `[rows · cols]` grid of 28×28 images, upscaled ×`scale`, saved as a grayscale PNG. */
function saveGrid(path: string, images: Uint8Array, n: number, columns: number, scale = 2): void {
  const g = imageGrid(images, n, 28, 28, { columns, pad: 2, padValue: 255 });
  const w = g.width * scale;
  const h = g.height * scale;
  const px = new Uint8Array(w * h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) px[y * w + x] = 255 - g.pixels[Math.floor(y / scale) * g.width + Math.floor(x / scale)];
  savePng(path, w, h, px, 1);
}

/** Samples (one row per class for a conditional flow) and interpolations between test images. */
function imagePictures(
  flow: Flow,
  test: { images: Uint8Array; labels: Uint8Array },
  out: string,
  interp: string,
  temperature: number,
  seed: number,
): void {
  const conditional = flow.contextSize > 0;
  const n = 100;
  const labels = conditional ? Array.from({ length: n }, (_, i) => Math.floor(i / 10)) : undefined;
  saveGrid(out, flow.sampleImages(n, { temperature, seed, labels }), n, 10);
  const rows = 6;
  const steps = 10;
  const D = 784;
  const all = new Uint8Array(rows * steps * D);
  for (let r = 0; r < rows; r++) {
    const a = test.images.subarray(2 * r * D, (2 * r + 1) * D);
    const b = test.images.subarray((2 * r + 1) * D, (2 * r + 2) * D);
    const label = conditional ? test.labels[2 * r] : undefined;
    all.set(flow.interpolate(a, b, steps, { label }) as Uint8Array, r * steps * D);
  }
  saveGrid(interp, all, rows * steps, steps);
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
    const when = byTime
      ? `${formatDuration(p.elapsedSec)} of ${formatDuration(budget)}`
      : `ETA ${formatDuration(p.etaSec)}`;
    o.bar?.update(
      byTime ? p.elapsedSec / budget : p.step / o.steps,
      byTime ? `step ${p.step}` : `${p.step}/${o.steps}`,
      `nll ${p.loss.toFixed(o.digits)} · ${rate} · lr ${p.lr.toExponential(1)} · ${when}`,
    );
  };
}

export interface FlowNetTrainArgs {
  f: Flags;
  json: boolean;
  data: string;
  model: FlowModelName;
  seed: number;
  steps: number;
  seconds?: number;
  out: string;
  png: string;
  densityPng: (model: Flow, path: string, train: Float32Array) => Promise<void>;
}

export async function trainFlowNet(a: FlowNetTrainArgs): Promise<void> {
  const { f, json, data, model: modelName, seed, steps, seconds, out, png } = a;
  const image = data === 'fashion-mnist';
  const bar = json ? null : new ProgressBar();
  let train: Float32Array | Uint8Array;
  let test: Float32Array | Uint8Array;
  let trainLabels: Uint8Array | undefined;
  let testLabels: Uint8Array | undefined;
  let testImages: { images: Uint8Array; labels: Uint8Array } | undefined;
  const n = num(f, 'n') ?? (image ? 60000 : 20000);
  const testN = num(f, 'test-n') ?? (image ? 10000 : 5000);
  if (image) {
    const tr = loadFashionMnist('train', { limit: n });
    const te = loadFashionMnist('test', { limit: testN });
    train = tr.images;
    test = te.images;
    trainLabels = tr.labels;
    testLabels = te.labels;
    testImages = te;
  } else {
    if (f.conditional) throw new ConfigError('--conditional needs labelled data: use --data fashion-mnist');
    train = sample2d(data, n, seed);
    test = sample2d(data, testN, seed + 1_000_003);
  }
  const flow = buildFlow(modelName, image, f, 2, seed);
  const conditional = flow.contextSize > 0;
  const nTrain = train.length / flow.dim;
  bar?.log(
    `train flow: ${data}, ${nTrain.toLocaleString('en-US')} examples; ${modelName}${conditional ? ' (class-conditional)' : ''}: ${describe(flow)}`,
  );
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.once('SIGINT', onSigint);
  const unit = image ? 'img/s' : 'pts/s';
  const onProgress = flowProgress({ json, bar, steps, seconds, unit, digits: image ? 1 : 3 });
  let summary: Awaited<ReturnType<Flow['fit']>>;
  try {
    summary = await flow.fit(train, {
      steps,
      batchSize: num(f, 'batch') ?? (image ? 64 : 256),
      lr: num(f, 'lr'),
      clip: num(f, 'clip') ?? (image ? 100 : undefined),
      seed,
      seconds,
      signal: stop.signal,
      onProgress,
      logEvery: Math.max(1, Math.min(image ? 10 : 50, Math.floor(steps / 20))),
      labels: conditional ? trainLabels : undefined,
    });
  } finally {
    process.off('SIGINT', onSigint);
    bar?.end();
  }
  bar?.log('scoring the test set…');
  const t0 = performance.now();
  const scored = await flow.testNll(test, { labels: conditional ? testLabels : undefined, seed: seed + 7 });
  const evalSec = (performance.now() - t0) / 1000;
  await flow.save(out, { train: { data, n: nTrain, seed, steps: summary.steps, model: modelName } });
  const temperature = num(f, 'temperature') ?? (image ? 0.7 : 1);
  let interp: string | undefined;
  if (image && testImages) {
    interp = `${png.replace(/\.png$/, '')}-interp.png`;
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
    stoppedEarly: summary.aborted || summary.outOfTime,
    data,
    model: modelName,
    backend: 'native',
  };
  if (image) {
    result.testBpd = scored.bpd;
    result.testImages = test.length / flow.dim;
    result.interpolationPng = interp;
    result.evalImagesPerSec = (result.testImages as number) / evalSec;
  } else {
    result.gaussianNll = gaussianNll(train as Float32Array, test as Float32Array, 2);
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
      `held-out NLL ${scored.nll.toFixed(3)} nats (full-covariance Gaussian: ${(result.gaussianNll as number).toFixed(3)})`,
    );
    console.log(`saved ${out}\npicture ${png} (log-density | samples)`);
  }
}

export async function sampleFlowNet(
  path: string,
  f: Flags,
  defaultOut: string,
  scatter: (xs: Float32Array, out: string) => void,
): Promise<void> {
  const flow = FlowModel.load(path);
  const temperature = num(f, 'temperature') ?? (flow.space === 'pixels' ? 0.7 : 1);
  const seed = num(f, 'seed') ?? 0;
  const label = num(f, 'label');
  const out = str(f, 'out') ?? defaultOut;
  const t0 = performance.now();
  if (flow.space === 'pixels') {
    const n = num(f, 'n') ?? 64;
    const conditional = flow.contextSize > 0;
    if (conditional && label !== undefined && !(Number.isInteger(label) && label >= 0 && label < flow.contextSize))
      throw new ConfigError(`--label must be a class in 0..${flow.contextSize - 1}, got ${label}`);
    const labels = conditional ? Array.from({ length: n }, (_, i) => label ?? i % flow.contextSize) : undefined;
    if (!conditional && label !== undefined)
      throw new ConfigError('--label needs a class-conditional flow (trained with --conditional)');
    const imgs = flow.sampleImages(n, { temperature, seed, labels });
    const sec = (performance.now() - t0) / 1000;
    saveGrid(out, imgs, n, Math.ceil(Math.sqrt(n)));
    if (f.json) emit({ type: 'summary', n, temperature, seed, out, samplesPerSec: sec > 0 ? n / sec : null });
    else console.log(`${n} samples (temperature ${temperature}) → ${out}`);
    return;
  }
  if (flow.dim !== 2) throw new ConfigError(`sample pictures need a 2-D or image flow; this one has dim ${flow.dim}`);
  const n = num(f, 'n') ?? 5000;
  const xs = flow.sample(n, { temperature, seed });
  const sec = (performance.now() - t0) / 1000;
  scatter(xs, out);
  if (f.json) emit({ type: 'summary', n, temperature, seed, out, samplesPerSec: sec > 0 ? n / sec : null });
  else console.log(`${n} samples (temperature ${temperature}) → ${out}`);
}

export async function evalFlowNet(path: string, f: Flags): Promise<void> {
  const flow = FlowModel.load(path);
  const info = flow.trainInfo ?? {};
  const seed = typeof info.seed === 'number' ? info.seed : 0;
  const conditional = flow.contextSize > 0;
  if (flow.space === 'pixels') {
    const n = num(f, 'n') ?? 10000;
    const te = loadFashionMnist('test', { limit: n });
    const t0 = performance.now();
    const r = await flow.testNll(te.images, { labels: conditional ? te.labels : undefined, seed: seed + 7 });
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
    return;
  }
  const data = str(f, 'data') ?? (typeof info.data === 'string' ? info.data : undefined);
  if (data === undefined) throw new ConfigError('give --data NAME: the checkpoint does not record its data set');
  if (flow.dim !== 2) throw new ConfigError(`eval on the 2-D densities needs a 2-D flow; this one has dim ${flow.dim}`);
  const n = num(f, 'n') ?? 5000;
  const test = sample2d(data, n, seed + 1_000_003);
  const r = await flow.testNll(test);
  const trainN = typeof info.n === 'number' ? info.n : 20000;
  const gauss = gaussianNll(sample2d(data, trainN, seed), test, 2);
  if (f.json) emit({ type: 'summary', data, n, testNll: r.nll, gaussianNll: gauss });
  else console.log(`${data}: held-out NLL ${r.nll.toFixed(4)} nats over ${n} points (Gaussian ${gauss.toFixed(4)})`);
}
