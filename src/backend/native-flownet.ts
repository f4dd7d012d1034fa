/**
 * Adapts the native addon's `NativeFlowNet` (Rust on candle, `crates/arflow-core/src/flow/net/`) to
 * TypeScript: the general flow network of `src/backend/flownet-types.ts`. Errors from Rust arrive as
 * `"<CODE>: message"` and are rethrown as arflow's typed errors.
 */
import { BackendError } from '../errors.js';
import type { FlowNetBackend, FlowNetSpec, TensorInfo } from './flownet-types.js';
import { async, NativeParameters, type NativeParamModel, onNativeDevice, sync } from './native.js';
import type { OptimConfig, StepStats } from './types.js';

type Ctx = Float32Array | null;

interface NativeNet extends NativeParamModel {
  bufferInfo(): TensorInfo[];
  getBuffer(name: string): Float32Array;
  setBuffer(name: string, data: Float32Array): void;
  dataInit(x: Float32Array, ctx: Ctx, batch: number): boolean;
  trainStep(x: Float32Array, ctx: Ctx, batch: number, opt: OptimConfig): Promise<StepStats>;
  lossAndGrads(
    x: Float32Array,
    ctx: Ctx,
    batch: number,
  ): Promise<{ loss: number; grads: { name: string; data: Float32Array }[] }>;
  logProb(x: Float32Array, ctx: Ctx, batch: number): Promise<Float32Array>;
  encode(x: Float32Array, ctx: Ctx, batch: number): { z: Float32Array; logdet: Float32Array };
  decode(z: Float32Array, ctx: Ctx, batch: number): { x: Float32Array; logdet: Float32Array };
}

interface NativeNetAddon {
  NativeFlowNet?: new (spec: string, seed: number, device: string) => NativeNet;
}

/** A FlowNet on the native backend; batches are `[batch, D]`, contexts `[batch, K]` or null. */
export class NativeFlowNet extends NativeParameters<NativeNet> implements FlowNetBackend {
  protected readonly m: NativeNet;
  /** The device it runs on ('auto' resolved). */
  readonly device: string;

  constructor(
    readonly spec: FlowNetSpec,
    seed: number,
    device = 'cpu',
  ) {
    super();
    const on = onNativeDevice(device, (addon, dev) => {
      const Ctor = (addon as unknown as NativeNetAddon).NativeFlowNet;
      if (!Ctor) {
        throw new BackendError('this arflow native addon predates FlowNet; rebuild it with `npm run build:native`');
      }
      return sync(() => new Ctor(JSON.stringify(spec), seed, dev));
    });
    this.m = on.model;
    this.device = on.device;
  }
  bufferInfo(): TensorInfo[] {
    return sync(() => this.m.bufferInfo());
  }
  getBuffer(name: string): Float32Array {
    return sync(() => this.m.getBuffer(name));
  }
  setBuffer(name: string, data: Float32Array): void {
    sync(() => this.m.setBuffer(name, data));
  }
  dataInit(x: Float32Array, ctx: Ctx, batch: number): boolean {
    return sync(() => this.m.dataInit(x, ctx, batch));
  }
  trainStep(x: Float32Array, ctx: Ctx, batch: number, opt: OptimConfig): Promise<StepStats> {
    return async(() => this.m.trainStep(x, ctx, batch, opt));
  }
  async lossAndGrads(
    x: Float32Array,
    ctx: Ctx,
    batch: number,
  ): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
    const r = await async(() => this.m.lossAndGrads(x, ctx, batch));
    const grads: Record<string, Float32Array> = {};
    for (const g of r.grads) grads[g.name] = g.data;
    return { loss: r.loss, grads };
  }
  logProb(x: Float32Array, ctx: Ctx, batch: number): Promise<Float32Array> {
    return async(() => this.m.logProb(x, ctx, batch));
  }
  encode(x: Float32Array, ctx: Ctx, batch: number): { z: Float32Array; logdet: Float32Array } {
    return sync(() => this.m.encode(x, ctx, batch));
  }
  decode(z: Float32Array, ctx: Ctx, batch: number): { x: Float32Array; logdet: Float32Array } {
    return sync(() => this.m.decode(z, ctx, batch));
  }
}
