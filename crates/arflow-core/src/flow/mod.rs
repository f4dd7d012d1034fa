//! Invertible flows: the fused affine coupling of Real NVP (its kernel on slices and its candle op), the
//! 3×3 convolution of the ResNet conditioners, and [`FlowNet`], the spec-driven stack of flow layers that
//! every flow model of arflow is a preset of.

pub mod conv;
pub mod conv_direct;
pub mod kernel;
pub mod net;
pub mod op;

pub use kernel::{
    coupling_backward, coupling_backward_packed, coupling_forward, coupling_forward_packed, coupling_inverse,
    coupling_inverse_packed,
};
pub use net::FlowNet;
pub use op::{affine_coupling, affine_coupling_inverse};

#[cfg(test)]
mod tests;
