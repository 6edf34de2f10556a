#!/usr/bin/env bash
# The Ubuntu and RHEL task files in check mode against fixture trees: an overlay of the
# Debian 12 tree (its python3, kernel and tools) with a distribution's own files on top
# (tests/prep/fixtures/<name>: os-release, grub defaults, network configuration, and
# for RHEL its dracut and /boot layout), so Ansible's own fact gathering names the
# distribution and prep takes that family's branch. Check mode: no file may change;
# the report must name the files and packages that family's tasks would change, with
# the right new contents in the diffs. One cloud per fixture, rotating (every cloud x
# distribution pair is covered by the fact fixtures of plan.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cache=${XM_PREP_TREE_CACHE:-/var/cache/xmigrate-test}
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (overlay mounts, chroot)"
command -v ansible-playbook >/dev/null || skip "ansible-playbook is not installed"
ansible-doc -t connection community.general.chroot >/dev/null 2>&1 ||
    skip "the community.general.chroot connection is missing (Debian package ansible)"
"$here/build-trees.sh" "$cache" bookworm
rc=$?
[ $rc -eq 77 ] && skip "cannot build the Debian tree (needs debootstrap)"
[ $rc -eq 0 ] || { echo "FAIL: building the tree"; exit 1; }

work=$(mktemp -d /tmp/xm-prep-check-XXXXXX)
. "$here/lib.sh"
trap 'tree_cleanup_all; [ -n "${XM_KEEP_TEST_DIRS:-}" ] || rm -rf "$work"' EXIT
suite=fixture

