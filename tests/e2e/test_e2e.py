#!/usr/bin/env python3
"""End to end: migrations run as an operator runs them, start to finish (tests/e2e/rig.py
says what runs). Per cloud: two source servers with two disks each, auto-approved, stop
at approval for their blockers, go on once those are overridden, and reach `done`; each
VM exists once with the blueprint's subnet and machine type; each image read back from
the cloud (EBS snapshot, VHD page blob, composed tar.gz) equals its source disk byte for
byte.

    test_e2e.py --build BUILD_DIR [--cloud aws|azure|gcp] [--chaos] [unittest args]

With --chaos the same migration runs through faults (EndToEnd.faults) and must end the
same way.

Needs root (see rig.py). Keeps its work directory when XM_KEEP_TEST_DIRS is set.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
from rig import xmtest  # noqa: E402

ARGS = None
MIB = 1 << 20
# Not whole chunks or shards, the last byte not zero (rig.make_disk).
SIZES = [(40 * MIB + 123 * 1024, 28 * MIB + 3 * 512), (36 * MIB + 7 * 512, 26 * MIB + 4096)]


def blueprint(sources, machine_type):
    return {
        "network": {"name": "e2e", "cidr": "10.50.0.0/16",
                    "subnets": [{"name": "app", "cidr": "10.50.1.0/24"},
                                {"name": "web", "cidr": "10.50.2.0/24", "public": True}]},
        "hosts": [{"host": s.name, "machine_type": machine_type,
                   "subnet": "web" if i == 0 else "app", "public_ip": i == 0,
                   "disks": [{"device": loop} for loop in s.loops]}
                  for i, s in enumerate(sources)],
        "firewall": [{"protocol": "tcp", "port": 22, "source": "10.0.0.0/8",
                      "description": "ssh from the office"}],
    }


class Rigged(unittest.TestCase):
    """Two source servers and the whole system for ARGS.cloud, per test class."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise AssertionError("the end-to-end test needs root (namespaces, loop devices, "
                                 "mounts); CI runs as root")
        cls.work = tempfile.mkdtemp(prefix="xm-e2e-")
        tree = rig.root_tree()
        base = 100 + os.getpid() % 50 * 2
        cls.sources = [rig.Source(base + i, cls.work, tree, list(SIZES[i])) for i in range(2)]
        for s in cls.sources:
            s.up()
        cls.rig = rig.Rig(ARGS.build, cls.work, ARGS.cloud, converters=2,
                          api_ip=cls.sources[0].host_ip)
        cls.rig.start()

    @classmethod
    def tearDownClass(cls):
        r = getattr(cls, "rig", None)
        if r:
            r.stop()
        for s in getattr(cls, "sources", []):
            s.down()
        if os.environ.get("XM_KEEP_TEST_DIRS"):
            print("work directory kept: %s" % cls.work, file=sys.stderr)
        else:
            shutil.rmtree(cls.work, ignore_errors=True)

    def logged(self, prefix, needle):
        """Whether a log of a process whose name starts with prefix has needle."""
        for name in os.listdir(self.work):
            if name.startswith(prefix) and name.endswith(".log"):
                with open(os.path.join(self.work, name), errors="replace") as f:
                    if needle in f.read():
                        return True
        return False

    def explain(self, mig):
        """What an operator would look at when a migration did not end well."""
        m = self.rig.migration(mig)
        dead = self.rig.r.xrange("xm:dead")
        return "migration %s\ndead jobs: %s\nlogs in %s" % (m, dead[-5:], self.work)


