#!/usr/bin/env bash
# Build xm-agent as production builds it (static, Release, no test hooks) and the sink
# into build-bench/, then measure the clone data path on a 4 GiB image (half zeros, a
# quarter text, a quarter random; generated once into the cache directory) sent to a
# local HTTP sink that discards bodies and counts bytes, against, in the same run:
#   dd bs=4M if=IMG | gzip -1 | curl -T - URL      (the target: xm-agent >= 5x faster)
#   dd bs=4M if=IMG | curl -T - URL                 (no compression at all)
#   zstd -3 -T2 IMG                                 (size: xm-agent sends <= 10% more)
# and once xm-agent with --limit-mbps set so its bytes take about a minute (the limit
# should hold within 5%).
#   bench/clone/run.sh [--cache DIR] [--gib N] [--runs N] [--limit-s S | --no-limit]
# The report is also kept in bench/results/clone-<UTC time>.txt (not committed).
set -euo pipefail
cd "$(dirname "$0")/../.."

cache=/var/tmp/xmigrate-bench
gib=4
runs=3
limit_s=60
while [ $# -gt 0 ]; do
    case "$1" in
    --cache) cache=$2; shift 2 ;;
    --gib) gib=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --limit-s) limit_s=$2; shift 2 ;;
    --no-limit) limit_s=0; shift ;;
    *) echo "usage: bench/clone/run.sh [--cache DIR] [--gib N] [--runs N] [--limit-s S | --no-limit]" >&2; exit 2 ;;
    esac
done

for tool in zstd curl gzip dd python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        ./scripts/install-deps.sh
        break
    fi
done

cmake -S . -B build-bench -DXM_WERROR=ON -DCMAKE_BUILD_TYPE=Release -DXM_TEST_HOOKS=OFF >/dev/null
cmake --build build-bench --target xm-agent bench_clone_sink bench_clone_mkimage -j2 >/dev/null
agent=build-bench/agent/xm-agent

img=$cache/clone-${gib}g.img
if [ ! -f "$img" ] || [ "$(stat -c %s "$img")" != $((gib << 30)) ]; then
    mkdir -p "$cache"
    echo "generating $img (once)" >&2
    build-bench/bench/clone/bench_clone_mkimage "$img.tmp" "$gib"
    mv "$img.tmp" "$img"
fi
cat "$img" >/dev/null # page cache warm, as the baselines in ENVIRONMENT.md

