"""The write-back uploader: sends a journal's pending changes to the store in the background.

One scheduler task (started with :meth:`Uploader.run` in the mount's nursery) hands pending
nodes, oldest first, to at most ``parallel_files`` upload tasks at a time; each file's parts
go ``parallel`` at a time through :func:`fsmount.upload.upload_file` (re-reading the journal's
content file for any part the store loses, so nothing is held in memory).  A node is never
in flight twice; content closed again while it uploads stays pending and is sent after it.
Merging is the journal's: only the last content of a file is kept, a deleted file's is
dropped, so neither is ever sent.

A node is started only once every record about it is durable (a lazy chmod / utimes
record is flushed first, see fsmount.journal.log); when nothing is uploading the scheduler
flushes the journal's lazy records (done records, so their content files are deleted).

**Resume at the part.**  Each part an upload of more than one part saves is noted in the content's side file
(:meth:`~fsmount.journal.Journal.part_saved`, no fsync), and an upload of the same content
later (the next mount after a crash, or a retry) reuses the noted segments' file ids and
sends only the parts not noted, if they were saved less than half the store's part lifetime
ago (:func:`fsmount.upload.policy.refresh_after`); the finalize reports any part the store
no longer has, which is then sent again (fsmount.upload.sender.finalize_segment).

Applying one node (idempotent, so a replay after a crash is safe):

1. ``getattr`` the node.  If its content already is the journal's (same SHA-256 and size),
   the upload is skipped: it was linked before a crash lost the ``done`` record.
2. If the node is gone while this mount's own delete of it is on its way (the moment
   between the store's delete and the journal's drop), the attempt ends quietly and the
   node is offered again after :data:`RETRY_PAUSE` (by then dropped, or, had the delete
   failed, uploaded).  If the node is gone otherwise, or its version is neither one this mount started from nor one its
   own uploads produced (and its content none this mount wrote), another client changed or
   deleted it since: this mount's content goes beside it under a conflict name
   (:func:`conflict_name`), the other version stays, and the conflict is logged and listed
   in the status.
3. Otherwise upload and ``set_content`` with the file's mtime, then ``setattr`` for a
   journaled chmod / utimes, then record ``done``.

A failed attempt (the store unreachable after the transport's own retries, or any store
error) leaves the node pending; the scheduler offers it again after :data:`RETRY_PAUSE`
(pending work is rescheduled, the transport alone retries requests).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import time
from collections.abc import Callable

import trio

from .. import errors
from ..nursery import open_nursery
from ..remote import ROOT_ID, FileLocation, Node, Remote
from ..upload import PART_SIZE, SavedParts, cached_config, upload_file
from ..upload.policy import refresh_after
from .log import EMPTY_SHA256, Journal, Pending

log = logging.getLogger(__name__)

#: Files uploading at once (docs/performance.md, "Write-back": the drain at 100 ms RTT).
PARALLEL_FILES = 32
#: Parts in flight per file.
PARALLEL_PARTS = 4
#: Seconds before a node whose upload failed is offered again.
RETRY_PAUSE = 1.0


def node_sha256(node: Node) -> str | None:
    """The SHA-256 of a file's whole content when the store says it (0 or 1 segment)."""
    if not node.segments:
        return EMPTY_SHA256
    if len(node.segments) == 1:
        return node.segments[0].sha256
    return None


