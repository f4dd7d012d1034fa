import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/errors.js';
import {
  coinFlips,
  type ScheduledSamplingOptions,
  teacherForcingProb,
  validateScheduledSampling,
} from '../src/train/scheduled-sampling.js';
import { Rng } from '../src/util/rng.js';
import { thrown } from './helpers/thrown.js';

const eps = (step: number, o: ScheduledSamplingOptions) => teacherForcingProb(step, validateScheduledSampling(o));

describe('validateScheduledSampling', () => {
  it('fills in the documented defaults: teacher forcing, inverse sigmoid with k = 190', () => {
    expect(validateScheduledSampling({})).toEqual({
      feed: 'teacher',
      schedule: 'inverse-sigmoid',
      k: 190,
      c: 5e-4,
      min: 0,
    });
    expect(validateScheduledSampling({ schedule: 'exponential' }).k).toBe(0.9993);
    expect(validateScheduledSampling({ schedule: 'linear' }).k).toBe(1);
  });

  it('default k and c of every schedule put ε = 1/2 near step 1000', () => {
    for (const schedule of ['linear', 'exponential', 'inverse-sigmoid'] as const) {
      const o = { feed: 'scheduled', schedule } as const;
      expect(eps(900, o), schedule).toBeGreaterThan(0.5);
      expect(eps(1100, o), schedule).toBeLessThan(0.5);
    }
    expect(eps(1000, { feed: 'scheduled', schedule: 'linear' })).toBeCloseTo(0.5, 12);
  });

  it.each([
    [{ schedule: 'exponential', k: 1 }, /exponential.*\(0, 1\).*got 1/],
    [{ schedule: 'exponential', k: 1.2 }, /exponential.*got 1\.2/],
    [{ schedule: 'exponential', k: 0 }, /exponential.*got 0/],
    [{ schedule: 'exponential', k: -0.5 }, /exponential.*got -0\.5/],
    [{ schedule: 'inverse-sigmoid', k: 0.5 }, /inverse-sigmoid.*≥ 1, got 0\.5/],
    [{ schedule: 'linear', c: -1e-3 }, /c of the linear schedule.*≥ 0.*got -0\.001/],
    [{ min: -0.1 }, /min must be in \[0, 1\], got -0\.1/],
    [{ min: 1.1 }, /min must be in \[0, 1\], got 1\.1/],
    [{ min: Number.NaN }, /min must be in \[0, 1\], got NaN/],
    [{ schedule: 'linear', k: Number.NaN }, /k must be a finite number, got NaN/],
    [{ schedule: 'inverse-sigmoid', k: Number.POSITIVE_INFINITY }, /k must be a finite number, got Infinity/],
    [{ schedule: 'linear', c: Number.POSITIVE_INFINITY }, /c must be a finite number, got Infinity/],
    [{ feed: 'teachr' }, /feed must be one of teacher, free, scheduled, got "teachr"/],
    [{ schedule: 'sigmoid' }, /schedule must be one of linear, exponential, inverse-sigmoid, got "sigmoid"/],
  ])('rejects %j with a ConfigError saying what is valid', (opts, message) => {
    const err = thrown(() => validateScheduledSampling(opts as ScheduledSamplingOptions));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toMatch(message);
  });

  it('accepts the edges of the ranges: min 0 and 1, linear c = 0, inverse sigmoid k = 1', () => {
    expect(() => validateScheduledSampling({ min: 0 })).not.toThrow();
    expect(() => validateScheduledSampling({ min: 1 })).not.toThrow();
    expect(() => validateScheduledSampling({ schedule: 'linear', c: 0 })).not.toThrow();
    expect(() => validateScheduledSampling({ schedule: 'inverse-sigmoid', k: 1 })).not.toThrow();
  });
});

