#!/usr/bin/env python3
"""A faithful local Google Cloud for tests: OAuth2 token endpoint, Cloud Storage JSON API
(and V4 signed URLs), Compute Engine v1, all on one loopback port, as Google serves
Storage's JSON and XML APIs from one host.

    gcp.py --listen PORT --key-file SA.json [--key-file ...] [--host 127.0.0.1]
           [--token-lifetime 3599] [--op-steps 1] [--instance-steps 2]

It prints one JSON line {"port": N, "pid": N} on stdout once it accepts connections. One
line per request goes to stderr (method, path without query, status); never a header,
a token or a body.

Token (POST /token): the grant type must be jwt-bearer; the assertion's RS256 signature
is verified with the public half of the --key-file key whose client_email is the "iss"
(and whose private_key_id is the "kid", when given); "aud" must be this endpoint's URL
(http://HOST:PORT/token) or https://oauth2.googleapis.com/token; iat/exp must be a
window of at most an hour around now (5 min skew); "scope" must be present. Answers
{"access_token","expires_in","token_type":"Bearer"}, or 400 {"error":"invalid_grant",
"error_description":...} as Google does. Every other API needs "Authorization: Bearer"
with a live token: else 401 with Google's UNAUTHENTICATED error and WWW-Authenticate.

Cloud Storage: buckets (insert with location, uniform access, lifecycle; get; list;
delete when empty; insert of an existing name is 409 conflict), objects (media,
multipart and resumable uploads; get with alt=media and Range; list with prefix,
delimiter and paging; delete; compose of 1..32 existing sources, more is 400), object
resources with size, md5Hash (not on composites, as GCS), crc32c, generation,
componentCount, metadata. Resumable sessions: the session URI (Location) needs no
token; "Content-Range: bytes A-B/T" appends (A must not pass what is persisted,
non-final chunks are multiples of 256 KiB), "bytes */T" asks (308 + Range). V4 signed
URLs (path style, /BUCKET/OBJECT?X-Goog-...): the canonical request is rebuilt from the
request (host signed without its port), the RSA signature checked against the
credential's key, the expiry enforced; PUT stores, GET/HEAD read. Failures answer the
XML API's error documents (SignatureDoesNotMatch, ExpiredToken, NoSuchKey, ...).

Compute Engine (/compute/v1/projects/P/...): networks, firewalls, images (global),
subnetworks (regional), disks, instances, machineTypes (zonal), with global, regional
and zonal operations. Inserts and deletes answer an operation (PENDING); it moves one
step per GET of the operation and is DONE after --op-steps polls (POST .../wait finishes
it), then the change is applied or the error set. Checked: names, that referenced
resources exist (network, subnetwork, images, disks, machine type), that a CIDR fits,
dependencies on delete (a network with subnetworks or firewalls, a subnetwork or disk an
instance uses: RESOURCE_IN_USE_BY_ANOTHER_RESOURCE), 409 alreadyExists. Images read
rawDisk.source from this fake's storage: a missing object fails the operation
(RESOURCE_NOT_FOUND), an object that is not a gzip'd tar starting with disk.raw fails
it (INVALID_FIELD_VALUE; this wording is the fake's). Instances go PROVISIONING,
STAGING, RUNNING over --instance-steps GETs and get an address from the subnetwork and,
with ONE_TO_ONE_NAT, an external one. List filters: `labels.K = "V"`, `name = "V"`
(also `eq`); other filters are 400.

Control endpoints (no auth):
    POST /__faults   rules as tests/fakes/faultproxy.py takes them (match, skip, times,
                     status, headers, body, reset, delay_ms) plus reset_after_bytes: read
                     that many body bytes (a resumable chunk keeps them, rounded down to
                     256 KiB, as GCS persists), then cut the connection with a RST
    DELETE /__faults
    POST /__config   {"op_steps", "instance_steps", "token_lifetime", "fail_ops": [{"match": "insert
                     instances", "code", "message", "times"}]}: matching operations
                     finish with that error
    POST /__expire_tokens   every issued token stops working (401), as a revoked one
    GET  /__stats    counters: requests, injected, resets, token_grants, token_rejects,
                     signed_ok, signed_rejected, compose_calls, session_queries,
                     inserts/deletes per collection
    POST /__reset    forget everything but keys and config
Needs the `cryptography` package (there with moto in the default python3).
"""
import argparse
import base64
import calendar
import hashlib
import json
import os
import re
import secrets
import socket
import struct
import sys
import threading
import time
import urllib.parse
import zlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultproxy  # noqa: E402  (the rule engine)

faultproxy.RULE_KEYS = faultproxy.RULE_KEYS | {"reset_after_bytes"}

MAX_BODY = 1 << 30
CHUNK = 256 * 1024
COMPOSE_MAX = 32
SIGNED_MAX = 604800
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
MACHINE_TYPES = {
    "e2-micro": (2, 1024), "e2-small": (2, 2048), "e2-medium": (2, 4096),
    "e2-standard-2": (2, 8192), "e2-standard-4": (4, 16384), "e2-standard-8": (8, 32768),
    "n1-standard-1": (1, 3840), "n1-standard-2": (2, 7680), "n1-standard-4": (4, 15360),
    "n2-standard-2": (2, 8192), "n2-standard-4": (4, 16384), "n2-standard-8": (8, 32768),
    "n2d-standard-2": (2, 8192), "c3-standard-4": (4, 16384), "t2a-standard-1": (1, 4096),
    "t2a-standard-2": (2, 8192),
}
GUEST_FEATURES = {"UEFI_COMPATIBLE", "VIRTIO_SCSI_MULTIQUEUE", "GVNIC", "SEV_CAPABLE",
                  "MULTI_IP_SUBNET", "SECURE_BOOT", "WINDOWS", "IDPF", "SEV_SNP_CAPABLE"}


def now_rfc3339():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def crc32c(data):
    table = CRC_TABLE
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC_TABLE = _crc_table()
# --no-hashes: leave CRC32C and MD5 out of object resources, x-goog-hash and ETags. For
# benchmarks only: GCS hashes on its own machines, while here the pure-Python CRC32C
# (about 10 MB/s) and MD5 would take the cores the converters under test need.
NO_HASHES = False


class ApiError(Exception):
    """An error reply: JSON (Google API style) or XML (signed URLs)."""

    def __init__(self, status, message, reason="invalid", xml_code=None, extra=None):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason
        self.xml_code, self.extra = xml_code, extra or {}


