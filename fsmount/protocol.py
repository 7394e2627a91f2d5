"""The chunked transfer protocol's rules as pure functions: no I/O, no clock, no state.

The store enforces these; the uploader and the read path use them to build requests that
always pass.  Each rule cites the seed it comes from (``docs/protocol.md`` lists them all).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import errors

KIB = 1024
MIB = 1024 * 1024

#: A part is at most 512 KiB, and 512 KiB must be a multiple of the part size.
MAX_PART_SIZE = 512 * KIB
#: getFile ranges never cross a 1 MiB boundary.
WINDOW = MIB
#: Non-precise getFile: offset and limit are multiples of 4 KiB.
ALIGN = 4 * KIB
#: Precise getFile: offset and limit are multiples of 1 KiB.
PRECISE_ALIGN = KIB
#: getFileHashes covers the file in blocks of this size (like the seed's CDN hashes).
HASH_BLOCK = 128 * KIB
#: ``file_total_parts`` value for a big upload whose size is not yet known.
TOTAL_PARTS_UNKNOWN = -1


@dataclass(frozen=True)
class Limits:
    """Server configuration, like the seed's appConfig fields."""

    upload_max_fileparts_default: int = 4000
    upload_max_fileparts_premium: int = 8000
    #: Files larger than this are uploaded with saveBigFilePart / inputFileBig.
    big_file_threshold: int = 10 * MIB
    #: Seconds an unfinalized part is kept before it expires and its space is freed.
    part_lifetime: float = 3600.0
    #: Seconds a document stays readable after the last file referring to it lost it
    #: (unlink, replace, set_content, rename over), so open handles keep reading; then it
    #: is reclaimed (getFile answers FILE_REFERENCE_EXPIRED).
    unlinked_grace: float = 3600.0

    def max_parts(self, premium: bool) -> int:
        return self.upload_max_fileparts_premium if premium else self.upload_max_fileparts_default


class FileType(enum.StrEnum):
    """``storage.FileType`` of the seed, detected from content."""

    UNKNOWN = "storage.fileUnknown"
    PARTIAL = "storage.filePartial"
    JPEG = "storage.fileJpeg"
    GIF = "storage.fileGif"
    PNG = "storage.filePng"
    MP3 = "storage.fileMp3"
    MOV = "storage.fileMov"
    MP4 = "storage.fileMp4"
    WEBP = "storage.fileWebp"


def is_valid_part_size(size: int) -> bool:
    """True if ``size`` may be the part size of an upload (1 KiB multiple dividing 512 KiB)."""
    return 0 < size <= MAX_PART_SIZE and size % KIB == 0 and MAX_PART_SIZE % size == 0


def check_part_payload(size: int) -> None:
    """Check one part's size on its own.

    Raises:
        FilePartEmpty: the part has no bytes.
        FilePartTooBig: the part is larger than 512 KiB.
    """
    if size <= 0:
        raise errors.FilePartEmpty()
    if size > MAX_PART_SIZE:
        raise errors.FilePartTooBig(f"part of {size} bytes exceeds {MAX_PART_SIZE}")


def check_part_number(file_part: int, max_parts: int) -> None:
    """Raises FilePartInvalid unless ``0 <= file_part < max_parts``."""
    if not 0 <= file_part < max_parts:
        raise errors.FilePartInvalid(f"part {file_part} is not in 0..{max_parts - 1}")


def check_total_parts(total: int, max_parts: int, *, allow_unknown: bool = False) -> None:
    """Raises FilePartsInvalid unless ``1 <= total <= max_parts`` (or unknown, if allowed)."""
    if allow_unknown and total == TOTAL_PARTS_UNKNOWN:
        return
    if not 1 <= total <= max_parts:
        raise errors.FilePartsInvalid(f"{total} parts is not in 1..{max_parts}")


