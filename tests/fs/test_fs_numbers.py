"""Truthful numbers through the real mount: ``df`` shows the store's disk's free space (or
what the quota leaves), and every file written through the mount carries its whole-file
SHA-256 as ``user.fsmount.sha256``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fs_mounting import MountProc

#: Other processes write to the same disk while the test runs.
TOLERANCE = 256 << 20


def _df_avail(path: Path) -> tuple[int, int]:
    out = subprocess.run(["df", "-B1", "--output=size,avail", str(path)], capture_output=True,
                         text=True, check=True, timeout=30).stdout.splitlines()[-1].split()
    return int(out[0]), int(out[1])


def test_df_shows_the_free_space_of_the_stores_disk(mounted: MountProc) -> None:
    size, avail = _df_avail(mounted.mnt)
    st = os.statvfs(mounted.store)
    disk_free = st.f_bavail * st.f_frsize
    assert abs(avail - disk_free) < TOLERANCE, (avail, disk_free)
    # Size is what is used plus what is free: not the old 1 PiB.
    assert size < st.f_blocks * st.f_frsize + TOLERANCE


def _getfattr(path: Path) -> str:
    return subprocess.run(["getfattr", "--only-values", "-n", "user.fsmount.sha256", str(path)],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def _sha256sum(path: Path) -> str:
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True,
                          timeout=120).stdout.split()[0]


def test_a_40_mib_file_written_with_cp_has_its_whole_sha256(mounted: MountProc,
                                                            tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(40 << 20))  # more than one 32 MiB segment
    dst = mounted.mnt / "copy.bin"
    subprocess.run(["cp", str(src), str(dst)], check=True, timeout=120)
    segments = os.getxattr(dst, "user.fsmount.file_id").decode().split(",")
    assert len(segments) >= 2
    assert _getfattr(dst) == _sha256sum(src) == _sha256sum(dst)


def test_a_staged_random_write_has_its_whole_sha256(mounted: MountProc) -> None:
    path = mounted.mnt / "staged.bin"
    data = bytearray(os.urandom(36 << 20))
    path.write_bytes(data)
    # Overwrite in the middle: the file goes through a staging file and uploads at close.
    with open(path, "r+b") as f:
        f.seek(20 << 20)
        f.write(b"\xff" * 4096)
    data[20 << 20 : (20 << 20) + 4096] = b"\xff" * 4096
    import hashlib

    assert _getfattr(path) == hashlib.sha256(data).hexdigest() == _sha256sum(path)
