/**
 * A vector Real NVP normalizing flow (Dinh et al., 2016) for density estimation on `[n, dim]` data: the
 * FlowNet preset {@link realNvpVectorSpec} (affine couplings on alternating coordinates with MLP
 * conditioners, normal base) with a small config, a seeded initialisation of its own, and a choice of
 * the native or the TypeScript backend. It runs on a {@link Flow} ({@link RealNVP.flow}) and saves
 * FlowNet checkpoints; the checkpoints of arflow ≤ 0.1.0 (kind 'flow-realnvp') load too
 * (`realnvp-v0.ts`).
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
import type { FlowNetBackend, FlowNetSpec } from '../backend/flownet-types.js';
import type { BackendName, DeviceName } from '../backend/index.js';
import { checkFlowNetSpec, flowNetTensorInfo } from '../backend/js/flownet.js';
import { checkParamCount } from '../backend/limits.js';
import { checkDeviceName } from '../backend/native.js';
import { BackendError, CheckpointError, ConfigError, DataError, ShapeError } from '../errors.js';
import { checkResumable, isCheckpointOf } from '../io/checkpoint.js';
import { loadSafetensors, type SafetensorsContents } from '../io/safetensors.js';
import type { FlowTrainOptions, FlowTrainSummary } from '../train/flow-trainer.js';
import { Rng } from '../util/rng.js';
import { checkSeed, FLOWNET_KIND, Flow, flowFromCheckpoint } from './flownet.js';
import { realNvpVectorConfigOf, realNvpVectorSpec } from './presets.js';
import { REALNVP_V0_KIND, realNvpV0Contents } from './realnvp-v0.js';

/** Architecture of a vector {@link RealNVP}: dimension, couplings and the size of their networks. */
export interface FlowConfig {
  /** Data dimension D (≥ 2). */
  dim: number;
  /** Number of affine couplings K (≥ 1). */
  couplings: number;
  /** Conditioner width H. */
  hidden: number;
  /** Hidden layers of the conditioner MLP (≥ 1). */
  depth: number;
}

export const DEFAULT_FLOW: FlowConfig = { dim: 2, couplings: 8, hidden: 64, depth: 2 };

