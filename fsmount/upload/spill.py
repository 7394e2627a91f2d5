"""Spill files: where a streaming upload keeps the sent parts its memory budget had no room for.

A sent part stays available until its segment is finalized, so that a part the store reports
missing can be sent again (see :mod:`fsmount.upload.retain`).  Parts beyond the memory budget
go to one :class:`SpillFile` per segment: an unlinked file in the cache directory (nothing is
left behind if the process dies), part N at ``N * PART_SIZE``, sized for the whole segment up
front (sparse) so that writes inside it never extend it, which on ext4 would wait for the
journal.  Everything here is blocking and runs in worker threads; the trio side (which parts
to spill, when a file is closed) is :class:`fsmount.upload.retain.Spiller`.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import tempfile
import threading
from typing import NamedTuple

from .policy import PART_SIZE

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


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> int:
    """Write all of ``data`` at ``offset`` (``os.pwrite`` may write less).

    Raises:
        OSError: a write failed.
    """
    mv = memoryview(data)
    done = 0
    while done < len(mv):
        done += os.pwrite(fd, mv[done:], offset + done)
    return done


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
                pwrite_all(self.fd, memoryview(buf)[:padded], offset)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # Alignment the device does not accept: keep going without direct I/O.
                self._buffered()
        pwrite_all(self.fd, data, offset)

    def read(self, size: int, offset: int) -> bytes:
        """Read back ``size`` bytes written at ``offset``.

        Raises:
            OSError: the read failed.
        """
        if not self.direct:
            return os.pread(self.fd, size, offset)
        padded = -(-size // DIRECT_ALIGN) * DIRECT_ALIGN
        # A fresh buffer: this runs on the trio thread (see RetainedParts.get) while spill
        # threads may be using theirs; resends are rare.
        with mmap.mmap(-1, padded) as buf:
            got = os.preadv(self.fd, [buf], offset)
            return bytes(buf[: min(got, size)])

    def close(self) -> None:
        self._file.close()


class SpillWrite(NamedTuple):
    """One part to write into a spill file."""

    file: SpillFile
    data: bytes
    offset: int


def spill_writes(writes: list[SpillWrite]) -> None:
    """Write a batch of parts (blocking; one thread hop for the whole batch).

    Raises:
        OSError: a write failed.
    """
    for w in writes:
        w.file.write(w.data, w.offset)
