#!/usr/bin/env python3
"""A fake of EC2 VM Import/Export (the four actions moto lacks) for tests.

    ec2import.py --listen PORT --access-key AK --secret-key SK --s3 http://127.0.0.1:MOTO
                 [--region us-east-1] [--step-ms 0] [--no-vmimport-role]
                 [--ec2 http://127.0.0.1:MOTO]

It listens on 127.0.0.1:PORT (0: a free port) and, once it accepts connections, prints one
JSON line {"port": N, "pid": N} on stdout and nothing else there afterwards. It speaks the
EC2 Query API (Version 2016-11-15; a form POST, or a GET with the parameters in the query)
and answers, in the EC2 namespace and with the element names of the API reference:
    ImportImage, ImportSnapshot, DescribeImportImageTasks, DescribeImportSnapshotTasks,
    CancelImportTask
Anything else is InvalidAction (400).

Authentication, as EC2 does it: every request must carry a SigV4 Authorization header
(none: MissingAuthenticationToken, 401) for the access key given, scoped to
<date>/<region>/ec2/aws4_request, with host and x-amz-date among the signed headers. The
signature is recomputed over the canonical request (method, path encoded once more, sorted
query, the headers named in SignedHeaders, SHA-256 of the body as received); a different
key, scope or signature is AuthFailure (401) "AWS was not able to validate the provided
access credentials"; an X-Amz-Date more than 15 minutes off is RequestExpired (400).
DryRun=true answers DryRunOperation (412) after authentication.

Errors are <Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>
with the status AWS uses (400 for client errors). What each action checks:
    - DiskContainer: ImportImage takes DiskContainer.N.*, ImportSnapshot DiskContainer.*;
      each has Format (VMDK, RAW, VHD, VHDX, OVA; any case, echoed as given) and either
      UserBucket.S3Bucket + UserBucket.S3Key or Url s3://bucket/key. Missing or bad:
      InvalidParameter / MissingParameter.
    - RoleName (default "vmimport") must be a role the fake knows: "vmimport" unless
      --no-vmimport-role. Otherwise InvalidParameter "The service role <name> provided
      does not exist or does not have sufficient permissions" (both actions, as AWS).
    - BootMode legacy-bios|uefi|uefi-preferred, Architecture i386|x86_64|arm64, Platform
      Windows|Linux, LicenseType AWS|BYOL: else InvalidParameterValue.
    - TagSpecification.N: ResourceType import-image-task (ImportImage) or
      import-snapshot-task (ImportSnapshot), else InvalidParameterValue. Tags come back in
      tagSet.
    - ClientToken: a repeated call with the same token (per action) answers the task the
      first call started, in its current state; the same token with another disk
      container is IdempotentParameterMismatch.
    - Describe*: ImportTaskId.N (an id that is not import-ami-/import-snap- and hex:
      InvalidConversionTaskId.Malformed; a well-formed unknown one: InvalidConversionTaskId),
      Filters.N only task-state (active|completed|deleting|deleted; another filter name:
      InvalidParameterValue), MaxResults and NextToken page through the tasks in creation
      order.
    - CancelImportTask: an active task goes to deleting (answering previousState/state)
      and then deleted with StatusMessage the CancelReason; a task that is not active is
      IncorrectState.

Task lifecycle (Status, StatusMessage, Progress): the steps the VM Import/Export guide names
(the percentages between its examples' "2", "28" and "42" are this fake's):
    image:    active: pending 2, validating 10, validated 19, converting 28, updating 46,
              booting 63, preparing ami 85; then completed (no message or progress) with
              imageId ami-..., and per disk a snapshotDetailSet item with snapshotId,
              deviceName /dev/sda1, diskImageSize, status completed.
    snapshot: active: pending 3, validating 11, validated 19, downloading/converting 42;
              then completed with snapshotTaskDetail/snapshotId snap-...
A task moves one step per Describe call that returns it (--step-ms 0, the default) or one
step per N ms since it started (--step-ms N). Leaving "validating", each disk's S3 object
is looked up with HEAD <s3>/<bucket>/<key>, signed with the fake's keys (a moto_server
without signature checking: moto refuses anonymous reads of private objects); what fails
goes to Status deleting and then deleted, with StatusMessage:
    - object missing (404): "ClientError: Unable to find the object s3://B/K in S3"
    - key containing "corrupt" (fault hook): "ClientError: Disk validation failed
      [Unsupported specified file format]"
The S3 answer gives diskImageSize. An S3 endpoint that does not answer leaves the task
in validating (retried on the next step) and logs why.

With --ec2 (a moto_server's EC2, which may be the same one as --s3), an image task that
completes is made real there, so that RunInstances of its imageId works: leaving
"preparing ami" the fake calls RegisterImage (Name the task id, RootDeviceName /dev/sda1,
one BlockDeviceMapping per disk, hvm, the task's Architecture and BootMode) signed with its
keys, and reports the AMI moto made and the snapshot DescribeImages shows behind it (moto
makes its own for the root device and keeps no other mapping: each further disk gets a
snapshot of a volume of its size, made there too). An EC2 that does not answer, or
refuses, leaves the task in
"preparing ami" (retried on the next step) and logs why. Without --ec2, ids are made up.

Control endpoints (no authentication; a path starting with /__):
    GET  /__tasks    every task as JSON (id, kind, status, message, progress, ids, tags)
    GET  /__stats    {"requests", "auth_failures", "errors", "tasks_created"}
    POST /__config   JSON {"vmimport_role": bool, "step_ms": int, "page_size": int}: change
                     any (page_size: tasks per Describe page when MaxResults is not given,
                     as AWS pages on its own; 0, the default: all)
    POST /__reset    forget every task and client token, zero the counters
Faults on the wire (429, 503, resets) come from tests/fakes/faultproxy.py in front of this
server: it passes requests through byte for byte, so signatures still verify.

Its log (stderr) has one line per request: action, status, error code; never a header,
a signature or a body. Standard library only.
"""
import argparse
import calendar
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse
import uuid
from xml.sax.saxutils import escape

NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
VERSION = "2016-11-15"
MAX_BODY = 1024 * 1024
MAX_CONTROL = 64 * 1024
SKEW_S = 15 * 60

IMAGE_STEPS = [("pending", 2), ("validating", 10), ("validated", 19), ("converting", 28),
               ("updating", 46), ("booting", 63), ("preparing ami", 85)]
SNAPSHOT_STEPS = [("pending", 3), ("validating", 11), ("validated", 19),
                  ("downloading/converting", 42)]
VALIDATING = 1  # the step after which the S3 objects are checked

FORMATS = {"VMDK", "RAW", "VHD", "VHDX", "OVA"}
BOOT_MODES = {"legacy-bios", "uefi", "uefi-preferred"}
ARCHES = {"i386", "x86_64", "arm64"}
PLATFORMS = {"Windows", "Linux"}
LICENSES = {"AWS", "BYOL"}
TASK_STATES = {"active", "completed", "deleting", "deleted"}
ROLE_ERROR = ("The service role %s provided does not exist or does not have sufficient "
              "permissions")
AUTH_ERROR = "AWS was not able to validate the provided access credentials"


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad(code, message, status=400):
    return ApiError(status, code, message)


def hexid(prefix):
    return prefix + secrets.token_hex(9)[:17]


# ---------------------------------------------------------------- XML


def el(name, *children):
    """<name>children</name>; a child None is left out, an element whose only child is
    None is left out entirely (AWS omits unset members)."""
    parts = [c for c in children if c is not None]
    if children and not parts:
        return ""
    return "<%s>%s</%s>" % (name, "".join(parts), name)


def text(name, value):
    if value is None:
        return None
    return "<%s>%s</%s>" % (name, escape(str(value)), name)


def tag_set(tags):
    if not tags:
        return None
    return el("tagSet", *[el("item", text("key", k), text("value", v)) for k, v in tags])


def user_bucket(disk):
    return el("userBucket", text("s3Bucket", disk["bucket"]), text("s3Key", disk["key"]))


def response(action, body):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<%sResponse xmlns="%s">'
            "<requestId>%s</requestId>%s</%sResponse>" % (action, NS, uuid.uuid4(), body,
                                                          action))


def error_doc(code, message):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>%s</Code>'
            "<Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>"
            % (escape(code), escape(message), uuid.uuid4()))


# ---------------------------------------------------------------- state


