//! A stack of recurrent layers, each one direction or two (bidirectional: PyTorch's layout, the
//! forward direction's h first), composed of the fused layer ops: what the language model, the
//! encoder and the decoder of an encoder–decoder all run.

use super::{rnn_layer, CellKind};
use candle_core::{Result, Tensor};

/// What a stack returns: the top layer's hidden states and every layer's final states.
pub struct StackOut {
    /// `[B, T, D·H]`: the h halves of the top layer's directions, forward first.
    pub top: Tensor,
    /// Final state of every layer and direction (layer-major, forward first), each `[B, S]`:
    /// the state after the direction's last step (for the reverse direction, after reading t = 0).
    pub finals: Vec<Tensor>,
}

/// `x [B, T, ·]` with its time axis reversed (differentiable: an index-select).
fn reverse_time(x: &Tensor) -> Result<Tensor> {
    let t = x.dim(1)?;
    let idx = Tensor::from_vec((0..t as u32).rev().collect::<Vec<u32>>(), t, x.device())?;
    x.contiguous()?.index_select(&idx, 1)
}

/// Runs the layers over `x [B, T, I]`. `params[l]` holds layer l's packed parameters, one per
/// direction (forward, then reverse); `s0` the initial state of every layer and direction `[B, S]`,
/// in the same order as [`StackOut::finals`]. The reverse direction is the same cell run over the
/// reversed sequence, its outputs reversed back.
pub fn run_stack(
    cell: CellKind,
    hidden: usize,
    x: &Tensor,
    params: &[Vec<&Tensor>],
    s0: &[Tensor],
) -> Result<StackOut> {
    let seq = x.dim(1)?;
    let h_of = |states: Tensor| if cell.state_width() == 1 { Ok(states) } else { states.narrow(2, 0, hidden) };
    let mut x = x.clone();
    let mut finals = Vec::with_capacity(s0.len());
    let mut k = 0;
    for layer in params {
        let mut outs = Vec::with_capacity(layer.len());
        for (dir, p) in layer.iter().enumerate() {
            let input = if dir == 0 { x.clone() } else { reverse_time(&x)? };
            let states = rnn_layer(cell, &input, &s0[k], p)?;
            k += 1;
            finals.push(states.narrow(1, seq - 1, 1)?.squeeze(1)?);
            let h = h_of(states)?;
            outs.push(if dir == 0 { h } else { reverse_time(&h)? });
        }
        x = if outs.len() == 1 { outs.pop().expect("one direction") } else { Tensor::cat(&outs, 2)? };
    }
    Ok(StackOut { top: x, finals })
}
