//! With the `cuda` feature: compiles the CUDA kernels in src/cuda/*.cu to PTX in OUT_DIR, which
//! src/cuda/mod.rs embeds with include_str!. Without it (the CPU build) this does nothing.
//!
//! nvcc is `$NVCC`, else `$CUDA_ROOT/bin/nvcc` (`$CUDA_PATH` likewise), else `nvcc` on PATH; the PTX targets
//! `compute_$CUDA_COMPUTE_CAP` (default 90, Hopper), as candle's own kernels do. The PTX ISA version is
//! the nvcc's: a driver refuses PTX newer than its CUDA version, so build with a toolkit no newer than the
//! GPU machine's driver (scripts/build-native-cuda.sh pins 13.0).

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The kernel sources, each compiled to `$OUT_DIR/<name>.ptx`.
const KERNELS: [&str; 11] =
    ["rnn", "gru", "lstm", "tanh", "loss", "coupling", "adamw", "conv", "heads", "pixel", "pixel_row"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for k in KERNELS {
        println!("cargo:rerun-if-changed=src/cuda/{k}.cu");
    }
    // The device helpers every kernel file includes.
    println!("cargo:rerun-if-changed=src/cuda/common.cuh");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    for var in ["NVCC", "CUDA_ROOT", "CUDA_PATH", "CUDA_COMPUTE_CAP", "ARFLOW_NVCC_FLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let nvcc = nvcc();
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let cap = cap.trim().trim_start_matches("sm_").trim_start_matches("compute_").replace('.', "");
    if cap.is_empty() || !cap.chars().all(|c| c.is_ascii_digit()) {
        panic!("arflow-core build: CUDA_COMPUTE_CAP={cap:?} is not a compute capability like 90");
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for k in KERNELS {
        let src = format!("src/cuda/{k}.cu");
        let ptx = out.join(format!("{k}.ptx"));
        let mut cmd = Command::new(&nvcc);
        cmd.args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&src);
        if let Ok(extra) = env::var("ARFLOW_NVCC_FLAGS") {
            cmd.args(extra.split_whitespace());
        }
        let status = cmd.status().unwrap_or_else(|e| panic!("arflow-core build: cannot run {nvcc:?} ({e}): {cmd:?}"));
        if !status.success() {
            panic!("arflow-core build: {cmd:?} failed with {status}");
        }
    }
}

fn nvcc() -> PathBuf {
    if let Some(p) = env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    for root in ["CUDA_ROOT", "CUDA_PATH"] {
        if let Some(r) = env::var_os(root) {
            let p = PathBuf::from(r).join("bin/nvcc");
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from("nvcc")
}
