"""Named rows: what the metadata backend hands out and takes, one type per kind of row.

Every read of the metadata (:mod:`fsmount.store.meta`) answers one of these (or a domain
type of :mod:`fsmount.remote` that is already a named row: ``Document``), never a positional
tuple, so that the store's logic reads ``node.kind`` and ``part.size`` and a backend may
fetch its columns in any order.  They are ``NamedTuple`` s: as cheap to build as the tuples
a database driver returns, which matters for listings of thousands of entries.
"""

from __future__ import annotations

from typing import NamedTuple

from ..protocol import FileType
from ..remote import ChangeKind, Document, Node, NodeKind

__all__ = ["BlobRow", "ChangeRecord", "DocumentRef", "DocumentLife", "NameRow", "NodeRow", "PartKey", "PartRow",
           "PartStamp", "ReadableDocument", "SavedPart", "Tombstone", "UploadKey", "UploadRow",
           "UserEntry", "UserRow"]


class UserRow(NamedTuple):
    """A user's settings and usage."""

    quota_bytes: int  #: 0 = unlimited
    premium: bool
    used_bytes: int
    node_count: int


class UserEntry(NamedTuple):
    """A user's whole row, name and counters included (what a whole-store copy moves)."""

    id: int
    name: str
    quota_bytes: int  #: 0 = unlimited
    premium: bool
    #: The id the user's next node gets.
    next_node_id: int
    used_bytes: int
    node_count: int


class NodeRow(NamedTuple):
    """A node's row (without its segments).  A row found by one of the node's extra names
    (a hard link) carries that name's ``parent`` and ``name``."""

    id: int
    parent: int
    name: str
    kind: NodeKind
    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    version: int
    target: str | None
    #: The whole file's SHA-256 (hex) where known.
    sha256: str | None = None
    uid: int | None = None
    gid: int | None = None
    rdev: int = 0
    atime_ns: int | None = None
    #: Names of the node: 1 plus its rows in the extra names (hard links).
    nlink: int = 1

    def node(self, segments: tuple[Document, ...] = ()) -> Node:
        """The namespace's :class:`~fsmount.remote.Node` of this row."""
        return Node(id=self.id, parent=self.parent, name=self.name, kind=self.kind,
                    mode=self.mode, size=self.size, mtime_ns=self.mtime_ns,
                    ctime_ns=self.ctime_ns, version=self.version, segments=segments,
                    target=self.target, sha256=self.sha256, uid=self.uid, gid=self.gid, rdev=self.rdev,
                    atime_ns=self.atime_ns, nlink=self.nlink)


class NameRow(NamedTuple):
    """One extra name of a node (a hard link): the folder and the name in it."""

    parent: int
    name: str


class DocumentRef(NamedTuple):
    """Who owns a document and which blob holds it (for reclaiming it)."""

    user_id: int
    access_hash: int
    sha256: str


class DocumentLife(NamedTuple):
    """A document's expiry: None while a file links it (or it is in its grace period)."""

    expires_at: float | None


class Tombstone(NamedTuple):
    """What is left of a reclaimed document, so that its location reads as expired."""

    user_id: int
    access_hash: int


class ReadableDocument(NamedTuple):
    """A document joined with its blob: what a read needs."""

    user_id: int
    access_hash: int
    size: int
    file_type: FileType
    date: float
    expires_at: float | None
    chunk_size: int
    #: The content backend's key of the blob.
    blob_key: str
    #: The requested block SHA-256s (32 bytes each), ``b""`` if none were asked for.
    block_hashes: bytes
    #: The requested blocks' CRC32Cs (4 bytes each); None if not asked for or not kept.
    block_crcs: bytes | None


class BlobRow(NamedTuple):
    """A finalized, deduplicated blob."""

    sha256: str
    size: int
    chunk_size: int
    key: str
    block_hashes: bytes
    block_crcs: bytes


class UploadKey(NamedTuple):
    """An upload: the user and the signed 64-bit form of the client's file id."""

    user_id: int
    file_id: int


class UploadRow(NamedTuple):
    """An upload in progress; ``total_parts`` None until a saveBigFilePart named it."""

    total_parts: int | None


class PartRow(NamedTuple):
    """A saved part of an upload."""

    part: int
    size: int
    saved_at: float


class PartKey(NamedTuple):
    """A part of some upload (the expiry sweep's unit)."""

    user_id: int
    file_id: int
    part: int


class SavedPart(NamedTuple):
    """A part of some upload with its size (the orphan sweep's check)."""

    user_id: int
    file_id: int
    part: int
    size: int


class PartStamp(NamedTuple):
    """Identifies one saved version of a part's bytes (a re-sent part has a new stamp)."""

    ino: int
    size: int
    mtime_ns: int


class ChangeRecord(NamedTuple):
    """A change of a user's namespace, as the store logs it (the log adds its cursor)."""

    kind: ChangeKind
    node_id: int
    parent: int
    name: str
    at_ns: int
    old_parent: int | None = None
    old_name: str | None = None
