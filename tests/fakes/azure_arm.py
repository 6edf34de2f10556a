#!/usr/bin/env python3
"""A fake of Entra ID (client-credentials token) and Azure Resource Manager for tests.

    azure_arm.py --host 127.0.0.1 --port 0 [--tenant T --client-id C --client-secret S]
                 [--subscription SUB] [--blob-endpoint URL] [--storage-key B64]
                 [--polls N] [--retry-after S] [--token-life S]

Standard library only. Listens on host:port (0: a free port) and, once it accepts
connections, prints one JSON line {"port": N, "pid": N} on stdout. Its log (stderr) has one
line per request: method, path without query, status, error code.

Entra ID: POST /{tenant}/oauth2/v2.0/token (form) with grant_type=client_credentials, the
client id and secret given, and scope "<resource>/.default"; answers
{"token_type": "Bearer", "expires_in": N, "access_token": T} or the AADSTS errors
(invalid_client 401 for a wrong secret, unauthorized_client 400 for an unknown client,
invalid_scope 400, unsupported_grant_type 400, invalid_request 400 for a wrong tenant).

Resource Manager: /subscriptions/{sub}/resourceGroups/{rg}[/providers/{ns}/{type}/{name}]
and the collections below a group (GET .../providers/{ns}/{type}: {"value": [...]}).
Checked as ARM checks them:
  - Authorization: Bearer with a token this fake issued and that has not expired or been
    revoked (401 InvalidAuthenticationToken / AuthenticationFailed otherwise);
  - api-version per resource type (API_VERSIONS below; missing: 400
    MissingApiVersionParameter, other: 400 InvalidApiVersionParameter);
  - the subscription (404 SubscriptionNotFound), the group of a resource (404
    ResourceGroupNotFound), names, and the request shape of each type (400
    InvalidRequestContent / InvalidParameter / InvalidResourceReference naming the field):
    resource group (location), network security group (rules: protocol, priority
    100..4096 unique, direction, access, prefixes and port ranges), virtual network
    (address space, subnets with prefixes inside it, NSG references that exist), public IP
    (Standard needs Static), network interface (subnet, public IP, NSG that exist), storage
    account (sku, kind), disk (Import: sourceUri on --blob-endpoint, storageAccountId that
    exists, osType, hyperVGeneration V1/V2; the VHD blob is looked up in the blob service
    with a SharedKey-signed HEAD when --storage-key is given: it must be a page blob whose
    size is a MiB multiple plus 512), virtual machine (vmSize, osDisk Attach of an existing
    disk with osType, no osProfile with Attach, data disks Attach with unique LUNs, NICs
    that exist, boot diagnostics);
  - deletes refuse what is still used (NSG by a subnet or NIC, subnet by a NIC, public IP by
    a NIC, NIC by a VM, disk by a VM), so only dependency order works.

Long-running operations as the ARM reference describes: a PUT that creates answers 201
with Azure-AsyncOperation and Retry-After, the resource in provisioningState
Creating/Updating; GET of the operation says InProgress --polls times, then Succeeded (or
Failed with {"error": {"code", "message"}}). A PUT on an existing resource updates it
(200, Succeeded). A DELETE answers 202 with Location; that URL answers 202 --polls times,
then 200 and the resource is gone (a group takes its resources with it); deleting what is
absent is 204. POST .../storageAccounts/{name}/listKeys answers 202 with Location, whose
final answer is {"keys": [{"keyName": "key1", "value": --storage-key}, ...]}.

Faults and control (no auth): POST /__faults {"throttle": N} makes the next N Resource
Manager requests 429 with Retry-After 0 (ARM's throttling reply); {"fail_next": {"type":
"virtualMachines", "code": C, "message": M}} makes the next created resource of that type
end its operation Failed; {"revoke_tokens": true} makes every issued token invalid (401
until the client fetches a new one); {"token_life": S} sets expires_in of tokens issued
from now on. GET /__stats: {"creates": {type: n}, "puts",
"deletes", "requests", "throttled", "tokens", "polls", "resources": [ids]}. POST /__reset
forgets everything.
"""
import argparse
import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
import http.server

AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")

API_VERSIONS = {
    "resourcegroups": "2021-04-01",
    "microsoft.network/networksecuritygroups": "2023-09-01",
    "microsoft.network/virtualnetworks": "2023-09-01",
    "microsoft.network/publicipaddresses": "2023-09-01",
    "microsoft.network/networkinterfaces": "2023-09-01",
    "microsoft.storage/storageaccounts": "2023-01-01",
    "microsoft.compute/disks": "2023-04-02",
    "microsoft.compute/virtualmachines": "2023-09-01",
    "operations": None,  # operation URLs carry their own api-version
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
MIB = 1 << 20


class ArmError(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def bad(code, message, status=400):
    return ArmError(status, code, message)


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.resources = {}  # lower-case id -> resource
        self.ops = {}        # op id -> {"left": polls, "done": fn, "error": ...}
        self.tokens = {}     # token -> expiry
        self.faults = {"throttle": 0, "fail_next": None}
        self.stats = {"creates": {}, "puts": 0, "deletes": 0, "requests": 0, "throttled": 0,
                      "tokens": 0, "polls": 0}
        self.ip_seq = 4


def get_path(obj, *keys):
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "azure-arm-fake"
    # One write per reply (headers and body together) and no Nagle: otherwise every
    # keep-alive request waits out a delayed ACK.
    wbufsize = -1
    disable_nagle_algorithm = True

    def log_message(self, fmt, *a):
        pass

    # ---- plumbing --------------------------------------------------------------------

    def reply(self, status, body=None, headers=None, code=""):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        sys.stderr.write("%s %s %d %s\n" % (self.command, self.path.split("?")[0], status, code))

    def error(self, e):
        self.reply(e.status, {"error": {"code": e.code, "message": e.message}}, e.headers,
                   e.code)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 4 * MIB:
            raise bad("RequestTooLarge", "request body over 4 MiB", 413)
        return self.rfile.read(n) if n else b""

    def json_body(self):
        raw = self.body()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise bad("InvalidRequestContent", "the request content is not valid JSON")

    def base(self):
        return "http://%s" % self.headers.get("Host")

    def handle_any(self):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        try:
            if url.path.startswith("/__"):
                return self.control(url.path)
            if url.path.endswith("/oauth2/v2.0/token") and self.command == "POST":
                return self.token(url.path)
            with st.lock:
                st.stats["requests"] += 1
                self.authenticate()
                if st.faults["throttle"] > 0:
                    st.faults["throttle"] -= 1
                    st.stats["throttled"] += 1
                    raise ArmError(429, "TooManyRequests",
                                   "the request is being throttled",
                                   {"Retry-After": "0",
                                    "x-ms-ratelimit-remaining-subscription-reads": "0"})
                return self.arm(url.path, query)
        except ArmError as e:
            self.error(e)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = handle_any

    # ---- control ---------------------------------------------------------------------

    def control(self, path):
        st = self.server.state
        with st.lock:
            if path == "/__stats":
                s = dict(st.stats)
                s["resources"] = sorted(r["id"] for r in st.resources.values())
                return self.reply(200, s)
            if path == "/__reset":
                st.reset()
                return self.reply(200, {})
            if path == "/__faults":
                f = self.json_body() or {}
                if "throttle" in f:
                    st.faults["throttle"] = int(f["throttle"])
                if "fail_next" in f:
                    st.faults["fail_next"] = f["fail_next"]
                if f.get("revoke_tokens"):
                    st.tokens.clear()
                if "token_life" in f:
                    st.args.token_life = int(f["token_life"])
                return self.reply(200, st.faults)
        raise bad("NotFound", "no control endpoint %s" % path, 404)

    # ---- Entra ID --------------------------------------------------------------------

    def token(self, path):
        a = self.server.state.args
        form = dict(urllib.parse.parse_qsl(self.body().decode("utf-8", "replace")))

        def refuse(status, code, desc):
            self.reply(status, {"error": code, "error_description": desc,
                                "error_codes": [int(desc[5:12])] if desc[5:12].isdigit() else []},
                       code=code)
        if path != "/%s/oauth2/v2.0/token" % a.tenant:
            return refuse(400, "invalid_request",
                          "AADSTS900023: Specified tenant identifier is neither a valid DNS "
                          "name, nor a valid external domain.")
        if form.get("grant_type") != "client_credentials":
            return refuse(400, "unsupported_grant_type",
                          "AADSTS70003: The app requested an unsupported grant type.")
        if form.get("client_id") != a.client_id:
            return refuse(400, "unauthorized_client",
                          "AADSTS700016: Application with identifier was not found in the "
                          "directory.")
        if not hmac.compare_digest(form.get("client_secret", ""), a.client_secret):
            return refuse(401, "invalid_client",
                          "AADSTS7000215: Invalid client secret provided.")
        if form.get("scope") != "https://management.azure.com/.default":
            return refuse(400, "invalid_scope",
                          "AADSTS70011: The provided value for scope is not valid.")
        tok = "fake." + secrets.token_urlsafe(32)
        st = self.server.state
        with st.lock:
            st.tokens[tok] = time.time() + a.token_life
            st.stats["tokens"] += 1
        self.reply(200, {"token_type": "Bearer", "expires_in": a.token_life,
                         "ext_expires_in": a.token_life, "access_token": tok})

    def authenticate(self):
        st = self.server.state
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            raise ArmError(401, "AuthenticationFailed",
                           "Authentication failed. The 'Authorization' header is missing.")
        exp = st.tokens.get(auth[7:])
        if exp is None or exp < time.time():
            raise ArmError(401, "InvalidAuthenticationToken",
                           "The access token is invalid or has expired.")

    # ---- Resource Manager ------------------------------------------------------------

    def arm(self, path, query):
        st = self.server.state
        a = st.args
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or parts[0].lower() != "subscriptions":
            raise bad("InvalidRequestUri", "no such route %s" % path, 404)
        if parts[1] != a.subscription:
            raise bad("SubscriptionNotFound", "The subscription '%s' could not be found."
                      % parts[1], 404)
        rest = parts[2:]
        if len(rest) >= 4 and rest[0].lower() == "providers" and rest[2].lower() == "locations":
            return self.operation(rest, query)
        if not rest or rest[0].lower() != "resourcegroups" or len(rest) < 2:
            raise bad("InvalidRequestUri", "no such route %s" % path, 404)
        rg = rest[1]
        if len(rest) == 2:
            rtype = "resourcegroups"
        elif len(rest) >= 5 and rest[2].lower() == "providers":
            rtype = ("%s/%s" % (rest[3], rest[4])).lower()
        else:
            raise bad("InvalidRequestUri", "no such route %s" % path, 404)
        if rtype not in API_VERSIONS:
            raise bad("NoRegisteredProviderFound", "no provider for type %s" % rtype, 400)
        v = query.get("api-version")
        if not v:
            raise bad("MissingApiVersionParameter",
                      "The api-version query parameter (?api-version=) is required for all "
                      "requests.")
        if v != API_VERSIONS[rtype]:
            raise bad("InvalidApiVersionParameter",
                      "The api-version '%s' is invalid for type '%s'; this fake supports '%s'."
                      % (v, rtype, API_VERSIONS[rtype]))
        rg_id = "/subscriptions/%s/resourceGroups/%s" % (a.subscription, rg)
        if rtype == "resourcegroups":
            return self.resource(rg_id, rtype, rg, None, rest)
        if rg_id.lower() not in st.resources:
            raise bad("ResourceGroupNotFound", "Resource group '%s' could not be found." % rg,
                      404)
        if len(rest) == 5:
            if self.command != "GET":
                raise bad("InvalidRequestUri", "collections can only be listed", 405)
            prefix = "%s/providers/%s/" % (rg_id.lower(), rtype)
            items = [r for k, r in sorted(st.resources.items())
                     if k.startswith(prefix) and k.count("/") == prefix.count("/")]
            return self.reply(200, {"value": items})
        if len(rest) == 7 and rtype == "microsoft.storage/storageaccounts" \
                and rest[6] == "listKeys" and self.command == "POST":
            return self.list_keys(rg_id, rest)
        if len(rest) != 6:
            raise bad("InvalidRequestUri", "no such route %s" % path, 404)
        rid = "%s/providers/%s/%s/%s" % (rg_id, rest[3], rest[4], rest[5])
        return self.resource(rid, rtype, rest[5], rg_id, rest)

    def resource(self, rid, rtype, name, rg_id, rest):
        st = self.server.state
        key = rid.lower()
        if self.command == "GET":
            r = st.resources.get(key)
            if not r:
                raise bad("ResourceNotFound" if rg_id else "ResourceGroupNotFound",
                          "The Resource '%s' was not found." % rid, 404)
            return self.reply(200, r)
        if self.command == "PUT":
            if not NAME.match(name):
                raise bad("InvalidResourceName", "Resource name %s is invalid." % name)
            body = self.json_body()
            if not isinstance(body, dict):
                raise bad("InvalidRequestContent", "The request content was invalid.")
            st.stats["puts"] += 1
            existing = st.resources.get(key)
            res = self.validate(rtype, rid, name, body, existing)
            if existing:
                res["properties"]["provisioningState"] = "Succeeded"
                st.resources[key] = res
                return self.reply(200, res)
            st.stats["creates"][rtype] = st.stats["creates"].get(rtype, 0) + 1
            res["properties"]["provisioningState"] = "Creating" if rtype != "resourcegroups" \
                else "Succeeded"
            st.resources[key] = res
            if rtype == "resourcegroups":
                return self.reply(201, res)
            fail = st.faults["fail_next"]
            error = None
            if fail and rtype.endswith("/" + fail.get("type", "").lower()):
                st.faults["fail_next"] = None
                error = {"code": fail.get("code", "InternalOperationError"),
                         "message": fail.get("message", "injected failure")}
            if rtype == "microsoft.compute/disks" and not error:
                error = self.check_vhd(body)

            def done(ok, res=res, key=key):
                res["properties"]["provisioningState"] = "Succeeded" if ok else "Failed"
            op = self.new_op(done, error)
            return self.reply(201, res, self.async_headers(rest, op))
        if self.command == "DELETE":
            st.stats["deletes"] += 1
            if key not in st.resources:
                return self.reply(204)
            self.check_unused(key, rtype)

            def gone(ok, key=key):
                if ok:
                    for k in [k for k in st.resources if k == key or k.startswith(key + "/")]:
                        del st.resources[k]
            op = self.new_op(gone, None)
            loc = "%s/subscriptions/%s/providers/Microsoft.Resources/locations/x/" \
                  "operationResults/%s?api-version=2021-04-01" % (self.base(),
                                                                  st.args.subscription, op)
            return self.reply(202, None, {"Location": loc,
                                          "Retry-After": str(st.args.retry_after)})
        raise bad("MethodNotAllowed", "%s is not supported here" % self.command, 405)

    def new_op(self, done, error):
        st = self.server.state
        op = str(uuid.uuid4())
        st.ops[op] = {"left": st.args.polls, "done": done, "error": error, "result": None}
        return op

    def async_headers(self, rest, op):
        st = self.server.state
        ns = rest[3] if len(rest) > 3 else "Microsoft.Resources"
        url = "%s/subscriptions/%s/providers/%s/locations/x/operations/%s?api-version=%s" % (
            self.base(), st.args.subscription, ns, op, "2023-01-01")
        return {"Azure-AsyncOperation": url, "Retry-After": str(st.args.retry_after)}

    def operation(self, rest, query):
        st = self.server.state
        if self.command != "GET" or len(rest) != 6 or \
                rest[4] not in ("operations", "operationResults"):
            raise bad("InvalidRequestUri", "no such operation route", 404)
        op = st.ops.get(rest[5])
        if not op:
            raise bad("OperationNotFound", "operation %s not found" % rest[5], 404)
        st.stats["polls"] += 1
        retry = {"Retry-After": str(st.args.retry_after)}
        if op["left"] > 0:
            op["left"] -= 1
            if rest[4] == "operationResults":
                return self.reply(202, None, dict(retry, Location=self.base() + self.path))
            return self.reply(200, {"status": "InProgress"}, retry)
        if op["done"]:
            op["done"](op["error"] is None)
            op["done"] = None
        if rest[4] == "operationResults":
            if op["error"]:
                raise bad(op["error"]["code"], op["error"]["message"])
            return self.reply(200, op["result"]) if op["result"] is not None \
                else self.reply(200, None)
        if op["error"]:
            return self.reply(200, {"status": "Failed", "error": op["error"]})
        return self.reply(200, {"status": "Succeeded"})

    def list_keys(self, rg_id, rest):
        st = self.server.state
        rid = ("%s/providers/%s/%s/%s" % (rg_id, rest[3], rest[4], rest[5])).lower()
        if rid not in st.resources:
            raise bad("ResourceNotFound", "storage account %s not found" % rest[5], 404)
        op = self.new_op(None, None)
        st.ops[op]["result"] = {"keys": [
            {"keyName": "key1", "value": st.args.storage_key, "permissions": "FULL"},
            {"keyName": "key2", "value": base64.b64encode(b"k2" * 32).decode(),
             "permissions": "FULL"}]}
        loc = "%s/subscriptions/%s/providers/Microsoft.Storage/locations/x/operationResults/" \
              "%s?api-version=2023-01-01" % (self.base(), st.args.subscription, op)
        return self.reply(202, None, {"Location": loc, "Retry-After": str(st.args.retry_after)})

    # ---- shapes and references -------------------------------------------------------

    def ref(self, rid, what, want_type=None):
        st = self.server.state
        if not isinstance(rid, str) or rid.lower() not in st.resources:
            raise bad("InvalidResourceReference",
                      "Resource %s referenced by %s was not found." % (rid, what))
        if want_type and ("/providers/%s/" % want_type) not in rid.lower():
            raise bad("InvalidResourceReference", "%s must be a %s" % (what, want_type))
        return st.resources[rid.lower()]

    def validate(self, rtype, rid, name, body, existing):
        st = self.server.state
        loc = body.get("location")
        if not isinstance(loc, str) or not loc:
            raise bad("LocationRequired", "The location property is required for this "
                      "definition.")
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise bad("InvalidRequestContent", "properties must be an object")
        tags = body.get("tags") or {}
        if not isinstance(tags, dict) or any(not isinstance(v, str) for v in tags.values()):
            raise bad("InvalidTag", "tags must be string to string")
        out = {"id": rid, "name": name, "type": rtype, "location": loc, "tags": tags,
               "properties": dict(props)}
        check = getattr(self, "check_" + rtype.split("/")[-1], None)
        if check:
            check(rid, body, props, out, existing)
        return out

    def check_networksecuritygroups(self, rid, body, props, out, existing):
        seen = set()
        for i, r in enumerate(props.get("securityRules") or []):
            p = r.get("properties") or {}
            where = "securityRules[%d]" % i
            if not NAME.match(r.get("name") or ""):
                raise bad("InvalidParameter", "%s.name is invalid" % where)
            if p.get("protocol") not in ("Tcp", "Udp", "Icmp", "Esp", "Ah", "*"):
                raise bad("InvalidParameter", "%s.protocol is invalid" % where)
            pr = p.get("priority")
            if not isinstance(pr, int) or not 100 <= pr <= 4096 or (pr, p.get("direction")) in seen:
                raise bad("SecurityRuleInvalidPriority" if isinstance(pr, int) and pr in
                          [s[0] for s in seen] else "InvalidParameter",
                          "%s.priority %r is invalid or not unique" % (where, pr))
            seen.add((pr, p.get("direction")))
            if p.get("direction") not in ("Inbound", "Outbound") or \
                    p.get("access") not in ("Allow", "Deny"):
                raise bad("InvalidParameter", "%s.direction/access is invalid" % where)
            for f in ("sourceAddressPrefix", "destinationAddressPrefix", "sourcePortRange",
                      "destinationPortRange"):
                if not isinstance(p.get(f), str) or not p.get(f):
                    raise bad("InvalidParameter", "%s.%s is required" % (where, f))
            if not re.match(r"^(\*|\d{1,5}(-\d{1,5})?)$", p["destinationPortRange"]):
                raise bad("SecurityRuleInvalidPortRange", "%s.destinationPortRange %s" %
                          (where, p["destinationPortRange"]))
            out_rule = dict(r)
            out_rule["id"] = "%s/securityRules/%s" % (rid, r["name"])
            out["properties"]["securityRules"][i] = out_rule

    def check_virtualnetworks(self, rid, body, props, out, existing):
        prefixes = get_path(props, "addressSpace", "addressPrefixes")
        if not isinstance(prefixes, list) or not prefixes:
            raise bad("InvalidAddressPrefixFormat", "addressSpace.addressPrefixes is required")
        import ipaddress
        try:
            nets = [ipaddress.ip_network(p) for p in prefixes]
        except ValueError as e:
            raise bad("InvalidAddressPrefixFormat", str(e))
        subs = []
        for i, s in enumerate(props.get("subnets") or []):
            sp = s.get("properties") or {}
            try:
                sn = ipaddress.ip_network(sp.get("addressPrefix"))
            except (ValueError, TypeError):
                raise bad("InvalidAddressPrefixFormat", "subnets[%d].addressPrefix" % i)
            if not any(sn.subnet_of(n) for n in nets):
                raise bad("NetcfgSubnetRangeOutsideVnet",
                          "Subnet '%s' is not valid because its IP address range is outside "
                          "the IP address range of virtual network." % s.get("name"))
            nsg = sp.get("networkSecurityGroup")
            if nsg is not None:
                self.ref(nsg.get("id"), "subnets[%d].networkSecurityGroup" % i,
                         "microsoft.network/networksecuritygroups")
            sub = {"name": s.get("name"), "id": "%s/subnets/%s" % (rid, s.get("name")),
                   "properties": dict(sp, provisioningState="Succeeded")}
            subs.append(sub)
        out["properties"]["subnets"] = subs

    def check_publicipaddresses(self, rid, body, props, out, existing):
        sku = get_path(body, "sku", "name") or "Basic"
        if sku == "Standard" and props.get("publicIPAllocationMethod") != "Static":
            raise bad("StandardSkuPublicIPAddressesMustBeStatic",
                      "Standard sku publicIp %s must have AllocationMethod set to Static." % rid)
        out["sku"] = body.get("sku")
        st = self.server.state
        out["properties"]["ipAddress"] = existing["properties"].get("ipAddress") if existing \
            else "20.51.0.%d" % (st.ip_seq % 250 + 1)
        st.ip_seq += 1

    def subnet_of(self, sid):
        vnet_id, _, sname = sid.rpartition("/subnets/")
        vnet = self.ref(vnet_id, "subnet", "microsoft.network/virtualnetworks")
        for s in vnet["properties"].get("subnets", []):
            if s["name"] == sname:
                return s
        raise bad("InvalidResourceReference", "Subnet %s was not found." % sid)

    def check_networkinterfaces(self, rid, body, props, out, existing):
        import ipaddress
        confs = props.get("ipConfigurations")
        if not isinstance(confs, list) or not confs:
            raise bad("InvalidParameter", "ipConfigurations is required")
        st = self.server.state
        for i, c in enumerate(confs):
            cp = c.get("properties") or {}
            sid = get_path(cp, "subnet", "id")
            sub = self.subnet_of(sid if isinstance(sid, str) else "")
            pip = cp.get("publicIPAddress")
            if pip is not None:
                self.ref(pip.get("id"), "publicIPAddress", "microsoft.network/publicipaddresses")
            net = ipaddress.ip_network(sub["properties"]["addressPrefix"])
            cp = dict(cp, privateIPAddress=str(net.network_address + 4 + st.ip_seq % 200))
            st.ip_seq += 1
            out["properties"]["ipConfigurations"][i] = dict(c, properties=cp)
        nsg = props.get("networkSecurityGroup")
        if nsg is not None:
            self.ref(nsg.get("id"), "networkSecurityGroup",
                     "microsoft.network/networksecuritygroups")

    def check_storageaccounts(self, rid, body, props, out, existing):
        if get_path(body, "sku", "name") not in ("Standard_LRS", "Standard_GRS", "Standard_ZRS",
                                                  "Premium_LRS"):
            raise bad("InvalidParameter", "sku.name is invalid")
        if body.get("kind") not in ("StorageV2", "BlobStorage", "BlockBlobStorage"):
            raise bad("InvalidParameter", "kind is invalid")
        if not re.match(r"^[a-z0-9]{3,24}$", out["name"]):
            raise bad("AccountNameInvalid", "%s is not a valid storage account name" % out["name"])
        out["sku"], out["kind"] = body["sku"], body["kind"]
        ep = self.server.state.args.blob_endpoint or \
            "https://%s.blob.core.windows.net/" % out["name"]
        out["properties"]["primaryEndpoints"] = {"blob": ep}

    def check_disks(self, rid, body, props, out, existing):
        cd = props.get("creationData") or {}
        if cd.get("createOption") != "Import":
            raise bad("InvalidParameter", "this fake imports disks only (createOption Import)")
        src, sa = cd.get("sourceUri"), cd.get("storageAccountId")
        ep = self.server.state.args.blob_endpoint
        if not isinstance(src, str) or (ep and not src.startswith(ep.rstrip("/") + "/")):
            raise bad("InvalidParameter", "creationData.sourceUri %r is not a blob of the "
                      "storage account" % src)
        if "?" in src:
            raise bad("InvalidParameter", "sourceUri must not carry a SAS with storageAccountId")
        self.ref(sa, "creationData.storageAccountId", "microsoft.storage/storageaccounts")
        if props.get("osType") not in (None, "Linux", "Windows"):
            raise bad("InvalidParameter", "osType is invalid")
        if props.get("hyperVGeneration") not in (None, "V1", "V2"):
            raise bad("InvalidParameter", "hyperVGeneration must be V1 or V2")
        arch = get_path(props, "supportedCapabilities", "architecture")
        if arch not in (None, "x64", "Arm64"):
            raise bad("InvalidParameter", "supportedCapabilities.architecture is invalid")
        if arch == "Arm64" and props.get("hyperVGeneration") != "V2":
            raise bad("InvalidParameter", "Arm64 disks must be hyperVGeneration V2")
        out["sku"] = body.get("sku")

    def check_vhd(self, body):
        """Azure reads the VHD when it imports: a page blob of a MiB multiple + 512."""
        a = self.server.state.args
        if not a.storage_key or not a.blob_endpoint:
            return None
        src = get_path(body, "properties", "creationData", "sourceUri")
        try:
            length, btype = head_blob(src, a.storage_key)
        except Exception as e:  # the blob service said no: the import fails
            return {"code": "ImportSourceNotFound", "message": "cannot read %s: %s" % (src, e)}
        if btype != "PageBlob" or length < 512 + MIB or (length - 512) % MIB:
            return {"code": "InvalidVhd", "message": "The specified cookie value in VHD footer "
                    "indicates that disk '%s' with blob %s is not a supported VHD. Disk is "
                    "expected to have cookie value 'conectix'." % (body.get("name"), src)}
        return None

    def check_virtualmachines(self, rid, body, props, out, existing):
        if not get_path(props, "hardwareProfile", "vmSize"):
            raise bad("InvalidParameter", "hardwareProfile.vmSize is required")
        osd = get_path(props, "storageProfile", "osDisk") or {}
        if osd.get("createOption") != "Attach" or osd.get("osType") not in ("Linux", "Windows"):
            raise bad("InvalidParameter", "storageProfile.osDisk must Attach a disk with osType")
        if "osProfile" in props:
            raise bad("InvalidParameter", "Parameter 'osProfile' is not allowed.", 400)
        disk_ids = [get_path(osd, "managedDisk", "id")]
        self.ref(disk_ids[0], "osDisk.managedDisk", "microsoft.compute/disks")
        luns = set()
        for i, d in enumerate(get_path(props, "storageProfile", "dataDisks") or []):
            if d.get("createOption") != "Attach" or d.get("lun") in luns or \
                    not isinstance(d.get("lun"), int):
                raise bad("InvalidParameter", "dataDisks[%d] must Attach at a unique lun" % i)
            luns.add(d["lun"])
            disk_ids.append(get_path(d, "managedDisk", "id"))
            self.ref(disk_ids[-1], "dataDisks[%d].managedDisk" % i, "microsoft.compute/disks")
        nics = get_path(props, "networkProfile", "networkInterfaces")
        if not isinstance(nics, list) or not nics:
            raise bad("InvalidParameter", "networkProfile.networkInterfaces is required")
        for n in nics:
            self.ref(n.get("id"), "networkInterfaces", "microsoft.network/networkinterfaces")
        if get_path(props, "diagnosticsProfile", "bootDiagnostics", "enabled") is not True:
            raise bad("InvalidParameter", "this fake expects boot diagnostics on")
        out["properties"]["vmId"] = existing["properties"]["vmId"] if existing \
            else str(uuid.uuid4())

    def check_unused(self, key, rtype):
        """ARM refuses to delete what another resource still uses."""
        st = self.server.state
        for other in st.resources.values():
            if other["id"].lower() == key or other["id"].lower().startswith(key + "/"):
                continue
            refs = json.dumps(other["properties"]).lower()
            if rtype == "resourcegroups":
                break
            if ('"%s"' % key) in refs or ('"%s/' % key) in refs:
                code = {"microsoft.network/networksecuritygroups":
                        "InUseNetworkSecurityGroupCannotBeDeleted",
                        "microsoft.network/virtualnetworks": "InUseSubnetCannotBeDeleted",
                        "microsoft.network/publicipaddresses": "PublicIPAddressInUse",
                        "microsoft.network/networkinterfaces": "NicInUse",
                        "microsoft.compute/disks": "OperationNotAllowed"}.get(rtype, "InUse")
                raise bad(code, "%s is in use by %s and cannot be deleted." %
                          (key, other["id"]), 409 if rtype.endswith("disks") else 400)


def path_style(host):
    """Emulators (Azurite) take the account in the path: any IP address or localhost."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host == "localhost"


def head_blob(url, key_b64):
    """HEAD a blob signed with SharedKey (path-style account from the URL): length, type."""
    u = urllib.parse.urlsplit(url)
    account = u.path.split("/")[1] if path_style(u.hostname) else u.hostname.split(".")[0]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    sts = "HEAD\n" + "\n" * 11 + "x-ms-date:%s\nx-ms-version:2022-11-02\n/%s%s" % (
        date, account, u.path)
    sig = base64.b64encode(hmac.new(base64.b64decode(key_b64), sts.encode(),
                                    hashlib.sha256).digest()).decode()
    req = urllib.request.Request(url, method="HEAD", headers={
        "x-ms-date": date, "x-ms-version": "2022-11-02",
        "Authorization": "SharedKey %s:%s" % (account, sig)})
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.headers["Content-Length"]), r.headers.get("x-ms-blob-type")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tenant", default="72f988bf-86f1-41af-91ab-2d7cd011db47")
    ap.add_argument("--client-id", default="00000000-0000-0000-0000-00000000c1d0")
    ap.add_argument("--client-secret", default="fake-secret")
    ap.add_argument("--subscription", default="00000000-0000-0000-0000-000000005ab5")
    ap.add_argument("--blob-endpoint", default="")
    ap.add_argument("--storage-key", default=AZURITE_KEY)
    ap.add_argument("--polls", type=int, default=1)
    ap.add_argument("--retry-after", type=int, default=0)
    ap.add_argument("--token-life", type=int, default=3599)
    args = ap.parse_args()
    srv = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    srv.state = State(args)
    print(json.dumps({"port": srv.server_address[1], "pid": os.getpid()}), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
