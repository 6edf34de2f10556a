#!/usr/bin/env python3
"""A storage sink and xmigrate API stand-in for xm-agent tests (standard library only).

    sink.py --listen 0 --dir DIR [--token TOKEN] [--urls-file FILE] [--expires-s N]
            [--discard] [--tls-cert PEM --tls-key PEM] [--dns-addr 127.X.Y.Z]

Listens on 127.0.0.1 (HTTP/1.1, keep-alive, a thread per connection) and, once it
accepts connections, prints one JSON line {"port": N, "pid": N} on stdout.

Storage: PUT /sink/<path> stores the body at DIR/<path> (each path component
[A-Za-z0-9._-], written to a temporary file and renamed, so a cut-off upload never
shows), GET /sink/<path> reads it back (404 when absent). With --discard bodies are
read, counted and dropped.

API (what xm-api answers the agent):
    POST /v1/agent/{migration}/{host}/{disk}/urls      {"chunks": [...]}
        -> {"urls": {"<i>": URL}, "manifest_url": URL, "expires": now + expires_s}
        URLs point at this sink (/sink/{disk}/{i}, /sink/{disk}/manifest), or come from
        --urls-file ({"urls": {"<i>": URL}, "manifest_url": URL}: presigned S3 URLs).
    POST /v1/agent/{migration}/{host}/{disk}/progress  -> 202, the body kept
    Both need "Authorization: Bearer TOKEN" when --token is given (401 otherwise).

Control (never reached by the agent):
    GET    /__stats   {"puts", "put_bytes", "put_paths": {path: count}, "url_calls":
                       [[chunks...], ...], "progress": [bodies], "refused",
                       "first_put_start", "last_put_end" (monotonic s), "dns_queries"}
    DELETE /__stats   zero them
    POST   /__config  {"put_status": 403, "put_status_times": N (default: all),
                       "api_status": 401, "expires_s": N, "put_delay_ms": N}: what PUTs
                       and API calls answer instead of success
--dns-addr binds UDP port 53 on that loopback address and answers A queries for names
ending in ".test" with 127.0.0.1 (anything else NXDOMAIN), so the agent's own resolver
can be tested through a resolv.conf naming it.
"""
import argparse
import json
import os
import re
import socket
import ssl
import struct
import sys
import threading
import time
import http.server

COMPONENT = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_BODY = 512 * 1024 * 1024


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.config = {}
        self.zero()

    def zero(self):
        self.stats = {"puts": 0, "put_bytes": 0, "put_paths": {}, "url_calls": [],
                      "progress": [], "refused": 0, "first_put_start": None,
                      "last_put_end": None, "dns_queries": 0}


STATE = State()
ARGS = None
URLS_FILE = None


