/**
 * A vector Real NVP normalizing flow (Dinh et al., 2016) for density estimation on `[n, dim]` data.
 *
 * ```ts
 * const data = sample2d('moons', 20000);
 * const flow = RealNVP.create({ dim: 2 }, { backend: 'js' });
 * await flow.fit(data, { steps: 2000 });
 * const logp = await flow.logProb(data);
 * const xs = flow.sample(1000, { temperature: 0.8, seed: 1 });
 * await flow.save('moons.safetensors');
 * ```
 */
import { type FlowBackend, type FlowShape, flowParamInfo } from '../backend/flow-types.js';
import type { BackendName, DeviceName } from '../backend/index.js';
import { checkFlowShape, JsRealNvp } from '../backend/js/realnvp.js';
import { checkParamCount, describeValue } from '../backend/limits.js';
import { checkDeviceName } from '../backend/native.js';
import { NativeRealNvp } from '../backend/native-flow.js';
import { BackendError, CheckpointError, ConfigError, DataError, ShapeError } from '../errors.js';
import {
  applyOptimizerState,
  checkpointContents,
  checkResumable,
  expectTensors,
  isCheckpointOf,
  readOptimizerState,
  readTrainInfo,
} from '../io/checkpoint.js';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import { type FlowTrainOptions, type FlowTrainSummary, trainFlow } from '../train/flow-trainer.js';
import { Rng } from '../util/rng.js';

/** Architecture of a vector {@link RealNVP}: dimension, couplings and the size of their networks. */
export type FlowConfig = FlowShape;

export const DEFAULT_FLOW: Omit<FlowConfig, 'dim'> & { dim: number } = { dim: 2, couplings: 8, hidden: 64, depth: 2 };

/** Options of {@link RealNVP.create}: backend, device and seed. */
export interface FlowCreateOptions {
  /** 'native' (Rust) or 'js' (pure TypeScript). Default: native when the addon has the flow, else js. */
  backend?: BackendName;
  device?: DeviceName;
  /** Seed of the initialisation. Default 0. */
  seed?: number;
}

/** Options of {@link RealNVP.sample}. */
export interface FlowSampleOptions {
  /** Standard deviation of the base samples (z ~ N(0, T²I)). Default 1. */
  temperature?: number;
  seed?: number;
}

export const FLOW_KIND = 'flow-realnvp';
/** Samples per backend call when scoring or mapping large arrays. */
const CHUNK = 8192;

/** A seed must be a whole number ≥ 0 (NaN, −1 or 1.5 would quietly act as some other seed). */
function checkSeed(seed: unknown): number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0)
    throw new ConfigError(`seed must be a whole number ≥ 0, got ${describeValue(seed)}`);
  return seed;
}

function jsBackend(shape: FlowShape): FlowBackend {
  try {
    return new JsRealNvp(shape);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw new ConfigError(`the flow ${JSON.stringify(shape)} is too big for the TypeScript backend (${e.message})`);
  }
}

function makeBackend(shape: FlowShape, backend: BackendName | undefined, device: DeviceName = 'cpu'): FlowBackend {
  if (backend === 'js') return jsBackend(shape);
  if (backend !== undefined && backend !== 'native') {
    throw new ConfigError(`unknown backend ${JSON.stringify(backend)}: expected native or js`);
  }
  try {
    return new NativeRealNvp(shape, device);
  } catch (e) {
    // With no backend asked for, fall back to the TypeScript reference when the addon lacks the flow.
    if (backend === undefined && e instanceof BackendError && device === 'cpu') return jsBackend(shape);
    throw e;
  }
}

function resolveConfig(config: Partial<FlowConfig>): FlowConfig {
  const cfg = { ...DEFAULT_FLOW };
  for (const k of ['dim', 'couplings', 'hidden', 'depth'] as const) if (config[k] !== undefined) cfg[k] = config[k];
  checkFlowShape(cfg);
  checkParamCount('this flow', flowParamInfo(cfg), (big) => {
    const field = big.shape.includes(cfg.hidden) ? `hidden ${cfg.hidden}` : `dim ${cfg.dim}`;
    return `${field} (with couplings ${cfg.couplings}, depth ${cfg.depth}) makes it big; make it smaller`;
  });
  return cfg;
}

/**
 * A vector Real NVP normalizing flow (Dinh et al. 2016) for density estimation on `[n, dim]` data.
 *
 * ```ts
 * import { RealNVP, sample2d } from 'arflow';
 * const data = sample2d('moons', 2000, 0);
 * const flow = RealNVP.create({ dim: 2 }, { backend: 'js' });
 * await flow.fit(data, { steps: 20 });
 * console.log(await flow.logProb(data.subarray(0, 4)), flow.sample(3, { seed: 1 }));
 * ```
 */
