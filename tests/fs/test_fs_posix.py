"""POSIX through the real mount: ownership, set-ID clearing, hard links, extended attributes
(setfattr/getfattr, rsync -aX), FIFOs, device nodes and timestamps.

The mount is made with ``-o allow_other,default_permissions`` (the kernel enforces the
modes, as pjdfstest runs it); the tests run as root and act as other users through
subprocesses with another uid.  Each runs over both backends (tests/fs/conftest.py).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fs_mounting import MountProc, mount_store

#: Bound on every subprocess and FIFO operation here.
TIMEOUT = 30.0
OTHER = 1000  #: an unprivileged uid/gid the tests act as


def sh(*args: str | os.PathLike[str], user: int | None = None,
       input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a command (as ``user``, if given), bounded; raises if it fails."""
    kw: dict[str, object] = {}
    if user is not None:
        kw = {"user": user, "group": user, "extra_groups": []}
    return subprocess.run([str(a) for a in args], check=True, capture_output=True,
                          timeout=TIMEOUT, input=input, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def pm(tmp_path_factory: pytest.TempPathFactory, fs_backend: str) -> Iterator[MountProc]:
    store = tmp_path_factory.mktemp(f"posix-{fs_backend}") / "store"
    # The mount point's folders must be searchable by the other user (pytest's are 0700).
    base = Path(tempfile.mkdtemp(prefix="fsmount-posix-"))
    try:
        os.chmod(base, 0o711)
        with mount_store(store, base / "mnt", "-o", "allow_other,default_permissions") as mp:
            os.chmod(mp.mnt, 0o777)
            yield mp
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def d(pm: MountProc, request: pytest.FixtureRequest) -> Path:
    """A fresh folder for one test."""
    path = pm.mnt / request.node.name.replace("[", "_").replace("]", "")
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)
    return path


def test_new_nodes_are_owned_by_the_caller_with_the_umask(d: Path) -> None:
    sh("sh", "-c", f"umask 027 && touch {d}/f && mkdir {d}/sub && ln -s f {d}/l",
       user=OTHER)
    for name in ("f", "sub", "l"):
        st = os.lstat(d / name)
        assert (st.st_uid, st.st_gid) == (OTHER, OTHER), name
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(d / "sub").st_mode) == 0o750
    # Root's files are root's.
    (d / "r").write_bytes(b"x")
    assert (os.stat(d / "r").st_uid, os.stat(d / "r").st_gid) == (0, 0)


def test_chown_as_root_and_the_resulting_stat(pm: MountProc, d: Path) -> None:
    f = d / "f"
    f.write_bytes(b"data")
    before = os.stat(f)
    os.chown(f, 1234, 5678)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_ctime_ns >= before.st_ctime_ns and st.st_mtime_ns == before.st_mtime_ns
    os.chown(f, -1, 42)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (1234, 42)
    os.lchown(d, OTHER, OTHER)
    assert os.stat(d).st_uid == OTHER
    # A user may not give a file away, nor take one.
    with pytest.raises(subprocess.CalledProcessError):
        sh("chown", "0", d / "f", user=OTHER)
    assert os.stat(f).st_uid == 1234


def test_the_owner_may_change_the_group_only_to_their_own(d: Path) -> None:
    sh("touch", d / "mine", user=OTHER)
    sh("chgrp", str(OTHER), d / "mine", user=OTHER)  # their own group: allowed
    with pytest.raises(subprocess.CalledProcessError):
        sh("chgrp", "0", d / "mine", user=OTHER)
    assert os.stat(d / "mine").st_gid == OTHER


def test_ownership_and_mode_survive_a_remount(tmp_path: Path) -> None:
    opts = ("-o", "allow_other,default_permissions")
    with mount_store(tmp_path / "store", tmp_path / "mnt", *opts) as mp:
        (mp.mnt / "f").write_bytes(b"x")
        os.chown(mp.mnt / "f", 321, 654)
        os.chmod(mp.mnt / "f", 0o2751)
        os.setxattr(mp.mnt / "f", "user.kept", b"yes")
    with mount_store(tmp_path / "store", tmp_path / "mnt", *opts) as mp:
        st = os.stat(mp.mnt / "f")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (321, 654, 0o2751)
        assert os.getxattr(mp.mnt / "f", "user.kept") == b"yes"


