"""``fsmount mount --write-back --server URL`` while the server goes away and comes back:
closes go on into the journal, writes wait (never fail) once ``--write-back-limit`` is
reached, with one "journal full" log line, and everything reaches the store by itself once
the server is back on the same address."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fsmount import mount as mount_mod

from .harness import start_serve, stop_process

DEADLINE = 60.0
MIB = 1 << 20


def _run(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "fsmount", *args], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _wait(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.fuse
def test_outage_fills_the_journal_then_writes_wait_and_resume(tmp_path: Path) -> None:
    store, mnt, cache = tmp_path / "store", tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    _run("init", "--store", str(store))
    token = _run("token", "add", "--store", str(store), "default").strip()
    tokfile = tmp_path / "token"
    tokfile.write_text(token + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, _ = start_serve(store, port)
    log = tmp_path / "mount.log"
    with open(log, "wb") as logf:
        mount = subprocess.Popen(
            [sys.executable, "-m", "fsmount", "mount", "-f", "--log-level", "INFO",
             "--server", f"http://127.0.0.1:{port}", "--token-file", str(tokfile),
             # A short retry window, so that a call the outage catches fails over to the
             # journal's last known attributes within the test (the default is minutes).
             "--retry-time", "3",
             "--write-back", "--write-back-limit", "2M", "--cache-dir", str(cache), str(mnt)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    data = [os.urandom(MIB + i) for i in range(3)]
    files = []
    try:
        _wait(lambda: mount_mod.is_mounted(str(mnt)) or mount.poll() is not None, "the mount")
        assert mount.poll() is None, log.read_text()
        files = [open(mnt / f"f{i}", "wb") for i in range(3)]  # noqa: SIM115 (closed below)
        stop_process(server)  # the server goes away
        for f, d in zip(files[:2], data[:2], strict=True):
            f.write(d)
            f.close()  # into the journal: returns although the server is gone
        done = threading.Event()

        def third() -> None:
            files[2].write(data[2])
            files[2].close()
            done.set()

        t = threading.Thread(target=third)
        t.start()
        try:
            # The journal holds 2 MiB (its limit): the third file's writes wait.
            _wait(lambda: "write-back journal full" in log.read_text(errors="replace"),
                  "the journal full line")
            assert not done.is_set()
            status = json.loads(os.getxattr(mnt, "user.fsmount.status"))
            assert status["files"] == 2 and status["full"] is True
            # Not asserted here: reading a pending file back during the outage.  Since the
            # mount follows the change feed, the feed's fallback drops the kernel's entries,
            # and the lookup of a pending name then needs the store (EIO); docs/SEMANTICS.md
            # ("Write-back") states it, and the issue stays open on it.
            server, _ = start_serve(store, port)  # back on the same address
        finally:
            t.join(DEADLINE)
        assert done.is_set()
        _run("sync", str(mnt))
        assert "journal has room again" in log.read_text(errors="replace")
        status = json.loads(os.getxattr(mnt, "user.fsmount.status"))
        assert status["files"] == 0
        for i, d in enumerate(data):
            assert (mnt / f"f{i}").read_bytes() == d
    finally:
        # The mount goes first: a file still waiting for room cannot be closed before.
        if mount_mod.is_mounted(str(mnt)):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False,
                           timeout=DEADLINE)
        try:
            mount.wait(timeout=10)
        except subprocess.TimeoutExpired:
            mount.kill()
            mount.wait(timeout=DEADLINE)
        if mount_mod.is_mounted(str(mnt)):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, check=False,
                           timeout=DEADLINE)
        for f in files:
            try:
                f.close()
            except OSError:
                pass
        stop_process(server)