def conflict_name(name: str, host: str, when: float) -> str:
    """The name this mount's version of a conflicting file gets beside the other one."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when))
    return f"{name}.conflict-{host}-{stamp}"


class _Superseded(Exception):
    """The content file is gone: newer content or a delete replaced it meanwhile."""


class _Deleting(Exception):
    """The node is being deleted through this mount: not a conflict, and nothing to log."""


class Uploader:
    """Sends one journal to one remote.  ``on_stored`` sees each node once it is stored."""

    def __init__(self, journal: Journal, remote: Remote, *, cache_dir: str,
                 on_stored: Callable[[Node], None] | None = None,
                 parallel_files: int = PARALLEL_FILES, parallel: int = PARALLEL_PARTS,
                 host: str | None = None) -> None:
        self.journal = journal
        self.remote = remote
        self.cache_dir = cache_dir
        self.on_stored = on_stored
        self.parallel_files = parallel_files
        self.parallel = parallel
        self.host = (host or socket.gethostname()).replace("/", "_")
        self.in_flight: set[int] = set()
        self._retry_at: dict[int, float] = {}
        #: Errors logged since the last upload that worked (each is logged once).
        self._logged: set[str] = set()
        self.last_error: str | None = None
        self.conflicts: list[str] = []
        self.uploaded_files = 0
        #: While True no new upload starts (``fsmount pause``; e.g. on a metered link).
        self.paused = False

    def pause(self, paused: bool) -> None:
        self.paused = paused
        self.journal.changed()

    def status(self) -> dict[str, object]:
        return self.journal.status() | {
            "uploading": len(self.in_flight), "last_error": self.last_error,
            "conflicts": list(self.conflicts[-20:]), "uploaded": self.uploaded_files,
            "paused": self.paused}

    async def run(self) -> None:
        """Schedule uploads until cancelled."""
        async with open_nursery() as nursery:
            while True:
                now = trio.current_time()
                undurable = False
                for p in [] if self.paused else self.journal.in_order():
                    if len(self.in_flight) >= self.parallel_files:
                        break
                    if p.node in self.in_flight or self._retry_at.get(p.node, 0.0) > now:
                        continue
                    if not self.journal.durable(p):
                        # A lazy record about it (chmod, utimes) is not on disk yet: what
                        # the store gets must not be undone by a crash.
                        undurable = True
                        continue
                    self.in_flight.add(p.node)
                    nursery.start_soon(self._one, p.node)
                if undurable or (not self.in_flight and self.journal.lazy_waiting):
                    # Idle, or waiting for lazy records: write them (done records become
                    # durable, the content files they free are deleted, an empty log
                    # starts afresh).
                    await self._flush()
                    if undurable:
                        continue
                wake = min(self._retry_at.values(), default=math.inf)
                with trio.move_on_at(wake):
                    await self.journal.wait_changed()
                now = trio.current_time()
                self._retry_at = {n: t for n, t in self._retry_at.items() if t > now}

    async def _flush(self) -> None:
        try:
            await self.journal.flush()
        except OSError as exc:
            self.last_error = f"journal: {exc}"
            await trio.sleep(RETRY_PAUSE)

    async def _one(self, node_id: int) -> None:
        try:
            p = self.journal.pending_file(node_id)
            if p is not None:
                await self._store(dataclasses.replace(p))
                self._retry_at.pop(node_id, None)
                if self._logged:
                    log.warning("write-back: uploads work again")
                    self._logged.clear()
        except _Superseded:
            pass
        except (_Deleting, errors.FsmountError, OSError) as exc:
            p = self.journal.pending_file(node_id)
            if p is None:
                return  # deleted through this mount while it uploaded: nothing to do
            if self.journal.is_deleting(node_id):
                # Its delete through this mount is on its way: dropped in a moment (or, had
                # the delete failed, uploaded on the next attempt).
                self._retry_at[node_id] = trio.current_time() + RETRY_PAUSE
                return
            msg = f"{p.name}: {exc}"
            if str(exc) not in self._logged:  # once per distinct error until an upload works
                self._logged.add(str(exc))
                log.warning("write-back: cannot upload %s (retrying)", msg)
            self.last_error = msg
            self._retry_at[node_id] = trio.current_time() + RETRY_PAUSE
        finally:
            self.in_flight.discard(node_id)
            self.journal.changed()

    async def _content(self, p: Pending) -> tuple[FileLocation, ...]:
        # A content of one part gains nothing from a resume: no notes, no plan.
        parted = p.content.size > PART_SIZE
        resume = await self._resume_plan(p) if parted else {}
        if resume:
            log.info("write-back: resuming the upload of %s (%d parts already in the store)",
                     p.name, sum(len(s.numbers) for s in resume.values()))

        def saved(segment: int, file_id: int, number: int) -> None:
            try:
                self.journal.part_saved(p, segment, file_id, number)
            except OSError as exc:  # only a resume after a crash needs the note
                log.debug("write-back: cannot note a saved part of %s: %s", p.name, exc)

        try:
            docs = await upload_file(self.remote, self.journal.content_path(p.content.id),
                                     p.name, parallel=self.parallel, spill_dir=self.cache_dir,
                                     resume=resume, on_part_saved=saved if parted else None)
        except FileNotFoundError:
            raise _Superseded from None
        return tuple(d.location for d in docs)

    async def _resume_plan(self, p: Pending) -> dict[int, SavedParts]:
        """The parts of ``p``'s upload that an earlier attempt (before a crash, or one that
        failed) saved in the store recently enough to be there still: half the store's
        part lifetime, the margin the streaming uploader keeps for its own segments."""
        notes = await trio.to_thread.run_sync(self.journal.saved_parts, p.content.id)
        if not notes:
            return {}
        lifetime = (await cached_config(self.remote)).part_lifetime
        fresh_after = time.time() - refresh_after(lifetime)
        by_segment: dict[int, tuple[int, set[int]]] = {}
        for n in notes:
            if n.saved_at < fresh_after:
                continue
            fid, numbers = by_segment.setdefault(n.segment, (n.file_id, set()))
            if fid == n.file_id:  # one file id per segment (the first attempt's)
                numbers.add(n.number)
        return {seg: SavedParts(fid, frozenset(numbers))
                for seg, (fid, numbers) in by_segment.items()}

    async def _store(self, p: Pending) -> None:
        c = p.content
        try:
            node: Node | None = await self.remote.getattr(c.node)
        except errors.NotFound:
            if self.journal.is_deleting(c.node):
                raise _Deleting from None
            node = None
        sha = node_sha256(node) if node is not None else None
        own = node is not None and (
            node.version in self.journal.own_versions.get(c.node, set())
            or (sha is not None and sha in self.journal.own_shas.get(c.node, set())))
        if node is None or not own:
            await self._conflict(p, node)
            return
        want_mtime = p.mtime_ns if p.mtime_ns is not None else c.mtime_ns
        if sha == c.sha256 and node.size == c.size:
            stored = node  # linked before (a crash lost the done record), or metadata only
        else:
            locs = await self._content(p)
            stored = await self.remote.set_content(c.node, locs,
                                                   mtime_ns=want_mtime)
        mode = p.mode if p.mode is not None and p.mode != stored.mode else None
        mtime = want_mtime if stored.mtime_ns != want_mtime else None
        if mode is not None or mtime is not None:
            stored = await self.remote.setattr(c.node, mode=mode, mtime_ns=mtime)
        await self.journal.done(p, stored.version)
        self.uploaded_files += 1
        if self.on_stored is not None:
            self.on_stored(stored)

    async def _conflict(self, p: Pending, node: Node | None) -> None:
        c = p.content
        locs = await self._content(p)
        parent = node.parent if node is not None else p.parent
        base = node.name if node is not None else p.name
        mode = p.mode if p.mode is not None else (node.mode if node is not None else 0o644)
        mtime = p.mtime_ns if p.mtime_ns is not None else c.mtime_ns
        name = conflict_name(base, self.host, c.created_at)
        for attempt in range(100):
            candidate = name if attempt == 0 else f"{name}-{attempt}"
            try:
                await self.remote.create_file(parent, candidate, locs,
                                              mode=mode, mtime_ns=mtime)
            except errors.AlreadyExists:
                continue
            except errors.NotFound:
                if parent == ROOT_ID:
                    raise
                parent = ROOT_ID  # its folder is gone too: keep it at the top
                continue
            name = candidate
            break
        what = "deleted" if node is None else "changed"
        log.warning("write-back conflict: %s was %s by another client since this mount "
                    "read it; this mount's version is stored beside it as %s",
                    base, what, name)
        self.conflicts.append(name)
        await self.journal.done(p, -1)