def test_chown_clears_setuid_and_setgid(d: Path) -> None:
    f = d / "f"
    f.write_bytes(b"#!/bin/sh\n")
    os.chmod(f, 0o6755)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o6755
    os.chown(f, OTHER, OTHER)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o755


def test_a_write_by_another_user_clears_setuid(d: Path) -> None:
    f = d / "f"
    f.write_bytes(b"x")
    os.chmod(f, 0o4777)
    sh("sh", "-c", f"printf more >> {f}", user=OTHER)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o777
    assert f.read_bytes() == b"xmore"


def test_the_kernel_enforces_modes_with_default_permissions(d: Path) -> None:
    f = d / "secret"
    f.write_bytes(b"s")
    os.chmod(f, 0o600)
    r = subprocess.run(["cat", str(f)], capture_output=True, timeout=TIMEOUT, user=OTHER,
                       group=OTHER, extra_groups=[])
    assert r.returncode != 0 and b"Permission denied" in r.stderr


def test_link_counts_after_link_unlink_and_rename(d: Path) -> None:
    a = d / "a"
    a.write_bytes(b"shared")
    (d / "sub").mkdir()
    os.link(a, d / "sub" / "b")
    os.link(a, d / "c")
    assert [os.stat(p).st_nlink for p in (a, d / "sub" / "b", d / "c")] == [3, 3, 3]
    assert os.stat(a).st_ino == os.stat(d / "c").st_ino
    # Content is shared: a write through one name is read through another.
    with open(d / "c", "ab") as f:
        f.write(b" more")
    assert (d / "sub" / "b").read_bytes() == b"shared more"
    os.unlink(a)
    assert os.stat(d / "c").st_nlink == 2
    assert (d / "sub" / "b").read_bytes() == b"shared more"
    # Renaming another file over one name keeps the node under its other one.
    (d / "other").write_bytes(b"other")
    os.rename(d / "other", d / "c")
    assert os.stat(d / "sub" / "b").st_nlink == 1
    assert (d / "c").read_bytes() == b"other"
    assert sorted(os.listdir(d)) == ["c", "sub"]
    with pytest.raises(OSError) as err:
        os.link(d / "sub", d / "sublink")
    assert err.value.errno == errno.EPERM


def test_link_counts_stay_right_in_a_folder_whose_listing_is_kept(d: Path) -> None:
    """pjdfstest rename/23.t, link/00.t, unlink/00.t: lookups that miss make the mount keep
    the folder's listing (a cold folder); the names a rename over a link or an unlink of a
    link leaves must then show the node's new link count, not the listing's."""
    for name in ("src", "dst", "a"):
        (d / name).write_bytes(name.encode())
    os.link(d / "dst", d / "lnk")
    os.link(d / "a", d / "b")
    for miss in ("miss1", "miss2", "miss3"):  # the second miss fetches the listing
        assert not os.path.exists(d / miss)
    assert os.lstat(d / "lnk").st_nlink == 2 and os.lstat(d / "a").st_nlink == 2
    os.rename(d / "src", d / "dst")
    assert os.lstat(d / "lnk").st_nlink == 1
    assert (d / "lnk").read_bytes() == b"dst" and (d / "dst").read_bytes() == b"src"
    assert not os.path.exists(d / "miss4")
    os.unlink(d / "b")
    assert os.lstat(d / "a").st_nlink == 1


