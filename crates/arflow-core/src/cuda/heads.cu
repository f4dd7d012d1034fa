// The likelihood heads on CUDA: the same math as crates/arflow-core/src/heads/{gaussian,mdn}.rs, f32
// storage, every value computed in double inside the kernels as the CPU computes in f64 (each input is
// widened before any arithmetic, so the formulas, safeguards and rounding points are the CPU's).
//
// Layout, the candle ops' operands (crates/arflow-core/src/heads/{mod,linear}.rs), all row-major:
//   raw    [N, S]   a row's raw outputs. Gaussian: S = 2D, [μ (D), s (D)]. MDN: S = K (1 + 2D) + K·[D = 2],
//                   [π logits (K), μ (K·D), s (K·D), ρ raw (K, D = 2 only)], component-major (μ[k·D + d])
//   y      [N, D]   the targets
//   nll    [N]      the per-row NLL (nats)
//   grad   [N, S]   ∂NLL_r/∂raw_r (the *_grad kernels only)
//   up     [N]      backward's upstream gradient ∂L/∂NLL_r
//   g      [N, S]   backward's G = diag(up) · grad
//   bias   [S]      the linear layer's bias (the fused op's params after W [S, H])
//   db     [S]      Σ_rows G
// σ = exp(s) (no clamp, as the CPU), ρ = RHO_SCALE · tanh(ρ raw), π = softmax(logits); the MDN's NLL is
// −log Σ_k π_k N_k by log-sum-exp over log π_k + log N_k, 1 − ρ² as (1 − ρ)(1 + ρ).

#define HALF_LOG_2PI 0.9189385332046728  // ½ log 2π, heads::HALF_LOG_2PI
#define RHO_SCALE (1.0 - 1e-6)           // heads::RHO_SCALE
#define HEAD_COLS 32                     // blockDim.x of head_colsum: the columns of a block
#define HEAD_ROWS 32                     // blockDim.y of head_colsum: the rows a block walks at once

// Butterfly max / sum over the `group` lanes (a power of two ≤ 32, aligned in the warp) that share a row;
// every lane of the group gets the same bits (each step adds the same two values, in either order). All
// 32 lanes of the warp must call it.
__device__ __forceinline__ double group_max(double v, int group) {
    for (int o = group / 2; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o, group));
    return v;
}

__device__ __forceinline__ double group_sum(double v, int group) {
    for (int o = group / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, group);
    return v;
}

// Grid: one thread per row (elementwise over N). NLL = Σ_d [½ log 2π + s_d + ½ z_d²], z = (y − μ) e^−s;
// with KEEP also ∂/∂μ_d = −z_d e^−s_d, ∂/∂s_d = 1 − z_d².
template <bool KEEP>
__device__ __forceinline__ void gaussian_rows(
    const float* __restrict__ raw,
    const float* __restrict__ y,
    float* __restrict__ nll,
    float* __restrict__ grad,
    int n, int dim) {
    const long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= n) return;
    const float* r = raw + row * 2 * dim;
    const float* t = y + row * dim;
    double acc = 0.0;
    for (int d = 0; d < dim; ++d) {
        const double s = (double)r[dim + d];
        const double inv = exp(-s);
        const double z = ((double)t[d] - (double)r[d]) * inv;
        acc += HALF_LOG_2PI + s + 0.5 * z * z;
        if (KEEP) {
            float* g = grad + row * 2 * dim;
            g[d] = (float)(-z * inv);
            g[dim + d] = (float)(1.0 - z * z);
        }
    }
    nll[row] = (float)acc;
}

extern "C" __global__ void head_gaussian(
    const float* __restrict__ raw, const float* __restrict__ y, float* __restrict__ nll, int n, int dim) {
    gaussian_rows<false>(raw, y, nll, nullptr, n, dim);
}

extern "C" __global__ void head_gaussian_grad(
    const float* __restrict__ raw,
    const float* __restrict__ y,
    float* __restrict__ nll,
    float* __restrict__ grad,
    int n, int dim) {
    gaussian_rows<true>(raw, y, nll, grad, n, dim);
}

// What the bivariate gradient reuses of a component: z₁, z₂, 1/σ₁, 1/σ₂, ρ, 1 − ρ².
struct Biv {
    double z1, z2, inv1, inv2, rho, omr;
};

