"""The store facade: :class:`Store` opens a store directory and composes its components.

Synchronous and thread-safe; :mod:`fsmount.embedded` calls it from worker threads and the
HTTP server calls it per request.  Every method enforces the chunked transfer protocol's
rules (:mod:`fsmount.protocol`) and raises the named errors of :mod:`fsmount.errors`.

``Store`` holds no logic of its own beyond opening and closing; each call goes to the
component of its concept:

* :mod:`~fsmount.store.users` (users, quotas), :mod:`~fsmount.store.namespace` (the tree),
  :mod:`~fsmount.store.parts` (saving parts, incremental hashing),
  :mod:`~fsmount.store.finalize` (documents and blobs), :mod:`~fsmount.store.reads`,
  :mod:`~fsmount.store.lifetime` (expiry, reclamation, the orphan sweep),
  :mod:`~fsmount.store.deleter` (background deletion), :mod:`~fsmount.store.changes` (the
  change log and its long polls);
* below them the two seams: the metadata backend (:mod:`~fsmount.store.meta`; SQLite in
  :mod:`~fsmount.store.sqlite_meta`), whose transactions :mod:`~fsmount.store.txn` runs,
  and the content backend (:mod:`~fsmount.store.content`; a local directory in
  :mod:`~fsmount.store.localdir`, the default, or an S3 bucket in
  :mod:`~fsmount.store.s3content`, chosen by :mod:`~fsmount.store.content_select`).

A store directory ``DIR`` holds ``meta.sqlite`` (the metadata), ``blobs/`` and ``parts/``
(the content) and ``mount.lock`` / ``gc.lock`` (:mod:`~fsmount.store.locks`).  With its
metadata in PostgreSQL (:mod:`~fsmount.store.pg_meta`) and its content in S3, ``DIR`` is one
node's directory (``metadata.url``, ``content.url``, the server's ``auth.sqlite``) and any
number of nodes serve the same store: nothing one node keeps in memory is needed by another
(uploads' incremental hashing is a cache that finalize falls back from; the orphan sweep at
open runs only when no other node has the store open).

Crash safety: every state change is one metadata transaction.  Blob bytes are durable
before the transaction that creates their document commits; content is deleted only after
the transaction that unreferences it has committed (blobs: and has been made durable).  A
crash can therefore leave content nobody references (never references to missing content);
the next opener that has the store to itself sweeps it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from .. import errors
from ..protocol import MAX_PART_SIZE, Limits
from ..remote import (
    BlockCheck,
    ChangeBatch,
    Document,
    FileHash,
    FileLocation,
    InputFile,
    InputFileBig,
    Listing,
    Node,
    NodeKind,
    Owner,
    UploadFile,
    Usage,
    UserConfig,
    XattrMode,
)
from .changes import ChangeLog
from .content import ContentBackend
from .content_select import content_url, select_content
from .deleter import Deleter
from .finalize import Finalizer
from .hooks import NO_HOOKS, StoreHooks
from .lifetime import Lifetime
from .locks import StoreLocks
from .meta import MetaBackend
from .meta_select import record_metadata, select_metadata
from .namespace import Namespace, check_name
from .parts import Parts, UploadStates
from .reads import HASH_WINDOWS, Reads
from .sqlite_meta import SqliteMeta
from .txn import TxRunner
from .users import DEFAULT_USER, Users
from .xattrs import Xattrs

__all__ = ["LIMITS_ENV", "Store", "limits_from_env"]

#: Environment variable with ``Limits`` fields (``name=value,...``) for a store opened
#: without explicit limits, e.g. by ``fsmount mount`` in a test that needs a small part limit.
LIMITS_ENV = "FSMOUNT_STORE_LIMITS"
#: The file in a store directory holding its random id (:meth:`Store.store_id`).
STORE_ID_FILE = "store-id"
#: The file that marks a store directory as a copy not finished yet (``fsmount store copy``).
COPYING_FILE = "copy-incomplete"


def limits_from_env(text: str | None = None) -> Limits:
    """``Limits`` from :data:`LIMITS_ENV` (or ``text``): defaults for fields not named.

    Raises:
        InvalidArgument: an unknown field or a value that is not a number.
    """
    spec = os.environ.get(LIMITS_ENV, "") if text is None else text
    values: dict[str, float | int] = {}
    fields = {f.name: f for f in dataclasses.fields(Limits)}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, raw = item.partition("=")
        name = name.strip()
        if name not in fields:
            raise errors.InvalidArgument(f"{LIMITS_ENV}: unknown field {name!r}")
        try:
            values[name] = int(raw) if isinstance(getattr(Limits(), name), int) else float(raw)
        except ValueError:
            raise errors.InvalidArgument(f"{LIMITS_ENV}: {name}={raw!r} is not a number") from None
    return Limits(**values)  # type: ignore[arg-type]


class Store:
    """A store directory opened by this process.

    ``exclusive=True`` (``fsmount mount`` and ``fsmount serve``) takes the mount lock; the
    sweep of orphaned files runs at open only for an opener that has the store to itself
    (see :mod:`fsmount.store.locks`).  ``hooks`` are for tests (:mod:`fsmount.store.hooks`).
    ``content`` selects the content backend: None (what the store recorded, else the local
    directory), an ``s3://BUCKET/PREFIX?endpoint=...`` URL, or a backend object
    (:mod:`fsmount.store.content_select`).  ``metadata`` selects the metadata backend: None
    (what the store recorded, else ``DIR/meta.sqlite``) or a ``postgresql://`` URL
    (:mod:`fsmount.store.meta_select`); several processes on several machines ("nodes"),
    each with a directory of its own, may then open the same store.  A copy that has not
    finished (:meth:`set_copying`) opens only with ``copying=True`` (``fsmount store copy``
    itself).

    Raises (at open):
        StoreLocked: ``exclusive`` and another process holds the store exclusively.
        InvalidArgument: the metadata database is not usable; bad :data:`LIMITS_ENV`; a
            content or metadata URL that is malformed, disagrees with the store's, or is
            not usable; an unfinished copy (without ``copying``).
        FsmountError: the PostgreSQL database cannot be reached.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        exclusive: bool = False,
        hooks: StoreHooks = NO_HOOKS,
        content: str | ContentBackend | None = None,
        copying: bool = False,
        metadata: str | None = None,
    ) -> None:
        self.path = Path(path).absolute()
        self.limits = limits if limits is not None else limits_from_env()
        self.clock = clock
        self._closed = False
        self.path.mkdir(parents=True, exist_ok=True)
        if not copying and (self.path / COPYING_FILE).exists():
            raise errors.InvalidArgument(
                f"store {self.path} is a copy that has not finished: run `fsmount store "
                f"copy` again to finish it (or remove the directory)")
        self._locks = StoreLocks(self.path)
        meta: MetaBackend | None = None
        try:
            if exclusive:
                self._locks.take_mount_lock()
            gc_alone = self._locks.take_gc_lock()
            self.content = select_content(self.path, content)
            url = select_metadata(self.path, metadata)
            if url is None:
                meta = SqliteMeta(self.path)
            else:
                from .pg_meta import PgMeta

                meta = PgMeta(url)
            self.meta = meta
            self.content.open()
            self.txn = TxRunner(meta, clock, hooks)
            with self.txn.run() as tx:
                meta.init_schema(tx)
            self._check_shared_content(content_url(self.path) or f"file://{self.path}")
            self._shared_id = meta.shared_setting("store_id", secrets.token_hex(16))
            record_metadata(self.path, url)
            # Alone in this directory, and (a shared database) across all nodes.
            alone = gc_alone and meta.take_alone()
            self.deleter = Deleter(self.content)
            self.states = UploadStates(self.content)
            self.users = Users(self.txn, self.limits)
            self.lifetime = Lifetime(self.txn, self.content, self.deleter, self.limits,
                                     self.states.forget)
            self.parts = Parts(self.txn, self.content, self.users, self.lifetime, self.states,
                               self.limits)
            self.finalizer = Finalizer(self.txn, self.content, self.deleter, self.users,
                                       self.lifetime, self.states, self.limits, hooks)
            self.reads = Reads(self.txn, self.content, self.lifetime)
            self.changes = ChangeLog(self.txn)
            self.changes.poll = meta.watch_changes(self.changes.wake)
            self.namespace = Namespace(self.txn, self.users, self.reads, self.lifetime, hooks,
                                       self.changes)
            self.xattrs = Xattrs(self.txn, self.changes)
            if alone:
                self.lifetime.sweep_orphans()
                meta.share_alone()
            if gc_alone:
                self._locks.share_gc_lock()
            self.default_user_id = self.ensure_user(DEFAULT_USER)
            self.expire()
        except BaseException:
            if meta is not None:
                meta.close()
            self._locks.release()
            raise

    def _check_shared_content(self, url: str) -> None:
        """Every node of a shared database keeps the content in the same place: the same
        S3 URL, or the same directory (``file://DIR``: one node, or a directory several
        share on a network file system, at the same path).

        Raises InvalidArgument: this node's content is elsewhere.
        """
        recorded = self.meta.shared_setting("content_url", url)
        if recorded is not None and recorded != url:
            raise errors.InvalidArgument(
                f"the store's metadata says its content is at {recorded}, not {url}: give "
                f"every node the same --content (or the same store directory)")

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for background deletions, close the metadata and release the locks;
        idempotent."""
        with self.txn.lock:
            if self._closed:
                return
            self._closed = True
            self.txn.closed = True
            self.changes.close()
            self.deleter.wait()
            try:
                self.meta.close()
            finally:
                self._locks.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- users ----------------------------------------------------------------------------

    def ensure_user(self, name: str, *, quota_bytes: int = 0, premium: bool = False) -> int:
        """Return the id of user ``name``, creating it (with an empty root folder) if needed.

        An existing user keeps its settings; change them with :meth:`set_user`.
        Raises InvalidArgument (an empty name).
        """
        return self.users.ensure(name, quota_bytes=quota_bytes, premium=premium)

    def user_id(self, name: str) -> int:
        """Raises NotFound if there is no user ``name``."""
        return self.users.user_id(name)

    def set_user(
        self, user_id: int, *, quota_bytes: int | None = None, premium: bool | None = None
    ) -> None:
        """Change a user's quota (0 = unlimited) or premium flag.  Raises NotFound."""
        self.users.set(user_id, quota_bytes=quota_bytes, premium=premium)

    def get_config(self, user_id: int) -> UserConfig:
        """Raises NotFound.  ``extra["store_id"]`` names this store and user for good (a
        client keeps per-store state by it, e.g. the write-back journal, whatever URL it
        reaches the store at)."""
        config = self.users.config(user_id)
        return dataclasses.replace(
            config, extra={**config.extra, "store_id": f"{self.store_id()}/{user_id}"})

    def store_id(self) -> str:
        """A random id of this store directory, made the first time it is asked for (the
        file ``store-id``).  Raises OSError when it cannot be read or written."""
        if self._shared_id is not None:
            return self._shared_id  # every node of a shared database answers the same id
        path = self.path / STORE_ID_FILE
        try:
            return path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            pass
        new = secrets.token_hex(16)
        tmp = self.path / f"{STORE_ID_FILE}.{new}"
        tmp.write_text(new + "\n", encoding="ascii")
        try:
            os.link(tmp, path)  # the first writer wins; a racing one reads its id
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text(encoding="ascii").strip()

    def set_store_id(self, store_id: str) -> None:
        """Give this store the id ``store_id`` (``fsmount store copy``: a copy is the same
        store, so that clients keep their per-store state across a move).

        Raises InvalidArgument (not 32 lower-case hex digits), OSError (cannot write it).
        """
        if len(store_id) != 32 or any(c not in "0123456789abcdef" for c in store_id):
            raise errors.InvalidArgument(f"a store id is 32 hex digits, not {store_id!r}")
        if self._shared_id is not None:  # kept in the database every node shares
            with self.txn.lock:
                self.meta.put_shared_setting("store_id", store_id)
            self._shared_id = store_id
            return
        path = self.path / STORE_ID_FILE
        tmp = self.path / f"{STORE_ID_FILE}.{secrets.token_hex(8)}"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(store_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def set_copying(self, unfinished: bool) -> None:
        """Mark the store as a copy that has not finished (no one but the copy may open it:
        its tree is incomplete), or clear the mark.  Raises OSError."""
        path = self.path / COPYING_FILE
        if unfinished:
            with open(path, "w", encoding="ascii") as f:
                f.write("fsmount store copy has not finished\n")
                f.flush()
                os.fsync(f.fileno())
        else:
            path.unlink(missing_ok=True)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def statfs(self, user_id: int) -> Usage:
        """The user's usage and quota, with the free space of the content's disk.  Raises
        NotFound."""
        usage = self.users.usage(user_id)
        space = self.content.disk_space()
        if space is None:
            return usage
        return dataclasses.replace(usage, disk_free_bytes=space.free,
                                   disk_total_bytes=space.total)

    # --- expiry ---------------------------------------------------------------------------

    def expire(self, now: float | None = None) -> tuple[int, int]:
        """Delete parts and unlinked documents whose lifetime has passed; returns (parts
        removed, documents reclaimed)."""
        return self.lifetime.expire(now)

    # --- upload ---------------------------------------------------------------------------

    def save_file_part(self, user_id: int, file_id: int, file_part: int, data: bytes) -> bool:
        """``upload.saveFilePart``: save part ``file_part`` of a file of at most 10 MB.

        Raises FilePartEmpty, FilePartTooBig, FilePartInvalid (number out of range, or the
        part would start beyond the small-file threshold), FilePartSizeInvalid,
        FilePartSizeChanged.
        """
        return self.parts.save(user_id, file_id, file_part, None, data, big=False)

    def save_big_file_part(
        self, user_id: int, file_id: int, file_part: int, file_total_parts: int, data: bytes
    ) -> bool:
        """``upload.saveBigFilePart``.  ``file_total_parts`` is the true count or
        :data:`~fsmount.protocol.TOTAL_PARTS_UNKNOWN`; known counts must agree.

        Raises FilePartsInvalid (bad or disagreeing total), FilePartInvalid, FilePartEmpty,
        FilePartTooBig, FilePartSizeInvalid, FilePartSizeChanged.
        """
        return self.parts.save(user_id, file_id, file_part, file_total_parts, data, big=True)

    def upload_media(self, user_id: int, file: InputFile | InputFileBig) -> Document:
        """Finalize an upload into a fresh document (``messages.uploadMedia``).

        The document lives for the part lifetime unless a file links it.

        Raises FilePartsInvalid, FilePartMissing, Md5ChecksumInvalid, QuotaExceeded.
        """
        return self.finalizer.upload_media(user_id, file)

    # --- download -------------------------------------------------------------------------

    def get_file(self, user_id: int, location: FileLocation, offset: int, limit: int,
                 precise: bool = False) -> UploadFile:
        """``upload.getFile``: ``limit`` bytes at ``offset``, short at the end of the document
        and empty past it; hashes are not verified here (the reader does that).

        Raises OffsetInvalid, LimitInvalid, FileIdInvalid, FileReferenceExpired.
        """
        return self.reads.get_file(user_id, location, offset, limit, precise)

    def get_file_windows(self, user_id: int, location: FileLocation, offset: int, count: int,
                         hashes: bool = False, crc32c: bool = False
                         ) -> tuple[list[UploadFile], list[BlockCheck]]:
        """Up to ``count`` consecutive whole-window getFile answers from ``offset`` (what
        ``count`` calls of ``get_file(offset + k MiB, 1 MiB)`` would answer, in one
        transaction), and with ``hashes`` the block hashes of the windows returned (what
        getFileHashes would answer for them) -- or with ``crc32c`` as well, what
        :meth:`get_file_checksums` would.  Stops after a short window (the end of the
        document); a document deleted while reading ends the answer early, or raises
        FileReferenceExpired if not even the first window was read.

        Raises OffsetInvalid (not a non-negative multiple of 1 MiB), InvalidArgument
        (``count`` below 1), FileIdInvalid, FileReferenceExpired.
        """
        return self.reads.get_file_windows(user_id, location, offset, count, hashes, crc32c)

    def get_file_hashes(self, user_id: int, location: FileLocation, offset: int,
                        windows: int = HASH_WINDOWS) -> list[FileHash]:
        """``upload.getFileHashes``: block hashes from the block holding ``offset`` through
        the end of that offset's 1 MiB window (fewer at the end; none past it).  With
        ``windows`` = N, through the end of the N-th window from there (one transaction for
        what N calls would answer; the server's ``windows=N`` extension).

        Raises OffsetInvalid (negative or not a multiple of 1 KiB), FileIdInvalid,
        FileReferenceExpired, InvalidArgument (``windows`` below 1).
        """
        return self.reads.get_file_hashes(user_id, location, offset, windows)

    def get_file_checksums(self, user_id: int, location: FileLocation, offset: int,
                           windows: int = HASH_WINDOWS) -> list[BlockCheck]:
        """The blocks ``get_file_hashes`` would answer, as CRC32C :class:`BlockChecksum` s
        when this document's blob has them (every blob stored since the store kept them),
        else as its SHA-256 hashes.

        Raises what ``get_file_hashes`` raises.
        """
        return self.reads.get_file_checksums(user_id, location, offset, windows)

    def get_document_by_hash(self, user_id: int, sha256: str | bytes, size: int,
                             mime_type: str = "") -> Document | None:
        """This user's own document with that SHA-256 and size, or None.  ``mime_type`` is
        not compared (the content decides the type)."""
        return self.reads.document_by_hash(user_id, sha256, size)

    def get_document(self, user_id: int, location: FileLocation) -> Document:
        """The document at ``location``.  Raises FileIdInvalid, FileReferenceExpired."""
        return self.reads.document(user_id, location)

    def blob_files(self, user_id: int, location: FileLocation) -> list[Path]:
        """The files holding a document's bytes, in order (for tests that corrupt content
        on disk, and for diagnostics).  Raises FileIdInvalid, FileReferenceExpired."""
        return self.reads.blob_files(user_id, location)

    # --- namespace ------------------------------------------------------------------------

    def getattr(self, user_id: int, node_id: int) -> Node:
        """Raises NotFound."""
        return self.namespace.getattr(user_id, node_id)

    def lookup(self, user_id: int, parent: int, name: str) -> Node:
        """Raises NotFound, NotADirectory."""
        return self.namespace.lookup(user_id, parent, name)

    def list_folder(self, user_id: int, folder_id: int, after: str | None = None,
                    limit: int = 1000) -> Listing:
        """One page of a folder's entries in name order.  Raises NotFound, NotADirectory,
        InvalidArgument (limit not in 1..10000)."""
        return self.namespace.list_folder(user_id, folder_id, after, limit)

    def reserve_node_ids(self, user_id: int, count: int) -> int:
        """Hand out ``count`` node ids to create nodes with later; returns the first.
        Raises InvalidArgument (count not in 1..10000)."""
        return self.namespace.reserve_node_ids(user_id, count)

    def mkdir(self, user_id: int, parent: int, name: str, mode: int = 0o755, *,
              owner: Owner | None = None, node_id: int | None = None) -> Node:
        """Raises AlreadyExists, NotFound, NotADirectory, InvalidName, InvalidArgument,
        NodeIdInvalid."""
        return self.namespace.mkdir(user_id, parent, name, mode, owner=owner, node_id=node_id)

    def create_file(self, user_id: int, parent: int, name: str,
                    segments: tuple[FileLocation, ...] = (), *, mode: int = 0o644,
                    mtime_ns: int | None = None, replace: bool = False,
                    sha256: str | None = None, owner: Owner | None = None,
                    node_id: int | None = None) -> Node:
        """Create a file from documents; with ``replace`` an existing file (or symlink) of
        that name is replaced in the same transaction (the new file gets a new node id:
        ``node_id``, reserved by the caller, or the next one).  ``sha256``: the whole
        content's, as the writer computed it.

        Raises AlreadyExists, IsADirectory, NotFound, NotADirectory, InvalidName,
        FileIdInvalid, FileReferenceExpired, QuotaExceeded, InvalidArgument (sha256, owner),
        NodeIdInvalid.
        """
        return self.namespace.create_file(user_id, parent, name, segments, mode=mode,
                                          mtime_ns=mtime_ns, replace=replace, sha256=sha256,
                                          owner=owner, node_id=node_id)

    def put_file(self, user_id: int, parent: int, name: str, data: bytes, *,
                 md5_checksum: str, mode: int = 0o644, mtime_ns: int | None = None,
                 replace: bool = True, owner: Owner | None = None,
                 node_id: int | None = None) -> Node:
        """Create (or, with ``replace``, replace) a small file with its whole content in one
        call: the parts, the finalize with ``md5_checksum`` and the link, as the seed's
        saveFilePart/uploadMedia and createFile would do them one after another (a crash
        between them leaves an unlinked document, which expires).  The content is hashed
        and checked as any upload's.

        Raises InvalidArgument (more than the small-file threshold), Md5ChecksumInvalid,
        QuotaExceeded, AlreadyExists (``replace`` false), IsADirectory, NotFound,
        NotADirectory, InvalidName, NodeIdInvalid.
        """
        if len(data) > self.limits.big_file_threshold:
            raise errors.InvalidArgument(
                f"putFile takes at most {self.limits.big_file_threshold} bytes, "
                f"not {len(data)}: upload bigger files in parts")
        check_name(name)
        if not data:
            if md5_checksum.lower() != hashlib.md5(b"").hexdigest():
                raise errors.Md5ChecksumInvalid("the MD5 of an empty file was expected")
            return self.create_file(user_id, parent, name, (), mode=mode, mtime_ns=mtime_ns,
                                    replace=replace, owner=owner, node_id=node_id)
        file_id = secrets.randbits(62) + 1
        view = memoryview(data)
        parts = 0
        for parts, start in enumerate(range(0, len(data), MAX_PART_SIZE), start=1):
            self.save_file_part(user_id, file_id, parts - 1,
                                bytes(view[start:start + MAX_PART_SIZE]))
        doc = self.upload_media(user_id, InputFile(file_id, parts, name, md5_checksum))
        return self.create_file(user_id, parent, name, (doc.location,), mode=mode,
                                mtime_ns=mtime_ns, replace=replace, owner=owner,
                                node_id=node_id)

    def set_content(self, user_id: int, node_id: int, segments: tuple[FileLocation, ...], *,
                    mtime_ns: int | None = None, sha256: str | None = None) -> Node:
        """Atomically replace a file's content; bumps its version.

        Raises NotFound, IsADirectory, InvalidArgument (a symlink, a bad sha256),
        FileIdInvalid, FileReferenceExpired, QuotaExceeded.
        """
        return self.namespace.set_content(user_id, node_id, segments, mtime_ns=mtime_ns,
                                          sha256=sha256)

    def symlink(self, user_id: int, parent: int, name: str, target: str, *,
                owner: Owner | None = None, node_id: int | None = None) -> Node:
        """Raises AlreadyExists, NotFound, NotADirectory, InvalidName, InvalidArgument,
        NodeIdInvalid."""
        return self.namespace.symlink(user_id, parent, name, target, owner=owner,
                                      node_id=node_id)

    def setattr(self, user_id: int, node_id: int, *, mode: int | None = None,
                mtime_ns: int | None = None) -> Node:
        """Change permission bits or mtime.  Raises NotFound."""
        return self.namespace.setattr(user_id, node_id, mode=mode, mtime_ns=mtime_ns)

    def rename(self, user_id: int, parent: int, name: str, new_parent: int, new_name: str, *,
               replace: bool = True) -> Node:
        """Move a node (a folder moves as one row change).  Over an existing file, or an
        empty folder for a folder, it replaces the target in the same transaction.

        Raises NotFound, NotADirectory, AlreadyExists (``replace=False``), NotEmpty,
        IsADirectory, InvalidArgument (a folder into its own subtree), InvalidName.
        """
        return self.namespace.rename(user_id, parent, name, new_parent, new_name,
                                     replace=replace)

    def unlink(self, user_id: int, parent: int, name: str) -> int:
        """Remove a file or symlink; returns the change's stamp (the folder's new mtime).
        Raises NotFound, NotADirectory, IsADirectory."""
        return self.namespace.unlink(user_id, parent, name)

    def rmdir(self, user_id: int, parent: int, name: str) -> int:
        """Remove an empty folder; returns the change's stamp (the folder's new mtime).
        Raises NotFound, NotEmpty, NotADirectory."""
        return self.namespace.rmdir(user_id, parent, name)

    # --- change feed ----------------------------------------------------------------------

    def get_changes(self, user_id: int, cursor: int | None, timeout: float) -> ChangeBatch:
        """The user's namespace changes after ``cursor``: a long poll of up to ``timeout``
        seconds (blocking; see :meth:`fsmount.remote.Remote.get_changes`).

        Raises InvalidArgument (bad cursor or timeout; the store is closed).
        """
        return self.changes.get_changes(user_id, cursor, timeout)

    # --- POSIX: special files, hard links, ownership, times, extended attributes ----------

    def mknod(self, user_id: int, parent: int, name: str, kind: NodeKind, mode: int,
              rdev: int = 0, *, owner: Owner | None = None) -> Node:
        """A FIFO, socket or device node.  Raises AlreadyExists, NotFound, NotADirectory,
        InvalidName, InvalidArgument."""
        return self.namespace.mknod(user_id, parent, name, kind, mode, rdev, owner=owner)

    def link(self, user_id: int, node_id: int, new_parent: int, new_name: str) -> Node:
        """One more name of a node.  Raises NotFound, NotADirectory, AlreadyExists,
        InvalidName, NotPermitted (a folder)."""
        return self.namespace.link(user_id, node_id, new_parent, new_name)

    def chown(self, user_id: int, node_id: int, *, uid: int | None = None,
              gid: int | None = None) -> Node:
        """Set the numeric owner and/or group.  Raises NotFound, InvalidArgument."""
        return self.namespace.chown(user_id, node_id, owner_uid=uid, owner_gid=gid)

    def set_times(self, user_id: int, node_id: int, *, atime_ns: int | None = None,
                  mtime_ns: int | None = None) -> Node:
        """Set atime and/or mtime (ctime to now).  Raises NotFound."""
        return self.namespace.set_times(user_id, node_id, atime_ns=atime_ns,
                                        mtime_ns=mtime_ns)

    def get_xattr(self, user_id: int, node_id: int, name: str) -> bytes:
        """Raises NotFound, NoSuchAttribute."""
        return self.xattrs.get(user_id, node_id, name)

    def list_xattrs(self, user_id: int, node_id: int) -> list[str]:
        """Raises NotFound."""
        return self.xattrs.list(user_id, node_id)

    def set_xattr(self, user_id: int, node_id: int, name: str, value: bytes,
                  mode: XattrMode = XattrMode.EITHER) -> None:
        """Raises NotFound, AlreadyExists, NoSuchAttribute, InvalidArgument, NotPermitted,
        AttributeTooBig, AttributesFull."""
        self.xattrs.set(user_id, node_id, name, value, mode)

    def remove_xattr(self, user_id: int, node_id: int, name: str) -> None:
        """Raises NotFound, NoSuchAttribute."""
        self.xattrs.remove(user_id, node_id, name)
