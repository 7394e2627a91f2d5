"""The PostgreSQL metadata backend: the same schema and named queries as SQLite's, shared by
any number of store processes ("nodes") on any number of machines.

Selected by a metadata URL ``postgresql://USER@HOST:PORT/DB[?options=-csearch_path%3DSCHEMA]``
(:mod:`fsmount.store.meta_select`).  Credentials come from libpq's usual places -- the
``PGPASSWORD`` / ``PGPASSFILE`` / ``PGSERVICE`` environment, ``~/.pgpass``, or a
certificate -- never from the URL: a URL with a password is refused.  The store's tables
live in the connection's current schema (``search_path``), so one database may hold several
stores in schemas of their own.

Driver: psycopg 3, one connection per process used under the store lock
(:class:`fsmount.store.txn.TxRunner`), as SQLite's is; a broken connection (a PostgreSQL
restart) is reopened at the next transaction's start (also when its first statement is what
finds it dead), never retried inside one -- a call whose transaction was cut raises, and
the client's transport retries it.

Isolation across nodes (why not SERIALIZABLE)
---------------------------------------------
Every *write* transaction (``BEGIN ISOLATION LEVEL READ COMMITTED``) first takes one
session-level advisory lock of the store (:data:`WRITE_LOCK`, keyed by the schema); each of
its statements then sees every commit made before the lock was granted, and nothing else
commits meanwhile.  The lock is released only after the transaction's ``after_locked``
effects ran (:meth:`PgMeta.release`).  So write transactions of all nodes run one at a time, exactly as
SQLite's ``BEGIN IMMEDIATE`` makes them run in one machine, and the store's logic -- written
as read-check-write sequences inside one transaction -- stays correct unchanged:

* no lost update, no write skew: renames, replaces, deletes, quotas and link counts are
  checked and changed with no other writer in between;
* numbering needs no sequences: node ids (``users.next_node_id``), document ids and the
  change log's cursor (rows of ``meta``) are counters incremented under the lock, so the
  change log's cursors are given *in commit order* -- a reader that saw cursor N never
  later finds a change below N committing (sequences would hand out numbers in call
  order, and a long poll could skip a change that commits late);
* effects after the commit that must not interleave with another node's transaction
  (deleting an expired part's object before a re-sent part is placed under the same key)
  run while the lock is still held, as they do under the process lock with SQLite.

SERIALIZABLE with retries was the alternative: it would let writers of different users run
in parallel, but every ``with txn.run()`` block would have to become a re-runnable
function (the store's blocks do side effects such as placing a part object), and the change
cursor would need the ordering above anyway.  Measured (docs/performance.md,
``scripts/bench_store.py --metadata``): with 8 callers over two nodes the lock costs 8-13%
of the metadata write rate, because metadata transactions are short (a few milliseconds;
content transfers happen outside them, except the object operations below).

What the lock holds: a transaction's statements, and the object-store operations the
store does inside its transactions -- a part's PUT (placing it with its row) and a
finalize's server-side copies (promoting the parts to a blob).  With S3 content those are
tens of milliseconds each, so saving parts and finalizing through several nodes does not
add up to more than one node's rate (docs/performance.md); moving them before the
transaction needs part objects under keys of their own (a version in the part's row), the
next step for write throughput.

*Read* transactions take no lock: ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`` (one
consistent snapshot, as SQLite's deferred ``BEGIN``).

Waits are bounded: ``lock_timeout`` (:data:`LOCK_TIMEOUT_MS`) turns a lock held too long
into StoreLocked, as SQLite's busy timeout does.

Other nodes' commits: a transaction that logged a change sends ``NOTIFY`` (channel
:data:`CHANNEL`, payload the schema) with its commit; :meth:`PgMeta.watch_changes` runs a
listening connection in a thread that wakes the change feed's long polls
(:mod:`fsmount.store.changes`) of this process.

``opened`` lock: every open store holds a shared advisory lock (:data:`OPEN_LOCK`); an opener
that gets it exclusively has the store to itself across all nodes and may sweep orphaned
content (:meth:`PgMeta.take_alone`), the cross-node form of ``gc.lock``.

Errors: psycopg's exceptions never leave the store -- :meth:`PgMeta.domain_error` maps them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import errors
from ..remote import Document
from .meta import MetaTx
from .rows import ChangeRecord, PartRow, ReadableDocument, Tombstone, UploadKey, UserEntry
from .sqlite_meta import _FILE_TYPES, SqliteTx

__all__ = ["CHANNEL", "PgMeta", "PgTx", "check_pg_url"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users(
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    quota_bytes BIGINT NOT NULL DEFAULT 0,
    premium INTEGER NOT NULL DEFAULT 0,
    next_node_id BIGINT NOT NULL DEFAULT 2,
    used_bytes BIGINT NOT NULL DEFAULT 0,
    node_count BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS nodes(
    user_id BIGINT NOT NULL,
    id BIGINT NOT NULL,
    parent BIGINT NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL,
    mode BIGINT NOT NULL,
    size BIGINT NOT NULL DEFAULT 0,
    mtime_ns BIGINT NOT NULL,
    ctime_ns BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0,
    target TEXT,
    sha256 TEXT,
    uid BIGINT,
    gid BIGINT,
    rdev BIGINT NOT NULL DEFAULT 0,
    atime_ns BIGINT,
    nlink BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY(user_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS nodes_by_name ON nodes(user_id, parent, name);
CREATE TABLE IF NOT EXISTS node_names(
    user_id BIGINT NOT NULL,
    parent BIGINT NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    node_id BIGINT NOT NULL,
    PRIMARY KEY(user_id, parent, name)
);
CREATE INDEX IF NOT EXISTS node_names_by_node ON node_names(user_id, node_id);
CREATE TABLE IF NOT EXISTS xattrs(
    user_id BIGINT NOT NULL,
    node_id BIGINT NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY(user_id, node_id, name)
);
CREATE TABLE IF NOT EXISTS segments(
    user_id BIGINT NOT NULL,
    node_id BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    doc_id BIGINT NOT NULL,
    PRIMARY KEY(user_id, node_id, idx)
);
CREATE INDEX IF NOT EXISTS segments_by_doc ON segments(doc_id);
CREATE TABLE IF NOT EXISTS blobs(
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    chunk_size BIGINT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    block_hashes BYTEA NOT NULL,
    block_crc32c BYTEA
);
CREATE TABLE IF NOT EXISTS documents(
    id BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    access_hash BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    mime_type TEXT NOT NULL,
    md5 TEXT NOT NULL,
    date DOUBLE PRECISION NOT NULL,
    file_type TEXT NOT NULL,
    expires_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS documents_by_user_hash ON documents(user_id, sha256, size);
CREATE INDEX IF NOT EXISTS documents_by_blob ON documents(sha256);
CREATE INDEX IF NOT EXISTS documents_by_expiry ON documents(expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS doc_tombstones(
    id BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    access_hash BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads(
    user_id BIGINT NOT NULL,
    file_id BIGINT NOT NULL,
    total_parts BIGINT,
    PRIMARY KEY(user_id, file_id)
);
CREATE TABLE IF NOT EXISTS parts(
    user_id BIGINT NOT NULL,
    file_id BIGINT NOT NULL,
    part BIGINT NOT NULL,
    size BIGINT NOT NULL,
    saved_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY(user_id, file_id, part)
);
CREATE INDEX IF NOT EXISTS parts_by_age ON parts(saved_at);
CREATE TABLE IF NOT EXISTS changes(
    seq BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    node_id BIGINT NOT NULL,
    parent BIGINT NOT NULL,
    name TEXT NOT NULL,
    at_ns BIGINT NOT NULL,
    old_parent BIGINT,
    old_name TEXT
);
CREATE INDEX IF NOT EXISTS changes_by_user ON changes(user_id, seq);
CREATE TABLE IF NOT EXISTS change_floors(
    user_id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL
);
"""
#: The SQLite schema's version this one matches (the same tables and columns).
SCHEMA_VERSION = 3

