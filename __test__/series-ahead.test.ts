/**
 * The series model's joint prediction of the next n steps (`predictAhead` n: heads `ahead.{k}.*` for
 * k = 2..n on the same hidden state, target blocks `[n, B, T, D]` whose all-NaN rows are absent, loss
 * Σ_k of head k's mean NLL over its scored rows) and `outputs: 'last'` (the loss scores each window's
 * final step only). Checked: the reference's loss written out directly and its gradients against
 * central differences in float64, the native backend against the reference, the windows' ahead blocks
 * against the series, n = 1 / 'every' being exactly the plain model, checkpoints, typed errors and the
 * CLI's new summary fields.
 *
 * Native-vs-reference comparisons use the rule of helpers/oracle.ts (FWD_TOL, GRAD_TOL).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { gaussianNll, mixtureNll } from '../src/backend/js/mixture.js';
import {
  JsSeriesModel,
  type SeriesBackend,
  type SeriesShape,
  seriesForward,
  seriesLossAndGrads,
  seriesNll,
  seriesParamInfo,
} from '../src/backend/js/series.js';
import { NativeSeriesModel } from '../src/backend/native-series.js';
import { loadSeries, seriesWindows, splitSeries } from '../src/data/series.js';
import { ConfigError, DataError, ShapeError } from '../src/errors.js';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.js';
import { SeriesModel } from '../src/models/series.js';
import { Rng } from '../src/util/rng.js';
import { jsonLines, runCli } from './helpers/cli.js';
import { expectClose as expectCloseFd, numericGrad, uniform } from './helpers/numeric.js';
import {
  expectClose,
  expectNonTrivial,
  expectScalarClose,
  FWD_TOL,
  GRAD_TOL,
  twins,
  uniform as uniform32,
  withHead,
} from './helpers/oracle.js';

const dir = mkdtempSync(join(tmpdir(), 'arflow-series-ahead-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Params = Record<string, Float64Array>;

const GAUSS: SeriesShape = { dim: 2, hidden: 4, layers: 2, cell: 'lstm', likelihood: 'gaussian', predictAhead: 3 };
const MDN: SeriesShape = {
  dim: 2,
  hidden: 4,
  layers: 1,
  cell: 'gru',
  likelihood: 'mdn',
  components: 2,
  predictAhead: 3,
};
const [B, T] = [2, 4];

function randomParams(shape: SeriesShape, rng: Rng): Params {
  const p: Params = {};
  for (const { name, shape: dims } of seriesParamInfo(shape)) {
    p[name] = uniform(
      rng,
      dims.reduce((a, b) => a * b, 1),
      0.6,
    );
  }
  return p;
}

/**
 * n target blocks `[n, B, T, D]` of random values; absent (all NaN) in blocks k ≥ 2: the last step of
 * stream 1 in block 2, the last two steps of stream 1 and the last of stream 0 in block 3.
 */
function aheadTargets(rng: Rng, n: number, D: number): Float64Array {
  const y = uniform(rng, n * B * T * D, 1.2);
  const absent = [
    [2, 1, 3],
    [3, 1, 2],
    [3, 1, 3],
    [3, 0, 3],
  ];
  for (const [k, b, t] of absent) {
    if (k <= n) y.fill(Number.NaN, (((k - 1) * B + b) * T + t) * D, (((k - 1) * B + b) * T + t + 1) * D);
  }
  return y;
}

function headNll(shape: SeriesShape, raw: Float64Array, y: Float64Array): number {
  return shape.likelihood === 'gaussian'
    ? gaussianNll(raw, y, 1, shape.dim).nll
    : mixtureNll(raw, y, 1, shape.dim, shape.components as number).nll;
}

