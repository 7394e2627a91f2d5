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

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

from . import errors
from .reader import FileReader
from .remote import Document, Listing, Node, Remote

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

    def put(self, node: Node, seen_at: float | None = None) -> Node:
        self._nodes[node.id] = (node, self._clock() if seen_at is None else seen_at)
        return node

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

    def dir_changed(self, dir_id: int, at_ns: int) -> None:
        """Record a change this mount just made in folder ``dir_id`` (an entry created,
        renamed in or out), which the store stamped ``at_ns``: the store sets the folder's
        mtime and ctime to the changed entry's ctime in the same transaction.  The cached
        folder keeps the time it was seen at, so this never extends how long it is trusted;
        an uncached folder stays uncached (the next getattr asks the store).  A stamp older
        than the cached mtime (a rename onto itself, which changes nothing and returns the
        node's old ctime; a folder mtime set into the future) drops the cached folder
        instead."""
        got = self._nodes.get(dir_id)
        if got is None:
            return
        node, seen_at = got
        if node.is_dir and at_ns >= node.mtime_ns:
            self._nodes[dir_id] = (dataclasses.replace(node, mtime_ns=at_ns, ctime_ns=at_ns),
                                   seen_at)
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
    #: The writer of a file open for writing (see fsmount.upload); None while read-only.
    writer: Any = None
    path_hint: str = "?"
    #: Opened with direct_io (the kernel's page cache bypassed).
    direct: bool = False


class WriteState:
    """The content of a file open for writing, shared by every handle of that inode so that
    reads from any handle see what was written.

    A file written sequentially from offset 0 streams through a
    :class:`~fsmount.upload.StreamingUpload`; any other write (seek back, append to existing
    content, truncate to a non-zero size) moves the content to a
    :class:`~fsmount.upload.StagingFile` that is uploaded as a whole on commit.
    :meth:`commit` (close, fsync) finalizes and links the new content atomically.
    Operations are serialized by ``lock``.
    """

    def __init__(self, remote: Remote, nursery: Any, node: Node, *, cache_dir: str,
                 base: tuple[Document, ...] | None = None, parallel: int = 4,
                 fetch: Callable[[int, int], Any] | None = None,
                 budget: Any = None) -> None:
        self.remote = remote
        self.nursery = nursery
        self.node_id = node.id
        self.name = node.name
        self.cache_dir = cache_dir
        self.parallel = parallel
        self.fetch = fetch
        #: The mount's RetainBudget for streaming uploads (None: each upload its own).
        self.budget = budget
        #: Content the new bytes build on (None: the file starts empty, e.g. O_TRUNC).
        self.base: tuple[Document, ...] = node.segments if base is None else base
        self.size = sum(d.size for d in self.base)
        self.upload: Any = None  # StreamingUpload
        self.staging: Any = None  # StagingFile
        self.dirty = base is not None and base != node.segments
        self.mtime_ns: int | None = None  #: set by utimes while open; used at commit
        self.handles = 0
        #: Handles of this writer opened with direct_io (see fsmount.fuse_ops.Operations._file_handle).
        self.direct_handles = 0
        self.lock = trio.Lock()

    async def _to_staging(self) -> Any:
        from .upload import StagingFile

        if self.staging is None:
            if self.upload is not None:
                self.staging = await self.upload.into_staging(self.cache_dir)
                self.upload = None
            else:
                self.staging = await StagingFile.create(self.cache_dir, self.remote, self.base,
                                                        fetch=self.fetch)
        return self.staging

    async def write(self, offset: int, data: bytes) -> int:
        """Raises the upload's errors, OSError from the staging file."""
        from .upload import STREAM_SEGMENT_PARTS, StreamingUpload

        async with self.lock:
            if self.staging is None and offset == self.size and (
                    self.upload is not None or self.size == 0):
                if self.upload is None:
                    self.upload = await StreamingUpload.open(
                        self.nursery, self.remote, self.name, parallel=self.parallel,
                        spill_dir=self.cache_dir, budget=self.budget,
                        segment_parts=STREAM_SEGMENT_PARTS)
                await self.upload.write(data)
            else:
                staging = await self._to_staging()
                await staging.pwrite(offset, data)
            self.size = max(self.size, offset + len(data))
            self.dirty = True
            return len(data)

    async def defer_mtime(self, mtime_ns: int) -> bool:
        """Keep ``mtime_ns`` for the commit if content is pending (the commit links the
        content with that mtime, so the store needs no separate setattr); False when nothing
        is pending, and the caller must set it on the store.  Under the lock, so that a
        commit in progress either takes this mtime or has finished before it is checked."""
        async with self.lock:
            if not self.dirty:
                return False
            self.mtime_ns = mtime_ns
            return True

    async def read(self, offset: int, size: int) -> tuple[bytes | None, tuple[Document, ...]]:
        """What a reader of the open file sees: the written bytes, or ``(None, base)`` when
        the content is exactly the documents ``base`` (read those through the chunk cache).
        Waits for a write, truncate or commit in progress, so a read never sees a commit
        half done."""
        async with self.lock:
            if self.staging is not None:
                return bytes(await self.staging.pread(offset, size)), self.base
            if self.upload is not None:
                return bytes(await self.upload.read(offset, size)), self.base
            if self.dirty:
                return b"", self.base  # truncated to 0, nothing written yet
            return None, self.base

    @property
    def reads_from_base(self) -> bool:
        """True while the content is still exactly ``base`` (reads go to the chunk cache)."""
        return self.staging is None and self.upload is None and not self.dirty

    async def truncate(self, size: int) -> None:
        async with self.lock:
            if size == self.size:
                return
            if size == 0:
                await self.discard()
                self.base = ()
                self.size = 0
                self.dirty = True
                return
            staging = await self._to_staging()
            await staging.truncate(size)
            self.size = size
            self.dirty = True

    async def commit(self) -> Node | None:
        """Upload what is pending and link it as the file's content; None if nothing was
        pending.  Raises the upload's errors and the remote's (NotFound if the file is gone).
        """
        async with self.lock:
            if not self.dirty:
                return None
            if self.staging is not None:
                docs = await self.staging.upload(self.name, parallel=self.parallel)
            elif self.upload is not None:
                up, self.upload = self.upload, None
                try:
                    docs = await up.finish()
                except BaseException:
                    # The written bytes are gone with the upload: the file keeps its old
                    # content, and this close reports the error.
                    self.size = sum(d.size for d in self.base)
                    self.dirty = False
                    raise
            else:
                docs = self.base
            mtime = self.mtime_ns if self.mtime_ns is not None else time.time_ns()
            node = await self.remote.set_content(self.node_id, tuple(d.location for d in docs),
                                                 mtime_ns=mtime)
            self.base = tuple(node.segments)
            self.size = node.size
            self.dirty = False
            self.mtime_ns = None
            if self.staging is not None:
                await self.staging.aclose()
                self.staging = None
            return node

    async def discard(self) -> None:
        """Drop pending content (the upload is aborted, the staging file deleted)."""
        if self.upload is not None:
            await self.upload.abort()
            self.upload = None
        if self.staging is not None:
            await self.staging.aclose()
            self.staging = None
