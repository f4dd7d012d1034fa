// The 3×3 convolution (stride 1, zero padding 1, channels-last) on CUDA: the gathers and masks around the
// cuBLAS GEMMs of crates/arflow-core/src/cuda/conv.rs, f32. The math is crates/arflow-core/src/flow/conv.rs's.
//
// Layout, all row-major; pixel r of a stack is row r = (img·H + y)·W + x (image-major, NHWC):
//   src    [N, H, W, C]       the stack a gather reads: the input x (C = Cin), or backward's dL/dy (C = Cout)
//   cols   [M, 9C + ones]     im2col rows of the pixels r0 .. r0 + M: column (kh·3 + kw)·C + c of row j holds
//                             src[r0 + j shifted by (kh − 1, kw − 1)][c], 0 outside the image, max(·, 0) with
//                             `relu`; then, with `ones`, a 1 (the column the bias row of wmat meets)
//   wmat   [9·Cin + 1, Cout]  row tap·Cin + i holds W[o, i, kh, kw] at column o (tap = kh·3 + kw), last row the bias
//   wt     [9·Cout, Cin]      the kernel turned 180° with its channels swapped: row tap·Cout + o holds
//                             W[8 − tap, ·, o], i.e. wt[(tap·Cout + o)·Cin + i] = wmat[((8 − tap)·Cin + i)·Cout + o]
//   x, dx  [N, H, W, Cin]     the input and its gradient
// Every kernel is one thread per element it writes, launched with ceil(elements / blockDim) blocks.

// cols [M, 9C + ones] from src [N, H, W, C], rows r0 .. r0 + M (every entry written). Neighbouring threads
// write neighbouring columns: within a tap, neighbouring channels of one source pixel (coalesced reads).
extern "C" __global__ void conv_im2col(
    const float* __restrict__ src,
    float* __restrict__ cols,
    int h, int w, int c, long long r0, int m, int ones, int relu) {
    const int width = 9 * c + (ones ? 1 : 0);
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)m * width) return;
    const long long j = idx / width;
    const int k = (int)(idx - j * width);
    if (k == 9 * c) {  // only with `ones`
        cols[idx] = 1.0f;
        return;
    }
    const int tap = k / c;
    const int ch = k - tap * c;
    const long long r = r0 + j;
    const long long hw = (long long)h * w;
    const long long img = r / hw;
    const int pix = (int)(r - img * hw);
    const int py = pix / w;
    const int px = pix - py * w;
    const int sy = py + tap / 3 - 1;
    const int sx = px + tap % 3 - 1;
    float v = 0.0f;
    if (sy >= 0 && sy < h && sx >= 0 && sx < w) {
        v = src[((img * h + sy) * w + sx) * c + ch];
        if (relu) v = v > 0.0f ? v : 0.0f;  // as the CPU gather: NaN → 0
    }
    cols[idx] = v;
}

// wt [9·Cout, Cin] from wmat (its first 9·Cin rows; the bias row is not read).
extern "C" __global__ void conv_turn(
    const float* __restrict__ wmat,
    float* __restrict__ wt,
    int cin, int cout) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= 9LL * cout * cin) return;
    const int i = (int)(idx % cin);
    const long long rest = idx / cin;
    const int o = (int)(rest % cout);
    const int tap = (int)(rest / cout);
    wt[idx] = wmat[((long long)(8 - tap) * cin + i) * cout + o];
}

// The gradient through max(x, 0), in place on dx [len] (len = N·H·W·Cin): 0 where x < 0, as candle's ReLU
// and the CPU op (the gradient passes where x ≥ 0, and where x is NaN).
extern "C" __global__ void conv_relu_grad(
    const float* __restrict__ x,
    float* __restrict__ dx,
    long long len) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= len) return;
    if (x[idx] < 0.0f) dx[idx] = 0.0f;
}
