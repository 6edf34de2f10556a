"""The whole of xmigrate on one machine: what the end-to-end tests and the demo run.

    Redis, the emulated cloud (clouds.py: moto_server for AWS, Azurite and the Resource
    Manager fake for Azure, the Google fake for GCP), xm-api and one process per phase
    worker (N converters), all on local addresses; source servers that are network
    namespaces whose sshd chroots every session into an overlay of a Debian 12 root
    tree (so discovery reads a real OS and prep changes that tree, never this machine),
    each with loop-device disks holding a real ext4 filesystem with files.

A migration then runs exactly as an operator runs one: credentials and the migration
through the HTTP API, discovery by Ansible over SSH, the network phase, prep, the agent
streaming each disk into the cloud's object storage, sharded conversion, import, VM.

Needs root (namespaces, loop devices, overlay and bind mounts), as CI has. Standard
library only, plus boto3 and cryptography (on the machine image beside moto) to read the
result back as a cloud client would.
"""

import atexit
import hashlib
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "integration", "api"))
import xmtest  # noqa: E402  (redis client and server, processes, wait_for)

sys.path.insert(0, HERE)
import clouds  # noqa: E402

FINAL = ("done", "partially_failed", "failed", "cancelled")

# Everything started and not yet stopped: taken down at exit, also after SIGTERM/SIGINT,
# so an interrupted run leaves no namespace, mount, loop device or process behind.
_live = []


def _cleanup():
    while _live:
        obj = _live.pop()
        try:
            obj.close()
        except Exception as e:  # keep taking the rest down
            print("cleanup of %r failed: %s" % (obj, e), file=sys.stderr)


def _on_signal(signum, frame):
    sys.exit(128 + signum)  # runs atexit


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
TREE_CACHE = os.environ.get("XM_PREP_TREE_CACHE", "/var/cache/xmigrate-test")


def run(*argv, **kw):
    kw.setdefault("check", True)
    return subprocess.run(list(argv), **kw)


def make_disk(path, size, seed, random_mib=1):
    """A disk image of size bytes (not a whole number of chunks): an MBR with one
    partition holding ext4 with files, random_mib MiB of random bytes at 20 MiB, zeros,
    and a last byte that is not zero. (Kept small: moto's EBS takes 512-byte blocks, one
    request each.)"""
    with open(path, "wb") as f:
        f.truncate(size)
    files = path + ".files"
    os.makedirs(os.path.join(files, "etc"), exist_ok=True)
    with open(os.path.join(files, "etc", "motd"), "w") as f:
        f.write("disk %s, seed %d\n" % (os.path.basename(path), seed))
    with open(os.path.join(files, "app.log"), "w") as f:
        for i in range(20000):
            f.write("%d line %d of an application log that compresses well\n" % (seed, i))
    fs = path + ".fs"
    run("mke2fs", "-q", "-F", "-t", "ext4", "-d", files, fs, "12M")
    part_lba, part_sectors = 2048, (12 << 20) // 512
    rnd = hashlib.sha256(b"seed%d" % seed).digest()
    with open(path, "r+b") as f:
        f.write(b"\0" * 446)
        f.seek(446)
        f.write(struct.pack("<BBBBBBBBII", 0x80, 0, 0, 0, 0x83, 0, 0, 0, part_lba,
                            part_sectors))
        f.seek(510)
        f.write(b"\x55\xaa")
        with open(fs, "rb") as src:
            f.seek(part_lba * 512)
            f.write(src.read())
        f.seek(20 << 20)
        block = b"".join(hashlib.sha256(rnd + i.to_bytes(4, "little")).digest()
                         for i in range(1 << 12))  # 128 KiB that do not compress
        for _ in range(8 * random_mib):
            f.write(block)
        f.seek(size - 1)
        f.write(b"\x01")
    os.unlink(fs)
    shutil.rmtree(files)