def test_setfattr_getfattr_round_trip(d: Path) -> None:
    f = d / "f"
    f.write_bytes(b"content")
    sh("setfattr", "-n", "user.color", "-v", "blue", f)
    sh("setfattr", "-n", "user.bin", "-v", "0x00ff10", f)
    out = sh("getfattr", "-d", "-e", "hex", f).stdout.decode()
    assert 'user.color=0x626c7565' in out and "user.bin=0x00ff10" in out
    assert sh("getfattr", "--only-values", "-n", "user.color", f).stdout == b"blue"
    assert "user.fsmount" not in sh("getfattr", "-m", "-", f).stdout.decode()
    assert len(sh("getfattr", "--only-values", "-n", "user.fsmount.sha256", f).stdout) == 64
    sh("setfattr", "-x", "user.color", f)
    with pytest.raises(OSError) as err:
        os.getxattr(f, "user.color")
    assert err.value.errno == errno.ENODATA
    # XATTR_CREATE / XATTR_REPLACE, read-only names, the size limits, ERANGE.
    with pytest.raises(OSError) as err:
        os.setxattr(f, "user.bin", b"x", os.XATTR_CREATE)
    assert err.value.errno == errno.EEXIST
    with pytest.raises(OSError) as err:
        os.setxattr(f, "user.none", b"x", os.XATTR_REPLACE)
    assert err.value.errno == errno.ENODATA
    with pytest.raises(OSError) as err:
        os.setxattr(f, "user.fsmount.sha256", b"x")
    assert err.value.errno == errno.EPERM
    os.setxattr(f, "user.big", b"b" * 65536)
    assert os.getxattr(f, "user.big") == b"b" * 65536
    with pytest.raises(OSError) as err:
        os.setxattr(f, "user.bigger", b"b" * 65537)
    assert err.value.errno == errno.E2BIG
    # Attributes survive a rename, and live on the node (every name sees them).
    os.rename(f, d / "g")
    os.link(d / "g", d / "h")
    assert os.getxattr(d / "h", "user.bin") == b"\x00\xff\x10"


def test_getxattr_into_a_short_buffer_is_erange(d: Path) -> None:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    f = d / "f"
    f.write_bytes(b"x")
    os.setxattr(f, "user.long", b"0123456789")
    buf = ctypes.create_string_buffer(4)
    n = libc.getxattr(os.fsencode(f), b"user.long", buf, ctypes.c_size_t(4))
    assert n == -1 and ctypes.get_errno() == errno.ERANGE
    assert libc.getxattr(os.fsencode(f), b"user.long", None, ctypes.c_size_t(0)) == 10


