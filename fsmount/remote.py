"""The remote interface: what the filesystem, the CLI and the HTTP server ask of a store.

:class:`Remote` is a small async ``typing.Protocol`` (trio).  Its transfer methods are named
after the protocol's calls; the namespace methods work on stable node ids.  The embedded
store (:mod:`fsmount.embedded`) and the HTTP client (:mod:`fsmount.httpremote`) implement
it, and one contract test suite (``tests/contract``) runs against both.

Content model
-------------
* An upload (parts + finalize) produces an immutable :class:`Document`: content with a
  size, MIME type, SHA-256, MD5, SHA-256 block hashes and (an extension of the protocol)
  CRC32C block checksums, both per ``HASH_BLOCK`` and computed as the parts arrived.
  Documents are deduplicated by SHA-256 and reclaimed when no file references them; a
  finalized document that is never linked to a file expires after the part lifetime.
* A file :class:`Node` references an ordered tuple of documents, its *segments*; its bytes
  are their concatenation.  Almost every file has zero (empty) or one segment; a file larger
  than one upload can hold has several.
* Content is read with :meth:`Remote.get_file` from a document's :class:`FileLocation`.
  Because documents never change, anything read from a location may be cached forever.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import crc32c

from .protocol import HASH_BLOCK, WINDOW, FileType

ROOT_ID = 1
"""The node id of every user's root folder (equal to the FUSE root inode)."""


@dataclass(frozen=True)
class InputFile:
    """Finalize form for files of at most 10 MB (``inputFile``)."""

    id: int
    parts: int
    name: str
    md5_checksum: str


@dataclass(frozen=True)
class InputFileBig:
    """Finalize form for files above 10 MB (``inputFileBig``); no MD5 is sent."""

    id: int
    parts: int
    name: str


@dataclass(frozen=True)
class FileLocation:
    """Where a document's bytes can be read (``inputDocumentFileLocation``)."""

    id: int
    access_hash: int


@dataclass(frozen=True)
class Document:
    """Immutable uploaded content."""

    id: int
    access_hash: int
    size: int
    mime_type: str
    sha256: str  #: hex
    md5: str  #: hex
    date: float  #: when it was finalized, seconds since the epoch
    file_type: FileType = FileType.UNKNOWN

    @property
    def location(self) -> FileLocation:
        return FileLocation(self.id, self.access_hash)


@dataclass(frozen=True)
class UploadFile:
    """Result of getFile (``upload.file``)."""

    type: FileType
    mtime: int
    bytes: bytes


@dataclass(frozen=True)
class FileHash:
    """SHA-256 of ``limit`` bytes of a document starting at ``offset`` (``fileHash``)."""

    offset: int
    limit: int
    hash: bytes

    def matches(self, data: bytes | memoryview) -> bool:
        """True if ``data`` (these ``limit`` bytes) has this SHA-256."""
        return hashlib.sha256(data).digest() == self.hash

    @classmethod
    def unpack(cls, digests: bytes, offset: int, end: int) -> list[FileHash]:
        """The hashes of the blocks from ``offset`` (block-aligned) up to byte ``end`` of a
        document, out of their 32-byte digests concatenated (as the store keeps them)."""
        return [cls(start, limit, bytes(digests[i * 32 : i * 32 + 32]))
                for i, start, limit in _blocks(offset, end)]


@dataclass(frozen=True)
class BlockChecksum:
    """CRC32C of ``limit`` bytes of a document starting at ``offset``.

    Not part of the seed's protocol: the store computes it beside the SHA-256 block hash
    when the parts arrive, for readers that verify every byte they fetch.  Against
    accidental corruption (disk, memory, a broken proxy) it is as good a check as the
    SHA-256 and costs a twentieth of it (hardware CRC32C), which is what a streaming read
    can afford; the SHA-256 stays the document's identity (deduplication, getFileHashes).
    """

    offset: int
    limit: int
    crc32c: int

    def matches(self, data: bytes | memoryview) -> bool:
        """True if ``data`` (these ``limit`` bytes) has this CRC32C."""
        return crc32c.crc32c(data) == self.crc32c

    @classmethod
    def unpack(cls, values: bytes, offset: int, end: int) -> list[BlockChecksum]:
        """The checksums of the blocks from ``offset`` (block-aligned) up to byte ``end`` of
        a document, out of their CRC32Cs as 4-byte big-endian values concatenated."""
        return [cls(start, limit, int.from_bytes(values[i * 4 : i * 4 + 4], "big"))
                for i, start, limit in _blocks(offset, end)]


