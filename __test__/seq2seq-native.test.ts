/**
 * The native encoder–decoder (`NativeSeq2Seq`: Rust on candle, through N-API) against the
 * pure-TypeScript reference (`src/backend/js/seq2seq.ts`, itself checked against finite differences in
 * seq2seq-reference.test.ts), which computes every sum, gate and softmax in doubles and stores
 * activations in f32. Both sides get the same f32 parameters.
 *
 * Same comparison rule and tolerances as native-oracle.test.ts / native-cells.test.ts:
 *
 *     max_i |got_i − want_i| ≤ tol · scale,   scale = max(floor, max_i |want_i|)
 *
 *   - forward values (encoder states, decoder states, log-probabilities): floor 1, FWD_TOL = 1e-5;
 *   - gradients: floor 1e-12 (relative to the tensor's own largest gradient), GRAD_TOL = 1e-4;
 *   - scalars: |got − want| ≤ tol · |want| (the loss with GRAD_TOL as there, the summed NLL with FWD_TOL).
 * Each parameter is compared on its own scale, and so is each half (h, c) of an LSTM state.
 *
 * Scheduled sampling: the native side samples by inverse CDF from f32 logits, the reference from
 * double logits, so where a uniform lies within ~1e-5 of a CDF boundary the two may legitimately pick
 * neighbouring tokens. Rather than skip such positions, `farUniforms` redraws any uniform of a sampled
 * position that lies within MARGIN = 1e-4 of a boundary of the reference's CDF at that position (given
 * the mixed prefix), until none does; the mixed inputs must then be identical.
 *
 * Not compared here: a batch whose targets are all PAD (native refuses it, the reference returns 0).
 */
