/**
 * The native captioner (`NativeCaptioner`: Rust on candle, through N-API) against the pure-TypeScript
 * reference (`src/backend/js/caption.ts`, itself checked by finite differences in
 * caption-reference.test.ts), with the comparison rule and tolerances of seq2seq-native.test.ts
 * (`__test__/helpers/oracle.ts`): forward values to FWD_TOL, gradients to GRAD_TOL of each tensor's
 * own largest value. Both sides get the same f32 parameters.
 *
 * Scheduled sampling: the native step reports the decoder inputs it fed; the reference, teacher-forced
 * on those inputs, must give the same loss and gradients, and each sampled input must be the
 * inverse-CDF sample of the native single step's distribution (the mixing itself is the shared decoder
 * of seq2seq, compared token by token against the reference in seq2seq-native.test.ts).
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
import { BOS, EOS, PAD, type Params, sampleInverseCdf } from '../src/backend/js/decoder.js';
import { type CaptionBatch, NativeCaptioner } from '../src/backend/native-caption.js';
import type { CellKind } from '../src/backend/types.js';
import { ConfigError, ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import {
  expectClose,
  expectNonTrivial,
  expectScalarClose,
  expectStateClose,
  FWD_TOL,
  GRAD_TOL,
  uniform,
} from './helpers/oracle.js';

const shapeOf = (cell: CellKind, image = 16, channels = [3, 4]): CaptionShape => ({
  vocab: 9,
  embed: 5,
  hidden: 7,
  layers: 2,
  cell,
  image,
  channels,
});

/** The same f32 parameters on both sides, 1.5× PyTorch's bound so that the tanh's and gates curve. */
function pair(shape: CaptionShape, seed: number): { native: NativeCaptioner; params: Params } {
  const native = new NativeCaptioner(shape, 'cpu');
  const rng = new Rng(seed);
  const params: Params = {};
  for (const { name, shape: dims } of captionParamInfo(shape)) {
    const n = dims.reduce((a, d) => a * d, 1);
    const fanIn = name.includes('embedding') ? 1 : dims.length === 4 ? dims[1] * 9 : dims.length === 2 ? dims[1] : 9;
    const p = uniform(rng, n, name.includes('embedding') ? 1 : 1.5 / Math.sqrt(fanIn));
    native.setParam(name, p);
    params[name] = p;
  }
  return { native, params };
}

/** `B` images (a quarter of the pixels black) and captions of cycling lengths, PAD after EOS. */
function batchOf(shape: CaptionShape, rng: Rng, B: number, T: number): CaptionBatch {
  const px = shape.image * shape.image;
  const images = Uint8Array.from({ length: B * px }, () => (rng.uniform() < 0.25 ? 0 : rng.int(256)));
  const decIn = new Uint32Array(B * T);
  const targets = new Uint32Array(B * T);
  for (let b = 0; b < B; b++) {
    const len = [T - 1, 2, T - 2, 1][b % 4];
    decIn[b * T] = BOS;
    for (let t = 0; t < len; t++) {
      const y = 3 + rng.int(shape.vocab - 3);
      targets[b * T + t] = y;
      decIn[b * T + t + 1] = y;
    }
    targets[b * T + len] = EOS;
  }
  return { images, decIn, targets, batch: B, tgtLen: T };
}

const reference = (shape: CaptionShape, p: Params, d: CaptionBatch, decIn = d.decIn) =>
  captionLossAndGrads(shape, p, d.images, decIn, d.targets, d.batch, d.tgtLen, 'f32');

