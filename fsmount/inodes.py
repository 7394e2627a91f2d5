"""Inode and handle tables of the mounted filesystem, and its attribute cache.

Node ids are the inode numbers, so there is no id translation: this module keeps

* :class:`NodeCache`: recently seen :class:`~fsmount.remote.Node` values with a short
  time-to-live (attributes and directory entries age; content never does, because a node's
  content is an immutable tuple of documents), plus the kernel's lookup counts so that
  ``forget`` has something to forget;
* :class:`HandleTable`: open file and directory handles by number;
* the handle classes themselves: :class:`DirHandle` pages through a folder listing lazily,
  :class:`FileHandle` holds the node as it was when opened (its segments) and the reader,
  and the write state of a file open for writing (:mod:`fsmount.writestate`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from . import errors
from .reader import FileReader
from .remote import Listing, Node, Remote

if TYPE_CHECKING:
    from .writestate import WriteState

#: Seconds the kernel (and this cache) may trust attributes and directory entries.
ATTR_TIMEOUT = 1.0
#: Folder listings are fetched in pages of this many entries.
LIST_PAGE = 1000


class NodeCache:
    """Nodes by id, trusted for ``ttl`` seconds, and the kernel's lookup counts."""

    def __init__(self, remote: Remote, ttl: float = ATTR_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.remote = remote
        self.ttl = ttl
        self._clock = clock
        self._nodes: dict[int, tuple[Node, float]] = {}
        self.lookups: dict[int, int] = {}
        #: Cached nodes with several names (hard links): removing a name changes them.
        self._linked: set[int] = set()

    def put(self, node: Node, seen_at: float | None = None) -> Node:
        self._nodes[node.id] = (node, self._clock() if seen_at is None else seen_at)
        if node.nlink > 1 and not node.is_dir:  # a folder's nlink counts subfolders
            self._linked.add(node.id)
        else:
            self._linked.discard(node.id)
        return node

    def invalidate_linked(self) -> None:
        """Drop every cached node with several names (a name was removed or replaced
        somewhere: one of them may have one name less)."""
        for node_id in self._linked:
            self._nodes.pop(node_id, None)
        self._linked.clear()

    def merge(self, node: Node, seen_at: float) -> Node:
        """Keep whichever of ``node`` (as seen at ``seen_at``, e.g. in a folder listing
        fetched earlier) and the cached node is fresher, and return it: a listing page must
        not undo a change made (and cached) after the page was fetched."""
        got = self._nodes.get(node.id)
        if got is not None and got[1] > seen_at:
            return got[0]
        return self.put(node, seen_at)

    def now(self) -> float:
        return self._clock()

    def peek(self, node_id: int) -> Node | None:
        """The last node seen with this id, however old."""
        got = self._nodes.get(node_id)
        return got[0] if got else None

    def invalidate(self, node_id: int) -> None:
        self._nodes.pop(node_id, None)

    def dir_changed(self, dir_id: int, at_ns: int, subfolders: int = 0) -> None:
        """Record a change this mount just made in folder ``dir_id`` (an entry created,
        renamed in or out), which the store stamped ``at_ns``: the store sets the folder's
        mtime and ctime to the changed entry's ctime in the same transaction.  The cached
        folder keeps the time it was seen at, so this never extends how long it is trusted;
        an uncached folder stays uncached (the next getattr asks the store).  A stamp older
        than the cached mtime (a rename onto itself, which changes nothing and returns the
        node's old ctime; a folder mtime set into the future) drops the cached folder
        instead.  ``subfolders``: folders the change added (or removed) there, which the
        store counted in the folder's nlink."""
        got = self._nodes.get(dir_id)
        if got is None:
            return
        node, seen_at = got
        if node.is_dir and at_ns >= node.mtime_ns:
            self._nodes[dir_id] = (dataclasses.replace(
                node, mtime_ns=at_ns, ctime_ns=at_ns,
                nlink=max(2, node.nlink + subfolders)), seen_at)
        else:
            self.invalidate(dir_id)

    async def get(self, node_id: int) -> Node:
        """The node, from the cache while fresh.  Raises NotFound and the remote's errors."""
        got = self._nodes.get(node_id)
        if got is not None and self._clock() - got[1] < self.ttl:
            return got[0]
        try:
            return self.put(await self.remote.getattr(node_id))
        except errors.NotFound:
            self.invalidate(node_id)
            raise

    async def lookup(self, parent: int, name: str) -> Node:
        """Look a name up and count it as a kernel lookup.  Raises NotFound, NotADirectory."""
        node = self.put(await self.remote.lookup(parent, name))
        self.remember(node.id)
        return node

    def remember(self, node_id: int, n: int = 1) -> None:
        self.lookups[node_id] = self.lookups.get(node_id, 0) + n

    def forget(self, node_id: int, n: int) -> None:
        left = self.lookups.get(node_id, 0) - n
        if left > 0:
            self.lookups[node_id] = left
        else:
            self.lookups.pop(node_id, None)
            self._nodes.pop(node_id, None)


T = TypeVar("T")


class HandleTable(Generic[T]):
    """Open handles by number (numbers are not reused while the mount runs)."""

    def __init__(self) -> None:
        self._next = 1
        self._handles: dict[int, T] = {}

    def add(self, handle: T) -> int:
        fh = self._next
        self._next += 1
        self._handles[fh] = handle
        return fh

    def get(self, fh: int) -> T:
        """Raises InvalidArgument for an unknown handle."""
        try:
            return self._handles[fh]
        except KeyError:
            raise errors.InvalidArgument(f"unknown file handle {fh}") from None

    def pop(self, fh: int) -> T | None:
        return self._handles.pop(fh, None)

    def values(self) -> list[T]:
        return list(self._handles.values())

    def __len__(self) -> int:
        return len(self._handles)


@dataclass(eq=False)
class DirHandle:
    """An open folder: its entries, fetched page by page as ``readdir`` asks for them.

    Positions handed to the kernel are indexes into ``entries`` (plus one), which stay valid
    for the life of the handle whatever happens to the folder meanwhile.
    """

    node_id: int
    entries: list[Node] = field(default_factory=list)
    #: When each entry was fetched (before the request went out).
    seen_at: list[float] = field(default_factory=list)
    after: str | None = None
    complete: bool = False

    async def ensure(self, remote: Remote, index: int, clock: Callable[[], float] = time.monotonic
                     ) -> bool:
        """Fetch pages until ``entries[index]`` exists; False when the folder has fewer."""
        while index >= len(self.entries) and not self.complete:
            stamp = clock()
            page: Listing = await remote.list_folder(self.node_id, self.after, LIST_PAGE)
            self.entries.extend(page.entries)
            self.seen_at.extend([stamp] * len(page.entries))
            if page.next_after is None or not page.entries:
                self.complete = True
            else:
                self.after = page.next_after
        return index < len(self.entries)


@dataclass(eq=False)
class FileHandle:
    """An open file.  ``node`` is the node as opened: its segments stay readable for as long
    as the handle is open, whatever other writers do to the name meanwhile."""

    node: Node
    reader: FileReader
    flags: int = 0
    #: The content of a file open for writing (see fsmount.writestate); None while read-only.
    writer: WriteState | None = None
    path_hint: str = "?"
    #: Opened with direct_io (the kernel's page cache bypassed).
    direct: bool = False
    #: Opened for writing by a caller that is not root: its first write clears the
    #: set-user-ID (and group-executable set-group-ID) bit, as POSIX asks.  The kernel does
    #: that itself only for writes through its page cache, not for direct_io ones.
    kill_privs: bool = False
