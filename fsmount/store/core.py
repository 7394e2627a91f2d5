"""The store: users, a namespace of folders/files/symlinks, uploads and documents on disk.

Synchronous and thread-safe; :mod:`fsmount.embedded` calls it from worker threads and the
HTTP server calls it per request.  Every method enforces the chunked transfer protocol's
rules (:mod:`fsmount.protocol`) and raises the named errors of :mod:`fsmount.errors`.

On-disk layout of a store directory ``DIR``::

    DIR/meta.sqlite      SQLite (WAL): users, nodes, segments, documents, blobs, uploads, parts
    DIR/blobs/ab/<sha256>.<token>/<n>   content, deduplicated by SHA-256; chunk n of the blob
    DIR/parts/<user>/<file_id hex>/<n>  part n of an upload that is not finalized yet
    DIR/parts/tmp/                      files being written, and trash being deleted
    DIR/mount.lock, DIR/gc.lock         fcntl locks (see :class:`Store`)

A blob is a directory of equally sized chunks (the last one smaller): finalize renames the
upload's part directory into ``blobs/`` instead of copying a gigabyte again, and reads take
a range from one or two chunk files.  SHA-256, MD5, and the 128 KiB block hashes and
CRC32C block checksums are computed while contiguous parts arrive (the blocks' per part in
the saving thread), so finalize only checks and links; parts that arrived out of order or
were re-sent are hashed in one pass at finalize instead.

Crash safety: every state change is one SQLite transaction.  Blob files are fsynced
before the transaction that creates their document commits (parts from the 9th on as they
are saved, the first ones by finalize); files are deleted only after
the transaction that unreferences them has committed (blobs: and has been made durable by a
WAL checkpoint, since commits run with ``synchronous=NORMAL``).  A crash can therefore
leave files nobody references (never references to missing files); the next opener that
has the store to itself sweeps them.

Document lifetime: a fresh document lives ``limits.part_lifetime`` unless a file links it;
a linked one lives while a file links it and ``limits.unlinked_grace`` after; then it is
reclaimed (a tombstone keeps ``FILE_REFERENCE_EXPIRED`` distinct from ``FILE_ID_INVALID``),
and its blob with the last document using it.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from .. import errors, protocol
from ..protocol import HASH_BLOCK, WINDOW, FileType, Limits
from ..remote import (
    ROOT_ID,
    BlockCheck,
    BlockChecksum,
    Document,
    FileHash,
    FileLocation,
    InputFile,
    InputFileBig,
    Listing,
    Node,
    NodeKind,
    UploadFile,
    Usage,
    UserConfig,
)
from .hooks import NO_HOOKS, HookPoint, StoreHooks

__all__ = ["Store", "DEFAULT_USER", "MAX_NAME_BYTES", "blob_relpath", "upload_relpath",
           "sweep_files"]

DEFAULT_USER = "default"
MAX_NAME_BYTES = 255
MAX_SYMLINK_BYTES = 4096
MAX_LIST_LIMIT = 10_000
#: Uploads whose part size is below this are concatenated into one file at finalize
#: (a blob of thousands of 1 KiB chunk files would make every read open many files).
MIN_CHUNK = 64 * 1024
#: Parts kept in memory for incremental hashing while an earlier part is still missing.
PENDING_PARTS = 32
#: ... and at most this many bytes of them across all uploads (the rest is read back).
PENDING_BYTES = 64 * 1024 * 1024
#: getFileHashes answers for this many 1 MiB windows from the offset's window on (the HTTP
#: API has its own ``windows=N`` extension for readers that want more per request).
HASH_WINDOWS = 1
#: Parts below this number are synced to disk by finalize, the others when saved.
SYNC_AT_FINALIZE_PARTS = 8
#: Directories with at most this many files are deleted in the calling thread.
INLINE_DELETE_FILES = 16
#: Seconds of the store's clock between two opportunistic expiry sweeps.
SWEEP_INTERVAL = 30.0
#: Parts / documents expired per transaction (bounds the latency a sweep adds to a call).
EXPIRE_BATCH = 500
#: Environment variable with ``Limits`` fields (``name=value,...``) for a store opened
#: without explicit limits, e.g. by ``fsmount mount`` in a test that needs a small part limit.
LIMITS_ENV = "FSMOUNT_STORE_LIMITS"

_U64 = 1 << 64
_I63 = 1 << 63

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    quota_bytes INTEGER NOT NULL DEFAULT 0,
    premium INTEGER NOT NULL DEFAULT 0,
    next_node_id INTEGER NOT NULL DEFAULT 2,
    used_bytes INTEGER NOT NULL DEFAULT 0,
    node_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS nodes(
    user_id INTEGER NOT NULL,
    id INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    mode INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    target TEXT,
    PRIMARY KEY(user_id, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS nodes_by_name ON nodes(user_id, parent, name);
CREATE TABLE IF NOT EXISTS segments(
    user_id INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    doc_id INTEGER NOT NULL,
    PRIMARY KEY(user_id, node_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS segments_by_doc ON segments(doc_id);
CREATE TABLE IF NOT EXISTS blobs(
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    path TEXT NOT NULL UNIQUE,
    block_hashes BLOB NOT NULL,
    block_crc32c BLOB
);
CREATE TABLE IF NOT EXISTS documents(
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    access_hash INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mime_type TEXT NOT NULL,
    md5 TEXT NOT NULL,
    date REAL NOT NULL,
    file_type TEXT NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS documents_by_user_hash ON documents(user_id, sha256, size);
CREATE INDEX IF NOT EXISTS documents_by_blob ON documents(sha256);
CREATE INDEX IF NOT EXISTS documents_by_expiry ON documents(expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS doc_tombstones(
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    access_hash INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads(
    user_id INTEGER NOT NULL,
    file_id INTEGER NOT NULL,
    total_parts INTEGER,
    PRIMARY KEY(user_id, file_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parts(
    user_id INTEGER NOT NULL,
    file_id INTEGER NOT NULL,
    part INTEGER NOT NULL,
    size INTEGER NOT NULL,
    saved_at REAL NOT NULL,
    PRIMARY KEY(user_id, file_id, part)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS parts_by_age ON parts(saved_at);
"""
SCHEMA_VERSION = 2


# --- on-disk layout (pure path functions; tested under pyfakefs) ---------------------------


def file_id_key(file_id: int) -> int:
    """The signed 64-bit form of a client file id (``long``); unsigned spellings alias it.

    Raises:
        InvalidArgument: the id does not fit in 64 bits.
    """
    if not isinstance(file_id, int) or not -_I63 <= file_id < _U64:
        raise errors.InvalidArgument(f"file_id {file_id!r} is not a 64-bit integer")
    return file_id - _U64 if file_id >= _I63 else file_id


def upload_relpath(user_id: int, file_id: int) -> str:
    """Directory of an upload's parts, relative to the store directory."""
    return f"parts/{user_id}/{file_id & (_U64 - 1):016x}"


def blob_relpath(sha256: str, token: str) -> str:
    """Directory of a blob, relative to the store directory."""
    return f"blobs/{sha256[:2]}/{sha256}.{token}"


def sweep_files(root: Path, blob_paths: set[str], part_files: dict[str, set[str]]) -> list[str]:
    """Remove files the metadata does not reference; return their relative paths.

    ``blob_paths`` are the referenced blob directories, ``part_files`` maps an upload
    directory to the part file names that are referenced.  Everything under ``parts/tmp``
    goes.  Only call this while no other process has the store open.
    """
    removed: list[str] = []
    blobs = root / "blobs"
    if blobs.is_dir():
        for prefix in sorted(blobs.iterdir()):
            if not prefix.is_dir():
                removed.append(str(prefix.relative_to(root)))
                prefix.unlink()
                continue
            for entry in sorted(prefix.iterdir()):
                rel = str(entry.relative_to(root))
                if rel not in blob_paths:
                    removed.append(rel)
                    _remove_tree(entry)
            if not any(prefix.iterdir()):
                prefix.rmdir()
    parts = root / "parts"
    if parts.is_dir():
        for user_dir in sorted(parts.iterdir()):
            if user_dir.name == "tmp":
                for entry in sorted(user_dir.iterdir()):
                    removed.append(str(entry.relative_to(root)))
                    _remove_tree(entry)
                continue
            if not user_dir.is_dir():
                removed.append(str(user_dir.relative_to(root)))
                user_dir.unlink()
                continue
            for up in sorted(user_dir.iterdir()):
                rel = str(up.relative_to(root))
                keep = part_files.get(rel)
                if keep is None or not up.is_dir():
                    removed.append(rel)
                    _remove_tree(up)
                    continue
                for f in sorted(up.iterdir()):
                    if f.name not in keep:
                        removed.append(str(f.relative_to(root)))
                        _remove_tree(f)
                if not any(up.iterdir()):
                    up.rmdir()
            if not any(user_dir.iterdir()):
                user_dir.rmdir()
    return removed


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


# --- names --------------------------------------------------------------------------------


