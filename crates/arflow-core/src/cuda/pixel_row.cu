// One Pixel-RNN row layer (Row LSTM or Row GRU) on CUDA: the gathers, fused gate passes and scatters around
// the cuBLAS GEMMs of crates/arflow-core/src/cuda/pixel_row.rs, f32. The math is crates/arflow-core/src/pixel/row.rs's
// (gate order i, f, g, o for the LSTM, r, z, n for the GRU; σ(x) = ½ + ½·tanh(½x) as on the CPU).
//
// Sizes: B images of R rows and C columns, H channels, G·H = gw gate pre-activations per position (G = 4 for the
// LSTM, 3 for the GRU), PP = C + 2 padded columns, Np = R·B·PP padded positions, K label classes.
// Layout, all row-major. The caller's maps are image-major and unpadded; the layer's own maps are *row-major
// over image rows first* ("time-major": image row i of every image together) and padded with a zero column
// either side of every image row, so that one GEMM per tap over consecutive padded positions is a 1×3
// convolution of one image row of the whole batch (or of every row at once):
//   y, d_out, y_out, dy   [B, R, C, H]     (b, i, j, c) at ((b·R + i)·C + j)·H + c
//   y_pad, h_prev, dy_pad [R, B, PP, H]    padded position pos(i, b, j) = (i·B + b)·PP + j + 1 for column j; the
//                                          pad columns (jp = 0 and jp = C + 1) hold 0. h_prev's image row i
//                                          holds h_{i−1} (row 0: zeros)
//   gis, dgi, dgh         [R, B, PP, gw]   same positions, gw values each; the GEMM outputs at the pads are
//                                          ignored (gis) or stay 0 (dgi, dgh: only real positions are written)
//   ss                    [B, PP, gw]      one image row i of the state-to-state GEMM, position b·PP + j + 1
//   dh                    [B, PP, H]       backward's dL/dh_i through row i + 1, same positions
//   c                     [R, B, C, H]     LSTM cell states, (i, b, j, c) at ((i·B + b)·C + j)·H + c
//   dc                    [B, C, H]        backward's running dL/dc
//   gates                 [R, B, C, 4H]    the saved gates of each position, (i, b, j) at row (i·B + b)·C + j:
//                                          LSTM [i, f, g, o], GRU [r, z, n, hn] with hn = ss_n + b_ss_n
//   w                     [gw, H, 1, 3]    a PyTorch 1×3 kernel, w[(g·H + c)·3 + kx]
//   wmat                  [taps·H, gw]     the GEMM weight of `taps` consecutive taps: row t·H + c, column g holds
//                                          w[g, c, 0, tap0 + t·tstep]
//   wmat_t                [taps·gw, H]     the adjoint's: row t·gw + g, column c holds w[g, c, 0, tap0 + t·tstep]
//   labels                [B] int          each image's class (only read when has_labels)
//   onehot                [K, Np]          1 where position p belongs to an image of class k
// Every kernel is one thread per element it writes, launched with ceil(elements / blockDim) blocks; the cell
// kernels are one thread per (b, j, u) of one image row, B·C·H threads.

#include "common.cuh"

// y_pad [R, B, PP, H] from y [B, R, C, H] (every entry written, pads 0).
extern "C" __global__ void prow_pad(
    const float* __restrict__ y,
    float* __restrict__ y_pad,
    int batch, int rows, int cols, int hidden) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int pp = cols + 2;
    if (idx >= (long long)rows * batch * pp * hidden) return;
    const int c = (int)(idx % hidden);
    const long long pos = idx / hidden;
    const int jp = (int)(pos % pp);
    const long long ib = pos / pp;
    const int b = (int)(ib % batch);
    const int i = (int)(ib / batch);
    float v = 0.0f;
    if (jp >= 1 && jp <= cols) v = y[(((long long)b * rows + i) * cols + jp - 1) * hidden + c];
    y_pad[idx] = v;
}

