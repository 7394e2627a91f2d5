"""The digests the store keeps of a document's bytes, computed incrementally.

SHA-256 and MD5 of the whole content, and per ``HASH_BLOCK`` (128 KiB) block a SHA-256 and
a CRC32C.  :class:`Hasher` is fed the bytes in order; :func:`block_sums` computes the whole
blocks of one part on its own, so that the thread saving a part does that work in parallel
with other parts and the in-order feeder only runs the whole-file digests.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import crc32c

from ..protocol import HASH_BLOCK

__all__ = ["Hasher", "Hashes", "block_sums"]


def block_sums(data: bytes | memoryview) -> list[tuple[bytes, int]]:
    """(SHA-256, CRC32C) of each whole HASH_BLOCK block at the start of ``data``."""
    view = memoryview(data)
    return [(hashlib.sha256(b).digest(), crc32c.crc32c(b))
            for b in (view[o : o + HASH_BLOCK]
                      for o in range(0, len(view) - HASH_BLOCK + 1, HASH_BLOCK))]


@dataclass
class Hashes:
    """What finalize records of a document's bytes."""

    sha256: str
    md5: str
    #: The 32-byte SHA-256 of every HASH_BLOCK block, concatenated.
    blocks: bytes
    #: The CRC32C of every block, 4 bytes big-endian each, concatenated.
    crcs: bytes


class Hasher:
    """SHA-256, MD5 and 128 KiB block SHA-256s and CRC32Cs of a byte stream fed in order."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.blocks: list[bytes] = []
        self.crcs: list[int] = []
        self.block = hashlib.sha256()
        self.crc = 0
        self.fill = 0
        self.size = 0

    def copy(self) -> Hasher:
        h = Hasher()
        h.sha, h.md5, h.block = self.sha.copy(), self.md5.copy(), self.block.copy()
        h.blocks, h.crcs = list(self.blocks), list(self.crcs)
        h.crc, h.fill, h.size = self.crc, self.fill, self.size
        return h

    def update(self, data: bytes | memoryview,
               full_blocks: list[tuple[bytes, int]] | None = None) -> None:
        """Feed ``data``; ``full_blocks`` may hold :func:`block_sums` of its leading whole
        blocks, computed in parallel by the thread that saved the part."""
        self.sha.update(data)
        self.md5.update(data)
        mv = memoryview(data)
        pos, n = 0, len(mv)
        self.size += n
        if full_blocks and self.fill == 0:
            for digest, crc in full_blocks:
                self.blocks.append(digest)
                self.crcs.append(crc)
            pos = len(full_blocks) * HASH_BLOCK
        while pos < n:
            take = min(HASH_BLOCK - self.fill, n - pos)
            piece = mv[pos : pos + take]
            self.block.update(piece)
            self.crc = crc32c.crc32c(piece, self.crc)
            self.fill += take
            pos += take
            if self.fill == HASH_BLOCK:
                self.blocks.append(self.block.digest())
                self.crcs.append(self.crc)
                self.block = hashlib.sha256()
                self.crc = 0
                self.fill = 0

    def result(self) -> Hashes:
        """The hashes of everything fed; call once."""
        blocks, crcs = list(self.blocks), list(self.crcs)
        if self.fill:
            blocks.append(self.block.digest())
            crcs.append(self.crc)
        return Hashes(self.sha.hexdigest(), self.md5.hexdigest(), b"".join(blocks),
                      struct.pack(f">{len(crcs)}I", *crcs))
