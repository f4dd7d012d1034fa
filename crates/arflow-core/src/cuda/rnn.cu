// The kernels every recurrent cell's CUDA backward shares (crates/arflow-core/src/cuda/rnn.rs), f32.
//
// Layout, batch-first as on the CPU: row b·T + t of a [B·T, ·] matrix is batch element b at time t.
//   h0     [B, S]      the initial state; S = `state` is H, or 2H for the LSTM's rows (h, c)
//   out    [B, T, S]   the layer's output, the h of each row in its first H values
//   delta  [B, H]
// One thread per (b, j), j < H: launched with ceil(B·H / blockDim) blocks.

// delta_b = h0_b − (the last h of element b − 1; nothing for b = 0): the correction that lets one GEMM over
// out rows 0 .. B·T − 2 stand for h_prev in dW_hh (see weight_grads in crates/arflow-core/src/rnn/common.rs).
extern "C" __global__ void rnn_h0_delta(
    const float* __restrict__ h0,
    const float* __restrict__ out,
    float* __restrict__ delta,
    int batch, int seq, int hidden, int state) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * hidden) return;
    const int b = (int)(idx / hidden);
    const int j = (int)(idx - (long long)b * hidden);
    float d = h0[(long long)b * state + j];
    if (b > 0) d -= out[((long long)b * seq - 1) * state + j];
    delta[idx] = d;
}

// x[0 .. n) = v: the ones vector whose product with the gate gradients sums them into the bias gradients.
// One thread per element.
extern "C" __global__ void fill_f32(float* __restrict__ x, float v, int n) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < n) x[idx] = v;
}
