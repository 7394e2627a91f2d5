"""A walk through a tree (``ls -lR``, ``find``, ``du``, ``rsync``): the next folders' listings
are fetched ahead, several at once.

A cold recursive walk lists one folder after another, each listing a round trip, so over a
long link a tree of a hundred folders takes a hundred round trips however fast the link.
This is read-ahead for the walk: the access pattern is the sequence of folders opened.

Design: :class:`TreeWalk` remembers, per folder, when one of its subfolders was last
opened (``opendir``).  When a folder is opened whose parent's complete listing is kept (the
node cache keeps listings while the change feed vouches for them) and another subfolder of
that parent was opened at most :data:`WALK_OPENS` folder opens before, a walk is going
through the parent (one look into one subfolder is not a walk): the
listings of the next :data:`AHEAD_FOLDERS` subfolders after this one, in name order (the
order ``ls -R`` and most walkers take; ``find`` takes the listing's, which is the same
here), are fetched in the background, at most :data:`IN_FLIGHT` at once, each one
``list_folder`` page (a folder of more than one page is left to its own readdir).  An
``opendir`` of a folder whose listing is on its way waits for it instead of asking again.
Nothing is fetched ahead for a folder opened on its own.
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict

import trio

from . import errors
from .inodes import LIST_PAGE, NodeCache
from .remote import Node, NodeKind, Remote

log = logging.getLogger(__name__)

#: Subfolders whose listings are fetched ahead of the one opened.
AHEAD_FOLDERS = 16
#: Listings fetched ahead at once (the metadata connections serve other calls too).
IN_FLIGHT = 8
#: A folder opened at most this many folder opens after its parent or a sibling continues
#: a walk.
WALK_OPENS = 64
#: Folders remembered at most.
REMEMBERED = 256


class TreeWalk:
    """Detects walks and fetches the next folders' listings (see the module doc).  Start
    with :func:`start_tree_walk`."""

    def __init__(self, nodes: NodeCache, remote: Remote, nursery: trio.Nursery) -> None:
        self._nodes = nodes
        self._remote = remote
        self._nursery = nursery
        self._limit = trio.CapacityLimiter(IN_FLIGHT)
        #: Folder id -> the count of folder opens when one of its subfolders was last opened.
        self._child_opened: OrderedDict[int, int] = OrderedDict()
        self._opens = 0
        #: Listings on their way, by folder id.
        self._fetching: dict[int, trio.Event] = {}
        #: Per parent: the last subfolder name whose listing was fetched ahead.
        self._ahead: dict[int, str] = {}
        #: Listings fetched ahead so far (for the tests).
        self.fetched_ahead = 0

    async def wait(self, folder_id: int) -> None:
        """Wait for a listing of ``folder_id`` that is being fetched ahead, if any."""
        event = self._fetching.get(folder_id)
        if event is not None:
            await event.wait()

    def opened(self, folder: Node) -> None:
        """``folder`` was opened (opendir): note it, and fetch ahead if a walk is going
        through its parent."""
        self._opens += 1
        parent = folder.parent
        last = self._child_opened.get(parent, -WALK_OPENS - 1)
        walking = folder.id != parent and self._opens - last <= WALK_OPENS
        self._child_opened.pop(parent, None)
        self._child_opened[parent] = self._opens
        while len(self._child_opened) > REMEMBERED:
            self._child_opened.popitem(last=False)
        if walking:
            self._fetch_ahead(parent, folder.name)

    def _fetch_ahead(self, parent: int, after: str) -> None:
        listed = self._nodes.listing(parent)
        if listed is None:
            return
        done = max(after, self._ahead.get(parent, ""))
        entries = listed.entries
        first = bisect.bisect_right(entries, after, key=lambda n: n.name)
        count = 0
        for entry in entries[first:]:
            if count >= AHEAD_FOLDERS:
                break
            if entry.kind is not NodeKind.DIR:
                continue
            count += 1
            if (entry.name <= done or entry.id in self._fetching
                    or self._nodes.listing(entry.id) is not None):
                continue
            self._ahead[parent] = entry.name
            event = trio.Event()
            self._fetching[entry.id] = event
            self._nursery.start_soon(self._fetch, entry.id, event)
        while len(self._ahead) > REMEMBERED:
            self._ahead.pop(next(iter(self._ahead)))

    async def _fetch(self, folder_id: int, event: trio.Event) -> None:
        try:
            async with self._limit:
                stamp = self._nodes.now()
                page = await self._remote.list_folder(folder_id, None, LIST_PAGE)
            if page.next_after is None:
                self._nodes.put_listing(folder_id, page.entries, stamp)
                self.fetched_ahead += 1
                log.debug("listed folder %d ahead of a walk", folder_id)
        except errors.FsmountError as exc:
            # Its own readdir will ask (and report) if the walk gets there.
            log.debug("listing folder %d ahead: %s", folder_id, exc)
        finally:
            del self._fetching[folder_id]
            event.set()


def start_tree_walk(nursery: trio.Nursery, nodes: NodeCache, remote: Remote) -> TreeWalk:
    """A walk detector whose listings are fetched in ``nursery``."""
    return TreeWalk(nodes, remote, nursery)
