//! Fused multi-layer recurrent layers with their own backward through time: GRU, LSTM and the vanilla
//! tanh RNN, PyTorch semantics, batch-first. Each cell is one kernel on slices (forward over a whole
//! sequence, hand-written BPTT); [`op::rnn_layer`] wraps any of them as one candle op per layer.
//!
//! The design is the same for every cell: one GEMM projects the inputs of all T steps; each step is one
//! GEMM `h·W_hhᵀ` plus one fused elementwise pass; backward walks t = T−1 … 0 with one fused pass and one
//! GEMM per step, and the weight gradients are single GEMMs over all steps ([`common`]).

pub mod common;
pub mod gru;
pub mod lstm;
pub mod op;
pub mod stack;
pub mod tanh;

pub use op::{gru_layer, rnn_layer};
pub use stack::{run_stack, StackOut};

/// The recurrent cell of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// `nn.GRU`: gates (r, z, n).
    Gru,
    /// `nn.LSTM`: gates (i, f, g, o); the state is (h, c).
    Lstm,
    /// `nn.RNN` with tanh: `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
    Rnn,
}

impl CellKind {
    pub const ALL: [CellKind; 3] = [CellKind::Gru, CellKind::Lstm, CellKind::Rnn];

    /// PyTorch's module attribute name, the prefix of the checkpoint names (`lstm.weight_ih_l0`).
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Gru => "gru",
            CellKind::Lstm => "lstm",
            CellKind::Rnn => "rnn",
        }
    }

    pub fn parse(name: &str) -> candle_core::Result<Self> {
        match CellKind::ALL.into_iter().find(|c| c.name() == name) {
            Some(c) => Ok(c),
            None => candle_core::bail!("unknown cell {name:?}: expected gru, lstm or rnn"),
        }
    }

    /// Gate blocks of H rows in `W_ih`, `W_hh` and the biases.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Gru => 3,
            CellKind::Lstm => 4,
            CellKind::Rnn => 1,
        }
    }

    /// Values of the recurrent state per batch row, in units of H: the LSTM carries (h, c).
    pub fn state_width(self) -> usize {
        match self {
            CellKind::Lstm => 2,
            _ => 1,
        }
    }

    /// Activations kept per position for backward, in units of H.
    pub fn saved_width(self) -> usize {
        match self {
            CellKind::Gru => 4,
            CellKind::Lstm => 4,
            CellKind::Rnn => 0,
        }
    }
}

/// Sizes of one recurrent layer applied to one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RnnDims {
    pub cell: CellKind,
    pub batch: usize,
    pub seq: usize,
    pub input: usize,
    pub hidden: usize,
}

impl RnnDims {
    /// A GRU layer's sizes (the cell most callers use).
    pub fn gru(batch: usize, seq: usize, input: usize, hidden: usize) -> Self {
        RnnDims { cell: CellKind::Gru, batch, seq, input, hidden }
    }

    /// Rows of `W_ih` / `W_hh`: gates × H.
    pub fn gate_width(&self) -> usize {
        self.cell.gates() * self.hidden
    }

    /// Values per batch row of the state and per position of the layer's output: H, or 2H for (h, c).
    pub fn state_len(&self) -> usize {
        self.cell.state_width() * self.hidden
    }

    /// Length of the packed parameter vector `[w_ih, w_hh, b_ih, b_hh]`.
    pub fn param_len(&self) -> usize {
        let g = self.gate_width();
        g * self.input + g * self.hidden + 2 * g
    }
}

/// One layer's parameters, borrowed from a packed `[w_ih, w_hh, b_ih, b_hh]` vector (PyTorch's shapes:
/// `w_ih [G·H, I]`, `w_hh [G·H, H]`, `b_ih [G·H]`, `b_hh [G·H]`).
#[derive(Clone, Copy)]
pub struct RnnWeights<'a, T> {
    pub w_ih: &'a [T],
    pub w_hh: &'a [T],
    pub b_ih: &'a [T],
    pub b_hh: &'a [T],
}

impl<'a, T> RnnWeights<'a, T> {
    pub fn unpack(dims: &RnnDims, packed: &'a [T]) -> Self {
        let g = dims.gate_width();
        let (w_ih, rest) = packed.split_at(g * dims.input);
        let (w_hh, rest) = rest.split_at(g * dims.hidden);
        let (b_ih, b_hh) = rest.split_at(g);
        RnnWeights { w_ih, w_hh, b_ih, b_hh: &b_hh[..g] }
    }
}

/// Gradients of one layer, the parameter part packed like the parameters.
pub struct RnnGrads<T> {
    pub dx: Vec<T>,
    /// dL/d(initial state) `[B, state_len]`.
    pub dh0: Vec<T>,
    pub dparams: Vec<T>,
}

/// Forward over the whole sequence for any cell: writes `[B, T, state_len]` into `out`; when `save` is
/// given it is filled with what [`rnn_backward`] needs.
pub fn rnn_forward<T: crate::real::Real>(
    dims: &RnnDims,
    x: &[T],
    h0: &[T],
    w: &RnnWeights<T>,
    out: &mut [T],
    save: Option<&mut Vec<T>>,
) {
    match dims.cell {
        CellKind::Gru => gru::gru_forward(dims, x, h0, w, out, save),
        CellKind::Lstm => lstm::lstm_forward(dims, x, h0, w, out, save),
        CellKind::Rnn => tanh::rnn_tanh_forward(dims, x, h0, w, out),
    }
}

/// Backward through time for any cell, given what [`rnn_forward`] produced and dL/d(out). Uses up
/// `saved` (backward overwrites it with the gate gradients: it is the pass's only `[B·T, ·]` scratch).
pub fn rnn_backward<T: crate::real::Real>(
    dims: &RnnDims,
    x: &[T],
    h0: &[T],
    w: &RnnWeights<T>,
    out: &[T],
    saved: &mut [T],
    d_out: &[T],
) -> RnnGrads<T> {
    match dims.cell {
        CellKind::Gru => gru::gru_backward(dims, x, h0, w, out, saved, d_out),
        CellKind::Lstm => lstm::lstm_backward(dims, x, h0, w, out, saved, d_out),
        CellKind::Rnn => tanh::rnn_tanh_backward(dims, x, h0, w, out, d_out),
    }
}

#[cfg(test)]
mod tests;
