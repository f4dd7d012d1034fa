/**
 * Seeded initial values of a FlowNet's parameters and buffers for the TypeScript backend: the rules and
 * the random stream of the native initialisation (`crates/arflow-core/src/flow/net/init.rs`, SplitMix64),
 * so that a flow built from the same spec and seed starts from the same values on either backend. Only
 * the layers that backend trains are covered (`flownet-grad.ts`):
 *
 * - MLP conditioners: weights and biases U(±1/√fan_in) (fan_in = the linear's input width), drawn
 *   tensor by tensor in canonical order; the last linear zero, so each coupling starts as the identity;
 * - coupling `scale`: ones; `scale` layers' `log_scale`: zeros;
 * - a random mask: ⌊D/2⌋ ones at the places a seeded Fisher–Yates shuffle puts first.
 */
import type { FlowNetSpec, LayerSpec, TensorInfo } from '../flownet-types.js';
import { flowNetTensorInfo } from './flownet.js';
import { checkTrainable } from './flownet-grad.js';

const MASK64 = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;

/** SplitMix64, as `init.rs`'s `SplitMix`: identical streams for identical seeds. */
class SplitMix {
  private state: bigint;

  constructor(seed: number) {
    this.state = BigInt(seed) ^ GOLDEN;
  }

  nextU64(): bigint {
    this.state = (this.state + GOLDEN) & MASK64;
    let z = this.state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  }

  /** Uniform in [lo, hi), from 53 random bits. */
  range(lo: number, hi: number): number {
    return lo + (hi - lo) * (Number(this.nextU64() >> 11n) / 2 ** 53);
  }
}

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Initial values of every parameter and buffer of `spec` (a spec the TypeScript backend trains: a
 * ConfigError otherwise), by name, drawn from `seed`.
 */
export function initialValues(spec: FlowNetSpec, seed: number): Map<string, Float32Array> {
  checkTrainable(spec);
  const { params, buffers } = flowNetTensorInfo(spec);
  const rng = new SplitMix(seed);
  const values = new Map<string, Float32Array>();
  const byLayer = (list: TensorInfo[], k: number) => list.filter((t) => t.name.startsWith(`layers.${k}.`));
  spec.layers.forEach((l: LayerSpec, k) => {
    for (const b of byLayer(buffers, k)) {
      // The only buffer of a trainable layer: a random coupling mask.
      const d = size(b.shape);
      const order = Array.from({ length: d }, (_, i) => i);
      for (let i = d - 1; i >= 1; i--) {
        const j = Number(rng.nextU64() % BigInt(i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      const m = new Float32Array(d);
      for (const j of order.slice(0, Math.floor(d / 2))) m[j] = 1;
      values.set(b.name, m);
    }
    const last = l.type === 'coupling' && l.net.type === 'mlp' ? `layers.${k}.net.${l.net.depth}.` : null;
    for (const p of byLayer(params, k)) {
      const v = new Float32Array(size(p.shape));
      const short = p.name.slice(`layers.${k}.`.length);
      if (short === 'scale') v.fill(1);
      else if (short.startsWith('net.') && !(last !== null && p.name.startsWith(last))) {
        // A linear's weight [out, in] and then its bias [out]: both bounded by the weight's fan-in.
        const fanIn = short.endsWith('.weight') ? p.shape[1] : params[params.indexOf(p) - 1].shape[1];
        const bound = 1 / Math.sqrt(fanIn);
        for (let i = 0; i < v.length; i++) v[i] = rng.range(-bound, bound);
      }
      values.set(p.name, v);
    }
  });
  return values;
}
