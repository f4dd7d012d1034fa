// Fused softmax cross-entropy on CUDA: the same math as crates/arflow-core/src/loss.rs, f32.
//   logits, probs [N, V] row-major; targets [N] u32, IGNORE (0xffffffff) marks a row that is not scored.
// Forward: ce_rows (one block per row) writes the row's softmax and −log p[target], then ce_mean (one block)
// averages over the scored rows. Backward: ce_grad, one thread per element, (p − onehot) · grad / scored.

#include "common.cuh"

#define CE_IGNORE 0xffffffffu
#define CE_THREADS 256  // blockDim.x of ce_rows and ce_mean: a power of two

// Grid: N blocks of CE_THREADS. Row i: probs = softmax(logits), row_loss = log Σ exp(v − max) − (v_t − max)
// (0, and probs untouched, for an ignored row). Targets were checked against V on the host.
extern "C" __global__ void ce_rows(
    const float* __restrict__ logits,
    const unsigned int* __restrict__ targets,
    float* __restrict__ probs,
    float* __restrict__ row_loss,
    int classes) {
    __shared__ float shared[CE_THREADS];
    const long long row = blockIdx.x;
    const unsigned int target = targets[row];
    if (target == CE_IGNORE) {  // uniform across the block: no thread reaches a barrier
        if (threadIdx.x == 0) row_loss[row] = 0.0f;
        return;
    }
    const float* x = logits + row * classes;
    float* p = probs + row * classes;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < classes; c += CE_THREADS) m = fmaxf(m, x[c]);
    m = block_max<CE_THREADS>(m, shared);
    float s = 0.0f;
    for (int c = threadIdx.x; c < classes; c += CE_THREADS) {
        const float e = expf(x[c] - m);
        p[c] = e;
        s += e;
    }
    s = block_sum<CE_THREADS>(s, shared);
    const float inv = 1.0f / s;
    for (int c = threadIdx.x; c < classes; c += CE_THREADS) p[c] *= inv;
    if (threadIdx.x == 0) row_loss[row] = logf(s) - (x[target] - m);
}

// One block of CE_THREADS: loss[0] = Σ row_loss / max(scored, 1), summed in f64 as the CPU does.
extern "C" __global__ void ce_mean(
    const float* __restrict__ row_loss,
    float* __restrict__ loss,
    int rows, int scored) {
    __shared__ double shared[CE_THREADS];
    double s = 0.0;
    for (int i = threadIdx.x; i < rows; i += CE_THREADS) s += (double)row_loss[i];
    s = block_sum<CE_THREADS>(s, shared);
    if (threadIdx.x == 0) loss[0] = (float)(s / (double)(scored > 0 ? scored : 1));
}

// d[i, c] = (p[i, c] · scale) − scale·[c = target_i], scale = grad[0] / max(scored, 1); 0 on ignored rows.
extern "C" __global__ void ce_grad(
    const float* __restrict__ probs,
    const unsigned int* __restrict__ targets,
    const float* __restrict__ grad,
    float* __restrict__ d,
    int rows, int classes, int scored) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)rows * classes) return;
    const long long row = idx / classes;
    const int c = (int)(idx - row * classes);
    const unsigned int target = targets[row];
    if (target == CE_IGNORE) {
        d[idx] = 0.0f;
        return;
    }
    const float scale = (float)((double)grad[0] / (double)(scored > 0 ? scored : 1));
    const float v = probs[idx] * scale;
    d[idx] = (unsigned int)c == target ? v - scale : v;
}
