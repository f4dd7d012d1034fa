//! Reading CPU tensors in place: the hand-written backward passes borrow their inputs from candle's
//! storage instead of copying `[B, T, ·]` activations out of it.

use candle_core::{bail, Result, Storage, Tensor, WithDType};

/// Runs `f` on the values of `ts`, borrowed (each made contiguous first where it is not, which copies
/// only that one). Errors on tensors of another dtype or off the CPU.
pub fn with_slices<T: WithDType, R>(ts: &[&Tensor], f: impl FnOnce(&[&[T]]) -> Result<R>) -> Result<R> {
    let owned = ts.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .map(|(st, l)| match (&**st, l.contiguous_offsets()) {
            (Storage::Cpu(cpu), Some((a, b))) => Ok(&cpu.as_slice::<T>()?[a..b]),
            (Storage::Cpu(_), None) => bail!("a tensor read in place is not contiguous"),
            _ => bail!("hand-written passes read CPU tensors only"),
        })
        .collect::<Result<Vec<&[T]>>>()?;
    f(&slices)
}
