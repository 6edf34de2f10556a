#!/usr/bin/env python3
"""
Integration tests of xm-api (issue 3) against a real redis-server.

    test_api.py --api build/api/xm-api --schemas schemas [--noop build/workers/noop/xm-noop]

Starts its own redis-server (free loopback port, temporary folder, AOF on), makes an
API token with `xm-api token create`, starts xm-api on a free port with a random
XM_MASTER_KEY and drives every route in api/main.c: success and the meaningful
failures (401, 403, 404, 405, 409, 413, 415, 400 with the JSON pointer of the first bad
field, header cap, 503 with Retry-After while Redis is down and recovery once it is
back), the SSE event stream with Last-Event-ID resume, `promtool check metrics` on
/metrics, host retry with a real worker (xm-noop) failing a job for good, and token
revocation. At the end xm-api is stopped with SIGTERM (exit 0), and its log, the CLI
output, the worker log, the Redis AOF and every response received are searched for
each secret the test used; the log must hold no sanitizer report.

Prints "N passed, N failed" as its last line; exits non-zero on any failure.
Standard library only.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmtest import (SSE, Client, Process, Redis, RedisServer, clean_env,  # noqa: E402
                    free_port, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))

ARGS = None  # command line, set in main()
X = None     # the running system, set in setUpModule()

MAX_BODY = 4096
MAX_HEADERS = 8192


def rand_alnum(n):
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


def stream_id(s):
    ms, seq = s.split("-")
    return (int(ms), int(seq))


class System:
    """redis-server, xm-api and what the test knows about them."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="xm-api-it-")
        self.secrets = []   # every secret value the test used
        self.logs = []      # files searched for secrets at the end
        self.redis_server = RedisServer(self.tmp)
        self.api_log = os.path.join(self.tmp, "xm-api.log")
        self.cli_log = os.path.join(self.tmp, "cli.log")
        self.worker_log = os.path.join(self.tmp, "xm-noop.log")
        self.logs += [self.api_log, self.cli_log, self.worker_log]
        self.master_key = secrets.token_hex(32)
        self.secret(self.master_key)
        self.secret(self.master_key.upper())
        self.api = None
        self.worker = None

    def secret(self, value):
        self.secrets.append(value)
        return value

    def start(self):
        self.redis_server.start()
        self.redis = Redis(self.redis_server.port)
        self.api_port = free_port()
        self.env = clean_env({
            "XM_REDIS_HOST": "127.0.0.1",
            "XM_REDIS_PORT": str(self.redis_server.port),
            "XM_REDIS_TIMEOUT_MS": "2000",
            "XM_API_ADDR": "127.0.0.1",
            "XM_API_PORT": str(self.api_port),
            "XM_API_THREADS": "2",
            "XM_API_MAX_BODY": str(MAX_BODY),
            "XM_API_MAX_HEADERS": str(MAX_HEADERS),
            "XM_API_TOKEN_CACHE_MS": "0",
            "XM_API_SSE_POLL_MS": "50",
            "XM_SCHEMAS_DIR": ARGS.schemas,
            "XM_MASTER_KEY": self.master_key,
            "XM_LOG_LEVEL": "debug",
        })
        self.token_name = "itest"
        self.token = self.secret(self.cli_token_create(self.token_name))
        self.api = Process([ARGS.api], self.env, self.api_log)
        self.client = Client(self.api_port, self.token)

        def healthy():
            if not self.api.alive():
                raise AssertionError("xm-api exited with %s; see %s" %
                                     (self.api.proc.returncode, self.api_log))
            return self.client.get("/healthz", token="").status == 200
        wait_for(healthy, 20, "xm-api /healthz")

    def cli(self, *args):
        """Run `xm-api ARGS` (token commands); stderr goes to cli.log. (rc, stdout)."""
        with open(self.cli_log, "ab") as log:
            p = subprocess.run([ARGS.api] + list(args), env=self.env, stdout=subprocess.PIPE,
                               stderr=log, timeout=30)
        return p.returncode, p.stdout.decode()

    def cli_token_create(self, name):
        rc, out = self.cli("token", "create", name)
        if rc != 0 or not re.fullmatch(r"[A-Za-z0-9_-]{20,}\n", out):
            raise AssertionError("xm-api token create %s: rc=%d out=%r" % (name, rc, out))
        return out.strip()

    def stop(self):
        if self.worker and self.worker.alive():
            self.worker.proc.kill()
            self.worker.proc.wait()
        if self.api and self.api.alive():
            self.api.proc.kill()
            self.api.proc.wait()
        if hasattr(self, "redis"):
            self.redis.close()
        self.redis_server.stop()


def setUpModule():
    global X
    X = System()
    try:
        X.start()
    except BaseException:
        X.stop()
        raise


def tearDownModule():
    if X:
        X.stop()


# ---------------------------------------------------------------- fixtures

def aws_secret():
    return {"access_key_id": "AKIA" + "".join(secrets.choice(string.ascii_uppercase +
                                                             string.digits) for _ in range(16)),
            "secret_access_key": X.secret(rand_alnum(40))}


def azure_secret():
    return {"tenant_id": str(uuid.uuid4()), "client_id": str(uuid.uuid4()),
            "client_secret": X.secret(rand_alnum(34)), "subscription_id": str(uuid.uuid4())}


def pem(label):
    """A fake PEM private key; each line of its body is registered as a secret."""
    body = base64.b64encode(secrets.token_bytes(360)).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    for line in lines:
        if len(line) >= 32:
            X.secret(line)
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)


def gcp_secret():
    return {"service_account": {
        "type": "service_account",
        "project_id": "xm-it-project",
        "private_key_id": X.secret(secrets.token_hex(20)),
        "private_key": pem("PRIVATE KEY"),
        "client_email": "xm-it@xm-it-project.iam.gserviceaccount.com",
        "client_id": "104857600012345678901",
        "token_uri": "https://oauth2.googleapis.com/token",
    }}


def ssh_key_secret():
    return {"user": "root", "private_key": pem("OPENSSH PRIVATE KEY")}


def ssh_password_secret():
    return {"user": "ubuntu", "password": X.secret(rand_alnum(24)),
            "become_password": X.secret(rand_alnum(24))}


SECRET_MAKERS = {"aws": aws_secret, "azure": azure_secret, "gcp": gcp_secret,
                 "ssh": ssh_key_secret}


def create_cred(kind, secret=None, name=None):
    body = {"name": name or "it-%s-%s" % (kind, rand_alnum(6).lower()), "kind": kind,
            "secret": secret if secret is not None else SECRET_MAKERS[kind]()}
    r = X.client.post("/v1/credentials", body)
    assert r.status == 201, r
    return r.json["id"]


_shared = {}


def shared_cred(kind):
    """One credential per kind for tests that only need some credential."""
    if kind not in _shared:
        _shared[kind] = create_cred(kind)
    return _shared[kind]


def mig_body(hosts=("web1",), cloud="aws", cred=None, ssh=None, blueprint=None, name=None):
    ssh = ssh or shared_cred("ssh")
    body = {"name": name or "it-" + rand_alnum(6).lower(), "cloud": cloud,
            "region": {"aws": "eu-west-1", "azure": "westeurope", "gcp": "europe-west1"}[cloud],
            "credential": cred or shared_cred(cloud),
            "hosts": [{"name": h, "address": "10.1.0.%d" % (i + 10), "credential": ssh}
                      for i, h in enumerate(hosts)]}
    if blueprint is not None:
        body["blueprint"] = blueprint
    return body


def create_mig(hosts=("web1",), **kw):
    r = X.client.post("/v1/migrations", mig_body(hosts, **kw))
    assert r.status == 201, r
    return r.json["id"]


def blueprint(hosts=("web1",), subnets=(("app", "10.20.1.0/24"),), net="10.20.0.0/16",
              placement=None):
    """A blueprint placing every host in the first subnet unless placement says."""
    placement = placement or {h: subnets[0][0] for h in hosts}
    return {"network": {"name": "it-net", "cidr": net,
                        "subnets": [{"name": n, "cidr": c} for n, c in subnets]},
            "hosts": [{"host": h, "machine_type": "t3.medium", "subnet": s}
                      for h, s in placement.items()],
            "firewall": [{"protocol": "tcp", "port": 22, "source": "10.0.0.0/8"}]}


def jobs_of(phase, mig):
    return [(i, f) for i, f in X.redis.xrange("xm:q:" + phase) if f.get("migration") == mig]


def events_of(mig):
    return [f for _, f in X.redis.xrange("xm:events") if f.get("migration") == mig]


