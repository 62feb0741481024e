#!/usr/bin/python3
"""Golden vectors for EfficientNet (src/nn/arch_effnet.c, tests/test_effnet.c).

Run with Debian's PyTorch:  /usr/bin/python3 tests/golden/gen_effnet.py
Writes tests/golden/effnet_bn.txt and tests/golden/effnet_gnpn.txt (format: tests/golden.h).

1. When torchvision is installed: tests/golden/torch_models.py's EfficientNet b0, b1, b2
   (the C model's layout and names) load torchvision's efficientnet_b0..b2 state dicts
   tensor by tensor (same order, same shapes) and give the same evaluation-mode logits:
   the layout is torchvision's (asserted, nothing written).
2. One training step of a tiny effnet_b0 (width 8: every channel count x 1/4, rounded to
   multiples of 8; 1 input channel, 8x8 images -- the small-image strides --, 3 classes,
   batch 4, stochastic depth off), norm bn and gn+pn, in float64.
   The model has ~10^5 parameters, too many to store, so the parameters and the input are
   a hash of (tensor name, index) that tests/test_effnet.c computes bit for bit
   (golden_hash_u below: integer arithmetic only, values k / 2^23 - 1 exact in float):
       conv / linear weights   u * sqrt(3 / fan_in)     (SE 1x1 convolutions included)
       biases                  0.2 u
       norm scales (weight, gamma)   1 + 0.2 u
       other norm parameters   0.2 u     (bias, beta, gamma_t, beta_t)
       input x                 u;   labels (i * 7 + 1) mod 3
   scaled in float64 and rounded to float32 on both sides. Written: "logits", "loss"
   (mean cross-entropy, label smoothing 0.1), and for every parameter NAME (n values,
   gradient g): "gabs.NAME" = sum |g| (the scale of the tolerances), "gsum.NAME" = sum g,
   "gdot.NAME" = sum g_i r_i with r_i = the hash of (NAME + "#", i) (a random projection:
   any wrong element changes it), "gfirst.NAME" = the first min(n, 4) values. For bn also "rmean.NAME" / "rvar.NAME": sums of the running
   statistics after the step (start 0 and 1).
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_models as tm  # noqa: E402

D = torch.float64
B, WIDTH, IMAGE, CLASSES, IN_CH = 4, 8, 8, 3, 1
SMOOTHING = 0.1
M64 = (1 << 64) - 1


def fnv1a(s):
    h = 0xCBF29CE484222325
    for c in s.encode():
        h = ((h ^ c) * 0x100000001B3) & M64
    return h


def splitmix(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def golden_hash_u(name, n):
    """n values in [-1, 1): u_i = (splitmix(fnv1a(name) + i) >> 40) / 2^23 - 1."""
    h = fnv1a(name)
    return torch.tensor([(splitmix((h + i) & M64) >> 40) / 8388608.0 - 1.0 for i in range(n)],
                        dtype=D)


def param_values(name, p):
    u = golden_hash_u(name, p.numel()).reshape(p.shape)
    last = name.rsplit(".", 1)[-1]
    if last == "weight" and p.dim() >= 2:
        v = u * math.sqrt(3.0 / (p.numel() / p.shape[0]))
    elif last == "bias" and ("conv" in name or name.startswith("fc") or ".se." in name):
        v = 0.2 * u
    elif last in ("weight", "gamma"):
        v = 1.0 + 0.2 * u
    else:
        v = 0.2 * u
    return v.to(torch.float32).to(D)


def put(lines, name, t, digits=9):
    if not torch.is_tensor(t):
        t = torch.tensor(float(t))
    t = t.detach().to(D).contiguous()
    shape = list(t.shape)
    lines.append(("%s %d %s" % (name, len(shape), " ".join(str(s) for s in shape))).rstrip())
    lines.append(" ".join(("%%.%dg" % digits) % v for v in t.reshape(-1).tolist()))


def check_torchvision():
    try:
        import torchvision
    except ImportError:
        print("torchvision not installed: layout check skipped")
        return
    torch.manual_seed(0)
    for v in ("b0", "b1", "b2"):
        ours = tm.EfficientNet(tm.make_norm_act("bn"), v)
        ref = getattr(torchvision.models, "efficientnet_" + v)()
        sa = [(k, t) for k, t in ours.state_dict().items() if not k.endswith("num_batches_tracked")]
        sb = [(k, t) for k, t in ref.state_dict().items() if not k.endswith("num_batches_tracked")]
        assert len(sa) == len(sb), (v, len(sa), len(sb))
        for (ka, ta), (kb, tb) in zip(sa, sb):
            assert ta.shape == tb.shape, (v, ka, kb, ta.shape, tb.shape)
        ours.load_state_dict({ka: tb for (ka, _), (_, tb) in zip(sa, sb)})
        ours.eval()
        ref.eval()
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            d = (ours(x) - ref(x)).abs().max().item()
        assert d < 1e-5, (v, d)
        print("efficientnet_%s: %d tensors, same shapes and names mapped, max |logit diff| %.3g"
              % (v, len(sa), d))


def generate(kind, fname):
    model = tm.EfficientNet(tm.make_norm_act(kind, D), "b0", width=WIDTH, in_ch=IN_CH,
                            classes=CLASSES, image=IMAGE, dtype=D)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(param_values(name, p))
    x = golden_hash_u("x", B * IN_CH * IMAGE * IMAGE).reshape(B, IN_CH, IMAGE, IMAGE)
    x = x.to(torch.float32).to(D)
    labels = torch.tensor([(i * 7 + 1) % CLASSES for i in range(B)])
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, labels, label_smoothing=SMOOTHING)
    loss.backward()
    lines = ["# one training step of effnet_b0 (width %d, %dx%dx%d, %d classes, batch %d), norm %s"
             % (WIDTH, IN_CH, IMAGE, IMAGE, CLASSES, B, kind),
             "# generated by tests/golden/gen_effnet.py (torch %s); float64 reference; "
             "parameters: see the script" % torch.__version__]
    for name, v in (("B", B), ("width", WIDTH), ("image", IMAGE), ("classes", CLASSES),
                    ("in_channels", IN_CH), ("smoothing", SMOOTHING),
                    ("nparams", sum(p.numel() for p in params.values())),
                    ("ntensors", len(params))):
        put(lines, name, v)
    put(lines, "logits", logits)
    put(lines, "loss", loss)
    for name, p in params.items():
        g = p.grad.reshape(-1)
        r = golden_hash_u(name + "#", g.numel())
        put(lines, "gabs." + name, g.abs().sum())
        put(lines, "gsum." + name, g.sum())
        put(lines, "gdot." + name, (g * r).sum())
        put(lines, "gfirst." + name, g[:4])
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            put(lines, "rmean." + name[:-len(".running_mean")], b.sum())
        elif name.endswith("running_var"):
            put(lines, "rvar." + name[:-len(".running_var")], b.sum())
    with open(os.path.join(HERE, fname), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d parameter tensors, %d parameters, %d bytes)"
          % (fname, len(params), sum(p.numel() for p in params.values()),
             os.path.getsize(os.path.join(HERE, fname))))


if __name__ == "__main__":
    check_torchvision()
    generate("bn", "effnet_bn.txt")
    generate("gn+pn", "effnet_gnpn.txt")
