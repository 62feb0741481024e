#!/usr/bin/env bash
# Regenerates the seed corpora in fuzz/corpus/ (committed; run from the repository
# root after `make`): small valid inputs of each format and a few command lines.
set -eu
bin=${PROXYNORM_BIN:-build/proxynorm}
c=fuzz/corpus
mkdir -p $c/fuzz_idx $c/fuzz_cifar $c/fuzz_safetensors $c/fuzz_checkpoint $c/fuzz_cli
python3 - <<'PY'
import gzip, struct, os, json
c = "fuzz/corpus"
def idx(n, side, seed):
    img = struct.pack(">IIII", 0x803, n, side, side) + bytes((i * 37 + seed) % 256 for i in range(n * side * side))
    lab = struct.pack(">II", 0x801, n) + bytes((i + seed) % 10 for i in range(n))
    return img, lab
# fuzz_idx: mode, split (LE u16), images + labels
for name, mode, n, side in [("plain-train", 0, 3, 4), ("gz-both", 3, 2, 5), ("gz-images-test", 1 | 8, 2, 3),
                            ("limit1", 16, 4, 2), ("raw-gz", 7, 1, 2)]:
    img, lab = idx(n, side, len(name))
    if mode & 4:  # the gzipped files hold the raw bytes: give them real gzip streams
        img, lab = gzip.compress(img), gzip.compress(lab)
    open(f"{c}/fuzz_idx/{name}", "wb").write(bytes([mode]) + struct.pack("<H", len(img)) + img + lab)
# fuzz_cifar: mode, then records of 1 label + 3072 pixels
rec = lambda k: bytes([k % 10]) + bytes((i * 7 + k) % 256 for i in range(3072))
open(f"{c}/fuzz_cifar/test-1", "wb").write(bytes([0]) + rec(3))
open(f"{c}/fuzz_cifar/train-2", "wb").write(bytes([1]) + rec(1) + rec(2))
open(f"{c}/fuzz_cifar/subdir-limit", "wb").write(bytes([2 | 4]) + rec(5) + rec(6))
# fuzz_safetensors: hand-made files
def st(tensors, meta=None):
    h, data = {}, b""
    if meta: h["__metadata__"] = meta
    for name, shape, vals in tensors:
        b = struct.pack("<%df" % len(vals), *vals)
        h[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    j = json.dumps(h, separators=(",", ":")).encode()
    j += b" " * ((8 - len(j) % 8) % 8)
    return struct.pack("<Q", len(j)) + j + data
open(f"{c}/fuzz_safetensors/two", "wb").write(st([("a", [2, 2], [1, 2, 3, 4]), ("b", [3], [5, 6, 7])], {"format": "x"}))
open(f"{c}/fuzz_safetensors/empty", "wb").write(st([]))
open(f"{c}/fuzz_safetensors/scalar", "wb").write(st([("s", [], [1.5]), ("z", [0, 4], [])]))
# fuzz_cli: NUL-separated arguments
cl = {
    "train": ["train", "--model", "resnet8", "--norm", "gn+pn", "--groups", "2", "--width", "4",
              "--epochs", "2", "--batch", "8", "--micro-batch", "4", "--lr=0.05", "--seed", "7",
              "--save", "/tmp/x.st", "--save-every", "3", "--no-nesterov"],
    "train-bn": ["train", "--norm", "bn", "--norm-batch", "2", "--micro-batch", "4", "--batch", "16",
                 "--sync-bn", "--label-smoothing", "0.1", "--warmup", "0.5", "--wd", "1e-4"],
    "train-resume": ["train", "--resume", "/nonexistent.st", "--stop-at", "3"],
    "eval": ["eval", "--checkpoint", "c.st", "--batch", "10", "--limit-test", "5", "--threads", "1"],
    "info": ["info", "--model", "resnet20", "--norm", "ln+ws", "--channels", "3", "--image", "32",
             "--classes", "10", "--width", "8", "--groups", "4"],
    "power": ["power", "--norm", "gn,ln+pn", "--width", "8", "--depth", "3", "--eps=1e-5",
              "--seed", "1", "--csv", "/tmp/p.csv", "--log"],
    "help": ["train", "--help"],
    "version": ["--version"],
}
for k, v in cl.items():
    open(f"{c}/fuzz_cli/{k}", "wb").write(b"\0".join(a.encode() for a in v))
PY
# fuzz_checkpoint (and one more safetensors seed): a real training checkpoint of a tiny model.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" <<'PY'
import struct, sys
d = sys.argv[1]
for split, n in (("train", 8), ("t10k", 4)):
    open(f"{d}/{split}-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 0x803, n, 4, 4) + bytes(range(n * 16)))
    open(f"{d}/{split}-labels-idx1-ubyte", "wb").write(struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n)))
PY
OMP_WAIT_POLICY=passive "$bin" train --data "$tmp" --model resnet8 --width 1 --groups 1 --batch 4 \
    --epochs 1 --threads 1 --save "$tmp/ck.st" >/dev/null 2>&1
cp "$tmp/ck.st" $c/fuzz_checkpoint/resnet8-w1.st
cp "$tmp/ck.st" $c/fuzz_safetensors/resnet8-w1.st
ls -l $c/*
