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


class BBlock(nn.Module):
    """Pre-activation bottleneck block (src/nn/arch_bottleneck.c)."""

    def __init__(self, norm, cin, mid, cout, stride, groups, dtype=torch.float32):
        super().__init__()
        self.norm1 = norm(cin)
        self.conv1 = conv(cin, mid, 1, 1, dtype)
        self.norm2 = norm(mid)
        self.conv2 = conv(mid, mid, 3, stride, dtype, groups)
        self.norm3 = norm(mid)
        self.conv3 = conv(mid, cout, 1, 1, dtype)
        self.shortcut = conv(cin, cout, 1, stride, dtype) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        h = self.norm1(x)
        sc = self.shortcut(h) if self.shortcut is not None else x
        t = self.conv3(self.norm3(self.conv2(self.norm2(self.conv1(h)))))
        return t + sc


class BottleneckNet(nn.Module):
    """bottleneck_A-B-.. (groups 0) or resnext_A-B-.._GxDd of the C model: stem conv3x3
    below 64 px, conv7x7/2 + max pool 3x3/2 pad 1 from 64 px; planes w * 2^s, out 4 planes;
    ResNeXt bottleneck floor(planes * D / 64) * G channels in G groups."""

    def __init__(self, norm, blocks, width, image, in_ch, classes, groups=0, dpg=0,
                 dtype=torch.float32):
        super().__init__()
        self.big = image >= 64
        self.stem = Holder()
        self.stem.conv = conv(in_ch, width, 7, 2, dtype) if self.big else conv(in_ch, width, 3, 1, dtype)
        self.blocks = blocks
        cin = width
        for s, nb in enumerate(blocks):
            stage = Holder()
            planes = width << s
            mid = planes * dpg // 64 * groups if groups else planes
            for b in range(nb):
                stride = 2 if (s > 0 and b == 0) else 1
                setattr(stage, "block%d" % b,
                        BBlock(norm, cin, mid, 4 * planes, stride, groups or 1, dtype))
                cin = 4 * planes
            setattr(self, "stage%d" % (s + 1), stage)
        self.final = Holder()
        self.final.norm = norm(cin)
        self.fc = nn.Linear(cin, classes, dtype=dtype)

    def forward(self, x):
        h = self.stem.conv(x)
        if self.big:
            h = F.max_pool2d(h, 3, stride=2, padding=1)
        for s, nb in enumerate(self.blocks):
            stage = getattr(self, "stage%d" % (s + 1))
            for b in range(nb):
                h = getattr(stage, "block%d" % b)(h)
        h = self.final.norm(h)
        return self.fc(h.mean(dim=(2, 3)))


# ---------------------------------------------------------------- EfficientNet
# torchvision's EfficientNet-B0 stage table: expand ratio, kernel, stride, in, out, repeats.
EFFNET_STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
                 (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
                 (6, 3, 1, 192, 320, 1)]
