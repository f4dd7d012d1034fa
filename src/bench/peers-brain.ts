/**
 * brain.js 1.x's recurrent GRU (`brain.recurrent.GRU`, pure JS, one sequence at a time: batch 1) for
 * `npm run bench -- --peers`. Its `train(data)` loops `trainPattern` over the sequences (forward,
 * softmax cross-entropy per character, backprop through time, its RMSProp-style update with clipping);
 * the bench calls that same per-sequence method on character ids, because `train` on strings builds its
 * own vocabulary and then widens the embedding to the vocabulary size, which would change the model. The
 * net has `inputSize` = embed (its embedding table), `inputRange` / `outputSize` = vocabulary (plus its
 * start/end token) and `hiddenLayers` = L × H: the arflow model's sizes.
 *
 * brain.js 2.x (beta) was not used: it needs gpu.js 2 as a peer, which pulls in the headless `gl`
 * package and its native build; 1.6.1 (the registry's `latest`) needs only gpu.js 1 (pure JS).
 * Loaded only by dynamic import from peers.ts (a devDependency).
 */
import { createRequire } from 'node:module';
import type { Size } from './char-rate.js';

/** The parts of brain.js 1.x's recurrent net used here (its typings declare only train / run). */
interface BrainRecurrent {
  initialize(): void;
  trainPattern(input: number[], logErrorRate?: boolean): number | undefined;
}

type BrainModule = { recurrent: { GRU: new (options: Record<string, unknown>) => BrainRecurrent } };

export async function loadBrain(): Promise<{ brain: BrainModule; version: string }> {
  const mod = (await import('brain.js')) as unknown as { default?: BrainModule } & BrainModule;
  const version = (createRequire(import.meta.url)('brain.js/package.json') as { version: string }).version;
  return { brain: mod.default ?? mod, version };
}

/** A brain.js GRU of the workload's sizes; `train` takes one sequence of `seq` character ids. */
export function brainCharGru(brain: BrainModule, s: Size, vocab: number) {
  const net = new brain.recurrent.GRU({
    inputSize: s.embed,
    inputRange: vocab,
    outputSize: vocab,
    hiddenLayers: Array.from({ length: s.layers }, () => s.hidden),
    learningRate: 1e-3,
  });
  net.initialize();
  return {
    /** One sequence: its perplexity-based error as brain.js reports it. */
    train(ids: ArrayLike<number>): number {
      return net.trainPattern(Array.from(ids), true) ?? Number.NaN;
    },
  };
}
