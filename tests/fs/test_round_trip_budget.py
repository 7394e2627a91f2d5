"""The round-trip budget (docs/SEMANTICS.md, "Round trips"), counted through the real mount.

Over ``--server`` every remote call is a round trip, so the number of calls an operation
costs is what it costs over a long link.  The mount runs with ``--log-level DEBUG``, where
:mod:`fsmount.fuse_ops` logs every remote call it makes (``remote call: NAME``); each test
counts the calls between two points of the log.  The budget per operation:

* creating, writing and closing a small file: **1** (``put_file`` with a reserved node id;
  the ids come in batches of 1,024, one ``reserve_node_ids`` per batch);
* opening and reading a small file whose entry is known: **1**;
* ``stat`` of an entry a listing returned: **0**;
* ``ls -l`` of a folder: **1** per 1,000 entries;
* unlink, rename, mkdir, rmdir, chmod, utimes: **1** each.

``tar x`` and ``rsync -a`` are counted too, and what they set is checked on the store
through a fresh mount.  Runs over both backends (tests/fs/conftest.py).
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import tarfile
from pathlib import Path

from fs_mounting import MountProc, mount_store

#: Files per workload: enough that one extra call per file is far beyond the slack.
FILES = 40
#: Calls not proportional to the files: the id pool's next batch (asked for when few
#: are left), a folder's attributes once.
SLACK = 2


def _make_source(src: Path) -> dict[str, tuple[bytes, int, int]]:
    """Small files with varied modes and old mtimes: name -> (bytes, mode, mtime_ns)."""
    src.mkdir()
    want = {}
    for i in range(FILES):
        name = f"f{i:03d}.txt"
        data = os.urandom(50 + 7 * i)
        mode = (0o644, 0o600, 0o755, 0o640)[i % 4]
        mtime_ns = (1_000_000_000 + 3600 * i) * 10**9  # whole seconds: exact in a tar too
        path = src / name
        path.write_bytes(data)
        os.chmod(path, mode)
        os.utime(path, ns=(mtime_ns, mtime_ns))
        want[name] = (data, mode, mtime_ns)
    return want


class Calls:
    """Counts the remote calls a mount logs between :meth:`mark` and :meth:`since`."""

    def __init__(self, mp: MountProc) -> None:
        self.mp = mp
        self.start = 0

    def mark(self) -> None:
        self.start = self.mp.log.stat().st_size

    def since(self) -> collections.Counter[str]:
        text = self.mp.log.read_bytes()[self.start:].decode(errors="replace")
        return collections.Counter(re.findall(r"remote call: (\w+)", text))


def _n(calls: collections.Counter[str]) -> int:
    return sum(v for k, v in calls.items() if k != "reserve_node_ids")


def test_small_file_create_write_close_is_one_call(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    with mount_store(tmp_path / "store", mnt, "--log-level", "DEBUG") as mp:
        (mnt / "d").mkdir()
        calls = Calls(mp)
        calls.mark()
        for i in range(FILES):
            with open(mnt / "d" / f"n{i}", "wb") as f:
                f.write(os.urandom(1000 + i) * 100)  # 100-200 KB
        got = calls.since()
        assert got["put_file"] == FILES and _n(got) <= FILES + SLACK, dict(got)
        assert got["reserve_node_ids"] <= 1, dict(got)


def test_tar_x_and_rsync_per_file(tmp_path: Path) -> None:
    want = _make_source(tmp_path / "src")
    tar = tmp_path / "src.tar"
    with tarfile.open(tar, "w") as t:
        t.add(tmp_path / "src", arcname="t")
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    counts = {}
    with mount_store(store, mnt, "--log-level", "DEBUG") as mp:
        calls = Calls(mp)
        for tool, cmd in [
            ("tar", ["tar", "xf", str(tar), "-C", str(mnt)]),
            ("rsync", ["rsync", "-a", f"{tmp_path / 'src'}/", f"{mnt / 'r'}/"]),
        ]:
            calls.mark()
            res = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
            assert res.returncode == 0, res.stderr.decode(errors="replace")
            # close() returned after the content was stored and rsync's rename returned,
            # so every call the files needed is logged (the log is flushed per line).
            counts[tool] = calls.since()
    # tar: one put_file per file (the mtime, mode and owner it sets on the open file go
    # with it), mkdir of its folder and the folder's times at the end.
    assert counts["tar"]["put_file"] == FILES, counts
    assert _n(counts["tar"]) <= FILES + 4, counts
    # rsync -a: a temporary file (1), then, after its close, utimes (1), a chmod where the
    # mode differs from the one it was made with (1), and its rename (1).
    assert counts["rsync"]["put_file"] == FILES, counts
    assert _n(counts["rsync"]) <= 4 * FILES + 4, counts

    # What the tools set is on the store: seen through a fresh mount (no cache of this one).
    with mount_store(store, mnt):
        for folder in ("t", "r"):
            for name, (data, mode, mtime_ns) in want.items():
                path = mnt / folder / name
                st = os.stat(path)
                assert path.read_bytes() == data, path
                assert (st.st_mode & 0o7777, st.st_mtime_ns) == (mode, mtime_ns), path


def test_reads_stats_listings_and_namespace_changes(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mount_store(store, mnt):
        (mnt / "d").mkdir()
        for i in range(FILES):
            (mnt / "d" / f"f{i:03d}").write_bytes(b"x" * (100 + i))
        big = mnt / "big"
        big.mkdir()
        for i in range(1500):
            (big / f"e{i:04d}").write_bytes(b"")
    with mount_store(store, mnt, "--log-level", "DEBUG") as mp:
        calls = Calls(mp)
        os.listdir(mnt)
        # ls -l of a folder of 1,500 entries: two pages.
        calls.mark()
        res = subprocess.run(["ls", "-l", str(big)], capture_output=True, timeout=60,
                             check=True)
        assert res.stdout.count(b"\n") == 1501
        got = calls.since()
        assert _n(got) <= 2, dict(got)
        # stat of every entry the listing returned: nothing.
        calls.mark()
        for i in range(0, 1500, 10):
            os.stat(big / f"e{i:04d}")
        assert _n(calls.since()) == 0, dict(calls.since())
        # Open and read a small file whose entry is known: one call each.
        os.listdir(mnt / "d")
        calls.mark()
        for i in range(FILES):
            assert (mnt / "d" / f"f{i:03d}").read_bytes() == b"x" * (100 + i)
        got = calls.since()
        assert _n(got) <= FILES, dict(got)
        # unlink, rename, mkdir, rmdir, chmod, utimes: one each.
        for op in (lambda: os.unlink(mnt / "d" / "f000"),
                   lambda: os.rename(mnt / "d" / "f001", mnt / "d" / "g001"),
                   lambda: os.mkdir(mnt / "d" / "sub"),
                   lambda: os.rmdir(mnt / "d" / "sub"),
                   lambda: os.chmod(mnt / "d" / "f002", 0o600),
                   lambda: os.utime(mnt / "d" / "f003", ns=(10**18, 10**18))):
            calls.mark()
            op()
            got = calls.since()
            assert _n(got) == 1, dict(got)
