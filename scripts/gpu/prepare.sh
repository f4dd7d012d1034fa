#!/usr/bin/env bash
# Runs on the build machine (cargo, python3; no GPU needed): builds what scripts/gpu-check.sh runs on the
# GPU machine, which has no cargo, no Node and no network, into target/gpu/ (emptied first), each binary
# gzip-compressed (NAME.gz: about 2–4 MiB instead of 13–17; gpu-check.sh unpacks them):
#   arflow_core_cuda_tests   arflow-core's unit tests with the `cuda` feature (gpu-check runs the cuda:: ones)
#   gru_cuda_bench           examples/gru_cuda_bench.rs, the CUDA GRU layer timed at torch_gru.py's sizes
#   rnn_cuda_export          examples/rnn_cuda_export.rs, GRU/LSTM/RNN stacks run on the GPU and written out
#                            for scripts/gpu/torch_rnn_parity.py
#   flow_cuda_bench          examples/flow_cuda_bench.rs, Real NVP training throughput (the bench's preset,
#                            bench/specs/realnvp-fmnist.json, compiled in) on synthetic images
#   MANIFEST                 what was built from what: commit, nvcc, PTX ISA and target, sizes, sha256 (of
#                            the unpacked binaries)
# then prints what to carry to the GPU machine (target/gpu; the scripts travel with the working tree) and
# fails if the working tree and target/gpu together pass 60 MiB (the device tool carries 64 MiB at most).
#
# The CUDA 13.0 toolkit and the link stubs come from scripts/build-native-cuda.sh: it is run when they are
# missing, or always with --addon (it also builds the CUDA addon, which the GPU machine cannot load
# without Node, so it is not needed there). Builds into target/cuda (CARGO_TARGET_DIR), never target/release.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
addon=0
for arg in "$@"; do
  case $arg in
    --addon) addon=1 ;;
    *) echo "prepare: unknown argument $arg (only --addon)" >&2; exit 2 ;;
  esac
done

. scripts/gpu/env.sh
if [[ $addon == 1 || ! -x $CUDA_ROOT/bin/nvcc || ! -f $CUDA_ROOT/lib/stubs/libcublas.so ]]; then
  bash scripts/build-native-cuda.sh
fi
[[ $(nvcc --version) == *"release 13.0,"* ]] || { echo "prepare: $(command -v nvcc) is not CUDA 13.0" >&2; exit 1; }

out=$root/target/gpu
rm -rf "$out"
mkdir -p "$out"
t0=$SECONDS

# The unit-test binary of arflow-core's library (the cuda:: tests live there); cargo names its path.
echo "prepare: cargo test --release --features cuda -p arflow-core --lib --no-run"
tests=$(cargo test --release --features cuda -p arflow-core --lib --no-run --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable")
       and m["target"]["name"] == "arflow_core"]
if len(exe) != 1:
    sys.exit(f"prepare: expected one test binary, got {exe}")
print(exe[0])')
examples=(gru_cuda_bench rnn_cuda_export flow_cuda_bench)
echo "prepare: cargo build --release --features cuda -p arflow-core ${examples[*]/#/--example }"
cargo build --release --features cuda -p arflow-core "${examples[@]/#/--example=}"

# Copies without debug info (the symbols stay, for backtraces): what travels is kept small.
for pair in "$tests:arflow_core_cuda_tests" "${examples[@]/#/$CARGO_TARGET_DIR/release/examples/}"; do
  [[ $pair == *:* ]] || pair=$pair:${pair##*/}
  src=${pair%%:*} dst=$out/${pair#*:}
  objcopy --strip-debug "$src" "$dst.tmp"
  mv "$dst.tmp" "$dst"
  chmod +x "$dst"
done

# The PTX our kernels were compiled to (build.rs writes it next to the build script's output): its ISA
# version must not be newer than the GPU driver's CUDA (13.0 → PTX ISA 9.0).
ptx_info=""
for k in rnn gru lstm tanh loss coupling adamw conv heads pixel pixel_row; do
  f=$(ls -t "$CARGO_TARGET_DIR"/release/build/arflow-core-*/out/$k.ptx 2>/dev/null | head -1 || true)
  [[ -n $f ]] || { echo "prepare: no $k.ptx under $CARGO_TARGET_DIR/release/build" >&2; exit 1; }
  v=$(sed -n 's/^\.version //p' "$f" | head -1) target=$(sed -n 's/^\.target //p' "$f" | head -1)
  entry=$(sed -n 's/^\.visible \.entry \([A-Za-z0-9_]*\)(.*/\1/p' "$f" | head -1)
  grep -q "\.entry $entry(" <(strings "$out/arflow_core_cuda_tests") ||
    { echo "prepare: $k.ptx (kernel $entry) is not embedded in the test binary" >&2; exit 1; }
  ptx_info+="ptx $k.cu: .version $v .target $target"$'\n'
done

{
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse HEAD)$(git diff --quiet HEAD -- crates scripts || echo ' + uncommitted changes')"
  echo "nvcc: $(nvcc --version | grep -o 'release [0-9.]*, V[0-9.]*')"
  echo "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
  printf '%s' "$ptx_info"
  for f in arflow_core_cuda_tests "${examples[@]}"; do
    echo "$f: $(du -h "$out/$f" | cut -f1), sha256 $(sha256sum "$out/$f" | cut -c1-16)…, needs: $(readelf -d "$out/$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  done
} >"$out/MANIFEST"
cat "$out/MANIFEST"
for f in arflow_core_cuda_tests "${examples[@]}"; do
  gzip -9 -n "$out/$f"
done
# The device tool carries the working tree (tracked and untracked files git does not ignore) and target/gpu,
# 64 MiB at most in all.
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
bundle=$(du -sb "$out" | cut -f1)
echo "prepare: working tree $((tree / 1048576)) MiB + target/gpu $((bundle / 1048576)) MiB to carry"
if (( tree + bundle > 60 * 1048576 )); then
  echo "prepare: that is over 60 MiB; the device tool takes 64 MiB at most" >&2
  exit 1
fi
echo "prepare: done in $((SECONDS - t0)) s. Carry target/gpu ($(du -sh "$out" | cut -f1)) to the GPU machine and run, from the repo root:"
echo "  bash scripts/gpu-check.sh        # results in \$OUT, else ./gpu-results"
