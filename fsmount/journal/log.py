"""The write-back journal: an append-only, crash-safe log of a mount's pending changes.

Layout (one directory per store identity under the cache directory, see :func:`journal_dir`)::

    journal.log      framed records (fsmount.journal.records), appended and fdatasynced
    content/<id>     the bytes of content record <id>
    content/<id>.parts  the parts of its upload saved in the store so far (resume)
    work/            files being written (not yet closed): deleted when the journal opens
    lock             fcntl lock: one mount per journal
    status.json      what is pending, rewritten by the uploader for `fsmount unmount`

What a close costs (see docs/performance.md, "Write-back"): a content of up to
:data:`~fsmount.journal.records.INLINE_MAX` bytes travels *inline*, in its record: the closed
file is renamed into ``content/`` (no fsync: it is only a copy for readers and the
uploader) and the record appended, so one ``fdatasync`` of the log makes it durable.  A
larger content is fsynced by the caller, renamed into ``content/``, and the directory is
fsynced before the record that names it is written.

**Group commit.**  Appends are gathered into batches: the first appender that finds no
batch being written writes the open batch (every frame queued so far, in order, in one
``pwrite``) and ``fdatasync``\\ s the log once, in a worker thread, while appends arriving
meanwhile queue up for the next batch; several concurrent closes thus share one
``fdatasync``.  Records the uploader writes (``done``) and chmod / utimes records (``meta``)
are *lazy*: they take effect in memory at once and ride along with the next batch (or
:meth:`Journal.flush`), since losing them in a crash is harmless: a ``done`` lost is
found again by the idempotent replay, a ``meta`` lost is a chmod / utimes undone by a crash
as on a local file system before its next commit.  The uploader starts a node only once
every record about it is durable, and a file-backed content whose ``done`` is still lazy is
deleted only after a batch made it durable.  A batch that fails to be written is cut off
again (the log's size goes back to where it was) and its appenders get the error.

Crash safety: so a record that survives always has its bytes (inline, or a content file
made durable before it); on open a torn last record is cut off, an inline record's content
file is written again from the record, and a content file without a record (a crash in
between) and everything in ``work/`` are deleted.  So after a crash exactly the changes
whose ``close`` returned are pending.

State rebuilt on open (in memory, bounded by the number of pending files, not bytes: the
log is read frame by frame and inline bytes are not kept): the latest content record per
node that is not ``done`` nor ``drop``\\ ped, with the metadata and moves recorded after it;
and per node the versions and SHA-256s this journal produced, which the uploader uses to
tell its own earlier writes from another client's (conflicts).  When nothing is pending the
next batch starts the log afresh (truncated, then written from offset 0).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import trio

from .. import errors
from .records import (
    HEADER,
    INLINE_MAX,
    MAX_RECORD,
    ContentRecord,
    DoneRecord,
    DropRecord,
    MetaRecord,
    MoveRecord,
    PartRecord,
    Record,
    decode_all,
    decode_frame,
    encode,
    frame_length,
)

log = logging.getLogger(__name__)

#: Default bound on the bytes pending in a journal (``--write-back-limit``).
DEFAULT_LIMIT = 4 << 30
#: The journal never fills the cache directory's file system past this much free space.
FREE_MARGIN = 512 << 20
#: The cache directory's free space is asked again after this many seconds or bytes.
FREE_RECHECK_S = 0.5
FREE_RECHECK_BYTES = 64 << 20
#: Lazy records gathered before an append of one makes them durable itself.
LAZY_MAX = 256

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class JournalLocked(errors.FsmountError):
    """Another mount uses this journal (the same store from the same cache directory)."""

    name = "JOURNAL_LOCKED"


def journal_dir(cache_dir: str, identity: str) -> str:
    """The journal directory of a store identity (a store path or server URL + user)."""
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, "journal", key)


@dataclass
class Pending:
    """A node whose latest change is not in the store yet."""

    content: ContentRecord
    parent: int
    name: str
    mode: int | None = None
    mtime_ns: int | None = None
    #: The last meta record of this node (0: none).
    meta_id: int = 0
    #: The content is in the store already; only metadata is left.
    content_stored: bool = False
    #: When this node first became pending (for the status's oldest age).
    since: float = field(default_factory=time.time)
    #: The batch that makes this node's last record durable (see Journal.durable).
    batch: int = 0

    @property
    def node(self) -> int:
        return self.content.node


@dataclass(eq=False)
class _Batch:
    """Frames written (and fdatasynced) together by one writer."""

    seq: int
    frames: list[bytes] = field(default_factory=list)
    #: Per frame: a lazy record's (dropped when the log starts afresh: nothing is pending,
    #: so what it says is in the store).
    lazy: list[bool] = field(default_factory=list)
    #: Records to fold into the state once durable (lazy ones were folded already).
    records: list[Record] = field(default_factory=list)
    #: Content files renamed into ``content/`` before the frames (work path, content path).
    renames: list[tuple[str, str]] = field(default_factory=list)
    #: The content directory is fsynced first (a file-backed content's name).
    dirsync: bool = False
    #: Run once the batch is durable (deferred deletes of content files).
    after: list[Callable[[], None]] = field(default_factory=list)
    #: An appender waits for it (lazy frames alone wait for the next such batch).
    wanted: bool = False
    done: trio.Event = field(default_factory=trio.Event)
    error: OSError | None = None


class Journal:
    """A mount's write-back journal.  Build with :meth:`open`; appends are group-committed
    (see the module docstring)."""

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.limit = limit
        self._log_path = os.path.join(path, "journal.log")
        self._content_dir = os.path.join(path, "content")
        self.work_dir = os.path.join(path, "work")
        self._lock_fd = -1
        self._log_fd = -1
        #: The log's length: the next frame goes there.
        self._size = 0
        self._next_id = 1
        #: Pending nodes in the order their content was closed.
        self.pending: dict[int, Pending] = {}
        self._pending_bytes = 0
        #: Per node: versions and SHA-256s this journal's own writes produced or started from.
        self.own_versions: dict[int, set[int]] = {}
        self.own_shas: dict[int, set[str]] = {}
        self._by_place: dict[tuple[int, str], int] = {}
        #: Pending nodes that a delete through this mount (unlink, a rename over them) is on
        #: its way to the store for, with the number of such deletes (see :meth:`deleting`).
        self._deleting: dict[int, int] = {}
        self._changed = trio.Event()
        self._work_seq = 0
        #: Set while writes wait for room (so the "journal full" line is logged once).
        self.full = False
        # Group commit: the batch appends go into, whether one is being written, and an
        # event set (and replaced) each time one is.
        self._batch = _Batch(1)
        self._writing = False
        self._written = trio.Event()
        #: The last batch written and fdatasynced.
        self.durable_batch = 0
        #: Batches written (each one fdatasync), for tests and the status.
        self.syncs = 0
        # The cache directory's free space as last asked, when, and bytes let in since.
        self._free = 0
        self._free_at = -math.inf
        self._free_used = 0

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, *, limit: int = DEFAULT_LIMIT) -> Journal:
        """Open (or create) the journal at ``path``, recover it and rebuild its state.

        Raises:
            JournalLocked: another mount holds it.
            OSError: the directory cannot be created, read or written.
        """
        j = cls(path, limit)
        os.makedirs(j._content_dir, mode=0o700, exist_ok=True)
        shutil.rmtree(j.work_dir, ignore_errors=True)
        os.makedirs(j.work_dir, mode=0o700, exist_ok=True)
        j._lock_fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(j._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(j._lock_fd)
            raise JournalLocked(f"the write-back journal {path} is in use by another mount"
                                ) from None
        j._log_fd = fd = os.open(j._log_path, os.O_RDWR | os.O_CREAT, 0o600)
        end = os.fstat(fd).st_size
        good = 0
        inline_at: dict[int, tuple[int, int]] = {}
        # Frame by frame: the log may hold many inline contents; none is kept in memory.
        while good + HEADER.size <= end:
            header = os.pread(fd, HEADER.size, good)
            length = frame_length(header)
            if length == 0 or length > MAX_RECORD:
                break
            frame = decode_frame(header, os.pread(fd, length, good + HEADER.size))
            if frame is None:
                break
            if isinstance(frame.record, ContentRecord) and frame.record.inline:
                inline_at[frame.record.id] = (good + frame.data_at, frame.data_len)
            j._apply(frame.record)
            j._next_id = max(j._next_id, frame.record.id + 1)
            good += frame.size
        if good != end:
            os.ftruncate(fd, good)  # a torn tail: the append never completed
            os.fsync(fd)
        j._size = good
        referenced: set[str] = set()
        for p in j.pending.values():
            cid = p.content.id
            referenced |= {str(cid), f"{cid}.parts"}
            if p.content.inline:
                # The record is the content; the file beside it may be torn or lost.
                at, n = inline_at[cid]
                _write_file(j.content_path(cid), os.pread(fd, n, at))
        for name in os.listdir(j._content_dir):
            if name not in referenced:
                os.unlink(os.path.join(j._content_dir, name))
        if not j.pending and good:
            os.ftruncate(fd, 0)
            os.fsync(fd)
            j._size = 0
        return j

    def close(self) -> None:
        """Write what is still queued (lazy records) and close the log.  Never raises."""
        if self._log_fd >= 0 and not self._writing and (self._batch.frames
                                                         or self._batch.renames):
            b = self._batch
            try:
                self._size = self._write_sync(b, self._reset_due())
                for fn in b.after:
                    fn()
            except OSError as exc:
                log.warning("write-back journal: cannot write its last records: %s", exc)
        for fd in (self._log_fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._log_fd = self._lock_fd = -1

    # -- state --------------------------------------------------------------------------

    def _put(self, p: Pending) -> None:
        self.pending[p.node] = p
        self._pending_bytes += 0 if p.content_stored else p.content.size

    def _remove(self, node: int) -> Pending | None:
        p = self.pending.pop(node, None)
        if p is not None:
            self._pending_bytes -= 0 if p.content_stored else p.content.size
            self._by_place.pop((p.parent, p.name), None)
        return p

    def _apply(self, r: Record, *, live: bool = False, batch: int = 0) -> None:
        """Fold one record into the in-memory state: on open, and (``live``) once a batch
        made it durable or, for a lazy record, when it is queued.  Live, it also deletes
        the content files it makes useless."""
        if isinstance(r, ContentRecord):
            old = self._remove(r.node)
            p = Pending(r, r.parent, r.name, since=old.since if old else r.created_at,
                        batch=batch)
            if old is not None:
                p.mode, p.meta_id = old.mode, old.meta_id
                if live and not old.content_stored:
                    # Superseded: only the last content of a file is ever sent.
                    self._delete_content(old.content.id)
            self._put(p)
            self._by_place[(r.parent, r.name)] = r.node
            self.own_versions.setdefault(r.node, set()).add(r.base_version)
            self.own_shas.setdefault(r.node, set()).add(r.sha256)
            return
        if isinstance(r, DoneRecord):
            if r.version >= 0:
                self.own_versions.setdefault(r.node, set()).add(r.version)
        p = self.pending.get(r.node)  # type: ignore[union-attr]
        if p is None:
            return
        if isinstance(r, MetaRecord):
            if r.mode is not None:
                p.mode = r.mode
            if r.mtime_ns is not None:
                p.mtime_ns = r.mtime_ns
            p.meta_id = r.id
            p.batch = batch
        elif isinstance(r, MoveRecord):
            self._by_place.pop((p.parent, p.name), None)
            p.parent, p.name = r.parent, r.name
            self._by_place[(r.parent, r.name)] = r.node
            p.batch = batch
        elif isinstance(r, DropRecord):
            self._remove(r.node)
            if live:
                self._delete_content(p.content.id)
        elif isinstance(r, DoneRecord):
            if p.content.id != r.content:
                return  # superseded meanwhile: the newer content stays pending
            if r.meta >= p.meta_id:
                self._remove(r.node)
                if live:
                    if p.content.inline:
                        self._delete_content(p.content.id)
                    else:
                        # The record naming this file may be lost in a crash until the done
                        # record is durable: the replay would need the file again.
                        self._batch.after.append(
                            lambda cid=p.content.id: self._delete_content(cid))  # type: ignore[misc]
            else:
                self._pending_bytes -= 0 if p.content_stored else p.content.size
                p.content_stored = True

    def _delete_content(self, content_id: int) -> None:
        path = self.content_path(content_id)
        _unlink_quiet(path)
        _unlink_quiet(path + ".parts")

    def content_path(self, content_id: int) -> str:
        return os.path.join(self._content_dir, str(content_id))

    def pending_file(self, node: int) -> Pending | None:
        return self.pending.get(node)

    def pending_at(self, parent: int, name: str) -> int | None:
        """The pending node this mount last put at ``parent``/``name``, if any."""
        return self._by_place.get((parent, name))

    def deleting(self, parent: int, name: str) -> int | None:
        """Mark the pending node at ``parent``/``name`` (if any) as being deleted through this
        mount, before the delete goes to the store, until :meth:`deleted`: the uploader must
        not take its absence from the store, in the moment before the delete's answer and
        :meth:`drop`, for another client's delete (and store a conflict copy of a file this
        mount deleted).  Returns the node marked."""
        node = self._by_place.get((parent, name))
        if node is not None:
            self._deleting[node] = self._deleting.get(node, 0) + 1
        return node

    def deleted(self, node: int | None) -> None:
        """The delete marked by :meth:`deleting` is over (dropped, kept, or failed)."""
        if node is None or node not in self._deleting:
            return
        self._deleting[node] -= 1
        if self._deleting[node] <= 0:
            del self._deleting[node]

    def is_deleting(self, node: int) -> bool:
        return node in self._deleting

    def in_order(self) -> list[Pending]:
        """Pending nodes in the order their content was closed."""
        return list(self.pending.values())

    def durable(self, p: Pending) -> bool:
        """Whether every record about ``p`` is on disk (the uploader waits for that)."""
        return p.batch <= self.durable_batch

    @property
    def lazy_waiting(self) -> bool:
        """Records are queued that no batch has written yet (or the log is due to start
        afresh)."""
        return bool(self._batch.frames or self._batch.after) or (
            not self.pending and self._size > 0)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def room(self) -> int:
        """Bytes that may still be written before writes wait (limit, and the cache
        directory's free space minus a margin, asked at most every
        :data:`FREE_RECHECK_S` seconds or :data:`FREE_RECHECK_BYTES` bytes)."""
        now = time.monotonic()
        if now - self._free_at > FREE_RECHECK_S or self._free_used > FREE_RECHECK_BYTES:
            st = os.statvfs(self.path)
            self._free = st.f_bavail * st.f_frsize - FREE_MARGIN
            self._free_at, self._free_used = now, 0
        return min(self.limit - self._pending_bytes, self._free - self._free_used)

    def new_work_path(self) -> str:
        self._work_seq += 1
        return os.path.join(self.work_dir, f"w{self._work_seq}")

    # -- waiting ------------------------------------------------------------------------

    def _bump(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def changed(self) -> None:
        """Wake the waiters (the uploader calls this after a failed attempt, too)."""
        self._bump()

    async def wait_stored(self, node: int) -> None:
        """Until ``node`` has nothing pending."""
        while node in self.pending:
            await self._changed.wait()

    async def wait_room(self, n: int) -> None:
        """Until ``n`` more bytes fit (``--write-back-limit``, the cache directory's free
        space): writes wait, never fail, while the uploads catch up (or the store is back).
        Logs one line when the journal fills and one when it has room again."""
        while self.pending and self.room() < n:
            if not self.full:
                self.full = True
                log.warning("write-back journal full (%d files, %d bytes pending, limit %d): "
                            "writes wait for uploads", len(self.pending), self.pending_bytes,
                            self.limit)
            with trio.move_on_after(1.0):  # free space may also come from elsewhere
                await self._changed.wait()
            self._free_at = -math.inf
        self._free_used += n
        if self.full:
            self.full = False
            log.warning("write-back journal has room again: writes go on")

    async def wait_drained(self) -> None:
        """Until nothing is pending."""
        while self.pending:
            await self._changed.wait()

    # -- appending: group commit --------------------------------------------------------

    def _queue(self, record: Record, data: bytes = b"", *, lazy: bool) -> _Batch:
        """Put ``record`` in the open batch (a lazy one takes effect in memory at once)."""
        b = self._batch
        b.frames.append(encode(record, data))
        b.lazy.append(lazy)
        if lazy:
            self._apply(record, live=True, batch=b.seq)
            self._bump()
        else:
            b.records.append(record)
            b.wanted = True
        return b

    async def _wait(self, b: _Batch) -> None:
        """Until batch ``b`` is durable: written by whoever writes first, maybe this task.
        Shielded: a record queued is written whatever happens to the caller.

        Raises:
            OSError: the batch could not be written (it was cut off the log again).
        """
        with trio.CancelScope(shield=True):
            while not b.done.is_set():
                if self._writing:
                    await self._written.wait()
                else:
                    await self._write_open_batch()
        if b.error is not None:
            raise OSError(b.error.errno, f"write-back journal: {b.error.strerror}")

    def _reset_due(self) -> bool:
        # Nothing pending (records in the batch about to be written are all newer): what
        # the log holds is all in the store, so it starts afresh.
        return not self.pending and self._size > 0

    async def _write_open_batch(self) -> None:
        self._writing = True
        b = self._batch
        self._batch = _Batch(b.seq + 1)
        try:
            self._size = await trio.to_thread.run_sync(self._write_sync, b, self._reset_due())
        except OSError as exc:
            b.error = exc
            log.error("write-back journal: cannot write %d records: %s", len(b.frames), exc)
        except BaseException:
            # Nothing else is expected; whatever it is, no appender may think it durable.
            b.error = OSError(errno.EIO, "the batch was not written")
            raise
        else:
            self.durable_batch = b.seq
            self.syncs += 1
            for r in b.records:
                self._apply(r, live=True, batch=b.seq)
            for fn in b.after:
                fn()
        finally:
            self._writing = False
            b.done.set()
            written, self._written = self._written, trio.Event()
            written.set()
            self._bump()

    def _write_sync(self, b: _Batch, reset: bool) -> int:
        """Write one batch (in a worker thread): renames, a directory fsync if a content
        file's name must be durable, the frames in one go, one fdatasync.  Returns the
        log's new length; on failure the log is cut back to its old one."""
        for src, dst in b.renames:
            os.rename(src, dst)
        if b.dirsync:
            dfd = os.open(self._content_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        start = 0 if reset else self._size
        if reset:
            os.ftruncate(self._log_fd, 0)
        frames = [f for f, lazy in zip(b.frames, b.lazy, strict=True) if not (reset and lazy)]
        data = memoryview(b"".join(frames))
        at = start
        try:
            while data:
                n = os.pwrite(self._log_fd, data, at)
                data, at = data[n:], at + n
            os.fdatasync(self._log_fd)
        except OSError:
            try:
                os.ftruncate(self._log_fd, start)
            except OSError:
                pass
            raise
        return at

    async def flush(self) -> None:
        """Make every record queued so far durable (and start the log afresh if nothing is
        pending); waits for a batch being written.  Raises OSError."""
        if self.lazy_waiting:
            b = self._batch
            b.wanted = True
            await self._wait(b)
        elif self._writing:
            await self._written.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def commit_content(self, work_path: str, *, node: int, parent: int, name: str,
                             size: int, sha256: str, base_version: int,
                             mtime_ns: int, data: bytes | None = None,
                             mode: int | None = None) -> Pending | None:
        """Make the closed file at ``work_path`` the node's pending content: moved into
        ``content/`` and recorded, durably, before this returns.  With ``data`` (its bytes,
        at most INLINE_MAX) the content travels inline in its record and the file needs no
        fsync; without, the caller has fsynced it.  ``mode``: a chmod made while it was
        written, recorded in the same batch.

        Raises:
            OSError: the journal could not be written.
            ValueError: ``data`` is over INLINE_MAX or not ``size`` bytes.
        """
        if data is not None and (len(data) != size or size > INLINE_MAX):
            raise ValueError("inline content is at most INLINE_MAX bytes, all of the file")
        cid = self._next_id
        self._next_id += 1
        record = ContentRecord(cid, node, parent, name, size, sha256, base_version, mtime_ns,
                               time.time(), inline=data is not None)
        b = self._batch
        b.renames.append((work_path, self.content_path(cid)))
        b.dirsync |= data is None
        self._queue(record, data or b"", lazy=False)
        if mode is not None:
            self._queue(MetaRecord(self._take_id(), node, mode, None), lazy=False)
        await self._wait(b)
        return self.pending.get(node)

    async def _append(self, record: Record) -> None:
        await self._wait(self._queue(record, lazy=False))

    async def meta(self, node: int, *, mode: int | None, mtime_ns: int | None) -> None:
        """Record chmod / utimes of a pending node (applied with its content).  Lazy: in
        effect at once, durable with the next batch.

        Raises:
            OSError: the journal could not be written.
        """
        self._queue(MetaRecord(self._take_id(), node, mode, mtime_ns), lazy=True)
        await self._flush_if_long()

    async def moved(self, node: int, parent: int, name: str) -> None:
        """Record that a pending node was renamed.  Raises OSError."""
        await self._append(MoveRecord(self._take_id(), node, parent, name))

    async def drop(self, node: int) -> None:
        """The node was deleted through this mount: its pending content is never sent.
        Raises OSError."""
        if node not in self.pending:
            return
        await self._append(DropRecord(self._take_id(), node))

    async def done(self, pending: Pending, version: int) -> None:
        """The uploader stored ``pending`` (as read when it started: its content record and
        metadata) and the node is at ``version`` (-1: went to a conflict copy).  Lazy (a
        done record lost in a crash is found again by the replay).  Raises OSError."""
        self._queue(DoneRecord(self._take_id(), pending.content.id, pending.node, version,
                               pending.meta_id), lazy=True)
        await self._flush_if_long()

    async def _flush_if_long(self) -> None:
        if len(self._batch.frames) >= LAZY_MAX and not self._batch.wanted:
            await self.flush()

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    # -- resuming uploads ---------------------------------------------------------------

    def part_saved(self, p: Pending, segment: int, file_id: int, number: int) -> None:
        """Note (in the content's side file, no fsync: a part not noted is sent again) that
        a part of ``p``'s upload is in the store.  Raises OSError."""
        if self.pending.get(p.node) is not p and (
                self.pending.get(p.node) is None
                or self.pending[p.node].content.id != p.content.id):
            return  # superseded or dropped: its side file is gone
        frame = encode(PartRecord(0, segment, file_id, number, time.time()))
        fd = os.open(self.content_path(p.content.id) + ".parts",
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, frame)
        finally:
            os.close(fd)

    def saved_parts(self, content_id: int) -> list[PartRecord]:
        """The parts of content ``content_id``'s upload noted as saved (a torn last note is
        ignored).  Raises OSError (not FileNotFoundError: none noted is an empty list)."""
        try:
            with open(self.content_path(content_id) + ".parts", "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        return [r for r in decode_all(data)[0] if isinstance(r, PartRecord)]

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        now = time.time()
        oldest = min((p.since for p in self.pending.values()), default=None)
        return {"files": len(self.pending), "bytes": self.pending_bytes,
                "oldest_age": round(now - oldest, 1) if oldest is not None else 0,
                "full": self.full}

    def write_status(self, extra: dict[str, object]) -> None:
        """Rewrite ``status.json`` atomically (for ``fsmount unmount``'s progress line)."""
        tmp = os.path.join(self.path, "status.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.status() | extra, f)
        os.replace(tmp, os.path.join(self.path, "status.json"))


def read_records(path: str) -> Iterator[Record]:
    """The trusted records of a journal directory's log (for tests and diagnostics)."""
    try:
        with open(os.path.join(path, "journal.log"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return iter(())
    return iter(decode_all(data)[0])


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


__all__ = ["DEFAULT_LIMIT", "EMPTY_SHA256", "Journal", "JournalLocked", "Pending",
           "journal_dir", "read_records"]
