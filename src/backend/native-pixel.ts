/**
 * Adapts the native addon's `NativePixelModel` (Rust on candle: fused row-layer kernels with their own
 * backward through the rows, a carried-state sampler) to {@link PixelBackend}, and picks a Pixel-RNN
 * backend by name. Errors from Rust arrive as `"<CODE>: message"` and are rethrown as arflow's typed
 * errors.
 */
import { BackendError, ConfigError, ShapeError } from '../errors.js';
import type { BackendName, DeviceName } from './index.js';
import { JsPixelModel } from './js/pixel-model.js';
import { async, NativeParameters, onNativeDevice, sync } from './native.js';
import type { PixelBackend, PixelLoss, PixelSampleRequest } from './pixel-backend.js';
import { type PixelRnnShape, validatePixelShape } from './pixel-types.js';
import type { OptimConfig, StepStats } from './types.js';

/** The addon's class: the contract, except that gradients come back as a list. */
type NativePixelClass = Omit<PixelBackend, 'kind' | 'shape' | 'lossAndGrads' | 'sample'> & {
  lossAndGrads(
    x: Float32Array,
    targets: Uint8Array,
    labels: Int32Array | null,
    batch: number,
  ): Promise<{ loss: number; grads: { name: string; data: Float32Array }[] }>;
  sample(
    n: number,
    uniforms: Float32Array,
    labels: Int32Array | null,
    topRows: number,
    top: Uint8Array | null,
  ): Promise<Uint8Array>;
};

interface NativePixelAddon {
  NativePixelModel?: new (shape: PixelRnnShape, device: string) => NativePixelClass;
}

const STALE = 'this arflow native addon predates the Pixel-RNN; rebuild it with `npm run build:native`';

/** Throws ShapeError unless `v` is an integer ≥ `min` (a batch or sample count the binding can take). */
function checkCount(fn: string, what: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min || v > 0xffffffff) {
    throw new ShapeError(`${fn}: ${what} must be an integer ≥ ${min}, got ${v}`);
  }
}

/** The Pixel-RNN on the native backend (CPU, or CUDA in a CUDA build). */
export class NativePixelModel extends NativeParameters<NativePixelClass> implements PixelBackend {
  protected readonly m: NativePixelClass;
  readonly shape: PixelRnnShape;
  /** The device it runs on ('auto' resolved). */
  readonly device: string;

  constructor(shape: PixelRnnShape, device = 'cpu') {
    super();
    validatePixelShape(shape);
    this.shape = Object.freeze({ ...shape });
    const on = onNativeDevice(device, (a, dev) => {
      const Ctor = (a as unknown as NativePixelAddon).NativePixelModel;
      if (!Ctor) throw new BackendError(STALE);
      return sync(() => new Ctor(this.shape, dev));
    });
    this.m = on.model;
    this.device = on.device;
  }

  trainStep(
    x: Float32Array,
    targets: Uint8Array,
    labels: Int32Array | null,
    batch: number,
    opt: OptimConfig,
  ): Promise<StepStats> {
    return async(async () => {
      checkCount('trainStep', 'batch', batch, 1);
      return this.m.trainStep(x, targets, labels, batch, opt);
    });
  }

  async lossAndGrads(
    x: Float32Array,
    targets: Uint8Array,
    labels: Int32Array | null,
    batch: number,
  ): Promise<PixelLoss> {
    const r = await async(async () => {
      checkCount('lossAndGrads', 'batch', batch, 1);
      return this.m.lossAndGrads(x, targets, labels, batch);
    });
    const grads: Record<string, Float32Array> = {};
    for (const g of r.grads) grads[g.name] = g.data;
    return { loss: r.loss, grads };
  }

  nll(x: Float32Array, targets: Uint8Array, labels: Int32Array | null, batch: number): Promise<Float64Array> {
    return async(async () => {
      checkCount('nll', 'batch', batch, 1);
      return this.m.nll(x, targets, labels, batch);
    });
  }

  forward(x: Float32Array, labels: Int32Array | null, batch: number): Promise<Float32Array> {
    return async(async () => {
      checkCount('forward', 'batch', batch, 1);
      return this.m.forward(x, labels, batch);
    });
  }

  sample(req: PixelSampleRequest): Promise<Uint8Array> {
    return async(async () => {
      checkCount('sample', 'n', req.n, 0);
      checkCount('sample', 'topRows', req.topRows, 0);
      return this.m.sample(req.n, req.uniforms, req.labels, req.topRows, req.top);
    });
  }
}

/** A Pixel-RNN backend by name: 'native' (default) or 'js' (the pure-TypeScript reference, cpu only). */
export function createPixelBackend(
  shape: PixelRnnShape,
  backend: BackendName = 'native',
  device: DeviceName = 'cpu',
): PixelBackend {
  if (backend === 'js') {
    if (device !== 'cpu' && device !== 'auto')
      throw new ConfigError(`the pure-TypeScript backend runs on cpu only, not ${device}`);
    return new JsPixelModel(shape);
  }
  if (backend === 'native') return new NativePixelModel(shape, device);
  throw new ConfigError(`unknown backend ${JSON.stringify(backend)}: expected 'native' or 'js'`);
}
