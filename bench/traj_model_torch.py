#!/usr/bin/python3
"""Replays build/bench/traj_model's SGD trajectory in PyTorch (tests/golden/torch_models.py).

    build/bench/traj_model effnet_b0 8 gn+pn 0.1 24 16 31 64 0 /tmp/t > /tmp/t/c.txt
    /usr/bin/python3 bench/traj_model_torch.py effnet_b0 8 gn+pn 0.1 24 16 31 64 /tmp/t [float64]

Starts from the C model's initial parameters (OUTDIR/init.bin, matched by name and
order), feeds the same batches (OUTDIR/x.bin, y.bin) and takes the same steps: mean
cross-entropy, SGD momentum 0.9 Nesterov, weight decay 5e-4 on the tensors marked in
OUTDIR/params.txt, lr = the trainer's linear warm-up + cosine. Stochastic depth off (as
traj_model with DROPPATH 0). Prints "STEP k lr loss grad_norm param_norm" like the C side;
compare the two columns of losses.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
import torch_models as tm  # noqa: E402


def lr_at(base, step, warm, total):
    if warm > 0 and step < warm:
        return base * (step + 1) / warm
    span = total - warm
    if span <= 0:
        return base
    prog = min(1.0, (step - warm) / span)
    return base * 0.5 * (1.0 + math.cos(math.pi * prog))


def build(arch, width, kind, dtype):
    if arch.startswith("effnet_"):
        return tm.EfficientNet(tm.make_norm_act(kind, dtype), arch[7:], width=width, in_ch=1,
                               classes=10, image=28, dtype=dtype)
    raise SystemExit("traj_model_torch: only effnet_b* here")


def main():
    a = sys.argv[1:]
    if len(a) not in (9, 10):
        raise SystemExit(__doc__)
    arch, width, kind, lr0 = a[0], int(a[1]), a[2], float(a[3])
    steps, warm, total, B, out = int(a[4]), int(a[5]), int(a[6]), int(a[7]), a[8]
    dtype = torch.float64 if len(a) == 10 and a[9] == "float64" else torch.float32
    torch.set_num_threads(1)
    model = build(arch, width, kind, dtype)
    table = [ln.split() for ln in open(os.path.join(out, "params.txt"))]
    init = torch.from_numpy(__import__("numpy").fromfile(os.path.join(out, "init.bin"), dtype="float32"))
    params = dict(model.named_parameters())
    assert len(params) == len(table), (len(params), len(table))
    off, decay, no_decay = 0, [], []
    with torch.no_grad():
        for name, numel, dec in table:
            p = params[name]
            n = int(numel)
            assert p.numel() == n, (name, p.numel(), n)
            p.copy_(init[off:off + n].reshape(p.shape).to(dtype))
            off += n
            (decay if dec == "1" else no_decay).append(p)
    assert off == init.numel()
    x = torch.from_numpy(__import__("numpy").fromfile(os.path.join(out, "x.bin"), dtype="float32"))
    y = torch.from_numpy(__import__("numpy").fromfile(os.path.join(out, "y.bin"), dtype="int32"))
    x = x.reshape(-1, 1, 28, 28).to(dtype)
    y = y.long()
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=lr0, momentum=0.9, nesterov=True)
    model.train() if kind == "bn" else model.eval()
    for s in range(steps):
        lr = lr_at(lr0, s, warm, total)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss = F.cross_entropy(model(x[s * B:(s + 1) * B]), y[s * B:(s + 1) * B])
        loss.backward()
        gn = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()))
        pn = math.sqrt(sum(float((p.double() ** 2).sum()) for p in model.parameters()))
        print("STEP %d %.6g %.9g %.6g %.6g" % (s, lr, loss.item(), gn, pn), flush=True)
        opt.step()


if __name__ == "__main__":
    main()