import { describe, expect, it } from 'vitest';
import {
  BOS,
  EOS,
  PAD,
  type Params,
  type Seq2SeqSampling,
  type Seq2SeqShape,
  seq2seqDecodeStep,
  seq2seqEncode,
  seq2seqLossAndGrads,
  seq2seqNll,
  seq2seqParamInfo,
} from '../src/backend/js/seq2seq.js';
import { loadNative } from '../src/backend/native.js';
import { NativeSeq2Seq, type Seq2SeqBatch } from '../src/backend/native-seq2seq.js';
import { type CellKind, type OptimConfig, stateWidth } from '../src/backend/types.js';
import { ArflowError, ConfigError, ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import {
  bytes,
  expectClose,
  expectNonTrivial,
  expectScalarClose,
  expectStateClose,
  FWD_TOL,
  GRAD_TOL,
  uniform,
} from './helpers/oracle.js';

/** Smallest distance a scheduled-sampling uniform keeps from a CDF boundary (module comment). */
const MARGIN = 1e-4;

/** An error thrown by `f` (sync or async), or null. */
async function thrown(f: () => unknown): Promise<unknown> {
  try {
    await f();
  } catch (e) {
    return e;
  }
  return null;
}

// ---- models and batches -------------------------------------------------------------------------

interface Case {
  cell: CellKind;
  bidirectional: boolean;
  layers: number;
  batch: number;
  srcLen: number;
  tgtLen: number;
  srcVocab: number;
  tgtVocab: number;
  embed: number;
  hidden: number;
  why: string;
}

const small = { batch: 3, srcLen: 5, tgtLen: 6, srcVocab: 11, tgtVocab: 13, embed: 6, hidden: 9 };

const CASES: Case[] = [
  { cell: 'gru', bidirectional: true, layers: 2, ...small, why: 'small' },
  { cell: 'lstm', bidirectional: true, layers: 2, ...small, why: 'small' },
  { cell: 'rnn', bidirectional: false, layers: 1, ...small, why: 'small' },
  // B·H = 33·128 = 4224 ≥ 4096 (PAR_MIN_ELEMS in crates/arflow-core/src/rnn/common.rs): every layer of
  // the encoder and the decoder splits its batch across the kernel's threads, unevenly (17 + 16 on 2).
  {
    cell: 'gru',
    bidirectional: true,
    layers: 2,
    batch: 33,
    srcLen: 6,
    tgtLen: 7,
    srcVocab: 23,
    tgtVocab: 37,
    embed: 16,
    hidden: 128,
    why: 'multi-threaded kernels, uneven split',
  },
];

function shapeOf(c: Case): Seq2SeqShape {
  const { srcVocab, tgtVocab, embed, hidden, layers, cell, bidirectional } = c;
  return { srcVocab, tgtVocab, embed, hidden, layers, cell, bidirectional };
}

/**
 * A native model and the reference's parameters, every one the same f32 array: embeddings ±1 (for
 * PyTorch's N(0, 1)), everything else 1.5× PyTorch's bound 1/√fan_in so that gates and the bridge's
 * tanh curve.
 */
function pair(shape: Seq2SeqShape, seed: number): { native: NativeSeq2Seq; params: Params } {
  const native = new NativeSeq2Seq(shape, 'cpu');
  const rng = new Rng(seed);
  const params: Params = {};
  for (const { name, shape: dims } of seq2seqParamInfo(shape)) {
    const n = dims.reduce((a, d) => a * d, 1);
    const fanIn = name.includes('embedding') ? 1 : dims.length === 2 ? dims[1] : shape.hidden;
    const p = uniform(rng, n, name.includes('embedding') ? 1 : 1.5 / Math.sqrt(fanIn));
    native.setParam(name, p);
    expect(bytes(native.getParam(name)).equals(bytes(p)), `native ${name} was not set`).toBe(true);
    params[name] = p;
  }
  return { native, params };
}

/**
 * Rows whose targets are `lens[b]` tokens (ids ≥ 3): decIn = BOS y₁ … yₙ PAD…, targets = y₁ … yₙ EOS
 * PAD…, so rows of different lengths carry PAD targets (and PAD inputs) after their end.
 */
function makeBatch(shape: Seq2SeqShape, rng: Rng, srcLen: number, tgtLen: number, lens: number[]): Seq2SeqBatch {
  const B = lens.length;
  const src = new Uint32Array(B * srcLen);
  for (let i = 0; i < src.length; i++) src[i] = 1 + rng.int(shape.srcVocab - 1);
  const decIn = new Uint32Array(B * tgtLen);
  const targets = new Uint32Array(B * tgtLen);
  for (let b = 0; b < B; b++) {
    decIn[b * tgtLen] = BOS;
    for (let t = 0; t < lens[b]; t++) {
      const y = 3 + rng.int(shape.tgtVocab - 3);
      targets[b * tgtLen + t] = y;
      if (t + 1 < tgtLen) decIn[b * tgtLen + t + 1] = y;
    }
    if (lens[b] < tgtLen) targets[b * tgtLen + lens[b]] = EOS;
  }
  return { src, decIn, targets, batch: B, srcLen, tgtLen };
}

/** Target lengths cycling through full (no EOS), one short of full, and shorter, down to 1. */
function lengths(batch: number, tgtLen: number): number[] {
  return Array.from({ length: batch }, (_, b) => [tgtLen, tgtLen - 1, 3, 1, tgtLen - 2][b % 5]);
}

function batchFor(c: Case, shape: Seq2SeqShape, rng: Rng): Seq2SeqBatch {
  const d = makeBatch(shape, rng, c.srcLen, c.tgtLen, lengths(c.batch, c.tgtLen));
  let pad = 0;
  for (const y of d.targets) if (y === PAD) pad++;
  expect(pad, 'the batch should mix target lengths (PAD targets)').toBeGreaterThan(0);
  return d;
}

const refLoss = (shape: Seq2SeqShape, p: Params, d: Seq2SeqBatch, ss?: Seq2SeqSampling) =>
  seq2seqLossAndGrads(shape, p, d.src, d.decIn, d.targets, d.batch, d.srcLen, d.tgtLen, 'f32', ss);

/** Flips with about half zeros (position 0 is never sampled either way). */
function randomFlips(rng: Rng, n: number): Uint8Array {
  const f = new Uint8Array(n);
  for (let i = 0; i < n; i++) f[i] = rng.uniform() < 0.5 ? 0 : 1;
  return f;
}

/** A uniform in [0, 1) exactly representable in f32. */
function f32Uniform(rng: Rng): number {
  for (;;) {
    const u = Math.fround(rng.uniform());
    if (u < 1) return u;
  }
}

/**
 * Uniforms `[B, Tt]` such that at every sampled position (flip 0, input not PAD, t ≥ 1) the uniform
 * lies at least MARGIN from every boundary Σ_{j≤k} p_j of the reference's softmax at t − 1, given the
 * reference's mixed prefix; a uniform too close is redrawn and the mixing redone (a redraw changes only
 * the later prefix of its own row). Returns them with the reference's mixed inputs and the count of
 * sampled positions.
 */
function farUniforms(
  shape: Seq2SeqShape,
  p: Params,
  d: Seq2SeqBatch,
  flips: Uint8Array,
  rng: Rng,
): { uniforms: Float32Array; sampled: number; redrawn: number } {
  const { batch: B, tgtLen: Tt } = d;
  const V = shape.tgtVocab;
  const uniforms = new Float32Array(B * Tt);
  for (let i = 0; i < uniforms.length; i++) uniforms[i] = f32Uniform(rng);
  let redrawn = 0;
  for (let round = 0; round < 50; round++) {
    const { inputs } = refLoss(shape, p, d, { flips, uniforms });
    let state: Float32Array = seq2seqEncode(shape, p, d.src, B, d.srcLen, 'f32');
    let sampled = 0;
    let near = 0;
    for (let t = 0; t + 1 < Tt; t++) {
      const step = seq2seqDecodeStep(
        shape,
        p,
        state,
        Uint32Array.from({ length: B }, (_, b) => inputs[b * Tt + t]),
        'f64',
      );
      state = Float32Array.from(step.state);
      for (let b = 0; b < B; b++) {
        const at = b * Tt + t + 1;
        if (d.decIn[at] === PAD || flips[at] === 1) continue;
        sampled++;
        const u = uniforms[at];
        let cum = 0;
        let dist = Math.abs(u);
        for (let v = 0; v < V; v++) {
          cum += Math.exp(step.logProbs[b * V + v]);
          dist = Math.min(dist, Math.abs(cum - u));
        }
        if (dist < MARGIN) {
          uniforms[at] = f32Uniform(rng);
          near++;
        }
      }
    }
    if (near === 0) return { uniforms, sampled, redrawn };
    redrawn += near;
  }
  throw new Error('could not draw uniforms away from the CDF boundaries in 50 rounds');
}

const threads = loadNative().buildInfo().threads;

const OPT: OptimConfig = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 1 };

