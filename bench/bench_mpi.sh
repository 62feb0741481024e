#!/usr/bin/env bash
# Data-parallel training throughput and communication, K = 1 and K = 2 ranks, in one run.
#   bench/bench_mpi.sh [build/proxynorm]          (make bench-mpi)
# For bn, bn --sync-bn and gn+pn: resnet20 (width 16) on the first 2560 Fashion-MNIST
# images, batch 128 (micro-batch 64), 20 updates; K=1 runs one process with 1 thread,
# K=2 runs `mpirun -np 2` with 1 thread per rank (the same 2 cores). Prints images/s and
# updates/s (from the JSON log, evaluations excluded), bytes each rank sends into the
# all-reduces per update (comm_bytes), and the speed ratio K=2 / K=1.
set -eu
bin=${1:-build/proxynorm}
data=${PROXYNORM_DATA:-/usr/share/datasets/fashion-mnist}
command -v mpirun >/dev/null || { echo "bench_mpi: mpirun not found (scripts/install-deps.sh --mpi)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
common=(train --data "$data" --model resnet20 --limit-train 2560 --limit-test 128 --epochs 1
        --batch 128 --micro-batch 64 --threads 1 --no-augment --eval-every 20)
echo "bench_mpi: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-14s %3s %9s %10s %14s %8s\n' config K img/s updates/s comm_bytes K2/K1
for cfg in "bn" "bn --sync-bn" "gn+pn"; do
    # shellcheck disable=SC2086
    set -- --norm $cfg
    "$bin" "${common[@]}" "$@" --log "$tmp/k1.jsonl" >/dev/null 2>&1
    mpirun --allow-run-as-root --oversubscribe -np 2 "$bin" "${common[@]}" "$@" \
        --log "$tmp/k2.jsonl" >/dev/null 2>&1
    /usr/bin/python3 - "$cfg" "$tmp/k1.jsonl" "$tmp/k2.jsonl" <<'PY'
import json, sys
cfg, f1, f2 = sys.argv[1:]
r1 = json.loads(open(f1).read().splitlines()[-1])
r2 = json.loads(open(f2).read().splitlines()[-1])
for k, r in ((1, r1), (2, r2)):
    ratio = "%.2f" % (r2["img_per_s"] / r1["img_per_s"]) if k == 2 else "-"
    print("%-14s %3d %9.1f %10.2f %14s %8s" % (cfg, k, r["img_per_s"], r["img_per_s"] / 128,
          r.get("comm_bytes", 0), ratio))
PY
done
