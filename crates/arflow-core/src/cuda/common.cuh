// Device helpers the kernel files share; each .cu includes this file (nvcc finds it beside them, and
// build.rs rebuilds every kernel when it changes).
#pragma once

// σ(x) = ½ + ½·tanh(½x): the form the CPU kernels use (crates/arflow-core/src/real.rs).
__device__ __forceinline__ float sigmoid_f(float x) {
    return 0.5f + 0.5f * tanhf(0.5f * x);
}

// The maximum over a block of THREADS threads (blockDim.x = THREADS, a power of two), a fixed tree, left
// in every thread. `shared` holds THREADS values; it is free for the next reduction on return.
template <int THREADS>
__device__ __forceinline__ float block_max(float v, float* shared) {
    const int tid = threadIdx.x;
    shared[tid] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if (tid < s) shared[tid] = fmaxf(shared[tid], shared[tid + s]);
        __syncthreads();
    }
    const float r = shared[0];
    __syncthreads();  // shared is reused by the next reduction
    return r;
}

// The sum over the block (f32 or f64), as block_max.
template <int THREADS, typename T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
    const int tid = threadIdx.x;
    shared[tid] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if (tid < s) shared[tid] += shared[tid + s];
        __syncthreads();
    }
    const T r = shared[0];
    __syncthreads();
    return r;
}
