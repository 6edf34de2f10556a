#!/usr/bin/env bash
# The demo: one source server migrated to an emulated cloud, start to finish, verified
# byte for byte (tests/e2e/demo.py says what it does). Installs what is missing, builds,
# runs, and takes everything down again. Needs root (namespaces, loop devices, mounts).
#   scripts/demo.sh [--cloud aws] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (sudo scripts/demo.sh)" >&2; exit 2; }
./scripts/install-deps.sh
./scripts/build.sh plain build >/dev/null
exec python3 tests/e2e/demo.py --build build "$@"
