/**
 * Throughput of one affine-coupling layer, forward + backward (the kernel only; the conditioner is a
 * separate cost), native vs the pure-TS reference, on a Fashion-MNIST-sized vector (D = 784): through
 * the binding (fresh output arrays every call, as a caller of couplingForward/Backward sees it) and
 * inside Rust on reused buffers (the kernel's own rate).
 */
import { couplingBackward, couplingForward } from '../backend/js/coupling.js';
import type { NativeAddon } from '../backend/native.js';
import type { OptimConfig } from '../backend/types.js';
import { RealNVP } from '../models/flow.js';
import { Rng } from '../util/rng.js';

function timeIt(run: () => void, minSec: number): number {
  run();
  let reps = 0;
  const t0 = performance.now();
  while ((performance.now() - t0) / 1000 < minSec) {
    run();
    reps++;
  }
  return reps / ((performance.now() - t0) / 1000);
}

export function benchCoupling(addon: NativeAddon, quick: boolean) {
  const [n, d] = [256, 784];
  const rng = new Rng(0);
  const rand = (len: number) => Float32Array.from({ length: len }, () => rng.normal());
  const x = rand(n * d);
  const mask = Float32Array.from({ length: d }, (_, j) => j % 2);
  const p = { mask, sRaw: rand(n * d), t: rand(n * d), scale: rand(d) };
  const dy = rand(n * d);
  const dlogdet = rand(n);
  const native = timeIt(
    () => {
      addon.couplingForward(n, d, x, mask, p.sRaw, p.t, p.scale, false);
      addon.couplingBackward(n, d, x, mask, p.sRaw, p.scale, dy, dlogdet);
    },
    quick ? 0.5 : 2,
  );
  const js = timeIt(
    () => {
      couplingForward({ batch: n, dim: d }, x, p);
      couplingBackward({ batch: n, dim: d }, x, p, dy, dlogdet);
    },
    quick ? 0.5 : 2,
  );
  const kernel = addon.benchCoupling(n, d, quick ? 50 : 400);
  return {
    layer: `affine coupling fwd+bwd, batch ${n} × D ${d}`,
    nativeKernelSamplesPerSec: Math.round(kernel),
    nativeSamplesPerSec: Math.round(native * n),
    jsSamplesPerSec: Math.round(js * n),
    speedupNativeOverJs: +(native / js).toFixed(1),
    speedupKernelOverJs: +(kernel / (js * n)).toFixed(1),
  };
}

/**
 * A whole coupling stack as it trains: Real NVP on 784-dim vectors (4 affine couplings, MLP
 * conditioners of width 256 and depth 2), one training step (forward, log-density, backward through
 * the conditioners and the fused couplings, AdamW) on a batch of 64, native vs the TypeScript
 * reference. Unlike the kernel alone above, no per-call arrays cross the binding: this is the cost a
 * user's training loop pays.
 */
export async function benchCouplingStack(quick: boolean) {
  const [batch, dim] = [64, 784];
  const shape = { dim, couplings: 4, hidden: 256, depth: 2 };
  const rng = new Rng(1);
  const x = Float32Array.from({ length: batch * dim }, () => rng.normal());
  const opt: OptimConfig = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 100 };
  const rate = async (model: RealNVP, minSec: number) => {
    await model.backend.trainStep(x, null, batch, opt);
    let steps = 0;
    const t0 = performance.now();
    while ((performance.now() - t0) / 1000 < minSec || steps < 2) {
      await model.backend.trainStep(x, null, batch, opt);
      steps++;
    }
    return (steps * batch) / ((performance.now() - t0) / 1000);
  };
  const native = RealNVP.create(shape, { backend: 'native', seed: 0 });
  const nativeRate = await rate(native, quick ? 0.5 : 3);
  const jsRate = await rate(native.to('js'), quick ? 0.5 : 3);
  return {
    model: `Real NVP, D ${dim}, ${shape.couplings} couplings, MLP ${shape.hidden}×${shape.depth}, batch ${batch}`,
    nativeTrainSamplesPerSec: Math.round(nativeRate),
    jsTrainSamplesPerSec: Math.round(jsRate),
    speedupNativeOverJs: +(nativeRate / jsRate).toFixed(1),
  };
}
