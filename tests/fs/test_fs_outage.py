"""A server restart (SIGKILL, then a new ``fsmount serve`` on the same port and store) in the
middle of a ``cp`` into the mount and of a read through it: both wait out the outage in the
transport's retries and complete byte for byte.

The server is killed while the transfer is under way, and started again only once the
mount's log shows that a call failed and is being retried (so the transfer really met the
outage, with no sleep to time it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fs_mounting import DEADLINE, MountProc, populate, wait_until
from server.harness import start_serve

from fsmount import mount as mount_mod

#: Size of the file copied and read (200 MB, as the issue asks; well under 30 s here).
SIZE = 200 * 1000 * 1000


@pytest.fixture(scope="module", params=["server"])
def fs_backend(request: pytest.FixtureRequest) -> str:
    """Only the server can restart: this module overrides the per-backend fixture."""
    return str(request.param)


class Restartable:
    """``fsmount serve`` on a fixed loopback port, which the test kills and starts again."""

    def __init__(self, store: Path) -> None:
        self.store = store
        subprocess.run([sys.executable, "-m", "fsmount", "init", "--store", str(store)],
                       capture_output=True, check=True, timeout=60)
        token = subprocess.run([sys.executable, "-m", "fsmount", "token", "add", "--store",
                                str(store), "default"], capture_output=True, text=True,
                               check=True, timeout=60).stdout.strip()
        self.token_file = store.parent / "token"
        self.token_file.write_text(token + "\n")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc, _ = start_serve(self.store, self.port)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=DEADLINE)


@contextlib.contextmanager
def server_and_mount(tmp_path: Path, files: dict[str, bytes] | None = None, *options: str
                     ) -> Iterator[tuple[Restartable, MountProc]]:
    store = tmp_path / "store"
    srv = Restartable(store)
    if files:
        populate(store, files)
    srv.start()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "mount.log"
    try:
        with open(log, "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fsmount", "--log-level", "INFO", "mount", "-f",
                 "--server", srv.url, "--token-file", str(srv.token_file),
                 "--retry-time", "60", *options, str(mnt)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        mp = MountProc(mnt, store, proc, log)
        try:
            wait_until(lambda: mount_mod.is_mounted(str(mnt)) or proc.poll() is not None,
                       "the mount")
            assert proc.poll() is None, mp.log_text()
            yield srv, mp
        finally:
            mp.unmount()
    finally:
        srv.stop()


def _retrying(mp: MountProc) -> bool:
    return "retrying for up to" in mp.log_text()


def _restart_once_retrying(srv: Restartable, mp: MountProc) -> None:
    srv.kill()
    wait_until(lambda: _retrying(mp), "the mount to retry a failed call")
    srv.start()


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_cp_into_the_mount_survives_a_server_restart(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    with open(src, "wb") as f:
        for _ in range(SIZE // 10**6):
            f.write(os.urandom(10**6))
    with server_and_mount(tmp_path) as (srv, mp):
        dst = mp.mnt / "copy.bin"
        cp = subprocess.Popen(["cp", str(src), str(dst)], stderr=subprocess.PIPE)
        try:
            wait_until(lambda: dst.exists() and dst.stat().st_size >= SIZE // 4
                       or cp.poll() is not None, "a quarter of the copy")
            assert cp.poll() is None, "the copy ended before the restart"
            _restart_once_retrying(srv, mp)
            _, err = cp.communicate(timeout=DEADLINE * 2)
        finally:
            if cp.poll() is None:
                cp.kill()
                cp.wait(timeout=DEADLINE)
        assert cp.returncode == 0, err
        assert dst.stat().st_size == SIZE
        assert _sha(dst) == _sha(src)


def test_a_read_through_the_mount_waits_out_a_server_restart(tmp_path: Path) -> None:
    data = os.urandom(SIZE // 2)
    # A small read-ahead, so that most of the file is still to fetch when the server dies.
    with server_and_mount(tmp_path, {"big.bin": data}, "--read-ahead", "4M",
                          "--read-ahead-max", "8M") as (srv, mp):
        h = hashlib.sha256()
        result: list[BaseException | None] = []
        with open(mp.mnt / "big.bin", "rb", buffering=0) as f:
            # The first eighth before the outage; the rest while the server is down.
            h.update(f.read(len(data) // 8))
            srv.kill()

            def rest() -> None:
                try:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                    result.append(None)
                except BaseException as exc:  # reported to the test below
                    result.append(exc)

            reader = threading.Thread(target=rest)
            reader.start()
            wait_until(lambda: _retrying(mp) or bool(result), "the reader to meet the outage")
            srv.start()
            reader.join(timeout=DEADLINE * 2)
            assert not reader.is_alive()
        assert result == [None]
        assert _retrying(mp), "the read never met the outage"
        assert h.hexdigest() == hashlib.sha256(data).hexdigest()
