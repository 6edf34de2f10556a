"""The emulated clouds of the end-to-end rig (rig.py), one class per cloud, each:

    start(work, ip) -> env     start its emulators on ip (where sources reach them too)
    stop()
    secret()                   the credential's secret as POST /v1/credentials takes it
    region, machine_type       what the test's blueprint asks for
    vms(mig)                   the migration's VMs as the cloud reports them:
                               [{"host", "type", "subnet" (last path component)}]
    stored(mig)                how many objects the cloud's object storage holds under
                               xmigrate/<mig>/ (chunks, manifests, image files)
    disk_image(image, size[, source])  the disk the cloud holds for a converted image,
                               read back the cloud's way, checked for its format's
                               padding (and by qemu-img against source for a VHD);
                               returns its first size bytes

AWS: moto_server (EBS snapshot read block by block). Azure: Azurite for blobs and the
Resource Manager fake (tests/fakes/azure_arm.py): the fixed VHD page blob read back with
SharedKey, its footer and zero padding checked. GCP: tests/fakes/gcp.py: the composed
tar.gz read back with a service-account token, disk.raw checked to be the disk plus zeros
up to a whole GiB.
"""
import base64
import concurrent.futures
import datetime
import gzip
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "support"))
sys.path.insert(0, os.path.join(TOP, "tests", "fakes"))
import gcp_token  # noqa: E402


def _json_line(proc):
    line = proc.stdout.readline()
    if not line:
        raise AssertionError("%s printed nothing (see its log)" % proc.args[:2])
    return json.loads(line)


def _wait_port(ip, port, what, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError("%s does not listen on %s:%d" % (what, ip, port))
            time.sleep(0.1)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Procs:
    def __init__(self):
        self.procs, self.files = [], []

    def spawn(self, argv, log, pipe=True):
        f = open(log, "ab")
        self.files.append(f)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE if pipe else f, stderr=f, text=True,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 15)
                except OSError:
                    pass
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, 9)
                    p.wait()
            if p.stdout:
                p.stdout.close()
        for f in self.files:
            f.close()
        self.procs, self.files = [], []


class Aws(_Procs):
    region, machine_type = "us-east-1", "t3.small"

    def start(self, work, ip):
        out = subprocess.run(["python3", os.path.join(TOP, "tests", "support", "moto.py"),
                              "--port", str(_free_port()), "--host", ip, "--log",
                              os.path.join(work, "moto.log")], check=True, capture_output=True,
                             text=True).stdout
        self.moto = json.loads(out)
        return {"XM_AWS_ENDPOINT": self.moto["endpoint"]}

    def stop(self):
        if getattr(self, "moto", None):
            try:
                os.killpg(self.moto["pid"], 15)
            except OSError:
                pass
            self.moto = None

    def secret(self):
        return {"access_key_id": self.moto["access_key"],
                "secret_access_key": self.moto["secret_key"]}

    def client(self, service):
        import boto3  # on the machine image beside moto
        return boto3.client(service, endpoint_url=self.moto["endpoint"], region_name=self.region,
                            aws_access_key_id=self.moto["access_key"],
                            aws_secret_access_key=self.moto["secret_key"])

    def instances(self, mig):
        out = []
        for res in self.client("ec2").describe_instances(Filters=[
                {"Name": "tag:xmigrate:migration", "Values": [mig]}])["Reservations"]:
            out += [i for i in res["Instances"] if i["State"]["Name"] != "terminated"]
        return out

    def vms(self, mig):
        out = []
        for i in self.instances(mig):
            tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
            out.append({"host": tags.get("xmigrate:host"), "type": i["InstanceType"],
                        "subnet": i["SubnetId"], "id": i["InstanceId"],
                        "address": i.get("PrivateIpAddress")})
        return out

    def stored(self, mig):
        s3, n = self.client("s3"), 0
        for b in s3.list_buckets().get("Buckets", []):
            for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=b["Name"], Prefix="xmigrate/%s/" % mig):
                n += page.get("KeyCount", 0)
        return n

    def disk_image(self, snapshot, size, source=None):
        """An EBS snapshot read back (ListSnapshotBlocks, GetSnapshotBlock): zeros where no
        block was written."""
        ebs = self.client("ebs")
        got = bytearray(size)
        blocks, token, bs = [], None, 0
        while True:
            kw = {"SnapshotId": snapshot}
            if token:
                kw["NextToken"] = token
            page = ebs.list_snapshot_blocks(**kw)
            bs = page["BlockSize"]
            blocks += page["Blocks"]
            token = page.get("NextToken")
            if not token:
                break

        def fetch(b):
            data = ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=b["BlockIndex"],
                                          BlockToken=b["BlockToken"])["BlockData"].read()
            at = b["BlockIndex"] * bs
            if at < size:
                got[at:at + len(data)] = data[:size - at]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(fetch, blocks))
        return bytes(got)