BlockCheck = FileHash | BlockChecksum
"""A block's reference checksum: the protocol's SHA-256 hash or the store's CRC32C."""


def _blocks(offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(index from ``offset``'s block, start, length) of the HASH_BLOCK blocks from
    ``offset`` up to byte ``end`` (the last one short at the end of a document)."""
    for i, start in enumerate(range(offset, end, HASH_BLOCK)):
        yield i, start, min(HASH_BLOCK, end - start)


def checks_by_window(checks: Iterable[BlockCheck]) -> dict[int, list[BlockCheck]]:
    """Block checks grouped by the 1 MiB window they fall in, each block once, in offset
    order (an answer may repeat a block or reach into windows after the one asked for)."""
    by_window: dict[int, dict[int, BlockCheck]] = {}
    for c in checks:
        by_window.setdefault(c.offset // WINDOW, {})[c.offset] = c
    return {w: [blocks[o] for o in sorted(blocks)] for w, blocks in by_window.items()}


class WindowRun(NamedTuple):
    """Consecutive whole 1 MiB windows of one document, as ``get_file_windows`` answers:
    each window what ``get_file`` would answer for it, and the block checks the store sent
    along (``None`` when it sent none: ask ``get_file_checksums``)."""

    windows: list[UploadFile]
    checks: list[BlockCheck] | None


#: Most windows one ``get_file_windows`` call answers (8 MiB: one request's worth).
MAX_RUN_WINDOWS = 8


class NodeKind(enum.StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    #: Special files: namespace entries only (mode, owner and ``rdev`` kept; no content).
    FIFO = "fifo"
    SOCKET = "socket"
    CHARDEV = "chardev"
    BLOCKDEV = "blockdev"


#: The kinds ``mknod`` creates (a regular file is ``create_file``, a folder ``mkdir``).
SPECIAL_KINDS = frozenset({NodeKind.FIFO, NodeKind.SOCKET, NodeKind.CHARDEV, NodeKind.BLOCKDEV})


class Owner(NamedTuple):
    """Numeric owner of a node, kept as given (the store maps no names)."""

    uid: int
    gid: int


class XattrMode(enum.StrEnum):
    """How ``set_xattr`` treats an existing attribute (setxattr(2)'s flags)."""

    EITHER = "either"  #: create or replace (flags 0)
    CREATE = "create"  #: fail with AlreadyExists if it exists (XATTR_CREATE)
    REPLACE = "replace"  #: fail with NoSuchAttribute if it does not (XATTR_REPLACE)


#: Largest value of one extended attribute (Linux's XATTR_SIZE_MAX, ext4 with ea_inode).
MAX_XATTR_VALUE = 65536
#: Longest extended attribute name in bytes, with its namespace prefix (XATTR_NAME_MAX).
MAX_XATTR_NAME = 255
#: Most bytes of names plus values one node's extended attributes may hold together.
MAX_XATTR_TOTAL = 256 * 1024
#: The namespaces a store keeps (``system.*``, i.e. POSIX ACLs, is not kept).
XATTR_NAMESPACES = ("user.", "trusted.", "security.")
#: Names under this prefix are the mount's read-only attributes (``user.fsmount.sha256``,
#: ...), computed, never stored.
RESERVED_XATTR_PREFIX = "user.fsmount."


@dataclass(frozen=True)
class Node:
    """A folder, file or symlink in a user's namespace."""

    id: int
    parent: int
    name: str
    kind: NodeKind
    mode: int  #: permission bits only (0o7777)
    size: int
    mtime_ns: int
    ctime_ns: int
    #: Bumped on every content change; lets caches compare cheaply.
    version: int = 0
    segments: tuple[Document, ...] = ()
    target: str | None = None  #: symlink target
    restricted: bool = False
    #: SHA-256 (hex) of the whole file's bytes, set by the commit that linked its content
    #: (see create_file / set_content); None where it is not known.
    sha256: str | None = None
    #: Numeric owner; None for nodes made without one (REST, ``put``, stores before
    #: ownership): the mount shows those as owned by the user who mounted it.
    uid: int | None = None
    gid: int | None = None
    #: Device number of a character or block device node (0 otherwise).
    rdev: int = 0
    #: Last access time as set (utimensat); None: not set, the mtime stands in.
    atime_ns: int | None = None
    #: Names the node has (hard links); folders report 1 here.
    nlink: int = 1

    @property
    def is_dir(self) -> bool:
        return self.kind is NodeKind.DIR


@dataclass(frozen=True)
class Usage:
    """Quota and usage of one user, for statfs."""

    used_bytes: int
    quota_bytes: int  #: 0 means unlimited
    files: int
    max_files: int = 0  #: 0 means unlimited
    #: Free and total bytes of the disk the store keeps content on (what its user may
    #: still write there, quota aside); None where the store cannot tell (an old server).
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None


@dataclass(frozen=True)
class Listing:
    """One page of a folder listing, in name order; ``next_after`` is None on the last page."""

    entries: tuple[Node, ...]
    next_after: str | None = None


@dataclass(frozen=True)
class UserConfig:
    """What the server tells a client about its limits (the seed's appConfig)."""

    max_parts: int
    big_file_threshold: int
    part_lifetime: float
    premium: bool = False
    extra: dict[str, object] = field(default_factory=dict)


class ChangeKind(enum.StrEnum):
    """What a namespace change did to its node (one row of the store's change log)."""

    CREATE = "create"  #: a new node (file, folder, symlink) under ``parent``/``name``
    CONTENT = "content"  #: a file's content replaced (its cached pages are stale)
    ATTR = "attr"  #: mode, times, ownership or an extended attribute set
    RENAME = "rename"  #: moved from ``old_parent``/``old_name`` to ``parent``/``name``
    DELETE = "delete"  #: the node is gone from ``parent``/``name``


@dataclass(frozen=True)
class Change:
    """One change of a user's namespace, as the change feed reports it.

    ``at_ns`` is the store's stamp of the change: the node's ctime after it (but for a
    delete) and the mtime/ctime of the folder(s) it touched, so that a cache holding a
    node at least that new already has it (a mount's own changes coming back).
    """

    cursor: int  #: the change's position in the feed (increasing)
    kind: ChangeKind
    node_id: int
    parent: int
    name: str
    at_ns: int
    old_parent: int | None = None  #: a rename's source folder
    old_name: str | None = None  #: a rename's source name


@dataclass(frozen=True)
class ChangeBatch:
    """An answer of ``get_changes``: the changes after the cursor asked about (oldest
    first) and the cursor to ask with next.  ``reset`` means the cursor asked about is no
    longer (or never was) in the log: drop everything cached and go on from ``cursor``."""

    cursor: int
    changes: tuple[Change, ...] = ()
    reset: bool = False


#: Longest long poll ``get_changes`` accepts (seconds).
MAX_CHANGES_TIMEOUT = 60.0


@runtime_checkable
class Remote(Protocol):
    """A user's view of a store.  All methods are trio-async.

    Every method raises :class:`fsmount.errors.FsmountError` subclasses (named after the
    protocol where the protocol names them) and
    :class:`fsmount.errors.TransportError` when the store cannot be reached.
    """

    # --- configuration ---------------------------------------------------------------
    async def get_config(self) -> UserConfig: ...

    # --- upload ----------------------------------------------------------------------
    async def save_file_part(self, file_id: int, file_part: int, data: bytes) -> bool:
        """Save part ``file_part`` of a file of at most 10 MB.  Parts are temporary."""
        ...

    async def save_big_file_part(
        self, file_id: int, file_part: int, file_total_parts: int, data: bytes
    ) -> bool:
        """Save a part of a file above 10 MB.  ``file_total_parts`` may be
        :data:`fsmount.protocol.TOTAL_PARTS_UNKNOWN` while the size is not known yet."""
        ...

    async def upload_media(self, file: InputFile | InputFileBig) -> Document:
        """Finalize an upload into a document (``messages.uploadMedia``).

        Raises FilePartsInvalid, FilePartMissing (``FILE_PART_X_MISSING``),
        Md5ChecksumInvalid, QuotaExceeded.
        """
        ...

    # --- download --------------------------------------------------------------------
    async def get_file(
        self, location: FileLocation, offset: int, limit: int, precise: bool = False
    ) -> UploadFile:
        """Read ``limit`` bytes at ``offset`` (short at the end of the document, empty past it).

        Raises OffsetInvalid, LimitInvalid, FileIdInvalid, FileReferenceExpired.
        """
        ...

    async def get_file_windows(
        self, location: FileLocation, offset: int, count: int, hashes: bool = True,
        crc32c: bool = True
    ) -> WindowRun:
        """Up to ``count`` (1..``MAX_RUN_WINDOWS``) consecutive whole windows from ``offset``
        (a multiple of 1 MiB) in one call, with the block checks of the windows returned:
        with ``hashes`` the SHA-256 block hashes, with ``crc32c`` as well the CRC32Cs where
        the store has them (what ``get_file_checksums`` answers).  Stops after the short
        window at the end of the document (an empty one past it); a store may answer fewer
        windows than asked, and no checks (``WindowRun.checks`` is None).  The reader's one
        call per run of read-ahead, and its one call for a small file's content and checks.

        Raises OffsetInvalid, InvalidArgument (``count`` out of range), FileIdInvalid,
        FileReferenceExpired.
        """
        ...

    async def get_file_hashes(self, location: FileLocation, offset: int) -> list[FileHash]:
        """SHA-256 block hashes (``HASH_BLOCK`` bytes each) from the block holding ``offset``
        on, at least through that block's 1 MiB window; empty past the end.

        Raises OffsetInvalid, FileIdInvalid, FileReferenceExpired.
        """
        ...

    async def get_file_checksums(self, location: FileLocation, offset: int) -> list[BlockCheck]:
        """What a reader verifies a window with: the same blocks as ``get_file_hashes``, as
        :class:`BlockChecksum` (CRC32C) when the store has them for this document, else as
        the SHA-256 :class:`FileHash` es ``get_file_hashes`` answers.

        Raises what ``get_file_hashes`` raises.
        """
        ...

    async def get_document_by_hash(self, sha256: str, size: int, mime_type: str) -> Document | None:
        """Find existing content by SHA-256 (hex) and size, or None (deduplication)."""
        ...

    # --- namespace -------------------------------------------------------------------
    async def lookup(self, parent: int, name: str) -> Node:
        """Raises NotFound, NotADirectory."""
        ...

    async def getattr(self, node_id: int) -> Node:
        """Raises NotFound."""
        ...

    async def list_folder(self, folder_id: int, after: str | None = None, limit: int = 1000) -> Listing:
        """One page of entries with names greater than ``after``.  Raises NotFound, NotADirectory."""
        ...

    async def reserve_node_ids(self, count: int) -> int:
        """Hand out ``count`` (1..10000) node ids that the store gives nobody else; returns
        the first.  A caller creates nodes with them later (``node_id=`` of
        :meth:`mkdir`, :meth:`create_file`, :meth:`put_file`, :meth:`symlink`), so it knows
        a new node's id (the mount: its inode number) before the store has the node, and
        a create costs no round trip until its content is ready (an extension, as
        JuiceFS's clients take inode numbers in batches).  Each id is for one node; ids
        never used are gaps.

        Raises InvalidArgument.
        """
        ...

    async def mkdir(self, parent: int, name: str, mode: int = 0o755, *,
                    owner: Owner | None = None, node_id: int | None = None) -> Node:
        """Raises AlreadyExists, NotFound, NotADirectory, InvalidName, NodeIdInvalid
        (``node_id`` never reserved, or in use).  ``owner``: the new folder's numeric
        owner (None: none, see :attr:`Node.uid`)."""
        ...

    async def create_file(
        self,
        parent: int,
        name: str,
        segments: tuple[FileLocation, ...] = (),
        *,
        mode: int = 0o644,
        mtime_ns: int | None = None,
        replace: bool = False,
        sha256: str | None = None,
        owner: Owner | None = None,
        node_id: int | None = None,
    ) -> Node:
        """Create a file with the given content (owned by ``owner``, if given; with the id
        ``node_id``, if given, reserved by :meth:`reserve_node_ids`); with
        ``replace`` an existing file of that name is replaced atomically (readers see the
        old or the new content, never a mix).  ``sha256`` is the whole content's SHA-256
        as the writer computed it (kept as the node's ``sha256``; without it the store
        sets it only where it knows it: no segment or one).

        Raises AlreadyExists, IsADirectory, NotFound, FileIdInvalid, QuotaExceeded,
        InvalidArgument (``sha256`` malformed, or not the one segment's), NodeIdInvalid.
        """
        ...

    async def put_file(
        self,
        parent: int,
        name: str,
        data: bytes,
        *,
        md5_checksum: str,
        mode: int = 0o644,
        mtime_ns: int | None = None,
        replace: bool = True,
        owner: Owner | None = None,
        node_id: int | None = None,
    ) -> Node:
        """Create (or with ``replace`` atomically replace) a file of at most the small-file
        threshold (10 MB) with its whole content, checked against ``md5_checksum``, in one
        call: what saveFilePart, uploadMedia and createFile do one after another, in one
        round trip (an extension, as ScaiDrive's multipart upload).  ``owner`` and
        ``node_id`` as for :meth:`create_file`.

        Raises InvalidArgument (too big), Md5ChecksumInvalid, QuotaExceeded, AlreadyExists
        (``replace`` false), IsADirectory, NotFound, NotADirectory, InvalidName,
        NodeIdInvalid.
        """
        ...

    async def set_content(
        self, node_id: int, segments: tuple[FileLocation, ...], *, mtime_ns: int | None = None,
        sha256: str | None = None,
    ) -> Node:
        """Atomically replace a file's content with the given documents (``sha256`` as in
        :meth:`create_file`).

        Raises NotFound, IsADirectory, FileIdInvalid, QuotaExceeded, InvalidArgument.
        """
        ...

    async def symlink(self, parent: int, name: str, target: str, *,
                      owner: Owner | None = None, node_id: int | None = None) -> Node:
        """Raises AlreadyExists, NotFound, InvalidName, NodeIdInvalid."""
        ...

    async def setattr(
        self, node_id: int, *, mode: int | None = None, mtime_ns: int | None = None
    ) -> Node:
        """Change permission bits or mtime.  Raises NotFound."""
        ...

    async def rename(
        self, parent: int, name: str, new_parent: int, new_name: str, *, replace: bool = True
    ) -> Node:
        """Move a node; a folder moves with everything in it as one change.  Over an existing
        file (or empty folder, for a folder) it replaces it atomically.

        Raises NotFound, AlreadyExists (``replace=False``), NotEmpty, IsADirectory,
        NotADirectory, InvalidArgument (a folder into itself).
        """
        ...

    async def unlink(self, parent: int, name: str) -> int | None:
        """Remove a file or symlink.  Returns the change's stamp (ns: the folder's new mtime
        and ctime), or None from a store that does not tell it (an older server).  Raises
        NotFound, IsADirectory."""
        ...

    async def rmdir(self, parent: int, name: str) -> int | None:
        """Remove an empty folder; returns the stamp as :meth:`unlink`.  Raises NotFound,
        NotEmpty, NotADirectory."""
        ...

    async def statfs(self) -> Usage: ...

    # --- change feed -----------------------------------------------------------------
    async def get_changes(self, cursor: int | None, timeout: float) -> ChangeBatch:
        """The namespace changes after ``cursor`` (a long poll).

        With ``cursor`` None: at once, the current cursor and no changes.  Otherwise as
        soon as there are changes after ``cursor`` (up to a bounded batch; ask again from
        the cursor answered), or after ``timeout`` seconds (0..``MAX_CHANGES_TIMEOUT``)
        with none.  A cursor older than the log keeps, or newer than the store's, answers
        ``reset=True`` with the current cursor.  Only this user's changes are reported.

        Raises InvalidArgument (a negative cursor, a timeout out of range), NotFound (a
        server from before the feed).
        """
        ...

    # --- POSIX: special files, hard links, ownership, times, extended attributes -------
    async def mknod(self, parent: int, name: str, kind: NodeKind, mode: int, rdev: int = 0,
                    *, owner: Owner | None = None) -> Node:
        """Create a FIFO, socket or device node (``kind`` in :data:`SPECIAL_KINDS`): a
        namespace entry with mode, owner and ``rdev``; it never has content.

        Raises AlreadyExists, NotFound, NotADirectory, InvalidName, InvalidArgument (a kind
        that is not special).
        """
        ...

    async def link(self, node_id: int, new_parent: int, new_name: str) -> Node:
        """Give a node one more name (a hard link): the same node, content and attributes
        under both; its ``nlink`` counts the names.  Answers the node under the new name.

        Raises NotFound, NotADirectory, AlreadyExists, InvalidName, NotPermitted (a folder).
        """
        ...

    async def chown(self, node_id: int, *, uid: int | None = None,
                    gid: int | None = None) -> Node:
        """Set a node's numeric owner and/or group (kept as given); sets its ctime.  Who may
        do so is the caller's rule (the mount: POSIX's); the store keeps what it is given.

        Raises NotFound, InvalidArgument (an id outside 0..2**32-2).
        """
        ...

    async def set_times(self, node_id: int, *, atime_ns: int | None = None,
                        mtime_ns: int | None = None) -> Node:
        """Set the access and/or modification time (utimensat); sets the ctime to now.

        Raises NotFound.
        """
        ...

    async def get_xattr(self, node_id: int, name: str) -> bytes:
        """One extended attribute's value.  Raises NotFound, NoSuchAttribute."""
        ...

    async def list_xattrs(self, node_id: int) -> list[str]:
        """The names of a node's extended attributes, in name order.  Raises NotFound."""
        ...

    async def set_xattr(self, node_id: int, name: str, value: bytes,
                        mode: XattrMode = XattrMode.EITHER) -> None:
        """Set an extended attribute (names in :data:`XATTR_NAMESPACES`; values up to
        :data:`MAX_XATTR_VALUE` bytes, a node's names and values together up to
        :data:`MAX_XATTR_TOTAL`); sets the node's ctime.

        Raises NotFound, AlreadyExists (``CREATE`` and it exists), NoSuchAttribute
        (``REPLACE`` and it does not), InvalidArgument (a bad name), NotPermitted (a name
        under :data:`RESERVED_XATTR_PREFIX`), AttributeTooBig (value too big),
        AttributesFull (the node's total would exceed the bound).
        """
        ...

    async def remove_xattr(self, node_id: int, name: str) -> None:
        """Remove an extended attribute; sets the node's ctime.

        Raises NotFound, NoSuchAttribute.
        """
        ...

    async def aclose(self) -> None:
        """Release connections, threads and locks."""
        ...
