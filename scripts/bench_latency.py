#!/usr/bin/env python3
"""Benchmark: fsmount, sshfs and rclone at network distance (issue 14), side by side.

This machine's kernel has no netem, so every byte goes through ``scripts/delay_proxy.py``
on loopback: each direction delayed by half the RTT, at most ``--window`` bytes (default
4 MiB) in flight per connection and direction, a new connection one extra round trip.
For each RTT of ``--rtt`` (default ``0,20,100`` ms; ``direct`` adds a round without the
proxy, to see what the proxy itself costs), through the same proxy:

* **fsmount**: ``fsmount serve`` (a subprocess, store in a temporary directory) on a
  loopback port, ``fsmount mount -f --server http://127.0.0.1:PROXYPORT`` (default
  options, ``--log-level DEBUG`` so that its log names every remote call: the "calls"
  column counts them per workload);
* **sshfs**: a private ``sshd -D -f CONFIG`` on a loopback port, owned by this script (its
  own host key and authorized key in the work directory, ``ListenAddress 127.0.0.1``,
  ``PermitRootLogin yes``, ``UsePAM no``, Debian's sftp-server), and ``sshfs -f`` through
  the proxy with ``-o IdentityFile=...,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null``
  and otherwise sshfs's defaults: its directory and attribute caches, 1 s timeouts,
  OpenSSH's default cipher, one SSH connection (``--sshfs-max-conns N`` passes
  ``-o max_conns=N``, sshfs >= 3.7; 4 made every cold walk slower here, e.g. ``find``
  of 100 files cold, no proxy: 1.21 s against 0.02 s);
* **rclone** (reads only): ``rclone mount`` of the fsmount server's HTML listing over
  rclone's ``http`` remote (``bench_http.rclone_mount_cmd``: no VFS cache, rclone's
  defaults otherwise, e.g. HEAD requests for the sizes in a listing), reading the files
  fsmount wrote.

Workloads, each timed by wall clock and bounded by ``--timeout`` (default 900 s; a
workload past it is killed and shows as "timeout"); "cold" means on a mount started just
for it:

* ``tar x`` of ``--files`` files of 4 KiB (default 100; the issue's figure is 2000) in 20
  folders; ``rm -rf`` of them at the end (cold);
* ``ls -lR`` cold then warm, ``find`` cold then warm, ``cat`` of every file cold;
* ``git clone`` of a local repository (30 commits, 200 files, packed) into the mount, and
  ``git status`` in it on a fresh mount;
* sequential write (``dd bs=1M``, close included) and cold sequential read of ``--size``
  bytes (default 128M; the issue's figure is 1G);
* 200 random 4 KiB reads (``pread``, 4 KiB aligned, seeded) of that file on a fresh
  mount: median and p99.

Prints a table per RTT with the ratios sshfs/fsmount (time: above 1, fsmount is faster)
and fsmount/rclone (throughput, i.e. rclone's time over fsmount's: above 1, fsmount is
faster), and writes every figure as JSON with ``--json``.  The machine is shared and
noisy: only ratios within one run mean much, and the proxy's own CPU is part of every
figure alike.

Needs Debian's ``sshfs`` and ``openssh-server`` (and ``openssh-client``, ``rclone``,
``git``, ``fuse3``): ``apt-get install sshfs openssh-server rclone git fuse3``.  Runs as
root (sshd, FUSE).  Cleans up every mount, sshd, proxy and server it started, by PID, on
errors, Ctrl-C and SIGTERM too; a run that fails keeps its work directory (the mounts',
sshd's and server's logs) and says where.

    python3 scripts/bench_latency.py --rtt 0,20 --files 100 --size 64M   # a quick run
    python3 scripts/bench_latency.py              # about 25 minutes (docs/performance.md)
    python3 scripts/bench_latency.py --files 2000 --size 1G --timeout 3600   # the issue's sizes
                                                  # (hours: tar x ~28 min per system at 100 ms)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bench_http import (
    FSMOUNT,
    MIB,
    free_port,
    fsmount_mount_cmd,
    make_file,
    mounted,
    rclone_mount_cmd,
    wait_until,
)
from delay_proxy import DelayProxy

from fsmount.cli_common import parse_size

RANDOM_READS = 200
REPO_FILES = 200
REPO_COMMITS = 30
NEEDED = {  # command -> Debian package
    "sshfs": "sshfs", "/usr/sbin/sshd": "openssh-server", "ssh-keygen": "openssh-client",
    "rclone": "rclone", "git": "git", "fusermount3": "fuse3", "tar": "tar",
}

# Run in a child process, so that a hung mount can be killed like any other workload.
RANDOM_READ_CODE = r"""
import json, os, random, sys, time
path, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(14)
fd = os.open(path, os.O_RDONLY)
out = []
for _ in range(n):
    off = rng.randrange(size // 4096) * 4096
    t = time.perf_counter()
    if len(os.pread(fd, 4096, off)) != 4096:
        sys.exit("short read")
    out.append(time.perf_counter() - t)
os.close(fd)
print(json.dumps(out))
"""


# --- results -------------------------------------------------------------------------------


class Timed(NamedTuple):
    seconds: float


class Failed(NamedTuple):
    reason: str  # "timeout", or the command's exit status and the end of its stderr


Measure = Timed | Failed


class Workload(NamedTuple):
    """A row of the table: ``unit`` says how its seconds are shown."""

    key: str
    label: str
    unit: str  # "s" (time), "MB/s" (``nbytes`` over the time), "ms" (a latency)
    nbytes: int = 0
    files: int = 0


@dataclass
class SystemRun:
    """One system's figures at one RTT."""

    measures: dict[str, Measure] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # fsmount remote calls per workload
    proxy_connections: int = 0


# --- running things, bounded ---------------------------------------------------------------


class Bounded(NamedTuple):
    measure: Measure
    stdout: bytes


def run_bounded(cmd: list[str], timeout: float, *, cwd: Path | None = None,
                stdin: Path | None = None, capture: bool = False,
                env: dict[str, str] | None = None) -> Bounded:
    """Run ``cmd`` in its own process group; kill the group past ``timeout`` (or on
    Ctrl-C, which is then re-raised).  Never raises for the command's own failure."""
    with contextlib.ExitStack() as stack:
        fin = stack.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=fin, env=env, start_new_session=True,
                                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=60)  # SIGKILL also ends a wait on a FUSE request
            if isinstance(exc, subprocess.TimeoutExpired):
                return Bounded(Failed("timeout"), b"")
            raise
        elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-2:]
        return Bounded(Failed(f"exit {proc.returncode}: {' | '.join(tail)[:200]}"), out or b"")
    return Bounded(Timed(elapsed), out or b"")


