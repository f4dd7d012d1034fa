/**
 * Child process of the benchmark: trains a few steps at sequence length argv[2] and prints its peak
 * RSS next to the RSS it had before training, so the difference is what training keeps.
 */
import { readFileSync } from 'node:fs';
import { loadCorpus } from '../data/corpora.js';
import { Vocabulary } from '../data/vocab.js';
import { CharLM } from '../models/char-lm.js';
import { charLmStep } from './char-rate.js';

const seq = Number(process.argv[2]);
const size = JSON.parse(process.argv[3]) as { embed: number; hidden: number; layers: number; batch: number };
// A 200k-character slice: enough streams for T = 1024, small enough that loading it does not set the
// high-water mark the training is measured against.
const text = loadCorpus('moby-dick').slice(0, 200_000);
const vocab = Vocabulary.fromText(text);
const ids = vocab.encode(text);
const model = CharLM.create(vocab, size, { seed: 0 });
const mib = (kb: number) => +(kb / 1024).toFixed(1);

/**
 * Peak RSS of this process in KiB. Linux's getrusage maxRSS survives fork + exec, so a child of the
 * (large) benchmark process would report the parent's peak; VmHWM belongs to this address space alone.
 */
function peakKiB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    // not Linux: fall back to getrusage
  }
  return process.resourceUsage().maxRSS;
}
const baseline = process.memoryUsage().rss / 1024;
const step = charLmStep(model, ids, { ...size, seq });
for (let i = 0; i < 3; i++) await step();
console.log(JSON.stringify({ seq, baselineRssMiB: mib(baseline), peakRssMiB: mib(peakKiB()) }));
