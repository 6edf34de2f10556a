# Shared by the prep tests (sourced): result counting, running a playbook against a
# root tree with the chroot connection, overlay trees and their hashes, the assertions
# on a prepared Debian tree.

passed=0 failed=0
loops=()
export ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=False ANSIBLE_HOST_KEY_CHECKING=False
export ANSIBLE_LOCAL_TEMP=${work:-/tmp}/ansible-local

check() {
    local name=$1
    shift
    if "$@" >/dev/null 2>&1; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $name"
    fi
}

# play NAME INVENTORY PLAYBOOK ARGS...: run it offline (no network namespace but its
# own empty one); the output goes to $work/NAME.log and $work/last.log.
play() {
    local name=$1 inv=$2 pb=$3
    shift 3
    local log="$work/${name// /-}.log"
    unshare -n ansible-playbook -i "$inv" "$pb" "$@" >"$log" 2>&1
    local rc=$?
    cp "$log" "$work/last.log"
    check "$name: ansible-playbook exits 0" test $rc -eq 0
    [ $rc -eq 0 ] || { echo "--- $name (exit $rc), last lines:"; tail -25 "$log"; }
    return $rc
}

# recap FIELD: the number after FIELD= in the last run's PLAY RECAP (-1 when absent).
recap() {
    local v
    v=$(sed -n "s/.* $1=\([0-9]*\).*/\1/p" "$work/last.log" | tail -1)
    echo "${v:--1}"
}

# tree_mount LOWER DIR [FIXTURES]: a writable overlay of LOWER at DIR/m, with FIXTURES
# copied on top. Prints the mount point.
tree_mount() {
    mkdir -p "$2/up" "$2/work" "$2/m"
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/up,workdir=$2/work" "$2/m" || return 1
    [ -z "${3:-}" ] || cp -a "$3/." "$2/m/"
    echo "$2/m"
}

tree_umount() { umount "$1" 2>/dev/null; }

# Unmount every overlay under $work (tree_mount runs in command substitutions, so the
# mount table, not a shell variable, says what is mounted) and detach the loop devices.
tree_cleanup_all() {
    local m l
    for m in $(awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount "$m" 2>/dev/null
    done
    for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null; done
}

# tree_inventory TREE FILE: an inventory of one host reached by chroot. Ansible's own
# temporary files go to the tree's /tmp, which the hash leaves out.
tree_inventory() {
    echo "tree ansible_connection=community.general.chroot ansible_host=$1" \
        "ansible_python_interpreter=/usr/bin/python3 ansible_remote_tmp=/tmp/.ansible" >"$2"
    echo "$2"
}

# tree_list TREE: every path (mode, owner, type) and every file's SHA-256, except the
# kernel's and Ansible's scratch: /proc /sys /dev /run /tmp.
tree_list() {
    (
        cd "$1" || exit 1
        find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./tmp \) \
            -prune -o -print0 | sort -z | xargs -0 stat -c '%n %a %U %G %F'
        find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./tmp \) \
            -prune -o -type f -print0 | sort -z | xargs -0 sha256sum
    )
}

# tree_hash TREE: one hash of tree_list (the list is kept in TREE/../list.N for a diff).
tree_hash() {
    local n=0
    while [ -e "$1/../list.$n" ]; do n=$((n + 1)); done
    tree_list "$1" >"$1/../list.$n"
    sha256sum <"$1/../list.$n" | cut -c1-64
}

# Show what differs between the first and the last listing of a tree.
tree_diff() {
    local last
    last=$(ls "$1/.."/list.* | sort -t. -k2 -n | tail -1)
    diff "$1/../list.0" "$last" | head -20
}

finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# ---------------------------------------------------------------- Debian assertions

# What each cloud must find, as the test states it independently of the playbook.
declare -A want_cmdline=(
    [aws]="console=ttyS0 net.ifnames=0 biosdevname=0"
    [azure]="console=ttyS0 earlyprintk=ttyS0 rootdelay=300 net.ifnames=0 biosdevname=0"
    [gcp]="console=ttyS0,38400n8 net.ifnames=0 biosdevname=0"
)
declare -A want_modules=(
    [aws]="nvme ena"
    [azure]="hv_vmbus hv_storvsc hv_netvsc"
    [gcp]="virtio_scsi virtio_net nvme gve"
)

