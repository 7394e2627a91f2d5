"""The SQLite metadata backend: ``DIR/meta.sqlite`` in WAL mode (the store's only one so far).

Every statement of SQL the store runs lives in this module; :class:`SqliteTx` answers the
named queries of :class:`fsmount.store.meta.MetaTx` with the rows of
:mod:`fsmount.store.rows`.  The schema is byte-compatible with the stores written before
the package was split (version 2: the blocks' CRC32Cs); version 3 adds the change log
(tables ``changes`` and ``change_floors``) and POSIX (ownership, device numbers, atime, hard
links as extra names, extended attributes), all created on open of an older store.

Durability: commits run with ``synchronous=NORMAL`` -- atomic, and surviving a killed
process; :meth:`SqliteMeta.make_durable` (a WAL checkpoint) is what the store runs before
it deletes blob files, so that a power cut never leaves a reference to a deleted blob.
SQLite's exceptions never leave the store: :meth:`SqliteMeta.domain_error` maps them to the
named errors of :mod:`fsmount.errors`.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import errors
from ..protocol import FileType
from ..remote import Change, ChangeKind, Document, NodeKind
from .meta import MetaTx, TxEffects
from .rows import (
    BlobRow,
    ChangeRecord,
    DocumentLife,
    DocumentRef,
    NameRow,
    NodeRow,
    PartKey,
    PartRow,
    ReadableDocument,
    SavedPart,
    Tombstone,
    UploadKey,
    UploadRow,
    UserEntry,
    UserRow,
)

__all__ = ["DB_NAME", "SqliteMeta", "SqliteTx"]

DB_NAME = "meta.sqlite"
#: Seconds between a long poll's looks at the log for other processes' commits (``fsmount
#: put`` on a served store directory).
OTHER_WRITERS_POLL = 0.05

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
    sha256 TEXT,
    uid INTEGER,
    gid INTEGER,
    rdev INTEGER NOT NULL DEFAULT 0,
    atime_ns INTEGER,
    nlink INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY(user_id, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS nodes_by_name ON nodes(user_id, parent, name);
CREATE TABLE IF NOT EXISTS node_names(
    user_id INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    name TEXT NOT NULL,
    node_id INTEGER NOT NULL,
    PRIMARY KEY(user_id, parent, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS node_names_by_node ON node_names(user_id, node_id);
CREATE TABLE IF NOT EXISTS xattrs(
    user_id INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY(user_id, node_id, name)
) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS changes(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    node_id INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    name TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    old_parent INTEGER,
    old_name TEXT
);
CREATE INDEX IF NOT EXISTS changes_by_user ON changes(user_id, seq);
CREATE TABLE IF NOT EXISTS change_floors(
    user_id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL
);
"""
#: 2: the blocks' CRC32Cs; 3: the change log (``changes``, ``change_floors``) and POSIX
#: (owners, rdev, atime, nlink, ``node_names``, ``xattrs``).
SCHEMA_VERSION = 3

_NODE_COLS = ("id, parent, name, kind, mode, size, mtime_ns, ctime_ns, version, target, "
              "sha256, uid, gid, rdev, atime_ns, nlink")
#: The same columns of a node reached by an extra name ``l`` (node_names) joined to ``n``.
_LINKED_COLS = ("n.id, l.parent, l.name, n.kind, n.mode, n.size, n.mtime_ns, n.ctime_ns, "
                "n.version, n.target, n.sha256, n.uid, n.gid, n.rdev, n.atime_ns, n.nlink")
#: Version 3 (POSIX): the node columns added to a version-2 store's nodes table.
_V3_NODE_COLUMNS = {"uid": "INTEGER", "gid": "INTEGER", "rdev": "INTEGER NOT NULL DEFAULT 0",
                    "atime_ns": "INTEGER", "nlink": "INTEGER NOT NULL DEFAULT 1"}
_DOC_COLS = "id, access_hash, size, mime_type, sha256, md5, date, file_type"
#: Node ids are looked up in batches of this many (SQLite's bound-parameter limit).
_IN_BATCH = 500


# Rows are built for every entry of a listing: the enums are looked up in dicts and the
# NamedTuple is made with tuple.__new__ (a third of the cost of calling NodeKind() and
# NodeRow() with ten arguments).
_KINDS = {k.value: k for k in NodeKind}
_CHANGE_KINDS = {k.value: k for k in ChangeKind}
_FILE_TYPES = {t.value: t for t in FileType}
_new_tuple = tuple.__new__


