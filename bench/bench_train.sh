#!/usr/bin/env bash
# Full training steps of resnet20 (width 16, 1x28x28, 10 classes) against PyTorch, one table.
#   bench/bench_train.sh build/bench/bench_train [-s STEPS] [-r ROUNDS] [-t "1 2"] [-n "bn gn gn+pn"]
# (make bench-train builds the binary and runs this; BENCH_ROUNDS=N there sets -r.) For every
# norm (bn, gn, gn+pn), thread count (1, 2) and micro-batch (128, and 8 accumulated to 128) it
# runs one process of bench/bench_train.c and one of bench/bench_train_torch.py
# (/usr/bin/python3, PyTorch) doing the identical step: forward, cross-entropy, backward, SGD
# with momentum. The whole sweep is repeated ROUNDS times (default 3), and within a round the
# two sides of a row run back to back (which one first alternates from round to round), so
# each round gives a ratio measured under one state of the machine. On this 2-core VM the
# same configuration drifts by up to 20% over minutes; the per-round ratio does not.
# Columns (medians over the rounds):
#   ours, torch      images/s (each round: the median step of the process)
#   o/t              median of the per-round speed ratios (> 1: we are faster), and their range
#   max o/t          the same from each process's fastest step
#   mem ours, torch  training memory of the process in MB: peak RSS (VmHWM) minus the RSS
#                    just before the first step
#   mem o/t          memory ratio (< 1: we use less)
#   GF/s             our whole-step FLOP rate: images/s * pn_model_macs * 3 (fwd + 2 bwd GEMMs)
#                    * 2 FLOP per MAC, and %pk its share of OpenBLAS's large square sgemm at
#                    the same thread count, measured by the same process right after its steps:
#                    the median over the rounds of that per-process share, and its range. (The
#                    2-thread sgemm measured 85 to 159 GFLOP/s on this VM within an hour; a peak
#                    measured minutes apart from the steps made the share swing from 46% to 94%.)
# Raw RESULT lines go to stderr as they come. 2 threads on a loaded 2-core machine: OpenMP
# threads spin at every barrier while their partner is descheduled (seen: 5 img/s instead of
# 200); OMP_WAIT_POLICY=passive in the environment (applies to both sides) avoids that.
# Then per thread count: gn+pn step time / bn step time (median of the per-round ratios),
# micro-8 memory / batch-128 memory.
set -eu
bin=${1:?usage: bench/bench_train.sh path/to/bench_train [-s STEPS] [-r ROUNDS] [-t "1 2"] [-n "bn gn gn+pn"]}
shift
steps=6 rounds=${BENCH_ROUNDS:-3} threads="1 2" norms="bn gn gn+pn"
while [ $# -gt 0 ]; do
    case $1 in
    -s) steps=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
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
case $rounds in ''|*[!0-9]*|0) echo "bench_train.sh: -r needs a positive integer (got '$rounds')" >&2; exit 2 ;; esac
for r in $(seq 1 "$rounds"); do
    echo "bench_train: round $r of $rounds" >&2
    "$bin" -p | sed "s/^/$r /" >>"$tmp/res"
    for t in $threads; do
        for n in $norms; do
            for mb in 128 8; do
                # (RESULT lines to stderr without tee /dev/stderr, which truncates a redirected file)
                ours() { "$bin" -n "$n" -t "$t" -m "$mb" -s "$steps" | sed "s/^/$r /" | tee -a "$tmp/res" | cut -d' ' -f2- >&2; }
                torch() {
                    [ $havetorch = 1 ] || return 0
                    "$py" "$here/bench_train_torch.py" -n "$n" -t "$t" -m "$mb" -s "$steps" | grep RESULT |
                        sed "s/^/$r /" | tee -a "$tmp/res" | cut -d' ' -f2- >&2
                }
                if [ $((r % 2)) = 1 ]; then ours; torch; else torch; ours; fi
            done
        done
    done
done
echo "bench_train: load average $(cut -d' ' -f1-3 /proc/loadavg) at end; $rounds rounds of $steps timed steps of batch 128 per row"

