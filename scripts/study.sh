#!/usr/bin/env bash
# The batch-size study: the same model and schedule trained with
#   bn            normalizing over ghost batches of 128, 32, 8, 2 (--norm-batch; micro-batch 128)
#   gn ln gn+pn ln+pn   at micro-batches 128, 32, 8, 2 (--micro-batch), accumulated to BATCH
# then a markdown table (OUTDIR/study.md) and gnuplot plots (PNG + SVG):
#   OUTDIR/study_acc.{png,svg}   test accuracy against the (micro-)batch size, log2 axis
#   OUTDIR/study_mem.{png,svg}   peak RSS against the micro-batch size
#
#   scripts/study.sh [OUTDIR]                  (default runs/study)
# Environment: everything scripts/compare_norms.sh takes (MODEL EPOCHS BATCH LR WARMUP WD
# SEED WIDTH LIMIT_TRAIN LIMIT_TEST THREADS SAVE_EVERY EXTRA BIN), plus
#   SIZES="128 32 8 2"          the (micro-)batch sizes (each must divide BATCH)
#   NORMS="gn ln gn+pn ln+pn"   the micro-batched norms (bn is always in)
# A small configuration (measured: about 6 minutes of training on 1 thread, docs/RESULTS.md):
#   MODEL=resnet8 WIDTH=8 EPOCHS=1 LIMIT_TRAIN=6400 LIMIT_TEST=2000 scripts/study.sh
# Interrupted? Run it again: finished runs are skipped, unfinished ones resume from their
# checkpoints (compare_norms.sh), and the table and plots are redrawn from the logs (the
# img/s and peak RSS of a resumed run are those of its last session).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/study}
SIZES=${SIZES:-"128 32 8 2"}
NORMS=${NORMS:-"gn ln gn+pn ln+pn"}
export BATCH=${BATCH:-128}
for s in $SIZES; do
    if [ $((BATCH % s)) -ne 0 ]; then
        echo "study: size $s does not divide BATCH=$BATCH" >&2
        exit 2
    fi
done
runs=""
for s in $SIZES; do runs="$runs bn:$s"; done
for n in $NORMS; do
    for s in $SIZES; do runs="$runs $n@$s"; done
done
mkdir -p "$out"
RUNS="$runs" MICRO="$BATCH" TABLE=0 scripts/compare_norms.sh "$out"

# Table and plot data from the last line of every log.
/usr/bin/python3 - "$out" "$SIZES" "$NORMS" <<'PY'
import json, os, sys
out, sizes, norms = sys.argv[1], [int(s) for s in sys.argv[2].split()], sys.argv[3].split()
def last(name):
    try:
        with open(os.path.join(out, name + ".jsonl")) as f:
            lines = [l for l in f if l.strip()]
        return json.loads(lines[-1]) if lines else None
    except OSError:
        return None
rows = []  # (norm, kind, size, record)
for s in sizes:
    rows.append(("bn", "norm batch", s, last("bn_g%d" % s)))
for n in norms:
    for s in sizes:
        rows.append((n, "micro-batch", s, last("%s_mb%d" % (n.replace("+", "_"), s))))
with open(os.path.join(out, "study.md"), "w") as f:
    f.write("| norm | batch | test acc | test loss | img/s | peak RSS MB |\n")
    f.write("|---|---|---|---|---|---|\n")
    for n, kind, s, r in rows:
        if r is None or r.get("test_acc") is None:
            f.write("| %s | %s %d | - | - | - | - |\n" % (n, kind, s))
        else:
            f.write("| %s | %s %d | %.2f%% | %.4f | %.0f | %.0f |\n" % (
                n, kind, s, 100 * r["test_acc"], r["test_loss"], r["img_per_s"], r["peak_rss_mb"]))
# one gnuplot data block per norm: size acc_percent peak_rss_mb
with open(os.path.join(out, "study.dat"), "w") as f:
    for n in ["bn"] + norms:
        f.write("# %s\n" % n)
        for m, kind, s, r in rows:
            if m == n and r is not None and r.get("test_acc") is not None:
                f.write("%d %.4f %.1f\n" % (s, 100 * r["test_acc"], r["peak_rss_mb"]))
        f.write("\n\n")
PY
cat "$out/study.md"

if ! command -v "${PROXYNORM_GNUPLOT:-gnuplot}" >/dev/null 2>&1; then
    echo "study: gnuplot not found (apt-get install gnuplot-nox): no plots; data in $out/study.dat" >&2
    exit 0
fi
cfg="${MODEL:-resnet20} width ${WIDTH:-16}, ${EPOCHS:-6} epoch(s), batch $BATCH"
[ "${LIMIT_TRAIN:-0}" -gt 0 ] && cfg="$cfg, ${LIMIT_TRAIN} train images"
[ "${LIMIT_TEST:-0}" -gt 0 ] && cfg="$cfg, ${LIMIT_TEST} test images"
gp="$out/study.gp"
cat > "$gp" <<GP
# Written by scripts/study.sh; redraw with: gnuplot $gp
dat = '$out/study.dat'
set logscale x 2
set xrange [1.5:170]
set xtics (2, 8, 32, 128)
set grid lc rgb '#dddddd'
set key outside right top noenhanced
set style data linespoints
set title "Test accuracy against the (micro-)batch size\\n$cfg" noenhanced
set xlabel 'normalization batch (bn) or micro-batch (others), images'
set ylabel 'test accuracy (%)'
nblocks = $(( 1 + $(echo $NORMS | wc -w) ))
array names[nblocks]
GP
i=1
names=("bn (norm batch)")
for n in $NORMS; do names+=("$n (micro-batch)"); done
for nm in "${names[@]}"; do echo "names[$i] = '$nm'" >> "$gp"; i=$((i + 1)); done
cat >> "$gp" <<GP
set terminal pngcairo size 1000,600 font ',10' background rgb 'white'
set output '$out/study_acc.png'
plot dat index 0 using 1:2 lw 2 lc 1 pt 4 ps 1.4 dt 2 title names[1], \\
     for [i=2:nblocks] dat index (i-1) using 1:2 lw 2 lc i pt (i+3) ps 1.4 title names[i]
set terminal svg size 1000,600 font 'Helvetica,10' background rgb 'white'
set output '$out/study_acc.svg'
replot
set title "Peak memory (RSS of the whole process) against the micro-batch size\\n$cfg" noenhanced
set xlabel 'micro-batch, images'
set ylabel 'peak RSS (MB)'
set yrange [0:*]
set terminal pngcairo size 1000,600 font ',10' background rgb 'white'
set output '$out/study_mem.png'
plot for [i=2:nblocks] dat index (i-1) using 1:3 lw 2 lc i pt (i+3) ps 1.4 title names[i]
set terminal svg size 1000,600 font 'Helvetica,10' background rgb 'white'
set output '$out/study_mem.svg'
replot
set output
GP
"${PROXYNORM_GNUPLOT:-gnuplot}" "$gp"
echo "study: wrote $out/study.md, $out/study_acc.{png,svg}, $out/study_mem.{png,svg}" >&2
