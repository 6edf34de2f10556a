#!/usr/bin/env python3
"""The discovery phase end to end, as it runs in production but on one machine:

  POST /v1/migrations (three hosts) -> xm-api enqueues one discovery job per host ->
  xm-discovery runs ansible-playbook playbooks/discover.yml over SSH against two source
  servers (network namespaces with their own sshd) and a third address where nothing
  listens -> the playbook posts each host's facts to xm-api's callback -> xm-discovery
  normalises them, runs the pre-flight rules and, when the last host is done, suggests
  the blueprint and moves the migration to awaiting_approval.

Checks that the two reachable hosts' records say what the machine really has (kernel,
distribution, vCPUs, memory, disks, the namespace's own address, MAC and sshd), that
the third is unreachable with Ansible's reason and a blocker, that the migration went on
regardless, that approval is refused while blockers stand and accepted when they are
overridden by name, and that host names and addresses carrying shell or YAML
metacharacters are refused at the API and never reach an inventory.

Needs root (network namespaces), as CI has; exits 77 (ctest SKIP) without it.
Standard library only.

    test_discovery.py --api BIN --discovery BIN --source-root DIR [--keep]
"""
import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
import xmtest  # noqa: E402  (redis client, processes, HTTP client, wait_for)

ARGS = None
# 10.231.<NET>.0/24 and <NET+1>: this run's own namespaces (the clone test uses 200..249).
NET = 100 + (os.getpid() % 25) * 2
PROBE = os.path.join(tempfile.gettempdir(), "xm-discovery-metachar-%d" % os.getpid())