# assert_debian_prepared TREE CLOUD DATA_UUID REPORT
assert_debian_prepared() {
    local t=$1 cloud=$2 uuid=$3 report=$4 c="$suite-$2"
    local tab=$'\t'
    check "$c: grub command line" grep -Fxq "GRUB_CMDLINE_LINUX=\"${want_cmdline[$cloud]}\"" \
        "$t/etc/default/grub"
    check "$c: grub default command line kept" grep -Fxq 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"' \
        "$t/etc/default/grub"
    check "$c: initramfs module list" test "$(sed -n '/^# BEGIN xmigrate prep/,/^# END/p' \
        "$t/etc/initramfs-tools/modules" | grep -v '^#' | xargs)" = "${want_modules[$cloud]}"
    check "$c: initramfs module list keeps its original text" grep -Fxq '# sd_mod' \
        "$t/etc/initramfs-tools/modules"
    local img m
    img=$(ls "$t"/boot/initrd.img-* | head -1)
    for m in ${want_modules[$cloud]}; do
        # In the image, or built into the kernel (the cloud kernel has nvme built in).
        check "$c: $m in the rebuilt initramfs or built in" \
            sh -c "chroot '$t' lsinitramfs '/boot/${img##*/}' | grep -Eq '/$m\\.ko(\\.[a-z]+)?\$' ||
                   grep -Eq '/$m\\.ko\$' '$t'/lib/modules/*/modules.builtin"
    done
    check "$c: first NIC by DHCP" grep -Fxq 'iface eth0 inet dhcp' "$t/etc/network/interfaces"
    check "$c: first NIC hot-plugged" grep -Fxq 'allow-hotplug eth0' "$t/etc/network/interfaces"
    check "$c: original stanza kept, commented" grep -Fxq '#xmigrate# iface ens3 inet static' \
        "$t/etc/network/interfaces"
    check "$c: original address kept, commented" grep -Fxq "#xmigrate# ${tab}address 10.20.0.5/24" \
        "$t/etc/network/interfaces"
    check "$c: other NIC untouched" grep -Fxq 'iface ens4 inet static' "$t/etc/network/interfaces"
    check "$c: no active ens3 stanza" sh -c "! grep -Eq '^(allow-hotplug|auto|iface) ens3' \
        '$t/etc/network/interfaces'"
    check "$c: persistent net rules removed" test ! -e "$t/etc/udev/rules.d/70-persistent-net.rules"
    check "$c: fstab data disk by UUID with nofail" \
        grep -Fxq "UUID=$uuid${tab}/srv/data${tab}ext4${tab}defaults,nofail${tab}0${tab}2" "$t/etc/fstab"
    check "$c: fstab unknown disk kept by name with nofail" \
        grep -Fxq "/dev/sdc1${tab}/srv/archive${tab}xfs${tab}noatime,nofail${tab}0${tab}2" "$t/etc/fstab"
    check "$c: fstab EFI partition gets nofail" \
        grep -Fxq "UUID=2b1e-77aa${tab}/boot/efi${tab}vfat${tab}umask=0077,nofail${tab}0${tab}1" "$t/etc/fstab"
    check "$c: fstab root entry untouched" grep -Eq '^UUID=6f7c1e2a-[^ ]+ +/ +ext4 +errors=remount-ro +0 +1$' \
        "$t/etc/fstab"
    check "$c: fstab entries that need nothing untouched" \
        grep -Fxq '/dev/mapper/vg0-logs /var/log/app ext4 defaults,nofail 0 2' "$t/etc/fstab"
    check "$c: fstab pseudo file systems untouched" \
        grep -Eq '^proc +/proc +proc +defaults +0 +0$' "$t/etc/fstab"
    check "$c: backup manifest lists fstab" grep -Fxq 'saved 0644 root root /etc/fstab' \
        "$t/var/lib/xmigrate/backup/m-$c/manifest"
    check "$c: backup holds the original fstab" \
        cmp "$t/var/lib/xmigrate/backup/m-$c/files/etc/fstab" "$here/fixtures/debian/etc/fstab"
    check "$c: report lists the rebuilt image" jq -e --arg i "/boot/${img##*/}" \
        '.changed | index($i)' "$report"
    check "$c: report warns about the unknown disk" jq -e \
        '[.findings[].message | test("/dev/sdc1 has no UUID")] | any' "$report"
    check "$c: report warns about the agent it could not install" jq -e \
        '[.findings[].message | test("could not be installed")] | any' "$report"
    check "$c: nothing under /boot was removed" \
        bash -c "diff <(ls '$t/boot') <(ls '$cache/$suite/boot')"
}