def safe_path(rel):
    parts = rel.split("/")
    if not parts or any(not COMPONENT.match(p) or p in (".", "..") for p in parts):
        return None
    return os.path.join(ARGS.dir, *parts)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=b"", ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, status, obj):
        self.reply(status, (json.dumps(obj) + "\n").encode())

    def read_body(self, sink=None):
        n = int(self.headers.get("Content-Length", "0"))
        if n < 0 or n > MAX_BODY:
            raise ValueError("body too large")
        got = 0
        chunks = []
        while got < n:
            b = self.rfile.read(min(1 << 20, n - got))
            if not b:
                raise ConnectionError("short body")
            got += len(b)
            if sink is not None:
                sink.write(b)
            else:
                chunks.append(b)
        return b"".join(chunks), got

    # ---- storage
    def do_PUT(self):
        if not self.path.startswith("/sink/"):
            self.read_body()
            return self.reply_json(404, {"error": "no such path"})
        rel = self.path[len("/sink/"):].split("?")[0]
        path = safe_path(rel)
        start = time.monotonic()
        with STATE.lock:
            if STATE.stats["first_put_start"] is None:
                STATE.stats["first_put_start"] = start
            cfg = dict(STATE.config)
        if path is None:
            self.read_body()
            return self.reply_json(400, {"error": "bad path"})
        if ARGS.discard:
            _, n = self.read_body(sink=_Null())
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = "%s.tmp-%d" % (path, threading.get_ident())
            with open(tmp, "wb") as f:
                _, n = self.read_body(sink=f)
        if cfg.get("put_delay_ms"):
            time.sleep(cfg["put_delay_ms"] / 1000.0)
        status = cfg.get("put_status")
        if status:
            with STATE.lock:
                times = STATE.config.get("put_status_times")
                if times is None or times > 0:
                    if times is not None:
                        STATE.config["put_status_times"] = times - 1
                    STATE.stats["refused"] += 1
                else:
                    status = None
        if status:
            if not ARGS.discard:
                os.unlink(tmp)
            body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code>'
                    '<Message>refused by sink</Message></Error>' %
                    ("AccessDenied" if status == 403 else "Refused")).encode()
            return self.reply(status, body, "application/xml")
        if not ARGS.discard:
            os.replace(tmp, path)
        with STATE.lock:
            s = STATE.stats
            s["puts"] += 1
            s["put_bytes"] += n
            s["put_paths"][rel] = s["put_paths"].get(rel, 0) + 1
            s["last_put_end"] = time.monotonic()
        self.reply(200, b"", "text/plain")

    def do_GET(self):
        if self.path.startswith("/__stats"):
            with STATE.lock:
                return self.reply_json(200, STATE.stats)
        if not self.path.startswith("/sink/"):
            return self.reply_json(404, {"error": "no such path"})
        path = safe_path(self.path[len("/sink/"):].split("?")[0])
        if path is None or not os.path.isfile(path):
            return self.reply_json(404, {"error": "not found"})
        with open(path, "rb") as f:
            data = f.read()
        self.reply(200, data, "application/octet-stream")

    def do_DELETE(self):
        if self.path.startswith("/__stats"):
            with STATE.lock:
                STATE.zero()
            return self.reply_json(200, {})
        self.reply_json(404, {"error": "no such path"})

    # ---- API and control
    def do_POST(self):
        try:
            body, _ = self.read_body()
        except (ValueError, ConnectionError) as e:
            return self.reply_json(400, {"error": {"code": "invalid_request",
                                                  "message": str(e)}})
        if self.path == "/__config":
            with STATE.lock:
                STATE.config = json.loads(body or b"{}")
            return self.reply_json(200, STATE.config)
        m = re.match(r"^/v1/agent/([^/]+)/([^/]+)/([^/]+)/(urls|progress)$", self.path)
        if not m:
            return self.reply_json(404, {"error": {"code": "not_found", "message": "no route"}})
        with STATE.lock:
            cfg = dict(STATE.config)
        if ARGS.token and self.headers.get("Authorization") != "Bearer " + ARGS.token:
            return self.reply_json(401, {"error": {"code": "unauthorized",
                                                  "message": "bad or missing bearer token"}})
        if cfg.get("api_status"):
            return self.reply_json(cfg["api_status"], {"error": {
                "code": "unauthorized" if cfg["api_status"] == 401 else "conflict",
                "message": "refused by sink configuration"}})
        try:
            req = json.loads(body)
        except ValueError:
            return self.reply_json(400, {"error": {"code": "invalid_json", "message": "bad"}})
        disk = m.group(3)
        if m.group(4) == "progress":
            with STATE.lock:
                STATE.stats["progress"].append(req)
            return self.reply_json(202, {"accepted": True})
        chunks = req.get("chunks")
        if (not isinstance(chunks, list) or len(chunks) > 1024 or
                len(set(chunks)) != len(chunks) or
                any(not isinstance(c, int) or c < 0 for c in chunks)):
            return self.reply_json(400, {"error": {"code": "invalid_request",
                                                  "message": "chunks must be unique indexes"}})
        with STATE.lock:
            STATE.stats["url_calls"].append(chunks)
        expires = int(time.time()) + int(cfg.get("expires_s", ARGS.expires_s))
        if URLS_FILE is not None:
            urls = {str(c): URLS_FILE["urls"][str(c)] for c in chunks}
            manifest = URLS_FILE["manifest_url"]
        else:
            scheme = "https" if ARGS.tls_cert else "http"
            host = self.headers.get("Host", "127.0.0.1:%d" % self.server.server_address[1])
            base = "%s://%s/sink/%s" % (scheme, host, disk)
            urls = {str(c): "%s/%d?X-Sig=secret%d" % (base, c, c) for c in chunks}
            manifest = "%s/manifest?X-Sig=secret" % base
        self.reply_json(200, {"urls": urls, "manifest_url": manifest, "expires": expires})


class _Null:
    def write(self, b):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def dns_serve(sock):
    while True:
        q, peer = sock.recvfrom(4096)
        if len(q) < 12:
            continue
        with STATE.lock:
            STATE.stats["dns_queries"] += 1
        qid = q[:2]
        off = 12
        labels = []
        while off < len(q) and q[off] != 0:
            n = q[off]
            labels.append(q[off + 1:off + 1 + n].decode("ascii", "replace"))
            off += 1 + n
        question = q[12:off + 5]
        name = ".".join(labels).lower()
        qtype = struct.unpack(">H", q[off + 1:off + 3])[0] if off + 3 <= len(q) else 0
        if name.endswith(".test") and qtype == 1:
            hdr = qid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
            ans = struct.pack(">HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton("127.0.0.1")
            sock.sendto(hdr + question + ans, peer)
        else:
            hdr = qid + struct.pack(">HHHHH", 0x8183, 1, 0, 0, 0)
            sock.sendto(hdr + question, peer)


def main():
    global ARGS, URLS_FILE
    ap = argparse.ArgumentParser(description="storage sink and agent API fake for tests")
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--dir", default="")
    ap.add_argument("--discard", action="store_true")
    ap.add_argument("--token", default="")
    ap.add_argument("--urls-file")
    ap.add_argument("--expires-s", type=int, default=3600)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--dns-addr")
    ARGS = ap.parse_args()
    if not ARGS.discard and not ARGS.dir:
        sys.exit("sink: --dir or --discard")
    if ARGS.urls_file:
        with open(ARGS.urls_file) as f:
            URLS_FILE = json.load(f)
    srv = Server(("127.0.0.1", ARGS.listen), Handler)
    if ARGS.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    if ARGS.dns_addr:
        dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dns.bind((ARGS.dns_addr, 53))
        threading.Thread(target=dns_serve, args=(dns,), daemon=True).start()
    print(json.dumps({"port": srv.server_address[1], "pid": os.getpid()}), flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