// log π_k + log N_k(y) of component k of the row `r` (targets `t`), `log_z` the log-softmax's shift; for
// D = 2 also fills `b`. The CPU's mdn::row_nll, one component, in its order of operations.
__device__ __forceinline__ double mdn_ell(const float* r, const float* t, int dim, int kk, int k, double log_z, Biv& b) {
    const int mu = kk, ls = kk + kk * dim;
    double log_n = 0.0;
    if (dim == 2) {
        const int rh = ls + kk * 2;
        const double s1 = (double)r[ls + k * 2], s2 = (double)r[ls + k * 2 + 1];
        b.inv1 = exp(-s1);
        b.z1 = ((double)t[0] - (double)r[mu + k * 2]) * b.inv1;
        log_n -= HALF_LOG_2PI + s1;
        b.inv2 = exp(-s2);
        b.z2 = ((double)t[1] - (double)r[mu + k * 2 + 1]) * b.inv2;
        log_n -= HALF_LOG_2PI + s2;
        b.rho = RHO_SCALE * tanh((double)r[rh + k]);
        b.omr = (1.0 - b.rho) * (1.0 + b.rho);
        const double u = b.z1 - b.rho * b.z2;
        log_n -= 0.5 * log(b.omr) + 0.5 * (u * u / b.omr + b.z2 * b.z2);
    } else {
        for (int d = 0; d < dim; ++d) {
            const double s = (double)r[ls + k * dim + d];
            const double inv = exp(-s);
            const double zz = ((double)t[d] - (double)r[mu + k * dim + d]) * inv;
            log_n -= HALF_LOG_2PI + s;
            log_n -= 0.5 * zz * zz;
        }
    }
    return (double)r[k] - log_z + log_n;
}

// Grid: ceil(N / (blockDim.x / group)) blocks of blockDim.x threads (a multiple of 32); `group` (a power of
// two ≤ 32, ≥ K where K ≤ 32) consecutive lanes of a warp per row, lane j of the group taking components
// j, j + group, … . The log-softmax's and the log-sum-exp's max and sum are group_max / group_sum. Lanes
// of a row past N take part in the shuffles only. With KEEP, each lane writes its components' gradient:
// ∂/∂logit_k = π_k − γ_k, γ_k = exp(ell_k − lse), and the μ, s (and ρ) terms of heads/mdn.rs.
template <bool KEEP>
__device__ __forceinline__ void mdn_rows(
    const float* __restrict__ raw,
    const float* __restrict__ y,
    float* __restrict__ nll,
    float* __restrict__ grad,
    int n, int dim, int kk, int group) {
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long row = tid / group;
    const int sub = (int)(tid % group);
    const bool valid = row < n;
    const int size = kk * (1 + 2 * dim + (dim == 2 ? 1 : 0));
    const float* r = raw + (valid ? row : 0) * size;
    const float* t = y + (valid ? row : 0) * dim;
    const int kend = valid ? kk : 0;

    // log π by log-softmax, shifted by the largest logit.
    double amax = -INFINITY;
    for (int k = sub; k < kend; k += group) amax = fmax(amax, (double)r[k]);
    amax = group_max(amax, group);
    double asum = 0.0;
    for (int k = sub; k < kend; k += group) asum += exp((double)r[k] - amax);
    asum = group_sum(asum, group);
    const double log_z = amax + log(asum);

    // ell_k = log π_k + log N_k; the lane's first component kept, any further one (K > 32) recomputed.
    Biv b0 = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, b;
    const double ell0 = sub < kend ? mdn_ell(r, t, dim, kk, sub, log_z, b0) : -INFINITY;
    double lmax = ell0;
    for (int k = sub + group; k < kend; k += group) lmax = fmax(lmax, mdn_ell(r, t, dim, kk, k, log_z, b));
    lmax = group_max(lmax, group);
    double lsum = 0.0;
    for (int k = sub; k < kend; k += group) {
        const double ell = k == sub ? ell0 : mdn_ell(r, t, dim, kk, k, log_z, b);
        lsum += exp(ell - lmax);
    }
    lsum = group_sum(lsum, group);
    const double lse = lmax + log(lsum);
    if (!valid) return;  // past the last shuffle
    if (sub == 0) nll[row] = (float)(-lse);
    if (!KEEP) return;

    float* g = grad + row * size;
    const int mu = kk, ls = kk + kk * dim, rh = ls + kk * dim;
    for (int k = sub; k < kk; k += group) {
        double ell;
        if (k == sub) {
            ell = ell0;
            b = b0;
        } else {
            ell = mdn_ell(r, t, dim, kk, k, log_z, b);
        }
        const double gamma = exp(ell - lse);
        g[k] = (float)(exp((double)r[k] - log_z) - gamma);
        if (dim == 2) {
            const double rr = (double)r[rh + k];
            const double u = b.z1 - b.rho * b.z2;
            const double v = b.z2 - b.rho * b.z1;
            const double w = u * u / b.omr + b.z2 * b.z2;
            g[mu + k * 2] = (float)(-gamma * u * b.inv1 / b.omr);
            g[mu + k * 2 + 1] = (float)(-gamma * v * b.inv2 / b.omr);
            g[ls + k * 2] = (float)(gamma * (1.0 - b.z1 * u / b.omr));
            g[ls + k * 2 + 1] = (float)(gamma * (1.0 - b.z2 * v / b.omr));
            const double sech = 1.0 / cosh(rr);
            g[rh + k] = (float)(-gamma * (b.rho + b.z1 * b.z2 - b.rho * w) / b.omr * RHO_SCALE * sech * sech);
        } else {
            for (int d = 0; d < dim; ++d) {
                const double s = (double)r[ls + k * dim + d];
                const double inv = exp(-s);
                const double zz = ((double)t[d] - (double)r[mu + k * dim + d]) * inv;
                g[mu + k * dim + d] = (float)(-gamma * zz * inv);
                g[ls + k * dim + d] = (float)(gamma * (1.0 - zz * zz));
            }
        }
    }
}

