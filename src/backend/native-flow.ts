/**
 * Adapts the native addon's `NativeRealNvp` (Rust on candle) to {@link FlowBackend}. Errors from Rust
 * arrive as `"<CODE>: message"` and are rethrown as arflow's typed errors.
 */
import { BackendError } from '../errors.js';
import type { FlowBackend, FlowShape } from './flow-types.js';
import { async, checkDevice, loadNative, NativeParameters, sync } from './native.js';
import type { OptimConfig, StepStats } from './types.js';

/** The addon's flow class: the contract, except that gradients come back as a list. */
type NativeFlowModel = Omit<FlowBackend, 'kind' | 'shape' | 'lossAndGrads'> & {
  lossAndGrads(
    x: Float32Array,
    batch: number,
  ): Promise<{ loss: number; grads: { name: string; data: Float32Array }[] }>;
};

interface NativeFlowAddon {
  NativeRealNvp?: new (shape: FlowShape, device: string) => NativeFlowModel;
  buildInfo(): { version: string; cuda: boolean; threads: number };
}

/** The vector Real NVP flow on the native backend. */
export class NativeRealNvp extends NativeParameters<NativeFlowModel> implements FlowBackend {
  protected readonly m: NativeFlowModel;

  constructor(
    readonly shape: FlowShape,
    readonly device: string = 'cpu',
  ) {
    super();
    const addon = loadNative() as unknown as NativeFlowAddon;
    const Ctor = addon.NativeRealNvp;
    if (!Ctor) {
      throw new BackendError(
        'this arflow native addon predates the Real NVP flow; rebuild it with `npm run build:native`',
      );
    }
    checkDevice(addon, device);
    this.m = sync(() => new Ctor(shape, device));
  }
  trainStep(x: Float32Array, batch: number, opt: OptimConfig): Promise<StepStats> {
    return async(() => this.m.trainStep(x, batch, opt));
  }
  async lossAndGrads(x: Float32Array, batch: number): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
    const r = await async(() => this.m.lossAndGrads(x, batch));
    const grads: Record<string, Float32Array> = {};
    for (const g of r.grads) grads[g.name] = g.data;
    return { loss: r.loss, grads };
  }
  logProb(x: Float32Array, batch: number): Promise<Float32Array> {
    return async(() => this.m.logProb(x, batch));
  }
  encode(x: Float32Array, batch: number): { z: Float32Array; logdet: Float32Array } {
    return sync(() => this.m.encode(x, batch));
  }
  decode(z: Float32Array, batch: number): { x: Float32Array; logdet: Float32Array } {
    return sync(() => this.m.decode(z, batch));
  }
}
