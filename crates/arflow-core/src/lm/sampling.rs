//! Drawing the next character from logits in Rust, bit for bit as the TypeScript sampler does it
//! (`sampleLogits` in `src/sample/sampling.ts` with the `Rng` of `src/util/rng.ts`), so that a
//! sampling loop run here gives the same text for a seed as the loop in JS.
//!
//! What "the same" takes: JS numbers are f64, so every step below is the f64 operation the JS
//! source names, in the same order (sums left to right, no fused multiply-add; Rust never contracts
//! `a * b + c`); `Math.exp` is V8's own `ieee754::exp` (fdlibm's `e_exp.c`, ported in [`v8_exp`]),
//! which differs from glibc's `exp` in the last bit for some inputs; V8's `Array.prototype.sort` is
//! stable, and the comparator `p[b] − p[a]` orders by probability, descending, ties by index — a
//! total order on finite values, which any stable sort on the same comparator reproduces.

use candle_core::{bail, Result};
use std::cmp::Ordering;

/// sfc32 as `Rng` in `src/util/rng.ts` runs it: the generator state `(a, b, c, d)` handed over from
/// JS ([`Sfc32::from_state`]), or seeded here as the TS constructor seeds it ([`Sfc32::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sfc32 {
    a: u32,
    b: u32,
    c: u32,
    d: u32,
}

impl Sfc32 {
    /// `new Rng(seed)` for a seed already reduced to 32 bits (`seed >>> 0`): SplitMix32 fills the
    /// state, then 12 outputs are discarded.
    pub fn new(seed: u32) -> Self {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9e37_79b9);
            let mut z = s;
            z = (z ^ (z >> 16)).wrapping_mul(0x85eb_ca6b);
            z = (z ^ (z >> 13)).wrapping_mul(0xc2b2_ae35);
            z ^ (z >> 16)
        };
        let (a, b, c, d) = (next(), next(), next(), next());
        let mut r = Sfc32 { a, b, c, d };
        for _ in 0..12 {
            r.next_u32();
        }
        r
    }

    /// The generator whose state `Rng.state()` returned: `[a, b, c, d]`.
    pub fn from_state(s: [u32; 4]) -> Self {
        Sfc32 { a: s[0], b: s[1], c: s[2], d: s[3] }
    }

    pub fn state(&self) -> [u32; 4] {
        [self.a, self.b, self.c, self.d]
    }

    /// `Rng.u32()`.
    pub fn next_u32(&mut self) -> u32 {
        let t = self.a.wrapping_add(self.b).wrapping_add(self.d);
        self.d = self.d.wrapping_add(1);
        self.a = self.b ^ (self.b >> 9);
        self.b = self.c.wrapping_add(self.c << 3);
        self.c = self.c.rotate_left(21).wrapping_add(t);
        t
    }

    /// `Rng.uniform()`: u32 / 2³², exact in f64.
    pub fn uniform(&mut self) -> f64 {
        self.next_u32() as f64 / 4_294_967_296.0
    }
}

/// Temperature, top-k and top-p, as `validateSampling` returns them (see `SamplingOptions`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0: greedy (argmax).
    pub temperature: f64,
    /// 0: off. Values ≥ the vocabulary size are off too, as in JS.
    pub top_k: usize,
    /// 1: off.
    pub top_p: f64,
}

impl Sampling {
    pub fn new(temperature: f64, top_k: usize, top_p: f64) -> Result<Self> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            bail!("config: temperature must be a finite number ≥ 0 (0 = greedy), got {temperature}");
        }
        if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
            bail!("config: topP must be in (0, 1], got {top_p}");
        }
        Ok(Sampling { temperature, top_k, top_p })
    }
}

/// Reusable buffers of [`sample_logits`] (one sampling loop allocates them once).
#[derive(Default)]
pub struct SampleScratch {
    p: Vec<f64>,
    order: Vec<u32>,
}

