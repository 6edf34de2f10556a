#!/usr/bin/env python3
"""End to end: one source server with one 2 GiB disk migrated to emulated AWS (moto),
once with 1 converter and once with 2; time per phase from the events stream.

    run.py [--build DIR] [--no-build] [--nonzero-mib N] [--converters 1,2] [--keep]

Each pass is a whole migration as an operator runs one (tests/e2e/rig.py: Redis, moto,
xm-api and one process per phase worker, a source server in a network namespace with
sshd and a loop disk): credentials and the migration through the HTTP API with
auto_approve, the pre-flight blockers this rig's sources always have overridden at once,
then discovery, network, prep, clone, convert and import to `done`. Each pass starts
from nothing (its own Redis, moto, source), so the second does not find the first's
snapshot.

The disk is 2 GiB of which --nonzero-mib MiB are written, in pieces spread over the
disk, alternately log-like text and random bytes; the rest is zeros (holes). Every
non-zero 512-byte block costs one PutSnapshotBlock to moto (moto reports 512-byte EBS
blocks) and one GetSnapshotBlock to read it back, each on a new TCP connection (moto's
werkzeug closes every one), so that amount, not the disk's size, decides how long a pass
takes; the default 8 MiB also stays under the source ports TIME_WAIT would exhaust
(bench/README.md, "End to end").

Per phase, from xm:events: the phase's wall time runs from the first of its jobs entering
its stream (`enqueued`) to the last of them settling (`ts` of job.done/job.joined). The
operator's approval (between discovery and network) is shown apart and left out of the
total. Also printed: MB/s of the clone and convert phases (non-zero MB moved, and disk
MB), the CPU moto, the converters and the whole machine used during convert (from
/proc, sampled every 0.25 s), and the ratios 1 converter / 2 converters for convert and
for the whole migration. A pass counts only if the migration reached `done` and the
EBS snapshot read back equals the source disk byte for byte; otherwise the bench fails.

Builds what it runs as production builds it (Release, no test crash hooks) into
build-bench/, as the other benchmarks do. Needs root (namespaces, loop devices, mounts),
moto_server, ansible-playbook and boto3, as the end-to-end test does. The report is also
kept in bench/results/e2e-<UTC time>.txt.
"""
import argparse
import datetime
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "e2e"))

MIB = 1 << 20
PHASES = ("discovery", "network", "prep", "clone", "convert", "import")
TARGETS = ["xm-api", "xm-agent", "xm-convert", "xm-discovery", "xm-network", "xm-prep",
           "xm-clone", "xm-import"]


