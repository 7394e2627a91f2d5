"""The FUSE adapter: translates kernel requests (pyfuse3, on trio) into Remote calls.

This is the only module that imports pyfuse3.  Every handler runs through :func:`_op`,
which turns domain errors into errno with :func:`fsmount.errors.errno_for` (the one table)
and anything unexpected into EIO plus one log line, so that no exception ever escapes into
pyfuse3's main loop.  Reads go through :mod:`fsmount.reader`; node and handle bookkeeping
lives in :mod:`fsmount.inodes`.  The change feed's follower (:mod:`fsmount.feed`) calls
back into :class:`Operations` (its :class:`~fsmount.feed.FeedTarget` methods) to drop what
changed from the caches and the kernel's (``invalidate_inode``/``invalidate_entry``, in a
thread: they may wait for requests this loop answers).  The mount lifecycle (:mod:`fsmount.mount`) drives the
session through :func:`session_open`, :func:`session_main`, :func:`session_terminate` and
:func:`session_close`.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, ParamSpec, TypeVar

import pyfuse3
import trio

from . import errors
from .feed import FeedFollower, start_feed_follower
from .folderscan import FolderScan
from .idpool import NodeIdPool, start_id_pool
from .inodes import ATTR_TIMEOUT, DirHandle, FileHandle, HandleTable, NodeCache
from .journal import Journal, Uploader
from .mount import default_cache_dir
from .reader import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_READ_AHEAD,
    DEFAULT_READ_AHEAD_MAX,
    ChunkCache,
    FileReader,
)
from .remote import (
    RESERVED_XATTR_PREFIX,
    ROOT_ID,
    XATTR_NAMESPACES,
    Change,
    ChangeKind,
    Document,
    Node,
    NodeKind,
    Owner,
    Remote,
    Usage,
)
from .treewalk import TreeWalk, start_tree_walk
from .upload import DEFAULT_WRITE_MEMORY, RetainBudget
from .view import OwnershipView
from .writestate import Unborn, WriteSettings, WriteState, WriteStates

log = logging.getLogger(__name__)

assert ROOT_ID == pyfuse3.ROOT_INODE

XATTR_PREFIX = RESERVED_XATTR_PREFIX
#: File capabilities: not kept (a FUSE mount is nosuid, where the kernel ignores them; and
#: the kernel asks for this attribute before every write, which must not cost a call).
CAPABILITY_XATTR = "security.capability"
#: Attributes not kept, answered without a remote call: file capabilities (above), and
#: SELinux labels, which ls -l asks of every entry it lists (a FUSE mount has none).
UNKEPT_XATTRS = frozenset({CAPABILITY_XATTR, "security.selinux"})
#: Longest name in bytes (statfs's f_namemax; the store's limit).
MAX_NAME = 255
#: chown(2)'s "leave this id as it is".
NO_ID = (0xFFFFFFFF, -1)
#: The file type bits of each node kind that is not a file, folder or symlink.
_SPECIAL_MODE = {NodeKind.FIFO: stat.S_IFIFO, NodeKind.SOCKET: stat.S_IFSOCK,
                 NodeKind.CHARDEV: stat.S_IFCHR, NodeKind.BLOCKDEV: stat.S_IFBLK}
_KIND_OF_MODE = {v: k for k, v in _SPECIAL_MODE.items()}
#: This mount's own changes remembered for the change feed's echo of them.
OWN_CHANGES_MAX = 10_000
#: Longest the change feed's report waits for the answers of this mount's changes in flight.
OWN_ANSWER_WAIT = 0.2
#: Block size reported to tools: cp, dd and friends size their buffers from st_blksize.
BLKSIZE = 1024 * 1024
#: Seconds a statfs answer is reused without the change feed (find and df ask for one on
#: every walk).
STATFS_TTL = 2.0
#: statfs when the store cannot tell its disk's free space (an older server): this much free.
UNLIMITED_FREE = 1 << 50
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"

P = ParamSpec("P")
R = TypeVar("R")


def _op(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Map every failure of a handler onto a FUSEError carrying the right errno."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except errors.FsmountError as exc:
            code = errors.errno_for(exc)
            if code == errno.EIO:
                log.error("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(code) from None
        except OSError as exc:
            raise pyfuse3.FUSEError(errors.errno_for(exc)) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _mutates(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Mark a handler that changes the store: while it runs, the change feed's report of
    its change waits for it (:meth:`Operations.apply_changes`), so that the mount knows
    the change for its own when the report arrives before the answer."""

    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: Any, **kwargs: Any) -> R:
        done = trio.Event()
        self._in_flight.add(done)
        try:
            return await fn(self, *args, **kwargs)
        finally:
            self._in_flight.discard(done)
            done.set()
            self._statfs = None  # usage may have changed

    return wrapper


def _decode(name: bytes) -> str:
    return os.fsdecode(name)


class _LoggedRemote:
    """A Remote that logs the name of every call at DEBUG (``remote call: NAME``), so that
    the remote calls a workload costs can be counted from a mount's log.  Used only when
    the mount logs at DEBUG; the normal path talks to the remote directly."""

    def __init__(self, remote: Remote) -> None:
        self._remote = remote

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._remote, name)
        if name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        async def call(*args: Any, **kwargs: Any) -> Any:
            log.debug("remote call: %s", name)
            return await attr(*args, **kwargs)

        return call


class _KernelDrop(NamedTuple):
    """One invalidation for the kernel: a node's attributes (and its pages unless
    ``attr_only``), or with ``name`` the entry ``name`` of folder ``inode``."""

    inode: int
    name: str | None = None
    attr_only: bool = True


def _drop_in_kernel(drops: Iterable[_KernelDrop]) -> None:
    """Run the kernel invalidations (blocking: call in a thread).  One the kernel has
    nothing for (ENOENT) or cannot do is skipped."""
    for d in drops:
        try:
            if d.name is None:
                pyfuse3.invalidate_inode(d.inode, d.attr_only)
            else:
                pyfuse3.invalidate_entry(d.inode, os.fsencode(d.name))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                log.debug("kernel invalidation %s: %s", d, exc)


class _ReplyBuffer:
    """One reused buffer that read replies are copied into just before they are sent.

    The kernel copies a read reply into the page cache 4 KiB at a time; from a chunk that
    has sat in the cache since its fetch (out of the CPU caches) that copy ran 3-10 times
    slower than from a buffer just written, more than the extra copy here costs
    (docs/performance.md, "reads over --server at rclone's speed", item 4).  One buffer is
    enough: pyfuse3 sends the reply as soon as the read handler returns, with no checkpoint
    in between, so no other handler can fill it while a reply still points into it.
    """

    def __init__(self) -> None:
        self._buf = bytearray(BLKSIZE)

    def fill(self, data: bytes | memoryview) -> memoryview:
        n = len(data)
        if n > len(self._buf):
            # A new buffer, not a resize: a reply's view may still hold the old one.
            self._buf = bytearray(n)
        # Same-length slice assignment: allowed while earlier views of the buffer live.
        self._buf[:n] = data
        return memoryview(self._buf)[:n]