class Obj:
    def __init__(self, bucket, name, data, content_type, metadata=None, components=None):
        self.bucket, self.name, self.data = bucket, name, bytes(data)
        self.content_type = content_type or "application/octet-stream"
        self.metadata = metadata or {}
        self.components = components
        self.generation = str(time.time_ns() // 1000)
        self.created = now_rfc3339()
        self._crc = None

    def crc(self):
        """The object's CRC32C (base64), computed once; None with --no-hashes."""
        if self._crc is None and not NO_HASHES:
            self._crc = base64.b64encode(struct.pack(">I", crc32c(self.data))).decode()
        return self._crc

    def resource(self, base):
        self.crc()
        enc = urllib.parse.quote(self.name, safe="")
        r = {"kind": "storage#object", "id": "%s/%s/%s" % (self.bucket, self.name, self.generation),
             "selfLink": "%s/storage/v1/b/%s/o/%s" % (base, self.bucket, enc),
             "mediaLink": "%s/download/storage/v1/b/%s/o/%s?generation=%s&alt=media"
                          % (base, self.bucket, enc, self.generation),
             "name": self.name, "bucket": self.bucket, "generation": self.generation,
             "metageneration": "1", "contentType": self.content_type,
             "storageClass": "STANDARD", "size": str(len(self.data)),
             "etag": "CAE=", "timeCreated": self.created, "updated": self.created,
             "timeStorageClassUpdated": self.created}
        if self._crc:
            r["crc32c"] = self._crc
        if self.components is None and not NO_HASHES:
            r["md5Hash"] = base64.b64encode(hashlib.md5(self.data).digest()).decode()
        else:
            r["componentCount"] = self.components
        if self.metadata:
            r["metadata"] = dict(self.metadata)
        return r


class State:
    def __init__(self):
        self.lock = threading.RLock()
        self.keys = {}  # client_email -> {"public", "project", "kid"}
        self.faults = faultproxy.State()
        self.config = {"op_steps": 1, "instance_steps": 2, "fail_ops": []}
        self.token_lifetime = 3599
        self.reset()

    def reset(self):
        with self.lock:
            self.tokens = {}
            self.buckets = {}
            self.objects = {}  # (bucket, name) -> Obj
            self.sessions = {}
            self.compute = {}  # (project, scope, collection) -> {name: resource}
            self.ops = {}      # (project, scope, name) -> op record
            self.ips = {}      # subnetwork key -> used host numbers
            self.counter = 1000
            self.stats = {"token_grants": 0, "token_rejects": 0, "signed_ok": 0,
                          "signed_rejected": 0, "compose_calls": 0, "session_queries": 0,
                          "inserts": {}, "deletes": {}}

    def next_id(self):
        self.counter += 1
        return str(7000000000000000000 + self.counter)


STATE = State()


# ---------------------------------------------------------------- token endpoint

def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def grant(form, host):
    def bad(desc):
        STATE.stats["token_rejects"] += 1
        raise ApiError(400, desc, "invalid_grant")
    if form.get("grant_type") != GRANT:
        STATE.stats["token_rejects"] += 1
        raise ApiError(400, "Invalid grant_type: %s" % form.get("grant_type", ""),
                       "unsupported_grant_type")
    parts = form.get("assertion", "").split(".")
    if len(parts) != 3:
        bad("Invalid JWT: the assertion is not header.claims.signature")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
    except ValueError:
        bad("Invalid JWT: not base64url JSON")
    if header.get("alg") != "RS256":
        bad("Invalid JWT: the algorithm must be RS256")
    key = STATE.keys.get(claims.get("iss"))
    if key is None:
        bad("Invalid grant: account not found")
    if header.get("kid") is not None and header["kid"] != key["kid"]:
        bad("Invalid JWT Signature.")
    try:
        key["public"].verify(sig, (parts[0] + "." + parts[1]).encode(), padding.PKCS1v15(),
                             hashes.SHA256())
    except InvalidSignature:
        bad("Invalid JWT Signature.")
    own = "http://%s/token" % host
    if claims.get("aud") not in (own, "https://oauth2.googleapis.com/token"):
        bad("Invalid JWT: Failed audience check. The right audience is %s" % own)
    iat, exp, t = claims.get("iat"), claims.get("exp"), time.time()
    if (not isinstance(iat, int) or not isinstance(exp, int) or exp <= iat or exp - iat > 3600
            or iat > t + 300 or exp < t - 300):
        bad("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
            "timeframe. Check your iat and exp values in the JWT claim.")
    if not claims.get("scope"):
        STATE.stats["token_rejects"] += 1
        raise ApiError(400, "Invalid OAuth scope or ID token audience provided.", "invalid_scope")
    token = "ya29.fake-" + secrets.token_urlsafe(32)
    with STATE.lock:
        STATE.tokens[token] = (claims["iss"], t + STATE.token_lifetime)
        STATE.stats["token_grants"] += 1
    return {"access_token": token, "expires_in": STATE.token_lifetime, "token_type": "Bearer"}


def bearer(headers):
    """The service account behind the request's token, or a 401."""
    auth = headers.get("Authorization", "")
    tok = auth[7:] if auth.startswith("Bearer ") else None
    with STATE.lock:
        hit = STATE.tokens.get(tok) if tok else None
    if not hit or hit[1] < time.time():
        raise ApiError(401, "Request had invalid authentication credentials. Expected OAuth 2 "
                            "access token, login cookie or other valid authentication credential. "
                            "See https://developers.google.com/identity/sign-in/web/devconsole-"
                            "project.", "authError", extra={"status": "UNAUTHENTICATED"})
    return hit[0]


# ---------------------------------------------------------------- storage

def bucket_resource(b, base):
    return dict(b, selfLink="%s/storage/v1/b/%s" % (base, b["name"]))


def need_bucket(name):
    b = STATE.buckets.get(name)
    if b is None:
        raise ApiError(404, "The specified bucket does not exist.", "notFound",
                       xml_code="NoSuchBucket")
    return b


def need_object(bucket, name):
    need_bucket(bucket)
    o = STATE.objects.get((bucket, name))
    if o is None:
        raise ApiError(404, "No such object: %s/%s" % (bucket, name), "notFound",
                       xml_code="NoSuchKey")
    return o


def put_object(bucket, name, data, content_type, metadata=None, components=None):
    if not name or len(name.encode()) > 1024:
        raise ApiError(400, "Invalid object name", "invalid")
    need_bucket(bucket)
    o = Obj(bucket, name, data, content_type, metadata, components)
    STATE.objects[(bucket, name)] = o
    return o


def bucket_insert(project, body):
    name = body.get("name", "")
    if not BUCKET_RE.match(name) or ".." in name:
        raise ApiError(400, "Invalid bucket name: '%s'" % name, "invalid")
    if project not in {k["project"] for k in STATE.keys.values()}:
        raise ApiError(404, "The requested project was not found.", "notFound")
    if name in STATE.buckets:
        raise ApiError(409, "Your previous request to create the named bucket succeeded and "
                            "you already own it.", "conflict")
    loc = (body.get("location") or "US").upper()
    t = now_rfc3339()
    b = {"kind": "storage#bucket", "id": name, "name": name, "projectNumber": "123456789012",
         "metageneration": "1", "location": loc,
         "locationType": "multi-region" if loc in ("US", "EU", "ASIA") else "region",
         "storageClass": body.get("storageClass", "STANDARD"), "timeCreated": t, "updated": t,
         "etag": "CAE=", "iamConfiguration": {
             "uniformBucketLevelAccess": {"enabled": bool(body.get("iamConfiguration", {})
                                                          .get("uniformBucketLevelAccess", {})
                                                          .get("enabled"))},
             "publicAccessPrevention": body.get("iamConfiguration", {})
                                           .get("publicAccessPrevention", "inherited")}}
    if "lifecycle" in body:
        b["lifecycle"] = body["lifecycle"]
    STATE.buckets[name] = b
    return b


def list_objects(bucket, q, base):
    need_bucket(bucket)
    prefix, delim = q.get("prefix", ""), q.get("delimiter")
    limit = max(1, min(int(q.get("maxResults", 1000)), 1000))
    start = q.get("pageToken", "")
    names = sorted(n for (b, n) in STATE.objects if b == bucket and n.startswith(prefix))
    items, prefixes, out = [], [], {"kind": "storage#objects"}
    for n in names:
        if start and n <= start:
            continue
        if delim:
            cut = n.find(delim, len(prefix))
            if cut >= 0:
                p = n[:cut + len(delim)]
                if p not in prefixes:
                    prefixes.append(p)
                continue
        if len(items) == limit:
            out["nextPageToken"] = items[-1]["name"]
            break
        items.append(STATE.objects[(bucket, n)].resource(base))
    if items:
        out["items"] = items
    if prefixes:
        out["prefixes"] = prefixes
    return out


def compose(bucket, dest, body):
    srcs = body.get("sourceObjects") or []
    if not srcs:
        raise ApiError(400, "You must provide at least one source component.", "required")
    if len(srcs) > COMPOSE_MAX:
        raise ApiError(400, "The number of source components provided (%d) exceeds the maximum "
                            "(%d)" % (len(srcs), COMPOSE_MAX), "invalid")
    data, parts = bytearray(), 0
    for s in srcs:
        o = need_object(bucket, s.get("name", ""))
        data += o.data
        parts += o.components or 1
    d = body.get("destination") or {}
    STATE.stats["compose_calls"] += 1
    return put_object(bucket, dest, data, d.get("contentType"), d.get("metadata"), parts)


def parse_multipart(ctype, body):
    """(metadata, media, media type) of a multipart/related upload (CRLF or LF lines)."""
    m = re.search(r"""boundary=["']?([^"';]+)["']?""", ctype)
    if not m:
        raise ApiError(400, "Missing boundary in multipart body", "parseError")
    sep = b"--" + m.group(1).encode()
    parts = [p for p in body.split(sep)[1:] if not p.startswith(b"--")]
    if len(parts) != 2:
        raise ApiError(400, "A multipart upload has a metadata part and a media part",
                       "parseError")
    out = []
    for p in parts:
        p = p[2:] if p.startswith(b"\r\n") else p[1:] if p.startswith(b"\n") else p
        crlf = p.find(b"\r\n\r\n")
        lf = p.find(b"\n\n")
        if crlf >= 0 and (lf < 0 or crlf < lf):
            head, payload = p[:crlf], p[crlf + 4:]
        elif lf >= 0:
            head, payload = p[:lf], p[lf + 2:]
        else:
            raise ApiError(400, "A multipart part has no header end", "parseError")
        payload = payload[:-2] if payload.endswith(b"\r\n") else \
            payload[:-1] if payload.endswith(b"\n") else payload
        ct = re.search(rb"(?im)^content-type:\s*([^\r\n]+)", head)
        out.append((ct.group(1).decode() if ct else None, payload))
    return json.loads(out[0][1] or b"{}"), out[1][1], out[1][0]


# ---------------------------------------------------------------- V4 signed URLs

def canonical_query(pairs):
    enc = sorted((urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
                 for k, v in pairs)
    return "&".join("%s=%s" % kv for kv in enc)


def verify_signed(method, raw_path, query, headers):
    """Check a V4 signed request; raise an XML-style ApiError when it is not valid."""
    q = urllib.parse.parse_qsl(query, keep_blank_values=True)
    params = dict(q)
    sig = params.get("X-Goog-Signature", "")
    cred = params.get("X-Goog-Credential", "").split("/")
    date, expires = params.get("X-Goog-Date", ""), params.get("X-Goog-Expires", "0")
    if params.get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256" or len(cred) != 5 or \
            cred[2:] != ["auto", "storage", "goog4_request"]:
        raise ApiError(400, "Invalid argument.", xml_code="InvalidArgument")
    key = STATE.keys.get(cred[0])
    if key is None:
        raise ApiError(403, "The provided credential does not exist.", xml_code="AccessDenied")
    try:
        t0 = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
        exp = int(expires)
    except ValueError:
        raise ApiError(400, "Invalid argument.", xml_code="InvalidArgument")
    if exp < 1 or exp > SIGNED_MAX:
        raise ApiError(400, "Expiration must be at most 604800 seconds.",
                       xml_code="AuthorizationQueryParametersError")
    if time.time() > t0 + exp:
        raise ApiError(400, "Request has expired", xml_code="ExpiredToken")
    if t0 > time.time() + 900:
        raise ApiError(400, "Request is not yet valid", xml_code="RequestNotYetValid")
    signed = params.get("X-Goog-SignedHeaders", "").split(";")
    lines = []
    for h in signed:
        if h == "host":
            v = headers.get("Host", "").split(":")[0]
        else:
            v = headers.get(h)
            if v is None:
                raise ApiError(403, "Signed header %s is missing" % h,
                               xml_code="SignatureDoesNotMatch")
        lines.append("%s:%s\n" % (h, " ".join(v.split())))
    path = urllib.parse.quote(urllib.parse.unquote(raw_path), safe="/-_.~")
    payload = headers.get("x-goog-content-sha256") if "x-goog-content-sha256" in signed \
        else "UNSIGNED-PAYLOAD"
    creq = "%s\n%s\n%s\n%s\n%s\n%s" % (
        method, path, canonical_query([kv for kv in q if kv[0] != "X-Goog-Signature"]),
        "".join(lines), ";".join(signed), payload)
    sts = "GOOG4-RSA-SHA256\n%s\n%s\n%s" % (date, "/".join(cred[1:]),
                                           hashlib.sha256(creq.encode()).hexdigest())
    try:
        key["public"].verify(bytes.fromhex(sig), sts.encode(), padding.PKCS1v15(),
                             hashes.SHA256())
    except (InvalidSignature, ValueError):
        STATE.stats["signed_rejected"] += 1
        raise ApiError(403, "Access denied.", xml_code="SignatureDoesNotMatch",
                       extra={"StringToSign": sts, "CanonicalRequest": creq})
    STATE.stats["signed_ok"] += 1


# ---------------------------------------------------------------- compute

def gce_error(status, message, reason="invalid"):
    return ApiError(status, message, reason)


def region_of(zone):
    return zone.rsplit("-", 1)[0]


def rel(link):
    """"projects/p/..." from a full or partial resource URL."""
    i = link.find("projects/")
    return link[i:] if i >= 0 else link


def coll(project, scope, collection):
    return STATE.compute.setdefault((project, scope, collection), {})


def find(link):
    """The resource a partial or full URL names, or None."""
    m = re.match(r"projects/([^/]+)/((?:global)|(?:regions|zones)/[^/]+)/([^/]+)/([^/]+)$",
                 rel(link))
    if not m:
        return None
    return STATE.compute.get((m.group(1), m.group(2), m.group(3)), {}).get(m.group(4))


def in_cidr(cidr):
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)\.(\d+)/(\d+)$", cidr or "")
    if not m or any(int(x) > 255 for x in m.groups()[:4]) or not 8 <= int(m.group(5)) <= 29:
        return None
    ip = 0
    for x in m.groups()[:4]:
        ip = ip * 256 + int(x)
    bits = int(m.group(5))
    if ip & ((1 << (32 - bits)) - 1):
        return None
    return ip, bits


def ip_str(n):
    return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))