export class RealNVP {
  /** What the checkpoint recorded about training (`save(path, { train })`), or null. */
  trainInfo: Record<string, unknown> | null = null;
  /**
   * Whether this flow holds optimizer state a run can continue from (`fit` with `resume`): loaded from
   * a checkpoint that had it (now restored), or trained by `fit` in this process. False for a new flow
   * and for one loaded from a checkpoint saved without `{ optimizer: true }`.
   */
  hasOptimizerState = false;

  private constructor(
    readonly config: FlowConfig,
    readonly backend: FlowBackend,
  ) {}

  /**
   * A new flow: Linear weights and biases U(±1/√fan_in), except the last layer of every conditioner,
   * which is zero (so the flow starts as the identity); scales are ones. A config of more than 2³¹
   * parameters, or one the backend cannot allocate, is a ConfigError.
   */
  static create(config: Partial<FlowConfig> = {}, opts: FlowCreateOptions = {}): RealNVP {
    const cfg = resolveConfig(config);
    const rng = new Rng(checkSeed(opts.seed ?? 0));
    const backend = makeBackend(cfg, opts.backend, opts.device);
    for (const p of backend.paramInfo()) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      const m = /^couplings\.\d+\.net\.(\d+)\.(weight|bias)$/.exec(p.name);
      if (m === null) {
        data.fill(1); // scale
      } else if (Number(m[1]) !== cfg.depth) {
        const fanIn = Number(m[1]) === 0 ? cfg.dim : cfg.hidden;
        const bound = 1 / Math.sqrt(fanIn);
        for (let i = 0; i < n; i++) data[i] = rng.range(-bound, bound);
      }
      backend.setParam(p.name, data);
    }
    return new RealNVP(cfg, backend);
  }

  /** A copy of the weights on another backend. */
  to(backend: BackendName, device: DeviceName = 'cpu'): RealNVP {
    const other = makeBackend(this.config, backend, device);
    for (const p of this.backend.paramInfo()) other.setParam(p.name, this.backend.getParam(p.name));
    return new RealNVP(this.config, other);
  }

  /** Checks `x` is `[n, dim]` of finite values and returns n. */
  checkData(x: Float32Array, what = 'data'): number {
    if (!(x instanceof Float32Array)) throw new ShapeError(`${what} must be a Float32Array [n, ${this.config.dim}]`);
    if (x.length % this.config.dim !== 0) {
      throw new ShapeError(
        `${what} holds ${x.length} values, not a whole number of ${this.config.dim}-dimensional points`,
      );
    }
    for (let i = 0; i < x.length; i++) {
      if (!Number.isFinite(x[i])) {
        throw new DataError(`${what}: value ${i} (point ${Math.floor(i / this.config.dim)}) is not finite (${x[i]})`);
      }
    }
    return x.length / this.config.dim;
  }

  /**
   * Trains on `data`; `resume` continues a run saved with `{ optimizer: true }` (see
   * {@link FlowTrainOptions}): a ConfigError when this flow holds no optimizer state
   * ({@link hasOptimizerState}).
   */
  async fit(data: Float32Array, opts: FlowTrainOptions = {}): Promise<FlowTrainSummary> {
    checkResumable(this.hasOptimizerState, opts.resume);
    try {
      return await trainFlow(this, data, opts);
    } finally {
      if (this.backend.getOptimStep() > 0) this.hasOptimizerState = true;
    }
  }

  /** Per-point log-density (nats), `[n]`. */
  async logProb(x: Float32Array): Promise<Float32Array> {
    const n = this.checkData(x);
    const D = this.config.dim;
    const out = new Float32Array(n);
    for (let s = 0; s < n; s += CHUNK) {
      const e = Math.min(n, s + CHUNK);
      out.set(await this.backend.logProb(x.subarray(s * D, e * D), e - s), s);
    }
    return out;
  }

  /**
   * Mean negative log-likelihood (nats per point) of at least one point. A DataError when the flow's
   * log-density is not finite for some point (broken weights — a corrupt checkpoint, diverged
   * training — or data far outside what it was trained on); {@link logProb} returns such values as
   * they are.
   */
  async nll(x: Float32Array, what = 'data'): Promise<number> {
    const n = this.checkData(x, what);
    if (n === 0) throw new ShapeError(`${what}: no points to score (an empty array has no mean NLL)`);
    const lp = await this.logProb(x);
    const bad = lp.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      const count = lp.reduce((c, v) => c + (Number.isFinite(v) ? 0 : 1), 0);
      throw new DataError(
        `${what}: the flow's log-density is not finite for ${count} of ${n} points (point ${bad}: ${lp[bad]}), ` +
          'so there is no NLL to report: its weights may be broken (a corrupt or tampered checkpoint, or training ' +
          'that diverged), or the data lie far outside what it was trained on',
      );
    }
    let s = 0;
    for (let i = 0; i < n; i++) s -= lp[i];
    return s / n;
  }

  private mapChunks(x: Float32Array, f: (c: Float32Array, b: number) => Float32Array): Float32Array {
    const D = this.config.dim;
    const n = x.length / D;
    const out = new Float32Array(x.length);
    for (let s = 0; s < n; s += CHUNK) {
      const e = Math.min(n, s + CHUNK);
      out.set(f(x.subarray(s * D, e * D), e - s), s * D);
    }
    return out;
  }

  /** z = f(x), `[n, dim]`. */
  encode(x: Float32Array): Float32Array {
    this.checkData(x);
    return this.mapChunks(x, (c, b) => this.backend.encode(c, b).z);
  }

  /** x = f⁻¹(z), `[n, dim]`. */
  decode(z: Float32Array): Float32Array {
    this.checkData(z, 'latent');
    return this.mapChunks(z, (c, b) => this.backend.decode(c, b).x);
  }

  /** `n` points decoded from z ~ N(0, T²I). */
  sample(n: number, opts: FlowSampleOptions = {}): Float32Array {
    const T = opts.temperature ?? 1;
    if (!(Number.isFinite(T) && T > 0)) throw new ConfigError(`temperature must be a finite number > 0, got ${T}`);
    if (!Number.isSafeInteger(n) || n < 1)
      throw new ConfigError(`sample count must be a whole number ≥ 1, got ${describeValue(n)}`);
    const rng = new Rng(checkSeed(opts.seed ?? 0));
    const z = new Float32Array(n * this.config.dim);
    for (let i = 0; i < z.length; i++) z[i] = T * rng.normal();
    return checkFiniteSamples(this.decode(z), this.config.dim);
  }

  /** `steps` points (≥ 2) from x0 to x1, linear in z; `[steps, dim]`. */
  interpolate(x0: Float32Array, x1: Float32Array, steps: number): Float32Array {
    const D = this.config.dim;
    if (x0.length !== D || x1.length !== D) throw new ShapeError(`interpolate: x0 and x1 must each hold ${D} values`);
    if (!Number.isSafeInteger(steps) || steps < 2)
      throw new ConfigError(`interpolate: steps must be a whole number ≥ 2, got ${steps}`);
    const z0 = this.encode(x0);
    const z1 = this.encode(x1);
    const z = new Float32Array(steps * D);
    for (let s = 0; s < steps; s++) {
      const a = s / (steps - 1);
      for (let d = 0; d < D; d++) z[s * D + d] = (1 - a) * z0[d] + a * z1[d];
    }
    return this.decode(z);
  }

  /**
   * One safetensors file (written atomically): weights under their state_dict names, config (and
   * `train`, facts about the training run, such as the data set) in the metadata. With `optimizer`,
   * also the AdamW moments (`optimizer.exp_avg.<name>`, `optimizer.exp_avg_sq.<name>`) and
   * `optimizer_step`, so that training can continue exactly (`fit` with `resume`).
   */
  async save(path: string, opts: { optimizer?: boolean; train?: Record<string, unknown> } = {}): Promise<void> {
    const { tensors, metadata } = checkpointContents(
      this.backend,
      FLOW_KIND,
      { config: JSON.stringify(this.config) },
      opts,
    );
    saveSafetensors(path, tensors, metadata);
  }

  /**
   * Loads a checkpoint of {@link RealNVP.save} (with its optimizer state, when it has one: see
   * {@link hasOptimizerState}); CheckpointError for foreign, mismatched or non-finite files. The config and every tensor's name, dtype and shape are checked against each other before
   * a backend is built, so a tampered size is an error, not an allocation of whatever it says. An
   * unknown device is a ConfigError, one not available here a BackendError.
   */
  static load(path: string, opts: Omit<FlowCreateOptions, 'seed'> = {}): RealNVP {
    const device = checkDeviceName(opts.device ?? 'cpu') as DeviceName;
    const { tensors, metadata } = loadSafetensors(path);
    if (!isCheckpointOf(metadata, FLOW_KIND)) {
      throw new CheckpointError(
        `${path} is a safetensors file but not an arflow Real NVP checkpoint (metadata format=${metadata.format ?? 'none'}, kind=${metadata.kind ?? 'none'})`,
      );
    }
    let raw: Partial<FlowConfig>;
    try {
      raw = JSON.parse(metadata.config) as Partial<FlowConfig>;
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error('config is not an object');
      if (raw.dim === undefined) throw new Error('config has no dim');
    } catch (e) {
      throw new CheckpointError(`${path}: unreadable config in metadata (${(e as Error).message})`);
    }
    let cfg: FlowConfig;
    try {
      cfg = resolveConfig(raw);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      throw new CheckpointError(`${path}: the config in its metadata is not a valid flow (${e.message})`);
    }
    const info = flowParamInfo(cfg);
    const needs = `the config ${JSON.stringify(cfg)}`;
    const { rest, optimizer } = readOptimizerState(path, tensors, metadata, info, needs);
    const params = expectTensors(path, rest, info, needs);
    const train = readTrainInfo(path, metadata);
    let backend: FlowBackend;
    try {
      backend = makeBackend(cfg, opts.backend, device);
    } catch (e) {
      // An unavailable device (BackendError) or backend name (ConfigError before any work) is not the
      // file's fault; a size the backend cannot allocate is.
      if (!(e instanceof ConfigError) || /unknown backend/.test(e.message)) throw e;
      throw new CheckpointError(`${path}: cannot build the flow its config describes (${e.message})`);
    }
    for (const [name, data] of params) backend.setParam(name, data);
    if (optimizer) applyOptimizerState(path, backend, optimizer);
    const model = new RealNVP(cfg, backend);
    model.trainInfo = train;
    model.hasOptimizerState = optimizer !== null;
    return model;
  }
}

