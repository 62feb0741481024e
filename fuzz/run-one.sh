#!/usr/bin/env bash
# Runs one libFuzzer harness for SECONDS and reports like a test program (a
# "RESULT passed failed" line, read by tests/run.sh):
#   fuzz/run-one.sh build-fuzz/fuzz/fuzz_idx [SECONDS]
# Seeds: fuzz/corpus/NAME/ (read only). New inputs go to BUILD/fuzz/corpus/NAME/,
# a crashing input to BUILD/fuzz/artifacts/NAME/ (the message names it), the full
# log to BUILD/fuzz/NAME.log. Reproduce a crash: BIN ARTIFACT.
set -u
bin=$1
secs=${2:-${FUZZ_SECONDS:-30}}
name=$(basename "$bin")
top=$(dirname "$bin")
seeds=fuzz/corpus/$name
work=$top/corpus/$name
art=$top/artifacts/$name
log=$top/$name.log
mkdir -p "$work" "$art"
opts=(-max_total_time="$secs" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048
      -artifact_prefix="$art/")
case "$name" in
    fuzz_idx) opts+=(-max_len=4096) ;;
    fuzz_cifar) opts+=(-max_len=10000) ;;
    fuzz_safetensors | fuzz_checkpoint) opts+=(-max_len=16384) ;;
    fuzz_cli) opts+=(-max_len=512 -close_fd_mask=3) ;;
esac
[ -f "fuzz/$name.dict" ] && opts+=(-dict="fuzz/$name.dict")
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive \
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$bin" "${opts[@]}" "$work" "$seeds" >"$log" 2>&1
rc=$?
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
if [ "$rc" -eq 0 ] && [ -n "$execs" ]; then
    echo "$name: $execs executions in $secs s, no crash, leak or undefined behaviour"
    echo "RESULT 1 0"
else
    echo "FAIL: $name (exit $rc), last lines of $log:"
    tail -n 40 "$log"
    echo "RESULT 0 1"
fi
