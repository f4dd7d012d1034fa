#!/usr/bin/env bash
# The one call on the GPU machine (NVIDIA driver, python3 with a CUDA PyTorch and numpy; no cargo, no Node,
# no network, no Fashion-MNIST): run from the repo root after scripts/gpu/prepare.sh built target/gpu/ on
# the build machine and target/gpu was carried along. In order, it
#   1. records the device (nvidia-smi), the libraries found and what the binaries still miss;
#   2. tests: runs the CUDA tests of arflow-core (every test of src/cuda/tests.rs): CUDA vs CPU parity of
#      the GRU, LSTM and tanh RNN layers (forward, dx, ds0, dparams), of the fused cross-entropy (loss,
#      gradient), of the affine coupling (forward, inverse, dx, dst, dparams), of the 3×3 convolution (y,
#      dx, dW, ReLU off and on, one and several im2col chunks), of the AdamW update and the global gradient
#      norm, of the whole char LM's loss and gradients (every cell), of a small Real NVP-like image flow's
#      loss, gradients, encoding and decoding (the CPU side runs the fused ResNet conditioner), and short
#      char-LM and flow training runs on the GPU whose losses must fall;
#      src/cuda/heads_tests.rs: Gaussian and MDN heads' NLL and gradients, alone and after a linear layer;
#      src/cuda/pixel_tests.rs: Pixel-RNN input conv, Row LSTM/GRU layers, head NLL, model loss/grads, training;
#   3. rnn_parity: PyTorch parity of the recurrent stacks on the GPU: target/gpu/rnn_cuda_export runs GRU,
#      LSTM and tanh-RNN stacks (1 and 2 layers, bidirectional) on CUDA and writes weights, inputs, outputs
#      and gradients; scripts/gpu/torch_rnn_parity.py loads them into torch.nn.GRU/LSTM/RNN on CUDA (TF32
#      off) and compares out, the final states and every gradient (≤ 1e-4 of each tensor's largest value);
#   4. gru_arflow, gru_torch: times arflow's CUDA GRU layer (target/gpu/gru_cuda_bench) and torch.nn.GRU
#      with cuDNN (scripts/gpu/torch_gru.py) at H = 512, 1024, B = 64, 256, T = 128, f32, and compares them;
#   5. flow_arflow, flow_torch_f32, flow_torch_tf32: Real NVP training throughput (the bench's Fashion-MNIST
#      preset, batch 64, synthetic images: target/gpu/flow_cuda_bench) against the same network in PyTorch
#      (bench/torch/workloads.py realnvp --synthetic --device cuda, TF32 off, then PyTorch's defaults, which
#      let cuDNN's convolutions use TF32).
# The binaries are unpacked from target/gpu/*.gz into a temporary folder. Each part has its own time limit,
# cut to what is left of a total budget (so the whole run ends in time, whatever hangs); a part that fails,
# times out or cannot run (no GPU, no CUDA PyTorch, a library missing) is recorded and the rest still run.
# Results go to $OUT (default ./gpu-results) as three files (the device tool brings back at most 8):
# summary.json (each part's status, the test counts and failures, the parity errors, the tokens/s and
# images/s ratios against PyTorch), gpu-check.log, and details.tar.gz (every part's JSON and raw log:
# device.json, tests.json, rnn_export.json, rnn_parity.json, arflow_gru.json, torch_gru.json,
# arflow_flow.json, torch_flow_{f32,tf32}.json, *.log; with ARFLOW_GPU_KEEP_RAW=1 also left unpacked in
# $OUT/raw). Exit status 0 only when every part passed. Limits (seconds) can be changed with
# ARFLOW_GPU_TIMEOUT_<PART> (TESTS 180, PARITY 90 for each of its two steps, GRU_ARFLOW 120, GRU_TORCH 150,
# FLOW_ARFLOW 90, FLOW_TORCH 90 for each of the two) and the total with ARFLOW_GPU_BUDGET (default 480 s;
# the run ends within it plus about 15 s; expected 2–4 minutes on an H100).
#
# ARFLOW_GPU_DEVICE=cpu is a dry run of the pipeline on a machine without a GPU: the exports, the parity
# check and the flow benches run on the CPU (shorter), the CUDA tests return early (status "skipped"),
# gru_cuda_bench (CUDA only) and the TF32 row are skipped, torch_gru.py runs --quick. The binaries still need
# libcuda.so.1 and libcurand.so.10 to load: on the build machine, a folder of links named so to the link
# stubs of .cuda/py/nvidia/cu13/lib/stubs (libcuda.so, libcurand.so) on LD_LIBRARY_PATH will do.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
OUT=${OUT:-$root/gpu-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
raw=$OUT/raw
rm -rf "$raw" "$OUT/details.tar.gz" "$OUT/summary.json" "$OUT/gpu-check.log"
mkdir -p "$raw"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin=$work/bin # the binaries, unpacked from target/gpu/NAME.gz (or copied, where prepare.sh left them plain)
budget=${ARFLOW_GPU_BUDGET:-480}
dev=${ARFLOW_GPU_DEVICE:-cuda}
[[ $dev == cuda || $dev == cpu ]] || { echo "gpu-check: ARFLOW_GPU_DEVICE is cuda or cpu, not $dev" >&2; exit 2; }
t0=$SECONDS
declare -A status secs
parts=(tests rnn_parity gru_arflow gru_torch flow_arflow flow_torch_f32 flow_torch_tf32)
log() { echo "gpu-check [$((SECONDS - t0)) s] $*" | tee -a "$OUT/gpu-check.log"; }

# run_part NAME LIMIT RESULT STDOUT COMMAND...: runs COMMAND under min(LIMIT, what the budget has left),
# stderr (and stdout unless STDOUT names a file for it) into raw/NAME.log; passed when it exits 0 and
# RESULT (a JSON file it writes) is not empty. Sets status[NAME] and rc.
run_part() {
  local name=$1 want=$2 result=$3 stdout=$4
  shift 4
  local left=$((budget - (SECONDS - t0)))
  if ((left < 20)); then
    status[$name]="skipped: the time budget ($budget s) is spent"
    rc=-1
    log "$name: ${status[$name]}"
    return
  fi
  local limit=$((want < left ? want : left)) start=$SECONDS
  log "$name: ${*#"$root"/} (limit $limit s)"
  if [[ -n $stdout ]]; then
    timeout -k 10 "$limit" "$@" >"$stdout" 2>"$raw/$name.log"
  else
    timeout -k 10 "$limit" "$@" >"$raw/$name.log" 2>&1
  fi
  rc=$?
  secs[$name]=$((SECONDS - start))
  if [[ $rc == 0 && -s $result ]]; then
    status[$name]=passed
  elif [[ $rc == 124 || $rc == 137 ]]; then
    status[$name]="timeout (limit $limit s)"
  else
    status[$name]="failed (rc $rc; see $name.log)"
  fi
  log "$name: exit status $rc after ${secs[$name]} s"
}

# 1. The device and the libraries. cuBLAS, cuRAND and NVRTC come from PyTorch's NVIDIA wheels (cu13:
# nvidia/cu13/lib; older layouts: nvidia/<lib>/lib); libcuda.so.1 comes with the driver.
nvidia-smi >"$raw/nvidia-smi.txt" 2>&1
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
export RUST_BACKTRACE=1 PYTHONUNBUFFERED=1
binaries=(arflow_core_cuda_tests rnn_cuda_export gru_cuda_bench flow_cuda_bench)
declare -A cannot
missing=""
mkdir -p "$bin"
for f in "${binaries[@]}"; do
  src=$root/target/gpu/$f
  if [[ -f $src.gz ]]; then
    gzip -dc "$src.gz" >"$bin/$f" 2>/dev/null ||
      python3 -c 'import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), sys.stdout.buffer)' "$src.gz" >"$bin/$f"
    chmod +x "$bin/$f"
  elif [[ -x $src ]]; then
    cp "$src" "$bin/$f"
  fi
  if [[ -x $bin/$f && -s $bin/$f ]]; then
    ldd "$bin/$f" >"$raw/ldd-$f.txt" 2>&1
    m=$(sed -n 's/^\s*\(\S*\) => not found/\1/p' "$raw/ldd-$f.txt" | tr '\n' ' ')
    [[ -z $m ]] || cannot[$f]="missing libraries: ${m% }"
  else
    cannot[$f]="no target/gpu/$f.gz (run scripts/gpu/prepare.sh on the build machine and carry target/gpu)"
  fi
  [[ -z ${cannot[$f]:-} ]] || missing+="$f (${cannot[$f]}); "
done
GPU="$gpu" LIBDIRS="$libdirs" MISSING="$missing" python3 - >"$raw/device.json" <<'EOF'
import json, os, platform
try:
    import torch
    t = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
except Exception as e:
    t = {"torch_error": repr(e), "cuda_available": False}
print(json.dumps({"nvidia_smi": os.environ["GPU"], "host": platform.node(), "cpus": os.cpu_count(),
                  "ld_library_path": os.environ["LIBDIRS"].split(":") if os.environ["LIBDIRS"] else [],
                  "missing": [m for m in os.environ["MISSING"].split("; ") if m], **t}, indent=2))
EOF
torch_cuda=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("cuda_available"))' "$raw/device.json" 2>/dev/null)
log "device: ${gpu:-none found by nvidia-smi}; parts run on: $dev; torch sees CUDA: ${torch_cuda:-?}; libraries from: ${libdirs:-nowhere}"
[[ -z $missing ]] || log "cannot run: $missing"
cat "$root/target/gpu/MANIFEST" >>"$OUT/gpu-check.log" 2>/dev/null