// dy [B, R, C, H] = d_out + dy_pad at the real positions (the residual plus the input-to-state path).
extern "C" __global__ void prow_unpad_add(
    const float* __restrict__ dy_pad,
    const float* __restrict__ d_out,
    float* __restrict__ dy,
    int batch, int rows, int cols, int hidden) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * rows * cols * hidden) return;
    const int c = (int)(idx % hidden);
    const long long rest = idx / hidden;
    const int j = (int)(rest % cols);
    const long long bi = rest / cols;
    const int i = (int)(bi % rows);
    const int b = (int)(bi / rows);
    const long long pos = ((long long)i * batch + b) * (cols + 2) + j + 1;
    dy[idx] = d_out[idx] + dy_pad[pos * hidden + c];
}

// wmat [taps·H, gw] (transposed = 0) or wmat_t [taps·gw, H] (transposed = 1) from w [gw, H, 1, 3], tap t being
// kernel column tap0 + t·tstep.
extern "C" __global__ void prow_wmat(
    const float* __restrict__ w,
    float* __restrict__ out,
    int hidden, int gw, int taps, int tap0, int tstep, int transposed) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)taps * hidden * gw) return;
    int t, c, g;
    if (transposed) {
        c = (int)(idx % hidden);
        const long long rest = idx / hidden;
        g = (int)(rest % gw);
        t = (int)(rest / gw);
    } else {
        g = (int)(idx % gw);
        const long long rest = idx / gw;
        c = (int)(rest % hidden);
        t = (int)(rest / hidden);
    }
    const int kx = tap0 + t * tstep;
    out[idx] = w[((long long)g * hidden + c) * 3 + kx];
}

// gis [Np, gw] = b_is + label_bias[labels[b]] (the latter only with has_labels) at every padded position of
// image b, the input-to-state GEMM then adds onto it.
extern "C" __global__ void prow_is_bias(
    const float* __restrict__ b_is,
    const float* __restrict__ label_bias,
    const int* __restrict__ labels,
    float* __restrict__ gis,
    int batch, int rows, int cols, int gw, int has_labels) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int pp = cols + 2;
    if (idx >= (long long)rows * batch * pp * gw) return;
    const int g = (int)(idx % gw);
    const int b = (int)((idx / gw / pp) % batch);
    float v = b_is[g];
    if (has_labels) v += label_bias[(long long)labels[b] * gw + g];
    gis[idx] = v;
}

// onehot [K, Np]: 1 where padded position p belongs to an image whose label is k, else 0. The label bias
// gradient is then the GEMM onehot · dgi.
extern "C" __global__ void prow_label_onehot(
    const int* __restrict__ labels,
    float* __restrict__ onehot,
    int classes, int batch, int rows, int cols) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long np = (long long)rows * batch * (cols + 2);
    if (idx >= (long long)classes * np) return;
    const int k = (int)(idx / np);
    const long long p = idx - (long long)k * np;
    const int b = (int)((p / (cols + 2)) % batch);
    onehot[idx] = labels[b] == k ? 1.0f : 0.0f;
}

// The Row LSTM on image row i: from gis, ss (+ b_ss) and c_{i−1}, writes c_i into c, h_i into h_prev's image
// row i + 1 (if any), y_out = h_i + y, and with `save` [i, f, g, o] into gates.
//   c_i = f ⊙ c_{i−1} + i ⊙ g,  h_i = o ⊙ tanh(c_i)
extern "C" __global__ void prow_lstm_fwd(
    const float* __restrict__ gis,
    const float* __restrict__ ss,
    const float* __restrict__ b_ss,
    const float* __restrict__ y,
    float* __restrict__ h_prev,
    float* __restrict__ c,
    float* __restrict__ y_out,
    float* __restrict__ gates,
    int batch, int rows, int cols, int hidden, int i, int save) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * cols * hidden) return;
    const int u = (int)(idx % hidden);
    const long long bj = idx / hidden;
    const int j = (int)(bj % cols);
    const int b = (int)(bj / cols);
    const int pp = cols + 2, g4 = 4 * hidden;
    const long long pos = ((long long)i * batch + b) * pp + j + 1;
    const float* gi = gis + pos * g4;
    const float* gh = ss + ((long long)b * pp + j + 1) * g4;
    const long long cell = ((long long)i * batch + b) * cols + j;
    const float c_prev = i == 0 ? 0.0f : c[(cell - (long long)batch * cols) * hidden + u];

    const float ig = sigmoid_f(gi[u] + (gh[u] + b_ss[u]));
    const float fg = sigmoid_f(gi[hidden + u] + (gh[hidden + u] + b_ss[hidden + u]));
    const float gg = tanhf(gi[2 * hidden + u] + (gh[2 * hidden + u] + b_ss[2 * hidden + u]));
    const float og = sigmoid_f(gi[3 * hidden + u] + (gh[3 * hidden + u] + b_ss[3 * hidden + u]));
    const float cv = fg * c_prev + ig * gg;
    const float h = og * tanhf(cv);
    c[cell * hidden + u] = cv;
    if (i + 1 < rows) h_prev[(pos + (long long)batch * pp) * hidden + u] = h;
    const long long o = (((long long)b * rows + i) * cols + j) * hidden + u;
    y_out[o] = h + y[o];
    if (save) {
        float* s = gates + cell * g4;
        s[u] = ig;
        s[hidden + u] = fg;
        s[2 * hidden + u] = gg;
        s[3 * hidden + u] = og;
    }
}

