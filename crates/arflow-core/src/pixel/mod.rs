//! Pixel-RNN (van den Oord, Kalchbrenner and Kavukcuoglu 2016, "Pixel Recurrent Neural Networks",
//! arXiv:1601.06759): the Row LSTM, and a Row GRU built the same way, over single-channel `R × C`
//! images, with fused kernels and hand-written backward passes.
//!
//! The equations are those of the float64 TypeScript reference, `src/backend/js/pixel.ts` (its module
//! comment states each one); the tests check the two against each other. In short, per image:
//! ```text
//! y_0 = b0 + (W0 ⊙ mask A) ⊛ x                                  7×7, zero padding 3       [`input_conv`]
//! row layer l (rows i = 0 … R−1, h_{−1} = c_{−1} = 0):                                     [`row`]
//!   is_i = b_is + E[label] + (W_is ⊙ mask B) ⊛ y_{l−1}[i]        1×3 along the row
//!   ss_i = b_ss + W_ss ⊛ h_{i−1}                                  1×3 along the row above
//!   LSTM (i, f, g, o) or GRU (r, z, n) cell on is_i, ss_i     →   h_i (, c_i)
//!   y_l[i] = h_i + y_{l−1}[i]                                     residual
//! logits = W2 · relu(W1 · relu(y_L) + b1) + b2                    two 1×1 convs             [`head`]
//! NLL: categorical −log softmax(logits)[t], or Bernoulli softplus(s) − t·s
//! ```
//! Sampling carries each layer's previous row and does O(1) work per pixel ([`sample`]).
//!
//! Layouts are channels-last: a map `[B, R, C, H]` holds (b, i, j, c) at ((b·R + i)·C + j)·H + c.
//! Inside the row kernels the maps are *padded*: `[B·R, C + 2, H]`, a zero column either side of every
//! row, so that the three taps of a 1×3 convolution at column j are the 3H consecutive values starting
//! at padded column j — a window a GEMM reads in place with row stride H. A 1×3 convolution over any
//! number of rows is then one GEMM `[rows·(C+2), 3H] · [3H, G·H]` (two taps, 2H, for mask B), whose
//! outputs at the pad columns are computed and ignored.

pub mod head;
pub mod input_conv;
pub mod model;
pub mod row;
pub mod sample;

pub use head::PixelOutput;
pub use model::{PixelConfig, PixelModel};

use candle_core::{bail, Layout, Result, Tensor, WithDType};
use std::any::Any;
use std::sync::Mutex;

/// Side of the input convolution's kernel and its zero padding.
pub const INPUT_KERNEL: usize = 7;
pub const INPUT_PAD: usize = 3;
/// Values an 8-bit pixel takes: the categorical head's outputs.
pub const PIXEL_LEVELS: usize = 256;

/// Taps (ky, kx) of the 7×7 kernel that mask A keeps, in row-major order: rows above the centre whole,
/// and the centre row left of the centre (24 of 49). Every other tap is zero in effect, and its
/// gradient is exactly 0.
pub fn mask_a_taps() -> impl Iterator<Item = (usize, usize)> {
    let c = INPUT_KERNEL / 2;
    (0..INPUT_KERNEL * INPUT_KERNEL)
        .map(|t| (t / INPUT_KERNEL, t % INPUT_KERNEL))
        .filter(move |&(ky, kx)| ky < c || (ky == c && kx < c))
}

/// Taps kx of the 1×3 input-to-state kernel that mask B keeps: columns j−1 and j, not j+1.
pub const MASK_B_TAPS: [usize; 2] = [0, 1];

/// The contiguous elements of a storage slice under `l`.
fn contiguous<'a, T>(s: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => bail!("pixel: {what} must be contiguous"),
    }
}

/// A tensor's values on the host.
fn host<T: WithDType>(t: &Tensor) -> Result<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

/// What an op's forward pass keeps for its backward, of whichever float type the op ran in.
#[derive(Default)]
struct Saved(Mutex<Option<Box<dyn Any + Send>>>);

impl Saved {
    fn put<S: Send + 'static>(&self, s: S) {
        *self.0.lock().expect("pixel op saved state poisoned") = Some(Box::new(s));
    }

    /// `f` on what forward kept, if it kept an `S`.
    fn with<S: 'static, R>(&self, op: &str, f: impl FnOnce(&S) -> Result<R>) -> Result<R> {
        let guard = self.0.lock().expect("pixel op saved state poisoned");
        match guard.as_ref().and_then(|s| s.downcast_ref::<S>()) {
            Some(s) => f(s),
            None => bail!("{op}: backward called on a forward pass that saved no activations"),
        }
    }
}

/// `[rows, c, h]` ↦ `[rows, c + 2, h]` with a zero column at either end of every row.
pub fn pad_rows<T: crate::real::Real>(y: &[T], rows: usize, c: usize, h: usize) -> Vec<T> {
    let mut out = vec![T::zero(); rows * (c + 2) * h];
    for (dst, src) in out.chunks_exact_mut((c + 2) * h).zip(y.chunks_exact(c * h)) {
        dst[h..(c + 1) * h].copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests;
