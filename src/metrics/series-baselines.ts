/**
 * Reference scores a next-step density model of a time series has to beat, in nats per time step
 * (the negative log-density of one whole D-variate step, summed over its variables) in the series'
 * original units:
 *
 *  - Gaussian random walk: x_t = x_{t−1} + ε_t, ε_t ~ N(μ, diag σ²), μ and σ² the mean and
 *    (maximum-likelihood, divide-by-n) variance of the training increments.
 *  - AR(1) per variable: x_t = a x_{t−1} + b + ε_t, ε_t ~ N(0, σ²), (a, b) by least squares on the
 *    training transitions (the conditional maximum-likelihood fit) and σ² the mean squared residual.
 *
 * Both are fitted on the training split only and scored on the evaluation split one step ahead, each
 * step conditioned on the real previous value: for the first evaluation step that is the last step
 * before the split (the splits of `splitSeries` are consecutive). Both families are affine-equivariant,
 * so fitting them on normalised values and adding `Normalizer.logDet()` gives the same numbers.
 */
import type { Series, SeriesSplit } from '../data/series.js';
import { DataError, ShapeError } from '../errors.js';

const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);

export interface RandomWalkFit {
  kind: 'random-walk';
  /** Mean increment per variable. */
  mu: Float64Array;
  /** Standard deviation of the increments per variable. */
  sigma: Float64Array;
}

export interface Ar1Fit {
  kind: 'ar1';
  /** Slope per variable. */
  a: Float64Array;
  /** Intercept per variable. */
  b: Float64Array;
  /** Residual standard deviation per variable. */
  sigma: Float64Array;
}

export type BaselineFit = RandomWalkFit | Ar1Fit;

export type BaselineName = BaselineFit['kind'];

/** Test NLL of the classical baselines of a series split, nats per step, original units. */
export interface SeriesBaselines {
  /** Mean nats per evaluation step of the random walk. */
  randomWalk: number;
  /** Mean nats per evaluation step of the AR(1) model. */
  ar1: number;
  /** The lower of the two. */
  best: { name: BaselineName; nll: number };
  /** Evaluation steps scored. */
  steps: number;
  fits: { randomWalk: RandomWalkFit; ar1: Ar1Fit };
}

function needTransitions(train: Series, model: string): void {
  if (train.length < 2) {
    throw new DataError(`cannot fit a ${model} to ${train.length} training step(s) of ${train.name}; need at least 2`);
  }
}

function degenerate(train: Series, d: number, model: string, what: string): DataError {
  return new DataError(
    `column '${train.columns[d]}' of ${train.name}: ${what} over the training split, so a ${model} has no ` +
      'density there; drop the column or use a longer training split',
  );
}

/** The random walk of the module comment. DataError when a column's increments have zero variance. */
export function fitRandomWalk(train: Series): RandomWalkFit {
  needTransitions(train, 'random walk');
  const { length: n, dim, values } = train;
  const mu = new Float64Array(dim);
  const sigma = new Float64Array(dim);
  for (let d = 0; d < dim; d++) {
    let s = 0;
    for (let t = 1; t < n; t++) s += values[t * dim + d] - values[(t - 1) * dim + d];
    const m = s / (n - 1);
    let ss = 0;
    for (let t = 1; t < n; t++) ss += (values[t * dim + d] - values[(t - 1) * dim + d] - m) ** 2;
    const sd = Math.sqrt(ss / (n - 1));
    if (!(sd > 0)) throw degenerate(train, d, 'random walk', 'every increment is the same');
    mu[d] = m;
    sigma[d] = sd;
  }
  return { kind: 'random-walk', mu, sigma };
}

/**
 * The AR(1) model of the module comment, by least squares in centred form (a = cov(x_{t−1}, x_t) /
 * var(x_{t−1}), b = mean(x_t) − a·mean(x_{t−1})), which keeps births (~10⁴) as accurate as unit-scale
 * data. DataError when a column's previous values are constant or it is predicted without error.
 */
