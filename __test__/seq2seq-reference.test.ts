/**
 * The pure-TypeScript encoder–decoder (the oracle of the native seq2seq model): every parameter gradient
 * against float64 central finite differences, the reverse encoder direction against the cell run on the
 * reversed input, the whole-sequence loss against encode + step-by-step decoding, scheduled sampling's
 * mixed inputs against inverse-CDF samples recomputed step by step, and the PAD mask.
 */
import { describe, expect, it } from 'vitest';
import { cellForward } from '../src/backend/js/cells.js';
import {
  BOS,
  EOS,
  PAD,
  type Params,
  type Seq2SeqShape,
  sampleInverseCdf,
  seq2seqDecodeStep,
  seq2seqEncode,
  seq2seqEncoderFinals,
  seq2seqLossAndGrads,
  seq2seqNll,
  seq2seqParamInfo,
} from '../src/backend/js/seq2seq.js';
import { type CellKind, stateWidth } from '../src/backend/types.js';
import { ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { expectCloseNonZero, numericGrad, uniform } from './helpers/numeric.js';

function shapeOf(cell: CellKind, bidirectional: boolean, layers: number): Seq2SeqShape {
  return { srcVocab: 5, tgtVocab: 6, embed: 3, hidden: 3, layers, cell, bidirectional };
}

function initParams(shape: Seq2SeqShape, rng: Rng, scale = 0.6): Record<string, Float64Array> {
  const p: Record<string, Float64Array> = {};
  for (const { name, shape: dims } of seq2seqParamInfo(shape)) {
    p[name] = uniform(
      rng,
      dims.reduce((a, d) => a * d, 1),
      scale,
    );
  }
  return p;
}

interface Batch {
  src: Uint32Array;
  decIn: Uint32Array;
  tgt: Uint32Array;
  B: number;
  Ts: number;
  Tt: number;
}

/**
 * Rows of `lens[b]` target tokens: decIn = BOS y₁ … yₙ PAD…, tgt = y₁ … yₙ EOS PAD…, so a row shorter
 * than Tt − 1 has PAD targets (and PAD inputs) after its end.
 */
function makeBatch(shape: Seq2SeqShape, rng: Rng, Ts: number, Tt: number, lens: number[]): Batch {
  const B = lens.length;
  const src = new Uint32Array(B * Ts);
  for (let i = 0; i < src.length; i++) src[i] = 1 + rng.int(shape.srcVocab - 1);
  const decIn = new Uint32Array(B * Tt);
  const tgt = new Uint32Array(B * Tt);
  for (let b = 0; b < B; b++) {
    const ys = Array.from({ length: lens[b] }, () => 3 + rng.int(shape.tgtVocab - 3));
    decIn[b * Tt] = BOS;
    for (let t = 0; t < lens[b]; t++) {
      tgt[b * Tt + t] = ys[t];
      if (t + 1 < Tt) decIn[b * Tt + t + 1] = ys[t];
    }
    if (lens[b] < Tt) tgt[b * Tt + lens[b]] = EOS;
  }
  return { src, decIn, tgt, B, Ts, Tt };
}

const lossOf = (shape: Seq2SeqShape, p: Params, d: Batch, decIn = d.decIn, tgt = d.tgt) =>
  seq2seqLossAndGrads(shape, p, d.src, decIn, tgt, d.B, d.Ts, d.Tt, 'f64');

/** Σ −log p(tgt) over non-PAD targets by encode + one decode step per position, feeding `inputs`. */
function stepwiseNll(shape: Seq2SeqShape, p: Params, d: Batch, inputs: Uint32Array): number {
  let state: Float64Array = seq2seqEncode(shape, p, d.src, d.B, d.Ts, 'f64');
  let nll = 0;
  for (let t = 0; t < d.Tt; t++) {
    const tokens = Uint32Array.from({ length: d.B }, (_, b) => inputs[b * d.Tt + t]);
    const step = seq2seqDecodeStep(shape, p, state, tokens, 'f64');
    state = step.state;
    for (let b = 0; b < d.B; b++) {
      const y = d.tgt[b * d.Tt + t];
      if (y !== PAD) nll -= step.logProbs[b * shape.tgtVocab + y];
    }
  }
  return nll;
}

/** The rows of `table [V, E]` named by `ids`, `[ids.length, E]`. */
function embedRows(table: Float64Array, ids: Uint32Array, E: number): Float64Array {
  const x = new Float64Array(ids.length * E);
  for (let r = 0; r < ids.length; r++) x.set(table.subarray(ids[r] * E, (ids[r] + 1) * E), r * E);
  return x;
}

/** Every element identical (+0 and −0 count as equal). */
function expectSame(name: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  expect(got.length, name).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(got[i] === want[i], `${name}[${i}]: ${got[i]} vs ${want[i]}`).toBe(true);
}

const CASES: [CellKind, boolean, number][] = [
  ['gru', true, 2],
  ['lstm', true, 2],
  ['rnn', false, 1],
];

describe('seq2seq parameters', () => {
  it('lists PyTorch-style names and shapes in state_dict order (bidirectional GRU, 2 layers)', () => {
    const info = seq2seqParamInfo({ ...shapeOf('gru', true, 2), hidden: 4 });
    const enc = (l: number, dir: string, i: number) => [
      { name: `encoder.weight_ih_l${l}${dir}`, shape: [12, i] },
      { name: `encoder.weight_hh_l${l}${dir}`, shape: [12, 4] },
      { name: `encoder.bias_ih_l${l}${dir}`, shape: [12] },
      { name: `encoder.bias_hh_l${l}${dir}`, shape: [12] },
    ];
    const dec = (l: number, i: number) => [
      { name: `decoder.weight_ih_l${l}`, shape: [12, i] },
      { name: `decoder.weight_hh_l${l}`, shape: [12, 4] },
      { name: `decoder.bias_ih_l${l}`, shape: [12] },
      { name: `decoder.bias_hh_l${l}`, shape: [12] },
    ];
    expect(info).toEqual([
      { name: 'src_embedding.weight', shape: [5, 3] },
      ...enc(0, '', 3),
      ...enc(0, '_reverse', 3),
      ...enc(1, '', 8),
      ...enc(1, '_reverse', 8),
      { name: 'bridge.0.weight', shape: [4, 8] },
      { name: 'bridge.0.bias', shape: [4] },
      { name: 'bridge.1.weight', shape: [4, 8] },
      { name: 'bridge.1.bias', shape: [4] },
      { name: 'tgt_embedding.weight', shape: [6, 3] },
      ...dec(0, 3),
      ...dec(1, 4),
      { name: 'head.weight', shape: [6, 4] },
      { name: 'head.bias', shape: [6] },
    ]);
    // LSTM: gates ×4, bridge over (h, c) of both directions.
    const lstm = seq2seqParamInfo({ ...shapeOf('lstm', true, 1), hidden: 4 });
    expect(lstm.find((i) => i.name === 'encoder.weight_ih_l0_reverse')?.shape).toEqual([16, 3]);
    expect(lstm.find((i) => i.name === 'bridge.0.weight')?.shape).toEqual([8, 16]);
    const uni = seq2seqParamInfo(shapeOf('rnn', false, 2));
    expect(uni.some((i) => i.name.endsWith('_reverse'))).toBe(false);
    expect(uni.find((i) => i.name === 'encoder.weight_ih_l1')?.shape).toEqual([3, 3]);
    expect(uni.find((i) => i.name === 'bridge.1.weight')?.shape).toEqual([3, 3]);
  });
});

describe.each(CASES)('seq2seq %s (bidirectional %s, %i layers)', (cell, bidirectional, layers) => {
  const shape = shapeOf(cell, bidirectional, layers);
  const seed = cell === 'gru' ? 3 : cell === 'lstm' ? 5 : 7;

  it('every parameter gradient matches float64 central finite differences, with PAD targets', () => {
    const rng = new Rng(seed);
    const p = initParams(shape, rng);
    // Row 1 ends early: its last two targets are PAD.
    const d = makeBatch(shape, rng, 3, 4, [4, 1]);
    expect(Array.from(d.tgt.subarray(4))).toEqual([d.tgt[4], EOS, PAD, PAD]);
    const r = lossOf(shape, p, d);
    expect(r.tokens).toBe(6);
    expect(Object.keys(r.grads)).toEqual(seq2seqParamInfo(shape).map((i) => i.name));
    const nll = seq2seqNll(shape, p, d.src, d.decIn, d.tgt, d.B, d.Ts, d.Tt, 'f64');
    expect(nll.tokens).toBe(6);
    expect(nll.nll / nll.tokens).toBeCloseTo(r.loss, 13);
    const loss = () => {
      const { nll: s, tokens } = seq2seqNll(shape, p, d.src, d.decIn, d.tgt, d.B, d.Ts, d.Tt, 'f64');
      return s / tokens;
    };
    for (const { name } of seq2seqParamInfo(shape)) {
      expect(r.grads[name], name).toBeInstanceOf(Float64Array);
      expectCloseNonZero(name, r.grads[name], numericGrad(p[name], loss), 1e-6, 1e-3);
    }
  });

  it('the teacher-forced loss equals Σ −log softmax at non-PAD targets by encode + decode steps', () => {
    const rng = new Rng(seed + 100);
    const p = initParams(shape, rng, 0.8);
    const d = makeBatch(shape, rng, 4, 5, [5, 2, 0]);
    const r = lossOf(shape, p, d);
    expect(r.tokens).toBe(5 + 3 + 1);
    const want = stepwiseNll(shape, p, d, d.decIn);
    expect(Math.abs(r.loss * r.tokens - want)).toBeLessThan(1e-12 * want);
    // The step's log-probabilities normalise.
    const state = seq2seqEncode(shape, p, d.src, d.B, d.Ts, 'f64');
    expect(state.length).toBe(layers * d.B * stateWidth(cell) * shape.hidden);
    const { logProbs } = seq2seqDecodeStep(shape, p, state, Uint32Array.from([BOS, 3, 4]), 'f64');
    for (let b = 0; b < 3; b++) {
      let s = 0;
      for (let v = 0; v < shape.tgtVocab; v++) s += Math.exp(logProbs[b * shape.tgtVocab + v]);
      expect(s).toBeCloseTo(1, 14);
    }
  });

  it('scheduled sampling with flips all ones reproduces teacher forcing exactly', () => {
    const rng = new Rng(seed + 200);
    const p = initParams(shape, rng);
    const d = makeBatch(shape, rng, 3, 5, [5, 2]);
    const n = d.B * d.Tt;
    const uniforms = Float64Array.from({ length: n }, () => rng.uniform());
    const ss = seq2seqLossAndGrads(shape, p, d.src, d.decIn, d.tgt, d.B, d.Ts, d.Tt, 'f64', {
      flips: new Uint8Array(n).fill(1),
      uniforms,
    });
    const tf = lossOf(shape, p, d);
    expect(ss).toEqual(tf);
    expect(ss.inputs).toEqual(d.decIn);
  });

  it('flips all zeros feed inverse-CDF samples of the model on the mixed prefix; grads are teacher forcing on them', () => {
    const rng = new Rng(seed + 300);
    // Large weights: peaked, varied softmaxes, so samples differ from the ground truth and from argmax.
    const p = initParams(shape, rng, 1.5);
    const d = makeBatch(shape, rng, 3, 6, [6, 3, 1, 5]);
    const n = d.B * d.Tt;
    const uniforms = Float64Array.from({ length: n }, () => rng.uniform());
    const ss = { flips: new Uint8Array(n), uniforms };
    const r = seq2seqLossAndGrads(shape, p, d.src, d.decIn, d.tgt, d.B, d.Ts, d.Tt, 'f64', ss);
    const V = shape.tgtVocab;

    let state: Float64Array = seq2seqEncode(shape, p, d.src, d.B, d.Ts, 'f64');
    let sampled = 0;
    let changed = 0;
    for (let b = 0; b < d.B; b++) expect(r.inputs[b * d.Tt]).toBe(d.decIn[b * d.Tt]);
    for (let t = 0; t + 1 < d.Tt; t++) {
      const tokens = Uint32Array.from({ length: d.B }, (_, b) => r.inputs[b * d.Tt + t]);
      const step = seq2seqDecodeStep(shape, p, state, tokens, 'f64');
      state = step.state;
      for (let b = 0; b < d.B; b++) {
        const i = b * d.Tt + t + 1;
        if (d.decIn[i] === PAD) {
          expect(r.inputs[i], `PAD input at b${b} t${t + 1}`).toBe(PAD);
          continue;
        }
        // Inverse CDF recomputed from the step's log-probabilities.
        let cum = 0;
        let want = -1;
        for (let v = 0; v < V && want < 0; v++) {
          cum += Math.exp(step.logProbs[b * V + v]);
          if (cum > uniforms[i]) want = v;
        }
        expect(want).toBeGreaterThanOrEqual(0);
        expect(r.inputs[i], `sample at b${b} t${t + 1}`).toBe(want);
        sampled++;
        if (r.inputs[i] !== d.decIn[i]) changed++;
      }
    }
    expect(sampled).toBe(5 + 3 + 1 + 5);
    expect(changed).toBeGreaterThan(2);
    // Loss and gradients are those of teacher forcing on the mixed inputs.
    const tf = lossOf(shape, p, d, r.inputs);
    expect(r.loss).toBe(tf.loss);
    expect(r.grads).toEqual(tf.grads);
    expect(r.loss * r.tokens).toBeCloseTo(stepwiseNll(shape, p, d, r.inputs), 12);
    // seq2seqNll mixes the same way.
    const nll = seq2seqNll(shape, p, d.src, d.decIn, d.tgt, d.B, d.Ts, d.Tt, 'f64', ss);
    expect(nll.nll / nll.tokens).toBeCloseTo(r.loss, 13);
  });

  it('random flips: ground truth where the flip is 1, a sample elsewhere', () => {
    const rng = new Rng(seed + 400);
    const p = initParams(shape, rng, 1.5);
    const d = makeBatch(shape, rng, 2, 6, [6, 6, 4]);
    const n = d.B * d.Tt;
    const flips = Uint8Array.from({ length: n }, () => (rng.uniform() < 0.5 ? 1 : 0));
    const uniforms = Float32Array.from({ length: n }, () => rng.uniform());
    const r = seq2seqLossAndGrads(shape, p, d.src, d.decIn, d.tgt, d.B, d.Ts, d.Tt, 'f64', { flips, uniforms });
    // All-zero flips with the same uniforms sample the same prefix up to the first flip of each row.
    const free = seq2seqLossAndGrads(shape, p, d.src, d.decIn, d.tgt, d.B, d.Ts, d.Tt, 'f64', {
      flips: new Uint8Array(n),
      uniforms,
    });
    for (let b = 0; b < d.B; b++) {
      let prefixSame = true;
      for (let t = 0; t < d.Tt; t++) {
        const i = b * d.Tt + t;
        if (t === 0 || flips[i] === 1 || d.decIn[i] === PAD) expect(r.inputs[i]).toBe(d.decIn[i]);
        else if (prefixSame) expect(r.inputs[i]).toBe(free.inputs[i]);
        if (r.inputs[i] !== free.inputs[i]) prefixSame = false;
      }
    }
    expect(r.grads).toEqual(lossOf(shape, p, d, r.inputs).grads);
  });

  it('positions after a row has ended change nothing: their inputs are masked out of loss and gradients', () => {
    const rng = new Rng(seed + 500);
    const p = initParams(shape, rng);
    const d = makeBatch(shape, rng, 3, 6, [5, 2, 3]);
    const base = lossOf(shape, p, d);
    const decIn = d.decIn.slice();
    let edits = 0;
    for (let i = 0; i < decIn.length; i++) {
      if (d.tgt[i] === PAD) {
        decIn[i] = 3 + rng.int(shape.tgtVocab - 3);
        edits++;
      }
    }
    expect(edits).toBe(0 + 3 + 2);
    const edited = lossOf(shape, p, d, decIn);
    expect(edited.loss).toBe(base.loss);
    expect(edited.tokens).toBe(base.tokens);
    for (const name of Object.keys(base.grads)) expectSame(name, edited.grads[name], base.grads[name]);
    // A target inside a row does matter.
    const tgt = d.tgt.slice();
    tgt[1] = tgt[1] === 3 ? 4 : 3;
    expect(lossOf(shape, p, d, d.decIn, tgt).loss).not.toBe(base.loss);
  });
});

describe('seq2seq encoder directions', () => {
  it.each(['gru', 'lstm'] as const)(
    '%s: the reverse direction is the forward cell on the reversed sequence (reverse weights = forward)',
    (cell) => {
      const shape = shapeOf(cell, true, 1);
      const { embed: E, hidden: H } = shape;
      const SH = stateWidth(cell) * H;
      const rng = new Rng(11);
      const p = initParams(shape, rng);
      for (const k of ['weight_ih', 'weight_hh', 'bias_ih', 'bias_hh']) {
        p[`encoder.${k}_l0_reverse`] = p[`encoder.${k}_l0`].slice();
      }
      const B = 2;
      const Ts = 4;
      const src = Uint32Array.from([1, 2, 3, 4, 4, 4, 1, 3]);
      const srcRev = Uint32Array.from([4, 3, 2, 1, 3, 1, 4, 4]);
      const embedAll = (ids: Uint32Array) => embedRows(p['src_embedding.weight'], ids, E);
      const w = {
        wIh: p['encoder.weight_ih_l0'],
        wHh: p['encoder.weight_hh_l0'],
        bIh: p['encoder.bias_ih_l0'],
        bHh: p['encoder.bias_hh_l0'],
      };
      const dims = { batch: B, seq: Ts, input: E, hidden: H };
      const fwd = cellForward(cell, dims, embedAll(src), new Float64Array(B * SH), w).out;
      const rev = cellForward(cell, dims, embedAll(srcRev), new Float64Array(B * SH), w).out;
      const finals = seq2seqEncoderFinals(shape, p, src, B, Ts, 'f64');
      expect(finals.length).toBe(B * 2 * SH);
      for (let b = 0; b < B; b++) {
        const last = (b * Ts + Ts - 1) * SH;
        expectSame(`fwd b${b}`, finals.subarray(b * 2 * SH, b * 2 * SH + SH), fwd.subarray(last, last + SH));
        expectSame(`rev b${b}`, finals.subarray(b * 2 * SH + SH, (b + 1) * 2 * SH), rev.subarray(last, last + SH));
      }
      // The forward and reverse finals differ (the input is not a palindrome).
      expect(finals[0]).not.toBe(finals[SH]);
      // A unidirectional model on the reversed source ends where the reverse direction does.
      const uni = shapeOf(cell, false, 1);
      const pu = { ...p, 'bridge.0.weight': new Float64Array(SH * SH) };
      const uniFinals = seq2seqEncoderFinals(uni, pu, srcRev, B, Ts, 'f64');
      for (let b = 0; b < B; b++) {
        expectSame(
          `uni b${b}`,
          uniFinals.subarray(b * SH, (b + 1) * SH),
          finals.subarray(b * 2 * SH + SH, (b + 1) * 2 * SH),
        );
      }
      // seq2seqEncode is the bridge over those finals.
      const s0 = seq2seqEncode(shape, p, src, B, Ts, 'f64');
      const bw = p['bridge.0.weight'];
      const bb = p['bridge.0.bias'];
      for (let b = 0; b < B; b++) {
        for (let k = 0; k < SH; k++) {
          let a = bb[k];
          for (let j = 0; j < 2 * SH; j++) a += bw[k * 2 * SH + j] * finals[b * 2 * SH + j];
          expect(s0[b * SH + k]).toBeCloseTo(Math.tanh(a), 14);
        }
      }
    },
  );

  it('lstm, 2 layers: layer 1 reads [h_fwd(t), h_rev(t)] reversed back; bridge l starts decoder layer l', () => {
    const shape = shapeOf('lstm', true, 2);
    const { embed: E, hidden: H } = shape;
    const SH = 2 * H;
    const rng = new Rng(13);
    const p = initParams(shape, rng, 0.9);
    const B = 2;
    const Ts = 3;
    const src = Uint32Array.from([1, 4, 2, 3, 3, 1]);
    const reverse = (a: Float64Array, W: number) => {
      const r = new Float64Array(a.length);
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < Ts; t++)
          r.set(a.subarray((b * Ts + t) * W, (b * Ts + t + 1) * W), (b * Ts + Ts - 1 - t) * W);
      }
      return r;
    };
    const run = (l: number, dir: string, x: Float64Array, input: number) =>
      cellForward('lstm', { batch: B, seq: Ts, input, hidden: H }, x, new Float64Array(B * SH), {
        wIh: p[`encoder.weight_ih_l${l}${dir}`],
        wHh: p[`encoder.weight_hh_l${l}${dir}`],
        bIh: p[`encoder.bias_ih_l${l}${dir}`],
        bHh: p[`encoder.bias_hh_l${l}${dir}`],
      }).out as Float64Array;
    const x0 = embedRows(p['src_embedding.weight'], src, E);
    const f0 = run(0, '', x0, E);
    const r0 = reverse(run(0, '_reverse', reverse(x0, E), E), SH);
    const x1 = new Float64Array(B * Ts * 2 * H);
    for (let row = 0; row < B * Ts; row++) {
      x1.set(f0.subarray(row * SH, row * SH + H), row * 2 * H);
      x1.set(r0.subarray(row * SH, row * SH + H), row * 2 * H + H);
    }
    const f1 = run(1, '', x1, 2 * H);
    const r1 = run(1, '_reverse', reverse(x1, 2 * H), 2 * H);
    const finals = seq2seqEncoderFinals(shape, p, src, B, Ts, 'f64');
    for (let b = 0; b < B; b++) {
      const last = (b * Ts + Ts - 1) * SH;
      const o = (B + b) * 2 * SH;
      expectSame(`l1 fwd b${b}`, finals.subarray(o, o + SH), f1.subarray(last, last + SH));
      expectSame(`l1 rev b${b}`, finals.subarray(o + SH, o + 2 * SH), r1.subarray(last, last + SH));
      // Layer 0's reverse final is its reversed-back output at t = 0.
      const o0 = b * 2 * SH;
      expectSame(`l0 rev b${b}`, finals.subarray(o0 + SH, o0 + 2 * SH), r0.subarray(b * Ts * SH, (b * Ts + 1) * SH));
    }

    // Bridge l feeds decoder layer l: s0_l = tanh(W_l · finals_l + b_l), [h0, c0] per row.
    const s0 = seq2seqEncode(shape, p, src, B, Ts, 'f64');
    const K = 2 * SH;
    for (let l = 0; l < 2; l++) {
      const bw = p[`bridge.${l}.weight`];
      const bb = p[`bridge.${l}.bias`];
      for (let b = 0; b < B; b++) {
        for (let k = 0; k < SH; k++) {
          let a = bb[k];
          for (let j = 0; j < K; j++) a += bw[k * K + j] * finals[(l * B + b) * K + j];
          expect(s0[(l * B + b) * SH + k], `s0 l${l} b${b} k${k}`).toBeCloseTo(Math.tanh(a), 14);
        }
      }
    }
    // One decoder step by hand: layer l from s0_l, layer 1 on layer 0's h, the head on layer 1's h.
    const tokens = Uint32Array.from([BOS, 4]);
    const step = seq2seqDecodeStep(shape, p, s0, tokens, 'f64');
    let x: Float64Array = embedRows(p['tgt_embedding.weight'], tokens, E);
    for (let l = 0; l < 2; l++) {
      const out = cellForward(
        'lstm',
        { batch: B, seq: 1, input: l === 0 ? E : H, hidden: H },
        x,
        s0.slice(l * B * SH, (l + 1) * B * SH),
        {
          wIh: p[`decoder.weight_ih_l${l}`],
          wHh: p[`decoder.weight_hh_l${l}`],
          bIh: p[`decoder.bias_ih_l${l}`],
          bHh: p[`decoder.bias_hh_l${l}`],
        },
      ).out as Float64Array;
      expectSame(`decoder state l${l}`, step.state.subarray(l * B * SH, (l + 1) * B * SH), out);
      x = new Float64Array(B * H);
      for (let b = 0; b < B; b++) x.set(out.subarray(b * SH, b * SH + H), b * H);
    }
    const V = shape.tgtVocab;
    for (let b = 0; b < B; b++) {
      const logits = Array.from({ length: V }, (_, v) => {
        let a = p['head.bias'][v];
        for (let j = 0; j < H; j++) a += p['head.weight'][v * H + j] * x[b * H + j];
        return a;
      });
      const lse = Math.log(logits.reduce((a, z) => a + Math.exp(z), 0));
      for (let v = 0; v < V; v++) expect(step.logProbs[b * V + v]).toBeCloseTo(logits[v] - lse, 13);
    }
  });
});

