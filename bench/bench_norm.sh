#!/usr/bin/env bash
# Normalization kernels against PyTorch's CPU kernels, one combined table.
#   bench/bench_norm.sh build/bench/bench_norm [-t 1,2] [-q]
# (make bench-norm builds the binary and runs this.) Runs the C benchmark (bench/bench_norm.c)
# and the PyTorch one (bench/bench_norm_torch.py, /usr/bin/python3) with the same ops, shapes
# and thread counts, then prints, per op, shape and thread count:
#   ours_ms     our forward+backward, median ms
#   torch_ms    PyTorch's, median ms (gnpn: F.group_norm + PN-Act written in PyTorch;
#               gnrelu: nn.GroupNorm + ReLU, PyTorch only, for context)
#   torch/ours  > 1 means we are faster (medians)
#   min ours/torch  the fastest repetition of each (less sensitive to other load on the machine)
#   GB/s        bytes the op must move (20 per element: x,y forward; dy,x,dx backward) / our time
#   fused/GN    gnpn rows: our fused GN+PN-Act time / our GN (G=4, affine) time
set -eu
bin=${1:?usage: bench/bench_norm.sh path/to/bench_norm [-t 1,2] [-q]}
shift
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "bench_norm: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the numbers)"
"$bin" "$@" >"$tmp/ours"
if "$py" -c "import torch" 2>/dev/null; then
    "$py" "$here/bench_norm_torch.py" "$@" >"$tmp/torch"
else
    echo "bench_norm: PyTorch not available for $py (scripts/install-deps.sh --torch); torch columns empty" >&2
    : >"$tmp/torch"
fi

awk '
    $1 == "RESULT" && $2 == "ours"  { k = $3 " " $4 " " $5; ours[k] = $6; omin[k] = $7; bytes[k] = $9; seen[k] = 1
                                      if (!(($4 " " $5) in sorder)) { sorder[$4 " " $5] = ++ns; skey[ns] = $4 " " $5 } }
    $1 == "RESULT" && $2 == "torch" { k = $3 " " $4 " " $5; torch[k] = $6; tmin[k] = $7
                                      if (!(($4 " " $5) in sorder)) { sorder[$4 " " $5] = ++ns; skey[ns] = $4 " " $5 } }
    END {
        nops = split("gn ln bn gnpn gnrelu", ops, " ")
        split("GN(G=4) LN(=GN1) BN(train) GN+PN-Act GN+ReLU", label, " ")
        printf "%-10s %-14s %3s %9s %9s %10s %7s %9s %17s\n", "op", "N,C,H,W", "thr", "ours_ms", "torch_ms", "torch/ours", "GB/s", "fused/GN", "min ours/torch"
        for (s = 1; s <= ns; s++) {
            split(skey[s], sk, " ")
            for (o = 1; o <= nops; o++) {
                k = ops[o] " " skey[s]
                if (!(k in ours) && !(k in torch)) continue
                om = (k in ours) ? sprintf("%.3f", ours[k]) : "-"
                tm = (k in torch) ? sprintf("%.3f", torch[k]) : "-"
                ratio = ((k in ours) && (k in torch) && ours[k] > 0) ? sprintf("%.2f", torch[k] / ours[k]) : "-"
                bw = ((k in ours) && ours[k] > 0) ? sprintf("%.1f", bytes[k] / (ours[k] * 1e6)) : "-"
                fg = "-"
                g = "gn " skey[s]
                if (ops[o] == "gnpn" && (k in ours) && (g in ours) && ours[g] > 0) fg = sprintf("%.2f", ours[k] / ours[g])
                mn = ((k in omin) ? sprintf("%.3f", omin[k]) : "-") "/" ((k in tmin) ? sprintf("%.3f", tmin[k]) : "-")
                printf "%-10s %-14s %3s %9s %9s %10s %7s %9s %17s\n", label[o], sk[1], sk[2], om, tm, ratio, bw, fg, mn
            }
        }
    }' "$tmp/ours" "$tmp/torch"