describe('teacherForcingProb', () => {
  it('is 1 under teacher forcing and 0 when free running, whatever the schedule and floor', () => {
    for (const step of [0, 10, 1e6]) {
      expect(eps(step, { feed: 'teacher', schedule: 'linear', min: 0.3 })).toBe(1);
      expect(eps(step, { feed: 'free', schedule: 'exponential', min: 0.3 })).toBe(0);
    }
  });

  it('linear: max(min, k − c·i), clamped to [0, 1] (values by hand)', () => {
    const o = { feed: 'scheduled', schedule: 'linear', k: 1, c: 1e-3 } as const;
    expect(eps(0, o)).toBe(1);
    expect(eps(250, o)).toBeCloseTo(0.75, 14);
    expect(eps(1000, o)).toBeCloseTo(0, 14);
    expect(eps(2000, o)).toBe(0); // 1 − 2 = −1, clamped
    expect(eps(950, { ...o, min: 0.1 })).toBe(0.1); // 0.05 under the floor
    expect(eps(600, { ...o, k: 1.5 })).toBeCloseTo(0.9, 14);
    expect(eps(0, { ...o, k: 1.5 })).toBe(1); // 1.5, clamped
  });

  it('exponential: max(min, k^i) (values by hand)', () => {
    const o = { feed: 'scheduled', schedule: 'exponential', k: 0.99 } as const;
    expect(eps(0, o)).toBe(1);
    expect(eps(100, o)).toBeCloseTo(0.3660323412732292, 14);
    expect(eps(100, { ...o, min: 0.5 })).toBe(0.5);
    expect(eps(990, { feed: 'scheduled', schedule: 'exponential' })).toBeCloseTo(0.49995226093439027, 12);
  });

  it('inverse sigmoid: max(min, k / (k + exp(i/k))) (values by hand)', () => {
    const o = { feed: 'scheduled', schedule: 'inverse-sigmoid', k: 10 } as const;
    expect(eps(0, o)).toBeCloseTo(10 / 11, 14);
    expect(eps(10, o)).toBeCloseTo(0.7862697284804238, 14);
    expect(eps(23.02585092994046, o)).toBeCloseTo(0.5, 12); // i = k ln k
    expect(eps(20, { ...o, k: 5 })).toBeCloseTo(0.08389522153320794, 14);
    expect(eps(20, { ...o, k: 5, min: 0.2 })).toBe(0.2);
    expect(eps(1e6, o)).toBe(0); // exp overflows to Infinity: the limit, not NaN
  });

  it('is non-increasing in the step and stays in [0, 1] for every schedule', () => {
    const sets: ScheduledSamplingOptions[] = [
      { schedule: 'linear' },
      { schedule: 'linear', k: 1.3, c: 2e-3, min: 0.05 },
      { schedule: 'exponential' },
      { schedule: 'exponential', k: 0.9, min: 0.2 },
      { schedule: 'inverse-sigmoid' },
      { schedule: 'inverse-sigmoid', k: 1 },
      { schedule: 'inverse-sigmoid', k: 50, min: 0.1 },
    ];
    for (const s of sets) {
      const o = validateScheduledSampling({ feed: 'scheduled', ...s });
      let prev = teacherForcingProb(0, o);
      for (let i = 1; i <= 5000; i++) {
        const e = teacherForcingProb(i, o);
        expect(e, `${JSON.stringify(s)} at ${i}`).toBeLessThanOrEqual(prev);
        expect(e).toBeGreaterThanOrEqual(0);
        expect(e).toBeLessThanOrEqual(1);
        prev = e;
      }
      expect(prev, JSON.stringify(s)).toBeLessThan(teacherForcingProb(0, o)); // and it does decay
    }
  });

  it('rejects a negative or non-finite step', () => {
    const o = validateScheduledSampling({ feed: 'scheduled' });
    expect(() => teacherForcingProb(-1, o)).toThrow(ConfigError);
    expect(() => teacherForcingProb(Number.NaN, o)).toThrow(/step must be a finite number ≥ 0, got NaN/);
  });
});

describe('coinFlips', () => {
  const mean = (a: Uint8Array) => a.reduce((s, x) => s + x, 0) / a.length;

  it('averages ε over many draws (within 4 standard deviations)', () => {
    const n = 100_000;
    for (const e of [0.05, 0.3, 0.5, 0.9]) {
      const m = mean(coinFlips(e, n, new Rng(17)));
      expect(Math.abs(m - e), `ε = ${e}, mean ${m}`).toBeLessThan(4 * Math.sqrt((e * (1 - e)) / n));
    }
  });

  it('is all ones at ε = 1 and all zeros at ε = 0', () => {
    expect(coinFlips(1, 10_000, new Rng(3)).every((x) => x === 1)).toBe(true);
    expect(coinFlips(0, 10_000, new Rng(3)).every((x) => x === 0)).toBe(true);
    expect(coinFlips(0.5, 0, new Rng(3))).toHaveLength(0);
  });

  it('is reproducible for a seed and differs between seeds', () => {
    const a = coinFlips(0.5, 1000, new Rng(42));
    expect(coinFlips(0.5, 1000, new Rng(42))).toEqual(a);
    expect(coinFlips(0.5, 1000, new Rng(43))).not.toEqual(a);
  });

  it('draws exactly one uniform per token whatever ε, so the stream after it does not shift', () => {
    const after = (e: number) => {
      const rng = new Rng(9);
      coinFlips(e, 257, rng);
      return rng.u32();
    };
    const reference = new Rng(9);
    for (let i = 0; i < 257; i++) reference.uniform();
    const want = reference.u32();
    for (const e of [0, 0.3, 1]) expect(after(e), `ε = ${e}`).toBe(want);
  });

  it('raising ε with the same seed only turns zeros into ones (one uniform per token, u < ε)', () => {
    const low = coinFlips(0.3, 5000, new Rng(5));
    const high = coinFlips(0.7, 5000, new Rng(5));
    for (let i = 0; i < low.length; i++) expect(low[i] <= high[i]).toBe(true);
    expect(mean(high)).toBeGreaterThan(mean(low));
  });

  it('rejects ε outside [0, 1] and a bad count', () => {
    expect(() => coinFlips(1.5, 3, new Rng(0))).toThrow(/eps must be a probability in \[0, 1\], got 1\.5/);
    expect(() => coinFlips(Number.NaN, 3, new Rng(0))).toThrow(ConfigError);
    expect(() => coinFlips(0.5, -1, new Rng(0))).toThrow(/n must be a whole number ≥ 0, got -1/);
    expect(() => coinFlips(0.5, 2.5, new Rng(0))).toThrow(ConfigError);
  });
});