def sh(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    """A setup command that must succeed.  Raises RuntimeError otherwise."""
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {res.stderr[-1000:]}")
    return res.stdout


def missing_tools() -> list[str]:
    return sorted({pkg for cmd, pkg in NEEDED.items()
                   if not (os.path.exists(cmd) if cmd.startswith("/") else shutil.which(cmd))})


# --- the servers ---------------------------------------------------------------------------


@contextlib.contextmanager
def fsmount_server(work: Path) -> Iterator[tuple[int, str, Path]]:
    """``fsmount serve`` on a free loopback port: yields (port, token, token file)."""
    store = work / "store"
    sh([*FSMOUNT, "init", "--store", str(store)])
    token = sh([*FSMOUNT, "token", "add", "--store", str(store), "bench"]).strip()
    tokfile = work / "token"
    tokfile.write_text(token + "\n")
    port = free_port()
    log = work / "serve.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([*FSMOUNT, "serve", "--store", str(store), "--listen",
                                 f"127.0.0.1:{port}"], stdout=logf, stderr=logf,
                                stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: "serving" in log.read_text(errors="replace") or proc.poll() is not None,
                   "fsmount serve")
        if proc.poll() is not None:
            raise RuntimeError(f"fsmount serve failed: {log.read_text(errors='replace')[-1000:]}")
        yield port, token, tokfile
    finally:
        stop_process(proc)