class Azure(_Procs):
    region, machine_type = "westeurope", "Standard_B2s"
    TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    CLIENT = "00000000-0000-0000-0000-00000000c1d0"
    SECRET = "fake-secret"
    SUB = "00000000-0000-0000-0000-000000005ab5"

    def start(self, work, ip):
        import azure_arm  # the fake, for its api-versions and Azurite's well-known key
        self.api_versions, self.key = azure_arm.API_VERSIONS, azure_arm.AZURITE_KEY
        azurite = os.path.join(TOP, "tests", "node_modules", ".bin", "azurite-blob")
        if not os.access(azurite, os.X_OK):
            raise AssertionError("Azurite is not installed: run npm ci in tests/ "
                                 "(scripts/install-deps.sh does)")
        port = _free_port()
        self.spawn([azurite, "--blobHost", ip, "--blobPort", str(port), "--loose",
                    "--skipApiVersionCheck", "--disableTelemetry", "--inMemoryPersistence"],
                   os.path.join(work, "azurite.log"), pipe=False)
        _wait_port(ip, port, "Azurite")
        self.blob = "http://%s:%d/devstoreaccount1" % (ip, port)
        fake = self.spawn(["python3", os.path.join(TOP, "tests", "fakes", "azure_arm.py"),
                           "--host", ip, "--port", "0", "--blob-endpoint", self.blob],
                          os.path.join(work, "azure_arm.log"))
        self.arm = "http://%s:%d" % (ip, _json_line(fake)["port"])
        return {"XM_AZURE_LOGIN_ENDPOINT": self.arm, "XM_AZURE_ARM_ENDPOINT": self.arm}

    def secret(self):
        return {"tenant_id": self.TENANT, "client_id": self.CLIENT,
                "client_secret": self.SECRET, "subscription_id": self.SUB}

    def _get(self, url, headers=None):
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=60) as r:
            return r.read()

    def _arm(self, rid, kind):
        if not hasattr(self, "_token"):
            body = urllib.parse.urlencode({
                "grant_type": "client_credentials", "client_id": self.CLIENT,
                "client_secret": self.SECRET,
                "scope": "https://management.azure.com/.default"}).encode()
            req = urllib.request.Request("%s/%s/oauth2/v2.0/token" % (self.arm, self.TENANT),
                                         data=body)
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.loads(r.read())["access_token"]
        url = "%s%s?api-version=%s" % (self.arm, rid, self.api_versions[kind])
        return json.loads(self._get(url, {"Authorization": "Bearer " + self._token}))

    def vms(self, mig):
        stats = json.loads(self._get(self.arm + "/__stats"))
        out = []
        for rid in stats["resources"]:
            if "/providers/microsoft.compute/virtualmachines/" not in rid.lower():
                continue
            vm = self._arm(rid, "microsoft.compute/virtualmachines")
            tags = vm.get("tags") or {}
            if tags.get("xmigrate-migration") != mig:
                continue
            nic_id = vm["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
            nic = self._arm(nic_id, "microsoft.network/networkinterfaces")
            ipc = nic["properties"]["ipConfigurations"][0]["properties"]
            out.append({"host": tags.get("xmigrate-host"),
                        "type": vm["properties"]["hardwareProfile"]["vmSize"],
                        "subnet": ipc["subnet"]["id"].rstrip("/").rsplit("/", 1)[-1],
                        "id": rid, "address": ipc.get("privateIPAddress")})
        return out

    def _blob_get(self, url, query=None):
        """GET a blob (or with query, a container listing) signed with SharedKey
        (path-style emulator URL: the account is the first path component, and again in
        the canonicalized resource, followed by the query's name:value lines)."""
        u = urllib.parse.urlsplit(url)
        account = u.path.split("/")[1]
        date = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%a, %d %b %Y %H:%M:%S GMT")
        sts = "GET\n" + "\n" * 11 + "x-ms-date:%s\nx-ms-version:2022-11-02\n/%s%s" % (
            date, account, u.path)
        if query:
            sts += "".join("\n%s:%s" % (k, query[k]) for k in sorted(query))
            url += "?" + urllib.parse.urlencode(query, safe="/")
        sig = base64.b64encode(hmac.new(base64.b64decode(self.key), sts.encode(),
                                        hashlib.sha256).digest()).decode()
        return self._get(url, {"x-ms-date": date, "x-ms-version": "2022-11-02",
                               "Authorization": "SharedKey %s:%s" % (account, sig)})

    def stored(self, mig):
        xml = self._blob_get(self.blob + "/xmigrate", {
            "restype": "container", "comp": "list", "prefix": "xmigrate/%s/" % mig,
            "maxresults": "5000"}).decode()
        return xml.count("<Name>")

    def disk_image(self, url, size, source=None):
        vhd = self._blob_get(url)
        if source:  # qemu-img, the oracle for the format, reads it as Azure would
            with tempfile.NamedTemporaryFile(suffix=".vhd") as f:
                f.write(vhd)
                f.flush()
                info = json.loads(subprocess.run(
                    ["qemu-img", "info", "--output", "json", "-f", "vpc", f.name],
                    check=True, capture_output=True, text=True).stdout)
                mib = 1 << 20
                if info["virtual-size"] != (size + mib - 1) // mib * mib:
                    raise AssertionError("qemu-img info: %s has virtual size %d" % (
                        url, info["virtual-size"]))
                p = subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", f.name,
                                    source], capture_output=True, text=True)
                if p.returncode != 0:
                    raise AssertionError("qemu-img compare: %s%s" % (p.stdout, p.stderr))
        mib = 1 << 20
        want = (size + mib - 1) // mib * mib + 512
        if len(vhd) != want:
            raise AssertionError("VHD %s is %d bytes, not %d" % (url, len(vhd), want))
        if vhd[-512:-504] != b"conectix":
            raise AssertionError("VHD %s has no footer cookie" % url)
        if vhd[size:-512].count(0) != len(vhd) - 512 - size:
            raise AssertionError("VHD %s: padding after the disk is not zeros" % url)
        return vhd[:size]