#: The NOTIFY channel of change-logging commits (payload: the store's schema).
CHANNEL = "fsmount_changes"
#: Milliseconds a transaction waits for the write lock before StoreLocked: longer than the
#: longest transaction holds it (a finalize's server-side copies of a 1 GiB upload, about
#: 30 s on the tests' Swift; see "What the lock holds" above).
LOCK_TIMEOUT_MS = 60_000
#: Seconds a long poll waits between its own looks at the log when LISTEN works (the
#: notifications wake it at once; this only covers a listener that is reconnecting).
LISTEN_POLL = 0.5
#: Seconds between attempts to reopen a broken listening connection.
LISTEN_RETRY = 0.5
#: Connection attempts give up after this many seconds.
CONNECT_TIMEOUT = 10
#: TCP keepalives, so that a database lost without a reset (a partition, a host gone) fails
#: the call in about a minute instead of the system's two hours (a URL may set its own).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3}
#: Names of the two advisory locks (hashed with the schema into 64-bit keys).
WRITE_LOCK = "write"
OPEN_LOCK = "opened"

_sql_cache: dict[str, str] = {}


def _pg(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (the statements hold no ``%``)."""
    out = _sql_cache.get(sql)
    if out is None:
        out = _sql_cache[sql] = sql.replace("?", "%s")
    return out


def check_pg_url(url: str) -> str:
    """The metadata URL, checked: ``postgresql://`` (or ``postgres://``) without a password.

    Raises:
        InvalidArgument: another scheme, or a password in the URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise errors.InvalidArgument(f"metadata URL {url!r} is not postgresql://...")
    if parts.password is not None or "password=" in parts.query:
        raise errors.InvalidArgument(
            "put the PostgreSQL password in the environment (PGPASSWORD, PGPASSFILE, "
            "~/.pgpass or PGSERVICE), not in the metadata URL")
    return url


def _lock_key(schema: str, name: str) -> int:
    """A signed 64-bit advisory lock key for ``name`` of the store in ``schema``."""
    digest = hashlib.sha256(f"fsmount:{schema}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass
class PgTx(SqliteTx):
    """One open PostgreSQL transaction.

    SQLite's portable statements are reused as they are (``?`` becomes ``%s``); the queries
    that differ -- ``INSERT OR REPLACE``, ``lastrowid``, ``sqlite_sequence``, blob slicing,
    counters -- are overridden here.  ``db`` is a psycopg connection.
    """

    write: bool = field(default=False, kw_only=True)
    #: The store-wide advisory write lock is held (released once, by PgMeta).
    locked: bool = field(default=False, kw_only=True)
    #: A change was logged: the commit sends a NOTIFY.
    notify: bool = field(default=False, kw_only=True)
    #: The write transaction's id (``txid_current()``): a commit whose answer was lost is
    #: looked up by it.
    xid: int | None = field(default=None, kw_only=True)

    def _q(self, sql: str, *args: object) -> Any:
        return self.db.execute(_pg(sql), args)

    def _one(self, sql: str, *args: object) -> tuple | None:
        return self.db.execute(_pg(sql), args).fetchone()

    # --- users ----------------------------------------------------------------------------

    def insert_user(self, name: str, quota_bytes: int, premium: bool) -> int:
        row = self._one("INSERT INTO users(name, quota_bytes, premium) VALUES (?, ?, ?) "
                        "RETURNING id", name, int(quota_bytes), int(bool(premium)))
        assert row is not None
        return int(row[0])

    def reserve_node_ids(self, user_id: int, count: int) -> int:
        row = self._one("UPDATE users SET next_node_id = next_node_id + ? WHERE id = ? "
                        "RETURNING next_node_id - ?", count, user_id, count)
        assert row is not None, "reserve_node_ids of a user that does not exist"
        return int(row[0])

    # --- extended attributes --------------------------------------------------------------

    def xattr_bytes(self, user_id: int, node_id: int, *, without: str = "") -> int:
        row = self._one("SELECT coalesce(sum(octet_length(name) + length(value)), 0) "
                        "FROM xattrs WHERE user_id = ? AND node_id = ? AND name != ?",
                        user_id, node_id, without)
        return int(row[0]) if row else 0

    def put_xattr(self, user_id: int, node_id: int, name: str, value: bytes) -> None:
        self._q("INSERT INTO xattrs(user_id, node_id, name, value) VALUES (?,?,?,?) "
                "ON CONFLICT(user_id, node_id, name) DO UPDATE SET value = excluded.value",
                user_id, node_id, name, bytes(value))

    # --- documents ------------------------------------------------------------------------

    def next_document_id(self) -> int:
        row = self._one("UPDATE meta SET value = value + 1 WHERE key = 'next_doc_id' "
                        "RETURNING value - 1")
        assert row is not None, "the schema initializes next_doc_id"
        return int(row[0])

    def insert_document(self, doc: Document, user_id: int, expires_at: float | None) -> None:
        self._q("INSERT INTO documents(id, access_hash, size, mime_type, sha256, md5, date, "
                "file_type, user_id, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)", doc.id,
                doc.access_hash, doc.size, doc.mime_type, doc.sha256, doc.md5,
                float(doc.date), doc.file_type.value, user_id,
                None if expires_at is None else float(expires_at))

    def delete_document(self, doc_id: int, tombstone: Tombstone) -> None:
        self._q("DELETE FROM documents WHERE id = ?", doc_id)
        self._q("INSERT INTO doc_tombstones(id, user_id, access_hash) VALUES (?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET user_id = excluded.user_id, "
                "access_hash = excluded.access_hash",
                doc_id, tombstone.user_id, tombstone.access_hash)

    def readable_document(self, doc_id: int, blocks: tuple[int, int] | None = None,
                          crc: bool = False) -> ReadableDocument | None:
        # Only the requested slice of the block hashes leaves the database.
        if blocks is None:
            hashes_sql, hashes_args = "'\\x'::bytea, NULL::bytea", ()
        else:
            hashes_sql = "substring(b.block_hashes from ? for ?), NULL::bytea"
            hashes_args: tuple[int, ...] = (blocks[0] * 32 + 1, blocks[1] * 32)
            if crc:
                hashes_sql = ("substring(b.block_hashes from ? for ?), "
                              "substring(b.block_crc32c from ? for ?)")
                hashes_args += (blocks[0] * 4 + 1, blocks[1] * 4)
        row = self._one(
            "SELECT d.user_id, d.access_hash, d.size, d.file_type, d.date, d.expires_at, "
            f"b.chunk_size, b.path, {hashes_sql} FROM documents d JOIN blobs b "
            "ON b.sha256 = d.sha256 WHERE d.id = ?", *hashes_args, doc_id)
        if row is None:
            return None
        return ReadableDocument(row[0], row[1], row[2], _FILE_TYPES[row[3]], row[4], row[5],
                                row[6], row[7], row[8], row[9])

    # --- uploads and parts ----------------------------------------------------------------

    def ensure_upload(self, up: UploadKey, total_parts: int | None) -> None:
        if total_parts is not None:
            self._q("INSERT INTO uploads(user_id, file_id, total_parts) VALUES (?,?,?) "
                    "ON CONFLICT(user_id, file_id) DO UPDATE SET total_parts = "
                    "excluded.total_parts", up.user_id, up.file_id, total_parts)
        else:
            self._q("INSERT INTO uploads(user_id, file_id, total_parts) VALUES (?,?,NULL) "
                    "ON CONFLICT DO NOTHING", up.user_id, up.file_id)

    def put_part(self, up: UploadKey, part: PartRow) -> None:
        self._q("INSERT INTO parts(user_id, file_id, part, size, saved_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(user_id, file_id, part) DO UPDATE SET size = excluded.size, "
                "saved_at = excluded.saved_at", up.user_id, up.file_id, part.part, part.size,
                float(part.saved_at))

    # --- a whole store at once (fsmount.store.copy) ----------------------------------------

    def put_user_entry(self, entry: UserEntry) -> None:
        self._q("INSERT INTO users(id, name, quota_bytes, premium, next_node_id, used_bytes, "
                "node_count) VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                "name = excluded.name, quota_bytes = excluded.quota_bytes, "
                "premium = excluded.premium, "
                "next_node_id = GREATEST(users.next_node_id, excluded.next_node_id), "
                "used_bytes = excluded.used_bytes, node_count = excluded.node_count",
                entry.id, entry.name, int(entry.quota_bytes), int(bool(entry.premium)),
                entry.next_node_id, entry.used_bytes, entry.node_count)
        # Users inserted with their ids: new users are numbered above them.
        self._q("SELECT setval(pg_get_serial_sequence('users', 'id'), "
                "GREATEST((SELECT max(id) FROM users), 1))")

    def restart_numbering(self, next_document_id: int, change_cursor: int) -> None:
        self._q("UPDATE meta SET value = GREATEST(value, ?) WHERE key = 'next_doc_id'",
                next_document_id)
        cursor = max(self.change_cursor(), change_cursor)
        self._q("UPDATE meta SET value = ? WHERE key = 'change_seq'", cursor)
        self._q("INSERT INTO change_floors(user_id, seq) SELECT id, ? FROM users "
                "ON CONFLICT(user_id) DO UPDATE SET "
                "seq = GREATEST(change_floors.seq, excluded.seq)", cursor)

    # --- the change log -------------------------------------------------------------------

    def log_change(self, user_id: int, change: ChangeRecord) -> int:
        # A counter row under the write lock: cursors in commit order (module docstring).
        row = self._one("UPDATE meta SET value = value + 1 WHERE key = 'change_seq' "
                        "RETURNING value")
        assert row is not None, "the schema initializes change_seq"
        seq = int(row[0])
        self._q("INSERT INTO changes(seq, user_id, kind, node_id, parent, name, at_ns, "
                "old_parent, old_name) VALUES (?,?,?,?,?,?,?,?,?)", seq, user_id,
                change.kind.value, change.node_id, change.parent, change.name,
                change.at_ns, change.old_parent, change.old_name)
        self.notify = True
        return seq

    def change_cursor(self) -> int:
        row = self._one("SELECT value FROM meta WHERE key = 'change_seq'")
        return int(row[0]) if row else 0

    def prune_changes(self, user_id: int, keep: int) -> None:
        row = self._one("SELECT seq FROM changes WHERE user_id = ? ORDER BY seq DESC "
                        "LIMIT 1 OFFSET ?", user_id, keep)
        if row is None:
            return
        self._q("DELETE FROM changes WHERE user_id = ? AND seq <= ?", user_id, row[0])
        self._q("INSERT INTO change_floors(user_id, seq) VALUES (?, ?) ON CONFLICT(user_id) "
                "DO UPDATE SET seq = GREATEST(change_floors.seq, excluded.seq)",
                user_id, row[0])


class PgMeta:
    """The metadata of a store in a PostgreSQL database (see the module docstring).

    Raises (at open): InvalidArgument (a bad URL; the schema named by ``search_path`` does
    not exist), FsmountError (the database cannot be reached).
    """

    def __init__(self, url: str) -> None:
        self.url = check_pg_url(url)
        self._lock = threading.Lock()  # the connection's own (listener start, close)
        self._conn: Any = None
        self._listener: threading.Thread | None = None
        self._listen_stop = threading.Event()
        self._listen_conn: Any = None
        self._closed = False
        self.schema = ""
        self._write_key = 0
        self._open_key = 0
        self._conn = self._connect()

    # --- connections ----------------------------------------------------------------------

    def _connect(self) -> Any:
        """A new connection with the session settings, holding the shared ``opened`` lock.

        Raises InvalidArgument, FsmountError (what domain_error maps psycopg's errors to).
        """
        import psycopg

        try:
            conn = psycopg.connect(self.url, autocommit=True, **self._options())
        except psycopg.Error as exc:
            raise self._mapped(exc) from exc
        try:
            row = conn.execute("SELECT current_schema()").fetchone()
            if row is None or row[0] is None:
                raise errors.InvalidArgument(
                    f"{self._safe_url()}: no schema of search_path exists (create it first)")
            if not self.schema:
                self.schema = str(row[0])
                self._write_key = _lock_key(self.schema, WRITE_LOCK)
                self._open_key = _lock_key(self.schema, OPEN_LOCK)
            conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            conn.execute("SELECT pg_advisory_lock_shared(%s)", (self._open_key,))
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                raise self._mapped(exc) from exc
            raise
        return conn

    def _connection(self) -> Any:
        """The connection, reopened if it broke (a PostgreSQL restart)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
            self._conn = None
            self._conn = conn = self._connect()
        return conn

    def _options(self) -> dict[str, int]:
        """Connection options the URL does not set itself."""
        opts: dict[str, int] = {"connect_timeout": CONNECT_TIMEOUT, **KEEPALIVES}
        return {k: v for k, v in opts.items() if f"{k}=" not in self.url}

    def _safe_url(self) -> str:
        return self.url.split("?", 1)[0]

    def _mapped(self, exc: BaseException) -> BaseException:
        mapped = self.domain_error(exc)
        return mapped if mapped is not None else exc

    def close(self) -> None:
        self._closed = True
        self._listen_stop.set()
        listener = self._listener
        with self._lock:
            lconn = self._listen_conn
        if lconn is not None and self._conn is not None:
            # Wake the listener out of its wait at once (any payload but the schema).
            try:
                self._conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "closing"))
            except Exception:
                pass
        if listener is not None:
            listener.join(timeout=5.0)
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    # --- transactions ---------------------------------------------------------------------

    def begin(self, now: float, *, write: bool) -> PgTx:
        """Start a transaction; a write one holds the store's write lock first.

        A connection found dead by the transaction's first statement (it died while idle:
        a PostgreSQL restart) is reopened once -- nothing of the transaction has run yet.
        """
        import psycopg

        try:
            return self._begin(self._connection(), now, write)
        except psycopg.OperationalError:
            if self._conn is None or not self._conn.broken:
                raise
        return self._begin(self._connection(), now, write)

    def _begin(self, conn: Any, now: float, write: bool) -> PgTx:
        try:
            if write:
                # READ COMMITTED: each statement sees every commit made before it, and with
                # the lock held no other writer commits meanwhile (a REPEATABLE READ snapshot
                # would be taken when the lock's statement starts, before the wait).  One
                # round trip; a session-level lock outlives the transaction (release()).
                cur = conn.execute(f"BEGIN ISOLATION LEVEL READ COMMITTED; "
                                   f"SELECT pg_advisory_lock({self._write_key}); "
                                   "SELECT txid_current()")
                cur.nextset()
                cur.nextset()
                row = cur.fetchone()
                return PgTx(now, db=conn, write=True, locked=True,
                            xid=int(row[0]) if row else None)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return PgTx(now, db=conn)
        except BaseException:
            # The lock's wait timed out (or the statement failed): end the aborted
            # transaction, so that the connection serves the next call.
            if not conn.closed and not conn.broken:
                try:
                    conn.execute("ROLLBACK")
                except Exception:
                    pass
            raise

    def commit(self, tx: MetaTx) -> None:
        """Commit; a commit whose answer was lost with the connection is looked up by its
        transaction id on a new connection: committed is success, aborted raises, unknown
        raises without the ``on_rollback`` effects (they would undo a commit)."""
        import psycopg

        assert isinstance(tx, PgTx), "a transaction of another backend"
        try:
            if tx.notify:
                payload = self.schema.replace("'", "''")
                tx.db.execute(f"NOTIFY {CHANNEL}, '{payload}'; COMMIT")
            else:
                tx.db.execute("COMMIT")
        except psycopg.OperationalError:
            if tx.xid is None or not (tx.db.broken or tx.db.closed):
                raise
            tx.locked = False  # the lock went with the connection
            outcome = self._outcome(tx.xid)
            if outcome == "committed":
                return
            if outcome != "aborted":
                tx.on_rollback.clear()
            raise

    def _outcome(self, xid: int) -> str | None:
        """``committed``, ``aborted`` or ``in progress`` for a transaction id; None when
        the database cannot be asked (never raises)."""
        try:
            row = self._connection().execute("SELECT txid_status(%s)", (xid,)).fetchone()
        except Exception:
            return None
        return str(row[0]) if row and row[0] is not None else None

    def rollback(self, tx: MetaTx) -> None:
        """Roll back if a transaction is open; never raises (:meth:`release` follows)."""
        conn = self._conn
        try:
            if conn is not None and not conn.closed and not conn.broken:
                from psycopg.pq import TransactionStatus

                if conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
        except Exception:
            pass

    def release(self, tx: MetaTx) -> None:
        """Release the write lock (after the ``after_locked`` effects); never raises."""
        if not isinstance(tx, PgTx) or not tx.locked:
            return
        tx.locked = False
        conn = self._conn
        try:
            if conn is not None and not conn.closed and not conn.broken:
                conn.execute(f"SELECT pg_advisory_unlock({self._write_key})")
        except Exception:
            # A connection that cannot unlock is useless: close it (the lock goes with it).
            try:
                conn.close()
            except Exception:
                pass

    def make_durable(self) -> None:
        """Nothing to do: a PostgreSQL commit is durable when it returns."""

    def init_schema(self, tx: MetaTx) -> None:
        assert isinstance(tx, PgTx), "a transaction of another backend"
        tx.db.execute(SCHEMA)
        for key, value in (("schema_version", SCHEMA_VERSION), ("next_doc_id", 1),
                           ("change_seq", 0)):
            tx.db.execute("INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                          (key, value))

    # --- what several nodes share ---------------------------------------------------------

    @contextlib.contextmanager
    def _write_locked(self) -> Iterator[Any]:
        """A connection holding the store's write lock (released after), outside any
        transaction; the backend's errors leave as domain errors."""
        conn = self._connection()
        conn.execute(f"SELECT pg_advisory_lock({self._write_key})")
        try:
            yield conn
        except BaseException as exc:
            mapped = self.domain_error(exc)
            if mapped is not None:
                raise mapped from exc
            raise
        finally:
            try:
                conn.execute(f"SELECT pg_advisory_unlock({self._write_key})")
            except Exception:
                pass

    def shared_setting(self, name: str, value: str) -> str:
        """The store-wide setting ``name``, recorded as ``value`` by the first node that
        asks (every node then agrees on it).  Raises what a transaction raises."""
        with self._write_locked() as conn:
            conn.execute("INSERT INTO settings(key, value) VALUES (%s, %s) "
                         "ON CONFLICT DO NOTHING", (name, value))
            row = conn.execute("SELECT value FROM settings WHERE key = %s", (name,)).fetchone()
        return str(row[0]) if row else value

    def put_shared_setting(self, name: str, value: str) -> bool:
        """Set the store-wide setting ``name`` (under the write lock).  Raises what a
        transaction raises."""
        with self._write_locked() as conn:
            conn.execute("INSERT INTO settings(key, value) VALUES (%s, %s) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value", (name, value))
        return True

    def take_alone(self) -> bool:
        """Whether this opener has the store to itself across all nodes (the exclusive
        ``opened`` lock, held until :meth:`share_alone`)."""
        conn = self._connection()
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._open_key,)).fetchone()
        return bool(row and row[0])

    def share_alone(self) -> None:
        """Drop the exclusive ``opened`` lock (the shared one stays)."""
        conn = self._connection()
        conn.execute("SELECT pg_advisory_unlock(%s)", (self._open_key,))

    def watch_changes(self, wake: Callable[[], None]) -> float:
        """Call ``wake`` (from a thread of this backend) whenever any node commits a
        change of this store; returns how often a long poll should still look itself."""
        with self._lock:
            if self._listener is None:
                self._listener = threading.Thread(target=self._listen, args=(wake,),
                                                  name="fsmount-pg-listen", daemon=True)
                self._listener.start()
        return LISTEN_POLL

    def _listen(self, wake: Callable[[], None]) -> None:
        """LISTEN on :data:`CHANNEL` until closed, reconnecting (bounded waits) on errors."""
        import psycopg

        while not self._listen_stop.is_set():
            try:
                conn = psycopg.connect(self.url, autocommit=True, **self._options())
            except psycopg.Error:
                self._listen_stop.wait(LISTEN_RETRY)
                continue
            with self._lock:
                self._listen_conn = conn
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                wake()  # anything committed while not listening
                while not self._listen_stop.is_set():
                    for note in conn.notifies(timeout=1.0):
                        if self._listen_stop.is_set():
                            break
                        if note.payload == self.schema:
                            wake()
            except psycopg.Error:
                self._listen_stop.wait(LISTEN_RETRY)
            finally:
                with self._lock:
                    self._listen_conn = None
                try:
                    conn.close()
                except Exception:
                    pass

    # --- errors ---------------------------------------------------------------------------

    def domain_error(self, exc: BaseException) -> BaseException | None:
        """A domain error (or OSError) for a psycopg failure, None for any other exception."""
        try:
            import psycopg
            from psycopg import errors as pge
        except ImportError:  # pragma: no cover - the backend is only built with psycopg
            return None
        if not isinstance(exc, psycopg.Error):
            return None
        where = self._safe_url()
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, psycopg.IntegrityError):
            return errors.AlreadyExists(f"store constraint: {text}")
        if isinstance(exc, pge.LockNotAvailable | pge.DeadlockDetected |
                      pge.SerializationFailure | pge.QueryCanceled):
            return errors.StoreLocked(f"store {where} is busy: {text}")
        if isinstance(exc, pge.DiskFull):
            return OSError(errno.ENOSPC, f"store {where}: {text}")
        if isinstance(exc, pge.InvalidCatalogName | pge.InvalidAuthorizationSpecification |
                      pge.InvalidPassword):
            return errors.InvalidArgument(f"metadata database {where}: {text}")
        if isinstance(exc, psycopg.OperationalError):
            return errors.FsmountError(f"metadata database {where} unavailable: {text}")
        return errors.FsmountError(f"store {where}: database error: {text}")