def _node(r: tuple) -> NodeRow:
    (node_id, parent, name, kind, mode, size, mtime_ns, ctime_ns, version, target, sha, uid,
     gid, rdev, atime_ns, nlink) = r
    return _new_tuple(NodeRow, (node_id, parent, name, _KINDS[kind], mode, size, mtime_ns,
                                ctime_ns, version, target, sha, uid, gid, rdev, atime_ns,
                                nlink))


def _doc(r: tuple) -> Document:
    return Document(id=r[0], access_hash=r[1], size=r[2], mime_type=r[3], sha256=r[4],
                    md5=r[5], date=r[6], file_type=_FILE_TYPES[r[7]])


@dataclass
class SqliteTx(TxEffects):
    """One open SQLite transaction: the named queries of :class:`~fsmount.store.meta.MetaTx`."""

    db: sqlite3.Connection = field(kw_only=True)

    def _q(self, sql: str, *args: object) -> sqlite3.Cursor:
        return self.db.execute(sql, args)

    def _one(self, sql: str, *args: object) -> tuple | None:
        return self.db.execute(sql, args).fetchone()

    # --- users ----------------------------------------------------------------------------

    def user_id_by_name(self, name: str) -> int | None:
        row = self._one("SELECT id FROM users WHERE name = ?", name)
        return int(row[0]) if row else None

    def insert_user(self, name: str, quota_bytes: int, premium: bool) -> int:
        cur = self._q("INSERT INTO users(name, quota_bytes, premium) VALUES (?, ?, ?)",
                      name, int(quota_bytes), int(bool(premium)))
        return int(cur.lastrowid or 0)

    def user(self, user_id: int) -> UserRow | None:
        row = self._one("SELECT quota_bytes, premium, used_bytes, node_count FROM users "
                        "WHERE id = ?", user_id)
        if row is None:
            return None
        return UserRow(int(row[0]), bool(row[1]), int(row[2]), int(row[3]))

    def set_user_quota(self, user_id: int, quota_bytes: int) -> None:
        self._q("UPDATE users SET quota_bytes = ? WHERE id = ?", int(quota_bytes), user_id)

    def set_user_premium(self, user_id: int, premium: bool) -> None:
        self._q("UPDATE users SET premium = ? WHERE id = ?", int(bool(premium)), user_id)

    def allocate_node_id(self, user_id: int, used_delta: int, node_id: int | None = None
                         ) -> int:
        if node_id is not None:
            self._q("UPDATE users SET node_count = node_count + 1, used_bytes = used_bytes + ? "
                    "WHERE id = ?", used_delta, user_id)
            return node_id
        new_id = self.reserve_node_ids(user_id, 1)
        self.adjust_usage(user_id, nodes=1, used_bytes=used_delta)
        return new_id

    def reserve_node_ids(self, user_id: int, count: int) -> int:
        first = self.next_node_id(user_id)
        self._q("UPDATE users SET next_node_id = ? WHERE id = ?", first + count, user_id)
        return first

    def next_node_id(self, user_id: int) -> int:
        row = self._one("SELECT next_node_id FROM users WHERE id = ?", user_id)
        assert row is not None, "next_node_id of a user that does not exist"
        return int(row[0])

    def adjust_usage(self, user_id: int, *, nodes: int = 0, used_bytes: int = 0) -> None:
        self._q("UPDATE users SET node_count = node_count + ?, used_bytes = used_bytes + ? "
                "WHERE id = ?", nodes, used_bytes, user_id)

    # --- nodes ----------------------------------------------------------------------------

    def insert_node(self, user_id: int, node: NodeRow) -> None:
        self._q(f"INSERT INTO nodes(user_id, {_NODE_COLS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                user_id, node.id, node.parent, node.name, node.kind.value, node.mode,
                node.size, node.mtime_ns, node.ctime_ns, node.version, node.target,
                node.sha256, node.uid, node.gid, node.rdev, node.atime_ns, node.nlink)

    def node(self, user_id: int, node_id: int) -> NodeRow | None:
        row = self._one(f"SELECT {_NODE_COLS} FROM nodes WHERE user_id = ? AND id = ?",
                        user_id, node_id)
        return _node(row) if row else None

    def child(self, user_id: int, parent: int, name: str) -> NodeRow | None:
        row = self._one(f"SELECT {_NODE_COLS} FROM nodes WHERE user_id = ? AND parent = ? "
                        "AND name = ?", user_id, parent, name)
        if row is None:
            row = self._one(f"SELECT {_LINKED_COLS} FROM node_names l JOIN nodes n ON "
                            "n.user_id = l.user_id AND n.id = l.node_id WHERE l.user_id = ? "
                            "AND l.parent = ? AND l.name = ?", user_id, parent, name)
        return _node(row) if row else None

    def children(self, user_id: int, parent: int, after: str, limit: int) -> list[NodeRow]:
        rows = self._q(f"SELECT {_NODE_COLS} FROM nodes WHERE user_id = ? AND parent = ? "
                       "AND name > ? ORDER BY name LIMIT ?", user_id, parent, after,
                       limit).fetchall()
        linked = self._q(f"SELECT {_LINKED_COLS} FROM node_names l JOIN nodes n ON "
                         "n.user_id = l.user_id AND n.id = l.node_id WHERE l.user_id = ? "
                         "AND l.parent = ? AND l.name > ? ORDER BY l.name LIMIT ?", user_id,
                         parent, after, limit).fetchall()
        if linked:
            # Names are unique across both tables: merge, keep the first ``limit``.
            rows = sorted(rows + linked, key=lambda r: r[2])[:limit]
        return [_node(r) for r in rows]

    def has_children(self, user_id: int, node_id: int) -> bool:
        return (self._one("SELECT 1 FROM nodes WHERE user_id = ? AND parent = ? LIMIT 1",
                          user_id, node_id) is not None
                or self._one("SELECT 1 FROM node_names WHERE user_id = ? AND parent = ? "
                             "LIMIT 1", user_id, node_id) is not None)

    def touch_node(self, user_id: int, node_id: int, ns: int) -> None:
        self._q("UPDATE nodes SET mtime_ns = ?, ctime_ns = ? WHERE user_id = ? AND id = ?",
                ns, ns, user_id, node_id)

    def set_node_mode(self, user_id: int, node_id: int, mode: int) -> None:
        self._q("UPDATE nodes SET mode = ? WHERE user_id = ? AND id = ?", mode, user_id, node_id)

    def set_node_mtime(self, user_id: int, node_id: int, mtime_ns: int) -> None:
        self._q("UPDATE nodes SET mtime_ns = ? WHERE user_id = ? AND id = ?", mtime_ns, user_id,
                node_id)

    def set_node_ctime(self, user_id: int, node_id: int, ctime_ns: int) -> None:
        self._q("UPDATE nodes SET ctime_ns = ? WHERE user_id = ? AND id = ?", ctime_ns, user_id,
                node_id)

    def move_node(self, user_id: int, node_id: int, parent: int, name: str,
                  ctime_ns: int) -> None:
        self._q("UPDATE nodes SET parent = ?, name = ?, ctime_ns = ? WHERE user_id = ? AND id = ?",
                parent, name, ctime_ns, user_id, node_id)

    def set_node_content(self, user_id: int, node_id: int, size: int, mtime_ns: int,
                         ctime_ns: int) -> None:
        self._q("UPDATE nodes SET size = ?, mtime_ns = ?, ctime_ns = ?, version = version + 1 "
                "WHERE user_id = ? AND id = ?", size, mtime_ns, ctime_ns, user_id, node_id)

    def set_node_sha256(self, user_id: int, node_id: int, sha256: str | None) -> None:
        self._q("UPDATE nodes SET sha256 = ? WHERE user_id = ? AND id = ?", sha256, user_id,
                node_id)

    def delete_node(self, user_id: int, node_id: int) -> None:
        self._q("DELETE FROM nodes WHERE user_id = ? AND id = ?", user_id, node_id)

    # --- POSIX: ownership, times, extra names, extended attributes -----------------------

    def set_node_owner(self, user_id: int, node_id: int, uid: int | None,
                       gid: int | None) -> None:
        self._q("UPDATE nodes SET uid = coalesce(?, uid), gid = coalesce(?, gid) "
                "WHERE user_id = ? AND id = ?", uid, gid, user_id, node_id)

    def set_node_atime(self, user_id: int, node_id: int, atime_ns: int) -> None:
        self._q("UPDATE nodes SET atime_ns = ? WHERE user_id = ? AND id = ?", atime_ns,
                user_id, node_id)

    def set_node_nlink(self, user_id: int, node_id: int, nlink: int) -> None:
        self._q("UPDATE nodes SET nlink = ? WHERE user_id = ? AND id = ?", nlink, user_id,
                node_id)

    def insert_name(self, user_id: int, node_id: int, parent: int, name: str) -> None:
        self._q("INSERT INTO node_names(user_id, parent, name, node_id) VALUES (?,?,?,?)",
                user_id, parent, name, node_id)

    def delete_name(self, user_id: int, parent: int, name: str) -> None:
        self._q("DELETE FROM node_names WHERE user_id = ? AND parent = ? AND name = ?",
                user_id, parent, name)

    def move_name(self, user_id: int, parent: int, name: str, new_parent: int,
                  new_name: str) -> None:
        self._q("UPDATE node_names SET parent = ?, name = ? WHERE user_id = ? AND parent = ? "
                "AND name = ?", new_parent, new_name, user_id, parent, name)

    def names(self, user_id: int, node_id: int) -> list[NameRow]:
        return [NameRow(*r) for r in self._q(
            "SELECT parent, name FROM node_names WHERE user_id = ? AND node_id = ? "
            "ORDER BY parent, name", user_id, node_id)]

    def delete_names(self, user_id: int, node_id: int) -> None:
        self._q("DELETE FROM node_names WHERE user_id = ? AND node_id = ?", user_id, node_id)

    def xattr(self, user_id: int, node_id: int, name: str) -> bytes | None:
        row = self._one("SELECT value FROM xattrs WHERE user_id = ? AND node_id = ? AND "
                        "name = ?", user_id, node_id, name)
        return bytes(row[0]) if row else None

    def xattr_names(self, user_id: int, node_id: int) -> list[str]:
        return [r[0] for r in self._q("SELECT name FROM xattrs WHERE user_id = ? AND "
                                      "node_id = ? ORDER BY name", user_id, node_id)]

    def xattr_bytes(self, user_id: int, node_id: int, *, without: str = "") -> int:
        row = self._one("SELECT coalesce(sum(length(CAST(name AS BLOB)) + length(value)), 0) "
                        "FROM xattrs WHERE user_id = ? AND node_id = ? AND name != ?",
                        user_id, node_id, without)
        return int(row[0]) if row else 0

    def put_xattr(self, user_id: int, node_id: int, name: str, value: bytes) -> None:
        self._q("INSERT OR REPLACE INTO xattrs(user_id, node_id, name, value) VALUES (?,?,?,?)",
                user_id, node_id, name, bytes(value))

    def delete_xattr(self, user_id: int, node_id: int, name: str) -> None:
        self._q("DELETE FROM xattrs WHERE user_id = ? AND node_id = ? AND name = ?", user_id,
                node_id, name)

    def delete_xattrs(self, user_id: int, node_id: int) -> None:
        self._q("DELETE FROM xattrs WHERE user_id = ? AND node_id = ?", user_id, node_id)

    # --- segments -------------------------------------------------------------------------

    def segment_doc_ids(self, user_id: int, node_id: int) -> list[int]:
        return [r[0] for r in self._q("SELECT doc_id FROM segments WHERE user_id = ? "
                                      "AND node_id = ?", user_id, node_id)]

    def delete_segments(self, user_id: int, node_id: int) -> None:
        self._q("DELETE FROM segments WHERE user_id = ? AND node_id = ?", user_id, node_id)

    def insert_segment(self, user_id: int, node_id: int, idx: int, doc_id: int) -> None:
        self._q("INSERT INTO segments(user_id, node_id, idx, doc_id) VALUES (?,?,?,?)",
                user_id, node_id, idx, doc_id)

    def segments(self, user_id: int, node_ids: list[int]) -> dict[int, list[Document]]:
        out: dict[int, list[Document]] = {}
        for i in range(0, len(node_ids), _IN_BATCH):
            chunk = node_ids[i : i + _IN_BATCH]
            marks = ",".join("?" * len(chunk))
            for r in self._q(
                f"SELECT s.node_id, d.id, d.access_hash, d.size, d.mime_type, d.sha256, d.md5, "
                f"d.date, d.file_type FROM segments s JOIN documents d ON d.id = s.doc_id "
                f"WHERE s.user_id = ? AND s.node_id IN ({marks}) ORDER BY s.node_id, s.idx",
                user_id, *chunk,
            ):
                out.setdefault(r[0], []).append(_doc(r[1:]))
        return out

    def document_is_linked(self, doc_id: int) -> bool:
        return self._one("SELECT 1 FROM segments WHERE doc_id = ? LIMIT 1", doc_id) is not None

    # --- documents ------------------------------------------------------------------------

    def document(self, doc_id: int) -> Document | None:
        row = self._one(f"SELECT {_DOC_COLS} FROM documents WHERE id = ?", doc_id)
        return _doc(row) if row else None

    def document_by_hash(self, user_id: int, sha256: str, size: int,
                         now: float) -> Document | None:
        row = self._one(
            f"SELECT {_DOC_COLS} FROM documents WHERE user_id = ? AND sha256 = ? "
            "AND size = ? AND (expires_at IS NULL OR expires_at > ?) "
            "ORDER BY expires_at IS NOT NULL, id DESC LIMIT 1", user_id, sha256, size, now)
        return _doc(row) if row else None

    def document_life(self, doc_id: int, user_id: int | None = None) -> DocumentLife | None:
        if user_id is None:
            row = self._one("SELECT expires_at FROM documents WHERE id = ?", doc_id)
        else:
            row = self._one("SELECT expires_at FROM documents WHERE id = ? AND user_id = ?",
                            doc_id, user_id)
        return DocumentLife(row[0]) if row else None

    def set_document_expiry(self, doc_id: int, expires_at: float | None) -> None:
        self._q("UPDATE documents SET expires_at = ? WHERE id = ?", expires_at, doc_id)

    def document_ref(self, doc_id: int) -> DocumentRef | None:
        row = self._one("SELECT user_id, access_hash, sha256 FROM documents WHERE id = ?",
                        doc_id)
        return DocumentRef(*row) if row else None

    def expired_documents(self, now: float, limit: int) -> list[int]:
        return [r[0] for r in self._q(
            "SELECT id FROM documents WHERE expires_at IS NOT NULL AND expires_at <= ? "
            "LIMIT ?", now, limit)]

    def next_document_id(self) -> int:
        row = self._one("SELECT value FROM meta WHERE key = 'next_doc_id'")
        assert row is not None, "the schema initializes next_doc_id"
        doc_id = int(row[0])
        self._q("UPDATE meta SET value = ? WHERE key = 'next_doc_id'", doc_id + 1)
        return doc_id

    def insert_document(self, doc: Document, user_id: int, expires_at: float | None) -> None:
        self._q(f"INSERT INTO documents({_DOC_COLS}, user_id, expires_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)", doc.id, doc.access_hash, doc.size,
                doc.mime_type, doc.sha256, doc.md5, doc.date, doc.file_type.value, user_id,
                expires_at)

    def delete_document(self, doc_id: int, tombstone: Tombstone) -> None:
        self._q("DELETE FROM documents WHERE id = ?", doc_id)
        self._q("INSERT OR REPLACE INTO doc_tombstones(id, user_id, access_hash) VALUES (?,?,?)",
                doc_id, tombstone.user_id, tombstone.access_hash)

    def tombstone(self, doc_id: int) -> Tombstone | None:
        row = self._one("SELECT user_id, access_hash FROM doc_tombstones WHERE id = ?", doc_id)
        return Tombstone(*row) if row else None

    def readable_document(self, doc_id: int, blocks: tuple[int, int] | None = None,
                          crc: bool = False) -> ReadableDocument | None:
        # Only the requested slice of the block hashes is copied out of SQLite: a
        # document's hashes are 256 KiB per GiB, too much for every 1 MiB read.
        if blocks is None:
            hashes_sql, hashes_args = "x'', NULL", ()
        else:
            hashes_sql = "substr(b.block_hashes, ?, ?), NULL"
            hashes_args = (blocks[0] * 32 + 1, blocks[1] * 32)
            if crc:
                hashes_sql = "substr(b.block_hashes, ?, ?), substr(b.block_crc32c, ?, ?)"
                hashes_args += (blocks[0] * 4 + 1, blocks[1] * 4)
        row = self._one(
            "SELECT d.user_id, d.access_hash, d.size, d.file_type, d.date, d.expires_at, "
            f"b.chunk_size, b.path, {hashes_sql} FROM documents d JOIN blobs b "
            "ON b.sha256 = d.sha256 WHERE d.id = ?", *hashes_args, doc_id)
        if row is None:
            return None
        return ReadableDocument(row[0], row[1], row[2], _FILE_TYPES[row[3]], row[4], row[5],
                                row[6], row[7], row[8], row[9])

    # --- blobs ----------------------------------------------------------------------------

    def blob_key(self, sha256: str) -> str | None:
        row = self._one("SELECT path FROM blobs WHERE sha256 = ?", sha256)
        return row[0] if row else None

    def blob_in_use(self, sha256: str) -> bool:
        return self._one("SELECT 1 FROM documents WHERE sha256 = ? LIMIT 1", sha256) is not None

    def insert_blob(self, blob: BlobRow) -> None:
        self._q("INSERT INTO blobs(sha256, size, chunk_size, path, block_hashes, "
                "block_crc32c) VALUES (?,?,?,?,?,?)", blob.sha256, blob.size, blob.chunk_size,
                blob.key, blob.block_hashes, blob.block_crcs)

    def delete_blob(self, sha256: str) -> None:
        self._q("DELETE FROM blobs WHERE sha256 = ?", sha256)

    def blob_keys(self) -> set[str]:
        return {r[0] for r in self._q("SELECT path FROM blobs")}

    # --- uploads and parts ----------------------------------------------------------------

    def upload(self, up: UploadKey) -> UploadRow | None:
        row = self._one("SELECT total_parts FROM uploads WHERE user_id = ? AND file_id = ?",
                        up.user_id, up.file_id)
        return UploadRow(row[0]) if row else None

    def ensure_upload(self, up: UploadKey, total_parts: int | None) -> None:
        if total_parts is not None:
            self._q("INSERT INTO uploads(user_id, file_id, total_parts) VALUES (?,?,?) "
                    "ON CONFLICT(user_id, file_id) DO UPDATE SET total_parts = "
                    "excluded.total_parts", up.user_id, up.file_id, total_parts)
        else:
            self._q("INSERT OR IGNORE INTO uploads(user_id, file_id, total_parts) "
                    "VALUES (?,?,NULL)", up.user_id, up.file_id)

    def delete_upload(self, up: UploadKey) -> None:
        """The upload's row and all its parts' rows."""
        self._q("DELETE FROM parts WHERE user_id = ? AND file_id = ?", up.user_id, up.file_id)
        self._q("DELETE FROM uploads WHERE user_id = ? AND file_id = ?", up.user_id, up.file_id)

    def uploads(self) -> list[UploadKey]:
        return [UploadKey(*r) for r in self._q("SELECT user_id, file_id FROM uploads")]

    def upload_has_parts(self, up: UploadKey) -> bool:
        return self._one("SELECT 1 FROM parts WHERE user_id = ? AND file_id = ? LIMIT 1",
                         up.user_id, up.file_id) is not None

    def part_exists(self, up: UploadKey, part: int) -> bool:
        return self._one("SELECT 1 FROM parts WHERE user_id = ? AND file_id = ? AND part = ?",
                         up.user_id, up.file_id, part) is not None

    def put_part(self, up: UploadKey, part: PartRow) -> None:
        self._q("INSERT OR REPLACE INTO parts(user_id, file_id, part, size, saved_at) "
                "VALUES (?,?,?,?,?)", up.user_id, up.file_id, part.part, part.size,
                part.saved_at)

    def delete_part(self, up: UploadKey, part: int) -> None:
        self._q("DELETE FROM parts WHERE user_id = ? AND file_id = ? AND part = ?",
                up.user_id, up.file_id, part)

    def parts(self, up: UploadKey) -> list[PartRow]:
        return [PartRow(*r) for r in self._q(
            "SELECT part, size, saved_at FROM parts WHERE user_id = ? AND file_id = ? "
            "ORDER BY part", up.user_id, up.file_id)]

    def highest_other_parts(self, up: UploadKey, part: int, count: int) -> list[PartRow]:
        return [PartRow(*r) for r in self._q(
            "SELECT part, size, saved_at FROM parts WHERE user_id = ? AND file_id = ? "
            "AND part != ? ORDER BY part DESC LIMIT ?", up.user_id, up.file_id, part, count)]

    def stale_parts(self, cutoff: float, limit: int) -> list[PartKey]:
        return [PartKey(*r) for r in self._q(
            "SELECT user_id, file_id, part FROM parts WHERE saved_at <= ? LIMIT ?",
            cutoff, limit)]

    def stale_upload_parts(self, up: UploadKey, cutoff: float) -> list[int]:
        return [r[0] for r in self._q(
            "SELECT part FROM parts WHERE user_id = ? AND file_id = ? AND saved_at <= ?",
            up.user_id, up.file_id, cutoff)]

    def all_parts(self) -> list[SavedPart]:
        return [SavedPart(*r) for r in self._q("SELECT user_id, file_id, part, size FROM parts")]

    # --- the change log -------------------------------------------------------------------

    def log_change(self, user_id: int, change: ChangeRecord) -> int:
        cur = self._q("INSERT INTO changes(user_id, kind, node_id, parent, name, at_ns, "
                      "old_parent, old_name) VALUES (?,?,?,?,?,?,?,?)", user_id,
                      change.kind.value, change.node_id, change.parent, change.name,
                      change.at_ns, change.old_parent, change.old_name)
        return int(cur.lastrowid or 0)

    def changes_after(self, user_id: int, cursor: int, limit: int) -> list[Change]:
        return [Change(cursor=r[0], kind=_CHANGE_KINDS[r[1]], node_id=r[2], parent=r[3],
                       name=r[4], at_ns=r[5], old_parent=r[6], old_name=r[7])
                for r in self._q("SELECT seq, kind, node_id, parent, name, at_ns, "
                                 "old_parent, old_name FROM changes WHERE user_id = ? "
                                 "AND seq > ? ORDER BY seq LIMIT ?", user_id, cursor, limit)]

    def change_cursor(self) -> int:
        # AUTOINCREMENT keeps the highest seq ever given in sqlite_sequence, also once
        # pruning has deleted it.
        row = self._one("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
        return int(row[0]) if row else 0

    def change_floor(self, user_id: int) -> int:
        row = self._one("SELECT seq FROM change_floors WHERE user_id = ?", user_id)
        return int(row[0]) if row else 0

    def prune_changes(self, user_id: int, keep: int) -> None:
        row = self._one("SELECT seq FROM changes WHERE user_id = ? ORDER BY seq DESC "
                        "LIMIT 1 OFFSET ?", user_id, keep)
        if row is None:
            return
        self._q("DELETE FROM changes WHERE user_id = ? AND seq <= ?", user_id, row[0])
        self._q("INSERT INTO change_floors(user_id, seq) VALUES (?, ?) ON CONFLICT(user_id) "
                "DO UPDATE SET seq = MAX(seq, excluded.seq)", user_id, row[0])

    # --- a whole store at once (fsmount.store.copy) ----------------------------------------

    def user_entries(self) -> list[UserEntry]:
        return [UserEntry(int(r[0]), r[1], int(r[2]), bool(r[3]), int(r[4]), int(r[5]),
                          int(r[6])) for r in self._q(
            "SELECT id, name, quota_bytes, premium, next_node_id, used_bytes, node_count "
            "FROM users ORDER BY id")]

    def put_user_entry(self, entry: UserEntry) -> None:
        self._q("INSERT INTO users(id, name, quota_bytes, premium, next_node_id, used_bytes, "
                "node_count) VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                "name = excluded.name, quota_bytes = excluded.quota_bytes, "
                "premium = excluded.premium, "
                "next_node_id = max(next_node_id, excluded.next_node_id), "
                "used_bytes = excluded.used_bytes, node_count = excluded.node_count",
                entry.id, entry.name, int(entry.quota_bytes), int(bool(entry.premium)),
                entry.next_node_id, entry.used_bytes, entry.node_count)

    def nodes_after(self, user_id: int, after: int, limit: int) -> list[NodeRow]:
        return [_node(r) for r in self._q(
            f"SELECT {_NODE_COLS} FROM nodes WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?",
            user_id, after, limit)]

    def drop_tombstone(self, doc_id: int) -> None:
        self._q("DELETE FROM doc_tombstones WHERE id = ?", doc_id)

    def restart_numbering(self, next_document_id: int, change_cursor: int) -> None:
        self._q("UPDATE meta SET value = max(value, ?) WHERE key = 'next_doc_id'",
                next_document_id)
        cursor = max(self.change_cursor(), change_cursor)
        # AUTOINCREMENT continues above sqlite_sequence's seq (a table SQLite lets us write).
        if self._q("UPDATE sqlite_sequence SET seq = ? WHERE name = 'changes'",
                   cursor).rowcount == 0:
            self._q("INSERT INTO sqlite_sequence(name, seq) VALUES ('changes', ?)", cursor)
        self._q("INSERT INTO change_floors(user_id, seq) SELECT id, ? FROM users WHERE true "
                "ON CONFLICT(user_id) DO UPDATE SET seq = max(seq, excluded.seq)", cursor)


class SqliteMeta:
    """The metadata of a store directory in ``DIR/meta.sqlite``.

    One connection, used under the store's lock (:class:`fsmount.store.txn.TxRunner`).

    Raises (at open): InvalidArgument (not a usable database), StoreLocked (busy).
    """

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self._db = sqlite3.connect(store_dir / DB_NAME, isolation_level=None,
                                   check_same_thread=False, timeout=30.0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # Commits are atomic and survive a killed process; durability against power
            # loss comes from make_durable before blob deletion and the fsync of every blob
            # before the commit that references it.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as exc:
            self._db.close()
            raise self.domain_error(exc) from exc

    def close(self) -> None:
        self._db.close()

    def begin(self, now: float, *, write: bool) -> SqliteTx:
        """Start a transaction (``BEGIN IMMEDIATE`` for writes: no upgrade deadlocks)."""
        self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        return SqliteTx(now, db=self._db)

    def commit(self, tx: MetaTx) -> None:
        self._db.execute("COMMIT")

    def rollback(self, tx: MetaTx) -> None:
        """Roll back if a transaction is open; never raises."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def release(self, tx: MetaTx) -> None:
        """Nothing beyond the transaction to release (the store lock is the process's)."""

    def shared_setting(self, name: str, value: str) -> str | None:
        """None: a store directory's own database (settings stay in the directory)."""
        return None

    def put_shared_setting(self, name: str, value: str) -> bool:
        """False: settings stay in the directory."""
        return False

    def take_alone(self) -> bool:
        """True: ``gc.lock`` in the directory decides who is alone."""
        return True

    def share_alone(self) -> None:
        """Nothing to share (see :meth:`take_alone`)."""

    def watch_changes(self, wake: Callable[[], None]) -> float:
        """Other processes' commits cannot be heard: long polls look every
        :data:`OTHER_WRITERS_POLL` seconds."""
        return OTHER_WRITERS_POLL

    def make_durable(self) -> None:
        # synchronous=NORMAL does not sync the WAL at commit; a checkpoint does.
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def init_schema(self, tx: MetaTx) -> None:
        """Create the tables (or upgrade an older store's) inside ``tx``."""
        assert isinstance(tx, SqliteTx), "a transaction of another backend"
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                tx.db.execute(stmt)
        tx.db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                      (SCHEMA_VERSION,))
        tx.db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('next_doc_id', 1)")
        # Version 2 added the blocks' CRC32Cs; older blobs keep NULL there and are
        # verified by their SHA-256 block hashes.
        columns = {r[1] for r in tx.db.execute("PRAGMA table_info(blobs)")}
        if "block_crc32c" not in columns:
            tx.db.execute("ALTER TABLE blobs ADD COLUMN block_crc32c BLOB")
        # The whole file's SHA-256 per node (added after version 2; by column, not version
        # number, so that it composes with other additions).  Older rows keep NULL: their
        # files show the digest where one segment has it.
        columns = {r[1] for r in tx.db.execute("PRAGMA table_info(nodes)")}
        if "sha256" not in columns:
            tx.db.execute("ALTER TABLE nodes ADD COLUMN sha256 TEXT")
        # Version 3 added ownership, device numbers, atime and link counts to the nodes
        # (NULL owner: made without one), and the extra names and xattrs tables above.
        node_columns = {r[1] for r in tx.db.execute("PRAGMA table_info(nodes)")}
        for name, decl in _V3_NODE_COLUMNS.items():
            if name not in node_columns:
                tx.db.execute(f"ALTER TABLE nodes ADD COLUMN {name} {decl}")
        if "nlink" not in node_columns:
            # A folder's nlink is 2 plus its subfolders (the root is its own parent).
            tx.db.execute(
                "UPDATE nodes SET nlink = 2 + (SELECT count(*) FROM nodes c WHERE "
                "c.user_id = nodes.user_id AND c.parent = nodes.id AND c.kind = 'dir' AND "
                "c.id != nodes.id) WHERE kind = 'dir'")
        tx.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version' AND value < ?",
                      (SCHEMA_VERSION, SCHEMA_VERSION))

    def domain_error(self, exc: BaseException) -> BaseException | None:
        """A domain error (or OSError) for an SQLite failure, None for any other exception:
        callers never see sqlite3's exceptions -- a one-line message for the CLI, an errno
        for the filesystem."""
        if not isinstance(exc, sqlite3.Error):
            return None
        path = self.store_dir
        text = str(exc)
        if isinstance(exc, sqlite3.IntegrityError):
            return errors.AlreadyExists(f"store constraint: {text}")
        low = text.lower()
        if "locked" in low or "busy" in low:
            return errors.StoreLocked(f"store {path} is busy: {text}")
        if "full" in low:
            return OSError(errno.ENOSPC, f"store {path}: {text}")
        if "not a database" in low or "malformed" in low:
            return errors.InvalidArgument(
                f"{path / DB_NAME} is not a usable store database: {text}")
        return errors.FsmountError(f"store {path}: database error: {text}")
