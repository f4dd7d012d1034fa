/**
 * Synchronous native calls do not pile up memory between turns of the event loop. The addon returns
 * its results in ArrayBuffers V8 owns, which V8's own allocation pressure collects mid-loop; the
 * external buffers napi-rs makes by default are freed only by finalizers that run when the loop
 * turns, so a per-token loop held every result it ever got (1,500 steps below: ~220 MiB).
 */
import { describe, expect, it } from 'vitest';
import { loadNative } from '../src/backend/native.js';

const MiB = 2 ** 20;

/** RSS growth over `calls` runs of `f`, with no await in between. */
function growth(calls: number, f: (i: number) => void): number {
  for (let i = 0; i < 50; i++) f(i); // warm-up: allocator pools, lazy setup
  const before = process.memoryUsage().rss;
  for (let i = 0; i < calls; i++) f(i);
  return (process.memoryUsage().rss - before) / MiB;
}

describe('synchronous native calls', () => {
  const addon = loadNative();

  it('1,500 sampling steps at batch 64, H 512 (150 KiB returned each) stay under 64 MiB of growth', () => {
    const batch = 64;
    const lm = new addon.NativeCharLm({ vocabSize: 80, embed: 16, hidden: 512, layers: 1 }, 'cpu');
    const tokens = new Uint32Array(batch).map((_, i) => i % 80);
    let state: Float32Array | null = null;
    const grew = growth(1_500, () => {
      const out = lm.step(state, tokens);
      expect(out.state.length).toBe(batch * 512);
      expect(out.logits.length).toBe(batch * 80);
      state = out.state;
    });
    expect(grew).toBeLessThan(64);
  });

  it('3,000 reads of a 1 MiB parameter stay under 64 MiB of growth', () => {
    const lm = new addon.NativeCharLm({ vocabSize: 80, embed: 16, hidden: 512, layers: 1 }, 'cpu');
    const name = lm.paramInfo().find((p) => p.shape.reduce((a, b) => a * b, 1) === 3 * 512 * 512)?.name;
    expect(name, 'the recurrent weight [3H, H]').toBeDefined();
    const grew = growth(3_000, () => {
      expect(lm.getParam(name as string).length).toBe(3 * 512 * 512);
    });
    expect(grew).toBeLessThan(64);
  });
});
