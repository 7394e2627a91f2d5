"""Reads through the real mount with ordinary tools: cat, cp, ls -l, stat, find, grep -r,
sha256sum, dd skip=, random preads, 1 MiB boundaries, end of file, a 10,000-file folder,
symlinks, statfs and the read-only extended attributes."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fs_mounting import MountProc, Symlink, mount_store, populate

MIB = 1024 * 1024
rng = random.Random(1234)
BIG = rng.randbytes(5 * MIB + 12345)
#: Two segments whose boundary (3,000,000) is not 1 MiB aligned within the file.
SEG_A = rng.randbytes(3_000_000)
SEG_B = rng.randbytes(2 * MIB + 777)
MULTI = SEG_A + SEG_B
SMALL = b"hello fsmount\nneedle-7f3a in a haystack\n"
MANY = 10_000


@pytest.fixture(scope="module")
def ro(tmp_path_factory: pytest.TempPathFactory, fs_backend: str) -> Iterator[MountProc]:
    base = tmp_path_factory.mktemp("read")
    files: dict[str, bytes | list[bytes] | Symlink] = {
        "big.bin": BIG,
        "multi.bin": [SEG_A, SEG_B],
        "small.txt": SMALL,
        "empty": b"",
        "dir/sub/nested.txt": b"deep down there is a needle-7f3a too\n",
        "dir/other.txt": b"nothing to see\n",
        "link": Symlink("small.txt"),
    }
    files.update({f"many/f{i:05d}": b"x" for i in range(MANY)})
    populate(base / "store", files)
    (base / "src").mkdir()
    (base / "src" / "big.bin").write_bytes(BIG)
    with mount_store(base / "store", base / "mnt") as mp:
        yield mp


def sh(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([os.fspath(a) for a in args], capture_output=True, timeout=120,
                          check=True)


def test_cat(ro: MountProc) -> None:
    assert sh("cat", ro.mnt / "small.txt").stdout == SMALL
    assert sh("cat", ro.mnt / "empty").stdout == b""


def test_cp_and_sha256sum(ro: MountProc, tmp_path: Path) -> None:
    sh("cp", ro.mnt / "big.bin", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == BIG
    out = sh("sha256sum", ro.mnt / "big.bin", ro.mnt / "multi.bin").stdout.decode().split()
    assert out[0] == hashlib.sha256(BIG).hexdigest()
    assert out[2] == hashlib.sha256(MULTI).hexdigest()


def test_ls_l_and_stat(ro: MountProc) -> None:
    lines = sh("ls", "-l", ro.mnt).stdout.decode().splitlines()
    by_name = {ln.split()[-1]: ln for ln in lines[1:] if "->" not in ln}
    assert by_name["big.bin"].split()[4] == str(len(BIG))
    assert by_name["dir"].startswith("d")
    assert any(ln.startswith("l") and ln.endswith("link -> small.txt") for ln in lines)
    st = os.stat(ro.mnt / "multi.bin")
    assert st.st_size == len(MULTI)
    assert st.st_mode & 0o777 == 0o644
    out = sh("stat", "-c", "%s %F", ro.mnt / "small.txt").stdout.decode().strip()
    assert out == f"{len(SMALL)} regular file"


def test_find_and_grep(ro: MountProc) -> None:
    found = sh("find", ro.mnt / "dir").stdout.decode().split()
    rel = sorted(os.path.relpath(p, ro.mnt) for p in found)
    assert rel == ["dir", "dir/other.txt", "dir/sub", "dir/sub/nested.txt"]
    res = subprocess.run(["grep", "-r", "-l", "--exclude-dir=many", "needle-7f3a", str(ro.mnt)],
                         capture_output=True, timeout=120, check=False)
    hits = sorted(os.path.relpath(p, ro.mnt) for p in res.stdout.decode().split())
    assert hits == ["dir/sub/nested.txt", "small.txt"]


def test_dd_with_skip(ro: MountProc) -> None:
    out = sh("dd", f"if={ro.mnt / 'big.bin'}", "bs=1M", "skip=2", "count=2", "status=none").stdout
    assert out == BIG[2 * MIB : 4 * MIB]
    out = sh("dd", f"if={ro.mnt / 'multi.bin'}", "bs=4096", "skip=700", "count=100",
             "status=none").stdout
    assert out == MULTI[700 * 4096 : 800 * 4096]


def test_random_preads(ro: MountProc) -> None:
    r = random.Random(99)
    for name, src in (("big.bin", BIG), ("multi.bin", MULTI)):
        fd = os.open(ro.mnt / name, os.O_RDONLY)
        try:
            for _ in range(200):
                off = r.randrange(0, len(src) + 100)
                size = r.choice([1, 4096, 65536, MIB, 3 * MIB, r.randrange(1, 300_000)])
                assert os.pread(fd, size, off) == src[off : off + size], (name, off, size)
        finally:
            os.close(fd)


def test_concurrent_readers_of_different_content_each_get_their_own(ro: MountProc) -> None:
    """Eight threads read two files at random places at once, dropping the pages they read
    so that every read is a request to the filesystem: read replies go out through one
    reused buffer, and no reply may carry another one's bytes."""
    from concurrent.futures import ThreadPoolExecutor

    def reader(seed: int) -> int:
        r = random.Random(seed)
        name, src = (("big.bin", BIG), ("multi.bin", MULTI))[seed % 2]
        fd = os.open(ro.mnt / name, os.O_RDONLY)
        try:
            for _ in range(60):
                off = r.randrange(0, len(src) - 1) // 4096 * 4096
                size = r.choice([4096, 65536, 300_000, MIB])
                assert os.pread(fd, size, off) == src[off : off + size], (name, off, size)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            return 60
        finally:
            os.close(fd)

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(reader, range(8))) == 8 * 60


