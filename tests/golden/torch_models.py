"""PyTorch versions of the C models (src/nn/), shared by the golden generators
(tests/golden/gen_model.py) and the benchmarks (bench/bench_train_torch.py).

Parameter names match the C model's (`stem.conv.weight`, `stage2.block0.norm1.gamma_t`,
`final.norm.weight`, `fc.bias`, ...), so a test can match tensors by name. The dtype is a
parameter: the golden tests run in float64 (from float32 values), the benchmark in float32.

Norm choices (`make_norm`), each a module `norm(C)` applied where the C model has
"Norm + activation":
    "bn"     BatchNorm2d (eps 1e-5, momentum 0.1) + ReLU
    "gn"     GroupNorm(min(4, C)) with affine (eps 1e-3) + ReLU
    "gn+pn"  GroupNorm(min(4, C)) without affine + PN-Act ReLU, written from
             docs/proxy-norm.md (proxy points rounded to float32 as the C side stores them).
The module creation order (hence the draws of PyTorch's default initialization) and the
parameter registration order are part of the golden vectors: keep them.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

N_PROXY = 200
GN_EPS, PN_EPS, BN_EPS = 1e-3, 0.03, 1e-5
GROUPS = 4


def proxy_points(dtype):
    """z_i = Phi^-1((i + 1/2) / N), computed in float64, stored as float32 (as the C side)."""
    i = torch.arange(N_PROXY, dtype=torch.float64)
    z = math.sqrt(2.0) * torch.erfinv(2.0 * (i + 0.5) / N_PROXY - 1.0)
    return z.to(torch.float32).to(dtype)


class GNPN(nn.Module):
    """GroupNorm (no affine) followed by PN-Act (docs/proxy-norm.md); act ReLU by default."""

    def __init__(self, C, dtype=torch.float32, groups=GROUPS, act=F.relu):
        super().__init__()
        self.G = min(groups, C)
        self.act = act
        self.gamma = nn.Parameter(torch.ones(C, dtype=dtype))
        self.beta = nn.Parameter(torch.zeros(C, dtype=dtype))
        self.gamma_t = nn.Parameter(torch.zeros(C, dtype=dtype))
        self.beta_t = nn.Parameter(torch.zeros(C, dtype=dtype))
        self.register_buffer("z", proxy_points(dtype), persistent=False)

    def forward(self, x):
        y = F.group_norm(x, self.G, eps=GN_EPS)
        yt = (1 + self.gamma_t)[:, None] * self.z[None, :] + self.beta_t[:, None]  # (C, N_PROXY)
        p = self.act(self.gamma[:, None] * yt + self.beta[:, None])
        m = p.mean(dim=1)
        v = ((p - m[:, None]) ** 2).mean(dim=1)
        s = 1.0 / torch.sqrt(v + PN_EPS)
        a = self.gamma[None, :, None, None] * y + self.beta[None, :, None, None]
        return (self.act(a) - m[None, :, None, None]) * s[None, :, None, None]


class BNReLU(nn.BatchNorm2d):
    def __init__(self, C, dtype=torch.float32):
        super().__init__(C, eps=BN_EPS, momentum=0.1, dtype=dtype)

    def forward(self, x):
        return F.relu(super().forward(x))


class GNReLU(nn.GroupNorm):
    def __init__(self, C, dtype=torch.float32):
        super().__init__(min(GROUPS, C), C, eps=GN_EPS, dtype=dtype)

    def forward(self, x):
        return F.relu(super().forward(x))


def make_norm(kind, dtype=torch.float32):
    """norm(C) -> module for "bn", "gn" or "gn+pn"."""
    if kind == "bn":
        return lambda C: BNReLU(C, dtype)
    if kind == "gn":
        return lambda C: GNReLU(C, dtype)
    if kind == "gn+pn":
        return lambda C: GNPN(C, dtype)
    raise ValueError("unknown norm %r" % kind)


def conv(cin, cout, k, stride, dtype=torch.float32, groups=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, groups=groups,
                     dtype=dtype)


class Holder(nn.Module):
    """An empty module that only groups children under a name (stem, stageS, final)."""


class Block(nn.Module):
    """Pre-activation basic block: h = NA1(x); sc = conv1x1(h, stride) if the shape changes
    else x; out = conv2(NA2(conv1(h))) + sc."""

    def __init__(self, norm, cin, cout, stride, dtype=torch.float32):
        super().__init__()
        self.norm1 = norm(cin)
        self.conv1 = conv(cin, cout, 3, stride, dtype)
        self.norm2 = norm(cout)
        self.conv2 = conv(cout, cout, 3, 1, dtype)
        self.shortcut = conv(cin, cout, 1, stride, dtype) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        h = self.norm1(x)
        sc = self.shortcut(h) if self.shortcut is not None else x
        h = self.conv2(self.norm2(self.conv1(h)))
        return h + sc


class ResNet(nn.Module):
    """Pre-activation ResNet v2 of src/nn/model.c: stem conv3x3 (stride 1); three stages of
    `blocks` blocks (widths width, 2 width, 4 width; stride 2 at the first block of stages 2
    and 3); final Norm + activation; global average pool; linear. resnet20: blocks = 3."""

    def __init__(self, norm, blocks=3, width=16, in_ch=1, classes=10, dtype=torch.float32):
        super().__init__()
        self.n_blocks = blocks
        self.stem = Holder()
        self.stem.conv = conv(in_ch, width, 3, 1, dtype)
        cin = width
        for s in range(3):
            stage = Holder()
            cout = width << s
            for b in range(blocks):
                setattr(stage, "block%d" % b,
                        Block(norm, cin, cout, 2 if (s > 0 and b == 0) else 1, dtype))
                cin = cout
            setattr(self, "stage%d" % (s + 1), stage)
        self.final = Holder()
        self.final.norm = norm(cin)
        self.fc = nn.Linear(cin, classes, dtype=dtype)

    def forward(self, x):
        h = self.stem.conv(x)
        for s in range(3):
            stage = getattr(self, "stage%d" % (s + 1))
            for b in range(self.n_blocks):
                h = getattr(stage, "block%d" % b)(h)
        h = self.final.norm(h)
        return self.fc(h.mean(dim=(2, 3)))