/** Options of {@link RealNVP.create}: backend, device and seed. */
export interface FlowCreateOptions {
  /** 'native' (Rust) or 'js' (pure TypeScript). Default: native when the addon has FlowNet, else js. */
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

/** The config with its defaults, checked, and its spec: a ConfigError naming the field otherwise. */
function resolveConfig(config: Partial<FlowConfig>): { cfg: FlowConfig; spec: FlowNetSpec } {
  const cfg = { ...DEFAULT_FLOW };
  for (const k of ['dim', 'couplings', 'hidden', 'depth'] as const) if (config[k] !== undefined) cfg[k] = config[k];
  const spec = realNvpVectorSpec(cfg);
  checkParamCount('this flow', flowNetTensorInfo(spec).params, (big) => {
    const field = big.shape.includes(cfg.hidden) ? `hidden ${cfg.hidden}` : `dim ${cfg.dim}`;
    return `${field} (with couplings ${cfg.couplings}, depth ${cfg.depth}) makes it big; make it smaller`;
  });
  return { cfg, spec };
}

/**
 * Runs `build` on `backend`; with no backend asked for, on the native one, falling back to the
 * TypeScript one when the addon lacks FlowNet (a BackendError on the cpu, or 'auto' fallen back to it).
 */
function onBackend<T>(backend: BackendName | undefined, device: DeviceName, build: (backend: BackendName) => T): T {
  if (backend !== undefined) return build(backend);
  try {
    return build('native');
  } catch (e) {
    if (e instanceof BackendError && (device === 'cpu' || device === 'auto')) return build('js');
    throw e;
  }
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
  private constructor(
    readonly config: FlowConfig,
    /** The FlowNet flow of {@link realNvpVectorSpec} this model runs on (parameters `layers.{k}.…`). */
    readonly flow: Flow,
  ) {}

  /** The backend holding the parameters (those of {@link RealNVP.flow}). */
  get backend(): FlowNetBackend {
    return this.flow.backend;
  }

  /** What the checkpoint recorded about training (`save(path, { train })`), or null. */
  get trainInfo(): Record<string, unknown> | null {
    return this.flow.trainInfo;
  }

  /** Replaces the training record (saved with the flow's next `save`). */
  set trainInfo(info: Record<string, unknown> | null) {
    this.flow.trainInfo = info;
  }

  /**
   * Whether this flow holds optimizer state a run can continue from (`fit` with `resume`): loaded from
   * a checkpoint that had it (now restored), or trained by `fit` in this process. False for a new flow
   * and for one loaded from a checkpoint saved without `{ optimizer: true }`.
   */
  get hasOptimizerState(): boolean {
    return this.flow.hasOptimizerState;
  }

  /** Marks whether the optimizer state may be continued (as `fit` and `load` set it). */
  set hasOptimizerState(has: boolean) {
    this.flow.hasOptimizerState = has;
  }

  /**
   * A new flow: Linear weights and biases U(±1/√fan_in), except the last layer of every conditioner,
   * which is zero (so the flow starts as the identity); scales are ones; drawn from arflow's `Rng` with
   * `seed`, the same values on either backend. A config of more than 2³¹ parameters, or one the backend
   * cannot allocate, is a ConfigError.
   */
  static create(config: Partial<FlowConfig> = {}, opts: FlowCreateOptions = {}): RealNVP {
    const { cfg, spec } = resolveConfig(config);
    const rng = new Rng(checkSeed(opts.seed ?? 0));
    const device = opts.device ?? 'cpu';
    const flow = onBackend(opts.backend, device, (backend) => Flow.create(spec, { backend, device }));
    for (const p of flow.backend.paramInfo()) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      const m = /^layers\.\d+\.net\.(\d+)\.(weight|bias)$/.exec(p.name);
      if (m === null) {
        data.fill(1); // scale
      } else if (Number(m[1]) !== cfg.depth) {
        const fanIn = Number(m[1]) === 0 ? cfg.dim : cfg.hidden;
        const bound = 1 / Math.sqrt(fanIn);
        for (let i = 0; i < n; i++) data[i] = rng.range(-bound, bound);
      }
      flow.backend.setParam(p.name, data);
    }
    return new RealNVP(cfg, flow);
  }

  /** A copy of the weights on another backend (without the optimizer state). */
  to(backend: BackendName, device: DeviceName = 'cpu'): RealNVP {
    const flow = Flow.create(this.flow.spec, { backend, device });
    for (const p of this.backend.paramInfo()) flow.backend.setParam(p.name, this.backend.getParam(p.name));
    return new RealNVP(this.config, flow);
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
    if (this.checkData(data, 'training data') === 0) throw new ConfigError('training data is empty');
    const val = opts.valData;
    // An empty held-out set is no held-out set.
    if (val !== undefined && this.checkData(val, 'validation data') === 0)
      return this.flow.fit(data, { ...opts, valData: undefined });
    return this.flow.fit(data, opts);
  }

