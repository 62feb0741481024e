#!/usr/bin/python3
"""PyTorch CPU side of bench/bench_train.sh: the same training step as bench/bench_train.c.

    /usr/bin/python3 bench/bench_train_torch.py -n bn|gn|gn+pn -t THREADS -m MICRO [-b 128] [-s 6]

Model (tests/golden/torch_models.py, shared with the golden tests; mirrors src/nn/model.c):
pre-activation ResNet v2, resnet20, width 16, 1x28x28, 10 classes. stem conv3x3; stages of 3 blocks (widths 16, 32, 64, stride 2 at the first block of
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
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
import torch_models as tm  # noqa: E402  (the PyTorch models shared with the golden tests)


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


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
    model = tm.ResNet(tm.make_norm(a.n), blocks=3, width=16, in_ch=1, classes=10)
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