def root_tree():
    """The cached Debian 12 root tree (built once by tests/prep/build-trees.sh)."""
    run(os.path.join(TOP, "tests", "prep", "build-trees.sh"), TREE_CACHE, "bookworm")
    return os.path.join(TREE_CACHE, "bookworm")


def claim_namespace(first):
    """The first free number n >= first (wrapping in 100..249) whose namespace xm-e2e<n>
    this call could create: `ip netns add` fails when it exists, so runs at once (ctest
    -j, the demo beside a test) never share one, and each removes only its own."""
    for i in range(150):
        n = 100 + (first - 100 + i) % 150
        if subprocess.run(["ip", "netns", "add", "xm-e2e%d" % n],
                          stderr=subprocess.DEVNULL).returncode == 0:
            return n
    raise AssertionError("no free xm-e2e namespace number in 100..249")


class Source:
    """A source server: namespace xm-e2e<n> at 10.232.<n>.2 (this machine is .1), n
    claimed when it comes up (claim_namespace)."""

    def __init__(self, first, work, tree, disk_sizes, make=None):
        self.first, self.work, self.tree = first, work, tree
        self.n = None
        self.disk_sizes = disk_sizes
        self.make = make or make_disk  # make(path, size, seed): writes one disk image
        self.images, self.loops = [], []
        self.sshd_pid = None

    def _name(self, n):
        self.n = n
        self.name = "src%d" % n
        self.dir = os.path.join(self.work, self.name)
        self.ns, self.hveth, self.sveth = "xm-e2e%d" % n, "xm-eh%d" % n, "xm-es%d" % n
        self.host_ip, self.address = "10.232.%d.1" % n, "10.232.%d.2" % n
        # sshd's ChrootDirectory wants every component of the path root-owned and not
        # writable by others, which /tmp is not.
        self.root = os.path.join("/run/xmigrate-e2e", self.ns)

    def close(self):
        self.down()

    def up(self):
        _live.append(self)
        self._name(claim_namespace(self.first))
        d = self.dir
        os.makedirs(d, mode=0o700, exist_ok=True)
        for sub in ("upper", "work"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        os.chmod("/run/xmigrate-e2e", 0o755)
        run("mount", "-t", "overlay", "overlay", "-o",
            "lowerdir=%s,upperdir=%s/upper,workdir=%s/work" % (self.tree, d, d), self.root)
        for what in ("dev", "sys"):
            run("mount", "--rbind", "/" + what, os.path.join(self.root, what))
            run("mount", "--make-rslave", os.path.join(self.root, what))
        run("mount", "-t", "proc", "proc", os.path.join(self.root, "proc"))
        # Its package repository is a local address where nothing listens: prep finds it
        # unreachable at once (a finding, as on a server without one), and no test
        # traffic leaves this machine.
        with open(os.path.join(self.root, "etc", "apt", "sources.list"), "w") as f:
            f.write("deb http://127.0.0.1:9/debian bookworm main\n")
        lists = os.path.join(self.root, "etc", "apt", "sources.list.d")
        for name in os.listdir(lists) if os.path.isdir(lists) else []:
            os.unlink(os.path.join(lists, name))
        for i, size in enumerate(self.disk_sizes):
            img = os.path.join(d, "disk%d.img" % i)
            self.make(img, size, self.n * 10 + i)
            self.images.append(img)
            self.loops.append(run("losetup", "-f", "--show", img, capture_output=True,
                                  text=True).stdout.strip())
        for key in ("id", "hostkey"):
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, key))
        shutil.copy(os.path.join(d, "id.pub"), os.path.join(d, "authorized_keys"))
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write("ListenAddress %s\nPort 22\nHostKey %s/hostkey\nPidFile %s/sshd.pid\n"
                    "AuthorizedKeysFile %s/authorized_keys\nPermitRootLogin prohibit-password\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                    "StrictModes no\nChrootDirectory %s\nSubsystem sftp internal-sftp\n"
                    % (self.address, d, d, d, self.root))
        run("ip", "link", "del", self.hveth, check=False, stderr=subprocess.DEVNULL)  # stale
        run("ip", "link", "add", self.hveth, "type", "veth", "peer", "name", self.sveth)
        run("ip", "link", "set", self.sveth, "netns", self.ns)
        run("ip", "addr", "add", self.host_ip + "/24", "dev", self.hveth)
        run("ip", "link", "set", self.hveth, "up")
        ns = ("ip", "netns", "exec", self.ns)
        run(*ns, "ip", "addr", "add", self.address + "/24", "dev", self.sveth)
        run(*ns, "ip", "link", "set", self.sveth, "up")
        run(*ns, "ip", "link", "set", "lo", "up")
        # Other sources' host addresses (where the API and the cloud listen) via this one.
        run(*ns, "ip", "route", "add", "default", "via", self.host_ip)
        os.makedirs("/run/sshd", exist_ok=True)
        run(*ns, "unshare", "--uts", "sh", "-c",
            "hostname %s; exec /usr/sbin/sshd -f %s/sshd_config -E %s/sshd.log"
            % (self.name, d, d))
        xmtest.wait_for(lambda: os.path.exists(os.path.join(d, "sshd.pid")), 10, "sshd")
        with open(os.path.join(d, "sshd.pid")) as f:
            self.sshd_pid = int(f.read())

    def private_key(self):
        with open(os.path.join(self.dir, "id")) as f:
            return f.read()

    def disk_bytes(self, i):
        with open(self.loops[i], "rb") as f:
            return f.read()

    def down(self):
        if self in _live:
            _live.remove(self)
        if self.n is None:
            return  # never claimed a namespace: nothing of ours to take down
        if self.sshd_pid:
            try:
                os.kill(self.sshd_pid, 15)
            except OSError:
                pass
        run("ip", "netns", "del", self.ns, check=False, stderr=subprocess.DEVNULL)
        run("ip", "link", "del", self.hveth, check=False, stderr=subprocess.DEVNULL)
        for loop in self.loops:
            run("losetup", "-d", loop, check=False)
        if os.path.ismount(self.root):
            run("umount", "-R", self.root, check=False)
            if os.path.ismount(self.root):
                run("umount", "-R", "-l", self.root, check=False)
        if os.path.isdir(self.root) and not os.path.ismount(self.root):
            os.rmdir(self.root)


