"""What the FUSE adapter promises about writes and namespace changes, through the real
mount: reads of a file open for writing see the written bytes (same and other handle),
close returns only once the store holds the file, an unlinked open file stays readable,
rename over an open file, truncate both ways, append, chmod/utimes, hard links refused,
quota errors reach close as ENOSPC, and the store's fsck finds nothing wrong afterwards."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import random
import subprocess
from pathlib import Path

import pytest
import trio
from fs_mounting import MountProc, mount_store, populate

from fsmount import fsck
from fsmount.embedded import EmbeddedRemote
from fsmount.remote import ROOT_ID
from fsmount.store import Store

MIB = 1024 * 1024


def store_view(store: Path, path: str) -> bytes | None:
    """The content of ``path`` as the store itself holds it (None if missing)."""

    async def main() -> bytes | None:
        remote = EmbeddedRemote.open(store)
        try:
            node = await remote.getattr(ROOT_ID)
            for part in [p for p in path.split("/") if p]:
                node = await remote.lookup(node.id, part)
            out = bytearray()
            for doc in node.segments:
                for off in range(0, doc.size, MIB):
                    out += (await remote.get_file(doc.location, off, MIB)).bytes
            return bytes(out)
        except Exception:
            return None
        finally:
            await remote.aclose()

    return trio.run(main)


def test_close_returns_once_the_store_holds_the_file(mounted: MountProc) -> None:
    data = random.Random(1).randbytes(3 * MIB + 5)
    with open(mounted.mnt / "f.bin", "wb", buffering=0) as f:
        f.write(data[:MIB])
        # Another handle and the writing handle itself see what was written so far.
        assert (mounted.mnt / "f.bin").stat().st_size == MIB
        with open(mounted.mnt / "f.bin", "rb") as r:
            assert r.read() == data[:MIB]
        f.write(data[MIB:])
        f.flush()
    # After close, a second process (the store API, without the mount) sees all of it.
    assert store_view(mounted.store, "f.bin") == data
    assert (mounted.mnt / "f.bin").read_bytes() == data


def test_a_deferred_create_is_seen_here_at_once_and_elsewhere_at_close(
        mounted: MountProc) -> None:
    """A new file is in this mount from its create (name, size, mode, owner, bytes) and in
    the store from its first close, with what chmod and chown set meanwhile; one that
    outgrows memory streams and is created with its parts."""
    small, big = b"deferred " * 1000, random.Random(2).randbytes(6 * MIB + 3)
    d = mounted.mnt / "d"
    d.mkdir()
    with open(d / "small", "wb", buffering=0) as f, open(d / "big", "wb", buffering=0) as g:
        f.write(small)
        g.write(big)
        os.fchmod(f.fileno(), 0o640)
        os.fchown(f.fileno(), 1234, 5678)
        st = os.stat(d / "small")
        assert (st.st_size, st.st_mode & 0o7777, st.st_uid, st.st_gid) == (
            len(small), 0o640, 1234, 5678)
        assert sorted(os.listdir(d)) == ["big", "small"]
        assert (d / "small").read_bytes() == small
        assert (d / "big").read_bytes() == big
        # Not in the store yet: other clients see it at close.
        assert store_view(mounted.store, "d/small") is None
        assert store_view(mounted.store, "d/big") is None
        ino = os.fstat(f.fileno()).st_ino
    assert store_view(mounted.store, "d/small") == small
    assert store_view(mounted.store, "d/big") == big
    st = os.stat(d / "small")
    assert (st.st_ino, st.st_mode & 0o7777, st.st_uid, st.st_gid) == (ino, 0o640, 1234, 5678)


def test_a_deferred_file_unlinked_before_close_never_reaches_the_store(
        mounted: MountProc) -> None:
    with open(mounted.mnt / "tmp", "wb", buffering=0) as f:
        f.write(b"scratch")
        os.unlink(mounted.mnt / "tmp")
        assert "tmp" not in os.listdir(mounted.mnt)
        f.write(b" more")
        assert os.fstat(f.fileno()).st_nlink == 0
    assert "tmp" not in os.listdir(mounted.mnt)
    assert store_view(mounted.store, "tmp") is None
    # The name is free for a new file.
    (mounted.mnt / "tmp").write_bytes(b"kept")
    assert store_view(mounted.store, "tmp") == b"kept"


def test_a_folder_holding_a_deferred_file_is_not_empty(mounted: MountProc) -> None:
    d = mounted.mnt / "d"
    d.mkdir()
    with open(d / "new", "wb") as f:
        f.write(b"not in the store yet")
        with pytest.raises(OSError) as exc:
            os.rmdir(d)
        assert exc.value.errno == errno.ENOTEMPTY
    assert store_view(mounted.store, "d/new") == b"not in the store yet"


def cached_bytes(fd: int, size: int) -> int:
    """Bytes of the file open as ``fd`` that are in the kernel's page cache (``mincore``).

    Asked through a mapping of an fd that is already open: opening the file again (as
    ``fincore`` would) makes fsmount drop the file's cached pages when its content changed.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    pages = -(-size // page)
    vec = (ctypes.c_ubyte * pages)()
    with mmap.mmap(fd, size, access=mmap.ACCESS_COPY) as mm:
        view = ctypes.c_char.from_buffer(mm)
        try:
            if libc.mincore(ctypes.c_void_p(ctypes.addressof(view)), ctypes.c_size_t(size),
                            vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del view
    return sum(v & 1 for v in vec) * page


def test_write_only_handles_bypass_the_page_cache(mounted: MountProc) -> None:
    # cp, dd and tar open their target write-only: the written bytes go to the upload, not
    # into a page-cache copy of the file as well.  A read-write handle writes through the
    # page cache, so that it can read back and mmap.
    data = random.Random(4).randbytes(4 * MIB)
    for name, mode, expect_cached in (("wo", os.O_WRONLY, 0), ("rw", os.O_RDWR, len(data))):
        path = mounted.mnt / name
        path.write_bytes(b"")
        # Opened before the writer, so that it does not make the kernel drop the pages.
        probe = os.open(path, os.O_RDONLY)
        try:
            w = os.open(path, mode | os.O_TRUNC)
            try:
                for pos in range(0, len(data), MIB):
                    os.write(w, data[pos : pos + MIB])
                assert cached_bytes(probe, len(data)) == expect_cached, name
            finally:
                os.close(w)
        finally:
            os.close(probe)
        assert path.read_bytes() == data
        assert store_view(mounted.store, name) == data


def test_another_handle_sees_every_write_of_a_write_only_handle(mounted: MountProc) -> None:
    # The reader's first read ends inside a page; the writer then fills that page through
    # a handle that bypasses the page cache.  The reader must not be served the page it
    # read before (it bypasses the cache too while the write-only handle is open).
    path = mounted.mnt / "grow.bin"
    data = random.Random(3).randbytes(3 * 4096 + 17)
    w = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(w, data[:1000])
        r = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(r, len(data), 0) == data[:1000]
            os.write(w, data[1000:])
            assert os.pread(r, len(data), 0) == data
            assert os.pread(r, 100, 4000) == data[4000:4100]
        finally:
            os.close(r)
    finally:
        os.close(w)
    assert path.read_bytes() == data


def test_read_back_through_a_read_write_handle(mounted: MountProc) -> None:
    fd = os.open(mounted.mnt / "rw", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"0123456789" * 1000)
        assert os.pread(fd, 10, 5000) == b"0123456789"
        os.pwrite(fd, b"abc", 3)  # not sequential: moves to a staging file
        assert os.pread(fd, 8, 0) == b"012abc67"
        os.fsync(fd)
        assert store_view(mounted.store, "rw")[:8] == b"012abc67"  # type: ignore[index]
    finally:
        os.close(fd)


def test_unlinked_open_file_stays_readable(mounted: MountProc) -> None:
    data = random.Random(2).randbytes(2 * MIB)
    (mounted.mnt / "doomed").write_bytes(data)
    with open(mounted.mnt / "doomed", "rb") as f:
        assert f.read(100) == data[:100]
        os.unlink(mounted.mnt / "doomed")
        # Not from the kernel's page cache: the content must still come from the store.
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert not (mounted.mnt / "doomed").exists()
        assert "doomed" not in os.listdir(mounted.mnt)
        assert f.read() == data[100:]
        f.seek(0)
        assert f.read(10) == data[:10]
    assert os.listdir(mounted.mnt) == []
    assert store_view(mounted.store, "doomed") is None  # gone from the store's namespace


def test_rename_over_an_open_file(mounted: MountProc) -> None:
    (mounted.mnt / "old").write_bytes(b"old content")
    (mounted.mnt / "new").write_bytes(b"new content")
    with open(mounted.mnt / "old", "rb", buffering=0) as f:
        assert f.read(4) == b"old "
        os.rename(mounted.mnt / "new", mounted.mnt / "old")
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # read from the store again
        assert os.pread(f.fileno(), 100, 0) == b"old content"
    assert (mounted.mnt / "old").read_bytes() == b"new content"
    assert sorted(os.listdir(mounted.mnt)) == ["old"]


def test_namespace_changes(mounted: MountProc) -> None:
    m = mounted.mnt
    os.makedirs(m / "a" / "b")
    (m / "a" / "b" / "f").write_text("x")
    with pytest.raises(OSError) as exc:
        os.rmdir(m / "a")
    assert exc.value.errno == errno.ENOTEMPTY
    os.rename(m / "a", m / "c")  # a whole folder
    assert (m / "c" / "b" / "f").read_text() == "x"
    os.rename(m / "c" / "b" / "f", m / "g")  # across folders
    os.rmdir(m / "c" / "b")
    os.rmdir(m / "c")
    os.symlink("g", m / "s")
    assert os.readlink(m / "s") == "g" and (m / "s").read_text() == "x"
    os.link(m / "g", m / "h")  # a hard link (tests/fs/test_fs_posix.py has the rest)
    assert (m / "h").read_text() == "x" and os.stat(m / "g").st_nlink == 2
    os.unlink(m / "h")
    assert sorted(os.listdir(m)) == ["g", "s"]


def test_truncate_append_chmod_utimes(mounted: MountProc) -> None:
    p = mounted.mnt / "t"
    p.write_bytes(b"hello world")
    subprocess.run(["truncate", "-s", "5", str(p)], check=True)
    assert p.read_bytes() == b"hello"
    subprocess.run(["truncate", "-s", "8", str(p)], check=True)
    assert p.read_bytes() == b"hello\0\0\0"
    subprocess.run(["sh", "-c", f"echo one >> {p}; echo two >> {p}"], check=True)
    assert p.read_bytes() == b"hello\0\0\0one\ntwo\n"
    os.chmod(p, 0o600)
    assert p.stat().st_mode & 0o777 == 0o600
    subprocess.run(["touch", "-d", "2020-01-02 03:04:05", str(p)], check=True)
    assert p.stat().st_mtime == pytest.approx(
        float(subprocess.run(["date", "-d", "2020-01-02 03:04:05", "+%s"], capture_output=True,
                             text=True, check=True).stdout), abs=1)
    src = mounted.mnt.parent / "local.txt"
    src.write_text("preserve me")
    os.utime(src, (1_500_000_000, 1_500_000_000))
    subprocess.run(["cp", "-p", str(src), str(mounted.mnt / "kept")], check=True)
    assert (mounted.mnt / "kept").stat().st_mtime == 1_500_000_000
    assert (mounted.mnt / "kept").read_text() == "preserve me"


def test_quota_exceeded_fails_close_with_enospc(tmp_path: Path) -> None:
    store = tmp_path / "store"
    populate(store, {"seed": b"x"})
    with Store(store) as s:
        s.set_user(s.user_id("default"), quota_bytes=1 * MIB)
    with mount_store(store, tmp_path / "mnt") as mp:
        data = random.Random(3).randbytes(2 * MIB)
        with pytest.raises(OSError) as exc:
            with open(mp.mnt / "big", "wb") as f:
                f.write(data)
        assert exc.value.errno == errno.ENOSPC
        assert store_view(store, "big") in (None, b"")
        assert "big" in mp.log_text()


def test_fsck_is_clean_after_changes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with mount_store(store, tmp_path / "mnt") as mp:
        for i in range(5):
            (mp.mnt / f"f{i}").write_bytes(random.Random(i).randbytes(100_000 * (i + 1)))
        os.rename(mp.mnt / "f0", mp.mnt / "f1")
        os.unlink(mp.mnt / "f2")
        with open(mp.mnt / "f3", "r+b") as f:
            f.seek(50)
            f.write(b"patched")
    assert fsck.check(store) == []
