#!/usr/bin/env bash
# Install every Debian package xmigrate needs to build and test, only when missing.
# Safe to run again: it asks dpkg first and calls apt-get only for what is absent.
set -euo pipefail

pkgs=(
    build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
    libhiredis-dev libevent-dev libcurl4-openssl-dev libjansson-dev libssl-dev
    libzstd-dev libcmocka-dev libpcre2-dev libxml2-dev
    redis-server redis-tools json-schema-test-suite nodejs
    wrk
    prometheus
    docker-compose
    zstd curl openssl
    ansible-core openssh-server openssh-client iproute2
    lvm2
    libdeflate-dev zlib1g-dev qemu-utils
    libyaml-dev
    azure-cli
    # prep tests: playbook lint, Debian root trees, Ansible's chroot connection
    # (community.general, in Debian's ansible package)
    ansible-lint debootstrap ansible
)

# Node.js runs the OpenAPI check. Debian's nodejs comes without npm; a nodesource
# nodejs (some images) bundles it and conflicts with Debian's npm package, so ask for
# npm only when the command is missing.
missing=()
command -v npm >/dev/null 2>&1 || missing+=(npm)
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

# Azurite 3.35 (the Azure Blob emulator of the integration tests), pinned by
# tests/package-lock.json; installed again only when the lock file changed.
tests_npm() {
    local dir
    dir="$(cd "$(dirname "$0")/../tests" && pwd)"
    if [ -x "$dir/node_modules/.bin/azurite-blob" ] &&
        [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
        return 0
    fi
    echo "install-deps: npm ci in $dir" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

if [ ${#missing[@]} -eq 0 ]; then
    tests_npm
    exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
tests_npm
