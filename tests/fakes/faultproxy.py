#!/usr/bin/env python3
"""A fault-injecting HTTP/1.1 proxy in front of one upstream (moto_server) for tests.

    faultproxy.py --listen PORT --upstream http://127.0.0.1:MOTO [--rules JSON]
                  [--host 127.0.0.1] [--seed N]

It listens on HOST:PORT (default 127.0.0.1; 0: a free port) and, once it accepts connections, prints
one JSON line {"port": N, "pid": N} on stdout and nothing else there afterwards. Each
request is passed to the upstream as it came: method, target, every header (Host
included: SigV4 signs it) and the body byte for byte; the reply comes back the same way.
One line per request goes to stderr (method, path without the query, status, whether
a fault was injected); headers and bodies are never logged (they carry signatures).

Faults are rules, tried in order; the first one that matches and has times left
answers the request instead of the upstream:
    match       optional: "METHOD /path?query" must start with this ("PUT /bucket")
    match_body  optional: the request body must contain this ("Action=DescribeVpcs")
    match_header optional: {"Name": "value"}: the request has these headers, these values
    skip        let this many matching requests through before injecting (default 0)
    times       how many requests to answer (default: every one)
    status      HTTP status to answer with (default 503)
    headers     extra reply headers ({"Retry-After": "0"})
    body        reply body (text)
    s3_code     reply with an S3 error document with this code ("SlowDown")
    ec2_code    reply with an EC2 error document with this code ("RequestLimitExceeded")
    reset       true: read the request, then close the connection with a TCP RST
    delay_ms    wait this long first (then forward when nothing else is set: a rule
                with only matches and delay_ms 0 just counts the requests it sees)
    probability answer only this share (0..1) of the matching requests, drawn at random
                (--seed makes a run repeatable); the others go on to the next rule
Rules come from --rules or the control endpoints, which the proxy answers itself (a
bucket name cannot start with "__"):
    POST   /__faults   JSON list of rules: replaces the rules
    GET    /__faults   the rules with what each has injected
    DELETE /__faults   no rules: pass everything through
    GET    /__stats    {"requests", "forwarded", "injected", "resets", "upstream_errors"}
    DELETE /__stats    zero the counters
Standard library only.
"""
import argparse
import http.client
import http.server
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse

# Hop-by-hop: they describe one connection and are not passed on (none is signed).
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
       "content-length"}
MAX_BODY = 256 * 1024 * 1024
MAX_CONTROL = 1024 * 1024

S3_ERROR = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code>'
            '<Message>injected by faultproxy</Message><RequestId>faultproxy-%d</RequestId>'
            '</Error>')
EC2_ERROR = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>%s</Code>'
             '<Message>injected by faultproxy</Message></Error></Errors>'
             '<RequestID>faultproxy-%d</RequestID></Response>')

RULE_KEYS = {"match", "match_body", "match_header", "skip", "times", "status", "headers", "body", "s3_code",
             "ec2_code", "reset", "delay_ms", "probability"}


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.zero()

    def zero(self):
        self.stats = {"requests": 0, "forwarded": 0, "injected": 0, "resets": 0,
                      "upstream_errors": 0}

    def set_rules(self, rules):
        if not isinstance(rules, list):
            raise ValueError("rules must be a JSON list")
        checked = []
        for r in rules:
            if not isinstance(r, dict):
                raise ValueError("a rule must be a JSON object")
            unknown = set(r) - RULE_KEYS
            if unknown:
                raise ValueError("unknown rule keys: %s" % ", ".join(sorted(unknown)))
            r = dict(r)
            r["_seen"] = 0      # matching requests so far
            r["_injected"] = 0  # requests answered by this rule
            checked.append(r)
        with self.lock:
            self.rules = checked

    def pick(self, line, headers, body):
        """The rule that answers this request (a copy), or None; counts it."""
        with self.lock:
            self.stats["requests"] += 1
            for r in self.rules:
                if "match" in r and not line.startswith(r["match"]):
                    continue
                if "match_body" in r and r["match_body"].encode() not in body:
                    continue
                if any(headers.get(k) != v for k, v in r.get("match_header", {}).items()):
                    continue
                times = r.get("times")
                if times is not None and r["_injected"] >= times:
                    continue
                r["_seen"] += 1
                if r["_seen"] <= r.get("skip", 0):
                    continue
                if "probability" in r and RANDOM.random() >= r["probability"]:
                    continue
                r["_injected"] += 1
                self.stats["injected"] += 1
                return dict(r, _id=self.stats["injected"])
            return None

    def count(self, name):
        with self.lock:
            self.stats[name] += 1


