"""The write-back journal: an append-only, crash-safe log of a mount's pending changes.

Layout (one directory per store identity under the cache directory, see :func:`journal_dir`)::

    journal.log      framed records (fsmount.journal.records), appended and fsynced
    content/<id>     the bytes of content record <id>, fsynced before the record is
    work/            files being written (not yet closed): deleted when the journal opens
    lock             fcntl lock: one mount per journal
    status.json      what is pending, rewritten by the uploader for `fsmount unmount`

Crash safety: a content file is fsynced, renamed into ``content/`` and the directory fsynced
before the record naming it is appended (and the log fsynced), so a record that survives
always has its bytes; a content file without a record (a crash in between) and everything
in ``work/`` are deleted on open; a torn last record is cut off on open.  So after a crash
exactly the changes whose ``close`` returned are pending.

State rebuilt on open (all in memory, bounded by the number of pending files, not bytes):
the latest content record per node that is not ``done`` nor ``drop``\\ ped, with the metadata
and moves recorded after it; and per node the versions and SHA-256s this journal produced,
which the uploader uses to tell its own earlier writes from another client's (conflicts).
When nothing is pending the log is truncated to empty.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

from .. import errors
from .records import (
    ContentRecord,
    DoneRecord,
    DropRecord,
    MetaRecord,
    MoveRecord,
    Record,
    decode_all,
    encode,
)

log = logging.getLogger(__name__)

#: Default bound on the bytes pending in a journal (``--write-back-limit``).
DEFAULT_LIMIT = 4 << 30
#: The journal never fills the cache directory's file system past this much free space.
FREE_MARGIN = 512 << 20

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

    @property
    def node(self) -> int:
        return self.content.node


class Journal:
    """A mount's write-back journal.  Build with :meth:`open`; appends are serialized."""

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.limit = limit
        self._log_path = os.path.join(path, "journal.log")
        self._content_dir = os.path.join(path, "content")
        self.work_dir = os.path.join(path, "work")
        self._lock_fd = -1
        self._log_fd = -1
        self._next_id = 1
        self.pending: dict[int, Pending] = {}
        #: Per node: versions and SHA-256s this journal's own writes produced or started from.
        self.own_versions: dict[int, set[int]] = {}
        self.own_shas: dict[int, set[str]] = {}
        self._by_place: dict[tuple[int, str], int] = {}
        self._append_lock = trio.Lock()
        self._changed = trio.Event()
        self._work_seq = 0
        #: Set while writes wait for room (so the "journal full" line is logged once).
        self.full = False

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
        j._log_fd = os.open(j._log_path, os.O_RDWR | os.O_CREAT, 0o600)
        with open(j._log_path, "rb") as f:
            data = f.read()
        records, good = decode_all(data)
        if good != len(data):
            os.ftruncate(j._log_fd, good)  # a torn tail: the append never completed
            os.fsync(j._log_fd)
        os.lseek(j._log_fd, good, os.SEEK_SET)
        for r in records:
            j._apply(r)
            j._next_id = max(j._next_id, r.id + 1)
        referenced = {str(p.content.id) for p in j.pending.values()}
        for name in os.listdir(j._content_dir):
            if name not in referenced:
                os.unlink(os.path.join(j._content_dir, name))
        if not j.pending and good:
            j._truncate()
        return j

    def close(self) -> None:
        for fd in (self._log_fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._log_fd = self._lock_fd = -1

    # -- state --------------------------------------------------------------------------

    def _apply(self, r: Record) -> None:
        """Fold one record into the in-memory state (on open, and after each append)."""
        if isinstance(r, ContentRecord):
            old = self.pending.get(r.node)
            p = Pending(r, r.parent, r.name, since=old.since if old else r.created_at)
            if old is not None:
                self._by_place.pop((old.parent, old.name), None)
                p.mode, p.meta_id = old.mode, old.meta_id
            self.pending[r.node] = p
            self._by_place[(r.parent, r.name)] = r.node
            self.own_versions.setdefault(r.node, set()).add(r.base_version)
            self.own_shas.setdefault(r.node, set()).add(r.sha256)
        elif isinstance(r, MetaRecord):
            p = self.pending.get(r.node)
            if p is not None:
                if r.mode is not None:
                    p.mode = r.mode
                if r.mtime_ns is not None:
                    p.mtime_ns = r.mtime_ns
                p.meta_id = r.id
        elif isinstance(r, MoveRecord):
            p = self.pending.get(r.node)
            if p is not None:
                self._by_place.pop((p.parent, p.name), None)
                p.parent, p.name = r.parent, r.name
                self._by_place[(r.parent, r.name)] = r.node
        elif isinstance(r, DropRecord):
            p = self.pending.pop(r.node, None)
            if p is not None:
                self._by_place.pop((p.parent, p.name), None)
        else:
            if r.version >= 0:
                self.own_versions.setdefault(r.node, set()).add(r.version)
            p = self.pending.get(r.node)
            if p is None or p.content.id != r.content:
                return  # superseded meanwhile: the newer content stays pending
            if r.meta >= p.meta_id:
                del self.pending[r.node]
                self._by_place.pop((p.parent, p.name), None)
            else:
                p.content_stored = True

    def content_path(self, content_id: int) -> str:
        return os.path.join(self._content_dir, str(content_id))

    def pending_file(self, node: int) -> Pending | None:
        return self.pending.get(node)

    def pending_at(self, parent: int, name: str) -> int | None:
        """The pending node this mount last put at ``parent``/``name``, if any."""
        return self._by_place.get((parent, name))

    def in_order(self) -> list[Pending]:
        """Pending nodes in the order their content was closed."""
        return sorted(self.pending.values(), key=lambda p: p.content.id)

    @property
    def pending_bytes(self) -> int:
        return sum(p.content.size for p in self.pending.values() if not p.content_stored)

    def room(self) -> int:
        """Bytes that may still be written before writes wait (limit, and the cache
        directory's free space minus a margin)."""
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize - FREE_MARGIN
        return min(self.limit - self.pending_bytes, free)

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
        if self.full:
            self.full = False
            log.warning("write-back journal has room again: writes go on")

    async def wait_drained(self) -> None:
        """Until nothing is pending."""
        while self.pending:
            await self._changed.wait()

    # -- appending ----------------------------------------------------------------------

    def _append_sync(self, record: Record) -> None:
        os.write(self._log_fd, encode(record))
        os.fdatasync(self._log_fd)

    async def _append(self, make: type[Record], **fields: object) -> Record:
        async with self._append_lock:
            record = make(id=self._next_id, **fields)  # type: ignore[arg-type]
            self._next_id += 1
            await trio.to_thread.run_sync(self._append_sync, record)
            self._apply(record)
            self._bump()
            return record

    async def commit_content(self, work_path: str, *, node: int, parent: int, name: str,
                             size: int, sha256: str, base_version: int,
                             mtime_ns: int) -> Pending:
        """Make the closed file at ``work_path`` (already fsynced by the caller) the node's
        pending content: moved into ``content/`` and recorded, durably, before this returns.

        Raises:
            OSError: the journal could not be written.
        """
        async with self._append_lock:
            cid = self._next_id
            self._next_id += 1
            dest = self.content_path(cid)
            old = self.pending.get(node)

            def store() -> None:
                os.rename(work_path, dest)
                dfd = os.open(self._content_dir, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)

            await trio.to_thread.run_sync(store)
            record = ContentRecord(cid, node, parent, name, size, sha256, base_version,
                                   mtime_ns, time.time())
            await trio.to_thread.run_sync(self._append_sync, record)
            self._apply(record)
            if old is not None and not old.content_stored:
                # Superseded: only the last content of a file is ever sent.
                _unlink_quiet(self.content_path(old.content.id))
            self._bump()
            return self.pending[node]

    async def meta(self, node: int, *, mode: int | None, mtime_ns: int | None) -> None:
        """Record chmod / utimes of a pending node (applied with its content).

        Raises:
            OSError: the journal could not be written.
        """
        await self._append(MetaRecord, node=node, mode=mode, mtime_ns=mtime_ns)

    async def moved(self, node: int, parent: int, name: str) -> None:
        """Record that a pending node was renamed.  Raises OSError."""
        await self._append(MoveRecord, node=node, parent=parent, name=name)

    async def drop(self, node: int) -> None:
        """The node was deleted through this mount: its pending content is never sent.
        Raises OSError."""
        p = self.pending.get(node)
        if p is None:
            return
        await self._append(DropRecord, node=node)
        _unlink_quiet(self.content_path(p.content.id))
        self._maybe_truncate()

    async def done(self, pending: Pending, version: int) -> None:
        """The uploader stored ``pending`` (as read when it started: its content record and
        metadata) and the node is at ``version`` (-1: went to a conflict copy).
        Raises OSError."""
        cid = pending.content.id
        await self._append(DoneRecord, content=cid, node=pending.node, version=version,
                           meta=pending.meta_id)
        if self.pending.get(pending.node) is None or \
                self.pending[pending.node].content.id != cid:
            _unlink_quiet(self.content_path(cid))
        self._maybe_truncate()

    def _maybe_truncate(self) -> None:
        if not self.pending:
            self._truncate()

    def _truncate(self) -> None:
        """Nothing pending: start the log afresh (what it recorded is all in the store)."""
        os.ftruncate(self._log_fd, 0)
        os.lseek(self._log_fd, 0, os.SEEK_SET)
        os.fsync(self._log_fd)
        # own_versions / own_shas stay: a write that began before an upload finished still
        # started from what this mount wrote (one small set per file written).

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


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


__all__ = ["DEFAULT_LIMIT", "EMPTY_SHA256", "Journal", "JournalLocked", "Pending",
           "journal_dir", "read_records"]