class Gcp(_Procs):
    region, machine_type = "us-central1", "e2-small"
    PROJECT = "xm-e2e-proj"
    EMAIL = "xmigrate@xm-e2e-proj.iam.gserviceaccount.com"

    def start(self, work, ip):
        path = os.path.join(work, "sa.json")
        self.key = gcp_token.new_key(path, self.PROJECT, self.EMAIL)
        fake = self.spawn(["python3", os.path.join(TOP, "tests", "fakes", "gcp.py"), "--listen",
                           "0", "--host", ip, "--key-file", path],
                          os.path.join(work, "gcp.log"))
        self.url = "http://%s:%d" % (ip, _json_line(fake)["port"])
        self.key["token_uri"] = self.url + "/token"
        return {"XM_GCP_TOKEN_ENDPOINT": self.url + "/token",
                "XM_GCP_STORAGE_ENDPOINT": self.url, "XM_GCP_COMPUTE_ENDPOINT": self.url}

    def secret(self):
        return {"service_account": self.key}

    def _get(self, path):
        if not hasattr(self, "_token"):
            self._token = gcp_token.token(self.key)
        req = urllib.request.Request(self.url + path,
                                     headers={"Authorization": "Bearer " + self._token})
        return urllib.request.urlopen(req, timeout=120)

    def vms(self, mig):
        path = "/compute/v1/projects/%s/zones/%s-a/instances" % (self.PROJECT, self.region)
        out = []
        for i in json.loads(self._get(path).read()).get("items", []):
            labels = i.get("labels") or {}
            if labels.get("xmigrate-migration") != mig:
                continue
            nic = i["networkInterfaces"][0]
            out.append({"host": labels.get("xmigrate-host"),
                        "type": i["machineType"].rsplit("/", 1)[-1],
                        "subnet": nic["subnetwork"].rsplit("/", 1)[-1], "id": i["name"],
                        "address": nic.get("networkIP"), "status": i.get("status")})
        return out

    def stored(self, mig):
        n = 0
        buckets = json.loads(self._get("/storage/v1/b?project=%s" % self.PROJECT).read())
        for b in buckets.get("items", []):
            objs = json.loads(self._get("/storage/v1/b/%s/o?prefix=%s" % (
                b["name"], urllib.parse.quote("xmigrate/%s/" % mig, safe=""))).read())
            n += len(objs.get("items", []))
        return n

    def disk_image(self, image, size, source=None):
        """The image object (gs://bucket/object) read back and untarred as GCE does:
        disk.raw must be the disk, then zeros up to a whole GiB."""
        bucket, _, obj = image[len("gs://"):].partition("/") if image.startswith("gs://") \
            else image.partition("/")
        resp = self._get("/storage/v1/b/%s/o/%s?alt=media" % (
            bucket, urllib.parse.quote(obj, safe="")))
        # gzip.GzipFile reads every member of the concatenation (tarfile's "r|gz" stops
        # after the first, and the image is one member per piece).
        with gzip.GzipFile(fileobj=resp) as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
            member = tar.next()
            if member is None or member.name != "disk.raw":
                raise AssertionError("%s: the first member is not disk.raw" % image)
            gib = 1 << 30
            if member.size != (size + gib - 1) // gib * gib:
                raise AssertionError("%s: disk.raw is %d bytes" % (image, member.size))
            f = tar.extractfile(member)
            disk = f.read(size)
            while True:
                rest = f.read(16 << 20)
                if not rest:
                    break
                if rest.count(0) != len(rest):
                    raise AssertionError("%s: disk.raw has data after the disk" % image)
        return disk


CLOUDS = {"aws": Aws, "azure": Azure, "gcp": Gcp}