// ---- teacher forcing, scoring, encode and decode steps ------------------------------------------

describe('NativeSeq2Seq vs the TypeScript reference (identical f32 parameters)', () => {
  it('the addon reports its kernel thread count', () => {
    // The multi-threaded case below only splits the batch when the pool has ≥ 2 threads.
    expect(threads).toBeGreaterThanOrEqual(1);
  });

  CASES.forEach((c, k) => {
    const shape = shapeOf(c);
    const dir = c.bidirectional ? 'bidirectional' : 'unidirectional';
    const label = `${c.cell}, ${dir}, ${c.layers} layer(s), B=${c.batch} H=${c.hidden} (${c.why})`;
    const seed = 100 + 10 * k;

    describe(label, () => {
      it('paramInfo equals seq2seqParamInfo', () => {
        const native = new NativeSeq2Seq(shape, 'cpu');
        const want = seq2seqParamInfo(shape);
        expect(native.paramInfo()).toEqual(want);
        expect(want.some((p) => p.name.endsWith('_reverse'))).toBe(c.bidirectional);
        // A fresh native model is all zeros (the caller loads an initialisation).
        for (const { name } of want)
          expect(
            native.getParam(name).every((v) => v === 0),
            name,
          ).toBe(true);
      });

      it('teacher-forced loss and every parameter gradient agree, with PAD-padded targets', async () => {
        const { native, params } = pair(shape, seed);
        const d = batchFor(c, shape, new Rng(seed + 1));
        const a = await native.lossAndGrads(d);
        const b = refLoss(shape, params, d);
        expectScalarClose('loss', a.loss, b.loss, GRAD_TOL);
        expect(Array.from(a.inputs), 'teacher-forced inputs are decIn').toEqual(Array.from(d.decIn));
        const names = seq2seqParamInfo(shape).map((p) => p.name);
        expect(Object.keys(a.grads)).toEqual(names);
        expect(Object.keys(b.grads)).toEqual(names);
        for (const name of names) {
          expectNonTrivial(`grad ${name}`, b.grads[name]);
          expectClose(`grad ${name}`, a.grads[name], b.grads[name], GRAD_TOL, 1e-12);
        }
        // lossAndGrads changes nothing.
        expect(native.getOptimStep()).toBe(0);
        for (const name of names) {
          expect(bytes(native.getParam(name)).equals(bytes(params[name] as Float32Array)), name).toBe(true);
        }
      });

      it('nll, encode and several decode steps agree', async () => {
        const { native, params } = pair(shape, seed + 2);
        const rng = new Rng(seed + 3);
        const d = batchFor(c, shape, rng);
        const a = await native.nll(d);
        const b = seq2seqNll(shape, params, d.src, d.decIn, d.targets, d.batch, d.srcLen, d.tgtLen, 'f32');
        expect(a.tokens).toBe(b.tokens);
        expectScalarClose('nll', a.nll, b.nll, FWD_TOL);

        const sa0 = native.encode(d.src, d.batch, d.srcLen);
        const sb0 = seq2seqEncode(shape, params, d.src, d.batch, d.srcLen, 'f32');
        expect(sa0.length).toBe(c.layers * d.batch * stateWidth(c.cell) * c.hidden);
        expectStateClose(c.cell, 'encode state', sa0, sb0, c.hidden, FWD_TOL);

        // Each side carries its own state from step to step; the first step feeds BOS.
        let sa = sa0;
        let sb: Float32Array = sb0;
        for (let s = 0; s < 4; s++) {
          const tokens = Uint32Array.from({ length: d.batch }, () => (s === 0 ? BOS : rng.int(c.tgtVocab)));
          const ra = native.decodeStep(sa, tokens);
          const rb = seq2seqDecodeStep(shape, params, sb, tokens, 'f32');
          expect(ra.logProbs.length).toBe(d.batch * c.tgtVocab);
          expectNonTrivial(`step ${s} log-probs`, rb.logProbs);
          expectClose(`step ${s} log-probs`, ra.logProbs, rb.logProbs, FWD_TOL, 1);
          expectStateClose(c.cell, `step ${s} state`, ra.state, rb.state, c.hidden, FWD_TOL);
          sa = ra.state;
          sb = rb.state;
        }
      });

      it('scheduled sampling: the same mixed inputs, loss and gradients as the reference', async () => {
        const { native, params } = pair(shape, seed + 4);
        const rng = new Rng(seed + 5);
        const d = batchFor(c, shape, rng);
        const flips = randomFlips(rng, d.batch * d.tgtLen);
        const { uniforms, sampled } = farUniforms(shape, params, d, flips, rng);
        expect(sampled, 'some positions should be sampled').toBeGreaterThan(2);

        const a = await native.lossAndGrads({ ...d, flips, uniforms });
        const b = refLoss(shape, params, d, { flips, uniforms });
        expect(Array.from(a.inputs)).toEqual(Array.from(b.inputs));
        // The mixing did something: some fed tokens are the model's own, not the ground truth.
        let changed = 0;
        for (let i = 0; i < d.decIn.length; i++) if (b.inputs[i] !== d.decIn[i]) changed++;
        expect(changed, 'no sampled token differs from the ground truth').toBeGreaterThan(0);
        // PAD inputs and position 0 are never replaced.
        for (let i = 0; i < d.decIn.length; i++) {
          if (d.decIn[i] === PAD || i % d.tgtLen === 0) expect(a.inputs[i], `input ${i}`).toBe(d.decIn[i]);
        }

        expectScalarClose('loss (scheduled sampling)', a.loss, b.loss, GRAD_TOL);
        for (const { name } of seq2seqParamInfo(shape)) {
          expectNonTrivial(`grad ${name}`, b.grads[name]);
          expectClose(`grad ${name} (scheduled sampling)`, a.grads[name], b.grads[name], GRAD_TOL, 1e-12);
        }
      });

      it('scheduled sampling with every flip 1 is teacher forcing, bit for bit', async () => {
        const { native } = pair(shape, seed + 6);
        const rng = new Rng(seed + 7);
        const d = batchFor(c, shape, rng);
        const n = d.batch * d.tgtLen;
        const uniforms = Float32Array.from({ length: n }, () => f32Uniform(rng));
        const tf = await native.lossAndGrads(d);
        const ss = await native.lossAndGrads({ ...d, flips: new Uint8Array(n).fill(1), uniforms });
        expect(ss.loss).toBe(tf.loss);
        expect(Array.from(ss.inputs)).toEqual(Array.from(d.decIn));
        for (const [name, g] of Object.entries(tf.grads)) {
          expect(bytes(ss.grads[name]).equals(bytes(g)), `grad ${name} differs`).toBe(true);
        }
      });
    });
  });
});