work=$(mktemp -d)
sink_pid=
cleanup() {
    [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
build-bench/bench/clone/bench_clone_sink 0 >"$work/sink.out" &
sink_pid=$!
for _ in $(seq 100); do
    grep -q port "$work/sink.out" 2>/dev/null && break
    sleep 0.05
done
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$work/sink.out")
url=http://127.0.0.1:$port

stat_of() { # field of the sink's counters
    curl -s "$url/__stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
zero() { curl -s -X DELETE "$url/__stats" >/dev/null; }

# time_of CMD...: runs it, sets secs, cpu (user+sys of every process of it)
TIMEFORMAT='%R %U %S'
time_of() {
    local t
    t=$({ time "$@" >/dev/null 2>"$work/err"; } 2>&1) || {
        cat "$work/err" >&2
        echo "bench/clone: '$*' failed" >&2
        exit 1
    }
    secs=$(echo "$t" | awk '{print $1}')
    cpu=$(echo "$t" | awk '{printf "%.2f", $2 + $3}')
}

run_agent() {
    rm -rf "$work/state"
    "$agent" --device "$img" --url-template "$url/sink/bench/{index}" \
        --manifest-url "$url/sink/bench/manifest" --state-dir "$work/state" --log-level warn "$@"
}
gzip_curl() { dd bs=4M if="$img" status=none | gzip -1 | curl -sS -T - "$url/sink/gzip"; }
plain_curl() { dd bs=4M if="$img" status=none | curl -sS -T - "$url/sink/raw"; }

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

mkdir -p bench/results
out=bench/results/clone-$(date -u +%Y%m%dT%H%M%SZ).txt
{
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git status --porcelain -- agent common 2>/dev/null | wc -l)
    echo "source: commit $rev, $dirty uncommitted file(s) in agent/ common/"
    echo "machine: $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "image: $img, $gib GiB (half zeros, a quarter text, a quarter random)"
    echo "tools: $(gzip --version | head -1); $(curl --version | head -1 | cut -d' ' -f1-2); $(zstd --version)"
    file -b "$agent" | cut -d, -f1-5 | sed 's/^/agent: /'

    agent_t=() agent_b=() agent_c=()
    for _ in $(seq "$runs"); do
        zero
        time_of run_agent
        agent_t+=("$secs")
        agent_c+=("$cpu")
        agent_b+=("$(stat_of bytes)")
    done
    plain_t=() plain_b=()
    for _ in $(seq "$runs"); do
        zero
        time_of plain_curl
        plain_t+=("$secs")
        plain_b+=("$(stat_of bytes)")
    done
    zero
    time_of gzip_curl
    gzip_t=$secs gzip_c=$cpu gzip_b=$(stat_of bytes)
    time_of sh -c "zstd -3 -T2 -q -c '$img' | wc -c > '$work/zstd.size'"
    zstd_t=$secs zstd_b=$(cat "$work/zstd.size")

    a_t=$(median "${agent_t[@]}") a_b=$(median "${agent_b[@]}") a_c=$(median "${agent_c[@]}")
    p_t=$(median "${plain_t[@]}") p_b=$(median "${plain_b[@]}")
    echo
    printf '%-34s %9s %9s %15s\n' "run" "wall s" "cpu s" "bytes sent"
    printf '%-34s %9s %9s %15s\n' "xm-agent (median of $runs)" "$a_t" "$a_c" "$a_b"
    printf '%-34s %9s %9s %15s\n' "dd | curl -T - (median of $runs)" "$p_t" "-" "$p_b"
    printf '%-34s %9s %9s %15s\n' "dd | gzip -1 | curl -T -" "$gzip_t" "$gzip_c" "$gzip_b"
    printf '%-34s %9s %9s %15s\n' "zstd -3 -T2 (size only)" "$zstd_t" "-" "$zstd_b"
    echo "xm-agent runs: ${agent_t[*]} s"
    speed_gzip=$(awk -v g="$gzip_t" -v a="$a_t" 'BEGIN {printf "%.1f", g / a}')
    speed_plain=$(awk -v g="$p_t" -v a="$a_t" 'BEGIN {printf "%.2f", g / a}')
    plain_bytes=$(awk -v p="$p_b" -v a="$a_b" 'BEGIN {printf "%.1f", p / a}')
    vs_zstd=$(awk -v a="$a_b" -v z="$zstd_b" 'BEGIN {printf "%+.1f", (a / z - 1) * 100}')
    vs_gzip=$(awk -v a="$a_b" -v g="$gzip_b" 'BEGIN {printf "%.2f", a / g}')
    echo "speed: xm-agent is ${speed_gzip}x faster than dd|gzip -1|curl (target >= 5x); dd|curl takes ${speed_plain}x its time but sends ${plain_bytes}x its bytes"
    echo "size: xm-agent sends ${vs_zstd}% vs zstd -3 of the whole image (target <= +10%), ${vs_gzip}x the bytes of gzip -1"

    lim_rate= lim_dev= mbps=
    if [ "$limit_s" != 0 ]; then
        mbps=$(awk -v b="$a_b" -v s="$limit_s" 'BEGIN {printf "%.2f", b * 8 / s / 1e6}')
        zero
        time_of run_agent --limit-mbps "$mbps"
        lim_t=$secs
        lb=$(stat_of bytes) lf=$(stat_of first_start) ll=$(stat_of last_end)
        lim_rate=$(awk -v b="$lb" -v f="$lf" -v l="$ll" 'BEGIN {printf "%.0f", b / (l - f)}')
        lim_dev=$(awk -v r="$lim_rate" -v m="$mbps" 'BEGIN {printf "%+.2f", (r / (m * 1e6 / 8) - 1) * 100}')
        echo "limit: --limit-mbps $mbps ($(awk -v m="$mbps" 'BEGIN {printf "%.0f", m * 1e6 / 8}') bytes/s): $lb bytes in $(awk -v f="$lf" -v l="$ll" 'BEGIN {printf "%.2f", l - f}') s at the sink = $lim_rate bytes/s (${lim_dev}%, target within 5%); wall $lim_t s"
    fi
    echo "machine: load after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "clone.agent_s=$a_t"
    echo "clone.agent_cpu_s=$a_c"
    echo "clone.agent_bytes=$a_b"
    echo "clone.dd_curl_s=$p_t"
    echo "clone.dd_curl_bytes=$p_b"
    echo "clone.dd_gzip_curl_s=$gzip_t"
    echo "clone.dd_gzip_curl_bytes=$gzip_b"
    echo "clone.zstd3_bytes=$zstd_b"
    echo "clone.speedup_vs_gzip=$speed_gzip"
    echo "clone.bytes_vs_zstd_pct=$vs_zstd"
    [ -n "$lim_rate" ] && echo "clone.limit_mbps=$mbps" && echo "clone.limit_rate_bps=$lim_rate" &&
        echo "clone.limit_dev_pct=$lim_dev"
    true
} | tee "$out"
echo "report kept in $out" >&2
