//! Fused multi-layer GRU: the kernel on slices and its candle op.

pub mod kernel;
pub mod op;

pub use kernel::{gru_backward, gru_forward, GruDims, GruGrads, GruWeights};
pub use op::gru_layer;

#[cfg(test)]
mod tests;
