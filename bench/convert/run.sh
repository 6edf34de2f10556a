#!/usr/bin/env bash
# Build xm-convert and bench_convert as production builds them (Release, no test crash
# hooks) into build-bench/, then run the convert benchmark. Arguments go to bench_convert:
#   bench/convert/run.sh [--runs N] [--threads N] [--shard-mib N] [--formats vhd,vmdk,gce-tar]
#                        [--size-mib N] [--image PATH] [--quiet-wait S] [--no-verify]
# The 2 GiB image is made once in /var/tmp/xmigrate-bench (outside the repository) and
# kept; outputs go next to it. Needs qemu-img (Debian qemu-utils) and GNU tar. The report
# is also kept in bench/results/convert-<UTC time>.txt (not committed).
set -euo pipefail
cd "$(dirname "$0")/../.."

cmake -S . -B build-bench -DXM_WERROR=ON -DCMAKE_BUILD_TYPE=Release -DXM_TEST_HOOKS=OFF >/dev/null
cmake --build build-bench --target bench_convert xm-convert -j2 >/dev/null

mkdir -p bench/results
out=bench/results/convert-$(date -u +%Y%m%dT%H%M%SZ).txt
{
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git status --porcelain -- convert 2>/dev/null | wc -l)
    echo "source: commit $rev, $dirty uncommitted file(s) in convert/"
    echo "machine: $(nproc) cores, $(uname -r), qemu-img $(qemu-img --version | head -1 | awk '{print $3}'), $(tar --version | head -1)"
    build-bench/bench/convert/bench_convert "$@"
} | tee "$out"
echo "report kept in $out" >&2
