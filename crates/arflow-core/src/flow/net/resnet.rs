//! A coupling's whole ResNet conditioner as one candle op, for f32 training on AVX-512 or AVX2 CPUs:
//! its input convolution, residual blocks `h += conv(relu(conv(relu(h))))` and output convolution
//! `conv(relu(h))`, run by the direct kernels of [`crate::flow::conv_direct`] on padded channels-last
//! buffers of its own.
//!
//! Built from per-convolution candle ops, each hidden activation (`[N, H, W, width]`, 6.4 MB at
//! 28 × 28 × 32, batch 64) is a tensor of the autograd graph: candle's backward then zero-fills a
//! gradient buffer for it and adds each contribution in a separate pass, the residual sum is one more
//! pass, and the ReLU inputs are padded again for every weight gradient. Here none of them reaches
//! the graph: the op's inputs are the small channels-last input `[N, H, W, Cin]` and every convolution's
//! weight matrix and bias packed flat (see [`ResnetOp::layout`]); its output is the flattened
//! `[N, Cout·H·W]` (channel-major, what the coupling reads); the residual sum is added in the
//! convolution's store; the padded ReLU inputs the forward made are kept for the backward.
//!
//! The weight normalisation stays in candle (a graph over the small weight tensors), so the op's
//! weight gradient flows on to `weight_v`, `weight_g` and the biases. The ReLU's gradient passes where
//! its input is positive (PyTorch's rule; candle's passes at 0 too, which only differs at exact zeros).

use crate::alloc::SizedPool;
use crate::flow::conv_direct::{self, Weights};
use crate::real::Real;
use crate::rnn::common::avx2_dispatch;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// The op's buffers, kept from one step to the next: a training step needs the same multi-megabyte
/// buffers every time, and fresh ones cost page faults and clearing (a tenth of a Real NVP step).
static POOL: SizedPool = SizedPool::new();

/// The padded ReLU inputs of a forward pass, for its backward.
struct Saved {
    /// The padded input of the input convolution.
    input: Vec<f32>,
    /// Per block: the padded `relu(h)` and `relu(r)` its two convolutions read.
    blocks: Vec<[Vec<f32>; 2]>,
    /// The padded `relu(h)` of the output convolution.
    last: Vec<f32>,
}

impl Saved {
    fn give_back(self) {
        POOL.give(self.input);
        POOL.give(self.last);
        for [a, b] in self.blocks {
            POOL.give(a);
            POOL.give(b);
        }
    }
}

/// `[N, H, W, Cin]` ↦ `[N, Cout·H·W]`, the conditioner of the module comment.
pub struct ResnetOp {
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    width: usize,
    blocks: usize,
    cout: usize,
    /// Whether to keep what the backward needs (training passes); evaluation passes keep nothing.
    save: bool,
    saved: Mutex<Option<Saved>>,
}

impl ResnetOp {
    pub fn new([n, h, w]: [usize; 3], cin: usize, width: usize, blocks: usize, cout: usize, save: bool) -> Self {
        ResnetOp { n, h, w, cin, width, blocks, cout, save, saved: Mutex::new(None) }
    }

    /// `(Cin, Cout)` of each convolution in order: input, the blocks' two each, output. In the flat
    /// weight tensor, convolution j is `[9·Cin_j + 1, Cout_j]`: row `tap·Cin_j + i` holds
    /// W[·, i, kh, kw] (tap = kh·3 + kw), the last row the bias.
    pub fn layout(cin: usize, width: usize, blocks: usize, cout: usize) -> Vec<(usize, usize)> {
        let mut convs = vec![(cin, width)];
        convs.extend(std::iter::repeat_n((width, width), 2 * blocks));
        convs.push((width, cout));
        convs
    }

    fn convs(&self) -> Vec<(usize, usize)> {
        Self::layout(self.cin, self.width, self.blocks, self.cout)
    }

