#!/usr/bin/env bash
# Runs every test program given on the command line, adds up their RESULT lines,
# and ends with "N passed, N failed". Exit status is non-zero if anything failed.
# A program under BUILD/tests/ runs with PROXYNORM_BIN=BUILD/proxynorm; programs of a
# sanitizer build (build-san/) are labelled "asan+ubsan:".
set -u
passed=0; failed=0
for t in "$@"; do
    build=$(dirname "$(dirname "$t")")     # build/tests/test_x -> build
    name=$(basename "$t")
    case "$build" in *-san) name="asan+ubsan:$name" ;; esac
    # Tests that run the command line use the one built beside them.
    out=$(PROXYNORM_BIN="$build/proxynorm" "$t" 2>&1); rc=$?
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
