"""The write-back journal's records and their on-disk framing.

Each record is one JSON object framed as ``length (4 bytes, big-endian) | CRC32 of the body
(4 bytes) | body``.  A reader stops at the first frame that is short or whose CRC does not
match (a torn tail: the process died while appending it) and trusts nothing after it.

The kinds (one frozen dataclass each, ``kind`` names it in the JSON):

* :class:`ContentRecord` (``content``): a file's new content, closed by the application; the
  bytes are in the journal's content file named after the record id, written and fsynced
  before the record.  It supersedes earlier content records of the same node.
* :class:`MetaRecord` (``meta``): chmod / utimes of a node with pending content, applied
  with it.
* :class:`MoveRecord` (``move``): a node with pending content was renamed (its place, for
  the conflict copy and for deletes).
* :class:`DropRecord` (``drop``): the node was deleted through this mount; its pending
  content is never sent.
* :class:`DoneRecord` (``done``): the content record ``id`` is in the store (``version`` the
  node's version after it, -1 if it went to a conflict copy), with the metadata up to
  ``meta`` applied.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass

HEADER = struct.Struct(">II")
#: A frame longer than this is treated as corrupt (records are small JSON objects).
MAX_RECORD = 1 << 20


@dataclass(frozen=True)
class ContentRecord:
    id: int
    node: int
    parent: int
    name: str
    size: int
    sha256: str
    #: The node's version when the write began (what this mount saw).
    base_version: int
    mtime_ns: int
    created_at: float
    kind: str = "content"


@dataclass(frozen=True)
class MetaRecord:
    id: int
    node: int
    mode: int | None
    mtime_ns: int | None
    kind: str = "meta"


@dataclass(frozen=True)
class MoveRecord:
    id: int
    node: int
    parent: int
    name: str
    kind: str = "move"


@dataclass(frozen=True)
class DropRecord:
    id: int
    node: int
    kind: str = "drop"


@dataclass(frozen=True)
class DoneRecord:
    id: int
    #: The content record now in the store.
    content: int
    node: int
    version: int
    #: The id of the last meta record applied with it (0: none).
    meta: int
    kind: str = "done"


Record = ContentRecord | MetaRecord | MoveRecord | DropRecord | DoneRecord

_KINDS: dict[str, type[Record]] = {
    "content": ContentRecord, "meta": MetaRecord, "move": MoveRecord, "drop": DropRecord,
    "done": DoneRecord,
}


def encode(record: Record) -> bytes:
    """The framed bytes of one record."""
    body = json.dumps(asdict(record), separators=(",", ":")).encode()
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def decode_all(data: bytes) -> tuple[list[Record], int]:
    """The records of a journal file's bytes, and the length of its trusted prefix (where a
    torn or corrupt tail starts, or ``len(data)``)."""
    out: list[Record] = []
    pos = 0
    while pos + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, pos)
        start = pos + HEADER.size
        body = data[start:start + length]
        if length > MAX_RECORD or len(body) != length or zlib.crc32(body) != crc:
            break
        try:
            obj = json.loads(body)
            cls = _KINDS[obj.pop("kind")]
            out.append(cls(**obj))
        except (ValueError, KeyError, TypeError):
            break
        pos = start + length
    return out, pos
