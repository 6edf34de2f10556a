#!/usr/bin/env bash
# Every branch of prep's dispatch, from fact fixtures (tests/prep/facts/host_vars): each
# supported distribution gets its family's tools, files, network backend and agents for
# each cloud; each unsupported one is refused before anything changes, with a message
# that says so. One ansible-playbook run, one inventory host per fixture, all reached by
# chroot into an overlay of the Debian 12 tree (plan.yml only reads /etc/netplan there).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${XM_PREP_TREE_CACHE:-/var/cache/xmigrate-test}
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (overlay mount, chroot)"
command -v ansible-playbook >/dev/null || skip "ansible-playbook is not installed"
ansible-doc -t connection community.general.chroot >/dev/null 2>&1 ||
    skip "the community.general.chroot connection is missing (Debian package ansible)"
"$here/build-trees.sh" "$cache" bookworm
rc=$?
[ $rc -eq 77 ] && skip "cannot build the Debian tree (needs debootstrap)"
[ $rc -eq 0 ] || { echo "FAIL: building the tree"; exit 1; }

work=$(mktemp -d /tmp/xm-prep-plan-XXXXXX)
. "$here/lib.sh"
trap 'tree_cleanup_all; [ -n "${XM_KEEP_TEST_DIRS:-}" ] || rm -rf "$work"' EXIT
t=$(tree_mount "$cache/bookworm" "$work/tree")
ln -s "$here/facts/host_vars" "$work/host_vars"
for f in "$here"/facts/host_vars/*.yml; do
    n=$(basename "$f" .yml)
    echo "$n ansible_connection=community.general.chroot ansible_host=$t" \
        "ansible_python_interpreter=/usr/bin/python3 ansible_remote_tmp=/tmp/.ansible"
done >"$work/inventory"

ansible-playbook -i "$work/inventory" "$here/plan-check.yml" >"$work/plan.log" 2>&1
for f in "$here"/facts/host_vars/*.yml; do
    n=$(basename "$f" .yml)
    line=$(grep -E "^$n +:" "$work/plan.log")
    if grep -q '^xm_expect: unsupported' "$f"; then
        check "$n: refused" grep -q 'failed=1' <<<"$line"
        check "$n: refused with a message naming it" \
            grep -Eq "fatal: \[$n\].*xmigrate prep does not support" "$work/plan.log"
    else
        check "$n: every cloud's plan as expected" grep -Eq 'failed=0' <<<"$line"
        check "$n: three plans checked" test "$(grep -A2 "^ok: \[$n\] => {\$" "$work/plan.log" |
            grep -c '"msg": "All assertions passed"')" -eq 3
    fi
done
[ "$failed" -eq 0 ] || grep -E "fatal|FAILED|ERROR" "$work/plan.log" | head -20
finish
