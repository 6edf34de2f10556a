#!/usr/bin/env bash
# Build (once) the Debian root trees the prep tests run playbooks/prep.yml against with
# Ansible's chroot connection, and cache them outside the repository so later runs and
# other checkouts reuse them. CI on a clean machine builds them here itself.
#
# Each tree is a debootstrap "minbase" with only what prep touches or runs: python3 (for
# Ansible's modules), a cloud kernel with its modules and an initramfs (so the initramfs
# is really rebuilt, for every installed kernel), initramfs-tools, grub2-common (its
# /etc/default/grub and update-grub), ifupdown (/etc/network/interfaces) and udev.
#
# Usage: build-trees.sh [CACHE_DIR] [SUITE...]   (defaults: /var/cache/xmigrate-test,
# bullseye bookworm). Prints nothing on a cache hit. Needs root and debootstrap.
# A tree is rebuilt when this script's package list changes (the stamp holds its hash).
set -euo pipefail

cache=${1:-${XM_PREP_TREE_CACHE:-/var/cache/xmigrate-test}}
shift || true
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bullseye bookworm)
mirror=${XM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=python3,initramfs-tools,linux-image-cloud-amd64,grub2-common,ifupdown,udev,zstd

[ "$(id -u)" -eq 0 ] || { echo "build-trees: needs root (debootstrap, chroot)" >&2; exit 77; }
command -v debootstrap >/dev/null || { echo "build-trees: debootstrap is not installed" >&2; exit 77; }

stamp_of() { printf '%s\n' "$include" "$mirror" "v3" | sha256sum | cut -c1-16; }
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9     # two test runs at once build each tree once

for suite in "${suites[@]}"; do
    tree="$cache/$suite"
    if [ -f "$tree.stamp" ] && [ "$(cat "$tree.stamp")" = "$(stamp_of)" ]; then
        continue
    fi
    echo "build-trees: building $tree (debootstrap --variant=minbase $suite)" >&2
    rm -rf "$tree" "$tree.tmp" "$tree.stamp"
    debootstrap --variant=minbase --include="$include" "$suite" "$tree.tmp" "$mirror" \
        >"$cache/$suite.log" 2>&1 || {
        echo "build-trees: debootstrap $suite failed, see $cache/$suite.log" >&2
        exit 1
    }
    # What an installed system has and a bare debootstrap lacks: grub's defaults file (the
    # bootloader package's postinst writes it), a hostname, apt's package cache and lock
    # files (apt writes them on first use; prep's package step must not be that first
    # use, or the rollback test would see them appear).
    cp "$tree.tmp/usr/share/grub/default/grub" "$tree.tmp/etc/default/grub"
    echo "xm-$suite" >"$tree.tmp/etc/hostname"
    chroot "$tree.tmp" apt-cache gencaches >/dev/null
    unshare -n chroot "$tree.tmp" apt-get -q -y install apt >/dev/null
    rm -rf "$tree.tmp/var/cache/apt/archives/"*.deb
    mv "$tree.tmp" "$tree"
    stamp_of >"$tree.stamp"
done
