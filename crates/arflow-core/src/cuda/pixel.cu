// The Pixel-RNN's input convolution and output head on CUDA: the gathers, scatters and fused loss passes
// around the cuBLAS GEMMs of crates/arflow-core/src/cuda/pixel.rs, f32. The math is that of
// crates/arflow-core/src/pixel/input_conv.rs and crates/arflow-core/src/pixel/head.rs.
//
// Layout, all row-major; N = B·R·C pixels, pixel (b, i, j) is row (b·R + i)·C + j:
//   x       [B, R, C]        the images (model inputs)
//   p       [H·49 + H]       input_conv.weight [H, 1, 7, 7] then input_conv.bias [H]
//   cols    [N, 25]          im2col rows: the 24 taps mask A keeps, in raster order of the 7×7 kernel (t < 21:
//                            (ky, kx) = (t / 7, t % 7); t = 21 … 23: (3, t − 21)), 0 outside the image, then 1
//   wmat    [25, H]          row t holds kept tap t of every output channel, row 24 the bias
//   dw      [25, H]          the GEMM weight gradient colsᵀ · dy, same rows
//   dp      [H·49 + H]       the packed parameter gradient (masked taps exactly 0)
//   bias    [W], out [N, W]  a bias broadcast over rows (before a GEMM accumulates onto it)
//   logits, dlogits [N, O]   the head's logits and ∂NLL/∂logits (O = 256 categorical, 1 Bernoulli)
//   targets [N] u32          pixel values; nll [N]
// The elementwise kernels are one thread per element they write, launched with ceil(elements / blockDim) blocks;
// pix_nll_categorical is one block of PIX_THREADS per row.

#include "common.cuh"

#define PIX_THREADS 256  // blockDim.x of pix_nll_categorical: a power of two
#define INPUT_TAPS 24

// cols [N, 25] from x [B, R, C] (every entry written).
extern "C" __global__ void pconv_im2col(
    const float* __restrict__ x,
    float* __restrict__ cols,
    int images, int rows, int ncols) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long hw = (long long)rows * ncols;
    if (idx >= (long long)images * hw * (INPUT_TAPS + 1)) return;
    const long long r = idx / (INPUT_TAPS + 1);
    const int t = (int)(idx - r * (INPUT_TAPS + 1));
    if (t == INPUT_TAPS) {
        cols[idx] = 1.0f;
        return;
    }
    const long long img = r / hw;
    const int pix = (int)(r - img * hw);
    const int i = pix / ncols;
    const int j = pix - i * ncols;
    const int ky = t < 21 ? t / 7 : 3;
    const int kx = t < 21 ? t % 7 : t - 21;
    const int sy = i + ky - 3, sx = j + kx - 3;
    float v = 0.0f;
    if (sy >= 0 && sy < rows && sx >= 0 && sx < ncols) v = x[(img * rows + sy) * ncols + sx];
    cols[idx] = v;
}

// wmat [25, H] from the packed parameters p.
extern "C" __global__ void pconv_weight(
    const float* __restrict__ p,
    float* __restrict__ wmat,
    int hidden) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)(INPUT_TAPS + 1) * hidden) return;
    const int t = (int)(idx / hidden);
    const int h = (int)(idx - (long long)t * hidden);
    if (t == INPUT_TAPS) {
        wmat[idx] = p[(long long)hidden * 49 + h];
        return;
    }
    const int ky = t < 21 ? t / 7 : 3;
    const int kx = t < 21 ? t % 7 : t - 21;
    wmat[idx] = p[(long long)h * 49 + ky * 7 + kx];
}

// dp [H·49 + H] from dw [25, H]: each kept tap's gradient at its place in the 7×7 layout, 0 at the masked taps,
// then the bias gradient.
extern "C" __global__ void pconv_scatter(
    const float* __restrict__ dw,
    float* __restrict__ dp,
    int hidden) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)hidden * 50) return;
    if (idx >= (long long)hidden * 49) {
        dp[idx] = dw[(long long)INPUT_TAPS * hidden + (idx - (long long)hidden * 49)];
        return;
    }
    const int h = (int)(idx / 49);
    const int k = (int)(idx - (long long)h * 49);
    const int ky = k / 7, kx = k % 7;
    float v = 0.0f;
    if (ky < 3) v = dw[(long long)(ky * 7 + kx) * hidden + h];
    else if (ky == 3 && kx < 3) v = dw[(long long)(21 + kx) * hidden + h];
    dp[idx] = v;
}

