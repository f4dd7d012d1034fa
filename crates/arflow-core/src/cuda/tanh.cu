// The fused elementwise passes of the vanilla RNN layer (nn.RNN, nonlinearity tanh) on CUDA: the same math
// as crates/arflow-core/src/rnn/tanh.rs, h' = tanh(W_ih x + b_ih + W_hh h + b_hh), f32.
//
// Layout, batch-first as on the CPU: row b·T + t of a [B·T, ·] matrix is batch element b at time t.
//   out    [B, T, H]   the hidden states; forward: enters holding gi = x·W_ihᵀ (no bias) in every row, each
//                      step overwrites its rows with h_t (the rows of step t − 1 are h_{t-1} by then)
//   gh     [B, H]      h_{t-1}·W_hhᵀ of the current step (no bias)
//   bias   [2H]        b_ih then b_hh, as packed in the layer's parameters
//   dg     [B·T, H]    backward: the gradient w.r.t. the pre-activation of each row
//   dh     [B, H]      backward's running dL/dh_t through step t+1; dL/dh0 at the end
// One thread per (b, j), j < H; every kernel is launched with ceil(B·H / blockDim) blocks.

// One time step t of the forward pass: h_t over the input projection of row (b, t) in out.
extern "C" __global__ void rnn_tanh_cell_fwd(
    const float* __restrict__ gh,
    const float* __restrict__ bias,
    float* __restrict__ out,
    int batch, int seq, int hidden, int t) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * hidden) return;
    const int b = (int)(idx / hidden);
    const int j = (int)(idx - (long long)b * hidden);
    const long long at = ((long long)b * seq + t) * hidden + j;
    out[at] = tanhf((out[at] + bias[j]) + (gh[idx] + bias[hidden + j]));
}

// One time step t of backward: dg = (dy + dh) ⊙ (1 − h²), tanh' from h_t itself. The GEMM
// dh = dg_t · W_hh that follows overwrites dh with dL/dh_{t-1}.
extern "C" __global__ void rnn_tanh_cell_bwd(
    const float* __restrict__ out,
    const float* __restrict__ d_out,
    const float* __restrict__ dh,
    float* __restrict__ dg,
    int batch, int seq, int hidden, int t) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * hidden) return;
    const int b = (int)(idx / hidden);
    const int j = (int)(idx - (long long)b * hidden);
    const long long at = ((long long)b * seq + t) * hidden + j;
    const float h = out[at];
    dg[at] = (d_out[at] + dh[idx]) * (1.0f - h * h);
}