def check_archive(obj):
    """Is it a gzip'd tar whose first member is disk.raw? (Only the first header is read.)"""
    try:
        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(obj.data, 512)
    except zlib.error:
        return False
    return len(head) == 512 and head[:9] == b"disk.raw\0"


def new_op(project, scope, kind, target, apply, base, fail=None):
    name = "operation-%d-%s" % (int(time.time() * 1000), secrets.token_hex(6))
    op = {"kind": "compute#operation", "id": STATE.next_id(), "name": name,
          "operationType": kind, "targetLink": "%s/projects/%s/%s" % (base, project, target),
          "status": "PENDING", "progress": 0, "insertTime": now_rfc3339(),
          "selfLink": "%s/projects/%s/%s/operations/%s" % (base, project, scope, name),
          "user": "fake@gcp"}
    if scope.startswith("zones/"):
        op["zone"] = "%s/projects/%s/%s" % (base, project, scope)
    elif scope.startswith("regions/"):
        op["region"] = "%s/projects/%s/%s" % (base, project, scope)
    for rule in STATE.config["fail_ops"]:
        if rule.get("times", 1) > 0 and rule.get("match") == "%s %s" % (
                kind, target.split("/")[-2]):
            rule["times"] = rule.get("times", 1) - 1
            fail = (rule.get("code", "INTERNAL_ERROR"), rule.get("message", "injected failure"))
            break
    STATE.ops[(project, scope, name)] = {"op": op, "apply": apply, "polls": 0, "fail": fail}
    return dict(op)


