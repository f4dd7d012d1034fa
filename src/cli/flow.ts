/**
 * `arflow train flow`, `arflow sample` and `arflow eval` of flow checkpoints. A 2-D Real NVP run
 * (density estimation on the toy densities of `src/flows/data2d.ts`, with a PNG of the learned density
 * and samples) trains here on the RealNVP model, on the native or the TypeScript backend; other models
 * and image data train through `flownet.ts`, which also samples and scores every flow checkpoint (those
 * of the 2-D Real NVP, old ones of arflow ≤ 0.1.0 included). Output conventions as in main.ts (`--json`:
 * progress lines, one summary).
 */
import { dirname, join, parse } from 'node:path';
import { ConfigError } from '../errors.js';
import { DENSITIES, sample2d } from '../flows/data2d.js';
import { heatmapRgb, scatterRgb } from '../io/png.js';
import { RealNVP } from '../models/flow.js';
import { FLOW_TRAIN_DEFAULTS } from '../train/flow-trainer.js';
import {
  checkOutputPath,
  emit,
  type Flags,
  helpText,
  intFlag,
  num,
  parseArgs,
  positiveFlag,
  samePath,
  savePicture,
  str,
} from './args.js';
import { ARCH_FLAGS, EVAL_FLOW_FLAGS, FLOW_DATA, SAMPLE_FLOW_FLAGS, TRAIN_FLOW_FLAGS } from './flow-flags.js';
import { archOf, checkResume, openResume, resumingText } from './flow-resume.js';
import {
  baselineFields,
  baselineText,
  checkPicturePath,
  evalFlowNet,
  FASHION_TEST_IMAGES,
  FASHION_TRAIN_IMAGES,
  type FlowModelName,
  flowProgress,
  gaussianBaseline,
  MAX_POINTS,
  sampleFlowNet,
  scoreAfterTraining,
  TEST_SEED_OFFSET,
  trainFlowNet,
} from './flownet.js';
import { formatDuration, ProgressBar } from './progress.js';

const TEST_N = 5000;
/** Held-out points scored for the progress lines of a 2-D Real NVP run (the first of the test set). */
const VAL_POINTS = 5000;

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
  return sampleFlowNet(path, f, withExt(path, '-samples.png'), (xs, out, info) => {
    // On the extent of the density it was trained on, when the checkpoint says which.
    const extent =
      info && typeof info.data === 'string' && (FLOW_DATA as readonly string[]).includes(info.data)
        ? extentOf(sample2d(info.data, 5000, 0))
        : extentOf(xs);
    savePicture(out, 256, 256, scatterRgb(xs, 256, 256, extent), 3);
  });
}

export async function cmdEvalFlow(path: string, argv: string[]): Promise<void> {
  const { positional, flags: f } = parseArgs(argv, EVAL_FLOW_FLAGS);
  if (f.help) {
    console.log(helpText('usage: arflow eval FLOW.safetensors [options]', EVAL_FLOW_FLAGS));
    return;
  }
  if (positional.length !== 1) throw new ConfigError('arflow eval needs exactly one checkpoint FILE');
  return evalFlowNet(path, f);
}
