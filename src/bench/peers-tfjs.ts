/**
 * TensorFlow.js 4 as a user drives it for a char-RNN, for `npm run bench -- --peers`: the Layers API
 * (`tf.sequential`, `layers.embedding` → `layers.gru` × L → `layers.dense` with softmax, compiled with
 * Adam and `sparseCategoricalCrossentropy`, trained with `model.trainOnBatch`), on the `cpu` (pure-JS
 * kernels) and `wasm` (XNNPACK, SIMD; single-threaded under Node) backends. Sampling is the tfjs
 * examples' way: the last `seq` characters re-fed through `model.predict` for every new one.
 *
 * The wasm backend has no kernel for the embedding's gradient (UnsortedSegmentSum), so there the input
 * is one-hot and the embedding is a bias-free `layers.dense` to the same width (the same function and
 * parameters). `recurrentInitializer: 'glorotUniform'` instead of the default orthogonal one, whose QR
 * needs tfjs-core's chained tensor methods, which only the `@tensorflow/tfjs` umbrella bundle registers;
 * the initial weights do not change the cost of a step. tfjs's GRU is the reset-before variant
 * (`resetAfter` is unsupported): the same GEMM sizes as arflow's PyTorch-style cell.
 *
 * Loaded only by dynamic import from peers.ts (the packages are devDependencies).
 */
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type { Batch } from '../data/batches.js';
import { sampleLogits } from '../sample/sampling.js';
import type { Rng } from '../util/rng.js';
import type { Size } from './char-rate.js';

type Tf = typeof import('@tensorflow/tfjs-core');
type Tfl = typeof import('@tensorflow/tfjs-layers');
type LayersModel = ReturnType<Tfl['sequential']>;

export type TfjsBackend = 'cpu' | 'wasm';

export interface Tfjs {
  tf: Tf;
  tfl: Tfl;
  versions: { core: string; layers: string; wasm: string };
}

/** Imports tfjs-core, the cpu and wasm backends (wasm binaries read from node_modules) and tfjs-layers. */
export async function loadTfjs(): Promise<Tfjs> {
  const tf = await import('@tensorflow/tfjs-core');
  await import('@tensorflow/tfjs-backend-cpu');
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const binary = createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm');
  wasm.setWasmPaths(`${dirname(binary)}/`);
  const tfl = await import('@tensorflow/tfjs-layers');
  return { tf, tfl, versions: { core: tf.version_core, layers: tfl.version_layers, wasm: wasm.version_wasm } };
}

/** A char-GRU on `backend` with the model's trainer and its sampler. */
export async function tfjsCharGru(lib: Tfjs, backend: TfjsBackend, s: Size, vocab: number) {
  const { tf, tfl } = lib;
  if (!(await tf.setBackend(backend))) throw new Error(`tfjs backend ${backend} failed to initialise`);
  await tf.ready();
  const oneHot = backend === 'wasm';
  const model: LayersModel = tfl.sequential();
  model.add(
    oneHot
      ? tfl.layers.dense({ inputShape: [s.seq, vocab], units: s.embed, useBias: false })
      : tfl.layers.embedding({ inputDim: vocab, outputDim: s.embed, inputLength: s.seq }),
  );
  for (let l = 0; l < s.layers; l++) {
    model.add(tfl.layers.gru({ units: s.hidden, returnSequences: true, recurrentInitializer: 'glorotUniform' }));
  }
  model.add(tfl.layers.dense({ units: vocab, activation: 'softmax' }));
  model.compile({ optimizer: tf.train.adam(1e-3), loss: 'sparseCategoricalCrossentropy' });

  const input = (ids: Uint32Array, rows: number) =>
    tf.tidy(() => {
      const x = tf.tensor2d(Int32Array.from(ids), [rows, s.seq], 'int32');
      return oneHot ? tf.cast(tf.oneHot(x, vocab), 'float32') : tf.cast(x, 'float32');
    });
  const extra: string[] = [];
  if (oneHot) extra.push('one-hot input, embedding as a bias-free dense layer');
  const threads =
    backend === 'wasm' && (await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT')) ? 'threaded' : 'single-threaded';
  if (backend === 'wasm') extra.push(`${(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) ? 'SIMD' : 'no SIMD'}`);
  return {
    params: model.countParams(),
    notes: [threads, ...extra].join(', '),
    /** One `trainOnBatch` on a `[B, T]` batch; the mean cross-entropy it reports. */
    async train(b: Batch): Promise<number> {
      const x = input(b.ids, s.batch);
      const y = tf.tensor3d(Float32Array.from(b.targets), [s.batch, s.seq, 1]);
      try {
        const loss = await model.trainOnBatch(x, y);
        return Array.isArray(loss) ? loss[0] : loss;
      } finally {
        x.dispose();
        y.dispose();
      }
    },
    /** Next character after `window` (the last `seq` ids): `model.predict` on the whole window. */
    next(window: Uint32Array, rng: Rng): number {
      const probs = tf.tidy(() => {
        const out = model.predict(input(window, 1)) as ReturnType<Tf['zeros']>;
        return tf.slice(out, [0, s.seq - 1, 0], [1, 1, vocab]);
      });
      const p = probs.dataSync();
      probs.dispose();
      return sampleLogits(Array.from(p, Math.log), { temperature: 1, topK: 0, topP: 1 }, rng);
    },
    dispose(): void {
      model.dispose();
    },
  };
}