def advance(rec, finish=False):
    op = rec["op"]
    if op["status"] == "DONE":
        return
    rec["polls"] += 1
    if rec["polls"] < STATE.config["op_steps"] and not finish:
        op["status"], op["progress"] = "RUNNING", 50
        return
    err = rec["fail"]
    if err is None:
        try:
            rec["apply"]()
        except ApiError as e:
            err = (e.reason, e.message)
    op["status"], op["progress"], op["endTime"] = "DONE", 100, now_rfc3339()
    if err:
        op["error"] = {"errors": [{"code": err[0], "message": err[1]}]}
        op["httpErrorStatusCode"], op["httpErrorMessage"] = 400, "BAD REQUEST"


def gce_insert(project, scope, collection, body, base):
    name = body.get("name", "")
    if not NAME_RE.match(name):
        raise gce_error(400, "Invalid value for field 'resource.name': '%s'. Must be a match of "
                             "regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'" % name)
    items = coll(project, scope, collection)
    target = "%s/%s/%s" % (scope, collection, name)
    if name in items:
        raise gce_error(409, "The resource 'projects/%s/%s' already exists" % (project, target),
                        "alreadyExists")
    res = dict(body, kind="compute#" + collection.rstrip("s").replace("ie", "y"),
               id=STATE.next_id(), creationTimestamp=now_rfc3339(),
               selfLink="%s/projects/%s/%s" % (base, project, target))
    if scope.startswith("zones/"):
        res["zone"] = "%s/projects/%s/%s" % (base, project, scope)
    if scope.startswith("regions/"):
        res["region"] = "%s/projects/%s/%s" % (base, project, scope)
    apply = VALIDATE[collection](project, scope, res, base)
    kinds = STATE.stats["inserts"]
    kinds[collection] = kinds.get(collection, 0) + 1

    def done():
        if name in items:
            raise ApiError(409, "The resource 'projects/%s/%s' already exists"
                           % (project, target), "RESOURCE_ALREADY_EXISTS")
        apply()
        items[name] = res
    return new_op(project, scope, "insert", target, done, base)


def v_network(project, scope, res, base):
    if res.get("autoCreateSubnetworks") is None and "IPv4Range" not in res:
        res["autoCreateSubnetworks"] = True
    res.setdefault("routingConfig", {"routingMode": "REGIONAL"})
    res.setdefault("mtu", 1460)
    res["subnetworks"] = []
    res["x_gcloud_subnet_mode"] = "CUSTOM" if not res["autoCreateSubnetworks"] else "AUTO"
    return lambda: None


def v_subnetwork(project, scope, res, base):
    net = find(res.get("network", ""))
    if net is None:
        raise gce_error(404, "The resource '%s' was not found" % rel(res.get("network", "")),
                        "notFound")
    c = in_cidr(res.get("ipCidrRange"))
    if c is None:
        raise gce_error(400, "Invalid value for field 'resource.ipCidrRange': '%s'. Invalid "
                             "IPv4 CIDR." % res.get("ipCidrRange"))
    res["network"] = net["selfLink"]
    res["gatewayAddress"] = ip_str(c[0] + 1)

    def apply():
        for s in coll(project, scope, "subnetworks").values():
            o = in_cidr(s["ipCidrRange"])
            lo, hi = max(c[0], o[0]), min(c[0] + (1 << (32 - c[1])), o[0] + (1 << (32 - o[1])))
            if s["network"] == res["network"] and lo < hi:
                raise ApiError(400, "Invalid IPCidrRange: %s conflicts with existing subnetwork "
                                    "'%s' in region '%s'." % (res["ipCidrRange"], s["name"],
                                                              scope.split("/")[1]),
                               "INVALID_USAGE")
        net["subnetworks"].append(res["selfLink"])
    return apply


def v_firewall(project, scope, res, base):
    net = find(res.get("network", ""))
    if net is None:
        raise gce_error(404, "The resource '%s' was not found" % rel(res.get("network", "")),
                        "notFound")
    if not res.get("allowed") and not res.get("denied"):
        raise gce_error(400, "Invalid value for field 'resource.allowed': ''. Must specify at "
                             "least one allowed or denied rule.")
    for a in res.get("allowed", []):
        if a.get("IPProtocol") not in ("tcp", "udp", "icmp", "all", "esp", "ah", "sctp"):
            raise gce_error(400, "Invalid value for field 'resource.allowed[0].IPProtocol'")
    for r in res.get("sourceRanges", []):
        if in_cidr(r) is None and r != "0.0.0.0/0":
            raise gce_error(400, "Invalid value for field 'resource.sourceRanges[0]': '%s'" % r)
    res["network"] = net["selfLink"]
    res.setdefault("direction", "INGRESS")
    res.setdefault("priority", 1000)
    return lambda: None


