/**
 * Captioner throughput on Fashion-MNIST caption canvases (CPU), at the CLI defaults (CNN 8-16-32, GRU
 * H 128, batch 32): training captions/s with teacher forcing and with scheduled sampling at ε = 0.5 (the
 * extra sequential pass that picks the fed words), and captions/s at inference, greedy (batched) and beam
 * 3. Native only: the captioner has no TypeScript training backend (its float64 reference is the test
 * oracle). Skipped, with a note, when the data package is missing.
 */
import { type CaptionCanvases, loadCaptionCanvases } from '../data/canvases.js';
import { DataError } from '../errors.js';
import { Captioner } from '../models/captioner.js';

export async function benchCaption(quick: boolean): Promise<Record<string, unknown>[] | string> {
  let train: CaptionCanvases;
  let test: CaptionCanvases;
  try {
    train = loadCaptionCanvases('train', { count: 2000, seed: 0, limit: 5000 });
    test = loadCaptionCanvases('test', { count: quick ? 64 : 256, seed: 0, limit: 2000 });
  } catch (e) {
    if (e instanceof DataError) return `skipped: ${e.message}`;
    throw e;
  }
  const steps = quick ? 5 : 40;
  const rows: Record<string, unknown>[] = [];
  for (const feed of ['teacher', 'scheduled'] as const) {
    const model = Captioner.create({}, { seed: 0 });
    const sampling = feed === 'teacher' ? undefined : { feed, schedule: 'linear' as const, k: 0.5, c: 0 };
    await model.fit(train, { steps: 2, valEvery: 0, sampling });
    const s = await model.fit(train, { steps, valEvery: 0, sampling });
    const row: Record<string, unknown> = {
      model: `CNN 8-16-32 + GRU H128, batch 32, ${feed === 'teacher' ? 'teacher forcing' : 'scheduled ε 0.5'}`,
      trainCaptionsPerSec: Math.round(s.captionsPerSec),
    };
    if (feed === 'teacher') {
      const px = 56 * 56;
      let t0 = performance.now();
      model.greedy(test.images);
      row.greedyCaptionsPerSec = Math.round(test.n / ((performance.now() - t0) / 1000));
      const m = Math.min(test.n, quick ? 16 : 64);
      t0 = performance.now();
      for (let i = 0; i < m; i++) model.beam(test.images.subarray(i * px, (i + 1) * px), { beam: 3 });
      row.beam3CaptionsPerSec = Math.round(m / ((performance.now() - t0) / 1000));
    }
    rows.push(row);
  }
  return rows;
}
