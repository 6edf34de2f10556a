#!/usr/bin/env python3
"""Through the queue: one 2 GiB disk converted by 1 xm-convert, then by 2, same run.

The disk (half zeros, a quarter text, a quarter random: bench_clone_mkimage) is copied
once by xm-agent through xm-api into the GCP fake's Cloud Storage (tests/fakes/gcp.py),
as the clone phase leaves it. Then, for each run, the convert job that clone would hand
off is enqueued and timed until the disk's image is composed (the import job appears):
format gce-tar (disk.raw in a gzip'd tar: the CPU-heavy one), shards of
XM_CONVERT_SHARD_MB, the fake storage on the same two cores. Prints the median of each
and the ratio 1 converter / 2 converters (target >= 1.6x), with MB/s of disk converted.

    queue.py --build BUILD --image IMG [--runs N] [--shard-mb N]

The bench stands in for xm-clone's part in handing the agent its callback token: it
stores a token of its own as the migration's (the clone phase's only job here).
"""
import argparse
import hashlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOP = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "integration", "api"))
sys.path.insert(0, os.path.join(TOP, "tests", "support"))
import gcp_token  # noqa: E402
import xmtest  # noqa: E402

PROJECT = "xm-bench-proj"
EMAIL = "xmigrate@%s.iam.gserviceaccount.com" % PROJECT


