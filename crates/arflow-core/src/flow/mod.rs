//! Invertible flow layers: the fused affine coupling of Real NVP, its kernel on slices and its candle op.

pub mod conv;
pub mod kernel;
pub mod net;
pub mod op;
pub mod realnvp;

pub use kernel::{
    coupling_backward, coupling_backward_packed, coupling_forward, coupling_forward_packed, coupling_inverse,
    coupling_inverse_packed,
};
pub use net::FlowNet;
pub use op::{affine_coupling, affine_coupling_inverse};
pub use realnvp::{RealNvp, RealNvpConfig};

#[cfg(test)]
mod tests;