def check_part_sizes(sizes: dict[int, int], *, new_part: int | None = None) -> None:
    """Check that the parts saved so far can still form one file.

    ``sizes`` maps part number to size, including the part just saved (``new_part``).  The
    part with the highest number seen so far may be the last part; every other part is
    provably not the last, so it must have a valid part size, all of them the same, and the
    highest part may not be larger than that size.  The error names the rule the newest
    part broke.

    Raises:
        FilePartSizeInvalid: a part that is not the last does not divide 512 KiB.
        FilePartSizeChanged: parts that are not the last differ in size, or the last part
            is larger than the others.
    """
    if not sizes:
        return
    last = max(sizes)
    inner = {n: s for n, s in sizes.items() if n != last}
    if new_part is not None and new_part in inner and not is_valid_part_size(inner[new_part]):
        raise errors.FilePartSizeInvalid(f"part {new_part} of {inner[new_part]} bytes")
    if new_part is not None and new_part in inner:
        ref = next((s for n, s in inner.items() if n != new_part), None)
        if ref is not None and ref != inner[new_part]:
            raise errors.FilePartSizeChanged(
                f"part {new_part} has {inner[new_part]} bytes, earlier parts {ref}"
            )
    bad = [n for n, s in inner.items() if not is_valid_part_size(s)]
    if bad:
        # An earlier part was only valid while it could be the last one.
        if new_part is not None and new_part not in inner:
            raise errors.FilePartSizeChanged(
                f"part {bad[0]} of {sizes[bad[0]]} bytes can no longer be the last part"
            )
        raise errors.FilePartSizeInvalid(f"part {bad[0]} of {sizes[bad[0]]} bytes")
    distinct = set(inner.values())
    if len(distinct) > 1:
        raise errors.FilePartSizeChanged(f"parts have sizes {sorted(distinct)}")
    if distinct and sizes[last] > next(iter(distinct)):
        raise errors.FilePartSizeChanged(
            f"last part {last} has {sizes[last]} bytes, more than the part size {next(iter(distinct))}"
        )


def check_get_file(offset: int, limit: int, precise: bool = False) -> None:
    """Check a getFile range against the seed's alignment rules.

    Without ``precise``: offset and limit are multiples of 4 KiB and 1 MiB is a multiple of
    limit.  With ``precise``: both are multiples of 1 KiB and limit is at most 1 MiB.  In
    both cases the range lies within one 1 MiB window.

    Raises:
        OffsetInvalid: the offset is negative or misaligned.
        LimitInvalid: the limit is misaligned, too large, or crosses a 1 MiB boundary.
    """
    align = PRECISE_ALIGN if precise else ALIGN
    if offset < 0 or offset % align:
        raise errors.OffsetInvalid(f"offset {offset} is not a non-negative multiple of {align}")
    if limit <= 0 or limit % align:
        raise errors.LimitInvalid(f"limit {limit} is not a positive multiple of {align}")
    if precise:
        if limit > WINDOW:
            raise errors.LimitInvalid(f"limit {limit} exceeds {WINDOW}")
    elif WINDOW % limit:
        raise errors.LimitInvalid(f"1 MiB is not a multiple of limit {limit}")
    if offset // WINDOW != (offset + limit - 1) // WINDOW:
        raise errors.LimitInvalid(f"range {offset}+{limit} crosses a 1 MiB boundary")


def parts_for_size(size: int, part_size: int = MAX_PART_SIZE) -> int:
    """Number of parts a file of ``size`` bytes needs (an empty file still needs one call)."""
    return max(1, -(-size // part_size))


def is_big(size: int, limits: Limits) -> bool:
    """True if a file of ``size`` bytes must use saveBigFilePart / inputFileBig."""
    return size > limits.big_file_threshold


def small_part_limit(part_size: int, limits: Limits) -> int:
    """How many parts of ``part_size`` saveFilePart may carry before the file is big."""
    return limits.big_file_threshold // part_size


_MAGIC: list[tuple[int, bytes, FileType]] = [
    (0, b"\xff\xd8\xff", FileType.JPEG),
    (0, b"\x89PNG\r\n\x1a\n", FileType.PNG),
    (0, b"GIF87a", FileType.GIF),
    (0, b"GIF89a", FileType.GIF),
    (0, b"ID3", FileType.MP3),
    (0, b"\xff\xfb", FileType.MP3),
    (0, b"\xff\xf3", FileType.MP3),
    (0, b"\xff\xf2", FileType.MP3),
]


def detect_file_type(head: bytes) -> FileType:
    """Detect ``storage.FileType`` from the first bytes of a file (at least 16 are useful)."""
    for off, magic, ftype in _MAGIC:
        if head[off : off + len(magic)] == magic:
            return ftype
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return FileType.WEBP
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return FileType.MOV if brand == b"qt  " else FileType.MP4
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return FileType.MOV
    return FileType.UNKNOWN


_MIME_BY_TYPE = {
    FileType.JPEG: "image/jpeg",
    FileType.PNG: "image/png",
    FileType.GIF: "image/gif",
    FileType.MP3: "audio/mpeg",
    FileType.MOV: "video/quicktime",
    FileType.MP4: "video/mp4",
    FileType.WEBP: "image/webp",
}


def detect_mime_type(head: bytes, name: str = "") -> str:
    """MIME type from content, else from the file name, else ``application/octet-stream``."""
    import mimetypes

    ftype = detect_file_type(head)
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if ftype in _MIME_BY_TYPE:
        return _MIME_BY_TYPE[ftype]
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"