// ---- optimizer state in flow checkpoints ----------------------------------------------------------

/**
 * `xs`, samples `[n, dim]` of a flow, unchanged; a DataError when some are not finite: the flow's
 * weights are broken (a corrupt or tampered checkpoint, training that diverged) or the temperature is
 * far too high. Samples are never returned with NaN or ±Infinity in them.
 */
export function checkFiniteSamples<T extends Float32Array>(xs: T, dim: number): T {
  let rows = 0;
  let first = -1;
  for (let r = 0; r * dim < xs.length; r++) {
    for (let d = 0; d < dim; d++) {
      if (!Number.isFinite(xs[r * dim + d])) {
        if (first < 0) first = r * dim + d;
        rows++;
        break;
      }
    }
  }
  if (rows === 0) return xs;
  throw new DataError(
    `samples: the flow maps ${rows} of ${xs.length / dim} base samples to non-finite values (sample ${Math.floor(first / dim)}: ${xs[first]}): ` +
      'its weights may be broken (a corrupt or tampered checkpoint, or training that diverged), or the temperature is far too high',
  );
}

/**
 * Mean NLL (nats per point) on `test` of the full-covariance Gaussian fitted by maximum likelihood to
 * `train` (both `[n, dim]`): the baseline a flow must beat.
 */
