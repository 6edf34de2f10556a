#!/usr/bin/env python3
"""
Integration tests of xmctl (issue 11) against a real xm-api, redis-server and xm-noop.

    test_cli.py --xmctl build/cli/xmctl --api build/api/xm-api --schemas schemas
                [--noop build/workers/noop/xm-noop] [--keep] [-k PATTERN]

Starts its own redis-server (free loopback port, AOF on) and xm-api (free port, random
XM_MASTER_KEY), makes an API token with `xm-api token create`, and runs xmctl as an
operator would, each command in human and --json mode: login (the token from a file or
stdin, the 0600 login file, XMCTL_TOKEN, a bad token), credentials add (secrets from
files and stdin) and list, migrate create from YAML and JSON (credentials by name), a
YAML file xmctl must refuse, approve, status, retry of a host a real worker (xm-noop)
failed, cancel, rollback, and watch: plain lines and --json following a migration a
real worker drives until it is cancelled, resuming with Last-Event-ID across an xm-api
restart without losing or repeating an event, the exit code of every final status, the
progress bars on a terminal (a pty), giving up when the API stays away. Errors must
reach the operator as the API words them, and exit codes must follow the contract in
cli/xmctl.h. At the end every output of xmctl and xm-api's log are searched for each
secret the test used, and for sanitizer reports.

Prints "N passed, N failed" as its last line; exits non-zero on any failure.
Standard library only; the helpers are tests/integration/api/xmtest.py.
"""

import argparse
import base64
import hashlib
import json
import os
import pty
import re
import secrets
import select
import shutil
import signal
import stat
import string
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
from xmtest import Client, Process, Redis, RedisServer, clean_env, free_port, wait_for  # noqa: E402

ARGS = None
X = None

# The exit codes of cli/xmctl.h.
OK, REFUSED, USAGE, UNREACHABLE, FAILED, CANCELLED = 0, 1, 2, 3, 4, 5


def rand_alnum(n):
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


