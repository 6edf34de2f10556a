#!/usr/bin/env bash
# xm-api throughput against an evhttp hello-world built in the same run (issue 3):
#   bench/api/run.sh [-t THREADS] [-c CONNECTIONS] [-d DURATION] [-p] [-u] [-q SECONDS]
# -t -c -d are wrk's (default -t2 -c32 -d10s); -p also profiles every case with
# `perf record -a` and appends where the CPU went (by process, library and symbol);
# -u has the servers reach Redis over a Unix socket (XM_REDIS_SOCKET) instead of TCP;
# -q is how long to wait for a quiet machine before measuring (default 600 s).
#
# Builds xm-api and bench_api_hello as production builds them (Release, no test crash
# hooks) into build-bench/; starts a throwaway redis-server (free loopback port, temp
# dir, AOF on with appendfsync everysec, no RDB snapshots), xm-api (XM_LOG_LEVEL=warn,
# a random XM_MASTER_KEY, XM_API_THREADS as set, default 2) and the hello server with
# the same thread count; makes a token, an ssh and an aws credential and one migration
# of two hosts with curl; then runs wrk, one case after the other, against
#   hello                     the baseline: 200 "hello", no Redis
#   hello+1, +2, +3 round trips   reference only: hello after 1, 2, 3 blocking PINGs
#   GET /v1/migrations/{id}   target: >= 50% of the baseline's req/s
#   POST /v1/migrations       target: >= 25% of the baseline's req/s (same two hosts;
#                             every request stores one more migration)
# and prints req/s, the ratios, PASS/MISS, non-2xx and socket errors, and per request
# the server's and Redis's CPU time and Redis's reads (round trips) and commands. Exit 0
# when both targets are met with no errors, 1 otherwise. wrk, the servers and Redis
# share the machine's cores. The report is also kept in bench/results/api-<UTC>.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."

threads=2 conns=32 duration=10s profile=0 unix=0 quiet_wait=600
while getopts "t:c:d:puq:" o; do
    case "$o" in
    t) threads=$OPTARG ;;
    c) conns=$OPTARG ;;
    d) duration=$OPTARG ;;
    p) profile=1 ;;
    u) unix=1 ;;
    q) quiet_wait=$OPTARG ;;
    *)
        echo "usage: bench/api/run.sh [-t T] [-c C] [-d DURATION] [-p] [-u] [-q SECONDS]" >&2
        exit 2
        ;;
    esac
done

tools=(wrk curl redis-server redis-cli)
[ $profile = 1 ] && tools+=(perf)
for tool in "${tools[@]}"; do
    if ! command -v "$tool" >/dev/null; then
        echo "run.sh: '$tool' is missing (scripts/install-deps.sh)" >&2
        exit 2
    fi
done

echo "== build (build-bench: Release, XM_TEST_HOOKS=OFF)" >&2
cmake -S . -B build-bench -DXM_WERROR=ON -DCMAKE_BUILD_TYPE=Release -DXM_TEST_HOOKS=OFF >/dev/null
cmake --build build-bench --target xm-api bench_api_hello -j"$(nproc)" >/dev/null
api_bin=build-bench/api/xm-api
hello_bin=build-bench/bench/api/bench_api_hello

tmp=$(mktemp -d /tmp/xm-bench-api.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ "${XM_KEEP_BENCH_DIR:-0}" = 1 ]; then
        echo "kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- servers

# A loopback port nothing listens on (bash's /dev/tcp connect fails).
free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "run.sh: no free port" >&2
    return 1
}

# Poll a command until it succeeds or the deadline (seconds) passes.
wait_for() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "run.sh: timed out waiting for: $*" >&2
            return 1
        fi
        sleep 0.05
    done
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$tmp" --save "" \
    --appendonly yes --appendfsync everysec --daemonize no --logfile "$tmp/redis.log" \
    --unixsocket "$tmp/redis.sock" --unixsocketperm 700 &
redis_pid=$!
pids+=("$redis_pid")
wait_for 10 redis-cli -p "$redis_port" ping