def test_boundaries_and_end_of_file(ro: MountProc) -> None:
    fd = os.open(ro.mnt / "multi.bin", os.O_RDONLY | os.O_DIRECT if False else os.O_RDONLY)
    try:
        for off in (MIB - 10, 2 * MIB - 1, 3 * MIB - 5, 2_999_990, 3_000_000, 3 * MIB + 5):
            assert os.pread(fd, 40, off) == MULTI[off : off + 40]
        assert os.pread(fd, 100, len(MULTI) - 5) == MULTI[-5:]
        assert os.pread(fd, 100, len(MULTI)) == b""
        assert os.pread(fd, 100, len(MULTI) + 12345) == b""
    finally:
        os.close(fd)


def test_ten_thousand_files(ro: MountProc) -> None:
    names = os.listdir(ro.mnt / "many")
    assert len(names) == MANY
    assert sorted(names)[:2] == ["f00000", "f00001"]
    lines = sh("ls", "-l", ro.mnt / "many").stdout.decode().splitlines()
    assert len(lines) == MANY + 1  # "total" line
    assert all(ln.split()[4] == "1" for ln in lines[1:])


def test_symlink(ro: MountProc) -> None:
    assert os.readlink(ro.mnt / "link") == "small.txt"
    assert (ro.mnt / "link").read_bytes() == SMALL


def test_xattrs(ro: MountProc) -> None:
    p = ro.mnt / "big.bin"
    # Read by name, not listed: copies (rsync -aX, cp -a) must not carry them off as
    # attributes of their own, which could not be set back (docs/SEMANTICS.md).
    assert not any(n.startswith("user.fsmount.") for n in os.listxattr(p))
    assert os.getxattr(p, "user.fsmount.sha256").decode() == hashlib.sha256(BIG).hexdigest()
    assert os.getxattr(p, "user.fsmount.md5").decode() == hashlib.md5(BIG).hexdigest()
    assert int(os.getxattr(p, "user.fsmount.file_id")) > 0
    # Several segments: no whole-file digest, but each segment's and every document id.
    m = ro.mnt / "multi.bin"
    with pytest.raises(OSError) as exc:
        os.getxattr(m, "user.fsmount.sha256")
    assert exc.value.errno == errno.ENODATA
    assert os.getxattr(m, "user.fsmount.segments_sha256").decode() == ",".join(
        hashlib.sha256(s).hexdigest() for s in (SEG_A, SEG_B))
    assert len(os.getxattr(m, "user.fsmount.file_id").split(b",")) == 2
    with pytest.raises(OSError) as exc:
        os.getxattr(p, "user.other")
    assert exc.value.errno == errno.ENODATA
    with pytest.raises(OSError) as exc:
        os.setxattr(p, "user.fsmount.sha256", b"x")
    assert exc.value.errno in (errno.EPERM, errno.EROFS)  # read-only: cannot be set


def test_statfs(ro: MountProc) -> None:
    st = os.statvfs(ro.mnt)
    assert st.f_blocks * st.f_frsize >= len(BIG) + len(MULTI)
    assert st.f_namemax == 255
    assert st.f_files - st.f_ffree >= MANY


def test_ro_option_refuses_changes(tmp_path: Path) -> None:
    populate(tmp_path / "store", {"small.txt": SMALL})
    with mount_store(tmp_path / "store", tmp_path / "mnt", "-o", "ro") as mp:
        assert (mp.mnt / "small.txt").read_bytes() == SMALL
        with pytest.raises(OSError) as exc:
            open(mp.mnt / "small.txt", "ab")
        assert exc.value.errno == errno.EROFS
        with pytest.raises(OSError) as exc:
            os.mkdir(mp.mnt / "newdir")
        assert exc.value.errno == errno.EROFS


def test_kernel_read_ahead_raised(ro: MountProc) -> None:
    dev = os.stat(ro.mnt).st_dev
    knob = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    assert knob.read_text().strip() == "1024"