describe.each(['gru', 'lstm'] as CellKind[])('native captioner vs reference, %s decoder', (cell) => {
  it('loss and every gradient agree, encoder convolutions included', async () => {
    const shape = shapeOf(cell);
    const { native, params } = pair(shape, 1);
    const d = batchOf(shape, new Rng(2), 5, 6);
    const got = await native.lossAndGrads(d);
    const want = reference(shape, params, d);
    expectScalarClose('loss', got.loss, want.loss, GRAD_TOL);
    for (const { name } of captionParamInfo(shape)) {
      expectNonTrivial(name, want.grads[name]);
      expectClose(name, got.grads[name], want.grads[name], GRAD_TOL, 1e-12);
    }
    const nll = await native.nll(d);
    const ref = captionNll(shape, params, d.images, d.decIn, d.targets, d.batch, d.tgtLen, 'f32');
    expect(nll.tokens).toBe(ref.tokens);
    expectScalarClose('nll', nll.nll, ref.nll, FWD_TOL);
  });

  it('encode and decode steps (the forward logits) agree on the 56×56 canvases’ encoder', () => {
    const shape = shapeOf(cell, 56, [2, 3, 4]);
    const { native, params } = pair(shape, 3);
    const d = batchOf(shape, new Rng(4), 3, 4);
    let got = native.encode(d.images, 3);
    let want: Float32Array = captionEncode(shape, params, d.images, 3, 'f32');
    expectStateClose(cell, 'initial state', got, want, shape.hidden, FWD_TOL);
    for (const tokens of [
      [BOS, BOS, BOS],
      [3, 5, 8],
      [4, 4, EOS],
    ]) {
      const ids = Uint32Array.from(tokens);
      const n = native.decodeStep(got, ids);
      const r = captionDecodeStep(shape, params, want, ids, 'f32');
      expectClose('log-probabilities', n.logProbs, r.logProbs, FWD_TOL);
      expectStateClose(cell, 'state', n.state, r.state, shape.hidden, FWD_TOL);
      got = n.state;
      want = r.state;
    }
  });

  it('ε = 1 (all flips 1) is teacher forcing bit for bit; sampled inputs give the reference’s gradients', async () => {
    const shape = shapeOf(cell);
    const { native, params } = pair(shape, 5);
    const rng = new Rng(6);
    const d = batchOf(shape, rng, 4, 6);
    const n = d.batch * d.tgtLen;
    const uniforms = Float32Array.from({ length: n }, () => Math.fround(rng.uniform() * 0.999));
    const tf = await native.lossAndGrads(d);
    const ones = await native.lossAndGrads({ ...d, flips: new Uint8Array(n).fill(1), uniforms });
    expect(ones.loss).toBe(tf.loss);
    for (const name of Object.keys(tf.grads))
      expect(Buffer.from(ones.grads[name].buffer).equals(Buffer.from(tf.grads[name].buffer)), name).toBe(true);

    const free = await native.lossAndGrads({ ...d, flips: new Uint8Array(n), uniforms });
    expect(Array.from(free.inputs)).not.toEqual(Array.from(d.decIn));
    const want = reference(shape, params, d, free.inputs);
    expectScalarClose('loss on the mixed inputs', free.loss, want.loss, GRAD_TOL);
    for (const { name } of captionParamInfo(shape))
      expectClose(name, free.grads[name], want.grads[name], GRAD_TOL, 1e-12);
    // Each sampled input is the inverse-CDF draw from the native step's distribution after the prefix.
    let state = native.encode(d.images, d.batch);
    for (let t = 0; t + 1 < d.tgtLen; t++) {
      const ids = Uint32Array.from({ length: d.batch }, (_, b) => free.inputs[b * d.tgtLen + t]);
      const step = native.decodeStep(state, ids);
      state = step.state;
      for (let b = 0; b < d.batch; b++) {
        const at = b * d.tgtLen + t + 1;
        if (d.decIn[at] === PAD) continue;
        const row = Float64Array.from(step.logProbs.subarray(b * shape.vocab, (b + 1) * shape.vocab));
        expect(free.inputs[at], `row ${b}, t ${t + 1}`).toBe(sampleInverseCdf(row, uniforms[at]));
      }
    }
  });
});

describe('native captioner: bad input', () => {
  it('refuses images of the wrong size, a bad shape and out-of-range tokens with typed errors', async () => {
    const shape = shapeOf('gru');
    const { native } = pair(shape, 7);
    const d = batchOf(shape, new Rng(8), 2, 4);
    await expect(native.lossAndGrads({ ...d, images: d.images.subarray(1) })).rejects.toThrow(ShapeError);
    await expect(native.lossAndGrads({ ...d, targets: d.targets.map(() => 9) })).rejects.toThrow(
      /outside the vocabulary/,
    );
    expect(() => native.encode(new Uint8Array(10), 1)).toThrow(/expected 1 images of 16×16/);
    expect(() => new NativeCaptioner({ ...shape, image: 18 }, 'cpu')).toThrow(ConfigError);
  });
});