class Task:
    def __init__(self, kind, disks, params, tags):
        self.kind = kind  # "image" or "snapshot"
        self.id = hexid("import-ami-" if kind == "image" else "import-snap-")
        self.disks = disks  # [{"bucket", "key", "format", "url", "description", "size"}]
        self.params = params
        self.tags = tags
        self.started = time.monotonic()
        self.describes = 0  # Describe calls that returned it
        self.taken = 0      # lifecycle steps taken (deleting and deleted count as steps)
        self.step = 0       # index into steps() while active
        self.status = "active"
        self.message = self.steps()[0][0]
        self.progress = self.steps()[0][1]
        self.image_id = None
        self.snapshot_ids = []

    def steps(self):
        return IMAGE_STEPS if self.kind == "image" else SNAPSHOT_STEPS

    def json(self):
        return {"id": self.id, "kind": self.kind, "status": self.status,
                "message": self.message, "progress": self.progress,
                "image_id": self.image_id, "snapshot_ids": self.snapshot_ids,
                "tags": dict(self.tags), "step": self.step,
                "objects": ["s3://%s/%s" % (d["bucket"], d["key"]) for d in self.disks]}


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.roles = {"vmimport"}
        self.step_ms = 0
        self.page_size = 0  # tasks per Describe page when MaxResults is not given; 0: all
        self.s3 = None  # (host, port)
        self.ec2 = None  # (host, port) of an EC2 to register completed images in, or None
        self.zero()

    def zero(self):
        self.tasks = {}   # id -> Task, in creation order
        self.tokens = {}  # (action, token) -> (task id, fingerprint)
        self.stats = {"requests": 0, "auth_failures": 0, "errors": 0, "tasks_created": 0}


STATE = State()
ARGS = None


