/**
 * The native Pixel-RNN (Rust, through N-API: fused row-layer ops with their own backward through the
 * rows, a carried-state sampler) against the float64 TypeScript reference behind the same contract
 * (JsPixelModel): logits, per-image NLL, the loss and every gradient for both cells × both heads ×
 * with/without classes, AdamW steps, sampling and completion with the same uniforms, and typed errors.
 *
 * Comparison rule and tolerances as in helpers/oracle.ts: max_i |got_i − want_i| ≤ tol · scale with
 * scale = max(floor, max_i |want_i|); scalars |got − want| ≤ tol · |want|.
 *   - logits, per-image NLL: FWD_TOL = 1e-5, floor 1 (f32 GEMMs and the rational f32 tanh/σ are a few
 *     ulp from the doubles; the NLL is summed in f64 from f32 logits);
 *   - loss: 1e-5 relative (per-pixel NLLs summed in f32 over B·R·C = 90 values);
 *   - gradients: GRAD_TOL = 1e-4 relative to each tensor's largest |gradient| (floor 1e-12): backward
 *     sums B·R·C products per weight in f32, through R rows of recurrence and L layers;
 *   - masked taps: exactly 0 on both backends.
 */
import { describe, expect, it } from 'vitest';
import { pixelForward } from '../src/backend/js/pixel.js';
import { JsPixelModel } from '../src/backend/js/pixel-model.js';
import { createPixelBackend, NativePixelModel } from '../src/backend/native-pixel.js';
import type { PixelBackend } from '../src/backend/pixel-backend.js';
import {
  MASK_A_7X7,
  type PixelOutput,
  type PixelRnnShape,
  pixelInputValue,
  pixelParamInfo,
} from '../src/backend/pixel-types.js';
import type { OptimConfig } from '../src/backend/types.js';
import { ConfigError, DataError, DivergenceError, ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import {
  expectClose,
  expectNonTrivial,
  expectScalarClose,
  FWD_TOL,
  GRAD_TOL,
  relErr,
  uniform,
} from './helpers/oracle.js';

const B = 3;

function shapeOf(over: Partial<PixelRnnShape>): PixelRnnShape {
  return { cell: 'lstm', hidden: 4, layers: 2, rows: 5, cols: 6, output: 'categorical', ...over };
}

const SHAPES: PixelRnnShape[] = [];
for (const cell of ['lstm', 'gru'] as const) {
  for (const output of ['categorical', 'bernoulli'] as const) {
    for (const classes of [undefined, 3]) SHAPES.push(shapeOf({ cell, output, classes }));
  }
}

const title = (s: PixelRnnShape) => `${s.cell} ${s.output}${s.classes === undefined ? '' : ` K=${s.classes}`}`;

/** The two backends with the same random parameters (uniform in ±0.5). */
function twins(shape: PixelRnnShape, seed: number): { native: PixelBackend; js: PixelBackend } {
  const native = createPixelBackend(shape, 'native');
  const js = createPixelBackend(shape, 'js');
  const rng = new Rng(seed);
  for (const { name, shape: dims } of pixelParamInfo(shape)) {
    const v = uniform(
      rng,
      dims.reduce((a, d) => a * d, 1),
      0.5,
    );
    native.setParam(name, v);
    js.setParam(name, v);
  }
  return { native, js };
}

/** `n` random images: inputs, integer targets, and labels when the model has classes. */
function batchOf(shape: PixelRnnShape, n: number, rng: Rng) {
  const levels = shape.output === 'categorical' ? 256 : 2;
  const targets = new Uint8Array(n * shape.rows * shape.cols);
  for (let k = 0; k < targets.length; k++) targets[k] = rng.int(levels);
  const x = Float32Array.from(targets, (v) => pixelInputValue(shape.output, v));
  const labels = shape.classes === undefined ? null : Int32Array.from({ length: n }, () => rng.int(3));
  return { x, targets, labels };
}

/**
 * Distance of the uniform `u` from the nearest decision boundary of `pixelDrawValue` at the logits at
 * `o`: |u − σ(s)| (Bernoulli), or min over v of |u − Σ_{w ≤ v} p_w| (categorical).
 */
function drawMargin(output: PixelOutput, logits: Float64Array, o: number, u: number): number {
  if (output === 'bernoulli') return Math.abs(u - 1 / (1 + Math.exp(-logits[o])));
  let max = -Infinity;
  for (let v = 0; v < 256; v++) max = Math.max(max, logits[o + v]);
  let total = 0;
  for (let v = 0; v < 256; v++) total += Math.exp(logits[o + v] - max);
  let acc = 0;
  let best = Infinity;
  for (let v = 0; v < 256; v++) {
    acc += Math.exp(logits[o + v] - max);
    best = Math.min(best, Math.abs(u - acc / total));
  }
  return best;
}

/** Whether parameter `name`'s element k is a tap a mask removes. */
function masked(name: string, k: number): boolean {
  if (name === 'input_conv.weight') return MASK_A_7X7[k % 49] === 0;
  return name.endsWith('weight_is') && k % 3 === 2;
}

describe('native Pixel-RNN against the TypeScript reference', () => {
  for (const shape of SHAPES) {
    it(`${title(shape)}: logits, per-image NLL, loss and every gradient`, async () => {
      const { native, js } = twins(shape, 1);
      const { x, targets, labels } = batchOf(shape, B, new Rng(2));
      expectClose('logits', await native.forward(x, labels, B), await js.forward(x, labels, B), FWD_TOL);
      expectClose('nll', await native.nll(x, targets, labels, B), await js.nll(x, targets, labels, B), FWD_TOL);
      const a = await native.lossAndGrads(x, targets, labels, B);
      const b = await js.lossAndGrads(x, targets, labels, B);
      expectScalarClose('loss', a.loss, b.loss, 1e-5);
      for (const { name } of pixelParamInfo(shape)) {
        expectNonTrivial(`d ${name}`, b.grads[name]);
        expectClose(`d ${name}`, a.grads[name], b.grads[name], GRAD_TOL, 1e-12);
        const g = a.grads[name];
        for (let k = 0; k < g.length; k++)
          if (masked(name, k)) expect(Object.is(g[k], 0), `${name}[${k}] is masked`).toBe(true);
      }
    });
  }

  it('trainStep: 3 AdamW steps from the same init give the same losses and parameters', async () => {
    // Tolerances as native-oracle.test.ts's trainStep: losses and gradient norms 1e-4 relative;
    // parameters 1e-3 relative to each tensor's largest |value|. Adam moves every parameter with a
    // non-zero gradient by ±lr at step 1, so an element whose gradient is at rounding-noise level
    // could move in opposite directions on the two backends; 1e-3·max|p| (≈ 5e-4) stays below the
    // per-step movement lr = 2e-3, so a wrong update (clipping, decay, bias correction) is still caught.
    const shape = shapeOf({ cell: 'gru', output: 'categorical', classes: 3 });
    const { native, js } = twins(shape, 3);
    const opt: OptimConfig = { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, clip: 1 };
    const init = Object.fromEntries(pixelParamInfo(shape).map(({ name }) => [name, native.getParam(name)]));
    const rng = new Rng(4);
    for (let s = 0; s < 3; s++) {
      const { x, targets, labels } = batchOf(shape, B, rng);
      const a = await native.trainStep(x, targets, labels, B, opt);
      const b = await js.trainStep(x, targets, labels, B, opt);
      expect(b.gradNorm, 'clipping should be active').toBeGreaterThan(opt.clip);
      expectScalarClose(`step ${s} loss`, a.loss, b.loss, 1e-4);
      expectScalarClose(`step ${s} grad norm`, a.gradNorm, b.gradNorm, 1e-4);
    }
    expect(native.getOptimStep()).toBe(3);
    for (const { name } of pixelParamInfo(shape)) {
      const pb = js.getParam(name);
      const moved = relErr(pb, init[name], 1e-12);
      expect(moved.err * moved.scale, `${name} did not move`).toBeGreaterThan(opt.lr);
      expectClose(`param ${name}`, native.getParam(name), pb, 1e-3, 1e-12);
      expectClose(
        `exp_avg ${name}`,
        native.getOptimState('exp_avg', name),
        js.getOptimState('exp_avg', name),
        1e-3,
        1e-12,
      );
    }
  });
});

describe('native Pixel-RNN sampling', () => {
  /**
   * The same uniforms give the same images as the reference sampler. Float32 logits may flip a draw
   * whose uniform lies at a decision boundary, so images are compared pixel by pixel in raster order
   * and a differing pixel is allowed only where the uniform is within 1e-5 of its draw's nearest
   * boundary under the reference's own f64 logits (f32 moves those boundaries by ~1e-7), after which
   * the rest of that image is not judged. At least 90 % of the sampled pixels must be judged; with
   * these seeds every image matches in full.
   */
  const cases: { shape: PixelRnnShape; topRows: number }[] = [
    { shape: shapeOf({ cell: 'lstm', output: 'categorical', classes: 3 }), topRows: 0 },
    { shape: shapeOf({ cell: 'gru', output: 'bernoulli' }), topRows: 0 },
    { shape: shapeOf({ cell: 'gru', output: 'categorical' }), topRows: 2 },
    { shape: shapeOf({ cell: 'lstm', output: 'bernoulli', classes: 3 }), topRows: 1 },
  ];
  for (const { shape, topRows } of cases) {
    it(`${title(shape)}${topRows ? `, completion of ${topRows} rows` : ''}: the reference's images`, async () => {
      const { native, js } = twins(shape, 5);
      const n = 4;
      const { rows: R, cols: C } = shape;
      const rng = new Rng(6);
      const uniforms = Float32Array.from({ length: n * R * C }, () => rng.uniform());
      const labels = shape.classes === undefined ? null : Int32Array.from([0, 2, 1, 2]);
      const top = topRows === 0 ? null : batchOf({ ...shape, rows: topRows }, n, rng).targets;
      const req = { n, uniforms, labels, topRows, top };
      const want = await js.sample(req);
      const params = Object.fromEntries(pixelParamInfo(shape).map(({ name }) => [name, js.getParam(name)]));
      const x = Float64Array.from(want, (v) => pixelInputValue(shape.output, v));
      const logits = pixelForward(shape, params, x, labels, 'f64');
      const O = shape.output === 'categorical' ? 256 : 1;
      const got = await native.sample(req);
      let judged = 0;
      for (let s = 0; s < n; s++) {
        for (let p = topRows * C; p < R * C; p++) {
          const at = s * R * C + p;
          judged++;
          if (got[at] === want[at]) continue;
          const m = drawMargin(shape.output, logits, at * O, uniforms[at]);
          expect(m, `image ${s} pixel ${p}: native ${got[at]}, reference ${want[at]}`).toBeLessThan(1e-5);
          break;
        }
        const given = s * R * C;
        expect([...got.subarray(given, given + topRows * C)]).toEqual([...want.subarray(given, given + topRows * C)]);
      }
      expect(judged).toBeGreaterThanOrEqual(0.9 * n * (R - topRows) * C);
    });
  }
});

describe('native Pixel-RNN errors', () => {
  const shape = shapeOf({ output: 'bernoulli', classes: 3 });
  const opt: OptimConfig = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: 1 };

  /** Runs `f` on both backends and expects both to reject with `kind`. */
  async function bothReject(what: string, kind: typeof ShapeError, f: (m: PixelBackend) => Promise<unknown>) {
    const { native, js } = twins(shape, 7);
    for (const m of [native, js]) {
      const e = await f(m).then(
        () => null,
        (err: unknown) => err,
      );
      expect(e, `${m.kind}: ${what}`).toBeInstanceOf(kind);
    }
  }

  it('bad sizes, labels, targets and values are typed errors on both backends', async () => {
    const { x, targets, labels } = batchOf(shape, 2, new Rng(8));
    await bothReject('x of the wrong size', ShapeError, (m) => m.nll(x.subarray(1), targets, labels, 2));
    await bothReject('targets of the wrong size', ShapeError, (m) => m.nll(x, targets.subarray(1), labels, 2));
    await bothReject('no labels', ShapeError, (m) => m.forward(x, null, 2));
    await bothReject('labels of the wrong size', ShapeError, (m) => m.forward(x, Int32Array.from([0]), 2));
    await bothReject('label out of range', DataError, (m) => m.forward(x, Int32Array.from([0, 3]), 2));
    await bothReject('negative label', DataError, (m) => m.lossAndGrads(x, targets, Int32Array.from([-1, 0]), 2));
    const t2 = targets.slice();
    t2[4] = 2;
    await bothReject('target out of range', DataError, (m) => m.trainStep(x, t2, labels, 2, opt));
    const x2 = x.slice();
    x2[3] = Number.NaN;
    await bothReject('NaN input', DataError, (m) => m.lossAndGrads(x2, targets, labels, 2));
    await bothReject('NaN learning rate', ConfigError, (m) =>
      m.trainStep(x, targets, labels, 2, { ...opt, lr: Number.NaN }),
    );
    const u = new Float32Array(2 * 30).fill(0.5);
    await bothReject('uniforms of the wrong size', ShapeError, (m) =>
      m.sample({ n: 2, uniforms: u.subarray(1), labels, topRows: 0, top: null }),
    );
    await bothReject('completion without the given rows', ShapeError, (m) =>
      m.sample({ n: 2, uniforms: u, labels, topRows: 1, top: null }),
    );
    await bothReject('given pixel out of range', DataError, (m) =>
      m.sample({ n: 2, uniforms: u, labels, topRows: 1, top: new Uint8Array(12).fill(7) }),
    );
    const plain = createPixelBackend(shapeOf({}), 'native');
    await expect(plain.forward(new Float32Array(30), Int32Array.from([0]), 1)).rejects.toBeInstanceOf(ShapeError);
  });

  it('bad shapes are ConfigErrors, and a diverging step changes nothing', async () => {
    expect(() => new NativePixelModel(shapeOf({ hidden: 0 }))).toThrow(ConfigError);
    expect(() => new NativePixelModel({ ...shapeOf({}), cell: 'rnn' as 'gru' })).toThrow(ConfigError);
    expect(() => createPixelBackend(shapeOf({}), 'js', 'cuda')).toThrow(ConfigError);
    const { native } = twins(shape, 9);
    expect(native).toBeInstanceOf(NativePixelModel);
    expect(createPixelBackend(shape, 'js')).toBeInstanceOf(JsPixelModel);
    const { x, targets, labels } = batchOf(shape, 2, new Rng(10));
    const bias = native.getParam('out2.bias');
    bias[0] = 3e38;
    native.setParam('out2.bias', bias);
    const before = pixelParamInfo(shape).map(({ name }) => native.getParam(name));
    await expect(native.trainStep(x, targets, labels, 2, opt)).rejects.toBeInstanceOf(DivergenceError);
    expect(pixelParamInfo(shape).map(({ name }) => native.getParam(name))).toEqual(before);
    expect(native.getOptimStep()).toBe(0);
  });
});
