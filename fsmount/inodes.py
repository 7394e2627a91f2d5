"""Inode and handle tables of the mounted filesystem, and its attribute cache.

Node ids are the inode numbers, so there is no id translation: this module keeps

* :class:`NodeCache`: recently seen :class:`~fsmount.remote.Node` values and complete
  folder listings, trusted for a short time-to-live, or while the mount follows the
  store's change feed (:mod:`fsmount.feed`) until the feed invalidates them (content never
  ages: a node's content is an immutable tuple of documents), plus the kernel's lookup
  counts so that ``forget`` has something to forget;
* :class:`HandleTable`: open file and directory handles by number;
* the handle classes themselves: :class:`DirHandle` pages through a folder listing lazily,
  :class:`FileHandle` holds the node as it was when opened (its segments) and the reader,
  and the write state of a file open for writing (:mod:`fsmount.writestate`).
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from . import errors
from .reader import FileReader
from .remote import Listing, Node, Remote

if TYPE_CHECKING:
    from .writestate import WriteState

#: Seconds the kernel (and this cache) may trust attributes and directory entries without
#: the change feed.
ATTR_TIMEOUT = 1.0
#: Seconds the kernel may trust them while the change feed is followed (it invalidates them
#: on a change, and everything when the feed is lost).
FEED_TIMEOUT = 300.0
#: Listings of folders with more entries than this are not kept.
LISTING_MAX = 10_000
#: Entries of all kept listings together (the least recently used folder goes first).
LISTINGS_MAX = 200_000
#: Invalidation times kept before all of them collapse into one.
CHANGED_MAX = 100_000
#: Folder listings are fetched in pages of this many entries.
LIST_PAGE = 1000
#: The lookup that misses the cache in a folder for this many times is answered by fetching
#: the folder's listing instead (while the feed is followed; folders of one page).
LIST_AFTER_LOOKUPS = 2
#: Folders whose remote lookups are counted, at most (the least recent go first).
LOOKUP_COUNTS_MAX = 1024


class Listed(NamedTuple):
    """A folder's complete listing as the node cache keeps it."""

    entries: tuple[Node, ...]  #: in name order
    by_id: dict[int, Node]
    by_name: dict[str, Node]
    seen_at: float  #: when its first page was asked for


