/**
 * Adapts the native addon's `NativeSeriesModel` (Rust on candle) to {@link SeriesBackend}, picks a
 * backend for the series model by name, and exposes the native likelihood-head op for the tests.
 * Errors from Rust arrive as `"<CODE>: message"` and are rethrown as arflow's typed errors.
 */
import { BackendError, ConfigError } from '../errors.js';
import type { BackendName, DeviceName } from './index.js';
import { JsSeriesModel, type Likelihood, type SeriesBackend, type SeriesShape } from './js/series.js';
import { async, loadNative, NativeParameters, onNativeDevice, sync } from './native.js';
import type { Carry, LossGrads, NllResult, OptimConfig, StepStats } from './types.js';

/** The addon's class: the contract, except that gradients come back as a list. */
type NativeSeriesClass = Omit<SeriesBackend, 'kind' | 'shape' | 'lossAndGrads'> & {
  lossAndGrads(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<{ loss: number; grads: { name: string; data: Float32Array }[]; dh0: Float32Array }>;
};

/** The shape as the binding takes it: `components` only for the mixture, optional fields only when given. */
interface NativeSeriesShape {
  dim: number;
  hidden: number;
  layers: number;
  cell: string;
  likelihood: string;
  components?: number;
  predictAhead?: number;
  outputs?: string;
}

interface NativeSeriesAddon {
  NativeSeriesModel?: new (shape: NativeSeriesShape, device: string) => NativeSeriesClass;
  seriesHeadNll?: (
    likelihood: string,
    dim: number,
    components: number | null,
    raw: Float64Array,
    y: Float64Array,
  ) => { nll: Float64Array; grad: Float64Array };
}

const STALE = 'this arflow native addon predates the series models; rebuild it with `npm run build:native`';

function addon(): NativeSeriesAddon {
  return loadNative() as unknown as NativeSeriesAddon;
}

/** The series model on the native backend (CPU, or CUDA in a CUDA build). */
export class NativeSeriesModel extends NativeParameters<NativeSeriesClass> implements SeriesBackend {
  protected readonly m: NativeSeriesClass;
  /** The device it runs on ('auto' resolved). */
  readonly device: string;

  constructor(
    readonly shape: SeriesShape,
    device = 'cpu',
  ) {
    super();
    const given = Object.fromEntries(Object.entries(shape).filter(([, v]) => v !== undefined));
    const on = onNativeDevice(device, (a, dev) => {
      const Ctor = (a as unknown as NativeSeriesAddon).NativeSeriesModel;
      if (!Ctor) throw new BackendError(STALE);
      return sync(() => new Ctor(given as unknown as NativeSeriesShape, dev));
    });
    this.m = on.model;
    this.device = on.device;
  }

  getCarry(): Carry | null {
    return this.m.getCarry();
  }
  setCarry(carry: Carry | null): void {
    sync(() => this.m.setCarry(carry));
  }
  trainStep(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    opt: OptimConfig,
  ): Promise<StepStats> {
    return async(() => this.m.trainStep(inputs, targets, batch, seq, opt));
  }
  async lossAndGrads(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<LossGrads> {
    const r = await async(() => this.m.lossAndGrads(inputs, targets, batch, seq, state));
    const grads: Record<string, Float32Array> = {};
    for (const g of r.grads) grads[g.name] = g.data;
    return { loss: r.loss, grads, dh0: r.dh0 };
  }
  nll(
    inputs: Float32Array,
    targets: Float32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<NllResult> {
    return async(() => this.m.nll(inputs, targets, batch, seq, state));
  }
  step(state: Float32Array | null, x: Float32Array): { state: Float32Array; raw: Float32Array } {
    return sync(() => this.m.step(state, x));
  }
}

/** A series-model backend by name: 'native' (default) or 'js' (the pure-TypeScript reference, cpu only). */
export function createSeriesBackend(
  shape: SeriesShape,
  backend: BackendName = 'native',
  device: DeviceName = 'cpu',
): SeriesBackend {
  if (backend === 'js') {
    if (device !== 'cpu' && device !== 'auto')
      throw new ConfigError(`the pure-TypeScript backend runs on cpu only, not ${device}`);
    return new JsSeriesModel(shape);
  }
  if (backend === 'native') return new NativeSeriesModel(shape, device);
  throw new ConfigError(`unknown backend ${JSON.stringify(backend)}: expected 'native' or 'js'`);
}

/**
 * The native likelihood head (its candle op, forward and backward, in f64): the NLL of every row of
 * `y [rows, dim]` under `raw [rows, outSize]`, and ∂(Σ NLL)/∂raw — the same quantities as `gaussianNll`
 * / `mixtureNll` of js/mixture.ts, row by row.
 */
export function nativeHeadNll(
  likelihood: Likelihood,
  dim: number,
  components: number | undefined,
  raw: Float64Array,
  y: Float64Array,
): { nll: Float64Array; grad: Float64Array } {
  const f = addon().seriesHeadNll;
  if (!f) throw new BackendError(STALE);
  return sync(() => f(likelihood, dim, components ?? null, raw, y));
}
