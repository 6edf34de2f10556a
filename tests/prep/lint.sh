#!/usr/bin/env bash
# Every playbook in playbooks/ passes `ansible-playbook --syntax-check` and
# `ansible-lint` (Debian's package, default profile), task files and vars included.
# Prints "N passed, N failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
command -v ansible-playbook >/dev/null || { echo "SKIP: ansible-playbook is not installed"; exit 77; }
command -v ansible-lint >/dev/null || { echo "SKIP: ansible-lint is not installed (scripts/install-deps.sh)"; exit 77; }
work=$(mktemp -d /tmp/xm-prep-lint-XXXXXX)
trap 'rm -rf "$work"' EXIT
export ANSIBLE_LOCAL_TEMP=$work ANSIBLE_NOCOLOR=1
passed=0 failed=0
for pb in "$top"/playbooks/*.yml; do
    n=${pb#"$top"/}
    if ansible-playbook --syntax-check -i localhost, "$pb" >"$work/syntax.log" 2>&1; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $n: syntax check"
        tail -5 "$work/syntax.log"
    fi
    # ansible-lint from the repository root, one playbook at a time (with what it includes).
    if (cd "$top" && ansible-lint --nocolor "$n") >"$work/lint.log" 2>&1; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $n: ansible-lint"
        grep -vE '^\s*$' "$work/lint.log" | head -20
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