class NodeCache:
    """Nodes by id, folder listings, and the kernel's lookup counts.

    Two modes of trust.  Without the change feed (``following`` False: at start, after a
    feed loss, against a server without one) a node is trusted for ``ttl`` seconds from
    when it was fetched, and listings are not kept.  While the mount follows the feed, a
    node or listing fetched after the feed came up is trusted until the feed invalidates
    it (:meth:`feed_invalidate`), and the kernel gets :data:`FEED_TIMEOUT` for it.  An
    answer that was in flight when the feed invalidated what it describes (its request
    started before the invalidation) is trusted only for ``ttl``: it may predate the
    change.  Every time kept is the request's start (``seen_at``), on this cache's clock.
    """

    def __init__(self, remote: Remote, ttl: float = ATTR_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.remote = remote
        self.ttl = ttl
        self._clock = clock
        self._nodes: dict[int, tuple[Node, float]] = {}
        #: Nodes as last seen before a drop_all (never served as current; see last_seen).
        self._stale: dict[int, Node] = {}
        self.lookups: dict[int, int] = {}
        #: Whether the change feed is followed (see the class docstring).
        self.following = False
        #: Nothing fetched before this is trusted beyond ``ttl`` (the feed's start, a reset).
        self._trusted_since = 0.0
        #: When the feed last invalidated a node's attributes, a name in a folder, a
        #: folder's listing.
        self._attr_changed: dict[int, float] = {}
        self._name_changed: dict[tuple[int, str], float] = {}
        self._list_changed: dict[int, float] = {}
        #: Complete listings of folders, least recently used first.
        self._listings: OrderedDict[int, Listed] = OrderedDict()
        self._listed = 0
        #: The last known (parent, name) of every node seen (to drop the kernel's entries).
        self._where: dict[int, tuple[int, str]] = {}
        #: Cached nodes with several names (hard links): removing a name changes them.
        self._linked: set[int] = set()
        #: Files created through this mount that the store does not have yet (their ids
        #: reserved): answered from here, never asked of the store, until born or dropped.
        self._unborn: dict[int, Node] = {}
        self._unborn_names: dict[tuple[int, str], int] = {}
        #: Remote lookups per folder without a kept listing (-1: listed once, too big).
        self._lookups_in: OrderedDict[int, int] = OrderedDict()

    # --- trust ----------------------------------------------------------------------------

    def _feed_trusts(self, node: Node, seen_at: float) -> bool:
        return (self.following and seen_at >= self._trusted_since
                and seen_at >= self._attr_changed.get(node.id, -1.0)
                and seen_at >= self._name_changed.get((node.parent, node.name), -1.0))

    def trusted(self, node: Node) -> bool:
        """Whether the kernel may keep ``node`` (its attributes and its entry) for
        :data:`FEED_TIMEOUT`: the feed is followed and this is the cached, uninvalidated
        node."""
        got = self._nodes.get(node.id)
        return got is not None and got[0] is node and self._feed_trusts(node, got[1])

    def timeout(self, node: Node) -> float:
        """The kernel's entry and attribute timeout for ``node``."""
        if self.following and node.id in self._unborn:
            return FEED_TIMEOUT  # only this mount changes it
        return FEED_TIMEOUT if self.trusted(node) else self.ttl

    def _fresh(self, node: Node, seen_at: float) -> bool:
        return self._feed_trusts(node, seen_at) or self._clock() - seen_at < self.ttl

    # --- nodes ----------------------------------------------------------------------------

    def last_seen(self, node_id: int) -> Node | None:
        """The node as cached, or as last seen before the caches were dropped (for answers
        while the store cannot be asked), or None."""
        got = self._nodes.get(node_id)
        return got[0] if got is not None else self._stale.get(node_id)

    def put(self, node: Node, seen_at: float | None = None, *, own: bool = False) -> Node:
        """Cache ``node`` (as seen at ``seen_at``, default now).  A node newer than its
        folder's kept listing drops the listing, unless ``own``: the answer to a change this
        mount made (a create, a content), which the listing takes in instead, so that it
        stays complete (the feed does not report the mount's own changes)."""
        self._nodes[node.id] = (node, self._clock() if seen_at is None else seen_at)
        self._stale.pop(node.id, None)
        self._where[node.id] = (node.parent, node.name)
        if node.nlink > 1 and not node.is_dir:  # a folder's nlink counts subfolders
            self._linked.add(node.id)
        else:
            self._linked.discard(node.id)
        listed = self._listings.get(node.parent) if node.parent != node.id else None
        if listed is not None and listed.by_id.get(node.id) != node:
            if own and (node.is_dir or node.nlink <= 1):
                self._listing_set(node.parent, listed, node)
            else:
                # A node newer than its folder's listing (changed here, or fetched anew).
                self._drop_listing(node.parent)
        return node

    # --- files not in the store yet -------------------------------------------------------

    def put_unborn(self, node: Node) -> None:
        """Keep a file created here that the store does not have yet (see ``_unborn``)."""
        self._unborn[node.id] = node
        self._unborn_names[(node.parent, node.name)] = node.id
        self._where[node.id] = (node.parent, node.name)
        listed = self._listings.get(node.parent)
        if listed is not None:
            self._listing_set(node.parent, listed, node)

    def unborn(self, node_id: int) -> Node | None:
        return self._unborn.get(node_id)

    def unborn_at(self, parent: int, name: str) -> Node | None:
        node_id = self._unborn_names.get((parent, name))
        return None if node_id is None else self._unborn[node_id]

    def unborn_under(self, parent: int, name: str) -> bool:
        """Whether the folder ``name`` in ``parent`` holds files created here that the store
        does not have yet."""
        return any(self._where.get(n.parent) == (parent, name) for n in self._unborn.values())

    def unborn_in(self, parent: int) -> list[Node]:
        """The files not in the store yet whose folder is ``parent``."""
        return [n for n in self._unborn.values() if n.parent == parent]

    def born(self, node: Node) -> Node:
        """The store has the file now: ``node`` is its answer (an own change)."""
        self.drop_unborn(node.id, listing=False)
        return self.put(node, own=True)

    def drop_unborn(self, node_id: int, *, listing: bool = True) -> None:
        """Forget a file that will not be created (unlinked first, or failed)."""
        node = self._unborn.pop(node_id, None)
        if node is None:
            return
        self._unborn_names.pop((node.parent, node.name), None)
        if listing:
            self.listing_remove(node.parent, node.name)

    def listing_remove(self, parent: int, name: str) -> None:
        """This mount removed ``name`` from ``parent``: its kept listing follows."""
        listed = self._listings.get(parent)
        if listed is None or name not in listed.by_name:
            return
        if listed.by_name[name].nlink > 1:
            self._drop_listing(parent)  # the node lives on under another name
            return
        entries = tuple(n for n in listed.entries if n.name != name)
        self._replace_listing(parent, entries, listed.seen_at)

    def _listing_set(self, parent: int, listed: Listed, node: Node) -> None:
        entries = [n for n in listed.entries if n.name != node.name and n.id != node.id]
        entries.append(node)
        entries.sort(key=lambda n: n.name)
        self._replace_listing(parent, tuple(entries), listed.seen_at)

    def _replace_listing(self, parent: int, entries: tuple[Node, ...], seen_at: float) -> None:
        self._drop_listing(parent)
        if len(entries) > LISTING_MAX:
            return
        self._listings[parent] = Listed(entries, {n.id: n for n in entries},
                                        {n.name: n for n in entries}, seen_at)
        self._listed += len(entries)

    def invalidate_linked(self) -> None:
        """Drop every cached node with several names (a name was removed or replaced
        somewhere: one of them may have one name less), and the kept listings that hold one
        (a lookup answered from a listing would bring the old link count back)."""
        if not self._linked:
            return
        for node_id in self._linked:
            self._nodes.pop(node_id, None)
        for dir_id, listed in list(self._listings.items()):
            if not self._linked.isdisjoint(listed.by_id):
                self._drop_listing(dir_id)
        self._linked.clear()

    def merge(self, node: Node, seen_at: float) -> Node:
        """Keep whichever of ``node`` (as seen at ``seen_at``, e.g. in a folder listing
        fetched earlier) and the cached node is fresher, and return it: a listing page must
        not undo a change made (and cached) after the page was fetched."""
        got = self._nodes.get(node.id)
        if got is not None and got[1] > seen_at:
            return got[0]
        self._nodes[node.id] = (node, seen_at)
        self._where[node.id] = (node.parent, node.name)
        if node.nlink > 1 and not node.is_dir:
            self._linked.add(node.id)
        return node

    def now(self) -> float:
        return self._clock()

    def peek(self, node_id: int) -> Node | None:
        """The last node seen with this id, however old."""
        if node_id in self._unborn:
            return self._unborn[node_id]
        got = self._nodes.get(node_id)
        return got[0] if got else None

    def where(self, node_id: int) -> tuple[int, str] | None:
        """The last known (parent, name) of a node, however old."""
        return self._where.get(node_id)

    def invalidate(self, node_id: int) -> None:
        """Forget a node (and its listing) this mount changed without knowing how."""
        self._nodes.pop(node_id, None)
        self._drop_listing(node_id)

    def dir_changed(self, dir_id: int, at_ns: int, subfolders: int = 0) -> None:
        """Record a change this mount just made in folder ``dir_id`` (an entry created,
        renamed in or out; the caller keeps the folder's kept listing right with
        ``put(own=True)`` / :meth:`listing_remove`), which the store stamped ``at_ns``: the
        store sets the folder's
        mtime and ctime to the changed entry's ctime in the same transaction.  The cached
        folder keeps the time it was seen at, so this never extends how long it is trusted;
        an uncached folder stays uncached (the next getattr asks the store).  A stamp older
        than the cached mtime (a rename onto itself, which changes nothing and returns the
        node's old ctime; a folder mtime set into the future) drops the cached folder
        instead.  ``subfolders``: folders the change added (or removed) there, which the
        store counted in the folder's nlink.  The folder's entry in its own folder's kept
        listing follows (or that listing goes), so that a lookup answered from it does not
        bring the old times and nlink back."""
        got = self._nodes.get(dir_id)
        where = self._where.get(dir_id)
        outer = self._listings.get(where[0]) if where is not None and where[0] != dir_id \
            else None
        if outer is not None and dir_id not in outer.by_id:
            outer = None
        if got is None:
            if outer is not None and where is not None:
                self._drop_listing(where[0])
            return
        node, seen_at = got
        if node.is_dir and at_ns >= node.mtime_ns:
            node = dataclasses.replace(node, mtime_ns=at_ns, ctime_ns=at_ns,
                                       nlink=max(2, node.nlink + subfolders))
            self._nodes[dir_id] = (node, seen_at)
            if outer is not None and where is not None:
                self._listing_set(where[0], outer, node)
        else:
            self.invalidate(dir_id)
            if outer is not None and where is not None:
                self._drop_listing(where[0])

    async def get(self, node_id: int) -> Node:
        """The node, from the cache while fresh.  Raises NotFound and the remote's errors."""
        unborn = self._unborn.get(node_id)
        if unborn is not None:
            return unborn
        got = self._nodes.get(node_id)
        if got is not None and self._fresh(*got):
            return got[0]
        stamp = self._clock()
        try:
            return self.put(await self.remote.getattr(node_id), stamp)
        except errors.NotFound:
            self.invalidate(node_id)
            raise

    async def fetch(self, node_id: int) -> Node:
        """The node as the store has it now (one getattr).  Raises NotFound."""
        unborn = self._unborn.get(node_id)
        if unborn is not None:
            return unborn
        stamp = self._clock()
        return self.put(await self.remote.getattr(node_id), stamp)

    async def lookup(self, parent: int, name: str) -> Node:
        """Look a name up and count it as a kernel lookup: from the folder's listing while
        the feed vouches for it, else from the store.  Raises NotFound, NotADirectory."""
        listed = self.listing(parent)
        unborn = self.unborn_at(parent, name)
        if unborn is not None:
            node = unborn
        elif listed is not None:
            node = listed.by_name.get(name)
            if node is None:
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            node = self.merge(node, listed.seen_at)
        else:
            listed = await self._list_for_lookups(parent)
            if listed is not None:
                node = listed.by_name.get(name)  # type: ignore[assignment]
                if node is None:
                    raise errors.NotFound(f"no {name!r} in folder {parent}")
                node = self.merge(node, listed.seen_at)
            else:
                stamp = self._clock()
                node = self.put(await self.remote.lookup(parent, name), stamp)
        self.remember(node.id)
        return node

    async def _list_for_lookups(self, parent: int) -> Listed | None:
        """Fetch and keep the listing of a folder that lookups keep missing in (the second
        miss, while the feed is followed): one call answers every further lookup there,
        as a cold ``cat dir/*`` or ``git status`` asks name after name.  None when the
        folder is not listed (too few misses yet, no feed, more than one page)."""
        if not self.following:
            return None
        misses = self._lookups_in.pop(parent, 0)
        if misses < 0 or misses + 1 < LIST_AFTER_LOOKUPS:
            self._lookups_in[parent] = misses if misses < 0 else misses + 1
            while len(self._lookups_in) > LOOKUP_COUNTS_MAX:
                self._lookups_in.popitem(last=False)
            return None
        stamp = self._clock()
        page = await self.remote.list_folder(parent, None, LIST_PAGE)
        if page.next_after is not None:
            self._lookups_in[parent] = -1  # a big folder: lookups one by one
            return None
        self.put_listing(parent, page.entries, stamp)
        return self.listing(parent)

    def remember(self, node_id: int, n: int = 1) -> None:
        self.lookups[node_id] = self.lookups.get(node_id, 0) + n

    def forget(self, node_id: int, n: int) -> None:
        left = self.lookups.get(node_id, 0) - n
        if left > 0:
            self.lookups[node_id] = left
        else:
            self.lookups.pop(node_id, None)
            self._nodes.pop(node_id, None)
            self._where.pop(node_id, None)

    # --- listings -------------------------------------------------------------------------

    def listing(self, dir_id: int) -> Listed | None:
        """The folder's complete listing while the feed vouches for it, else None."""
        got = self._listings.get(dir_id)
        if got is None:
            return None
        if not (self.following and got.seen_at >= self._trusted_since
                and got.seen_at >= self._list_changed.get(dir_id, -1.0)):
            self._drop_listing(dir_id)
            return None
        self._listings.move_to_end(dir_id)
        return got

    def put_listing(self, dir_id: int, entries: tuple[Node, ...], seen_at: float) -> None:
        """Keep a complete listing fetched from ``seen_at`` on (only while following)."""
        if not self.following or len(entries) > LISTING_MAX:
            return
        unborn = self.unborn_in(dir_id)
        if unborn:  # files created here that the store does not have yet belong in it
            names = {n.name for n in unborn}
            entries = tuple(sorted((*(n for n in entries if n.name not in names), *unborn),
                                   key=lambda n: n.name))
        self._drop_listing(dir_id)
        self._listings[dir_id] = Listed(entries, {n.id: n for n in entries},
                                        {n.name: n for n in entries}, seen_at)
        self._listed += len(entries)
        while self._listed > LISTINGS_MAX and self._listings:
            self._drop_listing(next(iter(self._listings)))

    def _drop_listing(self, dir_id: int) -> None:
        got = self._listings.pop(dir_id, None)
        if got is not None:
            self._listed -= len(got.entries)

    # --- what the change feed says --------------------------------------------------------

    def follow(self, on: bool) -> None:
        """The feed is (not) followed from now on; either way nothing cached so far is
        trusted beyond ``ttl`` any more."""
        self.drop_all()
        self.following = on

    def drop_all(self) -> None:
        """Forget every node and listing (kept: the kernel's lookup counts, the names, and
        each node as last seen for :meth:`last_seen`: a write-back mount stats its pending
        files from them while the store is unreachable)."""
        self._stale.update((k, node) for k, (node, _) in self._nodes.items())
        self._nodes.clear()
        self._listings.clear()
        self._listed = 0
        self._attr_changed.clear()
        self._name_changed.clear()
        self._list_changed.clear()
        self._trusted_since = self._clock()

    def feed_invalidate(self, node_id: int | None = None, name: tuple[int, str] | None = None,
                        folder: int | None = None) -> None:
        """The feed reports a change of a node's attributes, of a name in a folder, of a
        folder's entries: drop what is cached of them, and distrust answers still in
        flight that were asked before now."""
        now = self._clock()
        if node_id is not None:
            self._nodes.pop(node_id, None)
            self._drop_listing(node_id)
            self._attr_changed[node_id] = now
        if name is not None:
            self._name_changed[name] = now
        if folder is not None:
            self._drop_listing(folder)
            self._list_changed[folder] = now
        if len(self._attr_changed) + len(self._name_changed) + len(self._list_changed) > (
                CHANGED_MAX):
            # Bounded: past this many, distrust everything fetched before now instead.
            self.drop_all()


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
    #: The complete listing came from, or went into, the node cache's listings.
    kept: bool = False
    #: Files created here that the store does not have yet were added after the store's
    #: entries.
    merged: bool = False

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
    #: Write-back: the journal's pending content this handle opened (read from it while
    #: the handle lives, whatever the uploader does meanwhile); -1 when none.
    local_fd: int = -1
    #: Opened for writing by a caller that is not root: its first write clears the
    #: set-user-ID (and group-executable set-group-ID) bit, as POSIX asks.  The kernel does
    #: that itself only for writes through its page cache, not for direct_io ones.
    kill_privs: bool = False
    #: Its first read from offset 0 was reported to the folder scan (fsmount.folderscan).
    scanned: bool = False
