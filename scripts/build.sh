#!/usr/bin/env bash
# Build xmigrate into a build directory.
#   scripts/build.sh [plain|asan] [build-dir]
# plain: -Werror, test crash hooks on (the tests need them); asan: the same under
# AddressSanitizer + UndefinedBehaviorSanitizer. Production images build without hooks
# (see docker-compose.yml / Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:-plain}
case "$flavour" in
plain) dir=${2:-build}; extra=() ;;
asan) dir=${2:-build-asan}; extra=(-DXM_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug) ;;
release) dir=${2:-build-release}; extra=(-DXM_TEST_HOOKS=OFF -DXM_TESTS=OFF -DCMAKE_BUILD_TYPE=Release) ;;
*) echo "usage: scripts/build.sh [plain|asan|release] [build-dir]" >&2; exit 2 ;;
esac

hooks=-DXM_TEST_HOOKS=ON
[ "$flavour" = release ] && hooks=
cmake -S . -B "$dir" -DXM_WERROR=ON $hooks "${extra[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
ln -sf "$dir/compile_commands.json" compile_commands.json 2>/dev/null || true
