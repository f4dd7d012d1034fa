#!/usr/bin/env python3
"""Times torch.nn.GRU (cuDNN on a GPU) forward, and forward + backward of sum(out), at the sizes
crates/arflow-core/examples/gru_cuda_bench.rs times arflow's CUDA GRU layer: one layer, batch-first,
input = hidden, f32. Writes one JSON object (stdout, or --out).

Two precision modes on CUDA: "f32" (TF32 off for cuDNN and cuBLAS: the arithmetic arflow's kernels do)
and "tf32" (PyTorch's default for cuDNN, torch.backends.cudnn.allow_tf32 = True). On the CPU only "f32".

  torch_gru.py [--device cuda|cpu] [--quick] [--hidden 512,1024] [--batch 64,256] [--seq 128]
               [--warmup 3] [--iters 10] [--out FILE]

--quick: tiny sizes and two iterations, to check the script itself (e.g. --device cpu on a machine without
a GPU).
"""

import argparse
import json
import platform
import statistics
import sys
import time

import torch


def ints(s):
    return [int(v) for v in s.split(",") if v.strip()]


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--hidden", type=ints, default=[512, 1024])
    p.add_argument("--batch", type=ints, default=[64, 256])
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out")
    a = p.parse_args()
    if a.quick:
        a.hidden, a.batch, a.seq, a.warmup, a.iters = [32], [4], 16, 1, 2
    return a


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(device, warmup, iters, fn):
    """Median seconds of `iters` runs of fn (after `warmup`), each ended by a device sync."""
    for _ in range(warmup):
        fn()
    sync(device)
    ts = []
    for _ in range(max(iters, 1)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def set_tf32(device, on):
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = on
        torch.backends.cuda.matmul.allow_tf32 = on


def gemm_rate(device, m, n, k):
    """FLOP/s of one f32 GEMM [m, k] · [k, n] under the current TF32 setting."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    s = median_seconds(device, 2, 5, lambda: a @ b)
    return 2.0 * m * n * k / s


def bench_one(device, h, b, t, warmup, iters):
    torch.manual_seed(0)
    gru = torch.nn.GRU(input_size=h, hidden_size=h, num_layers=1, batch_first=True).to(device)
    x = torch.randn(b, t, h, device=device, requires_grad=True)
    h0 = (0.1 * torch.randn(1, b, h, device=device)).requires_grad_(True)

    def fwd():
        with torch.no_grad():
            gru(x, h0)

    def fwd_bwd():
        out, _ = gru(x, h0)
        out.sum().backward()
        x.grad = None
        h0.grad = None
        gru.zero_grad(set_to_none=True)

    f = median_seconds(device, warmup, iters, fwd)
    fb = median_seconds(device, warmup, iters, fwd_bwd)
    bt, g, i = b * t, 3 * h, h
    fwd_flops = 2.0 * bt * g * (i + h)
    bwd_flops = 2.0 * bt * g * (2 * h + 2 * i)
    rate = gemm_rate(device, bt, g, i)
    return {
        "hidden": h, "batch": b, "seq": t, "input": i,
        "fwd_ms": f * 1e3,
        "fwd_bwd_ms": fb * 1e3,
        "tokens_per_s_fwd": bt / f,
        "tokens_per_s_fwd_bwd": bt / fb,
        "gemm_tflops_measured": rate / 1e12,
        "fwd_bwd_gemm_floor_ms": (fwd_flops + bwd_flops) / rate * 1e3,
        "fwd_bwd_achieved_tflops": (fwd_flops + bwd_flops) / fb / 1e12,
    }


def main():
    a = parse()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_gru: CUDA is not available to this PyTorch")
    modes = ["f32", "tf32"] if device.type == "cuda" else ["f32"]
    report = {
        "impl": "torch.nn.GRU",
        "what": "one GRU layer, batch-first, input = hidden: forward, and forward + backward of sum(out)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "warmup": a.warmup, "iters": a.iters, "statistic": "median",
        "results": [],
    }
    for mode in modes:
        set_tf32(device, mode == "tf32")
        for h in a.hidden:
            for b in a.batch:
                r = bench_one(device, h, b, a.seq, a.warmup, a.iters)
                r["precision"] = mode
                report["results"].append(r)
                print(f"torch gru {mode} H{h} B{b} T{a.seq}: fwd {r['fwd_ms']:.2f} ms, "
                      f"fwd+bwd {r['fwd_bwd_ms']:.2f} ms", file=sys.stderr)
    set_tf32(device, False)
    text = json.dumps(report, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
