"""The mount over HTTP: ``fsmount serve`` on a 127.0.0.1 port, ``fsmount mount --server``,
and reads and writes through the mount that the server's store holds afterwards."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

from fs_mounting import DEADLINE, wait_until

from fsmount.mount import is_mounted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_mount_over_http(tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = random.Random(11).randbytes(5 * 1024 * 1024 + 77)
    fsmount = [sys.executable, "-m", "fsmount"]
    subprocess.run([*fsmount, "init", "--store", str(store)], capture_output=True, check=True,
                   timeout=60)
    token = subprocess.run([*fsmount, "token", "add", "--store", str(store), "alice"],
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    (tmp_path / "token").write_text(token)
    port = free_port()
    server = subprocess.Popen([*fsmount, "serve", "--store", str(store), "--listen",
                               f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: listening(port) or server.poll() is not None, "the server")
        assert server.poll() is None
        (tmp_path / "in.bin").write_bytes(data)
        subprocess.run([*fsmount, "put", "--server", url, "--token-file", str(tmp_path / "token"),
                        str(tmp_path / "in.bin"), "/in.bin"], check=True, timeout=120)
        res = subprocess.run([*fsmount, "mount", "--server", url, "--token-file",
                              str(tmp_path / "token"), str(mnt)], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert (mnt / "in.bin").read_bytes() == data
        fd = os.open(mnt / "in.bin", os.O_RDONLY)
        try:
            for off in (0, 1024 * 1024 - 3, 3 * 1024 * 1024 + 5, len(data) - 10):
                assert os.pread(fd, 4096, off) == data[off : off + 4096]
        finally:
            os.close(fd)
        (mnt / "out.bin").write_bytes(data[::-1])
        with open(mnt / "out.bin", "ab") as f:
            f.write(b"tail")
        assert (mnt / "out.bin").read_bytes() == data[::-1] + b"tail"
        subprocess.run([*fsmount, "unmount", str(mnt)], check=True, timeout=DEADLINE)
        got = subprocess.run([*fsmount, "get", "--server", url, "--token-file",
                              str(tmp_path / "token"), "/out.bin", "-"], capture_output=True,
                             check=True, timeout=120).stdout
        assert got == data[::-1] + b"tail"
    finally:
        if is_mounted(str(mnt)):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


