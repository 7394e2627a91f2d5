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
