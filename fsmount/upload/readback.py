"""Reading uploaded documents back, verified: for staging files and finished segments.

The write path reads content back from the store in two places: a staging file fetches a
file's old content, and a streaming upload reads back segments it has finalized (a reader of
the open file, a switch to staging, a segment refreshed before the store reclaims it).  Both
go through the read path's :class:`~fsmount.reader.ChunkCache`, so every window is checked
against its block checksums, with room for one window only: nothing read here is worth
caching.
"""

from __future__ import annotations

from ..reader import CHUNK, open_chunk_cache
from ..remote import Document, Remote


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
    """Read ``size`` bytes at ``offset`` of the concatenation of ``segments`` (verified).

    Raises:
        ChecksumMismatch, FsmountError: as :func:`read_document`.
    """
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
