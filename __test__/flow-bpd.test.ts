/**
 * Bits per dimension of a pixel-space flow against a hand calculation from the formulas of
 * `src/flows/preprocess.ts`: a flow made of one `scale` layer with known log-scales, so every term
 * of the chain (dequantisation, logit, the layer's log-det, the base density) is written out here
 * and none can be dropped or flip sign without this test failing.
 */
import { describe, expect, it } from 'vitest';
import type { FlowNetSpec } from '../src/backend/flownet-types.js';
import { Flow } from '../src/models/flownet.js';
import { Rng } from '../src/util/rng.js';

const SPEC: FlowNetSpec = { shape: [1, 2, 2], context: 0, base: 'normal', layers: [{ type: 'scale' }] };
const D = 4;
const LOG_SCALE = [0.3, -0.7, 1.1, 0.5];
/** Two 2×2 images, from black to white. */
const PIXELS = Uint8Array.from([0, 17, 128, 255, 3, 200, 99, 64]);
const SEED = 5;

function scaleFlow(): Flow {
  const flow = Flow.create(SPEC, { pixels: true });
  flow.backend.setParam('layers.0.log_scale', Float32Array.from(LOG_SCALE));
  return flow;
}

/** −log p of each dequantised image p + u over [0, 256)^D, in nats, by hand. */
function handNll(pixels: Uint8Array, seed: number): number[] {
  const alpha = 0.05;
  const rng = new Rng(seed); // the dequantisation noise: one uniform per pixel, in order
  const out: number[] = [];
  for (let i = 0; i < pixels.length / D; i++) {
    let logp = 0;
    for (let d = 0; d < D; d++) {
      const u = rng.uniform();
      const x = (pixels[i * D + d] + u) / 256; // dequantise into [0, 1)
      const q = alpha + (1 - 2 * alpha) * x;
      const y = Math.log(q) - Math.log(1 - q); // logit
      const z = y * Math.exp(LOG_SCALE[d]); // the scale layer
      logp += -0.5 * z * z - 0.5 * Math.log(2 * Math.PI); // standard normal base density
      logp += LOG_SCALE[d]; // the scale layer's log-det
      logp += Math.log(1 - 2 * alpha) - Math.log(q) - Math.log(1 - q); // the logit's log-det
      logp -= Math.log(256); // x = (p + u)/256: density per unit of pixel value
    }
    out.push(-logp);
  }
  return out;
}

describe('bits/dim of a pixel-space flow', () => {
  it('matches the hand calculation term by term (scale layer, fixed images and noise seed)', async () => {
    const flow = scaleFlow();
    const per = handNll(PIXELS, SEED);
    const nll = (per[0] + per[1]) / 2;
    const r = await flow.bitsPerDim(PIXELS, { seed: SEED });
    // float32 storage of x, y and z costs ~1e-6 relative; any dropped term moves bpd by ≥ 0.15.
    expect(r.nll).toBeCloseTo(nll, 3);
    expect(r.bpd).toBeCloseTo(nll / (D * Math.LN2), 4);
    // testNll is the same number.
    expect(await flow.testNll(PIXELS, { seed: SEED })).toEqual(r);
    // One image alone scores its own term.
    const one = await flow.bitsPerDim(PIXELS.subarray(0, D), { seed: SEED });
    expect(one.bpd).toBeCloseTo(per[0] / (D * Math.LN2), 4);
  });

  it('depends on the noise seed (a different u) but not on anything else', async () => {
    const flow = scaleFlow();
    const a = await flow.bitsPerDim(PIXELS, { seed: SEED });
    const b = await flow.bitsPerDim(PIXELS, { seed: SEED + 1 });
    expect(b.bpd).not.toBe(a.bpd);
    const nll = handNll(PIXELS, SEED + 1).reduce((s, v) => s + v, 0) / 2;
    expect(b.bpd).toBeCloseTo(nll / (D * Math.LN2), 4);
    expect(await flow.bitsPerDim(PIXELS, { seed: SEED })).toEqual(a);
  });

  it('a real-space flow scores −log p(x) with bpd = nll / (D ln 2), no pixel terms', async () => {
    const flow = Flow.create(SPEC);
    flow.backend.setParam('layers.0.log_scale', Float32Array.from(LOG_SCALE));
    const x = Float32Array.from([0.5, -1, 2, 0.25, 0, 1, -0.5, 3]);
    let nll = 0;
    for (let i = 0; i < 2; i++) {
      for (let d = 0; d < D; d++) {
        const z = x[i * D + d] * Math.exp(LOG_SCALE[d]);
        nll -= -0.5 * z * z - 0.5 * Math.log(2 * Math.PI) + LOG_SCALE[d];
      }
    }
    nll /= 2;
    const r = await flow.testNll(x);
    expect(r.nll).toBeCloseTo(nll, 4);
    expect(r.bpd).toBeCloseTo(nll / (D * Math.LN2), 5);
  });
});
