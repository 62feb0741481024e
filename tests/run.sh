#!/usr/bin/env bash
# Runs every test program given on the command line, adds up their RESULT lines,
# and ends with "N passed, N failed". Exit status is non-zero if anything failed.
set -u
passed=0; failed=0
for t in "$@"; do
    name=$(basename "$t")
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -v '^RESULT ' | sed "s|^|[$name] |"
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n 1)
    if [ -z "$line" ]; then
        echo "[$name] FAIL: crashed or exited without a RESULT line (exit $rc)"
        failed=$((failed + 1)); continue
    fi
    read -r _ p f <<<"$line"
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "[$name] FAIL: exit status $rc"; failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
