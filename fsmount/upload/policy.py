"""The segment policy: how a stream of bytes is cut into parts and segments, as pure rules.

No I/O, no clock, no trio: every rule here is a function of sizes, counts and the store's
limits, so that the streaming uploader, the whole-file uploads and the REST server's
resumable sessions cut files the same way, and so that the rules have unit tests of their
own (tests/test_upload_policy.py).

The rules, each resting on :mod:`fsmount.protocol`:

* every part but the last of an upload has :data:`PART_SIZE` bytes (the seed's largest part,
  which trivially divides 512 KiB); the last one has the rest;
* a *segment* is one upload (one file id, parts, one finalize); a file holds as many
  segments as it needs, at most :meth:`SegmentRules.segment_parts` parts each: the store's
  ``max_parts``, capped for a mount's streaming uploads at :data:`STREAM_SEGMENT_PARTS`
  (32 MiB) so that a finalized segment drops its retained parts early;
* a part whose end lies within the big-file threshold is saved with ``saveFilePart``, any
  later part of the same segment with ``saveBigFilePart`` (the total part count unknown
  until the segment's last part); a segment larger than the threshold is finalized as
  ``inputFileBig`` (no MD5), any other as ``inputFile`` with its MD5;
* only the first segment is MD5-hashed while its bytes pass (a later segment can be small
  only when it is the file's last, and its MD5 is then computed at finalize): hashing stops
  for good as soon as a part ends past the threshold;
* a full part is only sent once at least one more byte follows it, so that the last part of
  a stream always goes out with the total count known;
* a segment the store reports a part of missing at finalize re-sends that one part the first
  time, and the missing part and every later one after that (parts expired in bulk), for at
  most :data:`MAX_FINALIZE_ATTEMPTS` finalize calls;
* a file of known size (a REST resumable session) is planned up front, balanced so that its
  segments have about the same number of parts (:func:`plan_segments`).

Values are small frozen dataclasses (:class:`SegmentRules`, :class:`SegmentPlan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import protocol

#: Every part but the last of an upload has this size (the seed's recommended maximum).
PART_SIZE = protocol.MAX_PART_SIZE
#: Parts per segment of a mount's streaming upload (32 MiB): each segment is finalized as soon
#: as its parts are saved, which drops them, so one big file keeps about two segments
#: retained and fits in the mount's write memory.
STREAM_SEGMENT_PARTS = 64
#: Finalize calls per segment before a part the store keeps reporting missing is fatal.
MAX_FINALIZE_ATTEMPTS = 5


@dataclass(frozen=True)
class SegmentRules:
    """The limits one upload cuts its stream by.

    ``max_parts`` and ``big_file_threshold`` come from the store (``UserConfig``);
    ``cap`` is the caller's own limit on the parts of a segment (None: the store's).
    """

    max_parts: int
    big_file_threshold: int
    cap: int | None = None

    def __post_init__(self) -> None:
        if self.cap is not None and self.cap < 1:
            raise ValueError("segment_parts must be at least 1")

    @property
    def segment_parts(self) -> int:
        """Parts one segment holds at most."""
        return self.max_parts if self.cap is None else min(self.max_parts, self.cap)

    @property
    def segment_bytes(self) -> int:
        """Bytes one (full) segment holds: the size its spill file is made."""
        return self.segment_parts * PART_SIZE

    def segment_full(self, parts: int) -> bool:
        """True once a segment holding ``parts`` parts may take no more."""
        return parts >= self.segment_parts

    def small_part(self, number: int, size: int) -> bool:
        """True if part ``number`` (``size`` bytes) goes through ``saveFilePart``, False if
        through ``saveBigFilePart``: the part ends within the big-file threshold."""
        return number * PART_SIZE + size <= self.big_file_threshold

    def keeps_hashing(self, number: int, size: int) -> bool:
        """True while a segment hashed as it streams still can be a small upload after part
        ``number`` of ``size`` bytes (False: stop hashing, the segment is big)."""
        return self.small_part(number, size)

    def big_segment(self, size: int) -> bool:
        """True if a segment of ``size`` bytes is finalized as ``inputFileBig`` (no MD5)."""
        return size > self.big_file_threshold


def hashed_while_streaming(segment_index: int) -> bool:
    """True for the segment whose MD5 is computed as its bytes pass: the first one.

    A later segment is small only if it is the file's last; its MD5 is computed at finalize
    then, instead of hashing the first 10 MB of every segment.
    """
    return segment_index == 0


def full_parts_ready(pending: int) -> int:
    """How many full parts of ``pending`` buffered bytes may be sent now: all full ones but
    one that no byte follows yet (the last part of a stream goes out with its count known)."""
    return max(0, (pending - 1) // PART_SIZE)


def part_size(number: int, parts: int, size: int, closed: bool) -> int:
    """The size of part ``number`` of a segment with ``parts`` parts and ``size`` bytes so
    far; only the last part of a closed segment may be short."""
    if number < parts - 1 or not closed:
        return PART_SIZE
    return size - number * PART_SIZE


def part_offset(number: int) -> int:
    """Where part ``number`` starts within its segment."""
    return number * PART_SIZE


def total_parts(parts: int, last: bool) -> int:
    """``file_total_parts`` of a big part: the count for the segment's last part, unknown
    (:data:`~fsmount.protocol.TOTAL_PARTS_UNKNOWN`) before it."""
    return parts if last else protocol.TOTAL_PARTS_UNKNOWN


def resend_numbers(missing: int, attempt: int, parts: int) -> list[int]:
    """The parts to send again after finalize attempt ``attempt`` (from 1) reported part
    ``missing`` missing: the store names the lowest missing part; the first time, assume one
    lost part; after that, parts expired in bulk: it and every later part, in one round
    instead of one finalize per part."""
    return [missing] if attempt == 1 else list(range(missing, parts))


def may_resend(missing: int, attempt: int, parts: int) -> bool:
    """True if a finalize that reported part ``missing`` missing may send parts again and
    retry (False: the error is final)."""
    return attempt < MAX_FINALIZE_ATTEMPTS and 0 <= missing < parts


def refresh_after(part_lifetime: float) -> float:
    """Age at which a finalized but not yet linked segment is uploaded again: half the
    store's part lifetime, well before the store would reclaim its document."""
    return part_lifetime / 2


