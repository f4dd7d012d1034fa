/**
 * Image-flow throughput on Fashion-MNIST (CPU): training images/s (forward, backward and AdamW on a
 * batch of 64 dequantised, logit-transformed 28×28 images) and scoring images/s, for the multi-scale
 * Real NVP and Glow presets at their CLI defaults. Skipped, with a note, when the data is missing.
 */
import { fashionMnistAvailable, loadFashionMnist } from '../data/fashion-mnist.js';
import type { Flow } from '../models/flownet.js';
import { Glow, RealNVPImage } from '../models/flownet.js';
import type { GlowConfig, RealNvpImageConfig } from '../models/presets.js';

/** Training batch of the image-flow rows. */
export const FLOW_BATCH = 64;
/** Fashion-MNIST images the rows train on (the first ones of the training split). */
export const FLOW_IMAGES = 2048;
const shape: [number, number, number] = [1, 28, 28];
/** The two image flows of the bench, at the CLI's defaults (`--torch` builds the same networks in PyTorch). */
export const IMAGE_FLOWS: {
  realnvp: { name: string; config: RealNvpImageConfig };
  glow: { name: string; config: GlowConfig };
} = {
  realnvp: { name: 'Real NVP multi-scale (2 scales, ResNet width 32, 1 block)', config: { shape } },
  glow: { name: 'Glow (L=2, K=4, width 32)', config: { shape, levels: 2, steps: 4, channels: 32 } },
};

/** A fresh flow of the row `which` (seed 0). */
export function createImageFlow(which: keyof typeof IMAGE_FLOWS): Flow {
  return which === 'realnvp' ? RealNVPImage.create(IMAGE_FLOWS.realnvp.config) : Glow.create(IMAGE_FLOWS.glow.config);
}

/**
 * One timed training round of `flow` on `images`: `steps` steps, or (without `steps`) as many as fit in
 * `seconds`. Training images/s as `fit` reports it (time inside steps) and over the round's wall time.
 */
export async function flowTrainRound(
  flow: Flow,
  images: Uint8Array,
  opts: { steps?: number; seconds?: number; seed?: number },
): Promise<{ steps: number; imagesPerSec: number; wallImagesPerSec: number }> {
  const t0 = performance.now();
  const s = await flow.fit(images, {
    steps: opts.steps ?? 1_000_000_000,
    seconds: opts.steps === undefined ? opts.seconds : undefined,
    batchSize: FLOW_BATCH,
    seed: opts.seed ?? 1,
  });
  const sec = (performance.now() - t0) / 1000;
  return { steps: s.steps, imagesPerSec: s.samplesPerSec, wallImagesPerSec: (s.steps * FLOW_BATCH) / sec };
}

/**
 * One timed scoring round of `flow`: `flow.bitsPerDim` over successive blocks of 256 of `images` (batches
 * of 64 inside) until `seconds` have passed; images scored per second of wall time.
 */
export async function flowScoreRound(flow: Flow, images: Uint8Array, seconds: number): Promise<number> {
  const block = 256 * 784;
  const blocks = Math.max(1, Math.floor(images.length / block));
  const t0 = performance.now();
  let scored = 0;
  for (let b = 0; scored === 0 || performance.now() - t0 < seconds * 1000; b = (b + 1) % blocks) {
    const part = images.subarray(b * block, Math.min(images.length, (b + 1) * block));
    await flow.bitsPerDim(part, { seed: b });
    scored += part.length / 784;
  }
  return scored / ((performance.now() - t0) / 1000);
}

async function measure(name: string, flow: Flow, images: Uint8Array, quick: boolean) {
  const batch = FLOW_BATCH;
  await flow.fit(images, { steps: 2, batchSize: batch });
  const steps = quick ? 3 : 15;
  const s = await flowTrainRound(flow, images, { steps, seed: 1 });
  const scoreN = quick ? 256 : 1024;
  const t1 = performance.now();
  await flow.bitsPerDim(images.subarray(0, scoreN * 784));
  const scoreSec = (performance.now() - t1) / 1000;
  const params = flow.tensorInfo().params.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  return {
    model: name,
    parameters: params,
    trainImagesPerSec: Math.round(s.imagesPerSec),
    trainWallImagesPerSec: Math.round(s.wallImagesPerSec),
    scoreImagesPerSec: Math.round(scoreN / scoreSec),
  };
}

export async function benchImageFlows(quick: boolean): Promise<Record<string, unknown>[] | string> {
  if (!fashionMnistAvailable()) return 'skipped: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)';
  const { images } = loadFashionMnist('train', { limit: FLOW_IMAGES });
  return [
    await measure(IMAGE_FLOWS.realnvp.name, createImageFlow('realnvp'), images, quick),
    await measure(IMAGE_FLOWS.glow.name, createImageFlow('glow'), images, quick),
  ];
}
