#!/usr/bin/python3
"""PyTorch CPU side of bench/bench_norm.sh: forward + backward time of the same ops as
bench/bench_norm.c, same shapes, threads set by torch.set_num_threads.

    /usr/bin/python3 bench/bench_norm_torch.py [-t 1,2] [-q]

Ops:
  gn      nn.GroupNorm(4, C) (affine)
  ln      nn.GroupNorm(1, C) (affine)
  bn      nn.BatchNorm2d(C), training mode (running stats updated)
  gnpn    F.group_norm(x, 4) (no affine) + PN-Act (ReLU) written in PyTorch from
          docs/proxy-norm.md (autograd through the proxy statistics)
  gnrelu  nn.GroupNorm(4, C) + ReLU (context: what plain GN + activation costs in PyTorch)
Prints "RESULT torch OP NxCxHxW THREADS MEDIAN_MS MIN_MS REPS"; median after 2 warm-ups,
repetitions filling ~0.6 s (-q: ~0.1 s), between 5 and 60.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = [(128, 16, 28, 28), (128, 64, 7, 7), (8, 256, 14, 14)]
PROXY_N = 200
PN_EPS = 0.03


class PNAct(nn.Module):
    """affine + activation + proxy normalization (docs/proxy-norm.md)."""

    def __init__(self, C, act=F.relu):
        super().__init__()
        self.gamma = nn.Parameter(1.0 + 0.2 * torch.randn(C))
        self.beta = nn.Parameter(0.2 * torch.randn(C))
        self.gamma_t = nn.Parameter(0.1 * torch.randn(C))
        self.beta_t = nn.Parameter(0.1 * torch.randn(C))
        i = torch.arange(PROXY_N, dtype=torch.float64)
        z = math.sqrt(2.0) * torch.erfinv(2.0 * (i + 0.5) / PROXY_N - 1.0)
        self.register_buffer("z", z.float())
        self.act = act

    def forward(self, y):
        yt = (1.0 + self.gamma_t)[:, None] * self.z[None, :] + self.beta_t[:, None]
        p = self.act(self.gamma[:, None] * yt + self.beta[:, None])
        m = p.mean(1)
        s = torch.rsqrt(p.var(1, unbiased=False) + PN_EPS)
        a = self.act(y * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1))
        return (a - m.view(1, -1, 1, 1)) * s.view(1, -1, 1, 1)


class GNPN(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.pn = PNAct(C)

    def forward(self, x):
        return self.pn(F.group_norm(x, 4, None, None, 1e-3))


def make(op, C):
    if op == "gn":
        return nn.GroupNorm(4, C)
    if op == "ln":
        return nn.GroupNorm(1, C)
    if op == "bn":
        return nn.BatchNorm2d(C).train()
    if op == "gnpn":
        return GNPN(C)
    if op == "gnrelu":
        return nn.Sequential(nn.GroupNorm(4, C), nn.ReLU())
    raise ValueError(op)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-t", default="1,2")
    ap.add_argument("-q", action="store_true")
    args = ap.parse_args()
    budget = 0.1 if args.q else 0.6
    torch.manual_seed(0)
    print("# torch %s, fwd+bwd, median ms" % torch.__version__)
    for shape in SHAPES:
        N, C, H, W = shape
        x = (torch.randn(shape) * 2 + 0.5).requires_grad_(True)
        dy = torch.randn(shape)
        for t in (int(v) for v in args.t.split(",")):
            torch.set_num_threads(t)
            for op in ("gn", "ln", "bn", "gnpn", "gnrelu"):
                mod = make(op, C)

                def step():
                    x.grad = None
                    for prm in mod.parameters():
                        prm.grad = None
                    mod(x).backward(dy)

                step()
                t0 = time.perf_counter()
                step()
                first = time.perf_counter() - t0
                reps = max(5, min(60, int(budget / max(first, 1e-6))))
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t0)
                times.sort()
                med = times[reps // 2] if reps % 2 else 0.5 * (times[reps // 2 - 1] + times[reps // 2])
                print("RESULT torch %s %s %d %.4f %.4f %d" % (op, "x".join(map(str, shape)), t,
                                                              1e3 * med, 1e3 * times[0], reps), flush=True)


if __name__ == "__main__":
    main()
