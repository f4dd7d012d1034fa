/**
 * Loads the native addon and adapts it to {@link CharLmBackend}. Lookup order of the CPU build:
 *   1. `ARFLOW_NATIVE` (a path to a `.node` file),
 *   2. `arflow.<platform>.node` in the package root (built from source by `npm install` / `npm run build:native`),
 *   3. the prebuilt platform package `@arflow/binding-<platform>` (an optionalDependency of `arflow`).
 * A CUDA device runs on the CUDA build, a binary of its own ({@link loadCudaNative}); {@link onNativeDevice}
 * picks the build for a device. Errors from Rust arrive as `"<CODE>: message"` and are rethrown as
 * arflow's typed errors.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { type ArflowError, BackendError, ConfigError, DataError, DivergenceError, ShapeError } from '../errors.js';
import { loadCudaNative } from './cuda-loader.js';
import type {
  Carry,
  CellKind,
  CharLmBackend,
  CharLmShape,
  LossGrads,
  NllResult,
  OptimConfig,
  OptimMoment,
  ParamInfo,
  SamplerInit,
  StepStats,
  TokenSampler,
} from './types.js';

/**
 * The addon's model class: the backend contract, except that gradients come back as a list (an N-API
 * object cannot be a record of typed arrays).
 */
type NativeModel = Omit<CharLmBackend, 'kind' | 'shape' | 'lossAndGrads' | 'sampler'> & {
  lossAndGrads(
    ids: Uint32Array,
    targets: Uint32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<{ loss: number; grads: { name: string; data: Float32Array }[]; dh0: Float32Array }>;
  /** A sampling loop in Rust: `prime [N, P]`, `rng [N, 4]` (each stream's `Rng.state()`), topK 0 or ≥ V: off. */
  sampler(
    state: Float32Array | null,
    prime: Uint32Array,
    streams: number,
    rng: Uint32Array,
    temperature: number,
    topK: number,
    topP: number,
  ): TokenSampler;
};

export interface RnnLayerResult {
  /** `[B, T, S]`: S = H, or 2H for the LSTM (h then c per position). */
  out: Float32Array;
  dx: Float32Array;
  dh0: Float32Array;
  dparams: Float32Array;
}

export interface NativeAddon {
  NativeCharLm: new (shape: CharLmShape, device: string) => NativeModel;
  /** One recurrent layer forward + BPTT on raw arrays (`cell` absent: the GRU); h0 is `[B, S]`. */
  rnnLayerGrads(
    dims: { cell?: CellKind; batch: number; seq: number; input: number; hidden: number },
    x: Float32Array,
    h0: Float32Array,
    params: Float32Array,
    dOut: Float32Array,
  ): RnnLayerResult;
  buildInfo(): { version: string; cuda: boolean; threads: number };
  /** One draw of the Rust sampler (`sampleLogits` replicated) with the sfc32 state `rng [4]`; the state after it. */
  sampleLogitsRow(
    logits: Float32Array,
    temperature: number,
    topK: number,
    topP: number,
    rng: Uint32Array,
  ): { index: number; rng: Uint32Array };
  /** `Math.exp` of each value as the Rust sampler computes it (V8's fdlibm port). */
  v8ExpOf(xs: Float64Array): Float64Array;
  /** GFLOP/s of `reps` f32 products [m×k]·[k×n] with the kernels' GEMM. */
  benchGemm(m: number, n: number, k: number, reps: number): number;
  benchCoupling(n: number, d: number, reps: number): number;
  /** Real NVP affine coupling `[N, D]` (or its inverse), with the per-sample log-det. */
  couplingForward(
    n: number,
    d: number,
    x: Float32Array,
    mask: Float32Array,
    sRaw: Float32Array,
    t: Float32Array,
    scale: Float32Array,
    inverse: boolean,
  ): { out: Float32Array; logdet: Float32Array };
  /** Gradients of the forward coupling given dL/dy and dL/dlogdet. */
  couplingBackward(
    n: number,
    d: number,
    x: Float32Array,
    mask: Float32Array,
    sRaw: Float32Array,
    scale: Float32Array,
    dy: Float32Array,
    dlogdet: Float32Array,
  ): { dx: Float32Array; dsRaw: Float32Array; dt: Float32Array; dscale: Float32Array };
}

/** napi-rs's name of this platform (`linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64`, …): `@arflow/binding-<it>`. */
export function nativePlatform(): string {
  if (process.platform !== 'linux') return `${process.platform}-${process.arch}`;
  const report = process.report.getReport() as { header?: { glibcVersionRuntime?: string } };
  return `linux-${process.arch}-${report.header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

let cached: NativeAddon | null = null;
let loadError: Error | null = null;

function candidates(plat: string): string[] {
  const out: string[] = [];
  if (process.env.ARFLOW_NATIVE) out.push(process.env.ARFLOW_NATIVE);
  out.push(`${ROOT}arflow.${plat}.node`);
  return out;
}

/** The addon, loaded once. Throws {@link BackendError} saying how to build it when none is found. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  if (loadError) throw loadError;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  const plat = nativePlatform();
  for (const path of candidates(plat)) {
    tried.push(path);
    if (!existsSync(path)) continue;
    cached = require(path) as NativeAddon;
    return cached;
  }
  const pkg = `@arflow/binding-${plat}`;
  let why = `no prebuilt binary fits this platform (${plat}: no package ${pkg})`;
  try {
    cached = require(pkg) as NativeAddon;
    return cached;
  } catch (e) {
    tried.push(pkg);
    // Found but not loadable (e.g. a glibc too old for the prebuilt binary): say why.
    if ((e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND')
      why = `${pkg} failed to load: ${(e as Error).message}`;
  }
  loadError = new BackendError(
    `the arflow native addon for ${plat} is not available: ${why} (tried ${tried.join(', ')}). ` +
      'Install Rust (https://rustup.rs) and run `npm rebuild arflow` to compile it from source ' +
      '(`npm run build:native` in a clone of arflow), ' +
      "or use backend: 'js' (CLI: --backend js) for the models the pure-TypeScript backend implements.",
  );
  throw loadError;
}

/** Whether the native addon can be loaded here. */
export function nativeAvailable(): boolean {
  try {
    loadNative();
    return true;
  } catch {
    return false;
  }
}

const CODES: Record<string, (m: string) => ArflowError> = {
  E_CONFIG: (m) => new ConfigError(m),
  E_DATA: (m) => new DataError(m),
  E_SHAPE: (m) => new ShapeError(m),
  E_DIVERGED: (m) => new DivergenceError(m),
};

/** Maps a `"<CODE>: message"` error from Rust onto arflow's typed errors. */
export function mapNativeError(e: unknown): unknown {
  if (!(e instanceof Error)) return e;
  const m = /^(E_[A-Z_]+): ([\s\S]*)$/.exec(e.message);
  if (!m) return e;
  const make = CODES[m[1]];
  return make ? make(m[2]) : new BackendError(m[2]);
}

/** Runs a native call, rethrowing its error as a typed arflow error. */
export function sync<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw mapNativeError(e);
  }
}

/** {@link sync} for calls that return promises (work on the libuv pool). */
export async function async<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw mapNativeError(e);
  }
}

/**
 * Checks a device name is one arflow knows (`cpu`, `cuda`, `cuda:N`, `auto`): ConfigError otherwise.
 * Whether that device can be opened here is the backend's question ({@link onNativeDevice}, BackendError).
 */
export function checkDeviceName(device: unknown): string {
  if (typeof device === 'string' && /^(cpu|auto|cuda(:\d+)?)$/.test(device)) return device;
  throw new ConfigError(
    `unknown device ${JSON.stringify(device) ?? String(device)}: expected cpu, cuda, cuda:N or auto`,
  );
}

const warned = new Set<string>();

/**
 * Builds a native model with the addon build that runs `device`, and says which device it runs on:
 *   - 'cpu': the CPU build; nothing CUDA is looked for;
 *   - 'cuda', 'cuda:N': the CUDA build, or a BackendError saying what is missing (the driver, cuBLAS…)
 *     and that the CPU build is still there;
 *   - 'auto': 'cuda' when the CUDA build loads and `build` opens the GPU with it, else 'cpu' after one
 *     warning (process.emitWarning, once per reason) saying why.
 * `build` throws BackendError for a device it cannot open; its other errors are the model's and propagate.
 */
export function onNativeDevice<T>(
  device: string,
  build: (addon: NativeAddon, device: string) => T,
): { model: T; device: string } {
  checkDeviceName(device);
  if (device === 'cpu') return { model: build(loadNative(), 'cpu'), device };
  const cuda = loadCudaNative(nativePlatform(), ROOT);
  let reason: string;
  if ('addon' in cuda) {
    const on = device === 'auto' ? 'cuda' : device;
    try {
      return { model: build(cuda.addon, on), device: on };
    } catch (e) {
      if (!(e instanceof BackendError)) throw e;
      reason = `the CUDA build loaded but failed (${e.message})`;
    }
  } else {
    reason = cuda.reason;
  }
  if (device !== 'auto') {
    throw new BackendError(
      `device ${device} is not available: ${reason}. ` +
        "The CPU build is still available: use device 'cpu' (or 'auto', which falls back to it).",
    );
  }
  if (!warned.has(reason)) {
    warned.add(reason);
    process.emitWarning(`arflow: device 'auto' is using the CPU build: ${reason}`, { code: 'ARFLOW_CUDA_UNAVAILABLE' });
  }
  return { model: build(loadNative(), 'cpu'), device: 'cpu' };
}

/** What every native model class exposes for its parameters and optimizer state. */
export type NativeParamModel = Pick<
  CharLmBackend,
  'paramInfo' | 'getParam' | 'setParam' | 'getOptimState' | 'setOptimState' | 'getOptimStep' | 'setOptimStep'
>;

/** Parameter and optimizer accessors shared by the native model adapters. */
export abstract class NativeParameters<M extends NativeParamModel> {
  readonly kind = 'native' as const;
  protected abstract readonly m: M;

  paramInfo(): ParamInfo[] {
    return sync(() => this.m.paramInfo());
  }
  getParam(name: string): Float32Array {
    return sync(() => this.m.getParam(name));
  }
  setParam(name: string, data: Float32Array): void {
    sync(() => this.m.setParam(name, data));
  }
  getOptimState(which: OptimMoment, name: string): Float32Array {
    return sync(() => this.m.getOptimState(which, name));
  }
  setOptimState(which: OptimMoment, name: string, data: Float32Array): void {
    sync(() => this.m.setOptimState(which, name, data));
  }
  getOptimStep(): number {
    return sync(() => this.m.getOptimStep());
  }
  setOptimStep(step: number): void {
    sync(() => this.m.setOptimStep(step));
  }
}

/** The character LM on the native backend (CPU, or CUDA on the CUDA build). */
export class NativeCharLm extends NativeParameters<NativeModel> implements CharLmBackend {
  protected readonly m: NativeModel;

  /** The device it runs on ('auto' resolved). */
  readonly device: string;

  constructor(
    readonly shape: CharLmShape,
    device = 'cpu',
  ) {
    super();
    const on = onNativeDevice(device, (addon, dev) => sync(() => new addon.NativeCharLm(shape, dev)));
    this.m = on.model;
    this.device = on.device;
  }

  getCarry(): Carry | null {
    return this.m.getCarry();
  }
  setCarry(carry: Carry | null): void {
    sync(() => this.m.setCarry(carry));
  }
  trainStep(ids: Uint32Array, targets: Uint32Array, batch: number, seq: number, opt: OptimConfig): Promise<StepStats> {
    return async(() => this.m.trainStep(ids, targets, batch, seq, opt));
  }
  async lossAndGrads(
    ids: Uint32Array,
    targets: Uint32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<LossGrads> {
    const r = await async(() => this.m.lossAndGrads(ids, targets, batch, seq, state));
    const grads: Record<string, Float32Array> = {};
    for (const g of r.grads) grads[g.name] = g.data;
    return { loss: r.loss, grads, dh0: r.dh0 };
  }
  nll(
    ids: Uint32Array,
    targets: Uint32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<NllResult> {
    return async(() => this.m.nll(ids, targets, batch, seq, state));
  }
  step(state: Float32Array | null, tokens: Uint32Array): { state: Float32Array; logits: Float32Array } {
    return sync(() => this.m.step(state, tokens));
  }
  /** Steps and draws in Rust: one call per token for `stream()`, one for all of `sample()`. */
  sampler(init: SamplerInit): TokenSampler {
    const { temperature, topK, topP } = init.sampling;
    const rng = new Uint32Array(4 * init.rngs.length);
    for (const [i, r] of init.rngs.entries()) rng.set(r.state(), 4 * i);
    // topK ≥ V keeps every token, as 0 does; clamped so that it fits the binding's u32.
    const k = Math.min(topK, this.shape.vocabSize);
    const s = sync(() => this.m.sampler(init.state, init.prime, init.rngs.length, rng, temperature, k, topP));
    return {
      // The per-character call of `stream()`: no closure beyond this one.
      next: () => {
        try {
          return s.next();
        } catch (e) {
          throw mapNativeError(e);
        }
      },
      take: (n: number) => sync(() => s.take(n)),
    };
  }
}