describe('series predictAhead: the reference', () => {
  it('adds heads ahead.2, ahead.3 after the plain parameters, which n = 1 leaves unchanged', () => {
    const names = seriesParamInfo(MDN).map((p) => p.name);
    const plain = seriesParamInfo({ ...MDN, predictAhead: undefined }).map((p) => p.name);
    expect(seriesParamInfo({ ...MDN, predictAhead: 1 })).toEqual(seriesParamInfo({ ...MDN, predictAhead: undefined }));
    expect(names.slice(0, plain.length)).toEqual(plain);
    expect(names.slice(plain.length)).toEqual(['ahead.2.weight', 'ahead.2.bias', 'ahead.3.weight', 'ahead.3.bias']);
  });

  for (const shape of [GAUSS, MDN]) {
    for (const outputs of ['every', 'last'] as const) {
      const s: SeriesShape = { ...shape, outputs };
      it(`${s.likelihood}, outputs ${outputs}: the loss is Σ_k of head k’s mean NLL over its scored rows, written out`, () => {
        const rng = new Rng(3);
        const params = randomParams(s, rng);
        const x = uniform(rng, B * T * s.dim, 1);
        const y = aheadTargets(rng, 3, s.dim);
        const got = seriesLossAndGrads(s, params, x, y, B, T, null, 'f64').loss;
        // Head k's raw outputs are the plain model's with head k in place of `head`.
        const plain: SeriesShape = { ...s, predictAhead: 1, outputs: 'every' };
        const D = s.dim;
        const size = seriesForward(plain, params, x, B, T, null, 'f64').raw.length / (B * T);
        let want = 0;
        for (let k = 1; k <= 3; k++) {
          const { raw } = seriesForward(plain, withHead(params, k), x, B, T, null, 'f64');
          let sum = 0;
          let n = 0;
          for (let r = 0; r < B * T; r++) {
            const yr = y.subarray(((k - 1) * B * T + r) * D, ((k - 1) * B * T + r + 1) * D);
            if (Number.isNaN(yr[0]) || (outputs === 'last' && r % T !== T - 1)) continue;
            sum += headNll(s, raw.subarray(r * size, (r + 1) * size), yr);
            n++;
          }
          // 'last': block 3 scores no row (both final steps are absent) and adds nothing.
          if (n > 0) want += sum / n;
          if (outputs === 'last' && k === 3) expect(n).toBe(0);
        }
        expect(Math.abs(got - want)).toBeLessThan(1e-12 * Math.abs(want));
        if (outputs === 'every') {
          // nll scores every present row, whatever outputs: the per-head sums and their row counts.
          const r = seriesNll(s, params, x, y, B, T, null, 'f64');
          expect(r.aheadRows).toEqual([7, 5]);
        }
      });

      it(`${s.likelihood}, outputs ${outputs}: every gradient, ahead heads and h0 included, matches central differences (f64)`, () => {
        const rng = new Rng(4);
        const params = randomParams(s, rng);
        const x = uniform(rng, B * T * s.dim, 1);
        const y = aheadTargets(rng, 3, s.dim);
        const S = (s.cell === 'lstm' ? 2 : 1) * s.hidden;
        const h0 = uniform(rng, s.layers * B * S, 0.5);
        const g = seriesLossAndGrads(s, params, x, y, B, T, h0, 'f64');
        const loss = () => seriesLossAndGrads(s, params, x, y, B, T, h0, 'f64').loss;
        for (const { name } of seriesParamInfo(s)) {
          const num = numericGrad(params[name], loss);
          if (!(outputs === 'last' && name.startsWith('ahead.3'))) {
            expect(Math.max(...g.grads[name].map(Math.abs)), name).toBeGreaterThan(1e-5);
          }
          expectCloseFd(name, g.grads[name], num, 1e-6);
        }
        expectCloseFd('dh0', g.dh0, numericGrad(h0, loss), 1e-6);
      });
    }
  }
});

/** The same weights on both backends. */
function twinSeries(shape: SeriesShape, seed: number) {
  return twins<SeriesBackend>(new NativeSeriesModel(shape), new JsSeriesModel(shape), new Rng(seed), 0.6);
}