export XM_REDIS_HOST=127.0.0.1 XM_REDIS_PORT=$redis_port XM_API_ADDR=127.0.0.1
export XM_LOG_LEVEL=warn XM_API_THREADS=${XM_API_THREADS:-2}
redis_via="TCP loopback"
if [ $unix = 1 ]; then
    export XM_REDIS_SOCKET=$tmp/redis.sock
    redis_via="a Unix socket"
fi
XM_MASTER_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export XM_MASTER_KEY

declare -A port pid
port[api]=$(free_port)
XM_API_PORT=${port[api]} "$api_bin" serve 2>"$tmp/xm-api.log" &
pid[api]=$!
pids+=("${pid[api]}")
wait_for 10 curl -sf "http://127.0.0.1:${port[api]}/healthz"

for n in 0 1 2 3; do
    port[hello$n]=$(free_port)
    XM_API_PORT=${port[hello$n]} "$hello_bin" "$n" 2>"$tmp/hello$n.log" &
    pid[hello$n]=$!
    pids+=("${pid[hello$n]}")
    wait_for 10 curl -sf "http://127.0.0.1:${port[hello$n]}/"
done

# ---------------------------------------------------------------- data

token=$("$api_bin" token create bench)
api="http://127.0.0.1:${port[api]}"

# POST a JSON body with the token; print the "id" of the 201 answer.
create() {
    local out
    out=$(curl -sS -f -X POST -H "Authorization: Bearer $token" \
        -H "Content-Type: application/json" --data-binary "$2" "$api$1")
    printf '%s' "$out" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4
}
ssh_cred=$(create /v1/credentials \
    '{"name":"bench ssh","kind":"ssh","secret":{"user":"root","password":"bench"}}')