class System:
    """redis-server, xm-api, and every output xmctl gave (for the secret search)."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="xm-cli-it-")
        self.secrets = []
        self.outputs = []  # (argv, stdout, stderr) of every xmctl run
        self.redis_server = RedisServer(self.tmp)
        self.api_log = os.path.join(self.tmp, "xm-api.log")
        self.worker_log = os.path.join(self.tmp, "xm-noop.log")
        self.cfg = os.path.join(self.tmp, "config")
        self.master_key = self.secret(secrets.token_hex(32))
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
            "XM_API_TOKEN_CACHE_MS": "0",
            "XM_API_SSE_POLL_MS": "50",
            "XM_SCHEMAS_DIR": ARGS.schemas,
            "XM_MASTER_KEY": self.master_key,
            "XM_LOG_LEVEL": "debug",
        })
        p = subprocess.run([ARGS.api, "token", "create", "cli-it"], env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        assert p.returncode == 0, p
        self.token = self.secret(p.stdout.decode().strip())
        self.start_api()
        self.client = Client(self.api_port, self.token)
        self.url = "http://127.0.0.1:%d" % self.api_port

    def start_api(self):
        self.api = Process([ARGS.api], self.env, self.api_log)
        probe = Client(self.api_port)

        def healthy():
            if not self.api.alive():
                raise AssertionError("xm-api exited with %s; see %s" %
                                     (self.api.proc.returncode, self.api_log))
            return probe.get("/healthz", token="").status == 200
        wait_for(healthy, 20, "xm-api /healthz")

    def xmctl_env(self, token=True, extra=None):
        """xmctl's environment: the login folder of the test, the API, and by default
        the token through XMCTL_TOKEN (login tests use the login file instead)."""
        env = clean_env({"XDG_CONFIG_HOME": self.cfg, "XMCTL_API": self.url})
        env.pop("XMCTL_TOKEN", None)
        if token:
            env["XMCTL_TOKEN"] = self.token
        env.update(extra or {})
        return env

    def run(self, *args, stdin=None, token=True, env=None, timeout=60):
        """Run xmctl ARGS; (rc, stdout, stderr) as text."""
        e = env if env is not None else self.xmctl_env(token)
        p = subprocess.run([ARGS.xmctl] + list(args), env=e, input=stdin,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        out, err = p.stdout.decode(), p.stderr.decode()
        self.outputs.append((args, out, err))
        return p.returncode, out, err

    def stop(self):
        for proc in (self.worker, self.api):
            if proc and proc.alive():
                proc.proc.kill()
                proc.proc.wait()
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


def pem(label):
    body = base64.b64encode(secrets.token_bytes(360)).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    for line in lines:
        if len(line) >= 32:
            X.secret(line)
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)


def write(name, text, mode=0o600):
    path = os.path.join(X.tmp, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


_creds = {}


def cred(kind):
    """One credential per kind, made through the API (xmctl's own adds are tested apart)."""
    if kind not in _creds:
        secret = aws_secret() if kind == "aws" else {"user": "root",
                                                     "private_key": pem("OPENSSH PRIVATE KEY")}
        name = "fx-%s-%s" % (kind, rand_alnum(6).lower())
        r = X.client.post("/v1/credentials", {"name": name, "kind": kind, "secret": secret})
        assert r.status == 201, r
        _creds[kind] = (r.json["id"], name)
    return _creds[kind]


def mig_body(hosts=("web1",), blueprint=False):
    body = {"name": "it-" + rand_alnum(6).lower(), "cloud": "aws", "region": "eu-west-1",
            "credential": cred("aws")[0],
            "hosts": [{"name": h, "address": "10.1.0.%d" % (i + 10), "credential": cred("ssh")[0]}
                      for i, h in enumerate(hosts)]}
    if blueprint:
        body["blueprint"] = {
            "network": {"name": "it", "cidr": "10.20.0.0/16",
                        "subnets": [{"name": "app", "cidr": "10.20.1.0/24"}]},
            "hosts": [{"host": h, "machine_type": "t3.medium", "subnet": "app"} for h in hosts]}
    return body


def create_mig(hosts=("web1",), blueprint=False):
    """A migration made through xmctl from a JSON file; its id."""
    path = write("mig-%s.json" % rand_alnum(6), json.dumps(mig_body(hosts, blueprint)))
    rc, out, err = X.run("--json", "migrate", "create", "-f", path)
    assert rc == OK, (rc, out, err)
    return json.loads(out)["id"]


def events_of(mig):
    return [f for _, f in X.redis.xrange("xm:events") if f.get("migration") == mig]


def api_error(method, path, body=None):
    """What the API itself answers: (status, error object)."""
    r = X.client.request(method, path, body=body)
    return r.status, r.json["error"]


class Base(unittest.TestCase):
    maxDiff = None

    def assertRefused(self, result, status, message, code=None):
        """xmctl exited 1 (or 3 for 5xx) and showed the API's message word for word."""
        rc, out, err = result
        self.assertEqual(rc, REFUSED if status < 500 else UNREACHABLE, result)
        self.assertIn(message, err, result)
        self.assertIn("HTTP %d" % status, err, result)
        if code:
            self.assertIn(code, err, result)


# ---------------------------------------------------------------- login and tokens

class T1Login(Base):

    def test_login_logout_and_token_sources(self):
        cfgfile = os.path.join(X.cfg, "xmctl", "config.json")
        # nothing to use yet
        rc, out, err = X.run("credentials", "list", token=False)
        self.assertEqual(rc, USAGE, (out, err))
        self.assertIn("no API token", err)
        # a bad token: the API's 401 message, word for word, and nothing kept
        r = X.client.get("/v1/migrations?limit=1", token="not-a-real-token")
        self.assertEqual(r.status, 401)
        res = X.run("login", stdin=b"not-a-real-token\n", token=False)
        self.assertRefused(res, 401, r.json["error"]["message"], "unauthorized")
        self.assertFalse(os.path.exists(cfgfile))
        # the token is never an argument
        rc, _, err = X.run("login", X.token, token=False)
        self.assertEqual(rc, USAGE, err)
        self.assertFalse(os.path.exists(cfgfile))
        # from a file (human), then from stdin (--json)
        tokfile = write("token", X.token + "\n")
        rc, out, err = X.run("login", "--token-file", tokfile, token=False)
        self.assertEqual(rc, OK, err)
        self.assertIn("logged in to %s" % X.url, out)
        self.assertEqual(stat.S_IMODE(os.stat(cfgfile).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(cfgfile)).st_mode), 0o700)
        with open(cfgfile) as f:
            self.assertEqual(json.load(f), {"api": X.url, "token": X.token})
        rc, out, err = X.run("--json", "login", stdin=(X.token + "\n").encode(), token=False)
        self.assertEqual(rc, OK, err)
        self.assertEqual(json.loads(out), {"api": X.url, "file": cfgfile})
        # the login file is used without XMCTL_TOKEN, and even without XMCTL_API
        env = X.xmctl_env(token=False)
        del env["XMCTL_API"]
        rc, out, err = X.run("--json", "credentials", "list", env=env)
        self.assertEqual(rc, OK, err)
        self.assertIn("items", json.loads(out))
        # XMCTL_TOKEN wins over the file
        rc, out, err = X.run("credentials", "list",
                             env=X.xmctl_env(False, {"XMCTL_TOKEN": "wrong-token"}))
        self.assertEqual(rc, REFUSED, err)
        # --api wins over XMCTL_API (here: a port nobody listens on)
        rc, out, err = X.run("--api", "http://127.0.0.1:%d" % free_port(), "status")
        self.assertEqual(rc, UNREACHABLE, err)
        self.assertIn("cannot reach the API", err)
        # a login file others can read is refused
        os.chmod(cfgfile, 0o644)
        rc, out, err = X.run("credentials", "list", token=False)
        self.assertEqual(rc, USAGE, err)
        self.assertIn("chmod 600", err)
        os.chmod(cfgfile, 0o600)
        # logout forgets it
        rc, out, err = X.run("logout", token=False)
        self.assertEqual(rc, OK, err)
        self.assertFalse(os.path.exists(cfgfile))
        rc, out, err = X.run("credentials", "list", token=False)
        self.assertEqual(rc, USAGE, err)

    def test_usage_and_help(self):
        rc, out, err = X.run()
        self.assertEqual(rc, USAGE)
        self.assertIn("usage: xmctl", err)
        rc, out, err = X.run("--help")
        self.assertEqual(rc, OK)
        for cmd in ("login", "credentials", "migrate", "approve", "status", "watch", "retry",
                    "cutover", "cancel", "rollback", "Exit codes"):
            self.assertIn(cmd, out)
        for args in (("frobnicate",), ("approve",), ("approve", "a", "b"), ("cancel",),
                     ("watch",), ("migrate", "create"), ("credentials", "add", "--name", "x"),
                     ("status", "../etc"), ("watch", "--interval", "0", "x"),
                     ("status", "--limit", "ten"), ("--api",), ("--api", "ftp://x", "status")):
            with self.subTest(args=args):
                rc, out, err = X.run(*args)
                self.assertEqual(rc, USAGE, (out, err))
                self.assertEqual(out, "")


