#!/usr/bin/env python3
"""PyTorch versions of the workloads of `npm run bench -- --torch` (src/bench/torch.ts).

One workload per process: it builds the model the way a PyTorch user would (eager, no torch.compile),
warms up, runs for `--seconds`, and prints ONE JSON line with the rate on stdout. Not a dependency of
arflow: it runs only where `python3 -c "import torch"` works.

    python3 bench/torch/workloads.py <workload> [options]

workloads (rate unit):
  char-train   char LM training step (GRU, or LSTM with `--cell lstm`) on `--ids` (uint32 file), TBPTT
               streams, state carried (tokens/s)
  char-sample  char-GRU sampling, one token per model(x, h) call, softmax + multinomial (us/token)
  realnvp      Fashion-MNIST multi-scale Real NVP training step, batch `--batch` (images/s)
  glow         Fashion-MNIST Glow training step (images/s)
  gemm         fp32 `[m x k] @ [k x n]` (GFLOP/s)
  check        no timing: with `--model char|realnvp|glow`, lists the model's parameter names and shapes
               under arflow's names; with `--bundle`, loads arflow's weights from it and scores its inputs
               (the char-LM's mean cross-entropy from a zero state, or a flow's per-example log p(y)).

The flow workloads (realnvp, glow and their -score rows) also take `--device cuda` (the model and each
preprocessed batch on the GPU; dequantisation and the logit stay on the host, as in arflow's `fit`),
`--tf32 on|off` (on CUDA: TF32 for cuDNN's convolutions and cuBLAS; without it PyTorch's defaults stand)
and `--synthetic` (`--limit` images of uniformly random bytes instead of Fashion-MNIST, for machines
without the dataset; scripts/gpu-check.sh uses it). Defaults: the CPU, Fashion-MNIST.

The flows mirror arflow's FlowNet layers (src/backend/flownet-types.ts): actnorm with data-dependent
initialisation, LU-parameterised invertible 1x1 convolution, affine coupling y = b*x + (1-b)*(x*exp(s)+t)
with s = scale*tanh(s_raw) and a weight-normalised ResNet conditioner on x*b (3x3 convs, zero-initialised
output conv), squeeze (Glow's channel order), split (the last C - C//2 channels leave), a standard normal
base; training batches are dequantised ((p + u)/256) and logit-transformed (alpha 0.05), AdamW with
global-norm clipping, as `Flow.fit`.
"""

import argparse
import gzip
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LOGIT_ALPHA = 0.05


# ---------------------------------------------------------------------------------------------------
# Char-GRU LM


class CharRNN(nn.Module):
    """Embedding -> GRU or LSTM (batch_first) -> Linear head; the state_dict names are arflow's."""

    def __init__(self, vocab, embed, hidden, layers, cell="gru"):
        super().__init__()
        self.cell = cell
        self.embedding = nn.Embedding(vocab, embed)
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](embed, hidden, layers, batch_first=True)
        setattr(self, cell, rnn)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, h=None):
        out, h = getattr(self, self.cell)(self.embedding(x), h)
        return self.head(out), h


def char_model(a):
    return CharRNN(a.vocab, a.embed, a.hidden, a.layers, a.cell)


def detached(h):
    return tuple(t.detach() for t in h) if isinstance(h, tuple) else h.detach()


def char_train(a):
    ids = np.fromfile(a.ids, dtype=np.uint32).astype(np.int64)
    model = char_model(a)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    B, T = a.batch, a.seq
    # B contiguous streams read T characters at a time (arflow's StreamBatcher, without its random offsets).
    per = len(ids) // B
    streams = torch.from_numpy(ids[: B * per].reshape(B, per))
    steps_per_epoch = (per - 1) // T
    state = {"i": 0, "h": None}

    def step():
        i = state["i"]
        if i == 0:
            state["h"] = None  # a new epoch starts every stream from zeros
        x = streams[:, i * T : (i + 1) * T]
        y = streams[:, i * T + 1 : (i + 1) * T + 1]
        logits, h = model(x, state["h"])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        state["h"] = detached(h)  # truncated BPTT: carry the state, not the graph
        state["i"] = (i + 1) % steps_per_epoch
        return loss.item()

    steps, sec = timed(step, a.warmup, a.seconds)
    return {"rate": steps * B * T / sec, "unit": "tokens/s", "steps": steps, "sec": sec, "params": count(model)}


