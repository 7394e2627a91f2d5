#!/usr/bin/env python3
"""Benchmark: reads and writes of one big file through ``fsmount serve`` on loopback.

Starts ``fsmount serve`` (a subprocess, store in a temporary directory), then, side by side
in one run (the machine is shared and noisy: only ratios within one run mean much):

writes of the same ``--size`` bytes (default 1 GiB):
  * ``curl``: the REST resumable session (create, 4 MiB chunks PUT by one curl process
    with 4 transfers in parallel, complete);
  * ``fsmount put --server``: HttpRemote, 512 KiB parts, several in flight;
  * the mount: ``dd bs=1M`` into ``fsmount mount --server`` (close returns once the store
    holds the file).
reads of that file:
  * ``curl``: ``GET /api/v1/files/{id}/content`` to /dev/null;
  * ``fsmount get --server ... -``: HttpRemote getFile windows, to /dev/null;
  * the mount: ``dd bs=1M`` from a fresh ``fsmount mount --server`` (cold chunk cache);
  * rclone mount: Debian's rclone, its ``http`` remote reading the server's own HTML
    listing (``/browse/``, with the bearer token as an extra header), ``dd bs=1M``.
  The reads run ``--rounds`` times (default 4) and the best figure of each is kept (the
  machine's load changes within a run).  In every round both mounts are started first, then
  ``curl`` and ``get`` read (which goes first alternates), then the two mounts, each
  unmounted right after its read; which mount reads first alternates too.  So each mount
  reads as often right after the other one was unmounted as it reads first, and neither
  mount's start-up lies between the previous read and its own: on this VM the host takes
  back guest memory that lies free for a few seconds, and the kernel's page cache filled
  from such memory costs a reader up to twice the CPU (rclone itself read 550-590 MB/s
  right after our mount's unmount and 310-490 MB/s after a 4-6 s pause; the order used to
  give rclone that slot every round; docs/performance.md).

Optional: ``--httpx`` adds the client comparison that chose the transport: 1 MiB getFile
windows fetched one at a time with HttpRemote (h11 on trio) and with httpx on trio.

The store's files stay in the page cache for all readers alike (no cache dropping: other
programs share this machine).  Prints MB/s per row and the ratios the issue asks for.

    python3 scripts/bench_http.py --size 256M     # a quick run
    python3 scripts/bench_http.py                 # the 1 GiB figures of docs/performance.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from fsmount.cli_common import parse_size

FSMOUNT = [sys.executable, "-m", "fsmount"]
MIB = 1 << 20
CHUNK = 4 * MIB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_file(path: Path, size: int) -> None:
    # Distinct 1 MiB blocks (no accidental dedup inside the file), cheap to generate.
    pool = os.urandom(2 * MIB)
    with open(path, "wb") as f:
        for i in range(0, size, MIB):
            n = min(MIB, size - i)
            k = (i // MIB * 4099) % MIB
            block = (i // MIB).to_bytes(8, "little") + pool[k:k + n - 8]
            f.write(block[:n])


def timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sh(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run(cmd, capture_output=True, timeout=3600, **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({res.returncode}): {res.stderr.decode(errors='replace')[-2000:]}")
    return res


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def in_mount_table(mnt: Path) -> bool:
    """Whether the kernel's mount table lists ``mnt`` (``os.path.ismount`` says no for a
    FUSE mount whose process died: its stat fails with ENOTCONN)."""
    target = os.path.abspath(mnt).encode().replace(b" ", b"\\040")
    with open("/proc/self/mounts", "rb") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 1)


@contextlib.contextmanager
def mounted(cmd: list[str], mnt: Path, log: Path) -> Iterator[None]:
    mnt.mkdir(exist_ok=True)
    with open(log, "ab") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.ismount(mnt) or proc.poll() is not None, f"mount {mnt}")
        if proc.poll() is not None:
            raise RuntimeError(f"mount failed: {log.read_text(errors='replace')[-2000:]}")
        yield
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=60)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=60)
        if in_mount_table(mnt):  # also a dead mount, whose stat fails (ENOTCONN)
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, timeout=60)


def fsmount_mount_cmd(url: str, token_file: Path, mnt: Path, *extra: str) -> list[str]:
    """``fsmount mount`` of the server at ``url``, in the foreground (for :func:`mounted`)."""
    return [*FSMOUNT, "mount", "-f", "--server", url, "--token-file", str(token_file), *extra,
            str(mnt)]


def rclone_mount_cmd(url: str, token: str, mnt: Path) -> list[str]:
    """rclone mount (foreground) of the server's own HTML listing (``/browse/``) through
    rclone's ``http`` remote, the bearer token as an extra header; read-only, no VFS cache
    (rclone's defaults otherwise)."""
    return ["rclone", "mount", ":http:", str(mnt), "--http-url", f"{url}/browse/",
            "--http-headers", f"Authorization,Bearer {token}", "--read-only",
            "--vfs-cache-mode", "off", "--config", "/dev/null"]


def dd_read(path: Path) -> None:
    sh(["dd", f"if={path}", "of=/dev/null", "bs=1M"])


def bench_clients(url: str, token: str, size: int) -> dict[str, float]:
    """1 MiB getFile windows one at a time: HttpRemote (h11) vs httpx, both on trio."""
    import httpx
    import trio

    from fsmount.httpremote import HttpRemote

    async def main() -> dict[str, float]:
        remote = HttpRemote(url, token)
        node = await remote.lookup(1, "put.bin")
        loc = node.segments[0].location
        n = min(size, node.segments[0].size) // MIB
        out: dict[str, float] = {}

        def record(name: str, t: float, c: float) -> None:
            # Best of the rounds for speed; client CPU seconds per GiB (robust to load).
            out[f"{name} MB/s"] = max(out.get(f"{name} MB/s", 0), n * MIB / t / 1e6)
            cpu = c / (n * MIB / (1 << 30))
            out[f"{name} client CPU s/GiB"] = min(out.get(f"{name} client CPU s/GiB", 1e9), cpu)

        for _ in range(2):  # alternate, best of two each
            t, c = time.perf_counter(), time.process_time()
            for i in range(n):
                await remote.get_file(loc, i * MIB, MIB)
            record("HttpRemote (h11/trio)", time.perf_counter() - t, time.process_time() - c)
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as cl:
                t, c = time.perf_counter(), time.process_time()
                for i in range(n):
                    r = await cl.get("/api/v1/proto/getFile", params={
                        "id": loc.id, "access_hash": loc.access_hash, "offset": i * MIB, "limit": MIB})
                    assert len(r.content) == MIB
                record("httpx (trio)", time.perf_counter() - t, time.process_time() - c)
        await remote.aclose()
        return out

    return trio.run(main)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=1 << 30)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--no-rclone", action="store_true")
    ap.add_argument("--no-mount", action="store_true")
    ap.add_argument("--httpx", action="store_true", help="also compare HttpRemote with httpx")
    ap.add_argument("--rounds", type=int, default=4,
                    help="rounds of the reads, best figure kept (default 4: each mount reads "
                         "first in half of them)")
    args = ap.parse_args()
    size = args.size
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_http."))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store"
    src = work / "src.bin"
    print(f"work dir {work}; file {size / MIB:.0f} MiB", file=sys.stderr)
    make_file(src, size)
    sh([*FSMOUNT, "init", "--store", str(store)])
    token = sh([*FSMOUNT, "token", "add", "--store", str(store), "bench"]).stdout.decode().strip()
    tokfile = work / "token"
    tokfile.write_text(token)
    env = {**os.environ, "FSMOUNT_TOKEN": token}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = f"Authorization: Bearer {token}"
    server = subprocess.Popen([*FSMOUNT, "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}"],
                              stderr=subprocess.PIPE, text=True)
    results: dict[str, float] = {}
    clients: dict[str, float] = {}
    notes: list[str] = []
    try:
        line = server.stderr.readline() if server.stderr else ""
        if "serving" not in line:
            raise RuntimeError(f"server did not start: {line}")

        # --- writes ------------------------------------------------------------------------
        chunks = work / "chunks"
        chunks.mkdir(exist_ok=True)
        with open(src, "rb") as f:
            for n in range(0, -(-size // CHUNK)):
                (chunks / f"{n:05d}").write_bytes(f.read(CHUNK))

        def curl_upload() -> None:
            import httpx

            sess = httpx.post(f"{url}/api/v1/uploads", headers={"Authorization": f"Bearer {token}"},
                              json={"file_name": "curl.bin", "file_size": size, "chunk_size": CHUNK}).json()
            cmd = ["curl", "-sSf", "--parallel", "--parallel-max", "4", "-H", auth, "-o", "/dev/null"]
            for n in range(sess["total_chunks"]):
                cmd += ["-T", str(chunks / f"{n:05d}"), f"{url}/api/v1/uploads/{sess['id']}/chunks/{n}"]
            sh(cmd)
            r = httpx.post(f"{url}/api/v1/uploads/{sess['id']}/complete",
                           headers={"Authorization": f"Bearer {token}"}, timeout=600)
            r.raise_for_status()

        results["write: curl resumable session"] = size / timed(curl_upload)
        shutil.rmtree(chunks)
        results["write: fsmount put --server"] = size / timed(
            lambda: sh([*FSMOUNT, "put", "--server", url, str(src), "/put.bin"], env=env))
        def mount_cmd(mnt: Path) -> list[str]:
            return fsmount_mount_cmd(url, tokfile, mnt)

        if not args.no_mount:
            mnt = work / "mnt"
            try:
                with mounted(mount_cmd(mnt), mnt, work / "mount.log"):
                    # dd bs=1M: 1 MiB write requests (cp writes 128 KiB at a time), the
                    # same way scripts/bench_write.py measures the embedded mount.
                    results["write: dd into the mount"] = size / timed(
                        lambda: sh(["dd", f"if={src}", f"of={mnt / 'mnt.bin'}", "bs=1M"]))
            except RuntimeError as exc:
                notes.append(f"mount write failed: {exc}")

        # --- reads -------------------------------------------------------------------------
        import httpx

        meta = httpx.get(f"{url}/api/v1/proto/lookup", params={"parent": 1, "name": "put.bin"},
                         headers={"Authorization": f"Bearer {token}"}).json()
        rest_id = None
        listing = httpx.get(f"{url}/api/v1/folders/root", headers={"Authorization": f"Bearer {token}"}).json()
        for e in listing["entries"]:
            if e["name"] == "put.bin":
                rest_id = e["id"]
        assert rest_id and meta["size"] == size
        def curl_get() -> None:
            sh(["curl", "-sSf", "-H", auth, "-o", "/dev/null", f"{url}/api/v1/files/{rest_id}/content"])

        def fsmount_get() -> None:
            subprocess.run([*FSMOUNT, "get", "--server", url, "/put.bin", "-"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, timeout=3600)

        def rclone_cmd(mnt: Path) -> list[str]:
            return rclone_mount_cmd(url, token, mnt)

        def record(name: str, seconds: float) -> None:
            results[name] = max(results.get(name, 0.0), size / seconds)  # best of the rounds
            print(f"  round {r + 1}: {name:44} {size / seconds / 1e6:6.0f} MB/s",
                  file=sys.stderr, flush=True)

        clients_round: list[tuple[str, Callable[[], None]]] = [
            ("read: curl GET content", curl_get),
            ("read: fsmount get --server", fsmount_get),
        ]
        mounts_round: list[tuple[str, Callable[[Path], list[str]], str]] = []
        if not args.no_mount:
            mounts_round.append(("read: dd from the mount", mount_cmd, "mnt"))
        if not args.no_rclone and shutil.which("rclone"):
            mounts_round.append(("read: dd from rclone mount (http remote)", rclone_cmd, "rclone"))
        r = 0
        for r in range(args.rounds):
            flip = slice(None, None, -1 if r % 2 else 1)
            for name, fn in clients_round[flip]:
                try:
                    record(name, timed(fn))
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    notes.append(str(exc)[:300])
            # Fresh mounts (cold chunk cache, no page cache), all started before the first
            # of them reads; each is unmounted right after its read.
            with contextlib.ExitStack() as stack:
                ready: list[tuple[str, Path, contextlib.ExitStack]] = []
                for name, cmd, sub in mounts_round[flip]:
                    one = stack.enter_context(contextlib.ExitStack())
                    try:
                        one.enter_context(mounted(cmd(work / sub), work / sub, work / f"{sub}.log"))
                        ready.append((name, work / sub, one))
                    except RuntimeError as exc:
                        notes.append(str(exc)[:300])
                for name, mnt, one in ready:
                    with one:
                        try:
                            record(name, timed(lambda m=mnt: dd_read(m / "put.bin")))
                        except RuntimeError as exc:
                            notes.append(str(exc)[:300])
        if args.httpx:
            clients = bench_clients(url, token, min(size, 512 * MIB))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'measurement':48} {'MB/s':>8}")
    for k, v in results.items():
        print(f"{k:48} {v / 1e6:8.0f}")

    def ratio(a: str, b: str) -> None:
        if a in results and b in results:
            print(f"{a} / {b}: {results[a] / results[b]:.2f}")

    print()
    ratio("write: dd into the mount", "write: fsmount put --server")
    ratio("read: dd from the mount", "read: fsmount get --server")
    ratio("read: dd from the mount", "read: dd from rclone mount (http remote)")
    ratio("write: fsmount put --server", "write: curl resumable session")
    ratio("read: fsmount get --server", "read: curl GET content")
    if clients:
        print("\n1 MiB getFile windows, one at a time:")
        for k, v in clients.items():
            print(f"  {k:46} {v:8.2f}")
    for n in notes:
        print("note:", n)
    print(json.dumps({k: round(v / 1e6) for k, v in results.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