# ---------------------------------------------------------------- credentials

class T2Credentials(Base):

    def test_add_each_way_and_list(self):
        # aws from stdin, human output
        s = aws_secret()
        name = "cli-aws-" + rand_alnum(5).lower()
        rc, out, err = X.run("credentials", "add", "--name", name, "--kind", "aws",
                             stdin=json.dumps(s).encode())
        self.assertEqual(rc, OK, err)
        self.assertRegex(out, r"^credential [0-9a-f-]{36} stored: %s \(aws\), identity %s, "
                              r"fingerprint hmac-sha256:[0-9a-f]{16}\n$" % (name,
                                                                             s["access_key_id"]))
        aws_id = out.split()[1]
        # ssh with a key file, --json: the API's reply
        keyfile = write("id_test", pem("OPENSSH PRIVATE KEY"))
        rc, out, err = X.run("--json", "credentials", "add", "--name", "cli-ssh-key", "--kind",
                             "ssh", "--user", "root", "--ssh-key-file", keyfile)
        self.assertEqual(rc, OK, err)
        j = json.loads(out)
        self.assertEqual((j["name"], j["kind"], j["identity"]), ("cli-ssh-key", "ssh", "root"))
        self.assertEqual(X.client.get("/v1/credentials/" + j["id"]).json["fingerprint"],
                         j["fingerprint"])
        # ssh with a password on stdin
        pw = X.secret(rand_alnum(20))
        rc, out, err = X.run("--json", "credentials", "add", "--name", "cli-ssh-pw", "--kind",
                             "ssh", "--user", "ubuntu", "--password-file", "-",
                             stdin=(pw + "\n").encode())
        self.assertEqual(rc, OK, err)
        pw_id = json.loads(out)["id"]
        # gcp: the key file as Google issues it is wrapped for the API
        sa = {"type": "service_account", "project_id": "xm-cli-project",
              "private_key_id": X.secret(secrets.token_hex(20)), "private_key": pem("PRIVATE KEY"),
              "client_email": "xm@xm-cli-project.iam.gserviceaccount.com"}
        rc, out, err = X.run("--json", "credentials", "add", "--name", "cli-gcp", "--kind", "gcp",
                             "--secret-file", write("sa.json", json.dumps(sa)))
        self.assertEqual(rc, OK, err)
        self.assertEqual(json.loads(out)["identity"], sa["client_email"])

        # list: --json is the API's body; human lists every one
        rc, out, err = X.run("--json", "credentials", "list")
        self.assertEqual(rc, OK, err)
        self.assertEqual(json.loads(out), X.client.get("/v1/credentials").json)
        rc, out, err = X.run("credentials", "list")
        self.assertEqual(rc, OK, err)
        self.assertTrue(out.startswith("ID "), out)
        for want in (aws_id, name, pw_id, "cli-ssh-key", "cli-gcp", s["access_key_id"]):
            self.assertIn(want, out)

    def test_refusals(self):
        # the API's schema error, word for word (compare with what the API says itself)
        bad = {"access_key_id": "lowercase-is-bad", "secret_access_key": X.secret(rand_alnum(40))}
        r = X.client.post("/v1/credentials", {"name": "bad", "kind": "aws", "secret": bad})
        self.assertEqual(r.status, 400, r)
        res = X.run("credentials", "add", "--name", "bad", "--kind", "aws",
                    stdin=json.dumps(bad).encode())
        self.assertRefused(res, 400, r.json["error"]["message"], "invalid_request")
        # --json: the error body on stdout
        rc, out, err = X.run("--json", "credentials", "add", "--name", "bad", "--kind", "aws",
                             stdin=json.dumps(bad).encode())
        self.assertEqual(rc, REFUSED)
        self.assertEqual(json.loads(out), r.json)
        # refused before sending: not JSON, not an object, a secret as an argument,
        # options that do not go together, a missing file
        for args, stdin in ((("--kind", "aws"), b"not json"), (("--kind", "aws"), b"[1]"),
                            (("--kind", "aws", "--secret", "x"), b""),
                            (("--kind", "aws", "--user", "u"), b"{}"),
                            (("--kind", "aws", "--user", "u", "--password-file", "-"), b"pw"),
                            (("--kind", "ssh", "--secret-file", "/nonexistent"), b"")):
            with self.subTest(args=args):
                rc, out, err = X.run("credentials", "add", "--name", "n", *args, stdin=stdin)
                self.assertEqual(rc, USAGE, (out, err))
                self.assertNotIn("not json", err)  # the secret is not echoed back


# ---------------------------------------------------------------- migrations

YAML = """\
# an operator's migration file: comments, flow style, quoting, names for credentials
name: "web tier {tag}"
cloud: aws
region: eu-west-1
credential: {aws}            # by name: xmctl finds the id
auto_approve: false
hosts:
  - name: web1
    address: 10.0.0.11
    credential: {ssh}
  - name: web2
    address: "10.0.0.12"
    port: 2222
    credential: {ssh_id}
blueprint:
  network: {{name: web, cidr: 10.20.0.0/16, subnets: [{{name: front, cidr: 10.20.1.0/24}}]}}
  hosts:
    - {{host: web1, machine_type: t3.medium, subnet: front}}
    - {{host: web2, machine_type: t3.medium, subnet: front}}
  firewall:
    - protocol: tcp
      port: 443
      source: 0.0.0.0/0
      description: 'https, from anywhere'
"""