aws_cred=$(create /v1/credentials '{"name":"bench aws","kind":"aws","secret":{"access_key_id":
    "AKIAIOSFODNN7EXAMPLE","secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}}')
body=$(printf '{"name":"bench","cloud":"aws","region":"eu-west-1","credential":"%s","hosts":[%s,%s]}' \
    "$aws_cred" \
    "{\"name\":\"web1\",\"address\":\"10.0.0.5\",\"credential\":\"$ssh_cred\"}" \
    "{\"name\":\"db1\",\"address\":\"10.0.0.6\",\"port\":2222,\"credential\":\"$ssh_cred\"}")
mig=$(create /v1/migrations "$body")
if [ -z "$ssh_cred" ] || [ -z "$aws_cred" ] || [ -z "$mig" ]; then
    echo "run.sh: setup failed (ssh=$ssh_cred aws=$aws_cred migration=$mig)" >&2
    exit 1
fi
curl -sS -f -H "Authorization: Bearer $token" "$api/v1/migrations/$mig" >/dev/null

cat >"$tmp/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
EOF

# ---------------------------------------------------------------- measuring

# CPU time (user + system) a process has used so far, in clock ticks.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# The whole machine's busy (all but idle and iowait; a process's own CPU time includes
# the softirq time spent on its packets) and total clock ticks so far, all cores.
machine_ticks() {
    awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat
}

# Wait (at most quiet_wait seconds) until the machine is quiet: less than 15% busy over
# 2 s, our idle servers included.
wait_quiet() {
    local deadline=$(($(date +%s) + quiet_wait)) b0 t0 b1 t1 pct
    while :; do
        read -r b0 t0 < <(machine_ticks)
        sleep 2
        read -r b1 t1 < <(machine_ticks)
        pct=$(((b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1)))
        if [ "$pct" -lt 15 ]; then
            return 0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "run.sh: the machine is still ${pct}% busy; measuring anyway" >&2
            return 0
        fi
        echo "run.sh: the machine is ${pct}% busy; waiting for quiet" >&2
    done
}

# Redis's counts so far of client reads (one per request or pipelined batch: the round
# trips) and of commands run.
redis_counts() {
    redis-cli -p "$redis_port" info stats |
        awk -F: '/^total_reads_processed:/ {r = $2} /^total_commands_processed:/ {c = $2}
                 END {printf "%d %d\n", r, c}'
}

# Run wrk on one case: name, the server's pid, then wrk's arguments. wrk's output goes
# into $tmp/<name>.txt and, with -p, the profile into $tmp/<name>.prof. Prints
# "<req/s> <non-2xx> <socket errors> <server CPU us/req> <redis CPU us/req>
#  <redis round trips/req> <redis commands/req> <busy %> <others %>": how busy the whole
# machine was, and how much of it went to processes other than the server, Redis and
# this subshell's children (wrk, perf).
bench() {
    local name=$1 server=$2 self=$BASHPID perf_pid='' s0 s1 r0 r1 c0 c1 m0 m1 w0 w1
    shift 2
    if [ $profile = 1 ]; then
        perf record -a -g -F 999 -o "$tmp/$name.perf" -- sleep "$duration" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    s0=$(cpu_ticks "$server") r0=$(cpu_ticks "$redis_pid") c0=$(redis_counts)
    m0=$(machine_ticks) w0=$(awk '{print $16 + $17}' "/proc/$self/stat")
    wrk -t"$threads" -c"$conns" -d"$duration" --latency "$@" >"$tmp/$name.txt" 2>&1
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" || true
    fi
    s1=$(cpu_ticks "$server") r1=$(cpu_ticks "$redis_pid") c1=$(redis_counts)
    m1=$(machine_ticks) w1=$(awk '{print $16 + $17}' "/proc/$self/stat")
    if [ -n "$perf_pid" ]; then
        {
            echo "-- CPU by process (all cores)"
            perf report -i "$tmp/$name.perf" --stdio --no-children --sort comm 2>/dev/null |
                grep -E '^ +[0-9]' | head -n 8 || true
            echo "-- by process and library ([kernel.kallsyms]: syscalls, wake-ups, TCP)"
            perf report -i "$tmp/$name.perf" --stdio --no-children --sort comm,dso -g none \
                2>/dev/null | grep -E '^ +[0-9]' | head -n 16 || true
            echo "-- top symbols"
            perf report -i "$tmp/$name.perf" --stdio --no-children --sort comm,dso,sym \
                -g none 2>/dev/null | grep -E '^ +[0-9]' | head -n 30 || true
        } >"$tmp/$name.prof"
    fi
    awk -v hz="$(getconf CLK_TCK)" -v s="$((s1 - s0))" -v r="$((r1 - r0))" \
        -v w="$((w1 - w0))" -v c0="$c0" -v c1="$c1" -v m0="$m0" -v m1="$m1" '
        /^Requests\/sec:/ {rps = $2}
        /Non-2xx or 3xx responses:/ {bad = $NF}
        /Socket errors:/ {gsub(",", ""); sock = $4 + $6 + $8 + $10}
        / requests in / {n = $1}
        END {
            split(c0, a, " "); split(c1, b, " "); split(m0, x, " "); split(m1, y, " ")
            n = n > 0 ? n : 1
            total = y[2] - x[2] > 0 ? y[2] - x[2] : 1
            busy = (y[1] - x[1]) * 100 / total
            others = (y[1] - x[1] - s - r - w) * 100 / total
            printf "%s %d %d %.1f %.1f %.2f %.2f %.0f %.0f\n", rps ? rps : 0, bad, sock,
                s * 1e6 / hz / n, r * 1e6 / hz / n, (b[1] - a[1]) / n, (b[2] - a[2]) / n,
                busy, others < 0 ? 0 : others
        }' "$tmp/$name.txt"
}

cases=(hello0 hello1 hello2 hello3 get post)
declare -A label=(
    [hello0]="hello (baseline)" [hello1]="hello + 1 redis RTT" [hello2]="hello + 2 redis RTT"
    [hello3]="hello + 3 redis RTT" [get]="GET /v1/migrations/{id}" [post]="POST /v1/migrations"
)
declare -A target=([get]=0.50 [post]=0.25)
declare -A rps bad sock cpu rcpu rtt cmds busy others

wait_quiet
echo "== wrk -t$threads -c$conns -d$duration, each of: ${cases[*]}" >&2
for c in "${cases[@]}"; do
    case $c in
    get) args=(-H "Authorization: Bearer $token" "$api/v1/migrations/$mig") ;;
    post) args=(-s "$tmp/post.lua" "$api/v1/migrations") ;;
    *) args=("http://127.0.0.1:${port[$c]}/") ;;
    esac
    server=${pid[$c]:-${pid[api]}}
    read -r "rps[$c]" "bad[$c]" "sock[$c]" "cpu[$c]" "rcpu[$c]" "rtt[$c]" "cmds[$c]" \
        "busy[$c]" "others[$c]" < <(BENCH_BODY=$body BENCH_TOKEN=$token \
        bench "$c" "$server" "${args[@]}")
