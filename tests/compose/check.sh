#!/usr/bin/env bash
# docker-compose.yml must be a valid compose file whose services run binaries this
# build makes (there is no Docker engine here: Debian's docker-compose v1 validates it
# offline). Prints the closing "N passed, N failed" line.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: check.sh BUILD_DIR}
passed=0 failed=0
check() { if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $*" >&2; fi; }

out=$(cd "$top" && XM_MASTER_KEY=$(printf '0%.0s' $(seq 64)) XM_AGENT_API_URL=http://10.0.0.1:8080 \
    docker-compose -f docker-compose.yml config 2>&1)
check test $? -eq 0 || echo "$out" >&2
# Every service's command is a binary the build produces (and the Dockerfile copies).
for bin in $(printf '%s\n' "$out" | sed -n 's/^ *- \(xm-[a-z-]*\)$/\1/p' | sort -u); do
    check test -n "$(find "$build" -type f -name "$bin" -perm -u+x | head -1)"
    check grep -q "/$bin" "$top/Dockerfile"
done
# Without the master key the file refuses to start anything.
(cd "$top" && env -u XM_MASTER_KEY XM_AGENT_API_URL=x docker-compose -f docker-compose.yml config >/dev/null 2>&1)
check test $? -ne 0
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