describe('series predictAhead: native against the reference', () => {
  for (const shape of [GAUSS, MDN]) {
    for (const outputs of ['every', 'last'] as const) {
      const s: SeriesShape = { ...shape, outputs };
      it(`${s.cell} ${s.likelihood}, n = 3, outputs ${outputs}, absent rows: loss, every gradient, dh0 and nll per head agree`, async () => {
        const { native, js } = twinSeries(s, 21);
        const rng = new Rng(22);
        const x = uniform32(rng, B * T * s.dim, 1);
        const y = Float32Array.from(aheadTargets(rng, 3, s.dim));
        const a = await native.lossAndGrads(x, y, B, T, null);
        const b = await js.lossAndGrads(x, y, B, T, null);
        expectScalarClose('loss', a.loss, b.loss, FWD_TOL);
        expect(Object.keys(a.grads)).toEqual(Object.keys(b.grads));
        for (const name of Object.keys(b.grads)) {
          if (!(outputs === 'last' && name.startsWith('ahead.3'))) expectNonTrivial(name, b.grads[name]);
          expectClose(name, a.grads[name], b.grads[name], GRAD_TOL, 1e-12);
        }
        expectClose('dh0', a.dh0, b.dh0, GRAD_TOL, 1e-12);
        const na = await native.nll(x, y, B, T, null);
        const nb = await js.nll(x, y, B, T, null);
        expectClose('nll per head', [na.nll, ...na.aheadNll], [nb.nll, ...nb.aheadNll], FWD_TOL);
        expect(na.aheadRows).toEqual([7, 5]);
        expect(nb.aheadRows).toEqual([7, 5]);
        // The next steps alone: head 1's sum, no ahead figures.
        const n1 = await native.nll(x, y.subarray(0, B * T * s.dim), B, T, null);
        expectScalarClose('head 1 alone', n1.nll, na.nll, FWD_TOL);
        expect(n1.aheadNll).toEqual([]);
        // A training step moves both the same way.
        const opt = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 1 };
        const ta = await native.trainStep(x, y, B, T, opt);
        const tb = await js.trainStep(x, y, B, T, opt);
        expectScalarClose('train loss', ta.loss, tb.loss, FWD_TOL);
        for (const p of native.paramInfo()) expectClose(p.name, native.getParam(p.name), js.getParam(p.name), GRAD_TOL);
      });
    }
  }

  it('training needs every block; a row partly NaN, or NaN in the next step, is a DataError on both backends', async () => {
    const { native, js } = twinSeries(MDN, 5);
    const rng = new Rng(6);
    const x = uniform32(rng, B * T * 2, 1);
    const y = Float32Array.from(aheadTargets(rng, 3, 2));
    const opt = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 1 };
    for (const m of [native, js]) {
      await expect(m.trainStep(x, y.subarray(0, B * T * 2), B, T, opt)).rejects.toThrow(ShapeError);
      await expect(m.lossAndGrads(x, y.subarray(0, 2 * B * T * 2), B, T, null)).rejects.toThrow(/3 blocks/);
      const half = y.slice();
      half[B * T * 2 + 1] = Number.NaN;
      await expect(m.lossAndGrads(x, half, B, T, null)).rejects.toThrow(DataError);
      const first = y.slice();
      first.fill(Number.NaN, 0, 2);
      await expect(m.nll(x, first, B, T, null)).rejects.toThrow(DataError);
    }
    expect(() => new NativeSeriesModel({ ...MDN, predictAhead: 0 })).toThrow(ConfigError);
    expect(() => new JsSeriesModel({ ...MDN, predictAhead: 0 })).toThrow(ConfigError);
    expect(() => new NativeSeriesModel({ ...MDN, outputs: 'first' as 'last' })).toThrow(ConfigError);
    expect(() => new JsSeriesModel({ ...MDN, outputs: 'first' as 'last' })).toThrow(ConfigError);
  });
});

describe('series predictAhead: windows', () => {
  it('block k − 1 holds the step k after each input, NaN past the end; ahead 1 is the plain window', () => {
    const D = 2;
    const values = Float64Array.from({ length: 39 * D }, (_, i) => i);
    const plain = seriesWindows(values, D, 3, 4);
    const ahead = seriesWindows(values, D, 3, 4, 4);
    expect(seriesWindows(values, D, 3, 4, 1)).toEqual(plain);
    let sawNaN = false;
    ahead.forEach((w, i) => {
      expect(w.inputs).toEqual(plain[i].inputs);
      expect(w.targets.subarray(0, 3 * 4 * D)).toEqual(plain[i].targets);
      for (let k = 1; k <= 4; k++) {
        for (let r = 0; r < 12; r++) {
          const step = w.inputs[r * D] / D + k;
          const got = w.targets[((k - 1) * 12 + r) * D];
          if (step < 39) expect(got).toBe(step * D);
          else {
            expect(got).toBeNaN();
            sawNaN = true;
          }
        }
      }
    });
    expect(sawNaN).toBe(true);
    expect(() => seriesWindows(values, D, 3, 4, 0)).toThrow(ConfigError);
  });
});