class EndToEnd(Rigged):
    def faults(self):
        """--chaos: during the migration, the clone worker SIGKILLed while it holds a
        host's clone job (its Ansible run and the agent go on, orphaned; another worker
        takes the job over and the agent's rerun finds the copy complete), Redis
        restarted, a converter SIGKILLed while it holds a shard (another takes it over).
        The migration must still end done with nothing created twice."""
        r = self.rig
        victim = xmtest.wait_for(lambda: r.holder("clone"), 900, "a clone job in hand",
                                 interval=0.05)
        # into its playbook: the agent is being copied or running
        xmtest.wait_for(lambda: self.logged(victim, "TASK [Copy each disk]"), 300,
                        "the clone playbook to reach the copy", interval=0.05)
        r.kill_worker(victim)
        r.spawn_worker(victim + "b", "clone")
        r.restart_redis()
        victim = xmtest.wait_for(lambda: r.holder("convert", step="shard"), 900,
                                 "a shard in hand", interval=0.02)
        r.kill_worker(victim)
        r.spawn_worker(victim + "b", "convert")

    def test_two_servers_two_disks_reach_done(self):
        r = self.rig
        mig = r.migrate(self.sources, blueprint=blueprint(self.sources, r.machine_type))
        # These sources run this machine's kernel in a Debian tree, so pre-flight finds
        # blockers (drivers missing from the kernel, ...): the migration stops at approval
        # with them shown, and goes on once the operator overrides each by name.
        m = r.wait_status(mig, ("awaiting_approval",) + rig.FINAL, 600)
        self.assertEqual(m["status"], "awaiting_approval", self.explain(mig))
        blockers = r.blockers(m)
        self.assertTrue(blockers, "pre-flight found no blocker: %s" % m)
        r.call("POST", "/v1/migrations/%s/approve" % mig, want=(409,))
        r.approve(mig, overrides=sorted(b["name"] for b in blockers))
        if ARGS.chaos:
            self.faults()
        m = r.wait_final(mig, 1500)
        self.assertEqual(m["status"], "done", self.explain(mig))
        if ARGS.chaos:  # the killed workers' jobs were taken over
            for phase in ("clone", "convert"):
                self.assertTrue(self.logged(phase, "job taken over"), phase)

        network = r.r.hgetall("xm:mig:%s" % mig).get("network")
        self.assertTrue(network, "the network phase recorded no ids")
        subnets = json.loads(network)["subnets"]
        vms = r.vms(mig)
        self.assertEqual(len(vms), 2, "one VM per host, none twice: %s" % vms)
        by_host = {}
        for vm in vms:
            by_host.setdefault(vm["host"], []).append(vm)
        for i, s in enumerate(self.sources):
            self.assertEqual(len(by_host.get(s.name, [])), 1, "host %s: %s" % (s.name, vms))
            vm = by_host[s.name][0]
            self.assertEqual(vm["type"], r.machine_type)
            want_subnet = subnets["web" if i == 0 else "app"]
            self.assertEqual(vm["subnet"], want_subnet.rstrip("/").rsplit("/", 1)[-1])
            for d, loop in enumerate(s.loops):
                name = os.path.basename(loop)
                disk = r.r.hgetall("xm:disk:%s:%s:%s" % (mig, s.name, name))
                self.assertTrue(disk.get("image"), "disk %s of %s: %s" % (name, s.name, disk))
                self.assertEqual(int(disk["bytes_converted"]), s.disk_sizes[d])
                got = r.disk_image(disk["image"], s.disk_sizes[d], source=loop)
                self.assertTrue(got == s.disk_bytes(d),
                                "the image of %s:%s differs from the source disk" %
                                (s.name, name))

        # Rollback: every VM, image, disk and the network the migration made are deleted.
        dead = r.r("XLEN", "xm:dead")
        r.call("POST", "/v1/migrations/%s/rollback" % mig)
        xmtest.wait_for(lambda: r.migration(mig)["status"] == "rolled_back" or
                        r.r("XLEN", "xm:dead") > dead, 600, "the rollback", interval=1.0)
        self.assertEqual(r.migration(mig)["status"], "rolled_back", self.explain(mig))
        self.assertEqual(r.vms(mig), [], "VMs left after the rollback")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--cloud", default="aws", choices=["aws", "azure", "gcp"])
    ap.add_argument("--chaos", action="store_true",
                    help="faults during the migration (EndToEnd.faults)")
    ARGS, rest = ap.parse_known_args()
    ARGS.build = os.path.abspath(ARGS.build)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
