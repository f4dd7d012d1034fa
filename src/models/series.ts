/**
 * A recurrent density model of a continuous time series with an exact likelihood (Graves 2013,
 * "Generating Sequences With Recurrent Neural Networks", §4): the previous step → GRU/LSTM/RNN ×
 * layers → Linear → a diagonal Gaussian or a K-component mixture density over the next increment
 * x_t − x_{t−1}, which, x_{t−1} being known, is the density of x_t itself. Values are normalised with
 * statistics of the training split (of the values, and of their increments) and densities are reported
 * in the series' original units.
 *
 * ```ts
 * const split = splitSeries(loadSeries('sensors'));
 * const model = SeriesModel.create({ dim: 2, likelihood: 'mdn', components: 16 });
 * await model.fit(split, { steps: 800, onProgress: (p) => console.log(p.step, p.loss, p.valNll) });
 * const { nll } = await model.evaluateSplit(split); // nats per test step, original units
 * ```
 *
 * Joint prediction of the next n steps (`predictAhead: n`): heads k = 2..n on the same hidden state h_t
 * give p(z_{t+k} | x_{≤t}), z_{t+k} the normalised increment (x_{t+k} − x_{t+k−1} − mean) / std of step
 * t + k — what head 1 models one step ahead —, the joint factorised over the n steps; training minimises
 * Σ_k of the heads' mean NLL. Sampling and `evaluate().nll` use head 1. With `outputs: 'last'` the training loss
 * scores only the final step of each BPTT window (sequence-to-one); evaluation scores every step.
 *
 * ```ts
 * const [path] = model.sample({ context: split.train.values, steps: 100, seed: 1 });
 * await model.save('sensors.safetensors');
 * ```
 */
import type { BackendName, DeviceName } from '../backend/index.js';
import { sampleGaussian, sampleMixture } from '../backend/js/mixture.js';
import {
  checkSeriesShape,
  LIKELIHOODS,
  type Likelihood,
  SERIES_OUTPUTS,
  type SeriesBackend,
  type SeriesOutputs,
  type SeriesShape,
  seriesOutputSize,
  seriesParamInfo,
} from '../backend/js/series.js';
import { createSeriesBackend } from '../backend/native-series.js';
import { CELL_KINDS, type CellKind, checkPredictAhead, type OptimMoment, stateWidth } from '../backend/types.js';
import { Normalizer, type Series, type SeriesSplit, splitSeries } from '../data/series.js';
import { CheckpointError, ConfigError, DataError, ShapeError } from '../errors.js';
import { checkpointContents, expectTensors, isCheckpointOf, OPTIM_PREFIX, readTrainInfo } from '../io/checkpoint.js';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import {
  dequantize,
  detectResolution,
  type SeriesTrainOptions,
  type SeriesTrainState,
  type SeriesTrainSummary,
  trainSeries,
} from '../train/series-trainer.js';
import { Rng } from '../util/rng.js';

/** Architecture of a {@link SeriesModel}. */
export interface SeriesModelConfig {
  /** D, variables per time step. */
  dim: number;
  /** The recurrent cell: 'gru' (default), 'lstm' or 'rnn'. */
  cell: CellKind;
  /** Hidden units per layer. Default 32. */
  hidden: number;
  /** Stacked recurrent layers. Default 1. */
  layers: number;
  /** 'mdn' (default) or 'gaussian'. */
  likelihood: Likelihood;
  /** K, mixture components ('mdn' only). Default 16. */
  components?: number;
  /**
   * What the recurrent stack reads of the previous step: 'increment' (default), x_{t−1} − x_{t−2}
   * normalised (0 for the first step), or 'value', x_{t−1} normalised. Increments make the model
   * translation-invariant, so a level that drifts outside the training range (the sensors' evening
   * cooling) is no extrapolation; the state still sees every past value through their sum.
   */
  input: SeriesInput;
  /**
   * Joint prediction of the next n steps (default 1, the plain model, bit for bit): heads k = 2..n on
   * the same hidden state predict the normalised increment k steps ahead, the joint factorised over the
   * n steps; training minimises Σ_k of their mean NLLs. At most 64.
   */
  predictAhead: number;
  /**
   * The steps of each BPTT window the training loss scores: 'every' (default) or 'last' (the final step
   * only, sequence-to-one). Evaluation scores every step either way.
   */
  outputs: SeriesOutputs;
}

