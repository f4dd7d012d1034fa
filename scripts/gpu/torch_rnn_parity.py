#!/usr/bin/env python3
"""PyTorch parity of arflow's recurrent stacks: loads what crates/arflow-core/examples/rnn_cuda_export.rs
wrote (PREFIX.json + PREFIX.bin: each case's weights under PyTorch's names, input, initial state, loss
weights, and arflow's outputs and gradients), builds the same torch.nn.GRU / nn.LSTM / nn.RNN (tanh)
(batch_first, num_layers, bidirectional) on --device, runs forward and backward of
L = sum(loss_weights * out), and compares arflow's out, h_n (c_n), and the gradients of x, h0 (c0) and
every parameter with PyTorch's. TF32 is off (cuDNN and cuBLAS): f32 arithmetic on both sides.

Error of a tensor: max |arflow - torch| / max |torch| (the largest magnitude of PyTorch's tensor);
a case passes when every tensor's error is <= --tol (default 1e-4). Writes one JSON object (stdout, or
--out); exit status 1 when a case fails.

  torch_rnn_parity.py --bundle PREFIX [--device cuda|cpu] [--tol 1e-4] [--out FILE]
"""

import argparse
import json
import sys

import numpy as np
import torch


def load(prefix):
    with open(f"{prefix}.json") as f:
        index = json.load(f)
    raw = open(f"{prefix}.bin", "rb").read()
    tensors = {}
    for t in index["tensors"]:
        assert t["dtype"] == "f32", t
        n = int(np.prod(t["shape"])) if t["shape"] else 1
        tensors[t["name"]] = np.frombuffer(raw, dtype="<f4", count=n, offset=t["offset"]).reshape(t["shape"]).copy()
    return index, tensors


def error(got, want):
    """(max abs difference, that over max |want|); NaN or Inf anywhere is an infinite error."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shapes differ: arflow {got.shape}, torch {want.shape}")
    if not (np.isfinite(got).all() and np.isfinite(want).all()):
        return float("inf"), float("inf")
    diff = float(np.abs(got - want).max()) if got.size else 0.0
    scale = max(float(np.abs(want).max()) if want.size else 0.0, 1e-12)
    return diff, diff / scale


def run_case(case, t, device, tol):
    name, cell, hidden = case["name"], case["cell"], case["hidden"]
    get = lambda k: torch.from_numpy(t[f"{name}/{k}"]).to(device)  # noqa: E731
    cls = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[cell]
    kw = {"nonlinearity": "tanh"} if cell == "rnn" else {}
    torch.manual_seed(0)
    m = cls(case["input"], hidden, num_layers=case["layers"], batch_first=True,
            bidirectional=case["bidirectional"], **kw).to(device)
    with torch.no_grad():
        for pname, p in m.named_parameters():
            src = get(pname)
            if tuple(src.shape) != tuple(p.shape):
                raise ValueError(f"{name}/{pname}: arflow {tuple(src.shape)}, torch {tuple(p.shape)}")
            p.copy_(src)
    x = get("x").requires_grad_(True)
    h0 = get("h0").contiguous().requires_grad_(True)
    lstm = cell == "lstm"
    c0 = get("c0").contiguous().requires_grad_(True) if lstm else None
    out, hn = m(x, (h0, c0) if lstm else h0)
    (out * get("loss_weights")).sum().backward()
    pairs = [("out", out), ("h_n", hn[0] if lstm else hn)]
    if lstm:
        pairs.append(("c_n", hn[1]))
    pairs += [("grad.x", x.grad), ("grad.h0", h0.grad)]
    if lstm:
        pairs.append(("grad.c0", c0.grad))
    pairs += [(f"grad.{pname}", p.grad) for pname, p in m.named_parameters()]
    errors = {}
    for k, want in pairs:
        got = t[f"{name}/arflow.{k}"]
        diff, rel = error(got, want.detach().cpu().numpy())
        errors[k] = {"max_abs": diff, "max_rel_to_scale": rel}
    worst = max(errors, key=lambda k: errors[k]["max_rel_to_scale"])
    return {
        **case,
        "passed": all(e["max_rel_to_scale"] <= tol for e in errors.values()),
        "worst": {"tensor": worst, **errors[worst]},
        "errors": errors,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="PREFIX of PREFIX.json and PREFIX.bin")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--out")
    a = p.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_rnn_parity: CUDA is not available to this PyTorch")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    index, tensors = load(a.bundle)
    results = []
    for case in index["cases"]:
        try:
            r = run_case(case, tensors, device, a.tol)
        except Exception as e:  # a broken case is recorded; the others still run
            r = {**case, "passed": False, "error": repr(e)}
        results.append(r)
        w = r.get("worst")
        print(f"rnn parity {case['name']:>20} {'ok  ' if r['passed'] else 'FAIL'} "
              + (f"worst {w['max_rel_to_scale']:.2e} of scale ({w['tensor']})" if w else r.get("error", "")),
              file=sys.stderr)
    report = {
        "what": "arflow's recurrent stacks (exported by rnn_cuda_export) against torch.nn.GRU/LSTM/RNN: forward, "
                "final states, and the gradients of sum(loss_weights * out)",
        "arflow_device": index.get("device"),
        "torch": torch.__version__,
        "torch_device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "tf32": False,
        "tol": a.tol,
        "passed": bool(results) and all(r["passed"] for r in results),
        "worst_rel_to_scale": max((r["worst"]["max_rel_to_scale"] for r in results if "worst" in r), default=None),
        "cases": results,
    }
    text = json.dumps(report, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
