"""
Helpers for the xm-api integration tests: a real redis-server on a free loopback port,
a tiny RESP client, xm-api and xm-noop as child processes with their stderr captured
to files, an HTTP client that keeps every response it received (for the secret-leak
grep), and a Server-Sent Events reader.

Standard library only. Every wait polls a condition against a deadline; nothing sleeps
a fixed time to "let things settle".
"""

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time


class Timeout(AssertionError):
    pass


def wait_for(cond, timeout=10.0, what="condition", interval=0.02):
    """Poll cond() until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except (OSError, http.client.HTTPException, RedisError) as e:
            last_exc = e
        if time.monotonic() > deadline:
            raise Timeout("timed out after %.1fs waiting for %s%s" % (
                timeout, what, " (last error: %r)" % last_exc if last_exc else ""))
        time.sleep(interval)


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ redis

class RedisError(Exception):
    pass


class Redis:
    """A minimal RESP2 client: one connection, reopened after a failure."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.addr = (host, port)
        self.timeout = timeout
        self.sock = None
        self.rfile = None

    def close(self):
        if self.sock:
            try:
                self.rfile.close()
                self.sock.close()
            except OSError:
                pass
        self.sock = self.rfile = None

    def _connect(self):
        self.sock = socket.create_connection(self.addr, timeout=self.timeout)
        self.rfile = self.sock.makefile("rb")

    def _read(self):
        line = self.rfile.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rfile.read(n + 2)
            return data[:-2].decode("utf-8", "surrogateescape")
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise ConnectionError("bad RESP reply %r" % line)

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        try:
            if not self.sock:
                self._connect()
            self.sock.sendall(b"".join(out))
            reply = self._read()
        except OSError:
            self.close()
            raise
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def hgetall(self, key):
        r = self("HGETALL", key)
        return dict(zip(r[0::2], r[1::2]))

    def xrange(self, key, start="-", end="+"):
        """[(id, {field: value})] in stream order."""
        return [(e[0], dict(zip(e[1][0::2], e[1][1::2]))) for e in self("XRANGE", key, start, end)]


class RedisServer:
    """redis-server on a free loopback port, data (AOF) in its own folder."""

    def __init__(self, workdir, port=None):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--appendonly", "yes", "--save", "",
             # the whole AOF as commands, so the test can search it for secrets
             "--aof-use-rdb-preamble", "no",
             "--daemonize", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        r = Redis(self.port, timeout=1.0)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %d; see %s/redis.log" %
                                     (self.proc.returncode, self.dir))
            return r("PING") == "PONG"
        try:
            wait_for(up, 10, "redis-server to answer PING")
        finally:
            r.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ------------------------------------------------------------------ processes

def clean_env(extra):
    """The test's own environment without any XM_* the caller happened to have."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XM_")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env.update(extra)
    return env


class Process:
    """A child whose stdout and stderr go to a log file (appended)."""

    def __init__(self, argv, env, log_path):
        self.argv = argv
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit status (killed after timeout: AssertionError)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("%s did not stop within %ds of SIGTERM" %
                                     (self.argv[0], timeout))
        return self.proc.returncode


# ------------------------------------------------------------------ http

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %s>" % (self.status, self.body[:400])


class Client:
    """HTTP/1.1 to xm-api, one connection per request. Every response is kept in
    `received` (status line, headers and body as text) for the secret-leak grep."""

    def __init__(self, port, token=None, host="127.0.0.1"):
        self.port = port
        self.token = token
        self.host = host
        self.received = []

    def record(self, text):
        self.received.append(text)

    def request(self, method, path, body=None, token=None, headers=None,
                content_type="application/json", raw=None, timeout=10):
        """body: JSON-serialisable (sent as JSON); raw: bytes sent as they are.
        token: None uses the client's token, "" sends no Authorization."""
        h = {}
        tok = self.token if token is None else token
        if tok:
            h["Authorization"] = "Bearer " + tok
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None and content_type:
            h["Content-Type"] = content_type
        if headers:
            h.update(headers)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            try:
                conn.request(method, path, body=data, headers=h)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before it read everything
            resp = conn.getresponse()
            payload = resp.read()
            r = Response(resp.status, resp.getheaders(), payload.decode("utf-8", "replace"))
        finally:
            conn.close()
        self.record("%d\n%s\n%s" % (r.status, "\n".join("%s: %s" % kv for kv in r.headers),
                                    r.body))
        return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def raw(self, data, timeout=10):
        """Send raw bytes on a new connection; returns what came back until EOF (bytes)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        out = b""
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            s.close()
        self.record(out.decode("utf-8", "replace"))
        return out


class SSE:
    """GET an event stream with http.client and read events as they arrive.

    A reader thread does the blocking reads (a timed-out read would leave the socket
    file unusable) and hands chunks over through a queue, so the test waits for what
    it expects with a deadline. Use as a context manager: the connection is closed on
    exit."""

    def __init__(self, client, path, last_event_id=None, timeout=30):
        self.client = client
        self.conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=timeout)
        self.conn.connect()
        self.sock = self.conn.sock
        h = {"Authorization": "Bearer " + client.token, "Accept": "text/event-stream"}
        if last_event_id is not None:
            h["Last-Event-ID"] = last_event_id
        self.conn.request("GET", path, headers=h)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = self.resp.getheaders()
        self.buf = b""
        self.events = []
        self.chunks = queue.Queue()
        self.thread = None
        self.closed = False
        if self.status != 200:
            self.body = self.resp.read().decode("utf-8", "replace")
            client.record("%d\n%s" % (self.status, self.body))
        else:
            self.thread = threading.Thread(target=self._reader, daemon=True)
            self.thread.start()

    def _reader(self):
        try:
            while True:
                chunk = self.resp.read1(65536)
                self.chunks.put(chunk)
                if not chunk:
                    return
        except Exception as e:  # noqa: BLE001 - handed to the test thread
            self.chunks.put(e)

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.client.record(self.buf.decode("utf-8", "replace"))
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
        self.sock.close()
        if self.thread:
            self.thread.join(10)

    def _pump(self, timeout):
        """Take what the reader has (waiting up to timeout); parse whole events."""
        try:
            chunk = self.chunks.get(timeout=timeout)
        except queue.Empty:
            return
        if isinstance(chunk, Exception):
            raise chunk
        if not chunk:
            raise ConnectionError("event stream ended")
        self.buf += chunk
        self.client.record(chunk.decode("utf-8", "replace"))
        while b"\n\n" in self.buf:
            block, self.buf = self.buf.split(b"\n\n", 1)
            ev = {}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    continue  # comment (keep-alive)
                k, _, v = line.partition(":")
                ev[k] = v[1:] if v.startswith(" ") else v
            if ev:
                if "data" in ev:
                    ev["json"] = json.loads(ev["data"])
                self.events.append(ev)

    def read_until(self, cond, timeout=10, what="events"):
        """Read events until cond(self.events) is true; returns self.events."""
        deadline = time.monotonic() + timeout
        while not cond(self.events):
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("timed out waiting for %s; got %r" % (what, self.events))
            self._pump(min(left, 0.5))
        return self.events

    def wait_end(self, timeout=10):
        """Read until the server ends the stream (events read on the way are kept)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("the event stream did not end within %ss" % timeout)
            try:
                self._pump(min(left, 0.5))
            except ConnectionError:
                return self.events