class T3Migrations(Base):

    def test_create_from_yaml_and_json(self):
        tag = rand_alnum(4).lower()
        text = YAML.format(tag=tag, aws=cred("aws")[1], ssh=cred("ssh")[1], ssh_id=cred("ssh")[0])
        rc, out, err = X.run("migrate", "create", "-f", write("m.yaml", text))
        self.assertEqual(rc, OK, err)
        m = re.match(r"migration ([0-9a-f-]{36}) created: \"web tier %s\", aws eu-west-1, "
                     r"discovering\nhosts: web1 web2\nfollow it with: xmctl watch \1\n$" % tag, out)
        self.assertTrue(m, out)
        got = X.client.get("/v1/migrations/" + m.group(1)).json
        self.assertEqual(got["credential"], cred("aws")[0])
        self.assertEqual([(h["name"], h["address"], h["port"], h["credential"])
                          for h in got["hosts"]],
                         [("web1", "10.0.0.11", 22, cred("ssh")[0]),
                          ("web2", "10.0.0.12", 2222, cred("ssh")[0])])
        bp = X.client.get("/v1/migrations/%s/blueprint" % m.group(1)).json
        self.assertEqual(bp["firewall"], [{"protocol": "tcp", "port": 443, "source": "0.0.0.0/0",
                                           "description": "https, from anywhere"}])
        # the same from stdin, --json: the API's 201 body
        rc, out, err = X.run("--json", "migrate", "create", "-f", "-", stdin=text.encode())
        self.assertEqual(rc, OK, err)
        j = json.loads(out)
        self.assertEqual((j["status"], j["hosts"], j["name"]),
                         ("discovering", ["web1", "web2"], "web tier " + tag))
        self.assertNotEqual(j["id"], m.group(1))
        # a JSON file, human output
        path = write("m.json", json.dumps(mig_body(("db1",))))
        rc, out, err = X.run("migrate", "create", "-f", path)
        self.assertEqual(rc, OK, err)
        self.assertIn("hosts: db1\n", out)

    def test_create_refusals(self):
        # the API's validation message, word for word, for a YAML file
        body = mig_body(("web1",))
        body["hosts"][0]["port"] = 70000
        r = X.client.post("/v1/migrations", body)
        self.assertEqual(r.status, 400)
        text = "\n".join(["name: %s" % body["name"], "cloud: aws", "region: eu-west-1",
                          "credential: %s" % body["credential"], "hosts:",
                          "  - {name: web1, address: 10.1.0.10, port: 70000, credential: %s}" %
                          body["hosts"][0]["credential"]]) + "\n"
        res = X.run("migrate", "create", "-f", write("bad.yaml", text))
        self.assertRefused(res, 400, r.json["error"]["message"], "invalid_request")
        self.assertIn("/hosts/0/port", res[2])
        rc, out, err = X.run("--json", "migrate", "create", "-f", write("bad.yaml", text))
        self.assertEqual((rc, json.loads(out)), (REFUSED, r.json))
        # files xmctl refuses itself, saying where
        cases = [
            ("alias", "a: &x 1\nb: *x\n", "line 2"),
            ("duplicate key", "name: a\nname: b\n", "line 2"),
            ("two documents", "a: 1\n---\nb: 2\n", "only one YAML document"),
            ("not a mapping", "- a\n- b\n", "one object"),
            ("bad yaml", "a: [1, 2\n", "line"),
            ("empty", "", "empty"),
            ("unknown credential name", "credential: no-such-cred\nhosts: []\n",
             "/credential: no credential is named 'no-such-cred'"),
            ("bad json", '{"a": 1,}', "line 1"),
        ]
        for what, text, want in cases:
            with self.subTest(what=what):
                ext = ".json" if what == "bad json" else ".yaml"
                rc, out, err = X.run("migrate", "create", "-f", write("x" + ext, text))
                self.assertEqual(rc, USAGE, (out, err))
                self.assertIn(want, err)
        rc, out, err = X.run("migrate", "create", "-f", "/nonexistent.yaml")
        self.assertEqual(rc, USAGE)
        self.assertIn("/nonexistent.yaml", err)

    def test_status(self):
        mig = create_mig(("a1", "a2"))
        rc, out, err = X.run("--json", "status", mig)
        self.assertEqual(rc, OK, err)
        self.assertEqual(json.loads(out), X.client.get("/v1/migrations/" + mig).json)
        rc, out, err = X.run("status", mig)
        self.assertEqual(rc, OK, err)
        self.assertIn("migration %s" % mig, out)
        self.assertRegex(out, r"\n  a1 +discovery +queued ")
        self.assertRegex(out, r"\n  a2 +discovery +queued ")
        # the list, one page
        rc, out, err = X.run("--json", "status", "--limit", "2")
        self.assertEqual(rc, OK, err)
        self.assertEqual(json.loads(out), X.client.get("/v1/migrations?limit=2&offset=0").json)
        rc, out, err = X.run("status")
        self.assertEqual(rc, OK, err)
        self.assertIn(mig, out)
        # an unknown migration: the API's 404, word for word
        u = str(uuid.uuid4())
        _, e = api_error("GET", "/v1/migrations/" + u)
        self.assertRefused(X.run("status", u), 404, e["message"], "not_found")
        rc, out, err = X.run("--json", "status", u)
        self.assertEqual((rc, json.loads(out)["error"]), (REFUSED, e))
        # a page the API refuses
        _, e = api_error("GET", "/v1/migrations?limit=9999&offset=0")
        self.assertRefused(X.run("status", "--limit", "9999"), 400, e["message"])

    def test_approve(self):
        mig = create_mig(("web1",), blueprint=True)
        _, e = api_error("POST", "/v1/migrations/%s/approve" % mig)
        self.assertRefused(X.run("approve", mig), 409, e["message"], "conflict")
        self.assertIn("discovering", e["message"])
        # what the discovery phase does when it is done
        X.redis("HSET", "xm:mig:" + mig, "status", "awaiting_approval")
        rc, out, err = X.run("approve", mig)
        self.assertEqual(rc, OK, err)
        self.assertEqual(out, "migration %s approved; the network phase is queued\n" % mig)
        jobs = [f for _, f in X.redis.xrange("xm:q:network") if f["migration"] == mig]
        self.assertEqual(len(jobs), 1, jobs)
        # again: refused; --json gives the API's error body
        rc, out, err = X.run("--json", "approve", mig)
        self.assertEqual(rc, REFUSED)
        self.assertEqual(json.loads(out)["error"]["code"], "conflict")
        # --json success is the API's body
        other = create_mig(("web1",), blueprint=True)
        X.redis("HSET", "xm:mig:" + other, "status", "awaiting_approval")
        rc, out, err = X.run("--json", "approve", other)
        self.assertEqual((rc, json.loads(out)), (OK, {"id": other, "status": "approved"}))

    def test_approve_overriding_blockers(self):
        mig = create_mig(("web1", "web2"), blueprint=True)
        # what discovery writes: each host's findings, the migration awaiting approval
        findings = {
            "web1": [{"name": "web1/os_supported", "rule": "os_supported", "severity": "blocker",
                      "message": "CentOS 6 cannot be imported; upgrade it first"},
                     {"name": "web1/agents", "rule": "agents", "severity": "warning",
                      "message": "a foreign monitoring agent runs"}],
            "web2": [{"name": "web2/boot_mode", "rule": "boot_mode", "severity": "blocker",
                      "message": "UEFI on an instance type without UEFI"}]}
        for host, fs in findings.items():
            X.redis("HSET", "xm:host:%s:%s" % (mig, host), "findings", json.dumps(fs))
        X.redis("HSET", "xm:mig:" + mig, "status", "awaiting_approval")
        rc, out, err = X.run("status", mig)
        self.assertEqual(rc, OK, err)
        self.assertIn("    blocker web1/os_supported: CentOS 6 cannot be imported; upgrade it "
                      "first\n", out)
        self.assertIn("    warning web1/agents: a foreign monitoring agent runs\n", out)
        # the blockers stand: the API's words
        base = "/v1/migrations/%s/approve" % mig
        _, e = api_error("POST", base)
        self.assertIn("web1/os_supported", e["message"])
        self.assertRefused(X.run("approve", mig), 409, e["message"], "conflict")
        # one overridden, the other still stands
        _, e = api_error("POST", base + "?override=web1/os_supported")
        self.assertIn("web2/boot_mode", e["message"])
        self.assertRefused(X.run("approve", mig, "--override", "web1/os_supported"), 409,
                           e["message"])
        # a name that matches no blocker is refused by the API, not ignored
        _, e = api_error("POST", base + "?override=web1/no_such_rule")
        self.assertRefused(X.run("--json", "approve", mig, "--override", "web1/no_such_rule"),
                           400, e["message"], "invalid_request")
        # and one xmctl cannot put in a query is refused before sending
        rc, out, err = X.run("approve", mig, "--override", "web1/os supported")
        self.assertEqual((rc, out), (USAGE, ""))
        # both: one by finding name, one by rule (every host's)
        rc, out, err = X.run("approve", mig, "--override", "web1/os_supported", "--override",
                             "boot_mode")
        self.assertEqual(rc, OK, err)
        self.assertEqual(out, "migration %s approved, overriding web1/os_supported,boot_mode; the "
                              "network phase is queued\n" % mig)
        got = X.client.get("/v1/migrations/" + mig).json
        self.assertEqual(got["overrides"], ["web1/os_supported", "boot_mode"])
        rc, out, err = X.run("status", mig)
        self.assertIn("  overrode  web1/os_supported boot_mode\n", out)

    def test_retry_after_a_real_failure(self):
        mig = create_mig(("h1", "h2"))
        rc, out, err = X.run("retry", mig)
        self.assertEqual((rc, out), (OK, "no host of migration %s has failed; nothing to retry\n"
                                     % mig), err)
        _, e = api_error("POST", "/v1/migrations/%s/hosts/h1/retry" % mig)
        self.assertRefused(X.run("retry", mig, "h1"), 409, e["message"], "conflict")
        # A discovery worker that reads only what comes from now on and fails one job for
        # good (as tests/integration/api does).
        stream = "xm:q:discovery"
        try:
            X.redis("XGROUP", "CREATE", stream, "workers", "$", "MKSTREAM")
        except Exception as exc:  # noqa: BLE001 - BUSYGROUP: move it to the end
            self.assertIn("BUSYGROUP", str(exc))
            X.redis("XGROUP", "SETID", stream, "workers", "$")
        X.redis("XADD", stream, "*", "job", secrets.token_hex(16), "migration", mig, "host", "h1",
                "disk", "", "phase", "discovery", "attempt", "1", "group", "",
                "enqueued", str(int(time.time() * 1e6)), "payload", '{"fail":"permanent"}')
        env = dict(X.env, XM_CONSUMER="cli-retry", XM_MAX_ATTEMPTS="1", XM_BLOCK_MS="100",
                   XM_HEARTBEAT_MS="200")
        X.worker = Process([ARGS.noop, "discovery"], env, X.worker_log)
        try:
            wait_for(lambda: X.redis("HGET", "xm:host:%s:h1" % mig, "status") == "failed", 15,
                     "host h1 to fail")
        finally:
            self.assertEqual(X.worker.stop(), 0)
        rc, out, err = X.run("status", mig)
        self.assertRegex(out, r"\n  h1 +discovery +failed +1 +discovery: injected permanent failure")
        # every failed host by default (only h1 failed)
        rc, out, err = X.run("retry", mig)
        self.assertEqual(rc, OK, err)
        self.assertRegex(out, r"^host h1: discovery queued as job [0-9a-f]{32}\n$")
        self.assertEqual(X.redis("HGET", "xm:host:%s:h1" % mig, "status"), "queued")
        self.assertIn("host.retry", [e["type"] for e in events_of(mig)])
        # by name, --json: queued again now, so the API's 409 body
        rc, out, err = X.run("--json", "retry", mig, "h1")
        self.assertEqual(rc, REFUSED)
        self.assertEqual(json.loads(out)["error"]["code"], "conflict")
        self.assertRefused(X.run("retry", mig, "nohost"), 404,
                           "migration '%s' has no host 'nohost'" % mig, "not_found")

    def test_cutover(self):
        body = dict(mig_body(("k1", "k2")), cutover="manual")
        mig = X.client.post("/v1/migrations", body).json["id"]
        _, e = api_error("POST", "/v1/migrations/%s/cutover" % mig)
        self.assertRefused(X.run("cutover", mig), 409, e["message"], "conflict")
        # k2's first copy is in, as xm-clone leaves a host of a manual cutover
        X.redis("HSET", "xm:mig:" + mig, "status", "migrating")
        X.redis("HSET", "xm:host:%s:k2" % mig, "phase", "clone", "status", "awaiting_cutover")
        _, e = api_error("POST", "/v1/migrations/%s/cutover?hosts=k1" % mig)
        self.assertRefused(X.run("cutover", mig, "k1"), 409, e["message"], "conflict")
        rc, out, err = X.run("cutover", mig, "--freeze")
        self.assertEqual(rc, OK, err)
        self.assertRegex(out, r"^host k2: final copy queued as job [0-9a-f]{32}\n$")
        job = [f for _, f in X.redis.xrange("xm:q:clone") if f.get("migration") == mig][-1]
        self.assertEqual(json.loads(job["payload"]), {"final": True, "freeze": True})
        X.redis("HSET", "xm:host:%s:k1" % mig, "phase", "clone", "status", "awaiting_cutover")
        rc, out, err = X.run("--json", "cutover", mig, "k1")
        self.assertEqual(rc, OK, err)
        self.assertEqual([h["host"] for h in json.loads(out)["hosts"]], ["k1"])
        self.assertEqual(X.run("cutover", mig, "../x")[0], USAGE)

    def test_cancel_and_rollback(self):
        mig = create_mig(("c1",))
        X.redis("SADD", "xm:mig:%s:resources" % mig, "vpc:vpc-0123456789abcdef0")
        rc, out, err = X.run("cancel", mig)
        self.assertEqual(rc, OK, err)
        self.assertIn("migration %s is cancelled: no new phase will start" % mig, out)
        self.assertIn("  vpc:vpc-0123456789abcdef0\n", out)
        _, e = api_error("DELETE", "/v1/migrations/" + mig)
        self.assertRefused(X.run("cancel", mig), 409, e["message"], "conflict")
        other = create_mig(("c1",))
        rc, out, err = X.run("--json", "cancel", other)
        self.assertEqual(rc, OK, err)
        self.assertEqual(json.loads(out)["status"], "cancelled")
        self.assertEqual(json.loads(out), X.client.get("/v1/migrations/" + other).json)
        # rollback: POST /v1/migrations/{id}/rollback. Until xm-api has the route, xmctl
        # must pass the API's own 404 through; once it has it, the command succeeds.
        probe = create_mig(("c1",))
        r = X.client.post("/v1/migrations/%s/rollback" % probe)
        res = X.run("rollback", mig)
        if r.status == 404:
            self.assertRefused(res, 404, r.json["error"]["message"], "not_found")
            rc, out, err = X.run("--json", "rollback", mig)
            self.assertEqual((rc, json.loads(out)), (REFUSED, r.json))
        else:
            self.assertEqual(res[0], OK, res)
            rc, out, err = X.run("--json", "rollback", other)
            self.assertEqual(rc, OK, err)
            json.loads(out)


