"""Reads: ``upload.getFile``, ``upload.getFileHashes`` and their batched forms, and the
document look-ups by location or content.

A location resolves (one read transaction) to the document's blob and, when asked for, the
slice of its block hashes / CRC32Cs that the answer covers -- never all of them: they are
256 KiB per GiB.  The bytes then come from the content backend without the store lock; a
blob reclaimed meanwhile reads as FileReferenceExpired.  A reader that ends on a window
boundary usually reads on, so the next window is prefetched.
"""

from __future__ import annotations

from pathlib import Path

from .. import errors, protocol
from ..protocol import HASH_BLOCK, WINDOW
from ..remote import BlockCheck, BlockChecksum, Document, FileHash, FileLocation, UploadFile
from .content import ContentBackend
from .lifetime import Lifetime
from .meta import MetaTx
from .rows import ReadableDocument
from .txn import TxRunner

__all__ = ["HASH_WINDOWS", "Reads", "block_checks"]

#: getFileHashes answers for this many 1 MiB windows from the offset's window on (the HTTP
#: API has its own ``windows=N`` extension for readers that want more per request).
HASH_WINDOWS = 1


def block_checks(hashes: bytes, crcs: bytes | None, offset: int, end: int) -> list[BlockCheck]:
    """The checks of the blocks from ``offset`` up to byte ``end``: their CRC32Cs when the
    blob has them (``crcs`` not None), else their SHA-256 hashes."""
    if crcs is None:
        return list(FileHash.unpack(hashes, offset, end))
    return list(BlockChecksum.unpack(crcs, offset, end))


