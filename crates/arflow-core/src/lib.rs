//! arflow-core: the math of arflow on candle, with no knowledge of Node.
//!
//! - [`flow`]: the fused affine coupling of Real NVP (forward, inverse, hand-written backward) as a candle op.
//! - [`rnn`]: fused recurrent layers (GRU, LSTM, tanh RNN) with their own backward through time, one candle op per layer.
//! - [`lm`]: the character language model built around them.
//! - [`loss`]: fused softmax cross-entropy.
//! - [`optim`]: AdamW and global-norm clipping.

pub mod alloc;
pub mod caption;
#[cfg(feature = "cuda")]
mod cuda;
pub mod device;
pub mod flow;
pub mod gemm;
pub mod heads;
pub mod host;
pub mod lm;
pub mod loss;
pub mod optim;
pub mod packed;
pub mod params;
pub mod pixel;
pub mod real;
pub mod rnn;
pub mod seq2seq;
pub mod series;
pub mod sgemm;
#[cfg(test)]
mod test_values;

pub use candle_core::{Error, Result};
pub use device::Dev;
pub use flow::FlowNet;
pub use lm::{CharLm, CharLmConfig, LossGrads};
pub use optim::AdamWConfig;
pub use params::{ParamSpec, ParamStore, StepStats};
pub use rnn::CellKind;

/// Threads the CPU kernels use (rayon's pool: `RAYON_NUM_THREADS`, else one per core).
pub fn threads() -> usize {
    rayon::current_num_threads()
}
