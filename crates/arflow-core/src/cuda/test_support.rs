//! What the CUDA test modules share: the device (or why there is none), inputs, and the comparison
//! against the CPU.

use crate::test_values::fill;
use candle_core::{Device, Result, Tensor};

/// The CUDA device, or `None` (and why, on stderr) where none opens.
pub(super) fn gpu(test: &str) -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            let why = e.to_string();
            eprintln!("{test}: skipped, no CUDA device ({})", why.lines().next().unwrap_or_default());
            None
        }
    }
}

/// `len` values of [`fill`] times `scale`.
pub(super) fn scaled(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    fill(len, seed).into_iter().map(|v| v * scale).collect()
}

/// `|got − want| ≤ tol · max |want|` everywhere (the floor keeps all-tiny vectors from failing on noise);
/// returns the worst ratio, for the log.
pub(super) fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let scale = want.iter().fold(0f64, |m, &v| m.max((v as f64).abs())).max(1e-6);
    let mut worst = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}[{i}]: {g}");
        let err = (g as f64 - w as f64).abs() / scale;
        assert!(err <= tol, "{what}[{i}]: cuda {g}, cpu {w} (error {err:.2e} of the scale {scale:.3e})");
        worst = worst.max(err);
    }
    worst
}

/// The f32 values of `t`, flattened.
pub(super) fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}
