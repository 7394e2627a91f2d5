"""``-o uid=,gid=,umask=,file_mode=,dir_mode=``: what ``stat`` shows through the real mount,
and that the store keeps its own modes (another mount without the options shows them)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fs_mounting import mount_store, populate


def _files(store: Path) -> None:
    populate(store, {"d/f.txt": b"hello", "top.bin": b"x" * 10})


def test_uid_gid_and_umask_set_the_view(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _files(store)
    with mount_store(store, tmp_path / "mnt", "-o", "uid=1234,gid=4321,umask=027") as mp:
        f = os.stat(mp.mnt / "d" / "f.txt")
        d = os.stat(mp.mnt / "d")
        assert (f.st_uid, f.st_gid) == (1234, 4321)
        assert (d.st_uid, d.st_gid) == (1234, 4321)
        assert stat.S_IMODE(f.st_mode) == 0o644 & ~0o027
        assert stat.S_IMODE(d.st_mode) == 0o755 & ~0o027
        assert stat.S_ISDIR(d.st_mode) and stat.S_ISREG(f.st_mode)
        # A new file gets the view too.
        (mp.mnt / "new.txt").write_bytes(b"n")
        assert os.stat(mp.mnt / "new.txt").st_uid == 1234


def test_file_mode_and_dir_mode_replace_the_bits_not_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _files(store)
    with mount_store(store, tmp_path / "mnt", "-o", "file_mode=0600,dir_mode=0700") as mp:
        assert stat.S_IMODE(os.stat(mp.mnt / "top.bin").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(mp.mnt / "d").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(mp.mnt / "d" / "f.txt").st_mode) == 0o600
    with mount_store(store, tmp_path / "mnt") as mp:
        st = os.stat(mp.mnt / "top.bin")
        assert stat.S_IMODE(st.st_mode) == 0o644
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_boot_options_are_accepted_and_a_bad_mode_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = tmp_path / "store"
    _files(store)
    with mount_store(store, tmp_path / "mnt", "-o",
                     "_netdev,nofail,noauto,x-systemd.automount,x-systemd.idle-timeout=60"
                     ) as mp:
        assert (mp.mnt / "top.bin").read_bytes() == b"x" * 10
    res = subprocess.run([sys.executable, "-m", "fsmount", "mount", "--store", str(store),
                          "-o", "umask=999", str(tmp_path / "mnt")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and "umask=999" in res.stderr and "Traceback" not in res.stderr