def sh(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def real_disks():
    """Disks as lsblk sees them: [(name, bytes)], the oracle for the host record."""
    out = json.loads(sh("lsblk", "-J", "-d", "-b", "-o", "NAME,TYPE,SIZE"))
    return sorted((d["name"], int(d["size"])) for d in out["blockdevices"]
                  if d["type"] == "disk" and int(d["size"]) > 0
                  and not d["name"].startswith(("zram", "ram")))


def os_release():
    rel = {}
    with open("/etc/os-release") as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                rel[k] = v.strip('"')
    return rel


class DiscoveryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="xm-discovery-")
        cls.srcs = []
        for i in (0, 1):
            d = os.path.join(cls.work, "src%d" % i)
            out = sh(os.path.join(ARGS.source_root, "tests", "support", "source_host.sh"),
                     "up", str(NET + i), d)
            cls.srcs.append((d, json.loads(out.strip().splitlines()[-1])))
        cls.redis = xmtest.RedisServer(cls.work)
        cls.redis.start()
        cls.r = xmtest.Redis(cls.redis.port)
        cls.api_port = xmtest.free_port()
        cls.env = xmtest.clean_env({
            "XM_REDIS_PORT": str(cls.redis.port), "XM_MASTER_KEY": secrets.token_hex(32),
            "XM_API_PORT": str(cls.api_port),
            "XM_API_URL": "http://127.0.0.1:%d" % cls.api_port,
            "XM_SCHEMAS_DIR": os.path.join(ARGS.source_root, "schemas"),
            "XM_PLAYBOOKS_DIR": os.path.join(ARGS.source_root, "playbooks"),
            "XM_CONSUMER": "discovery1", "XM_BLOCK_MS": "100", "XM_MAX_ATTEMPTS": "2",
            "XM_RETRY_BASE_MS": "100", "XM_VISIBILITY_TIMEOUT_MS": "600000",
            "XM_DISCOVERY_WAIT_S": "30", "XM_LOG_LEVEL": "debug",
        })
        token = subprocess.run([ARGS.api, "token", "create", "ops"], env=cls.env, check=True,
                               capture_output=True, text=True).stdout.strip()
        cls.api = xmtest.Process([ARGS.api], cls.env, os.path.join(cls.work, "api.log"))
        cls.client = xmtest.Client(cls.api_port, token)
        xmtest.wait_for(lambda: cls.client.get("/healthz").status == 200, 15, "xm-api")
        with open(cls.srcs[0][1]["key"]) as f:
            key0 = f.read()
        with open(cls.srcs[1][1]["key"]) as f:
            key1 = f.read()
        cls.ssh = [cls.cred("root0", "ssh", {"user": "root", "private_key": key0}),
                   cls.cred("root1", "ssh", {"user": "root", "private_key": key1})]
        cls.aws = cls.cred("aws", "aws", {"access_key_id": "AKIAXMIGRATETEST0001",
                                          "secret_access_key": "x" * 40})
        # A migration whose host address is changed in Redis behind the API's back before
        # any worker runs: the worker must refuse it too, before writing an inventory.
        cls.tampered = cls.create("tampered", [("bad1", "10.231.%d.9" % NET, 22, 0)])
        cls.r("HSET", "xm:host:%s:bad1" % cls.tampered, "address",
              "10.0.0.1;touch${IFS}%s" % PROBE)
        cls.worker = xmtest.Process([ARGS.discovery], cls.env,
                                    os.path.join(cls.work, "discovery.log"))

    @classmethod
    def cred(cls, name, kind, secret):
        r = cls.client.post("/v1/credentials", {"name": name, "kind": kind, "secret": secret})
        assert r.status == 201, r
        return r.json["id"]

    @classmethod
    def create(cls, name, hosts, **extra):
        body = {"name": name, "cloud": "aws", "region": "us-east-1", "credential": cls.aws,
                "hosts": [{"name": n, "address": a, "port": p, "credential": cls.ssh[k]}
                          for n, a, p, k in hosts]}
        body.update(extra)
        r = cls.client.post("/v1/migrations", body)
        assert r.status == 201, r
        return r.json["id"]

    @classmethod
    def tearDownClass(cls):
        for p in ("worker", "api"):
            proc = getattr(cls, p, None)
            if proc:
                proc.stop()
        if getattr(cls, "redis", None):
            cls.redis.stop()
        for i, (d, _) in enumerate(getattr(cls, "srcs", [])):
            subprocess.run([os.path.join(ARGS.source_root, "tests", "support",
                                         "source_host.sh"), "down", str(NET + i), d],
                           check=False)
        if os.path.exists(PROBE):
            os.unlink(PROBE)
        if not ARGS.keep:
            shutil.rmtree(cls.work, ignore_errors=True)
        else:
            print("kept", cls.work, file=sys.stderr)

    def settled(self, mig, timeout=240):
        def status():
            m = self.client.get("/v1/migrations/" + mig).json
            return m if m["status"] != "discovering" else None
        return xmtest.wait_for(status, timeout, "discovery of %s to finish" % mig, 0.5)

    def record(self, mig, host):
        return json.loads(self.r("GET", "xm:host:%s:%s:record" % (mig, host)))

    # ---- the real run

    def test_a_two_discovered_one_unreachable(self):
        dead_port = xmtest.free_port()
        src = [s for _, s in self.srcs]
        mig = self.create("discover", [("web1", src[0]["address"], 22, 0),
                                       ("web2", src[1]["address"], 22, 1),
                                       ("dead1", src[0]["host_address"], dead_port, 0)])
        t0 = time.monotonic()
        m = self.settled(mig)
        took = time.monotonic() - t0
        print("discovery of 3 hosts took %.1f s" % took, file=sys.stderr)
        self.assertEqual(m["status"], "awaiting_approval", m)
        hosts = {h["name"]: h for h in m["hosts"]}
        with open(os.path.join(self.work, "migration.json"), "w") as f:
            json.dump(m, f, indent=2)

        # Two discovered, their records saying what this machine really has.
        rel = os_release()
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
        disks = real_disks()
        for i, name in enumerate(("web1", "web2")):
            h = hosts[name]
            self.assertEqual((h["discovery"], h["status"], h["phase"]),
                             ("discovered", "done", "discovery"), h)
            rec = self.record(mig, name)
            self.assertEqual(rec["host"], name)
            self.assertEqual(rec["os"]["kernel"], os.uname().release)
            self.assertEqual(rec["os"]["arch"], os.uname().machine)
            self.assertEqual(rec["os"]["distribution"].lower(), rel["ID"].lower())
            self.assertEqual(rec["os"]["major"], rel["VERSION_ID"].split(".")[0])
            self.assertEqual(rec["vcpus"], os.cpu_count())
            self.assertEqual(rec["memory_mib"], mem_kib // 1024)
            self.assertEqual(rec["boot_mode"],
                             "uefi" if os.path.isdir("/sys/firmware/efi") else "bios")
            self.assertEqual([(d["name"], d["size"]) for d in rec["disks"]], disks)
            root = shutil.disk_usage("/")
            self.assertLess(abs(rec["free"]["root"] - root.free), 1 << 30, rec["free"])
            ns = "xm-src%d" % (NET + i)
            veth = "xm-s%d" % (NET + i)
            mac = sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/%s/address" % veth)
            nic = {n["name"]: n for n in rec["nics"]}[veth]
            self.assertEqual(nic["addresses"], [src[i]["address"] + "/24"])
            self.assertEqual(nic["mac"], mac.strip())
            self.assertEqual(nic["addressing"], "static")  # set with ip addr add
            self.assertIn({"port": 22, "address": src[i]["address"], "process": "sshd"},
                          rec["listening"])
            self.assertEqual(h["summary"]["kernel"], os.uname().release)
            names = {f["name"]: f for f in h["findings"]}
            self.assertEqual(names["%s/static_addressing" % name]["severity"], "warning")
            # workers/discovery/rules.c's table, as os-release names them
            major = rel["VERSION_ID"].split(".")[0]
            supported = ((rel["ID"] in ("rhel", "centos") and major in ("7", "8", "9"))
                         or (rel["ID"] in ("rocky", "almalinux") and major in ("8", "9"))
                         or (rel["ID"] == "ubuntu" and rel["VERSION_ID"] in (
                             "16.04", "18.04", "20.04", "22.04", "24.04"))
                         or (rel["ID"] == "debian" and major in ("11", "12")))
            self.assertEqual("%s/os_supported" % name in names, not supported, names)
            # The raw facts are kept for support.
            raw = json.loads(self.r("GET", "xm:facts:%s:%s" % (mig, name)))
            self.assertEqual(raw["ansible"]["kernel"], os.uname().release)

        # One unreachable, with Ansible's reason, as a blocker; the others went on.
        d = hosts["dead1"]
        self.assertEqual(d["discovery"], "unreachable", d)
        self.assertIn("port %d" % dead_port, d["discovery_error"])
        self.assertIn("Connection refused", d["discovery_error"])
        self.assertEqual(d["findings"][0]["name"], "dead1/discovered")
        self.assertEqual(d["findings"][0]["severity"], "blocker")
        self.assertIn("Connection refused", d["findings"][0]["message"])
        self.assertIsNone(self.r("GET", "xm:host:%s:dead1:record" % mig))
        self.assertGreaterEqual(m["blockers"], 1)

        # The suggested blueprint: one network over both subnets, every host placed, a
        # known machine type, sshd's port open inside the network.
        bp = self.client.get("/v1/migrations/%s/blueprint" % mig).json
        self.assertEqual(bp["network"]["cidr"], "10.231.%d.0/23" % NET)  # NET is even
        subnets = {s["cidr"]: s["name"] for s in bp["network"]["subnets"]}
        self.assertEqual(set(subnets), {"10.231.%d.0/24" % (NET + i) for i in (0, 1)})
        placed = {h["host"]: h for h in bp["hosts"]}
        self.assertEqual(set(placed), {"web1", "web2", "dead1"})
        self.assertEqual(placed["web1"]["subnet"], subnets["10.231.%d.0/24" % NET])
        self.assertEqual(placed["web2"]["subnet"], subnets["10.231.%d.0/24" % (NET + 1)])
        self.assertIn({"protocol": "tcp", "port": 22, "source": bp["network"]["cidr"],
                       "description": "sshd on web1, web2"}, bp["firewall"])
        with open(os.path.join(ARGS.source_root, "schemas", "machine_types.json")) as f:
            known = {t["name"] for t in json.load(f)["default"]["aws"]}
        self.assertTrue(all(h["machine_type"] in known for h in bp["hosts"]), bp)
        # The API accepts it back unchanged (its own validation agrees).
        self.assertEqual(self.client.put("/v1/migrations/%s/blueprint" % mig, bp).status, 200)

        # Approval: refused while blockers stand, naming them; a typo is not an override;
        # overriding every blocker by name lets it through.
        blockers = [f["name"] for h in m["hosts"] for f in h.get("findings", [])
                    if f["severity"] == "blocker"]
        path = "/v1/migrations/%s/approve" % mig
        r = self.client.post(path)
        self.assertEqual(r.status, 409, r)
        with open(os.path.join(self.work, "approve-refused.json"), "w") as f:
            json.dump({"blueprint": bp, "approve": r.json}, f, indent=2)
        for b in blockers:
            self.assertIn(b, r.json["error"]["message"])
        if len(blockers) > 1:  # overriding all but one is not enough
            r = self.client.post(path + "?override=" + ",".join(blockers[1:]))
            self.assertEqual(r.status, 409, r)
            self.assertIn(blockers[0], r.json["error"]["message"])
            self.assertNotIn(blockers[1], r.json["error"]["message"])
        r = self.client.post(path + "?override=web1/no_such_rule")
        self.assertEqual(r.status, 400, r)
        r = self.client.post(path + "?override=a;b")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.r("XLEN", "xm:q:network"), 0)
        # dead1's blocker by its name, web1's and web2's by rule name (every host).
        rules = sorted({b.split("/")[1] for b in blockers if not b.startswith("dead1/")})
        override = ",".join(["dead1/discovered"] + rules)
        r = self.client.post(path + "?override=" + override)
        self.assertEqual((r.status, r.json), (202, {"id": mig, "status": "approved"}), r)
        self.assertEqual(self.r("XLEN", "xm:q:network"), 1)
        m = self.client.get("/v1/migrations/" + mig).json
        self.assertEqual(m["overrides"], override.split(","))
        self.assertEqual(m["approved_by"], "ops")

    def test_b_tampered_address_never_reaches_an_inventory(self):
        m = self.settled(self.tampered)
        h = m["hosts"][0]
        self.assertEqual(h["discovery"], "failed", h)
        self.assertIn("strict pattern", h["discovery_error"])
        self.assertFalse(os.path.exists(PROBE))
        # ansible-playbook never ran for it (xm-discovery logs each of its lines).
        with open(os.path.join(self.work, "discovery.log")) as f:
            ran = [line for line in f if "host=bad1" in line and "msg=ansible" in line]
        self.assertEqual(ran, [])

    def test_c_metacharacters_refused_at_the_api(self):
        before = (self.r("XLEN", "xm:q:discovery"), self.r("ZCARD", "xm:migs"))
        bad = [("name", "web;reboot"), ("name", "web$(id)"), ("name", "a b"),
               ("name", "web\n- hosts: all"), ("name", "{{x}}"), ("name", "web:1"),
               ("address", "10.0.0.1;reboot"), ("address", "$(id).example.com"),
               ("address", "host name"), ("address", "a\nb"), ("address", "-oProxyCommand=x"),
               ("address", "x' y"), ("address", "h: {a: b}"), ("address", "`id`"),
               ("address", "a|b"), ("address", "*")]
        for field, value in bad:
            with self.subTest(field=field, value=value):
                host = {"name": "web1", "address": "10.0.0.1", "credential": self.ssh[0]}
                host[field] = value
                r = self.client.post("/v1/migrations", {
                    "name": "bad", "cloud": "aws", "region": "us-east-1",
                    "credential": self.aws, "hosts": [host]})
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.json["error"]["path"], "/hosts/0/" + field)
        self.assertEqual((self.r("XLEN", "xm:q:discovery"), self.r("ZCARD", "xm:migs")), before)

    def test_d_auto_approve_waits_for_a_blocker(self):
        # A host that cannot be reached is a blocker: auto_approve does not skip it.
        mig = self.create("auto", [("gone1", self.srcs[0][1]["host_address"],
                                    xmtest.free_port(), 0)], auto_approve=True)
        m = self.settled(mig)
        self.assertEqual(m["status"], "awaiting_approval", m)
        self.assertEqual(m["hosts"][0]["discovery"], "unreachable")
        self.assertNotIn("approved_by", m)


    def test_e_blueprint_validation(self):
        # Nothing listens on these ports: discovery finds both unreachable, quickly, and
        # no packet leaves this machine.
        mig = self.create("bp", [("h1", "127.0.0.1", xmtest.free_port(), 0),
                                 ("h2", "127.0.0.1", xmtest.free_port(), 0)])
        good = {"network": {"name": "n", "cidr": "10.8.0.0/16", "subnets": [
                    {"name": "a", "cidr": "10.8.1.0/24"}, {"name": "b", "cidr": "10.8.2.0/24"}]},
                "hosts": [{"host": "h1", "machine_type": "t3.medium", "subnet": "a"},
                          {"host": "h2", "machine_type": "m5.4xlarge", "subnet": "b"}]}
        path = "/v1/migrations/%s/blueprint" % mig
        self.assertEqual(self.client.put(path, good).status, 200)

        def changed(fn):
            bp = json.loads(json.dumps(good))
            fn(bp)
            return bp
        cases = [
            ("unknown type", lambda b: b["hosts"][1].update(machine_type="t9.huge"),
             "/hosts/1/machine_type"),
            ("another cloud's type", lambda b: b["hosts"][0].update(machine_type="e2-medium"),
             "/hosts/0/machine_type"),
            ("overlap", lambda b: b["network"]["subnets"][1].update(cidr="10.8.1.128/25"),
             "/network/subnets/1/cidr"),
            ("outside the network", lambda b: b["network"]["subnets"][0].update(
                cidr="10.9.1.0/24"), "/network/subnets/0/cidr"),
            ("a host not placed", lambda b: b["hosts"].pop(), "/hosts"),
        ]
        for what, fn, want in cases:
            with self.subTest(what):
                r = self.client.put(path, changed(fn))
                self.assertEqual((r.status, r.json["error"]["path"]), (400, want), r)
        self.assertEqual(self.client.get(path).json, good)  # unchanged by the refusals
        # Discovery ending does not replace the operator's blueprint with a suggestion.
        self.assertEqual(self.settled(mig)["status"], "awaiting_approval")
        self.assertEqual(self.client.get(path).json, good)
        # The same check on a blueprint given at creation (an Azure type on AWS).
        bad = changed(lambda b: b["hosts"][0].update(machine_type="Standard_B2s"))
        r = self.client.post("/v1/migrations", {
            "name": "bp2", "cloud": "aws", "region": "us-east-1", "credential": self.aws,
            "hosts": [{"name": "h1", "address": "10.0.0.1", "credential": self.ssh[0]},
                      {"name": "h2", "address": "10.0.0.2", "credential": self.ssh[0]}],
            "blueprint": bad})
        self.assertEqual((r.status, r.json["error"]["path"]),
                         (400, "/blueprint/hosts/0/machine_type"), r)
        self.assertIn("'Standard_B2s' is not among the aws machine types", r.json["error"]["message"])


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True)
    p.add_argument("--discovery", required=True)
    p.add_argument("--source-root", required=True)
    p.add_argument("--keep", action="store_true")
    ARGS, rest = p.parse_known_args()
    if os.geteuid() != 0:
        print("SKIP: the discovery test needs root (network namespaces with sshd); CI runs "
              "as root", file=sys.stderr)
        sys.exit(77)
    for tool in ("ansible-playbook", "ip", "/usr/sbin/sshd", "redis-server", "lsblk"):
        if not shutil.which(tool):
            print("SKIP: %s is not installed (scripts/install-deps.sh installs it)" % tool,
                  file=sys.stderr)
            sys.exit(77)
    ARGS.keep = ARGS.keep or bool(os.environ.get("XM_KEEP_TEST_DIRS"))
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