# A part whose binary cannot run, or that needs PyTorch on CUDA where there is none, is recorded as such.
can_run() { # can_run PART BINARY...
  local part=$1 f
  shift
  for f in "$@"; do
    if [[ -n ${cannot[$f]:-} ]]; then
      status[$part]="failed: cannot run $f: ${cannot[$f]}"
      log "$part: ${status[$part]}"
      return 1
    fi
  done
}
torch_ok() { # torch_ok PART
  [[ $torch_cuda == True || $dev == cpu ]] && return 0
  status[$1]="skipped: PyTorch sees no CUDA device"
  log "$1: ${status[$1]}"
  return 1
}

# 2. The CUDA tests (the cuda:: module of the unit tests; the CPU ones ran on the build machine). Passed
# only when every test ran on the device: a test without one returns early and prints why.
if can_run tests arflow_core_cuda_tests; then
  run_part tests "${ARFLOW_GPU_TIMEOUT_TESTS:-180}" "$raw/tests.log" "" \
    "$bin/arflow_core_cuda_tests" cuda:: --test-threads=1 --show-output
fi
if [[ -s $raw/tests.log ]]; then
  RC=$rc python3 - "$raw/tests.log" >"$raw/tests.json" <<'EOF'
import json, os, re, sys
text = open(sys.argv[1], errors="replace").read()
tests = [{"name": n, "result": r} for n, r in re.findall(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", text, re.M)]
skipped = sorted(set(re.findall(r"^(\S+): skipped, no CUDA device", text, re.M)))
rc = int(os.environ["RC"])
ok = rc == 0 and tests and all(t["result"] == "ok" for t in tests)
status = ("timeout" if rc in (124, 137) else "failed" if not ok
          else "skipped: no CUDA device" if skipped else "passed")
worst = [l for l in re.findall(r"^.*worst error.*$", text, re.M) if not l.startswith(("test ", "thread "))]
ratios = [float(v) for v in re.findall(r"worst error ([0-9.eE+-]+) of scale", text)]
print(json.dumps({"status": status, "rc": rc, "count": len(tests),
                  "failed": [t["name"] for t in tests if t["result"] == "FAILED"],
                  "panics": re.findall(r"^thread '.*' panicked at .*\n.*$", text, re.M),
                  "skipped_without_device": skipped, "tests": tests,
                  "largest_worst_error": max(ratios, default=None),
                  "worst_errors": worst,
                  "training": re.findall(r"^(?:char LM|flow) on CUDA: .*$", text, re.M)}, indent=2))
EOF
  s=$(python3 -c 'import json,sys; j = json.load(open(sys.argv[1])); print(j["status"], len(j["failed"]))' \
    "$raw/tests.json" 2>/dev/null)
  case $s in
    passed*) ;;
    skipped*) status[tests]="skipped: no CUDA device (the tests returned early)" ;;
    failed*) [[ ${status[tests]} == timeout* ]] || status[tests]="failed (rc $rc; ${s#failed } failed tests, see tests.json)" ;;
  esac
  log "tests: ${status[tests]}"
