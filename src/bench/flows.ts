/**
 * Image-flow throughput on Fashion-MNIST (CPU): training images/s (forward, backward and AdamW on a
 * batch of 64 dequantised, logit-transformed 28×28 images) and scoring images/s, for the multi-scale
 * Real NVP and Glow presets at their CLI defaults. Skipped, with a note, when the data is missing.
 */
import { fashionMnistAvailable, loadFashionMnist } from '../data/fashion-mnist.js';
import type { Flow } from '../models/flownet.js';
import { Glow, RealNVPImage } from '../models/flownet.js';

async function measure(name: string, flow: Flow, images: Uint8Array, quick: boolean) {
  const batch = 64;
  await flow.fit(images, { steps: 2, batchSize: batch });
  const steps = quick ? 3 : 15;
  const t0 = performance.now();
  const s = await flow.fit(images, { steps, batchSize: batch, seed: 1 });
  const trainSec = (performance.now() - t0) / 1000;
  const scoreN = quick ? 256 : 1024;
  const t1 = performance.now();
  await flow.bitsPerDim(images.subarray(0, scoreN * 784));
  const scoreSec = (performance.now() - t1) / 1000;
  const params = flow.tensorInfo().params.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  return {
    model: name,
    parameters: params,
    trainImagesPerSec: Math.round(s.samplesPerSec),
    trainWallImagesPerSec: Math.round((steps * batch) / trainSec),
    scoreImagesPerSec: Math.round(scoreN / scoreSec),
  };
}

export async function benchImageFlows(quick: boolean): Promise<Record<string, unknown>[] | string> {
  if (!fashionMnistAvailable()) return 'skipped: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)';
  const { images } = loadFashionMnist('train', { limit: 2048 });
  const shape: [number, number, number] = [1, 28, 28];
  return [
    await measure(
      'Real NVP multi-scale (2 scales, ResNet width 32, 1 block)',
      RealNVPImage.create({ shape }),
      images,
      quick,
    ),
    await measure(
      'Glow (L=2, K=4, width 32)',
      Glow.create({ shape, levels: 2, steps: 4, channels: 32 }),
      images,
      quick,
    ),
  ];
}
