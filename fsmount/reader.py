"""The read path: a byte-bounded chunk cache, verified fetches, and read-ahead per stream.

Content is fetched in 1 MiB chunks aligned to the document (``get_file`` with an offset that
is a multiple of 1 MiB and a 1 MiB limit; the last chunk comes back short).  Documents are
immutable, so a chunk keyed by ``(document id, chunk index)`` never needs invalidation.

* :class:`ChunkCache` owns the LRU (``cachetools``, bounded in bytes), the table of fetches
  in flight (concurrent readers of one chunk share one fetch), the block checksums (fetched
  once per 1 MiB window: the store's CRC32Cs, or the protocol's SHA-256 block hashes where
  the store has no CRC32Cs) and the verification of every chunk against them.  Its
  fetch tasks run in a nursery given to :meth:`ChunkCache.start` (or :func:`open_chunk_cache`)
  so that read-ahead outlives the request that triggered it, and each fetch has its own
  cancel scope so that stale read-ahead can be cancelled.
* :class:`FileReader` is the read state of one open file: the file's segments (a file is the
  concatenation of its documents, whose boundaries need not be 1 MiB aligned within the
  file) and its *streams*.  A stream is one sequential reader inside the file; media players
  read at two or more offsets at once, so several streams live side by side, each with a
  read-ahead window that grows while its reads stay sequential (tolerating the kernel's
  slightly out-of-order delivery) and that is dropped, with its fetches cancelled, when the
  stream goes stale.

In a file larger than the whole cache, chunks a sequential stream has read past leave the
main LRU for a small tier of their own (:meth:`ChunkCache.release`): such a scan could
not be re-read from the cache anyway, and this way it neither evicts what random readers
use nor makes the cache touch fresh memory for data the kernel's page cache now holds.

Memory: the cache's byte bound and its streamed tier, plus per open file at most
``read_ahead`` bytes of read-ahead in flight, plus the chunks the kernel's own concurrent
requests are waiting for.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
from cachetools import LRUCache

from . import errors
from .bdp import LinkEstimator
from .nursery import open_nursery
from .protocol import HASH_BLOCK, WINDOW
from .remote import MAX_RUN_WINDOWS, BlockCheck, Document, Remote, checks_by_window

log = logging.getLogger(__name__)

CHUNK = WINDOW
"""Chunk size of the cache: one ``get_file`` window."""

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
DEFAULT_READ_AHEAD = 16 * CHUNK
#: Read-ahead a mount may grow to where the link's bandwidth-delay product asks for it.
DEFAULT_READ_AHEAD_MAX = 128 * CHUNK
#: Chunks a sequential stream has read past stay this long (in bytes, most recent first)
#: before their memory is reused; see :meth:`ChunkCache.release`.
STREAMED_BYTES = 8 * CHUNK
#: At most this many streams are tracked per open file (audio, video, index, ...).
MAX_STREAMS = 4
#: A stream that has not been read for this many reads of its file is dropped.
STALE_READS = 64
#: A read this close behind or ahead of a stream's position still belongs to it: the kernel
#: sends a sequential reader's requests (up to its 1 MiB read-ahead) slightly out of order.
BACK_TOLERANCE = 4 * CHUNK
FORWARD_TOLERANCE = 2 * CHUNK


ChunkKey = tuple[int, int]


class _Cancelled(Exception):
    """Marks a fetch that was cancelled before anyone waited for it."""


@dataclass(eq=False)
class _Fetch:
    """One chunk being fetched, as part of a :class:`_Run`."""

    key: ChunkKey
    doc: Document
    run: _Run
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    error: BaseException | None = None
    waiters: int = 0


@dataclass(eq=False)
class _Run:
    """Consecutive chunks of one document fetched by one ``get_file_windows`` call."""

    doc: Document
    first: int  #: chunk index of the first chunk
    fetches: list[_Fetch] = field(default_factory=list)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def wanted(self) -> bool:
        return any(f.waiters for f in self.fetches)


@dataclass
class CacheStats:
    """Counters for tests and benchmarks."""

    hits: int = 0
    misses: int = 0
    joined: int = 0  #: reads that waited for a fetch already in flight
    fetches: int = 0
    prefetches: int = 0
    cancelled: int = 0
    mismatches: int = 0
    hash_fetches: int = 0
    runs: int = 0  #: get_file_windows calls (one per run of consecutive chunks)


class ChunkCache:
    """Shared chunk cache of one mount (or one CLI transfer).

    Call :meth:`start` with a nursery before use (or use :func:`open_chunk_cache`).
    """

    def __init__(self, remote: Remote, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 streamed_bytes: int = STREAMED_BYTES,
                 link: LinkEstimator | None = None) -> None:
        self.remote = remote
        self.cache_bytes = cache_bytes
        #: What the fetches observed of the link (read-ahead sizes itself from it).
        self.link = link or LinkEstimator()
        self._lru: LRUCache[ChunkKey, bytes] = LRUCache(maxsize=max(cache_bytes, 1), getsizeof=len)
        # Chunks released by sequential streams: a scan does not push the random-access
        # working set out of the main LRU, and its own memory is reused within a few MiB.
        self._streamed: LRUCache[ChunkKey, bytes] = LRUCache(
            maxsize=max(streamed_bytes, CHUNK), getsizeof=len)
        self._inflight: dict[ChunkKey, _Fetch] = {}
        # Block checks of a window: (doc id, chunk index) -> that window's checks.
        self._hashes: LRUCache[ChunkKey, tuple[BlockCheck, ...]] = LRUCache(maxsize=65536)
        self._hash_inflight: dict[ChunkKey, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self.stats = CacheStats()

    def start(self, nursery: trio.Nursery) -> None:
        """Run fetches in ``nursery`` (which must outlive every reader of this cache)."""
        self._nursery = nursery

    @property
    def used_bytes(self) -> int:
        """Bytes of chunks held (both tiers), for ``fsmount status`` and metrics."""
        return int(self._lru.currsize + self._streamed.currsize)

    @property
    def fetches_in_flight(self) -> int:
        return len(self._inflight)

    # --- lookups ---------------------------------------------------------------------

    def cached(self, doc: Document, index: int) -> bytes | None:
        """The chunk if it is in the cache (counts as a use for the LRU order)."""
        return self._lookup((doc.id, index))

    def has(self, doc: Document, index: int) -> bool:
        key = (doc.id, index)
        return key in self._lru or key in self._streamed or key in self._inflight

    def release(self, doc: Document, index: int) -> None:
        """Note that a sequential reader of a file larger than the cache is done with a
        chunk: it leaves the main LRU for the small tier of streamed chunks
        (:data:`STREAMED_BYTES`).

        The kernel keeps what it was sent in its page cache, so a chunk a stream has read
        past is rarely asked for again; kept in the main LRU, a 1 GiB scan would fill all
        of it with such chunks, evicting what random readers still use, and touch
        ``cache_bytes`` of fresh memory on the way (docs/performance.md, sixth session).
        """
        key = (doc.id, index)
        data = self._lru.pop(key, None)
        if data is not None:
            self._streamed[key] = data

    def _lookup(self, key: ChunkKey) -> bytes | None:
        data = self._lru.get(key)
        if data is None:
            data = self._streamed.get(key)
        return data

    async def get(self, doc: Document, index: int) -> bytes:
        """Chunk ``index`` of ``doc``, verified, from the cache or fetched once.

        Raises ChecksumMismatch (after one refetch), the remote's errors, TransportError.
        """
        key = (doc.id, index)
        for _ in range(4):
            data = self._lookup(key)
            if data is not None:
                self.stats.hits += 1
                return data
            fetch = self._inflight.get(key)
            if fetch is None:
                self.stats.misses += 1
                fetch = self._start(doc, index, 1)[0]
            else:
                self.stats.joined += 1
            fetch.waiters += 1
            try:
                await fetch.done.wait()
            finally:
                fetch.waiters -= 1
            if fetch.data is not None:
                return fetch.data
            if isinstance(fetch.error, _Cancelled):
                continue  # cancelled read-ahead raced with this read: fetch again
            assert fetch.error is not None
            raise fetch.error
        raise errors.TransportError(f"chunk {index} of document {doc.id} kept being cancelled")

    def prefetch(self, doc: Document, first: int, count: int = 1,
                 run: int = MAX_RUN_WINDOWS) -> list[_Fetch]:
        """Start fetching chunks ``first`` .. ``first + count - 1`` of ``doc`` in the
        background, those not cached or in flight already, in runs of at most ``run``
        (1..MAX_RUN_WINDOWS) consecutive chunks, one ``get_file_windows`` call each."""
        run = max(1, min(MAX_RUN_WINDOWS, run))
        started: list[_Fetch] = []
        index, end = first, first + count
        while index < end:
            if self.has(doc, index):
                index += 1
                continue
            stop = index + 1
            while stop < end and stop - index < run and not self.has(doc, stop):
                stop += 1
            self.stats.prefetches += stop - index
            started += self._start(doc, index, stop - index)
            index = stop
        return started

    def cancel(self, fetch: _Fetch) -> None:
        """Cancel a read-ahead fetch's run if nobody waits for any chunk of it (a no-op
        otherwise)."""
        run = fetch.run
        if not run.wanted() and not all(f.done.is_set() for f in run.fetches):
            run.scope.cancel()

    # --- fetching --------------------------------------------------------------------

    def _start(self, doc: Document, first: int, count: int) -> list[_Fetch]:
        if self._nursery is None:
            raise RuntimeError("ChunkCache.start() was not called")
        run = _Run(doc, first)
        for index in range(first, first + count):
            fetch = _Fetch((doc.id, index), doc, run)
            run.fetches.append(fetch)
            self._inflight[fetch.key] = fetch
        self._nursery.start_soon(self._run, run)
        return run.fetches

    async def _run(self, run: _Run) -> None:
        try:
            with run.scope:
                await self._fetch_run(run)
            if run.scope.cancelled_caught:
                self.stats.cancelled += sum(1 for f in run.fetches if f.data is None)
        except Exception as exc:  # delivered to every waiter of a chunk not done yet
            for f in run.fetches:
                if f.data is None and f.error is None:
                    f.error = exc
        finally:
            for f in run.fetches:
                if f.data is None and f.error is None:
                    f.error = _Cancelled()
                if self._inflight.get(f.key) is f:
                    del self._inflight[f.key]
                f.done.set()

    def _finish(self, fetch: _Fetch, data: bytes) -> None:
        fetch.data = data
        self._lru[fetch.key] = data
        if self._inflight.get(fetch.key) is fetch:
            del self._inflight[fetch.key]
        fetch.done.set()

    async def _fetch_run(self, run: _Run) -> None:
        """Fetch a run's chunks, each verified against its block checks: one
        ``get_file_windows`` call brings the chunks and their checks (more calls only if
        the store answers fewer windows than asked, or sends no checks)."""
        doc = run.doc
        pending = [f for f in run.fetches]
        for _ in range(len(pending) + 1):
            if not pending:
                return
            first = pending[0].key[1]
            offset = first * CHUNK
            if offset >= doc.size:
                raise errors.OffsetInvalid(f"chunk {first} is past the end of document {doc.id}")
            count = min(len(pending), chunk_count(doc.size) - first)
            self.stats.runs += 1
            self.stats.fetches += count
            ticket = self.link.begin()
            got = await self.remote.get_file_windows(doc.location, offset, count)
            nbytes = sum(len(w.bytes) for w in got.windows)
            # Only whole runs are latency samples (a short one at the end of a document
            # says less about the link); each run size has its own.
            self.link.end(ticket, nbytes, full=nbytes == count * CHUNK)
            by_window = checks_by_window(got.checks) if got.checks is not None else {}
            for i, window in enumerate(got.windows[:count]):
                index = first + i
                blocks = by_window.get(index)
                hashes = tuple(blocks) if blocks else await self._window_hashes(doc, index)
                self._finish(pending[i], await self._verified(doc, index, window.bytes, hashes))
            taken = min(len(got.windows), count)
            if taken == 0:
                raise errors.TransportError(
                    f"the store answered no window at chunk {first} of document {doc.id}")
            pending = pending[taken:]

    async def _verified(self, doc: Document, index: int, data: bytes,
                        hashes: tuple[BlockCheck, ...]) -> bytes:
        """``data`` if it is chunk ``index`` of ``doc`` as its block checks say, else the
        chunk fetched once more and checked again.

        Raises ChecksumMismatch when the second copy fails too.
        """
        offset = index * CHUNK
        expected = min(CHUNK, doc.size - offset)
        for attempt in range(2):
            if attempt:
                self.stats.fetches += 1
                data = (await self.remote.get_file(doc.location, offset, CHUNK)).bytes
            # Verified on the trio thread: CRC32C runs at over 20 GB/s (SHA-256, for stores
            # without CRC32Cs, at over 1 GB/s), and a hand-off to a worker thread per chunk
            # cost more (GIL and wake-ups) than it let run in parallel (docs/performance.md,
            # "reads over --server at rclone's speed").
            if len(data) == expected and _verify(data, offset, hashes):
                return data
            self.stats.mismatches += 1
            if attempt == 0:
                log.debug("chunk %d of document %d failed verification; fetching again",
                          index, doc.id)
        raise errors.ChecksumMismatch(
            f"chunk {index} of document {doc.id} does not match its block checksums"
        )

    async def _window_hashes(self, doc: Document, index: int) -> tuple[BlockCheck, ...]:
        key = (doc.id, index)
        for _ in range(4):
            hashes = self._hashes.get(key)
            if hashes is not None:
                return hashes
            pending = self._hash_inflight.get(key)
            if pending is not None:
                await pending.wait()
                continue
            event = self._hash_inflight[key] = trio.Event()
            try:
                self.stats.hash_fetches += 1
                got = await self.remote.get_file_checksums(doc.location, index * CHUNK)
                # The answer may reach past this window ("at least through it"); keep
                # the other windows it covers completely, each block once.
                for w, blocks in checks_by_window(got).items():
                    hs = tuple(blocks)
                    if w == index or _covers(hs, w * CHUNK, min(CHUNK, doc.size - w * CHUNK)):
                        self._hashes[(doc.id, w)] = hs
                hashes = self._hashes.get(key)
                if hashes is None:
                    hashes = ()
                    self._hashes[key] = hashes
                return hashes
            finally:
                del self._hash_inflight[key]
                event.set()
        raise errors.TransportError(f"hashes of document {doc.id} could not be fetched")


def _covers(hashes: tuple[BlockCheck, ...], start: int, length: int) -> bool:
    """True if ``hashes`` are contiguous blocks covering exactly ``length`` bytes at ``start``."""
    pos = start
    for h in hashes:
        if h.offset != pos or h.limit <= 0:
            return False
        pos += h.limit
    return pos == start + length and length > 0


def _verify(data: bytes, offset: int, hashes: tuple[BlockCheck, ...]) -> bool:
    """True if ``data`` (at ``offset`` of its document) matches every block check and the
    checks cover all of it."""
    covered = 0
    view = memoryview(data)
    for h in hashes:
        start = h.offset - offset
        if start != covered or h.limit <= 0 or start + h.limit > len(data):
            return False
        if not h.matches(view[start : start + h.limit]):
            return False
        covered += h.limit
    return covered == len(data) and len(data) > 0


@asynccontextmanager
async def open_chunk_cache(
    remote: Remote, cache_bytes: int = DEFAULT_CACHE_BYTES, streamed_bytes: int = STREAMED_BYTES
) -> AsyncIterator[ChunkCache]:
    """A started :class:`ChunkCache` whose fetches are cancelled when the block exits.

    An error raised inside the block leaves as itself (e.g. ChecksumMismatch), not wrapped
    in the fetch nursery's exception group, so callers can catch the domain error.
    """
    async with open_nursery() as nursery:
        cache = ChunkCache(remote, cache_bytes, streamed_bytes)
        cache.start(nursery)
        try:
            yield cache
        finally:
            nursery.cancel_scope.cancel()


# --- per open file -------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    start: int  #: offset of the segment's first byte within the file
    doc: Document

    @property
    def end(self) -> int:
        return self.start + self.doc.size


@dataclass(eq=False)
class Stream:
    """One sequential reader within an open file."""

    pos: int  #: end of the furthest read so far
    window: int  #: read-ahead in chunks
    last_read: int  #: the file's read counter at the last read of this stream
    released: int  #: chunks ending at or before this file offset were released
    hits: int = 0
    fetches: set[_Fetch] = field(default_factory=set)


class FileReader:
    """Reads of one open file: maps file offsets onto segments and chunks, and runs
    read-ahead for each stream of reads.  ``name`` is used in log lines."""

    def __init__(
        self,
        cache: ChunkCache,
        segments: tuple[Document, ...],
        name: str = "?",
        *,
        read_ahead: int = DEFAULT_READ_AHEAD,
        max_streams: int = MAX_STREAMS,
        read_ahead_max: int | None = None,
    ) -> None:
        self.cache = cache
        self.name = name
        #: Read-ahead in flight per file, in bytes: at least ``read_ahead``, and up to
        #: ``read_ahead_max`` (default: the same) where the link's bandwidth-delay product
        #: asks for more (:meth:`max_window`).
        self.read_ahead = max(0, read_ahead)
        self.read_ahead_max = max(self.read_ahead, read_ahead_max or 0)
        #: Chunks per get_file_windows call of read-ahead (see _read_ahead).
        self.run = _run_for(self.read_ahead // CHUNK)
        self._logged_window = self.read_ahead // CHUNK  # last window size logged
        self.max_streams = max(1, max_streams)
        #: The documents this reader reads (the file's content when it was opened).
        self.segments = tuple(segments)
        self._segments: list[_Segment] = []
        pos = 0
        for doc in segments:
            if doc.size > 0:
                self._segments.append(_Segment(pos, doc))
            pos += doc.size
        self.size = pos
        # Read sequentially, a file larger than the whole cache cannot be read again from
        # it (LRU order evicts each chunk before the next pass reaches it), so its streams
        # release what they have read; a smaller file stays, for re-reads.
        self._release_streamed = pos > cache.cache_bytes
        self._starts = [s.start for s in self._segments]
        self.streams: list[Stream] = []
        self._reads = 0
        self._closed = False

    # --- public ----------------------------------------------------------------------

    @property
    def max_window(self) -> int:
        """Chunks of read-ahead this file may have in flight now: about two of the link's
        bandwidth-delay products (:class:`fsmount.bdp.LinkEstimator`), within the
        configured bounds."""
        if self.read_ahead_max == self.read_ahead:
            return self.read_ahead // CHUNK
        return self.cache.link.target(self.read_ahead, self.read_ahead_max,
                                      self.run * CHUNK) // CHUNK

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        """Up to ``size`` bytes at ``offset`` (short at the end of the file, empty past it).

        Raises ChecksumMismatch (logged once with the file name), the remote's errors.
        """
        if offset < 0 or size < 0:
            raise errors.InvalidArgument(f"read of {size} bytes at {offset}")
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        self._note_read(offset, end)
        pieces: list[memoryview] = []
        pos = offset
        while pos < end:
            seg, index, start_in_chunk = self._locate(pos)
            chunk_file_start = pos - start_in_chunk
            try:
                data = await self.cache.get(seg.doc, index)
            except errors.ChecksumMismatch:
                log.error("%s: data at offset %d does not match the store's block "
                          "checksums; read fails with EIO", self.name, pos)
                raise
            stop = min(end, chunk_file_start + len(data), seg.end) - chunk_file_start
            pieces.append(memoryview(data)[start_in_chunk:stop])
            pos = chunk_file_start + stop
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    def close(self) -> None:
        """Cancel this file's read-ahead (called when the file is released)."""
        self._closed = True
        for stream in self.streams:
            self._drop_fetches(stream)
        self.streams.clear()

    # --- mapping ---------------------------------------------------------------------

    def _locate(self, pos: int) -> tuple[_Segment, int, int]:
        """Segment, chunk index within its document, and offset within that chunk."""
        seg = self._segments[bisect.bisect_right(self._starts, pos) - 1]
        doc_off = pos - seg.start
        return seg, doc_off // CHUNK, doc_off % CHUNK

    # --- streams and read-ahead ------------------------------------------------------

    def _note_read(self, offset: int, end: int) -> None:
        self._reads += 1
        stream = self._match(offset)
        if stream is None:
            # A new stream.  A read at the very start is most likely the first of a
            # sequential pass (cat, cp, players probing headers); elsewhere it is random.
            stream = Stream(pos=end, window=1 if offset == 0 else 0, last_read=self._reads,
                            released=offset)
            self.streams.append(stream)
            self._expire(keep=stream)
        else:
            stream.last_read = self._reads
            if end > stream.pos:
                stream.pos = end
                stream.hits += 1
                # Grow while sequential: 1, 2, 4, ... chunks in flight.
                stream.window = min(self.max_window, max(1, stream.window * 2))
                if stream.hits >= 2 and self._release_streamed:
                    self._release_behind(stream)
        if stream.window:
            self._read_ahead(stream)

    def _match(self, offset: int) -> Stream | None:
        best: Stream | None = None
        best_dist = math.inf
        for s in self.streams:
            ahead = FORWARD_TOLERANCE + s.window * CHUNK
            if s.pos - BACK_TOLERANCE <= offset <= s.pos + ahead:
                dist = abs(offset - s.pos)
                if dist < best_dist:
                    best, best_dist = s, dist
        return best

    def _expire(self, keep: Stream) -> None:
        """Drop streams that went stale, and the oldest ones beyond ``max_streams``."""
        alive = [s for s in self.streams
                 if s is keep or self._reads - s.last_read <= STALE_READS]
        alive.sort(key=lambda s: s.last_read, reverse=True)
        for s in self.streams:
            if s not in alive[: self.max_streams]:
                self._drop_fetches(s)
        self.streams = [s for s in self.streams if s in alive[: self.max_streams]]

    def _drop_fetches(self, stream: Stream) -> None:
        for fetch in list(stream.fetches):
            self.cache.cancel(fetch)
        stream.fetches.clear()

    def _release_behind(self, stream: Stream) -> None:
        """Release (:meth:`ChunkCache.release`) the chunks a sequential stream is done with:
        those ending more than the kernel's reordering tolerance behind its position."""
        boundary = stream.pos - BACK_TOLERANCE
        pos = stream.released
        while pos < boundary:
            seg, index, in_chunk = self._locate(pos)
            chunk_end = min(seg.end, pos - in_chunk + CHUNK)
            if chunk_end > boundary:
                break
            self.cache.release(seg.doc, index)
            pos = chunk_end
        stream.released = max(stream.released, pos)

    def _read_ahead(self, stream: Stream) -> None:
        if self._closed or not self._segments:
            return
        # Forget finished fetches, then top the window up within this file's budget.
        inflight = 0
        for s in self.streams:
            s.fetches = {f for f in s.fetches if not f.done.is_set()}
            inflight += len(s.fetches)
        window = self.max_window
        if 4 * window >= 5 * self._logged_window or 5 * window <= 4 * self._logged_window:
            log.debug("%s: read-ahead %d MiB in runs of %d (link %.0f MB/s, %.0f ms)",
                      self.name, window, _run_for(window), self.cache.link.rate / 1e6,
                      self.cache.link.latency(self.run * CHUNK) * 1e3)
            self._logged_window = window
        self.run = _run_for(window)
        budget = window - inflight
        if budget <= 0:
            return
        limit = min(self.size, stream.pos + stream.window * CHUNK)
        # Top up in whole runs (one get_file_windows call each) once reads have started
        # the stream: a chunk at a time would make every run one window long.
        missing = self._missing(stream.pos, limit, budget)
        if inflight and sum(n for _, _, n in missing) < min(
                self.run, stream.window, self._chunks_between(stream.pos, self.size)):
            return
        for doc, first, count in missing:
            stream.fetches.update(self.cache.prefetch(doc, first, count, self.run))

    def _missing(self, start: int, limit: int, budget: int
                 ) -> list[tuple[Document, int, int]]:
        """(document, first chunk, count) of the chunks from file offset ``start`` to
        ``limit`` that are neither cached nor in flight, at most ``budget`` of them, as
        runs of consecutive chunks within one document."""
        runs: list[tuple[Document, int, int]] = []
        pos = start
        while pos < limit and budget > 0:
            seg, index, in_chunk = self._locate(pos)
            if not self.cache.has(seg.doc, index):
                if runs and runs[-1][0] is seg.doc and runs[-1][1] + runs[-1][2] == index:
                    doc, first, count = runs[-1]
                    runs[-1] = (doc, first, count + 1)
                else:
                    runs.append((seg.doc, index, 1))
                budget -= 1
            pos = min(seg.end, pos - in_chunk + CHUNK)
        return runs

    def _chunks_between(self, start: int, end: int) -> int:
        """Chunks that hold the file's bytes from ``start`` to ``end`` (at most a run's
        worth are counted)."""
        n, pos = 0, start
        while pos < end and n < self.run:
            seg, _, in_chunk = self._locate(pos)
            pos = min(seg.end, pos - in_chunk + CHUNK)
            n += 1
        return n


def _run_for(window: int) -> int:
    """Chunks per run for a read-ahead window of ``window`` chunks: a quarter of it, so
    that read-ahead goes out over at least four connections at once (on a long link each
    carries only a TCP window per round trip, and a smaller run also comes back sooner),
    and at most MAX_RUN_WINDOWS (8 MiB: fewer, larger requests where the window is large)."""
    return max(1, min(MAX_RUN_WINDOWS, window // 4))


def chunk_count(size: int) -> int:
    """Number of chunks of a document of ``size`` bytes."""
    return -(-size // CHUNK)


__all__ = [
    "CHUNK",
    "HASH_BLOCK",
    "DEFAULT_READ_AHEAD_MAX",
    "CacheStats",
    "ChunkCache",
    "FileReader",
    "Stream",
    "chunk_count",
    "open_chunk_cache",
]