fi

# 3. PyTorch parity of the recurrent stacks: arflow's forward and gradients on CUDA, then PyTorch's.
if can_run rnn_parity rnn_cuda_export && torch_ok rnn_parity; then
  run_part rnn_export "${ARFLOW_GPU_TIMEOUT_PARITY:-90}" "$work/rnn_export.json" "" \
    "$bin/rnn_cuda_export" --device "$dev" --out "$work/rnn_export"
  if [[ ${status[rnn_export]} == passed ]]; then
    cp "$work/rnn_export.json" "$raw/rnn_export.json"
    run_part rnn_parity "${ARFLOW_GPU_TIMEOUT_PARITY:-90}" "$raw/rnn_parity.json" "" \
      python3 scripts/gpu/torch_rnn_parity.py --bundle "$work/rnn_export" --device "$dev" --out "$raw/rnn_parity.json"
    [[ $rc == 1 && -s $raw/rnn_parity.json ]] && status[rnn_parity]="failed: arflow and PyTorch differ (see rnn_parity.json)"
    secs[rnn_parity]=$((${secs[rnn_parity]:-0} + ${secs[rnn_export]:-0}))
  else
    status[rnn_parity]="failed in rnn_cuda_export: ${status[rnn_export]}"
    secs[rnn_parity]=${secs[rnn_export]:-0}
  fi