def char_sample(a):
    model = char_model(a)
    model.eval()
    prime = torch.tensor([int(t) for t in a.prime_ids.split(",")], dtype=torch.long)
    gen = torch.Generator().manual_seed(0)

    def run():
        out = []
        with torch.no_grad():
            logits, h = model(prime.view(1, -1))
            for _ in range(a.length):
                p = torch.softmax(logits[0, -1], dim=-1)
                x = torch.multinomial(p, 1, generator=gen)
                out.append(x.item())
                logits, h = model(x.view(1, 1), h)
        return out

    calls, sec = timed(run, 1, a.seconds)
    return {"rate": sec / (calls * a.length) * 1e6, "unit": "us/token", "steps": calls * a.length, "sec": sec,
            "params": count(model)}


# ---------------------------------------------------------------------------------------------------
# Flows


def weight_norm(conv):
    return nn.utils.parametrizations.weight_norm(conv)


class ResNet(nn.Module):
    """h = in(x); per block h = h + conv2(relu(conv1(relu(h)))); out(relu(h)); weight norm but on `out`."""

    def __init__(self, cin, cout, width, blocks):
        super().__init__()
        conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1)  # noqa: E731
        self.inp = weight_norm(conv(cin, width))
        self.blocks = nn.ModuleList(
            nn.ModuleList([weight_norm(conv(width, width)), weight_norm(conv(width, width))]) for _ in range(blocks)
        )
        self.out = conv(width, cout)
        # arflow's initialisation: v ~ U(+-1/sqrt(fan_in)) (PyTorch's default), g = |v|, biases 0, `out` 0.
        with torch.no_grad():
            for c in [self.inp] + [c for b in self.blocks for c in b]:
                c.bias.zero_()
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, x):
        h = self.inp(x)
        for conv1, conv2 in self.blocks:
            h = h + conv2(F.relu(conv1(F.relu(h))))
        return self.out(F.relu(h))

    def named(self, pre):
        out = []
        for name, c in [("in", self.inp)] + [
            (f"blocks.{i}.conv{j + 1}", c) for i, b in enumerate(self.blocks) for j, c in enumerate(b)
        ]:
            w = c.parametrizations.weight
            out += [(f"{pre}.{name}.weight_v", w.original1), (f"{pre}.{name}.weight_g", w.original0),
                    (f"{pre}.{name}.bias", c.bias)]
        return out + [(f"{pre}.out.weight", self.out.weight), (f"{pre}.out.bias", self.out.bias)]


