"""Remote calls per small file created through the mount, with an upper bound per tool.

Each small file written with ``tar x`` or ``rsync -a`` costs a fixed number of remote calls
(round trips over HTTP with ``--server``); a change that adds one more per file makes many-file
workloads measurably slower, so these tests fail on it.  The mount runs with
``--log-level DEBUG``, where :mod:`fsmount.fuse_ops` logs every remote call it makes
(``remote call: NAME``); the calls are counted from the mount's log.

Per file today (see docs/performance.md, "round trips per small file"):

* ``tar x``: lookup (the name is not there yet: negative lookups are never cached), createFile,
  saveFilePart + uploadMedia + setContent (the mtime tar sets before close travels with
  setContent), setattr (tar's final chmod) = **6**;
* ``rsync -a``: 3 negative lookups of the name and 1 of its temporary name, createFile, the
  3 upload calls, setattr (mtime) + getattr (an open: close-to-open asks the store, when the
  mount does not follow the change feed) + setattr (chmod) after close, rename = **12**.

While the mount follows the change feed, opens take the cached node (no getattr) and its
own changes coming back through the feed cost nothing: the bounds hold either way.

The same run checks that what the tools set arrives on the store: contents, modes and mtimes,
read back through a fresh mount.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import tarfile
from pathlib import Path

from fs_mounting import MountProc, mount_store

#: Files per workload: enough that one extra call per file (+FILES) exceeds the slack below.
FILES = 40
#: Calls not proportional to the files: mkdir of the target folder, the uploader's cached
#: get_config, a re-fetch of the folder's attributes once per attribute timeout (1 s).
SLACK = 8
#: The bound per small file for each tool (measured: tar 6.0, rsync 12.0).
PER_FILE = {"tar": 6, "rsync": 12}


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


def _calls(mp: MountProc, start: int, end: int) -> collections.Counter[str]:
    text = mp.log.read_bytes()[start:end].decode(errors="replace")
    return collections.Counter(re.findall(r"remote call: (\w+)", text))


def test_remote_calls_per_small_file(tmp_path: Path) -> None:
    want = _make_source(tmp_path / "src")
    tar = tmp_path / "src.tar"
    with tarfile.open(tar, "w") as t:
        t.add(tmp_path / "src", arcname="t")
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    spans: dict[str, tuple[int, int]] = {}
    with mount_store(store, mnt, "--log-level", "DEBUG") as mp:
        for tool, cmd in [
            ("tar", ["tar", "xf", str(tar), "-C", str(mnt)]),
            ("rsync", ["rsync", "-a", f"{tmp_path / 'src'}/", f"{mnt / 'r'}/"]),
        ]:
            start = mp.log.stat().st_size
            res = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
            assert res.returncode == 0, res.stderr.decode(errors="replace")
            # close() returned after the content was linked and rsync's rename returned, so
            # every call the files needed is logged (the log is flushed per line).
            spans[tool] = (start, mp.log.stat().st_size)
        counts = {tool: _calls(mp, *span) for tool, span in spans.items()}

    for tool, calls in counts.items():
        total = sum(calls.values())
        assert calls["create_file"] == FILES, (tool, calls)
        assert total <= PER_FILE[tool] * FILES + SLACK, (
            f"{tool}: {total} remote calls for {FILES} small files "
            f"({total / FILES:.2f} per file, bound {PER_FILE[tool]}): {dict(calls)}")

    # What the tools set is on the store: seen through a fresh mount (no cache of this one).
    with mount_store(store, mnt):
        for folder in ("t", "r"):
            for name, (data, mode, mtime_ns) in want.items():
                path = mnt / folder / name
                st = os.stat(path)
                assert path.read_bytes() == data, path
                assert (st.st_mode & 0o7777, st.st_mtime_ns) == (mode, mtime_ns), path
