"""The streaming uploader: a file written sequentially from offset 0, uploaded while it grows.

:class:`StreamingUpload` cuts the bytes into parts as :mod:`fsmount.upload.policy` says and
saves them while the file is still being written, several at a time.  The pipeline is
``write()`` → bounded channel → hasher task (MD5 in a thread, for the segment hashed while it
streams) → the :class:`~fsmount.upload.sender.PartSender`'s bounded channel → ``parallel``
part workers, and beside the workers the :class:`~fsmount.upload.retain.Spiller`, which copies
parts the memory budget has no room for to the spill file.  The bounded channels give
back-pressure, so a fast writer waits for the store (or the spill disk) instead of filling
memory.

A file longer than one segment becomes several uploads, finalized in order as each fills
(:func:`~fsmount.upload.sender.finalize_segment`); until then a segment's parts are retained
(:class:`~fsmount.upload.retain.RetainedParts`) so that a part the store reports missing can
be sent again, or not at all when the caller can re-read its source (``fsmount put``,
staging files).  A keeper task uploads again a finalized segment that grows old before the
file is linked (the store reclaims an unlinked document after the part lifetime).

:func:`upload_reader` drives one upload from a blocking ``read_at`` (whole files, staging
re-uploads, segment refreshes).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from .. import errors
from ..remote import Document, InputFile, InputFileBig, Remote, UserConfig
from . import policy
from .policy import PART_SIZE, SegmentRules
from .readback import read_document, read_segments
from .retain import RETAIN_IN_MEMORY, RetainBudget, RetainedParts, Spiller, SpillJob
from .sender import (
    DEFAULT_PARALLEL,
    PartSender,
    cached_config,
    finalize_segment,
    new_file_id,
    save_part,
    send_parts,
)
from .spill import SpillFile

if TYPE_CHECKING:
    from .staging import StagingFile

log = logging.getLogger(__name__)

#: Bytes read from a local source per thread hop in :func:`upload_reader`.
READ_CHUNK = 2 * 1024 * 1024

#: ``progress(bytes_saved_so_far)``, called after every saved part.
ProgressFn = Callable[[int], None]
#: Blocking ``read_at(offset, size) -> bytes`` over the source of an upload (run in a thread).
ReadAt = Callable[[int, int], bytes]


@dataclass(frozen=True)
class SavedParts:
    """Parts of one segment that an earlier attempt saved in the store (resuming an upload
    at the part): that attempt's file id and the part numbers."""

    file_id: int
    numbers: frozenset[int]


#: ``on_part_saved(segment_index, file_id, part_number)``, after each part the store saved.
PartSavedFn = Callable[[int, int, int], None]


@dataclass(eq=False)
class _Segment:
    """One upload (file_id, parts, finalize) of a file; most files have a single one."""

    index: int
    start: int
    file_id: int
    #: MD5 of the parts so far while the segment can still be a small upload; None when it
    #: is computed at finalize instead (see policy.hashed_while_streaming).
    md5: hashlib._Hash | None
    parts: int = 0
    size: int = 0
    #: No more parts come (its last part was cut).
    closed: bool = False
    #: Parts cut but not saved yet; ``saved`` is set when a closed segment has none left.
    pending: int = 0
    saved: trio.Event = field(default_factory=trio.Event)
    retained: RetainedParts = field(default_factory=RetainedParts)
    document: Document | None = None
    #: trio.current_time() when ``document`` was made (its lifetime runs from then on).
    finalized_at: float = 0.0

    def part_size(self, number: int) -> int:
        return policy.part_size(number, self.parts, self.size, self.closed)


@dataclass(eq=False)
class _Part:
    """A part on its way through the hasher to the part sender."""

    segment: _Segment
    number: int
    data: bytes | None
    #: ``file_total_parts`` for saveBigFilePart (policy.total_parts).
    total: int
    #: Sent with saveFilePart (its end lies within the big-file threshold).
    small: bool
    #: Retained through the spill file (the memory budget had no room for it).
    spill: bool = False

    @property
    def file_id(self) -> int:
        return self.segment.file_id