// The Row GRU on image row i: from gis, ss (+ b_ss) and h_{i−1} (h_prev's image row i), writes h_i into
// h_prev's image row i + 1 (if any), y_out = h_i + y, and with `save` [r, z, n, hn] into gates.
//   r = σ(is_r + ss_r), z = σ(is_z + ss_z), n = tanh(is_n + r ⊙ ss_n), h_i = (1 − z) ⊙ n + z ⊙ h_{i−1}
extern "C" __global__ void prow_gru_fwd(
    const float* __restrict__ gis,
    const float* __restrict__ ss,
    const float* __restrict__ b_ss,
    const float* __restrict__ y,
    float* __restrict__ h_prev,
    float* __restrict__ y_out,
    float* __restrict__ gates,
    int batch, int rows, int cols, int hidden, int i, int save) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * cols * hidden) return;
    const int u = (int)(idx % hidden);
    const long long bj = idx / hidden;
    const int j = (int)(bj % cols);
    const int b = (int)(bj / cols);
    const int pp = cols + 2, g3 = 3 * hidden;
    const long long pos = ((long long)i * batch + b) * pp + j + 1;
    const float* gi = gis + pos * g3;
    const float* gh = ss + ((long long)b * pp + j + 1) * g3;
    const float hp = h_prev[pos * hidden + u];

    const float r = sigmoid_f(gi[u] + (gh[u] + b_ss[u]));
    const float z = sigmoid_f(gi[hidden + u] + (gh[hidden + u] + b_ss[hidden + u]));
    const float hn = gh[2 * hidden + u] + b_ss[2 * hidden + u];
    const float n = tanhf(gi[2 * hidden + u] + r * hn);
    const float h = (1.0f - z) * n + z * hp;
    if (i + 1 < rows) h_prev[(pos + (long long)batch * pp) * hidden + u] = h;
    const long long o = (((long long)b * rows + i) * cols + j) * hidden + u;
    y_out[o] = h + y[o];
    if (save) {
        float* s = gates + (((long long)i * batch + b) * cols + j) * 4 * hidden;
        s[u] = r;
        s[hidden + u] = z;
        s[2 * hidden + u] = n;
        s[3 * hidden + u] = hn;
    }
}

