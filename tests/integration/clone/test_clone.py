#!/usr/bin/env python3
"""The clone phase end to end, as it runs in production but on one machine:

  xm-clone (from a clone job in Redis) -> ansible-playbook playbooks/clone.yml over SSH
  -> a source server (network namespace with sshd, its disk a loop device holding a
  synthetic disk: MBR, an ext4 partition with files, zero and random regions)
  -> xm-agent there, asking xm-api for presigned URLs with the callback token
  -> chunks and manifest in S3 (moto_server)

Then the test reads the manifest and the chunks back from S3 and checks that they
reproduce the device byte for byte, that the agent and its token are gone from the
source, that progress reached the disk record and xm:events, and that a device that
cannot be read fails the host for good with the agent's message.

Needs root (network namespaces, loop devices), as CI has. Standard library only.

    test_clone.py --api BIN --clone BIN --agent BIN --source-root DIR
"""
import argparse
import hashlib
import http.client
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
import xmtest  # noqa: E402  (redis client, processes, wait_for)

ARGS = None
# 10.231.<NET>.0/24: this run's own network namespace (two runs at once get different
# ones unless their pids collide modulo 50).
NET = 200 + os.getpid() % 50
CHUNK = 16 << 20


def make_disk(path):
    """A disk image of 56 MiB + 123 KiB (not a whole number of 16 MiB chunks): an MBR
    with one partition holding ext4 with files (chunk 0), random data (chunk 1), a chunk
    of zeros (chunk 2) and a last byte that is not zero (chunk 3)."""
    size = (56 << 20) + 123 * 1024
    with open(path, "wb") as f:
        f.truncate(size)
    work = os.path.dirname(path)
    files = os.path.join(work, "fs")
    os.makedirs(os.path.join(files, "etc"), exist_ok=True)
    with open(os.path.join(files, "etc", "hostname"), "w") as f:
        f.write("web1\n")
    with open(os.path.join(files, "log.txt"), "w") as f:
        for i in range(20000):
            f.write("line %d of a log file that compresses well\n" % i)
    fs = os.path.join(work, "fs.img")
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", files, fs, "12M"], check=True)
    part_lba, part_sectors = 2048, (12 << 20) // 512
    with open(path, "r+b") as f:
        # MBR: one Linux partition (type 0x83) at sector 2048
        entry = struct.pack("<BBBBBBBBII", 0x80, 0, 0, 0, 0x83, 0, 0, 0, part_lba,
                            part_sectors)
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")
        with open(fs, "rb") as src:
            f.seek(part_lba * 512)
            f.write(src.read())
        f.seek(20 << 20)
        f.write(os.urandom(4 << 20))
        f.seek(size - 1)
        f.write(b"\x01")
    return size


