"""The metadata backend seam: what the store asks of the database behind it.

A :class:`MetaBackend` hands out one transaction at a time (:meth:`MetaBackend.begin`);
the transaction (:class:`MetaTx`) is the bottom layer of the store: every read and write of
the namespace, documents, blobs, uploads, parts and users is one of its named queries,
answering the rows of :mod:`fsmount.store.rows`.  The store's logic above it
(:mod:`~fsmount.store.namespace`, :mod:`~fsmount.store.parts`, ...) holds no SQL, so a
second backend (PostgreSQL, say) is one new module implementing these two protocols; the
SQLite one is :mod:`fsmount.store.sqlite_meta`.

Contract for an implementation:

* ``begin(write=True)`` takes the write lock of the database at once (no later upgrade);
  reads inside a transaction see one snapshot.
* Queries raise the backend's own exceptions; :meth:`MetaBackend.domain_error` maps them to
  the errors of :mod:`fsmount.errors` (the transaction runner raises what it returns).
* :meth:`MetaBackend.make_durable` returns once every committed transaction survives a
  power cut (the store calls it before deleting blob files a commit unreferenced).
* Numbering: node ids per user from 2 (1 is the root), document ids from 1, never reused;
  change cursors increase in commit order.
* Write transactions of every process sharing the database run one at a time, and their
  ``after_locked`` effects before the next one (:meth:`MetaBackend.release`): SQLite's
  ``BEGIN IMMEDIATE`` under the store lock; PostgreSQL's advisory write lock
  (:mod:`fsmount.store.pg_meta` says why, and what it costs).

The store's side effects of a transaction (files to delete after the commit, renames to
undo on rollback) ride on the transaction object as :class:`TxEffects`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..remote import Change, Document
from .hooks import HookPoint
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

__all__ = ["MetaBackend", "MetaTx", "TxEffects"]


@dataclass
class TxEffects:
    """What the store does around one transaction's commit, and its clock reading.

    ``after_locked`` runs after the commit under the store lock, ``after`` after it without
    the lock, ``on_rollback`` if the transaction does not commit.
    """

    now: float
    after_locked: list[Callable[[], None]] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)
    on_rollback: list[Callable[[], None]] = field(default_factory=list)
    #: Make the commit durable before running ``after`` (it deletes blob files).
    sync_before_cleanup: bool = False
    #: Test hook point passed right after the commit, before the files are cleaned up.
    hook_after: HookPoint | None = None


class MetaTx(Protocol):
    """One open transaction of a metadata backend: named queries on named rows.

    ``user_id`` is the store's user id; an :class:`~fsmount.store.rows.UploadKey` carries
    the signed 64-bit file id.  Queries for one row answer None when there is none.
    """

    now: float
    after_locked: list[Callable[[], None]]
    after: list[Callable[[], None]]
    on_rollback: list[Callable[[], None]]
    sync_before_cleanup: bool
    hook_after: HookPoint | None

    # --- users ---
    def user_id_by_name(self, name: str) -> int | None: ...
    def insert_user(self, name: str, quota_bytes: int, premium: bool) -> int:
        """A new user without nodes (the caller inserts its root); returns its id."""
    def user(self, user_id: int) -> UserRow | None: ...
    def set_user_quota(self, user_id: int, quota_bytes: int) -> None: ...
    def set_user_premium(self, user_id: int, premium: bool) -> None: ...
    def allocate_node_id(self, user_id: int, used_delta: int, node_id: int | None = None
                         ) -> int:
        """The user's next node id (or ``node_id``, one reserved earlier, which the caller
        checked is free); counts one more node and ``used_delta`` more bytes."""
    def reserve_node_ids(self, user_id: int, count: int) -> int:
        """Hand out the user's next ``count`` node ids (never allocated otherwise); returns
        the first."""
    def next_node_id(self, user_id: int) -> int:
        """The user's next node id not yet allocated or reserved."""
    def adjust_usage(self, user_id: int, *, nodes: int = 0, used_bytes: int = 0) -> None: ...

    # --- nodes ---
    def insert_node(self, user_id: int, node: NodeRow) -> None: ...
    def node(self, user_id: int, node_id: int) -> NodeRow | None: ...
    def child(self, user_id: int, parent: int, name: str) -> NodeRow | None:
        """The node named ``name`` in ``parent``, by its own row's name or an extra name
        (the row then carries that name)."""
    def children(self, user_id: int, parent: int, after: str, limit: int) -> list[NodeRow]:
        """Up to ``limit`` entries of ``parent`` named above ``after``, in name order, extra
        names included (the root, its own parent, is among the root's)."""
    def has_children(self, user_id: int, node_id: int) -> bool:
        """Whether the folder has any entry (extra names included)."""
    def touch_node(self, user_id: int, node_id: int, ns: int) -> None:
        """Set both mtime and ctime."""
    def set_node_mode(self, user_id: int, node_id: int, mode: int) -> None: ...
    def set_node_mtime(self, user_id: int, node_id: int, mtime_ns: int) -> None: ...
    def set_node_ctime(self, user_id: int, node_id: int, ctime_ns: int) -> None: ...
    def move_node(self, user_id: int, node_id: int, parent: int, name: str,
                  ctime_ns: int) -> None: ...
    def set_node_content(self, user_id: int, node_id: int, size: int, mtime_ns: int,
                         ctime_ns: int) -> None:
        """New size and times, and one more version."""
    def set_node_sha256(self, user_id: int, node_id: int, sha256: str | None) -> None:
        """The whole file's SHA-256 (hex), or None: not known (set with its content)."""
    def delete_node(self, user_id: int, node_id: int) -> None: ...

    # --- POSIX: ownership, times, extra names (hard links), extended attributes ---
    def set_node_owner(self, user_id: int, node_id: int, uid: int | None,
                       gid: int | None) -> None:
        """Set the owner and the group (None leaves that one as it is)."""
    def set_node_atime(self, user_id: int, node_id: int, atime_ns: int) -> None: ...
    def set_node_nlink(self, user_id: int, node_id: int, nlink: int) -> None: ...
    def insert_name(self, user_id: int, node_id: int, parent: int, name: str) -> None:
        """One more name of the node (``child`` and ``children`` answer it from now on)."""
    def delete_name(self, user_id: int, parent: int, name: str) -> None: ...
    def move_name(self, user_id: int, parent: int, name: str, new_parent: int,
                  new_name: str) -> None: ...
    def names(self, user_id: int, node_id: int) -> list[NameRow]:
        """The node's extra names (not the one on its own row), in (parent, name) order."""
    def delete_names(self, user_id: int, node_id: int) -> None: ...
    def xattr(self, user_id: int, node_id: int, name: str) -> bytes | None: ...
    def xattr_names(self, user_id: int, node_id: int) -> list[str]:
        """In name order."""
    def xattr_bytes(self, user_id: int, node_id: int, *, without: str = "") -> int:
        """Bytes of names and values of the node's attributes (except ``without``)."""
    def put_xattr(self, user_id: int, node_id: int, name: str, value: bytes) -> None:
        """Insert or replace."""
    def delete_xattr(self, user_id: int, node_id: int, name: str) -> None: ...
    def delete_xattrs(self, user_id: int, node_id: int) -> None: ...

    # --- segments (a file's documents, in order) ---
    def segment_doc_ids(self, user_id: int, node_id: int) -> list[int]: ...
    def delete_segments(self, user_id: int, node_id: int) -> None: ...
    def insert_segment(self, user_id: int, node_id: int, idx: int, doc_id: int) -> None: ...
    def segments(self, user_id: int, node_ids: list[int]) -> dict[int, list[Document]]:
        """The documents of each of those file nodes, in segment order (none: absent)."""
    def document_is_linked(self, doc_id: int) -> bool: ...

    # --- documents ---
    def document(self, doc_id: int) -> Document | None: ...
    def document_by_hash(self, user_id: int, sha256: str, size: int,
                         now: float) -> Document | None:
        """The user's unexpired document of that content, linked ones first, newest first."""
    def document_life(self, doc_id: int, user_id: int | None = None) -> DocumentLife | None: ...
    def set_document_expiry(self, doc_id: int, expires_at: float | None) -> None: ...
    def document_ref(self, doc_id: int) -> DocumentRef | None: ...
    def expired_documents(self, now: float, limit: int) -> list[int]: ...
    def next_document_id(self) -> int:
        """Take the next document id (never reused)."""
    def insert_document(self, doc: Document, user_id: int, expires_at: float | None) -> None: ...
    def delete_document(self, doc_id: int, tombstone: Tombstone) -> None:
        """Delete the document, leaving ``tombstone`` under its id."""
    def tombstone(self, doc_id: int) -> Tombstone | None: ...
    def readable_document(self, doc_id: int, blocks: tuple[int, int] | None = None,
                          crc: bool = False) -> ReadableDocument | None:
        """The document joined with its blob; with ``blocks`` = (first, count) the slice of
        its block hashes (fewer at the end), with ``crc`` too that of its CRC32Cs."""

    # --- blobs (by SHA-256) ---
    def blob_key(self, sha256: str) -> str | None: ...
    def blob_in_use(self, sha256: str) -> bool:
        """Whether any document still has that content."""
    def insert_blob(self, blob: BlobRow) -> None: ...
    def delete_blob(self, sha256: str) -> None: ...
    def blob_keys(self) -> set[str]: ...

    # --- uploads and parts ---
    def upload(self, up: UploadKey) -> UploadRow | None: ...
    def ensure_upload(self, up: UploadKey, total_parts: int | None) -> None:
        """Create the upload if needed; a known ``total_parts`` is recorded."""
    def delete_upload(self, up: UploadKey) -> None:
        """The upload and all its parts."""
    def uploads(self) -> list[UploadKey]: ...
    def upload_has_parts(self, up: UploadKey) -> bool: ...
    def part_exists(self, up: UploadKey, part: int) -> bool: ...
    def put_part(self, up: UploadKey, part: PartRow) -> None:
        """Insert or replace the part's row."""
    def delete_part(self, up: UploadKey, part: int) -> None: ...
    def parts(self, up: UploadKey) -> list[PartRow]:
        """The upload's parts in part order."""
    def highest_other_parts(self, up: UploadKey, part: int, count: int) -> list[PartRow]:
        """The ``count`` highest-numbered parts other than ``part``, highest first."""
    def stale_parts(self, cutoff: float, limit: int) -> list[PartKey]:
        """Up to ``limit`` parts of any upload saved at or before ``cutoff``."""
    def stale_upload_parts(self, up: UploadKey, cutoff: float) -> list[int]: ...
    def all_parts(self) -> list[SavedPart]: ...


    # --- the change log (per user; see fsmount.store.changes) ---
    def log_change(self, user_id: int, change: ChangeRecord) -> int:
        """Append a change of the user's namespace; returns its cursor (increasing over
        the whole store, never reused).  In the transaction of the change itself."""
    def changes_after(self, user_id: int, cursor: int, limit: int) -> list[Change]:
        """Up to ``limit`` of the user's changes with a cursor above ``cursor``, oldest first."""
    def change_cursor(self) -> int:
        """The cursor of the newest change logged in the store (0 before any)."""
    def change_floor(self, user_id: int) -> int:
        """The newest cursor dropped from the user's log (0 if none): a client at an older
        cursor may have missed changes."""
    def prune_changes(self, user_id: int, keep: int) -> None:
        """Drop all but the user's ``keep`` newest changes, raising its floor."""

    # --- a whole store at once (fsmount.store.copy: ``fsmount store copy``) ---
    def user_entries(self) -> list[UserEntry]:
        """Every user with its name and counters, in id order."""
    def put_user_entry(self, entry: UserEntry) -> None:
        """Insert the user with that id, or overwrite the row of that id (name, settings,
        counters)."""
    def nodes_after(self, user_id: int, after: int, limit: int) -> list[NodeRow]:
        """Up to ``limit`` of the user's nodes with an id above ``after``, in id order, as
        their own rows (not their extra names)."""
    def drop_tombstone(self, doc_id: int) -> None:
        """Forget the tombstone under ``doc_id`` (a document of that id is coming in)."""
    def restart_numbering(self, next_document_id: int, change_cursor: int) -> None:
        """Document ids from at least ``next_document_id`` on; the change log's cursor
        at least ``change_cursor``, and every user's floor raised to the (new) cursor (a
        client at an earlier cursor is told to reset)."""


