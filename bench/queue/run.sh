#!/usr/bin/env bash
# Build bench_queue and xm-noop as production builds them (Release, no test crash hooks)
# into build-bench/, then run the queue benchmark. Arguments go to bench_queue:
#   bench/queue/run.sh [--jobs N] [--batch B] [--paced RATE,...|none] [--paced-s S]
#                      [--fsync always|everysec|always,everysec]
# The report is also kept in bench/results/queue-<UTC time>.txt (not committed).
# Run it on a quiet machine: the report warns when something else was using the CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."

cmake -S . -B build-bench -DXM_WERROR=ON -DCMAKE_BUILD_TYPE=Release -DXM_TEST_HOOKS=OFF >/dev/null
cmake --build build-bench --target bench_queue xm-noop -j"$(nproc)" >/dev/null

mkdir -p bench/results
out=bench/results/queue-$(date -u +%Y%m%dT%H%M%SZ).txt
{
    # Which runtime was measured: the commit, and whether queue/ had local changes.
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git status --porcelain -- queue common workers 2>/dev/null | wc -l)
    echo "source: commit $rev, $dirty uncommitted file(s) in queue/ common/ workers/"
    build-bench/bench/queue/bench_queue "$@"
} | tee "$out"
echo "report kept in $out" >&2