class Http:
    """Tiny JSON client for xm-api on the test network's host address."""

    def __init__(self, host, port, token):
        self.host, self.port, self.token = host, port, token

    def call(self, method, path, body=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Authorization": "Bearer " + self.token}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        c.request(method, path, data, headers)
        r = c.getresponse()
        out = r.read()
        c.close()
        return r.status, (json.loads(out) if out else None)


def s3_get(endpoint, bucket, key):
    host, port = endpoint.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    # moto runs without signature checking here (it cannot check presigned URLs);
    # it still wants an AWS-looking Authorization header to route the request to S3.
    c.request("GET", "/%s/%s" % (bucket, key), headers={
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAXMIGRATETEST0001/20260101/"
                         "us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"})
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 200:
        raise AssertionError("GET %s/%s: HTTP %d %s" % (bucket, key, r.status, body[:200]))
    return body


class CloneTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise AssertionError("the clone phase test needs root (network namespaces and "
                                 "loop devices); CI runs as root")
        cls.work = tempfile.mkdtemp(prefix="xm-clone-")
        cls.image = os.path.join(cls.work, "disk.img")
        cls.size = make_disk(cls.image)
        cls.nsdir = os.path.join(cls.work, "src")
        out = subprocess.run([os.path.join(ARGS.source_root, "tests", "support",
                                           "source_host.sh"), "up", str(NET), cls.nsdir,
                              cls.image], check=True, capture_output=True, text=True).stdout
        cls.src = json.loads(out.strip().splitlines()[-1])
        host_ip = cls.src["host_address"]

        cls.redis = xmtest.RedisServer(cls.work)
        cls.redis.start()
        cls.r = xmtest.Redis(cls.redis.port)
        moto_port = xmtest.free_port()
        moto = subprocess.run(["python3", os.path.join(ARGS.source_root, "tests", "support",
                                                       "moto.py"),
                               "--port", str(moto_port), "--host", host_ip, "--log",
                               os.path.join(cls.work, "moto.log")],
                              check=True, capture_output=True, text=True).stdout
        cls.moto = json.loads(moto)
        cls.master = secrets.token_hex(32)
        cls.api_port = xmtest.free_port()
        env = xmtest.clean_env({
            "XM_REDIS_PORT": str(cls.redis.port), "XM_MASTER_KEY": cls.master,
            "XM_API_ADDR": host_ip, "XM_API_PORT": str(cls.api_port),
            "XM_SCHEMAS_DIR": os.path.join(ARGS.source_root, "schemas"),
            "XM_AWS_ENDPOINT": cls.moto["endpoint"], "XM_LOG_LEVEL": "debug",
            "XM_AGENT_PATH": ARGS.agent, "XM_AGENT_API_URL": "http://%s:%d" % (host_ip,
                                                                               cls.api_port),
            "XM_PLAYBOOKS_DIR": os.path.join(ARGS.source_root, "playbooks"),
            "XM_CONSUMER": "clone1", "XM_BLOCK_MS": "100", "XM_MAX_ATTEMPTS": "2",
            "XM_RETRY_BASE_MS": "100", "XM_VISIBILITY_TIMEOUT_MS": "600000",
        })
        cls.env = env
        token = subprocess.run([ARGS.api, "token", "create", "ops"], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        cls.api = xmtest.Process([ARGS.api], env, os.path.join(cls.work, "api.log"))
        cls.http = Http(host_ip, cls.api_port, token)
        xmtest.wait_for(lambda: cls._healthy(), 15, "xm-api")
        cls.clone = xmtest.Process([ARGS.clone], env, os.path.join(cls.work, "clone.log"))

        with open(cls.src["key"]) as f:
            key = f.read()
        st, aws = cls.http.call("POST", "/v1/credentials", {
            "name": "moto", "kind": "aws", "secret": {
                "access_key_id": cls.moto["access_key"],
                "secret_access_key": cls.moto["secret_key"]}})
        assert st == 201, aws
        st, ssh = cls.http.call("POST", "/v1/credentials", {
            "name": "root", "kind": "ssh", "secret": {"user": "root", "private_key": key}})
        assert st == 201, ssh
        cls.creds = (aws["id"], ssh["id"])

    @classmethod
    def _healthy(cls):
        try:
            st, _ = Http(cls.src["host_address"], cls.api_port, "").call("GET", "/healthz")
            return st == 200
        except OSError:
            return False

    @classmethod
    def tearDownClass(cls):
        for p in ("clone", "api"):
            proc = getattr(cls, p, None)
            if proc:
                proc.stop()
        if getattr(cls, "moto", None):
            try:
                os.killpg(cls.moto["pid"], 15)
            except OSError:
                pass
        subprocess.run([os.path.join(ARGS.source_root, "tests", "support", "source_host.sh"),
                        "down", str(NET), cls.nsdir], check=False)
        if getattr(cls, "redis", None):
            cls.redis.stop()
        if not os.environ.get("XM_KEEP_TEST_DIRS"):
            shutil.rmtree(cls.work, ignore_errors=True)

    def migration(self, device):
        st, m = self.http.call("POST", "/v1/migrations", {
            "name": "clone-test", "cloud": "aws", "region": "us-east-1",
            "credential": self.creds[0],
            "hosts": [{"name": "web1", "address": self.src["address"],
                       "credential": self.creds[1]}]})
        self.assertEqual(st, 201, m)
        mig = m["id"]
        # What discovery records: the host's disks.
        self.r("SET", "xm:facts:%s:web1" % mig,
               json.dumps({"disks": [{"name": "vda", "device": device}]}))
        self.r("XADD", "xm:q:clone", "*", "job", secrets.token_hex(16), "migration", mig,
               "host", "web1", "disk", "", "phase", "clone", "attempt", "1", "group", "",
               "enqueued", str(int(time.time() * 1e6)), "payload", "{}")
        return mig

    def host_status(self, mig):
        return self.r.hgetall("xm:host:%s:web1" % mig).get("status")

    def reassemble(self, payload):
        """The device as the stored manifest and chunks say it is."""
        manifest = json.loads(s3_get(self.moto["endpoint"], payload["bucket"],
                                     payload["manifest"]))
        self.assertEqual(manifest["device_size"], self.size)
        got = bytearray(self.size)
        prefix = payload["manifest"].rsplit("/", 1)[0]
        stored = 0
        for c in manifest["chunks"]:
            off, length = c["offset"], c["length"]
            if c["zero"]:
                continue
            blob = s3_get(self.moto["endpoint"], payload["bucket"],
                          "%s/%d.zst" % (prefix, c["index"]))
            raw = subprocess.run(["zstd", "-d", "-c"], input=blob, capture_output=True,
                                 check=True).stdout
            self.assertEqual(hashlib.sha256(raw).hexdigest(), c["sha256"])
            got[off:off + length] = raw
            stored += 1
        return bytes(got), manifest, stored

    def test_1_clone_reproduces_the_device(self):
        mig = self.migration(self.src["device"])
        CloneTest.mig1 = mig
        xmtest.wait_for(lambda: self.r("XLEN", "xm:q:convert") >= 1 or
                        self.host_status(mig) == "failed", 300, "the clone phase")
        h = self.r.hgetall("xm:host:%s:web1" % mig)
        self.assertNotEqual(h.get("status"), "failed", h.get("error"))
        job = self.r.xrange("xm:q:convert")[0][1]
        self.assertEqual((job["migration"], job["host"], job["disk"]), (mig, "web1", "vda"))
        payload = json.loads(job["payload"])

        manifest = json.loads(s3_get(self.moto["endpoint"], payload["bucket"],
                                     payload["manifest"]))
        self.assertEqual(manifest["device_size"], self.size)
        with open(self.image, "rb") as f:
            want = f.read()
        got = bytearray(self.size)
        prefix = payload["manifest"].rsplit("/", 1)[0]
        stored = 0
        for c in manifest["chunks"]:
            off, length = c["offset"], c["length"]
            if c["zero"]:
                self.assertEqual(want[off:off + length], bytes(length))
                continue
            blob = s3_get(self.moto["endpoint"], payload["bucket"],
                          "%s/%d.zst" % (prefix, c["index"]))
            raw = subprocess.run(["zstd", "-d", "-c"], input=blob, capture_output=True,
                                 check=True).stdout
            self.assertEqual(hashlib.sha256(raw).hexdigest(), c["sha256"])
            got[off:off + length] = raw
            stored += 1
        self.assertEqual(bytes(got), want, "the stored chunks do not reproduce the device")
        self.assertGreater(stored, 0)
        self.assertLess(stored, len(manifest["chunks"]))  # zero chunks were skipped

        # Nothing left on the source: no agent, no token.
        self.assertFalse(os.path.exists("/var/lib/xmigrate/agent/xm-agent"))
        self.assertFalse(os.path.exists("/var/lib/xmigrate/agent/token"))
        # Progress reached the disk record and the events.
        d = self.r.hgetall("xm:disk:%s:web1:vda" % mig)
        self.assertEqual(int(d["bytes_copied"]), self.size)
        types = [e[1].get("type") for e in self.r.xrange("xm:events")]
        self.assertIn("clone.progress", types)

    def test_1b_second_run_sends_only_changed_chunks(self):
        """The delta (cutover) pass: change one chunk on the device, clone again: only that
        chunk is sent, and the new copy reproduces the changed device."""
        mig = CloneTest.mig1
        with open(self.src["device"], "r+b") as dev:
            dev.seek(20 << 20)
            dev.write(os.urandom(4096))
            dev.flush()
            os.fsync(dev.fileno())
        with open(self.src["device"], "rb") as dev:
            want = dev.read()
        converts = self.r("XLEN", "xm:q:convert")
        self.r("XADD", "xm:q:clone", "*", "job", secrets.token_hex(16), "migration", mig,
               "host", "web1", "disk", "", "phase", "clone", "attempt", "1", "group", "",
               "enqueued", str(int(time.time() * 1e6)), "payload", "{}")
        xmtest.wait_for(lambda: self.r("XLEN", "xm:q:convert") > converts or
                        self.host_status(mig) == "failed", 300, "the second clone")
        h = self.r.hgetall("xm:host:%s:web1" % mig)
        self.assertNotEqual(h.get("status"), "failed", h.get("error"))
        d = self.r.hgetall("xm:disk:%s:web1:vda" % mig)
        # 4 chunks: 1 changed, 1 all zero, 2 unchanged (skipped)
        self.assertEqual(int(d["chunks_total"]), 4)
        self.assertEqual(int(d["chunks_skipped"]), 2, d)
        payload = json.loads(self.r.xrange("xm:q:convert")[-1][1]["payload"])
        got, _, _ = self.reassemble(payload)
        self.assertEqual(got, want, "the delta copy does not reproduce the changed device")

    def test_2_unreadable_device_fails_for_good(self):
        before = self.r("XLEN", "xm:dead")
        mig = self.migration("/dev/xm-no-such-disk")
        xmtest.wait_for(lambda: self.host_status(mig) == "failed", 300, "the host to fail")
        h = self.r.hgetall("xm:host:%s:web1" % mig)
        self.assertIn("clone:", h["error"])
        self.assertEqual(self.r("XLEN", "xm:dead"), before + 1)
        self.assertEqual(h["attempt"], "1")  # permanent: not retried

    def test_3_no_secret_in_logs(self):
        secrets_used = [self.master, self.moto["secret_key"]]
        with open(self.src["key"]) as f:
            secrets_used += [l for l in f.read().splitlines() if l and "PRIVATE KEY" not in l]
        for name in ("api.log", "clone.log"):
            with open(os.path.join(self.work, name), errors="replace") as f:
                text = f.read()
            for s in secrets_used:
                self.assertNotIn(s, text, "%s holds a secret" % name)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--clone", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--source-root", required=True)
    ARGS, rest = ap.parse_known_args()
    for name in ("api", "clone", "agent", "source_root"):
        setattr(ARGS, name, os.path.abspath(getattr(ARGS, name)))
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(CloneTest)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
