"""The write-back journal's records and their on-disk framing.

Each record is one frame: ``length (4 bytes, big-endian) | CRC32 of the body (4 bytes) |
body``, the body a JSON object, followed, for a content record carried *inline*, by a
newline and the file's bytes (compact JSON never holds a raw newline, so the first one ends
it).  A reader stops at the first frame that is short, empty, too long, or whose CRC does
not match (a torn tail: the process died while appending it) and trusts nothing after it.
Frames written before inline content existed (a JSON body alone) read the same.

The kinds (one frozen dataclass each, ``kind`` names it in the JSON):

* :class:`ContentRecord` (``content``): a file's new content, closed by the application.  A
  small content (up to :data:`INLINE_MAX`) is carried inline, in the record's own frame: one
  append and one ``fdatasync`` make it durable, and the journal's content file named after
  the record id is only a copy, rewritten from the record when the journal opens.  A larger
  one is in that content file, written and fsynced (and its name made durable) before the
  record.  It supersedes earlier content records of the same node.
* :class:`MetaRecord` (``meta``): chmod / utimes of a node with pending content, applied
  with it.
* :class:`MoveRecord` (``move``): a node with pending content was renamed (its place, for
  the conflict copy and for deletes).
* :class:`DropRecord` (``drop``): the node was deleted through this mount; its pending
  content is never sent.
* :class:`DoneRecord` (``done``): the content record ``id`` is in the store (``version`` the
  node's version after it, -1 if it went to a conflict copy), with the metadata up to
  ``meta`` applied.
* :class:`PartRecord` (``part``, in a content file's side file ``<id>.parts``, not in the
  log): part ``number`` of segment ``segment`` of that content's upload, whose file id is
  ``file_id``, was saved in the store at ``saved_at`` (wall clock): a later mount resumes
  the upload at the part (see fsmount.journal.uploader).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

HEADER = struct.Struct(">II")
#: Content up to this size is carried inline in its record (one append, one fdatasync).
INLINE_MAX = 256 << 10
#: A frame longer than this is treated as corrupt (small JSON objects, inline content).
MAX_RECORD = INLINE_MAX + (64 << 10)


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
    #: The bytes follow the JSON in the record's frame (see :data:`INLINE_MAX`).
    inline: bool = False


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


@dataclass(frozen=True)
class PartRecord:
    id: int
    segment: int
    file_id: int
    number: int
    saved_at: float
    kind: str = "part"


Record = ContentRecord | MetaRecord | MoveRecord | DropRecord | DoneRecord | PartRecord

_KINDS: dict[str, type[Record]] = {
    "content": ContentRecord, "meta": MetaRecord, "move": MoveRecord, "drop": DropRecord,
    "done": DoneRecord, "part": PartRecord,
}


@dataclass(frozen=True)
class Frame:
    """One trusted frame: its record, and where its inline bytes are (``data_len`` 0: none)."""

    record: Record
    #: Offset of the inline bytes from the frame's start, and their length.
    data_at: int
    data_len: int
    #: The frame's length on disk.
    size: int


def encode(record: Record, data: bytes = b"") -> bytes:
    """The framed bytes of one record (``data``: an inline content record's bytes).

    Raises:
        ValueError: inline bytes for a record that is not an inline content record, or a
            frame over :data:`MAX_RECORD`.
    """
    body = json.dumps(asdict(record), separators=(",", ":")).encode()
    inline = isinstance(record, ContentRecord) and record.inline
    if inline:
        if len(data) != record.size:  # type: ignore[union-attr]
            raise ValueError("an inline content record carries exactly its size in bytes")
        body = body + b"\n" + data
    elif data:
        raise ValueError("only an inline content record carries bytes")
    if len(body) > MAX_RECORD:
        raise ValueError(f"a journal record of {len(body)} bytes is over the limit")
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def decode_frame(header: bytes, body: bytes) -> Frame | None:
    """The frame of a header and the body read after it, or None when it is not whole and
    sound (short, empty, too long, wrong CRC, not a record)."""
    if len(header) != HEADER.size:
        return None
    length, crc = HEADER.unpack(header)
    if length == 0 or length > MAX_RECORD or len(body) != length or zlib.crc32(body) != crc:
        return None
    head, sep, _ = body.partition(b"\n")
    try:
        obj = json.loads(head)
        cls = _KINDS[obj.pop("kind")]
        record = cls(**obj)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    inline = isinstance(record, ContentRecord) and record.inline
    data_len = length - len(head) - 1 if sep else 0
    if (data_len != record.size) if inline else bool(sep):  # type: ignore[union-attr]
        return None
    return Frame(record, HEADER.size + len(head) + 1, data_len, HEADER.size + length)


def frame_length(header: bytes) -> int:
    """The body length a frame's header announces (check it against :data:`MAX_RECORD`)."""
    return int(HEADER.unpack(header)[0])


def decode_all(data: bytes) -> tuple[list[Record], int]:
    """The records of a journal file's bytes, and the length of its trusted prefix (where a
    torn or corrupt tail starts, or ``len(data)``)."""
    out: list[Record] = []
    pos = 0
    for frame, _ in iter_frames(data):
        out.append(frame.record)
        pos += frame.size
    return out, pos


def iter_frames(data: bytes) -> Iterator[tuple[Frame, int]]:
    """The trusted frames of a journal file's bytes with their offsets."""
    pos = 0
    while pos + HEADER.size <= len(data):
        length = frame_length(data[pos:pos + HEADER.size])
        frame = decode_frame(data[pos:pos + HEADER.size],
                             data[pos + HEADER.size:pos + HEADER.size + min(length, MAX_RECORD)])
        if frame is None:
            return
        yield frame, pos
        pos += frame.size