describe('seq2seq sampling, dtypes and errors', () => {
  it('sampleInverseCdf: smallest k with cumulative probability > u; the last positive one when rounding falls short', () => {
    const l = Float64Array.from([0, 0, Math.log(2)]); // p = 1/4, 1/4, 1/2
    expect(sampleInverseCdf(l, 0)).toBe(0);
    expect(sampleInverseCdf(l, 0.2499)).toBe(0);
    expect(sampleInverseCdf(l, 0.25)).toBe(1);
    expect(sampleInverseCdf(l, 0.4999)).toBe(1);
    expect(sampleInverseCdf(l, 0.5)).toBe(2);
    expect(sampleInverseCdf(l, 0.9999)).toBe(2);
    // Ten equal logits sum to 0.9999999999999998 in doubles; an 11th has p = 0.
    const tenth = Float64Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, Number.NEGATIVE_INFINITY]);
    let cum = 0;
    for (let k = 0; k < 10; k++) cum += Math.exp(-Math.log(10));
    expect(cum).toBeLessThan(1 - 2 ** -53);
    expect(sampleInverseCdf(tenth, 1 - 2 ** -53)).toBe(9);
  });

  it('f32 activations: Float32Array results close to the float64 ones', () => {
    const shape = shapeOf('lstm', true, 2);
    const rng = new Rng(21);
    const p = initParams(shape, rng);
    const p32: Params = {};
    for (const [k, v] of Object.entries(p)) p32[k] = Float32Array.from(v);
    const d = makeBatch(shape, rng, 3, 4, [4, 2]);
    const r64 = lossOf(shape, p32, d);
    const r32 = seq2seqLossAndGrads(shape, p32, d.src, d.decIn, d.tgt, d.B, d.Ts, d.Tt, 'f32');
    expect(r32.loss).toBeCloseTo(r64.loss, 5);
    for (const name of Object.keys(r64.grads)) {
      expect(r32.grads[name]).toBeInstanceOf(Float32Array);
      expectCloseNonZero(name, r32.grads[name], r64.grads[name], 1e-4, 1e-3);
    }
    const state = seq2seqEncode(shape, p32, d.src, d.B, d.Ts, 'f32');
    expect(state).toBeInstanceOf(Float32Array);
    const step = seq2seqDecodeStep(shape, p32, state, Uint32Array.from([BOS, BOS]), 'f32');
    expect(step.state).toBeInstanceOf(Float32Array);
    expect(step.logProbs).toBeInstanceOf(Float32Array);
  });

  it('rejects wrong sizes and out-of-range ids and sampling inputs with ShapeError', () => {
    const shape = shapeOf('gru', true, 1);
    const rng = new Rng(31);
    const p = initParams(shape, rng);
    const d = makeBatch(shape, rng, 3, 4, [4, 2]);
    const call = (o: Partial<Batch> & { ss?: Parameters<typeof seq2seqLossAndGrads>[9] }) => () =>
      seq2seqLossAndGrads(shape, p, o.src ?? d.src, o.decIn ?? d.decIn, o.tgt ?? d.tgt, d.B, d.Ts, d.Tt, 'f64', o.ss);
    expect(call({ src: d.src.subarray(1) })).toThrow(ShapeError);
    expect(call({ src: Uint32Array.from(d.src).fill(5) })).toThrow(/source: id 5 .* vocabulary of 5/);
    expect(call({ tgt: Uint32Array.from(d.tgt).fill(6) })).toThrow(/targets: id 6/);
    const n = d.B * d.Tt;
    expect(call({ ss: { flips: new Uint8Array(n - 1), uniforms: new Float64Array(n) } })).toThrow(/flips/);
    expect(call({ ss: { flips: new Uint8Array(n), uniforms: new Float64Array(n).fill(1) } })).toThrow(/uniforms/);
    expect(() =>
      seq2seqLossAndGrads(
        shape,
        { ...p, 'bridge.0.bias': new Float64Array(2) },
        d.src,
        d.decIn,
        d.tgt,
        d.B,
        d.Ts,
        d.Tt,
        'f64',
      ),
    ).toThrow(/bridge\.0\.bias holds 2/);
    expect(() => seq2seqDecodeStep(shape, p, new Float64Array(5), Uint32Array.from([1]), 'f64')).toThrow(ShapeError);
  });
});
