"""A cold walk through a tree fetches the next folders' listings ahead (fsmount/treewalk.py).

``ls -lR`` and ``find`` of a fresh mount: once the walk goes into a second subfolder, the
listings of the following ones are fetched in the background, several at once, and each
folder's ``opendir`` finds its listing there (or waits for the one on its way) instead of
asking again: every folder is still listed exactly once.  A folder opened on its own
fetches nothing ahead.  Counted from the mount's DEBUG log.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from fs_mounting import mount_store

FOLDERS = 20


def _populate(store: Path, mnt: Path) -> None:
    with mount_store(store, mnt):
        for d in range(FOLDERS):
            sub = mnt / "t" / f"d{d:02d}"
            sub.mkdir(parents=True)
            for i in range(3):
                (sub / f"f{i}").write_bytes(b"x" * i)


def _count(log: Path, start: int, pattern: str) -> int:
    return len(re.findall(pattern, log.read_bytes()[start:].decode(errors="replace")))


def test_a_cold_walk_lists_the_next_folders_ahead_and_each_once(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    _populate(store, mnt)
    for walk in (["ls", "-lR"], ["find"]):
        with mount_store(store, mnt, "--log-level", "DEBUG") as mp:
            start = mp.log.stat().st_size
            res = subprocess.run([*walk, str(mnt / "t")], capture_output=True, timeout=120,
                                 check=True)
            assert res.stdout.count(b"f2") == FOLDERS
            ahead = _count(mp.log, start, r"listed folder \d+ ahead of a walk")
            lists = _count(mp.log, start, r"remote call: list_folder")
        # From the second subfolder on (one look into one subfolder is not a walk).
        assert ahead >= FOLDERS - 3, (walk, ahead)
        assert lists <= FOLDERS + 1, (walk, lists)  # t and each subfolder, once


def test_a_folder_listed_on_its_own_fetches_nothing_ahead(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    _populate(store, mnt)
    with mount_store(store, mnt, "--log-level", "DEBUG") as mp:
        start = mp.log.stat().st_size
        assert len(list((mnt / "t").iterdir())) == FOLDERS
        assert sorted(p.name for p in (mnt / "t" / "d05").iterdir()) == ["f0", "f1", "f2"]
        assert _count(mp.log, start, r"listed folder \d+ ahead of a walk") == 0