done

# ---------------------------------------------------------------- report

mkdir -p bench/results
report=bench/results/api-$(date -u +%Y%m%dT%H%M%SZ).txt
ok=1
{
    echo "bench/api: wrk -t$threads -c$conns -d$duration, $(date -u +%Y-%m-%dT%H:%M:%SZ)," \
        "$(nproc) cores shared by wrk, redis and the servers; XM_API_THREADS=$XM_API_THREADS;" \
        "redis $(redis-server --version | awk '{print $3}') over $redis_via, AOF appendfsync" \
        "everysec"
    printf '%-23s %7s %6s %6s %6s | %7s %7s %6s %6s | %s\n' case req/s ratio target result \
        server redis redis redis quiet
    printf '%-23s %7s %6s %6s %6s | %7s %7s %6s %6s | %s\n' "" "" "" "" "" "CPU us" "CPU us" \
        "RTT" "cmds" "(others' CPU)"
    kv=()
    for c in "${cases[@]}"; do
        ratio=$(awk -v a="${rps[$c]}" -v b="${rps[hello0]}" \
            'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')
        result=- want=-
        if [ -n "${target[$c]:-}" ]; then
            want=${target[$c]}
            result=$(awk -v r="$ratio" -v t="$want" 'BEGIN {print (r >= t ? "PASS" : "MISS")}')
            [ "$result" = PASS ] || ok=0
        fi
        quiet=yes trust=1
        if [ "${others[$c]}" -gt 15 ]; then
            quiet=no trust=0
        fi
        printf '%-23s %7.0f %6s %6s %6s | %7s %7s %6s %6s | %s (%s%%)\n' "${label[$c]}" \
            "${rps[$c]}" "$ratio" "$want" "$result" "${cpu[$c]}" "${rcpu[$c]}" "${rtt[$c]}" \
            "${cmds[$c]}" "$quiet" "${others[$c]}"
        kv+=("api.$c.rps=${rps[$c]}" "api.$c.ratio=$ratio" "api.$c.result=$result"
            "api.$c.non2xx=${bad[$c]}" "api.$c.socket_errors=${sock[$c]}"
            "api.$c.server_cpu_us=${cpu[$c]}" "api.$c.redis_cpu_us=${rcpu[$c]}"
            "api.$c.redis_rtt=${rtt[$c]}" "api.$c.redis_cmds=${cmds[$c]}"
            "api.$c.machine_busy_pct=${busy[$c]}" "api.$c.others_pct=${others[$c]}"
            "api.$c.trustworthy=$trust")
    done
    errors=""
    for c in "${cases[@]}"; do
        if [ "${bad[$c]}" != 0 ] || [ "${sock[$c]}" != 0 ]; then
            errors="$errors ${label[$c]}: ${bad[$c]} non-2xx, ${sock[$c]} socket errors;"
        fi
    done
    if [ -z "$errors" ]; then
        echo "errors: none"
    else
        echo "errors:$errors"
        ok=0
    fi
    echo "quiet: others' CPU is the share of the whole machine used by anything but the"
    echo "server, redis and wrk during the case; over 15% marks it not trustworthy"
    echo
    printf '%s\n' "${kv[@]}"
    for c in "${cases[@]}"; do
        echo
        echo "---- wrk: ${label[$c]}"
        cat "$tmp/$c.txt"
        if [ -s "$tmp/$c.prof" ]; then
            echo "---- perf: ${label[$c]}"
            cat "$tmp/$c.prof"
        fi
    done
    if [ -s "$tmp/xm-api.log" ]; then
        echo
        echo "---- xm-api log (warn and above), last lines"
        tail -n 20 "$tmp/xm-api.log"
    fi
} >"$report"
cat "$report"
echo "report kept in $report" >&2
[ $ok = 1 ]
