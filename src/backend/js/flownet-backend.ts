/**
 * The FlowNet on the pure-TypeScript backend ({@link FlowNetBackend}): float32 parameters and AdamW
 * moments with global-norm clipping (`JsParameters`, as every TypeScript backend), the float64 reference
 * of `flownet.ts` for log-densities, encoding and decoding, and the gradient of `flownet-grad.ts` for
 * training. It trains the specs whose layers that gradient covers (couplings with MLP conditioners,
 * scale, reverse: the vector Real NVP and NICE presets) and refuses any other with a ConfigError. Its
 * seeded initialisation is the native backend's (`flownet-init.ts`). Slow (plain loops): the reference
 * the native backend is tested against, and a fallback where the addon is missing.
 */
import { ConfigError } from '../../errors.js';
import type { FlowNetBackend, FlowNetSpec, TensorInfo } from '../flownet-types.js';
import type { OptimConfig, StepStats } from '../types.js';
import { JsFlowNet } from './flownet.js';
import { checkTrainable, flowNetLossAndGrads } from './flownet-grad.js';
import { initialValues } from './flownet-init.js';
import { JsParameters } from './parameters.js';

type Ctx = Float32Array | null;

/** The reference network of a spec this backend trains; a size JavaScript cannot allocate is a ConfigError. */
function referenceNet(spec: FlowNetSpec): JsFlowNet {
  try {
    const net = new JsFlowNet(spec);
    checkTrainable(net.spec);
    return net;
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw new ConfigError(`this flow is too big for the TypeScript backend (${e.message})`);
  }
}

export class JsFlowNetBackend extends JsParameters implements FlowNetBackend {
  readonly kind = 'js' as const;
  readonly device = 'cpu';
  readonly spec: FlowNetSpec;
  /** The reference network, holding float64 copies of the float32 parameters and the buffers. */
  private readonly net: JsFlowNet;

  /**
   * A flow of `spec` with the seeded initialisation of the native backend. ConfigError for an invalid
   * spec, one with a layer this backend cannot train, or one too big for JavaScript's arrays.
   */
  constructor(spec: FlowNetSpec, seed: number) {
    const net = referenceNet(spec);
    super(net.paramInfo(), 'flow');
    this.net = net;
    this.spec = net.spec;
    for (const [name, v] of initialValues(this.spec, seed)) {
      if (Object.hasOwn(this.params, name)) super.setParam(name, v);
      this.net.setTensor(name, v);
    }
  }

  override setParam(name: string, data: Float32Array): void {
    super.setParam(name, data);
    this.net.setTensor(name, data);
  }

  bufferInfo(): TensorInfo[] {
    return this.net.bufferInfo();
  }

  getBuffer(name: string): Float32Array {
    this.checkBuffer(name);
    return Float32Array.from(this.net.getTensor(name));
  }

  /** Sets a buffer (a random coupling mask: 0/1 with both present, else a DataError). */
  setBuffer(name: string, data: Float32Array): void {
    this.checkBuffer(name);
    this.net.setTensor(name, data);
  }

  /** No layer this backend trains has a data-dependent initialisation: always false. */
  dataInit(_x: Float32Array, _ctx: Ctx, _batch: number): boolean {
    return false;
  }

  async trainStep(x: Float32Array, ctx: Ctx, batch: number, opt: OptimConfig): Promise<StepStats> {
    this.checkLr(opt);
    const { loss, grads } = await this.lossAndGrads(x, ctx, batch);
    const stats = this.optimizerStep(loss, grads, opt);
    // Unchecked: an update that overflows float32 is the next step's DivergenceError, as natively.
    for (const name of Object.keys(this.params)) this.net.tensorView(name).set(this.params[name]);
    return stats;
  }

  async lossAndGrads(
    x: Float32Array,
    ctx: Ctx,
    batch: number,
  ): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
    const r = flowNetLossAndGrads(this.net, x, batch, ctx ?? undefined);
    const grads: Record<string, Float32Array> = {};
    for (const [name, g] of Object.entries(r.grads)) grads[name] = Float32Array.from(g);
    return { loss: r.loss, grads };
  }

  async logProb(x: Float32Array, ctx: Ctx, batch: number): Promise<Float32Array> {
    return Float32Array.from(this.net.logProb(x, batch, ctx ?? undefined));
  }

  encode(x: Float32Array, ctx: Ctx, batch: number): { z: Float32Array; logdet: Float32Array } {
    const r = this.net.forward(x, batch, ctx ?? undefined);
    return { z: Float32Array.from(r.z), logdet: Float32Array.from(r.logdet) };
  }

  decode(z: Float32Array, ctx: Ctx, batch: number): { x: Float32Array; logdet: Float32Array } {
    const r = this.net.inverse(z, batch, ctx ?? undefined);
    return { x: Float32Array.from(r.x), logdet: Float32Array.from(r.logdet) };
  }

  private checkBuffer(name: string): void {
    if (!this.net.bufferInfo().some((b) => b.name === name))
      throw new ConfigError(`flow has no buffer named ${JSON.stringify(name)}`);
  }
}
