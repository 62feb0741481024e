#!/usr/bin/python3
"""PyTorch CPU side of bench/bench_train.sh: the same training step as bench/bench_train.c.

    /usr/bin/python3 bench/bench_train_torch.py -n bn|gn|gn+pn -t THREADS -m MICRO [-b 128] [-s 6]

Model (mirrors src/nn/model.c): pre-activation ResNet v2, resnet20, width 16, 1x28x28, 10
classes. stem conv3x3; stages of 3 blocks (widths 16, 32, 64, stride 2 at the first block of
stages 2 and 3): h = NA1(x); sc = conv1x1(h, stride) if the shape changes else x;
out = conv2(NA2(conv1(h))) + sc; final NA, global average pool, linear. Convolutions have no
bias. NA = BatchNorm2d + ReLU (bn), GroupNorm(4) + ReLU (gn), or GroupNorm(4, no affine) +
PN-Act ReLU written in PyTorch from docs/proxy-norm.md (gn+pn).
Step: zero_grad, for each micro-batch forward, mean cross-entropy * MICRO/BATCH, backward;
then SGD(lr 0.05, momentum 0.9, weight decay 5e-4 on conv/linear weights and PN's
beta_t/gamma_t). Memory: VmHWM minus VmRSS just before the first step (/proc/self/status;
resource.getrusage(RUSAGE_SELF).ru_maxrss is printed alongside as a check).
Prints "RESULT torch NORM MICRO THREADS IMG_S_MEDIAN IMG_S_MAX STEPS TRAIN_MEM_KB".
"""
import argparse
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

N_PROXY = 200
GN_EPS, PN_EPS, BN_EPS = 1e-3, 0.03, 1e-5
GROUPS = 4


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


class GNPN(nn.Module):
    """GroupNorm (no affine) + PN-Act ReLU (docs/proxy-norm.md)."""

    def __init__(self, C):
        super().__init__()
        self.G = min(GROUPS, C)
        self.gamma = nn.Parameter(torch.ones(C))
        self.beta = nn.Parameter(torch.zeros(C))
        self.gamma_t = nn.Parameter(torch.zeros(C))
        self.beta_t = nn.Parameter(torch.zeros(C))
        i = torch.arange(N_PROXY, dtype=torch.float64)
        z = math.sqrt(2.0) * torch.erfinv(2.0 * (i + 0.5) / N_PROXY - 1.0)
        self.register_buffer("z", z.float(), persistent=False)

    def forward(self, x):
        y = F.group_norm(x, self.G, eps=GN_EPS)
        yt = (1 + self.gamma_t)[:, None] * self.z[None, :] + self.beta_t[:, None]
        p = F.relu(self.gamma[:, None] * yt + self.beta[:, None])
        m = p.mean(dim=1)
        s = torch.rsqrt(p.var(dim=1, unbiased=False) + PN_EPS)
        a = F.relu(self.gamma[None, :, None, None] * y + self.beta[None, :, None, None])
        return (a - m[None, :, None, None]) * s[None, :, None, None]


def make_norm(kind):
    if kind == "bn":
        return lambda C: nn.Sequential(nn.BatchNorm2d(C, eps=BN_EPS, momentum=0.1), nn.ReLU())
    if kind == "gn":
        return lambda C: nn.Sequential(nn.GroupNorm(min(GROUPS, C), C, eps=GN_EPS), nn.ReLU())
    return GNPN


def conv(cin, cout, k, stride):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


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
        return self.conv2(self.norm2(self.conv1(h))) + sc


class ResNet(nn.Module):
    def __init__(self, norm, n=3, width=16, in_ch=1, classes=10):
        super().__init__()
        self.stem = conv(in_ch, width, 3, 1)
        blocks, cin = [], width
        for s in range(3):
            cout = width << s
            for b in range(n):
                blocks.append(Block(norm, cin, cout, 2 if (s > 0 and b == 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.final = norm(cin)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        h = self.final(self.blocks(self.stem(x)))
        return self.fc(h.mean(dim=(2, 3)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", default="gn+pn", choices=["bn", "gn", "gn+pn"])
    ap.add_argument("-t", type=int, default=1)
    ap.add_argument("-m", type=int, default=128)
    ap.add_argument("-b", type=int, default=128)
    ap.add_argument("-s", type=int, default=6)
    a = ap.parse_args()
    torch.set_num_threads(a.t)
    torch.manual_seed(1)
    model = ResNet(make_norm(a.n))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if (p.dim() > 1 or name.endswith("_t")) else no_decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}], lr=0.05, momentum=0.9)
    x = torch.rand(a.b, 1, 28, 28)
    y = torch.randint(0, 10, (a.b,))
    rss0 = status_kb("VmRSS")
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dts = []
    for s in range(-1, a.s):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        for o in range(0, a.b, a.m):
            loss = F.cross_entropy(model(x[o:o + a.m]), y[o:o + a.m]) * (a.m / a.b)
            loss.backward()
        opt.step()
        if s >= 0:
            dts.append(time.perf_counter() - t0)
    hwm = status_kb("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dts.sort()
    k = len(dts)
    med = dts[k // 2] if k % 2 else 0.5 * (dts[k // 2 - 1] + dts[k // 2])
    print("RESULT torch %s %d %d %.1f %.1f %d %d" % (a.n, a.m, a.t, a.b / med, a.b / dts[0], k,
                                                     hwm - rss0))
    print("# torch ru_maxrss before %d kB, after %d kB" % (maxrss0, maxrss))


if __name__ == "__main__":
    main()
