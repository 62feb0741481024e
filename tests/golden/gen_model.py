#!/usr/bin/python3
"""Golden vectors for one full training step of the model (src/nn/model.c).

Run with Debian's PyTorch:  /usr/bin/python3 tests/golden/gen_model.py
Writes tests/golden/model_gnpn.txt and tests/golden/model_bn.txt (format: tests/golden.h),
read by tests/test_model.c; and the same for the bottleneck family: model_bottleneck_gnpn.txt
(bottleneck_1-1, width 4, gn+pn), model_resnext_gnpn.txt (resnext_1-1_2x32d: grouped 3x3
convolutions, 2 groups; gn+pn) and model_bottleneck64_bn.txt (bottleneck_1 on 64x64 images:
the conv7x7/2 + max-pool stem; bn, batch 2).

The network is the tiny pre-activation ResNet of the C test: resnet8 (one block per
stage), width 4, 1 input channel, 8x8 images, 3 classes, batch 4, with the C model's
parameter names. The generator draws its own random parameters (norm parameters away
from their init so that every term of the backward matters), rounds them to 4 significant
digits (keeps the file small; C and PyTorch read the same float32 values) and writes them
as "param.NAME". It then runs, in float64 from those float32 values, one training-mode
forward, the mean cross-entropy with label smoothing 0.1, and the backward, and writes
"logits", "loss" (the mean), "grad.NAME" for every parameter and, for BatchNorm, the
running statistics after the step as "buffer.NAME" (they start at mean 0, var 1).
Scalars "B", "width", "image", "classes", "groups" describe the configuration.
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
D = torch.float64
N_PROXY = 200
GN_EPS, PN_EPS, BN_EPS = 1e-3, 0.03, 1e-5

B, WIDTH, IMAGE, CLASSES, GROUPS, IN_CH, NBLK = 4, 4, 8, 3, 4, 1, 1
SMOOTHING = 0.1


def proxy_points():
    i = torch.arange(N_PROXY, dtype=D)
    z = math.sqrt(2.0) * torch.erfinv(2.0 * (i + 0.5) / N_PROXY - 1.0)
    return z.to(torch.float32).to(D)  # the C side stores them as float


class GNPN(nn.Module):
    """GroupNorm (no affine) followed by PN-Act ReLU (docs/proxy-norm.md)."""

    def __init__(self, C):
        super().__init__()
        self.G = min(GROUPS, C)
        self.gamma = nn.Parameter(torch.ones(C, dtype=D))
        self.beta = nn.Parameter(torch.zeros(C, dtype=D))
        self.gamma_t = nn.Parameter(torch.zeros(C, dtype=D))
        self.beta_t = nn.Parameter(torch.zeros(C, dtype=D))
        self.register_buffer("z", proxy_points(), persistent=False)

    def forward(self, x):
        y = F.group_norm(x, self.G, eps=GN_EPS)
        yt = (1 + self.gamma_t)[:, None] * self.z[None, :] + self.beta_t[:, None]  # (C, N)
        p = F.relu(self.gamma[:, None] * yt + self.beta[:, None])
        m = p.mean(dim=1)
        v = ((p - m[:, None]) ** 2).mean(dim=1)
        s = 1.0 / torch.sqrt(v + PN_EPS)
        a = self.gamma[None, :, None, None] * y + self.beta[None, :, None, None]
        return (F.relu(a) - m[None, :, None, None]) * s[None, :, None, None]


class BNReLU(nn.BatchNorm2d):
    def __init__(self, C):
        super().__init__(C, eps=BN_EPS, momentum=0.1, dtype=D)

    def forward(self, x):
        return F.relu(super().forward(x))


def conv(cin, cout, k, stride, groups=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, groups=groups, dtype=D)


class Holder(nn.Module):
    pass


class Block(nn.Module):
    def __init__(self, norm, cin, cout, stride):
        super().__init__()
        self.norm1 = norm(cin)
        self.conv1 = conv(cin, cout, 3, stride)
        self.norm2 = norm(cout)
        self.conv2 = conv(cout, cout, 3, 1)
        self.shortcut = conv(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        h = self.norm1(x)
        sc = self.shortcut(h) if self.shortcut is not None else x
        h = self.conv2(self.norm2(self.conv1(h)))
        return h + sc


class ResNet(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.stem = Holder()
        self.stem.conv = conv(IN_CH, WIDTH, 3, 1)
        cin = WIDTH
        for s in range(3):
            stage = Holder()
            cout = WIDTH << s
            for b in range(NBLK):
                setattr(stage, "block%d" % b, Block(norm, cin, cout, 2 if (s > 0 and b == 0) else 1))
                cin = cout
            setattr(self, "stage%d" % (s + 1), stage)
        self.final = Holder()
        self.final.norm = norm(cin)
        self.fc = nn.Linear(cin, CLASSES, dtype=D)

    def forward(self, x):
        h = self.stem.conv(x)
        for s in range(3):
            stage = getattr(self, "stage%d" % (s + 1))
            for b in range(NBLK):
                h = getattr(stage, "block%d" % b)(h)
        h = self.final.norm(h)
        return self.fc(h.mean(dim=(2, 3)))


class BBlock(nn.Module):
    """Pre-activation bottleneck block (src/nn/arch_bottleneck.c)."""

    def __init__(self, norm, cin, mid, cout, stride, groups):
        super().__init__()
        self.norm1 = norm(cin)
        self.conv1 = conv(cin, mid, 1, 1)
        self.norm2 = norm(mid)
        self.conv2 = conv(mid, mid, 3, stride, groups)
        self.norm3 = norm(mid)
        self.conv3 = conv(mid, cout, 1, 1)
        self.shortcut = conv(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        h = self.norm1(x)
        sc = self.shortcut(h) if self.shortcut is not None else x
        t = self.conv3(self.norm3(self.conv2(self.norm2(self.conv1(h)))))
        return t + sc


class BottleneckNet(nn.Module):
    """bottleneck_A-B-.. (groups 0) or resnext_A-B-.._GxDd of the C model: stem conv3x3
    below 64 px, conv7x7/2 + max pool 3x3/2 pad 1 from 64 px; planes w * 2^s, out 4 planes;
    ResNeXt bottleneck floor(planes * D / 64) * G channels in G groups."""

    def __init__(self, norm, blocks, width, image, in_ch, classes, groups=0, dpg=0):
        super().__init__()
        self.big = image >= 64
        self.stem = Holder()
        self.stem.conv = conv(in_ch, width, 7, 2) if self.big else conv(in_ch, width, 3, 1)
        self.blocks = blocks
        cin = width
        for s, nb in enumerate(blocks):
            stage = Holder()
            planes = width << s
            mid = planes * dpg // 64 * groups if groups else planes
            for b in range(nb):
                stride = 2 if (s > 0 and b == 0) else 1
                setattr(stage, "block%d" % b, BBlock(norm, cin, mid, 4 * planes, stride, groups or 1))
                cin = 4 * planes
            setattr(self, "stage%d" % (s + 1), stage)
        self.final = Holder()
        self.final.norm = norm(cin)
        self.fc = nn.Linear(cin, classes, dtype=D)

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


def round4(t):
    """Values with 4 significant digits, as float32 (what the C test parses)."""
    vals = [float("%.4g" % v) for v in t.reshape(-1).tolist()]
    return torch.tensor(vals, dtype=torch.float32).reshape(t.shape).to(D)


def fmt(v, digits):
    return ("%%.%dg" % digits) % v


def put(lines, name, t, digits=9):
    if not torch.is_tensor(t):
        t = torch.tensor(float(t))
    t = t.detach().to(D).contiguous()
    shape = list(t.shape)
    lines.append(("%s %d %s" % (name, len(shape), " ".join(str(s) for s in shape))).rstrip())
    lines.append(" ".join(fmt(v, digits) for v in t.reshape(-1).tolist()))


def generate(kind, fname, seed, arch=None, width=WIDTH, image=IMAGE, batch=B, make=None):
    """arch None: the resnet8 of the C test; else `make(norm)` builds the network."""
    torch.manual_seed(seed)
    norm = GNPN if kind == "gn+pn" else BNReLU
    model = ResNet(norm) if make is None else make(norm)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if p.dim() == 4:
                fan_in = p[0].numel()
                v = torch.randn(p.shape, dtype=D) * math.sqrt(2.0 / fan_in)
            elif name == "fc.weight" or name == "fc.bias":
                bound = 1.0 / math.sqrt(params["fc.weight"].shape[1])
                v = (torch.rand(p.shape, dtype=D) * 2 - 1) * bound
            elif name.endswith(".gamma") or name.endswith(".weight"):
                v = 1.0 + 0.2 * torch.randn(p.shape, dtype=D)
            else:  # beta, bias, gamma_t, beta_t
                v = 0.2 * torch.randn(p.shape, dtype=D)
            p.copy_(round4(v))
    x = round4(torch.randn(batch, IN_CH, image, image, dtype=D))
    labels = torch.randint(0, CLASSES, (batch,))

    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, labels, label_smoothing=SMOOTHING)
    loss.backward()

    lines = ["# one training step of %s (width %d, %dx%dx%d, %d classes, batch %d), norm %s"
             % (arch or "resnet8", width, IN_CH, image, image, CLASSES, batch, kind),
             "# generated by tests/golden/gen_model.py (torch %s); float64 reference" % torch.__version__]
    for name, v in (("B", batch), ("width", width), ("image", image), ("classes", CLASSES),
                    ("groups", GROUPS), ("in_channels", IN_CH), ("smoothing", SMOOTHING)):
        put(lines, name, v)
    put(lines, "x", x, 4)
    put(lines, "labels", labels.to(D))
    for name, p in params.items():
        put(lines, "param." + name, p, 4)
    put(lines, "logits", logits, 9)
    put(lines, "loss", loss, 9)
    for name, p in params.items():
        put(lines, "grad." + name, p.grad, 7)
    for name, b in model.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            put(lines, "buffer." + name, b, 9)
    with open(os.path.join(HERE, fname), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d parameter tensors, %d bytes)"
          % (fname, len(params), os.path.getsize(os.path.join(HERE, fname))))


if __name__ == "__main__":
    generate("gn+pn", "model_gnpn.txt", 1)
    generate("bn", "model_bn.txt", 2)
    # the bottleneck family at a tiny size (names as in the C model)
    generate("gn+pn", "model_bottleneck_gnpn.txt", 3, "bottleneck_1-1", width=4,
             make=lambda n: BottleneckNet(n, [1, 1], 4, IMAGE, IN_CH, CLASSES))
    generate("gn+pn", "model_resnext_gnpn.txt", 4, "resnext_1-1_2x32d", width=4,
             make=lambda n: BottleneckNet(n, [1, 1], 4, IMAGE, IN_CH, CLASSES, groups=2, dpg=32))
    generate("bn", "model_bottleneck64_bn.txt", 5, "bottleneck_1", width=2, image=64, batch=2,
             make=lambda n: BottleneckNet(n, [1], 2, 64, IN_CH, CLASSES))
