#!/usr/bin/env python3
"""Read benchmark of the mounted filesystem, side by side in one run.

On one file (1 GiB by default) it measures:

* ``fsmount get`` of the file (to stdout, discarded): the same verified chunk fetches as
  the mount, without the kernel;
* a cold sequential read through the mount (a fresh mount with the default cache, so its
  chunk cache is empty), and the mount's peak RSS after it;
* a warm sequential re-read through the mount (a mount whose ``--cache-size`` holds the
  file: after a first pass that fills it, also reported, the kernel's page cache for the
  file is dropped with ``posix_fadvise(DONTNEED)`` and the file read again).  The first
  pass is not the cold figure: it faults in a whole file's worth of fresh memory, which on
  this VM costs more than the read (docs/performance.md, sixth session);
* random 4 KiB preads (``POSIX_FADV_RANDOM``, so the kernel adds no read-ahead): latency
  median and p99, on a cold mount and again warm;
* the same sequential read through ``scripts/memfs.py``, a minimal in-memory pyfuse3
  filesystem serving the same bytes: the ceiling of a Python FUSE filesystem here.

Sequential reads use 1 MiB ``readv`` calls.  Each throughput figure is the best of
``--repeat`` runs (the machine is shared and noisy).  Targets: cold >= 0.8 x get,
warm >= 0.8 x memfs.

Usage: ``python scripts/bench_read.py [--size 1G] [--workdir DIR] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
DEADLINE = 60.0


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b").rstrip("i")
    return int(float(t[:-1]) * units[t[-1]]) if t[-1] in units else int(t)


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == str(path) for line in f)


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


class Mount:
    """A foreground mount process (fsmount or memfs), always unmounted on exit."""

    def __init__(self, argv: list[str], mnt: Path, log: Path) -> None:
        self.mnt = mnt
        mnt.mkdir(parents=True, exist_ok=True)
        self.logf = open(log, "ab")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=self.logf,
                                     stdin=subprocess.DEVNULL)

    def __enter__(self) -> Mount:
        wait_until(lambda: is_mounted(self.mnt) or self.proc.poll() is not None, "mount")
        if self.proc.poll() is not None:
            raise SystemExit(f"mount failed: {self.proc.returncode}")
        os.stat(self.mnt)
        return self

    def __exit__(self, *exc: object) -> None:
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False)
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], check=False)
        self.logf.close()


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def seq_read(path: Path, expect: int) -> float:
    """MB/s of reading the whole file with 1 MiB readv calls."""
    buf = bytearray(MIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.perf_counter()
        n = 0
        while True:
            k = os.readv(fd, [buf])
            if not k:
                break
            n += k
        dt = time.perf_counter() - t
    finally:
        os.close(fd)
    if n != expect:
        raise SystemExit(f"read {n} bytes of {path}, expected {expect}")
    return n / dt / 1e6


def random_reads(path: Path, offsets: list[int]) -> tuple[float, float]:
    """Median and p99 latency (ms) of 4 KiB preads at ``offsets``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        lat = []
        for off in offsets:
            t = time.perf_counter()
            os.pread(fd, 4096, off)
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
    lat.sort()
    return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def peak_rss(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process, in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def make_folder(store: Path, n: int) -> None:
    """A folder ``/many`` of ``n`` one-byte files, written through the store API."""
    import io

    import trio

    from fsmount.embedded import EmbeddedRemote
    from fsmount.remote import ROOT_ID
    from fsmount.upload import upload_file

    async def run() -> None:
        remote = EmbeddedRemote.open(store)
        try:
            docs = await upload_file(remote, io.BytesIO(b"x"), "x")
            folder = await remote.mkdir(ROOT_ID, "many")
            for i in range(n):
                await remote.create_file(folder.id, f"f{i:05d}", tuple(d.location for d in docs))
        finally:
            await remote.aclose()

    trio.run(run)


def ls_l(path: Path, n: int) -> float:
    """Seconds of ``ls -l`` of a folder (checks it lists ``n`` entries)."""
    t = time.perf_counter()
    out = subprocess.run(["ls", "-l", str(path)], capture_output=True, check=True).stdout
    dt = time.perf_counter() - t
    lines = out.count(b"\n")
    if lines != n + 1:
        raise SystemExit(f"ls -l {path} listed {lines - 1} entries, expected {n}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=1 << 30)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--random-reads", type=int, default=1000)
    ap.add_argument("--read-ahead", default=None, help="--read-ahead for the mount")
    ap.add_argument("--listing", type=int, default=10_000,
                    help="files in the folder listed with ls -l (0: skip)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="fsmount-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    store, src = work / "store", work / "source.bin"
    fs = [sys.executable, "-m", "fsmount"]
    results: dict[str, float] = {"size_mib": args.size / MIB}
    try:
        print(f"workdir {work}; generating {args.size / MIB:.0f} MiB", file=sys.stderr)
        with open(src, "wb") as f:
            left = args.size
            while left:
                n = min(left, 16 * MIB)
                f.write(os.urandom(n))
                left -= n
        subprocess.run([*fs, "init", "--store", str(store)], check=True)
        t = time.perf_counter()
        subprocess.run([*fs, "put", "--store", str(store), str(src), "/big.bin"], check=True)
        results["put_mb_s"] = args.size / (time.perf_counter() - t) / 1e6

        def get_once() -> float:
            t = time.perf_counter()
            subprocess.run([*fs, "get", "--store", str(store), "/big.bin", "-"], check=True,
                           stdout=subprocess.DEVNULL)
            return args.size / (time.perf_counter() - t) / 1e6

        default_argv = [*fs, "mount", "-f", "--store", str(store)]
        if args.read_ahead:
            default_argv += ["--read-ahead", args.read_ahead]
        mount_argv = [*default_argv, "--cache-size", str(args.size + 64 * MIB)]
        mnt = work / "mnt"
        target = mnt / "big.bin"
        gets, colds, fills, warms, mems, peaks = [], [], [], [], [], []
        for _ in range(args.repeat):
            gets.append(get_once())
            with Mount([*default_argv, str(mnt)], mnt, work / "mount.log") as m:
                colds.append(seq_read(target, args.size))
                peaks.append(peak_rss(m.proc.pid))
            with Mount([*mount_argv, str(mnt)], mnt, work / "mount.log"):
                fills.append(seq_read(target, args.size))
                for _ in range(2):
                    drop_page_cache(target)
                    warms.append(seq_read(target, args.size))
        rnd = random.Random(42)
        offsets = [rnd.randrange(0, args.size // 4096) * 4096 for _ in range(args.random_reads)]
        with Mount([*mount_argv, str(mnt)], mnt, work / "mount.log"):
            results["random_cold_median_ms"], results["random_cold_p99_ms"] = \
                random_reads(target, offsets)
            drop_page_cache(target)
            results["random_warm_median_ms"], results["random_warm_p99_ms"] = \
                random_reads(target, offsets)
        results["peak_rss_mib_default_cache"] = max(peaks) / MIB
        if args.listing:
            make_folder(store, args.listing)
            local = work / "local-many"
            local.mkdir()
            for i in range(args.listing):
                (local / f"f{i:05d}").write_bytes(b"x")
            with Mount([*mount_argv, str(mnt)], mnt, work / "mount.log"):
                results["ls_cold_s"] = ls_l(mnt / "many", args.listing)
                results["ls_warm_s"] = ls_l(mnt / "many", args.listing)
            results["ls_local_s"] = ls_l(local, args.listing)
        memmnt = work / "memmnt"
        with Mount([sys.executable, str(HERE / "memfs.py"), str(src), str(memmnt)], memmnt,
                   work / "memfs.log"):
            wait_until(lambda: (work / "memfs.log").read_text().find("ready") >= 0, "memfs")
            for _ in range(args.repeat + 1):
                drop_page_cache(memmnt / "data")
                mems.append(seq_read(memmnt / "data", args.size))
        results.update(get_mb_s=max(gets), cold_mb_s=max(colds), fill_mb_s=max(fills),
                       warm_mb_s=max(warms), memfs_mb_s=max(mems))
        results["cold_over_get"] = results["cold_mb_s"] / results["get_mb_s"]
        results["warm_over_memfs"] = results["warm_mb_s"] / results["memfs_mb_s"]
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    r = results
    print(f"""
| measurement ({r['size_mib']:.0f} MiB file) | result |
| --- | --- |
| `fsmount put` | {r['put_mb_s']:.0f} MB/s |
| `fsmount get` | {r['get_mb_s']:.0f} MB/s |
| cold sequential read through the mount | {r['cold_mb_s']:.0f} MB/s ({r['cold_over_get']:.2f} x get, target 0.8) |
| first read into a cache that holds the file | {r['fill_mb_s']:.0f} MB/s |
| warm sequential re-read through the mount | {r['warm_mb_s']:.0f} MB/s ({r['warm_over_memfs']:.2f} x memfs, target 0.8) |
| in-memory pyfuse3 ceiling (scripts/memfs.py) | {r['memfs_mb_s']:.0f} MB/s |
| random 4 KiB reads, cold: median / p99 | {r['random_cold_median_ms']:.2f} / {r['random_cold_p99_ms']:.2f} ms |
| random 4 KiB reads, warm: median / p99 | {r['random_warm_median_ms']:.3f} / {r['random_warm_p99_ms']:.3f} ms |
| peak RSS of the mount, default 256 MiB cache, one cold pass | {r['peak_rss_mib_default_cache']:.0f} MiB |
""")
    if "ls_cold_s" in r:
        print(f"""| `ls -l` of {args.listing} files | result |
| --- | --- |
| through a fresh mount | {r['ls_cold_s'] * 1000:.0f} ms |
| again (kernel and node caches warm) | {r['ls_warm_s'] * 1000:.0f} ms |
| local directory (same files) | {r['ls_local_s'] * 1000:.0f} ms |
""")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
