// The fused AdamW update and the global gradient norm on CUDA: the same update as the host step of
// crates/arflow-core/src/optim.rs (PyTorch's order, decoupled weight decay, bias correction), in f32.
//   p, g, m, s   [n]   a parameter, its gradient, and its first and second moments, updated in place
//   partial      [K]   sq_sum_partial's per-block sums of squares, f64
//   out          [1]   sum_partials' total, f64

#include "common.cuh"

#define NORM_THREADS 256  // blockDim.x of sq_sum_partial and sum_partials: a power of two

// One thread per element, ceil(n / blockDim) blocks. With the clipped gradient g' = g · scale:
//   m ← β1 m + (1 − β1) g',  s ← β2 s + (1 − β2) g'²,  p ← p · decay − lr · (m / bc1) / (√(s / bc2) + eps)
// decay = 1 − lr · weight_decay, bc1, bc2 the bias corrections 1 − β^t; (1 − β) computed on the host.
extern "C" __global__ void adamw_step(
    float* __restrict__ p,
    const float* __restrict__ g,
    float* __restrict__ m,
    float* __restrict__ s,
    long long n,
    float scale, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
    float lr, float eps, float decay, float bc1, float bc2) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    const float gs = g[idx] * scale;
    const float mt = beta1 * m[idx] + one_minus_beta1 * gs;
    const float st = beta2 * s[idx] + one_minus_beta2 * gs * gs;
    p[idx] = p[idx] * decay - lr * (mt / bc1) / (sqrtf(st / bc2) + eps);
    m[idx] = mt;
    s[idx] = st;
}

// First pass of Σ x²: K blocks of NORM_THREADS (K fixed by n on the host), each thread striding by
// K · NORM_THREADS, summed in f64; block k writes partial[k]. The same on every run.
extern "C" __global__ void sq_sum_partial(const float* __restrict__ x, long long n, double* __restrict__ partial) {
    __shared__ double shared[NORM_THREADS];
    const long long stride = (long long)gridDim.x * NORM_THREADS;
    double acc = 0.0;
    for (long long i = (long long)blockIdx.x * NORM_THREADS + threadIdx.x; i < n; i += stride) {
        const double v = (double)x[i];
        acc += v * v;
    }
    acc = block_sum<NORM_THREADS>(acc, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Second pass: one block of NORM_THREADS; out[0] = Σ partial[0 .. k), each thread's share in order, then
// the fixed tree.
extern "C" __global__ void sum_partials(const double* __restrict__ partial, int k, double* __restrict__ out) {
    __shared__ double shared[NORM_THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < k; i += NORM_THREADS) acc += partial[i];
    acc = block_sum<NORM_THREADS>(acc, shared);
    if (threadIdx.x == 0) out[0] = acc;
}