fi

# 4. arflow's CUDA GRU layer, then torch.nn.GRU (cuDNN), f32 and TF32.
if [[ $dev == cpu ]]; then
  status[gru_arflow]="skipped: gru_cuda_bench times the CUDA layer only"
  log "gru_arflow: ${status[gru_arflow]}"
elif can_run gru_arflow gru_cuda_bench; then
  run_part gru_arflow "${ARFLOW_GPU_TIMEOUT_GRU_ARFLOW:-120}" "$raw/arflow_gru.json" "" \
    "$bin/gru_cuda_bench" --out "$raw/arflow_gru.json"
fi
if torch_ok gru_torch; then
  run_part gru_torch "${ARFLOW_GPU_TIMEOUT_GRU_TORCH:-150}" "$raw/torch_gru.json" "" \
    python3 scripts/gpu/torch_gru.py --device "$dev" $([[ $dev == cpu ]] && echo --quick) --out "$raw/torch_gru.json"
fi

# 5. Real NVP training throughput: arflow, then PyTorch with TF32 off (arflow's arithmetic) and with
# PyTorch's defaults (cuDNN's convolutions in TF32).
flow_args=(--batch 64 --warmup 5 --seconds 8)
[[ $dev == cpu ]] && flow_args=(--batch 64 --warmup 2 --seconds 3)
if can_run flow_arflow flow_cuda_bench; then
  run_part flow_arflow "${ARFLOW_GPU_TIMEOUT_FLOW_ARFLOW:-90}" "$raw/arflow_flow.json" "" \
    "$bin/flow_cuda_bench" --device "$dev" --images 2048 "${flow_args[@]}" --out "$raw/arflow_flow.json"
fi
for mode in f32 tf32; do
  if [[ $mode == tf32 && $dev == cpu ]]; then
    status[flow_torch_tf32]="skipped: TF32 is a CUDA mode"
    log "flow_torch_tf32: ${status[flow_torch_tf32]}"
  elif torch_ok "flow_torch_$mode"; then
    tf32=$([[ $mode == f32 ]] && echo off || echo default)
    run_part "flow_torch_$mode" "${ARFLOW_GPU_TIMEOUT_FLOW_TORCH:-90}" "$raw/torch_flow_$mode.json" "$raw/torch_flow_$mode.json" \
      python3 bench/torch/workloads.py realnvp --synthetic --device "$dev" --tf32 "$tf32" --limit 2048 \
      --scales 2 --channels 32 --blocks 1 "${flow_args[@]}"
  fi
done

# Summary: every part's status, the test and parity results, arflow's tokens/s (GRU) and images/s (Real
# NVP) over PyTorch's.
args=()
for p in "${parts[@]}"; do args+=("$p=${status[$p]:-not run}=${secs[$p]:-0}"); done
DEV=$dev ELAPSED=$((SECONDS - t0)) BUDGET=$budget python3 - "$raw" "$OUT/summary.json" "${args[@]}" <<'EOF' | tee -a "$OUT/gpu-check.log"
import json, os, sys
raw, dest = sys.argv[1], sys.argv[2]
parts = {a.split("=")[0]: a.split("=", 1)[1].rsplit("=", 1)[0] for a in sys.argv[3:]}
part_s = {a.split("=")[0]: int(a.rsplit("=", 1)[1]) for a in sys.argv[3:]}
def load(name):
    try:
        with open(os.path.join(raw, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1]) if name.startswith("torch_flow") else json.load(f)
    except Exception:
        return None
dev = load("device.json") or {}
tests, parity = load("tests.json"), load("rnn_parity.json")
a, t = load("arflow_gru.json"), load("torch_gru.json")
gru = []
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
        gru.append(row)
