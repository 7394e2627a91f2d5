"""How bytes written to fsmount reach the store: streaming part uploads and staging files.

:class:`StreamingUpload` takes a file written sequentially from offset 0 and cuts it into
512 KiB parts that are saved while the file is still being written, several at a time (the
seed's call queue).  The MD5 is computed as the bytes pass, off the trio loop, for as long as
the upload can still be a small one (``inputFile`` carries it; ``inputFileBig`` does not).
Parts whose end lies within the big-file threshold go through ``save_file_part``, later parts
of the same upload through ``save_big_file_part`` (``file_total_parts`` unknown until the last
part).  A file longer than one upload may hold (``max_parts`` parts) becomes several uploads,
its *segments*, finalized in order.

The pipeline is ``write()`` → bounded channel → hasher task (MD5, in a thread) → bounded
channel → ``parallel`` part workers, and beside the workers a spiller task that copies parts
to the spill file (in a thread).  The bounded channels give back-pressure, so a fast writer
waits for the store (or the spill disk) instead of filling memory.  The spill runs beside the
sends, not before them: a spill write that is slow (on a busy machine, a thread's write
waits for the CPU and the GIL behind the store's hashing threads) only fills the spill
queue instead of starving the part workers (see docs/performance.md).  A segment's parts stay available
until its finalize succeeds so that a part the store reports missing (``FILE_PART_X_MISSING``,
e.g. after the part lifetime ran out) can be sent again: the first :data:`RETAIN_IN_MEMORY`
bytes of parts in memory, the rest in an unlinked spill file in the cache directory, or not
at all when the caller can re-read its source (``fsmount put``, staging files).

:class:`StagingFile` holds a file that is written anywhere but sequentially from 0 (seek back,
read-write open of an existing file, append, truncate): a sparse local file in the cache
directory that fetches the old content lazily, one 1 MiB window at a time, and is uploaded
again as a whole by :meth:`StagingFile.upload`.

:func:`upload_file` uploads a local file or file object; ``fsmount put`` and the staging
re-upload use it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import math
import mmap
import os
import secrets
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

import trio

from . import errors, protocol
from .nursery import open_nursery
from .reader import CHUNK, open_chunk_cache
from .remote import Document, InputFile, InputFileBig, Remote, UserConfig

log = logging.getLogger(__name__)

#: Every part but the last of an upload has this size (the seed's recommended maximum).
PART_SIZE = protocol.MAX_PART_SIZE
#: Parts saved at once per upload, unless the caller says otherwise.
DEFAULT_PARALLEL = 4
#: Bytes of sent-but-unfinalized parts an upload keeps in memory before it spills to disk,
#: unless it is given a :class:`RetainBudget` shared with other uploads.
RETAIN_IN_MEMORY = 4 * protocol.MIB
#: Memory a mount's streaming uploads may keep their sent-but-unfinalized parts in, together
#: (beyond it, parts go to spill files).  Writing through the kernel already costs the mount
#: more CPU than ``fsmount put``; writing every part a second time, to a spill file, cost
#: another ~1 s of CPU per GiB (docs/performance.md).
DEFAULT_WRITE_MEMORY = 96 * protocol.MIB
#: Parts per segment of a mount's streaming upload (32 MiB): each segment is finalized as soon
#: as its parts are saved, which drops them, so one big file keeps about two segments
#: retained and fits in :data:`DEFAULT_WRITE_MEMORY`.
STREAM_SEGMENT_PARTS = 64
#: Parts queued for the spill file (at most this many are held in memory for it).
SPILL_QUEUE = 16
#: Queued parts the spiller writes in one thread call at most.
SPILL_BATCH = 8
#: Finalize calls per segment before a part the store keeps reporting missing is fatal.
MAX_FINALIZE_ATTEMPTS = 5
#: Content is fetched (staging) and read back in windows of this size.
WINDOW = protocol.WINDOW
#: Bytes read from a local source per thread hop in :func:`upload_file`.
READ_CHUNK = 2 * protocol.MIB

#: ``progress(bytes_saved_so_far)``, called after every saved part.
ProgressFn = Callable[[int], None]
#: Blocking ``read_at(offset, size) -> bytes`` over the source of an upload (run in a thread).
ReadAt = Callable[[int, int], bytes]
#: ``await fetch(offset, size) -> bytes`` of a file's old content (staging).
FetchFn = Callable[[int, int], Awaitable[bytes]]


#: How long :func:`cached_config` trusts a remote's answer (limits change rarely, if ever).
CONFIG_TTL = 60.0
_configs: weakref.WeakKeyDictionary[Any, tuple[float, UserConfig]] = weakref.WeakKeyDictionary()


async def cached_config(remote: Remote) -> UserConfig:
    """``remote.get_config()``, remembered per remote for :data:`CONFIG_TTL` seconds.

    Every upload needs the limits; over HTTP, asking once per file would add a round trip
    to each small file (rsync, tar x).
    """
    now = time.monotonic()
    try:
        hit = _configs.get(remote)
    except TypeError:  # not weak-referenceable: no cache
        return await remote.get_config()
    if hit is not None and now - hit[0] < CONFIG_TTL:
        return hit[1]
    config = await remote.get_config()
    _configs[remote] = (now, config)
    return config


def new_file_id() -> int:
    """A random client file id, positive and within the signed 64-bit range."""
    return secrets.randbits(63) or 1


# --- reading documents back ---------------------------------------------------------------


async def read_document(remote: Remote, doc: Document, offset: int, size: int) -> bytes:
    """Read ``size`` bytes at ``offset`` of one document, checking its block checksums.

    Goes through the read path's :class:`~fsmount.reader.ChunkCache` (1 MiB windows, each
    verified and fetched once more on a mismatch), with room for one window: these reads
    fill staging files and read back finished segments, nothing worth caching.  Returns
    fewer bytes only past the end of the document.

    Raises:
        ChecksumMismatch: a window still mismatches its checksums after a second fetch, or
            the store returned fewer bytes than the document's size.
        FsmountError: whatever ``get_file`` / ``get_file_checksums`` raise.
    """
    start = max(offset, 0)
    end = min(offset + size, doc.size)
    if start >= end:
        return b""
    out = bytearray()
    async with open_chunk_cache(remote, cache_bytes=CHUNK) as cache:
        for index in range(start // CHUNK, (end - 1) // CHUNK + 1):
            base = index * CHUNK
            chunk = await cache.get(doc, index)
            out += chunk[max(start - base, 0) : end - base]
    return bytes(out)


async def read_segments(
    remote: Remote, segments: tuple[Document, ...], offset: int, size: int
) -> bytes:
    """Read ``size`` bytes at ``offset`` of the concatenation of ``segments`` (verified)."""
    out = bytearray()
    start = 0
    end = offset + size
    for doc in segments:
        seg_end = start + doc.size
        if seg_end > offset and start < end:
            lo = max(offset, start)
            hi = min(end, seg_end)
            out += await read_document(remote, doc, lo - start, hi - lo)
        start = seg_end
        if start >= end:
            break
    return bytes(out)


# --- streaming uploads --------------------------------------------------------------------


@dataclass(eq=False)
class _Segment:
    """One upload (file_id, parts, finalize) of a file; most files have a single one."""

    index: int
    start: int
    file_id: int
    parts: int = 0
    size: int = 0
    closed: bool = False
    pending: int = 0
    #: MD5 of the parts so far while the segment can still be a small upload; None when it
    #: is computed at finalize instead (segments after the first, see _finalize).
    md5: Any = field(default_factory=hashlib.md5)
    saved: trio.Event = field(default_factory=trio.Event)
    #: Part number -> bytes, for parts kept in memory until finalize (in the budget).
    retained: dict[int, bytes] = field(default_factory=dict)
    #: Part number -> bytes, for parts on their way to the spill file.
    spilling: dict[int, bytes] = field(default_factory=dict)
    #: Part numbers written to the spill file (at ``number * PART_SIZE``).
    spilled: set[int] = field(default_factory=set)
    spill: SpillFile | None = None
    #: Spill writes running in a thread right now (the file is closed when they end).
    spill_writing: int = 0
    released: bool = False
    document: Document | None = None
    #: trio.current_time() when ``document`` was made (its lifetime runs from then on).
    finalized_at: float = 0.0

    def part_size(self, number: int) -> int:
        if number < self.parts - 1 or not self.closed:
            return PART_SIZE
        return self.size - number * PART_SIZE

    def release(self) -> tuple[int, SpillFile | None]:
        """Drop retained data.

        Returns the bytes freed from the memory budget and the spill file for the caller to
        close (in a thread: closing an unlinked file drops its pages, which can take a
        while), or None if there is none or a spill write still uses it (the spiller closes
        it then).
        """
        freed = sum(len(b) for b in self.retained.values())
        self.retained.clear()
        self.spilling.clear()
        self.spilled.clear()
        self.released = True
        spill = None
        if self.spill is not None and self.spill_writing == 0:
            spill, self.spill = self.spill, None
        return freed, spill


@dataclass(eq=False)
class _Part:
    segment: _Segment
    number: int
    data: bytes | None
    last: bool
    #: Retained through the spill file (the memory budget had no room for it).
    spill: bool = False


class RetainBudget:
    """Bytes of sent-but-unfinalized parts that uploads may keep in memory, together.

    A mount gives one to all its streaming uploads, so that memory stays bounded however
    many files are written at once; a part that does not fit goes to its upload's spill
    file instead.  Used from the trio thread only.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (nothing reserved) if they do not fit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


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
    ) -> None:
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        if segment_parts is not None and segment_parts < 1:
            raise ValueError("segment_parts must be at least 1")
        self.remote = remote
        self.name = name
        self.parallel = parallel
        self.spill_dir = os.fspath(spill_dir) if spill_dir is not None else None
        self.progress = progress
        self._config = config
        self._reread = reread
        self._budget = budget if budget is not None else RetainBudget(RETAIN_IN_MEMORY)
        self._segment_parts = segment_parts
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
        self._part_send, self._part_recv = trio.open_memory_channel[_Part](parallel)
        self._spill_send, self._spill_recv = trio.open_memory_channel[tuple[_Segment, int]](
            SPILL_QUEUE)
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
        reclaim it.  ``config`` saves a ``get_config`` call.

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
        )
        await nursery.start(up._run)
        return up

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as inner:
                self._nursery = inner
                inner.start_soon(self._guard, self._hasher)
                inner.start_soon(self._guard, self._spiller)
                inner.start_soon(self._guard, self._keeper)
                for _ in range(self.parallel):
                    inner.start_soon(self._guard, self._worker)
                task_status.started()
        finally:
            # Unblocks a writer waiting in send(): it gets BrokenResourceError and then
            # raises the kept error.
            self._hash_recv.close()
            self._part_recv.close()
            self._spill_recv.close()
            self._nursery = None
            for seg in self._segments:
                freed, spill = seg.release()
                self._budget.give(freed)
                if spill is not None:
                    spill.close()
            self._done.set()

    async def _guard(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await fn(*args)
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
        config = await self._get_config()
        self.size += len(data)
        self._pending.append(memoryview(data))
        self._pending_len += len(data)
        # A full part is only sent once at least one byte follows it, so the last part of
        # the file always goes out from finish() with the total part count known.  Each
        # byte is copied once, into its part.
        while self._pending_len > PART_SIZE:
            await self._emit(self._take(PART_SIZE), config, last=False)

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

    async def _emit(self, chunk: bytes, config: UserConfig, *, last: bool) -> None:
        # No await before the part is registered in its segment: a concurrent read() must
        # find these bytes either pending or in a segment.
        seg = self._current
        if seg is None:
            start = self._segments[-1].start + self._segments[-1].size if self._segments else 0
            # A later segment is small only if it is the file's last: its MD5 is computed
            # at finalize then, instead of hashing the first 10 MB of every segment.
            seg = _Segment(index=len(self._segments), start=start, file_id=new_file_id(),
                           md5=None if self._segments else hashlib.md5())
            self._segments.append(seg)
            self._current = seg
        number = seg.parts
        seg.parts += 1
        seg.size += len(chunk)
        seg.pending += 1
        seg_last = last or seg.parts >= self._max_parts(config)
        if seg_last:
            seg.closed = True
            self._current = None
        spill = False
        if self._reread is None:
            if self._budget.take(len(chunk)):
                seg.retained[number] = chunk
            else:
                seg.spilling[number] = chunk
                spill = True
        try:
            await self._hash_send.send(_Part(seg, number, chunk, seg_last, spill))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._raise_if_failed()
            raise
        if seg_last and self._nursery is not None:
            self._nursery.start_soon(self._guard, self._finalize, seg)

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
                config = await self._get_config()
                await self._emit(self._take(self._pending_len), config, last=True)
            await self._hash_send.aclose()
            await self._done.wait()
            if self._error is not None:
                raise self._error
            docs = tuple(seg.document for seg in self._segments)
            if any(d is None for d in docs):
                raise errors.TransportError(f"upload of {self.name!r} did not complete")
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
        async with self._part_send, self._spill_send:
            async for part in self._hash_recv:
                seg = part.segment
                # _emit fetched the config before it sent the first part.
                config = self._config
                assert part.data is not None and config is not None
                end = part.number * PART_SIZE + len(part.data)
                if seg.md5 is not None and end <= config.big_file_threshold:
                    await trio.to_thread.run_sync(seg.md5.update, part.data)
                else:
                    # Past the threshold the upload is big: inputFileBig carries no MD5.
                    seg.md5 = None
                if part.spill:
                    await self._spill_send.send((seg, part.number))
                await self._part_send.send(part)

    async def _spiller(self) -> None:
        """Write the retained parts the memory budget had no room for to their segment's
        spill file.

        Parts queued together are written in one thread call: one hand-off per batch
        instead of one per part.
        """
        async for first in self._spill_recv:
            batch = [first]
            while len(batch) < SPILL_BATCH:
                try:
                    batch.append(self._spill_recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            jobs: list[tuple[_Segment, SpillFile, int, bytes]] = []
            for seg, number in batch:
                data = seg.spilling.get(number)
                if seg.released or data is None:
                    continue
                if seg.spill is None:
                    new = await trio.to_thread.run_sync(self._new_spill_file)
                    if seg.released:
                        await trio.to_thread.run_sync(new.close)
                        continue
                    seg.spill = new
                jobs.append((seg, seg.spill, number, data))
            if not jobs:
                continue
            for seg, *_ in jobs:
                seg.spill_writing += 1
            try:
                await trio.to_thread.run_sync(
                    _spill_writes, [(f, data, n * PART_SIZE) for _, f, n, data in jobs]
                )
            finally:
                for seg, *_ in jobs:
                    seg.spill_writing -= 1
            for seg, spill, number, _data in jobs:
                if seg.released:
                    # Finalized (or failed) meanwhile: the file is ours to close.
                    if seg.spill is spill and seg.spill_writing == 0:
                        seg.spill = None
                        await trio.to_thread.run_sync(spill.close)
                    continue
                seg.spilled.add(number)
                seg.spilling.pop(number, None)

    def _max_parts(self, config: UserConfig) -> int:
        if self._segment_parts is None:
            return config.max_parts
        return min(config.max_parts, self._segment_parts)

    def _new_spill_file(self) -> SpillFile:
        parts = self._max_parts(self._config) if self._config is not None else 0
        return SpillFile(self.spill_dir, parts * PART_SIZE)

    async def _worker(self) -> None:
        async for part in self._part_recv:
            seg = part.segment
            assert part.data is not None
            size = len(part.data)
            total = seg.parts if part.last else protocol.TOTAL_PARTS_UNKNOWN
            await self._save(seg, part.number, part.data, total)
            part.data = None
            seg.pending -= 1
            self.saved_bytes += size
            if self.progress is not None:
                self.progress(self.saved_bytes)
            if seg.closed and seg.pending == 0:
                seg.saved.set()

    async def _save(self, seg: _Segment, number: int, data: bytes, total: int) -> None:
        config = await self._get_config()
        if number * PART_SIZE + len(data) <= config.big_file_threshold:
            ok = await self.remote.save_file_part(seg.file_id, number, data)
        else:
            ok = await self.remote.save_big_file_part(seg.file_id, number, total, data)
        if ok is False:
            raise errors.TransportError(f"the store refused part {number} of {self.name!r}")

    def _retained_part(self, seg: _Segment, number: int) -> bytes | None:
        """A sent part's bytes from memory or the spill file, or None if not retained.

        Synchronous on purpose: a finalize that releases the spill file cannot run in the
        middle of it.
        """
        data = seg.retained.get(number)
        if data is None:
            data = seg.spilling.get(number)
        if data is not None:
            return data
        if number in seg.spilled and seg.spill is not None:
            return seg.spill.read(seg.part_size(number), number * PART_SIZE)
        return None

    async def _part_data(self, seg: _Segment, number: int) -> bytes:
        """The bytes of a sent part, from what is retained or from the source."""
        size = seg.part_size(number)
        data = self._retained_part(seg, number)
        if data is None and self._reread is not None:
            offset = seg.start + number * PART_SIZE
            data = await trio.to_thread.run_sync(self._reread, offset, size)
        if data is None:
            raise errors.TransportError(f"part {number} of {self.name!r} is no longer available")
        if len(data) != size:
            raise errors.TransportError(
                f"part {number} of {self.name!r}: source gave {len(data)} bytes, expected {size}"
            )
        return data

    async def _resend(self, seg: _Segment, numbers: list[int]) -> None:
        limiter = trio.CapacityLimiter(self.parallel)

        async def one(number: int) -> None:
            async with limiter:
                data = await self._part_data(seg, number)
                await self._save(seg, number, data, seg.parts)

        async with open_nursery() as n:
            for number in numbers:
                n.start_soon(one, number)

    async def _finalize(self, seg: _Segment) -> None:
        await seg.saved.wait()
        config = await self._get_config()
        if seg.size > config.big_file_threshold:
            final: InputFile | InputFileBig = InputFileBig(seg.file_id, seg.parts, self.name)
        else:
            md5 = seg.md5.hexdigest() if seg.md5 is not None else await self._md5_of(seg)
            final = InputFile(seg.file_id, seg.parts, self.name, md5)
        for attempt in range(1, MAX_FINALIZE_ATTEMPTS + 1):
            try:
                seg.document = await self.remote.upload_media(final)
                seg.finalized_at = trio.current_time()
                self._changed.set()
            except errors.FilePartMissing as exc:
                if attempt == MAX_FINALIZE_ATTEMPTS or not 0 <= exc.part < seg.parts:
                    raise
                log.info("upload of %r: part %d of segment %d missing, sending it again",
                         self.name, exc.part, seg.index)
                # The store names the lowest missing part.  The first time, assume one lost
                # part; after that, parts expired in bulk: send it and every later part again
                # in one round instead of one finalize per part.
                first = attempt == 1
                numbers = [exc.part] if first else list(range(exc.part, seg.parts))
                await self._resend(seg, numbers)
                continue
            freed, spill = seg.release()
            self._budget.give(freed)
            if spill is not None:
                await trio.to_thread.run_sync(spill.close)
            return

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
                    after = (await self._get_config()).part_lifetime / 2
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

        docs = await _upload_reader(
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
            lo = pos - number * PART_SIZE
            piece = data[lo : lo + (end - pos)]
            if not piece:
                raise errors.TransportError(f"short read of part {number} of {self.name!r}")
            out += piece
            pos += len(piece)
        return bytes(out)

    async def into_staging(self, cache_dir: str | os.PathLike[str]) -> StagingFile:
        """Turn this upload into a :class:`StagingFile` holding everything written so far.

        For a streaming handle that receives a write that is not sequential.  The upload is
        aborted afterwards (its parts expire on the store).

        Raises:
            FsmountError: this upload already failed, or reading it back failed.
            OSError: the staging file could not be written.
        """
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


# --- staging files ------------------------------------------------------------------------


class StagingFile:
    """A file's content in a sparse local file, for writes at any offset.

    Old content (``segments``) is fetched lazily, one 1 MiB window the first time it is read
    or partly overwritten; windows that a write covers entirely are never fetched.  Holes
    (writes past the end, truncate up) read as zeros.  All operations on one staging file
    are serialized by a lock; :meth:`upload` holds it, so writes wait for an upload.
    """

    def __init__(
        self,
        fd: int,
        remote: Remote,
        segments: tuple[Document, ...],
        fetch: FetchFn | None,
        cache_dir: str,
    ) -> None:
        self._fd = fd
        self.remote = remote
        self.cache_dir = cache_dir
        self._segments = segments
        self._fetch_fn = fetch
        #: Bytes of old content still relevant (shrinks when truncated below it).
        self._orig = sum(d.size for d in segments)
        self._fetched: set[int] = set()
        self.size = self._orig
        #: True once the content differs from what was last uploaded (or created from).
        self.dirty = False
        self._lock = trio.Lock()

    @classmethod
    async def create(
        cls,
        cache_dir: str | os.PathLike[str],
        remote: Remote,
        segments: tuple[Document, ...] = (),
        *,
        fetch: FetchFn | None = None,
    ) -> StagingFile:
        """A staging file in ``cache_dir`` whose content is the concatenation of ``segments``.

        ``fetch(offset, size)`` reads old content (default: :func:`read_segments`, verified).

        Raises:
            OSError: the cache directory cannot be created or written.
        """
        cache = os.fspath(cache_dir)

        def make() -> int:
            os.makedirs(cache, exist_ok=True)
            fd, path = tempfile.mkstemp(dir=cache, prefix="fsmount-staging-")
            # Unlinked at once: nothing is left behind if the process dies.
            os.unlink(path)
            return fd

        fd = await trio.to_thread.run_sync(make)
        sf = cls(fd, remote, tuple(segments), fetch, cache)
        try:
            await trio.to_thread.run_sync(os.ftruncate, fd, sf._orig)
        except BaseException:
            os.close(fd)
            raise
        return sf

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _check(self) -> None:
        if self._fd < 0:
            raise ValueError("staging file is closed")

    async def _read_old(self, offset: int, size: int) -> bytes:
        if self._fetch_fn is not None:
            return await self._fetch_fn(offset, size)
        return await read_segments(self.remote, self._segments, offset, size)

    async def _ensure(self, start: int, end: int, *, skip_covered: bool = False) -> None:
        """Fetch the old content of windows overlapping ``[start, end)`` (lock held).

        With ``skip_covered``, windows lying entirely inside ``[start, end)`` are only
        marked as present: the caller is about to overwrite them.
        """
        end = min(end, self._orig)
        if start >= end:
            return
        for w in range(start // WINDOW, math.ceil(end / WINDOW)):
            if w in self._fetched:
                continue
            lo = w * WINDOW
            hi = min(lo + WINDOW, self._orig)
            if skip_covered and start <= lo and hi <= end:
                self._fetched.add(w)
                continue
            data = await self._read_old(lo, hi - lo)
            if len(data) != hi - lo:
                raise errors.ChecksumMismatch(
                    f"old content at {lo}: got {len(data)} bytes, expected {hi - lo}"
                )
            await trio.to_thread.run_sync(os.pwrite, self._fd, data, lo)
            self._fetched.add(w)

    async def pread(self, offset: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` (short at the end).

        Raises:
            FsmountError: fetching old content failed.
            OSError: the local file could not be read.
        """
        if offset < 0 or size < 0:
            raise errors.InvalidArgument("negative offset or size")
        async with self._lock:
            self._check()
            end = min(offset + size, self.size)
            if offset >= end:
                return b""
            await self._ensure(offset, end)
            return await trio.to_thread.run_sync(os.pread, self._fd, end - offset, offset)

    async def pwrite(self, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; a gap after the old end reads as zeros.

        Raises:
            FsmountError: fetching old content of a partly overwritten window failed.
            OSError: the local file could not be written (e.g. ENOSPC in the cache dir).
        """
        if offset < 0:
            raise errors.InvalidArgument("negative offset")
        if not data:
            return 0
        async with self._lock:
            self._check()
            end = offset + len(data)
            await self._ensure(offset, end, skip_covered=True)
            written = await trio.to_thread.run_sync(_pwrite_all, self._fd, data, offset)
            self.size = max(self.size, end)
            self.dirty = True
            return written

    async def truncate(self, size: int) -> None:
        """Set the size; bytes past a shrink are gone, growth reads as zeros.

        Raises:
            InvalidArgument: ``size`` is negative.
            OSError: the local file could not be truncated.
        """
        if size < 0:
            raise errors.InvalidArgument("negative size")
        async with self._lock:
            self._check()
            if size == self.size:
                return
            # Old content past the new size may never come back: a later growth is zeros.
            self._orig = min(self._orig, size)
            await trio.to_thread.run_sync(os.ftruncate, self._fd, size)
            self.size = size
            self.dirty = True

    async def upload(
        self,
        name: str,
        *,
        parallel: int = DEFAULT_PARALLEL,
        config: UserConfig | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[Document, ...]:
        """Upload the whole current content and return its segments (``()`` if empty).

        Old content that was never fetched is fetched first.  Clears :attr:`dirty`.

        Raises:
            FsmountError: fetching or uploading failed.
            OSError: the local file could not be read.
        """
        async with self._lock:
            self._check()
            await self._ensure_all(parallel)
            fd = self._fd
            docs = await _upload_reader(
                self.remote,
                lambda off, n: os.pread(fd, n, off),
                self.size,
                name,
                parallel=parallel,
                config=config,
                progress=progress,
                spill_dir=self.cache_dir,
            )
            self.dirty = False
            return docs

    async def _ensure_all(self, parallel: int) -> None:
        missing = [w for w in range(math.ceil(self._orig / WINDOW)) if w not in self._fetched]
        if not missing:
            return
        limiter = trio.CapacityLimiter(parallel)

        async def one(w: int) -> None:
            async with limiter:
                await self._ensure(w * WINDOW, (w + 1) * WINDOW)

        async with open_nursery() as n:
            for w in missing:
                n.start_soon(one, w)

    async def aclose(self) -> None:
        """Delete the local file.  Idempotent."""
        async with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _spill_writes(writes: list[tuple[SpillFile, bytes, int]]) -> None:
    for spill, data, offset in writes:
        spill.write(data, offset)


#: Offsets, lengths and buffer addresses of direct I/O are multiples of this (the largest
#: logical block size of common devices; a page, so a fresh mmap is aligned).
DIRECT_ALIGN = 4096
_aligned = threading.local()


def _aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer of at least ``size`` bytes, one reused per thread."""
    buf: mmap.mmap | None = getattr(_aligned, "buf", None)
    if buf is None or len(buf) < size:
        buf = _aligned.buf = mmap.mmap(-1, max(size, PART_SIZE))
    return buf


class SpillFile:
    """An unlinked file in the cache directory that holds one segment's retained parts.

    Part N lives at ``N * PART_SIZE``.  The file is sized for the whole segment up front
    (sparse), so writes inside it never extend it, which on ext4 would wait for the journal.

    Opened for direct I/O (``O_DIRECT``) where the filesystem allows it: a spilled part is
    read again only if the store loses it, so it has no business in the page cache, where a
    second copy of everything written through the mount pushed out other data and, on this
    project's VM, cost more CPU than the write itself (docs/performance.md).  Direct I/O
    goes through a page-aligned per-thread buffer with lengths padded to
    :data:`DIRECT_ALIGN`; if the filesystem refuses it (tmpfs before Linux 6.6, some FUSE
    and network filesystems), the file stays buffered.
    """

    def __init__(self, directory: str | None, size: int) -> None:
        self._file = tempfile.TemporaryFile(dir=directory, prefix="fsmount-spill-")
        self.fd = self._file.fileno()
        if size:
            os.ftruncate(self.fd, size)
        self.direct = False
        try:
            flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | os.O_DIRECT)
            self.direct = True
        except OSError:
            pass

    def _buffered(self) -> None:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        self.direct = False

    def write(self, data: bytes, offset: int) -> None:
        """Write ``data`` at ``offset`` (blocking; called in a worker thread).

        Raises:
            OSError: the write failed (``ENOSPC`` on a full cache directory, …).
        """
        if self.direct:
            size = len(data)
            padded = -(-size // DIRECT_ALIGN) * DIRECT_ALIGN
            buf = _aligned_buffer(padded)
            buf[:size] = data
            if padded > size:
                buf[size:padded] = bytes(padded - size)
            try:
                _pwrite_all(self.fd, memoryview(buf)[:padded], offset)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # Alignment the device does not accept: keep going without direct I/O.
                self._buffered()
        _pwrite_all(self.fd, data, offset)

    def read(self, size: int, offset: int) -> bytes:
        """Read back ``size`` bytes written at ``offset``.

        Raises:
            OSError: the read failed.
        """
        if not self.direct:
            return os.pread(self.fd, size, offset)
        padded = -(-size // DIRECT_ALIGN) * DIRECT_ALIGN
        # A fresh buffer: this runs on the trio thread (see _retained_part) while spill
        # threads may be using theirs; resends are rare.
        with mmap.mmap(-1, padded) as buf:
            got = os.preadv(self.fd, [buf], offset)
            return bytes(buf[: min(got, size)])

    def close(self) -> None:
        self._file.close()


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> int:
    mv = memoryview(data)
    done = 0
    while done < len(mv):
        done += os.pwrite(fd, mv[done:], offset + done)
    return done


# --- whole files --------------------------------------------------------------------------


async def _upload_reader(
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
) -> tuple[Document, ...]:
    """Stream ``read_at`` from 0 to ``size`` (or to EOF if None) through one upload."""
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


async def upload_file(
    remote: Remote,
    source: str | os.PathLike[str] | IO[bytes],
    name: str,
    *,
    parallel: int = DEFAULT_PARALLEL,
    progress: ProgressFn | None = None,
    config: UserConfig | None = None,
    spill_dir: str | os.PathLike[str] | None = None,
) -> tuple[Document, ...]:
    """Upload a local file (a path, or a binary file object from its current position).

    Returns the segments in order, ``()`` for an empty file; link them with
    ``remote.create_file`` / ``remote.set_content``.  Parts the store reports missing are
    re-read from the source when it is seekable; otherwise (a pipe) they are retained as in
    :class:`StreamingUpload`, spilling to ``spill_dir``.

    Raises:
        OSError: the source cannot be opened or read (IsADirectoryError for a directory).
        FsmountError: the upload failed after the transport's retries.
    """
    spill = os.fspath(spill_dir) if spill_dir is not None else None
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(21, "Is a directory", path)
            regular = stat.S_ISREG(st.st_mode)
            return await _upload_reader(
                remote,
                lambda off, n: os.pread(fd, n, off),
                st.st_size if regular else None,
                name,
                parallel=parallel,
                config=config,
                progress=progress,
                spill_dir=spill,
                rereadable=regular,
            )
        finally:
            os.close(fd)
    return await _upload_fileobj(
        remote, source, name, parallel=parallel, config=config, progress=progress, spill_dir=spill
    )


async def _upload_fileobj(
    remote: Remote,
    f: IO[bytes],
    name: str,
    *,
    parallel: int,
    config: UserConfig | None,
    progress: ProgressFn | None,
    spill_dir: str | None,
) -> tuple[Document, ...]:
    seekable = False
    try:
        seekable = f.seekable()
    except (OSError, ValueError):
        pass
    if not seekable:
        def read_stream(_off: int, n: int) -> bytes:
            return f.read(n) or b""

        return await _upload_reader(
            remote, read_stream, None, name, parallel=parallel, config=config,
            progress=progress, spill_dir=spill_dir, rereadable=False,
        )
    base = f.tell()
    lock = threading.Lock()

    def read_at(off: int, n: int) -> bytes:
        with lock:
            f.seek(base + off)
            return f.read(n) or b""

    return await _upload_reader(
        remote, read_at, None, name, parallel=parallel, config=config,
        progress=progress, spill_dir=spill_dir,
    )