class Rig:
    """Redis, the cloud, xm-api and every worker, started by start(), stopped by stop()."""

    def __init__(self, build, work, cloud="aws", converters=1, api_ip="127.0.0.1",
                 cloud_faults=None):
        self.build, self.work, self.cloud = build, work, cloud
        self.converters, self.api_ip = converters, api_ip
        # faultproxy.py rules for every call to the cloud (AWS), or None: no proxy
        self.cloud_faults = cloud_faults
        self.proxy = None
        self.procs = {}
        self.redis = None
        self.cloud_rig = clouds.CLOUDS[cloud]()
        self.region = self.cloud_rig.region
        self.machine_type = self.cloud_rig.machine_type

    def bin(self, *path):
        return os.path.join(self.build, *path)

    def close(self):
        self.stop()

    def start(self):
        _live.append(self)
        self.redis = xmtest.RedisServer(self.work)
        self.redis.start()
        self.r = xmtest.Redis(self.redis.port)
        env = self.cloud_rig.start(self.work, self.api_ip)
        if self.cloud_faults is not None:
            env = self.proxy_cloud(env)
        self.master = secrets.token_hex(32)
        self.api_port = xmtest.free_port()
        api_url = "http://%s:%d" % (self.api_ip, self.api_port)
        self.env = xmtest.clean_env(dict(env, **{
            "XM_REDIS_PORT": str(self.redis.port), "XM_MASTER_KEY": self.master,
            "XM_API_ADDR": self.api_ip, "XM_API_PORT": str(self.api_port),
            "XM_API_URL": api_url, "XM_AGENT_API_URL": api_url,
            "XM_SCHEMAS_DIR": os.path.join(TOP, "schemas"),
            "XM_PLAYBOOKS_DIR": os.path.join(TOP, "playbooks"),
            "XM_AGENT_PATH": self.bin("agent", "xm-agent"),
            "XM_LOG_LEVEL": "debug", "XM_BLOCK_MS": "200", "XM_RETRY_BASE_MS": "500",
            "XM_VISIBILITY_TIMEOUT_MS": "30000", "XM_HEARTBEAT_MS": "2000",
            "XM_CONVERT_SHARD_MB": "16",
        }))
        self.token = run(self.bin("api", "xm-api"), "token", "create", "e2e", env=self.env,
                         capture_output=True, text=True).stdout.strip()
        self.spawn("api", [self.bin("api", "xm-api")])
        self.api = xmtest.Client(self.api_port, self.token, host=self.api_ip)
        xmtest.wait_for(self.healthy, 15, "xm-api")
        # Two of each per-host worker whose jobs take long, so two hosts go side by side.
        workers = [("discovery1", "discovery/xm-discovery"),
                   ("discovery2", "discovery/xm-discovery"), ("network", "network/xm-network"),
                   ("prep1", "prep/xm-prep"), ("prep2", "prep/xm-prep"),
                   ("clone1", "clone/xm-clone"), ("clone2", "clone/xm-clone"),
                   ("import", "import/xm-import")]
        workers += [("convert%d" % i, "../convert/xm-convert")
                    for i in range(1, self.converters + 1)]
        for name, path in workers:
            self.spawn(name, [os.path.normpath(self.bin("workers", path))])

    def proxy_cloud(self, env):
        """tests/fakes/faultproxy.py between everything and the emulated AWS (the workers'
        calls and the agents' presigned uploads alike), answering by self.cloud_faults."""
        if "XM_AWS_ENDPOINT" not in env:
            raise AssertionError("the cloud fault proxy sits in front of AWS only")
        log = open(os.path.join(self.work, "faultproxy.log"), "ab")
        p = subprocess.Popen(
            ["python3", os.path.join(TOP, "tests", "fakes", "faultproxy.py"), "--listen", "0",
             "--host", self.api_ip, "--upstream", env["XM_AWS_ENDPOINT"], "--seed", "11",
             "--rules", json.dumps(self.cloud_faults)],
            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        log.close()
        self.proxy = {"proc": p, "port": json.loads(p.stdout.readline())["port"]}
        return dict(env, XM_AWS_ENDPOINT="http://%s:%d" % (self.api_ip, self.proxy["port"]))

    def proxy_stats(self):
        import urllib.request
        url = "http://%s:%d/__stats" % (self.api_ip, self.proxy["port"])
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    WORKERS = {"discovery": "discovery/xm-discovery", "network": "network/xm-network",
               "prep": "prep/xm-prep", "clone": "clone/xm-clone", "import": "import/xm-import",
               "convert": "../convert/xm-convert"}

    def spawn_worker(self, name, phase):
        self.spawn(name, [os.path.normpath(self.bin("workers", self.WORKERS[phase]))])

    def kill_worker(self, name):
        """SIGKILL, as a crash: nothing of the worker's own shutdown runs."""
        p = self.procs.pop(name)
        p.proc.kill()
        p.proc.wait()

    def restart_redis(self):
        """Stop Redis (it writes its AOF) and start it again on the same port and data;
        every process reconnects on its own."""
        self.redis.stop()
        self.redis.start()
        self.r.close()  # our own client reconnects on its next command

    def holder(self, phase, step=None):
        """The consumer holding a job of phase right now (a pending entry), or None; with
        step, only a job whose payload has that "step" (convert: "shard")."""
        for name in list(self.procs):
            if not name.startswith(phase):
                continue
            for entry in self.r("XPENDING", "xm:q:" + phase, "workers", "-", "+", "10", name):
                if step is None:
                    return name
                got = self.r.xrange("xm:q:" + phase, entry[0], entry[0])
                if got and json.loads(got[0][1].get("payload", "{}")).get("step") == step:
                    return name
        return None

    def spawn(self, name, argv):
        env = dict(self.env, XM_CONSUMER=name)
        self.procs[name] = xmtest.Process(argv, env, os.path.join(self.work, name + ".log"))

    def healthy(self):
        return xmtest.Client(self.api_port, host=self.api_ip).get("/healthz").status == 200

    def stop(self):
        if self in _live:
            _live.remove(self)
        for p in self.procs.values():
            try:
                p.stop()
            except AssertionError as e:
                print(e, file=sys.stderr)
        self.procs = {}
        if self.proxy:
            self.proxy["proc"].terminate()
            self.proxy["proc"].wait()
            self.proxy["proc"].stdout.close()
            self.proxy = None
        self.cloud_rig.stop()
        if self.redis:
            self.redis.stop()
            self.redis = None

    # ------------------------------------------------------------ as an operator does

    def call(self, method, path, body=None, want=(200, 201, 202)):
        r = self.api.request(method, path, body)
        if r.status not in want:
            raise AssertionError("%s %s: HTTP %d %s" % (method, path, r.status, r.body[:500]))
        return r.json if r.body else None

    def credentials(self, sources):
        cloud = self.call("POST", "/v1/credentials", {
            "name": "emulated-" + self.cloud, "kind": self.cloud,
            "secret": self.cloud_rig.secret()})
        ssh = [self.call("POST", "/v1/credentials", {
            "name": "root-" + s.name, "kind": "ssh",
            "secret": {"user": "root", "private_key": s.private_key()}}) for s in sources]
        return cloud["id"], [c["id"] for c in ssh]

    def migrate(self, sources, name="e2e", blueprint=None, auto_approve=True, extra_hosts=(),
                **options):
        """A migration of sources (and extra_hosts: ready host entries, e.g. one nobody
        answers at); options go into the body as they are (cutover, max_cloning, ...)."""
        cloud_cred, ssh = self.credentials(sources)
        body = {"name": name, "cloud": self.cloud, "region": self.region,
                "credential": cloud_cred, "auto_approve": auto_approve,
                "hosts": [{"name": s.name, "address": s.address, "credential": c}
                          for s, c in zip(sources, ssh)]}
        for h in extra_hosts:
            body["hosts"].append(dict(h, credential=ssh[0]))
        body.update(options)
        if blueprint:
            body["blueprint"] = blueprint
        return self.call("POST", "/v1/migrations", body)["id"]

    def migration(self, mig):
        return self.call("GET", "/v1/migrations/" + mig)

    def wait_status(self, mig, statuses, timeout):
        def reached():
            m = self.migration(mig)
            return m if m["status"] in statuses else None
        return xmtest.wait_for(reached, timeout, "migration %s to reach %s" % (mig, statuses),
                               interval=1.0)

    def wait_final(self, mig, timeout):
        return self.wait_status(mig, FINAL, timeout)

    @staticmethod
    def blockers(m):
        """The blocker findings of a migration as GET shows them."""
        out = []
        for h in m.get("hosts", []):
            out += [f for f in h.get("findings", []) if f.get("severity") == "blocker"]
        return out

    def approve(self, mig, overrides=()):
        q = "?override=" + ",".join(overrides) if overrides else ""
        return self.call("POST", "/v1/migrations/%s/approve%s" % (mig, q))

    # ------------------------------------------------------------ reading the result back

    def vms(self, mig):
        """The migration's VMs as the cloud reports them (clouds.py)."""
        return self.cloud_rig.vms(mig)

    def stored(self, mig):
        """Objects the cloud's storage holds for the migration (clouds.py)."""
        return self.cloud_rig.stored(mig)

    def disk_image(self, image, size, source=None):
        """The disk the cloud holds for a converted image, read back the cloud's way."""
        return self.cloud_rig.disk_image(image, size, source)
