"""Whole-file uploads: a local file or file object through one streaming upload.

``fsmount put``, the REST server's simple uploads and tests use :func:`upload_file`.  A
seekable source is re-read for any part the store loses (nothing is retained); a pipe is
read once, its parts retained as in :class:`~fsmount.upload.streaming.StreamingUpload`.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Mapping
from typing import IO

import trio

from ..remote import Document, Remote, UserConfig
from .sender import DEFAULT_PARALLEL
from .streaming import PartSavedFn, ProgressFn, SavedParts, upload_reader


async def upload_file(
    remote: Remote,
    source: str | os.PathLike[str] | IO[bytes],
    name: str,
    *,
    parallel: int = DEFAULT_PARALLEL,
    progress: ProgressFn | None = None,
    config: UserConfig | None = None,
    spill_dir: str | os.PathLike[str] | None = None,
    segment_parts: int | None = None,
    resume: Mapping[int, SavedParts] | None = None,
    on_part_saved: PartSavedFn | None = None,
) -> tuple[Document, ...]:
    """Upload a local file (a path, or a binary file object from its current position).

    Returns the segments in order, ``()`` for an empty file; link them with
    ``remote.create_file`` / ``remote.set_content``.  Parts the store reports missing are
    re-read from the source when it is seekable; otherwise (a pipe) they are retained as in
    :class:`StreamingUpload`, spilling to ``spill_dir``.  ``segment_parts`` caps the parts of
    a segment (default: the store's ``max_parts``).  ``resume`` and ``on_part_saved`` (a
    regular file only) resume an earlier attempt at the part, as in
    :meth:`StreamingUpload.open`.

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
            return await upload_reader(
                remote,
                lambda off, n: os.pread(fd, n, off),
                st.st_size if regular else None,
                name,
                parallel=parallel,
                config=config,
                progress=progress,
                spill_dir=spill,
                rereadable=regular,
                segment_parts=segment_parts,
                resume=resume if regular else None,
                on_part_saved=on_part_saved,
            )
        finally:
            os.close(fd)
    return await _upload_fileobj(
        remote, source, name, parallel=parallel, config=config, progress=progress,
        spill_dir=spill, segment_parts=segment_parts,
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
    segment_parts: int | None,
) -> tuple[Document, ...]:
    seekable = False
    try:
        seekable = f.seekable()
    except (OSError, ValueError):
        pass
    if not seekable:
        def read_stream(_off: int, n: int) -> bytes:
            return f.read(n) or b""

        return await upload_reader(
            remote, read_stream, None, name, parallel=parallel, config=config,
            progress=progress, spill_dir=spill_dir, rereadable=False,
            segment_parts=segment_parts,
        )
    base = f.tell()
    lock = threading.Lock()

    def read_at(off: int, n: int) -> bytes:
        with lock:
            f.seek(base + off)
            return f.read(n) or b""

    return await upload_reader(
        remote, read_at, None, name, parallel=parallel, config=config,
        progress=progress, spill_dir=spill_dir, segment_parts=segment_parts,
    )
