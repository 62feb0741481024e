#!/usr/bin/env bash
# Demo: trains a small pre-activation ResNet with GroupNorm + Proxy Norm on
# Fashion-MNIST with the proxynorm command line, shows its progress, saves
# runs/demo.safetensors (+ runs/demo.jsonl, one JSON line per evaluation), then
# evaluates the checkpoint again with `proxynorm eval`.
#
#   scripts/demo.sh                 (make demo builds first)
#   PROXYNORM_DATA=DIR scripts/demo.sh
#   THREADS=1 scripts/demo.sh       (default: all cores)
#   EXTRA="--epochs 2" scripts/demo.sh   (appended to the train options)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/proxynorm}
DATA=${PROXYNORM_DATA:-/usr/share/datasets/fashion-mnist}
THREADS=${THREADS:-$(nproc 2>/dev/null || echo 2)}

if [ ! -x "$BIN" ]; then
    echo "demo: $BIN not found; building it" >&2
    make --no-print-directory all
fi
if [ ! -d "$DATA" ]; then
    echo "demo: no data set at $DATA (install dataset-fashion-mnist: scripts/install-deps.sh," >&2
    echo "      or set PROXYNORM_DATA to a directory with the IDX files)" >&2
    exit 1
fi

mkdir -p runs
rm -f runs/demo.jsonl

# ResNet-20 (3 stages of three pre-activation blocks, width 16) with GN (4 groups) + PN,
# one epoch over the first 30000 training images: 468 SGD updates of 64 images, each as
# 2 micro-batches of 32 (peak memory follows the micro-batch), cosine schedule with a
# 0.2-epoch warm-up, evaluation on the 10000 test images at the end.
# shellcheck disable=SC2086
set -- train --data "$DATA" --model resnet20 --width 16 --norm gn+pn --groups 4 \
    --limit-train 30000 --epochs 1 --batch 64 --micro-batch 32 --lr 0.1 --warmup 0.2 \
    --wd 5e-4 --no-augment --seed 0 --threads "$THREADS" \
    --save runs/demo.safetensors --log runs/demo.jsonl ${EXTRA:-}

echo "demo: $BIN $*"
start=$(date +%s)
"$BIN" "$@"
end=$(date +%s)
echo "demo: training took $((end - start)) s on $THREADS thread(s); checkpoint runs/demo.safetensors, log runs/demo.jsonl"

echo "demo: $BIN eval --checkpoint runs/demo.safetensors --data $DATA"
"$BIN" eval --checkpoint runs/demo.safetensors --data "$DATA" --threads "$THREADS"
