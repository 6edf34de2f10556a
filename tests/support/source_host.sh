#!/usr/bin/env bash
# A source server for tests: a network namespace with its own sshd (key-only root
# login) on a veth pair, and optionally a disk image attached as a loop device. It
# shares the host's files and processes, so the agent copied there can read the loop
# device. Traffic stays on the veth inside this machine.
#
#   source_host.sh up N DIR [IMAGE]   make host xm-src<N> at 10.231.<N>.2 (host side .1);
#                                     keys and config in DIR; prints one JSON line
#   source_host.sh down N DIR         remove it (sshd, loop device, namespace)
set -euo pipefail
cmd=${1:?up|down}; n=${2:?index 1..250}; dir=${3:?state dir}
ns=xm-src$n; hveth=xm-h$n; sveth=xm-s$n
host_ip=10.231.$n.1; src_ip=10.231.$n.2

down() {
    if [ -f "$dir/sshd.pid" ]; then kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true; fi
    if [ -f "$dir/loop" ]; then losetup -d "$(cat "$dir/loop")" 2>/dev/null || true; fi
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$hveth" 2>/dev/null || true
}

if [ "$cmd" = down ]; then down; exit 0; fi
[ "$cmd" = up ] || { echo "usage: $0 up|down N DIR [IMAGE]" >&2; exit 2; }
down
mkdir -p "$dir" /run/sshd
chmod 700 "$dir"
ssh-keygen -q -t ed25519 -N '' -f "$dir/id" <<<y >/dev/null 2>&1 || true
ssh-keygen -q -t ed25519 -N '' -f "$dir/hostkey" <<<y >/dev/null 2>&1 || true
cp "$dir/id.pub" "$dir/authorized_keys"
cat >"$dir/sshd_config" <<CFG
ListenAddress $src_ip
Port 22
HostKey $dir/hostkey
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
CFG
ip netns add "$ns"
ip link add "$hveth" type veth peer name "$sveth"
ip link set "$sveth" netns "$ns"
ip addr add "$host_ip/24" dev "$hveth"
ip link set "$hveth" up
ip netns exec "$ns" ip addr add "$src_ip/24" dev "$sveth"
ip netns exec "$ns" ip link set "$sveth" up
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
device=""
if [ -n "${4:-}" ]; then
    device=$(losetup -f --show "$4")
    echo "$device" >"$dir/loop"
fi
# Wait until sshd answers (no fixed sleep).
for _ in $(seq 1 200); do
    if ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/$src_ip/22" 2>/dev/null; then break; fi
    sleep 0.05
done
printf '{"name":"%s","address":"%s","host_address":"%s","user":"root","key":"%s","device":"%s"}\n' \
    "$ns" "$src_ip" "$host_ip" "$dir/id" "$device"
