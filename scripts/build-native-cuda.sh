#!/usr/bin/env bash
# Builds the CUDA flavour of the native addon, arflow.<platform>-cuda.node at the repo root, on a machine
# with no GPU and no CUDA install (Linux x86-64 only):
#   1. installs a CUDA 13.0 compiler (nvcc, cicc, ptxas and the headers) from PyPI's NVIDIA wheels into
#      .cuda/ (gitignored; skipped when already there for the pinned versions);
#   2. writes link stubs for libcuda, libnvrtc, libcurand, libcublas and libcublasLt into its lib/stubs
#      (what a CUDA toolkit's stubs folder holds): the addon links them by soname, and the machine that
#      runs it supplies the real ones (libcuda.so.1 comes with the NVIDIA driver);
#   3. runs `cargo build --release -p arflow-node --features cuda`, as scripts/install.mjs does for the CPU
#      addon, and copies the library next to the CPU one.
# The toolkit is pinned to 13.0 because a driver loads no PTX made by a newer nvcc than its own CUDA version,
# and the GPU machines run driver 580 (CUDA 13.0). CUDA_COMPUTE_CAP (default 90, Hopper) picks the PTX target
# of candle's kernels. Cargo builds into target/cuda unless CARGO_TARGET_DIR says otherwise, so the CUDA build
# never overwrites or invalidates the CPU build in target/release. Needs python3 with pip, cargo, a C compiler (cc).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${ARFLOW_CUDA_CACHE:-$root/.cuda}
CARGO_TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-$root/target/cuda}") # before the cd: relative to the caller
export CARGO_TARGET_DIR
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
wheels=(
  nvidia-cuda-nvcc==13.0.88    # nvcc, ptxas, fatbinary
  nvidia-nvvm==13.0.88         # cicc, libdevice
  nvidia-cuda-crt==13.0.88     # include/crt
  nvidia-cuda-runtime==13.0.96 # cuda.h, cuda_runtime.h, cuda_fp16.h, ...
  nvidia-cuda-cccl==13.0.85    # include/nv/target (cuda_fp16.hpp needs it), cub, thrust
)
stubs=(cuda:libcuda.so.1 nvrtc:libnvrtc.so.13 curand:libcurand.so.10 cublas:libcublas.so.13 cublasLt:libcublasLt.so.13)

[[ $(uname -s)-$(uname -m) == Linux-x86_64 ]] || { echo "build-native-cuda: Linux x86-64 only" >&2; exit 1; }
t0=$SECONDS
elapsed() { echo "build-native-cuda: $1 in $(($SECONDS - $2)) s"; }

# 1. The toolkit.
toolkit=$cache/py/nvidia/cu13
stamp=$cache/py/.installed
if [[ ! -x $toolkit/bin/nvcc || $(cat "$stamp" 2>/dev/null) != "${wheels[*]}" ]]; then
  t=$SECONDS
  echo "build-native-cuda: installing ${wheels[*]} into $cache/py"
  rm -rf "$cache/py" "$cache/py.tmp"
  mkdir -p "$cache"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary=:all: --no-compile \
    --target "$cache/py.tmp" "${wheels[@]}"
  mv "$cache/py.tmp" "$cache/py"
  echo "${wheels[*]}" >"$stamp"
  elapsed "toolkit installed" $t
fi
export CUDA_ROOT=$toolkit
export PATH=$toolkit/bin:$PATH
[[ $(nvcc --version) == *"release 13.0,"* ]] || { echo "build-native-cuda: $(command -v nvcc) is not CUDA 13.0" >&2; exit 1; }
[[ $'\n'$(nvcc --list-gpu-code)$'\n' == *$'\n'"sm_$CUDA_COMPUTE_CAP"$'\n'* ]] ||
  { echo "build-native-cuda: nvcc cannot target sm_$CUDA_COMPUTE_CAP" >&2; exit 1; }

# 2. Link stubs, one function for each name cudarc's bindings declare (the real libraries export them all).
cd "$root"
cargo fetch --quiet
cudarc=$(cargo metadata --format-version 1 --features arflow-node/cuda --filter-platform x86_64-unknown-linux-gnu |
  python3 -c 'import json,sys,os; print(next(os.path.dirname(p["manifest_path"]) for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))')
mkdir -p "$toolkit/lib/stubs"
for entry in "${stubs[@]}"; do
  lib=${entry%%:*} soname=${entry#*:}
  case $lib in cuda) src=driver ;; cublasLt) src=cublaslt ;; *) src=$lib ;; esac
  out=$toolkit/lib/stubs/lib$lib.so
  if [[ ! -f $out || $out -ot $cudarc/src/$src/sys/mod.rs ]]; then
    grep -oE '^\s*pub fn [A-Za-z0-9_]+\(' "$cudarc/src/$src/sys/mod.rs" | sed -E 's/.*pub fn ([A-Za-z0-9_]+)\(/\1/' |
      sort -u | sed 's/.*/int &(void) { return 34; }/' >"$out.c" # 34: CUDA_ERROR_STUB_LIBRARY
    cc -shared -fPIC -nostdlib -Wl,-soname,"$soname" -o "$out" "$out.c"
    rm "$out.c"
  fi
done

# 3. The addon.
t=$SECONDS
echo "build-native-cuda: cargo build --release -p arflow-node --features cuda (sm_$CUDA_COMPUTE_CAP PTX) into $CARGO_TARGET_DIR"
cargo build --release -p arflow-node --features cuda
elapsed "cargo build" $t
node=$root/arflow.linux-x64-gnu-cuda.node
cp "$CARGO_TARGET_DIR/release/libarflow_node.so" "$node.tmp-$$"
mv "$node.tmp-$$" "$node"
echo "build-native-cuda: built $node ($(du -h "$node" | cut -f1)); it needs at run time:"
readelf -d "$node" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  \1/p'
elapsed "done" $t0
