// The fused elementwise passes of the GRU layer on CUDA: the same math as crates/arflow-core/src/rnn/gru.rs
// (PyTorch nn.GRU semantics, gate order r, z, n, b_hn inside the reset product), f32.
//
// Layout, batch-first as on the CPU: row b·T + t of a [B·T, ·] matrix is batch element b at time t.
//   out    [B, T, H]   the hidden states (h_t of element b at out + (b·T + t)·H)
//   gates  [B·T, 4H]   forward: enters holding gi = x·W_ihᵀ (no bias) in its first 3H columns, each cell
//                      leaves [r, z, n, hn] (hn = W_hn h + b_hn); backward overwrites each row with
//                      [da_r, da_z, r ⊙ da_n, da_n]. Without saving, rows are ld_gates = 3H wide.
//   gh     [B, 3H]     h_{t-1}·W_hhᵀ of the current step (no bias)
//   bias   [6H]        b_ih then b_hh, as packed in the layer's parameters
// One thread per (b, j), j < H; every kernel is launched with ceil(B·H / blockDim) blocks.

#include "common.cuh"

// One time step t of the forward pass: h_t into out, and with `save` the activations into gates.
extern "C" __global__ void gru_cell_fwd(
    const float* __restrict__ gh,
    const float* __restrict__ bias,
    const float* __restrict__ h0,
    float* __restrict__ out,
    float* __restrict__ gates,
    int batch, int seq, int hidden, int t, int ld_gates, int save) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * hidden) return;
    const int b = (int)(idx / hidden);
    const int j = (int)(idx - (long long)b * hidden);
    const long long row = (long long)b * seq + t;

    float* g = gates + row * ld_gates;
    const float* ghb = gh + (long long)b * 3 * hidden;
    const float h_prev = t == 0 ? h0[(long long)b * hidden + j] : out[(row - 1) * hidden + j];

    const float a_r = (g[j] + bias[j]) + (ghb[j] + bias[3 * hidden + j]);
    const float a_z = (g[hidden + j] + bias[hidden + j]) + (ghb[hidden + j] + bias[4 * hidden + j]);
    const float hn = ghb[2 * hidden + j] + bias[5 * hidden + j];
    const float r = sigmoid_f(a_r);
    const float z = sigmoid_f(a_z);
    const float n = tanhf((g[2 * hidden + j] + bias[2 * hidden + j]) + r * hn);
    out[row * hidden + j] = (1.0f - z) * n + z * h_prev;
    if (save) {
        g[j] = r;
        g[hidden + j] = z;
        g[2 * hidden + j] = n;
        g[3 * hidden + j] = hn;
    }
}

// One time step t of backward: the gate gradients of row (b, t) over its saved activations, and the direct
// path of dL/dh_{t-1} (dh_t ⊙ z) into dh. dh [B, H] enters as what steps t+1.. sent back to h_t; the
// GEMM dh += dgh_t · W_hh that follows adds the path through the recurrent weights.
extern "C" __global__ void gru_cell_bwd(
    float* __restrict__ gates,
    const float* __restrict__ h0,
    const float* __restrict__ out,
    const float* __restrict__ d_out,
    float* __restrict__ dh,
    int batch, int seq, int hidden, int t) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * hidden) return;
    const int b = (int)(idx / hidden);
    const int j = (int)(idx - (long long)b * hidden);
    const long long row = (long long)b * seq + t;

    float* g = gates + row * 4 * hidden;
    const float h_prev = t == 0 ? h0[(long long)b * hidden + j] : out[(row - 1) * hidden + j];
    const float r = g[j], z = g[hidden + j], n = g[2 * hidden + j], hn = g[3 * hidden + j];
    const float dht = d_out[row * hidden + j] + dh[idx];
    // h' = (1 − z) n + z h
    const float dn = dht * (1.0f - z);
    const float dz = dht * (h_prev - n);
    // n = tanh(a_n), a_n = gi_n + r ⊙ hn;  r, z = σ(a_r), σ(a_z)
    const float da_n = dn * (1.0f - n * n);
    g[j] = da_n * hn * r * (1.0f - r);
    g[hidden + j] = dz * z * (1.0f - z);
    g[2 * hidden + j] = da_n * r;
    g[3 * hidden + j] = da_n;
    dh[idx] = dht * z;
}