STATE = State()
UPSTREAM = None  # (host, port)
RANDOM = random.Random()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # the default logs the query (signatures)
        pass

    def log_line(self, status, what):
        path = urllib.parse.urlsplit(self.path).path
        sys.stderr.write("faultproxy: %s %s -> %s%s\n" % (self.command, path, status, what))
        sys.stderr.flush()

    def read_body(self):
        """The request body exactly as sent (chunked bodies are kept chunked)."""
        n = self.headers.get("Content-Length")
        if n is not None:
            n = int(n)
            if n < 0 or n > MAX_BODY:
                raise ValueError("body too large")
            return self.rfile.read(n)
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:
                line = self.rfile.readline(65537)
                raw += line
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        t = self.rfile.readline(65537)
                        raw += t
                        if t in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
                if len(raw) > MAX_BODY:
                    raise ValueError("body too large")
        return b""

    def reply(self, status, body=b"", headers=(), reason=None):
        self.send_response_only(status, reason)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        body = self.read_body()
        if self.path.startswith("/__"):
            return self.control(body)
        line = "%s %s" % (self.command, self.path)
        rule = STATE.pick(line, self.headers, body)
        if rule is None:
            return self.forward(body)
        if rule.get("delay_ms"):
            time.sleep(rule["delay_ms"] / 1000.0)
        if rule.get("reset"):
            STATE.count("resets")
            self.log_line("reset", " (injected)")
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        inject = any(k in rule for k in ("status", "body", "s3_code", "ec2_code", "headers"))
        if not inject:  # a pure delay
            return self.forward(body)
        text = rule.get("body", "")
        if "s3_code" in rule:
            text = S3_ERROR % (rule["s3_code"], rule["_id"])
        elif "ec2_code" in rule:
            text = EC2_ERROR % (rule["ec2_code"], rule["_id"])
        headers = list(rule.get("headers", {}).items())
        if text and not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/xml" if text.startswith("<")
                            else "text/plain"))
        status = int(rule.get("status", 503))
        self.log_line(status, " (injected)")
        self.reply(status, text.encode(), headers)

    def forward(self, body):
        conn = http.client.HTTPConnection(UPSTREAM[0], UPSTREAM[1], timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() in ("connection", "keep-alive", "proxy-connection"):
                    continue
                conn.putheader(k, v)
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            STATE.count("upstream_errors")
            self.log_line(502, " (upstream: %s)" % e.__class__.__name__)
            return self.reply(502, b"faultproxy: upstream unreachable\n",
                              [("Content-Type", "text/plain")])
        finally:
            conn.close()
        STATE.count("forwarded")
        self.log_line(resp.status, "")
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        if self.command == "HEAD" or resp.status in (204, 304):
            cl = resp.getheader("Content-Length")
            if cl is not None and resp.status != 204:
                self.send_header("Content-Length", cl)
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def control(self, body):
        path = urllib.parse.urlsplit(self.path).path
        out = None
        try:
            if path == "/__faults" and self.command == "POST":
                if len(body) > MAX_CONTROL:
                    raise ValueError("rules too large")
                STATE.set_rules(json.loads(body.decode() or "[]"))
                out = {"rules": len(STATE.rules)}
            elif path == "/__faults" and self.command == "DELETE":
                STATE.set_rules([])
                out = {"rules": 0}
            elif path == "/__faults" and self.command == "GET":
                with STATE.lock:
                    out = [{k: v for k, v in r.items() if not k.startswith("_")} |
                           {"injected": r["_injected"]} for r in STATE.rules]
            elif path == "/__stats" and self.command == "GET":
                with STATE.lock:
                    out = dict(STATE.stats)
            elif path == "/__stats" and self.command == "DELETE":
                with STATE.lock:
                    STATE.zero()
                out = {}
        except (ValueError, UnicodeDecodeError) as e:
            return self.reply(400, (json.dumps({"error": str(e)}) + "\n").encode(),
                              [("Content-Type", "application/json")])
        if out is None:
            return self.reply(404, b'{"error": "no such control endpoint"}\n',
                              [("Content-Type", "application/json")])
        self.reply(200, (json.dumps(out) + "\n").encode(), [("Content-Type", "application/json")])

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global UPSTREAM
    ap = argparse.ArgumentParser(description="fault-injecting HTTP proxy for tests")
    ap.add_argument("--listen", type=int, required=True, help="loopback port, 0 for any free")
    ap.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--rules", default="[]", help="initial rules, a JSON list")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (a test's own, e.g. a namespace's peer)")
    ap.add_argument("--seed", type=int, help="seed for rules with a probability")
    a = ap.parse_args()
    if a.seed is not None:
        RANDOM.seed(a.seed)
    u = urllib.parse.urlsplit(a.upstream)
    if u.scheme != "http" or not u.hostname or not u.port:
        sys.exit("faultproxy: --upstream must be http://HOST:PORT")
    UPSTREAM = (u.hostname, u.port)
    try:
        STATE.set_rules(json.loads(a.rules))
    except ValueError as e:
        sys.exit("faultproxy: --rules: %s" % e)
    srv = Server((a.host, a.listen), Handler)
    print(json.dumps({"port": srv.server_address[1], "pid": os.getpid()}),
          flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
