// The fused elementwise passes of the LSTM layer on CUDA: the same math as crates/arflow-core/src/rnn/lstm.rs
// (PyTorch nn.LSTM semantics, gate order i, f, g, o), f32.
//
// Layout, batch-first as on the CPU: row b·T + t of a [B·T, ·] matrix is batch element b at time t.
//   s0     [B, 2H]     the initial state, each row h0 then c0
//   out    [B, T, 2H]  the states, each row h_t then c_t (h_t of element b at out + (b·T + t)·2H)
//   gates  [B·T, 4H]   forward: enters holding gi = x·W_ihᵀ (no bias), each cell leaves [i, f, g, o] when
//                      saving; backward overwrites each row with [da_i, da_f, da_g, da_o]
//   gh     [B, 4H]     h_{t-1}·W_hhᵀ of the current step (no bias)
//   bias   [8H]        b_ih then b_hh, as packed in the layer's parameters
//   ds     [B, 2H]     backward's running dL/d(h_{t-1}, c_{t-1}), each row dh then dc; dL/d(h0, c0) at the end
// One thread per (b, j), j < H; every kernel is launched with ceil(B·H / blockDim) blocks.

#include "common.cuh"

// One time step t of the forward pass: (h_t, c_t) into out, and with `save` the gates into gates.
//   c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')
extern "C" __global__ void lstm_cell_fwd(
    const float* __restrict__ gh,
    const float* __restrict__ bias,
    const float* __restrict__ s0,
    float* __restrict__ out,
    float* __restrict__ gates,
    int batch, int seq, int hidden, int t, int save) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * hidden) return;
    const int b = (int)(idx / hidden);
    const int j = (int)(idx - (long long)b * hidden);
    const long long row = (long long)b * seq + t;
    const int g4 = 4 * hidden;

    float* g = gates + row * g4;
    const float* ghb = gh + (long long)b * g4;
    const float c_prev = t == 0 ? s0[(long long)b * 2 * hidden + hidden + j] : out[(row - 1) * 2 * hidden + hidden + j];

    const float i = sigmoid_f((g[j] + bias[j]) + (ghb[j] + bias[g4 + j]));
    const float f = sigmoid_f((g[hidden + j] + bias[hidden + j]) + (ghb[hidden + j] + bias[g4 + hidden + j]));
    const float gg = tanhf((g[2 * hidden + j] + bias[2 * hidden + j]) + (ghb[2 * hidden + j] + bias[g4 + 2 * hidden + j]));
    const float o = sigmoid_f((g[3 * hidden + j] + bias[3 * hidden + j]) + (ghb[3 * hidden + j] + bias[g4 + 3 * hidden + j]));
    const float c = f * c_prev + i * gg;
    out[row * 2 * hidden + j] = o * tanhf(c);
    out[row * 2 * hidden + hidden + j] = c;
    if (save) {
        g[j] = i;
        g[hidden + j] = f;
        g[2 * hidden + j] = gg;
        g[3 * hidden + j] = o;
    }
}

// One time step t of backward: the gate gradients of row (b, t) over its saved gates. ds enters holding
// dL/dh_t through step t+1 (the h half, which the GEMM ds_h = dg_t · W_hh that follows overwrites with
// dL/dh_{t-1}) and dL/dc_t through step t+1 (the c half, which leaves as dL/dc_{t-1}). tanh(c_t) is
// recomputed from the c_t of the output, as on the CPU.
extern "C" __global__ void lstm_cell_bwd(
    float* __restrict__ gates,
    const float* __restrict__ s0,
    const float* __restrict__ out,
    const float* __restrict__ d_out,
    float* __restrict__ ds,
    int batch, int seq, int hidden, int t) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * hidden) return;
    const int b = (int)(idx / hidden);
    const int j = (int)(idx - (long long)b * hidden);
    const long long row = (long long)b * seq + t;
    const long long s = 2 * (long long)hidden;

    float* g = gates + row * 4 * hidden;
    const float c_prev = t == 0 ? s0[b * s + hidden + j] : out[(row - 1) * s + hidden + j];
    const float i = g[j], f = g[hidden + j], gg = g[2 * hidden + j], o = g[3 * hidden + j];
    const float tc = tanhf(out[row * s + hidden + j]);
    float* dsb = ds + b * s;
    const float dht = d_out[row * s + j] + dsb[j];
    // h' = o ⊙ tanh(c'): the cell state receives dh' through tanh.
    const float dct = d_out[row * s + hidden + j] + dsb[hidden + j] + dht * o * (1.0f - tc * tc);
    // c' = f ⊙ c + i ⊙ g
    g[j] = dct * gg * i * (1.0f - i);
    g[hidden + j] = dct * c_prev * f * (1.0f - f);
    g[2 * hidden + j] = dct * i * (1.0f - gg * gg);
    g[3 * hidden + j] = dht * tc * o * (1.0f - o);
    dsb[hidden + j] = dct * f;
}