/** What the recurrent cell reads each step: the previous increment or the previous value. */
export type SeriesInput = 'increment' | 'value';

export const SERIES_INPUTS: readonly SeriesInput[] = ['increment', 'value'];

/** The default series model: one GRU layer of 32 with a 16-component mixture density over the increments. */
export const DEFAULT_SERIES_MODEL: Omit<SeriesModelConfig, 'dim'> = {
  cell: 'gru',
  hidden: 32,
  layers: 1,
  likelihood: 'mdn',
  components: 16,
  input: 'increment',
  predictAhead: 1,
  outputs: 'every',
};

/** Options of {@link SeriesModel.create}: backend, device and seed. */
export interface CreateSeriesOptions {
  /** 'native' (Rust, default) or 'js' (pure TypeScript reference). */
  backend?: BackendName;
  device?: DeviceName;
  /** Seed of the initialisation. Default 0. */
  seed?: number;
}

/** Options of {@link SeriesModel.fit}: the trainer's, plus the split fractions for a whole series. */
export interface SeriesFitOptions extends SeriesTrainOptions {
  /** Fractions held out when `fit` is given a whole series rather than a split (defaults 0.2 and 0.1). */
  test?: number;
  valid?: number;
  /**
   * Uniform noise of the recording resolution added to every value in training and evaluation (see
   * series-trainer.ts): 'auto' (default) detects each column's resolution from the training values,
   * 'off' adds none, or give one resolution per column in original units (0: none for that column).
   */
  dequantize?: 'auto' | 'off' | number[];
}

/** What {@link SeriesModel.evaluate} returns: NLL per time step in original and normalised units. */
export interface SeriesEvalResult {
  /** Mean NLL, nats per time step (all D variables of a step together), in the original units. */
  nll: number;
  /** The same in the normalised units of the increments: `nll + scales.increments.logDet()`. */
  normalizedNll: number;
  /** Time steps scored. */
  steps: number;
  /**
   * Per horizon k = 1..n (index k − 1): head k's mean NLL, nats per step, of the increment
   * x_{t+k} − x_{t+k−1} given x_{≤t}, in the original units (its normalised density minus
   * `scales.increments.logDet()`, as for `nll`), over the `stepsAhead[k − 1]` scored steps whose step
   * k − 1 further on exists. `nllAhead[0]` is `nll`; for k ≥ 2 it is not the density of x_{t+k} itself,
   * whose predictive distribution is the sum of the k increments.
   */
  nllAhead: number[];
  stepsAhead: number[];
}

/** Options of {@link SeriesModel.sample}. */
export interface SeriesSampleOptions {
  /** Real values `[C, D]` (original units, C ≥ 1) to continue: read once, the last is the first input. */
  context: Float64Array;
  /** Values to generate per continuation. */
  steps: number;
  /** Independent continuations, sampled as N parallel streams. Default 1. */
  n?: number;
  seed?: number;
  /** τ: component weights softmax(logits / τ) and variances × τ (sketch-rnn); 1 (default) samples the model. */
  temperature?: number;
}

export const SERIES_KIND = 'series';
const CARRY_TENSOR = 'train.carry';
/** Steps per native call when scoring long sequences (the state is carried between calls: exact). */
const EVAL_CHUNK = 4096;

function configOf(given: Partial<SeriesModelConfig> & { dim: number }): SeriesModelConfig {
  const cfg: SeriesModelConfig = { ...DEFAULT_SERIES_MODEL, dim: given.dim };
  for (const k of ['cell', 'hidden', 'layers', 'likelihood', 'input', 'predictAhead', 'outputs'] as const) {
    if (given[k] !== undefined) (cfg as unknown as Record<string, unknown>)[k] = given[k];
  }
  if (cfg.likelihood === 'gaussian') {
    if (given.components !== undefined && given.components !== 1) {
      throw new ConfigError(`components (K = ${given.components}) apply to the mdn likelihood only`);
    }
    delete cfg.components;
  } else if (given.components !== undefined) {
    cfg.components = given.components;
  }
  if (!SERIES_INPUTS.includes(cfg.input)) {
    throw new ConfigError(`input must be increment or value, got ${JSON.stringify(cfg.input)}`);
  }
  checkPredictAhead(cfg.predictAhead);
  if (!SERIES_OUTPUTS.includes(cfg.outputs)) {
    throw new ConfigError(`outputs must be every or last, got ${JSON.stringify(cfg.outputs)}`);
  }
  checkSeriesShape(shapeOf(cfg));
  return cfg;
}