class Operations(pyfuse3.Operations):
    """The filesystem.  Call :meth:`start` with a long-lived nursery before mounting."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(
        self,
        remote: Remote,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        read_ahead: int = DEFAULT_READ_AHEAD,
        read_ahead_max: int = DEFAULT_READ_AHEAD_MAX,
        read_only: bool = False,
        attr_timeout: float = ATTR_TIMEOUT,
        cache_dir: str | None = None,
        write_memory: int = DEFAULT_WRITE_MEMORY,
        view: OwnershipView | None = None,
        journal: Journal | None = None,
    ) -> None:
        super().__init__()
        #: The remote as given: the change feed's polls are not counted as calls.
        self._feed_remote = remote
        if log.isEnabledFor(logging.DEBUG):
            remote = _LoggedRemote(remote)  # type: ignore[assignment]
        self.remote = remote
        self.read_ahead = read_ahead
        self.read_ahead_max = read_ahead_max
        self.read_only = read_only
        self.attr_timeout = attr_timeout
        self.nodes = NodeCache(remote, ttl=attr_timeout)
        self.cache = ChunkCache(remote, cache_bytes)
        #: Small files of a folder read one after another are fetched ahead.
        self.scan = FolderScan(self.nodes, self.cache)
        self.files: HandleTable[FileHandle] = HandleTable()
        self.dirs: HandleTable[DirHandle] = HandleTable()
        self.uid = os.getuid()
        self.gid = os.getgid()
        #: -o uid=,gid=,umask=,file_mode=,dir_mode=: what stat shows (fsmount.view).
        self.view = view or OwnershipView()
        # Content version last opened per inode: reopening unchanged content keeps the
        # kernel's page cache.
        self._opened_version: dict[int, tuple[int, tuple[int, ...]]] = {}
        #: Content of files open for writing, by inode (shared by all their handles).
        self.writers: dict[int, WriteState] = {}
        self.cache_dir = cache_dir or default_cache_dir()
        #: Shared by all streaming uploads, so that many writers at once stay bounded.
        self.write_budget = RetainBudget(write_memory)
        #: Builds every write state (set by start: they run uploads in its nursery).
        self._write_states: WriteStates | None = None
        self._nursery: trio.Nursery | None = None
        self._reply = _ReplyBuffer()
        #: The change feed's follower (set by start).
        self.feed: FeedFollower | None = None
        #: Node ids reserved for files created here (set by start; None: every create is
        #: a round trip, as with the write-back journal, which creates them itself).
        self.ids: NodeIdPool | None = None
        #: Fetches the next folders' listings ahead of a tree walk (set by start).
        self.walk: TreeWalk | None = None
        #: This mount's own changes, to skip when the feed reports them back: the stamps
        #: (ctime) of the transactions, and the (folder, name)s it removed.
        self._own_stamps: OrderedDict[int, None] = OrderedDict()
        self._own_removals: OrderedDict[tuple[int, str], None] = OrderedDict()
        #: Handlers changing the store now (see _mutates).
        self._in_flight: set[trio.Event] = set()
        #: Write-back (``--write-back``): the journal every change goes through, and the
        #: uploader that sends it (run by fsmount.mount, which also drains it at unmount).
        self.journal = journal
        self.uploader: Uploader | None = None
        if journal is not None:
            self.uploader = Uploader(journal, remote, cache_dir=self.cache_dir,
                                     on_stored=self._stored)
        #: Set through the root's ``user.fsmount.nowait``: unmount leaves the journal.
        self.no_wait = False
        #: The last statfs answer and when it came (see statfs).
        self._statfs: tuple[Usage, float] | None = None
        #: When a file open for writing last changed (write, truncate) before its commit:
        #: its ctime until the commit stores a later one.
        self._changed_ns: dict[int, int] = {}

    def start(self, nursery: trio.Nursery) -> None:
        self.cache.start(nursery)
        self._nursery = nursery
        self.feed = start_feed_follower(nursery, self._feed_remote, self)
        self.walk = start_tree_walk(nursery, self.nodes, self.remote)
        if self.journal is None and not self.read_only:
            self.ids = start_id_pool(nursery, self.remote)
        self._write_states = WriteStates(WriteSettings(
            self.remote, nursery, cache_dir=self.cache_dir, budget=self.write_budget,
            journal=self.journal))

    def _stored(self, node: Node) -> None:
        """The write-back uploader stored ``node``: what this mount caches follows."""
        self.nodes.put(node)
        state = self.writers.get(node.id)
        if state is not None:
            state.stored(node)
        else:
            self._changed_ns.pop(node.id, None)  # a journaled chmod's ctime: stored now

    # --- helpers ---------------------------------------------------------------------

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.id
        a.st_atime_ns = node.mtime_ns if node.atime_ns is None else node.atime_ns
        a.st_mtime_ns = node.mtime_ns
        a.generation = 0
        ctime_ns = node.ctime_ns
        # Long while the change feed vouches for this node, else the short timeout.
        a.entry_timeout = a.attr_timeout = self.nodes.timeout(node)
        if node.kind is NodeKind.DIR:
            a.st_mode = stat.S_IFDIR | node.mode
            a.st_nlink = max(2, node.nlink)  # 2 + subfolders; older stores' rows say 1
            a.st_size = 0
        elif node.kind is NodeKind.SYMLINK:
            a.st_mode = stat.S_IFLNK | 0o777
            a.st_nlink = node.nlink
            a.st_size = len(os.fsencode(node.target or ""))
        elif node.kind in _SPECIAL_MODE:
            a.st_mode = _SPECIAL_MODE[node.kind] | node.mode
            a.st_nlink = node.nlink
            a.st_size = 0
        else:
            a.st_mode = stat.S_IFREG | node.mode
            a.st_nlink = node.nlink
            state = self.writers.get(node.id)
            pending = self.journal.pending_file(node.id) if self.journal is not None else None
            if pending is not None:
                # Write-back: the content's change (a close, a truncate) is the ctime's.
                ctime_ns = max(ctime_ns, int(pending.content.created_at * 1e9))
                a.st_size = pending.content.size
                a.st_atime_ns = a.st_mtime_ns = (
                    pending.mtime_ns if pending.mtime_ns is not None
                    else pending.content.mtime_ns)
                if pending.mode is not None:
                    a.st_mode = stat.S_IFREG | pending.mode
            else:
                a.st_size = node.size
            if state is not None:
                a.st_size = state.size
            if state is not None and state.mode_bits is not None:
                a.st_mode = stat.S_IFREG | state.mode_bits  # journaled with the content
            if state is not None and state.mtime_ns is not None:
                a.st_mtime_ns = state.mtime_ns  # linked with the content
                if node.atime_ns is None:
                    a.st_atime_ns = state.mtime_ns
        # Written or truncated, not stored yet: the ctime of that change.  Not the mtime: a
        # changed mtime makes the kernel drop the file's page cache (which a read-write
        # handle writes through); it is stored with the content at close or fsync.
        a.st_ctime_ns = max(ctime_ns, self._changed_ns.get(node.id, 0))
        # A node made without an owner (REST, put, older stores) is the mounting user's;
        # the -o uid=/gid=/umask=/... view comes last: options given override the node's.
        a.st_uid, a.st_gid = self.view.owner(self.uid if node.uid is None else node.uid,
                                             self.gid if node.gid is None else node.gid)
        if node.kind is not NodeKind.SYMLINK:
            a.st_mode = stat.S_IFMT(a.st_mode) | self.view.perms(
                stat.S_IMODE(a.st_mode), is_dir=node.kind is NodeKind.DIR)
        a.st_rdev = node.rdev
        a.st_blksize = BLKSIZE
        a.st_blocks = -(-a.st_size // 512)
        return a

    def path_of(self, node: Node) -> str:
        """Best-effort path of a node for log lines (from the nodes seen so far)."""
        parts = [node.name]
        parent = node.parent
        for _ in range(64):
            if parent == ROOT_ID:
                break
            p = self.nodes.peek(parent)
            if p is None:
                parts.append("…")
                break
            parts.append(p.name)
            parent = p.parent
        return "/" + "/".join(reversed(parts))

    async def _node(self, inode: int, *, fresh: bool = False) -> Node:
        """The node of an inode the kernel knows.  A node that is gone from the store (deleted,
        or replaced by a new node under the same name by another client) is the open files'
        snapshot if any, else ESTALE: the kernel then looks the name up again and retries."""
        try:
            if fresh:
                return await self.nodes.fetch(inode)
            return await self.nodes.get(inode)
        except errors.TransportError:
            stale = self.nodes.last_seen(inode) if self.journal is not None else None
            if stale is None:
                raise
            # Write-back through an outage: the last attributes seen (and the pending
            # ones over them), so that writing into the journal goes on.
            return stale
        except errors.NotFound:
            for handle in self.files.values():
                if handle.node.id == inode:
                    # Open but deleted: no names left.
                    return dataclasses.replace(handle.node, nlink=0)
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    async def _invalidate_attrs(self, inode: int) -> None:
        """Make the kernel drop its cached attributes (e.g. a size another client changed).
        In a thread: the notification may wait for requests this loop has to answer."""
        try:
            await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode, True)
        except OSError as exc:
            log.debug("invalidate_inode(%d): %s", inode, exc)

    def _reader(self, segments: tuple[Document, ...], name: str) -> FileReader:
        return FileReader(self.cache, segments, name, read_ahead=self.read_ahead,
                          read_ahead_max=self.read_ahead_max)

    def _check_writable(self) -> None:
        if self.read_only:
            raise pyfuse3.FUSEError(errno.EROFS)

    async def _new_owner(self, parent_inode: int, ctx: Any) -> tuple[Owner, bool]:
        """The owner of a node the caller creates in ``parent_inode`` (POSIX: the caller's
        uid; the folder's group when the folder has the set-group-ID bit, else the caller's
        gid), and whether the folder has that bit (new folders inherit it)."""
        # The folder as last seen, however old (its mode and group rarely change): a
        # create must not cost a getattr of its folder.
        parent = self.nodes.peek(parent_inode) or await self.nodes.get(parent_inode)
        if parent.mode & stat.S_ISGID:
            return Owner(ctx.uid, self.gid if parent.gid is None else parent.gid), True
        return Owner(ctx.uid, ctx.gid), False

    def _owner_ids(self, node: Node) -> tuple[int, int]:
        return (self.uid if node.uid is None else node.uid,
                self.gid if node.gid is None else node.gid)

    # --- metadata --------------------------------------------------------------------

    @_op
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if len(name) > MAX_NAME:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)  # the kernel leaves that to us
        sname = _decode(name)
        if sname == ".":
            node = await self.nodes.get(parent_inode)
        elif sname == "..":
            here = await self.nodes.get(parent_inode)
            node = await self.nodes.get(here.parent if here.id != ROOT_ID else ROOT_ID)
        else:
            try:
                node = await self.nodes.lookup(parent_inode, sname)
            except errors.TransportError:
                # Write-back through an outage: a name this mount's journal holds is
                # answered from the node as last seen (the feed's fallback dropped the
                # kernel's entries, and the store cannot be asked).
                pending = (self.journal.pending_at(parent_inode, sname)
                           if self.journal is not None else None)
                stale = self.nodes.last_seen(pending) if pending is not None else None
                if stale is None:
                    raise
                node = stale
            return self._attrs(node)
        self.nodes.remember(node.id)
        return self._attrs(node)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, n in inode_list:
            self.nodes.forget(inode, n)

    @_op
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attrs(await self._node(inode))

    @_op
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        node = await self.nodes.get(inode)
        if node.kind is not NodeKind.SYMLINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.target or "")

    @_op
    async def opendir(self, inode: int, ctx: Any) -> int:
        node = await self.nodes.get(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        handle = DirHandle(inode)
        if self.walk is not None:
            self.walk.opened(node)
            await self.walk.wait(inode)  # its listing may be on its way
        listed = self.nodes.listing(inode)
        if listed is not None:
            # The feed vouches for the listing this mount has: no round trip.
            handle.entries = list(listed.entries)
            handle.seen_at = [listed.seen_at] * len(listed.entries)
            handle.complete = handle.kept = True
        return self.dirs.add(handle)

    @_op
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs.get(fh)
        index = start_id
        while await handle.ensure(self.remote, index, self.nodes.now) or (
                self._merge_unborn(handle) and index < len(handle.entries)):
            node = self.nodes.merge(handle.entries[index], handle.seen_at[index])
            if not pyfuse3.readdir_reply(token, os.fsencode(node.name), self._attrs(node),
                                         index + 1):
                return
            self.nodes.remember(node.id)
            index += 1
        if handle.complete and not handle.kept:
            handle.kept = True
            self.nodes.put_listing(handle.node_id, tuple(handle.entries),
                                   handle.seen_at[0] if handle.seen_at else self.nodes.now())

    def _merge_unborn(self, handle: DirHandle) -> bool:
        """Add the files created here that the store does not have yet to a complete
        listing fetched from the store, once; True if it added any."""
        if not handle.complete or handle.merged or handle.kept:
            return False
        handle.merged = True
        names = {n.name for n in handle.entries}
        extra = [n for n in self.nodes.unborn_in(handle.node_id) if n.name not in names]
        handle.entries.extend(extra)
        handle.seen_at.extend([self.nodes.now()] * len(extra))
        return bool(extra)

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh)

    @_op
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        # find and df ask before every walk: an answer is good until this mount changes
        # something or the change feed reports a change (without the feed: STATFS_TTL).
        now = time.monotonic()
        if self._statfs is None or (not self.nodes.following
                                    and now - self._statfs[1] >= STATFS_TTL):
            self._statfs = (await self.remote.statfs(), now)
        usage = self._statfs[0]
        s = pyfuse3.StatvfsData()
        s.f_bsize = BLKSIZE
        s.f_frsize = 4096
        # Free: what the quota leaves, but never more than the store's disk has.
        free = UNLIMITED_FREE if usage.disk_free_bytes is None else usage.disk_free_bytes
        if usage.quota_bytes:
            free = min(free, max(0, usage.quota_bytes - usage.used_bytes))
        total = usage.used_bytes + free
        s.f_blocks = total // s.f_frsize
        s.f_bfree = free // s.f_frsize
        s.f_bavail = s.f_bfree
        max_files = usage.max_files or usage.files + (1 << 32)
        s.f_files = max_files
        s.f_ffree = max(0, max_files - usage.files)
        s.f_favail = s.f_ffree
        s.f_namemax = 255
        return s

    # --- extended attributes ----------------------------------------------------------
    # ``user.fsmount.*`` are computed from the content (read-only); the rest are the
    # store's.  The kernel applies the namespaces' permission rules (trusted.* needs
    # CAP_SYS_ADMIN, user.* only on files and folders); pyfuse3 turns XATTR_CREATE and
    # XATTR_REPLACE into a getxattr first, and answers ERANGE for a short buffer.

    def _xattrs(self, node: Node) -> dict[str, str]:
        if node.kind is not NodeKind.FILE:
            return {}
        segs = node.segments
        if not segs:
            return {"sha256": EMPTY_SHA256, "md5": EMPTY_MD5}
        out = {"file_id": ",".join(str(d.id) for d in segs)}
        if len(segs) == 1:
            out["sha256"] = segs[0].sha256
            out["md5"] = segs[0].md5
        else:
            # The whole file's SHA-256 as its writer computed it (every file written through
            # the mount has it); each segment's always.
            if node.sha256:
                out["sha256"] = node.sha256
            out["segments_sha256"] = ",".join(d.sha256 for d in segs)
        return out

    def _state_of(self, inode: int) -> str:
        """``pending`` while a file's content (or metadata) is not in the store yet."""
        state = self.writers.get(inode)
        if state is not None and state.dirty:
            return "pending"
        if self.journal is not None and self.journal.pending_file(inode) is not None:
            return "pending"
        return "stored"

    def _control_status(self) -> bytes:
        """The root's ``user.fsmount.status``: what ``fsmount status`` prints (JSON)."""
        if self.uploader is None:
            return json.dumps({"write_back": False}).encode()
        return json.dumps({"write_back": True} | self.uploader.status()).encode()

    @_op
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        sname = _decode(name)
        if sname == XATTR_PREFIX + "status" and inode == ROOT_ID:
            return self._control_status()
        if sname == XATTR_PREFIX + "state":
            node = await self._node(inode)
            if node.kind is NodeKind.FILE:
                return self._state_of(inode).encode()
        if self.nodes.unborn(inode) is not None:
            if not sname.startswith(XATTR_PREFIX):
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR)  # nothing set on it yet
            await self._materialize(inode)  # the content's checksums are the store's
        if sname.startswith(XATTR_PREFIX):
            value = self._xattrs(await self.nodes.get(inode)).get(sname[len(XATTR_PREFIX):])
            if value is not None:
                return value.encode()
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        if not sname.startswith(XATTR_NAMESPACES) or sname in UNKEPT_XATTRS:
            # system.* (POSIX ACLs), file capabilities and SELinux labels are not kept: no such attribute,
            # without a remote call (the kernel asks for security.capability on writes).
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return await self.remote.get_xattr(inode, sname)

    @_op
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        # The computed user.fsmount.* are read by name and not listed: rsync -aX and
        # cp --preserve=xattr copy every listed attribute and remove the destination's
        # unlisted ones, so listing them would carry them off as stored attributes (that
        # cannot be set back here) and make every copy into the mount fail to remove them.
        if self.nodes.unborn(inode) is not None:
            return []  # not in the store yet: nothing set on it
        return [os.fsencode(n) for n in await self.remote.list_xattrs(inode)]

    @_op
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        # The control channel of ``fsmount sync`` / ``pause`` / ``resume`` / ``unmount
        # --no-wait`` (fsmount.cli_writeback): set on the mount's root, ``sync`` waits for
        # the journal to drain, ``uploads`` pauses or resumes the uploader, ``nowait`` tells
        # the unmount not to wait.
        sname = _decode(name)
        if inode == ROOT_ID and self.journal is not None:
            if sname == XATTR_PREFIX + "sync":
                await self.journal.wait_drained()
                return
            if sname == XATTR_PREFIX + "nowait":
                self.no_wait = True
                return
            if sname == XATTR_PREFIX + "uploads" and self.uploader is not None:
                if value not in (b"pause", b"resume"):
                    raise pyfuse3.FUSEError(errno.EINVAL)
                self.uploader.pause(value == b"pause")
                return
        self._check_writable()
        if not sname.startswith(XATTR_NAMESPACES) or sname in UNKEPT_XATTRS:
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        await self._materialize(inode)
        await self.remote.set_xattr(inode, sname, bytes(value))
        self.nodes.invalidate(inode)  # its ctime moved

    @_op
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self._check_writable()
        sname = _decode(name)
        if sname.startswith(XATTR_PREFIX):
            raise pyfuse3.FUSEError(errno.EPERM)
        if not sname.startswith(XATTR_NAMESPACES):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        if self.nodes.unborn(inode) is not None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)  # nothing set on it yet
        await self.remote.remove_xattr(inode, sname)
        self.nodes.invalidate(inode)

    # --- files -----------------------------------------------------------------------

    def _file_handle(self, node: Node, flags: int, writer: WriteState | None
                     ) -> pyfuse3.FileInfo:
        reader = self._reader(node.segments, self.path_of(node))
        # A write-only handle bypasses the kernel's page cache (direct_io): the written
        # bytes would otherwise stay cached as one more copy of everything cp/dd/rsync
        # write, besides the upload's own (docs/performance.md).  Nothing reads through
        # such a handle, and it cannot be mmapped.  While one is open, every other handle
        # of the file bypasses the page cache too, so that reads see the writes.
        state = self.writers.get(node.id)
        direct = (writer is not None and flags & os.O_ACCMODE == os.O_WRONLY) or (
            state is not None and state.direct_handles > 0)
        handle = FileHandle(node, reader, flags, writer, direct=direct)
        pending = self.journal.pending_file(node.id) if self.journal is not None else None
        if pending is not None:
            try:
                handle.local_fd = os.open(self.journal.content_path(  # type: ignore[union-attr]
                    pending.content.id), os.O_RDONLY)
            except FileNotFoundError:
                pass  # stored this instant: the store has the content
        fh = self.files.add(handle)
        if direct and writer is not None:
            writer.direct_handles += 1
        version = (node.version, tuple(d.id for d in node.segments))
        keep = writer is None and not direct and self._opened_version.get(node.id) == version
        self._opened_version[node.id] = version
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, direct_io=direct)

    def _new_write_state(self, node: Node, *, truncate: bool = False) -> WriteState:
        if self._write_states is None:
            raise errors.FsmountError("the filesystem was not started")
        return self._write_states.open(node, truncate=truncate)

    def _writer_for(self, node: Node, *, truncate: bool) -> WriteState:
        state = self.writers.get(node.id)
        if state is None:
            state = self._new_write_state(node, truncate=truncate)
            self.writers[node.id] = state
        state.handles += 1
        return state

    @_op
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        # Close-to-open: an open sees the content another client last closed.  While the
        # change feed is followed the cached node is current until the feed says otherwise
        # (it reports a replaced content within the bound); without it every open asks the
        # store (one getattr).
        pending = self.journal.pending_file(inode) if self.journal is not None else None
        if inode in self.writers:
            node = await self.nodes.get(inode)
        elif pending is not None and self.nodes.last_seen(inode) is not None:
            # Write-back: this mount holds the file's newest content (its conflict check
            # is the uploader's), so opening it needs no store (which may be unreachable).
            node = self.nodes.last_seen(inode)  # type: ignore[assignment]
        else:
            before = self.nodes.peek(inode)
            node = await self._node(inode, fresh=not self.nodes.following)
            if before is not None and (before.version, before.size) != (node.version, node.size):
                await self._invalidate_attrs(inode)
        if node.kind is not NodeKind.FILE:
            raise pyfuse3.FUSEError(errno.EISDIR if node.is_dir else errno.EINVAL)
        writer = None
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            self._check_writable()
            writer = self._writer_for(node, truncate=False)
            if flags & os.O_TRUNC:
                await writer.truncate(0)
        fi = self._file_handle(node, flags, writer)
        if writer is not None and ctx is not None and ctx.uid != 0:
            self.files.get(fi.fh).kill_privs = True
        return fi

    @_op
    @_mutates
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._check_writable()
        owner, _ = await self._new_owner(parent_inode, ctx)
        sname, perm = _decode(name), stat.S_IMODE(mode) & ~ctx.umask
        node_id = await self.ids.take() if self.ids is not None else None
        if node_id is not None:
            # Deferred: the store gets the file with its content at the first close or
            # fsync (put_file with this reserved id: one round trip for a small file).
            if len(name) > MAX_NAME:
                raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
            now = time.time_ns()
            node = Node(node_id, parent_inode, sname, NodeKind.FILE, perm, 0, now, now,
                        uid=owner.uid, gid=owner.gid)
            assert self._write_states is not None
            writer = self._write_states.create(
                node, Unborn(perm, owner, exclusive=bool(flags & os.O_EXCL), created_ns=now))
            writer.handles += 1
            self.writers[node_id] = writer
            self.nodes.put_unborn(node)
        else:
            node = self.nodes.put(self._own(await self.remote.create_file(
                parent_inode, sname, (), mode=perm, owner=owner)), own=True)
            # The kernel re-reads the folder's attributes after a create; answer from the
            # cache.
            self.nodes.dir_changed(parent_inode, node.ctime_ns)
            writer = self._writer_for(node, truncate=True)
        fi = self._file_handle(node, flags, writer)
        self.nodes.remember(node.id)
        return fi, self._attrs(node)

    async def _materialize(self, inode: int) -> None:
        """Create in the store a file created here that it does not have yet (its pending
        content goes with it), for an operation that needs the store's node.

        Raises the commit's errors.
        """
        state = self.writers.get(inode)
        if state is None or state.unborn is None:
            return
        self._born(await state.commit())

    def _born(self, node: Node | None) -> None:
        """A file created here is in the store now (``node``: the commit's answer)."""
        if node is None:
            return
        self.nodes.born(self._own(node))
        self.nodes.dir_changed(node.parent, node.ctime_ns)
        for handle in self.files.values():
            if handle.node.id == node.id:
                handle.node = node

    def _abandon_unborn(self, parent: int, name: str) -> Node | None:
        """A file created here that the store does not have yet loses its name (unlink, or
        a rename over it): it will never be created.  Returns it, or None if ``name`` is
        no such file."""
        node = self.nodes.unborn_at(parent, name)
        if node is None:
            return None
        state = self.writers.get(node.id)
        if state is not None:
            state.abandon()
        self.nodes.drop_unborn(node.id)
        return node

    async def _read_pending(self, handle: FileHandle, off: int, size: int) -> bytes | None:
        """Write-back: the file's pending content from the journal, or None when it has
        none (it is in the store)."""
        if handle.local_fd >= 0 and handle.writer is None:
            return await trio.to_thread.run_sync(os.pread, handle.local_fd, size, off)
        pending = self.journal.pending_file(handle.node.id) if self.journal else None
        if pending is None:
            return None
        path = self.journal.content_path(pending.content.id)  # type: ignore[union-attr]

        def pread() -> bytes | None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return None  # stored meanwhile
            try:
                return os.pread(fd, size, off)
            finally:
                os.close(fd)

        return await trio.to_thread.run_sync(pread)

    @_op
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.files.get(fh)
        state = self.writers.get(handle.node.id)
        if off == 0 and not handle.scanned and state is None:
            # A file read from its start: part of a folder scan? (Counted at the first
            # read, not at open: rsync, for one, opens the files it wrote without reading.)
            handle.scanned = True
            self.scan.read_from_start(handle.node)
        if state is not None:
            data, base = await state.read(off, size)
            if data is not None:
                return data
        if self.journal is not None:
            pending_data = await self._read_pending(handle, off, size)
            if pending_data is not None:
                return pending_data
        if state is not None:
            if handle.reader.segments != base:
                handle.reader.close()
                handle.reader = self._reader(base, handle.reader.name)
        try:
            data = await handle.reader.read(off, size)
        except (errors.FileReferenceExpired, errors.FileIdInvalid):
            # The content this handle opened was replaced and reclaimed: read the current one.
            node = await self.remote.getattr(handle.node.id)
            handle.node = self.nodes.put(node)
            handle.reader.close()
            handle.reader = self._reader(node.segments, handle.reader.name)
            data = await handle.reader.read(off, size)
        return self._reply.fill(data)  # type: ignore[return-value]

    @_op
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.files.get(fh)
        if handle.writer is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if handle.kill_privs:
            handle.kill_privs = False
            await self._kill_privs(handle.node.id)
        self._changed_ns[handle.node.id] = time.time_ns()
        return await handle.writer.write(off, buf)

    async def _kill_privs(self, inode: int) -> None:
        """Clear set-user-ID, and set-group-ID with group execute, after a write."""
        node = await self.nodes.get(inode)
        kill = node.mode & stat.S_ISUID
        if node.mode & stat.S_ISGID and node.mode & stat.S_IXGRP:
            kill |= stat.S_ISGID
        if kill:
            self.nodes.put(await self.remote.setattr(inode, mode=node.mode & ~kill), own=True)
            await self._invalidate_attrs(inode)

    async def _commit(self, handle: FileHandle) -> None:
        state = handle.writer
        if state is None or not state.dirty:
            return
        unborn = state.unborn is not None
        try:
            node = await state.commit()
        except errors.NotFound:
            # The file was deleted while open for writing (or, a new one, its folder was):
            # its content goes with it.
            await state.discard()
            return
        except Exception as exc:
            # Logged here, once, with the file name; close/fsync get the errno.
            if unborn and isinstance(exc, errors.AlreadyExists):
                log.error("%s: another client created this name meanwhile (the create was "
                          "exclusive): not stored", self.path_of(handle.node))
            else:
                log.error("%s: could not store the file: %s", handle.reader.name, exc)
            raise pyfuse3.FUSEError(errors.errno_for(exc)) from None
        if node is not None and unborn:
            self._born(node)
            self._opened_version.pop(node.id, None)
        elif node is not None:
            self.nodes.put(self._own(node), own=True)
            handle.node = node
            self._opened_version.pop(node.id, None)
        elif self.journal is not None:
            self._opened_version.pop(handle.node.id, None)  # journaled: the kernel re-reads

    @_op
    @_mutates
    async def flush(self, fh: int) -> None:
        await self._commit(self.files.get(fh))

    @_op
    @_mutates
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self.files.get(fh)
        await self._commit(handle)
        if self.journal is not None:
            # Write-back: fsync(2) returns once the file is in the store.
            await self.journal.wait_stored(handle.node.id)

    @_mutates
    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh)
        if handle is None:
            return
        handle.reader.close()
        if handle.local_fd >= 0:
            os.close(handle.local_fd)
            handle.local_fd = -1
        state = handle.writer
        if state is not None:
            state.handles -= 1
            if handle.direct:
                state.direct_handles -= 1
            if state.handles <= 0:
                try:
                    await self._commit(handle)
                except Exception:
                    pass  # already logged; release has nobody to report to
                finally:
                    await state.discard()
                    if self.writers.get(handle.node.id) is state:
                        del self.writers[handle.node.id]
                        self._changed_ns.pop(handle.node.id, None)
                    if state.unborn is not None:
                        # Its create failed (reported by close): it is not in the store.
                        self.nodes.drop_unborn(handle.node.id)

    # --- namespace changes -----------------------------------------------------------

    @_op
    @_mutates
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        self._check_writable()
        owner, setgid = await self._new_owner(parent_inode, ctx)
        dmode = stat.S_IMODE(mode) & ~ctx.umask | (stat.S_ISGID if setgid else 0)
        stamp = self.nodes.now()
        node = self.nodes.put(self._own(await self.remote.mkdir(
            parent_inode, _decode(name), dmode, owner=owner)), own=True)
        self.nodes.dir_changed(parent_inode, node.ctime_ns, subfolders=1)
        # A new folder is empty: its (complete) listing answers lookups in it at once.
        self.nodes.put_listing(node.id, (), stamp)
        self.nodes.remember(node.id)
        return self._attrs(node)

    @_op
    @_mutates
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self._check_writable()
        if self.nodes.unborn_under(parent_inode, _decode(name)):
            # Files created in it that the store does not have yet: not empty.
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        # Noted before the call: the feed may report the removal before the answer arrives.
        self._own_removal(parent_inode, _decode(name))
        try:
            stamp = await self.remote.rmdir(parent_inode, _decode(name))
        except BaseException:
            self._own_removals.pop((parent_inode, _decode(name)), None)
            raise
        self._removed(parent_inode, _decode(name), stamp, subfolders=-1)

    @_op
    @_mutates
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self._check_writable()
        # An open handle keeps reading the content it opened: the store keeps documents
        # that lose their last file readable for a grace period (Limits.unlinked_grace).
        sname = _decode(name)
        if self._abandon_unborn(parent_inode, sname) is not None:
            return  # never in the store: nothing to tell it
        # Noted before the call: the feed may report the removal before the answer arrives.
        self._own_removal(parent_inode, sname)
        deleting = self._deleting(parent_inode, sname)
        try:
            stamp = await self.remote.unlink(parent_inode, sname)
        except BaseException:
            self._own_removals.pop((parent_inode, sname), None)
            self._deleted(deleting)
            raise
        self._removed(parent_inode, sname, stamp)
        # An open file losing its name: its next fstat must say nlink 0.
        for handle in self.files.values():
            if (handle.node.parent, handle.node.name) == (parent_inode, sname):
                self.nodes.invalidate(handle.node.id)
        # A node with other names lives on with one name less (nlink, ctime).
        self.nodes.invalidate_linked()
        if self.journal is not None:
            await self._gone(parent_inode, sname, None)

    def _removed(self, parent: int, name: str, stamp: int | None, subfolders: int = 0) -> None:
        """This mount removed ``name`` from ``parent`` (the store stamped it ``stamp``): the
        folder's kept listing and attributes follow, so the next operation in it costs no
        call (an older server tells no stamp: the folder is fetched again)."""
        self.nodes.listing_remove(parent, name)
        if stamp is None:
            self.nodes.invalidate(parent)
        else:
            self.nodes.dir_changed(parent, stamp, subfolders=subfolders)

    def _deleting(self, parent: int, name: str) -> int | None:
        """Write-back: mark the pending file at ``parent``/``name`` as being deleted through
        this mount until :meth:`_gone` (or :meth:`_deleted`, if the delete failed), so that
        the uploader, finding it gone from the store first, makes no conflict copy of it."""
        return self.journal.deleting(parent, name) if self.journal is not None else None

    def _deleted(self, node: int | None) -> None:
        if self.journal is not None:
            self.journal.deleted(node)

    async def _gone(self, parent: int, name: str, keep: int | None) -> None:
        """Write-back: the file at ``parent``/``name`` (other than node ``keep``) was deleted
        or replaced through this mount: its pending content is never sent, and a writer of
        it still open journals nothing at close."""
        assert self.journal is not None
        gone = self.journal.pending_at(parent, name)
        if gone is not None and gone != keep:
            await self.journal.drop(gone)
        self.journal.deleted(gone)  # the mark of _deleting
        for node_id, state in self.writers.items():
            if node_id != keep and (state.parent, state.name) == (parent, name):
                state.deleted = True

    @_op
    @_mutates
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        self._check_writable()
        old, new = _decode(name_old), _decode(name_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        replace = not flags & pyfuse3.RENAME_NOREPLACE
        moving = self.nodes.unborn_at(parent_inode_old, old)
        if moving is not None:
            await self._materialize(moving.id)  # the store renames what it has
        target = self.nodes.unborn_at(parent_inode_new, new)
        if target is not None and not replace:
            raise pyfuse3.FUSEError(errno.EEXIST)
        deleting = self._deleting(parent_inode_new, new) if replace else None
        try:
            node = await self.remote.rename(parent_inode_old, old, parent_inode_new, new,
                                            replace=replace)
        except BaseException:
            self._deleted(deleting)
            raise
        if target is not None and target.id != node.id:
            self._abandon_unborn(parent_inode_new, new)  # replaced before it was stored
        self.nodes.listing_remove(parent_inode_old, old)
        if self.journal is not None:
            await self._gone(parent_inode_new, new, node.id)
            if self.journal.pending_file(node.id) is not None:
                await self.journal.moved(node.id, parent_inode_new, new)
            state = self.writers.get(node.id)
            if state is not None:
                state.parent, state.name = parent_inode_new, new
        self.nodes.invalidate_linked()  # a replaced target may have lost one of its names
        self.nodes.put(self._own(node), own=True)
        if node.is_dir:
            # The folders' nlinks may have changed (moved, or an empty folder replaced).
            self.nodes.invalidate(parent_inode_old)
            self.nodes.invalidate(parent_inode_new)
        else:
            self.nodes.dir_changed(parent_inode_old, node.ctime_ns)
            if parent_inode_new != parent_inode_old:
                self.nodes.dir_changed(parent_inode_new, node.ctime_ns)

    @_op
    @_mutates
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        self._check_writable()
        owner, _ = await self._new_owner(parent_inode, ctx)
        node = self.nodes.put(self._own(await self.remote.symlink(
            parent_inode, _decode(name), os.fsdecode(target), owner=owner)), own=True)
        self.nodes.dir_changed(parent_inode, node.ctime_ns)
        self.nodes.remember(node.id)
        return self._attrs(node)

    @_op
    @_mutates
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        new_uid = attr.st_uid if fields.update_uid and attr.st_uid not in NO_ID else None
        new_gid = attr.st_gid if fields.update_gid and attr.st_gid not in NO_ID else None
        if (fields.update_size or fields.update_mode or fields.update_mtime
                or fields.update_atime or new_uid is not None or new_gid is not None):
            self._check_writable()
        node = await self.nodes.get(inode)
        if self.nodes.unborn(inode) is not None:
            return self._attrs(await self._setattr_unborn(node, attr, fields, new_uid,
                                                          new_gid, ctx))
        if new_uid is not None or new_gid is not None:
            owner_uid, owner_gid = self._owner_ids(node)
            if new_uid == owner_uid:
                new_uid = None
            if new_gid == owner_gid:
                new_gid = None
            if new_uid is not None or new_gid is not None:
                self._check_chown(ctx, owner_uid, new_uid, new_gid)
                node = self.nodes.put(await self.remote.chown(inode, uid=new_uid, gid=new_gid),
                                      own=True)
        same_size = fields.update_size and attr.st_size == node.size
        if fields.update_size:
            if node.kind is not NodeKind.FILE:
                raise pyfuse3.FUSEError(errno.EISDIR if node.is_dir else errno.EINVAL)
            state = self.writers.get(inode)
            pending = self.journal.pending_file(inode) if self.journal is not None else None
            size = pending.content.size if pending is not None else node.size
            if state is not None:
                await state.truncate(attr.st_size)
                self._changed_ns[inode] = time.time_ns()
            elif attr.st_size != size:
                state = self._new_write_state(node)
                try:
                    await state.truncate(attr.st_size)
                    committed = await state.commit()
                    if committed is not None:
                        node = self.nodes.put(self._own(committed), own=True)
                finally:
                    await state.discard()
        state = self.writers.get(inode)
        mode = stat.S_IMODE(attr.st_mode) if fields.update_mode else None
        if mode is not None and state is not None and mode == node.mode:
            # A file this mount is writing, whose mode (as created or last set here, and
            # trusted for the attribute timeout) is already that: rsync's fchmod of its
            # temporary file.  Nothing to store.
            mode = None
        if mode is not None and state is not None and await state.defer_mode(mode):
            mode = None  # write-back: journaled with the content at close (tar's fchmod)
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        atime = attr.st_atime_ns if fields.update_atime else None
        if mtime is not None and state is not None and await state.defer_mtime(mtime):
            mtime = None  # stored with the pending content when it is linked (close, fsync)
            # The atime that comes with it (rsync's utimensat of the file it just wrote)
            # is not worth a call of its own on a noatime mount.
            atime = None
        pending = self.journal.pending_file(inode) if self.journal is not None else None
        if pending is not None and (mode is not None or mtime is not None):
            # Write-back: applied with the pending content by the uploader.
            await self.journal.meta(inode, mode=mode, mtime_ns=mtime)  # type: ignore[union-attr]
            if mtime is not None:
                atime = None  # tar's utimensat after close: no round trip for its atime
            self._changed_ns[inode] = time.time_ns()  # its ctime until it is stored
            mode = mtime = None
        if atime is not None:
            node = self.nodes.put(self._own(await self.remote.set_times(
                inode, atime_ns=atime, mtime_ns=mtime)), own=True)
            mtime = None
        if mode is not None or mtime is not None:
            node = self.nodes.put(self._own(await self.remote.setattr(inode, mode=mode,
                                                                      mtime_ns=mtime)),
                                  own=True)
        elif same_size and state is None:
            # truncate(2) to the size it has: no content change, but POSIX (and pjdfstest)
            # expect the times to move as for any truncate.
            node = self.nodes.put(await self.remote.setattr(inode, mtime_ns=time.time_ns()),
                                  own=True)
        return self._attrs(node)

    async def _setattr_unborn(self, node: Node, attr: pyfuse3.EntryAttributes,
                              fields: pyfuse3.SetattrFields, new_uid: int | None,
                              new_gid: int | None, ctx: Any) -> Node:
        """setattr of a file created here that the store does not have yet: everything is
        kept for its create (chmod, chown, the size, the mtime; the atime that comes with
        an mtime is not kept, as for any file written here), no call."""
        state = self.writers[node.id]
        unborn = state.unborn
        assert unborn is not None
        if new_uid is not None or new_gid is not None:
            uid, gid = node.uid if node.uid is not None else self.uid, node.gid
            gid = gid if gid is not None else self.gid
            new_uid = None if new_uid == uid else new_uid
            new_gid = None if new_gid == gid else new_gid
            if new_uid is not None or new_gid is not None:
                self._check_chown(ctx, uid, new_uid, new_gid)
                owner = Owner(uid if new_uid is None else new_uid,
                              gid if new_gid is None else new_gid)
                unborn.owner = owner
                # POSIX: a chown clears set-user-ID and set-group-ID of a non-folder.
                unborn.mode &= ~(stat.S_ISUID | stat.S_ISGID)
                node = dataclasses.replace(node, uid=owner.uid, gid=owner.gid,
                                           mode=unborn.mode)
        if fields.update_mode:
            unborn.mode = stat.S_IMODE(attr.st_mode)
            node = dataclasses.replace(node, mode=unborn.mode)
        if fields.update_size:
            await state.truncate(attr.st_size)
        if fields.update_mtime:
            await state.defer_mtime(attr.st_mtime_ns)
            node = dataclasses.replace(node, mtime_ns=attr.st_mtime_ns)
        node = dataclasses.replace(node, ctime_ns=time.time_ns())
        self.nodes.put_unborn(node)
        return node

    @staticmethod
    def _check_chown(ctx: Any, owner_uid: int, new_uid: int | None,
                     new_gid: int | None) -> None:
        """POSIX's rule (the kernel applies it too under ``default_permissions``): root may
        change both; the owner may change the group to one of their own groups."""
        if ctx.uid == 0:
            return
        if new_uid is not None or ctx.uid != owner_uid:
            raise pyfuse3.FUSEError(errno.EPERM)
        if new_gid is not None and new_gid != ctx.gid and new_gid not in _groups_of(ctx.pid):
            raise pyfuse3.FUSEError(errno.EPERM)

    @_op
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: Any) -> pyfuse3.EntryAttributes:
        self._check_writable()
        await self._materialize(inode)
        node = self.nodes.put(await self.remote.link(inode, new_parent_inode,
                                                     _decode(new_name)))
        self.nodes.dir_changed(new_parent_inode, node.ctime_ns)
        self.nodes.remember(node.id)
        return self._attrs(node)

    @_op
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        self._check_writable()
        perm = stat.S_IMODE(mode) & ~ctx.umask
        owner, _ = await self._new_owner(parent_inode, ctx)
        fmt = stat.S_IFMT(mode)
        if fmt in (stat.S_IFREG, 0):
            node = await self.remote.create_file(parent_inode, _decode(name), (), mode=perm,
                                                 owner=owner)
        elif fmt in _KIND_OF_MODE:
            node = await self.remote.mknod(parent_inode, _decode(name), _KIND_OF_MODE[fmt],
                                           perm, rdev, owner=owner)
        else:
            raise pyfuse3.FUSEError(errno.EINVAL)
        self.nodes.put(self._own(node), own=True)
        self.nodes.dir_changed(parent_inode, node.ctime_ns)
        self.nodes.remember(node.id)
        return self._attrs(node)


    # --- the change feed (fsmount.feed.FeedTarget) ------------------------------------

    def _own(self, node: Node) -> Node:
        """Note a node a change of this mount answered (its ctime is the change's stamp)."""
        self._own_stamps[node.ctime_ns] = None
        if len(self._own_stamps) > OWN_CHANGES_MAX:
            self._own_stamps.popitem(last=False)
        return node

    def _own_removal(self, parent: int, name: str) -> None:
        self._own_removals[(parent, name)] = None
        if len(self._own_removals) > OWN_CHANGES_MAX:
            self._own_removals.popitem(last=False)

    async def apply_changes(self, changes: Sequence[Change]) -> None:
        """Drop from the caches, and the kernel's, exactly what ``changes`` touched.

        A change this mount made itself (its cached node, or folder, is at least as new as
        the change's stamp) needs nothing: the mount updated its caches when it made it.
        """
        self._statfs = None  # usage may have changed
        pending = list(self._in_flight)
        if pending:
            # A change of this mount may be reported before its answer is in: wait (a
            # little) for the answers of the changes in flight, to know them for our own.
            with trio.move_on_after(OWN_ANSWER_WAIT):
                for done in pending:
                    await done.wait()
        drops: list[_KernelDrop] = []
        for c in changes:
            if c.at_ns in self._own_stamps:
                continue  # made here: the caches were updated with the change's answer
            if c.kind is ChangeKind.DELETE and (c.parent, c.name) in self._own_removals:
                del self._own_removals[(c.parent, c.name)]
                continue
            # The folder's listing goes too: it holds the node's old attributes.
            self.nodes.feed_invalidate(c.node_id, folder=c.parent)
            if c.node_id in self.nodes.lookups:
                # A replaced content: the kernel must drop its pages too.
                drops.append(_KernelDrop(c.node_id, attr_only=c.kind is not ChangeKind.CONTENT))
            if c.kind is ChangeKind.CONTENT or c.kind is ChangeKind.ATTR:
                continue  # no name and no folder changed
            for parent, name in ((c.parent, c.name), (c.old_parent, c.old_name)):
                if parent is None or name is None:
                    continue
                self.nodes.feed_invalidate(parent, name=(parent, name), folder=parent)
                if parent in self.nodes.lookups or parent == ROOT_ID:
                    drops.append(_KernelDrop(parent))
                    drops.append(_KernelDrop(parent, name))
        if drops:
            await trio.to_thread.run_sync(_drop_in_kernel, drops)

    async def feed_up(self) -> None:
        """Follow the feed: what was cached before it came up is dropped (it may have
        missed changes), then attributes and entries are trusted until it reports them."""
        await self._drop_everything(following=True)

    async def feed_down(self) -> None:
        """The feed is lost: short timeouts from now on, and nothing kept is trusted."""
        await self._drop_everything(following=False)

    async def _drop_everything(self, *, following: bool) -> None:
        known = list(self.nodes.lookups)
        self._statfs = None
        self.nodes.follow(following)
        self._own_stamps.clear()
        self._own_removals.clear()
        drops = [_KernelDrop(inode, attr_only=False) for inode in known]
        for inode in known:
            where = self.nodes.where(inode)
            if where is not None and where[0] != inode:
                drops.append(_KernelDrop(where[0], where[1]))
        self._opened_version.clear()
        if drops:
            await trio.to_thread.run_sync(_drop_in_kernel, drops)


def _groups_of(pid: int) -> set[int]:
    """The supplementary groups of a process (from /proc; empty if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


# --- session control (used by fsmount.mount) -----------------------------------------


def session_open(ops: Operations, mountpoint: str, options: set[str]) -> None:
    """Mount ``ops`` at ``mountpoint`` (the kernel mount exists when this returns).

    Raises errors.FsmountError when libfuse refuses the options or the mount.
    """
    try:
        pyfuse3.init(ops, mountpoint, options)
    except RuntimeError as exc:
        raise errors.FsmountError(
            f"cannot mount {mountpoint} with options {','.join(sorted(options))}: {exc}"
        ) from None


async def session_main() -> None:
    """Serve requests until the filesystem is unmounted or :func:`session_terminate`."""
    await pyfuse3.main()


def session_terminate() -> None:
    pyfuse3.terminate()


def session_close(unmount: bool = True) -> None:
    pyfuse3.close(unmount=unmount)
