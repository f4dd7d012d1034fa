//! Device selection: a value, not a branch in every function.

use candle_core::{bail, Device, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dev {
    Cpu,
    Cuda(usize),
}

impl Dev {
    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Result<Dev> {
        match s {
            "cpu" => Ok(Dev::Cpu),
            "cuda" => Ok(Dev::Cuda(0)),
            _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(i) => Ok(Dev::Cuda(i)),
                None => bail!("unknown device {s:?}: expected cpu, cuda or cuda:N"),
            },
        }
    }

    pub fn device(self) -> Result<Device> {
        match self {
            Dev::Cpu => Ok(Device::Cpu),
            Dev::Cuda(i) if cfg!(feature = "cuda") => Device::new_cuda(i),
            Dev::Cuda(_) => {
                bail!("this build of arflow has no CUDA support (built without the `cuda` feature); use device cpu")
            }
        }
    }
}

/// Whether this build was compiled with CUDA support.
pub fn cuda_built() -> bool {
    cfg!(feature = "cuda")
}
