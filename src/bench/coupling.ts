/**
 * Throughput of one affine-coupling layer, forward + backward (the kernel only; the conditioner is a
 * separate cost), native vs the pure-TS reference, on a Fashion-MNIST-sized vector (D = 784).
 */
import { couplingBackward, couplingForward } from '../backend/js/coupling.js';
import type { NativeAddon } from '../backend/native.js';
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
  return {
    layer: `affine coupling fwd+bwd, batch ${n} × D ${d}`,
    nativeSamplesPerSec: Math.round(native * n),
    jsSamplesPerSec: Math.round(js * n),
    speedupNativeOverJs: +(native / js).toFixed(1),
  };
}