# width and depth multipliers of b0, b1, b2
EFFNET_MULT = {"b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2)}


def make_divisible(v, divisor=8):
    """torchvision's _make_divisible: nearest multiple of divisor, at least divisor, never
    more than 10% below v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class BNAct(nn.BatchNorm2d):
    def __init__(self, C, act, dtype=torch.float32):
        super().__init__(C, eps=BN_EPS, momentum=0.1, dtype=dtype)
        self.act = act

    def forward(self, x):
        y = super().forward(x)
        return self.act(y) if self.act is not None else y


class GNAct(nn.GroupNorm):
    def __init__(self, C, act, dtype=torch.float32):
        super().__init__(min(GROUPS, C), C, eps=GN_EPS, dtype=dtype)
        self.act = act

    def forward(self, x):
        y = super().forward(x)
        return self.act(y) if self.act is not None else y


class GNScale(nn.Module):
    """GroupNorm with a scale and no shift: the norm without activation of gn+pn."""

    def __init__(self, C, dtype=torch.float32):
        super().__init__()
        self.G = min(GROUPS, C)
        self.weight = nn.Parameter(torch.ones(C, dtype=dtype))

    def forward(self, x):
        return F.group_norm(x, self.G, weight=self.weight, eps=GN_EPS)


def make_norm_act(kind, dtype=torch.float32):
    """norm(C, act) -> module: act None means a norm without activation."""
    def f(C, act):
        if kind == "bn":
            return BNAct(C, act, dtype)
        if kind == "gn":
            return GNAct(C, act, dtype)
        if kind == "gn+pn":
            return GNPN(C, dtype, act=act) if act is not None else GNScale(C, dtype)
        raise ValueError("unknown norm %r" % kind)
    return f


class SE(nn.Module):
    """Squeeze-and-excitation as torchvision's SqueezeExcitation(C, Cr, SiLU)."""

    def __init__(self, C, Cr, dtype=torch.float32):
        super().__init__()
        self.fc1 = nn.Conv2d(C, Cr, 1, dtype=dtype)
        self.fc2 = nn.Conv2d(Cr, C, 1, dtype=dtype)

    def forward(self, x):
        g = torch.sigmoid(self.fc2(F.silu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * g


class MBConv(nn.Module):
    def __init__(self, norm, cin, cout, expand, k, stride, dtype=torch.float32):
        super().__init__()
        ce = make_divisible(cin * expand)
        if ce != cin:
            self.expand_conv = conv(cin, ce, 1, 1, dtype)
            self.expand_norm = norm(ce, F.silu)
        self.dw_conv = conv(ce, ce, k, stride, dtype, groups=ce)
        self.dw_norm = norm(ce, F.silu)
        self.se = SE(ce, max(1, cin // 4), dtype)
        self.project_conv = conv(ce, cout, 1, 1, dtype)
        self.project_norm = norm(cout, None)
        self.residual = stride == 1 and cin == cout
        self.has_expand = ce != cin

    def forward(self, x):
        h = self.expand_norm(self.expand_conv(x)) if self.has_expand else x
        h = self.se(self.dw_norm(self.dw_conv(h)))
        h = self.project_norm(self.project_conv(h))
        return h + x if self.residual else h   # stochastic depth: off here (golden steps)


class EfficientNet(nn.Module):
    """EfficientNet b0..b2 as src/nn/arch_effnet.c builds it: torchvision's layout and names
    of the C model (stem.conv, stageS.blockB.{expand,dw,project}_{conv,norm}, .se.fc1/fc2,
    head.conv, head.norm, fc), without the classifier dropout and with stochastic depth off.
    width: stem channels before the multiplier (32 in torchvision); every channel count
    is scaled by width/32 too. Images smaller than 64 px: stem stride 1 and stage 2 stride
    1 (total stride 8 instead of 32)."""

    def __init__(self, norm, variant="b0", width=32, in_ch=3, classes=1000, image=224,
                 dtype=torch.float32):
        super().__init__()
        wm, dm = EFFNET_MULT[variant]
        wm = wm * width / 32.0
        small = image < 64
        self.stem = Holder()
        c0 = make_divisible(32 * wm)
        self.stem.conv = conv(in_ch, c0, 3, 1 if small else 2, dtype)
        self.stem.norm = norm(c0, F.silu)
        self.blocks = []
        cin = c0
        for s, (e, k, st, _, co, n) in enumerate(EFFNET_STAGES):
            stage = Holder()
            cout = make_divisible(co * wm)
            if small and s == 1:
                st = 1
            for b in range(int(math.ceil(n * dm))):
                blk = MBConv(norm, cin, cout, e, k, st if b == 0 else 1, dtype)
                setattr(stage, "block%d" % b, blk)
                self.blocks.append(blk)
                cin = cout
            setattr(self, "stage%d" % (s + 1), stage)
        self.head = Holder()
        self.head.conv = conv(cin, 4 * cin, 1, 1, dtype)
        self.head.norm = norm(4 * cin, F.silu)
        self.fc = nn.Linear(4 * cin, classes, dtype=dtype)

    def forward(self, x):
        h = self.stem.norm(self.stem.conv(x))
        for blk in self.blocks:
            h = blk(h)
        h = self.head.norm(self.head.conv(h))
        return self.fc(h.mean(dim=(2, 3)))