extern "C" __global__ void head_mdn(
    const float* __restrict__ raw,
    const float* __restrict__ y,
    float* __restrict__ nll,
    int n, int dim, int kk, int group) {
    mdn_rows<false>(raw, y, nll, nullptr, n, dim, kk, group);
}

extern "C" __global__ void head_mdn_grad(
    const float* __restrict__ raw,
    const float* __restrict__ y,
    float* __restrict__ nll,
    float* __restrict__ grad,
    int n, int dim, int kk, int group) {
    mdn_rows<true>(raw, y, nll, grad, n, dim, kk, group);
}

// Elementwise over N·S: g[i] = grad[i] · up[i / S] (the product in double, as the CPU's).
extern "C" __global__ void head_scale(
    const float* __restrict__ grad,
    const float* __restrict__ up,
    float* __restrict__ g,
    long long len, int size) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    g[i] = (float)((double)grad[i] * (double)up[i / size]);
}

// Elementwise over N·S: raw[i] = bias[i mod S] (what the linear layer's GEMM then adds h·Wᵀ to).
extern "C" __global__ void head_bias_rows(
    const float* __restrict__ bias,
    float* __restrict__ raw,
    long long len, int size) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    raw[i] = bias[i % size];
}

// Grid: ceil(S / HEAD_COLS) blocks of (HEAD_COLS, HEAD_ROWS) threads. db[j] = Σ_n g[n, j]: thread (x, y) sums
// rows y, y + HEAD_ROWS, … of column j in double, then the block's HEAD_ROWS partials are added in order
// (deterministic: the order depends on N and S only).
extern "C" __global__ void head_colsum(
    const float* __restrict__ g,
    float* __restrict__ db,
    int n, int size) {
    __shared__ double shared[HEAD_ROWS][HEAD_COLS + 1];
    const int j = blockIdx.x * HEAD_COLS + threadIdx.x;
    double acc = 0.0;
    if (j < size) {
        for (long long r = threadIdx.y; r < n; r += HEAD_ROWS) acc += (double)g[r * size + j];
    }
    shared[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < size) {
        double s = 0.0;
        for (int k = 0; k < HEAD_ROWS; ++k) s += shared[k][threadIdx.x];
        db[j] = (float)s;
    }
}
