#!/usr/bin/env bash
# Trains the same model and schedule with several normalizations and prints a markdown
# table of test accuracy, loss and speed (the table in docs/RESULTS.md).
#
#   scripts/compare_norms.sh [OUTDIR]          (default runs/compare)
# Environment (defaults = the issue's acceptance setting):
#   MODEL=resnet20 EPOCHS=6 BATCH=128 MICRO=128 LR=0.1 WARMUP=0.5 WD=5e-4 SEED=0
#   WIDTH=16 LIMIT_TRAIN=0 (all) LIMIT_TEST=0 (all) THREADS=(cores) EXTRA="" (more train options)
#   RUNS="bn:128 bn:4 gn ln gn+pn ln+pn"
#     norm[:g][@b]: bn:g = BatchNorm with normalization batch g (name bn_gG);
#     @b = micro-batch b for this run instead of MICRO (name suffix _mbB)
#   TABLE=1 (0: no table at the end)
# Each run logs to OUTDIR/NAME.jsonl and checkpoints to OUTDIR/NAME.safetensors every
# SAVE_EVERY updates (default 100): rerunning the script resumes interrupted runs and
# skips finished ones (OUTDIR/NAME.done).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/compare}
BIN=${BIN:-build/proxynorm}
DATA=${PROXYNORM_DATA:-/usr/share/datasets/fashion-mnist}
MODEL=${MODEL:-resnet20} EPOCHS=${EPOCHS:-6} BATCH=${BATCH:-128} MICRO=${MICRO:-$BATCH}
LR=${LR:-0.1} WARMUP=${WARMUP:-0.5} WD=${WD:-5e-4} SEED=${SEED:-0} WIDTH=${WIDTH:-16}
LIMIT_TRAIN=${LIMIT_TRAIN:-0} LIMIT_TEST=${LIMIT_TEST:-0} SAVE_EVERY=${SAVE_EVERY:-100}
THREADS=${THREADS:-$(nproc 2>/dev/null || echo 2)}
RUNS=${RUNS:-"bn:128 bn:4 gn ln gn+pn ln+pn"}
TABLE=${TABLE:-1}
[ -x "$BIN" ] || make --no-print-directory all
mkdir -p "$out"

# run spec -> norm, name, label, micro-batch, extra options (globals)
parse_run() {
    local spec=$1 mb_part=""
    if [[ "$spec" == *@* ]]; then mb_part=${spec#*@}; spec=${spec%@*}; fi
    norm=${spec%%:*}
    name=${norm//+/_} label=$norm micro=$MICRO opts=()
    if [ "$spec" != "$norm" ]; then
        name="${name}_g${spec#*:}"
        label="$norm (norm batch ${spec#*:})"
        opts+=(--norm-batch "${spec#*:}")
    fi
    if [ -n "$mb_part" ]; then
        micro=$mb_part
        name="${name}_mb${mb_part}"
        label="$label (micro-batch $mb_part)"
    fi
}

for run in $RUNS; do
    parse_run "$run"
    ckpt="$out/$name.safetensors" log="$out/$name.jsonl" done_mark="$out/$name.done"
    if [ -f "$done_mark" ]; then
        echo "compare: $name already finished" >&2
        continue
    fi
    test_limit=()
    [ "$LIMIT_TEST" -gt 0 ] && test_limit+=(--limit-test "$LIMIT_TEST")
    if [ -f "$ckpt" ]; then
        echo "compare: resuming $name from $ckpt" >&2
        "$BIN" train --resume "$ckpt" --data "$DATA" --log "$log" --threads "$THREADS" \
            --save-every "$SAVE_EVERY" "${test_limit[@]}"
    else
        rm -f "$log"
        limits=("${test_limit[@]}")
        [ "$LIMIT_TRAIN" -gt 0 ] && limits+=(--limit-train "$LIMIT_TRAIN")
        echo "compare: $name" >&2
        # shellcheck disable=SC2086
        "$BIN" train --data "$DATA" --model "$MODEL" --norm "$norm" "${opts[@]}" \
            --width "$WIDTH" --epochs "$EPOCHS" --batch "$BATCH" --micro-batch "$micro" \
            --lr "$LR" --warmup "$WARMUP" --wd "$WD" --seed "$SEED" --threads "$THREADS" \
            "${limits[@]}" --save "$ckpt" --save-every "$SAVE_EVERY" --log "$log" ${EXTRA:-}
    fi
    touch "$done_mark"
done

[ "$TABLE" = 1 ] || exit 0
echo "| run | test acc | test loss | train loss | img/s | peak RSS MB |"
echo "|---|---|---|---|---|---|"
for run in $RUNS; do
    parse_run "$run"
    last=$(tail -n 1 "$out/$name.jsonl" 2>/dev/null || true)
    [ -n "$last" ] || { echo "| $label | - | - | - | - | - |"; continue; }
    /usr/bin/python3 -c '
import json, sys
r = json.loads(sys.argv[2])
print("| %s | %.2f%% | %.4f | %.4f | %.0f | %.0f |" % (sys.argv[1], 100 * r["test_acc"],
      r["test_loss"], r["train_loss"], r["img_per_s"], r["peak_rss_mb"]))' "$label" "$last"
done