/// `sampleLogits(logits, opts, rng)`: one index drawn from one row of logits.
pub fn sample_logits(logits: &[f32], opts: &Sampling, rng: &mut Sfc32, scratch: &mut SampleScratch) -> usize {
    let v = logits.len();
    let mut best = 0;
    for i in 1..v {
        if logits[i] > logits[best] {
            best = i;
        }
    }
    if opts.temperature == 0.0 {
        return best;
    }
    let p = &mut scratch.p;
    p.clear();
    let max = logits[best] as f64;
    p.extend(logits.iter().map(|&l| v8_exp((l as f64 - max) / opts.temperature)));
    let sort = opts.top_k > 0 && opts.top_k < v || opts.top_p < 1.0;
    let order = &mut scratch.order;
    if sort {
        order.clear();
        order.extend(0..v as u32);
        // Stable, by p descending: `(a, b) => p[b] − p[a]`, NaN read as "equal" (the spec's SortCompare).
        order.sort_by(|&a, &b| p[b as usize].partial_cmp(&p[a as usize]).unwrap_or(Ordering::Equal));
    }
    if opts.top_k > 0 && opts.top_k < v {
        for &i in &order[opts.top_k..] {
            p[i as usize] = 0.0;
        }
    }
    if opts.top_p < 1.0 {
        let total = sum(p);
        let mut kept = 0.0;
        for &i in order.iter() {
            let i = i as usize;
            if kept >= opts.top_p * total {
                p[i] = 0.0;
            } else {
                kept += p[i];
            }
        }
    }
    let total = sum(p);
    let mut u = rng.uniform() * total;
    for (i, &pi) in p.iter().enumerate() {
        u -= pi;
        if u < 0.0 && pi > 0.0 {
            return i;
        }
    }
    best
}

/// Left to right, as the JS loop adds.
fn sum(p: &[f64]) -> f64 {
    let mut total = 0.0;
    for &x in p {
        total += x;
    }
    total
}

