// The fused affine coupling of Real NVP on CUDA: the same math as crates/arflow-core/src/flow/kernel.rs, f32.
//   s = scale ⊙ tanh(s_raw),  y = b ⊙ x + (1 − b) ⊙ (x ⊙ exp(s) + t),  logdet[n] = Σ_d (1 − b_d) · s[n, d]
//   (inverse: x = b ⊙ y + (1 − b) ⊙ ((y − t) ⊙ exp(−s)), log-det −logdet)
// Pass-through columns (b = 1) are copied, never computed: their s_raw and t are not read. The mask holds
// only 0 and 1 (checked on the host).
//
// Layout, the candle op's packed operands (crates/arflow-core/src/flow/op.rs), all row-major:
//   x      [N, D]       the input (y for the inverse)
//   st     [N, 2D]      each row s_raw then t
//   params [2, D]       the mask b, then scale
//   out    [N, D + 1]   each row y (x for the inverse) then the row's log-det
//   grad   [N, D + 1]   backward's upstream gradient, each row dy then dlogdet
//   dx     [N, D]
//   dst    [N, 2D]      each row ds_raw then dt
//   partial [C, D]      backward's dscale summed over each chunk of `chunk` rows (C = ceil(N / chunk))
//   dparams [2, D]      0 (the mask's gradient), then dscale

#define COUPLING_MAX_THREADS 256  // the largest blockDim.x of coupling_map
#define COUPLING_COLS 32          // blockDim.x of coupling_bwd: the columns of a block
#define COUPLING_ROWS 8           // blockDim.y of coupling_bwd: the rows a block walks at once

// Grid: N blocks of blockDim.x threads (a power of two, 32 .. COUPLING_MAX_THREADS). Row n: the map
// (forward, or with `inverse` the inverse) into out's first D columns and the log-det into its last,
// summed as a fixed tree over the block's threads, so the same on every run.
extern "C" __global__ void coupling_map(
    const float* __restrict__ x,
    const float* __restrict__ st,
    const float* __restrict__ params,
    float* __restrict__ out,
    int n, int d, int inverse) {
    __shared__ float shared[COUPLING_MAX_THREADS];
    const long long row = blockIdx.x;
    if (row >= n) return;  // uniform across the block: no thread reaches a barrier
    const float* xr = x + row * d;
    const float* s_raw = st + row * 2 * d;
    const float* t = s_raw + d;
    const float* mask = params;
    const float* scale = params + d;
    float* y = out + row * (d + 1);
    float logdet = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        if (mask[j] == 1.0f) {
            y[j] = xr[j];
        } else {
            const float s = scale[j] * tanhf(s_raw[j]);
            logdet += s;
            y[j] = inverse ? (xr[j] - t[j]) * expf(-s) : xr[j] * expf(s) + t[j];
        }
    }
    const int tid = threadIdx.x;
    shared[tid] = logdet;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (tid < k) shared[tid] += shared[tid + k];
        __syncthreads();
    }
    if (tid == 0) y[d] = inverse ? -shared[0] : shared[0];
}

// Grid: (ceil(D / COUPLING_COLS), C) blocks of (COUPLING_COLS, COUPLING_ROWS) threads. Block (c, k) covers
// columns c·COUPLING_COLS .. and rows k·chunk .. (k + 1)·chunk: dx, dst for each of its elements, and the
// chunk's share of dscale per column into partial[k, ·], summed over the block's rows in a fixed order.
// With m = 1 − b, e = exp(s):
//   dx = dy ⊙ (b + m ⊙ e),  ds = m ⊙ (dy ⊙ x ⊙ e + dlogdet),  dt = m ⊙ dy,
//   ds_raw = ds ⊙ scale ⊙ (1 − tanh²(s_raw)),  dscale = Σ_n ds ⊙ tanh(s_raw)
extern "C" __global__ void coupling_bwd(
    const float* __restrict__ x,
    const float* __restrict__ st,
    const float* __restrict__ params,
    const float* __restrict__ grad,
    float* __restrict__ dx,
    float* __restrict__ dst,
    float* __restrict__ partial,
    int n, int d, int chunk) {
    __shared__ float shared[COUPLING_ROWS][COUPLING_COLS + 1];
    const int j = blockIdx.x * COUPLING_COLS + threadIdx.x;
    const long long first = (long long)blockIdx.y * chunk;
    const long long end = min(first + chunk, (long long)n);
    float acc = 0.0f;
    if (j < d) {
        const bool pass = params[j] == 1.0f;
        const float scale = params[d + j];
        for (long long r = first + threadIdx.y; r < end; r += COUPLING_ROWS) {
            const float dy = grad[r * (d + 1) + j];
            float* dsr = dst + r * 2 * d;
            if (pass) {
                dx[r * d + j] = dy;
                dsr[j] = 0.0f;
                dsr[d + j] = 0.0f;
            } else {
                const float th = tanhf(st[r * 2 * d + j]);
                const float e = expf(scale * th);
                // y = x e^s + t, logdet += s;  s = scale · tanh(s_raw)
                const float ds = dy * x[r * d + j] * e + grad[r * (d + 1) + d];
                dx[r * d + j] = dy * e;
                dsr[d + j] = dy;
                dsr[j] = ds * scale * (1.0f - th * th);
                acc += ds * th;
            }
        }
    }
    shared[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < d) {
        float s = 0.0f;
        for (int k = 0; k < COUPLING_ROWS; ++k) s += shared[k][threadIdx.x];
        partial[(long long)blockIdx.y * d + j] = s;
    }
}

// One thread per column j < D: dparams = [0; Σ_k partial[k, j]], the chunks summed in order.
extern "C" __global__ void coupling_dscale(
    const float* __restrict__ partial,
    float* __restrict__ dparams,
    int d, int chunks) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    float s = 0.0f;
    for (int k = 0; k < chunks; ++k) s += partial[(long long)k * d + j];
    dparams[j] = 0.0f;
    dparams[d + j] = s;
}