# name cloud distribution: files the family's tasks must report (K = the kernel version)
cases=(
    "ubuntu2204 azure|Ubuntu 22.04|/etc/netplan/90-xmigrate.yaml /etc/default/grub /etc/initramfs-tools/modules /etc/fstab /boot/initrd.img-K"
    "ubuntu1604 gcp|Ubuntu 16.04|/etc/network/interfaces /etc/default/grub /etc/initramfs-tools/modules /etc/fstab /boot/initrd.img-K"
    "rhel8 aws|RedHat 8.8|/etc/dracut.conf.d/90-xmigrate.conf /etc/sysconfig/network-scripts/ifcfg-eth0 /etc/default/grub /boot/grub2/grub.cfg /boot/grub2/grubenv /boot/initramfs-K.img /etc/fstab package:cloud-init"
    "centos7 azure|CentOS 7.9|/etc/dracut.conf.d/90-xmigrate.conf /etc/sysconfig/network-scripts/ifcfg-eth0 /etc/default/grub /boot/grub2/grub.cfg /boot/initramfs-K.img /etc/fstab package:WALinuxAgent package:cloud-init"
    "rocky9 gcp|Rocky 9.3|/etc/dracut.conf.d/90-xmigrate.conf /etc/NetworkManager/system-connections/xmigrate-eth0.nmconnection /etc/default/grub /boot/grub2/grub.cfg /boot/grub2/grubenv /boot/loader/entries/fixture-6.1.0.conf /boot/initramfs-K.img /etc/fstab package:cloud-init"
)
for c in "${cases[@]}"; do
    IFS='|' read -r head distro files <<<"$c"
    read -r name cloud <<<"$head"
    n="$name-$cloud"
    t=$(tree_mount "$cache/bookworm" "$work/$n" "$here/fixtures/debian")
    cp -a "$here/fixtures/$name/." "$t/"
    k=$(ls "$t/lib/modules" | head -1)
    case $name in
    rhel* | centos* | rocky*)
        # A RHEL host: no Debian identity, dracut's image name.
        rm -f "$t/etc/debian_version" "$t/etc/network/interfaces"
        cp "$t/boot/initrd.img-$k" "$t/boot/initramfs-$k.img"
        ;;
    esac
    inv=$(tree_inventory "$t" "$work/$n.inv")
    before=$(tree_hash "$t")
    play "$n check mode" "$inv" "$top/playbooks/prep.yml" -e xm_cloud="$cloud" \
        -e xm_migration="m-$n" -e xm_first_nic=ens3 -e xm_dry_run=true \
        -e xm_result_file="$work/$n.json"
    check "$n: check mode changes no file" test "$(tree_hash "$t")" = "$before"
    [ "$(tree_hash "$t")" = "$before" ] || tree_diff "$t"
    check "$n: detected as $distro" jq -e --arg d "$distro" '.distribution == $d' "$work/$n.json"
    for f in $files; do
        f=${f//K/$k}
        check "$n: reports $f" jq -e --arg f "$f" '.changed | index($f)' "$work/$n.json"
    done
    after_of() { jq -r --arg p "$1" '.diffs[] | select(.path == $p) | .diff[]?.after | strings' \
        "$work/$n.json"; }
    case $name in
    ubuntu2204)
        check "$n: netplan file sets eth0 to DHCP" \
            grep -Eq '^ +dhcp4: true' <(after_of /etc/netplan/90-xmigrate.yaml)
        check "$n: grub default loses its console" grep -Fxq 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"' \
            <(after_of /etc/default/grub)
        check "$n: grub command line for azure" grep -Fxq \
            'GRUB_CMDLINE_LINUX="console=ttyS0 earlyprintk=ttyS0 rootdelay=300 net.ifnames=0 biosdevname=0"' \
            <(after_of /etc/default/grub)
        check "$n: apt simulated the agents" jq -e \
            '(.changed | index("package:walinuxagent")) or ([.findings[].message | test("walinuxagent")] | any)' \
            "$work/$n.json"
        ;;
    ubuntu1604)
        check "$n: interfaces gets eth0 by DHCP" grep -Fxq 'iface eth0 inet dhcp' \
            <(after_of /etc/network/interfaces)
        check "$n: grub command line for gcp" grep -Fxq \
            'GRUB_CMDLINE_LINUX="console=ttyS0,38400n8 net.ifnames=0 biosdevname=0"' <(after_of /etc/default/grub)
        ;;
    rhel8 | centos7 | rocky9)
        want=$(case $cloud in aws) echo "nvme ena" ;; azure) echo "hv_vmbus hv_storvsc hv_netvsc" ;;
            gcp) echo "virtio_scsi virtio_net nvme gve" ;; esac)
        check "$n: dracut drop-in adds the $cloud drivers" grep -Fxq "add_drivers+=\" $want \"" \
            <(after_of /etc/dracut.conf.d/90-xmigrate.conf)
        check "$n: grub command line keeps RHEL's arguments, loses tty0" grep -Fxq \
            "GRUB_CMDLINE_LINUX=\"crashkernel=auto resume=/dev/mapper/vg0-swap rd.lvm.lv=vg0/root rd.lvm.lv=vg0/swap rhgb quiet $(
                case $cloud in aws) echo "console=ttyS0" ;; azure) echo "console=ttyS0 earlyprintk=ttyS0 rootdelay=300" ;;
                gcp) echo "console=ttyS0,38400n8" ;; esac) net.ifnames=0 biosdevname=0\"" <(after_of /etc/default/grub)
        ;;
    esac
    case $name in
    rhel8 | centos7)
        check "$n: ifcfg-eth0 by DHCP" grep -Fxq 'BOOTPROTO=dhcp' \
            <(after_of /etc/sysconfig/network-scripts/ifcfg-eth0)
        check "$n: the source's ifcfg kept" jq -e \
            '.changed | index("/etc/sysconfig/network-scripts/ifcfg-ens3") | not' "$work/$n.json"
        ;;
    rocky9)
        check "$n: keyfile for eth0 by DHCP" grep -Fxq 'method=auto' \
            <(after_of /etc/NetworkManager/system-connections/xmigrate-eth0.nmconnection)
        ;;
    esac
    tree_umount "$t"
done
finish
