/**
 * The captioner through its API and CLI: a short run learns to see (beats the most-common-caption
 * baseline on BLEU-4 clearly), beam width 1 is greedy decoding, checkpoints round-trip, and bad input
 * (wrong PNG size, a colour PNG, a checkpoint of another kind, unknown flags) is a typed error that
 * writes nothing.
 */
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CANVAS_SIZE,
  type CaptionCanvases,
  loadCaptionCanvases,
  mostCommonCaptionBaseline,
} from '../src/data/canvases.js';
import { CheckpointError, ConfigError } from '../src/errors.js';
import { savePng } from '../src/io/png.js';
import { corpusBleu } from '../src/metrics/bleu.js';
import { Captioner } from '../src/models/captioner.js';
import { runCli } from './helpers/cli.js';

/** `arflow ...args` run in the test's folder: exit code and standard output. */
function cli(args: string[]): { code: number | null; stdout: string } {
  const r = runCli(dir, args);
  return { code: r.status, stdout: r.stdout };
}

const PX = CANVAS_SIZE * CANVAS_SIZE;
const dir = mkdtempSync(join(tmpdir(), 'arflow-caption-'));
/** One item per canvas: short captions, so that a run of seconds shows the image is read (noun and place). */
const items = { minItems: 1, maxItems: 1 };
let train: CaptionCanvases;
let test: CaptionCanvases;
let model: Captioner;
const ckpt = join(dir, 'caption.safetensors');

beforeAll(async () => {
  train = loadCaptionCanvases('train', { count: 4000, seed: 1, ...items });
  test = loadCaptionCanvases('test', { count: 200, seed: 1, ...items });
  model = Captioner.create({ hidden: 64, embed: 16, channels: [8, 16, 16] }, { seed: 1 });
  await model.fit(train, { steps: 300, batchSize: 32, seed: 1 });
  await model.save(ckpt, { optimizer: true, train: { step: 300, data: { trainN: 4000, testN: 200, seed: 1 } } });
}, 60_000);

describe('Captioner', () => {
  it('a short run beats the most-common-caption baseline on BLEU-4 clearly', async () => {
    const pick = mostCommonCaptionBaseline(train);
    const refs = test.canvases.map((c) => c.captions);
    const base = corpusBleu(
      test.canvases.map((c) => pick(c.layout.filter((x) => x !== null).length)),
      refs,
    );
    const e = await model.evaluate(test, { beam: 2 });
    expect(e.bleu4).toBeGreaterThan(base + 0.15);
    expect(e.bleu4Beam).toBeGreaterThan(base + 0.15);
  }, 30_000);

  it('beam search of width 1 is greedy decoding', () => {
    const images = test.images.subarray(0, 6 * PX);
    const greedy = model.greedy(images);
    for (let i = 0; i < 6; i++) {
      const [b] = model.beam(images.subarray(i * PX, (i + 1) * PX), { beam: 1 });
      expect(b.tokens).toEqual(greedy[i].tokens);
      expect(b.logProb).toBeCloseTo(greedy[i].logProb, 5);
    }
  });

  it('round-trips through a checkpoint, and refuses one of another kind', async () => {
    const { model: back, train: state } = Captioner.load(ckpt);
    expect(state?.step).toBe(300);
    expect(back.hasOptimizerState).toBe(true);
    const images = test.images.subarray(0, 4 * PX);
    expect(back.caption(images)).toEqual(model.caption(images));
    const other = join(dir, 'other.safetensors');
    writeFileSync(other, 'not a checkpoint');
    expect(() => Captioner.load(other)).toThrow(CheckpointError);
    expect(() => model.caption(new Uint8Array(PX - 1))).toThrow(ConfigError);
  });

  it('an interrupted scheduled-sampling run resumed to its total ends with the same weights as one that never stopped', async () => {
    const N = 8;
    const small = loadCaptionCanvases('train', { count: 200, seed: 2, ...items });
    const opts = {
      steps: N,
      batchSize: 8,
      seed: 4,
      logEvery: 1,
      valEvery: 0,
      sampling: { feed: 'scheduled' as const, schedule: 'linear' as const, k: 1, c: 0.1 },
    };
    const make = () => Captioner.create({ hidden: 16, embed: 8, channels: [4, 4, 4] }, { seed: 5 });
    const whole = make();
    const full = await whole.fit(small, opts);
    const path = join(dir, 'half.safetensors');
    const stop = new AbortController();
    const first = await make().fit(small, {
      ...opts,
      checkpoint: { path },
      signal: stop.signal,
      onProgress: (p) => {
        if (p.step === N / 2) stop.abort();
      },
    });
    expect(first.steps).toBe(N / 2);
    const loaded = Captioner.load(path);
    expect(loaded.train?.step).toBe(N / 2);
    const rest = await loaded.model.fit(small, { ...opts, resume: loaded.train });
    expect(rest.steps).toBe(N);
    expect([...first.losses, ...rest.losses]).toEqual(full.losses);
    for (const p of whole.backend.paramInfo()) {
      expect(loaded.model.backend.getParam(p.name), p.name).toEqual(whole.backend.getParam(p.name));
    }
  });
});

