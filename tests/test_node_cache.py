"""The node cache (fsmount.inodes.NodeCache) over the embedded store: a folder listing kept
after lookups missed in it must follow this mount's own changes, so that a lookup answered
from it (the kernel's, once an entry timed out) does not bring back old attributes — the
folder's times and nlink after a change inside it, and the link count of a node that lost
one of its names (pjdfstest rename/23.t, rename/24.t, unlink/00.t)."""

from __future__ import annotations

from pathlib import Path

import trio

from fsmount.embedded import EmbeddedRemote
from fsmount.inodes import NodeCache
from fsmount.remote import ROOT_ID


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        self.t += 1.0  # every reading is later than the one before
        return self.t


def test_a_folder_changed_here_shows_in_its_folders_kept_listing(tmp_path: Path) -> None:
    async def main() -> None:
        remote = EmbeddedRemote.open(tmp_path / "store")
        try:
            d = await remote.mkdir(ROOT_ID, "d")
            p = await remote.mkdir(d.id, "p")
            cache = NodeCache(remote, clock=_Clock())
            cache.follow(True)
            cache.put(p)  # cached (mkdir's answer) before the listing is fetched
            cache.put_listing(d.id, (await remote.list_folder(d.id)).entries, cache.now())
            sub = await remote.mkdir(p.id, "sub")
            cache.dir_changed(p.id, sub.ctime_ns, subfolders=1)
            got = await cache.lookup(d.id, "p")
            assert (got.nlink, got.mtime_ns, got.ctime_ns) == (3, sub.ctime_ns, sub.ctime_ns)
        finally:
            await remote.aclose()

    trio.run(main)


def test_a_node_that_lost_a_name_is_not_taken_from_a_kept_listing(tmp_path: Path) -> None:
    async def main() -> None:
        remote = EmbeddedRemote.open(tmp_path / "store")
        try:
            d = await remote.mkdir(ROOT_ID, "d")
            f = await remote.create_file(d.id, "f", ())
            cache = NodeCache(remote, clock=_Clock())
            cache.follow(True)
            cache.put(await remote.link(f.id, d.id, "g"))
            cache.put_listing(d.id, (await remote.list_folder(d.id)).entries, cache.now())
            assert (await cache.lookup(d.id, "f")).nlink == 2
            await remote.unlink(d.id, "g")
            cache.invalidate_linked()  # what unlink and rename do after the store's answer
            assert (await cache.lookup(d.id, "f")).nlink == 1
        finally:
            await remote.aclose()

    trio.run(main)