// ---- training -----------------------------------------------------------------------------------

describe('NativeSeq2Seq trainStep', () => {
  const shape: Seq2SeqShape = {
    srcVocab: 9,
    tgtVocab: 10,
    embed: 8,
    hidden: 16,
    layers: 1,
    cell: 'lstm',
    bidirectional: true,
  };
  const opt: OptimConfig = { lr: 2e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 1 };

  it("reports the loss lossAndGrads gives before the step, and 30 steps cut a tiny batch's loss below a third", async () => {
    const { native } = pair(shape, 7);
    const rng = new Rng(8);
    const d = makeBatch(shape, rng, 4, 5, [5, 3]);
    // First step with scheduled sampling: the reported loss and fed inputs are lossAndGrads's.
    const n = d.batch * d.tgtLen;
    const sampling = { flips: randomFlips(rng, n), uniforms: Float32Array.from({ length: n }, () => f32Uniform(rng)) };
    const before = await native.lossAndGrads({ ...d, ...sampling });
    const first = await native.trainStep({ ...d, ...sampling }, opt);
    expect(first.loss).toBe(before.loss);
    expect(Array.from(first.inputs)).toEqual(Array.from(before.inputs));
    expect(first.tokens).toBe(5 + 4);
    expect(first.gradNorm).toBeGreaterThan(0);

    let start = Number.NaN;
    let last = Number.NaN;
    for (let s = 0; s < 30; s++) {
      const lg = await native.lossAndGrads(d);
      const st = await native.trainStep(d, opt);
      expect(st.loss, `step ${s}: trainStep's loss is not lossAndGrads's`).toBe(lg.loss);
      expect(Number.isFinite(st.gradNorm)).toBe(true);
      if (s === 0) start = st.loss;
      last = st.loss;
    }
    expect(native.getOptimStep()).toBe(31);
    const after = (await native.lossAndGrads(d)).loss;
    expect(after, `loss ${start} → ${last} → ${after}`).toBeLessThan(start / 3);
  });
});

