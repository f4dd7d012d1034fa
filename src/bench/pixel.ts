/**
 * Pixel-RNN throughput on Fashion-MNIST (CPU), at the CLI defaults (Row LSTM and Row GRU, H 32, 2
 * layers, 8-bit images with the 256-way softmax, batch 16): training pixels/s (forward, loss, backward
 * over the rows, AdamW) of the native backend and of the TypeScript reference in the same run, and
 * sampling images/s of the native sampler (784 sequential pixel draws per image, a batch of 16 at once).
 * Skipped, with a note, when the data package is missing.
 */
import { loadFashionMnist } from '../data/fashion-mnist.js';
import { DataError } from '../errors.js';
import { PixelRNN } from '../models/pixel-rnn.js';

export async function benchPixel(quick: boolean): Promise<Record<string, unknown>[] | string> {
  let images: Uint8Array;
  try {
    images = loadFashionMnist('train', { limit: 2000 }).images;
  } catch (e) {
    if (e instanceof DataError) return `skipped: ${e.message}`;
    throw e;
  }
  const rows: Record<string, unknown>[] = [];
  for (const cell of ['lstm', 'gru'] as const) {
    const rate = async (backend: 'native' | 'js', steps: number) => {
      const model = PixelRNN.create({ cell }, { backend, seed: 0 });
      await model.fit(images, { steps: 1, batchSize: 16, logEvery: 1000 });
      const s = await model.fit(images, { steps, batchSize: 16, logEvery: 1000 });
      return { pixelsPerSec: s.samplesPerSec * 784, model };
    };
    const native = await rate('native', quick ? 3 : 20);
    const js = await rate('js', 1);
    const n = 16;
    const t0 = performance.now();
    await native.model.sample({ n, seed: 1 });
    const sampleSec = (performance.now() - t0) / 1000;
    rows.push({
      model: `Row ${cell.toUpperCase()} H32 × 2, 256-way, batch 16`,
      nativeTrainPixelsPerSec: Math.round(native.pixelsPerSec),
      jsTrainPixelsPerSec: Math.round(js.pixelsPerSec),
      speedupNativeOverJs: +(native.pixelsPerSec / js.pixelsPerSec).toFixed(1),
      nativeSampleImagesPerSec: +(n / sampleSec).toFixed(2),
    });
  }
  return rows;
}