@contextlib.contextmanager
def private_sshd(work: Path) -> Iterator[tuple[int, Path]]:
    """A private ``sshd -D`` on a free loopback port for root with a fresh key pair:
    yields (port, the client's identity file)."""
    d = work / "sshd"
    d.mkdir(mode=0o700)
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")])
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id_client")])
    auth = d / "authorized_keys"
    shutil.copy(d / "id_client.pub", auth)
    auth.chmod(0o600)
    port = free_port()
    config = d / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
AuthorizedKeysFile {auth}
PidFile {d / 'sshd.pid'}
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel ERROR
""")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    log = work / "sshd.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                                stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)

    def listening() -> bool:
        if proc.poll() is not None:
            return True
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, "sshd")
        if proc.poll() is not None:
            raise RuntimeError(f"sshd failed: {log.read_text(errors='replace')[-1000:]}")
        yield port, d / "id_client"
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


# --- the data ------------------------------------------------------------------------------


def make_small_tar(path: Path, count: int) -> None:
    """``count`` files of 4 KiB (distinct contents) in 20 folders."""
    import io

    rng = random.Random(2000)
    with tarfile.open(path, "w") as tar:
        for i in range(count):
            info = tarfile.TarInfo(f"d{i % 20:02d}/f{i:05d}.bin")
            info.size = 4096
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(rng.randbytes(4096)))


GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost",
       "-c", "safe.directory=*", "-c", "init.defaultBranch=main"]


def make_repo(path: Path) -> None:
    """A small repository: REPO_FILES text files in 10 folders, REPO_COMMITS commits, packed."""
    rng = random.Random(14)
    sh([*GIT, "init", "-q", str(path)])
    names = [path / f"src{i % 10}" / f"mod{i:03d}.py" for i in range(REPO_FILES)]
    for c in range(REPO_COMMITS):
        for p in names if c == 0 else rng.sample(names, 10):
            p.parent.mkdir(exist_ok=True)
            lines = [f"def f{c}_{k}(x):  # {rng.random():.12f}\n    return x + {k}\n"
                     for k in range(rng.randint(10, 60))]
            p.write_text("".join(lines))
        sh([*GIT, "add", "-A"], cwd=path)
        sh([*GIT, "commit", "-q", "-m", f"commit {c}"], cwd=path)
    sh([*GIT, "gc", "-q"], cwd=path)


# --- one system at one RTT -----------------------------------------------------------------


@dataclass
class System:
    name: str
    mount_cmd: Callable[[Path], list[str]]
    root: str  # the folder of this RTT's files, relative to the mount's root
    log: Path  # the mount's log (fsmount's names every remote call)
    writes: bool = True


def count_calls(log: Path, start: int) -> int:
    try:
        with open(log, "rb") as f:
            f.seek(start)
            return len(re.findall(rb"remote call: \w+", f.read()))
    except FileNotFoundError:
        return 0


def log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


class Runner:
    """Runs the workloads of one system at one RTT, each on the mount it says."""

    def __init__(self, system: System, proxy: DelayProxy, work: Path, args: argparse.Namespace,
                 tar: Path, repo: Path, src: Path, file_list: list[str]) -> None:
        self.s = system
        self.proxy = proxy
        self.work = work
        self.args = args
        self.tar = tar
        self.repo = repo
        self.src = src
        self.file_list = file_list
        self.run = SystemRun()
        self.mnt = work / f"mnt-{system.name}"

    @contextlib.contextmanager
    def mount(self) -> Iterator[Path]:
        """A fresh mount (cold caches); yields this RTT's folder in it."""
        before = self.proxy.stats().connections
        with mounted(self.s.mount_cmd(self.mnt), self.mnt, self.s.log):
            yield self.mnt / self.s.root
        self.run.proxy_connections += self.proxy.stats().connections - before

    def timed(self, key: str, cmd: list[str], *, cwd: Path | None = None,
              stdin: Path | None = None) -> Bounded:
        start = log_size(self.s.log)
        res = run_bounded(cmd, self.args.timeout, cwd=cwd, stdin=stdin, capture=key == "random",
                          env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"})
        self.run.measures[key] = res.measure
        if self.s.name == "fsmount":
            self.run.calls[key] = count_calls(self.s.log, start)
        shown = (f"{res.measure.seconds:.2f} s" if isinstance(res.measure, Timed)
                 else res.measure.reason)
        print(f"    {self.s.name:8} {key:14} {shown}", file=sys.stderr, flush=True)
        return res

    def write_phase(self) -> None:
        with self.mount() as root:
            (root / "t").mkdir(parents=True, exist_ok=True)
            self.timed("tar", ["tar", "xf", str(self.tar), "-C", str(root / "t")])
            self.timed("clone", [*GIT, "clone", "-q", str(self.repo), str(root / "g")])
            self.timed("write", ["dd", f"if={self.src}", f"of={root / 'big.bin'}", "bs=1M",
                                 "status=none"])

    def read_phase(self) -> None:
        with self.mount() as root:
            self.timed("ls_cold", ["ls", "-lR", str(root / "t")])
            self.timed("ls_warm", ["ls", "-lR", str(root / "t")])
        if self.s.writes:
            with self.mount() as root:
                self.timed("status", [*GIT, "status", "--short"], cwd=root / "g")
        with self.mount() as root:
            self.timed("find_cold", ["find", str(root / "t")])
            self.timed("find_warm", ["find", str(root / "t")])
        with self.mount() as root:
            lst = self.work / f"list-{self.s.name}"
            lst.write_bytes(b"".join(os.fsencode(str(root / "t" / n)) + b"\0"
                                     for n in self.file_list))
            self.timed("cat_cold", ["xargs", "-0", "cat"], stdin=lst)
        with self.mount() as root:
            self.timed("read", ["dd", f"if={root / 'big.bin'}", "of=/dev/null", "bs=1M",
                                "status=none"])
        with self.mount() as root:
            res = self.timed("random", [sys.executable, "-c", RANDOM_READ_CODE,
                                        str(root / "big.bin"), str(self.args.size),
                                        str(RANDOM_READS)])
            if isinstance(res.measure, Timed):
                lat = sorted(json.loads(res.stdout))
                self.run.measures["rand_median"] = Timed(statistics.median(lat))
                self.run.measures["rand_p99"] = Timed(lat[min(len(lat) - 1, int(len(lat) * 0.99))])
            else:
                self.run.measures["rand_median"] = self.run.measures["rand_p99"] = res.measure

    def remove_phase(self) -> None:
        with self.mount() as root:
            self.timed("rm", ["rm", "-rf", str(root / "t")])
            # Not timed: the rest of this RTT's files, so that the next RTT starts clean.
            run_bounded(["rm", "-rf", str(root)], self.args.timeout)


def workloads(args: argparse.Namespace) -> list[Workload]:
    n, size = args.files, args.size
    return [
        Workload("tar", f"tar x, {n} files of 4 KiB", "s", files=n),
        Workload("ls_cold", "ls -lR, cold", "s", files=n),
        Workload("ls_warm", "ls -lR, warm", "s", files=n),
        Workload("find_cold", "find, cold", "s", files=n),
        Workload("find_warm", "find, warm", "s", files=n),
        Workload("cat_cold", "cat every file, cold", "s", files=n),
        Workload("rm", "rm -rf, cold", "s", files=n),
        Workload("clone", f"git clone ({REPO_FILES} files, {REPO_COMMITS} commits)", "s"),
        Workload("status", "git status, cold", "s"),
        Workload("write", f"sequential write {size / MIB:.0f} MiB", "MB/s", nbytes=size),
        Workload("read", f"sequential read {size / MIB:.0f} MiB, cold", "MB/s", nbytes=size),
        Workload("rand_median", f"random 4 KiB read, median of {RANDOM_READS}", "ms"),
        Workload("rand_p99", "random 4 KiB read, p99", "ms"),
    ]


# --- the report ----------------------------------------------------------------------------


def show(w: Workload, m: Measure | None) -> str:
    if m is None:
        return "-"
    if isinstance(m, Failed):
        return "timeout" if m.reason == "timeout" else "failed"
    if w.unit == "MB/s":
        return f"{w.nbytes / m.seconds / 1e6:.1f} MB/s"
    if w.unit == "ms":
        return f"{m.seconds * 1e3:.{2 if m.seconds < 1e-3 else 1}f} ms"
    return f"{m.seconds:.2f} s"


def ratio(a: Measure | None, b: Measure | None) -> str:
    """Time of ``a`` over time of ``b``."""
    if isinstance(a, Timed) and isinstance(b, Timed) and b.seconds > 0:
        return f"{a.seconds / b.seconds:.2f}"
    return "-"


def report(rtt: str, runs: dict[str, SystemRun], rows: list[Workload], window: int) -> str:
    f, s, r = (runs.get(k, SystemRun()) for k in ("fsmount", "sshfs", "rclone"))
    head = ("direct, no proxy" if rtt == "direct"
            else f"RTT {rtt} ms (window {window / MIB:g} MiB per connection and direction)")
    out = [f"\n### {head}\n",
           "| workload | fsmount | sshfs | rclone | sshfs/fsmount time | fsmount/rclone "
           "throughput | fsmount remote calls |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for w in rows:
        fm, sm, rm = (x.measures.get(w.key) for x in (f, s, r))
        calls = f.calls.get("random" if w.key == "rand_median" else w.key)  # 200 reads
        c = "-" if calls is None else (f"{calls} ({calls / w.files:.1f}/file)" if w.files
                                       else str(calls))
        out.append(f"| {w.label} | {show(w, fm)} | {show(w, sm)} | {show(w, rm)} | "
                   f"{ratio(sm, fm)} | {ratio(rm, fm)} | {c} |")
    notes = [f"{name} {w.key}: {m.reason}" for name, x in runs.items()
             for w in rows if isinstance(m := x.measures.get(w.key), Failed)]
    conns = ", ".join(f"{name} {x.proxy_connections}" for name, x in runs.items())
    out.append(f"\nTCP connections through the proxy (all mounts of this RTT): {conns}.")
    out += [f"- {n}" for n in notes]
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtt", default="0,20,100",
                    help="round-trip times in ms (default 0,20,100); 'direct' bypasses the proxy")
    ap.add_argument("--window", type=parse_size, default=4 * MIB,
                    help="bytes in flight per connection and direction (default 4M)")
    ap.add_argument("--files", type=int, default=100, help="small files for tar x (default 100)")
    ap.add_argument("--size", type=parse_size, default=128 * MIB,
                    help="sequential read/write size (default 128M)")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="seconds per workload before it is killed (default 900)")
    ap.add_argument("--systems", default="fsmount,sshfs,rclone",
                    help="which to run (default fsmount,sshfs,rclone)")
    ap.add_argument("--sshfs-max-conns", type=int, default=1,
                    help="sshfs -o max_conns (default 1, sshfs's own default)")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: temporary)")
    args = ap.parse_args()
    # None: "direct", straight to the servers (what the proxy itself costs at 0 ms).
    rtts = [None if x.strip() == "direct" else float(x) for x in args.rtt.split(",") if x.strip()]
    systems = {x.strip() for x in args.systems.split(",")}
    if "sshfs" in systems and (missing := missing_tools()):
        print(f"bench_latency needs the Debian packages: {' '.join(missing)}\n"
              f"  apt-get install {' '.join(missing)}   (or leave sshfs out: --systems fsmount,rclone)",
              file=sys.stderr)
        return 2
    if args.size % 4096 or args.size < 4096:
        ap.error("--size must be a multiple of 4 KiB")
    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C (the finally blocks below)

    signal.signal(signal.SIGTERM, terminated)
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_latency."))
    work.mkdir(parents=True, exist_ok=True)
    rows = workloads(args)
    all_runs: dict[str, dict[str, SystemRun]] = {}
    reports: list[str] = []
    print(f"work dir {work}", file=sys.stderr)
    ok = False
    try:
        tar, repo, src = work / "small.tar", work / "repo", work / "big.src"
        make_small_tar(tar, args.files)
        with tarfile.open(tar) as tf:
            file_list = [m.name for m in tf.getmembers() if m.isfile()]
        make_repo(repo)
        make_file(src, args.size)
        with contextlib.ExitStack() as stack:
            fs_port, token, tokfile = stack.enter_context(fsmount_server(work))
            ssh_port, ident = (stack.enter_context(private_sshd(work)) if "sshfs" in systems
                               else (0, work))
            ssh_root = work / "sshroot"
            ssh_root.mkdir(exist_ok=True)
            for rtt in rtts:
                label = "direct" if rtt is None else f"{rtt:g}"
                print(f"RTT {label} ms", file=sys.stderr, flush=True)
                runs = all_runs[label] = {}
                with DelayProxy(("127.0.0.1", fs_port), (rtt or 0) / 1000, args.window) as fsp, \
                        DelayProxy(("127.0.0.1", ssh_port or fs_port), (rtt or 0) / 1000,
                                   args.window) as sshp:
                    url = f"http://127.0.0.1:{fs_port if rtt is None else fsp.port}"
                    ssh_to = ssh_port if rtt is None else sshp.port
                    folder = f"rtt{label}"
                    fsm = System("fsmount", lambda m, u=url: fsmount_mount_cmd(
                        u, tokfile, m, "--log-level", "DEBUG", "--cache-dir", str(work / "cache")),
                        folder, work / f"fsmount-{label}.log")
                    ssh = System("sshfs", lambda m, p=ssh_to: [
                        "sshfs", "-f", f"root@127.0.0.1:{ssh_root}", str(m), "-p", str(p),
                        "-o", f"IdentityFile={ident},StrictHostKeyChecking=no,"
                              f"UserKnownHostsFile=/dev/null,LogLevel=ERROR,"
                              f"max_conns={args.sshfs_max_conns}"],
                        folder, work / f"sshfs-{label}.log")
                    rcl = System("rclone", lambda m, u=url: rclone_mount_cmd(u, token, m),
                                 folder, work / f"rclone-{label}.log", writes=False)
                    order: list[tuple[System, DelayProxy]] = []
                    if "fsmount" in systems:
                        order.append((fsm, fsp))
                    if "sshfs" in systems:
                        order.append((ssh, sshp))
                    runners = {s.name: Runner(s, p, work, args, tar, repo, src, file_list)
                               for s, p in order}
                    for name, runner in runners.items():
                        phases = [runner.write_phase, runner.read_phase]
                        if name == "fsmount" and "rclone" in systems:
                            # rclone reads what fsmount wrote, before fsmount removes it.
                            rr = Runner(rcl, fsp, work, args, tar, repo, src, file_list)
                            phases.append(rr.read_phase)
                            runs["rclone"] = rr.run
                        phases.append(runner.remove_phase)
                        runs[name] = runner.run
                        for phase in phases:
                            try:
                                phase()
                            except (RuntimeError, OSError) as exc:  # a mount that failed
                                print(f"    {name}: {phase.__name__} failed: {exc}",
                                      file=sys.stderr, flush=True)
                reports.append(report(label, runs, rows, args.window))
                print(reports[-1], file=sys.stderr, flush=True)  # all again at the end
        ok = True
    finally:
        if ok and not args.dir:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.dir:
            print(f"kept {work} for its logs", file=sys.stderr)
    print(f"\n## bench_latency: --rtt {args.rtt} --window {args.window} --files {args.files} "
          f"--size {args.size} (sshfs -o max_conns={args.sshfs_max_conns})")
    print("\n".join(reports))
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()},
            "rtt": {rtt: {name: {"measures": {k: m._asdict() for k, m in r.measures.items()},
                                 "calls": r.calls, "connections": r.proxy_connections}
                          for name, r in runs.items()} for rtt, runs in all_runs.items()},
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
