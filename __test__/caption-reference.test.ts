/**
 * The pure-TypeScript captioner (the oracle of the native one): every parameter gradient, the convs'
 * included, against float64 central finite differences for both decoder cells; the whole-sequence loss
 * against encode + step-by-step decoding; and the place-keeping flatten (a feature of the top-left patch
 * reaches the bridge at position (0, 0)).
 */
import { describe, expect, it } from 'vitest';
import {
  type CaptionShape,
  captionDecodeStep,
  captionEncode,
  captionLossAndGrads,
  captionNll,
  captionParamInfo,
} from '../src/backend/js/caption.js';
import { BOS, EOS, PAD, type Params } from '../src/backend/js/decoder.js';
import type { CellKind } from '../src/backend/types.js';
import { ConfigError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { expectCloseNonZero, numericGrad, uniform } from './helpers/numeric.js';

const shapeOf = (cell: CellKind): CaptionShape => ({
  vocab: 6,
  embed: 3,
  hidden: 3,
  layers: 2,
  cell,
  image: 8,
  channels: [2, 3],
});

function initParams(shape: CaptionShape, rng: Rng): Record<string, Float64Array> {
  const p: Record<string, Float64Array> = {};
  for (const { name, shape: dims } of captionParamInfo(shape))
    p[name] = uniform(
      rng,
      dims.reduce((a, d) => a * d, 1),
      0.6,
    );
  return p;
}

/** Two 8×8 images (a third of the pixels 0) and captions of 4 and 1 words. */
function batch(rng: Rng) {
  const images = Uint8Array.from({ length: 128 }, () => (rng.uniform() < 0.33 ? 0 : rng.int(256)));
  const decIn = Uint32Array.from([BOS, 3, 4, 5, BOS, 4, PAD, PAD]);
  const tgt = Uint32Array.from([3, 4, 5, EOS, 4, EOS, PAD, PAD]);
  return { images, decIn, tgt, B: 2, T: 4 };
}

describe.each(['gru', 'lstm'] as CellKind[])('reference captioner, %s decoder', (cell) => {
  const shape = shapeOf(cell);

  it('every parameter gradient, the convolutions included, matches central finite differences', () => {
    const rng = new Rng(cell === 'gru' ? 1 : 2);
    const p = initParams(shape, rng);
    const d = batch(rng);
    const r = captionLossAndGrads(shape, p, d.images, d.decIn, d.tgt, d.B, d.T, 'f64');
    expect(r.tokens).toBe(6);
    expect(Object.keys(r.grads)).toEqual(captionParamInfo(shape).map((i) => i.name));
    const loss = () => {
      const { nll, tokens } = captionNll(shape, p, d.images, d.decIn, d.tgt, d.B, d.T, 'f64');
      return nll / tokens;
    };
    expect(loss()).toBeCloseTo(r.loss, 13);
    for (const { name } of captionParamInfo(shape)) {
      expectCloseNonZero(name, r.grads[name], numericGrad(p[name], loss), 1e-6, 1e-3);
    }
  });

  it('the loss equals Σ −log softmax at the targets by encode + decode steps', () => {
    const rng = new Rng(3);
    const p = initParams(shape, rng);
    const d = batch(rng);
    const r = captionLossAndGrads(shape, p, d.images, d.decIn, d.tgt, d.B, d.T, 'f64');
    let state: Float64Array = captionEncode(shape, p, d.images, d.B, 'f64');
    let nll = 0;
    for (let t = 0; t < d.T; t++) {
      const step = captionDecodeStep(
        shape,
        p as Params,
        state,
        d.decIn.filter((_, i) => i % d.T === t),
        'f64',
      );
      state = step.state;
      for (let b = 0; b < d.B; b++) {
        const y = d.tgt[b * d.T + t];
        if (y !== PAD) nll -= step.logProbs[b * shape.vocab + y];
      }
    }
    expect(Math.abs(nll - r.loss * r.tokens)).toBeLessThan(1e-12 * nll);
  });
});

describe('reference captioner: encoder', () => {
  it('keeps places: a pixel of the top-left quarter reaches only the top-left features', () => {
    const shape = shapeOf('gru');
    const p = initParams(shape, new Rng(4));
    // With the bridge's weights zero except column j, s0 depends on feature j only.
    const features = 2 * 2 * 3;
    const moved: number[] = [];
    for (let j = 0; j < features; j++) {
      for (const l of [0, 1]) {
        p[`bridge.${l}.weight`].fill(0);
        for (let k = 0; k < 3; k++) p[`bridge.${l}.weight`][k * features + j] = 1;
      }
      const dark = captionEncode(shape, p, new Uint8Array(64), 1, 'f64');
      const lit = new Uint8Array(64);
      lit[0] = 255; // pixel (0, 0): its receptive field stays in the top-left 4×4 quarter
      const bright = captionEncode(shape, p, lit, 1, 'f64');
      if (dark.some((v, i) => v !== bright[i])) moved.push(j);
    }
    // Features (y, x, c) with y = x = 0 are indices 0..2.
    expect(moved.length).toBeGreaterThan(0);
    expect(moved.every((j) => j < 3)).toBe(true);
  });

  it('refuses images of the wrong size and a side the pools cannot halve', () => {
    const shape = shapeOf('gru');
    const p = initParams(shape, new Rng(5));
    expect(() => captionEncode(shape, p, new Uint8Array(63), 1, 'f64')).toThrow(ConfigError);
    expect(() => captionParamInfo({ ...shape, image: 6 })).toThrow(/not divisible by 2\^2/);
  });
});