    /// Each convolution's slice of the flat weights.
    fn split<'a>(&self, flat: &'a [f32]) -> Vec<&'a [f32]> {
        let mut at = 0;
        self.convs()
            .into_iter()
            .map(|(ci, co)| {
                let s = &flat[at..at + (9 * ci + 1) * co];
                at += s.len();
                s
            })
            .collect()
    }

    fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }

    /// `x [N, H, W, c]` padded (see [`conv_direct::pad`]), in a pooled buffer.
    fn padded(&self, x: &[f32], c: usize, relu: bool) -> Vec<f32> {
        let mut p = POOL.take_empty(self.n * (self.h + 2) * (self.w + 2) * c);
        conv_direct::pad(x, [self.n, self.h, self.w, c], relu, &mut p);
        p
    }

    /// A pooled `[pixels, c]` buffer holding the convolution of `xp` by `wts`.
    fn conv(&self, xp: &[f32], wts: &Weights, c: usize) -> Vec<f32> {
        let len = self.pixels() * c;
        let mut out = POOL.take_empty(len);
        conv_direct::forward(xp, [self.n, self.h, self.w], wts, &mut out.spare_capacity_mut()[..len]);
        // SAFETY: `forward` initialised all `len` entries.
        unsafe { out.set_len(len) };
        out
    }

    fn forward(&self, x: &[f32], flat: &[f32]) -> Result<Vec<f32>> {
        let (convs, parts) = (self.convs(), self.split(flat));
        let weights = |j: usize| {
            Weights::new(
                &parts[j][..9 * convs[j].0 * convs[j].1],
                Some(&parts[j][9 * convs[j].0 * convs[j].1..]),
                convs[j].0,
                convs[j].1,
            )
        };
        let f = self.width;
        let input = self.padded(x, self.cin, false);
        let mut h = self.conv(&input, &weights(0), f);
        let mut blocks = Vec::with_capacity(self.blocks);
        for b in 0..self.blocks {
            let p1 = self.padded(&h, f, true);
            let r = self.conv(&p1, &weights(1 + 2 * b), f);
            let p2 = self.padded(&r, f, true);
            POOL.give(r);
            conv_direct::forward_add(&p2, [self.n, self.h, self.w], &weights(2 + 2 * b), &mut h);
            blocks.push([p1, p2]);
        }
        let last = self.padded(&h, f, true);
        POOL.give(h);
        let out = self.conv(&last, &weights(convs.len() - 1), self.cout);
        let saved = Saved { input, blocks, last };
        if self.save {
            *self.saved.lock().expect("resnet op poisoned") = Some(saved);
        } else {
            saved.give_back();
        }
        let y = to_channel_major(&out, self.n, self.h * self.w, self.cout);
        POOL.give(out);
        Ok(y)
    }

    /// `(dx [N, H, W, Cin], dflat)` from the output gradient `[N, Cout·H·W]`.
    fn backward(&self, flat: &[f32], grad: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let Some(saved) = self.saved.lock().expect("resnet op poisoned").take() else {
            bail!(
                "resnet conditioner: no saved activations for the backward (an evaluation pass, or a second backward)"
            )
        };
        let (convs, parts) = (self.convs(), self.split(flat));
        let turned = |j: usize| Weights::turned(&parts[j][..9 * convs[j].0 * convs[j].1], convs[j].0, convs[j].1);
        let dims = [self.n, self.h, self.w];
        let mut dflat = vec![0.0f32; flat.len()];
        let mut offsets = Vec::with_capacity(convs.len());
        let mut at = 0;
        for &(ci, co) in &convs {
            offsets.push(at);
            at += (9 * ci + 1) * co;
        }
        let mut put = |j: usize, (dw, db): (Vec<f32>, Vec<f32>)| {
            let d = &mut dflat[offsets[j]..];
            d[..dw.len()].copy_from_slice(&dw);
            d[dw.len()..dw.len() + db.len()].copy_from_slice(&db);
        };
        let [n, h, w] = dims;
        let f = self.width;
        let last_j = convs.len() - 1;
        // Output convolution: its input was relu(h).
        let g = to_channel_last(grad, n, h * w, self.cout);
        put(last_j, conv_direct::weight_grad(&saved.last, &g, [n, h, w, f, self.cout]));
        let mut dh = self.conv_back(&g, self.cout, &turned(last_j), f);
        relu_mask(&mut dh, &saved.last, dims, f);
        POOL.give(g);
        // Blocks, last first: h_out = h_in + conv2(relu(conv1(relu(h_in)))).
        for b in (0..self.blocks).rev() {
            let [p1, p2] = &saved.blocks[b];
            let (j1, j2) = (1 + 2 * b, 2 + 2 * b);
            put(j2, conv_direct::weight_grad(p2, &dh, [n, h, w, f, f]));
            let mut dr = self.conv_back(&dh, f, &turned(j2), f);
            relu_mask(&mut dr, p2, dims, f);
            put(j1, conv_direct::weight_grad(p1, &dr, [n, h, w, f, f]));
            let branch = self.conv_back(&dr, f, &turned(j1), f);
            POOL.give(dr);
            relu_mask_add(&mut dh, &branch, p1, dims, f);
            POOL.give(branch);
        }
        put(0, conv_direct::weight_grad(&saved.input, &dh, [n, h, w, self.cin, f]));
        // dx goes to candle, which frees it: a buffer of its own, not the pool's.
        let gp = self.padded(&dh, f, false);
        POOL.give(dh);
        let len = self.pixels() * self.cin;
        let mut dx = Vec::with_capacity(len);
        conv_direct::forward(&gp, dims, &turned(0), &mut dx.spare_capacity_mut()[..len]);
        // SAFETY: `forward` initialised all `len` entries.
        unsafe { dx.set_len(len) };
        POOL.give(gp);
        saved.give_back();
        Ok((dx, dflat))
    }

    /// The convolution of the padded `g [N, H, W, c]` by the turned `wts` (dL/d input), pooled.
    fn conv_back(&self, g: &[f32], c: usize, wts: &Weights, out_c: usize) -> Vec<f32> {
        let gp = self.padded(g, c, false);
        let out = self.conv(&gp, wts, out_c);
        POOL.give(gp);
        out
    }
}