def s3_head(bucket, key):
    """(exists, size); raises OSError (or HTTPException) when S3 does not answer. VM Import
    reads the object with the role's credentials: the HEAD is signed (SigV4, service s3)
    with the fake's keys, which a moto_server without signature checking accepts."""
    host, port = STATE.s3
    path = "/%s/%s" % (uri_encode(bucket), uri_encode(key, keep_slash=True))
    headers = sign_s3("HEAD", path, "%s:%d" % (host, port))
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("HEAD", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    if resp.status == 200:
        return True, int(resp.getheader("Content-Length") or 0)
    if resp.status == 404:
        return False, 0
    raise OSError("S3 HEAD answered %d" % resp.status)


def validate_disks(task):
    """None when every disk is there and readable, else the failure's StatusMessage.
    Raises OSError when S3 cannot be asked."""
    for d in task.disks:
        exists, size = s3_head(d["bucket"], d["key"])
        if not exists:
            return "ClientError: Unable to find the object s3://%s/%s in S3" % (d["bucket"],
                                                                               d["key"])
        d["size"] = size
        if "corrupt" in d["key"]:
            return "ClientError: Disk validation failed [Unsupported specified file format]"
    return None


def advance_one(task):
    """Move task one step along its lifecycle (called with STATE.lock held)."""
    if task.status == "deleting":
        task.status = "deleted"
        return
    if task.status != "active":
        return
    steps = task.steps()
    if task.step == VALIDATING:
        try:
            failure = validate_disks(task)
        except (OSError, http.client.HTTPException) as e:
            log("task %s: S3 not reachable (%s): stays validating" % (task.id, e))
            return
        if failure:
            task.status, task.message, task.progress = "deleting", failure, None
            return
    task.step += 1
    if task.step < len(steps):
        task.message, task.progress = steps[task.step]
        return
    if task.kind == "image" and STATE.ec2:
        try:
            task.image_id, task.snapshot_ids = register_image(task)
        except (OSError, http.client.HTTPException) as e:
            task.step -= 1
            log("task %s: EC2 did not register the image (%s): stays %s" % (task.id, e,
                                                                         task.message))
            return
        task.status, task.message, task.progress = "completed", None, None
        return
    task.status, task.message, task.progress = "completed", None, None
    task.snapshot_ids = [hexid("snap-") for _ in task.disks]
    if task.kind == "image":
        task.image_id = hexid("ami-")


def ec2_call(params):
    """One EC2 Query API call (form POST) to --ec2, signed with the fake's keys: the reply
    body. Raises OSError for a reply that is not 200."""
    host, port = STATE.ec2
    body = urllib.parse.urlencode(dict(params, Version=VERSION)).encode()
    ctype = "application/x-www-form-urlencoded; charset=utf-8"
    headers = sign("POST", "/", "%s:%d" % (host, port), "ec2", body, {"content-type": ctype})
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read().decode("utf-8", "replace")
    finally:
        conn.close()
    if resp.status != 200:
        code = re.search(r"<Code>([^<]*)</Code>", data)
        raise OSError("EC2 %s answered %d %s" % (params.get("Action"), resp.status,
                                                  code.group(1) if code else ""))
    return data


def register_image(task):
    """RegisterImage for a completed image task in --ec2: (ami id, [snapshot ids])."""
    p = task.params
    params = {"Action": "RegisterImage", "Name": task.id, "RootDeviceName": "/dev/sda1",
              "VirtualizationType": "hvm", "Architecture": p.get("Architecture") or "x86_64",
              "Description": p.get("Description") or task.id}
    if p.get("BootMode") in ("legacy-bios", "uefi"):
        params["BootMode"] = p["BootMode"]
    for i, d in enumerate(task.disks):
        n = i + 1
        params["BlockDeviceMapping.%d.DeviceName" % n] = ("/dev/sda1" if i == 0 else
                                                         "/dev/sd%s" % chr(ord("a") + i))
        params["BlockDeviceMapping.%d.Ebs.VolumeSize" % n] = str(max(1, -(-int(d.get("size")
                                                                              or 0) >> 30)))
    if len(task.disks) > 26:
        raise OSError("more disks than device names")
    m = re.search(r"<imageId>(ami-[0-9a-f]+)</imageId>", ec2_call(params))
    if not m:
        raise OSError("RegisterImage answered without an imageId")
    xml = ec2_call({"Action": "DescribeImages", "ImageId.1": m.group(1)})
    snaps = re.findall(r"<snapshotId>(snap-[0-9a-f]+)</snapshotId>", xml)[:len(task.disks)]
    # moto keeps only the root mapping (with a snapshot of its own): the other disks get
    # a snapshot made from a volume of their size
    for d in task.disks[len(snaps):]:
        gib = str(max(1, -(-int(d.get("size") or 0) >> 30)))
        vol = re.search(r"<volumeId>(vol-[0-9a-f]+)</volumeId>", ec2_call(
            {"Action": "CreateVolume", "Size": gib, "AvailabilityZone": ARGS.region + "a"}))
        snap = vol and re.search(r"<snapshotId>(snap-[0-9a-f]+)</snapshotId>", ec2_call(
            {"Action": "CreateSnapshot", "VolumeId": vol.group(1)}))
        if not snap:
            raise OSError("CreateVolume or CreateSnapshot answered without an id")
        ec2_call({"Action": "DeleteVolume", "VolumeId": vol.group(1)})
        snaps.append(snap.group(1))
    return m.group(1), snaps


def advance(task, described):
    """Bring task to the step its clock says (called with STATE.lock held)."""
    if described:
        task.describes += 1
    if STATE.step_ms > 0:
        target = int((time.monotonic() - task.started) * 1000 / STATE.step_ms)
    else:
        target = task.describes
    while task.status in ("active", "deleting") and task.taken < target:
        before = (task.status, task.step)
        advance_one(task)
        if (task.status, task.step) == before:
            break  # S3 not reachable: try again on the next call
        task.taken += 1


# ---------------------------------------------------------------- rendering


def snapshot_detail_items(task):
    items = []
    for i, d in enumerate(task.disks):
        done = task.status == "completed"
        items.append(el(
            "item",
            text("description", d.get("description")),
            text("deviceName", "/dev/sda1" if done and i == 0 else None),
            text("diskImageSize", "%.1f" % float(d.get("size") or 0)),
            text("format", d["format"]),
            text("snapshotId", task.snapshot_ids[i] if done else None),
            text("status", "completed" if done else "active"),
            text("url", d.get("url")),
            user_bucket(d) if d.get("bucket") and not d.get("url") else None))
    return el("snapshotDetailSet", *items)


def image_task_body(task, describe=True):
    p = task.params
    return "".join(x for x in [
        text("architecture", p.get("Architecture") or
             ("x86_64" if task.status == "completed" else None)),
        text("bootMode", p.get("BootMode") if describe else None),  # ImportImage's reply lacks it
        text("description", p.get("Description")),
        text("encrypted", "false"),
        text("imageId", task.image_id),
        text("importTaskId", task.id),
        text("licenseType", p.get("LicenseType") or
             ("BYOL" if task.status == "completed" else None)),
        text("platform", p.get("Platform") or
             ("Linux" if task.status == "completed" else None)),
        text("progress", task.progress),
        snapshot_detail_items(task),
        text("status", task.status),
        text("statusMessage", task.message),
        tag_set(task.tags),
    ] if x)


def snapshot_task_body(task):
    d = task.disks[0]
    done = task.status == "completed"
    detail = el(
        "snapshotTaskDetail",
        text("description", d.get("description")),
        text("diskImageSize", "%.1f" % float(d.get("size") or 0)),
        text("encrypted", "false"),
        text("format", d["format"]),
        text("progress", task.progress),
        text("snapshotId", task.snapshot_ids[0] if done else None),
        text("status", task.status),
        text("statusMessage", task.message),
        text("url", d.get("url")),
        user_bucket(d) if d.get("bucket") and not d.get("url") else None)
    return "".join(x for x in [
        text("description", task.params.get("Description")),
        text("importTaskId", task.id),
        detail,
        tag_set(task.tags),
    ] if x)


# ---------------------------------------------------------------- requests


def indexed(params, prefix):
    """{N: {rest: value}} for every parameter prefix.N.rest (or prefix.N)."""
    out = {}
    for k, v in params.items():
        if not k.startswith(prefix + "."):
            continue
        rest = k[len(prefix) + 1:]
        n, _, sub = rest.partition(".")
        if not n.isdigit():
            raise bad("InvalidParameterValue", "Invalid parameter name '%s'" % k)
        out.setdefault(int(n), {})[sub] = v
    return [out[n] for n in sorted(out)]


def disk_container(fields, where):
    fmt = fields.get("Format")
    if not fmt:
        raise bad("MissingParameter",
                  "The request must contain the parameter %s.Format" % where)
    if fmt.upper() not in FORMATS:
        raise bad("InvalidParameter", "Invalid value '%s' for %s.Format: supported formats "
                  "are OVA, VHD, VHDX, VMDK and RAW" % (fmt, where))
    d = {"format": fmt, "description": fields.get("Description"), "size": 0}
    url = fields.get("Url")
    bucket, key = fields.get("UserBucket.S3Bucket"), fields.get("UserBucket.S3Key")
    if url:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "s3" or not u.netloc or len(u.path) < 2:
            raise bad("InvalidParameter", "Invalid S3 source location: %s" % url)
        d.update(url=url, bucket=u.netloc, key=urllib.parse.unquote(u.path[1:]))
    elif bucket and key:
        d.update(bucket=bucket, key=key)
    else:
        raise bad("InvalidParameter", "%s must have UserBucket (S3Bucket and S3Key) or Url"
                  % where)
    return d


def tag_specs(params, resource_type):
    tags = []
    for spec in indexed(params, "TagSpecification"):
        rt = spec.get("ResourceType")
        if rt != resource_type:
            raise bad("InvalidParameterValue", "'%s' is not a valid taggable resource type "
                      "for this operation." % rt)
        for i in range(1, 51):
            k = spec.get("Tag.%d.Key" % i)
            if k is None:
                break
            tags.append((k, spec.get("Tag.%d.Value" % i, "")))
    return tags


def check_enum(params, name, allowed):
    v = params.get(name)
    if v is not None and v not in allowed:
        raise bad("InvalidParameterValue", "Value (%s) for parameter %s is invalid." % (v, name))


def start_task(action, kind, params):
    if kind == "image":
        containers = indexed(params, "DiskContainer")
        if not containers:
            raise bad("MissingParameter",
                      "The request must contain the parameter DiskContainer")
        disks = [disk_container(c, "DiskContainer.%d" % (i + 1))
                 for i, c in enumerate(containers)]
        for name, allowed in (("BootMode", BOOT_MODES), ("Architecture", ARCHES),
                              ("Platform", PLATFORMS), ("LicenseType", LICENSES)):
            check_enum(params, name, allowed)
        tags = tag_specs(params, "import-image-task")
    else:
        fields = {k[len("DiskContainer."):]: v for k, v in params.items()
                  if k.startswith("DiskContainer.")}
        if not fields:
            raise bad("MissingParameter",
                      "The request must contain the parameter DiskContainer")
        disks = [disk_container(fields, "DiskContainer")]
        tags = tag_specs(params, "import-snapshot-task")
    role = params.get("RoleName", "vmimport")
    token = params.get("ClientToken")
    if token is not None and not 1 <= len(token) <= 64:
        raise bad("InvalidParameterValue", "ClientToken must be 1 to 64 characters")
    fingerprint = json.dumps([(d["bucket"], d["key"], d["format"].upper()) for d in disks])
    with STATE.lock:
        if role not in STATE.roles:
            raise bad("InvalidParameter", ROLE_ERROR % role)
        if token is not None and (action, token) in STATE.tokens:
            task_id, fp = STATE.tokens[(action, token)]
            if fp != fingerprint:
                raise bad("IdempotentParameterMismatch", "Client token '%s' was used with "
                          "different parameters" % token)
            task = STATE.tasks[task_id]
            advance(task, False)
        else:
            task = Task(kind, disks, params, tags)
            STATE.tasks[task.id] = task
            STATE.stats["tasks_created"] += 1
            if token is not None:
                STATE.tokens[(action, token)] = (task.id, fingerprint)
        body = image_task_body(task, False) if kind == "image" else snapshot_task_body(task)
    return response(action, body)


ID_RE = {"image": re.compile(r"^import-ami-[0-9a-f]{8,17}$"),
         "snapshot": re.compile(r"^import-snap-[0-9a-f]{8,17}$")}


def describe(action, kind, params):
    ids = [v for k, v in sorted(params.items(), key=lambda kv: kv[0])
           if re.fullmatch(r"ImportTaskId\.\d+", k)]
    states = None
    for f in indexed(params, "Filters"):
        name = f.get("Name")
        if name != "task-state":
            raise bad("InvalidParameterValue", "The filter '%s' is invalid" % name)
        values = [v for k, v in f.items() if k.startswith("Value.")]
        for v in values:
            if v not in TASK_STATES:
                raise bad("InvalidParameterValue",
                          "Value (%s) for filter task-state is invalid." % v)
        states = (states or set()) | set(values)
    try:
        max_results = int(params.get("MaxResults", "0")) or STATE.page_size
        start = int(params.get("NextToken", "0"))
    except ValueError:
        raise bad("InvalidParameterValue", "MaxResults and NextToken must be numbers")
    if max_results < 0 or start < 0:
        raise bad("InvalidParameterValue", "MaxResults and NextToken must not be negative")
    for i in ids:
        if not ID_RE[kind].match(i):
            raise bad("InvalidConversionTaskId.Malformed",
                      "The import task ID '%s' is malformed" % i)
    with STATE.lock:
        if ids:
            missing = [i for i in ids if i not in STATE.tasks or STATE.tasks[i].kind != kind]
            if missing:
                raise bad("InvalidConversionTaskId",
                          "The import task ID '%s' does not exist" % missing[0])
            tasks = [STATE.tasks[i] for i in ids]
        else:
            tasks = [t for t in STATE.tasks.values() if t.kind == kind]
        for t in tasks:
            advance(t, False)  # the clock, before filtering on the state
        if states is not None:
            tasks = [t for t in tasks if t.status in states]
        tasks = tasks[start:]
        next_token = None
        if max_results and len(tasks) > max_results:
            tasks = tasks[:max_results]
            next_token = str(start + max_results)
        for t in tasks:
            advance(t, True)  # a step per Describe that returns it
        render = image_task_body if kind == "image" else snapshot_task_body
        items = "".join("<item>%s</item>" % render(t) for t in tasks)
    set_name = "importImageTaskSet" if kind == "image" else "importSnapshotTaskSet"
    body = "<%s>%s</%s>%s" % (set_name, items, set_name, text("nextToken", next_token) or "")
    return response(action, body)


def cancel(action, params):
    task_id = params.get("ImportTaskId")
    if not task_id:
        raise bad("MissingParameter", "The request must contain the parameter ImportTaskId")
    if not (ID_RE["image"].match(task_id) or ID_RE["snapshot"].match(task_id)):
        raise bad("InvalidConversionTaskId.Malformed",
                  "The import task ID '%s' is malformed" % task_id)
    with STATE.lock:
        task = STATE.tasks.get(task_id)
        if task is None:
            raise bad("InvalidConversionTaskId",
                      "The import task ID '%s' does not exist" % task_id)
        advance(task, False)
        if task.status != "active":
            raise bad("IncorrectState", "The import task '%s' is %s and cannot be canceled"
                      % (task_id, task.status))
        task.status = "deleting"
        task.message = params.get("CancelReason") or "User initiated task cancelation"
        task.progress = None
    return response(action, text("importTaskId", task_id) + text("previousState", "active") +
                    text("state", "deleting"))


ACTIONS = {
    "ImportImage": lambda p: start_task("ImportImage", "image", p),
    "ImportSnapshot": lambda p: start_task("ImportSnapshot", "snapshot", p),
    "DescribeImportImageTasks": lambda p: describe("DescribeImportImageTasks", "image", p),
    "DescribeImportSnapshotTasks":
        lambda p: describe("DescribeImportSnapshotTasks", "snapshot", p),
    "CancelImportTask": lambda p: cancel("CancelImportTask", p),
}


# ---------------------------------------------------------------- SigV4


def uri_encode(s, keep_slash=False):
    return urllib.parse.quote(s, safe="-_.~" + ("/" if keep_slash else ""))


def canonical_path(path):
    # Every service but S3 encodes the path as sent once more ("double encoding").
    segments = [uri_encode(seg) for seg in path.split("/")]
    return "/".join(segments) or "/"


def canonical_query(query):
    pairs = []
    for part in query.split("&") if query else []:
        if not part:
            continue
        k, _, v = part.partition("=")
        pairs.append((uri_encode(urllib.parse.unquote(k)), uri_encode(urllib.parse.unquote(v))))
    return "&".join("%s=%s" % kv for kv in sorted(pairs))


def hmac256(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(day, region, service):
    k = hmac256(("AWS4" + ARGS.secret_key).encode(), day)
    for part in (region, service, "aws4_request"):
        k = hmac256(k, part)
    return k


def sign(method, path, host, service, body=b"", extra=None):
    """The headers of a request with body to path (no query; already encoded as S3 wants
    it), signed with the fake's keys for service; extra: more headers to sign (lowercase)."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    day = amz_date[:8]
    digest = hashlib.sha256(body).hexdigest()
    headers = dict(extra or {}, **{"host": host, "x-amz-content-sha256": digest,
                                   "x-amz-date": amz_date})
    names = sorted(headers)
    signed = ";".join(names)
    lines = "".join("%s:%s\n" % (n, headers[n]) for n in names)
    canonical = "\n".join([method, path, "", lines, signed, digest])
    scope = "%s/%s/%s/aws4_request" % (day, ARGS.region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    sig = hmac.new(signing_key(day, ARGS.region, service), to_sign.encode(),
                   hashlib.sha256).hexdigest()
    headers.pop("host")
    headers["Authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, "
                                "Signature=%s" % (ARGS.access_key, scope, signed, sig))
    return headers


def sign_s3(method, path, host):
    """The headers of an S3 request without a body, signed with the fake's keys."""
    return sign(method, path, host, "s3")


def check_auth(method, target, headers, body):
    """None, or the ApiError EC2 would answer."""
    auth = headers.get("Authorization")
    if not auth:
        return bad("MissingAuthenticationToken", "The request must contain either a valid "
                   "(registered) AWS access key ID or X.509 certificate.", 401)
    m = re.fullmatch(r"AWS4-HMAC-SHA256\s+(.*)", auth.strip())
    if not m:
        return bad("AuthFailure", AUTH_ERROR, 401)
    fields = {}
    for part in m.group(1).split(","):
        k, _, v = part.strip().partition("=")
        fields[k] = v
    cred = fields.get("Credential", "").split("/")
    signed = fields.get("SignedHeaders", "")
    signature = fields.get("Signature", "")
    if len(cred) != 5 or cred[4] != "aws4_request" or not signed or not signature:
        return bad("AuthFailure", AUTH_ERROR, 401)
    key_id, day, region, service = cred[:4]
    if key_id != ARGS.access_key or region != ARGS.region or service != "ec2":
        return bad("AuthFailure", AUTH_ERROR, 401)
    amz_date = headers.get("X-Amz-Date", "")
    try:
        when = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return bad("AuthFailure", AUTH_ERROR, 401)
    if not amz_date.startswith(day):
        return bad("AuthFailure", AUTH_ERROR, 401)
    if abs(time.time() - when) > SKEW_S:
        return bad("RequestExpired", "Request has expired.")
    names = signed.split(";")
    if names != sorted(names) or "host" not in names or "x-amz-date" not in names:
        return bad("AuthFailure", AUTH_ERROR, 401)
    lines = []
    for name in names:
        values = headers.get_all(name)
        if values is None:
            return bad("AuthFailure", AUTH_ERROR, 401)
        values = [re.sub(r"\s+", " ", v.strip()) for v in values]
        lines.append("%s:%s\n" % (name, ",".join(values)))
    u = urllib.parse.urlsplit(target)
    canonical = "\n".join([method, canonical_path(u.path or "/"), canonical_query(u.query),
                           "".join(lines), signed, hashlib.sha256(body).hexdigest()])
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    want = hmac.new(signing_key(day, region, service), to_sign.encode(),
                    hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        return bad("AuthFailure", AUTH_ERROR, 401)
    return None


# ---------------------------------------------------------------- HTTP


def log(line):
    sys.stderr.write("ec2import: %s\n" % line)
    sys.stderr.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # the default logs the query (signatures)
        pass

    def reply(self, status, body, content_type="text/xml;charset=UTF-8"):
        data = body.encode()
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Server", "AmazonEC2")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self, cap):
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > cap:
            raise ValueError("body too large")
        return self.rfile.read(n)

    def handle_any(self):
        try:
            body = self.read_body(MAX_BODY)
        except ValueError:
            self.close_connection = True
            return self.reply(413, error_doc("RequestEntityTooLarge", "Request too large"))
        if self.path.startswith("/__"):
            return self.control(body)
        with STATE.lock:
            STATE.stats["requests"] += 1
        action = "-"
        try:
            e = check_auth(self.command, self.path, self.headers, body)
            if e:
                with STATE.lock:
                    STATE.stats["auth_failures"] += 1
                raise e
            params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query,
                                                 keep_blank_values=True))
            if self.command == "POST":
                ctype = self.headers.get("Content-Type", "")
                if not ctype.startswith("application/x-www-form-urlencoded"):
                    raise bad("InvalidParameterValue", "Content-Type must be "
                              "application/x-www-form-urlencoded")
                params.update(urllib.parse.parse_qsl(body.decode("utf-8"),
                                                     keep_blank_values=True))
            elif self.command != "GET":
                raise bad("InvalidAction", "The HTTP method %s is not supported" % self.command)
            action = params.get("Action", "-")
            if action not in ACTIONS:
                raise bad("InvalidAction",
                          "The action %s is not valid for this web service." % action)
            if params.get("Version") != VERSION:
                raise bad("InvalidParameterValue", "Version %s is not supported by this fake"
                          % params.get("Version"))
            if params.get("DryRun", "").lower() == "true":
                raise bad("DryRunOperation",
                          "Request would have succeeded, but DryRun flag is set.", 412)
            out = ACTIONS[action](params)
            log("%s -> 200" % action)
            self.reply(200, out)
        except ApiError as e:
            with STATE.lock:
                STATE.stats["errors"] += 1
            log("%s -> %d %s" % (action, e.status, e.code))
            self.reply(e.status, error_doc(e.code, e.message))
        except UnicodeDecodeError:
            self.reply(400, error_doc("InvalidParameterValue", "the body is not UTF-8"))

    def control(self, body):
        path = urllib.parse.urlsplit(self.path).path
        out = None
        try:
            if path == "/__tasks" and self.command == "GET":
                with STATE.lock:
                    out = [t.json() for t in STATE.tasks.values()]
            elif path == "/__stats" and self.command == "GET":
                with STATE.lock:
                    out = dict(STATE.stats)
            elif path == "/__reset" and self.command == "POST":
                with STATE.lock:
                    STATE.zero()
                out = {}
            elif path == "/__config" and self.command == "POST":
                if len(body) > MAX_CONTROL:
                    raise ValueError("config too large")
                cfg = json.loads(body.decode() or "{}")
                keys = {"vmimport_role", "step_ms", "page_size"}
                if not isinstance(cfg, dict) or set(cfg) - keys:
                    raise ValueError("config keys: %s" % ", ".join(sorted(keys)))
                with STATE.lock:
                    if "vmimport_role" in cfg:
                        if cfg["vmimport_role"]:
                            STATE.roles.add("vmimport")
                        else:
                            STATE.roles.discard("vmimport")
                    if "step_ms" in cfg:
                        STATE.step_ms = max(0, int(cfg["step_ms"]))
                    if "page_size" in cfg:
                        STATE.page_size = max(0, int(cfg["page_size"]))
                    out = {"vmimport_role": "vmimport" in STATE.roles,
                           "step_ms": STATE.step_ms, "page_size": STATE.page_size}
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            return self.reply(400, json.dumps({"error": str(e)}) + "\n", "application/json")
        if out is None:
            return self.reply(404, '{"error": "no such control endpoint"}\n',
                              "application/json")
        self.reply(200, json.dumps(out) + "\n", "application/json")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global ARGS
    ap = argparse.ArgumentParser(description="fake EC2 VM Import/Export for tests")
    ap.add_argument("--listen", type=int, required=True, help="loopback port, 0 for any free")
    ap.add_argument("--access-key", required=True)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--s3", required=True, help="http://127.0.0.1:PORT (moto, no sigcheck)")
    ap.add_argument("--ec2", help="http://127.0.0.1:PORT (moto): register completed images")
    ap.add_argument("--step-ms", type=int, default=0,
                    help="one lifecycle step per N ms; 0: one per Describe call")
    ap.add_argument("--no-vmimport-role", action="store_true",
                    help="the vmimport service role does not exist")
    ARGS = ap.parse_args()
    u = urllib.parse.urlsplit(ARGS.s3)
    if u.scheme != "http" or not u.hostname or not u.port:
        sys.exit("ec2import: --s3 must be http://HOST:PORT")
    STATE.s3 = (u.hostname, u.port)
    if ARGS.ec2:
        e = urllib.parse.urlsplit(ARGS.ec2)
        if e.scheme != "http" or not e.hostname or not e.port:
            sys.exit("ec2import: --ec2 must be http://HOST:PORT")
        STATE.ec2 = (e.hostname, e.port)
    STATE.step_ms = max(0, ARGS.step_ms)
    if ARGS.no_vmimport_role:
        STATE.roles.discard("vmimport")
    srv = Server(("127.0.0.1", ARGS.listen), Handler)
    print(json.dumps({"port": srv.server_address[1], "pid": os.getpid()}), flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
