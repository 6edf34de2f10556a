#!/usr/bin/env bash
# The prep playbooks for real: ansible-playbook with the chroot connection against
# Debian 11 and Debian 12 root trees made by debootstrap (tests/prep/build-trees.sh,
# cached in /var/cache/xmigrate-test). Each case runs on a fresh overlay of the cached
# tree with the fixture files of tests/prep/fixtures/debian on top and a real ext4 file
# system on a loop device standing in as the data disk /dev/sdb1.
#
# Per suite and cloud: a dry run (check mode) changes no file and reports the diffs;
# prep changes the grub defaults, the initramfs module list (and rebuilds the image),
# the network configuration, the udev rules and fstab as the cloud needs; a second run
# reports changed=0; rollback makes the tree hash identical to the one before prep.
# The network is cut (unshare -n) so the guest agent step takes its real "repositories
# unreachable" path and the test sends no traffic anywhere.
#
# Usage: run.sh [SUITE...]   (default: bullseye bookworm). Exit 77 = skipped.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cache=${XM_PREP_TREE_CACHE:-/var/cache/xmigrate-test}
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bullseye bookworm)
clouds=(${XM_PREP_CLOUDS:-aws azure gcp})

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (overlay mounts, chroot, loop devices)"
command -v ansible-playbook >/dev/null || skip "ansible-playbook is not installed"
command -v unshare >/dev/null || skip "unshare is not installed"
ansible-doc -t connection community.general.chroot >/dev/null 2>&1 ||
    skip "the community.general.chroot connection is missing (Debian package ansible)"
"$here/build-trees.sh" "$cache" "${suites[@]}"
rc=$?
[ $rc -eq 77 ] && skip "cannot build the Debian trees (needs debootstrap)"
[ $rc -eq 0 ] || { echo "FAIL: building the trees"; exit 1; }

. "$here/lib.sh"
work=$(mktemp -d /tmp/xm-prep-XXXXXX)
trap 'tree_cleanup_all; [ -n "${XM_KEEP_TEST_DIRS:-}" ] || rm -rf "$work"' EXIT

# The data disk: a small real ext4 file system, so blkid has a UUID to give.
truncate -s 8M "$work/data.img"
mkfs.ext4 -q -F "$work/data.img"
data_loop=$(losetup -f --show "$work/data.img") || { echo "FAIL: losetup"; exit 1; }
loops+=("$data_loop")
data_uuid=$(blkid -s UUID -o value "$data_loop")

for suite in "${suites[@]}"; do
    for cloud in "${clouds[@]}"; do
        case_=$suite-$cloud
        t=$(tree_mount "$cache/$suite" "$work/$case_" "$here/fixtures/debian")
        # /dev/sdb1 inside the tree is the loop device (the tree's /dev is not hashed).
        mknod "$t/dev/sdb1" b "$(stat -c '%t' "$data_loop" | xargs printf '%d')" \
            "$(stat -c '%T' "$data_loop" | xargs printf '%d')"
        inv=$(tree_inventory "$t" "$work/$case_.inv")
        before=$(tree_hash "$t")
        vars=(-e xm_cloud="$cloud" -e xm_migration=m-"$case_" -e xm_host=h1 -e xm_first_nic=ens3)

        # Dry run: nothing changes, the report says what would.
        play "$case_ dry run" "$inv" "$top/playbooks/prep.yml" "${vars[@]}" -e xm_dry_run=true \
            -e xm_result_file="$work/$case_.dry.json"
        check "$case_: dry run leaves the tree as it was" test "$(tree_hash "$t")" = "$before"
        check "$case_: dry run reports fstab, grub, modules, network, udev" \
            jq -e '.dry_run == true and (.changed | index("/etc/fstab")) and
                   (.changed | index("/etc/default/grub")) and
                   (.changed | index("/etc/initramfs-tools/modules")) and
                   (.changed | index("/etc/network/interfaces")) and
                   (.changed | index("/etc/udev/rules.d/70-persistent-net.rules"))' \
            "$work/$case_.dry.json"
        check "$case_: dry run shows the new fstab in its diff" \
            jq -e --arg u "$data_uuid" '[.diffs[] | select(.path == "/etc/fstab") | .diff[]?.after
                                        | strings | contains("UUID=" + $u)] | any' \
            "$work/$case_.dry.json"

        # The real run.
        play "$case_ prep" "$inv" "$top/playbooks/prep.yml" "${vars[@]}" \
            -e xm_result_file="$work/$case_.json"
        check "$case_: prep changed something" test "$(recap changed)" -gt 0
        assert_debian_prepared "$t" "$cloud" "$data_uuid" "$work/$case_.json"

        # Idempotence.
        play "$case_ second prep" "$inv" "$top/playbooks/prep.yml" "${vars[@]}"
        check "$case_: second run reports changed=0" test "$(recap changed)" -eq 0

        # Rollback, byte for byte.
        play "$case_ rollback" "$inv" "$top/playbooks/rollback.yml" -e xm_migration=m-"$case_"
        after=$(tree_hash "$t")
        check "$case_: rollback makes the tree identical" test "$after" = "$before"
        [ "$after" = "$before" ] || tree_diff "$t"
        tree_umount "$t"
    done
done
finish
