"""Small files of a folder read one after another are fetched ahead (fsmount/folderscan.py).

A cold ``cat`` of every file of a folder, named one by one as ``xargs cat`` does: after
the second lookup the folder's listing answers every lookup (one call), and after the
second file the next ones are in the chunk cache before they are opened, so their reads
cost no call of their own on the way (the chunk cache counts them as prefetches, not
misses).  Read out of order, nothing is fetched ahead.  Through ``fsmount status``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fs_mounting import mount_store

FILES = 60


def _status(mnt: Path) -> dict:  # type: ignore[type-arg]
    res = subprocess.run([sys.executable, "-m", "fsmount", "status", "--json", str(mnt)],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _populate(store: Path, mnt: Path) -> dict[str, bytes]:
    want = {f"f{i:03d}.txt": f"file {i}\n".encode() * (10 + i) for i in range(FILES)}
    with mount_store(store, mnt):
        (mnt / "d").mkdir()
        for name, data in want.items():
            (mnt / "d" / name).write_bytes(data)
    return want


def test_a_cold_scan_of_a_folder_fetches_its_files_ahead(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    want = _populate(store, mnt)
    with mount_store(store, mnt):
        paths = [str(mnt / "d" / name) for name in sorted(want)]
        res = subprocess.run(["xargs", "-0", "cat"], input="\0".join(paths).encode(),
                             capture_output=True, timeout=120, check=True)
        assert res.stdout == b"".join(want[n] for n in sorted(want))
        s = _status(mnt)
    calls, cache = s["calls"], s["cache"]
    # Two lookups, then the listing answers the rest.
    assert calls.get("lookup", 0) <= 2 and calls.get("list_folder", 0) == 1, calls
    # The first two files are read on demand; every other one was fetched ahead.
    assert cache["misses"] <= 3, cache
    assert cache["prefetches"] >= FILES - 3, cache


def test_files_read_out_of_order_are_not_fetched_ahead(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    want = _populate(store, mnt)
    with mount_store(store, mnt):
        for name in sorted(want, reverse=True)[:20]:
            assert (mnt / "d" / name).read_bytes() == want[name]
        s = _status(mnt)
    assert s["cache"]["prefetches"] == 0, s["cache"]
    assert s["cache"]["misses"] == 20, s["cache"]


def test_a_scan_through_several_folders_at_once_is_fetched_ahead(tmp_path: Path) -> None:
    """Files named round-robin over folders (as ``xargs cat`` of a tar's member list
    interleaving folders): each folder's scan is still seen."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mount_store(store, mnt):
        for d in range(4):
            (mnt / f"d{d}").mkdir()
            for i in range(15):
                (mnt / f"d{d}" / f"f{i:02d}").write_bytes(b"%d/%d\n" % (d, i))
    with mount_store(store, mnt):
        paths = [str(mnt / f"d{d}" / f"f{i:02d}") for i in range(15) for d in range(4)]
        res = subprocess.run(["xargs", "-0", "cat"], input="\0".join(paths).encode(),
                             capture_output=True, timeout=120, check=True)
        assert res.stdout == b"".join(b"%d/%d\n" % (d, i) for i in range(15) for d in range(4))
        s = _status(mnt)
    # Two files per folder on demand (the third with the listing's first page, at most);
    # the rest fetched ahead.
    assert s["cache"]["misses"] <= 3 * 4, s["cache"]
    assert s["cache"]["prefetches"] >= 60 - 3 * 4, s["cache"]