// Gate gradients of the Row LSTM on image row i, into dgi at the row's padded positions (the same w.r.t. both
// convolutions). dh holds dL/dh_i through row i + 1 (read only: the GEMM that follows overwrites it with
// dL/dh_{i−1}); dc enters as dL/dc_i through row i + 1 and leaves as dL/dc_{i−1}. tanh(c_i) is recomputed.
extern "C" __global__ void prow_lstm_bwd(
    const float* __restrict__ gates,
    const float* __restrict__ c,
    const float* __restrict__ d_out,
    const float* __restrict__ dh,
    float* __restrict__ dc,
    float* __restrict__ dgi,
    int batch, int rows, int cols, int hidden, int i) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * cols * hidden) return;
    const int u = (int)(idx % hidden);
    const long long bj = idx / hidden;
    const int j = (int)(bj % cols);
    const int b = (int)(bj / cols);
    const int pp = cols + 2, g4 = 4 * hidden;
    const long long cell = ((long long)i * batch + b) * cols + j;
    const float* s = gates + cell * g4;
    const float ig = s[u], fg = s[hidden + u], gg = s[2 * hidden + u], og = s[3 * hidden + u];
    const float tc = tanhf(c[cell * hidden + u]);
    const float c_prev = i == 0 ? 0.0f : c[(cell - (long long)batch * cols) * hidden + u];
    const float dht = d_out[(((long long)b * rows + i) * cols + j) * hidden + u] + dh[((long long)b * pp + j + 1) * hidden + u];
    // h = o ⊙ tanh(c): c is reached from row i + 1 and through h.
    const float dct = dc[idx] + dht * og * (1.0f - tc * tc);
    float* d = dgi + (((long long)i * batch + b) * pp + j + 1) * g4;
    d[3 * hidden + u] = dht * tc * og * (1.0f - og);
    // c = f ⊙ c_{i−1} + i ⊙ g
    d[u] = dct * gg * ig * (1.0f - ig);
    d[hidden + u] = dct * c_prev * fg * (1.0f - fg);
    d[2 * hidden + u] = dct * ig * (1.0f - gg * gg);
    dc[idx] = dct * fg;
}

// Gate gradients of the Row GRU on image row i, into dgi and dgh (they differ in the n block, where r multiplies
// ss_n) at the row's padded positions. dh enters as dL/dh_i through row i + 1 and leaves holding the direct
// path dL/dh_{i−1} = dL/dh_i ⊙ z, to which the GEMM that follows adds the path through W_ss.
extern "C" __global__ void prow_gru_bwd(
    const float* __restrict__ gates,
    const float* __restrict__ h_prev,
    const float* __restrict__ d_out,
    float* __restrict__ dh,
    float* __restrict__ dgi,
    float* __restrict__ dgh,
    int batch, int rows, int cols, int hidden, int i) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * cols * hidden) return;
    const int u = (int)(idx % hidden);
    const long long bj = idx / hidden;
    const int j = (int)(bj % cols);
    const int b = (int)(bj / cols);
    const int pp = cols + 2, g3 = 3 * hidden;
    const long long pos = ((long long)i * batch + b) * pp + j + 1;
    const float* s = gates + (((long long)i * batch + b) * cols + j) * 4 * hidden;
    const float r = s[u], z = s[hidden + u], n = s[2 * hidden + u], hn = s[3 * hidden + u];
    const float hp = h_prev[pos * hidden + u];
    float* dhp = dh + ((long long)b * pp + j + 1) * hidden + u;
    const float dht = d_out[(((long long)b * rows + i) * cols + j) * hidden + u] + *dhp;
    // h = (1 − z) ⊙ n + z ⊙ h_{i−1}
    const float dn = dht * (1.0f - z);
    const float dz = dht * (hp - n);
    // n = tanh(is_n + r ⊙ ss_n);  r = σ(is_r + ss_r), z = σ(is_z + ss_z)
    const float dan = dn * (1.0f - n * n);
    const float dar = dan * hn * r * (1.0f - r);
    const float daz = dz * z * (1.0f - z);
    float* di = dgi + pos * g3;
    float* dg = dgh + pos * g3;
    di[u] = dar;
    dg[u] = dar;
    di[hidden + u] = daz;
    dg[hidden + u] = daz;
    di[2 * hidden + u] = dan;
    dg[2 * hidden + u] = dan * r;
    *dhp = dht * z;
}

// dw [gw, H, 1, 3] (PyTorch layout) from the GEMM weight gradient m [taps·H, gw] of taps 0 .. taps − 1: tap kx
// of dw is block kx of m; taps ≥ `taps` (mask B's j + 1) are 0.
extern "C" __global__ void prow_scatter(
    const float* __restrict__ m,
    float* __restrict__ dw,
    int hidden, int gw, int taps) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)gw * hidden * 3) return;
    const int kx = (int)(idx % 3);
    const long long gc = idx / 3;
    const int c = (int)(gc % hidden);
    const int g = (int)(gc / hidden);
    dw[idx] = kx < taps ? m[((long long)kx * hidden + c) * gw + g] : 0.0f;
}