class MetaBackend(Protocol):
    """A store's metadata database (see the module docstring for the contract)."""

    def begin(self, now: float, *, write: bool) -> MetaTx:
        """Open a transaction whose clock reading is ``now``."""
    def commit(self, tx: MetaTx) -> None:
        """Commit.  When the commit's outcome cannot be known (the connection to a database
        server broke while committing), clear ``tx.on_rollback`` before raising: effects
        that undo the transaction must not run if it may have committed."""
    def rollback(self, tx: MetaTx) -> None:
        """Roll back the open transaction, if any; never raises.  (:meth:`release`
        follows, after the transaction's ``on_rollback`` effects.)"""
    def make_durable(self) -> None:
        """Return once every commit so far survives a power cut."""
    def init_schema(self, tx: MetaTx) -> None:
        """Create (or upgrade) the schema inside ``tx``."""
    def domain_error(self, exc: BaseException) -> BaseException | None:
        """The :mod:`fsmount.errors` error for a backend exception; None for others."""
    def release(self, tx: MetaTx) -> None:
        """After a transaction's ``after_locked`` effects (committed) or its ``on_rollback``
        effects (not): release what :meth:`begin` took for it beyond the transaction (a
        lock shared by several processes); never raises."""
    def shared_setting(self, name: str, value: str) -> str | None:
        """A store-wide setting kept in a database that several processes ("nodes") share,
        recorded as ``value`` by the first that asks; None for a database of one store
        directory (the caller keeps the setting in the directory).  Only while the store
        opens (outside the transaction runner)."""
    def put_shared_setting(self, name: str, value: str) -> bool:
        """Set a store-wide setting of a shared database (False, nothing done: a database of
        one store directory).  Called under the store lock, outside a transaction."""
    def take_alone(self) -> bool:
        """Whether this opener has a shared database to itself (no other node has the store
        open), until :meth:`share_alone`; True for a database of one directory (whose
        ``gc.lock`` decides)."""
    def share_alone(self) -> None: ...
    def watch_changes(self, wake: Callable[[], None]) -> float:
        """Call ``wake`` whenever another process commits a change, if the backend can tell;
        returns how often (seconds) a long poll should look at the log itself."""
    def close(self) -> None: ...