/** The backend's view of a config: the network's shape alone (settings at their defaults left out). */
function shapeOf(c: SeriesModelConfig): SeriesShape {
  const { dim, hidden, layers, cell, likelihood, components, predictAhead, outputs } = c;
  return {
    dim,
    hidden,
    layers,
    cell,
    likelihood,
    ...(components !== undefined ? { components } : {}),
    ...(predictAhead > 1 ? { predictAhead } : {}),
    ...(outputs !== 'every' ? { outputs } : {}),
  };
}

/** `a` then `b`, both `[·, dim]` row-major. */
function concat(a: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * The two affine maps of a fitted model, both fitted on the training split: `values` normalises the
 * inputs x_{t−1}, `increments` normalises the targets x_t − x_{t−1}.
 */
export interface SeriesScales {
  values: Normalizer;
  increments: Normalizer;
}

/** The increments x_t − x_{t−1} of `series` as a series of N − 1 steps. */
function incrementsOf(series: Series): Series {
  const { dim, values } = series;
  const inc = new Float64Array(Math.max(0, values.length - dim));
  for (let i = 0; i < inc.length; i++) inc[i] = values[i + dim] - values[i];
  return { ...series, name: `${series.name} (increments)`, values: inc, length: inc.length / dim };
}

/**
 * A recurrent density model of a continuous multivariate time series, with an exact likelihood
 * (a Gaussian or a mixture density over the next increment).
 *
 * ```ts
 * import { SeriesModel, loadSeries, splitSeries } from 'arflow';
 * const split = splitSeries(loadSeries('sensors'));
 * const model = SeriesModel.create({ dim: split.train.dim, hidden: 16 });
 * await model.fit(split, { steps: 20 });
 * console.log((await model.evaluateSplit(split)).nll);       // nats per test step, original units
 * ```
 */
export class SeriesModel {
  /** Per-column recording resolution (original units) of the dequantisation noise; 0: none. */
  resolution: number[];

  private constructor(
    readonly config: SeriesModelConfig,
    readonly backend: SeriesBackend,
    /** Fitted on the training split by `fit`; evaluation and sampling need them. */
    public scales: SeriesScales | null,
    /** One name per variable. */
    public columns: string[],
    resolution: number[] | null,
    /** The training state and data facts of a loaded checkpoint (null when none was saved). */
    readonly trainInfo: Record<string, unknown> | null = null,
  ) {
    this.resolution = resolution ?? new Array(config.dim).fill(0);
  }

  /** The backend's view of the architecture. */
  get shape(): SeriesShape {
    return this.backend.shape;
  }

  /** Raw head outputs per step. */
  outputSize(): number {
    return seriesOutputSize(this.shape);
  }

  /**
   * A new model with PyTorch's default initialisation, U(−1/√H, 1/√H) for every recurrent and head
   * tensor, from a seeded generator (the native and TypeScript backends start from identical weights).
   */
  static create(config: Partial<SeriesModelConfig> & { dim: number }, opts: CreateSeriesOptions = {}): SeriesModel {
    const cfg = configOf(config);
    const backend = createSeriesBackend(shapeOf(cfg), opts.backend, opts.device);
    const rng = new Rng(opts.seed ?? 0);
    const bound = 1 / Math.sqrt(cfg.hidden);
    for (const p of backend.paramInfo()) {
      const data = new Float32Array(p.shape.reduce((a, b) => a * b, 1));
      for (let i = 0; i < data.length; i++) data[i] = rng.range(-bound, bound);
      backend.setParam(p.name, data);
    }
    const columns = Array.from({ length: cfg.dim }, (_, d) => `col${d + 1}`);
    return new SeriesModel(cfg, backend, null, columns, null);
  }

  /** A copy of this model's weights, normaliser and settings (not optimizer state) on another backend. */
  to(backend: BackendName, device: DeviceName = 'cpu'): SeriesModel {
    const other = createSeriesBackend(this.shape, backend, device);
    for (const p of this.backend.paramInfo()) other.setParam(p.name, this.backend.getParam(p.name));
    return new SeriesModel(this.config, other, this.scales, [...this.columns], [...this.resolution]);
  }

  private needScales(what: string): SeriesScales {
    if (!this.scales) throw new ConfigError(`${what} needs a fitted model: call fit() first (or load a checkpoint)`);
    return this.scales;
  }

  private checkRows(values: Float64Array, what: string): number {
    const D = this.config.dim;
    if (values.length % D !== 0) {
      throw new ShapeError(`${what}: ${values.length} values are not whole rows of ${D}; pass [N, ${D}] row-major`);
    }
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i])) {
        throw new DataError(`${what}: value ${i} (step ${Math.floor(i / D)}) is not finite (${values[i]})`);
      }
    }
    return values.length / D;
  }

  // ---- training -----------------------------------------------------------------------------------

  /**
   * Trains on `data` (a split, or a whole series split here by time with `opts.test` / `opts.valid`):
   * fits the normalisers of values and increments on the training split (unless the model already has
   * them: a loaded checkpoint keeps its own), settles the dequantisation resolution, and runs
   * `trainSeries`.
   */
  fit(data: Series | SeriesSplit, opts: SeriesFitOptions = {}): Promise<SeriesTrainSummary> {
    const split = 'train' in data ? data : splitSeries(data, { test: opts.test, valid: opts.valid });
    const D = this.config.dim;
    if (split.train.dim !== D) {
      throw new ShapeError(`the series has ${split.train.dim} variable(s) per step, the model ${D}`);
    }
    this.checkRows(split.train.values, 'training values');
    this.checkRows(split.valid.values, 'validation values');
    if (!this.scales) {
      this.scales = { values: Normalizer.fit(split.train), increments: Normalizer.fit(incrementsOf(split.train)) };
      this.columns = [...split.train.columns];
      const dq = opts.dequantize ?? 'auto';
      if (dq === 'auto') this.resolution = detectResolution(split.train.values, D);
      else if (dq === 'off') this.resolution = new Array(D).fill(0);
      else {
        if (dq.length !== D || !dq.every((q) => Number.isFinite(q) && q >= 0)) {
          throw new ConfigError(`dequantize needs ${D} resolution(s) ≥ 0, one per column; got [${dq.join(', ')}]`);
        }
        this.resolution = [...dq];
      }
    }
    return trainSeries(this, split, opts);
  }

  // ---- evaluation ---------------------------------------------------------------------------------

  /**
   * The two views of `[N, D]` values (original units) the network reads and scores, row t of each
   * for step t: `targets`, the increments x_t − x_{t−1} normalised by `scales.increments` (what the
   * head's density is over; row 0, which has no increment, is 0), and `inputs`, what the recurrent
   * stack reads at step t to predict step t + 1: the same normalised increments (`input: 'increment'`)
   * or the values normalised by `scales.values` (`input: 'value'`).
   */
  encode(values: Float64Array): { inputs: Float64Array; targets: Float64Array } {
    const scales = this.needScales('encode');
    const D = this.config.dim;
    const inc = new Float64Array(values.length);
    for (let i = D; i < values.length; i++) inc[i] = values[i] - values[i - D];
    const targets = scales.increments.apply(inc);
    targets.fill(0, 0, Math.min(D, targets.length));
    const inputs = this.config.input === 'increment' ? Float64Array.from(targets) : scales.values.apply(values);
    return { inputs, targets };
  }

  /**
   * Summed NLL (normalised units) of steps `first..` of `values` given everything before, from zeros,
   * per head k (index k − 1: the increment k − 1 steps after each scored one, where it exists), and the
   * steps each head scored.
   */
  private async sequenceNll(values: Float64Array, first: number): Promise<{ total: number[]; rows: number[] }> {
    const D = this.config.dim;
    const n = values.length / D;
    const ahead = this.config.predictAhead;
    const { inputs, targets } = this.encode(values);
    let state: Float32Array | null = null;
    const total = new Array<number>(ahead).fill(0);
    const rows = new Array<number>(ahead).fill(0);
    // Targets 1 … first − 1 warm the state up; targets first … n − 1 are scored.
    for (const [from, to, scored] of [
      [1, first, false],
      [first, n, true],
    ] as const) {
      for (let t = from; t < to; t += EVAL_CHUNK) {
        const len = Math.min(EVAL_CHUNK, to - t);
        const x = Float32Array.from(inputs.subarray((t - 1) * D, (t - 1 + len) * D));
        // Scored chunks: block k − 1 holds the targets k − 1 steps further on, NaN past the end.
        const blocks = scored ? ahead : 1;
        const y = new Float32Array(blocks * len * D).fill(Number.NaN);
        for (let k = 1; k <= blocks; k++) {
          y.set(targets.subarray((t + k - 1) * D, (t + k - 1 + len) * D), (k - 1) * len * D);
        }
        const r = await this.backend.nll(x, y, 1, len, state);
        state = r.state;
        if (scored) {
          [r.nll, ...r.aheadNll].forEach((v, i) => {
            total[i] += v;
          });
          [len, ...r.aheadRows].forEach((v, i) => {
            rows[i] += v;
          });
        }
      }
    }
    return { total, rows };
  }

  /**
   * Mean NLL per time step of `values [N, D]` (original units), each step predicted from the real steps
   * before it. With `context` (the real steps just before `values`, e.g. the training and validation
   * data before a test split) the state is warmed up over it and all N steps are scored; without, the
   * first value is only read and N − 1 steps are scored.
   *
   * Units: the head's density is over normalised increments z = (x_t − x_{t−1} − mean)/std, an affine
   * map of x_t given the past, so log p(x_t | x_{<t}) = log p(z_t | ·) + logDet() with logDet() =
   * −Σ_d log std_d of `scales.increments`: `nll = normalizedNll − logDet()` per step. When the model was
   * trained with dequantisation, context and values get the same uniform noise of the recording
   * resolution (drawn from `seed`, default 0), and the result is the NLL of those noisy values: an
   * upper bound, in expectation, on −log P(recorded values) − Σ_d log q_d.
   */
  async evaluate(
    values: Float64Array,
    opts: { context?: Float64Array; seed?: number } = {},
  ): Promise<SeriesEvalResult> {
    const { increments } = this.needScales('evaluate');
    const n = this.checkRows(values, 'evaluation values');
    const context = opts.context ?? new Float64Array(0);
    const c = this.checkRows(context, 'context');
    const first = c > 0 ? c : 1;
    if (n + c - first < 1)
      throw new DataError('evaluation needs at least one step to score (2 values without context)');
    // The scored values draw their noise from `seed` alone, so that the same values get the same noise
    // whatever context precedes them.
    const seed = opts.seed ?? 0;
    const all = concat(
      dequantize(context, this.resolution, new Rng(seed + 0x9e3779b9)),
      dequantize(values, this.resolution, new Rng(seed)),
    );
    const { total, rows } = await this.sequenceNll(all, first);
    const steps = n + c - first;
    const normalizedNll = total[0] / steps;
    const logDet = increments.logDet();
    const nllAhead = total.map((v, i) => (rows[i] > 0 ? v / rows[i] - logDet : Number.NaN));
    return { nll: normalizedNll - logDet, normalizedNll, steps, nllAhead, stepsAhead: rows };
  }

  /** The test split of `split` scored after a warm-up over its training and validation data. */
  evaluateSplit(split: SeriesSplit, opts: { seed?: number } = {}): Promise<SeriesEvalResult> {
    return this.evaluate(split.test.values, {
      context: concat(split.train.values, split.valid.values),
      seed: opts.seed,
    });
  }

  // ---- sampling -----------------------------------------------------------------------------------

  /**
   * `n` continuations of `context`, each `[steps, D]` in original units. The context is read once (the
   * state carried, never re-fed); then every step feeds the previous value to N parallel streams and
   * draws the next from the head's distribution. A fixed `seed` gives the same continuations.
   */
  sample(opts: SeriesSampleOptions): Float64Array[] {
    const scales = this.needScales('sample');
    const D = this.config.dim;
    const { steps } = opts;
    const n = opts.n ?? 1;
    const temperature = opts.temperature ?? 1;
    if (!Number.isSafeInteger(steps) || steps < 0)
      throw new ConfigError(`steps must be a whole number ≥ 0, got ${steps}`);
    if (!Number.isSafeInteger(n) || n < 1) throw new ConfigError(`n must be a whole number ≥ 1, got ${n}`);
    if (!(Number.isFinite(temperature) && temperature > 0)) {
      throw new ConfigError(`temperature must be a finite number > 0, got ${temperature}`);
    }
    const c = this.checkRows(opts.context, 'context');
    if (c < 1) throw new ConfigError('sampling continues a real context: give at least one value');
    const { inputs } = this.encode(opts.context);
    // Warm-up over the context, one stream; then the state is copied to the N streams.
    let one: Float32Array | null = null;
    for (let t = 0; t < c - 1; t++)
      one = this.backend.step(one, Float32Array.from(inputs.subarray(t * D, (t + 1) * D))).state;
    const { layers: L } = this.config;
    const S = stateWidth(this.config.cell) * this.config.hidden;
    let state: Float32Array | null = null;
    if (one) {
      state = new Float32Array(L * n * S);
      for (let l = 0; l < L; l++)
        for (let b = 0; b < n; b++) state.set(one.subarray(l * S, (l + 1) * S), (l * n + b) * S);
    }
    // The last value of every stream (original units) and the next input of every stream.
    const last = new Float64Array(n * D);
    const x = new Float32Array(n * D);
    for (let b = 0; b < n; b++) {
      last.set(opts.context.subarray((c - 1) * D, c * D), b * D);
      x.set(inputs.subarray((c - 1) * D, c * D), b * D);
    }
    const rng = new Rng(opts.seed ?? 0);
    const out = Array.from({ length: n }, () => new Float64Array(steps * D));
    const K = this.config.components ?? 1;
    for (let t = 0; t < steps; t++) {
      const r = this.backend.step(state, x);
      state = r.state;
      const draw =
        this.config.likelihood === 'gaussian'
          ? sampleGaussian(r.raw, D, rng, temperature)
          : sampleMixture(r.raw, D, K, rng, temperature);
      const inc = scales.increments.invert(draw);
      for (let i = 0; i < n * D; i++) {
        last[i] += inc[i];
        if (!Number.isFinite(last[i])) {
          throw new DataError(
            `sampling produced a non-finite value at step ${t}: the model's weights are broken or the temperature is far too high`,
          );
        }
      }
      for (let b = 0; b < n; b++) out[b].set(last.subarray(b * D, (b + 1) * D), t * D);
      x.set(this.config.input === 'increment' ? draw : scales.values.apply(last));
    }
    return out;
  }

  // ---- checkpoints --------------------------------------------------------------------------------

  /**
   * Writes one safetensors file, atomically. Weights carry PyTorch state_dict names; the config, the two
   * normalisers, column names and dequantisation resolution live in the metadata (kind 'series'). With
   * `optimizer`, AdamW moments go under `optimizer.exp_avg.<name>` / `optimizer.exp_avg_sq.<name>`
   * and the carried BPTT state under `train.carry`, for exact resume.
   */
  async save(path: string, opts: { optimizer?: boolean; train?: Record<string, unknown> } = {}): Promise<void> {
    const scales = this.needScales('save');
    const stats = (n: Normalizer) => JSON.stringify({ mean: Array.from(n.mean), std: Array.from(n.std) });
    const { tensors, metadata } = checkpointContents(
      this.backend,
      SERIES_KIND,
      {
        config: JSON.stringify(this.config),
        normalizer: stats(scales.values),
        increments: stats(scales.increments),
        columns: JSON.stringify(this.columns),
        resolution: JSON.stringify(this.resolution),
      },
      opts,
    );
    const carry = opts.optimizer ? this.backend.getCarry() : null;
    if (carry) {
      const S = stateWidth(this.config.cell) * this.config.hidden;
      tensors[CARRY_TENSOR] = { dtype: 'F32', shape: [this.config.layers, carry.batch, S], data: carry.state };
    }
    saveSafetensors(path, tensors, metadata);
  }

  /**
   * Loads a checkpoint written by {@link SeriesModel.save}. {@link CheckpointError} for a file that is
   * missing, not safetensors, not an arflow series model (say a char-lm checkpoint), or whose metadata
   * or tensors do not match its config; everything is checked before the model is built.
   */
  static load(path: string, opts: Omit<CreateSeriesOptions, 'seed'> = {}): SeriesModel {
    const { tensors, metadata } = loadSafetensors(path);
    if (!isCheckpointOf(metadata, SERIES_KIND)) {
      throw new CheckpointError(
        `${path} is not an arflow series-model checkpoint (metadata format=${metadata.format ?? 'none'}, kind=${metadata.kind ?? 'none'}; expected kind=${SERIES_KIND})`,
      );
    }
    let config: SeriesModelConfig;
    let scales: SeriesScales;
    let columns: string[];
    let resolution: number[];
    try {
      const c = JSON.parse(metadata.config) as SeriesModelConfig;
      if (!CELL_KINDS.includes(c.cell) || !LIKELIHOODS.includes(c.likelihood))
        throw new Error('unknown cell or likelihood');
      if (!SERIES_INPUTS.includes(c.input)) throw new Error(`unknown input ${JSON.stringify(c.input)}`);
      config = configOf(c);
      const stats = (key: string) => {
        const nz = JSON.parse(metadata[key] ?? 'null') as { mean: number[]; std: number[] } | null;
        if (!nz) throw new Error(`no ${key} statistics`);
        const n = new Normalizer(Float64Array.from(nz.mean), Float64Array.from(nz.std));
        if (n.dim !== config.dim) throw new Error(`${key} statistics of ${n.dim} columns for dim ${config.dim}`);
        return n;
      };
      scales = { values: stats('normalizer'), increments: stats('increments') };
      columns = JSON.parse(metadata.columns) as string[];
      resolution = JSON.parse(metadata.resolution) as number[];
      const D = config.dim;
      if (!Array.isArray(columns) || columns.length !== D || !columns.every((s) => typeof s === 'string')) {
        throw new Error(`columns must be ${D} names`);
      }
      if (
        !Array.isArray(resolution) ||
        resolution.length !== D ||
        !resolution.every((q) => Number.isFinite(q) && q >= 0)
      ) {
        throw new Error(`resolution must be ${D} numbers ≥ 0`);
      }
    } catch (e) {
      throw new CheckpointError(`${path}: unreadable or inconsistent series metadata (${(e as Error).message})`);
    }
    const train = readTrainInfo(path, metadata);
    const shape = shapeOf(config);
    // Names and shapes from the config alone: every tensor is checked before a backend is built.
    const paramInfo = seriesParamInfo(shape);
    const expected = [...paramInfo];
    let step: number | null = null;
    if (metadata.optimizer_step !== undefined) {
      step = Number(metadata.optimizer_step);
      if (!Number.isSafeInteger(step) || step < 0) {
        throw new CheckpointError(
          `${path}: optimizer_step ${JSON.stringify(metadata.optimizer_step)} is not a whole number ≥ 0`,
        );
      }
      for (const which of ['exp_avg', 'exp_avg_sq']) {
        for (const p of paramInfo) expected.push({ name: `${OPTIM_PREFIX}${which}.${p.name}`, shape: p.shape });
      }
      const c = tensors[CARRY_TENSOR];
      if (c) {
        const S = stateWidth(config.cell) * config.hidden;
        const [layers, batch, width] = c.shape;
        if (c.shape.length !== 3 || layers !== config.layers || width !== S || !(batch >= 1)) {
          throw new CheckpointError(
            `${path}: ${CARRY_TENSOR} has shape [${c.shape}], expected [${config.layers}, batch, ${S}]`,
          );
        }
        expected.push({ name: CARRY_TENSOR, shape: c.shape });
      }
    }
    const data = new Map(expectTensors(path, tensors, expected, `a series model of config ${JSON.stringify(config)}`));
    const backend = createSeriesBackend(shape, opts.backend, opts.device);
    for (const p of paramInfo) backend.setParam(p.name, data.get(p.name) as Float32Array);
    if (step !== null) {
      for (const which of ['exp_avg', 'exp_avg_sq'] as OptimMoment[]) {
        for (const p of paramInfo)
          backend.setOptimState(which, p.name, data.get(`${OPTIM_PREFIX}${which}.${p.name}`) as Float32Array);
      }
      backend.setOptimStep(step);
      const carry = data.get(CARRY_TENSOR);
      backend.setCarry(carry ? { batch: tensors[CARRY_TENSOR].shape[1], state: carry } : null);
    }
    return new SeriesModel(config, backend, scales, columns, resolution, train);
  }

  /** The training state of a loaded checkpoint, for `fit({ resume })`; null when it holds none. */
  resumeState(): SeriesTrainState | null {
    const t = this.trainInfo;
    if (!t || typeof t.step !== 'number' || typeof t.epoch !== 'number' || typeof t.window !== 'number') return null;
    return t as SeriesTrainState;
  }
}
