#!/usr/bin/env python3
"""Benchmark: ``fsmount mount --write-back`` side by side with the default mode and a local
directory, over the embedded store and over ``fsmount serve`` (loopback).

Workloads, each into a fresh store and mount (wall time of the command, i.e. until its last
close returned):

* ``tar x`` of ``--files`` files of 4 KiB (default 2,000);
* ``git clone`` (``file://``, so through git's pack protocol, not hard links) of a small
  local repository made beforehand (``--repo-files`` files, a few commits);
* ``dd bs=1M`` of ``--size`` (default 1 GiB) of incompressible bytes read from the page
  cache;

and for ``--write-back`` also the time from the end of the workload until ``fsmount sync``
returns (everything in the store).  Contents are checked afterwards, untimed.

Latency hook: ``--proxy-cmd`` starts a command in front of the server (the mount then talks
to it), e.g. the userspace delay proxy of another branch::

    --proxy-cmd "python3 scripts/delay_proxy.py --listen 127.0.0.1:{port} --target {target} --rtt-ms 100"

``{port}`` is a free loopback port the script picks, ``{target}`` the server's
``HOST:PORT`` and ``{url}`` its URL; without it the runs are at loopback RTT.
``--workloads`` picks some of ``tar,git,dd``; ``--modes`` some of ``default``,
``write-back`` and ``write-back-paused`` (``fsmount pause`` during the workload, so that
``resume`` + ``sync`` afterwards time the whole drain: the uploads' own speed).  At the end a Markdown table gives each time
and its ratio to the local directory.

    python3 scripts/bench_writeback.py --files 300 --size 128M   # a quick run
    python3 scripts/bench_writeback.py                           # the docs/performance.md figures
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fsmount import mount as mount_mod

MIB = 1 << 20
DEADLINE = 120.0


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def fsmount(*args: str) -> list[str]:
    return [sys.executable, "-m", "fsmount", *args]


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run(cmd, capture_output=True, timeout=3600, check=False, **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr.decode(errors='replace')}")
    return res  # type: ignore[no-any-return]


def timed(cmd: list[str], **kw: object) -> float:
    t0 = time.perf_counter()
    run(cmd, **kw)
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=DEADLINE)


@contextlib.contextmanager
def remote_args(backend: str, store: Path, proxy_cmd: str | None) -> Iterator[list[str]]:
    """The mount's remote options for ``backend``: the store, or a server (behind the
    proxy command if given) on that store, stopped afterwards."""
    run(fsmount("init", "--store", str(store)))
    if backend == "embedded":
        yield ["--store", str(store)]
        return
    token = run(fsmount("token", "add", "--store", str(store), "default")).stdout.decode().strip()
    tokfile = store.parent / f"{store.name}.token"
    tokfile.write_text(token + "\n")
    port = free_port()
    log = open(store.parent / f"{store.name}.serve.log", "wb")  # noqa: SIM115
    procs = [subprocess.Popen(fsmount("serve", "--store", str(store), "--listen",
                                      f"127.0.0.1:{port}"), stdout=log, stderr=log)]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: b"serving" in (store.parent / f"{store.name}.serve.log").read_bytes(),
                 "fsmount serve")
        if proxy_cmd:
            pport = free_port()
            cmd = proxy_cmd.format(port=pport, url=url, target=f"127.0.0.1:{port}")
            procs.append(subprocess.Popen(shlex.split(cmd),
                                          stdout=log, stderr=log))
            url = f"http://127.0.0.1:{pport}"
            time.sleep(1.0)  # a benchmark, not a test: give the proxy a moment
        yield ["--server", url, "--token-file", str(tokfile)]
    finally:
        for p in reversed(procs):
            stop(p)
        log.close()


@contextlib.contextmanager
def mounted(work: Path, name: str, backend: str, write_back: bool,
            proxy_cmd: str | None) -> Iterator[Path]:
    store, mnt, cache = work / f"{name}.store", work / f"{name}.mnt", work / f"{name}.cache"
    mnt.mkdir()
    with remote_args(backend, store, proxy_cmd) as remote:
        log = open(work / f"{name}.log", "wb")  # noqa: SIM115
        extra = ["--write-back"] if write_back else []
        proc = subprocess.Popen(fsmount("mount", "-f", *remote, "--cache-dir", str(cache),
                                        *extra, str(mnt)),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_for(lambda: mount_mod.is_mounted(str(mnt)) or proc.poll() is not None,
                     "the mount")
            if proc.poll() is not None:
                raise SystemExit(f"mount failed: {(work / f'{name}.log').read_text()}")
            yield mnt
        finally:
            if mount_mod.is_mounted(str(mnt)):
                subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
            try:
                proc.wait(timeout=3600)  # write-back: the unmount drains first
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if mount_mod.is_mounted(str(mnt)):
                subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True,
                               check=False)
            log.close()


def make_inputs(work: Path, files: int, size: int, repo_files: int) -> tuple[Path, Path, Path]:
    src = work / "src"
    (src / "t").mkdir(parents=True)
    for i in range(files):
        (src / "t" / f"d{i // 100}").mkdir(exist_ok=True)
        (src / "t" / f"d{i // 100}" / f"f{i}").write_bytes(os.urandom(4096))
    tar = work / "small.tar"
    with tarfile.open(tar, "w") as t:
        t.add(src / "t", arcname="t")
    big = work / "big.bin"
    with open(big, "wb") as f:
        for _ in range(size // (8 * MIB)):
            f.write(os.urandom(8 * MIB))
        f.write(os.urandom(size % (8 * MIB)))
    repo = work / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@localhost",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@localhost"}
    run(["git", "init", "-q", str(repo)])
    for c in range(3):
        for i in range(repo_files):
            (repo / f"src{i % 10}").mkdir(exist_ok=True)
            (repo / f"src{i % 10}" / f"m{i}.txt").write_text(f"{c} {i} " * (50 + i % 200))
        run(["git", "-C", str(repo), "add", "-A"], env=env)
        run(["git", "-C", str(repo), "commit", "-q", "-m", f"c{c}"], env=env)
    shutil.rmtree(src)
    return tar, big, repo


def workloads(tar: Path, big: Path, repo: Path, which: list[str]) -> dict[str, list[str]]:
    every = {
        "tar": ("tar x", ["tar", "xf", str(tar), "-C", "{dst}"]),
        "git": ("git clone",
                ["git", "clone", "-q", "--no-local", f"file://{repo}", "{dst}/clone"]),
        "dd": ("dd", ["dd", f"if={big}", "of={dst}/big.bin", "bs=1M", "status=none"]),
    }
    return dict(every[w] for w in which)


def table(rows: list[tuple[str, str, str, float, float | None]]) -> str:
    """The figures as a Markdown table: each time and its ratio to the local directory."""
    cols = [(b, m) for _, b, m, _, _ in rows if b != "local directory"]
    cols = list(dict.fromkeys(cols))
    head = "| workload | local dir | " + " | ".join(f"{b} {m}" for b, m in cols) + " |"
    out = [head, "| --- " * (2 + len(cols)) + "|"]
    for name in dict.fromkeys(r[0] for r in rows):
        local = next(r[3] for r in rows if r[0] == name and r[1] == "local directory")
        cells = []
        for b, m in cols:
            hit = [r for r in rows if r[0] == name and (r[1], r[2]) == (b, m)]
            if not hit:
                cells.append("-")
                continue
            _, _, _, t, drain = hit[0]
            cell = f"{t:.2f} s ({t / local:.1f}×)"
            if drain is not None:
                cell += f" + sync {drain:.2f} s"
            cells.append(cell)
        out.append(f"| {name} | {local:.2f} s | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000, help="4 KiB files to untar")
    ap.add_argument("--size", type=parse_size, default=1 << 30, help="dd size (default 1G)")
    ap.add_argument("--repo-files", type=int, default=300, help="files of the git repository")
    ap.add_argument("--backends", default="embedded,server")
    ap.add_argument("--proxy-cmd", default=None,
                    help="command started in front of the server ({port}, {url})")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--workloads", default="tar,git,dd", help="some of tar,git,dd")
    ap.add_argument("--modes", default="default,write-back",
                    help="some of default,write-back,write-back-paused (uploads paused "
                    "during the workload: the sync after it is the whole drain)")
    args = ap.parse_args()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-wb-"))
    tar, big, repo = make_inputs(base, args.files, args.size, args.repo_files)
    with open(big, "rb") as f:  # into the page cache
        while f.read(8 * MIB):
            pass
    rows: list[tuple[str, str, str, float, float | None]] = []
    n = 0
    modes = args.modes.split(",")
    for name, cmd in workloads(tar, big, repo, args.workloads.split(",")).items():
        local = base / f"local{n}"
        local.mkdir()
        t = timed([c.replace("{dst}", str(local)) for c in cmd])
        run(["sync"])
        shutil.rmtree(local)
        rows.append((name, "local directory", "-", t, None))
        print(f"{name:10} local directory           {t:8.2f} s", flush=True)
        for backend in args.backends.split(","):
            for mode in modes:
                wb = mode.startswith("write-back")
                paused = mode == "write-back-paused"
                n += 1
                with mounted(base, f"m{n}", backend, wb, args.proxy_cmd) as mnt:
                    if paused:
                        run(fsmount("pause", str(mnt)))
                    t = timed([c.replace("{dst}", str(mnt)) for c in cmd])
                    drain = None
                    if paused:
                        t0 = time.perf_counter()
                        run(fsmount("resume", str(mnt)))
                        run(fsmount("sync", str(mnt)))
                        drain = time.perf_counter() - t0
                    elif wb:
                        drain = timed(fsmount("sync", str(mnt)))
                    if name == "dd":
                        run(["cmp", str(big), str(mnt / "big.bin")])
                    elif name == "git clone":
                        run(["git", "-C", str(mnt / "clone"), "fsck", "--no-progress"])
                extra = f"  sync after: {drain:6.2f} s" if drain is not None else ""
                print(f"{name:10} {backend:9} {mode:10}      {t:8.2f} s{extra}", flush=True)
                rows.append((name, backend, mode, t, drain))
    print(table(rows), flush=True)
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