  /** Per-point log-density (nats), `[n]`. */
  async logProb(x: Float32Array): Promise<Float32Array> {
    return this.checkData(x) === 0 ? new Float32Array(0) : this.flow.logProb(x);
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

  /** z = f(x), `[n, dim]`. */
  encode(x: Float32Array): Float32Array {
    return this.checkData(x) === 0 ? new Float32Array(0) : this.flow.encode(x);
  }

  /** x = f⁻¹(z), `[n, dim]`. */
  decode(z: Float32Array): Float32Array {
    return this.checkData(z, 'latent') === 0 ? new Float32Array(0) : this.flow.decode(z);
  }

  /** `n` points decoded from z ~ N(0, T²I). */
  sample(n: number, opts: FlowSampleOptions = {}): Float32Array {
    return this.flow.sample(n, { temperature: opts.temperature, seed: opts.seed });
  }

  /** `steps` points (≥ 2) from x0 to x1, linear in z; `[steps, dim]`. */
  interpolate(x0: Float32Array, x1: Float32Array, steps: number): Float32Array {
    const D = this.config.dim;
    if (x0.length !== D || x1.length !== D) throw new ShapeError(`interpolate: x0 and x1 must each hold ${D} values`);
    return this.flow.interpolate(x0, x1, steps) as Float32Array;
  }

  /**
   * One safetensors file (written atomically): the FlowNet checkpoint of {@link RealNVP.flow} (kind
   * 'flow-net', the spec of {@link realNvpVectorSpec} in the metadata, which {@link Flow.load} reads as
   * well), with `train`, facts about the training run, such as the data set. With `optimizer`, also the
   * AdamW moments (`optimizer.exp_avg.<name>`, `optimizer.exp_avg_sq.<name>`) and `optimizer_step`, so
   * that training can continue exactly (`fit` with `resume`).
   */
  async save(path: string, opts: { optimizer?: boolean; train?: Record<string, unknown> } = {}): Promise<void> {
    await this.flow.save(path, opts);
  }

  /**
   * Loads a checkpoint of {@link RealNVP.save}, or a vector Real NVP checkpoint of arflow ≤ 0.1.0 (kind
   * 'flow-realnvp', read as the same flow), with its optimizer state when it has one (see
   * {@link hasOptimizerState}). CheckpointError for foreign, mismatched or non-finite files, and for a
   * flow checkpoint of another architecture (load that with {@link Flow.load}). The spec and every
   * tensor's name, dtype and shape are checked against each other before a backend is built, so a
   * tampered size is an error, not an allocation of whatever it says. An unknown device is a
   * ConfigError, one not available here a BackendError.
   */
  static load(path: string, opts: Omit<FlowCreateOptions, 'seed'> = {}): RealNVP {
    const device = checkDeviceName(opts.device ?? 'cpu') as DeviceName;
    let contents: SafetensorsContents = loadSafetensors(path);
    const { metadata } = contents;
    if (isCheckpointOf(metadata, REALNVP_V0_KIND)) contents = realNvpV0Contents(path, contents);
    else if (!isCheckpointOf(metadata, FLOWNET_KIND))
      throw new CheckpointError(
        `${path} is a safetensors file but not an arflow Real NVP checkpoint (metadata format=${metadata.format ?? 'none'}, kind=${metadata.kind ?? 'none'})`,
      );
    // An unreadable or invalid spec is left to flowFromCheckpoint, which says what is wrong with it.
    let spec: FlowNetSpec | null = null;
    try {
      spec = JSON.parse(contents.metadata.spec) as FlowNetSpec;
      checkFlowNetSpec(spec);
    } catch (e) {
      if (!(e instanceof SyntaxError || e instanceof ConfigError)) throw e;
      spec = null;
    }
    const cfg = spec === null ? null : realNvpVectorConfigOf(spec);
    if (spec !== null && (cfg === null || cfg.context !== 0 || contents.metadata.space !== 'real')) {
      const layers = Array.isArray(spec.layers) ? spec.layers.map((l) => l?.type).join(', ') : 'no layers';
      throw new CheckpointError(
        `${path} is an arflow flow checkpoint, but not of a vector Real NVP (its ${contents.metadata.space} flow of shape ${JSON.stringify(spec.shape)} has ${layers}): load it with Flow.load`,
      );
    }
    const flow = onBackend(opts.backend, device, (backend) => flowFromCheckpoint(path, contents, { device, backend }));
    const { dim, couplings, hidden, depth } = cfg as FlowConfig;
    return new RealNVP({ dim, couplings, hidden, depth }, flow);
  }
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
