import { describe, expect, it } from 'vitest';
import {
  gaussianNll,
  gaussianOutputSize,
  mixtureNll,
  mixtureOutputSize,
  RHO_SCALE,
  sampleGaussian,
  sampleMixture,
} from '../src/backend/js/mixture.js';
import { ConfigError, ShapeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { expectClose, numericGrad, uniform } from './helpers/numeric.js';

/** Component parameters decoded from one raw row, written independently of the head's index arithmetic. */
interface Component {
  pi: number;
  mu: number[];
  sigma: number[];
  rho: number;
}

function decode(raw: Float64Array, row: number, dim: number, K: number): Component[] {
  const size = mixtureOutputSize(dim, K);
  const r = Array.from(raw.subarray(row * size, (row + 1) * size));
  const logits = r.slice(0, K);
  const mus = r.slice(K, K + K * dim);
  const ss = r.slice(K + K * dim, K + 2 * K * dim);
  const rhos = dim === 2 ? r.slice(K + 2 * K * dim) : [];
  const m = Math.max(...logits);
  const e = logits.map((a) => Math.exp(a - m));
  const total = e.reduce((a, b) => a + b, 0);
  return logits.map((_, k) => ({
    pi: e[k] / total,
    mu: mus.slice(k * dim, (k + 1) * dim),
    sigma: ss.slice(k * dim, (k + 1) * dim).map(Math.exp),
    rho: dim === 2 ? RHO_SCALE * Math.tanh(rhos[k]) : 0,
  }));
}

/**
 * log N(y | μ, Σ) from the textbook formula: for D = 2 with the full covariance matrix
 * Σ = [[σ₁², ρσ₁σ₂], [ρσ₁σ₂, σ₂²]], its explicit inverse and determinant; else the sum over 1-D normals.
 */
function logDensity(c: Component, y: number[]): number {
  if (y.length === 2) {
    const [s1, s2] = c.sigma;
    const a = s1 * s1;
    const b = c.rho * s1 * s2;
    const d = s2 * s2;
    const det = a * d - b * b;
    const x1 = y[0] - c.mu[0];
    const x2 = y[1] - c.mu[1];
    const quad = (d * x1 * x1 - 2 * b * x1 * x2 + a * x2 * x2) / det;
    return -0.5 * quad - Math.log(2 * Math.PI * Math.sqrt(det));
  }
  let lp = 0;
  for (let i = 0; i < y.length; i++) {
    const z = (y[i] - c.mu[i]) / c.sigma[i];
    lp += -0.5 * z * z - Math.log(c.sigma[i] * Math.sqrt(2 * Math.PI));
  }
  return lp;
}

/** −Σ_rows log Σ_k π_k N_k; the sum over k is taken relative to its largest term so that it cannot underflow. */
function directNll(raw: Float64Array, y: Float64Array, rows: number, dim: number, K: number): number {
  let nll = 0;
  for (let r = 0; r < rows; r++) {
    const yr = Array.from(y.subarray(r * dim, (r + 1) * dim));
    const terms = decode(raw, r, dim, K).map((c) => Math.log(c.pi) + logDensity(c, yr));
    const top = Math.max(...terms);
    nll -= top + Math.log(terms.reduce((acc, t) => acc + Math.exp(t - top), 0));
  }
  return nll;
}

/** Raw rows with σ in [e^−1, e^1], |ρ| ≤ tanh(2), and targets within a few σ of some component. */
function randomCase(seed: number, rows: number, dim: number, K: number) {
  const rng = new Rng(seed);
  const raw = uniform(rng, rows * mixtureOutputSize(dim, K), 1);
  const size = mixtureOutputSize(dim, K);
  for (let r = 0; r < rows; r++) {
    if (dim === 2) for (let k = 0; k < K; k++) raw[r * size + K + 4 * K + k] = rng.range(-2, 2);
  }
  const y = uniform(rng, rows * dim, 2);
  return { raw, y, rng };
}

const CONFIGS: [number, number][] = [];
for (const dim of [1, 2, 3]) for (const K of [1, 2, 3]) CONFIGS.push([dim, K]);

describe('output sizes', () => {
  it('counts π, μ, s and (for D = 2 only) ρ', () => {
    expect(gaussianOutputSize(3)).toBe(6);
    expect(mixtureOutputSize(1, 2)).toBe(2 + 2 + 2);
    expect(mixtureOutputSize(2, 3)).toBe(3 + 6 + 6 + 3);
    expect(mixtureOutputSize(3, 2)).toBe(2 + 6 + 6);
  });
});

describe('mixture NLL', () => {
  it.each(CONFIGS)('D=%i K=%i equals −log Σ π N from the explicit densities', (dim, K) => {
    const rows = 5;
    const { raw, y } = randomCase(100 + 10 * dim + K, rows, dim, K);
    const got = mixtureNll(raw, y, rows, dim, K).nll;
    const want = directNll(raw, y, rows, dim, K);
    expect(Math.abs(got - want)).toBeLessThan(1e-12 * Math.max(1, Math.abs(want)));
  });

  it.each(CONFIGS)('D=%i K=%i gradient equals central differences for every raw output', (dim, K) => {
    const rows = 4;
    const { raw, y } = randomCase(200 + 10 * dim + K, rows, dim, K);
    const { grad } = mixtureNll(raw, y, rows, dim, K);
    const num = numericGrad(raw, () => mixtureNll(raw, y, rows, dim, K).nll);
    expectClose(`grad D=${dim} K=${K}`, grad, num, 1e-7);
  });

  it('bivariate gradient holds near |ρ| → 1 and for targets far out', () => {
    const dim = 2;
    const K = 2;
    // Row 0: ρ raw 4 and −5 (|ρ| ≈ 0.9993, 0.99991) with targets near the means; row 1: the same with
    // a target many σ off the correlation line.
    const row = [0.3, -0.2, 0.1, -0.4, 1.0, 0.5, -0.5, 0.2, 0.3, -0.1, 4, -5];
    const raw = Float64Array.from([...row, ...row]);
    const y = Float64Array.from([0.4, -0.9, 6, -2]);
    const { grad, nll } = mixtureNll(raw, y, 2, dim, K);
    expect(Math.abs(nll - directNll(raw, y, 2, dim, K))).toBeLessThan(1e-9 * Math.abs(nll));
    // Smaller step: with ρ ≈ ±0.9999 the function curves on a scale of 1 − ρ² ≈ 1e-4.
    const g = new Float64Array(raw.length);
    const h = 1e-7;
    for (let i = 0; i < raw.length; i++) {
      const v = raw[i];
      raw[i] = v + h;
      const up = mixtureNll(raw, y, 2, dim, K).nll;
      raw[i] = v - h;
      const down = mixtureNll(raw, y, 2, dim, K).nll;
      raw[i] = v;
      g[i] = (up - down) / (2 * h);
    }
    expectClose('grad near |ρ| = 1', grad, g, 1e-6);
  });

  it('one component with ρ = 0 is the diagonal Gaussian head, in NLL and gradient', () => {
    for (const dim of [1, 2, 3]) {
      const rows = 3;
      const rng = new Rng(7 + dim);
      const gRaw = uniform(rng, rows * 2 * dim, 1);
      const y = uniform(rng, rows * dim, 2);
      const mSize = mixtureOutputSize(dim, 1);
      const mRaw = new Float64Array(rows * mSize);
      for (let r = 0; r < rows; r++) {
        // [logit, μ (D), s (D), ρ raw = 0 for D = 2]; any logit is π = 1.
        mRaw[r * mSize] = rng.range(-3, 3);
        mRaw.set(gRaw.subarray(r * 2 * dim, (r + 1) * 2 * dim), r * mSize + 1);
      }
      const g = gaussianNll(gRaw, y, rows, dim);
      const m = mixtureNll(mRaw, y, rows, dim, 1);
      expect(Math.abs(m.nll - g.nll)).toBeLessThan(1e-12 * Math.abs(g.nll));
      for (let r = 0; r < rows; r++) {
        expect(m.grad[r * mSize]).toBe(0);
        for (let i = 0; i < 2 * dim; i++) {
          expect(m.grad[r * mSize + 1 + i]).toBeCloseTo(g.grad[r * 2 * dim + i], 12);
        }
      }
    }
  });

  it('stays finite for a target 1e8 σ away under a saturated ρ, matching the log-space formula', () => {
    // K = 1, D = 2: μ = 0, s = −5, ρ raw 50 (tanh is ±1 exactly in doubles, so ρ is at the cap).
    const raw = Float64Array.from([0, 0, 0, -5, -5, 50]);
    const y = Float64Array.from([1e6, -1e6]);
    const { nll, grad } = mixtureNll(raw, y, 1, 2, 1);
    expect(Number.isFinite(nll)).toBe(true);
    expect(grad.every(Number.isFinite)).toBe(true);
    const rho = RHO_SCALE;
    const z = 1e6 / Math.exp(-5);
    const omr = 1 - rho * rho;
    expect(omr).toBeGreaterThan(1.9e-6);
    const want = Math.log(2 * Math.PI) - 10 + 0.5 * Math.log(omr) + (2 * z * z + 2 * rho * z * z) / (2 * omr);
    expect(Math.abs(nll - want)).toBeLessThan(1e-9 * want);
  });

  it('stays finite with logits 2000 apart and σ = e^300, matching the explicit densities', () => {
    const dim = 2;
    const K = 3;
    const raw = Float64Array.from([
      ...[1000, -1000, 0], // π: component 1 has e^−2000 of component 0's weight, component 2 e^−1000
      ...[0, 0, 0.5, 0.5, 3, 3], // μ
      ...[-1, -1, -2, -2, 300, 300], // s
      ...[0.5, -0.5, 0], // ρ raw
    ]);
    const y = Float64Array.from([0.2, -0.3]);
    const { nll, grad } = mixtureNll(raw, y, 1, dim, K);
    expect(Number.isFinite(nll)).toBe(true);
    expect(grad.every(Number.isFinite)).toBe(true);
    expect(Math.abs(nll - directNll(raw, y, 1, dim, K))).toBeLessThan(1e-12 * Math.abs(nll));
    // σ = e^300 alone: the NLL is log 2π + 600 + ½ log(1 − 0) + a vanishing quadratic term.
    const wide = Float64Array.from([0, 3, 3, 300, 300, 0]);
    expect(mixtureNll(wide, y, 1, 2, 1).nll).toBeCloseTo(Math.log(2 * Math.PI) + 600, 10);
  });

  it('a component thousands of nats away changes the NLL only by its weight', () => {
    // Two far-apart components of equal weight: the NLL is the near one's NLL plus log 2.
    const raw = Float64Array.from([0, 0, 0, 1e4, -1, -1]);
    const y = Float64Array.from([0.3]);
    const { nll, grad } = mixtureNll(raw, y, 1, 1, 2);
    const near = 0.5 * Math.log(2 * Math.PI) - 1 + 0.5 * (0.3 / Math.exp(-1)) ** 2;
    expect(nll).toBeCloseTo(near + Math.log(2), 12);
    expect(grad.every(Number.isFinite)).toBe(true);
    expect(grad[0]).toBeCloseTo(-0.5, 12); // π − γ with γ = (1, 0)
    expect(grad[1]).toBeCloseTo(0.5, 12);
  });

  it('accepts float32 raw outputs and targets', () => {
    const { raw, y } = randomCase(5, 3, 2, 2);
    const r32 = Float32Array.from(raw);
    const y32 = Float32Array.from(y);
    const got = mixtureNll(r32, y32, 3, 2, 2);
    const want = mixtureNll(Float64Array.from(r32), Float64Array.from(y32), 3, 2, 2);
    expect(got.nll).toBe(want.nll);
    expect(Array.from(got.grad)).toEqual(Array.from(want.grad));
  });
});

describe('diagonal Gaussian NLL', () => {
  it('equals the formula and its gradient equals central differences', () => {
    const rows = 4;
    const dim = 3;
    const rng = new Rng(11);
    const raw = uniform(rng, rows * 2 * dim, 1);
    const y = uniform(rng, rows * dim, 2);
    const { nll, grad } = gaussianNll(raw, y, rows, dim);
    let want = 0;
    for (let r = 0; r < rows; r++) {
      for (let d = 0; d < dim; d++) {
        const sigma = Math.exp(raw[r * 6 + 3 + d]);
        const p = Math.exp(-0.5 * ((y[r * 3 + d] - raw[r * 6 + d]) / sigma) ** 2) / (sigma * Math.sqrt(2 * Math.PI));
        want -= Math.log(p);
      }
    }
    expect(Math.abs(nll - want)).toBeLessThan(1e-12 * Math.abs(want));
    expectClose(
      'gaussian grad',
      grad,
      numericGrad(raw, () => gaussianNll(raw, y, rows, dim).nll),
      1e-7,
    );
  });
});

/** Mean and covariance of the mixture the head predicts at temperature τ: Σ π_k (Σ_k + μ_k μ_kᵀ) − m mᵀ. */
function predictedMoments(comps: Component[], dim: number, tau: number) {
  const w = comps.map((c) => Math.log(c.pi) / tau);
  const wm = Math.max(...w);
  const e = w.map((v) => Math.exp(v - wm));
  const tot = e.reduce((a, b) => a + b, 0);
  const pis = e.map((v) => v / tot);
  const mean = new Float64Array(dim);
  const cov = new Float64Array(dim * dim);
  comps.forEach((c, k) => {
    for (let i = 0; i < dim; i++) {
      mean[i] += pis[k] * c.mu[i];
      for (let j = 0; j < dim; j++) {
        const corr = i === j ? 1 : c.rho; // ρ is 0 for D ≠ 2
        cov[i * dim + j] += pis[k] * (tau * corr * c.sigma[i] * c.sigma[j] + c.mu[i] * c.mu[j]);
      }
    }
  });
  for (let i = 0; i < dim; i++) for (let j = 0; j < dim; j++) cov[i * dim + j] -= mean[i] * mean[j];
  return { mean, cov };
}

/** Sample mean and covariance, each checked against `want` within 5 standard errors estimated from the sample. */
function expectMoments(x: Float64Array, dim: number, want: { mean: Float64Array; cov: Float64Array }): void {
  const n = x.length / dim;
  const mean = new Float64Array(dim);
  for (let t = 0; t < n; t++) for (let i = 0; i < dim; i++) mean[i] += x[t * dim + i] / n;
  for (let i = 0; i < dim; i++) {
    const c = new Float64Array(dim);
    const c2 = new Float64Array(dim);
    for (let t = 0; t < n; t++) {
      for (let j = 0; j < dim; j++) {
        const p = (x[t * dim + i] - mean[i]) * (x[t * dim + j] - mean[j]);
        c[j] += p / n;
        c2[j] += (p * p) / n;
      }
    }
    const seMean = Math.sqrt(c[i] / n);
    expect(Math.abs(mean[i] - want.mean[i]), `mean[${i}]`).toBeLessThan(5 * seMean);
    for (let j = 0; j < dim; j++) {
      const se = Math.sqrt((c2[j] - c[j] * c[j]) / n);
      expect(Math.abs(c[j] - want.cov[i * dim + j]), `cov[${i},${j}]`).toBeLessThan(5 * se);
    }
  }
}

describe('sampling', () => {
  const N = 200_000;
  const cases: [string, number, number[]][] = [
    // D = 2, K = 3 with strong correlations of both signs and unequal weights.
    ['D=2 K=3', 2, [0.5, -0.3, 0.2, -1, 0.5, 2, 1, 0, -2, 0, -0.5, -0.2, 0.3, -0.3, 0.1, 1.5, -1.2, 0.3]],
    ['D=1 K=2', 1, [1.0, -1.0, -2, 3, -0.5, 0.4]],
    ['D=3 K=2', 3, [0.2, -0.2, 1, 2, 3, -1, -2, 0, -0.3, 0.2, 0, 0.4, -0.6, 0.1]],
  ];
  for (const [name, dim, row] of cases) {
    for (const tau of [1, 0.5]) {
      it(`${name}, temperature ${tau}: mean and covariance of ${N} draws match the predicted mixture`, () => {
        const K = row.length / (1 + 2 * dim + (dim === 2 ? 1 : 0));
        const size = mixtureOutputSize(dim, K);
        expect(size).toBe(row.length);
        const raw = new Float64Array(N * size);
        for (let r = 0; r < N; r++) raw.set(row, r * size);
        const x = sampleMixture(raw, dim, K, new Rng(42), tau);
        expect(x.length).toBe(N * dim);
        expectMoments(x, dim, predictedMoments(decode(Float64Array.from(row), 0, dim, K), dim, tau));
      });
    }
  }

  it('the diagonal Gaussian head samples its mean and variance', () => {
    const row = [1, -2, 0.5, -0.5];
    const raw = new Float64Array(N * 4);
    for (let r = 0; r < N; r++) raw.set(row, r * 4);
    const x = sampleGaussian(raw, 2, new Rng(3), 2);
    const e1 = Math.exp(1);
    const e2 = Math.exp(-1);
    expectMoments(x, 2, { mean: Float64Array.from([1, -2]), cov: Float64Array.from([2 * e1, 0, 0, 2 * e2]) });
  });

  it('logits 2000 apart always pick the dominant component, at any temperature', () => {
    // D = 1, K = 2: component 0 at 5 (σ e^−3), component 1 at −5.
    const raw = Float64Array.from([1000, -1000, 5, -5, -3, -3]);
    for (const tau of [1, 0.5, 2]) {
      const rng = new Rng(4);
      for (let i = 0; i < 100; i++) expect(Math.abs(sampleMixture(raw, 1, 2, rng, tau)[0] - 5)).toBeLessThan(1);
    }
  });

  it('is reproducible from the seed', () => {
    const raw = Float64Array.from([0.5, -0.3, 0, 1, 2, 3, 0, 0, -1, -1, 0.4, -0.4]);
    expect(Array.from(sampleMixture(raw, 2, 2, new Rng(9)))).toEqual(Array.from(sampleMixture(raw, 2, 2, new Rng(9))));
  });
});

describe('errors', () => {
  const raw = new Float64Array(mixtureOutputSize(2, 2) * 3);
  const y = new Float64Array(6);

  it('wrong sizes are a ShapeError', () => {
    expect(() => mixtureNll(raw.subarray(1), y, 3, 2, 2)).toThrow(ShapeError);
    expect(() => mixtureNll(raw, y.subarray(1), 3, 2, 2)).toThrow(ShapeError);
    expect(() => mixtureNll(raw, y, 2, 2, 2)).toThrow(ShapeError);
    expect(() => mixtureNll(raw, y, 1.5, 2, 2)).toThrow(ShapeError);
    expect(() => gaussianNll(new Float64Array(7), new Float64Array(2), 1, 2)).toThrow(ShapeError);
    expect(() => sampleMixture(raw.subarray(1), 2, 2, new Rng(1))).toThrow(ShapeError);
    expect(() => sampleGaussian(new Float64Array(5), 2, new Rng(1))).toThrow(ShapeError);
    expect(() => mixtureNll(raw, y, 3, 2, 2)).not.toThrow();
  });

  it('K = 0, dim = 0 and a non-positive temperature are a ConfigError', () => {
    expect(() => mixtureNll(new Float64Array(0), new Float64Array(0), 0, 2, 0)).toThrow(ConfigError);
    expect(() => mixtureOutputSize(2, 0)).toThrow(/components \(K\) must be a positive integer, got 0/);
    expect(() => mixtureOutputSize(0, 2)).toThrow(ConfigError);
    expect(() => gaussianOutputSize(0)).toThrow(ConfigError);
    expect(() => sampleMixture(raw, 2, 2, new Rng(1), 0)).toThrow(ConfigError);
    expect(() => sampleGaussian(new Float64Array(4), 2, new Rng(1), Number.NaN)).toThrow(ConfigError);
  });
});