export function gaussianNll(train: Float32Array, test: Float32Array, dim: number): number {
  if (!Number.isSafeInteger(dim) || dim < 1) throw new ConfigError(`dim must be a whole number ≥ 1, got ${dim}`);
  for (const [what, a] of [
    ['train', train],
    ['test', test],
  ] as const) {
    if (a.length % dim !== 0 || a.length === 0)
      throw new ShapeError(`gaussianNll: ${what} must be a non-empty [n, ${dim}]`);
  }
  const n = train.length / dim;
  const mean = new Float64Array(dim);
  for (let i = 0; i < n; i++) for (let d = 0; d < dim; d++) mean[d] += train[i * dim + d] / n;
  const cov = new Float64Array(dim * dim);
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < dim; a++) {
      const da = train[i * dim + a] - mean[a];
      for (let b = 0; b <= a; b++) cov[a * dim + b] += (da * (train[i * dim + b] - mean[b])) / n;
    }
  }
  // Cholesky: cov = L Lᵀ (lower triangle of cov is filled).
  const L = new Float64Array(dim * dim);
  for (let a = 0; a < dim; a++) {
    for (let b = 0; b <= a; b++) {
      let s = cov[a * dim + b];
      for (let k = 0; k < b; k++) s -= L[a * dim + k] * L[b * dim + k];
      if (a === b) {
        if (!(s > 0)) throw new DataError('gaussianNll: the training covariance is singular');
        L[a * dim + a] = Math.sqrt(s);
      } else {
        L[a * dim + b] = s / L[b * dim + b];
      }
    }
  }
  let logDet = 0;
  for (let a = 0; a < dim; a++) logDet += 2 * Math.log(L[a * dim + a]);
  const m = test.length / dim;
  const y = new Float64Array(dim);
  let total = 0;
  for (let i = 0; i < m; i++) {
    let q = 0;
    for (let a = 0; a < dim; a++) {
      let s = test[i * dim + a] - mean[a];
      for (let k = 0; k < a; k++) s -= L[a * dim + k] * y[k];
      y[a] = s / L[a * dim + a];
      q += y[a] * y[a];
    }
    total += 0.5 * (q + logDet + dim * Math.log(2 * Math.PI));
  }
  return total / m;
}