// ---- bad input ----------------------------------------------------------------------------------

describe('NativeSeq2Seq refuses bad input with typed errors', () => {
  const shape: Seq2SeqShape = {
    srcVocab: 7,
    tgtVocab: 8,
    embed: 4,
    hidden: 5,
    layers: 1,
    cell: 'gru',
    bidirectional: true,
  };
  // Built on first use inside a test (`pair` asserts, so not at collection time).
  let model: NativeSeq2Seq | null = null;
  const get = (): NativeSeq2Seq => {
    model ??= pair(shape, 9).native;
    return model;
  };
  const d = makeBatch(shape, new Rng(10), 3, 4, [4, 2]);
  const n = d.batch * d.tgtLen;
  const flips = new Uint8Array(n);
  const uniforms = new Float32Array(n).fill(0.5);

  it('an out-of-range id is a ShapeError in every entry point', async () => {
    const native = get();
    const badSrc = d.src.slice();
    badSrc[2] = shape.srcVocab;
    const badDec = d.decIn.slice();
    badDec[1] = shape.tgtVocab + 3;
    const badTgt = d.targets.slice();
    badTgt[0] = 1_000_000;
    const cases: [string, () => unknown, RegExp][] = [
      ['lossAndGrads src', () => native.lossAndGrads({ ...d, src: badSrc }), /source.*id 7.*vocabulary of 7/],
      ['lossAndGrads decIn', () => native.lossAndGrads({ ...d, decIn: badDec }), /decoder inputs.*id 11/],
      ['lossAndGrads targets', () => native.lossAndGrads({ ...d, targets: badTgt }), /targets.*id 1000000/],
      ['nll targets', () => native.nll({ ...d, targets: badTgt }), /targets.*vocabulary/],
      ['trainStep src', () => native.trainStep({ ...d, src: badSrc }, { ...OPT }), /source.*vocabulary/],
      ['encode', () => native.encode(badSrc, d.batch, d.srcLen), /source.*vocabulary/],
      [
        'decodeStep',
        () => native.decodeStep(new Float32Array(shape.hidden * 2), Uint32Array.from([1, shape.tgtVocab])),
        /vocabulary of 8/,
      ],
    ];
    for (const [what, f, msg] of cases) {
      const e = await thrown(f);
      expect(e, what).toBeInstanceOf(ShapeError);
      expect((e as Error).message, what).toMatch(msg);
    }
    expect(native.getOptimStep(), 'a refused trainStep must not step').toBe(0);
  });

  it('a uniform outside [0, 1) is refused with a clear message', async () => {
    const native = get();
    for (const u of [1, -0.25, Number.NaN, 3]) {
      const bad = uniforms.slice();
      bad[n - 1] = u;
      for (const [what, f] of [
        ['lossAndGrads', () => native.lossAndGrads({ ...d, flips, uniforms: bad })],
        ['trainStep', () => native.trainStep({ ...d, flips, uniforms: bad }, { ...OPT })],
      ] as const) {
        const e = await thrown(f);
        expect(e, `${what} u=${u}`).toBeInstanceOf(ArflowError);
        expect((e as Error).message, `${what} u=${u}`).toMatch(/uniforms must lie in \[0, 1\), got (NaN|-?[0-9.]+)$/);
      }
    }
    expect(native.getOptimStep()).toBe(0);
  });

  it('flips or uniforms of the wrong length are a ShapeError; one without the other a ConfigError', async () => {
    const native = get();
    for (const [what, b] of [
      ['short flips', { ...d, flips: new Uint8Array(n - 1), uniforms }],
      ['long flips', { ...d, flips: new Uint8Array(n + 1), uniforms }],
      ['short uniforms', { ...d, flips, uniforms: new Float32Array(n - 2) }],
    ] as const) {
      const e = await thrown(() => native.lossAndGrads(b));
      expect(e, what).toBeInstanceOf(ShapeError);
      expect((e as Error).message, what).toMatch(/scheduled sampling: flips and uniforms need 8 values each/);
    }
    const e = await thrown(() => native.lossAndGrads({ ...d, flips }));
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message).toMatch(/needs both flips and uniforms/);
  });

  it('a decoder state of the wrong size is a ShapeError', () => {
    expect(() => get().decodeStep(new Float32Array(3), Uint32Array.from([BOS]))).toThrow(ShapeError);
  });

  it('a shape with an unknown cell is a ConfigError, natively and in the reference', () => {
    const bad = { ...shape, cell: 'tcn' as CellKind };
    expect(() => new NativeSeq2Seq(bad, 'cpu')).toThrow(ConfigError);
    expect(() => new NativeSeq2Seq(bad, 'cpu')).toThrow(/tcn/);
    expect(() => seq2seqParamInfo(bad)).toThrow(ConfigError);
  });
});