awk '
    function median(list,    a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n == 0 ? "" : (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2)
    }
    function lo(list,    a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
    function hi(list,    a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
    $2 == "PEAK" { peak[$4] = peak[$4] " " $5 }
    $2 == "RESULT" { r = $1; k = $4 " " $5 " " $6; side = $3
        ips[side, k, r] = $7; ipsmax[side, k, r] = $8; mem[side, k] = mem[side, k] " " $10 / 1024.0
        if (side == "ours" && $12 > 0) share[k] = share[k] " " 100 * $7 * $11 * 6e-9 / $12
        ipsl[side, k] = ipsl[side, k] " " $7
        if (side == "ours") macs = $11
        if (!(r in seenr)) { seenr[r] = 1; rounds[++nr] = r }
        if (!(k in seen)) { seen[k] = 1; order[++nk] = k } }
    END {
        printf "sgemm peak (2048^3, OpenBLAS, at each round'"'"'s start, median and range of %d rounds): %s GFLOP/s at 1 thread (%s-%s), %s at 2 (%s-%s)\n",
               nr, median(peak[1]), lo(peak[1]), hi(peak[1]), median(peak[2]), lo(peak[2]), hi(peak[2])
        printf "step FLOPs per image = pn_model_macs %.0f * 3 * 2 = %.1f MFLOP\n", macs, macs * 6e-6
        printf "%-6s %5s %3s | %7s %7s %5s %11s | %5s %11s | %8s %8s %5s | %6s %4s %9s\n", "norm", "micro", "thr",
               "ours", "torch", "o/t", "(range)", "max", "o/t (range)", "mem ours", "torch", "o/t", "GF/s", "%pk", "(range)"
        for (i = 1; i <= nk; i++) {
            k = order[i]; split(k, f, " ")
            rl = ""; rml = ""
            for (j = 1; j <= nr; j++) {
                r = rounds[j]
                if (ips["ours", k, r] != "" && ips["torch", k, r] > 0) rl = rl " " ips["ours", k, r] / ips["torch", k, r]
                if (ipsmax["ours", k, r] != "" && ipsmax["torch", k, r] > 0) rml = rml " " ipsmax["ours", k, r] / ipsmax["torch", k, r]
            }
            o = median(ipsl["ours", k]); t = median(ipsl["torch", k])
            mo = median(mem["ours", k]); mt = median(mem["torch", k])
            rr = rl == "" ? "-" : sprintf("%.2f", median(rl)); rg = rl == "" ? "-" : sprintf("%.2f-%.2f", lo(rl), hi(rl))
            mr = rml == "" ? "-" : sprintf("%.2f", median(rml)); mg = rml == "" ? "-" : sprintf("%.2f-%.2f", lo(rml), hi(rml))
            memr = (mo != "" && mt > 0) ? sprintf("%.2f", mo / mt) : "-"
            gf = o * macs * 6e-9
            sh = share[k] == "" ? "-" : sprintf("%.0f%%", median(share[k]))
            shr = share[k] == "" ? "-" : sprintf("%.0f-%.0f%%", lo(share[k]), hi(share[k]))
            printf "%-6s %5s %3s | %7.1f %7s %5s %11s | %5s %11s | %8.1f %8s %5s | %6.1f %4s %9s\n", f[1], f[2], f[3],
                   o, (t == "" ? "-" : sprintf("%.1f", t)), rr, rg, mr, mg, mo, (mt == "" ? "-" : sprintf("%.1f", mt)), memr,
                   gf, sh, shr
        }
        for (i = 1; i <= nk; i++) {
            k = order[i]; split(k, f, " ")
            if (f[1] != "gn+pn" || f[2] != 128) continue
            b = "bn 128 " f[3]; m8 = "gn+pn 8 " f[3]
            rl = ""
            for (j = 1; j <= nr; j++) { r = rounds[j]; if (ips["ours", k, r] > 0 && ips["ours", b, r] > 0) rl = rl " " ips["ours", b, r] / ips["ours", k, r] }
            if (rl != "")
                printf "threads %s: gn+pn step time / bn step time = %.2f (rounds %.2f-%.2f; target <= 1.05)", f[3], median(rl), lo(rl), hi(rl)
            if (median(mem["ours", k]) > 0)
                printf "; micro-8 memory / batch-128 memory (gn+pn) = %.3f (target <= 0.2)", median(mem["ours", m8]) / median(mem["ours", k])
            printf "\n"
        }
    }' "$tmp/res"