class Reads:
    """Reading documents."""

    def __init__(self, txn: TxRunner, content: ContentBackend, lifetime: Lifetime) -> None:
        self.txn = txn
        self.content = content
        self.lifetime = lifetime

    @staticmethod
    def resolve(tx: MetaTx, uid: int, loc: FileLocation, blocks: tuple[int, int] | None = None,
                crc: bool = False) -> ReadableDocument:
        """The readable document at ``loc``, with the block hashes ``blocks`` = (first,
        count) and with ``crc`` their CRC32Cs (see :meth:`MetaTx.readable_document`).

        Raises FileIdInvalid, FileReferenceExpired.
        """
        if not isinstance(loc, FileLocation):
            raise errors.FileIdInvalid("not a FileLocation")
        doc = tx.readable_document(loc.id, blocks, crc)
        if doc is None:
            tomb = tx.tombstone(loc.id)
            if tomb and tomb.user_id == uid and tomb.access_hash == loc.access_hash:
                raise errors.FileReferenceExpired(f"document {loc.id} was deleted")
            raise errors.FileIdInvalid(f"no document {loc.id}")
        if doc.user_id != uid or doc.access_hash != loc.access_hash:
            raise errors.FileIdInvalid(f"no document {loc.id}")
        if doc.expires_at is not None and doc.expires_at <= tx.now:
            raise errors.FileReferenceExpired(f"document {loc.id} expired unused")
        return doc

    def _resolve_read(self, uid: int, loc: FileLocation, blocks: tuple[int, int] | None = None,
                      crc: bool = False) -> ReadableDocument:
        try:
            with self.txn.run(write=False) as tx:
                return self.resolve(tx, uid, loc, blocks, crc)
        except errors.FileReferenceExpired:
            # Reclaim lazily an expired fresh document.
            with self.txn.run() as tx:
                life = tx.document_life(loc.id, uid)
                if life and life.expires_at is not None and life.expires_at <= tx.now:
                    self.lifetime.reclaim_document(tx, loc.id)
            raise

    def get_file(self, uid: int, location: FileLocation, offset: int, limit: int,
                 precise: bool = False) -> UploadFile:
        """``upload.getFile``: ``limit`` bytes at ``offset``, short at the end of the document
        and empty past it; hashes are not verified here (the reader does that).

        Raises OffsetInvalid, LimitInvalid, FileIdInvalid, FileReferenceExpired.
        """
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise errors.OffsetInvalid(f"offset {offset!r} is not an integer")
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise errors.LimitInvalid(f"limit {limit!r} is not an integer")
        protocol.check_get_file(offset, limit, precise)
        doc = self._resolve_read(uid, location)
        size = doc.size
        end = min(offset + limit, size)
        data = b""
        if offset < end:
            try:
                data = self.content.read_range(doc.blob_key, doc.chunk_size, offset, end - offset)
                if end < size and end % WINDOW == 0:
                    # A reader that ends on a window boundary usually reads on:
                    # start the backend's read of the next window now.
                    self.content.prefetch(doc.blob_key, doc.chunk_size, end,
                                          min(WINDOW, size - end))
            except FileNotFoundError:
                raise errors.FileReferenceExpired(
                    f"document {location.id} was deleted while reading") from None
        return UploadFile(type=doc.file_type, mtime=int(doc.date), bytes=data)

    def get_file_windows(self, uid: int, location: FileLocation, offset: int, count: int,
                         hashes: bool = False, crc32c: bool = False
                         ) -> tuple[list[UploadFile], list[BlockCheck]]:
        """Up to ``count`` consecutive whole-window getFile answers from ``offset``, with
        ``hashes`` the block checks of the windows returned (CRC32Cs with ``crc32c``).

        Raises OffsetInvalid, InvalidArgument (``count`` below 1), FileIdInvalid,
        FileReferenceExpired.
        """
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise errors.OffsetInvalid(f"offset {offset!r} is not an integer")
        if offset < 0 or offset % WINDOW:
            raise errors.OffsetInvalid(f"offset {offset} is not a non-negative multiple of {WINDOW}")
        if not isinstance(count, int) or count < 1:
            raise errors.InvalidArgument(f"count must be a positive integer, not {count!r}")
        first = offset // HASH_BLOCK
        nblocks = count * (WINDOW // HASH_BLOCK)
        doc = self._resolve_read(uid, location, (first, nblocks) if hashes else None, crc32c)
        size, key, chunk = doc.size, doc.blob_key, doc.chunk_size
        ftype, mtime = doc.file_type, int(doc.date)
        out: list[UploadFile] = []
        pos = offset
        for _ in range(count):
            end = min(pos + WINDOW, size)
            data = b""
            if pos < end:
                try:
                    data = self.content.read_range(key, chunk, pos, end - pos)
                except FileNotFoundError:
                    if not out:
                        raise errors.FileReferenceExpired(
                            f"document {location.id} was deleted while reading") from None
                    break
            out.append(UploadFile(type=ftype, mtime=mtime, bytes=data))
            pos += WINDOW
            if len(data) < WINDOW:
                break
        else:
            if pos < size:
                self.content.prefetch(key, chunk, pos, min(WINDOW, size - pos))
        if not hashes:
            return out, []
        return out, block_checks(doc.block_hashes, doc.block_crcs, offset, min(size, pos))

    def window_blocks(self, uid: int, loc: FileLocation, offset: int, windows: int, *,
                      crc: bool) -> tuple[bytes, bytes | None, int, int]:
        """(block hashes, block CRC32Cs, first block, end byte) for getFileHashes and
        getFileChecksums.  Raises OffsetInvalid, InvalidArgument, FileIdInvalid,
        FileReferenceExpired."""
        if not isinstance(offset, int) or offset < 0 or offset % protocol.PRECISE_ALIGN:
            raise errors.OffsetInvalid(
                f"offset {offset} is not a non-negative multiple of {protocol.PRECISE_ALIGN}")
        if not isinstance(windows, int) or windows < 1:
            raise errors.InvalidArgument(f"windows must be a positive integer, not {windows!r}")
        first = offset // HASH_BLOCK
        last_end = (offset // WINDOW + windows) * WINDOW
        count = -(-last_end // HASH_BLOCK) - first
        doc = self._resolve_read(uid, loc, (first, count), crc)
        return doc.block_hashes, doc.block_crcs, first, min(doc.size, last_end)

    def get_file_hashes(self, uid: int, location: FileLocation, offset: int,
                        windows: int = HASH_WINDOWS) -> list[FileHash]:
        """``upload.getFileHashes``.  Raises what :meth:`window_blocks` raises."""
        blocks, _, first, end = self.window_blocks(uid, location, offset, windows, crc=False)
        return FileHash.unpack(blocks, first * HASH_BLOCK, end)

    def get_file_checksums(self, uid: int, location: FileLocation, offset: int,
                           windows: int = HASH_WINDOWS) -> list[BlockCheck]:
        """The blocks ``get_file_hashes`` would answer, as CRC32Cs when the blob has them.
        Raises what :meth:`window_blocks` raises."""
        blocks, crcs, first, end = self.window_blocks(uid, location, offset, windows, crc=True)
        return block_checks(blocks, crcs, first * HASH_BLOCK, end)

    def document_by_hash(self, uid: int, sha256: str | bytes, size: int) -> Document | None:
        """This user's own unexpired document with that SHA-256 and size, or None."""
        if isinstance(sha256, bytes | bytearray):
            sha = bytes(sha256).hex()
        else:
            sha = str(sha256).strip().lower()
        with self.txn.run(write=False) as tx:
            return tx.document_by_hash(uid, sha, size, tx.now)

    def document(self, uid: int, location: FileLocation) -> Document:
        """The document at ``location``.  Raises FileIdInvalid, FileReferenceExpired."""
        self._resolve_read(uid, location)
        with self.txn.run(write=False) as tx:
            doc = tx.document(location.id)
        if doc is None:
            raise errors.FileReferenceExpired(f"document {location.id} was deleted")
        return doc

    def blob_files(self, uid: int, location: FileLocation) -> list[Path]:
        """The files holding a document's bytes, in order.  Raises FileIdInvalid,
        FileReferenceExpired."""
        doc = self._resolve_read(uid, location)
        return self.content.local_files(doc.blob_key, max(1, -(-doc.size // doc.chunk_size)))