def v_image(project, scope, res, base):
    src = (res.get("rawDisk") or {}).get("source", "")
    m = re.match(r"^(?:https://storage\.googleapis\.com/|gs://)([^/]+)/(.+)$", src)
    if not m:
        raise gce_error(400, "Invalid value for field 'resource.rawDisk.source': '%s'." % src)
    for f in res.get("guestOsFeatures", []):
        if f.get("type") not in GUEST_FEATURES:
            raise gce_error(400, "Invalid value for field 'resource.guestOsFeatures[0].type': "
                                 "'%s'." % f.get("type"))
    res["status"] = "READY"
    res["sourceType"] = "RAW"

    def apply():
        o = STATE.objects.get((m.group(1), urllib.parse.unquote(m.group(2))))
        if o is None:
            raise ApiError(404, "The resource '%s' was not found" % src, "RESOURCE_NOT_FOUND")
        if not check_archive(o):
            raise ApiError(400, "Invalid value for field 'resource.rawDisk.source': '%s'. The "
                                "archive is not a gzip'd tar whose first member is disk.raw."
                           % src, "INVALID_FIELD_VALUE")
        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(o.data, 512)
        size = int(head[124:136].split(b"\0")[0] or b"0", 8)
        res["archiveSizeBytes"] = str(len(o.data))
        res["diskSizeGb"] = str(max(1, -(-size // (1 << 30))))
    return apply


def v_disk(project, scope, res, base):
    img = None
    if res.get("sourceImage"):
        img = find(res["sourceImage"])
        if img is None:
            raise gce_error(404, "The resource '%s' was not found" % rel(res["sourceImage"]),
                            "notFound")
        res["sourceImage"] = img["selfLink"]
        res.setdefault("sizeGb", img.get("diskSizeGb", "10"))
    res.setdefault("sizeGb", "10")
    res["status"] = "READY"
    res["users"] = []
    return lambda: None


def v_instance(project, scope, res, base):
    zone = scope.split("/")[1]
    mt = (res.get("machineType") or "").split("/")[-1]
    if mt not in MACHINE_TYPES:
        raise gce_error(400, "Invalid value for field 'resource.machineType': '%s'. Machine type "
                             "with name '%s' does not exist in zone '%s'."
                        % (res.get("machineType"), mt, zone))
    res["machineType"] = "%s/projects/%s/zones/%s/machineTypes/%s" % (base, project, zone, mt)
    nics = res.get("networkInterfaces") or []
    if len(nics) != 1:
        raise gce_error(400, "Invalid value for field 'resource.networkInterfaces'")
    sub = find(nics[0].get("subnetwork", ""))
    if sub is None:
        raise gce_error(404, "The resource '%s' was not found"
                        % rel(nics[0].get("subnetwork", "")), "notFound")
    if sub["selfLink"].split("/regions/")[1].split("/")[0] != region_of(zone):
        raise gce_error(400, "Invalid value for field 'resource.networkInterfaces[0].subnetwork'"
                             ": the subnetwork is not in region '%s'." % region_of(zone))
    disks = res.get("disks") or []
    boot = [d for d in disks if d.get("boot")]
    if len(boot) != 1:
        raise gce_error(400, "Invalid value for field 'resource.disks': exactly one boot disk")
    attached = []
    for i, d in enumerate(disks):
        if d.get("initializeParams"):
            img = find(d["initializeParams"].get("sourceImage", ""))
            if img is None:
                raise gce_error(404, "The resource '%s' was not found"
                                % rel(d["initializeParams"].get("sourceImage", "")), "notFound")
        else:
            disk = find(d.get("source", ""))
            if disk is None or disk["zone"].split("/")[-1] != zone:
                raise gce_error(404, "The resource '%s' was not found" % rel(d.get("source", "")),
                                "notFound")
            if disk["users"]:
                raise gce_error(400, "The disk resource '%s' is already being used by '%s'"
                                % (rel(disk["selfLink"]), rel(disk["users"][0])),
                                "resourceInUseByAnotherResource")
            attached.append(disk)
    res["status"] = "PROVISIONING"
    res["_polls"] = 0

    def apply():
        key = sub["selfLink"]
        used = STATE.ips.setdefault(key, set())
        c = in_cidr(sub["ipCidrRange"])
        host = next(h for h in range(2, 1 << (32 - c[1])) if h not in used)
        used.add(host)
        nics[0]["network"] = sub["network"]
        nics[0]["subnetwork"] = sub["selfLink"]
        nics[0]["networkIP"] = ip_str(c[0] + host)
        nics[0]["name"] = "nic0"
        for ac in nics[0].get("accessConfigs", []):
            if ac.get("type") == "ONE_TO_ONE_NAT":
                ac["natIP"] = "34.%d.%d.%d" % (host // 65536 % 256, host // 256 % 256, host % 256)
        items = coll(project, scope, "disks")
        for i, d in enumerate(disks):
            d["deviceName"] = d.get("deviceName") or ("persistent-disk-%d" % i)
            d["index"] = i
            if d.get("initializeParams"):
                img = find(d["initializeParams"]["sourceImage"])
                bd = {"kind": "compute#disk", "id": STATE.next_id(), "name": res["name"],
                      "sizeGb": img.get("diskSizeGb", "10"), "status": "READY",
                      "sourceImage": img["selfLink"], "zone": res["zone"],
                      "selfLink": "%s/projects/%s/%s/disks/%s" % (base, project, scope,
                                                                  res["name"]),
                      "users": [res["selfLink"]], "creationTimestamp": now_rfc3339()}
                items[res["name"]] = bd
                d["source"] = bd["selfLink"]
        for disk in attached:
            disk["users"].append(res["selfLink"])
    return apply


VALIDATE = {"networks": v_network, "subnetworks": v_subnetwork, "firewalls": v_firewall,
            "images": v_image, "disks": v_disk, "instances": v_instance}


def gce_delete(project, scope, collection, name, base):
    items = coll(project, scope, collection)
    res = items.get(name)
    target = "%s/%s/%s" % (scope, collection, name)
    if res is None:
        raise gce_error(404, "The resource 'projects/%s/%s' was not found" % (project, target),
                        "notFound")
    kinds = STATE.stats["deletes"]
    kinds[collection] = kinds.get(collection, 0) + 1

    def in_use(by):
        raise ApiError(400, "The %s resource 'projects/%s/%s' is already being used by '%s'"
                       % (collection.rstrip("s"), project, target, rel(by)),
                       "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE")

    def apply():
        link = res["selfLink"]
        if collection == "networks":
            for (p, s, c), objs in STATE.compute.items():
                for o in objs.values():
                    if c in ("subnetworks", "firewalls") and o.get("network") == link:
                        in_use(o["selfLink"])
        if collection == "subnetworks":
            for (p, s, c), objs in STATE.compute.items():
                for o in objs.values():
                    if c == "instances" and any(n.get("subnetwork") == link
                                                for n in o.get("networkInterfaces", [])):
                        in_use(o["selfLink"])
            net = find(res["network"])
            if net and link in net["subnetworks"]:
                net["subnetworks"].remove(link)
        if collection == "disks" and res.get("users"):
            in_use(res["users"][0])
        if collection == "instances":
            disks = coll(project, scope, "disks")
            for d in res.get("disks", []):
                dk = find(d.get("source", ""))
                if dk is None:
                    continue
                if res["selfLink"] in dk["users"]:
                    dk["users"].remove(res["selfLink"])
                if d.get("autoDelete"):
                    disks.pop(dk["name"], None)
            nic = res["networkInterfaces"][0]
            c = in_cidr(find(nic["subnetwork"])["ipCidrRange"])
            ip = nic["networkIP"].split(".")
            n = 0
            for x in ip:
                n = n * 256 + int(x)
            STATE.ips.get(nic["subnetwork"], set()).discard(n - c[0])
        items.pop(name, None)
    return new_op(project, scope, "delete", target, apply, base)


def gce_filter(items, expr):
    if not expr:
        return items
    m = re.match(r'^\s*(labels\.[a-z0-9_-]+|name)\s*(=|eq)\s*"?([^"]*)"?\s*$', expr)
    if not m:
        raise gce_error(400, "Invalid value for field 'filter': '%s'. Invalid list filter "
                             "expression." % expr)
    field, op, value = m.groups()

    def get(r):
        if field == "name":
            return r.get("name")
        return (r.get("labels") or {}).get(field[7:])
    if op == "eq":
        return [r for r in items if get(r) is not None and re.fullmatch(value, get(r))]
    return [r for r in items if get(r) == value]


def public(res):
    return {k: v for k, v in res.items() if not k.startswith("_")}


def gce_get(project, scope, collection, name, base):
    if collection == "machineTypes":
        zone = scope.split("/")[1]
        if name not in MACHINE_TYPES:
            raise gce_error(404, "The resource 'projects/%s/zones/%s/machineTypes/%s' was not "
                                 "found" % (project, zone, name), "notFound")
        cpu, mem = MACHINE_TYPES[name]
        return {"kind": "compute#machineType", "name": name, "guestCpus": cpu, "memoryMb": mem,
                "zone": zone, "selfLink": "%s/projects/%s/%s/machineTypes/%s"
                                          % (base, project, scope, name)}
    res = coll(project, scope, collection).get(name)
    if res is None:
        raise gce_error(404, "The resource 'projects/%s/%s/%s/%s' was not found"
                        % (project, scope, collection, name), "notFound")
    if collection == "instances" and res["status"] != "RUNNING":
        res["_polls"] += 1
        steps = STATE.config["instance_steps"]
        res["status"] = "RUNNING" if res["_polls"] >= steps else (
            "STAGING" if res["_polls"] * 2 >= steps else "PROVISIONING")
    return public(res)


def compute(method, parts, query, body, base):
    """parts: the path after /compute/v1/ split on '/'."""
    if len(parts) < 3 or parts[0] != "projects":
        raise gce_error(404, "Not Found", "notFound")
    project = parts[1]
    rest = parts[2:]
    if rest[0] == "global":
        scope, rest = "global", rest[1:]
    elif rest[0] in ("regions", "zones") and len(rest) >= 3:
        scope, rest = "%s/%s" % (rest[0], rest[1]), rest[2:]
    else:
        raise gce_error(404, "Not Found", "notFound")
    if project not in {k["project"] for k in STATE.keys.values()}:
        if method == "GET" and rest[:1] == ["images"] and len(rest) == 1:
            return {"kind": "compute#imageList", "id": "projects/%s/global/images" % project}
        raise gce_error(404, "The resource 'projects/%s' was not found" % project, "notFound")
    collection = rest[0] if rest else ""
    if collection == "operations" and len(rest) >= 2:
        rec = STATE.ops.get((project, scope, rest[1]))
        if rec is None:
            raise gce_error(404, "The resource 'projects/%s/%s/operations/%s' was not found"
                            % (project, scope, rest[1]), "notFound")
        if method == "GET" and len(rest) == 2:
            advance(rec)
        elif method == "POST" and rest[2:] == ["wait"]:
            advance(rec, finish=True)
        elif method == "DELETE" and len(rest) == 2:
            STATE.ops.pop((project, scope, rest[1]))
            return {}
        return dict(rec["op"])
    if collection not in VALIDATE and collection != "machineTypes":
        raise gce_error(404, "Not Found", "notFound")
    if len(rest) == 1 and method == "GET":
        if collection == "machineTypes":
            items = [gce_get(project, scope, collection, n, base) for n in sorted(MACHINE_TYPES)]
        else:
            items = [gce_get(project, scope, collection, n, base)
                     for n in sorted(coll(project, scope, collection))]
        items = gce_filter(items, query.get("filter"))
        limit = max(1, min(int(query.get("maxResults", 500)), 500))
        start = int(query.get("pageToken", "0") or 0)
        out = {"kind": "compute#%sList" % collection.rstrip("s").replace("ie", "y"),
               "id": "projects/%s/%s/%s" % (project, scope, collection),
               "items": items[start:start + limit],
               "selfLink": "%s/projects/%s/%s/%s" % (base, project, scope, collection)}
        if start + limit < len(items):
            out["nextPageToken"] = str(start + limit)
        return out
    if len(rest) == 1 and method == "POST":
        return gce_insert(project, scope, collection, body, base)
    if len(rest) == 2 and method == "GET":
        return gce_get(project, scope, collection, rest[1], base)
    if len(rest) == 2 and method == "DELETE":
        return gce_delete(project, scope, collection, rest[1], base)
    raise gce_error(404, "Not Found", "notFound")


# ---------------------------------------------------------------- HTTP

class Handler(faultproxy.Handler):
    protocol_version = "HTTP/1.1"

    def log_line(self, status, what=""):
        sys.stderr.write("gcp: %s %s -> %s%s\n" % (self.command, urllib.parse.urlsplit(
            self.path).path, status, what))
        sys.stderr.flush()

    def send_json(self, status, obj, headers=()):
        self.log_line(status)
        self.reply(status, (json.dumps(obj) + "\n").encode(),
                   [("Content-Type", "application/json; charset=UTF-8")] + list(headers))

    def send_error_json(self, e):
        if e.reason in ("invalid_grant", "unsupported_grant_type", "invalid_scope"):
            return self.send_json(e.status, {"error": e.reason, "error_description": e.message})
        err = {"code": e.status, "message": e.message,
               "errors": [{"message": e.message, "domain": "global", "reason": e.reason}]}
        err.update(e.extra)
        hdr = [("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')] \
            if e.status == 401 else []
        self.send_json(e.status, {"error": err}, hdr)

    def send_error_xml(self, e):
        extra = "".join("<%s>%s</%s>" % (k, v.replace("&", "&amp;").replace("<", "&lt;"), k)
                        for k, v in e.extra.items())
        text = ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code><Message>%s"
                "</Message>%s</Error>" % (e.xml_code or "InvalidArgument", e.message, extra))
        self.log_line(e.status)
        self.reply(e.status, text.encode(), [("Content-Type", "application/xml; charset=UTF-8")])

    def base(self):
        return "http://%s" % self.headers.get("Host", "127.0.0.1")

    def handle_any(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path.startswith("/__"):
            return self.control(self.read_body())
        rule = STATE.faults.pick("%s %s" % (self.command, self.path), self.headers, b"")
        if rule and self.inject(rule, u):
            return
        try:
            body = self.read_body()
        except ValueError:
            return self.send_error_json(ApiError(413, "Request too large", "uploadTooLarge"))
        try:
            with STATE.lock:
                self.route(u, body)
        except ApiError as e:
            if e.xml_code and not u.path.startswith(("/storage/", "/upload/", "/compute/")):
                self.send_error_xml(e)
            else:
                self.send_error_json(e)

    def inject(self, rule, u):
        """Answer the request from a fault rule; False when the rule only delays."""
        if rule.get("delay_ms"):
            time.sleep(rule["delay_ms"] / 1000.0)
        if "reset_after_bytes" in rule:
            got = self.rfile.read(min(int(rule["reset_after_bytes"]),
                                      int(self.headers.get("Content-Length", "0"))))
            self.keep_partial(u, got)
        if rule.get("reset") or "reset_after_bytes" in rule:
            STATE.faults.count("resets")
            self.log_line("reset", " (injected)")
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return True
        if not any(k in rule for k in ("status", "body", "headers")):
            return False
        self.read_body()
        status = int(rule.get("status", 503))
        text = rule.get("body") or json.dumps({"error": {
            "code": status, "message": "injected by the fake",
            "errors": [{"reason": "rateLimitExceeded" if status == 429 else "backendError",
                        "message": "injected by the fake"}]}})
        self.log_line(status, " (injected)")
        self.reply(status, text.encode(), [("Content-Type", "application/json")] +
                   list(rule.get("headers", {}).items()))
        return True

    def keep_partial(self, u, got):
        """A resumable chunk cut part-way: the session keeps whole 256 KiB units of it."""
        q = dict(urllib.parse.parse_qsl(u.query))
        m = re.match(r"bytes (\d+)-\d+/", self.headers.get("Content-Range", ""))
        with STATE.lock:
            s = STATE.sessions.get(q.get("upload_id"))
            if s is None or not m or int(m.group(1)) != len(s["data"]):
                return
            s["data"] += got[:len(got) // CHUNK * CHUNK]

    def route(self, u, body):
        path, q = u.path, dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        m = self.command
        if path == "/token" and m == "POST":
            form = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
            return self.send_json(200, grant(form, self.headers.get("Host", "")))
        if path.startswith("/compute/v1/"):
            bearer(self.headers)
            parts = [urllib.parse.unquote(p) for p in path[len("/compute/v1/"):].split("/")]
            doc = json.loads(body or b"{}") if m == "POST" else {}
            return self.send_json(200, compute(m, parts, q, doc, self.base() + "/compute/v1"))
        if path.startswith(("/upload/storage/v1/b/", "/resumable/upload/storage/v1/b/")):
            return self.upload(path[path.index("/upload/"):], q, body)
        if path.startswith("/storage/v1/b") or path.startswith("/download/storage/v1/b/"):
            bearer(self.headers)
            return self.storage(path.split("/storage/v1/", 1)[1], q, body)
        if "X-Goog-Signature" in q:
            return self.signed(u, body)
        raise ApiError(401, "Anonymous caller does not have storage.objects.get access.",
                       xml_code="AccessDenied")

    def storage(self, rest, q, body):
        m, base = self.command, self.base()
        parts = rest.split("/")
        if rest == "b" and m == "POST":
            return self.send_json(200, bucket_resource(bucket_insert(q.get("project", ""),
                                                                      json.loads(body or b"{}")),
                                                       base))
        if rest == "b" and m == "GET":
            items = [bucket_resource(b, base) for _, b in sorted(STATE.buckets.items())]
            return self.send_json(200, {"kind": "storage#buckets", "items": items})
        bucket = urllib.parse.unquote(parts[1])
        if len(parts) == 2:
            b = need_bucket(bucket)
            if m == "GET":
                return self.send_json(200, bucket_resource(b, base))
            if m == "DELETE":
                if any(k[0] == bucket for k in STATE.objects):
                    raise ApiError(409, "The bucket you tried to delete is not empty.",
                                   "conflict")
                del STATE.buckets[bucket]
                return self.reply(204)
        if len(parts) == 3 and parts[2] == "o" and m == "GET":
            return self.send_json(200, list_objects(bucket, q, base))
        if len(parts) >= 4 and parts[2] == "o":
            name = urllib.parse.unquote(parts[3])
            if len(parts) == 5 and parts[4] == "compose" and m == "POST":
                return self.send_json(200, compose(bucket, name, json.loads(body or b"{}"))
                                      .resource(base))
            o = need_object(bucket, name)
            if m == "DELETE":
                del STATE.objects[(bucket, name)]
                self.log_line(204)
                return self.reply(204)
            if m == "GET" and q.get("alt") == "media":
                return self.media(o)
            if m == "GET":
                return self.send_json(200, o.resource(base))
        raise ApiError(404, "Not Found", "notFound")

    def media(self, o):
        data, status, hdr = o.data, 200, []
        rng = self.headers.get("Range")
        mr = re.match(r"bytes=(\d+)-(\d*)$", rng or "")
        if mr:
            first = int(mr.group(1))
            last = min(int(mr.group(2)) if mr.group(2) else len(o.data) - 1, len(o.data) - 1)
            if first >= len(o.data):
                raise ApiError(416, "Request range not satisfiable", "requestedRangeNotSatisfiable",
                               xml_code="InvalidRange")
            data, status = o.data[first:last + 1], 206
            hdr.append(("Content-Range", "bytes %d-%d/%d" % (first, last, len(o.data))))
        hashes_ = ["crc32c=%s" % o.crc()] if o.crc() else []
        if o.components is None and not NO_HASHES:
            hashes_.append("md5=%s" % base64.b64encode(hashlib.md5(o.data).digest()).decode())
        hashes_ = ",".join(hashes_)
        hdr += [("Content-Type", o.content_type), ("x-goog-hash", hashes_),
                ("x-goog-generation", o.generation), ("x-goog-stored-content-length",
                                                      str(len(o.data)))]
        self.log_line(status)
        self.reply(status, data, hdr)

    def upload(self, path, q, body):
        base = self.base()
        bucket = urllib.parse.unquote(path.split("/")[5])
        kind = q.get("uploadType")
        if "upload_id" in q:
            return self.session(q["upload_id"], body)
        bearer(self.headers)
        if self.command != "POST":
            raise ApiError(404, "Not Found", "notFound")
        need_bucket(bucket)
        if kind == "media":
            o = put_object(bucket, q.get("name", ""), body, self.headers.get("Content-Type"))
            return self.send_json(200, o.resource(base))
        if kind == "multipart":
            meta, data, ctype = parse_multipart(self.headers.get("Content-Type", ""), body)
            o = put_object(bucket, meta.get("name") or q.get("name", ""), data,
                           meta.get("contentType") or ctype, meta.get("metadata"))
            return self.send_json(200, o.resource(base))
        if kind == "resumable":
            meta = json.loads(body or b"{}")
            name = meta.get("name") or q.get("name", "")
            if not name:
                raise ApiError(400, "Required", "required")
            sid = secrets.token_urlsafe(24)
            STATE.sessions[sid] = {"bucket": bucket, "name": name, "data": bytearray(),
                                   "ctype": meta.get("contentType") or self.headers.get(
                                       "X-Upload-Content-Type"), "meta": meta.get("metadata"),
                                   "done": None}
            loc = "%s/upload/storage/v1/b/%s/o?uploadType=resumable&name=%s&upload_id=%s" % (
                base, urllib.parse.quote(bucket, safe=""), urllib.parse.quote(name, safe=""), sid)
            self.log_line(200)
            return self.reply(200, b"", [("Location", loc), ("X-GUploader-UploadID", sid)])
        raise ApiError(400, "Invalid upload type: %s" % kind, "invalid")

    def session(self, sid, body):
        s = STATE.sessions.get(sid)
        if s is None:
            raise ApiError(404, "No such upload session", "notFound")
        if self.command == "DELETE":
            del STATE.sessions[sid]
            self.log_line(499)
            return self.reply(499)
        if s["done"] is not None:
            return self.send_json(200, s["done"].resource(self.base()))
        cr = self.headers.get("Content-Range", "")
        mq = re.match(r"bytes \*/(\d+|\*)$", cr)
        mc = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)$", cr)
        total = None
        if mq:
            STATE.stats["session_queries"] += 1
            total = None if mq.group(1) == "*" else int(mq.group(1))
        elif mc:
            first, last = int(mc.group(1)), int(mc.group(2))
            total = None if mc.group(3) == "*" else int(mc.group(3))
            if last - first + 1 != len(body) or first > len(s["data"]):
                raise ApiError(400, "Invalid request. The Content-Range does not match the "
                                    "body or skips bytes.", "invalid")
            end = first + len(body)
            if total is None or end < total:
                if len(body) % CHUNK:
                    raise ApiError(400, "Invalid request. A non-final chunk must be a multiple "
                                        "of 262144 bytes.", "invalid")
            s["data"] = s["data"][:first] + body
        elif not cr and self.command == "PUT":
            s["data"] = bytearray(body)
            total = len(body)
        else:
            raise ApiError(400, "Invalid Content-Range", "invalid")
        if total is not None and len(s["data"]) == total:
            s["done"] = put_object(s["bucket"], s["name"], s["data"], s["ctype"], s["meta"])
            return self.send_json(200, s["done"].resource(self.base()))
        hdr = [("Range", "bytes=0-%d" % (len(s["data"]) - 1))] if s["data"] else []
        self.log_line(308)
        self.reply(308, b"", hdr + [("X-GUploader-UploadID", sid)], reason="Resume Incomplete")

    def signed(self, u, body):
        verify_signed(self.command, u.path, u.query, self.headers)
        parts = u.path.lstrip("/").split("/", 1)
        bucket = urllib.parse.unquote(parts[0])
        name = urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
        if self.command == "PUT":
            o = put_object(bucket, name, body, self.headers.get("Content-Type"))
            self.log_line(200)
            etag = "0" * 32 if NO_HASHES else hashlib.md5(o.data).hexdigest()
            return self.reply(200, b"", [("ETag", '"%s"' % etag),
                                         ("x-goog-generation", o.generation)])
        if self.command in ("GET", "HEAD"):
            return self.media(need_object(bucket, name))
        raise ApiError(405, "Method not allowed", xml_code="MethodNotAllowed")

    def control(self, body):
        path = urllib.parse.urlsplit(self.path).path
        out = None
        try:
            doc = json.loads(body or b"null")
            with STATE.lock:
                if path == "/__faults" and self.command == "POST":
                    STATE.faults.set_rules(doc or [])
                    out = {"rules": len(STATE.faults.rules)}
                elif path == "/__faults" and self.command == "DELETE":
                    STATE.faults.set_rules([])
                    out = {"rules": 0}
                elif path == "/__config" and self.command == "POST":
                    for k in ("op_steps", "instance_steps", "fail_ops"):
                        if k in doc:
                            STATE.config[k] = doc[k]
                    if "token_lifetime" in doc:
                        STATE.token_lifetime = int(doc["token_lifetime"])
                    out = dict(STATE.config, token_lifetime=STATE.token_lifetime)
                elif path == "/__expire_tokens" and self.command == "POST":
                    STATE.tokens = {}
                    out = {}
                elif path == "/__stats" and self.command == "GET":
                    out = dict(STATE.stats, **STATE.faults.stats)
                elif path == "/__reset" and self.command == "POST":
                    STATE.reset()
                    STATE.faults.zero()
                    out = {}
        except (ValueError, TypeError) as e:
            return self.send_json(400, {"error": str(e)})
        if out is None:
            return self.send_json(404, {"error": "no such control endpoint"})
        self.send_json(200, out)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = handle_any


def load_key(path):
    with open(path) as f:
        k = json.load(f)
    priv = serialization.load_pem_private_key(k["private_key"].encode(), password=None)
    STATE.keys[k["client_email"]] = {"public": priv.public_key(), "project": k["project_id"],
                                     "kid": k.get("private_key_id")}


def main():
    ap = argparse.ArgumentParser(description="fake Google Cloud (token, Storage, Compute)")
    ap.add_argument("--listen", type=int, required=True, help="port, 0 for any free")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--key-file", action="append", required=True,
                    help="a service-account key file whose account may sign in")
    ap.add_argument("--token-lifetime", type=int, default=3599)
    ap.add_argument("--op-steps", type=int, default=1)
    ap.add_argument("--instance-steps", type=int, default=2)
    ap.add_argument("--no-hashes", action="store_true",
                    help="omit CRC32C and MD5 from objects (benchmarks; see NO_HASHES)")
    a = ap.parse_args()
    global NO_HASHES
    NO_HASHES = a.no_hashes
    for path in a.key_file:
        load_key(path)
    STATE.token_lifetime = a.token_lifetime
    STATE.config.update(op_steps=max(1, a.op_steps), instance_steps=max(1, a.instance_steps))
    srv = faultproxy.Server((a.host, a.listen), Handler)
    print(json.dumps({"port": srv.server_address[1], "pid": os.getpid()}), flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
