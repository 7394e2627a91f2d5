"""The mount's lifecycle and the file verbs as a user meets them: background mount that
returns once ready, unmount by verb, by fusermount3 and by signal, one-line errors, put /
get / ls, and a corrupted blob that fails with EIO instead of returning wrong bytes."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fs_mounting import DEADLINE, MountProc, mount_store, populate, start_mount, wait_until

from fsmount.mount import is_mounted, pid_file


def fsmount(*args: str | os.PathLike[str], check: bool = False,
            **kw: object) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "fsmount", *map(os.fspath, args)],
                         capture_output=True, text=True, timeout=120, check=False, **kw)  # type: ignore[call-overload]
    if check:
        assert res.returncode == 0, res.stderr
    return res


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_background_mount_and_unmount_verb(tmp_path: Path) -> None:
    populate(tmp_path / "store", {"a.txt": b"alpha\n"})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = fsmount("mount", "--store", tmp_path / "store", mnt)
    try:
        assert res.returncode == 0, res.stderr
        # Ready when the command returns: no waiting needed.
        assert (mnt / "a.txt").read_bytes() == b"alpha\n"
        pid = int(Path(pid_file(str(mnt))).read_text())
        assert pid != os.getpid() and os.path.exists(f"/proc/{pid}")
        busy = fsmount("mount", "--store", tmp_path / "other", mnt)
        assert "already mounted" in one_line_error(busy)
        res = fsmount("unmount", mnt, check=True)
        assert not is_mounted(str(mnt))
        # The verb waited for the filesystem process to finish (and release the store).
        assert not os.path.exists(f"/proc/{pid}") or b"Z" in Path(f"/proc/{pid}/stat").read_bytes().split(b") ")[-1][:1]
    finally:
        if is_mounted(str(mnt)):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)


def test_store_locked_by_another_mount(mounted: MountProc, tmp_path: Path) -> None:
    other = tmp_path / "mnt2"
    other.mkdir()
    res = fsmount("mount", "--store", mounted.store, other)
    assert "in use" in one_line_error(res)
    assert not is_mounted(str(other))
    res = fsmount("mount", "-f", "--store", mounted.store, other)
    assert "in use" in one_line_error(res)


def test_mountpoint_errors(tmp_path: Path) -> None:
    assert "does not exist" in one_line_error(
        fsmount("mount", "--store", tmp_path / "s", tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    assert "not a directory" in one_line_error(
        fsmount("mount", "--store", tmp_path / "s", tmp_path / "file"))
    assert "unknown mount option" in one_line_error(
        fsmount("mount", "-o", "bogus", "--store", tmp_path / "s", tmp_path))
    assert "not mounted" in one_line_error(fsmount("unmount", tmp_path))


def test_cache_directory_is_created_at_mount(tmp_path: Path) -> None:
    # A fresh user has no cache directory yet: the mount makes it (private), so that the
    # first file big enough to spill parts to it streams like any other.
    cache = tmp_path / "home" / ".cache" / "fsmount"
    data = random.Random(5).randbytes(12 * 1024 * 1024)
    with mount_store(tmp_path / "store", tmp_path / "mnt", "--cache-dir", str(cache)) as mp:
        assert cache.is_dir()
        assert cache.stat().st_mode & 0o777 == 0o700
        (mp.mnt / "big").write_bytes(data)
        assert (mp.mnt / "big").read_bytes() == data
    # Without --cache-dir: $XDG_CACHE_HOME/fsmount.
    xdg = tmp_path / "xdg"
    res = fsmount("mount", "--store", tmp_path / "store", tmp_path / "mnt",
                  env={**os.environ, "XDG_CACHE_HOME": str(xdg)})
    try:
        assert res.returncode == 0, res.stderr
        assert (xdg / "fsmount").is_dir()
    finally:
        fsmount("unmount", tmp_path / "mnt")
    # A cache directory that cannot be made fails the mount with one line.
    (tmp_path / "plain").write_text("x")
    msg = one_line_error(fsmount("mount", "--store", tmp_path / "store", "--cache-dir",
                                 tmp_path / "plain" / "cache", tmp_path / "mnt"))
    assert "cache directory" in msg
    assert not is_mounted(str(tmp_path / "mnt"))


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "fusermount3"])
def test_foreground_stops_cleanly(tmp_path: Path, how: str) -> None:
    mp = start_mount(tmp_path / "store", tmp_path / "mnt")
    try:
        if how == "fusermount3":
            subprocess.run(["fusermount3", "-u", str(mp.mnt)], check=True, timeout=DEADLINE)
        else:
            mp.proc.send_signal(getattr(signal, how))
        assert mp.proc.wait(timeout=DEADLINE) == 0, mp.log_text()
        assert not is_mounted(str(mp.mnt))
        assert "Traceback" not in mp.log_text()
    finally:
        mp.unmount()


def test_options_ro_and_allow_other(tmp_path: Path) -> None:
    populate(tmp_path / "store", {"f": b"data"})
    with mount_store(tmp_path / "store", tmp_path / "mnt", "-o", "ro,allow_other") as mp:
        opts = next(line for line in Path("/proc/self/mounts").read_text().splitlines()
                    if line.split()[1] == str(mp.mnt)).split()[3].split(",")
        assert "ro" in opts and "allow_other" in opts
        assert (mp.mnt / "f").read_bytes() == b"data"


def test_put_get_ls(tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = random.Random(4).randbytes(3 * 1024 * 1024 + 99)
    (tmp_path / "in.bin").write_bytes(data)
    fsmount("init", "--store", store, check=True)
    # The folder does not exist yet: a clear error, nothing written.
    res = fsmount("put", "--store", store, tmp_path / "in.bin", "/docs/")
    assert "NOT_FOUND" in one_line_error(res) or "not exist" in res.stderr
    fsmount("put", "--store", store, tmp_path / "in.bin", "/in.bin", check=True)
    fsmount("put", "--store", store, tmp_path / "in.bin", "/copy.bin", check=True)
    out = fsmount("ls", "--store", store, "/", check=True).stdout.splitlines()
    assert [ln.split()[-1] for ln in out] == ["copy.bin", "in.bin"]
    assert out[0].split()[1] == str(len(data))
    fsmount("get", "--store", store, "/in.bin", tmp_path / "out.bin", check=True)
    assert (tmp_path / "out.bin").read_bytes() == data
    got = subprocess.run([sys.executable, "-m", "fsmount", "get", "--store", str(store),
                          "/in.bin", "-"], capture_output=True, timeout=120, check=True)
    assert got.stdout == data
    assert "NOT_FOUND" in one_line_error(fsmount("get", "--store", store, "/nope", tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    # No progress bar when stderr is not a terminal.
    assert fsmount("put", "--store", store, tmp_path / "in.bin", "/in.bin").stderr == ""
    # The verbs work on a store that is mounted, and the mount sees their changes through
    # the change feed, within its bound (docs/SEMANTICS.md, "Caches and the change feed").
    def content_is(want: bytes) -> bool:
        try:
            return (mp.mnt / "late.bin").read_bytes() == want
        except FileNotFoundError:
            return False

    with mount_store(store, tmp_path / "mnt") as mp:
        fsmount("put", "--store", store, tmp_path / "in.bin", "/late.bin", check=True)
        wait_until(lambda: content_is(data), "the put file in the mount", timeout=5)
        # Replaced by another writer: an open sees the whole new content, never a mix,
        # although the kernel cached the old size moments ago.
        bigger = data + b"more" * 100_000
        (tmp_path / "in.bin").write_bytes(bigger)
        fsmount("put", "--store", store, tmp_path / "in.bin", "/late.bin", check=True)
        wait_until(lambda: content_is(bigger), "the replaced content", timeout=5)
        (tmp_path / "in.bin").write_bytes(b"short")
        fsmount("put", "--store", store, tmp_path / "in.bin", "/late.bin", check=True)
        wait_until(lambda: content_is(b"short"), "the shortened content", timeout=5)


def test_corrupted_blob_fails_with_eio(tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = random.Random(6).randbytes(3 * 1024 * 1024)
    populate(store, {"victim.bin": data})
    blob_files = sorted(p for p in (store / "blobs").rglob("*") if p.is_file())
    assert blob_files, "no blob files found in the store layout"
    # Flip one byte in the middle of the content (1.5 MiB in: the second 1 MiB window).
    target = 1536 * 1024
    pos = 0
    for path in blob_files:
        size = path.stat().st_size
        if pos + size > target:
            with open(path, "r+b") as f:
                f.seek(target - pos)
                b = f.read(1)
                f.seek(target - pos)
                f.write(bytes([b[0] ^ 0xFF]))
            break
        pos += size
    with mount_store(store, tmp_path / "mnt") as mp:
        fd = os.open(mp.mnt / "victim.bin", os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, 0) == data[:4096]  # intact windows still read
            with pytest.raises(OSError) as exc:
                os.pread(fd, 4096, target)
            assert exc.value.errno == errno.EIO
        finally:
            os.close(fd)
        with pytest.raises(OSError) as exc:
            (mp.mnt / "victim.bin").read_bytes()
        assert exc.value.errno == errno.EIO
        wait_until(lambda: "victim.bin" in mp.log_text(), "the log line naming the file")


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    import pty

    store = tmp_path / "store"
    fsmount("init", "--store", store, check=True)
    (tmp_path / "in.bin").write_bytes(random.Random(9).randbytes(2 * 1024 * 1024))
    master, slave = pty.openpty()
    try:
        res = subprocess.run([sys.executable, "-m", "fsmount", "put", "--store", str(store),
                              str(tmp_path / "in.bin"), "/in.bin"], stderr=slave,
                             stdout=subprocess.DEVNULL, timeout=120, check=False)
        assert res.returncode == 0
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the terminal's other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert b"100.0%" in out and b"in.bin" in out