class StreamingUpload:
    """A file written sequentially from offset 0, uploaded part by part while it grows.

    Create with :meth:`open`.  ``write``, ``finish``, ``abort`` and ``into_staging`` must be
    called by one task at a time (the caller serializes per handle); ``read`` may be called
    from any task at any time.  The background tasks never raise into the caller's nursery:
    a failure is kept and raised by the next ``write`` and by ``finish``.
    """

    def __init__(
        self,
        remote: Remote,
        name: str,
        *,
        parallel: int = DEFAULT_PARALLEL,
        config: UserConfig | None = None,
        spill_dir: str | os.PathLike[str] | None = None,
        progress: ProgressFn | None = None,
        reread: ReadAt | None = None,
        budget: RetainBudget | None = None,
        segment_parts: int | None = None,
        refresh_after: float | None = None,
        parallel_max: int | None = None,
        whole_sha256: bool = False,
        resume: Mapping[int, SavedParts] | None = None,
        on_part_saved: PartSavedFn | None = None,
    ) -> None:
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        if segment_parts is not None and segment_parts < 1:
            raise ValueError("segment_parts must be at least 1")
        self.remote = remote
        self.name = name
        self.parallel = parallel
        #: Parts in flight may grow to this where the link asks (see PartSender).
        self.parallel_max = max(parallel, parallel_max or parallel)
        self.spill_dir = os.fspath(spill_dir) if spill_dir is not None else None
        self.progress = progress
        self._config = config
        self._reread = reread
        self._budget = budget if budget is not None else RetainBudget(RETAIN_IN_MEMORY)
        self._segment_parts = segment_parts
        # Resuming needs a source to read a part again that the store no longer has.
        self._resume = dict(resume) if resume and reread is not None else {}
        self._on_part_saved = on_part_saved
        #: Parts not sent because an earlier attempt saved them (``resume``).
        self.resumed_parts = 0
        self._rules: SegmentRules | None = None
        self._refresh_after = refresh_after
        #: Set when a segment is finalized or the writer finishes (wakes the keeper).
        self._changed = trio.Event()
        #: Bytes written so far (the file's size as the writer sees it).
        self.size = 0
        #: Bytes the store has confirmed (parts saved).
        self.saved_bytes = 0
        self.closed = False
        #: Written bytes not cut into a part yet (views of the caller's immutable bytes).
        self._pending: list[memoryview] = []
        self._pending_len = 0
        self._segments: list[_Segment] = []
        self._current: _Segment | None = None
        self._error: BaseException | None = None
        self._done = trio.Event()
        self._finished = False
        self._hash_send, self._hash_recv = trio.open_memory_channel[_Part](1)
        # The whole file's SHA-256, over every part in order (the hasher task sees each
        # once); :attr:`sha256` once finished.
        self._whole = hashlib.sha256() if whole_sha256 else None
        #: The SHA-256 (hex) of everything written, set by :meth:`finish`.
        self.sha256: str | None = None
        self._sender: PartSender[_Part] | None = None
        self._spiller: Spiller | None = None
        self._nursery: trio.Nursery | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        nursery: trio.Nursery,
        remote: Remote,
        name: str,
        *,
        parallel: int = DEFAULT_PARALLEL,
        config: UserConfig | None = None,
        spill_dir: str | os.PathLike[str] | None = None,
        progress: ProgressFn | None = None,
        reread: ReadAt | None = None,
        budget: RetainBudget | None = None,
        segment_parts: int | None = None,
        refresh_after: float | None = None,
        parallel_max: int | None = None,
        whole_sha256: bool = False,
        resume: Mapping[int, SavedParts] | None = None,
        on_part_saved: PartSavedFn | None = None,
    ) -> StreamingUpload:
        """Start an upload whose background tasks run in ``nursery``.

        ``reread(offset, size)``, if given, reads the source again (blocking; it is called in
        a thread) so that missing parts are re-sent from it and nothing is retained.
        Otherwise parts are retained in memory as far as ``budget`` allows (default: a budget
        of :data:`RETAIN_IN_MEMORY` for this upload alone), the rest in a spill file in
        ``spill_dir`` (default: the system temp directory).  ``segment_parts`` caps the parts
        of one segment below the store's ``max_parts``: a segment's retained parts are
        dropped when it is finalized, so smaller segments keep less retained (and let it fit
        in memory).  A segment finalized while the file is still being written is uploaded
        again from the store once it is ``refresh_after`` seconds old (default: half the
        store's part lifetime), since no file links its document yet and the store would
        reclaim it.  ``config`` saves a ``get_config`` call.  At least ``parallel`` parts
        are in flight, and up to ``parallel_max`` (default: ``parallel``) where the link's
        bandwidth-delay product asks for more.  ``whole_sha256`` computes the whole file's
        SHA-256 on the way (:attr:`sha256` after :meth:`finish`; a mount keeps it per node),
        one more pass over the bytes, in a thread.  ``resume`` (with ``reread`` only) maps
        segment indexes to the parts an earlier attempt saved: that segment keeps the
        attempt's file id and those parts are not sent again (a finalize that finds one
        missing has it sent again from ``reread``); ``on_part_saved(segment, file_id,
        number)`` is told of every part saved, so that a later attempt can resume.

        Raises:
            ValueError: ``parallel`` or ``segment_parts`` is below 1.
        """
        up = cls(
            remote,
            name,
            parallel=parallel,
            config=config,
            spill_dir=spill_dir,
            progress=progress,
            reread=reread,
            budget=budget,
            segment_parts=segment_parts,
            refresh_after=refresh_after,
            parallel_max=parallel_max,
            whole_sha256=whole_sha256,
            resume=resume,
            on_part_saved=on_part_saved,
        )
        await nursery.start(up._run)
        return up

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as inner:
                self._nursery = inner
                self._spiller = Spiller.start(inner, self._new_spill_file, self._fail)
                self._sender = PartSender.start(inner, self.remote, self.name,
                                                parallel=self.parallel,
                                                parallel_max=self.parallel_max,
                                                on_saved=self._sent, on_error=self._fail)
                inner.start_soon(self._guard, self._hasher)
                inner.start_soon(self._guard, self._keeper)
                task_status.started()
        finally:
            # Unblocks a writer waiting in send(): it gets BrokenResourceError and then
            # raises the kept error.
            self._hash_recv.close()
            if self._sender is not None:
                self._sender.close()
            if self._spiller is not None:
                self._spiller.close()
            self._nursery = None
            for seg in self._segments:
                freed, spill = seg.retained.release()
                self._budget.give(freed)
                if spill is not None:
                    spill.close()
            self._done.set()

    async def _guard(self, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        except Exception as exc:  # noqa: BLE001 - kept and re-raised to the writer
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
            log.warning("upload of %r failed: %s", self.name, exc)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._done.is_set() and not self._finished:
            raise errors.TransportError(f"upload of {self.name!r} was cancelled")

    async def _get_config(self) -> UserConfig:
        if self._config is None:
            self._config = await cached_config(self.remote)
        return self._config

    async def _get_rules(self) -> SegmentRules:
        if self._rules is None:
            config = await self._get_config()
            self._rules = SegmentRules(config.max_parts, config.big_file_threshold,
                                       self._segment_parts)
        return self._rules

    # -- writer side -------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Append ``data`` at offset :attr:`size`.

        Waits while enough parts are queued (back-pressure).

        Raises:
            FsmountError: a part of this upload failed (after the transport's retries), or
                the upload was aborted or cancelled.
            RuntimeError: the upload was already finished.
        """
        if self.closed:
            raise RuntimeError("write after finish/abort")
        self._raise_if_failed()
        if not data:
            return
        if not isinstance(data, bytes):
            # Keep no reference to a buffer the caller may change after we return.
            data = bytes(data)
        rules = await self._get_rules()
        self.size += len(data)
        self._pending.append(memoryview(data))
        self._pending_len += len(data)
        # Each byte is copied once, into its part (policy.full_parts_ready: the last full
        # part waits for a byte after it).
        for _ in range(policy.full_parts_ready(self._pending_len)):
            await self._emit(self._take(PART_SIZE), rules, last=False)

    def _take(self, n: int) -> bytes:
        """Cut the first ``n`` pending bytes into one bytes object."""
        first = self._pending[0]
        if len(first) >= n:
            chunk = bytes(first[:n])
            if len(first) > n:
                self._pending[0] = first[n:]
            else:
                self._pending.pop(0)
        else:
            pieces = []
            need = n
            while need:
                head = self._pending[0]
                if len(head) <= need:
                    pieces.append(head)
                    self._pending.pop(0)
                    need -= len(head)
                else:
                    pieces.append(head[:need])
                    self._pending[0] = head[need:]
                    need = 0
            chunk = b"".join(pieces)
        self._pending_len -= n
        return chunk

    def _next_segment(self) -> _Segment:
        last = self._segments[-1] if self._segments else None
        start = last.start + last.size if last is not None else 0
        index = len(self._segments)
        resumed = self._resume.get(index)
        file_id = resumed.file_id if resumed is not None else new_file_id()
        seg = _Segment(index=index, start=start, file_id=file_id,
                       md5=hashlib.md5() if policy.hashed_while_streaming(index) else None)
        self._segments.append(seg)
        return seg

    async def _emit(self, chunk: bytes, rules: SegmentRules, *, last: bool) -> None:
        # No await before the part is registered in its segment: a concurrent read() must
        # find these bytes either pending or in a segment.
        seg = self._current
        if seg is None:
            seg = self._current = self._next_segment()
        number = seg.parts
        seg.parts += 1
        seg.size += len(chunk)
        seg.pending += 1
        seg_last = last or rules.segment_full(seg.parts)
        if seg_last:
            seg.closed = True
            self._current = None
        spill = self._reread is None and seg.retained.keep(number, chunk, self._budget)
        part = _Part(seg, number, chunk, policy.total_parts(seg.parts, seg_last),
                     rules.small_part(number, len(chunk)), spill)
        try:
            await self._hash_send.send(part)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._raise_if_failed()
            raise
        if seg_last and self._nursery is not None:
            self._nursery.start_soon(self._guard, functools.partial(self._finalize, seg))

    async def finish(self) -> tuple[Document, ...]:
        """Send what is buffered, finalize every segment, and return the segments in order.

        Returns ``()`` for an empty file (nothing is uploaded).

        Raises:
            FsmountError: a part or a finalize failed (after the transport's retries, and
                after re-sending parts the store reported missing), or the upload was
                cancelled.
            RuntimeError: finish or abort was already called.
        """
        if self.closed:
            raise RuntimeError("finish after finish/abort")
        self.closed = True
        self._changed.set()
        try:
            self._raise_if_failed()
            if self._pending_len:
                rules = await self._get_rules()
                await self._emit(self._take(self._pending_len), rules, last=True)
            await self._hash_send.aclose()
            await self._done.wait()
            if self._error is not None:
                raise self._error
            docs = tuple(seg.document for seg in self._segments)
            if any(d is None for d in docs):
                raise errors.TransportError(f"upload of {self.name!r} did not complete")
            self.sha256 = self._whole.hexdigest() if self._whole is not None else None
            self._finished = True
            return tuple(d for d in docs if d is not None)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._cancel()
            raise

    async def abort(self) -> None:
        """Stop the upload and drop what it retained.  Idempotent; never raises."""
        self.closed = True
        self._changed.set()
        with trio.CancelScope(shield=True):
            await self._cancel()

    async def _cancel(self) -> None:
        self._pending.clear()
        self._pending_len = 0
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._hash_send.aclose()
        await self._done.wait()

    # -- background tasks --------------------------------------------------------------

    async def _hasher(self) -> None:
        assert self._sender is not None and self._spiller is not None
        async with self._sender.inbox, self._spiller.inbox:
            async for part in self._hash_recv:
                seg = part.segment
                assert part.data is not None
                if not (seg.md5 is not None and part.small):
                    # Past the threshold the upload is big: inputFileBig carries no MD5.
                    seg.md5 = None
                if self._whole is not None or seg.md5 is not None:
                    # In a thread: hashlib lets go of the GIL for buffers this size.
                    await trio.to_thread.run_sync(_hash_part, self._whole, seg.md5, part.data)
                resumed = self._resume.get(seg.index)
                if resumed is not None and part.number in resumed.numbers:
                    # Saved by an earlier attempt (nothing is retained: reread is set).
                    self.resumed_parts += 1
                    size = len(part.data)
                    part.data = None
                    self._part_saved(part, size)
                    continue
                if part.spill:
                    await self._spiller.inbox.send(SpillJob(seg.retained, part.number))
                await self._sender.inbox.send(part)

    def _sent(self, part: _Part, size: int) -> None:
        if self._on_part_saved is not None:
            self._on_part_saved(part.segment.index, part.file_id, part.number)
        self._part_saved(part, size)

    def _part_saved(self, part: _Part, size: int) -> None:
        seg = part.segment
        seg.pending -= 1
        self.saved_bytes += size
        if self.progress is not None:
            self.progress(self.saved_bytes)
        if seg.closed and seg.pending == 0:
            seg.saved.set()

    def _new_spill_file(self) -> SpillFile:
        size = self._rules.segment_bytes if self._rules is not None else 0
        return SpillFile(self.spill_dir, size)

    async def _part_data(self, seg: _Segment, number: int) -> bytes:
        """The bytes of a sent part, from what is retained or from the source."""
        size = seg.part_size(number)
        data = seg.retained.get(number, size)
        if data is None and self._reread is not None:
            offset = seg.start + policy.part_offset(number)
            data = await trio.to_thread.run_sync(self._reread, offset, size)
        if data is None:
            raise errors.TransportError(f"part {number} of {self.name!r} is no longer available")
        if len(data) != size:
            raise errors.TransportError(
                f"part {number} of {self.name!r}: source gave {len(data)} bytes, expected {size}"
            )
        return data

    async def _resend(self, seg: _Segment, numbers: list[int]) -> None:
        rules = await self._get_rules()

        async def one(number: int) -> None:
            data = await self._part_data(seg, number)
            await save_part(self.remote, self.name, seg.file_id, number, data,
                            small=rules.small_part(number, len(data)), total=seg.parts)

        await send_parts(numbers, one, self.parallel)

    async def _finalize(self, seg: _Segment) -> None:
        await seg.saved.wait()
        rules = await self._get_rules()
        if rules.big_segment(seg.size):
            final: InputFile | InputFileBig = InputFileBig(seg.file_id, seg.parts, self.name)
        else:
            md5 = seg.md5.hexdigest() if seg.md5 is not None else await self._md5_of(seg)
            final = InputFile(seg.file_id, seg.parts, self.name, md5)

        async def resend(numbers: list[int]) -> None:
            await self._resend(seg, numbers)

        seg.document = await finalize_segment(self.remote, final, name=self.name,
                                              index=seg.index, resend=resend)
        seg.finalized_at = trio.current_time()
        self._changed.set()
        freed, spill = seg.retained.release()
        self._budget.give(freed)
        if spill is not None:
            await trio.to_thread.run_sync(spill.close)

    async def _keeper(self) -> None:
        """Keep finalized segments' documents alive until the file is linked.

        A document no file links lives the store's part lifetime; a file written slowly
        (a recording, a log) can outlast that after its first segments were finalized and
        their retained parts dropped.  Such a segment is read back from the store and
        uploaded again, as a fresh document, once it is ``refresh_after`` old.
        """
        after = self._refresh_after
        while True:
            if self.closed and all(seg.document is not None for seg in self._segments):
                return
            if self._changed.is_set():
                self._changed = trio.Event()
            due = math.inf
            for seg in list(self._segments):
                if seg.document is None:
                    continue
                if after is None:
                    after = policy.refresh_after((await self._get_config()).part_lifetime)
                if trio.current_time() >= seg.finalized_at + after:
                    await self._refresh(seg)
                due = min(due, seg.finalized_at + after)
            with trio.move_on_at(due):
                await self._changed.wait()

    async def _refresh(self, seg: _Segment) -> None:
        old = seg.document
        assert old is not None
        log.info("upload of %r: segment %d is %.0f s old, uploading it again before the "
                 "store reclaims it", self.name, seg.index,
                 trio.current_time() - seg.finalized_at)

        def read_at(offset: int, size: int) -> bytes:
            # Runs in a worker thread (as every ReadAt does): a piece at a time from the store.
            return trio.from_thread.run(read_segments, self.remote, (old,), offset, size)

        docs = await upload_reader(
            self.remote, read_at, old.size, self.name, parallel=self.parallel,
            config=await self._get_config(), progress=None, spill_dir=self.spill_dir,
        )
        if len(docs) != 1:
            raise errors.TransportError(f"upload of {self.name!r}: segment {seg.index} "
                                        f"came back as {len(docs)} documents")
        seg.document = docs[0]
        seg.finalized_at = trio.current_time()

    async def _md5_of(self, seg: _Segment) -> str:
        """The MD5 of a (small) segment's saved parts, read back from what is retained."""
        md5 = hashlib.md5()
        for number in range(seg.parts):
            await trio.to_thread.run_sync(md5.update, await self._part_data(seg, number))
        return md5.hexdigest()

    # -- reading back ------------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        """Read bytes written so far (short at the current end).

        Raises:
            FsmountError: reading a finalized segment back from the store failed, or the
                data of a segment is gone because the upload failed or was aborted.
        """
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        out = bytearray()
        pos = offset
        for seg in list(self._segments):
            seg_end = seg.start + seg.size
            if seg_end <= pos or seg.start >= end:
                continue
            hi = min(end, seg_end)
            out += await self._read_segment(seg, pos - seg.start, hi - pos)
            pos = hi
        if pos < end:
            # The tail that is not cut into a part yet.
            pending_start = self.size - self._pending_len
            tail = b"".join(self._pending)
            out += tail[pos - pending_start : end - pending_start]
        return bytes(out)

    async def _read_segment(self, seg: _Segment, offset: int, size: int) -> bytes:
        out = bytearray()
        pos = offset
        end = offset + size
        while pos < end:
            if seg.document is not None:
                out += await read_document(self.remote, seg.document, pos, end - pos)
                break
            number = pos // PART_SIZE
            data = await self._part_data(seg, number)
            lo = pos - policy.part_offset(number)
            piece = data[lo : lo + (end - pos)]
            if not piece:
                raise errors.TransportError(f"short read of part {number} of {self.name!r}")
            out += piece
            pos += len(piece)
        return bytes(out)

    async def into_staging(self, cache_dir: str | os.PathLike[str]) -> StagingFile:
        """Turn this upload into a :class:`~fsmount.upload.staging.StagingFile` holding
        everything written so far.

        For a streaming handle that receives a write that is not sequential.  The upload is
        aborted afterwards (its parts expire on the store).

        Raises:
            FsmountError: this upload already failed, or reading it back failed.
            OSError: the staging file could not be written.
        """
        # Imported here: staging files upload through this module (upload_reader).
        from .staging import WINDOW, StagingFile

        self._raise_if_failed()
        staging = await StagingFile.create(cache_dir, self.remote, ())
        try:
            pos = 0
            while pos < self.size:
                n = min(WINDOW, self.size - pos)
                data = await self.read(pos, n)
                await staging.pwrite(pos, data)
                pos += n
        except BaseException:
            await staging.aclose()
            await self.abort()
            raise
        await self.abort()
        return staging


async def upload_reader(
    remote: Remote,
    read_at: ReadAt,
    size: int | None,
    name: str,
    *,
    parallel: int,
    config: UserConfig | None,
    progress: ProgressFn | None,
    spill_dir: str | None,
    rereadable: bool = True,
    segment_parts: int | None = None,
    resume: Mapping[int, SavedParts] | None = None,
    on_part_saved: PartSavedFn | None = None,
) -> tuple[Document, ...]:
    """Stream ``read_at`` from 0 to ``size`` (or to EOF if None) through one upload.

    ``rereadable``: parts the store loses are read again from ``read_at`` (nothing is
    retained).  ``segment_parts``, ``resume`` and ``on_part_saved`` as in
    :meth:`StreamingUpload.open`.

    Raises:
        InvalidArgument: the source ended before ``size`` bytes.
        FsmountError: the upload failed.
        OSError: ``read_at`` failed.
    """
    failure: Exception | None = None
    docs: tuple[Document, ...] = ()
    # An error is carried out of the nursery by hand so that the caller gets the error
    # itself, not an ExceptionGroup around it.
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(
            nursery,
            remote,
            name,
            parallel=parallel,
            config=config,
            spill_dir=spill_dir,
            progress=progress,
            reread=read_at if rereadable else None,
            segment_parts=segment_parts,
            resume=resume,
            on_part_saved=on_part_saved,
        )
        try:
            pos = 0
            while size is None or pos < size:
                want = READ_CHUNK if size is None else min(READ_CHUNK, size - pos)
                chunk = await trio.to_thread.run_sync(read_at, pos, want)
                if not chunk:
                    if size is not None:
                        raise errors.InvalidArgument(
                            f"{name!r} shrank while being uploaded ({pos} of {size} bytes)"
                        )
                    break
                await up.write(chunk)
                pos += len(chunk)
            docs = await up.finish()
        except Exception as exc:
            await up.abort()
            failure = exc
        except BaseException:
            await up.abort()
            raise
    if failure is not None:
        raise failure
    return docs


def _hash_part(whole: hashlib._Hash | None, md5: hashlib._Hash | None, data: bytes) -> None:
    if whole is not None:
        whole.update(data)
    if md5 is not None:
        md5.update(data)
