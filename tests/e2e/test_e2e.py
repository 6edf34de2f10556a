#!/usr/bin/env python3
"""End to end: migrations run as an operator runs them, start to finish (tests/e2e/rig.py
says what runs). Per cloud: two source servers with two disks each, auto-approved, stop
at approval for their blockers, go on once those are overridden, and reach `done`; each
VM exists once with the blueprint's subnet and machine type; each image read back from
the cloud (EBS snapshot, VHD page blob, composed tar.gz) equals its source disk byte for
byte; then the rollback deletes what the migration made.

    test_e2e.py --build BUILD_DIR [--cloud aws|azure|gcp] [--sources N] [--disks N]
                [--cutover] [--chaos FAULT] [--unreachable] [unittest args]

--cutover: the migration asks for a manual cutover and max_cloning 1: the hosts copy one
  at a time (their clone jobs never overlap; the waiting one is put back, not failed),
  wait in awaiting_cutover, the sources' disks change ("the applications' last writes"),
  POST .../cutover runs the final pass, and the images equal the disks as changed.
--chaos FAULT: the same migration through one fault, and it must end the same way with
  nothing created twice: converter (SIGKILLed while it holds a shard), clone-worker
  (SIGKILLed while its agent copies), redis (restarted mid-copy), cloud-faults (every
  call to the cloud, the agents' uploads included, through tests/fakes/faultproxy.py
  answering 20% of them with 503, 429 or a dropped connection), agent (the agent
  SIGKILLed mid-copy on the source server).
--unreachable: one more host nobody answers at: it fails alone, the others reach done,
  and the migration ends partially_failed.

Needs root (see rig.py). Keeps its work directory when XM_KEEP_TEST_DIRS is set.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
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
        cls.sources = [rig.Source(base + i, cls.work, tree, list(SIZES[i][:ARGS.disks]))
                       for i in range(ARGS.sources)]
        for s in cls.sources:
            s.up()
        cls.rig = rig.Rig(ARGS.build, cls.work, ARGS.cloud, converters=2,
                          api_ip=cls.sources[0].host_ip,
                          cloud_faults=CLOUD_FAULTS if ARGS.chaos == "cloud-faults" else None)
        cls.rig.start()

    @classmethod
    def tearDownClass(cls):
        r = getattr(cls, "rig", None)
        if r:
            r.stop()
        for s in getattr(cls, "sources", []):
            s.down()
        if os.environ.get("XM_KEEP_TEST_DIRS") or getattr(cls, "failed", False):
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
        hosts = [(h["name"], h.get("phase"), h.get("status"), h.get("error", ""))
                 for h in m.get("hosts", [])]
        dead = self.rig.r.xrange("xm:dead")
        return "migration %s: %s\nhosts: %s\ndead jobs: %s\nlogs in %s" % (
            mig, m["status"], hosts, dead[-5:], self.work)


# 20% of the cloud calls answered by the proxy, a third each: 503, 429 (each rule sees
# what the ones before let through), a connection dropped without a reply.
CLOUD_FAULTS = [
    {"probability": 0.0667, "status": 503, "body": "injected"},
    {"probability": 0.0714, "status": 429, "headers": {"Retry-After": "0"}, "body": "injected"},
    {"probability": 0.0769, "reset": True},
]


class EndToEnd(Rigged):
    def agents(self):
        """Pids of xm-agent processes on our source servers (their namespaces only: other
        tests' agents run beside ours)."""
        pids = []
        for s in self.sources:
            out = subprocess.run(["ip", "netns", "pids", s.ns], capture_output=True,
                                 text=True).stdout.split()
            for pid in out:
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        argv0 = f.read().split(b"\0")[0]
                except OSError:
                    continue
                if argv0.endswith(b"/xm-agent"):
                    pids.append(int(pid))
        return pids

    def fault(self):
        """--chaos: inject ARGS.chaos while the migration runs."""
        r = self.rig
        if ARGS.chaos == "clone-worker":
            # SIGKILLed while its playbook copies: the agent goes on, orphaned; another
            # worker takes the job over and the agent's rerun finds the copy complete.
            victim = xmtest.wait_for(lambda: r.holder("clone"), 900, "a clone job in hand",
                                     interval=0.05)
            xmtest.wait_for(lambda: self.logged(victim, "TASK [Copy each disk]"), 300,
                            "the clone playbook to reach the copy", interval=0.05)
            r.kill_worker(victim)
            r.spawn_worker(victim + "b", "clone")
        elif ARGS.chaos == "redis":
            xmtest.wait_for(self.agents, 900, "an agent copying", interval=0.05)
            r.restart_redis()
        elif ARGS.chaos == "converter":
            victim = xmtest.wait_for(lambda: r.holder("convert", step="shard"), 900,
                                     "a shard in hand", interval=0.02)
            r.kill_worker(victim)
            r.spawn_worker(victim + "b", "convert")
        elif ARGS.chaos == "agent":
            pids = xmtest.wait_for(self.agents, 900, "an agent copying", interval=0.02)
            os.kill(pids[0], signal.SIGKILL)

    def check_chaos(self, mig):
        """The fault really happened, and was got over."""
        r = self.rig
        if ARGS.chaos in ("clone-worker", "converter"):
            phase = "clone" if ARGS.chaos == "clone-worker" else "convert"
            self.assertTrue(self.logged(phase, "job taken over"), phase)
        elif ARGS.chaos == "agent":
            self.assertTrue(self.logged("clone", "was killed by signal 9 mid-copy"),
                            "the clone worker never saw its agent killed")
        elif ARGS.chaos == "cloud-faults":
            st = r.proxy_stats()
            share = st["injected"] / max(1, st["requests"])
            self.assertGreater(st["requests"], 200, st)
            self.assertTrue(0.12 < share < 0.28, "%.1f%% of cloud calls failed: %s" %
                            (100 * share, st))
            print("cloud fault proxy: %s (%.1f%% injected)" % (st, 100 * share),
                  file=sys.stderr)

    def cutover(self, mig):
        """--cutover: hosts copied one at a time, waiting in awaiting_cutover; the disks
        change; the final pass is asked for."""
        r = self.rig
        hosts = [s.name for s in self.sources]

        def awaiting():
            m = r.migration(mig)
            if m["status"] in rig.FINAL:
                raise AssertionError("migration ended before cutover: %s" % self.explain(mig))
            st = {h["name"]: h["status"] for h in m["hosts"]}
            return all(st.get(h) == "awaiting_cutover" for h in hosts)
        xmtest.wait_for(awaiting, 1500, "every host awaiting cutover", interval=1.0)
        # max_cloning 1: the clone jobs never overlapped, and the one that had to wait
        # was put back (job.waiting), not failed.
        spans, waited = [], set()
        for _, e in r.r.xrange("xm:events"):
            if e.get("migration") != mig or e.get("phase") != "clone":
                continue
            if e["type"] == "job.done":
                spans.append((int(e["picked"]), int(e["ts"]), e["host"]))
            elif e["type"] == "job.waiting":
                waited.add(e["host"])
                self.assertIn("waiting for a clone slot", e.get("msg", ""))
        spans.sort()
        self.assertEqual(len(spans), len(hosts), spans)
        for a, b in zip(spans, spans[1:]):
            self.assertLessEqual(a[1], b[0], "two hosts cloned at once: %s" % spans)
        if len(hosts) > 1:
            self.assertTrue(waited, "no host waited for a clone slot")
        self.assertEqual(r.call("GET", "/v1/migrations/" + mig)["status"], "migrating")
        # The applications' last writes before they stop: 1 MiB at 3 MiB into each disk.
        for s in self.sources:
            for d in range(len(s.loops)):
                with open(s.loops[d], "r+b") as f:
                    f.seek(3 << 20)
                    f.write(os.urandom(1 << 20))
                    f.flush()
                    os.fsync(f.fileno())
        out = r.call("POST", "/v1/migrations/%s/cutover" % mig)
        self.assertEqual(sorted(h["host"] for h in out["hosts"]), sorted(hosts))

    def test_migration(self):
        try:
            self.migration()
        except BaseException:
            type(self).failed = True  # keep the work directory: its logs say why
            self.print_warnings()
            raise

    def print_warnings(self, limit=40):
        """The workers' warnings and errors, for a CI log that outlives the machine."""
        for name in sorted(os.listdir(self.work)):
            if not name.endswith(".log"):
                continue
            with open(os.path.join(self.work, name), errors="replace") as f:
                bad = [line.rstrip()[:400] for line in f
                       if "level=warn" in line or "level=error" in line]
            for line in bad[-limit:]:
                print("%s: %s" % (name, line), file=sys.stderr)

    def migration(self):
        r = self.rig
        unreachable = [{"name": "gone", "address": "127.0.0.1", "port": 9}] \
            if ARGS.unreachable else []
        options = {"cutover": "manual", "max_cloning": 1} if ARGS.cutover else {}
        bp = blueprint(self.sources, r.machine_type)
        bp["hosts"] += [{"host": h["name"], "machine_type": r.machine_type, "subnet": "app"}
                        for h in unreachable]
        mig = r.migrate(self.sources, blueprint=bp, extra_hosts=unreachable, **options)
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
            self.fault()
        if ARGS.cutover:
            self.cutover(mig)
        m = r.wait_final(mig, 1500)
        want = "partially_failed" if ARGS.unreachable else "done"
        self.assertEqual(m["status"], want, self.explain(mig))
        if ARGS.chaos:
            self.check_chaos(mig)
        if ARGS.unreachable:
            gone = next(h for h in m["hosts"] if h["name"] == "gone")
            self.assertEqual(gone["status"], "failed", gone)
            self.assertIn("unreachable", gone.get("error", "") + gone.get("discovery", ""),
                          gone)

        network = r.r.hgetall("xm:mig:%s" % mig).get("network")
        self.assertTrue(network, "the network phase recorded no ids")
        subnets = json.loads(network)["subnets"]
        vms = r.vms(mig)
        self.assertEqual(len(vms), len(self.sources), "one VM per host, none twice: %s" % vms)
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

        # Rollback: every VM, image, disk and the network the migration made are deleted,
        # and what it stored (chunks, manifests, image files).
        self.assertGreater(r.stored(mig), 0, "no stored chunk found before the rollback")
        dead = r.r("XLEN", "xm:dead")
        r.call("POST", "/v1/migrations/%s/rollback" % mig)
        xmtest.wait_for(lambda: r.migration(mig)["status"] == "rolled_back" or
                        r.r("XLEN", "xm:dead") > dead, 600, "the rollback", interval=1.0)
        self.assertEqual(r.migration(mig)["status"], "rolled_back", self.explain(mig))
        self.assertEqual(r.vms(mig), [], "VMs left after the rollback")
        self.assertEqual(r.stored(mig), 0, "stored objects left after the rollback")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--cloud", default="aws", choices=["aws", "azure", "gcp"])
    ap.add_argument("--sources", type=int, default=2, choices=[1, 2])
    ap.add_argument("--disks", type=int, default=2, choices=[1, 2])
    ap.add_argument("--chaos", choices=["converter", "clone-worker", "redis", "cloud-faults",
                                        "agent"], help="one fault during the migration")
    ap.add_argument("--cutover", action="store_true",
                    help="manual cutover and max_cloning 1 (EndToEnd.cutover)")
    ap.add_argument("--unreachable", action="store_true",
                    help="one more host that nobody answers at: partially_failed")
    ARGS, rest = ap.parse_known_args()
    ARGS.build = os.path.abspath(ARGS.build)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