describe('arflow caption / sample / eval / train caption', () => {
  it('captions a 56×56 grayscale PNG; refuses another size, a colour PNG and a non-caption checkpoint', async () => {
    const png = join(dir, 'canvas.png');
    savePng(png, CANVAS_SIZE, CANVAS_SIZE, test.images.slice(0, PX), 1);
    const ok = cli(['caption', ckpt, '--image', png, '--beam', '2', '--json']);
    expect(ok.code).toBe(0);
    const out = JSON.parse(ok.stdout.trim().split('\n').pop() as string);
    expect(out.captions[0].text).toBe(model.caption(test.images.subarray(0, PX), { beam: 2 })[0].text);

    const small = join(dir, 'small.png');
    savePng(small, 28, 28, new Uint8Array(28 * 28), 1);
    const bad = cli(['caption', ckpt, '--image', small, '--json']);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout.trim()).code).toBe('E_SHAPE');

    const rgb = join(dir, 'rgb.png');
    savePng(rgb, CANVAS_SIZE, CANVAS_SIZE, new Uint8Array(PX * 3), 3);
    const colour = cli(['caption', ckpt, '--image', rgb, '--json']);
    expect(JSON.parse(colour.stdout.trim()).code).toBe('E_DATA');

    const notCaption = join(dir, 'text.safetensors');
    writeFileSync(notCaption, 'x');
    const wrong = cli(['caption', notCaption, '--image', png, '--json']);
    expect(JSON.parse(wrong.stdout.trim()).code).toBe('E_CHECKPOINT');
  }, 30_000);

  it('sample writes a grid with the captions; eval reports the test metrics; unknown flags write nothing', async () => {
    const grid = join(dir, 'grid.png');
    const s = cli(['sample', ckpt, '--n', '4', '--out', grid, '--json']);
    expect(s.code).toBe(0);
    expect(existsSync(grid)).toBe(true);
    const sample = JSON.parse(s.stdout.trim());
    expect(sample.captions).toHaveLength(4);
    expect(typeof sample.captions[0].caption).toBe('string');

    const e = cli(['eval', ckpt, '--test-n', '50', '--beam', '2', '--json']);
    expect(e.code).toBe(0);
    const ev = JSON.parse(e.stdout.trim());
    expect(ev.testCanvases).toBe(50);
    expect(ev.testBleu4Beam).toBeGreaterThan(0);

    const out = join(dir, 'never.safetensors');
    const unknown = cli(['train', 'caption', '--bogus', '1', '--out', out, '--json']);
    expect(unknown.code).toBe(2);
    expect(JSON.parse(unknown.stdout.trim()).code).toBe('E_CONFIG');
    const ss = cli(['train', 'caption', '--ss-k', '3', '--out', out, '--json']);
    expect(JSON.parse(ss.stdout.trim()).message).toMatch(/--feed scheduled/);
    expect(existsSync(out)).toBe(false);
  }, 30_000);

  it('train caption runs end to end and prints the summary fields', async () => {
    const out = join(dir, 'cli.safetensors');
    const r = cli([
      'train',
      'caption',
      '--steps',
      '6',
      '--train-n',
      '200',
      '--test-n',
      '20',
      '--hidden',
      '16',
      '--channels',
      '4,4,4',
      '--feed',
      'scheduled',
      '--ss-k',
      '2',
      '--beam',
      '2',
      '--out',
      out,
      '--json',
    ]);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop() as string);
    expect(summary.type).toBe('summary');
    for (const k of ['testBleu4', 'testBleu4Beam', 'exactMatch', 'exactMatchBeam', 'baselineBleu4', 'captionsPerSec']) {
      expect(typeof summary[k], k).toBe('number');
    }
    expect(summary.out).toBe(out);
    expect(summary.feed).toBe('scheduled');
    expect(existsSync(out)).toBe(true);
  }, 30_000);
});