describe('series predictAhead / outputs: the model', () => {
  const series = loadSeries('sensors');
  const split = splitSeries(series, { test: 0.2, valid: 0.1 });
  const fitOpts = { steps: 6, batchSize: 4, seqLen: 16, valEvery: 0, dequantize: 'off' as const };

  it("n = 1 and outputs 'every' are the plain model bit for bit: names, losses, parameters", async () => {
    const a = SeriesModel.create({ dim: 2, hidden: 12, components: 3 }, { seed: 2 });
    const b = SeriesModel.create({ dim: 2, hidden: 12, components: 3, predictAhead: 1, outputs: 'every' }, { seed: 2 });
    expect(b.backend.paramInfo()).toEqual(a.backend.paramInfo());
    const sa = await a.fit(split, fitOpts);
    const sb = await b.fit(split, fitOpts);
    expect(sb.losses).toEqual(sa.losses);
    for (const p of a.backend.paramInfo()) expect(b.backend.getParam(p.name)).toEqual(a.backend.getParam(p.name));
    expect(sb.valNll).toBe(sa.valNll);
    expect(sb.valNllAhead).toEqual([sa.valNll]);
  });

  it('n = 3, last: trains, scores each horizon, round-trips through a checkpoint; old checkpoints load as 1, every', async () => {
    const m = SeriesModel.create({ dim: 2, hidden: 12, components: 3, predictAhead: 3, outputs: 'last' }, { seed: 3 });
    const s = await m.fit(split, fitOpts);
    expect(s.valNllAhead).toHaveLength(3);
    expect(s.valNllAhead[0]).toBe(s.valNll);
    const e = await m.evaluateSplit(split);
    expect(e.nllAhead[0]).toBe(e.nll);
    expect(e.stepsAhead).toEqual([e.steps, e.steps - 1, e.steps - 2]);
    expect(e.nllAhead.every(Number.isFinite)).toBe(true);
    const path = join(dir, 'ahead.safetensors');
    await m.save(path);
    const back = SeriesModel.load(path);
    expect(back.config.predictAhead).toBe(3);
    expect(back.config.outputs).toBe('last');
    expect((await back.evaluateSplit(split)).nllAhead).toEqual(e.nllAhead);
    // The reference backend computes the same figures from the same weights.
    const js = await back.to('js').evaluate(split.test.values.subarray(0, 200));
    const nat = await back.evaluate(split.test.values.subarray(0, 200));
    expectClose('nllAhead js vs native', js.nllAhead, nat.nllAhead, 1e-5);

    // A checkpoint written before these settings existed: config without them, a plain model's tensors.
    const plain = SeriesModel.create({ dim: 2, hidden: 12, components: 3 }, { seed: 3 });
    await plain.fit(split, { ...fitOpts, steps: 1 });
    const old = join(dir, 'old.safetensors');
    await plain.save(old);
    const { tensors, metadata } = loadSafetensors(old);
    const config = JSON.parse(metadata.config) as Record<string, unknown>;
    delete config.predictAhead;
    delete config.outputs;
    saveSafetensors(old, tensors, { ...metadata, config: JSON.stringify(config) });
    const loaded = SeriesModel.load(old);
    expect([loaded.config.predictAhead, loaded.config.outputs]).toEqual([1, 'every']);
  });

  it('bad values are ConfigErrors: predictAhead not a whole number in 1..64, unknown outputs, n beyond the window', async () => {
    for (const n of [0, -1, 1.5, 65, Number.NaN]) {
      expect(() => SeriesModel.create({ dim: 2, predictAhead: n }), String(n)).toThrow(ConfigError);
    }
    expect(() => SeriesModel.create({ dim: 2, outputs: 'first' as 'last' })).toThrow(ConfigError);
    const m = SeriesModel.create({ dim: 2, hidden: 8, components: 2, predictAhead: 5 });
    await expect(m.fit(split, { ...fitOpts, seqLen: 4 })).rejects.toThrow(ConfigError);
  });
});

describe('series predictAhead / outputs: CLI', () => {
  it('train series --predict-ahead 3 --outputs last --json reports them; resume refuses other values; bad values', () => {
    const out = join(dir, 'cli.safetensors');
    const base = ['train', 'series', '--hidden', '8', '--components', '2', '--batch', '4', '--seq', '16'];
    const r = runCli(dir, [
      ...base,
      '--steps',
      '10',
      '--predict-ahead',
      '3',
      '--outputs',
      'last',
      '--out',
      out,
      '--json',
    ]);
    expect(r.status, r.stderr).toBe(0);
    const summary = jsonLines(r.stdout).at(-1) as Record<string, unknown>;
    expect(summary.predictAhead).toBe(3);
    expect(summary.outputs).toBe('last');
    const test = summary.testNllAhead as number[];
    expect(test).toHaveLength(3);
    expect(test[0]).toBe(summary.testNll);
    expect(summary.valNllAhead as number[]).toHaveLength(3);
    for (const flag of [
      ['--predict-ahead', '2'],
      ['--outputs', 'every'],
    ]) {
      const bad = runCli(dir, ['train', 'series', '--resume', out, '--steps', '20', ...flag]);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toMatch(new RegExp(`${flag[0]} is taken from`));
    }
    for (const [flag, message] of [
      [['--predict-ahead', '0'], /--predict-ahead must be a whole number in 1\.\.64/],
      [['--predict-ahead', '17'], /exceeds --seq 16/],
      [['--outputs', 'first'], /--outputs must be one of every, last/],
    ] as const) {
      const bad = runCli(dir, [...base, ...flag, '--out', join(dir, 'never.safetensors')]);
      expect(bad.status, flag.join(' ')).toBe(2);
      expect(bad.stderr).toMatch(message);
    }
  });
});
