"""Staging files: a file's content in a sparse local file, for writes at any offset.

A file written anywhere but sequentially from 0 (seek back, read-write open of an existing
file, append, truncate) cannot stream: its content is held in a sparse, unlinked file in the
cache directory (nothing is left behind if the process dies) that fetches the old content
lazily, one 1 MiB window at a time (verified, see :mod:`fsmount.upload.readback`), and is
uploaded again as a whole by :meth:`StagingFile.upload`, through the same streaming uploader
as everything else (re-reading the local file for any part the store loses, so nothing is
retained).  Windows a write covers entirely are never fetched.  One lock serializes all
operations on a staging file; an upload holds it, so writes wait for the upload.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Awaitable, Callable

import trio

from .. import errors, protocol
from ..nursery import open_nursery
from ..remote import Document, Remote, UserConfig
from .readback import read_segments
from .sender import DEFAULT_PARALLEL
from .spill import pwrite_all
from .streaming import ProgressFn, upload_reader

#: Content is fetched (staging) and read back in windows of this size.
WINDOW = protocol.WINDOW

#: ``await fetch(offset, size) -> bytes`` of a file's old content (staging).
FetchFn = Callable[[int, int], Awaitable[bytes]]



class _InOrderHash:
    """A SHA-256 over reads that come in order (an upload reads its source once, front to
    back); a read out of order (a part re-read for the store) is ignored by it."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._at = 0

    def saw(self, offset: int, data: bytes) -> None:
        if offset == self._at:
            self._h.update(data)
            self._at += len(data)

    def hexdigest(self, size: int) -> str | None:
        """The digest if every one of ``size`` bytes was seen in order, else None."""
        return self._h.hexdigest() if self._at == size else None


def _file_sha256(fd: int, size: int) -> str:
    h = hashlib.sha256()
    off = 0
    while off < size:
        data = os.pread(fd, min(WINDOW, size - off), off)
        if not data:
            break
        h.update(data)
        off += len(data)
    return h.hexdigest()

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
        *,
        path: str | None = None,
        orig_size: int | None = None,
    ) -> None:
        self._fd = fd
        #: The file's name while it is a named (kept) staging file; None once unlinked.
        self.path = path
        self.remote = remote
        self.cache_dir = cache_dir
        self._segments = segments
        self._fetch_fn = fetch
        #: Bytes of old content still relevant (shrinks when truncated below it).
        self._orig = sum(d.size for d in segments) if orig_size is None else orig_size
        self._fetched: set[int] = set()
        self.size = self._orig
        #: True once the content differs from what was last uploaded (or created from).
        self.dirty = False
        #: The SHA-256 (hex) of the content the last :meth:`upload` sent.
        self.sha256: str | None = None
        self._lock = trio.Lock()

    @classmethod
    async def create(
        cls,
        cache_dir: str | os.PathLike[str],
        remote: Remote,
        segments: tuple[Document, ...] = (),
        *,
        fetch: FetchFn | None = None,
        path: str | None = None,
        orig_size: int | None = None,
    ) -> StagingFile:
        """A staging file in ``cache_dir`` whose content is the concatenation of ``segments``.

        ``fetch(offset, size)`` reads old content (default: :func:`read_segments`, verified);
        with ``orig_size`` the old content is that many bytes from ``fetch`` instead of
        ``segments``.  With ``path`` the file is created there and kept (the write-back
        journal moves it into place on close, see :meth:`sync`) instead of unlinked at once.

        Raises:
            OSError: the cache directory cannot be created or written.
        """
        cache = os.fspath(cache_dir)

        def make() -> int:
            os.makedirs(cache, exist_ok=True)
            if path is not None:
                return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fd, tmp = tempfile.mkstemp(dir=cache, prefix="fsmount-staging-")
            # Unlinked at once: nothing is left behind if the process dies.
            os.unlink(tmp)
            return fd

        orig = sum(d.size for d in segments) if orig_size is None else orig_size

        def make_sized() -> int:
            fd = make()
            try:
                if orig:
                    os.ftruncate(fd, orig)
            except BaseException:
                os.close(fd)
                raise
            return fd

        # One thread hop (a small file written through write-back pays a few per close).
        fd = await trio.to_thread.run_sync(make_sized)
        return cls(fd, remote, tuple(segments), fetch, cache, path=path, orig_size=orig_size)

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
            written = await trio.to_thread.run_sync(pwrite_all, self._fd, data, offset)
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
            whole = _InOrderHash()

            def read_at(off: int, n: int) -> bytes:
                data = os.pread(fd, n, off)
                whole.saw(off, data)
                return data

            docs = await upload_reader(
                self.remote,
                read_at,
                self.size,
                name,
                parallel=parallel,
                config=config,
                progress=progress,
                spill_dir=self.cache_dir,
            )
            self.dirty = False
            self.sha256 = whole.hexdigest(self.size) or await trio.to_thread.run_sync(
                _file_sha256, fd, self.size)
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

    async def sync(self, parallel: int = DEFAULT_PARALLEL, *,
                   inline_max: int = -1) -> tuple[str, bytes | None]:
        """Fetch any old content never fetched and return the SHA-256 (hex) of the whole
        content, for the write-back journal, which then takes the file over by its
        :attr:`path`.  A content of at most ``inline_max`` bytes is returned too and not
        fsynced (the journal makes its own record of it durable); a larger one is fsynced.

        Raises:
            FsmountError: fetching old content failed.
            OSError: the local file could not be read or synced.
        """
        async with self._lock:
            self._check()
            await self._ensure_all(parallel)
            fd, size = self._fd, self.size

            def digest() -> tuple[str, bytes | None]:
                if size <= inline_max:
                    data = os.pread(fd, size, 0) if size else b""
                    if len(data) != size:
                        raise OSError(f"staging file {self.path} is short")
                    return hashlib.sha256(data).hexdigest(), data
                h = hashlib.sha256()
                for off in range(0, size, 4 * WINDOW):
                    h.update(os.pread(fd, min(4 * WINDOW, size - off), off))
                os.fsync(fd)
                return h.hexdigest(), None

            return await trio.to_thread.run_sync(digest)

    def disown(self) -> None:
        """Close the file without deleting it: it was moved away (the journal has it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.path = None

    async def aclose(self) -> None:
        """Delete the local file.  Idempotent."""
        async with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self.path is not None:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                self.path = None