class Base(unittest.TestCase):
    maxDiff = None

    def assertError(self, r, status, code=None, path=None):
        """r is an error reply of the one shape {"error": {"code", "message"[, "path"]}}."""
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.header("Content-Type"), "application/json", r)
        e = r.json["error"]
        self.assertIsInstance(e.get("code"), str, r)
        self.assertIsInstance(e.get("message"), str, r)
        self.assertTrue(e["message"], r)
        if code:
            self.assertEqual(e["code"], code, r)
        if path is not None:
            self.assertEqual(e.get("path"), path, r)
        return e


# ---------------------------------------------------------------- the API

class ApiTest(Base):

    # ---- ops

    def test_healthz_needs_no_token(self):
        r = X.client.get("/healthz", token="")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"status": "ok", "redis": "ok"})
        self.assertEqual(r.header("Cache-Control"), "no-store")

    def test_metrics_pass_promtool(self):
        create_mig(("m1",))  # some queue content and a migration by status
        r = X.client.get("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type").startswith("text/plain; version=0.0.4"), r)
        for want in ('xm_api_requests_total{route="', 'xm_queue_length{phase="discovery"}',
                     "xm_queue_pending{", "xm_queue_delayed{", "xm_dead_letters ",
                     'xm_migrations{status="discovering"}', "xm_events "):
            self.assertIn(want, r.body)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool not found (Debian package prometheus; "
                                       "scripts/install-deps.sh installs it)")
        p = subprocess.run([promtool, "check", "metrics"], input=r.body.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(p.returncode, 0, "promtool check metrics:\n" + p.stdout.decode())
        self.assertError(X.client.get("/metrics", token=""), 401, "unauthorized")

    # ---- protocol-level refusals

    def test_401_without_a_valid_token(self):
        cases = [("GET", "/v1/credentials"), ("POST", "/v1/credentials"),
                 ("GET", "/v1/migrations"), ("POST", "/v1/migrations"),
                 ("GET", "/metrics"), ("GET", "/v1/migrations/x/events"),
                 ("DELETE", "/v1/credentials/x"), ("PUT", "/v1/migrations/x/blueprint"),
                 ("POST", "/v1/migrations/x/approve"), ("POST", "/v1/migrations/x/hosts/h/retry")]
        for method, path in cases:
            for tok, hdr in (("", None), ("wrong-" + rand_alnum(30), None),
                             ("", {"Authorization": "Basic " + X.token}),
                             ("", {"Authorization": "Bearer"})):
                with self.subTest(method=method, path=path, tok=tok, hdr=hdr):
                    # the body is never looked at before authentication
                    r = X.client.request(method, path, token=tok, headers=hdr, raw=b"{",
                                         content_type="text/plain")
                    self.assertError(r, 401, "unauthorized")
                    self.assertEqual(r.header("WWW-Authenticate"), "Bearer")

    def test_404_unknown_paths_and_odd_segments(self):
        for path in ["/", "/v1", "/v1/", "/v2/migrations", "/v1/nothing", "/healthz/x",
                     "/v1/credentials/", "/v1/migrations/..%2f", "/v1/migrations/..%2f/blueprint",
                     "/v1/migrations/a%20b", "/v1/migrations/x%00y", "/v1/migrations/%2e%2e",
                     "/v1/migrations/x;rm/blueprint", "/v1/migrations//blueprint",
                     "/v1/migrations/" + "a" * 200, "/v1/migrations/x/hosts/y/phases/prep/z",
                     "/v1/callbacks/discovery/", "/V1/credentials"]:
            with self.subTest(path=path):
                self.assertError(X.client.get(path), 404, "not_found")
                self.assertError(X.client.post(path, {}), 404, "not_found")

    def test_405_with_allow_header(self):
        cases = [("PATCH", "/v1/credentials", {"POST", "GET"}),
                 ("PUT", "/healthz", {"GET"}),
                 ("POST", "/metrics", {"GET"}),
                 ("PUT", "/v1/credentials/abc", {"GET", "DELETE"}),
                 ("POST", "/v1/migrations/abc", {"GET", "DELETE"}),
                 ("DELETE", "/v1/migrations/abc/blueprint", {"GET", "PUT"}),
                 ("GET", "/v1/migrations/abc/approve", {"POST"}),
                 ("GET", "/v1/migrations/abc/hosts/h1/retry", {"POST"}),
                 ("DELETE", "/v1/migrations/abc/hosts/h1/phases/prep", {"POST"}),
                 ("POST", "/v1/migrations/abc/events", {"GET"}),
                 ("GET", "/v1/callbacks/discovery/abc", {"POST"}),
                 ("OPTIONS", "/v1/migrations", {"POST", "GET"})]
        for method, path, allow in cases:
            with self.subTest(method=method, path=path):
                r = X.client.request(method, path)
                self.assertError(r, 405, "method_not_allowed")
                self.assertEqual({m.strip() for m in r.header("Allow").split(",")}, allow, r)

    def test_415_when_not_json(self):
        body = json.dumps({"name": "ct", "kind": "aws", "secret": aws_secret()}).encode()
        for ct in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                   "application/json-patch+json", None):
            with self.subTest(content_type=ct):
                r = X.client.post("/v1/credentials", raw=body, content_type=ct)
                self.assertError(r, 415, "unsupported_media_type")
        r = X.client.put("/v1/migrations/abc/blueprint", raw=b"{}", content_type="text/plain")
        self.assertError(r, 415)
        # parameters after the media type are fine
        r = X.client.post("/v1/credentials", raw=body,
                          content_type="application/json; charset=utf-8")
        self.assertEqual(r.status, 201, r)

    def test_400_invalid_json(self):
        for raw in (b"", b"{", b'{"name": "x",}', b"[1, 2", b"nul", b'{"a": 1, "a": 2}',
                    b"\xff\xfe{}", b'{"name": "x"} trailing'):
            with self.subTest(raw=raw):
                r = X.client.post("/v1/credentials", raw=raw)
                self.assertError(r, 400, "invalid_json")
                r = X.client.post("/v1/migrations", raw=raw)
                self.assertError(r, 400, "invalid_json")

    def test_413_body_over_max_body(self):
        big = json.dumps({"name": "big", "kind": "aws", "secret": aws_secret(),
                          "pad": "x" * MAX_BODY}).encode()
        self.assertGreater(len(big), MAX_BODY)
        r = X.client.post("/v1/credentials", raw=big)
        self.assertEqual(r.status, 413, r)
        # chunked: no Content-Length for the server to look at first
        chunked = (b"POST /v1/credentials HTTP/1.1\r\nHost: t\r\n"
                   b"Authorization: Bearer " + X.token.encode() + b"\r\n"
                   b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 1000]), big[i:i + 1000])
                            for i in range(0, len(big), 1000)) + b"0\r\n\r\n")
        out = X.client.raw(chunked)
        self.assertRegex(out, rb"^HTTP/1\.1 413 ")
        # just under the cap is read and validated (400 names the extra property)
        doc = {"name": "big", "kind": "aws", "secret": aws_secret(), "pad": ""}
        doc["pad"] = "x" * (MAX_BODY - 10 - len(json.dumps(doc)))
        small = json.dumps(doc).encode()
        self.assertEqual(len(small), MAX_BODY - 10)
        r = X.client.post("/v1/credentials", raw=small)
        self.assertError(r, 400, "invalid_request")
        self.assertEqual(X.client.get("/healthz").status, 200)

    def test_header_cap(self):
        r = X.client.get("/v1/credentials", headers={"X-Filler": "a" * (MAX_HEADERS // 4)})
        self.assertEqual(r.status, 200, r)
        for size in (MAX_HEADERS + 1, 4 * MAX_HEADERS):
            with self.subTest(size=size):
                req = (b"GET /v1/credentials HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                       X.token.encode() + b"\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
                out = X.client.raw(req)
                # refused before any handler: 400/413/431 from evhttp, or the connection
                # closed without an answer; never a 200 with the credential list
                self.assertTrue(out == b"" or re.match(rb"^HTTP/1\.[01] (400|413|431) ", out),
                                out[:200])
        # many small headers adding up over the cap
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(2 * MAX_HEADERS // 100))
        out = X.client.raw(b"GET /v1/credentials HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                           X.token.encode() + b"\r\n" + many + b"\r\n")
        self.assertTrue(out == b"" or re.match(rb"^HTTP/1\.[01] (400|413|431) ", out), out[:200])
        self.assertEqual(X.client.get("/healthz").status, 200)

    # ---- credentials

    def test_credentials_create_each_kind_list_get(self):
        made = {}
        for label, kind, secret, identity in [
                ("aws", "aws", aws_secret(), "access_key_id"),
                ("azure", "azure", azure_secret(), "client_id"),
                ("gcp", "gcp", gcp_secret(), None),
                ("ssh-key", "ssh", ssh_key_secret(), "user"),
                ("ssh-password", "ssh", ssh_password_secret(), "user")]:
            with self.subTest(kind=label):
                name = "it %s %s" % (label, rand_alnum(4))
                r = X.client.post("/v1/credentials", {"name": name, "kind": kind,
                                                      "secret": secret})
                self.assertEqual(r.status, 201, r)
                c = r.json
                self.assertEqual(set(c), {"id", "name", "kind", "identity", "fingerprint",
                                          "created"}, c)
                uuid.UUID(c["id"])
                self.assertEqual((c["name"], c["kind"]), (name, kind))
                want = (secret["service_account"]["client_email"] if kind == "gcp"
                        else secret[identity])
                self.assertEqual(c["identity"], want)
                self.assertRegex(c["fingerprint"], r"^hmac-sha256:[0-9a-f]{16}$")
                self.assertIsInstance(c["created"], int)
                made[label] = (c, secret)

                g = X.client.get("/v1/credentials/" + c["id"])
                self.assertEqual(g.status, 200, g)
                self.assertEqual(g.json, dict(c, used_by=[]))
                # at rest: sealed, never the plain secret
                h = X.redis.hgetall("xm:cred:" + c["id"])
                self.assertIn("sealed", h)
                for v in _leaves(secret):
                    if len(v) >= 16 and v != want:
                        self.assertNotIn(v, json.dumps(h))
        self.assertEqual(len({c["fingerprint"] for c, _ in made.values()}), len(made))
        r = X.client.get("/v1/credentials")
        self.assertEqual(r.status, 200, r)
        listed = {c["id"]: c for c in r.json["items"]}
        for c, _ in made.values():
            self.assertEqual(listed.get(c["id"]), c)
        for c in r.json["items"]:
            self.assertEqual(set(c) - {"id", "name", "kind", "identity", "fingerprint",
                                       "created"}, set())

    def test_credentials_validation(self):
        good = aws_secret()
        cases = [
            ({"name": "x", "kind": "aws", "secret": dict(good, access_key_id="akia-lower")},
             "/secret/access_key_id"),
            ({"name": "x", "kind": "aws",
              "secret": {"access_key_id": good["access_key_id"]}}, "/secret/secret_access_key"),
            ({"name": "x", "kind": "aws", "secret": dict(good, secret_access_key="short")},
             "/secret/secret_access_key"),
            ({"name": "x", "kind": "azure", "secret": dict(azure_secret(), tenant_id="nope")},
             "/secret/tenant_id"),
            ({"name": "x", "kind": "gcp", "secret": {"service_account": dict(
                gcp_secret()["service_account"], private_key="not a key " * 10)}},
             "/secret/service_account/private_key"),
            ({"name": "x", "kind": "ssh", "secret": {"user": "root"}}, "/secret"),
            ({"name": "x", "kind": "ssh", "secret": dict(ssh_password_secret(), user="Root;")},
             "/secret/user"),
            ({"name": "x", "kind": "oracle", "secret": good}, "/kind"),
            ({"name": "a;rm -rf /", "kind": "aws", "secret": good}, "/name"),
            ({"kind": "aws", "secret": good}, "/name"),
            ({"name": "x", "kind": "aws", "secret": good, "extra": 1}, ""),
        ]
        before = X.redis("ZCARD", "xm:creds")
        for body, path in cases:
            with self.subTest(path=path, body=body.get("name")):
                r = X.client.post("/v1/credentials", body)
                e = self.assertError(r, 400, "invalid_request")
                self.assertEqual(e.get("path", ""), path, r)
        self.assertEqual(X.redis("ZCARD", "xm:creds"), before)

    def test_credentials_unknown_id(self):
        u = str(uuid.uuid4())
        self.assertError(X.client.get("/v1/credentials/" + u), 404, "not_found")
        self.assertError(X.client.delete("/v1/credentials/" + u), 404, "not_found")

    def test_credential_delete_lifecycle(self):
        unused = create_cred("azure")
        r = X.client.delete("/v1/credentials/" + unused)
        self.assertEqual((r.status, r.body), (204, ""), r)
        self.assertError(X.client.get("/v1/credentials/" + unused), 404)
        self.assertError(X.client.delete("/v1/credentials/" + unused), 404)
        ids = [c["id"] for c in X.client.get("/v1/credentials").json["items"]]
        self.assertNotIn(unused, ids)
        self.assertEqual(X.redis("EXISTS", "xm:cred:" + unused), 0)

        cloud = create_cred("aws")
        ssh = create_cred("ssh", ssh_password_secret())
        mig = create_mig(("d1", "d2"), cred=cloud, ssh=ssh)
        for cred in (cloud, ssh):
            with self.subTest(cred=cred):
                self.assertEqual(X.client.get("/v1/credentials/" + cred).json["used_by"], [mig])
                r = X.client.delete("/v1/credentials/" + cred)
                e = self.assertError(r, 409, "in_use")
                self.assertIn(mig, e["message"])
                self.assertEqual(X.client.get("/v1/credentials/" + cred).status, 200)
        self.assertEqual(X.client.delete("/v1/migrations/" + mig).status, 200)
        for cred in (cloud, ssh):
            with self.subTest(cred=cred, after="cancel"):
                self.assertEqual(X.client.get("/v1/credentials/" + cred).json["used_by"], [])
                self.assertEqual(X.client.delete("/v1/credentials/" + cred).status, 204)
                self.assertError(X.client.get("/v1/credentials/" + cred), 404)

    # ---- migrations

    def test_migration_create_enqueues_discovery(self):
        body = mig_body(("web1", "db1", "cache1"))
        body["hosts"][1]["port"] = 2222
        body["hosts"][2]["address"] = "cache1.example.internal"
        t0 = int(time.time() * 1e6)
        r = X.client.post("/v1/migrations", body)
        self.assertEqual(r.status, 201, r)
        m = r.json
        mig = m["id"]
        uuid.UUID(mig)
        self.assertEqual(r.header("Location"), "/v1/migrations/" + mig)
        self.assertEqual(m["status"], "discovering")
        self.assertEqual((m["name"], m["cloud"], m["region"]),
                         (body["name"], body["cloud"], body["region"]))
        self.assertEqual(m["hosts"], ["web1", "db1", "cache1"])

        jobs = jobs_of("discovery", mig)
        self.assertEqual(sorted(f["host"] for _, f in jobs), ["cache1", "db1", "web1"])
        for _, f in jobs:
            self.assertRegex(f["job"], r"^[0-9a-f]{32}$")
            self.assertEqual((f["phase"], f["attempt"], f["disk"], f["group"], f["payload"]),
                             ("discovery", "1", "", mig + ":discovery", "{}"), f)
            self.assertGreaterEqual(int(f["enqueued"]), t0 - 5_000_000)
        self.assertEqual(set(X.redis("SMEMBERS", "xm:fanin:%s:discovery" % mig)),
                         {f["job"] for _, f in jobs})
        self.assertIsNotNone(X.redis("ZSCORE", "xm:migs", mig))
        h = X.redis.hgetall("xm:mig:" + mig)
        self.assertRegex(h["callback_sha"], r"^[0-9a-f]{64}$")
        self.assertTrue(h["callback_sealed"])
        self.assertNotIn(h["callback_sha"], h["callback_sealed"])
        self.assertEqual([e["type"] for e in events_of(mig)], ["migration.created"])
        self.assertEqual(X.redis.hgetall("xm:host:%s:db1" % mig)["port"], "2222")

    def test_migration_create_errors(self):
        ssh = shared_cred("ssh")
        aws = shared_cred("aws")
        unknown = str(uuid.uuid4())

        def with_host(**kw):
            b = mig_body(("h1", "h2"))
            b["hosts"][0].update(kw)
            return b
        cases = [
            ("cloud credential is ssh", mig_body(cred=ssh), "/credential"),
            ("cloud credential of another cloud", mig_body(cloud="azure", cred=aws),
             "/credential"),
            ("unknown cloud credential", mig_body(cred=unknown), "/credential"),
            ("host credential is a cloud one", with_host(credential=aws), "/hosts/0/credential"),
            ("unknown host credential", with_host(credential=unknown), "/hosts/0/credential"),
            ("duplicate host names", mig_body(("h1", "h2", "h1")), "/hosts/2/name"),
            ("bad IPv4", with_host(address="10.0.0.1;reboot"), "/hosts/0/address"),
            ("IPv4 with a port", with_host(address="10.0.0.1:22"), "/hosts/0/address"),
            ("address with a space", with_host(address="10.0.0.1 "), "/hosts/0/address"),
            ("shell in a name", with_host(name="a;rm -rf /"), "/hosts/0/name"),
            ("YAML in a name", with_host(name="a: b"), "/hosts/0/name"),
            ("name starting with a dash", with_host(name="-v"), "/hosts/0/name"),
            ("port 0", with_host(port=0), "/hosts/0/port"),
            ("no hosts", dict(mig_body(), hosts=[]), "/hosts"),
            ("bad cloud", dict(mig_body(), cloud="oracle"), "/cloud"),
            ("bad region", dict(mig_body(), region="EU West"), "/region"),
            ("credential not a uuid", dict(mig_body(), credential="x"), "/credential"),
            ("blueprint schema", mig_body(("h1",), blueprint=blueprint(("h1",),
                                                                       net="10.20.0.0/33")),
             "/blueprint/network/cidr"),
            ("blueprint overlap", mig_body(("h1",), blueprint=blueprint(
                ("h1",), subnets=(("a", "10.20.1.0/24"), ("b", "10.20.1.128/25")))),
             "/blueprint/network/subnets/1/cidr"),
            ("blueprint subnet outside", mig_body(("h1",), blueprint=blueprint(
                ("h1",), subnets=(("a", "10.30.1.0/24"),))), "/blueprint/network/subnets/0/cidr"),
            ("blueprint host unplaced", mig_body(("h1", "h2"), blueprint=blueprint(("h1",))),
             "/blueprint/hosts"),
            ("blueprint unknown host", mig_body(("h1",), blueprint=blueprint(("h1", "zz"))),
             "/blueprint/hosts/1/host"),
            ("blueprint unknown subnet", mig_body(("h1",), blueprint=blueprint(
                ("h1",), placement={"h1": "nope"})), "/blueprint/hosts/0/subnet"),
        ]
        migs, disc = X.redis("ZCARD", "xm:migs"), X.redis("XLEN", "xm:q:discovery")
        for what, body, path in cases:
            with self.subTest(what):
                r = X.client.post("/v1/migrations", body)
                self.assertError(r, 400, "invalid_request", path)
        # nothing was stored or enqueued by a refused request
        self.assertEqual(X.redis("ZCARD", "xm:migs"), migs)
        self.assertEqual(X.redis("XLEN", "xm:q:discovery"), disc)

        # a valid embedded blueprint is kept
        bp = blueprint(("h1", "h2"), subnets=(("a", "10.20.1.0/24"), ("b", "10.20.2.0/24")),
                       placement={"h1": "a", "h2": "b"})
        r = X.client.post("/v1/migrations", mig_body(("h1", "h2"), blueprint=bp))
        self.assertEqual(r.status, 201, r)
        g = X.client.get("/v1/migrations/%s/blueprint" % r.json["id"])
        self.assertEqual((g.status, g.json), (200, bp))

    def test_migration_aws_import(self):
        # stored and shown as asked; absent: "ebs" for aws, nothing for another cloud
        for want in ("raw", "vmdk", "ebs"):
            r = X.client.post("/v1/migrations", dict(mig_body(), aws_import=want))
            self.assertEqual(r.status, 201, r)
            self.assertEqual(X.redis("HGET", "xm:mig:" + r.json["id"], "aws_import"), want)
            self.assertEqual(X.client.get("/v1/migrations/" + r.json["id"]).json["aws_import"],
                             want)
        self.assertEqual(X.client.get("/v1/migrations/" + create_mig()).json["aws_import"],
                         "ebs")
        self.assertNotIn("aws_import", X.client.get(
            "/v1/migrations/" + create_mig(cloud="gcp")).json)
        migs = X.redis("ZCARD", "xm:migs")
        for what, body in [("unknown value", dict(mig_body(), aws_import="qcow2")),
                           ("not a string", dict(mig_body(), aws_import=True)),
                           ("azure", dict(mig_body(cloud="azure"), aws_import="raw")),
                           ("gcp", dict(mig_body(cloud="gcp"), aws_import="ebs"))]:
            with self.subTest(what):
                r = X.client.post("/v1/migrations", body)
                self.assertError(r, 400, "invalid_request", "/aws_import")
                if what in ("azure", "gcp"):
                    self.assertIn("only an aws migration", r.json["error"]["message"])
        self.assertEqual(X.redis("ZCARD", "xm:migs"), migs)

    def test_address_dotted_quad_out_of_range(self):
        # RFC 1123 2.1: a host name never has the dotted-decimal form #.#.#.#, so
        # "10.0.0.256" is neither an IPv4 address nor a host name (format hostname in
        # common/jsonschema.c refuses an all-digit top-level label).
        b = mig_body(("h1",))
        b["hosts"][0]["address"] = "10.0.0.256"
        self.assertError(X.client.post("/v1/migrations", b), 400, "invalid_request",
                         "/hosts/0/address")

    def test_migration_list_paging(self):
        mine = {create_mig(("p1",)) for _ in range(3)}
        full = X.client.get("/v1/migrations?limit=500")
        self.assertEqual(full.status, 200, full)
        total = full.json["total"]
        self.assertEqual(total, X.redis("ZCARD", "xm:migs"))
        all_ids = [m["id"] for m in full.json["items"]]
        self.assertEqual(len(all_ids), total)
        self.assertTrue(mine <= set(all_ids))
        self.assertNotIn("next_offset", full.json)
        for m in full.json["items"]:
            self.assertFalse({"callback_sha", "callback_sealed", "blueprint"} & set(m), m)
        created = [m["created"] for m in full.json["items"]]
        self.assertEqual(created, sorted(created, reverse=True))  # newest first

        seen, offset, pages = [], 0, 0
        while True:
            r = X.client.get("/v1/migrations?limit=2&offset=%d" % offset)
            self.assertEqual(r.status, 200, r)
            p = r.json
            self.assertEqual((p["limit"], p["offset"], p["total"]), (2, offset, total))
            self.assertLessEqual(len(p["items"]), 2)
            seen += [m["id"] for m in p["items"]]
            pages += 1
            if "next_offset" not in p:
                break
            self.assertEqual(p["next_offset"], offset + 2)
            offset = p["next_offset"]
        self.assertEqual(pages, (total + 1) // 2)
        self.assertEqual(sorted(seen), sorted(all_ids))
        self.assertEqual(len(seen), len(set(seen)))

        r = X.client.get("/v1/migrations?offset=%d" % (total + 10))
        self.assertEqual((r.status, r.json["items"]), (200, []))
        self.assertNotIn("next_offset", r.json)
        self.assertEqual(X.client.get("/v1/migrations").json["limit"], 50)
        for q in ("limit=0", "limit=501", "limit=abc", "limit=", "limit=-1", "offset=-1",
                  "offset=x", "limit=1e3", "limit=2&offset=1.5", "limit=99999999999999999999"):
            with self.subTest(q=q):
                self.assertError(X.client.get("/v1/migrations?" + q), 400, "invalid_request")

    def test_migration_get_and_cancel(self):
        ssh = shared_cred("ssh")
        body = mig_body(("web1", "db1"), ssh=ssh)
        mig = X.client.post("/v1/migrations", body).json["id"]
        r = X.client.get("/v1/migrations/" + mig)
        self.assertEqual(r.status, 200, r)
        m = r.json
        self.assertEqual((m["id"], m["status"], m["cloud"], m["region"], m["credential"]),
                         (mig, "discovering", "aws", "eu-west-1", body["credential"]))
        self.assertEqual((m["hosts_total"], m["auto_approve"]), (2, False))
        self.assertFalse({"callback_sha", "callback_sealed"} & set(m), m)
        self.assertEqual(m["resources"], [])
        self.assertEqual([h["name"] for h in m["hosts"]], ["db1", "web1"])
        for h in m["hosts"]:
            want = next(x for x in body["hosts"] if x["name"] == h["name"])
            self.assertEqual((h["address"], h["port"], h["credential"], h["phase"], h["status"],
                              h["disks"]),
                             (want["address"], 22, ssh, "discovery", "queued", []), h)

        r = X.client.delete("/v1/migrations/" + mig)
        self.assertEqual((r.status, r.json["status"], r.json["id"]), (200, "cancelled", mig), r)
        self.assertEqual(X.client.get("/v1/migrations/" + mig).json["status"], "cancelled")
        self.assertEqual(X.redis("HGET", "xm:mig:" + mig, "status"), "cancelled")
        self.assertIn("migration.cancelled", [e["type"] for e in events_of(mig)])
        self.assertError(X.client.delete("/v1/migrations/" + mig), 409, "conflict")

        u = str(uuid.uuid4())
        self.assertError(X.client.get("/v1/migrations/" + u), 404, "not_found")
        self.assertError(X.client.delete("/v1/migrations/" + u), 404, "not_found")

    def test_rollback_only_once_ended(self):
        mig = create_mig(("web1",))
        path = "/v1/migrations/%s/rollback" % mig
        r = X.client.post(path)
        self.assertError(r, 409, "conflict")
        self.assertIn("cancel it first", r.json["error"]["message"])
        self.assertEqual(X.client.delete("/v1/migrations/" + mig).status, 200)
        before = X.redis("XLEN", "xm:q:network")
        r = X.client.post(path)
        self.assertEqual((r.status, r.json), (202, {"id": mig, "status": "rolling_back"}), r)
        self.assertEqual(X.client.get("/v1/migrations/" + mig).json["status"], "rolling_back")
        self.assertEqual(X.redis("XLEN", "xm:q:network"), before + 1)
        job = X.redis.xrange("xm:q:network")[-1][1]
        self.assertEqual((job["migration"], job["host"], json.loads(job["payload"])),
                         (mig, "-", {"action": "rollback"}))
        self.assertIn("migration.rollback", [e["type"] for e in events_of(mig)])
        self.assertEqual(X.client.post(path).status, 202)  # a rollback can run again
        self.assertError(X.client.post("/v1/migrations/%s/rollback" % uuid.uuid4()), 404,
                         "not_found")

    def test_cutover(self):
        """cutover "manual": the API queues each awaiting host's final clone pass, and only
        those; max_cloning is stored and shown."""
        body = dict(mig_body(("web1", "db1")), cutover="manual", max_cloning=1)
        mig = X.client.post("/v1/migrations", body).json["id"]
        m = X.client.get("/v1/migrations/" + mig).json
        self.assertEqual((m["cutover"], m["max_cloning"]), ("manual", 1))
        plain = create_mig(("web1",))
        m = X.client.get("/v1/migrations/" + plain).json
        self.assertEqual((m["cutover"], m["max_cloning"]), ("auto", 4))  # XM_MAX_CLONING
        for bad in ({"cutover": "later"}, {"max_cloning": 0}, {"max_cloning": "2"}):
            self.assertError(X.client.post("/v1/migrations", dict(mig_body(), **bad)), 400,
                             "invalid_request")

        path = "/v1/migrations/%s/cutover" % mig
        self.assertIn("cutover needs it migrating",
                      self.assertError(X.client.post(path), 409, "conflict")["message"])
        X.redis("HSET", "xm:mig:" + mig, "status", "migrating")
        X.redis("HSET", "xm:mig:" + plain, "status", "migrating")
        self.assertIn("does not wait for a cutover", self.assertError(
            X.client.post("/v1/migrations/%s/cutover" % plain), 409, "conflict")["message"])
        self.assertIn("only hosts awaiting_cutover", self.assertError(
            X.client.post(path), 409, "conflict")["message"])
        # web1's first copy is in, as xm-clone leaves a host of a manual cutover
        X.redis("HSET", "xm:host:%s:web1" % mig, "phase", "clone", "status", "awaiting_cutover")
        self.assertEqual(X.client.get("/v1/migrations/" + mig).json["hosts"][1]["status"],
                         "awaiting_cutover")
        e = self.assertError(X.client.post(path + "?hosts=web1,db1"), 409, "conflict")
        self.assertIn("db1 is queued in discovery", e["message"])
        self.assertError(X.client.post(path + "?hosts=nosuch"), 404, "not_found")
        self.assertError(X.client.post(path + "?freeze=maybe"), 400, "invalid_request")
        before = len(jobs_of("clone", mig))
        r = X.client.post(path + "?freeze=true&hosts=web1,web1")
        self.assertEqual(r.status, 202, r)
        self.assertEqual((r.json["migration"], r.json["status"], len(r.json["hosts"])),
                         (mig, "cutover", 1))
        jobs = jobs_of("clone", mig)
        self.assertEqual(len(jobs), before + 1)
        job = jobs[-1][1]
        self.assertEqual((job["host"], job["job"], json.loads(job["payload"])),
                         ("web1", r.json["hosts"][0]["job"], {"final": True, "freeze": True}))
        web1 = X.client.get("/v1/migrations/" + mig).json["hosts"][1]
        self.assertEqual((web1["phase"], web1["status"]), ("clone", "queued"))
        self.assertIn("host.cutover", [e["type"] for e in events_of(mig)])
        # queued once: a second call finds no host awaiting cutover
        self.assertError(X.client.post(path), 409, "conflict")
        self.assertEqual(len(jobs_of("clone", mig)), before + 1)

    # ---- blueprint and approval

    def test_blueprint_get_put_and_rules(self):
        mig = create_mig(("web1", "db1"))
        path = "/v1/migrations/%s/blueprint" % mig
        self.assertError(X.client.get(path), 404, "not_found")
        bp = blueprint(("web1", "db1"), subnets=(("app", "10.20.1.0/24"), ("data", "10.20.2.0/24")),
                       placement={"web1": "app", "db1": "data"})
        r = X.client.put(path, bp)
        self.assertEqual((r.status, r.json), (200, bp), r)
        r = X.client.get(path)
        self.assertEqual((r.status, r.json), (200, bp), r)
        self.assertIn("blueprint.updated", [e["type"] for e in events_of(mig)])

        cases = [
            ("overlapping subnets", blueprint(("web1", "db1"), subnets=(
                ("app", "10.20.0.0/23"), ("data", "10.20.1.0/24"))), "/network/subnets/1/cidr"),
            ("subnet outside the network", blueprint(("web1", "db1"), subnets=(
                ("app", "10.99.1.0/24"),)), "/network/subnets/0/cidr"),
            ("subnet host bits", blueprint(("web1", "db1"), subnets=(
                ("app", "10.20.1.1/24"),)), "/network/subnets/0/cidr"),
            ("network host bits", blueprint(("web1", "db1"), net="10.20.0.1/16"),
             "/network/cidr"),
            ("subnet name twice", blueprint(("web1", "db1"), subnets=(
                ("app", "10.20.1.0/24"), ("app", "10.20.2.0/24"))), "/network/subnets/1/name"),
            ("host not in the migration", blueprint(("web1", "db1", "mail1")), "/hosts/2/host"),
            ("host placed twice", dict(bp, hosts=bp["hosts"] + bp["hosts"][:1]),
             "/hosts/2/host"),
            ("host unplaced", blueprint(("web1",)), "/hosts"),
            ("unknown subnet", blueprint(("web1", "db1"), placement={"web1": "nope",
                                                                      "db1": "app"}),
             "/hosts/0/subnet"),
            ("schema: machine type", dict(bp, hosts=[dict(bp["hosts"][0],
                                                         machine_type="t3 large")]
                                          + bp["hosts"][1:]), "/hosts/0/machine_type"),
            ("schema: device", dict(bp, hosts=[dict(bp["hosts"][0],
                                                   disks=[{"device": "/dev/sda;reboot"}])]
                                    + bp["hosts"][1:]), "/hosts/0/disks/0/device"),
            ("schema: firewall port", dict(bp, firewall=[{"protocol": "tcp", "port": 70000,
                                                          "source": "0.0.0.0/0"}]),
             "/firewall/0/port"),
            ("schema: missing network", {"hosts": bp["hosts"]}, "/network"),
        ]
        for what, body, want in cases:
            with self.subTest(what):
                self.assertError(X.client.put(path, body), 400, "invalid_request", want)
        self.assertEqual(X.client.get(path).json, bp)  # unchanged by the refusals
        u = str(uuid.uuid4())
        self.assertError(X.client.put("/v1/migrations/%s/blueprint" % u, bp), 404)
        self.assertError(X.client.get("/v1/migrations/%s/blueprint" % u), 404)

    def test_approve(self):
        mig = create_mig(("web1",))
        path = "/v1/migrations/%s/approve" % mig
        e = self.assertError(X.client.post(path), 409, "conflict")
        self.assertIn("discovering", e["message"])
        # what discovery does when it is done
        X.redis("HSET", "xm:mig:" + mig, "status", "awaiting_approval")
        self.assertError(X.client.post(path), 409, "conflict")  # no blueprint yet
        bp = blueprint(("web1",))
        self.assertEqual(X.client.put("/v1/migrations/%s/blueprint" % mig, bp).status, 200)
        self.assertEqual(jobs_of("network", mig), [])
        r = X.client.post(path)
        self.assertEqual((r.status, r.json), (202, {"id": mig, "status": "approved"}), r)
        jobs = jobs_of("network", mig)
        self.assertEqual(len(jobs), 1, jobs)
        f = jobs[0][1]
        self.assertEqual((f["host"], f["phase"], f["attempt"], f["payload"]),
                         ("-", "network", "1", "{}"), f)
        self.assertRegex(f["job"], r"^[0-9a-f]{32}$")
        h = X.redis.hgetall("xm:mig:" + mig)
        self.assertEqual((h["status"], h["approved_by"]), ("approved", X.token_name))
        self.assertIn("migration.approved", [e["type"] for e in events_of(mig)])

        self.assertError(X.client.post(path), 409, "conflict")
        self.assertEqual(len(jobs_of("network", mig)), 1)
        # the message names the status (it was read from a freed reply once)
        e = self.assertError(X.client.put("/v1/migrations/%s/blueprint" % mig, bp), 409,
                             "conflict")
        self.assertIn("migration is approved", e["message"])
        self.assertError(X.client.post("/v1/migrations/%s/approve" % uuid.uuid4()), 404)
        # a cancelled migration cannot be approved
        other = create_mig(("web1",), blueprint=bp)
        self.assertEqual(X.client.delete("/v1/migrations/" + other).status, 200)
        self.assertError(X.client.post("/v1/migrations/%s/approve" % other), 409)

    # ---- hosts

    def test_host_retry_after_a_real_failure(self):
        mig = create_mig(("h1", "h2"))
        retry = "/v1/migrations/%s/hosts/%%s/retry" % mig
        e = self.assertError(X.client.post(retry % "h1"), 409, "conflict")
        self.assertIn("queued", e["message"])
        self.assertError(X.client.post(retry % "nohost"), 404, "not_found")
        self.assertError(X.client.post("/v1/migrations/%s/hosts/h1/retry" % uuid.uuid4()), 404)

        # A worker of the discovery phase that reads only what is added from now on,
        # consuming one job that fails for good.
        stream = "xm:q:discovery"
        try:
            X.redis("XGROUP", "CREATE", stream, "workers", "$", "MKSTREAM")
        except Exception as e:  # noqa: BLE001 - BUSYGROUP: it exists; move it to the end
            self.assertIn("BUSYGROUP", str(e))
            X.redis("XGROUP", "SETID", stream, "workers", "$")
        old_job = secrets.token_hex(16)
        payload = '{"fail":"permanent"}'
        entry = X.redis("XADD", stream, "*", "job", old_job, "migration", mig, "host", "h1",
                        "disk", "", "phase", "discovery", "attempt", "1", "group", "",
                        "enqueued", str(int(time.time() * 1e6)), "payload", payload)
        env = dict(X.env, XM_CONSUMER="t1", XM_MAX_ATTEMPTS="1", XM_BLOCK_MS="100",
                   XM_HEARTBEAT_MS="200")
        X.worker = Process([ARGS.noop, "discovery"], env, X.worker_log)
        try:
            def failed():
                if not X.worker.alive():
                    raise AssertionError("xm-noop exited with %s" % X.worker.proc.returncode)
                h = X.redis.hgetall("xm:host:%s:h1" % mig)
                return h.get("status") == "failed" and h.get("failed_job") and h
            h = wait_for(failed, 15, "host h1 to fail")
        finally:
            rc = X.worker.stop()
        self.assertEqual(rc, 0, "xm-noop exit status")
        self.assertTrue(h.get("error"), h)
        self.assertEqual(json.loads(h["failed_job"])["job"], old_job)
        self.assertIn(old_job, json.dumps(X.redis.xrange("xm:dead")))
        m = X.client.get("/v1/migrations/" + mig).json
        h1 = next(x for x in m["hosts"] if x["name"] == "h1")
        self.assertEqual(h1["status"], "failed")
        self.assertTrue(h1["error"])

        r = X.client.post(retry % "h1")
        self.assertEqual(r.status, 202, r)
        new_job = r.json["job"]
        self.assertEqual((r.json["host"], r.json["phase"], r.json["status"]),
                         ("h1", "discovery", "queued"))
        self.assertRegex(new_job, r"^[0-9a-f]{32}$")
        self.assertNotEqual(new_job, old_job)
        later = X.redis.xrange(stream, "(" + entry)
        self.assertEqual(len(later), 1, later)
        f = later[0][1]
        self.assertEqual((f["job"], f["migration"], f["host"], f["phase"], f["attempt"],
                          f["payload"]), (new_job, mig, "h1", "discovery", "1", payload), f)
        self.assertEqual(X.redis("HGET", "xm:host:%s:h1" % mig, "status"), "queued")
        self.assertIn("host.retry", [e["type"] for e in events_of(mig)])
        self.assertError(X.client.post(retry % "h1"), 409, "conflict")  # queued again

        # nothing to retry in a cancelled migration
        X.redis("HSET", "xm:host:%s:h2" % mig, "status", "failed", "failed_job",
                X.redis("HGET", "xm:host:%s:h1" % mig, "failed_job"))
        self.assertEqual(X.client.delete("/v1/migrations/" + mig).status, 200)
        self.assertError(X.client.post(retry % "h2"), 409, "conflict")

    def test_host_phases(self):
        mig = create_mig(("h1", "h2"))
        base = "/v1/migrations/%s/hosts/%%s/phases/%%s" % mig
        for phase in ("import", "network", "convert", "nope", "done"):
            with self.subTest(phase=phase):
                self.assertError(X.client.post(base % ("h1", phase)), 400, "invalid_request")
        e = self.assertError(X.client.post(base % ("h1", "prep")), 409, "conflict")  # queued
        self.assertIn("queued", e["message"])
        self.assertError(X.client.post(base % ("nohost", "prep")), 404, "not_found")
        self.assertError(X.client.post("/v1/migrations/%s/hosts/h1/phases/prep" % uuid.uuid4()),
                         404, "not_found")

        X.redis("HSET", "xm:host:%s:h1" % mig, "status", "done")
        r = X.client.post(base % ("h1", "prep"))
        self.assertEqual(r.status, 202, r)
        self.assertEqual((r.json["host"], r.json["phase"], r.json["status"]),
                         ("h1", "prep", "queued"))
        jobs = jobs_of("prep", mig)
        self.assertEqual(len(jobs), 1)
        f = jobs[0][1]
        self.assertEqual((f["job"], f["host"], f["phase"], f["attempt"], f["payload"]),
                         (r.json["job"], "h1", "prep", "1", "{}"), f)
        h = X.redis.hgetall("xm:host:%s:h1" % mig)
        self.assertEqual((h["phase"], h["status"]), ("prep", "queued"))
        self.assertError(X.client.post(base % ("h1", "prep")), 409, "conflict")  # busy now
        self.assertIn("host.rerun", [e["type"] for e in events_of(mig)])

        for status, query, payload in (("failed", "?dry_run=true", {"dry_run": True}),
                                       ("done", "?dry_run=false", {}),
                                       ("done", "?dry_run=1", {})):
            with self.subTest(query=query):
                X.redis("HSET", "xm:host:%s:h2" % mig, "status", status)
                r = X.client.post(base % ("h2", "clone") + query)
                self.assertEqual(r.status, 202, r)
                f = [f for _, f in jobs_of("clone", mig) if f["job"] == r.json["job"]]
                self.assertEqual(len(f), 1)
                self.assertEqual(json.loads(f[0]["payload"]), payload)
        X.redis("HSET", "xm:host:%s:h2" % mig, "status", "done")
        r = X.client.post(base % ("h2", "discovery"))
        self.assertEqual(r.status, 202, r)

        X.redis("HSET", "xm:host:%s:h2" % mig, "status", "done")
        self.assertEqual(X.client.delete("/v1/migrations/" + mig).status, 200)
        self.assertError(X.client.post(base % ("h2", "prep")), 409, "conflict")

    def test_host_prep_result(self):
        """GET .../hosts/{host}/prep: xm:prep:<id>:<host> as xm-prep writes it."""
        mig = create_mig(("h1",))
        path = "/v1/migrations/%s/hosts/%%s/prep" % mig
        self.assertError(X.client.get(path % "h1"), 404, "not_found")  # no run yet
        self.assertError(X.client.get(path % "nohost"), 404, "not_found")
        diff = [{"path": "/etc/fstab", "diff": [{"before": "a\n", "after": "b\n"}]}]
        X.redis("HSET", "xm:prep:%s:h1" % mig, "job", "j1", "dry_run", "true",
                "finished", "1700000000000", "distribution", "Debian 12",
                "backup", "/var/lib/xmigrate/backup/" + mig, "changed", '["/etc/fstab"]',
                "findings", '[{"rule":"prep-agent","message":"m"}]', "diffs", json.dumps(diff))
        r = X.client.get(path % "h1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json["migration"], r.json["host"], r.json["job"], r.json["dry_run"],
                          r.json["finished"], r.json["changed"], r.json["diffs"]),
                         (mig, "h1", "j1", True, 1700000000000, ["/etc/fstab"], diff))
        self.assertEqual(r.json["findings"][0]["rule"], "prep-agent")

    # ---- discovery callback

    def test_discovery_callback(self):
        mig = create_mig(("h1", "h2"))
        other = create_mig(("h1",))
        path = "/v1/callbacks/discovery/" + mig
        h = X.redis.hgetall("xm:mig:" + mig)
        self.assertRegex(h["callback_sha"], r"^[0-9a-f]{64}$")
        self.assertNotEqual(h["callback_sealed"], h["callback_sha"])
        # The real token is only sealed for the discovery worker; use one of our own.
        tok = X.secret(rand_alnum(43))
        X.redis("HSET", "xm:mig:" + mig, "callback_sha", sha256_hex(tok))
        other_tok = X.secret(rand_alnum(43))
        X.redis("HSET", "xm:mig:" + other, "callback_sha", sha256_hex(other_tok))

        facts = {"os": {"family": "Debian", "version": "12"}, "mem_mb": 2048,
                 "disks": [{"device": "/dev/sda", "size": 10737418240}]}
        body = {"host": "h1", "facts": facts}
        r = X.client.post(path, body, token=tok)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json, {"migration": mig, "host": "h1", "accepted": True})
        self.assertEqual(json.loads(X.redis("GET", "xm:facts:%s:h1" % mig)), facts)
        self.assertTrue(X.redis("HGET", "xm:host:%s:h1" % mig, "discovered"))
        self.assertIn("discovery.facts", [e["type"] for e in events_of(mig)])
        self.assertIsNone(X.redis("GET", "xm:facts:%s:h2" % mig))

        wrong = tok[:-1] + ("A" if tok[-1] != "A" else "B")
        self.assertError(X.client.post(path, body, token=wrong), 403, "forbidden")
        self.assertError(X.client.post(path, body, token=X.token), 403, "forbidden")
        self.assertError(X.client.post(path, body, token=other_tok), 403, "forbidden")
        self.assertError(X.client.post("/v1/callbacks/discovery/%s" % uuid.uuid4(), body,
                                       token=tok), 403, "forbidden")
        r = X.client.post(path, body, token="")
        self.assertError(r, 401, "unauthorized")
        self.assertEqual(r.header("WWW-Authenticate"), "Bearer")
        self.assertError(X.client.post(path, {"host": "h9", "facts": {}}, token=tok), 404,
                         "not_found", "/host")
        self.assertError(X.client.post(path, {"host": "a;b", "facts": {}}, token=tok), 400,
                         "invalid_request", "/host")
        self.assertError(X.client.post(path, {"host": "h1", "facts": []}, token=tok), 400,
                         "invalid_request", "/facts")
        self.assertError(X.client.post(path, raw=b"{", token=tok), 400, "invalid_json")
        self.assertError(X.client.post(path, body, token=tok, content_type="text/plain"), 415)
        # a callback token opens nothing else
        self.assertError(X.client.get("/v1/migrations/" + mig, token=tok), 401)
        self.assertError(X.client.get("/v1/migrations/%s/events" % mig, token=tok), 401)

    # ---- agent (xm-agent during clone)

    def test_agent_urls_and_progress(self):
        mig = create_mig(("h1",))
        tok = X.secret(rand_alnum(43))
        X.redis("HSET", "xm:mig:" + mig, "callback_sha", sha256_hex(tok))
        base = "/v1/agent/%s/h1/sda" % mig
        r = X.client.post(base + "/urls", {"chunks": [0, 7, 123456]}, token=tok)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(r.json["urls"]), ["0", "123456", "7"])
        for idx, url in r.json["urls"].items():
            self.assertRegex(url, r"^https://s3\.[a-z0-9-]+\.amazonaws\.com/xmigrate-[0-9a-f]{12}/"
                             r"xmigrate/%s/h1/sda/%s\.zst\?" % (mig, idx))
            self.assertIn("X-Amz-Signature=", url)
            self.assertIn("X-Amz-Expires=3600", url)
        self.assertIn("/xmigrate/%s/h1/sda/manifest.json?" % mig, r.json["manifest_url"])
        self.assertGreater(r.json["expires"], time.time() + 3000)
        # an empty batch is fine (the manifest URL alone)
        self.assertEqual(X.client.post(base + "/urls", {"chunks": []}, token=tok).status, 200)

        prog = {"bytes_read": 33554432, "bytes_sent": 1048576, "bytes_stored": 1048576,
                "device_size": 1073741824, "chunks_done": 2, "chunks_total": 64,
                "chunks_skipped": 0, "rate_bps": 1e6, "eta_s": 30, "phase": "copy",
                "consistency": "crash-consistent"}
        r = X.client.post(base + "/progress", prog, token=tok)
        self.assertEqual(r.status, 202, r)
        d = X.redis.hgetall("xm:disk:%s:h1:sda" % mig)
        self.assertEqual((d["bytes_copied"], d["size"], d["clone_phase"]),
                         ("33554432", "1073741824", "copy"))
        self.assertIn("sda", X.redis("SMEMBERS", "xm:host:%s:h1:disks" % mig))
        self.assertIn("clone.progress", [e["type"] for e in events_of(mig)])
        g = X.client.get("/v1/migrations/" + mig)
        disks = g.json["hosts"][0]["disks"]
        self.assertEqual((disks[0]["id"], disks[0]["bytes_copied"], disks[0]["size"]),
                         ("sda", 33554432, 1073741824))

        # bad input and the wrong door
        self.assertError(X.client.post(base + "/urls", {"chunks": [-1]}, token=tok), 400,
                         "invalid_request", "/chunks/0")
        self.assertError(X.client.post(base + "/urls", {"chunks": [3, 3]}, token=tok), 400,
                         "invalid_request", "/chunks")
        self.assertError(X.client.post(base + "/progress", {"phase": "copy"}, token=tok), 400,
                         "invalid_request")
        self.assertError(X.client.post("/v1/agent/%s/h9/sda/urls" % mig, {"chunks": [0]},
                                       token=tok), 404, "not_found")
        self.assertError(X.client.post(base + "/urls", {"chunks": [0]}, token=X.token), 403,
                         "forbidden")
        self.assertError(X.client.post(base + "/urls", {"chunks": [0]}, token=""), 401,
                         "unauthorized")


    def test_events_sse_and_resume(self):
        a = create_mig(("h1",))
        b = create_mig(("h1",))
        with SSE(X.client, "/v1/migrations/%s/events" % a) as s:
            self.assertEqual(s.status, 200)
            self.assertEqual(s.header("Content-Type"), "text/event-stream")
            evs = s.read_until(lambda ev: any(e["event"] == "migration.created" for e in ev),
                               what="migration.created")
            created = evs[0]
            self.assertEqual(created["event"], "migration.created")
            self.assertEqual((created["json"]["migration"], created["json"]["type"]),
                             (a, "migration.created"))
            # B changes first, then A: A's event arriving means B's would have too.
            self.assertEqual(X.client.put("/v1/migrations/%s/blueprint" % b,
                                          blueprint(("h1",))).status, 200)
            self.assertEqual(X.client.put("/v1/migrations/%s/blueprint" % a,
                                          blueprint(("h1",))).status, 200)
            evs = s.read_until(lambda ev: any(e["event"] == "blueprint.updated" for e in ev),
                               what="blueprint.updated")
            for e in evs:
                self.assertEqual(set(e) >= {"id", "event", "data"}, True, e)
                self.assertEqual(e["json"]["migration"], a, e)
                self.assertEqual(e["json"]["type"], e["event"])
            ids = [stream_id(e["id"]) for e in evs]
            self.assertEqual(ids, sorted(ids))
            self.assertEqual(len(ids), len(set(ids)))
            first_run = list(evs)
        self.assertNotIn(b, json.dumps(first_run))

        # resume after the first event: only the later ones
        with SSE(X.client, "/v1/migrations/%s/events" % a,
                 last_event_id=created["id"]) as s:
            self.assertEqual(s.status, 200)
            evs = s.read_until(lambda ev: any(e["event"] == "blueprint.updated" for e in ev),
                               what="blueprint.updated after resume")
            self.assertEqual([e["id"] for e in evs], [e["id"] for e in first_run[1:]])
            last = evs[-1]["id"]

        # resume after the last event: nothing old, then what happens next
        with SSE(X.client, "/v1/migrations/%s/events" % a, last_event_id=last) as s:
            self.assertEqual(s.status, 200)
            self.assertEqual(X.client.delete("/v1/migrations/" + a).status, 200)
            evs = s.read_until(lambda ev: ev, what="migration.cancelled")
            self.assertEqual([e["event"] for e in evs], ["migration.cancelled"])
            self.assertGreater(stream_id(evs[0]["id"]), stream_id(last))

        for bad in ("abc", "1-", "-1", "1-2-3", "1 -2", "0x1-0", "99999999999999999999999-0"):
            with self.subTest(last_event_id=bad):
                s = SSE(X.client, "/v1/migrations/%s/events" % a, last_event_id=bad)
                s.close()
                self.assertEqual(s.status, 400, s.body)
                self.assertEqual(json.loads(s.body)["error"]["code"], "invalid_request")
        s = SSE(X.client, "/v1/migrations/%s/events" % uuid.uuid4())
        s.close()
        self.assertEqual(s.status, 404, s.body)

    # ---- tokens

    def test_token_revoke(self):
        name = "revoke-me-" + rand_alnum(4)
        tok = X.secret(X.cli_token_create(name))
        self.assertEqual(X.client.get("/v1/credentials", token=tok).status, 200)
        rc, out = X.cli("token", "list")
        self.assertEqual(rc, 0)
        self.assertIn(name, out)
        self.assertNotIn(tok, out)
        rc, _ = X.cli("token", "revoke", name)
        self.assertEqual(rc, 0)
        r = X.client.get("/v1/credentials", token=tok)
        self.assertError(r, 401, "unauthorized")
        self.assertEqual(X.cli("token", "revoke", name)[0], 1)  # nothing left to revoke
        self.assertEqual(X.cli("token", "create", "bad name")[0], 2)
        self.assertEqual(X.client.get("/v1/credentials").status, 200)  # ours still works

    # ---- Redis down

    def test_zz_redis_down_503_then_recovery(self):
        cred = shared_cred("aws")
        mig = create_mig(("h1",))
        stream = SSE(X.client, "/v1/migrations/%s/events" % mig)
        last = stream.read_until(lambda ev: ev, what="migration.created")[-1]["id"]

        X.redis.close()
        X.redis_server.stop()
        try:
            stream.wait_end(10)  # a stream it can no longer feed is ended by the server
        finally:
            stream.close()
        # Several requests, so every server thread meets the dead connection.
        for _ in range(6):
            for method, path, body, tok in (("GET", "/healthz", None, ""),
                                            ("GET", "/v1/credentials", None, None),
                                            ("POST", "/v1/migrations", mig_body(), None),
                                            ("GET", "/metrics", None, None),
                                            ("GET", "/v1/migrations/%s/events" % mig, None,
                                             None)):
                r = X.client.request(method, path, body=body, token=tok)
                self.assertError(r, 503, "unavailable")
                self.assertEqual(r.header("Retry-After"), "1", r)
        self.assertTrue(X.api.alive())

        X.redis_server.start()  # same port, same AOF
        wait_for(lambda: X.client.get("/healthz", token="").status == 200, 15,
                 "/healthz 200 after Redis restarted")
        for _ in range(10):
            r = X.client.get("/v1/credentials/" + cred)  # kept in the AOF
            self.assertEqual(r.status, 200, r)
        self.assertEqual(X.client.post("/v1/migrations", mig_body()).status, 201)
        # the event stream resumes where it stopped
        self.assertEqual(X.client.delete("/v1/migrations/" + mig).status, 200)
        with SSE(X.client, "/v1/migrations/%s/events" % mig, last_event_id=last) as s:
            evs = s.read_until(lambda ev: ev, what="migration.cancelled")
            self.assertEqual([e["event"] for e in evs], ["migration.cancelled"])
        with open(X.api_log) as f:
            self.assertIn('msg="redis unavailable"', f.read())

        # Redis restarting while xm-api is idle: every thread holds a connection that
        # Redis closed, and still no request fails once Redis is back.
        for _ in range(20):
            self.assertEqual(X.client.get("/v1/credentials/" + cred).status, 200)
        X.redis.close()
        X.redis_server.stop()
        X.redis_server.start()
        statuses = [X.client.get("/v1/credentials/" + cred).status for _ in range(20)]
        self.assertEqual(statuses, [200] * 20)


def _leaves(o):
    if isinstance(o, dict):
        for v in o.values():
            yield from _leaves(v)
    elif isinstance(o, str):
        yield o


# ---------------------------------------------------------------- after everything

class ZFinal(Base):
    """Runs last, in name order: route coverage, clean stop, and the greps."""

    def test_1_every_route_answered_2xx(self):
        with open(os.path.join(SOURCE_ROOT, "api", "main.c")) as f:
            names = re.findall(r'\{EVHTTP_REQ_\w+,\s*"[^"]*",\s*"([^"]+)"', f.read())
        self.assertGreaterEqual(len(names), 17, names)
        body = X.client.get("/metrics").body
        ok = set(re.findall(r'xm_api_requests_total\{route="([^"]+)",code="2\d\d"\}', body))
        self.assertEqual(sorted(set(names) - ok), [], "routes never answered with 2xx")
        codes = set(re.findall(r'xm_api_requests_total\{route="[^"]+",code="(\d+)"\}', body))
        self.assertTrue({"400", "401", "403", "404", "405", "409", "415", "503"} <= codes, codes)

    def test_2_sigterm_exits_0(self):
        self.assertTrue(X.api.alive())
        self.assertEqual(X.api.stop(), 0)
        with open(X.api_log) as f:
            self.assertIn('msg="xm-api stopping"', f.read())

    def test_3_no_sanitizer_report(self):
        for path in X.logs:
            if not os.path.exists(path):
                continue
            with open(path, errors="replace") as f:
                bad = [line for line in f if "Sanitizer" in line or "runtime error:" in line]
            self.assertEqual(bad, [], path)

    def test_4_no_secret_in_logs_responses_or_at_rest(self):
        self.assertGreater(len(X.secrets), 10)
        places = [("response", t) for t in X.client.received]
        for path in X.logs:
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    places.append((path, f.read()))
        # secrets at rest are sealed: the AOF holds none of them in the clear
        aof = os.path.join(X.redis_server.dir)
        for root, _, files in os.walk(aof):
            for fn in files:
                if fn != "redis.log":
                    with open(os.path.join(root, fn), "rb") as f:
                        places.append((fn, f.read().decode("latin-1")))
        self.assertGreater(len(X.client.received), 100)
        leaks = []
        for where, text in places:
            for s in X.secrets:
                if s in text:
                    leaks.append("%s: %s...%s" % (where if where != "response" else
                                                  "response " + text[:60].replace("\n", " "),
                                                  s[:4], s[-2:]))
            if re.search(r"PRIVATE KEY-----(\\n|\n)[A-Za-z0-9+/]", text):
                leaks.append("%s: a PEM private key" % where)
        self.assertEqual(leaks, [])


# ---------------------------------------------------------------- runner

def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--api", required=True, help="the xm-api binary")
    p.add_argument("--schemas", required=True, help="the schemas folder")
    p.add_argument("--noop", help="the xm-noop binary (default: next to xm-api's build)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("-k", dest="pattern", help="only tests whose name contains this")
    ARGS = p.parse_args()
    ARGS.api = os.path.abspath(ARGS.api)
    ARGS.schemas = os.path.abspath(ARGS.schemas)
    if not ARGS.noop:
        ARGS.noop = os.path.join(os.path.dirname(os.path.dirname(ARGS.api)), "workers", "noop",
                                 "xm-noop")
    loader = unittest.TestLoader()
    if ARGS.pattern:
        loader.testNamePatterns = ["*%s*" % ARGS.pattern]
    suite = unittest.TestSuite([loader.loadTestsFromTestCase(ApiTest),
                                loader.loadTestsFromTestCase(ZFinal)])
    # setUpModule/tearDownModule run around the suite because the cases live here.
    t0 = time.monotonic()
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    # Count tests, not subtests: a test fails once however many of its subtests do; a
    # failure outside any test (module set-up) counts as one more.
    bad_tests, other = set(), 0
    for test, _ in result.failures + result.errors:
        case = getattr(test, "test_case", test)
        if isinstance(case, unittest.TestCase):
            bad_tests.add(case.id())
        else:
            other += 1
    bad_tests |= {t.id() for t in result.unexpectedSuccesses}
    failed = len(bad_tests) + other
    passed = max(0, result.testsRun - len(bad_tests) - len(result.skipped))
    if X is not None:
        if failed or ARGS.keep:
            print("logs kept in %s" % X.tmp)
        else:
            shutil.rmtree(X.tmp, ignore_errors=True)
    print("took %.1fs" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed))
    sys.stdout.flush()
    return 1 if failed or result.testsRun == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
