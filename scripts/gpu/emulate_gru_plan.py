#!/usr/bin/env python3
"""A CPU check of the CUDA GRU's plan, for a machine without a GPU: the passes of
crates/arflow-core/src/cuda/gru.rs ported line by line onto flat f64 numpy buffers, with its row-major
`gemm` wrapper (crates/arflow-core/src/cuda/blas.rs) calling an emulated column-major cuBLAS sgemm, and
the kernels of crates/arflow-core/src/cuda/gru.cu as loops over their thread index. Forward (with and
without saving), dx, dh0 and dparams are compared with torch.nn.GRU's autograd (CPU, f64): it checks the
index math, strides, offsets and operand swaps of the plan, not the CUDA code itself (the GPU run of
scripts/gpu-check.sh does that). Keep it in step with those files. Runs in seconds:

  python3 scripts/gpu/emulate_gru_plan.py
"""
import numpy as np, torch
np.random.seed(0)

def cublas_sgemm(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    # column-major: C[m,n] = alpha op(A) op(B) + beta C; A, B, C are (buffer, offset)
    (Ab, ao), (Bb, bo), (Cb, co) = A, B, C
    def colmat(buf, off, rows, cols, ld):
        out = np.zeros((rows, cols), np.float64)
        for j in range(cols):
            out[:, j] = buf[off + j * ld: off + j * ld + rows]
        return out
    opA = colmat(Ab, ao, k, m, lda).T if transa else colmat(Ab, ao, m, k, lda)
    opB = colmat(Bb, bo, n, k, ldb).T if transb else colmat(Bb, bo, k, n, ldb)
    R = alpha * opA @ opB
    for j in range(n):
        seg = slice(co + j * ldc, co + j * ldc + m)
        Cb[seg] = R[:, j] + (beta * Cb[seg] if beta != 0 else 0)

def check(rows, cols, ld, length):
    assert ld >= max(cols, 1) and (rows == 0 or (rows - 1) * ld + cols <= length), (rows, cols, ld, length)

def gemm(mnk, a, b, c, ldc, beta):
    # a, b = (buf, off, ld, t); c = (buf, off)
    m, n, k = mnk
    if m == 0 or n == 0: return
    (abuf, aoff, ald, at), (bbuf, boff, bld, bt) = a, b
    ar, ac = (k, m) if at else (m, k)
    br, bc = (n, k) if bt else (k, n)
    check(ar, ac, ald, len(abuf) - aoff); check(br, bc, bld, len(bbuf) - boff); check(m, n, ldc, len(c[0]) - c[1])
    cublas_sgemm(bt, at, n, m, k, 1.0, (bbuf, boff), bld, (abuf, aoff), ald, beta, c, ldc)

sig = lambda x: 0.5 + 0.5 * np.tanh(0.5 * x)

def forward(B, T, I, H, x, h0, p, save=True):
    rows, g = B * T, 3 * H
    ld = 4 * H if save else g
    w_hh, bias = g * I, g * I + g * H
    out = np.zeros(rows * H); gates = np.zeros(rows * ld); gh = np.zeros(B * g)
    gemm((rows, g, I), (x, 0, I, False), (p, 0, I, True), (gates, 0), ld, 0.0)
    for t in range(T):
        hp = (h0, 0, H, False) if t == 0 else (out, (t - 1) * H, T * H, False)
        gemm((B, g, H), hp, (p, w_hh, H, True), (gh, 0), g, 0.0)
        bi = p[bias:]
        for idx in range(B * H):   # gru_cell_fwd
            b, j = idx // H, idx % H
            row = b * T + t
            G = row * ld; ghb = b * 3 * H
            h_prev = h0[b * H + j] if t == 0 else out[(row - 1) * H + j]
            a_r = (gates[G + j] + bi[j]) + (gh[ghb + j] + bi[3 * H + j])
            a_z = (gates[G + H + j] + bi[H + j]) + (gh[ghb + H + j] + bi[4 * H + j])
            hn = gh[ghb + 2 * H + j] + bi[5 * H + j]
            r, z = sig(a_r), sig(a_z)
            n = np.tanh((gates[G + 2 * H + j] + bi[2 * H + j]) + r * hn)
            out[row * H + j] = (1 - z) * n + z * h_prev
            if save:
                gates[G + j], gates[G + H + j], gates[G + 2 * H + j], gates[G + 3 * H + j] = r, z, n, hn
    return out, gates

def backward(B, T, I, H, x, h0, p, out, d_out, saved):
    rows, g, w4 = B * T, 3 * H, 4 * H
    w_hh, bias = g * I, g * I + g * H
    plen = g * I + g * H + 2 * g
    dh = np.zeros(B * H); dparams = np.zeros(plen); dx = np.zeros(rows * I)
    for t in reversed(range(T)):
        for idx in range(B * H):  # gru_cell_bwd
            b, j = idx // H, idx % H
            row = b * T + t; G = row * w4
            h_prev = h0[b * H + j] if t == 0 else out[(row - 1) * H + j]
            r, z, n, hn = saved[G + j], saved[G + H + j], saved[G + 2 * H + j], saved[G + 3 * H + j]
            dht = d_out[row * H + j] + dh[idx]
            dn = dht * (1 - z); dz = dht * (h_prev - n); da_n = dn * (1 - n * n)
            saved[G + j] = da_n * hn * r * (1 - r); saved[G + H + j] = dz * z * (1 - z)
            saved[G + 2 * H + j] = da_n * r; saved[G + 3 * H + j] = da_n
            dh[idx] = dht * z
        gemm((B, H, g), (saved, t * w4, T * w4, False), (p, w_hh, H, False), (dh, 0), H, 1.0)
    dg = lambda col: (saved, col, w4, True)
    gemm((2 * H, I, rows), dg(0), (x, 0, I, False), (dparams, 0), I, 0.0)
    gemm((H, I, rows), dg(3 * H), (x, 0, I, False), (dparams, 2 * H * I), I, 0.0)
    delta = np.zeros(B * H)
    for idx in range(B * H):
        b, j = idx // H, idx % H
        d = h0[idx]
        if b > 0: d -= out[(b * T - 1) * H + j]
        delta[idx] = d
    # dw_hh view: emulate slice_mut(o.w_hh .. o.w_hh + g*H) as a separate buffer copy back
    dw = dparams[w_hh: w_hh + g * H].copy()
    if rows > 1:
        gemm((g, H, rows - 1), (saved, w4, w4, True), (out, 0, H, False), (dw, 0), H, 0.0)
    gemm((g, H, B), (saved, 0, T * w4, True), (delta, 0, H, False), (dw, 0), H, 1.0 if rows > 1 else 0.0)
    dparams[w_hh: w_hh + g * H] = dw
    ones = np.ones(rows)
    for col, dst, width in [(0, bias, 2 * H), (3 * H, bias + 2 * H, H), (0, bias + g, g)]:
        gemm((1, width, rows), (ones, 0, rows, False), (saved, col, w4, False), (dparams, dst), width, 0.0)
    gemm((rows, I, 2 * H), (saved, 0, w4, False), (p, 0, I, False), (dx, 0), I, 0.0)
    gemm((rows, I, H), (saved, 3 * H, w4, False), (p, 2 * H * I, I, False), (dx, 0), I, 1.0)
    return dx, dh, dparams

for (B, T, I, H) in [(3, 7, 5, 9), (1, 1, 3, 4), (1, 12, 6, 33), (2, 1, 4, 5), (4, 5, 8, 6)]:
    g = 3 * H
    x = np.random.uniform(-1, 1, B * T * I); h0 = np.random.uniform(-.5, .5, B * H)
    k = 1 / np.sqrt(H); p = np.random.uniform(-k, k, g * I + g * H + 2 * g); c = np.random.uniform(-1, 1, B * T * H)
    out, saved = forward(B, T, I, H, x, h0, p)
    out_ns, _ = forward(B, T, I, H, x, h0, p, save=False)
    dx, dh0, dp = backward(B, T, I, H, x, h0, p, out, c, saved)
    # torch reference
    gru = torch.nn.GRU(I, H, batch_first=True).double()
    with torch.no_grad():
        o = 0
        for name, shape in [("weight_ih_l0", (g, I)), ("weight_hh_l0", (g, H)), ("bias_ih_l0", (g,)), ("bias_hh_l0", (g,))]:
            n = int(np.prod(shape)); getattr(gru, name).copy_(torch.tensor(p[o:o + n]).reshape(shape)); o += n
    xt = torch.tensor(x).reshape(B, T, I).requires_grad_(); ht = torch.tensor(h0).reshape(1, B, H).requires_grad_()
    ot, _ = gru(xt, ht)
    (ot * torch.tensor(c).reshape(B, T, H)).sum().backward()
    tp = torch.cat([getattr(gru, n).grad.flatten() for n in ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]])
    errs = [np.abs(a - b.detach().numpy().ravel()).max() for a, b in [(out, ot), (out_ns, ot), (dx, xt.grad), (dh0, ht.grad), (dp, tp)]]
    print((B, T, I, H), ["%.1e" % e for e in errs])
    assert max(errs) < 1e-10
print("emulation matches torch")