/// `Math.exp` as V8 computes it: `v8::base::ieee754::exp`, V8's port of fdlibm's `__ieee754_exp`
/// (with its special case for `exp(1)`), bit for bit. The notice fdlibm asks to keep:
///
/// > Copyright (C) 2004 by Sun Microsystems, Inc. All rights reserved.
/// > Permission to use, copy, modify, and distribute this software is freely granted, provided that
/// > this notice is preserved.
///
/// Method: reduce x = k·ln2 + r with |r| ≤ 0.5·ln2, approximate exp(r) by a rational function of
/// degree 5 in r², scale by 2^k.
#[allow(clippy::excessive_precision)]
pub fn v8_exp(x: f64) -> f64 {
    const HALF: [f64; 2] = [0.5, -0.5];
    const O_THRESHOLD: f64 = 7.09782712893383973096e+02;
    const U_THRESHOLD: f64 = -7.45133219101941108420e+02;
    const LN2_HI: [f64; 2] = [6.93147180369123816490e-01, -6.93147180369123816490e-01];
    const LN2_LO: [f64; 2] = [1.90821492927058770002e-10, -1.90821492927058770002e-10];
    const INV_LN2: f64 = std::f64::consts::LOG2_E; // fdlibm's invln2, 0x3ff71547_652b82fe
    const P1: f64 = 1.66666666666666019037e-01;
    const P2: f64 = -2.77777777770155933842e-03;
    const P3: f64 = 6.61375632143793436117e-05;
    const P4: f64 = -1.65339022054652515390e-06;
    const P5: f64 = 4.13813679705723846039e-08;
    const E: f64 = std::f64::consts::E; // V8's E, 0x4005bf0a_8b145769
    const HUGE: f64 = 1.0e+300;
    const TWOM1000: f64 = 9.33263618503218878990e-302;
    const TWO1023: f64 = 8.988465674311579539e307;

    let bits = x.to_bits();
    let mut hx = (bits >> 32) as u32;
    let xsb = (hx >> 31) as usize;
    hx &= 0x7fff_ffff;

    // Non-finite and out-of-range arguments.
    if hx >= 0x4086_2E42 {
        if hx >= 0x7ff0_0000 {
            let lx = bits as u32;
            if ((hx & 0xf_ffff) | lx) != 0 {
                return x + x; // NaN
            }
            return if xsb == 0 { x } else { 0.0 }; // exp(±inf) = {inf, 0}
        }
        if x > O_THRESHOLD {
            return f64::INFINITY;
        }
        if x < U_THRESHOLD {
            return TWOM1000 * TWOM1000;
        }
    }

    // Argument reduction.
    let mut x = x;
    let (mut hi, mut lo, mut k) = (0.0, 0.0, 0i32);
    if hx > 0x3fd6_2e42 {
        // |x| > 0.5 ln2
        if hx < 0x3FF0_A2B2 {
            // and |x| < 1.5 ln2
            if x == 1.0 {
                return E;
            }
            hi = x - LN2_HI[xsb];
            lo = LN2_LO[xsb];
            k = 1 - xsb as i32 - xsb as i32;
        } else {
            // C's `static_cast<int>`: truncation toward zero (|value| < 1100 here).
            k = (INV_LN2 * x + HALF[xsb]) as i32;
            let t = k as f64;
            hi = x - t * LN2_HI[0]; // t·ln2HI is exact here
            lo = t * LN2_LO[0];
        }
        x = hi - lo;
    } else if hx < 0x3e30_0000 {
        // |x| < 2⁻²⁸
        if HUGE + x > 1.0 {
            return 1.0 + x;
        }
    } else {
        k = 0;
    }

    // x is now in the primary range.
    let t = x * x;
    let twopk = if k >= -1021 {
        f64::from_bits(((0x3ff0_0000u32.wrapping_add((k as u32) << 20)) as u64) << 32)
    } else {
        f64::from_bits(((0x3ff0_0000u32.wrapping_add(((k + 1000) as u32) << 20)) as u64) << 32)
    };
    let c = x - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
    if k == 0 {
        return 1.0 - ((x * c) / (c - 2.0) - x);
    }
    let y = 1.0 - ((lo - (x * c) / (2.0 - c)) - hi);
    if k >= -1021 {
        if k == 1024 {
            return y * 2.0 * TWO1023;
        }
        return y * twopk;
    }
    y * twopk * TWOM1000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `new Rng(seed)` then `u32()` ×3 and `uniform()`, printed by Node 20 from `src/util/rng.ts`.
    #[test]
    fn sfc32_matches_the_ts_rng() {
        let mut r = Sfc32::new(0);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], RNG_SEED0);
        let mut r = Sfc32::new(12345);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], RNG_SEED12345);
        let s = Sfc32::new(7);
        let mut copy = Sfc32::from_state(s.state());
        let mut orig = s;
        assert_eq!(copy.next_u32(), orig.next_u32());
    }

    const RNG_SEED0: [u32; 3] = [4_205_396_811, 3_543_653_536, 1_222_415_357];
    const RNG_SEED12345: [u32; 3] = [2_345_461_488, 1_344_865_159, 2_974_739_204];

    #[test]
    fn v8_exp_special_values() {
        // The std constants standing in for fdlibm's literals have its bits.
        assert_eq!(std::f64::consts::LOG2_E.to_bits(), 0x3ff7_1547_652b_82fe);
        assert_eq!(std::f64::consts::E.to_bits(), 0x4005_bf0a_8b14_5769);
        assert_eq!(v8_exp(0.0), 1.0);
        assert_eq!(v8_exp(1.0), std::f64::consts::E);
        assert_eq!(v8_exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(v8_exp(f64::INFINITY), f64::INFINITY);
        assert!(v8_exp(f64::NAN).is_nan());
        assert_eq!(v8_exp(-800.0), 0.0);
        assert_eq!(v8_exp(710.0), f64::INFINITY);
        // Subnormal results (k < −1021) and the k = 1024 edge.
        assert!(v8_exp(-740.0) > 0.0 && v8_exp(-740.0) < f64::MIN_POSITIVE);
        assert!(v8_exp(709.7).is_finite());
        // Within an ulp of libm wherever the result is a normal number.
        for i in -19_000..19_000 {
            let x = i as f64 * 0.0371;
            let (a, b) = (v8_exp(x), x.exp());
            assert!((a - b).abs() <= 2.0 * f64::EPSILON * b, "exp({x}): {a} vs {b}");
        }
    }
}