@dataclass(frozen=True)
class SegmentPlan:
    """One segment of a file planned up front: parts ``first_part`` ..
    ``first_part + parts - 1`` of the file (in :data:`PART_SIZE` pieces), ``size`` bytes."""

    index: int
    first_part: int
    parts: int
    size: int
    big: bool

    def holds(self, piece: int) -> bool:
        """True if file piece ``piece`` belongs to this segment."""
        return self.first_part <= piece < self.first_part + self.parts


def balanced_segment_parts(size: int, max_parts: int) -> int:
    """Parts per segment that split ``size`` bytes into as few segments of at most
    ``max_parts`` parts as possible, all of about the same number of parts (the last one
    may be shorter)."""
    pieces = math.ceil(size / PART_SIZE)
    if pieces == 0:
        return max_parts
    nseg = math.ceil(pieces / max_parts)
    return math.ceil(pieces / nseg)


def plan_segments(size: int, max_parts: int, big_file_threshold: int
                  ) -> tuple[SegmentPlan, ...]:
    """Split ``size`` bytes into balanced segments (``()`` for an empty file)."""
    if size == 0:
        return ()
    pieces = math.ceil(size / PART_SIZE)
    per = balanced_segment_parts(size, max_parts)
    out: list[SegmentPlan] = []
    first = 0
    while first < pieces:
        count = min(per, pieces - first)
        seg_size = min(size, (first + count) * PART_SIZE) - first * PART_SIZE
        out.append(SegmentPlan(len(out), first, count, seg_size,
                               seg_size > big_file_threshold))
        first += count
    return tuple(out)