// out [rows, width] = bias broadcast over the rows.
extern "C" __global__ void pix_bias_rows(
    const float* __restrict__ bias,
    float* __restrict__ out,
    long long rows, int width) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * width) return;
    out[idx] = bias[idx % width];
}

// out = max(x, 0) over n values (NaN → 0, as the CPU's relu).
extern "C" __global__ void pix_relu(
    const float* __restrict__ x,
    float* __restrict__ out,
    long long n) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    const float v = x[idx];
    out[idx] = v > 0.0f ? v : 0.0f;
}

// The gradient through max(x, 0), in place on d [n]: 0 where x ≤ 0 (the CPU's test; NaN passes).
extern "C" __global__ void pix_relu_grad(
    const float* __restrict__ x,
    float* __restrict__ d,
    long long n) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    if (x[idx] <= 0.0f) d[idx] = 0.0f;
}

// out [rows, width] = d [rows, width] scaled by each row's upstream gradient g [rows].
extern "C" __global__ void pix_scale_rows(
    const float* __restrict__ d,
    const float* __restrict__ g,
    float* __restrict__ out,
    long long rows, int width) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * width) return;
    out[idx] = d[idx] * g[idx / width];
}

// x[0 .. n) = v: the ones vector whose product with a gradient sums its columns into a bias gradient.
extern "C" __global__ void pix_fill(float* __restrict__ x, float v, long long n) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < n) x[idx] = v;
}

// Grid: N blocks of PIX_THREADS. Row r: lse = max + log Σ exp(v − max), nll[r] = lse − v_t, dlogits = exp(v − lse)
// − [k = t] (the CPU's pixel_nll, in f32). A target outside 0 … classes − 1 (the caller checks them) gives NaN.
extern "C" __global__ void pix_nll_categorical(
    const float* __restrict__ logits,
    const unsigned int* __restrict__ targets,
    float* __restrict__ nll,
    float* __restrict__ dlogits,
    int classes) {
    __shared__ float shared[PIX_THREADS];
    const long long row = blockIdx.x;
    const unsigned int t = targets[row];
    const float* x = logits + row * classes;
    float* d = dlogits + row * classes;
    float m = -INFINITY;
    for (int k = threadIdx.x; k < classes; k += PIX_THREADS) m = fmaxf(m, x[k]);
    m = block_max<PIX_THREADS>(m, shared);
    float s = 0.0f;
    for (int k = threadIdx.x; k < classes; k += PIX_THREADS) s += expf(x[k] - m);
    s = block_sum<PIX_THREADS>(s, shared);
    const float lse = m + logf(s);
    for (int k = threadIdx.x; k < classes; k += PIX_THREADS) {
        const float p = expf(x[k] - lse);
        d[k] = (unsigned int)k == t ? p - 1.0f : p;
    }
    if (threadIdx.x == 0) nll[row] = t < (unsigned int)classes ? lse - x[t] : NAN;
}

// Row r of one logit s and a target t ∈ {0, 1}: nll[r] = softplus(s) − t·s, dlogits[r] = σ(s) − t.
extern "C" __global__ void pix_nll_bernoulli(
    const float* __restrict__ logits,
    const unsigned int* __restrict__ targets,
    float* __restrict__ nll,
    float* __restrict__ dlogits,
    long long rows) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows) return;
    const float s = logits[idx];
    const float t = (float)targets[idx];
    const float softplus = s > 0.0f ? s + log1pf(expf(-s)) : log1pf(expf(s));
    dlogits[idx] = 1.0f / (1.0f + expf(-s)) - t;
    nll[idx] = softplus - t * s;
}
