#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what is missing, checks formatting,
# builds with -Werror and runs every test, then again under ASan+UBSan.
#   scripts/test.sh            everything
#   scripts/test.sh -R regex   only the ctest tests whose name matches (both builds)
#   XM_TEST_FLAVOURS=plain scripts/test.sh   skip the sanitizer build
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

echo "== format check (clang-format)"
mapfile -t sources < <(git ls-files -co --exclude-standard -- '*.c' '*.h')
if [ ${#sources[@]} -gt 0 ]; then
    clang-format --dry-run --Werror "${sources[@]}"
fi

failed=0
for flavour in ${XM_TEST_FLAVOURS:-plain asan}; do
    echo "== build ($flavour)"
    ./scripts/build.sh "$flavour"
    dir=build
    [ "$flavour" = asan ] && dir=build-asan
    echo "== tests ($flavour)"
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    if ! (cd "$dir" && ctest --output-on-failure --timeout 900 "$@"); then
        failed=1
    fi
done
exit $failed
