/**
 * The float64 Pixel-RNN reference (src/backend/js/pixel.ts): parameter names and masks, tiny images
 * against the equations written out by hand, every gradient against central finite differences, the
 * causality of every layer type checked exhaustively pixel by pixel (and shown to catch a broken mask),
 * the Row LSTM's triangular receptive field, the row step against the whole-image forward, typed errors,
 * and the slow sampler (marginals of a context-free model, completion, agreement with the forward).
 */
import { describe, expect, it } from 'vitest';
import {
  type PixelOptions,
  type PixelParams,
  pixelDrawValue,
  pixelForward,
  pixelInitialRowState,
  pixelInputConvRow,
  pixelLossAndGrads,
  pixelNll,
  pixelRowStep,
  pixelSampleReference,
} from '../src/backend/js/pixel.js';
import {
  causalMask,
  MASK_A_7X7,
  MASK_B_1X3,
  type PixelRnnShape,
  pixelBitsPerDim,
  pixelInputValue,
  pixelParamInfo,
  validatePixelShape,
} from '../src/backend/pixel-types.js';
import { ConfigError, DataError, ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { expectClose, numericGrad, uniform } from './helpers/numeric.js';

const sig = (a: number) => 1 / (1 + Math.exp(-a));
const relu = (a: number) => Math.max(0, a);

/** Every parameter of `shape`, uniform in [−scale, scale). */
function randomParams(shape: PixelRnnShape, rng: Rng, scale = 0.5): Record<string, Float64Array> {
  const p: Record<string, Float64Array> = {};
  for (const { name, shape: dims } of pixelParamInfo(shape)) {
    p[name] = uniform(
      rng,
      dims.reduce((a, d) => a * d, 1),
      scale,
    );
  }
  return p;
}

/** `B` random images: integer pixel values (the targets) and the model inputs they make. */
function randomImages(shape: PixelRnnShape, B: number, rng: Rng): { x: Float64Array; targets: Uint8Array } {
  const levels = shape.output === 'categorical' ? 256 : 2;
  const targets = new Uint8Array(B * shape.rows * shape.cols);
  for (let k = 0; k < targets.length; k++) targets[k] = rng.int(levels);
  const x = Float64Array.from(targets, (v) => pixelInputValue(shape.output, v));
  return { x, targets };
}

function shapeOf(over: Partial<PixelRnnShape>): PixelRnnShape {
  return { cell: 'lstm', hidden: 3, layers: 2, rows: 4, cols: 5, output: 'bernoulli', ...over };
}

describe('pixel-types', () => {
  it('lists every parameter in order with PyTorch shapes, label_bias only with classes', () => {
    const lstm = pixelParamInfo(shapeOf({ layers: 2, hidden: 3, classes: 10, output: 'categorical' }));
    expect(lstm).toEqual([
      { name: 'input_conv.weight', shape: [3, 1, 7, 7] },
      { name: 'input_conv.bias', shape: [3] },
      { name: 'rows.0.weight_is', shape: [12, 3, 1, 3] },
      { name: 'rows.0.bias_is', shape: [12] },
      { name: 'rows.0.weight_ss', shape: [12, 3, 1, 3] },
      { name: 'rows.0.bias_ss', shape: [12] },
      { name: 'rows.0.label_bias', shape: [10, 12] },
      { name: 'rows.1.weight_is', shape: [12, 3, 1, 3] },
      { name: 'rows.1.bias_is', shape: [12] },
      { name: 'rows.1.weight_ss', shape: [12, 3, 1, 3] },
      { name: 'rows.1.bias_ss', shape: [12] },
      { name: 'rows.1.label_bias', shape: [10, 12] },
      { name: 'out1.weight', shape: [3, 3, 1, 1] },
      { name: 'out1.bias', shape: [3] },
      { name: 'out2.weight', shape: [256, 3, 1, 1] },
      { name: 'out2.bias', shape: [256] },
    ]);
    const gru = pixelParamInfo(shapeOf({ cell: 'gru', layers: 1, hidden: 4, output: 'bernoulli' }));
    expect(gru.map((p) => `${p.name} [${p.shape.join(', ')}]`)).toEqual([
      'input_conv.weight [4, 1, 7, 7]',
      'input_conv.bias [4]',
      'rows.0.weight_is [12, 4, 1, 3]',
      'rows.0.bias_is [12]',
      'rows.0.weight_ss [12, 4, 1, 3]',
      'rows.0.bias_ss [12]',
      'out1.weight [4, 4, 1, 1]',
      'out1.bias [4]',
      'out2.weight [1, 4, 1, 1]',
      'out2.bias [1]',
    ]);
  });

  it('mask A of the 7×7 kernel keeps the three rows above and the three pixels to the left; mask B 1×3 is [1, 1, 0]', () => {
    const want: number[] = [];
    for (let ky = 0; ky < 7; ky++) for (let kx = 0; kx < 7; kx++) want.push(ky < 3 || (ky === 3 && kx < 3) ? 1 : 0);
    expect([...MASK_A_7X7]).toEqual(want);
    expect(MASK_A_7X7.reduce((a, b) => a + b, 0)).toBe(24);
    expect([...MASK_B_1X3]).toEqual([1, 1, 0]);
    // Mask B of a square kernel keeps the centre as well; mask A of a row kernel does not.
    expect(causalMask('B', 3, 3)).toEqual([1, 1, 1, 1, 1, 0, 0, 0, 0]);
    expect(causalMask('A', 1, 3)).toEqual([1, 0, 0]);
    expect(Object.isFrozen(MASK_A_7X7)).toBe(true);
  });

  it('rejects unusable shapes with ConfigError and computes bits/dim', () => {
    const ok = shapeOf({});
    expect(() => validatePixelShape(ok)).not.toThrow();
    for (const bad of [
      { hidden: 0 },
      { layers: 0 },
      { layers: 1.5 },
      { rows: -1 },
      { cols: Number.NaN },
      { classes: 0 },
      { classes: 2.5 },
      { cell: 'rnn' },
      { output: 'gaussian' },
      { hidden: 100_000 },
    ]) {
      expect(() => validatePixelShape({ ...ok, ...bad } as PixelRnnShape), JSON.stringify(bad)).toThrow(ConfigError);
    }
    expect(pixelBitsPerDim(shapeOf({ rows: 28, cols: 28 }), 784 * Math.LN2)).toBeCloseTo(1, 14);
  });
});

describe('pixel reference: tiny images by hand', () => {
  /** Parameters of an H = 1, L = 1 model with every tap (masked or not) set to a distinct nonzero value. */
  function tinyParams(shape: PixelRnnShape, rng: Rng): Record<string, Float64Array> {
    const p = randomParams(shape, rng, 0.8);
    // Keep the ReLUs of the head open so every path shows in the logits.
    p['input_conv.bias'][0] = 0.9;
    p['out1.weight'][0] = 0.7;
    p['out1.bias'][0] = 0.2;
    return p;
  }

  it('1×2 image, H = 1, Row LSTM and Row GRU, Bernoulli head: the logits of the written-out equations', () => {
    for (const cell of ['lstm', 'gru'] as const) {
      const shape: PixelRnnShape = { cell, hidden: 1, layers: 1, rows: 1, cols: 2, output: 'bernoulli' };
      const p = tinyParams(shape, new Rng(cell === 'lstm' ? 3 : 4));
      const x = Float64Array.from([0.6, 1]);
      const w0 = p['input_conv.weight'];
      const b0 = p['input_conv.bias'][0];
      const Wis = p['rows.0.weight_is'];
      const bis = p['rows.0.bias_is'];
      const bss = p['rows.0.bias_ss'];
      // y0(0,0): every in-image tap, (0,0) itself and (0,1), is masked. y0(0,1): tap (ky 3, kx 2) reads (0,0).
      const y0 = [b0, b0 + w0[3 * 7 + 2] * x[0]];
      // Input-to-state, gate row g: column 0 reads y0(0,0) through the centre tap (kx 1); column 1 reads
      // y0(0,0) through the left tap (kx 0) and y0(0,1) through the centre; the right tap (kx 2) is masked.
      const is = (g: number, j: number) =>
        bis[g] + (j === 0 ? Wis[g * 3 + 1] * y0[0] : Wis[g * 3] * y0[0] + Wis[g * 3 + 1] * y0[1]);
      // State-to-state from h_{−1} = 0: its bias only.
      const h = [0, 1].map((j) => {
        if (cell === 'lstm') {
          const i = sig(is(0, j) + bss[0]);
          const g = Math.tanh(is(2, j) + bss[2]);
          const o = sig(is(3, j) + bss[3]);
          const c = i * g; // f ⊙ c_{−1} = 0
          return o * Math.tanh(c);
        }
        const r = sig(is(0, j) + bss[0]);
        const z = sig(is(1, j) + bss[1]);
        const n = Math.tanh(is(2, j) + r * bss[2]);
        return (1 - z) * n; // z ⊙ h_{−1} = 0
      });
      const want = [0, 1].map((j) => {
        const y1 = h[j] + y0[j];
        const a2 = relu(p['out1.weight'][0] * relu(y1) + p['out1.bias'][0]);
        return p['out2.weight'][0] * a2 + p['out2.bias'][0];
      });
      const logits = pixelForward(shape, p, x, null, 'f64');
      expect(logits).toBeInstanceOf(Float64Array);
      expect(logits.length).toBe(2);
      for (let j = 0; j < 2; j++) expect(logits[j], `${cell} logit ${j}`).toBeCloseTo(want[j], 14);
      // Bernoulli NLL of targets (1, 0): −log σ(s0) − log(1 − σ(s1)), nats/image.
      const nll = pixelNll(shape, p, x, Uint8Array.from([1, 0]), null);
      const wantNll = -Math.log(sig(want[0])) - Math.log(1 - sig(want[1]));
      expect(nll.natsPerImage).toBeCloseTo(wantNll, 13);
      expect(nll.bitsPerDim).toBeCloseTo(wantNll / (2 * Math.LN2), 13);
    }
  });

  it('2×1 image, H = 1, class-conditional Row LSTM, categorical head: the state-to-state path and c by hand', () => {
    const shape: PixelRnnShape = {
      cell: 'lstm',
      hidden: 1,
      layers: 1,
      rows: 2,
      cols: 1,
      output: 'categorical',
      classes: 2,
    };
    const p = tinyParams(shape, new Rng(5));
    const x = Float64Array.from([0.4, 0.9]);
    const label = 1;
    const w0 = p['input_conv.weight'];
    const b0 = p['input_conv.bias'][0];
    const Wis = p['rows.0.weight_is'];
    const Wss = p['rows.0.weight_ss'];
    const bis = p['rows.0.bias_is'];
    const bss = p['rows.0.bias_ss'];
    const E = p['rows.0.label_bias'];
    // y0(1,0) reads (0,0) through tap (ky 2, kx 3): the row above, same column.
    const y0 = [b0, b0 + w0[2 * 7 + 3] * x[0]];
    let h = 0;
    let c = 0;
    const want: number[] = [];
    for (let i = 0; i < 2; i++) {
      // One column: only the centre taps (kx 1) of both row convolutions are inside the image.
      const a = (g: number) => bis[g] + E[label * 4 + g] + Wis[g * 3 + 1] * y0[i] + bss[g] + Wss[g * 3 + 1] * h;
      const gi = sig(a(0));
      const gf = sig(a(1));
      const gg = Math.tanh(a(2));
      const go = sig(a(3));
      c = gf * c + gi * gg;
      h = go * Math.tanh(c);
      const a2 = relu(p['out1.weight'][0] * relu(h + y0[i]) + p['out1.bias'][0]);
      for (let o = 0; o < 256; o++) want.push(p['out2.weight'][o] * a2 + p['out2.bias'][o]);
    }
    const logits = pixelForward(shape, p, x, [label], 'f64');
    expect(logits.length).toBe(512);
    for (let k = 0; k < 512; k++) expect(logits[k], `logit ${k}`).toBeCloseTo(want[k], 14);
    // −log softmax(logits of row i)[t_i], summed over the two pixels.
    const t = [102, 230];
    let wantNll = 0;
    for (let i = 0; i < 2; i++) {
      const row = want.slice(i * 256, (i + 1) * 256);
      wantNll += Math.log(row.reduce((s, v) => s + Math.exp(v), 0)) - row[t[i]];
    }
    expect(pixelNll(shape, p, x, t, [label]).nll).toBeCloseTo(wantNll, 12);
    // The other label gives other logits.
    expect(pixelForward(shape, p, x, [0], 'f64')[0]).not.toBe(logits[0]);
  });
});

/** Every combination the gradient and causality tests run over. */
const CONFIGS: { cell: 'lstm' | 'gru'; output: 'categorical' | 'bernoulli'; classes?: number }[] = [];
for (const cell of ['lstm', 'gru'] as const) {
  for (const output of ['categorical', 'bernoulli'] as const) {
    CONFIGS.push({ cell, output }, { cell, output, classes: 3 });
  }
}

describe('pixel reference: gradients', () => {
  for (const cfg of CONFIGS) {
    const name = `${cfg.cell}, ${cfg.output}${cfg.classes ? ', 3 classes' : ''}`;
    it(`every gradient matches central finite differences in float64 (${name}; R 4, C 5, H 3, L 2, B 2)`, () => {
      const shape = shapeOf(cfg);
      const rng = new Rng(cfg.cell.length * 100 + cfg.output.length + (cfg.classes ?? 0));
      const p = randomParams(shape, rng, 0.6);
      const B = 2;
      const { x, targets } = randomImages(shape, B, rng);
      // Labels 0 and 2: the rows of label 1 get no gradient.
      const labels = cfg.classes ? [2, 0] : null;
      const loss = () => pixelNll(shape, p, x, targets, labels).natsPerImage;
      const g = pixelLossAndGrads(shape, p, x, targets, labels);
      expect(g.loss).toBeCloseTo(loss(), 12);
      expect(g.bitsPerDim).toBeCloseTo(g.loss / (20 * Math.LN2), 12);
      expect(Object.keys(g.grads)).toEqual(pixelParamInfo(shape).map((i) => i.name));
      // Central differences lose about ε·|loss|/EPS ≈ 2e-16·110/1e-6 ≈ 2e-8 to rounding on the ~110
      // nats/image of 20 categorical pixels (≈ 14 for the Bernoulli head): hence the looser tolerance.
      const tol = cfg.output === 'categorical' ? 1e-5 : 1e-6;
      for (const [pname, got] of Object.entries(g.grads)) {
        const want = numericGrad(p[pname], loss);
        expectClose(pname, got, want, tol);
        expect(
          got.some((v) => v !== 0),
          `${pname} has a nonzero gradient`,
        ).toBe(true);
      }
      // Masked taps: stored, never used, gradient exactly 0; every kept tap of the first layer does get one.
      const dW0 = g.grads['input_conv.weight'];
      for (let k = 0; k < dW0.length; k++) {
        if (MASK_A_7X7[k % 49] === 0) expect(dW0[k], `input_conv.weight[${k}]`).toBe(0);
      }
      for (let l = 0; l < 2; l++) {
        const dWis = g.grads[`rows.${l}.weight_is`];
        for (let k = 0; k < dWis.length; k++) {
          if (k % 3 === 2) expect(dWis[k], `rows.${l}.weight_is[${k}] (right tap)`).toBe(0);
          else expect(dWis[k], `rows.${l}.weight_is[${k}]`).not.toBe(0);
        }
        if (cfg.classes) {
          // label_bias [3, G·H]: row 1 (no image has label 1) gets exactly 0, rows 0 and 2 do not.
          const dE = g.grads[`rows.${l}.label_bias`];
          const GH = dE.length / 3;
          expect(GH).toBe(cfg.cell === 'lstm' ? 12 : 9);
          for (let k = 0; k < 3 * GH; k++) {
            if (k >= GH && k < 2 * GH) expect(dE[k], `rows.${l}.label_bias[${k}]`).toBe(0);
            else expect(dE[k], `rows.${l}.label_bias[${k}]`).not.toBe(0);
          }
        }
      }
    });
  }

  it('the masked taps really are masked: changing them changes nothing, changing a kept tap does', () => {
    const shape = shapeOf({ cell: 'gru', classes: 2 });
    const rng = new Rng(8);
    const p = randomParams(shape, rng);
    const { x } = randomImages(shape, 1, rng);
    const base = pixelForward(shape, p, x, [1], 'f64');
    const q = { ...p, 'input_conv.weight': Float64Array.from(p['input_conv.weight']) };
    q['input_conv.weight'][3 * 7 + 3] += 5; // the centre: the pixel itself
    q['input_conv.weight'][49 + 6 * 7 + 6] -= 5; // channel 1, bottom right
    const r = { ...p, 'rows.1.weight_is': Float64Array.from(p['rows.1.weight_is']) };
    r['rows.1.weight_is'][2] += 5; // gate row 0, channel 0, right tap
    expect(pixelForward(shape, q, x, [1], 'f64')).toEqual(base);
    expect(pixelForward(shape, r, x, [1], 'f64')).toEqual(base);
    const s = { ...p, 'rows.1.weight_is': Float64Array.from(p['rows.1.weight_is']) };
    s['rows.1.weight_is'][1] += 0.1; // centre tap: kept
    expect(pixelForward(shape, s, x, [1], 'f64')).not.toEqual(base);
  });
});

/**
 * `p` with the head's ReLUs held open (y_L > 0 through a large input-convolution bias, out1 positive), so
 * every change of y_L shows in the logits: the reach checks below are then about the network's wiring,
 * not about which units a random model happens to switch off.
 */
function openHead(p: Record<string, Float64Array>): Record<string, Float64Array> {
  const q = { ...p };
  q['input_conv.bias'] = p['input_conv.bias'].map((v) => v + 8);
  q['out1.weight'] = p['out1.weight'].map(Math.abs);
  q['out1.bias'] = p['out1.bias'].map((v) => Math.abs(v) + 0.1);
  return q;
}

/**
 * Causality, exhaustively: for every pixel p of each image, change it and compare every logit. Returns
 * the pixels whose change reached a logit at or before them in raster order (`leaks`, must be empty)
 * and those, not last, whose change reached no later logit (`silent`, must be empty, or the test could
 * not fail).
 */
function causality(
  shape: PixelRnnShape,
  params: PixelParams,
  x: Float64Array,
  labels: number[] | null,
  opts: PixelOptions = {},
): { leaks: string[]; silent: string[] } {
  const { rows: R, cols: C } = shape;
  const O = shape.output === 'categorical' ? 256 : 1;
  const base = pixelForward(shape, params, x, labels, 'f64', opts);
  const leaks: string[] = [];
  const silent: string[] = [];
  for (let p = 0; p < R * C; p++) {
    const y = Float64Array.from(x);
    y[p] = y[p] === 1 ? 0.25 : 1; // a different value in every case
    const out = pixelForward(shape, params, y, labels, 'f64', opts);
    let later = false;
    for (let q = 0; q < R * C; q++) {
      let same = true;
      for (let o = 0; o < O; o++) if (out[q * O + o] !== base[q * O + o]) same = false;
      if (!same && q <= p) leaks.push(`(${Math.floor(p / C)},${p % C}) → (${Math.floor(q / C)},${q % C})`);
      if (!same && q > p) later = true;
    }
    if (!later && p < R * C - 1) silent.push(`(${Math.floor(p / C)},${p % C})`);
  }
  return { leaks, silent };
}

describe('pixel reference: causality', () => {
  for (const cell of ['lstm', 'gru'] as const) {
    for (const layers of [1, 2]) {
      for (const classes of [undefined, 4]) {
        it(`no pixel reaches its own logits or earlier ones, and each reaches a later one (${cell}, L ${layers}${classes ? ', 4 classes' : ''})`, () => {
          const shape = shapeOf({ cell, layers, classes, rows: 5, cols: 6 });
          const rng = new Rng(layers * 10 + (classes ?? 0) + (cell === 'gru' ? 1 : 0));
          const p = openHead(randomParams(shape, rng));
          const { x } = randomImages(shape, 1, rng);
          const { leaks, silent } = causality(shape, p, x, classes ? [3] : null);
          expect(leaks).toEqual([]);
          expect(silent).toEqual([]);
        });
      }
    }
  }

  it('holds for the 256-way head too', () => {
    const shape = shapeOf({ output: 'categorical', rows: 3, cols: 4 });
    const rng = new Rng(77);
    const p = openHead(randomParams(shape, rng));
    const { x } = randomImages(shape, 1, rng);
    expect(causality(shape, p, x, null)).toEqual({ leaks: [], silent: [] });
  });

  it('catches a broken mask: mask A without its centre masked, mask A all ones, mask B with its right tap', () => {
    const shape = shapeOf({ cell: 'gru', rows: 4, cols: 5 });
    const rng = new Rng(21);
    const p = randomParams(shape, rng);
    const { x } = randomImages(shape, 1, rng);
    const aWithCentre = [...MASK_A_7X7];
    aWithCentre[3 * 7 + 3] = 1;
    for (const masks of [
      { a: aWithCentre, b: MASK_B_1X3 },
      { a: new Array(49).fill(1), b: MASK_B_1X3 },
      { a: MASK_A_7X7, b: [1, 1, 1] },
    ]) {
      const { leaks } = causality(shape, p, x, null, { masks });
      expect(leaks.length, JSON.stringify(masks.b)).toBeGreaterThan(0);
    }
    // With a right tap in mask B, pixel (i, j) reaches its own logits: y0(i, j+1) reads it and feeds is(i, j).
    const { leaks } = causality(shape, p, x, null, { masks: { a: MASK_A_7X7, b: [1, 1, 1] } });
    expect(leaks).toContain('(0,0) → (0,0)');
  });

  it('the Row LSTM field is a triangle: the row above up to column j+3, the current row back to column j−3−L', () => {
    for (const cell of ['lstm', 'gru'] as const) {
      for (const layers of [1, 2]) {
        const shape = shapeOf({ cell, layers, rows: 2, cols: 9 });
        const rng = new Rng(layers + 40);
        const p = openHead(randomParams(shape, rng));
        const { x } = randomImages(shape, 1, rng);
        const base = pixelForward(shape, p, x, null, 'f64');
        const reached = (pixel: number) => {
          const y = Float64Array.from(x);
          y[pixel] = y[pixel] === 1 ? 0.25 : 1;
          const out = pixelForward(shape, p, y, null, 'f64');
          return [...out].map((v, q) => (v !== base[q] ? q : -1)).filter((q) => q >= 0);
        };
        const cols = (qs: number[], row: number) => qs.filter((q) => Math.floor(q / 9) === row).map((q) => q % 9);
        // (0, 8), the top-right pixel, is seen from (1, j) only for j + 3 ≥ 8.
        expect(cols(reached(8), 1), `${cell} L ${layers}: row 1 from (0, 8)`).toEqual([5, 6, 7, 8]);
        // (1, 0) is seen from (1, j) only for 1 ≤ j ≤ 3 + L.
        const want = Array.from({ length: 3 + layers }, (_, k) => k + 1);
        expect(cols(reached(9), 1), `${cell} L ${layers}: row 1 from (1, 0)`).toEqual(want);
      }
    }
  });
});

describe('pixel reference: row step, shapes and errors', () => {
  it('row steps from the zero state reproduce the whole-image forward (both cells, with classes)', () => {
    for (const cell of ['lstm', 'gru'] as const) {
      const shape = shapeOf({ cell, classes: 2, output: 'categorical' });
      const rng = new Rng(cell === 'lstm' ? 31 : 32);
      const p = randomParams(shape, rng);
      const { x } = randomImages(shape, 1, rng);
      const logits = pixelForward(shape, p, x, [1], 'f64');
      let state = pixelInitialRowState(shape);
      expect(state.h.length).toBe(2 * 5 * 3);
      expect(state.c === null).toBe(cell === 'gru');
      for (let i = 0; i < shape.rows; i++) {
        const step = pixelRowStep(shape, p, state, pixelInputConvRow(shape, p, x, i), 1);
        expect(step.logits.length).toBe(5 * 256);
        for (let k = 0; k < step.logits.length; k++) {
          expect(Math.abs(step.logits[k] - logits[i * 5 * 256 + k]), `${cell} row ${i} logit ${k}`).toBeLessThan(1e-13);
        }
        state = step.state;
      }
    }
  });

  it('stores logits [B, R, C, O] in the requested dtype', () => {
    const shape = shapeOf({ output: 'categorical', rows: 2, cols: 3 });
    const p = randomParams(shape, new Rng(1));
    const x = new Float32Array(3 * 6).fill(0.5);
    const f32 = pixelForward(shape, p, x, null, 'f32');
    const f64 = pixelForward(shape, p, x, null, 'f64');
    expect(f32).toBeInstanceOf(Float32Array);
    expect(f64).toBeInstanceOf(Float64Array);
    expect(f64.length).toBe(3 * 2 * 3 * 256);
    expect(f32[100]).toBe(Math.fround(f64[100]));
    // Identical images give identical logits in every batch slot.
    expect(f64.subarray(0, 1536)).toEqual(f64.subarray(3072, 4608));
  });

  it('refuses wrong sizes with ShapeError and bad values with DataError', () => {
    const shape = shapeOf({ classes: 3, rows: 2, cols: 3 });
    const p = randomParams(shape, new Rng(2));
    const x = new Float64Array(12).fill(1);
    const t = new Uint8Array(12).fill(1);
    expect(() => pixelForward(shape, p, new Float64Array(11), [0, 0], 'f64')).toThrow(ShapeError);
    expect(() => pixelForward(shape, p, new Float64Array(0), [], 'f64')).toThrow(ShapeError);
    expect(() =>
      pixelForward(
        shape,
        p,
        Float64Array.from(x, (v, k) => (k === 5 ? Number.NaN : v)),
        [0, 0],
        'f64',
      ),
    ).toThrow(DataError);
    expect(() => pixelForward(shape, p, x, null, 'f64')).toThrow(/labels are required/);
    expect(() => pixelForward(shape, p, x, [0], 'f64')).toThrow(ShapeError);
    expect(() => pixelForward(shape, p, x, [0, 3], 'f64')).toThrow(DataError);
    expect(() => pixelForward(shape, p, x, [0, -1], 'f64')).toThrow(/label 1 is -1/);
    expect(() => pixelForward(shape, p, x, [0, 0.5], 'f64')).toThrow(DataError);
    expect(() => pixelForward({ ...shape, classes: undefined }, p, x, [0, 0], 'f64')).toThrow(/no classes/);
    expect(() => pixelNll(shape, p, x, new Uint8Array(11), [0, 0])).toThrow(ShapeError);
    expect(() =>
      pixelNll(
        shape,
        p,
        x,
        Float64Array.from(t, (v, k) => (k === 4 ? 0.5 : v)),
        [0, 0],
      ),
    ).toThrow(/target 4 is 0.5, not an integer in 0…1/);
    expect(() =>
      pixelLossAndGrads(
        shape,
        p,
        x,
        Float64Array.from(t, (v, k) => (k === 4 ? 2 : v)),
        [0, 0],
      ),
    ).toThrow(DataError);
    const cat = { ...shape, output: 'categorical' as const };
    const pc = randomParams(cat, new Rng(3));
    expect(() =>
      pixelLossAndGrads(
        cat,
        pc,
        x,
        Float64Array.from(t, (v, k) => (k === 0 ? 256 : v)),
        [0, 0],
      ),
    ).toThrow(DataError);
    expect(() => pixelLossAndGrads(cat, pc, x, t, [0, 0])).not.toThrow();
    const { 'rows.1.bias_ss': _, ...missing } = p;
    expect(() => pixelForward(shape, missing, x, [0, 0], 'f64')).toThrow(/rows.1.bias_ss is missing/);
    expect(() => pixelForward(shape, { ...p, 'out1.bias': new Float64Array(4) }, x, [0, 0], 'f64')).toThrow(ShapeError);
    expect(() => pixelForward({ ...shape, hidden: 0 }, p, x, [0, 0], 'f64')).toThrow(ConfigError);
    const state = pixelInitialRowState(shape);
    const y0 = pixelInputConvRow(shape, p, x.subarray(0, 6), 1);
    expect(() => pixelRowStep(shape, p, state, y0, 3)).toThrow(DataError);
    expect(() => pixelRowStep(shape, p, state, y0.subarray(1), 0)).toThrow(ShapeError);
    expect(() => pixelRowStep(shape, p, { h: state.h, c: null }, y0, 0)).toThrow(ShapeError);
    expect(() => pixelInputConvRow(shape, p, x, 0)).toThrow(ShapeError);
    expect(() => pixelInputConvRow(shape, p, x.subarray(0, 6), 2)).toThrow(ShapeError);
  });
});

describe('pixel reference: sampler', () => {
  /** A model whose logits are out2.bias at every pixel, whatever the context. */
  function contextFree(shape: PixelRnnShape, bias: number[]): Record<string, Float64Array> {
    const p = randomParams(shape, new Rng(9));
    p['out2.weight'].fill(0);
    p['out2.bias'].set(bias);
    return p;
  }

  it('a context-free categorical head reproduces its softmax frequencies', () => {
    const shape = shapeOf({ output: 'categorical', rows: 4, cols: 5, layers: 1 });
    const bias = new Array(256).fill(-40);
    const logp: [number, number][] = [
      [0, Math.log(0.5)],
      [17, Math.log(0.3)],
      [128, Math.log(0.15)],
      [255, Math.log(0.05)],
    ];
    for (const [v, l] of logp) bias[v] = l;
    const n = 150;
    const values = pixelSampleReference(shape, contextFree(shape, bias), n, new Rng(1));
    expect(values.length).toBe(n * 20);
    const N = values.length;
    const counts = new Map<number, number>();
    for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
    expect([...counts.keys()].sort((a, b) => a - b)).toEqual([0, 17, 128, 255]);
    for (const [v, l] of logp) {
      const q = Math.exp(l);
      const sd = Math.sqrt((q * (1 - q)) / N);
      expect(Math.abs((counts.get(v) ?? 0) / N - q), `value ${v}`).toBeLessThan(4 * sd);
    }
  });

  it('a context-free Bernoulli head reproduces σ(bias), with a label', () => {
    const shape = shapeOf({ cell: 'gru', rows: 3, cols: 4, classes: 2 });
    const n = 250;
    const values = pixelSampleReference(shape, contextFree(shape, [Math.log(0.3 / 0.7)]), n, new Rng(2), {
      label: 1,
    });
    const ones = values.reduce((a, v) => a + v, 0);
    const N = values.length;
    expect(new Set(values)).toEqual(new Set([0, 1]));
    expect(Math.abs(ones / N - 0.3)).toBeLessThan(4 * Math.sqrt((0.3 * 0.7) / N));
    expect(() => pixelSampleReference(shape, contextFree(shape, [0]), 1, new Rng(2))).toThrow(/label is required/);
    expect(() => pixelSampleReference(shape, contextFree(shape, [0]), 1, new Rng(2), { label: 2 })).toThrow(DataError);
  });

  it('draws with pixelDrawValue from the logits of pixelForward, one uniform per sampled pixel (both cells)', () => {
    for (const cell of ['lstm', 'gru'] as const) {
      for (const output of ['categorical', 'bernoulli'] as const) {
        const shape = shapeOf({ cell, output, classes: 3, rows: 4, cols: 5 });
        const p = randomParams(shape, new Rng(11), 1.5);
        const n = 3;
        const labels = [2, 0, 1];
        const values = pixelSampleReference(shape, p, n, new Rng(12), { label: labels });
        // Replay: the forward pass over the sampled images must pick the same value at every pixel.
        const x = Float64Array.from(values, (v) => pixelInputValue(output, v));
        const logits = pixelForward(shape, p, x, labels, 'f64');
        const rng = new Rng(12);
        const O = output === 'categorical' ? 256 : 1;
        const replay = values.map((_, q) => pixelDrawValue(output, logits, q * O, rng.uniform()));
        expect([...replay], `${cell} ${output}`).toEqual([...values]);
        // And the samples are not all one value (the test could not fail otherwise).
        expect(new Set(values).size).toBeGreaterThan(1);
      }
    }
  });

  it('completion keeps the given top rows and samples the rest as the forward pass says', () => {
    const shape = shapeOf({ output: 'categorical', rows: 4, cols: 5 });
    const p = randomParams(shape, new Rng(13), 1.5);
    const given = Uint8Array.from({ length: 2 * 5 }, (_, k) => (k * 37) % 256);
    const n = 4;
    const values = pixelSampleReference(shape, p, n, new Rng(14), { topRows: { rows: 2, values: given } });
    for (let s = 0; s < n; s++) expect(values.subarray(s * 20, s * 20 + 10)).toEqual(given);
    const x = Float64Array.from(values, (v) => pixelInputValue('categorical', v));
    const logits = pixelForward(shape, p, x, null, 'f64');
    const rng = new Rng(14);
    for (let s = 0; s < n; s++) {
      for (let q = 10; q < 20; q++) {
        const k = s * 20 + q;
        expect(pixelDrawValue('categorical', logits, k * 256, rng.uniform()), `sample ${s} pixel ${q}`).toBe(values[k]);
      }
    }
    // Per-sample given rows, and errors.
    const own = Uint8Array.from({ length: n * 5 }, (_, k) => k % 256);
    const one = pixelSampleReference(shape, p, n, new Rng(15), { topRows: { rows: 1, values: own } });
    for (let s = 0; s < n; s++) expect(one.subarray(s * 20, s * 20 + 5)).toEqual(own.subarray(s * 5, s * 5 + 5));
    expect(() =>
      pixelSampleReference(shape, p, n, new Rng(1), { topRows: { rows: 1, values: own.subarray(1) } }),
    ).toThrow(ShapeError);
    expect(() =>
      pixelSampleReference(shape, p, 1, new Rng(1), { topRows: { rows: 1, values: [0, 1, 2, 3, 256] } }),
    ).toThrow(DataError);
  });

  it('pixelDrawValue inverts the cumulative distribution', () => {
    const logits = new Float64Array(256).fill(-Infinity);
    logits[3] = Math.log(0.25);
    logits[9] = Math.log(0.75);
    expect(pixelDrawValue('categorical', logits, 0, 0)).toBe(3);
    expect(pixelDrawValue('categorical', logits, 0, 0.2499)).toBe(3);
    expect(pixelDrawValue('categorical', logits, 0, 0.2501)).toBe(9);
    expect(pixelDrawValue('categorical', logits, 0, 0.999999)).toBe(9);
    expect(pixelDrawValue('bernoulli', [0], 0, 0.49)).toBe(1);
    expect(pixelDrawValue('bernoulli', [0], 0, 0.51)).toBe(0);
  });
});
