#!/usr/bin/env bash
# Installs the Debian 12 packages proxynorm needs, only those that are missing.
#   scripts/install-deps.sh           build + run (compiler, OpenBLAS, zlib, cJSON, gnuplot, data set)
#   scripts/install-deps.sh --torch   also PyTorch and torchvision (reference generators, benchmarks)
#   scripts/install-deps.sh --mpi     also Open MPI (data-parallel training; make test installs it)
#   scripts/install-deps.sh --test    also clang + libFuzzer (make fuzz) and valgrind (make test)
#   (gnuplot-nox is in the base set: the power tests draw plots)
set -eu
pkgs="build-essential libopenblas-openmp-dev zlib1g-dev libcjson-dev gnuplot-nox dataset-fashion-mnist"
for a in "$@"; do
    case "$a" in
        --torch) pkgs="$pkgs python3-torch python3-torchvision" ;;
        --plot) ;;
        --mpi) pkgs="$pkgs libopenmpi-dev openmpi-bin" ;;
        --test) pkgs="$pkgs clang-14 libclang-rt-14-dev libomp-14-dev valgrind" ;;
        *) echo "install-deps: unknown option $a" >&2; exit 2 ;;
    esac
done
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install:$missing" >&2; exit 1; }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
