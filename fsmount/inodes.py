"""Inode and handle tables of the mounted filesystem, and its attribute cache.

Node ids are the inode numbers, so there is no id translation: this module keeps

* :class:`NodeCache`: recently seen :class:`~fsmount.remote.Node` values with a short
  time-to-live (attributes and directory entries age; content never does, because a node's
  content is an immutable tuple of documents), plus the kernel's lookup counts so that
  ``forget`` has something to forget;
* :class:`HandleTable`: open file and directory handles by number;
* the handle classes themselves: :class:`DirHandle` pages through a folder listing lazily,
  :class:`FileHandle` holds the node as it was when opened (its segments) and the reader,
  and leaves room for the writer of a file open for writing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import errors
from .reader import FileReader
from .remote import Listing, Node, Remote

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

    def put(self, node: Node) -> Node:
        self._nodes[node.id] = (node, self._clock())
        return node

    def peek(self, node_id: int) -> Node | None:
        """The last node seen with this id, however old."""
        got = self._nodes.get(node_id)
        return got[0] if got else None

    def invalidate(self, node_id: int) -> None:
        self._nodes.pop(node_id, None)

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
    after: str | None = None
    complete: bool = False

    async def ensure(self, remote: Remote, index: int) -> bool:
        """Fetch pages until ``entries[index]`` exists; False when the folder has fewer."""
        while index >= len(self.entries) and not self.complete:
            page: Listing = await remote.list_folder(self.node_id, self.after, LIST_PAGE)
            self.entries.extend(page.entries)
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
    #: The writer of a file open for writing (see fsmount.upload); None while read-only.
    writer: Any = None
    path_hint: str = "?"
