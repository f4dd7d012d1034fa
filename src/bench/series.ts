/**
 * Series-model throughput on the sensor data (CPU): training time steps/s (forward, mixture or Gaussian
 * likelihood, backward through time and AdamW on batch 16 × 64 steps) of the native backend and the
 * TypeScript reference in the same run, at the CLI defaults (GRU, H 32, MDN K 16). Skipped, with a note,
 * when the data package is missing.
 */
import { loadSeries, splitSeries } from '../data/series.js';
import { DataError } from '../errors.js';
import { SeriesModel } from '../models/series.js';

export async function benchSeries(quick: boolean): Promise<Record<string, unknown>[] | string> {
  let split: ReturnType<typeof splitSeries>;
  try {
    split = splitSeries(loadSeries('sensors'));
  } catch (e) {
    if (e instanceof DataError) return `skipped: ${e.message}`;
    throw e;
  }
  const rows: Record<string, unknown>[] = [];
  for (const likelihood of ['mdn', 'gaussian'] as const) {
    const rate = async (backend: 'native' | 'js', steps: number) => {
      const model = SeriesModel.create({ dim: 2, likelihood }, { backend, seed: 0 });
      await model.fit(split, { steps: 2, valEvery: 0 });
      const s = await model.fit(split, { steps, valEvery: 0 });
      return s.stepsPerSec;
    };
    const native = await rate('native', quick ? 20 : 200);
    const js = await rate('js', quick ? 3 : 20);
    rows.push({
      model: likelihood === 'mdn' ? 'GRU H32 + MDN K16, batch 16 × 64' : 'GRU H32 + Gaussian, batch 16 × 64',
      nativeTimeStepsPerSec: Math.round(native),
      jsTimeStepsPerSec: Math.round(js),
      speedupNativeOverJs: +(native / js).toFixed(1),
    });
  }
  return rows;
}