export function fitAr1(train: Series): Ar1Fit {
  needTransitions(train, 'AR(1) model');
  const { length: n, dim, values } = train;
  const m = n - 1;
  const a = new Float64Array(dim);
  const b = new Float64Array(dim);
  const sigma = new Float64Array(dim);
  for (let d = 0; d < dim; d++) {
    let sp = 0;
    let sc = 0;
    for (let t = 1; t < n; t++) {
      sp += values[(t - 1) * dim + d];
      sc += values[t * dim + d];
    }
    const mp = sp / m;
    const mc = sc / m;
    let spp = 0;
    let spc = 0;
    for (let t = 1; t < n; t++) {
      const p = values[(t - 1) * dim + d] - mp;
      spp += p * p;
      spc += p * (values[t * dim + d] - mc);
    }
    if (!(spp > 0)) throw degenerate(train, d, 'AR(1) model', 'the value is constant');
    const slope = spc / spp;
    const icpt = mc - slope * mp;
    let sr = 0;
    for (let t = 1; t < n; t++) sr += (values[t * dim + d] - slope * values[(t - 1) * dim + d] - icpt) ** 2;
    const sd = Math.sqrt(sr / m);
    if (!(sd > 0)) throw degenerate(train, d, 'AR(1) model', 'each step is an exact linear function of the last');
    a[d] = slope;
    b[d] = icpt;
    sigma[d] = sd;
  }
  return { kind: 'ar1', a, b, sigma };
}

/**
 * Mean nats per step of `fit` over `evaluation`, one step ahead: step 0 is predicted from `prev` (the
 * real step before the split, `[dim]`), step t > 0 from step t − 1 of `evaluation`.
 */
export function baselineStepNll(fit: BaselineFit, prev: Float64Array, evaluation: Series): number {
  const { length: n, dim, values } = evaluation;
  if (fit.sigma.length !== dim || prev.length !== dim) {
    throw new ShapeError(
      `baseline fitted to ${fit.sigma.length} variable(s), previous step has ${prev.length}, ` +
        `the evaluation series ${dim}; they must agree`,
    );
  }
  if (n === 0) throw new DataError(`no evaluation steps in ${evaluation.name}; use a non-empty split`);
  let total = 0;
  for (let t = 0; t < n; t++) {
    for (let d = 0; d < dim; d++) {
      const last = t === 0 ? prev[d] : values[(t - 1) * dim + d];
      const mean = fit.kind === 'ar1' ? fit.a[d] * last + fit.b[d] : last + fit.mu[d];
      const z = (values[t * dim + d] - mean) / fit.sigma[d];
      total += HALF_LOG_2PI + Math.log(fit.sigma[d]) + 0.5 * z * z;
    }
  }
  return total / n;
}

/** Options of {@link baselineNll}. */
export interface BaselineOptions {
  /** Which split to score: 'test' (default) or 'valid'. */
  on?: 'test' | 'valid';
}

/**
 * Both baselines fitted on `split.train` and scored on `split.test` (or `split.valid`), with the real
 * step before the scored split as the first condition. DataError for an empty scored split.
 */
export function baselineNll(split: SeriesSplit, opts: BaselineOptions = {}): SeriesBaselines {
  const on = opts.on ?? 'test';
  const evaluation = on === 'test' ? split.test : split.valid;
  if (evaluation.length === 0) {
    throw new DataError(`the ${on} split of ${evaluation.name} is empty; split with a positive ${on} fraction`);
  }
  const before = on === 'test' && split.valid.length > 0 ? split.valid : split.train;
  const dim = before.dim;
  const prev = before.values.slice((before.length - 1) * dim, before.length * dim);
  const randomWalkFit = fitRandomWalk(split.train);
  const ar1Fit = fitAr1(split.train);
  const randomWalk = baselineStepNll(randomWalkFit, prev, evaluation);
  const ar1 = baselineStepNll(ar1Fit, prev, evaluation);
  const best: SeriesBaselines['best'] =
    ar1 < randomWalk ? { name: 'ar1', nll: ar1 } : { name: 'random-walk', nll: randomWalk };
  return { randomWalk, ar1, best, steps: evaluation.length, fits: { randomWalk: randomWalkFit, ar1: ar1Fit } };
}
