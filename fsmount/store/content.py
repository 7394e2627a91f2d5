"""The content backend seam: where the bytes of parts and finalized blobs live.

Everything is addressed by key: a part by its upload (:class:`~fsmount.store.rows.UploadKey`)
and number, a blob by the string key the metadata records for it (the SQLite ``blobs.path``
column), and staged data and trash by the keys the backend hands out.  The operations are
those an object store has too -- put a part, read a part, concatenate parts into a blob
(or promote an upload's parts as the blob), read a range, delete, list -- so a second
backend (an S3-compatible one, say) is one new module implementing :class:`ContentBackend`;
the local directory one is :mod:`fsmount.store.localdir`.

Contract for an implementation:

* A staged part (:meth:`ContentBackend.stage_part`) is invisible until :meth:`place_part`;
  placing is atomic (a reader sees the old part or the new one), and its
  :class:`~fsmount.store.rows.PartStamp` changes whenever the bytes may have.
* :meth:`promote` makes the upload's parts (or a staged concatenation) the blob, durably,
  before the metadata commit that references it; :meth:`demote` undoes it if that commit
  fails.  A blob's bytes are chunk files of ``chunk_size`` (the last one shorter).
* Deletion is idempotent; a crash may leave data nobody references, which
  :meth:`sweep_orphans` removes at the next open that has the store to itself.
* Reads of a deleted blob raise FileNotFoundError (the store turns it into
  FileReferenceExpired).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

from .rows import PartStamp, UploadKey

__all__ = ["BlobWriter", "ContentBackend", "StagedBlob", "StagedPart"]

#: A staged part: written, not yet one of an upload's parts.
StagedPart = str
class DiskSpace(NamedTuple):
    """Room on the disk (or service) that holds a store's content, in bytes."""

    free: int  #: available to the store's process (statvfs f_bavail)
    total: int


#: A staged blob: the concatenation of an upload's parts, not yet a blob.
StagedBlob = str


class BlobWriter(Protocol):
    """A staged blob being written (parts concatenated into one chunk)."""

    key: StagedBlob

    def write(self, data: bytes | memoryview) -> None: ...
    def finish(self) -> None:
        """Make what was written durable; the staged blob may then be promoted."""
    def abort(self) -> None:
        """Close and delete what was written; never raises."""


class ContentBackend(Protocol):
    """The bytes of a store (see the module docstring for the contract)."""

    def open(self) -> None:
        """Create whatever the backend needs (idempotent)."""

    # --- parts ---
    def stage_part(self, data: bytes, *, sync: bool) -> StagedPart:
        """Write a part's bytes where no upload sees them yet; ``sync`` makes them durable."""
    def place_part(self, staged: StagedPart, up: UploadKey, part: int) -> PartStamp:
        """Make a staged part part ``part`` of ``up`` (replacing any earlier one)."""
    def drop_staged(self, staged: StagedPart) -> None: ...
    def part_stamp(self, up: UploadKey, part: int) -> PartStamp | None: ...
    def read_part(self, up: UploadKey, part: int) -> bytes | None: ...
    def read_part_into(self, up: UploadKey, part: int, buf: memoryview) -> int | None:
        """Read a whole part into ``buf``; its length, or None if it is missing."""
    def part_head(self, up: UploadKey, size: int) -> bytes:
        """The first ``size`` bytes of the upload's part 0 (content-type sniffing)."""
    def sync_parts(self, up: UploadKey, count: int) -> None:
        """Make the first ``count`` parts durable."""
    def delete_part(self, up: UploadKey, part: int) -> None: ...
    def delete_upload(self, up: UploadKey) -> None:
        """Forget an upload that has no parts left (a no-op if it still has some)."""
    def trash_upload(self, up: UploadKey) -> str | None:
        """Move the upload's parts aside as trash (for :meth:`delete`); None if none."""

    # --- blobs ---
    def start_blob(self) -> BlobWriter: ...
    def staged_head(self, staged: StagedBlob, size: int) -> bytes: ...
    def promote(self, source: UploadKey | StagedBlob, sha256: str) -> str:
        """Make the upload's parts (or a staged blob) a new blob, durably; its key."""
    def demote(self, key: str, source: UploadKey | StagedBlob) -> None:
        """Undo :meth:`promote` (its metadata commit failed)."""
    def read_range(self, key: str, chunk_size: int, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``.  Raises FileNotFoundError (deleted)."""
    def prefetch(self, key: str, chunk_size: int, offset: int, length: int) -> None:
        """Hint that a range will be read soon; never raises."""
    def local_files(self, key: str, count: int) -> list[Path]:
        """The ``count`` chunk files of a blob, where they are local (tests, diagnostics)."""

    # --- deletion and listing ---
    def entry_count(self, key: str) -> int | None:
        """How many objects ``key`` (a blob, staged data or trash) holds; None if gone."""
    def delete(self, key: str) -> None:
        """Delete a blob, staged data or trash and everything in it (idempotent)."""
    def part_size(self, up: UploadKey, part: int) -> int | None: ...
    def disk_space(self) -> DiskSpace | None:
        """Free and total bytes where the content lives; None if unknown.  Never raises."""
    def sweep_orphans(self, blob_keys: set[str], parts: dict[UploadKey, set[int]]) -> list[str]:
        """Delete everything but those blobs and parts (and any staged data or trash);
        return what went.  Only while no other process has the store open."""