def make_bucket(endpoint, key, name):
    """The chunk bucket, as xm-clone's storage_ensure makes it before the agent runs."""
    req = urllib.request.Request(
        endpoint + "/storage/v1/b?project=" + PROJECT,
        data=json.dumps({"name": name, "location": "US-CENTRAL1"}).encode(),
        headers={"Authorization": "Bearer " + gcp_token.token(key, gcp_token.STORAGE_SCOPE),
                 "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30).read()
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise SystemExit("bucket insert: HTTP %d %s" % (e.code, e.read()[:300]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--shard-mb", type=int, default=64)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    size = os.path.getsize(args.image)
    work = tempfile.mkdtemp(prefix="xm-bench-convq-")
    procs = []
    try:
        key = gcp_token.new_key(os.path.join(work, "sa.json"), PROJECT, EMAIL)
        fake = subprocess.Popen(["python3", os.path.join(TOP, "tests", "fakes", "gcp.py"),
                                 "--listen", "0", "--key-file", os.path.join(work, "sa.json"),
                                 "--no-hashes"],
                                stdout=subprocess.PIPE, stderr=open(os.path.join(work, "fake.log"),
                                                                    "w"), text=True)
        procs.append(fake)
        port = json.loads(fake.stdout.readline())["port"]
        endpoint = "http://127.0.0.1:%d" % port
        key["token_uri"] = endpoint + "/token"

        redis = xmtest.RedisServer(work)
        redis.start()
        r = xmtest.Redis(redis.port)
        api_port = xmtest.free_port()
        env = xmtest.clean_env({
            "XM_REDIS_PORT": str(redis.port), "XM_MASTER_KEY": secrets.token_hex(32),
            "XM_API_PORT": str(api_port), "XM_SCHEMAS_DIR": os.path.join(TOP, "schemas"),
            "XM_GCP_TOKEN_ENDPOINT": endpoint + "/token", "XM_GCP_STORAGE_ENDPOINT": endpoint,
            "XM_GCP_COMPUTE_ENDPOINT": endpoint, "XM_LOG_LEVEL": os.environ.get("XM_LOG_LEVEL", "info"),
            "XM_CONVERT_SHARD_MB": str(args.shard_mb), "XM_BLOCK_MS": "50",
        })
        token = subprocess.run([os.path.join(build, "api", "xm-api"), "token", "create", "b"],
                               env=env, check=True, capture_output=True, text=True).stdout.strip()
        api = xmtest.Process([os.path.join(build, "api", "xm-api")], env,
                             os.path.join(work, "api.log"))
        procs.append(api)
        c = xmtest.Client(api_port, token)
        xmtest.wait_for(lambda: c.get("/healthz").status == 200, 15, "xm-api")
        cred = c.post("/v1/credentials", {"name": "gcp", "kind": "gcp",
                                          "secret": {"service_account": key}}).json["id"]
        ssh = c.post("/v1/credentials", {"name": "ssh", "kind": "ssh",
                                         "secret": {"user": "root", "password": "unused"}})
        mig = c.post("/v1/migrations", {"name": "bench", "cloud": "gcp", "region": "us-central1",
                                        "credential": cred, "hosts": [{
                                            "name": "web1", "address": "192.0.2.10",
                                            "credential": ssh.json["id"]}]}).json["id"]
        # The provider's bucket: one per project and region (cloud/gcp/provider.c).
        bucket = "xmigrate-" + hashlib.sha256(
            ("%s/us-central1" % PROJECT).encode()).hexdigest()[:12]
        make_bucket(endpoint, key, bucket)
        agent_token = secrets.token_urlsafe(32)
        r("HSET", "xm:mig:" + mig, "callback_sha", hashlib.sha256(agent_token.encode()).hexdigest())
        tok_file = os.path.join(work, "agent.token")
        with open(tok_file, "w") as f:
            f.write(agent_token)
        os.chmod(tok_file, 0o600)

        print("copying the %d MiB image into the fake's storage with xm-agent ..." % (size >> 20),
              file=sys.stderr, flush=True)
        t0 = time.monotonic()
        subprocess.run([os.path.join(build, "agent", "xm-agent"), "--device", args.image,
                        "--api", "http://127.0.0.1:%d" % api_port, "--migration", mig, "--host",
                        "web1", "--disk", "sda", "--token-file", tok_file, "--state-dir",
                        os.path.join(work, "agent-state"), "--log-level", "warn"],
                       check=True)
        print("copied in %.1f s" % (time.monotonic() - t0), file=sys.stderr)
        man = "xmigrate/%s/web1/sda/manifest.json" % mig

        def one_run(n):
            for k in ("xm:q:convert", "xm:q:import", "xm:disk:%s:web1:sda" % mig):
                r("DEL", k)
            for k in r("KEYS", "xm:fanin:*") + r("KEYS", "xm:done:*"):
                r("DEL", k)
            workers = [xmtest.Process([os.path.join(build, "convert", "xm-convert")],
                                      dict(env, XM_CONSUMER="conv%d" % i),
                                      os.path.join(work, "conv%d.log" % i)) for i in range(n)]
            try:
                t = time.monotonic()
                r("XADD", "xm:q:convert", "*", "job", secrets.token_hex(16), "migration", mig,
                  "host", "web1", "disk", "sda", "phase", "convert", "attempt", "1", "group", "",
                  "enqueued", str(int(time.time() * 1e6)),
                  "payload", json.dumps({"bucket": bucket, "manifest": man}))
                xmtest.wait_for(lambda: r("XLEN", "xm:q:import") >= 1 or r("XLEN", "xm:dead") > 0,
                                1800, "the disk's image", interval=0.05)
                took = time.monotonic() - t
                if r("XLEN", "xm:dead"):
                    raise SystemExit("conversion failed: %s" % r.xrange("xm:dead")[-1])
                return took
            finally:
                for w in workers:
                    w.stop()

        times = {1: [], 2: []}
        for i in range(args.runs):
            for n in (1, 2):
                took = one_run(n)
                times[n].append(took)
                print("run %d, %d converter(s): %.2f s" % (i + 1, n, took), file=sys.stderr,
                      flush=True)
        m1, m2 = statistics.median(times[1]), statistics.median(times[2])
        mb = size / 1e6
        print("convert through the queue, gce-tar, %d MiB disk, shards of %d MiB, %d runs each"
              % (size >> 20, args.shard_mb, args.runs))
        print("| converters | median s | MB/s of disk |")
        print("| --- | --- | --- |")
        print("| 1 | %.2f | %.0f |" % (m1, mb / m1))
        print("| 2 | %.2f | %.0f |" % (m2, mb / m2))
        print("ratio 1 converter / 2 converters: %.2fx (target >= 1.6x)" % (m1 / m2))
    finally:
        for p in reversed(procs):
            if isinstance(p, xmtest.Process):
                p.stop()
            else:
                p.terminate()
                p.wait()
        if "redis" in locals():
            redis.stop()
        if os.environ.get("XM_KEEP_BENCH_DIR"):
            print("work directory kept: %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