# ---------------------------------------------------------------- watch

class Watch:
    """xmctl watch as a child with its stdout on a pipe (or a pty), read as it comes."""

    def __init__(self, *args, tty=False, env=None):
        self.argv = [ARGS.xmctl] + list(args)
        env = env or X.xmctl_env()
        self.buf = b""
        self.err_path = os.path.join(X.tmp, "watch-%s.err" % rand_alnum(6))
        err = open(self.err_path, "wb")
        if tty:
            master, slave = pty.openpty()
            self.proc = subprocess.Popen(self.argv, env=env, stdout=slave, stderr=err,
                                         stdin=subprocess.DEVNULL)
            os.close(slave)
            self.fd = master
        else:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=subprocess.PIPE, stderr=err,
                                         stdin=subprocess.DEVNULL)
            self.fd = self.proc.stdout.fileno()
        err.close()

    def pump(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if r:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pty whose child exited
                chunk = b""
            self.buf += chunk
            return bool(chunk)
        return True

    def text(self):
        return self.buf.decode("utf-8", "replace")

    def read_until(self, cond, timeout=20, what="output"):
        deadline = time.monotonic() + timeout
        while not cond(self.text()):
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s; got %r; stderr %r" %
                                     (what, self.text()[-3000:], self.stderr()))
            if not self.pump(0.2) and self.proc.poll() is not None:
                raise AssertionError("watch exited %s before %s; got %r; stderr %r" %
                                     (self.proc.returncode, what, self.text()[-3000:],
                                      self.stderr()))

    def wait(self, timeout=30):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None or self.pump(0):
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("watch did not exit; got %r" % self.text()[-3000:])
            if not self.pump(0.2) and self.proc.poll() is not None:
                break
        rc = self.proc.wait()
        os.close(self.fd) if self.proc.stdout is None else self.proc.stdout.close()
        X.outputs.append((self.argv, self.text(), self.stderr()))
        return rc

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()


