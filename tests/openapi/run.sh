#!/usr/bin/env bash
# ctest openapi.validate: validate schemas/openapi.yaml with every external $ref resolved
# (@apidevtools/swagger-parser, pinned in package-lock.json) and check it against the
# route table of api/main.c; see check.js for the whole list.
#   tests/openapi/run.sh [path/to/openapi.yaml]
# Needs node (>= 18) and npm (scripts/install-deps.sh); installs the pinned packages
# with `npm ci` when node_modules is missing or older than package-lock.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

fail() {
    echo "not ok - $*"
    echo "0 passed, 1 failed"
    exit 1
}

command -v node >/dev/null 2>&1 || fail "node is not installed (scripts/install-deps.sh installs nodejs)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] || fail "node $(node --version) is too old; 18 or newer is needed"

# npm ci again whenever the lock file changed since the last install.
stamp="$here/node_modules/.xm-package-lock.json"
if [ ! -d "$here/node_modules" ] || ! cmp -s "$here/package-lock.json" "$stamp"; then
    command -v npm >/dev/null 2>&1 || fail "npm is not installed (Debian package npm)"
    echo "openapi: npm ci in tests/openapi"
    if ! (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2); then
        fail "npm ci failed (is the npm registry reachable?)"
    fi
    cp "$here/package-lock.json" "$stamp"
fi

exec node "$here/check.js" "$root" "$@"
