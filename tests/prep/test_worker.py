#!/usr/bin/env python3
"""xm-prep end to end, as it runs in production but on one machine:

  POST .../hosts/web1/phases/prep?dry_run=true (xm-api) -> a prep job in Redis
  -> xm-prep -> ansible-playbook playbooks/prep.yml over SSH
  -> a source server: an sshd in a network namespace whose sessions are chrooted into
     an overlay of the Debian 12 tree (tests/prep/build-trees.sh), so Ansible finds a
     real Debian host there
  -> the report in xm:prep:<id>:web1 -> GET .../hosts/web1/prep

Checked: the dry run returns the check-mode diff and changes no file and hands nothing
off; the real run changes the files, records them, puts its findings into the host's
findings and hands off to clone; no secret reaches the worker's log. Needs root; exits
77 (skipped) without it or without the tools. Standard library only.

    test_worker.py --api BIN --prep BIN --source-root DIR
"""
import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import unittest

ARGS = None
NET = 150 + os.getpid() % 50  # 10.231.<NET>.0/24, this run's own namespace


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class PrepWorkerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        root = ARGS.source_root
        # Undone even when setUpClass fails half way (tearDownClass would not run).
        cls.addClassCleanup(cls.cleanup)
        cls.here = os.path.join(root, "tests", "prep")
        cls.work = tempfile.mkdtemp(prefix="xm-prep-worker-")
        cache = os.environ.get("XM_PREP_TREE_CACHE", "/var/cache/xmigrate-test")
        subprocess.run([os.path.join(cls.here, "build-trees.sh"), cache, "bookworm"],
                       check=True)
        # sshd's ChrootDirectory wants every component of the path root-owned and not
        # writable by others, so the tree is mounted under /run, not /tmp.
        cls.run_dir = "/run/xm-prep-worker-%d" % os.getpid()
        cls.tree = os.path.join(cls.run_dir, "m")
        for d in ("up", "work", "m"):
            os.makedirs(os.path.join(cls.run_dir, d), mode=0o755)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        "lowerdir=%s/bookworm,upperdir=%s/up,workdir=%s/work" %
                        (cache, cls.run_dir, cls.run_dir), cls.tree], check=True)
        subprocess.run(["cp", "-a", os.path.join(cls.here, "fixtures", "debian") + "/.",
                        cls.tree + "/"], check=True)

        cls.nsdir = os.path.join(cls.work, "src")
        out = subprocess.run([os.path.join(root, "tests", "support", "source_host.sh"), "up",
                              str(NET), cls.nsdir], check=True, capture_output=True,
                             text=True).stdout
        cls.src = json.loads(out.strip().splitlines()[-1])
        # A second sshd in the source's namespace whose sessions run inside the tree.
        cfg = os.path.join(cls.nsdir, "sshd_chroot_config")
        with open(os.path.join(cls.nsdir, "sshd_config")) as f:
            base = f.read()
        with open(cfg, "w") as f:
            f.write(base.replace("Port 22", "Port 2222")
                        .replace("PidFile %s/sshd.pid" % cls.nsdir,
                                 "PidFile %s/sshd2.pid" % cls.nsdir)
                    + "ChrootDirectory %s\n" % cls.tree)
        subprocess.run(["ip", "netns", "exec", cls.src["name"], "/usr/sbin/sshd", "-f", cfg,
                        "-E", os.path.join(cls.nsdir, "sshd2.log")], check=True)
        xmtest.wait_for(lambda: subprocess.run(
            ["ip", "netns", "exec", cls.src["name"], "bash", "-c",
             "exec 3<>/dev/tcp/%s/2222" % cls.src["address"]],
            capture_output=True).returncode == 0, 10, "the chrooted sshd")

        cls.redis = xmtest.RedisServer(cls.work)
        cls.redis.start()
        cls.r = xmtest.Redis(cls.redis.port)
        cls.api_port = xmtest.free_port()
        cls.env = xmtest.clean_env({
            "XM_REDIS_PORT": str(cls.redis.port), "XM_MASTER_KEY": secrets.token_hex(32),
            "XM_API_PORT": str(cls.api_port),
            "XM_SCHEMAS_DIR": os.path.join(root, "schemas"),
            "XM_PLAYBOOKS_DIR": os.path.join(root, "playbooks"), "XM_LOG_LEVEL": "debug",
            "XM_CONSUMER": "prep1", "XM_BLOCK_MS": "100", "XM_MAX_ATTEMPTS": "1",
            "XM_VISIBILITY_TIMEOUT_MS": "600000",
        })
        token = subprocess.run([ARGS.api, "token", "create", "ops"], env=cls.env, check=True,
                               capture_output=True, text=True).stdout.strip()
        cls.api = xmtest.Process([ARGS.api], cls.env, os.path.join(cls.work, "api.log"))
        cls.http = xmtest.Client(cls.api_port, token)
        xmtest.wait_for(lambda: cls._healthy(), 15, "xm-api")
        cls.prep_log = os.path.join(cls.work, "prep.log")
        cls.prep = xmtest.Process([ARGS.prep], cls.env, cls.prep_log)

        with open(cls.src["key"]) as f:
            cls.key = f.read()
        aws = cls.http.post("/v1/credentials", {
            "name": "aws", "kind": "aws", "secret": {
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}})
        ssh = cls.http.post("/v1/credentials", {
            "name": "root", "kind": "ssh", "secret": {"user": "root", "private_key": cls.key}})
        assert aws.status == 201 and ssh.status == 201, (aws, ssh)
        m = cls.http.post("/v1/migrations", {
            "name": "prep-test", "cloud": "aws", "region": "eu-west-1",
            "credential": aws.json["id"],
            "hosts": [{"name": "web1", "address": cls.src["address"], "port": 2222,
                       "credential": ssh.json["id"]}]})
        assert m.status == 201, m
        cls.mig = m.json["id"]
        # Discovery has run (no discovery worker here): the host is settled.
        cls.r("HSET", "xm:host:%s:web1" % cls.mig, "status", "done", "phase", "discovery",
              "findings", json.dumps([{"name": "web1/os", "rule": "os", "severity": "warning",
                                       "message": "kept: another phase's finding"}]))

    @classmethod
    def _healthy(cls):
        try:
            return xmtest.Client(cls.api_port).get("/healthz").status == 200
        except OSError:
            return False

    @classmethod
    def cleanup(cls):
        for p in ("prep", "api"):
            proc = getattr(cls, p, None)
            if proc:
                proc.stop()
        pid = os.path.join(getattr(cls, "nsdir", "/nonexistent"), "sshd2.pid")
        if os.path.exists(pid):
            with open(pid) as f:
                try:
                    os.kill(int(f.read().strip()), 15)
                except (OSError, ValueError):
                    pass
        if getattr(cls, "nsdir", None):
            subprocess.run([os.path.join(ARGS.source_root, "tests", "support",
                                         "source_host.sh"), "down", str(NET), cls.nsdir],
                           check=False)
        if getattr(cls, "tree", None):
            subprocess.run(["umount", cls.tree], check=False)
            shutil.rmtree(cls.run_dir, ignore_errors=True)
        if getattr(cls, "redis", None):
            cls.redis.stop()
        if getattr(cls, "work", None) and not os.environ.get("XM_KEEP_TEST_DIRS"):
            shutil.rmtree(cls.work, ignore_errors=True)

    def run_prep(self, dry):
        path = "/v1/migrations/%s/hosts/web1/phases/prep%s" % (self.mig,
                                                              "?dry_run=true" if dry else "")
        r = self.http.post(path)
        self.assertEqual(r.status, 202, r)
        job = r.json["job"]

        def finished():
            g = self.http.get("/v1/migrations/%s/hosts/web1/prep" % self.mig)
            return g.status == 200 and g.json["job"] == job

        def failed():
            return self.r.hgetall("xm:host:%s:web1" % self.mig).get("status") == "failed"

        xmtest.wait_for(lambda: finished() or failed(), 600, "prep job %s" % job)
        self.assertFalse(failed(), self.r.hgetall("xm:host:%s:web1" % self.mig).get("error"))
        return self.http.get("/v1/migrations/%s/hosts/web1/prep" % self.mig).json

    def test_1_dry_run_returns_the_diff_and_changes_nothing(self):
        fixture = os.path.join(self.here, "fixtures", "debian")
        before = {p: sha(os.path.join(self.tree, p)) for p in
                  ("etc/fstab", "etc/default/grub", "etc/network/interfaces",
                   "etc/initramfs-tools/modules")}
        got = self.run_prep(dry=True)
        self.assertTrue(got["dry_run"])
        for p in ("/etc/fstab", "/etc/default/grub", "/etc/network/interfaces",
                  "/etc/initramfs-tools/modules", "/etc/udev/rules.d/70-persistent-net.rules"):
            self.assertIn(p, got["changed"])
        grub = [d for d in got["diffs"] if d["path"] == "/etc/default/grub"]
        self.assertEqual(len(grub), 1, got["diffs"])
        after = "".join(x.get("after", "") for x in grub[0]["diff"] if isinstance(x, dict))
        self.assertIn("console=ttyS0", after)
        for p, h in before.items():
            self.assertEqual(sha(os.path.join(self.tree, p)), h, p + " changed in a dry run")
        self.assertTrue(os.path.exists(os.path.join(
            self.tree, "etc/udev/rules.d/70-persistent-net.rules")))
        self.assertEqual(sha(os.path.join(self.tree, "etc/fstab")),
                         sha(os.path.join(fixture, "etc/fstab")))
        self.assertFalse(os.path.exists(os.path.join(self.tree, "var/lib/xmigrate/backup",
                                                     self.mig)))
        self.assertEqual(self.r("XLEN", "xm:q:clone"), 0, "a dry run hands nothing off")

    def test_2_real_run_changes_records_and_hands_off(self):
        got = self.run_prep(dry=False)
        self.assertFalse(got["dry_run"])
        self.assertEqual(got["diffs"], [])
        self.assertIn("/etc/default/grub", got["changed"])
        with open(os.path.join(self.tree, "etc/default/grub")) as f:
            grub = f.read()
        self.assertIn('GRUB_CMDLINE_LINUX="console=ttyS0 net.ifnames=0 biosdevname=0"\n', grub)
        self.assertFalse(os.path.exists(os.path.join(
            self.tree, "etc/udev/rules.d/70-persistent-net.rules")))
        manifest = os.path.join(self.tree, "var/lib/xmigrate/backup", self.mig, "manifest")
        with open(manifest) as f:
            self.assertIn("saved 0644 root root /etc/fstab\n", f.read())
        # The findings: discovery's kept, prep's added as warnings.
        findings = json.loads(self.r.hgetall("xm:host:%s:web1" % self.mig)["findings"])
        rules = [f["rule"] for f in findings]
        self.assertIn("os", rules)
        self.assertTrue(any(r.startswith("prep-") for r in rules), findings)
        self.assertTrue(all(f["severity"] == "warning" for f in findings
                            if f["rule"].startswith("prep-")))
        self.assertTrue(any(f["rule"] == "prep-agent" for f in got["findings"]), got)
        # Handed off: one clone job for web1, the host queued in clone.
        entries = self.r("XRANGE", "xm:q:clone", "-", "+")
        self.assertEqual(len(entries), 1, entries)
        host = self.r.hgetall("xm:host:%s:web1" % self.mig)
        self.assertEqual((host["phase"], host["status"]), ("clone", "queued"))

    def test_3_no_secret_in_the_log(self):
        with open(self.prep_log) as f:
            log = f.read()
        body = "".join(self.key.strip().splitlines()[1:-1])
        self.assertNotIn(body[:40], log)
        self.assertNotIn("BEGIN OPENSSH PRIVATE KEY", log)


def main():
    global ARGS, xmtest
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True)
    p.add_argument("--prep", required=True)
    p.add_argument("--source-root", required=True)
    ARGS, rest = p.parse_known_args()
    if os.geteuid() != 0:
        print("SKIP: the prep worker test needs root (namespaces, overlay, chroot)")
        sys.exit(77)
    for tool in ("ansible-playbook", "debootstrap", "redis-server", "sshd"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            print("SKIP: %s is not installed" % tool)
            sys.exit(77)
    sys.path.insert(0, os.path.join(ARGS.source_root, "tests", "integration", "api"))
    import xmtest as mod  # redis client, processes, wait_for
    xmtest = mod
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


xmtest = None
if __name__ == "__main__":
    main()