fa, ft = load("arflow_flow.json"), {m: load(f"torch_flow_{m}.json") for m in ("f32", "tf32")}
flow = None
if fa or any(ft.values()):
    flow = {"model": "Real NVP, bench/specs/realnvp-fmnist.json, batch 64, synthetic 1x28x28 images",
            "arflow_images_per_s": fa and fa["images_per_s"], "arflow_step_ms_median": fa and fa["step_ms_median"],
            "arflow_params": fa and fa["params"]}
    for m, r in ft.items():
        if r:
            flow[f"torch_{m}_images_per_s"] = r["rate"]
            flow["torch_params"] = r["params"]
            if fa:
                flow[f"ratio_vs_torch_{m}"] = fa["images_per_s"] / r["rate"]
    if fa and "torch_params" in flow:
        flow["same_parameter_count"] = fa["params"] == flow["torch_params"]
summary = {
    "device": dev.get("nvidia_smi"), "torch": dev.get("torch"), "torch_cuda": dev.get("cuda_available"),
    "missing": dev.get("missing"), "ran_on": os.environ["DEV"], "parts": parts,
    "all_passed": all(v == "passed" for v in parts.values()),
    "elapsed_s": int(os.environ["ELAPSED"]), "budget_s": int(os.environ["BUDGET"]), "part_seconds": part_s,
    "tests": tests and {k: tests.get(k) for k in
                        ("status", "count", "failed", "panics", "skipped_without_device", "largest_worst_error", "training")},
    "rnn_parity": parity and {"passed": parity["passed"], "tol": parity["tol"], "worst_rel_to_scale": parity["worst_rel_to_scale"],
                              "cases": {c["name"]: c.get("worst") or c.get("error") for c in parity["cases"]}},
    "gru_fwd_bwd_vs_cudnn": gru,
    "realnvp_train_vs_torch": flow,
}
with open(dest, "w") as f:
    json.dump(summary, f, indent=2)
print(f"device: {summary['device'] or 'none'}; parts ran on {summary['ran_on']}; elapsed {summary['elapsed_s']} s of a {summary['budget_s']} s budget")
for k, v in parts.items():
    print(f"  {k:16s} {part_s[k]:>4} s  {v}")
if tests:
    print(f"  tests: {tests['count']} ran, failed {tests['failed'] or 'none'}; largest worst error {tests['largest_worst_error']}")
    for line in tests["training"]:
        print(f"    {line[:160]}")
if parity:
    print(f"  rnn parity vs PyTorch: {'passed' if parity['passed'] else 'FAILED'}, worst {parity['worst_rel_to_scale']} of scale (tol {parity['tol']})")
if gru:
    print("  GRU fwd+bwd tokens/s (events: cudarc's event tracking on the arflow side)")
    print(f"  {'H':>5} {'B':>4} {'events':>6}  {'arflow':>13} {'cuDNN f32':>13} {'ratio':>6} {'cuDNN tf32':>13} {'ratio':>6}")
    for r in gru:
        f = lambda k: r.get(k, float("nan"))
        ev = {True: "on", False: "off"}.get(r["event_tracking"], "?")
        print(f"  {r['hidden']:>5} {r['batch']:>4} {ev:>6}  {f('arflow_tokens_per_s_fwd_bwd'):>13.0f} "
              f"{f('cudnn_f32_tokens_per_s_fwd_bwd'):>13.0f} {f('ratio_vs_cudnn_f32_fwd_bwd'):>6.2f} "
              f"{f('cudnn_tf32_tokens_per_s_fwd_bwd'):>13.0f} {f('ratio_vs_cudnn_tf32_fwd_bwd'):>6.2f}")
if flow:
    g = lambda k, f: format(flow[k], f) if flow.get(k) is not None else "n/a"
    print(f"  Real NVP training images/s (batch 64): arflow {g('arflow_images_per_s', '.0f')}; "
          f"PyTorch f32 {g('torch_f32_images_per_s', '.0f')} (arflow/PyTorch {g('ratio_vs_torch_f32', '.2f')}); "
          f"PyTorch TF32 {g('torch_tf32_images_per_s', '.0f')} (arflow/PyTorch {g('ratio_vs_torch_tf32', '.2f')})")
EOF
[[ -s $OUT/summary.json ]] || log "summary: writing summary.json failed"
if [[ ${ARFLOW_GPU_KEEP_RAW:-0} == 1 ]]; then
  tar czf "$OUT/details.tar.gz" -C "$OUT" raw
else
  tar czf "$OUT/details.tar.gz" -C "$OUT" raw && rm -rf "$raw"
fi
log "done in $((SECONDS - t0)) s; results in $OUT (summary.json, gpu-check.log, details.tar.gz)"
for p in "${parts[@]}"; do [[ ${status[$p]:-} == passed ]] || exit 1; done
exit 0