def test_rsync_aX_round_trips_xattrs_and_ownership(d: Path, tmp_path: Path) -> None:
    """rsync -aX there and back keeps contents, xattrs and ownership (as root)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(b"alpha")
    (src / "sub" / "b").write_bytes(b"beta" * 1000)
    os.setxattr(src / "a", "user.tag", b"one")
    os.setxattr(src / "sub" / "b", "user.tag", b"two")
    os.setxattr(src / "sub", "user.dir", b"three")
    os.chown(src / "a", 4321, 8765)
    sh("rsync", "-aX", f"{src}/", f"{d}/")
    assert os.getxattr(d / "a", "user.tag") == b"one"
    assert os.getxattr(d / "sub" / "b", "user.tag") == b"two"
    assert os.getxattr(d / "sub", "user.dir") == b"three"
    assert (os.stat(d / "a").st_uid, os.stat(d / "a").st_gid) == (4321, 8765)
    back = tmp_path / "back"
    sh("rsync", "-aX", f"{d}/", f"{back}/")
    assert os.getxattr(back / "sub" / "b", "user.tag") == b"two"
    assert (back / "sub" / "b").read_bytes() == b"beta" * 1000
    assert os.stat(back / "a").st_uid == 4321
    # A second run finds nothing to change.
    out = sh("rsync", "-aXi", f"{src}/", f"{d}/").stdout
    assert out.strip() == b"", out


def test_mkfifo_with_a_reader_and_a_writer(d: Path) -> None:
    fifo = d / "fifo"
    os.mkfifo(fifo, 0o640)
    st = os.stat(fifo)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    got: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    # The writer's open blocks until the reader's does: run it bounded in a subprocess.
    sh("sh", "-c", f"printf 'through the pipe' > {fifo}")
    t.join(TIMEOUT)
    assert not t.is_alive() and got == [b"through the pipe"]
    assert os.stat(fifo).st_size == 0
    os.unlink(fifo)
    assert not fifo.exists()


def test_mknod_as_root_keeps_mode_and_rdev(d: Path) -> None:
    os.mknod(d / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(d / "blk", 0o600 | stat.S_IFBLK, os.makedev(8, 1))
    os.mknod(d / "sock", 0o755 | stat.S_IFSOCK)
    os.mknod(d / "reg", 0o644 | stat.S_IFREG)
    c, b, s = os.stat(d / "null"), os.stat(d / "blk"), os.stat(d / "sock")
    assert stat.S_ISCHR(c.st_mode) and os.major(c.st_rdev) == 1 and os.minor(c.st_rdev) == 3
    assert stat.S_ISBLK(b.st_mode) and os.major(b.st_rdev) == 8 and os.minor(b.st_rdev) == 1
    assert stat.S_ISSOCK(s.st_mode) and stat.S_IMODE(s.st_mode) == 0o755
    assert stat.S_ISREG(os.stat(d / "reg").st_mode)
    # Mounted without ``-o dev`` (libfuse's default nodev): device nodes cannot be opened.
    with pytest.raises(PermissionError):
        (d / "null").write_bytes(b"gone")
    # Only root makes device nodes.
    with pytest.raises(subprocess.CalledProcessError):
        sh("mknod", d / "dev2", "c", "1", "3", user=OTHER)


def _times(p: Path) -> tuple[int, int, int]:
    st = os.lstat(p)
    return st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


def test_timestamps_after_each_operation(d: Path) -> None:
    f = d / "f"
    f.write_bytes(b"12345")
    a0, m0, c0 = _times(f)
    os.chmod(f, 0o600)
    _, m1, c1 = _times(f)
    assert m1 == m0 and c1 > c0, "chmod: ctime only"
    os.chown(f, 7, 7)
    _, m2, c2 = _times(f)
    assert m2 == m0 and c2 > c1, "chown: ctime only"
    dm0 = _times(d)[1]
    os.link(f, d / "g")
    _, m3, c3 = _times(f)
    assert m3 == m0 and c3 > c2, "link: the file's ctime"
    assert _times(d)[1] > dm0 and _times(d)[2] > dm0, "link: the folder's mtime and ctime"
    dm1 = _times(d)[1]
    os.rename(d / "g", d / "h")
    _, m4, c4 = _times(f)
    assert m4 == m0 and c4 > c3, "rename: the node's ctime"
    assert _times(d)[1] > dm1, "rename: the folder's mtime"
    os.truncate(f, 2)
    _, m5, c5 = _times(f)
    assert m5 > m0 and c5 > c4, "truncate: mtime and ctime"
    os.truncate(f, 2)
    _, m6, c6 = _times(f)
    assert m6 > m5 and c6 > c5, "truncate to the same size: mtime and ctime"
    dm2 = _times(d)[1]
    os.unlink(d / "h")
    assert _times(d)[1] > dm2 and _times(f)[2] > c6, "unlink: folder mtime, node ctime"
    # utimensat keeps nanoseconds; atime is kept apart from mtime.
    os.utime(f, ns=(1_000_000_001, 2_000_000_002))
    a7, m7, c7 = _times(f)
    assert (a7, m7) == (1_000_000_001, 2_000_000_002) and c7 >= c6
    os.setxattr(f, "user.t", b"1")
    assert _times(f)[2] > c7, "setxattr: ctime"


def test_special_files_survive_copying_with_cp_a(d: Path, tmp_path: Path) -> None:
    os.mkfifo(d / "fifo")
    os.symlink("fifo", d / "link")
    out = tmp_path / "copy"
    sh("cp", "-a", d, out)
    assert stat.S_ISFIFO(os.lstat(out / "fifo").st_mode)
    assert os.readlink(out / "link") == "fifo"
    shutil.rmtree(out)