def build(dirname):
    subprocess.run(["cmake", "-S", TOP, "-B", dirname, "-DXM_WERROR=ON",
                    "-DCMAKE_BUILD_TYPE=Release", "-DXM_TEST_HOOKS=OFF"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", dirname, "-j2", "--target"] + TARGETS, check=True,
                   stdout=subprocess.DEVNULL)


def built_from(args):
    """What the binaries were built from: the commit and how many tracked files differed
    from it when this run built them; with --no-build, only when xm-convert was built."""
    if args.no_build:
        at = os.path.getmtime(os.path.join(args.build, "convert", "xm-convert"))
        return "binaries of %s as they were (xm-convert built %s UTC)" % (
            args.build, datetime.datetime.fromtimestamp(
                at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"))
    git = ["git", "-C", TOP]
    rev = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.count("\n")
    return "built from commit %s, %d uncommitted file(s)" % (rev, dirty)


def busy_over(secs):
    """How busy the whole machine was over the next secs seconds (0..1)."""
    def read():
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        return sum(cpu) - cpu[3] - cpu[4], sum(cpu)
    b0, t0 = read()
    time.sleep(secs)
    b1, t1 = read()
    return (b1 - b0) / max(1, t1 - t0)


def wait_quiet(limit_s):
    """Wait (up to limit_s) until the machine is under 15% busy over 3 s."""
    deadline = time.monotonic() + limit_s
    while True:
        busy = busy_over(3)
        if busy < 0.15 or time.monotonic() > deadline:
            return
        print("machine %.0f%% busy, waiting for it to be quiet ..." % (100 * busy),
              file=sys.stderr, flush=True)


def text_bytes(n, seed):
    """n bytes of syslog-like lines (compress about as real logs do)."""
    out, i = [], 0
    size = 0
    while size < n:
        line = ("Nov 26 04:%02d:%02d src%d app[%d]: request %d GET /api/v1/items/%d "
                "status=200 bytes=%d ms=%d\n" % (i // 60 % 60, i % 60, seed, 1000 + i % 97, i,
                                                  i * 7919 % 100003, i * 31 % 65536, i % 250))
        out.append(line)
        size += len(line)
        i += 1
    return "".join(out).encode()[:n]


def make_disk(nonzero_mib, pieces):
    """Source.up's disk maker: sparse zeros with nonzero_mib MiB in `pieces` equal pieces
    spread evenly over the disk, alternately text and random bytes (the same bytes in
    every pass)."""
    def make(path, size, seed):
        piece = nonzero_mib * MIB // pieces // 512 * 512
        stride = size // pieces // MIB * MIB
        with open(path, "wb") as f:
            f.truncate(size)
            for k in range(pieces):
                f.seek(k * stride + stride // 2)
                f.write(text_bytes(piece, k) if k % 2 == 0 else random.Random(k).randbytes(piece))
    return make


class Sampler(threading.Thread):
    """CPU time of moto, of the converters and of the whole machine every 0.25 s, so any
    window (a phase from the events) can be read afterwards."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.samples, self.stop_ev = pids, [], threading.Event()
        self.hz = os.sysconf("SC_CLK_TCK")

    def proc_cpu(self, pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self.hz
        except OSError:
            return None

    def machine(self):
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        idle = cpu[3] + cpu[4]
        return (sum(cpu) - idle) / self.hz, sum(cpu) / self.hz

    def sample(self):
        pids = self.pids()
        self.samples.append((time.time(), {k: self.proc_cpu(p) for k, p in pids.items()},
                             self.machine()))

    def run(self):
        while not self.stop_ev.wait(0.25):
            self.sample()

    def window(self, t0, t1):
        """CPU seconds per process name and (busy, total) of the machine between t0 and t1
        (the nearest samples inside the window)."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return None
        a, b = inside[0], inside[-1]
        procs = {k: b[1][k] - a[1][k] for k in b[1]
                 if b[1].get(k) is not None and a[1].get(k) is not None}
        return {"secs": b[0] - a[0], "procs": procs,
                "busy": b[2][0] - a[2][0], "total": b[2][1] - a[2][1]}


def phase_times(events, mig):
    """Per phase (first enqueued, last settled, jobs) and the migration's own events."""
    spans, marks = {}, {}
    for _, e in events:
        if e.get("migration") != mig:
            continue
        t = e.get("type", "")
        ts = int(e["ts"]) / 1e6
        if t.startswith("migration.") or t == "clone.progress":
            marks.setdefault(t, ts)
        if t not in ("job.done", "job.joined"):
            continue
        ph = e.get("phase")
        start = int(e["enqueued"]) / 1e6
        s = spans.setdefault(ph, [start, ts, 0])
        s[0], s[1], s[2] = min(s[0], start), max(s[1], ts), s[2] + 1
    return spans, marks


def verify(r, src, snapshot, size):
    """The EBS snapshot read back (clouds.Aws.disk_image) equals the source disk."""
    got = r.disk_image(snapshot, size)
    with open(src.images[0], "rb") as f:
        at = 0
        while at < size:
            want = f.read(64 * MIB)
            if got[at:at + len(want)] != want:
                raise SystemExit("the snapshot differs from the source disk within bytes "
                                 "%d..%d" % (at, at + len(want)))
            at += len(want)


def one_pass(args, index, converters, tree):
    import rig  # noqa: E402 (tests/e2e: needs root to be of any use)
    work = tempfile.mkdtemp(prefix="xm-bench-e2e-")
    size = args.size_mib * MIB
    out = {"converters": converters}
    ok = False
    wait_quiet(args.quiet_wait)
    try:
        # A number of its own per pass: the previous pass's namespace may still be
        # going away in the kernel.
        src = rig.Source(200 + os.getpid() % 20 * 2 + index, work, tree, [size],
                         make=make_disk(args.nonzero_mib, args.pieces))
        src.up()
        r = rig.Rig(args.build, work, "aws", converters=converters, api_ip=src.host_ip)
        r.start()
        moto_pid = r.cloud_rig.moto["pid"]
        sampler = Sampler(lambda: dict(
            {"moto": moto_pid, "redis": r.redis.proc.pid},
            **{n: p.proc.pid for n, p in r.procs.items()}))
        sampler.start()
        disk = os.path.basename(src.loops[0])
        blueprint = {
            "network": {"name": "bench", "cidr": "10.61.0.0/16",
                        "subnets": [{"name": "app", "cidr": "10.61.1.0/24"}]},
            "hosts": [{"host": src.name, "machine_type": r.machine_type, "subnet": "app",
                       "disks": [{"device": src.loops[0]}]}],
        }
        t0 = time.time()
        mig = r.migrate([src], name="bench", blueprint=blueprint, auto_approve=True)
        m = r.wait_status(mig, ("awaiting_approval",) + rig.FINAL, 600)
        if m["status"] == "awaiting_approval":
            r.approve(mig, overrides=sorted(b["name"] for b in r.blockers(m)))
        m = r.wait_final(mig, args.timeout)
        t1 = time.time()
        sampler.stop_ev.set()
        sampler.join()
        if m["status"] != "done":
            raise SystemExit("pass with %d converter(s): migration ended %s; dead jobs %s; "
                             "logs in %s" % (converters, m["status"], r.r.xrange("xm:dead")[-3:],
                                             work))
        events = r.r.xrange("xm:events")
        spans, marks = phase_times(events, mig)
        missing = [p for p in PHASES if p not in spans]
        if missing:
            raise SystemExit("no job.done events for phase(s) %s (events kept %d)"
                             % (", ".join(missing), len(events)))
        d = r.r.hgetall("xm:disk:%s:%s:%s" % (mig, src.name, disk))
        print("pass with %d converter(s): done in %.1f s; reading the snapshot back ..."
              % (converters, t1 - t0), file=sys.stderr, flush=True)
        tv = time.time()
        verify(r, src, d["image"], size)
        out.update(spans=spans, marks=marks, verify_s=time.time() - tv,
                   approved=marks.get("migration.approved"),
                   end=marks.get("migration.done", t1),
                   convert_cpu=sampler.window(*spans["convert"][:2]),
                   moto_requests=count_requests(os.path.join(work, "moto.log")))
        ok = True
        return out
    finally:
        rig._cleanup()
        if args.keep or not ok:
            print("work directory kept: %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def count_requests(log):
    """PutSnapshotBlock and GetSnapshotBlock requests in moto's access log."""
    put = get = 0
    try:
        with open(log, errors="replace") as f:
            for line in f:
                if '"PUT /snapshots/' in line and "/blocks/" in line:
                    put += 1
                elif '"GET /snapshots/' in line and "/blocks/" in line:
                    get += 1
    except OSError:
        pass
    return put, get


def span(p, ph):
    return p["spans"][ph][1] - p["spans"][ph][0]


def report(args, passes, nonzero, lines):
    def say(text=""):
        lines.append(text)
        print(text, flush=True)

    size = args.size_mib * MIB
    say("end to end, AWS (moto), one %d MiB disk, %.1f MiB non-zero in %d pieces "
        "(text / random alternating), shards of 16 MiB" % (args.size_mib, nonzero / MIB,
                                                          args.pieces))
    for p in passes:
        first = min(sp[0] for sp in p["spans"].values())
        p["approval"] = p["approved"] - p["spans"]["discovery"][1] if p["approved"] else 0.0
        p["total"] = p["end"] - first - p["approval"]
        agent = p["marks"].get("clone.progress")
        p["clone_before_agent"] = agent - p["spans"]["clone"][0] if agent else None
    say("| phase |" + "".join(" %d converter%s s |" % (
        p["converters"], "" if p["converters"] == 1 else "s") for p in passes))
    say("| --- |" + " ---: |" * len(passes))
    for ph in PHASES:
        say("| %s |" % ph + "".join(" %.2f |" % span(p, ph) for p in passes))
        if ph == "clone":
            say("| (clone: Ansible until the agent's first report) |" + "".join(
                " %s |" % ("%.2f" % p["clone_before_agent"] if p["clone_before_agent"] is not None
                           else "-") for p in passes))
    say("| (approval, left out) |" + "".join(" %.2f |" % p["approval"] for p in passes))
    say("| **total** |" + "".join(" **%.2f** |" % p["total"] for p in passes))
    say()
    say("| converters | clone MB/s non-zero (disk) | convert MB/s non-zero (disk) | PUT blocks "
        "| moto CPU in convert | moto ms CPU per PUT | converters' CPU | others | verify s |")
    say("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for p in passes:
        row = ["%.2f (%.0f)" % (nonzero / 1e6 / span(p, ph), size / 1e6 / span(p, ph))
               for ph in ("clone", "convert")]
        puts = p["moto_requests"][0]
        row.append(str(puts))
        c = p["convert_cpu"]
        if c:
            conv = sum(v for k, v in c["procs"].items() if k.startswith("convert"))
            moto = c["procs"].get("moto", 0)
            others = max(0.0, c["busy"] - sum(c["procs"].values())) / c["total"]
            p["others"] = others
            row += ["%.0f%% of a core" % (100 * moto / c["secs"]),
                    "%.2f" % (1000 * moto / puts) if puts else "-",
                    "%.0f%% of a core" % (100 * conv / c["secs"]),
                    "%.0f%%%s" % (100 * others, "" if others <= 0.15 else " (not quiet)")]
        else:
            row += ["-", "-", "-", "-"]
        row.append("%.1f" % p["verify_s"])
        say("| %d | %s |" % (p["converters"], " | ".join(row)))
    say()
    by = {p["converters"]: p for p in passes}
    if 1 in by and 2 in by:
        rc = span(by[1], "convert") / span(by[2], "convert")
        rt = by[1]["total"] / by[2]["total"]
        say("ratio 1 converter / 2 converters: convert %.2fx, whole migration %.2fx" % (rc, rt))
    say("every pass reached done and its snapshot equals the source disk byte for byte")
    say()
    for p in passes:
        k = "e2e.c%d." % p["converters"]
        for ph in PHASES:
            say("%s%s_s=%.3f" % (k, ph, span(p, ph)))
        say("%stotal_s=%.3f" % (k, p["total"]))
        if p["convert_cpu"]:
            c = p["convert_cpu"]
            say("%sconvert_moto_cpu=%.3f" % (k, c["procs"].get("moto", 0) / c["secs"]))
            say("%sconvert_others=%.3f" % (k, p["others"]))
        say("%sverified=1" % k)
    if 1 in by and 2 in by:
        say("e2e.ratio_convert=%.3f" % rc)
        say("e2e.ratio_total=%.3f" % rt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See bench/README.md, section \"End to end\".")
    ap.add_argument("--build", default=os.path.join(TOP, "build-bench"),
                    help="build directory (default build-bench, made Release here)")
    ap.add_argument("--no-build", action="store_true", help="use --build as it is")
    ap.add_argument("--nonzero-mib", type=int, default=8,
                    help="MiB of the disk that are not zeros (default 8; see the README)")
    ap.add_argument("--pieces", type=int, default=32,
                    help="pieces the non-zero data is cut into, spread over the disk")
    ap.add_argument("--size-mib", type=int, default=2048, help="disk size (default 2048)")
    ap.add_argument("--converters", default="1,2",
                    help="converter counts, one pass each, in this order (default 1,2)")
    ap.add_argument("--timeout", type=int, default=1800, help="per pass, seconds")
    ap.add_argument("--quiet-wait", type=int, default=120,
                    help="before each pass, wait up to this many seconds for the machine "
                         "to be under 15%% busy (default 120)")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run.py needs root: network namespaces, loop devices and mounts")
    args.build = os.path.abspath(args.build)
    if not args.no_build:
        build(args.build)
    source = built_from(args)
    counts = [int(x) for x in args.converters.split(",")]
    import rig  # noqa: E402
    tree = rig.root_tree()
    passes = []
    for i, n in enumerate(counts):
        passes.append(one_pass(args, i, n, tree))
    piece = args.nonzero_mib * MIB // args.pieces // 512 * 512
    lines = []
    stamp = datetime.datetime.now(datetime.timezone.utc)
    lines.append("source: %s; %s UTC; %d cores; load before %s" % (
        source, stamp.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), LOAD_BEFORE))
    print(lines[0])
    report(args, passes, piece * args.pieces, lines)
    os.makedirs(os.path.join(TOP, "bench", "results"), exist_ok=True)
    path = os.path.join(TOP, "bench", "results",
                        "e2e-%s.txt" % stamp.strftime("%Y%m%dT%H%M%SZ"))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("report kept in %s" % path, file=sys.stderr)


LOAD_BEFORE = open("/proc/loadavg").read().split()[0]

if __name__ == "__main__":
    main()