def check_name(name: str) -> None:
    """Raises InvalidName unless ``name`` may name a node."""
    if not isinstance(name, str) or not name:
        raise errors.InvalidName("empty name")
    if name in (".", ".."):
        raise errors.InvalidName(f"{name!r} is reserved")
    if "/" in name or "\0" in name:
        raise errors.InvalidName(f"{name!r} contains '/' or NUL")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.InvalidName(f"{name!r} is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise errors.InvalidName(f"name of {len(encoded)} bytes exceeds {MAX_NAME_BYTES}")


def _name_ok(name: object) -> bool:
    try:
        check_name(name)  # type: ignore[arg-type]
    except errors.InvalidName:
        return False
    return True


# --- hashing ------------------------------------------------------------------------------


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


_Stat = tuple[int, int, int]  # (st_ino, st_size, st_mtime_ns): identifies one saved part file


@dataclass
class _UploadState:
    """In-memory incremental hashing of one upload, fed while contiguous parts arrive."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    hasher: Hasher = field(default_factory=Hasher)
    next_part: int = 0
    saved: dict[int, _Stat] = field(default_factory=dict)
    fed: dict[int, _Stat] = field(default_factory=dict)
    pending: dict[int, tuple[bytes, list[tuple[bytes, int]]]] = field(default_factory=dict)
    broken: bool = False


@dataclass
class _Tx:
    """One open transaction; ``after_locked`` run after commit under the store lock,
    ``after`` after commit without it."""

    db: sqlite3.Connection
    now: float
    after_locked: list[Callable[[], None]] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)
    on_rollback: list[Callable[[], None]] = field(default_factory=list)
    #: Make the commit durable before running ``after`` (it deletes blob files).
    sync_before_cleanup: bool = False
    #: Test hook point passed right after the commit, before the files are cleaned up.
    hook_after: HookPoint | None = None

    def q(self, sql: str, *args: object) -> sqlite3.Cursor:
        return self.db.execute(sql, args)

    def one(self, sql: str, *args: object) -> tuple | None:
        return self.db.execute(sql, args).fetchone()


_NODE_COLS = "id, parent, name, kind, mode, size, mtime_ns, ctime_ns, version, target"
_DOC_COLS = "id, access_hash, size, mime_type, sha256, md5, date, file_type"


def _doc_from_row(r: tuple) -> Document:
    return Document(
        id=r[0], access_hash=r[1], size=r[2], mime_type=r[3], sha256=r[4], md5=r[5],
        date=r[6], file_type=FileType(r[7]),
    )


class Store:
    """A store directory opened by this process.

    ``exclusive=True`` (``fsmount mount`` and ``fsmount serve``) takes a non-blocking lock
    on ``DIR/mount.lock``.  Every opener holds a shared lock on ``DIR/gc.lock`` for its
    lifetime; the sweep of orphaned files runs at open only if the lock can be taken
    exclusively, so a concurrent ``fsmount put`` never loses an in-flight file.
    ``hooks`` are for tests: named points where a crash test pauses the store
    (:mod:`fsmount.store.hooks`); the default does nothing.

    Raises (at open):
        StoreLocked: ``exclusive`` and another process holds the store exclusively.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        exclusive: bool = False,
        hooks: StoreHooks = NO_HOOKS,
    ) -> None:
        self.path = Path(path).absolute()
        self.limits = limits if limits is not None else limits_from_env()
        self.clock = clock
        self._lock = threading.RLock()
        self._states: dict[tuple[int, int], _UploadState] = {}
        self._states_lock = threading.Lock()
        self._pending_bytes = 0
        self._deleter_lock = threading.Lock()
        self._deletions: list[Path] = []
        self._deleter: threading.Thread | None = None
        self._last_sweep = float("-inf")
        self._closed = False
        self._hooks = hooks
        self._lock_fds: list[int] = []
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            if exclusive:
                self._take_mount_lock()
            gc_fd = os.open(self.path / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._lock_fds.append(gc_fd)
            try:
                fcntl.flock(gc_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
            except BlockingIOError:
                fcntl.flock(gc_fd, fcntl.LOCK_SH)
                alone = False
            for sub in ("blobs", "parts", "parts/tmp"):
                (self.path / sub).mkdir(exist_ok=True)
            self._db = sqlite3.connect(
                self.path / "meta.sqlite", isolation_level=None, check_same_thread=False,
                timeout=30.0,
            )
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.Error as exc:
                self._db.close()
                raise _db_error(exc, self.path) from exc
            # Commits are atomic and survive a killed process; durability against power
            # loss comes from the checkpoint before blob deletion (see _tx) and the
            # fsync of every blob before the commit that references it.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._init_schema()
            if alone:
                self._sweep_orphans()
                # Downgrade: others may open the store from now on.
                fcntl.flock(gc_fd, fcntl.LOCK_SH)
            self.default_user_id = self.ensure_user(DEFAULT_USER)
            self.expire()
        except BaseException:
            db = getattr(self, "_db", None)
            if db is not None:
                db.close()
            self._release_locks()
            raise

    # --- lifecycle ------------------------------------------------------------------------

    def _take_mount_lock(self) -> None:
        fd = os.open(self.path / "mount.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise errors.StoreLocked(
                f"store {self.path} is in use by another mount (pid {pid})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fds.append(fd)

    def _release_locks(self) -> None:
        for fd in self._lock_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._lock_fds.clear()

    def close(self) -> None:
        """Close the database and release the locks; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wait_deletions()
            try:
                self._db.close()
            finally:
                self._release_locks()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_schema(self) -> None:
        with self._tx() as tx:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    tx.q(stmt)
            tx.q("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                 SCHEMA_VERSION)
            tx.q("INSERT OR IGNORE INTO meta(key, value) VALUES ('next_doc_id', 1)")
            # Version 2 added the blocks' CRC32Cs; older blobs keep NULL there and are
            # verified by their SHA-256 block hashes.
            columns = {r[1] for r in tx.q("PRAGMA table_info(blobs)")}
            if "block_crc32c" not in columns:
                tx.q("ALTER TABLE blobs ADD COLUMN block_crc32c BLOB")
            tx.q("UPDATE meta SET value = ? WHERE key = 'schema_version' AND value < ?",
                 SCHEMA_VERSION, SCHEMA_VERSION)

    # --- transactions ---------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[_Tx]:
        """One SQLite transaction under the store lock (``BEGIN IMMEDIATE`` for writes)."""
        if self._closed:
            raise errors.InvalidArgument("the store is closed")
        after: list[Callable[[], None]] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise _db_error(exc, self.path) from exc
            tx = _Tx(self._db, self.clock())
            try:
                yield tx
                if write:
                    self._hooks.reached(HookPoint.COMMIT)  # every write transaction, before COMMIT
                self._db.execute("COMMIT")
                if write:
                    self._hooks.reached(HookPoint.COMMITTED)  # ... and after, before any cleanup
                if tx.sync_before_cleanup:
                    # synchronous=NORMAL does not sync the WAL at commit; a checkpoint
                    # does.  Blob files go only once the commit that dropped them is durable,
                    # so a power cut can never leave a reference to a deleted blob.
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                if tx.hook_after is not None:
                    self._hooks.reached(tx.hook_after)
            except BaseException as exc:
                try:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                for fn in tx.on_rollback:
                    try:
                        fn()
                    except OSError:
                        pass
                if isinstance(exc, sqlite3.Error):
                    raise _db_error(exc, self.path) from exc
                raise
            for fn in tx.after_locked:
                fn()
            after = tx.after
        for fn in after:
            fn()

    # --- deleting files ---------------------------------------------------------------

    def _discard(self, path: Path) -> None:
        """Delete a directory nobody references any more (a reclaimed blob, trash).

        A few files go at once; a big one (a gigabyte is 2048 chunk files, and ext4 with
        ``discard`` trims as it frees) goes in a background thread so that the call that
        happened to release it does not wait.  A crash before it is gone leaves an orphan
        for the next sweep.
        """
        try:
            entries = len(os.listdir(path))
        except FileNotFoundError:
            return
        except NotADirectoryError:
            entries = 1
        if entries <= INLINE_DELETE_FILES:
            _remove_tree(path)
            return
        with self._deleter_lock:
            self._deletions.append(path)
            if self._deleter is None or not self._deleter.is_alive():
                self._deleter = threading.Thread(target=self._delete_worker,
                                                 name="fsmount-store-delete", daemon=True)
                self._deleter.start()

    def _delete_worker(self) -> None:
        while True:
            with self._deleter_lock:
                if not self._deletions:
                    self._deleter = None
                    return
                path = self._deletions.pop(0)
            _remove_tree(path)

    def _wait_deletions(self, timeout: float = 120.0) -> None:
        with self._deleter_lock:
            worker = self._deleter
        if worker is not None:
            worker.join(timeout)

    # --- users ----------------------------------------------------------------------------

    def ensure_user(self, name: str, *, quota_bytes: int = 0, premium: bool = False) -> int:
        """Return the id of user ``name``, creating it (with an empty root folder) if needed.

        An existing user keeps its settings; change them with :meth:`set_user`.
        """
        if not isinstance(name, str) or not name:
            raise errors.InvalidArgument("a user needs a non-empty name")
        with self._tx() as tx:
            row = tx.one("SELECT id FROM users WHERE name = ?", name)
            if row:
                return int(row[0])
            cur = tx.q("INSERT INTO users(name, quota_bytes, premium) VALUES (?, ?, ?)",
                       name, int(quota_bytes), int(bool(premium)))
            uid = int(cur.lastrowid or 0)
            ns = int(tx.now * 1e9)
            tx.q(f"INSERT INTO nodes(user_id, {_NODE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                 uid, ROOT_ID, ROOT_ID, "", NodeKind.DIR.value, 0o755, 0, ns, ns, 0, None)
            tx.q("UPDATE users SET node_count = 1 WHERE id = ?", uid)
            return uid

    def user_id(self, name: str) -> int:
        """Raises NotFound if there is no user ``name``."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT id FROM users WHERE name = ?", name)
        if not row:
            raise errors.NotFound(f"no user {name!r}")
        return int(row[0])

    def set_user(
        self, user_id: int, *, quota_bytes: int | None = None, premium: bool | None = None
    ) -> None:
        """Change a user's quota (0 = unlimited) or premium flag.  Raises NotFound."""
        with self._tx() as tx:
            self._user(tx, user_id)
            if quota_bytes is not None:
                if quota_bytes < 0:
                    raise errors.InvalidArgument("quota_bytes must be >= 0")
                tx.q("UPDATE users SET quota_bytes = ? WHERE id = ?", int(quota_bytes), user_id)
            if premium is not None:
                tx.q("UPDATE users SET premium = ? WHERE id = ?", int(bool(premium)), user_id)

    def _user(self, tx: _Tx, user_id: int) -> tuple[int, bool, int, int]:
        """(quota_bytes, premium, used_bytes, node_count) of a user; raises NotFound."""
        row = tx.one("SELECT quota_bytes, premium, used_bytes, node_count FROM users "
                     "WHERE id = ?", user_id)
        if not row:
            raise errors.NotFound(f"no user {user_id}")
        return int(row[0]), bool(row[1]), int(row[2]), int(row[3])

    def get_config(self, user_id: int) -> UserConfig:
        with self._tx(write=False) as tx:
            _, premium, _, _ = self._user(tx, user_id)
        return UserConfig(
            max_parts=self.limits.max_parts(premium),
            big_file_threshold=self.limits.big_file_threshold,
            part_lifetime=self.limits.part_lifetime,
            premium=premium,
        )

    def statfs(self, user_id: int) -> Usage:
        with self._tx(write=False) as tx:
            quota, _, used, count = self._user(tx, user_id)
        return Usage(used_bytes=used, quota_bytes=quota, files=count)

    # --- expiry ---------------------------------------------------------------------------

    def expire(self, now: float | None = None) -> tuple[int, int]:
        """Delete parts and unlinked documents whose lifetime has passed.

        Returns (parts removed, documents reclaimed).  Their files go after each commit;
        the work is done in bounded batches, one transaction each.
        """
        parts = docs = 0
        for _ in range(1_000_000):
            with self._tx() as tx:
                if now is not None:
                    tx.now = now
                p, d, more = self._expire_locked(tx)
                self._last_sweep = tx.now
            parts += p
            docs += d
            if not more:
                break
        return parts, docs

    def _maybe_sweep(self, tx: _Tx) -> None:
        """An expiry batch inside another call's transaction, at most every SWEEP_INTERVAL
        seconds of the store's clock (sooner while a backlog remains)."""
        if tx.now - self._last_sweep >= min(SWEEP_INTERVAL, self.limits.part_lifetime / 4):
            _, _, more = self._expire_locked(tx)
            if not more:
                self._last_sweep = tx.now

    def _expire_locked(self, tx: _Tx) -> tuple[int, int, bool]:
        """One bounded batch: (parts removed, documents reclaimed, more left)."""
        cutoff = tx.now - self.limits.part_lifetime
        stale = tx.q("SELECT user_id, file_id, part FROM parts WHERE saved_at <= ? LIMIT ?",
                     cutoff, EXPIRE_BATCH).fetchall()
        for uid, fid, part in stale:
            self._drop_part(tx, uid, fid, part)
        uploads = {(uid, fid) for uid, fid, _ in stale}
        for uid, fid in uploads:
            self._drop_upload_if_empty(tx, uid, fid)
        docs = tx.q("SELECT id FROM documents WHERE expires_at IS NOT NULL AND expires_at <= ? "
                    "LIMIT ?", tx.now, EXPIRE_BATCH).fetchall()
        for (doc_id,) in docs:
            self._reclaim_document(tx, doc_id)
        return len(stale), len(docs), len(stale) == EXPIRE_BATCH or len(docs) == EXPIRE_BATCH

    def _drop_part(self, tx: _Tx, uid: int, fid: int, part: int) -> None:
        tx.q("DELETE FROM parts WHERE user_id = ? AND file_id = ? AND part = ?", uid, fid, part)
        path = self.path / upload_relpath(uid, fid) / str(part)
        # Under the store lock: a re-sent part with the same name cannot be renamed into
        # place between the commit and this unlink.
        tx.after_locked.append(lambda: _unlink_quiet(path))
        self._forget_state(uid, fid)

    def _drop_upload_if_empty(self, tx: _Tx, uid: int, fid: int) -> None:
        if not tx.one("SELECT 1 FROM parts WHERE user_id = ? AND file_id = ? LIMIT 1", uid, fid):
            tx.q("DELETE FROM uploads WHERE user_id = ? AND file_id = ?", uid, fid)
            updir = self.path / upload_relpath(uid, fid)
            tx.after_locked.append(lambda: _rmdir_quiet(updir))

    def _forget_state(self, uid: int, fid: int) -> None:
        with self._states_lock:
            st = self._states.pop((uid, fid), None)
            if st:
                st.broken = True
                self._drop_pending(st)

    def _reclaim_document(self, tx: _Tx, doc_id: int) -> None:
        """Delete a document (and its blob if nothing else uses it); leaves a tombstone."""
        row = tx.one("SELECT user_id, access_hash, sha256 FROM documents WHERE id = ?", doc_id)
        if not row:
            return
        uid, access_hash, sha = row
        tx.q("DELETE FROM documents WHERE id = ?", doc_id)
        tx.q("INSERT OR REPLACE INTO doc_tombstones(id, user_id, access_hash) VALUES (?,?,?)",
             doc_id, uid, access_hash)
        if not tx.one("SELECT 1 FROM documents WHERE sha256 = ? LIMIT 1", sha):
            blob = tx.one("SELECT path FROM blobs WHERE sha256 = ?", sha)
            tx.q("DELETE FROM blobs WHERE sha256 = ?", sha)
            if blob:
                path = self.path / blob[0]
                tx.after.append(lambda: self._discard(path))
                tx.sync_before_cleanup = True

    def _release_documents(self, tx: _Tx, doc_ids: Iterable[int]) -> None:
        """Documents that may just have lost their last file: they stay readable for
        ``limits.unlinked_grace`` seconds (open handles keep reading the old content), then
        the expiry sweep reclaims them."""
        grace = self.limits.unlinked_grace
        for doc_id in set(doc_ids):
            if tx.one("SELECT 1 FROM segments WHERE doc_id = ? LIMIT 1", doc_id):
                continue
            row = tx.one("SELECT expires_at FROM documents WHERE id = ?", doc_id)
            if row is None or row[0] is not None:
                continue
            if grace > 0:
                tx.q("UPDATE documents SET expires_at = ? WHERE id = ?", tx.now + grace, doc_id)
            else:
                self._reclaim_document(tx, doc_id)

    # --- orphan sweep ---------------------------------------------------------------------

    def _sweep_orphans(self) -> list[str]:
        """Make files and metadata agree after a crash (only while nobody else has the store)."""
        with self._tx() as tx:
            blob_paths = {r[0] for r in tx.q("SELECT path FROM blobs")}
            rows = tx.q("SELECT user_id, file_id, part, size FROM parts").fetchall()
            part_files: dict[str, set[str]] = {}
            for uid, fid, part, size in rows:
                rel = upload_relpath(uid, fid)
                try:
                    ok = (self.path / rel / str(part)).stat().st_size == size
                except OSError:
                    ok = False
                if ok:
                    part_files.setdefault(rel, set()).add(str(part))
                else:
                    # A crash between writing a part and recording it: the part is lost,
                    # which the protocol allows (finalize names it missing).
                    tx.q("DELETE FROM parts WHERE user_id = ? AND file_id = ? AND part = ?",
                         uid, fid, part)
            for uid, fid in tx.q("SELECT user_id, file_id FROM uploads").fetchall():
                self._drop_upload_if_empty(tx, uid, fid)
            tx.after_locked.clear()
        return sweep_files(self.path, blob_paths, part_files)

    # --- upload ---------------------------------------------------------------------------

    def save_file_part(self, user_id: int, file_id: int, file_part: int, data: bytes) -> bool:
        """``upload.saveFilePart``: save part ``file_part`` of a file of at most 10 MB.

        Raises FilePartEmpty, FilePartTooBig, FilePartInvalid (number out of range, or the
        part would start beyond the small-file threshold), FilePartSizeInvalid,
        FilePartSizeChanged.
        """
        return self._save_part(user_id, file_id, file_part, None, data, big=False)

    def save_big_file_part(
        self, user_id: int, file_id: int, file_part: int, file_total_parts: int, data: bytes
    ) -> bool:
        """``upload.saveBigFilePart``.  ``file_total_parts`` is the true count or
        :data:`~fsmount.protocol.TOTAL_PARTS_UNKNOWN`; known counts must agree.

        Raises FilePartsInvalid (bad or disagreeing total), FilePartInvalid, FilePartEmpty,
        FilePartTooBig, FilePartSizeInvalid, FilePartSizeChanged.
        """
        return self._save_part(user_id, file_id, file_part, file_total_parts, data, big=True)

    def _save_part(
        self, uid: int, file_id: int, part: int, total: int | None, data: bytes, *, big: bool
    ) -> bool:
        fid = file_id_key(file_id)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise errors.InvalidArgument(f"part data must be bytes, not {type(data).__name__}")
        data = bytes(data) if not isinstance(data, bytes) else data
        protocol.check_part_payload(len(data))
        with self._tx(write=False) as tx:
            _, premium, _, _ = self._user(tx, uid)
        max_parts = self.limits.max_parts(premium)
        if not isinstance(part, int):
            raise errors.FilePartInvalid(f"part {part!r} is not an integer")
        protocol.check_part_number(part, max_parts)
        if big:
            if not isinstance(total, int):
                raise errors.FilePartsInvalid(f"file_total_parts {total!r} is not an integer")
            protocol.check_total_parts(total, max_parts, allow_unknown=True)
            if total != protocol.TOTAL_PARTS_UNKNOWN and part >= total:
                raise errors.FilePartInvalid(f"part {part} is not below file_total_parts {total}")
        # Hash the part's whole 128 KiB blocks here, in parallel with other parts' saves;
        # the in-order feeder then only runs the whole-file SHA-256 and MD5.
        full_blocks = block_sums(data)
        # Write outside the lock; rename into place inside it so that the file and its row
        # change together as far as this process can tell.
        tmp = self.path / "parts" / "tmp" / f"p{secrets.token_hex(8)}"
        with open(tmp, "wb") as f:
            f.write(data)
            if part >= SYNC_AT_FINALIZE_PARTS:
                # Parts of a big upload are made durable as they arrive, in parallel, so
                # that finalize never waits for a gigabyte of writeback.  The first few are
                # synced by finalize instead: a small file then costs one data sync, not a
                # sync per save call (parts are temporary; losing unsynced ones in a power
                # cut only makes finalize report them missing).
                f.flush()
                os.fdatasync(f.fileno())
        try:
            with self._tx() as tx:
                self._maybe_sweep(tx)
                self._check_new_part(tx, uid, fid, part, total, len(data), big)
                if total is not None and total != protocol.TOTAL_PARTS_UNKNOWN:
                    tx.q("INSERT INTO uploads(user_id, file_id, total_parts) VALUES (?,?,?) "
                         "ON CONFLICT(user_id, file_id) DO UPDATE SET total_parts = excluded.total_parts",
                         uid, fid, total)
                else:
                    tx.q("INSERT OR IGNORE INTO uploads(user_id, file_id, total_parts) "
                         "VALUES (?,?,NULL)", uid, fid)
                existed = tx.one("SELECT 1 FROM parts WHERE user_id = ? AND file_id = ? "
                                 "AND part = ?", uid, fid, part) is not None
                tx.q("INSERT OR REPLACE INTO parts(user_id, file_id, part, size, saved_at) "
                     "VALUES (?,?,?,?,?)", uid, fid, part, len(data), tx.now)
                updir = self.path / upload_relpath(uid, fid)
                updir.mkdir(parents=True, exist_ok=True)
                dest = updir / str(part)
                os.rename(tmp, dest)
                st = os.stat(dest)
                stat: _Stat = (st.st_ino, st.st_size, st.st_mtime_ns)
                self._note_part(uid, fid, part, stat, data, full_blocks, existed)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        self._advance((uid, fid))
        return True

    def _check_new_part(
        self, tx: _Tx, uid: int, fid: int, part: int, total: int | None, size: int, big: bool
    ) -> None:
        """Check a part against the live parts of its upload (expired ones dropped first)."""
        self._check_new_part_expiry(tx, uid, fid)
        up = tx.one("SELECT total_parts FROM uploads WHERE user_id = ? AND file_id = ?", uid, fid)
        known = up[0] if up else None
        if big and total != protocol.TOTAL_PARTS_UNKNOWN and known is not None and known != total:
            raise errors.FilePartsInvalid(
                f"file_total_parts {total} disagrees with {known} given before")
        if known is not None and part >= known:
            raise errors.FilePartInvalid(f"part {part} is not below file_total_parts {known}")
        # The two highest other parts summarize the upload's layout (see docs/protocol.md):
        # the highest may be the last part, the next one has the part size.
        others = tx.q("SELECT part, size FROM parts WHERE user_id = ? AND file_id = ? "
                      "AND part != ? ORDER BY part DESC LIMIT 2", uid, fid, part).fetchall()
        if big and total is not None and total != protocol.TOTAL_PARTS_UNKNOWN and others:
            if others[0][0] >= total:
                raise errors.FilePartsInvalid(
                    f"part {others[0][0]} was saved, beyond file_total_parts {total}")
        sizes = {p: s for p, s in others}
        sizes[part] = size
        protocol.check_part_sizes(sizes, new_part=part)
        if not big:
            # A part saved through saveFilePart must start below the small-file threshold;
            # the part size is at least the largest part seen.
            part_size = max(sizes.values())
            if part * part_size >= self.limits.big_file_threshold:
                raise errors.FilePartInvalid(
                    f"saveFilePart part {part} of {part_size}-byte parts starts beyond "
                    f"{self.limits.big_file_threshold} bytes; use saveBigFilePart")

    def _note_part(self, uid: int, fid: int, part: int, stat: _Stat, data: bytes,
                   full_blocks: list[tuple[bytes, int]], existed: bool) -> None:
        with self._states_lock:
            st = self._states.get((uid, fid))
            if st is None:
                if existed:
                    return  # parts saved earlier were not seen by this state; hash at finalize
                st = self._states[(uid, fid)] = _UploadState()
            if part in st.saved or existed:
                st.broken = True
                self._drop_pending(st)
            st.saved[part] = stat
            if (not st.broken and 0 <= part - st.next_part < PENDING_PARTS
                    and self._pending_bytes + len(data) <= PENDING_BYTES):
                st.pending[part] = (data, full_blocks)
                self._pending_bytes += len(data)

    def _drop_pending(self, st: _UploadState) -> None:
        """Forget the bytes an upload holds for hashing (caller holds ``_states_lock``)."""
        self._pending_bytes -= sum(len(d) for d, _ in st.pending.values())
        st.pending.clear()

    def _advance(self, key: tuple[int, int]) -> None:
        """Feed contiguous saved parts into the upload's hashers (whoever gets the lock)."""
        with self._states_lock:
            state = self._states.get(key)
        if state is None:
            return
        for _ in range(1_000_000):
            if state.broken or not state.lock.acquire(blocking=False):
                return
            try:
                while not state.broken:
                    k = state.next_part
                    with self._states_lock:
                        stat = state.saved.get(k)
                        held = state.pending.pop(k, None)
                        if held is not None:
                            self._pending_bytes -= len(held[0])
                    if stat is None:
                        break
                    if held is not None:
                        data, full_blocks = held
                    else:
                        full_blocks = []
                        data = _read_file(self.path / upload_relpath(*key) / str(k))
                        if data is None or len(data) != stat[1]:
                            state.broken = True
                            break
                    state.hasher.update(data, full_blocks)
                    state.fed[k] = stat
                    state.next_part = k + 1
            finally:
                state.lock.release()
            with self._states_lock:
                # Re-check after releasing: a part may have arrived while we held the lock.
                if state.broken or state.next_part not in state.saved:
                    return

    def upload_media(self, user_id: int, file: InputFile | InputFileBig) -> Document:
        """Finalize an upload into a fresh document (``messages.uploadMedia``).

        The document lives for the part lifetime unless a file links it.

        Raises FilePartsInvalid, FilePartMissing, Md5ChecksumInvalid, QuotaExceeded.
        """
        if not isinstance(file, InputFile | InputFileBig):
            raise errors.InvalidArgument("upload_media takes an InputFile or InputFileBig")
        for _ in range(5):
            doc = self._finalize_once(user_id, file)
            if doc is not None:
                return doc
        raise errors.InvalidArgument("the upload kept changing during finalize; retry")

    def _finalize_once(self, uid: int, file: InputFile | InputFileBig) -> Document | None:
        fid = file_id_key(file.id)
        small = isinstance(file, InputFile)
        parts = file.parts
        with self._tx() as tx:
            quota, premium, used, _ = self._user(tx, uid)
            max_parts = self.limits.max_parts(premium)
            if not isinstance(parts, int):
                raise errors.FilePartsInvalid(f"parts {parts!r} is not an integer")
            protocol.check_total_parts(parts, max_parts)
            self._check_new_part_expiry(tx, uid, fid)
            up = tx.one("SELECT total_parts FROM uploads WHERE user_id = ? AND file_id = ?",
                        uid, fid)
            if up and up[0] is not None and up[0] != parts:
                raise errors.FilePartsInvalid(
                    f"{parts} parts, but the parts were saved with file_total_parts {up[0]}")
            rows = tx.q("SELECT part, size, saved_at FROM parts WHERE user_id = ? "
                        "AND file_id = ? ORDER BY part", uid, fid).fetchall()
        if rows and rows[-1][0] >= parts:
            raise errors.FilePartsInvalid(f"part {rows[-1][0]} was saved beyond {parts} parts")
        for i in range(parts):
            if i >= len(rows) or rows[i][0] != i:
                raise errors.FilePartMissing(i)
        sizes = [r[1] for r in rows]
        size = sum(sizes)
        if small and size > self.limits.big_file_threshold:
            raise errors.FilePartsInvalid(
                f"{size} bytes is above {self.limits.big_file_threshold}; use inputFileBig")
        updir = self.path / upload_relpath(uid, fid)
        stats: list[_Stat] = []
        prefix = f"{updir}/"  # plain strings: pathlib costs more than the stat itself
        for i in range(parts):
            try:
                st = os.stat(prefix + str(i))
            except FileNotFoundError:
                raise errors.FilePartMissing(i) from None
            if st.st_size != sizes[i]:
                raise errors.FilePartMissing(i)
            stats.append((st.st_ino, st.st_size, st.st_mtime_ns))
        chunk_size = sizes[0]
        concat = parts > 1 and chunk_size < MIN_CHUNK
        hashed = self._hashes_from_state(uid, fid, stats) if not concat else None
        staged: Path | None = None
        try:
            if hashed is None or concat:
                hashed, staged = self._hash_pass(updir, parts, concat)
            md5 = hashed.md5
            if small and md5.lower() != str(file.md5_checksum).strip().lower():
                raise errors.Md5ChecksumInvalid(f"md5 of the parts is {md5}")
            if quota and used + size > quota:
                raise errors.QuotaExceeded(f"{used} + {size} bytes exceeds the quota {quota}")
            head = _read_head(staged or updir)
            if concat:
                chunk_size = size
            doc = self._commit_document(
                uid, fid, file.name, rows, stats, size, chunk_size, hashed, head, staged)
            if doc is not None:
                staged = None
            return doc
        finally:
            if staged is not None:
                _remove_tree(staged)

    def _check_new_part_expiry(self, tx: _Tx, uid: int, fid: int) -> None:
        """Drop the upload's parts whose lifetime ran out (and the upload, if none is left)."""
        cutoff = tx.now - self.limits.part_lifetime
        stale = tx.q("SELECT part FROM parts WHERE user_id = ? AND file_id = ? AND saved_at <= ?",
                     uid, fid, cutoff).fetchall()
        for (p,) in stale:
            self._drop_part(tx, uid, fid, p)
        if stale:
            self._drop_upload_if_empty(tx, uid, fid)

    def _hashes_from_state(self, uid: int, fid: int, stats: list[_Stat]) -> Hashes | None:
        with self._states_lock:
            state = self._states.get((uid, fid))
        if state is None:
            return None
        with state.lock:
            if state.broken or state.next_part != len(stats):
                return None
            if any(state.fed.get(i) != s for i, s in enumerate(stats)):
                return None
            # A copy: a failed finalize (bad MD5) must leave the upload usable.
            return state.hasher.copy().result()

    def _hash_pass(self, updir: Path, parts: int, concat: bool
                   ) -> tuple[Hashes, Path | None]:
        """Hash the parts in one pass; with ``concat`` also write them as one chunk file."""
        h = Hasher()
        staged: Path | None = None
        out = None
        if concat:
            staged = self.path / "parts" / "tmp" / f"b{secrets.token_hex(8)}"
            staged.mkdir()
            out = open(staged / "0", "wb")  # noqa: SIM115 - closed below
        buf = bytearray(protocol.MAX_PART_SIZE)
        mv = memoryview(buf)
        try:
            for i in range(parts):
                n = _read_into(updir / str(i), mv)
                if n is None:
                    raise errors.FilePartMissing(i)
                h.update(mv[:n])
                if out is not None:
                    out.write(mv[:n])
            if out is not None:
                out.flush()
                os.fdatasync(out.fileno())
        except BaseException:
            if out is not None:
                out.close()
                out = None
            if staged is not None:
                _remove_tree(staged)
            raise
        finally:
            if out is not None:
                out.close()
        if staged is not None:
            _fsync_dir(staged)
        return h.result(), staged

    def _blob_exists(self, sha: str) -> bool:
        with self._tx(write=False) as tx:
            return tx.one("SELECT 1 FROM blobs WHERE sha256 = ?", sha) is not None

    def _commit_document(
        self, uid: int, fid: int, name: str, rows: list[tuple], stats: list[_Stat], size: int,
        chunk_size: int, hashed: Hashes, head: bytes, staged: Path | None,
    ) -> Document | None:
        """Link the hashed upload into a document; None if the parts changed meanwhile."""
        sha, md5 = hashed.sha256, hashed.md5
        updir = self.path / upload_relpath(uid, fid)
        synced = staged is not None  # a staged (concatenated) blob was synced when written
        if not synced and not self._blob_exists(sha):
            _sync_parts(updir, min(len(stats), SYNC_AT_FINALIZE_PARTS))
            synced = True
        with self._tx() as tx:
            now_rows = tx.q("SELECT part, size, saved_at FROM parts WHERE user_id = ? "
                            "AND file_id = ? ORDER BY part", uid, fid).fetchall()
            if now_rows != rows:
                return None
            prefix = f"{updir}/"
            for i, s in enumerate(stats):
                try:
                    st = os.stat(prefix + str(i))
                except FileNotFoundError:
                    return None
                if (st.st_ino, st.st_size, st.st_mtime_ns) != s:
                    return None
            quota, _, used, _ = self._user(tx, uid)
            if quota and used + size > quota:
                raise errors.QuotaExceeded(f"{used} + {size} bytes exceeds the quota {quota}")
            blob = tx.one("SELECT path FROM blobs WHERE sha256 = ?", sha)
            trash = self.path / "parts" / "tmp" / f"t{secrets.token_hex(8)}"
            if blob is None:
                if not synced:  # the blob we meant to share went away meanwhile
                    _sync_parts(updir, min(len(stats), SYNC_AT_FINALIZE_PARTS))
                rel = blob_relpath(sha, secrets.token_hex(6))
                dest = self.path / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = staged or updir
                os.rename(source, dest)
                # Should the commit fail, put the files back where they were.
                tx.on_rollback.append(lambda: os.rename(dest, source))
                _fsync_dir(dest)
                _fsync_dir(dest.parent)
                tx.q("INSERT INTO blobs(sha256, size, chunk_size, path, block_hashes, "
                     "block_crc32c) VALUES (?,?,?,?,?,?)", sha, size, chunk_size, rel,
                     hashed.blocks, hashed.crcs)
                moved_dest: Path | None = dest
            else:
                moved_dest = None
            doc_id = tx.one("SELECT value FROM meta WHERE key = 'next_doc_id'")[0]  # type: ignore[index]
            tx.q("UPDATE meta SET value = ? WHERE key = 'next_doc_id'", doc_id + 1)
            access_hash = secrets.randbits(63)
            ftype = protocol.detect_file_type(head)
            mime = protocol.detect_mime_type(head, name or "")
            tx.q(f"INSERT INTO documents({_DOC_COLS}, user_id, expires_at) "
                 "VALUES (?,?,?,?,?,?,?,?,?,?)", doc_id, access_hash, size, mime, sha, md5,
                 tx.now, ftype.value, uid, tx.now + self.limits.part_lifetime)
            tx.q("DELETE FROM parts WHERE user_id = ? AND file_id = ?", uid, fid)
            tx.q("DELETE FROM uploads WHERE user_id = ? AND file_id = ?", uid, fid)
            if moved_dest is None or staged is not None:
                # The parts directory is no longer needed (deduplicated, or concatenated):
                # move it aside under the lock, delete it after.
                def _trash(updir: Path = updir, trash: Path = trash) -> None:
                    try:
                        os.rename(updir, trash)
                    except OSError:
                        return
                    tx.after.append(lambda: self._discard(trash))

                tx.after_locked.append(_trash)
            if staged is not None and moved_dest is None:
                tx.after.append(lambda: self._discard(staged))
            self._hooks.reached(HookPoint.FINALIZE_BEFORE_COMMIT)
            tx.hook_after = HookPoint.FINALIZE_AFTER_COMMIT
            self._forget_state(uid, fid)
            return Document(id=doc_id, access_hash=access_hash, size=size, mime_type=mime,
                            sha256=sha, md5=md5, date=tx.now, file_type=ftype)

    # --- download -------------------------------------------------------------------------

    def _resolve(self, tx: _Tx, uid: int, loc: FileLocation,
                 blocks: tuple[int, int] | None = None, crc: bool = False) -> tuple:
        """(size, file_type, date, chunk_size, blob path, block hashes, block CRC32Cs) of a
        readable document.

        The block hashes are ``blocks`` = (first, count) of them, 32 bytes each (fewer at the
        end), or ``b""`` without it: a document's hashes are 256 KiB per GiB, too much to
        copy out of SQLite for every 1 MiB read.  With ``crc`` the same blocks' CRC32Cs
        follow, 4 bytes each (None if the blob was stored before the store kept them).

        Raises FileIdInvalid, FileReferenceExpired.
        """
        if not isinstance(loc, FileLocation):
            raise errors.FileIdInvalid("not a FileLocation")
        if blocks is None:
            hashes_sql, hashes_args = "x'', NULL", ()
        else:
            hashes_sql = "substr(b.block_hashes, ?, ?), NULL"
            hashes_args = (blocks[0] * 32 + 1, blocks[1] * 32)
            if crc:
                hashes_sql = "substr(b.block_hashes, ?, ?), substr(b.block_crc32c, ?, ?)"
                hashes_args += (blocks[0] * 4 + 1, blocks[1] * 4)
        row = tx.one(
            "SELECT d.user_id, d.access_hash, d.size, d.file_type, d.date, d.expires_at, "
            f"b.chunk_size, b.path, {hashes_sql} FROM documents d JOIN blobs b "
            "ON b.sha256 = d.sha256 WHERE d.id = ?", *hashes_args, loc.id)
        if row is None:
            tomb = tx.one("SELECT user_id, access_hash FROM doc_tombstones WHERE id = ?", loc.id)
            if tomb and tomb[0] == uid and tomb[1] == loc.access_hash:
                raise errors.FileReferenceExpired(f"document {loc.id} was deleted")
            raise errors.FileIdInvalid(f"no document {loc.id}")
        if row[0] != uid or row[1] != loc.access_hash:
            raise errors.FileIdInvalid(f"no document {loc.id}")
        if row[5] is not None and row[5] <= tx.now:
            raise errors.FileReferenceExpired(f"document {loc.id} expired unused")
        return row[2], row[3], row[4], row[6], row[7], row[8], row[9]

    def _resolve_read(self, uid: int, loc: FileLocation,
                      blocks: tuple[int, int] | None = None, crc: bool = False) -> tuple:
        try:
            with self._tx(write=False) as tx:
                return self._resolve(tx, uid, loc, blocks, crc)
        except errors.FileReferenceExpired:
            # Reclaim lazily an expired fresh document.
            with self._tx() as tx:
                row = tx.one("SELECT expires_at FROM documents WHERE id = ? AND user_id = ?",
                             loc.id, uid)
                if row and row[0] is not None and row[0] <= tx.now:
                    self._reclaim_document(tx, loc.id)
            raise

    def get_file(self, user_id: int, location: FileLocation, offset: int, limit: int,
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
        size, ftype, date, chunk, rel, *_ = self._resolve_read(user_id, location)
        end = min(offset + limit, size)
        data = b""
        if offset < end:
            try:
                data = _read_range(self.path / rel, chunk, offset, end - offset)
                if end < size and end % WINDOW == 0:
                    # A reader that ends on a window boundary usually reads on:
                    # start the kernel's read of the next window now.
                    _prefetch(self.path / rel, chunk, end, min(WINDOW, size - end))
            except FileNotFoundError:
                raise errors.FileReferenceExpired(
                    f"document {location.id} was deleted while reading") from None
        return UploadFile(type=FileType(ftype), mtime=int(date), bytes=data)

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
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise errors.OffsetInvalid(f"offset {offset!r} is not an integer")
        if offset < 0 or offset % WINDOW:
            raise errors.OffsetInvalid(f"offset {offset} is not a non-negative multiple of {WINDOW}")
        if not isinstance(count, int) or count < 1:
            raise errors.InvalidArgument(f"count must be a positive integer, not {count!r}")
        first = offset // HASH_BLOCK
        nblocks = count * (WINDOW // HASH_BLOCK)
        size, ftype, date, chunk, rel, blob, crcs = self._resolve_read(
            user_id, location, (first, nblocks) if hashes else None, crc32c)
        ftype, mtime = FileType(ftype), int(date)
        out: list[UploadFile] = []
        pos = offset
        for _ in range(count):
            end = min(pos + WINDOW, size)
            data = b""
            if pos < end:
                try:
                    data = _read_range(self.path / rel, chunk, pos, end - pos)
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
                _prefetch(self.path / rel, chunk, pos, min(WINDOW, size - pos))
        if not hashes:
            return out, []
        return out, _block_checks(blob, crcs, offset, min(size, pos))

    def get_file_hashes(self, user_id: int, location: FileLocation, offset: int,
                        windows: int = HASH_WINDOWS) -> list[FileHash]:
        """``upload.getFileHashes``: block hashes from the block holding ``offset`` through
        the end of that offset's 1 MiB window (fewer at the end; none past it).  With
        ``windows`` = N, through the end of the N-th window from there (one transaction for
        what N calls would answer; the server's ``windows=N`` extension).

        Raises OffsetInvalid (negative or not a multiple of 1 KiB), FileIdInvalid,
        FileReferenceExpired, InvalidArgument (``windows`` below 1).
        """
        blocks, _, first, end = self._window_blocks(user_id, location, offset, windows,
                                                    crc=False)
        return FileHash.unpack(blocks, first * HASH_BLOCK, end)

    def get_file_checksums(self, user_id: int, location: FileLocation, offset: int,
                           windows: int = HASH_WINDOWS) -> list[BlockCheck]:
        """The blocks ``get_file_hashes`` would answer, as CRC32C :class:`BlockChecksum` s
        when this document's blob has them (every blob stored since the store kept them),
        else as its SHA-256 hashes.

        Raises what ``get_file_hashes`` raises.
        """
        blocks, crcs, first, end = self._window_blocks(user_id, location, offset, windows,
                                                       crc=True)
        return _block_checks(blocks, crcs, first * HASH_BLOCK, end)

    def _window_blocks(self, uid: int, loc: FileLocation, offset: int, windows: int, *,
                       crc: bool) -> tuple[bytes, bytes | None, int, int]:
        """(block hashes, block CRC32Cs, first block, end byte) for getFileHashes and
        getFileChecksums."""
        if not isinstance(offset, int) or offset < 0 or offset % protocol.PRECISE_ALIGN:
            raise errors.OffsetInvalid(
                f"offset {offset} is not a non-negative multiple of {protocol.PRECISE_ALIGN}")
        if not isinstance(windows, int) or windows < 1:
            raise errors.InvalidArgument(f"windows must be a positive integer, not {windows!r}")
        first = offset // HASH_BLOCK
        last_end = (offset // WINDOW + windows) * WINDOW
        count = -(-last_end // HASH_BLOCK) - first
        size, *_, blocks, crcs = self._resolve_read(uid, loc, (first, count), crc)
        return blocks, crcs, first, min(size, last_end)

    def get_document_by_hash(self, user_id: int, sha256: str | bytes, size: int,
                             mime_type: str = "") -> Document | None:
        """This user's own document with that SHA-256 and size, or None.  ``mime_type`` is
        not compared (the content decides the type)."""
        if isinstance(sha256, bytes | bytearray):
            sha = bytes(sha256).hex()
        else:
            sha = str(sha256).strip().lower()
        with self._tx(write=False) as tx:
            row = tx.one(
                f"SELECT {_DOC_COLS} FROM documents WHERE user_id = ? AND sha256 = ? "
                "AND size = ? AND (expires_at IS NULL OR expires_at > ?) "
                "ORDER BY expires_at IS NOT NULL, id DESC LIMIT 1", user_id, sha, size, tx.now)
        return _doc_from_row(row) if row else None

    def get_document(self, user_id: int, location: FileLocation) -> Document:
        """The document at ``location``.  Raises FileIdInvalid, FileReferenceExpired."""
        self._resolve_read(user_id, location)
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_DOC_COLS} FROM documents WHERE id = ?", location.id)
        if row is None:
            raise errors.FileReferenceExpired(f"document {location.id} was deleted")
        return _doc_from_row(row)

    def blob_files(self, user_id: int, location: FileLocation) -> list[Path]:
        """The files holding a document's bytes, in order (for tests that corrupt content
        on disk, and for diagnostics).  Raises FileIdInvalid, FileReferenceExpired."""
        size, _, _, chunk, rel, *_ = self._resolve_read(user_id, location)
        count = max(1, -(-size // chunk))
        return [self.path / rel / str(i) for i in range(count)]

    # --- namespace ------------------------------------------------------------------------

    def _node_row(self, tx: _Tx, uid: int, node_id: int) -> tuple:
        row = tx.one(f"SELECT {_NODE_COLS} FROM nodes WHERE user_id = ? AND id = ?", uid, node_id)
        if row is None:
            raise errors.NotFound(f"no node {node_id}")
        return row

    def _child_row(self, tx: _Tx, uid: int, parent: int, name: str) -> tuple | None:
        return tx.one(f"SELECT {_NODE_COLS} FROM nodes WHERE user_id = ? AND parent = ? "
                      "AND name = ?", uid, parent, name)

    def _dir_row(self, tx: _Tx, uid: int, node_id: int) -> tuple:
        row = self._node_row(tx, uid, node_id)
        if row[3] != NodeKind.DIR.value:
            raise errors.NotADirectory(f"node {node_id} is not a folder")
        return row

    def _segments(self, tx: _Tx, uid: int, node_ids: list[int]) -> dict[int, list[Document]]:
        out: dict[int, list[Document]] = {}
        if not node_ids:
            return out
        for i in range(0, len(node_ids), 500):
            chunk = node_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in tx.q(
                f"SELECT s.node_id, d.id, d.access_hash, d.size, d.mime_type, d.sha256, d.md5, "
                f"d.date, d.file_type FROM segments s JOIN documents d ON d.id = s.doc_id "
                f"WHERE s.user_id = ? AND s.node_id IN ({marks}) ORDER BY s.node_id, s.idx",
                uid, *chunk,
            ):
                out.setdefault(r[0], []).append(_doc_from_row(r[1:]))
        return out

    def _make_node(self, row: tuple, segs: list[Document] | None = None) -> Node:
        return Node(
            id=row[0], parent=row[1], name=row[2], kind=NodeKind(row[3]), mode=row[4],
            size=row[5], mtime_ns=row[6], ctime_ns=row[7], version=row[8],
            segments=tuple(segs or ()), target=row[9],
        )

    def _node(self, tx: _Tx, uid: int, node_id: int) -> Node:
        row = self._node_row(tx, uid, node_id)
        segs = self._segments(tx, uid, [row[0]]) if row[3] == NodeKind.FILE.value else {}
        return self._make_node(row, segs.get(row[0]))

    def getattr(self, user_id: int, node_id: int) -> Node:
        """Raises NotFound."""
        with self._tx(write=False) as tx:
            return self._node(tx, user_id, node_id)

    def lookup(self, user_id: int, parent: int, name: str) -> Node:
        """Raises NotFound, NotADirectory."""
        with self._tx(write=False) as tx:
            self._dir_row(tx, user_id, parent)
            if not _name_ok(name):
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            row = self._child_row(tx, user_id, parent, name)
            if row is None:
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            segs = self._segments(tx, user_id, [row[0]]) if row[3] == NodeKind.FILE.value else {}
            return self._make_node(row, segs.get(row[0]))

    def list_folder(self, user_id: int, folder_id: int, after: str | None = None,
                    limit: int = 1000) -> Listing:
        """One page of a folder's entries in name order.  Raises NotFound, NotADirectory,
        InvalidArgument (limit not in 1..10000)."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise errors.InvalidArgument(f"limit {limit!r} is not in 1..{MAX_LIST_LIMIT}")
        with self._tx(write=False) as tx:
            self._dir_row(tx, user_id, folder_id)
            rows = tx.q(f"SELECT {_NODE_COLS} FROM nodes WHERE user_id = ? AND parent = ? "
                        "AND name > ? ORDER BY name LIMIT ?", user_id, folder_id, after or "",
                        limit + 1).fetchall()
            rows = [r for r in rows if r[0] != ROOT_ID]
            more = len(rows) > limit
            rows = rows[:limit]
            segs = self._segments(tx, user_id,
                                  [r[0] for r in rows if r[3] == NodeKind.FILE.value])
            entries = tuple(self._make_node(r, segs.get(r[0])) for r in rows)
        return Listing(entries=entries, next_after=rows[-1][2] if more and rows else None)

    def _new_node(self, tx: _Tx, uid: int, parent: int, name: str, kind: NodeKind, mode: int,
                  size: int, mtime_ns: int | None, target: str | None = None) -> int:
        node_id = tx.one("SELECT next_node_id FROM users WHERE id = ?", uid)[0]  # type: ignore[index]
        tx.q("UPDATE users SET next_node_id = ?, node_count = node_count + 1, "
             "used_bytes = used_bytes + ? WHERE id = ?", node_id + 1,
             size if kind is NodeKind.FILE else 0, uid)
        ns = int(tx.now * 1e9)
        tx.q(f"INSERT INTO nodes(user_id, {_NODE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
             uid, node_id, parent, name, kind.value, mode & 0o7777, size,
             ns if mtime_ns is None else int(mtime_ns), ns, 0, target)
        return int(node_id)

    def _touch_dir(self, tx: _Tx, uid: int, dir_id: int) -> None:
        ns = int(tx.now * 1e9)
        tx.q("UPDATE nodes SET mtime_ns = ?, ctime_ns = ? WHERE user_id = ? AND id = ?",
             ns, ns, uid, dir_id)

    def _delete_node(self, tx: _Tx, uid: int, row: tuple) -> None:
        """Delete a file, symlink or empty folder row and reclaim its content."""
        node_id, kind, size = row[0], row[3], row[5]
        docs = [r[0] for r in tx.q("SELECT doc_id FROM segments WHERE user_id = ? AND node_id = ?",
                                   uid, node_id)]
        tx.q("DELETE FROM segments WHERE user_id = ? AND node_id = ?", uid, node_id)
        tx.q("DELETE FROM nodes WHERE user_id = ? AND id = ?", uid, node_id)
        tx.q("UPDATE users SET node_count = node_count - 1, used_bytes = used_bytes - ? "
             "WHERE id = ?", size if kind == NodeKind.FILE.value else 0, uid)
        self._release_documents(tx, docs)

    def _documents_for(self, tx: _Tx, uid: int, segments: tuple[FileLocation, ...]
                       ) -> list[tuple[int, int]]:
        """(doc id, size) of each location; raises FileIdInvalid, FileReferenceExpired."""
        if not isinstance(segments, tuple | list):
            raise errors.InvalidArgument("segments must be a tuple of FileLocation")
        out = []
        for loc in segments:
            size = self._resolve(tx, uid, loc)[0]
            out.append((loc.id, size))
        return out

    def _set_segments(self, tx: _Tx, uid: int, node_id: int, docs: list[tuple[int, int]]) -> None:
        for idx, (doc_id, _) in enumerate(docs):
            tx.q("INSERT INTO segments(user_id, node_id, idx, doc_id) VALUES (?,?,?,?)",
                 uid, node_id, idx, doc_id)
            tx.q("UPDATE documents SET expires_at = NULL WHERE id = ?", doc_id)

    def _check_quota(self, tx: _Tx, uid: int, grow: int) -> None:
        if grow <= 0:
            return
        quota, _, used, _ = self._user(tx, uid)
        if quota and used + grow > quota:
            raise errors.QuotaExceeded(f"{used} + {grow} bytes exceeds the quota {quota}")

    def mkdir(self, user_id: int, parent: int, name: str, mode: int = 0o755) -> Node:
        """Raises AlreadyExists, NotFound, NotADirectory, InvalidName."""
        check_name(name)
        with self._tx() as tx:
            self._dir_row(tx, user_id, parent)
            if self._child_row(tx, user_id, parent, name):
                raise errors.AlreadyExists(f"{name!r} exists in folder {parent}")
            nid = self._new_node(tx, user_id, parent, name, NodeKind.DIR, mode, 0, None)
            self._touch_dir(tx, user_id, parent)
            return self._node(tx, user_id, nid)

    def create_file(self, user_id: int, parent: int, name: str,
                    segments: tuple[FileLocation, ...] = (), *, mode: int = 0o644,
                    mtime_ns: int | None = None, replace: bool = False) -> Node:
        """Create a file from documents; with ``replace`` an existing file (or symlink) of
        that name is replaced in the same transaction (the new file gets a new node id).

        Raises AlreadyExists, IsADirectory, NotFound, NotADirectory, InvalidName,
        FileIdInvalid, FileReferenceExpired, QuotaExceeded.
        """
        check_name(name)
        with self._tx() as tx:
            self._maybe_sweep(tx)
            self._dir_row(tx, user_id, parent)
            docs = self._documents_for(tx, user_id, tuple(segments))
            size = sum(s for _, s in docs)
            old = self._child_row(tx, user_id, parent, name)
            old_size = 0
            if old is not None:
                if old[3] == NodeKind.DIR.value:
                    raise errors.IsADirectory(f"{name!r} is a folder")
                if not replace:
                    raise errors.AlreadyExists(f"{name!r} exists in folder {parent}")
                old_size = old[5] if old[3] == NodeKind.FILE.value else 0
            self._check_quota(tx, user_id, size - old_size)
            if old is not None:
                self._delete_node(tx, user_id, old)
            nid = self._new_node(tx, user_id, parent, name, NodeKind.FILE, mode, size, mtime_ns)
            self._set_segments(tx, user_id, nid, docs)
            self._touch_dir(tx, user_id, parent)
            return self._node(tx, user_id, nid)

    def set_content(self, user_id: int, node_id: int, segments: tuple[FileLocation, ...], *,
                    mtime_ns: int | None = None) -> Node:
        """Atomically replace a file's content; bumps its version.

        Raises NotFound, IsADirectory, InvalidArgument (a symlink), FileIdInvalid,
        FileReferenceExpired, QuotaExceeded.
        """
        with self._tx() as tx:
            self._maybe_sweep(tx)
            row = self._node_row(tx, user_id, node_id)
            if row[3] == NodeKind.DIR.value:
                raise errors.IsADirectory(f"node {node_id} is a folder")
            if row[3] != NodeKind.FILE.value:
                raise errors.InvalidArgument(f"node {node_id} is not a regular file")
            docs = self._documents_for(tx, user_id, tuple(segments))
            size = sum(s for _, s in docs)
            self._check_quota(tx, user_id, size - row[5])
            old_docs = [r[0] for r in tx.q("SELECT doc_id FROM segments WHERE user_id = ? "
                                           "AND node_id = ?", user_id, node_id)]
            tx.q("DELETE FROM segments WHERE user_id = ? AND node_id = ?", user_id, node_id)
            self._set_segments(tx, user_id, node_id, docs)
            ns = int(tx.now * 1e9)
            tx.q("UPDATE nodes SET size = ?, mtime_ns = ?, ctime_ns = ?, version = version + 1 "
                 "WHERE user_id = ? AND id = ?", size, ns if mtime_ns is None else int(mtime_ns),
                 ns, user_id, node_id)
            tx.q("UPDATE users SET used_bytes = used_bytes + ? WHERE id = ?", size - row[5],
                 user_id)
            self._release_documents(tx, old_docs)
            self._hooks.reached(HookPoint.SET_CONTENT_BEFORE_COMMIT)
            tx.hook_after = HookPoint.SET_CONTENT_AFTER_COMMIT
            return self._node(tx, user_id, node_id)

    def symlink(self, user_id: int, parent: int, name: str, target: str) -> Node:
        """Raises AlreadyExists, NotFound, NotADirectory, InvalidName, InvalidArgument."""
        check_name(name)
        if not isinstance(target, str) or not target or "\0" in target:
            raise errors.InvalidArgument("a symlink target is a non-empty string without NUL")
        size = len(target.encode("utf-8", "surrogateescape"))
        if size > MAX_SYMLINK_BYTES:
            raise errors.InvalidArgument(f"symlink target of {size} bytes is too long")
        with self._tx() as tx:
            self._dir_row(tx, user_id, parent)
            if self._child_row(tx, user_id, parent, name):
                raise errors.AlreadyExists(f"{name!r} exists in folder {parent}")
            nid = self._new_node(tx, user_id, parent, name, NodeKind.SYMLINK, 0o777, size, None,
                                 target)
            self._touch_dir(tx, user_id, parent)
            return self._node(tx, user_id, nid)

    def setattr(self, user_id: int, node_id: int, *, mode: int | None = None,
                mtime_ns: int | None = None) -> Node:
        """Change permission bits or mtime.  Raises NotFound."""
        with self._tx() as tx:
            self._node_row(tx, user_id, node_id)
            ns = int(tx.now * 1e9)
            if mode is not None:
                tx.q("UPDATE nodes SET mode = ? WHERE user_id = ? AND id = ?",
                     int(mode) & 0o7777, user_id, node_id)
            if mtime_ns is not None:
                tx.q("UPDATE nodes SET mtime_ns = ? WHERE user_id = ? AND id = ?",
                     int(mtime_ns), user_id, node_id)
            tx.q("UPDATE nodes SET ctime_ns = ? WHERE user_id = ? AND id = ?", ns, user_id,
                 node_id)
            return self._node(tx, user_id, node_id)

    def rename(self, user_id: int, parent: int, name: str, new_parent: int, new_name: str, *,
               replace: bool = True) -> Node:
        """Move a node (a folder moves as one row change).  Over an existing file, or an
        empty folder for a folder, it replaces the target in the same transaction.

        Raises NotFound, NotADirectory, AlreadyExists (``replace=False``), NotEmpty,
        IsADirectory, InvalidArgument (a folder into its own subtree), InvalidName.
        """
        check_name(new_name)
        with self._tx() as tx:
            self._dir_row(tx, user_id, parent)
            self._dir_row(tx, user_id, new_parent)
            src = self._child_row(tx, user_id, parent, name) if _name_ok(name) else None
            if src is None:
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            src_is_dir = src[3] == NodeKind.DIR.value
            if src_is_dir:
                # Walk up from the destination: moving a folder below itself would cut the
                # subtree off the root.
                cur = new_parent
                for _ in range(1_000_000):
                    if cur == src[0]:
                        raise errors.InvalidArgument(f"cannot move folder {name!r} into itself")
                    if cur == ROOT_ID:
                        break
                    cur = self._node_row(tx, user_id, cur)[1]
            dst = self._child_row(tx, user_id, new_parent, new_name)
            if dst is not None and dst[0] == src[0]:
                return self._node(tx, user_id, src[0])
            if dst is not None:
                if not replace:
                    raise errors.AlreadyExists(f"{new_name!r} exists in folder {new_parent}")
                dst_is_dir = dst[3] == NodeKind.DIR.value
                if src_is_dir and not dst_is_dir:
                    raise errors.NotADirectory(f"{new_name!r} is not a folder")
                if not src_is_dir and dst_is_dir:
                    raise errors.IsADirectory(f"{new_name!r} is a folder")
                if dst_is_dir and tx.one("SELECT 1 FROM nodes WHERE user_id = ? AND parent = ? "
                                         "LIMIT 1", user_id, dst[0]):
                    raise errors.NotEmpty(f"folder {new_name!r} is not empty")
                self._delete_node(tx, user_id, dst)
            ns = int(tx.now * 1e9)
            tx.q("UPDATE nodes SET parent = ?, name = ?, ctime_ns = ? WHERE user_id = ? AND id = ?",
                 new_parent, new_name, ns, user_id, src[0])
            self._touch_dir(tx, user_id, parent)
            if new_parent != parent:
                self._touch_dir(tx, user_id, new_parent)
            self._hooks.reached(HookPoint.RENAME_BEFORE_COMMIT)
            tx.hook_after = HookPoint.RENAME_AFTER_COMMIT
            return self._node(tx, user_id, src[0])

    def unlink(self, user_id: int, parent: int, name: str) -> None:
        """Remove a file or symlink.  Raises NotFound, NotADirectory, IsADirectory."""
        with self._tx() as tx:
            self._dir_row(tx, user_id, parent)
            row = self._child_row(tx, user_id, parent, name) if _name_ok(name) else None
            if row is None:
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            if row[3] == NodeKind.DIR.value:
                raise errors.IsADirectory(f"{name!r} is a folder")
            self._delete_node(tx, user_id, row)
            self._touch_dir(tx, user_id, parent)

    def rmdir(self, user_id: int, parent: int, name: str) -> None:
        """Remove an empty folder.  Raises NotFound, NotEmpty, NotADirectory."""
        with self._tx() as tx:
            self._dir_row(tx, user_id, parent)
            row = self._child_row(tx, user_id, parent, name) if _name_ok(name) else None
            if row is None:
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            if row[3] != NodeKind.DIR.value:
                raise errors.NotADirectory(f"{name!r} is not a folder")
            if tx.one("SELECT 1 FROM nodes WHERE user_id = ? AND parent = ? LIMIT 1",
                      user_id, row[0]):
                raise errors.NotEmpty(f"folder {name!r} is not empty")
            self._delete_node(tx, user_id, row)
            self._touch_dir(tx, user_id, parent)


# --- file helpers -------------------------------------------------------------------------


def _db_error(exc: sqlite3.Error, path: Path) -> BaseException:
    """A domain error (or OSError) for an SQLite failure, so callers never see sqlite3's
    exceptions: a one-line message for the CLI, an errno for the filesystem."""
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        return errors.AlreadyExists(f"store constraint: {text}")
    low = text.lower()
    if "locked" in low or "busy" in low:
        return errors.StoreLocked(f"store {path} is busy: {text}")
    if "full" in low:
        return OSError(errno.ENOSPC, f"store {path}: {text}")
    if "not a database" in low or "malformed" in low:
        return errors.InvalidArgument(f"{path / 'meta.sqlite'} is not a usable store database: {text}")
    return errors.FsmountError(f"store {path}: database error: {text}")


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rmdir_quiet(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _read_file(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _sync_parts(updir: Path, count: int) -> None:
    """fdatasync the first ``count`` part files of an upload (the later ones were synced
    when they were saved)."""
    prefix = f"{updir}/"
    for i in range(count):
        fd = os.open(prefix + str(i), os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


def _read_into(path: Path, mv: memoryview) -> int | None:
    """Read a whole (small) file into ``mv``; its length, or None if it is missing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        n = 0
        while n < len(mv):
            got = os.readv(fd, [mv[n:]])
            if not got:
                break
            n += got
        return n
    finally:
        os.close(fd)


def _read_head(blob_dir: Path) -> bytes:
    with open(blob_dir / "0", "rb") as f:
        return f.read(64)


_read_buffers = threading.local()


def _block_checks(hashes: bytes, crcs: bytes | None, offset: int, end: int) -> list[BlockCheck]:
    """The checks of the blocks from ``offset`` up to byte ``end``: their CRC32Cs when the
    blob has them (``crcs`` not None), else their SHA-256 hashes."""
    if crcs is None:
        return list(FileHash.unpack(hashes, offset, end))
    return list(BlockChecksum.unpack(crcs, offset, end))


def _read_range(blob_dir: Path, chunk: int, offset: int, length: int) -> bytes:
    """Read ``length`` bytes at ``offset`` from a blob made of ``chunk``-sized files.

    The chunks are read into one reused per-thread buffer and copied out once: allocating
    fresh ``pread`` results and joining them costs several times more (page faults).
    """
    buf: bytearray | None = getattr(_read_buffers, "buf", None)
    if buf is None or len(buf) < length:
        buf = _read_buffers.buf = bytearray(max(length, WINDOW))
    mv = memoryview(buf)
    pos = offset
    end = offset + length
    filled = 0
    while pos < end:
        idx, within = divmod(pos, chunk)
        want = min(chunk - within, end - pos)
        fd = os.open(blob_dir / str(idx), os.O_RDONLY)
        try:
            got = os.preadv(fd, [mv[filled : filled + want]], within)
        finally:
            os.close(fd)
        filled += got
        pos += got
        if got < want:
            break
    return bytes(mv[:filled])


def _prefetch(blob_dir: Path, chunk: int, offset: int, length: int) -> None:
    """Ask the kernel to start reading a range a sequential reader will want next."""
    pos, end = offset, offset + length
    while pos < end:
        idx, within = divmod(pos, chunk)
        want = min(chunk - within, end - pos)
        try:
            fd = os.open(blob_dir / str(idx), os.O_RDONLY)
        except OSError:
            return
        try:
            os.posix_fadvise(fd, within, want, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
        pos += want
