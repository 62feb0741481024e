#!/usr/bin/env bash
# Full training steps of resnet20 (width 16, 1x28x28, 10 classes) against PyTorch, one table.
#   bench/bench_train.sh build/bench/bench_train [-s STEPS] [-t "1 2"] [-n "bn gn gn+pn"]
# (make bench-train builds the binary and runs this.) For every norm (bn, gn, gn+pn),
# thread count (1, 2) and micro-batch (128, and 8 accumulated to 128) it runs one process
# of bench/bench_train.c and one of bench/bench_train_torch.py (/usr/bin/python3, PyTorch)
# doing the identical step: forward, cross-entropy, backward, SGD with momentum.
# Columns:
#   ours, torch      images/s (median step; "max" columns: fastest step)
#   ours/torch       speed ratio (> 1: we are faster), medians and fastest steps
#   mem ours, torch  training memory of the process in MB: peak RSS (VmHWM) minus the RSS
#                    just before the first step
#   mem o/t          memory ratio (< 1: we use less)
#   GF/s             our whole-step FLOP rate: images/s * pn_model_macs * 3 (fwd + 2 bwd GEMMs)
#                    * 2 FLOP per MAC, and its % of OpenBLAS's large square sgemm (same threads)
# Raw RESULT lines go to stderr as they come. 2 threads on a loaded 2-core machine: OpenMP
# threads spin at every barrier while their partner is descheduled (seen: 5 img/s instead of
# 200); OMP_WAIT_POLICY=passive in the environment (applies to both sides) avoids that.
# Then per thread count: gn+pn step time / bn step time, micro-8 memory / batch-128 memory.
set -eu
bin=${1:?usage: bench/bench_train.sh path/to/bench_train [-s STEPS] [-t "1 2"] [-n "bn gn gn+pn"]}
shift
steps=6 threads="1 2" norms="bn gn gn+pn"
while [ $# -gt 0 ]; do
    case $1 in
    -s) steps=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    -n) norms=$2; shift 2 ;;
    *) echo "bench_train.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
havetorch=1
"$py" -c "import torch" 2>/dev/null || { havetorch=0; echo "bench_train: no PyTorch for $py; torch columns empty" >&2; }

echo "bench_train: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start (other work on the machine skews the numbers)"
"$bin" -p >>"$tmp/res"
for t in $threads; do
    for n in $norms; do
        for mb in 128 8; do
            "$bin" -n "$n" -t "$t" -m "$mb" -s "$steps" | tee -a "$tmp/res" >&2
            [ $havetorch = 1 ] && "$py" "$here/bench_train_torch.py" -n "$n" -t "$t" -m "$mb" -s "$steps" | grep RESULT | tee -a "$tmp/res" >&2
        done
    done
done
echo "bench_train: load average $(cut -d' ' -f1-3 /proc/loadavg) at end; $steps timed steps of batch 128 per row"

awk '
    $1 == "PEAK" { peak[$3] = $4 }
    $1 == "RESULT" { k = $3 " " $4 " " $5; side = $2
        ips[side, k] = $6; ipsmax[side, k] = $7; mem[side, k] = $9 / 1024.0
        if (side == "ours") macs = $10
        if (!(k in seen)) { seen[k] = 1; order[++nk] = k } }
    END {
        printf "sgemm peak (2048^3, OpenBLAS): %s GFLOP/s at 1 thread, %s at 2\n", peak[1], peak[2]
        printf "step FLOPs per image = pn_model_macs %.0f * 3 * 2 = %.1f MFLOP\n", macs, macs * 6e-6
        printf "%-6s %5s %3s | %7s %7s %6s | %7s %7s %6s | %8s %8s %6s | %6s %5s\n", "norm", "micro", "thr",
               "ours", "torch", "o/t", "oursmax", "trchmax", "o/t", "mem ours", "torch", "o/t", "GF/s", "%pk"
        for (i = 1; i <= nk; i++) {
            k = order[i]; split(k, f, " ")
            o = ips["ours", k]; t = ips["torch", k]
            r = (o != "" && t != "") ? sprintf("%.2f", o / t) : "-"
            rm = (ipsmax["ours", k] != "" && ipsmax["torch", k] != "") ? sprintf("%.2f", ipsmax["ours", k] / ipsmax["torch", k]) : "-"
            mr = (mem["ours", k] != "" && mem["torch", k] > 0) ? sprintf("%.2f", mem["ours", k] / mem["torch", k]) : "-"
            gf = o * macs * 6e-9
            printf "%-6s %5s %3s | %7s %7s %6s | %7s %7s %6s | %8.1f %8.1f %6s | %6.1f %4.0f%%\n", f[1], f[2], f[3],
                   o, (t == "" ? "-" : t), r, ipsmax["ours", k], (ipsmax["torch", k] == "" ? "-" : ipsmax["torch", k]), rm,
                   mem["ours", k], mem["torch", k], mr, gf, 100 * gf / peak[f[3]]
        }
        for (i = 1; i <= nk; i++) {
            k = order[i]; split(k, f, " ")
            if (f[1] != "gn+pn" || f[2] != 128) continue
            b = "bn 128 " f[3]; m8 = "gn+pn 8 " f[3]
            if (ips["ours", b] > 0)
                printf "threads %s: gn+pn step time / bn step time = %.2f (target <= 1.05)", f[3], ips["ours", b] / ips["ours", k]
            if (mem["ours", k] > 0)
                printf "; micro-8 memory / batch-128 memory (gn+pn) = %.3f (target <= 0.2)", mem["ours", m8] / mem["ours", k]
            printf "\n"
        }
    }' "$tmp/res"
