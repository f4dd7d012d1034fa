# Sourced (not run): the environment of scripts/build-native-cuda.sh for building arflow-core's `cuda`
# feature by hand, e.g. `. scripts/gpu/env.sh && cargo check --features cuda -p arflow-core`.
# The toolkit and the link stubs must already be there: scripts/build-native-cuda.sh installs them
# (scripts/gpu/prepare.sh runs it first).
_arflow_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CUDA_ROOT=${ARFLOW_CUDA_CACHE:-$_arflow_root/.cuda}/py/nvidia/cu13
export PATH=$CUDA_ROOT/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$_arflow_root/target/cuda}
unset _arflow_root
