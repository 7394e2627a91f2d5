"""``fsmount mount --server URL`` and ``put/get/ls --server``: the filesystem over the real
server (a ``fsmount serve`` subprocess on loopback), read through /dev/fuse."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import FSMOUNT, run

DEADLINE = 30.0


def wait_until(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.fuse
def test_mount_of_the_server_reads_what_curl_uploaded(served, tmp_path: Path) -> None:
    store, url, _proc = served
    token = run("token", "add", "--store", str(store), "alice").stdout.strip()
    tokfile = tmp_path / "token"
    tokfile.write_text(token + "\n")
    env = {**os.environ, "FSMOUNT_TOKEN": ""}
    data = os.urandom(5 * (1 << 20) + 777)
    src = tmp_path / "movie.bin"
    src.write_bytes(data)
    # Upload with plain curl (the REST shape), then read through the mount.
    subprocess.run(["curl", "-sSf", "-X", "POST", f"{url}/api/v1/files", "-H",
                    f"Authorization: Bearer {token}", "-F", f"file=@{src}"],
                   check=True, capture_output=True, timeout=60)
    # fsmount put/ls/get --server work too (the token from the environment this time).
    put = subprocess.run([*FSMOUNT, "put", "--server", url, str(src), "/copy.bin"],
                         env={**env, "FSMOUNT_TOKEN": token}, capture_output=True, text=True, timeout=60)
    assert put.returncode == 0, put.stderr
    ls = subprocess.run([*FSMOUNT, "ls", "--server", url, "--token-file", str(tokfile), "/"],
                        capture_output=True, text=True, timeout=60)
    assert ls.returncode == 0 and "movie.bin" in ls.stdout and "copy.bin" in ls.stdout, ls
    got = tmp_path / "got.bin"
    get = subprocess.run([*FSMOUNT, "get", "--server", url, "--token-file", str(tokfile),
                          "/copy.bin", str(got)], capture_output=True, text=True, timeout=60)
    assert get.returncode == 0 and got.read_bytes() == data, get.stderr

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = open(tmp_path / "mount.log", "wb")
    proc = subprocess.Popen([*FSMOUNT, "mount", "-f", "--server", url, "--token-file", str(tokfile),
                             str(mnt)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.ismount(mnt) or proc.poll() is not None, "the mount")
        assert proc.poll() is None, (tmp_path / "mount.log").read_text()
        assert sorted(os.listdir(mnt)) == ["copy.bin", "movie.bin"]
        assert (mnt / "movie.bin").stat().st_size == len(data)
        assert hashlib.sha256((mnt / "movie.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
        with open(mnt / "copy.bin", "rb") as f:
            f.seek(3 << 20)
            assert f.read(4096) == data[3 << 20:(3 << 20) + 4096]
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=DEADLINE)
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=DEADLINE)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, timeout=DEADLINE)
        log.close()