class Coupling(nn.Module):
    def __init__(self, shape, mask, parity, width, blocks):
        super().__init__()
        C, H, W = shape
        if mask == "checkerboard":
            hw = torch.arange(H).view(H, 1) + torch.arange(W).view(1, W)
            b = ((hw + parity) % 2 == 0).float().expand(C, H, W)
        elif mask == "channel":
            b = ((torch.arange(C) < C // 2) ^ (parity == 1)).float().view(C, 1, 1).expand(C, H, W)
        else:
            raise ValueError(f"mask {mask}")
        self.register_buffer("b", b.reshape(1, C, H, W).contiguous(), persistent=False)
        self.net = ResNet(C, 2 * C, width, blocks)
        self.scale = nn.Parameter(torch.ones(C))

    def forward(self, x):
        b = self.b
        C = x.shape[1]
        h = self.net(x * b)
        s = self.scale.view(1, -1, 1, 1) * torch.tanh(h[:, :C])
        t = h[:, C:]
        y = b * x + (1 - b) * (x * torch.exp(s) + t)
        return y, ((1 - b) * s).flatten(1).sum(1)

    def named(self, pre):
        return self.net.named(f"{pre}.net") + [(f"{pre}.scale", self.scale)]


class ActNorm(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(C))
        self.logs = nn.Parameter(torch.zeros(C))
        self.register_buffer("initialized", torch.zeros(1))
        self.ready = False

    def forward(self, x):
        if self.training and not self.ready:
            if self.initialized.item() == 0:  # data-dependent initialisation on the first batch
                with torch.no_grad():
                    self.bias.copy_(-x.mean((0, 2, 3)))
                    self.logs.copy_(-torch.log(x.std((0, 2, 3), unbiased=False) + 1e-6))
                    self.initialized.fill_(1)
            self.ready = True
        y = (x + self.bias.view(1, -1, 1, 1)) * torch.exp(self.logs).view(1, -1, 1, 1)
        return y, (x.shape[2] * x.shape[3] * self.logs.sum()).expand(x.shape[0])

    def named(self, pre):
        return [(f"{pre}.bias", self.bias), (f"{pre}.logs", self.logs)]


class Inv1x1(nn.Module):
    """W = P (I + strict_lower(lower)) (strict_upper(upper) + diag(sign_s * exp(log_s))), P[i][perm[i]] = 1."""

    def __init__(self, C, gen):
        super().__init__()
        q = torch.linalg.qr(torch.randn(C, C, generator=gen, dtype=torch.float64))[0]
        P, L, U = torch.linalg.lu(q)
        s = torch.diagonal(U)
        self.lower = nn.Parameter(torch.tril(L, -1).float())
        self.upper = nn.Parameter(torch.triu(U, 1).float())
        self.log_s = nn.Parameter(s.abs().log().float())
        self.register_buffer("perm", P.argmax(1).float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("eye", torch.eye(C), persistent=False)

    def forward(self, x):
        L = torch.tril(self.lower, -1) + self.eye
        U = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
        W = (L @ U)[self.perm.long()]
        y = F.conv2d(x, W.view(*W.shape, 1, 1))
        return y, (x.shape[2] * x.shape[3] * self.log_s.sum()).expand(x.shape[0])

    def named(self, pre):
        return [(f"{pre}.lower", self.lower), (f"{pre}.upper", self.upper), (f"{pre}.log_s", self.log_s)]


def squeeze(x):
    """[N, C, H, W] -> [N, 4C, H/2, W/2], y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]."""
    N, C, H, W = x.shape
    return x.view(N, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(N, 4 * C, H // 2, W // 2)


class FlowNet(nn.Module):
    """A stack of layers, each ("squeeze" | "split" | a module); log p(x) under a standard normal base."""

    def __init__(self, shape, layer_specs, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.kinds = []
        self.layers = nn.ModuleList()
        C, H, W = shape
        for spec in layer_specs:
            t = spec["type"]
            if t == "squeeze":
                C, H, W = 4 * C, H // 2, W // 2
                mod = nn.Identity()
            elif t == "split":
                C = C // 2
                mod = nn.Identity()
            elif t == "actnorm":
                mod = ActNorm(C)
            elif t == "inv1x1":
                mod = Inv1x1(C, gen)
            elif t == "coupling":
                n = spec["net"]
                mod = Coupling((C, H, W), spec["mask"], spec["parity"], n["channels"], n["blocks"])
            else:
                raise ValueError(f"layer {t}")
            self.kinds.append(t)
            self.layers.append(mod)
        self.dim = shape[0] * shape[1] * shape[2]

    def forward(self, x):
        """Per-example log p(x) in nats."""
        logdet = torch.zeros(x.shape[0], device=x.device)
        zs = []
        for kind, layer in zip(self.kinds, self.layers):
            if kind == "squeeze":
                x = squeeze(x)
            elif kind == "split":
                c = x.shape[1] // 2
                zs.append(x[:, c:].flatten(1))
                x = x[:, :c]
            else:
                x, ld = layer(x)
                logdet = logdet + ld
        zs.append(x.flatten(1))
        z = torch.cat(zs, 1)
        return -0.5 * (z * z).sum(1) - 0.5 * self.dim * math.log(2 * math.pi) + logdet

    def named(self):
        """(arflow name, tensor) of every parameter, in arflow's canonical order."""
        out = []
        for k, layer in enumerate(self.layers):
            if hasattr(layer, "named"):
                out += layer.named(f"layers.{k}")
        return out

    def named_buffers_arflow(self):
        out = []
        for k, layer in enumerate(self.layers):
            if isinstance(layer, ActNorm):
                out.append((f"layers.{k}.initialized", layer.initialized))
            if isinstance(layer, Inv1x1):
                out += [(f"layers.{k}.perm", layer.perm), (f"layers.{k}.sign_s", layer.sign_s)]
        return out


def realnvp_layers(scales, channels, blocks):
    """src/models/presets.ts realNvpImageSpec: actnorm after each coupling, weight-normalised ResNets."""
    net = {"channels": channels, "blocks": blocks}
    layers = []

    def coupling(mask, i):
        layers.append({"type": "coupling", "mask": mask, "parity": i % 2, "net": net})
        layers.append({"type": "actnorm"})

    for _ in range(scales - 1):
        for i in range(3):
            coupling("checkerboard", i)
        layers.append({"type": "squeeze"})
        for i in range(3):
            coupling("channel", i)
        layers.append({"type": "split"})
    for i in range(4):
        coupling("checkerboard", i)
    return layers


def glow_layers(levels, steps, channels, blocks):
    """src/models/presets.ts glowSpec: per level squeeze, K x (actnorm, inv1x1, coupling), split."""
    net = {"channels": channels, "blocks": blocks}
    layers = []
    for level in range(levels):
        layers.append({"type": "squeeze"})
        for k in range(steps):
            layers += [{"type": "actnorm"}, {"type": "inv1x1"},
                       {"type": "coupling", "mask": "channel", "parity": k % 2, "net": net}]
        if level < levels - 1:
            layers.append({"type": "split"})
    return layers


def flow_model(a, model):
    shape = (1, 28, 28)
    if model == "realnvp":
        return FlowNet(shape, realnvp_layers(a.scales, a.channels, a.blocks))
    return FlowNet(shape, glow_layers(a.levels, a.flow_steps, a.channels, a.blocks))


def load_fashion(directory, limit):
    for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            raw = (gzip.open if name.endswith(".gz") else open)(path, "rb").read()
            break
    else:
        raise SystemExit(f"Fashion-MNIST training images not found in {directory}")
    n = min(limit, int.from_bytes(raw[4:8], "big"))
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, count=n * 784, offset=16).copy()).view(n, 1, 28, 28)


def flow_images(a):
    """Fashion-MNIST's first `a.limit` training images, or with `--synthetic` as many of uniform random bytes."""
    if a.synthetic:
        gen = torch.Generator().manual_seed(a.seed)
        return torch.randint(0, 256, (a.limit, 1, 28, 28), dtype=torch.uint8, generator=gen)
    return load_fashion(a.data_dir, a.limit)


def flow_device(a):
    device = torch.device(a.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available to this PyTorch")
        if a.tf32 != "default":
            torch.backends.cudnn.allow_tf32 = a.tf32 == "on"
            torch.backends.cuda.matmul.allow_tf32 = a.tf32 == "on"
    return device


def flow_train(a, model_name):
    images = flow_images(a)
    device = flow_device(a)
    model = flow_model(a, model_name).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    B = a.batch
    gen = torch.Generator().manual_seed(1)

    def step():
        p = images[torch.randint(len(images), (B,), generator=gen)]
        x = ((p.float() + torch.rand(p.shape, generator=gen)) / 256).clamp(max=1 - 2**-24)  # dequantise
        v = LOGIT_ALPHA + (1 - 2 * LOGIT_ALPHA) * x
        y = (torch.log(v) - torch.log1p(-v)).to(device)  # logit
        loss = -model(y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        return loss.item()

    steps, sec = timed(step, a.warmup, a.seconds)
    return {"rate": steps * B / sec, "unit": "images/s", "steps": steps, "sec": sec, "params": count(model)}


def flow_score(a, model_name):
    """Scoring as `flow.bitsPerDim` does it: batches of `a.batch` images in order, dequantised with uniform
    noise, logit-transformed, log p under the flow plus the log-det of the preprocessing; no gradients."""
    images = flow_images(a)
    device = flow_device(a)
    model = flow_model(a, model_name).to(device)
    model.eval()
    B = a.batch
    gen = torch.Generator().manual_seed(1)
    at = [0]

    def step():
        s = at[0]
        at[0] = (s + B) % (len(images) - B + 1)
        p = images[s : s + B]
        with torch.no_grad():
            x = ((p.float() + torch.rand(p.shape, generator=gen)) / 256).clamp(max=1 - 2**-24)
            v = LOGIT_ALPHA + (1 - 2 * LOGIT_ALPHA) * x
            y = torch.log(v) - torch.log1p(-v)
            logdet = (math.log(1 - 2 * LOGIT_ALPHA) - torch.log(v) - torch.log1p(-v) - math.log(256)).flatten(1).sum(1)
            bpd = -(model(y.to(device)) + logdet.to(device)).mean() / (784 * math.log(2)) + 8
        return bpd.item()

    steps, sec = timed(step, a.warmup, a.seconds)
    return {"rate": steps * B / sec, "unit": "images/s", "steps": steps, "sec": sec, "params": count(model)}


# ---------------------------------------------------------------------------------------------------
# GEMM


def gemm(a):
    x = torch.randn(a.m, a.k)
    y = torch.randn(a.k, a.n)
    steps, sec = timed(lambda: torch.matmul(x, y), 1, a.seconds)
    return {"rate": 2 * a.m * a.n * a.k * steps / sec / 1e9, "unit": "GFLOP/s", "steps": steps, "sec": sec}


# ---------------------------------------------------------------------------------------------------
# Equivalence check against arflow's weights


def read_bundle(path):
    """`path`.json lists {name, dtype, shape, offset} of the tensors in `path`.bin (little-endian)."""
    with open(f"{path}.json") as f:
        meta = json.load(f)
    raw = open(f"{path}.bin", "rb").read()
    out = {}
    for t in meta["tensors"]:
        dt = {"f32": np.float32, "u32": np.uint32}[t["dtype"]]
        n = int(np.prod(t["shape"])) if t["shape"] else 1
        out[t["name"]] = np.frombuffer(raw, dtype=dt, count=n, offset=t["offset"]).reshape(t["shape"]).copy()
    return out


def check(a):
    if a.model == "char":
        model = char_model(a)
        named = list(model.state_dict(keep_vars=True).items())
        buffers = []
    else:
        model = flow_model(a, a.model)
        named = model.named()
        buffers = model.named_buffers_arflow()
    out = {"params": [[n, list(t.shape)] for n, t in named], "count": count(model)}
    if a.bundle:
        data = read_bundle(a.bundle)
        with torch.no_grad():
            for n, t in named + buffers:
                t.copy_(torch.from_numpy(data[n]).view(t.shape))
        model.eval()
        with torch.no_grad():
            if a.model == "char":
                x = torch.from_numpy(data["input.ids"].astype(np.int64))
                y = torch.from_numpy(data["input.targets"].astype(np.int64))
                logits, _ = model(x.view(a.batch, a.seq))
                out["loss"] = F.cross_entropy(logits.reshape(-1, a.vocab), y.view(-1)).item()
            else:
                for m in model.modules():
                    if isinstance(m, ActNorm):
                        m.ready = True
                y = torch.from_numpy(data["input.y"]).view(-1, 1, 28, 28)
                out["logp"] = model(y).tolist()
    return out


# ---------------------------------------------------------------------------------------------------


def count(model):
    return sum(p.numel() for p in model.parameters())


def timed(step, warmup, seconds):
    """`warmup` untimed calls, then timed ones until `seconds` have passed (at least one)."""
    for _ in range(warmup):
        step()
    n = 0
    t0 = time.perf_counter()
    while True:
        step()
        n += 1
        sec = time.perf_counter() - t0
        if sec >= seconds:
            return n, sec


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "workload", choices=["char-train", "char-sample", "realnvp", "glow", "realnvp-score", "glow-score", "gemm", "check"]
    )
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    # char LM
    p.add_argument("--vocab", type=int)
    p.add_argument("--ids", help="uint32 little-endian token ids (the encoded corpus)")
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--cell", choices=["gru", "lstm"], default="gru")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--prime-ids", default="0")
    p.add_argument("--length", type=int, default=2000)
    # flows
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--limit", type=int, default=2048)
    p.add_argument("--scales", type=int, default=2)
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--device", default="cpu", help="flows: cpu (default) or cuda[:N]")
    p.add_argument("--tf32", choices=["default", "on", "off"], default="default",
                   help="flows on CUDA: TF32 for cuDNN and cuBLAS (default: PyTorch's own settings)")
    p.add_argument("--synthetic", action="store_true", help="flows: uniform random images instead of Fashion-MNIST")
    # gemm
    p.add_argument("--m", type=int, default=1024)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--k", type=int, default=1024)
    # check
    p.add_argument("--model", choices=["char", "realnvp", "glow"])
    p.add_argument("--bundle")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    run = {
        "char-train": char_train,
        "char-sample": char_sample,
        "realnvp": lambda a: flow_train(a, "realnvp"),
        "glow": lambda a: flow_train(a, "glow"),
        "realnvp-score": lambda a: flow_score(a, "realnvp"),
        "glow-score": lambda a: flow_score(a, "glow"),
        "gemm": gemm,
        "check": check,
    }[a.workload]
    out = run(a)
    out.update(workload=a.workload, torch=torch.__version__, threads=torch.get_num_threads(),
               python=platform.python_version())
    if a.device != "cpu":
        dev = torch.device(a.device)
        out.update(device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else a.device, tf32=a.tf32,
                   cudnn_tf32=torch.backends.cudnn.allow_tf32, matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    if a.synthetic:
        out.update(synthetic=True)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