/// Zeroes `d [N, H, W, C]` where the padded ReLU output `p [N, H + 2, W + 2, C]` is not positive.
fn relu_mask(d: &mut [f32], p: &[f32], dims: [usize; 3], c: usize) {
    by_rows(d, None, p, dims, c);
}

/// `d += b` where the padded ReLU output `p` is positive (`d`, `b` `[N, H, W, C]`): a branch's gradient
/// through its ReLU, added to the residual path's in the same pass.
fn relu_mask_add(d: &mut [f32], b: &[f32], p: &[f32], dims: [usize; 3], c: usize) {
    by_rows(d, Some(b), p, dims, c);
}

/// [`relu_mask`] (without `b`) or [`relu_mask_add`], image by image in parallel, row by row.
fn by_rows(d: &mut [f32], b: Option<&[f32]>, p: &[f32], [n, h, w]: [usize; 3], c: usize) {
    let (row, prow) = (w * c, (w + 2) * c);
    if row == 0 || n == 0 {
        return;
    }
    d.par_chunks_mut(h * row).enumerate().for_each(|(img, d)| {
        let p = &p[img * (h + 2) * prow..];
        for (y, d) in d.chunks_exact_mut(row).enumerate() {
            let p = &p[(y + 1) * prow + c..][..row];
            match b {
                Some(b) => add_where_positive(d, &b[(img * h + y) * row..][..row], p),
                None => zero_where_not_positive(d, p),
            }
        }
    });
}

#[inline(always)]
fn zero_where_not_positive_imp<T: Real>(d: &mut [T], p: &[T]) {
    for (d, &p) in d.iter_mut().zip(p) {
        *d = if p > T::zero() { *d } else { T::zero() };
    }
}

#[inline(always)]
fn add_where_positive_imp<T: Real>(d: &mut [T], b: &[T], p: &[T]) {
    for ((d, &b), &p) in d.iter_mut().zip(b).zip(p) {
        *d = *d + if p > T::zero() { b } else { T::zero() };
    }
}

// Selects the compiler vectorises, compiled for AVX2 where the CPU has it (the build targets SSE2).
avx2_dispatch! {
    fn zero_where_not_positive(d: &mut [T], p: &[T]) => zero_where_not_positive_imp;
    fn add_where_positive(d: &mut [T], b: &[T], p: &[T]) => add_where_positive_imp;
}

/// `[N, P, C]` ↦ `[N, C, P]`.
fn to_channel_major(x: &[f32], n: usize, p: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    if p * c == 0 {
        return out;
    }
    out.par_chunks_mut(p * c).zip(x.par_chunks(p * c)).take(n).for_each(|(o, x)| {
        for (q, px) in x.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                o[ch * p + q] = v;
            }
        }
    });
    out
}

/// `[N, C, P]` ↦ `[N, P, C]`, pooled.
fn to_channel_last(x: &[f32], n: usize, p: usize, c: usize) -> Vec<f32> {
    let mut out = POOL.take_empty(x.len());
    out.resize(x.len(), 0.0);
    if p * c == 0 {
        return out;
    }
    out.par_chunks_mut(p * c).zip(x.par_chunks(p * c)).take(n).for_each(|(o, x)| {
        for (ch, plane) in x.chunks_exact(p).enumerate() {
            for (q, &v) in plane.iter().enumerate() {
                o[q * c + ch] = v;
            }
        }
    });
    out
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        (CpuStorage::F32(_), None) => bail!("resnet conditioner: {what} must be contiguous"),
        _ => bail!("resnet conditioner: {what} must be f32"),
    }
}

impl CustomOp2 for ResnetOp {
    fn name(&self) -> &'static str {
        "arflow-resnet-conditioner"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, flat) = (f32_slice(s1, l1, "input")?, f32_slice(s2, l2, "weights")?);
        let want: usize = self.convs().iter().map(|&(ci, co)| (9 * ci + 1) * co).sum();
        if x.len() != self.pixels() * self.cin || flat.len() != want {
            bail!(
                "resnet conditioner: got {} input and {} weight values, expected {} and {want}",
                x.len(),
                flat.len(),
                self.pixels() * self.cin
            );
        }
        if !conv_direct::available() {
            bail!("resnet conditioner: the fused op needs AVX-512F or AVX2+FMA");
        }
        let out = self.forward(x, flat)?;
        Ok((CpuStorage::F32(out), Shape::from((self.n, self.cout * self.h * self.w))))
    }

    fn bwd(&self, x: &Tensor, flat: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (sf, lf) = flat.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let (dx, dflat) = match (&*sf, &*sg) {
            (Storage::Cpu(f), Storage::Cpu(g)) => {
                self.backward(f32_slice(f, lf, "weights")?, f32_slice(g, lg, "gradient")?)?
            }
            _ => bail!("resnet conditioner: backward runs on the CPU"),
        };
        let dev = x.device();
        Ok((Some(Tensor::from_vec(dx, x.shape(), dev)?), Some(Tensor::from_vec(dflat, flat.shape(), dev)?)))
    }
}
