#!/usr/bin/env python3
"""The demo (the README's first command runs it through scripts/demo.sh): one source
server migrated to an emulated cloud, driven the way an operator drives xmigrate, with
xmctl, and verified byte for byte at the end.

    demo.py --build BUILD_DIR [--cloud aws] [--keep]

It starts Redis, the emulated cloud, xm-api and one of each worker on local addresses
(tests/e2e/rig.py), makes a source server (a network namespace with sshd, a Debian 12
root tree, a loop disk with a real ext4 filesystem and files), then:
  xmctl credentials add, xmctl migrate create -f migration.yaml, xmctl status (the
  pre-flight findings), xmctl approve --override ..., xmctl watch,
prints the VM the cloud now runs and compares the cloud's image of the disk with the
source disk, and takes everything down again (--keep leaves the logs).
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402

MIB = 1 << 20


def say(text):
    print("\n\033[1m==> %s\033[0m" % text if sys.stdout.isatty() else "\n==> %s" % text,
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--cloud", default="aws", choices=["aws", "azure", "gcp"])
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the demo needs root: network namespaces, loop devices and mounts")
    build = os.path.abspath(args.build)
    xmctl_bin = os.path.join(build, "cli", "xmctl")
    work = tempfile.mkdtemp(prefix="xm-demo-")
    ok = False
    try:
        say("preparing a Debian 12 root tree for the source server (cached after the first run)")
        tree = rig.root_tree()
        say("starting a source server: namespace, sshd, a 96 MiB disk with ext4 and files")
        src = rig.Source(230 + os.getpid() % 20, work, tree, [96 * MIB + 77 * 512])
        src.up()
        print("source %s at %s, disk %s" % (src.name, src.address, src.loops[0]))
        say("starting Redis, the emulated %s cloud, xm-api and the workers" % args.cloud)
        r = rig.Rig(build, work, args.cloud, converters=2, api_ip=src.host_ip)
        r.start()
        env = dict(os.environ, XMCTL_API="http://%s:%d" % (r.api_ip, r.api_port),
                   XMCTL_TOKEN=r.token, XDG_CONFIG_HOME=work)

        def xmctl(*argv, stdin=None, check=True, capture=False):
            print("$ xmctl " + " ".join(argv), flush=True)
            p = subprocess.run([xmctl_bin] + list(argv), env=env, input=stdin, text=True,
                               capture_output=capture)
            if capture and p.stdout:
                print(p.stdout, end="")
            if check and p.returncode != 0:
                raise SystemExit("xmctl %s failed (exit %d)%s" % (
                    argv[0], p.returncode, ": " + p.stderr if capture else ""))
            return p

        say("storing the credentials (secrets from stdin, never on a command line)")
        xmctl("credentials", "add", "--name", "demo-cloud", "--kind", args.cloud,
              "--secret-file", "-", stdin=json.dumps(r.cloud_rig.secret()))
        xmctl("credentials", "add", "--name", "demo-ssh", "--kind", "ssh", "--secret-file", "-",
              stdin=json.dumps({"user": "root", "private_key": src.private_key()}))

        say("creating the migration from migration.yaml")
        spec = os.path.join(work, "migration.yaml")
        with open(spec, "w") as f:
            f.write("""name: demo
cloud: %s
region: %s
credential: demo-cloud
auto_approve: true
hosts:
  - name: %s
    address: %s
    credential: demo-ssh
blueprint:
  network: {name: demo, cidr: 10.60.0.0/16, subnets: [{name: app, cidr: 10.60.1.0/24}]}
  hosts:
    - host: %s
      machine_type: %s
      subnet: app
      disks: [{device: %s}]
  firewall: [{protocol: tcp, port: 22, source: 10.0.0.0/8}]
""" % (args.cloud, r.region, src.name, src.address, src.name, r.machine_type, src.loops[0]))
        print(open(spec).read())
        out = xmctl("--json", "migrate", "create", "-f", spec, capture=True)
        mig = json.loads(out.stdout)["id"]

        say("discovery runs Ansible against the source; pre-flight checks what it found")
        m = r.wait_status(mig, ("awaiting_approval",) + rig.FINAL, 600)
        xmctl("status", mig)
        if m["status"] != "awaiting_approval":
            raise SystemExit("the migration did not stop for approval: %s" % m["status"])
        blockers = sorted(b["name"] for b in r.blockers(m))
        say("approving, overriding the blockers that come from this demo's source (it runs "
            "this machine's kernel)")
        argv = ["approve", mig]
        for b in blockers:
            argv += ["--override", b]
        xmctl(*argv)

        say("network, prep, clone, convert and import: xmctl watch follows it")
        w = xmctl("watch", mig, check=False)
        m = r.migration(mig)
        if m["status"] != "done":
            xmctl("status", mig, check=False)
            raise SystemExit("migration ended %s (xmctl watch exit %d)" % (m["status"],
                                                                          w.returncode))

        say("the VM the cloud now runs")
        for vm in r.vms(mig):
            print("%s  %s  subnet %s  private %s  host %s" % (
                vm["id"], vm["type"], vm["subnet"], vm.get("address"), vm["host"]))

        say("verifying: the cloud's copy of the disk against the source, byte for byte")
        disk = os.path.basename(src.loops[0])
        d = r.r.hgetall("xm:disk:%s:%s:%s" % (mig, src.name, disk))
        size = src.disk_sizes[0]
        got = r.disk_image(d["image"], size)
        want = src.disk_bytes(0)
        print("source %s        %d bytes  sha256 %s" % (src.loops[0], size,
                                                         hashlib.sha256(want).hexdigest()))
        print("cloud  %s  %d bytes  sha256 %s" % (d["image"], len(got),
                                                   hashlib.sha256(got).hexdigest()))
        if got != want:
            raise SystemExit("MISMATCH: the cloud's image differs from the source disk")
        print("identical: the migration is verified")
        ok = True
    finally:
        say("cleaning up everything the demo started")
        rig._cleanup()
        if args.keep or not ok:
            print("logs kept in %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
