#!/usr/bin/env bash
# The one call on the GPU machine (NVIDIA driver, python3 with a CUDA PyTorch; no cargo, no Node, no
# network): run from the repo root after scripts/gpu/prepare.sh built target/gpu/ on the build machine and
# target/gpu was carried along. It
#   1. records the device (nvidia-smi), the libraries found and what the binaries still miss;
#   2. runs the CUDA tests of arflow-core (every test of src/cuda/tests.rs): CUDA vs CPU parity of the GRU,
#      LSTM and tanh RNN layers (forward, dx, ds0, dparams), of the fused cross-entropy (loss, gradient), of
#      the affine coupling (forward, inverse, dx, dst, dparams), of the 3×3 convolution (y, dx, dW, ReLU
#      off and on, one and several im2col chunks), of the AdamW update and the global gradient
#      norm, of the whole char LM's loss and gradients (every cell), and a short char-LM training run on the
#      GPU whose loss must fall;
#   3. times arflow's CUDA GRU layer (target/gpu/gru_cuda_bench) and torch.nn.GRU with cuDNN
#      (scripts/gpu/torch_gru.py) at H = 512, 1024, B = 64, 256, T = 128, f32, and compares them.
# Every part has its own time limit; a part that fails is recorded and the rest still run. Results, all
# JSON plus the raw logs, go to $OUT (default ./gpu-results): device.json, tests.json, arflow_gru.json,
# torch_gru.json, summary.json (each part's status and the tokens/s ratios). Exit status 0 only when every
# part passed. Limits (seconds; defaults 180, 150, 180: under 9 minutes in all, expected 1–2) can be
# changed with ARFLOW_GPU_TIMEOUT_{TESTS,ARFLOW,TORCH}.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
OUT=${OUT:-$root/gpu-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
bin=$root/target/gpu
t_tests=${ARFLOW_GPU_TIMEOUT_TESTS:-180}
t_arflow=${ARFLOW_GPU_TIMEOUT_ARFLOW:-150}
t_torch=${ARFLOW_GPU_TIMEOUT_TORCH:-180}
t0=$SECONDS
declare -A status
log() { echo "gpu-check [$((SECONDS - t0)) s] $*" | tee -a "$OUT/gpu-check.log"; }

# 1. The device and the libraries. cuBLAS, cuRAND and NVRTC come from PyTorch's NVIDIA wheels (cu13:
# nvidia/cu13/lib; older layouts: nvidia/<lib>/lib); libcuda.so.1 comes with the driver.
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
libdirs=$(python3 - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = []
try:
    import nvidia
    roots += list(nvidia.__path__)
except Exception:
    pass
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    roots.append(os.path.join(sp, "nvidia"))
dirs = []
for r in roots:
    for d in [os.path.join(r, "cu13", "lib")] + sorted(glob.glob(os.path.join(r, "*", "lib"))):
        if os.path.isdir(d) and glob.glob(os.path.join(d, "lib*.so*")) and d not in dirs:
            dirs.append(d)
print(":".join(dirs))
EOF
)
export LD_LIBRARY_PATH=${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export RUST_BACKTRACE=1
missing=""
for f in arflow_core_cuda_tests gru_cuda_bench; do
  if [[ -x $bin/$f ]]; then
    ldd "$bin/$f" >"$OUT/ldd-$f.txt" 2>&1
    missing+=$(sed -n 's/^\s*\(\S*\) => not found/\1 /p' "$OUT/ldd-$f.txt")
  else
    missing+="$bin/$f "
  fi
done
GPU="$gpu" LIBDIRS="$libdirs" MISSING="$missing" python3 - >"$OUT/device.json" <<'EOF'
import json, os, platform
try:
    import torch
    t = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
except Exception as e:
    t = {"torch_error": repr(e)}
print(json.dumps({"nvidia_smi": os.environ["GPU"], "host": platform.node(),
                  "ld_library_path": os.environ["LIBDIRS"].split(":") if os.environ["LIBDIRS"] else [],
                  "missing": os.environ["MISSING"].split(), **t}, indent=2))
EOF
log "device: ${gpu:-none found by nvidia-smi}; libraries from: ${libdirs:-nowhere}"
[[ -z $missing ]] || log "missing: $missing"
cat "$bin/MANIFEST" >>"$OUT/gpu-check.log" 2>/dev/null

# 2. The CUDA tests (the cuda:: module of the unit tests; the CPU ones ran on the build machine).
log "tests: arflow_core_cuda_tests cuda:: (limit $t_tests s)"
timeout -k 10 "$t_tests" "$bin/arflow_core_cuda_tests" cuda:: --test-threads=1 --show-output >"$OUT/tests.log" 2>&1
rc=$?
RC=$rc python3 - "$OUT/tests.log" >"$OUT/tests.json" <<'EOF'
import json, os, re, sys
text = open(sys.argv[1], errors="replace").read()
tests = [{"name": n, "result": r} for n, r in re.findall(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", text, re.M)]
skipped = sorted(set(re.findall(r"^(\S+): skipped, no CUDA device", text, re.M)))
rc = int(os.environ["RC"])
ok = rc == 0 and tests and all(t["result"] == "ok" for t in tests)
status = "timeout" if rc in (124, 137) else "failed" if not ok else "skipped: no CUDA device" if skipped else "passed"
print(json.dumps({"status": status, "rc": rc,
                  "skipped_without_device": skipped, "tests": tests,
                  "worst_errors": re.findall(r"^(?:gru|lstm|rnn|coupling|adamw) .*worst error.*$", text, re.M),
                  "training": re.findall(r"^char LM on CUDA: .*$", text, re.M)}, indent=2))
EOF
status[tests]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$OUT/tests.json" 2>/dev/null || echo failed)
log "tests: ${status[tests]} (rc $rc; log in tests.log)"

# 3a. arflow's CUDA GRU layer.
log "bench: gru_cuda_bench (limit $t_arflow s)"
timeout -k 10 "$t_arflow" "$bin/gru_cuda_bench" --out "$OUT/arflow_gru.json" >"$OUT/arflow_gru.log" 2>&1
rc=$?
if [[ $rc == 0 && -s $OUT/arflow_gru.json ]]; then status[arflow_bench]=passed; else status[arflow_bench]="failed (rc $rc)"; fi
log "bench arflow: ${status[arflow_bench]}"

# 3b. torch.nn.GRU (cuDNN), f32 and TF32.
log "bench: torch_gru.py (limit $t_torch s)"
timeout -k 10 "$t_torch" python3 scripts/gpu/torch_gru.py --device cuda --out "$OUT/torch_gru.json" >"$OUT/torch_gru.log" 2>&1
rc=$?
if [[ $rc == 0 && -s $OUT/torch_gru.json ]]; then status[torch_bench]=passed; else status[torch_bench]="failed (rc $rc)"; fi
log "bench torch: ${status[torch_bench]}"

# Summary: every part's status, and arflow's tokens/s over cuDNN's at each size.
ST_TESTS=${status[tests]} ST_ARFLOW=${status[arflow_bench]} ST_TORCH=${status[torch_bench]} ELAPSED=$((SECONDS - t0)) \
  python3 - "$OUT" <<'EOF' | tee -a "$OUT/gpu-check.log"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
dev, a, t = load("device.json") or {}, load("arflow_gru.json"), load("torch_gru.json")
rows = []
if a and t:
    torch_at = {(r["hidden"], r["batch"], r.get("precision", "f32")): r for r in t["results"]}
    for r in a["results"]:
        row = {"hidden": r["hidden"], "batch": r["batch"], "seq": r["seq"], "event_tracking": r.get("event_tracking"),
               "arflow_tokens_per_s_fwd_bwd": r["tokens_per_s_fwd_bwd"], "arflow_tokens_per_s_fwd": r["tokens_per_s_fwd"],
               "arflow_fwd_bwd_ms": r["fwd_bwd_ms"], "gemm_floor_ms": r["fwd_bwd_gemm_floor_ms"]}
        for p in ("f32", "tf32"):
            c = torch_at.get((r["hidden"], r["batch"], p))
            if c:
                row[f"cudnn_{p}_tokens_per_s_fwd_bwd"] = c["tokens_per_s_fwd_bwd"]
                row[f"ratio_vs_cudnn_{p}_fwd_bwd"] = r["tokens_per_s_fwd_bwd"] / c["tokens_per_s_fwd_bwd"]
                row[f"ratio_vs_cudnn_{p}_fwd"] = r["tokens_per_s_fwd"] / c["tokens_per_s_fwd"]
        rows.append(row)
parts = {"tests": os.environ["ST_TESTS"], "arflow_bench": os.environ["ST_ARFLOW"], "torch_bench": os.environ["ST_TORCH"]}
summary = {"device": dev.get("nvidia_smi"), "torch": dev.get("torch"), "parts": parts,
           "all_passed": all(v == "passed" for v in parts.values()), "elapsed_s": int(os.environ["ELAPSED"]),
           "gru_fwd_bwd_vs_cudnn": rows}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(f"device: {summary['device']}")
for k, v in parts.items():
    print(f"  {k:13s} {v}")
if rows:
    print("  fwd+bwd tokens/s (events: cudarc's event tracking on the arflow side)")
    print(f"  {'H':>5} {'B':>4} {'events':>6}  {'arflow':>13} {'cuDNN f32':>13} {'ratio':>6} {'cuDNN tf32':>13} {'ratio':>6}")
    for r in rows:
        f = lambda k: r.get(k, float("nan"))
        ev = {True: "on", False: "off"}.get(r["event_tracking"], "?")
        print(f"  {r['hidden']:>5} {r['batch']:>4} {ev:>6}  {f('arflow_tokens_per_s_fwd_bwd'):>13.0f} "
              f"{f('cudnn_f32_tokens_per_s_fwd_bwd'):>13.0f} {f('ratio_vs_cudnn_f32_fwd_bwd'):>6.2f} "
              f"{f('cudnn_tf32_tokens_per_s_fwd_bwd'):>13.0f} {f('ratio_vs_cudnn_tf32_fwd_bwd'):>6.2f}")
EOF
log "done in $((SECONDS - t0)) s; results in $OUT"
for s in "${status[@]}"; do [[ $s == passed ]] || exit 1; done
exit 0