def start_noop(name):
    env = dict(X.env, XM_CONSUMER=name, XM_BLOCK_MS="100", XM_HEARTBEAT_MS="200")
    X.worker = Process([ARGS.noop, "discovery"], env, X.worker_log)
    return X.worker


def comparable(events):
    return [json.dumps(e, sort_keys=True) for e in events]


class T4Watch(Base):

    def test_plain_lines_follow_a_real_worker_until_cancelled(self):
        mig = create_mig(("w1", "w2"))
        w = Watch("watch", mig, "--interval", "0.5")
        worker = start_noop("cli-watch")
        try:
            # the worker runs both discovery jobs; the fan-in's last one says job.done
            w.read_until(lambda t: "job.done" in t, what="job.done")
        finally:
            self.assertEqual(worker.stop(), 0)
        self.assertIn("migration.created", w.text())
        self.assertRegex(w.text(), r"job.joined +w[12] +discovery noop finished")
        rc, out, err = X.run("cancel", mig)
        self.assertEqual(rc, OK, err)
        self.assertEqual(w.wait(), CANCELLED, w.stderr())
        lines = w.text().splitlines()
        self.assertEqual(lines[-1], "migration %s ended: cancelled" % mig)
        self.assertRegex(w.text(), r"status +discovering\n")
        self.assertRegex(w.text(), r"status +cancelled\n")
        # every event of the migration, once, in order
        types = [e["type"] for e in events_of(mig)]
        shown = [m.group(1) for m in
                 (re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ (\S+)", ln) for ln in lines) if m]
        self.assertEqual([t for t in shown if t != "status"], types)

    def test_json_resumes_across_an_api_restart(self):
        mig = create_mig(("r1",))
        w = Watch("--json", "watch", mig, "--interval", "0.3")
        w.read_until(lambda t: "migration.created" in t, what="migration.created")
        self.assertEqual(X.api.stop(), 0)
        try:
            # events written while xm-api is away: a worker settles two jobs
            for i in range(2):
                X.redis("XADD", "xm:q:discovery", "*", "job", secrets.token_hex(16),
                        "migration", mig, "host", "r1", "disk", "", "phase", "discovery",
                        "attempt", "1", "group", "", "enqueued", str(int(time.time() * 1e6)),
                        "payload", "{}")
            worker = start_noop("cli-resume")
            try:
                wait_for(lambda: sum(e["type"] == "job.done" for e in events_of(mig)) >= 2, 20,
                         "the worker to settle both jobs")
            finally:
                self.assertEqual(worker.stop(), 0)
        finally:
            X.start_api()
        w.read_until(lambda t: t.count('"job.done"') >= 2, what="both job.done after resume")
        rc, _, err = X.run("cancel", mig)
        self.assertEqual(rc, OK, err)
        self.assertEqual(w.wait(), CANCELLED, w.stderr())
        got = [json.loads(line) for line in w.text().splitlines()]
        # exactly the migration's events, each once, in order: nothing lost or repeated
        self.assertEqual(comparable(got), comparable(events_of(mig)))
        self.assertEqual(got[-1]["type"], "migration.cancelled")

    def test_exit_code_of_each_final_status(self):
        # The statuses the state machine ends a migration in, written as it writes them.
        for status, want in (("done", OK), ("failed", FAILED), ("partially_failed", FAILED),
                             ("cancelled", CANCELLED)):
            with self.subTest(status=status):
                mig = create_mig(("f1",))
                w = Watch("watch", mig, "--interval", "0.2")
                w.read_until(lambda t: "migration.created" in t, what="the first event")
                if status == "done":
                    # a status that waits on the operator says what to do, and goes on
                    X.redis("HSET", "xm:mig:" + mig, "status", "awaiting_approval")
                    w.read_until(lambda t: re.search(r"status +awaiting_approval \(see the "
                                                     r"findings with xmctl status, then xmctl "
                                                     r"approve\)\n", t), what="the hint")
                X.redis("HSET", "xm:mig:" + mig, "status", status)
                self.assertEqual(w.wait(), want, w.stderr())
                self.assertTrue(w.text().endswith("migration %s ended: %s\n" % (mig, status)),
                                w.text())
                # already over: watch shows the history and exits at once
                rc, out, err = X.run("--json", "watch", mig)
                self.assertEqual(rc, want, err)
                self.assertEqual(json.loads(out.splitlines()[0])["type"], "migration.created")

    def test_refusals_and_giving_up(self):
        u = str(uuid.uuid4())
        _, e = api_error("GET", "/v1/migrations/" + u)
        self.assertRefused(X.run("watch", u), 404, e["message"], "not_found")
        rc, out, err = X.run("watch", create_mig(("g1",)),
                             env=X.xmctl_env(False, {"XMCTL_TOKEN": "bad-token"}))
        self.assertEqual(rc, REFUSED, err)
        self.assertIn("a valid bearer token is required", err)
        rc, out, err = X.run("watch", u, env=X.xmctl_env(
            True, {"XMCTL_API": "http://127.0.0.1:%d" % free_port()}))
        self.assertEqual(rc, UNREACHABLE, err)
        # the API goes away for good mid-watch: give up after the given time, exit 3
        mig = create_mig(("g1",))
        w = Watch("watch", mig, "--give-up-after", "1.5", "--interval", "0.2")
        w.read_until(lambda t: "migration.created" in t, what="the first event")
        self.assertEqual(X.api.stop(), 0)
        try:
            t0 = time.monotonic()
            self.assertEqual(w.wait(), UNREACHABLE, w.stderr())
            self.assertLess(time.monotonic() - t0, 15)
            self.assertIn("giving up", w.stderr())
        finally:
            X.start_api()

    def test_terminal_shows_bars_rate_and_eta(self):
        mig = create_mig(("t1",))
        # the agent's progress through the real agent endpoint (its callback token set
        # the way tests/integration/api does)
        tok = X.secret(rand_alnum(43))
        X.redis("HSET", "xm:mig:" + mig, "callback_sha", hashlib.sha256(tok.encode()).hexdigest())
        X.redis("HSET", "xm:host:%s:t1" % mig, "phase", "clone", "status", "running")
        size = 8 << 30

        def progress(done):
            r = X.client.post("/v1/agent/%s/t1/sda/progress" % mig,
                              {"bytes_read": done, "bytes_sent": done // 2, "device_size": size,
                               "chunks_done": done >> 24, "chunks_total": size >> 24,
                               "phase": "copy"}, token=tok)
            self.assertEqual(r.status, 202, r)
        progress(1 << 30)
        w = Watch("watch", mig, "--interval", "0.2", tty=True)
        w.read_until(lambda t: "12%" in t and "sda" in t, what="the disk at 12%")
        for i in range(2, 5):
            time.sleep(0.3)  # spread the samples so a rate can be measured
            progress(i << 30)
        w.read_until(lambda t: "50%" in t and re.search(r"[0-9.]+ [KMG]iB/s +ETA \d", t),
                     what="50% with a rate and an ETA")
        text = w.text()
        self.assertIn("\x1b[", text)  # redrawn in place
        bars = re.findall(r"\[(#*)(\.*)\]", text)
        self.assertIn(True, [abs(len(a) - len(b)) <= 1 and len(a) >= 5 for a, b in bars],
                      bars)  # a half-full bar
        self.assertIn("4.0 GiB / 8.0 GiB", text)
        self.assertRegex(text, r"t1 +clone +running")
        self.assertIn("clone.progress", text)
        rc, _, err = X.run("cancel", mig)
        self.assertEqual(rc, OK, err)
        self.assertEqual(w.wait(), CANCELLED, w.stderr())
        self.assertIn("ended: cancelled", w.text())


# ---------------------------------------------------------------- last

class T9Final(Base):

    def test_1_redis_down_is_exit_3_with_the_apis_words(self):
        mig = create_mig(("z1",))
        X.redis_server.stop()
        try:
            r = X.client.get("/v1/migrations/" + mig)
            self.assertEqual(r.status, 503, r)
            res = X.run("status", mig)
            self.assertRefused(res, 503, r.json["error"]["message"], "unavailable")
        finally:
            X.redis_server.start()

    def test_2_every_command_ran_in_both_modes(self):
        ran = {}
        for argv, _, _ in X.outputs:
            args = [a for a in argv if not a.startswith("/")]
            mode = "json" if "--json" in args else "human"
            words = [a for a in args if a != "--json" and not a.startswith("-")]
            if words:
                ran.setdefault(words[0], set()).add(mode)
        for cmd in ("login", "credentials", "migrate", "approve", "status", "watch", "retry",
                    "cutover", "cancel", "rollback"):
            self.assertEqual(ran.get(cmd), {"human", "json"}, cmd)

    def test_3_no_secret_and_no_sanitizer_report(self):
        self.assertGreater(len(X.secrets), 10)
        places = [("xmctl %s" % " ".join(map(str, a)), o + e) for a, o, e in X.outputs]
        for path in (X.api_log, X.worker_log):
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    places.append((path, f.read()))
        leaks = ["%s: %s..." % (where[:80], s[:4]) for where, text in places
                 for s in X.secrets if s in text]
        self.assertEqual(leaks, [])
        bad = [where for where, text in places
               if "Sanitizer" in text or "runtime error:" in text]
        self.assertEqual(bad, [])


# ---------------------------------------------------------------- runner

def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--xmctl", required=True)
    p.add_argument("--api", required=True)
    p.add_argument("--schemas", required=True)
    p.add_argument("--noop", required=True)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("-k", dest="pattern", help="only tests whose name contains this")
    ARGS = p.parse_args()
    for k in ("xmctl", "api", "schemas", "noop"):
        setattr(ARGS, k, os.path.abspath(getattr(ARGS, k)))
    loader = unittest.TestLoader()
    if ARGS.pattern:
        loader.testNamePatterns = ["*%s*" % ARGS.pattern]
    suite = unittest.TestSuite([loader.loadTestsFromTestCase(c) for c in
                                (T1Login, T2Credentials, T3Migrations, T4Watch, T9Final)])
    # setUpModule/tearDownModule run around the suite because the cases live here.
    t0 = time.monotonic()
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    bad_tests, other = set(), 0
    for test, _ in result.failures + result.errors:
        case = getattr(test, "test_case", test)
        if isinstance(case, unittest.TestCase):
            bad_tests.add(case.id())
        else:
            other += 1
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
