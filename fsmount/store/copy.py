"""Whole-store copy (``fsmount store copy --from SRC --to DST``): move a store elsewhere.

A store is named by a :class:`StoreSpec`: a store directory, its metadata in
``DIR/meta.sqlite`` or in PostgreSQL (``--to-metadata postgresql://...``: the directory is
then this node's), its content in that directory or in an S3 bucket (``--to-content
s3://...``, :mod:`fsmount.store.content_select`).  This module works only through the two
seams -- the metadata backend's transactions (:mod:`fsmount.store.meta`) and the content
backend (:mod:`fsmount.store.content`) -- plus the public :class:`~fsmount.store.Store`
methods, so it moves a distributed store the same way as an embedded one.

What moves: every user (id, name, quota, premium flag, counters), the whole namespace with
every node's id and POSIX fields (mode, owner, times, device numbers, link counts, extra
names of hard links, symlink targets, extended attributes), every document a file links
(id, access hash, hashes, MIME type, date) with its blob (chunk size, block SHA-256s and
CRC32Cs) and bytes, the next ids, and the server's state that belongs to the store (users'
settings, token hashes, share secrets and links, :meth:`fsmount.server.auth.AuthDB.mirror_from`).
The copy *is* the same store: it takes the source's store id
(:meth:`~fsmount.store.Store.set_store_id`), node ids and document locations stay valid, so
tokens, share links, mounts' caches and write-back journals carry over.  The change log is
not copied: the destination's cursor starts past the source's with every user's floor
there, so a client following the feed is told to reset.  Not moved: uploads in progress
(unfinalized parts), documents no file links (they would expire anyway), tombstones of
reclaimed documents, web sessions and resumable upload sessions.

How (each step one or more metadata transactions, so that a copy killed at any moment
leaves a destination that a second run finishes):

1. Both stores are opened exclusively (a served store is refused: stop ``serve`` first).
   The destination must be empty or already a copy of this source (the same store id);
   anything else is refused with :class:`DestinationNotEmpty`, before anything is written.
2. *Prune*: every destination node that is not exactly the source's node of that id (row,
   extra names, xattrs, documents) is removed, releasing documents no node links any more.
3. *Fill*: the source's nodes missing at the destination are inserted in id order, in
   batches; a batch first copies the blobs its documents need (read from the source by
   chunk, the SHA-256 checked, written as the parts of a private upload and promoted --
   durable before the transaction that references them), then inserts blobs, documents,
   nodes, segments, names and xattrs in one transaction.  A kill between the two leaves
   content nobody references, which the next exclusive open sweeps.  A destination that
   went its own way after an earlier copy may hold another document under a source
   document's id: it is reclaimed first (nothing links it after the prune), and its
   tombstone dropped when the source's comes in.
4. Users' rows (with their counters) and the numbering are set; released documents are
   reclaimed.
5. *Verify*: the destination's namespace is compared with the source's again, node by
   node, and every document is re-read from the destination through
   :meth:`~fsmount.store.Store.get_file_windows` as a mount reads it: every block against
   its check (CRC32C, or SHA-256 for blobs without CRC32Cs) and the whole SHA-256.

A second run over a finished copy changes nothing and verifies again (idempotent); a run
after the source changed brings the destination up to date (a one-way sync).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .. import errors
from ..protocol import HASH_BLOCK, WINDOW
from ..remote import ROOT_ID, Document, NodeKind
from .core import Store
from .meta import MetaTx
from .rows import BlobRow, NameRow, NodeRow, UploadKey, UserEntry

__all__ = ["CopyReport", "CopyVerifyFailed", "DestinationNotEmpty", "StoreSpec",
           "copy_store", "run_copy"]

log = logging.getLogger(__name__)

#: Nodes read per metadata transaction.
PAGE = 500
#: A fill batch is committed after this many nodes, or this many bytes of new content.
BATCH_NODES = 500
BATCH_BYTES = 64 << 20
#: Blobs copied at once.
COPY_THREADS = 8
#: Windows asked for per call when re-reading a document to verify it.
VERIFY_WINDOWS = 16
#: The scheme prefixes of a distributed store's metadata.
METADATA_SCHEMES = ("postgresql://", "postgres://")
#: The file in which a store directory records its metadata URL (fsmount.store.meta_select).
METADATA_URL_FILE = "metadata.url"


#: What a failed verification of the destination's content means to the user.
_DAMAGED = (": the destination's content is damaged (`fsmount fsck --deep` on it shows "
            "where) and it stays marked unfinished; copy into a new directory")


class DestinationNotEmpty(errors.InvalidArgument):
    """The destination holds a store that is not a copy of the source."""

    name = "DESTINATION_NOT_EMPTY"


class CopyVerifyFailed(errors.ChecksumMismatch):
    """The destination does not read back as the source (content or metadata)."""


@dataclass(frozen=True)
class StoreSpec:
    """Where a store is: ``location``, its directory (for a distributed store, this node's
    directory); ``metadata``, a ``postgresql://`` URL or None (SQLite in the directory, or
    what the directory recorded); ``content``, an ``s3://`` URL or None (in the directory,
    or what it recorded)."""

    location: str
    content: str | None = None
    metadata: str | None = None

    @classmethod
    def parse(cls, text: str, content: str | None = None,
              metadata: str | None = None) -> StoreSpec:
        """Raises InvalidArgument (no directory, a URL in its place, or URLs of the wrong
        kind)."""
        if not text or "://" in text:
            raise errors.InvalidArgument(
                f"{text!r}: a store is given by its directory (a distributed store's: this "
                f"node's, with --to-metadata postgresql://... and --to-content s3://...)")
        if content is not None and not content.startswith("s3://"):
            raise errors.InvalidArgument(f"content {content!r} must be an s3:// URL")
        if metadata is not None and not metadata.startswith(METADATA_SCHEMES):
            raise errors.InvalidArgument(
                f"metadata {metadata.split('@')[-1]!r} must be a postgresql:// URL")
        return cls(os.path.abspath(text), content, metadata)

    def describe(self) -> str:
        """The spec for messages (never with a password or a query string)."""
        out = self.location
        if self.metadata:
            scheme, _, rest = self.metadata.partition("://")
            out += f" (metadata {scheme}://{rest.rpartition('@')[2].split('?')[0]})"
        if self.content:
            out += f" (content {self.content.split('?')[0]})"
        return out

    def exists(self) -> bool:
        """Whether a store is there already (its SQLite metadata, or a metadata URL)."""
        where = Path(self.location)
        return (where / "meta.sqlite").is_file() or (where / METADATA_URL_FILE).is_file()

    def open(self, *, copying: bool = False) -> Store:
        """The store, opened exclusively (created if it is a new directory); ``copying``:
        also an unfinished copy (the destination).

        Raises StoreLocked (served or in use), InvalidArgument (a URL that disagrees with
        the store's, or a metadata backend this build has not), FsmountError (the database
        cannot be reached).
        """
        kwargs: dict[str, object] = {}
        if self.metadata is not None:
            if "metadata" not in inspect.signature(Store).parameters:
                raise errors.InvalidArgument(
                    f"{self.describe()}: this build has no PostgreSQL metadata backend")
            kwargs["metadata"] = self.metadata
        return Store(self.location, exclusive=True, content=self.content, copying=copying,
                     **kwargs)  # type: ignore[arg-type]

    def auth_dir(self) -> str:
        """The directory of the server's state (``auth.sqlite``) for this store."""
        return self.location


class CopyReport(NamedTuple):
    """What a copy did (counts), and what it verified."""

    users: int
    nodes: int  #: nodes in the source
    nodes_written: int  #: inserted at the destination (missing or different there)
    nodes_removed: int  #: removed from the destination (not, or not so, in the source)
    documents: int  #: documents linked in the source
    blobs_copied: int
    bytes_copied: int
    server_rows: int  #: rows of the server's state (tokens, share links, ...)
    verified_documents: int
    verified_bytes: int


class NodeRecord(NamedTuple):
    """A node with everything that hangs on it: what two stores compare."""

    row: NodeRow
    names: tuple[NameRow, ...]
    xattrs: tuple[tuple[str, bytes], ...]
    segments: tuple[Document, ...]


def _records(tx: MetaTx, uid: int, rows: list[NodeRow]) -> list[NodeRecord]:
    """The records of ``rows`` (one batched query for the segments)."""
    segs = tx.segments(uid, [r.id for r in rows if r.kind is NodeKind.FILE])
    out = []
    for r in rows:
        names = tuple(tx.names(uid, r.id)) if r.kind is not NodeKind.DIR and r.nlink > 1 else ()
        xattrs = tuple((n, tx.xattr(uid, r.id, n) or b"") for n in tx.xattr_names(uid, r.id))
        out.append(NodeRecord(r, names, xattrs, tuple(segs.get(r.id, ()))))
    return out


def _pages(store: Store, uid: int) -> Iterator[list[NodeRecord]]:
    """The user's node records in id order, a page per read transaction."""
    after = 0
    for _ in range(1 << 40):
        with store.txn.run(write=False) as tx:
            rows = tx.nodes_after(uid, after, PAGE)
            recs = _records(tx, uid, rows)
        if not recs:
            return
        yield recs
        after = rows[-1].id


def _same_ids(store: Store, uid: int, ids: list[int]) -> dict[int, NodeRecord]:
    """The records the store has of those node ids."""
    with store.txn.run(write=False) as tx:
        rows = [r for r in (tx.node(uid, i) for i in ids) if r is not None]
        return {rec.row.id: rec for rec in _records(tx, uid, rows)}


def _root_empty(tx: MetaTx, uid: int) -> bool:
    return all(r.id == ROOT_ID for r in tx.children(uid, ROOT_ID, "", 2))


def _check_destination(src: Store, dst: Store, spec: StoreSpec,
                       users: list[UserEntry]) -> bool:
    """Whether the destination is a copy of the source already (else it is empty).

    Raises DestinationNotEmpty.
    """
    with dst.txn.run(write=False) as tx:
        dst_users = tx.user_entries()
        has_blobs = bool(tx.blob_keys())
        empty = not has_blobs and all(
            u.node_count <= 1 and _root_empty(tx, u.id) for u in dst_users)
    related = dst.store_id() == src.store_id()
    if not related and not empty:
        raise DestinationNotEmpty(
            f"{spec.describe()} holds a store that is not a copy of {src.path}: copy into "
            f"an empty store, or into an earlier copy of this one")
    by_id = {u.id: u for u in dst_users}
    by_name = {u.name: u for u in dst_users}
    for u in users:
        other = by_id.get(u.id)
        same_name = by_name.get(u.name)
        if (other is not None and other.name != u.name) or (
                same_name is not None and same_name.id != u.id):
            raise DestinationNotEmpty(
                f"{spec.describe()} has user {u.name!r} or user id {u.id} as another user "
                f"than the source: it is not a copy of {src.path}")
    return related


# --- content ----------------------------------------------------------------------------


def _staging_upload(uid: int, sha256: str) -> UploadKey:
    """The private upload a blob is written into at the destination (negative file ids
    are never a fresh client's; the same blob always lands in the same upload, so an
    interrupted copy overwrites its own leftovers)."""
    return UploadKey(uid, -(int(sha256[:15], 16) + 1))


def _copy_blob(src: Store, dst: Store, uid: int, doc: Document) -> BlobRow:
    """Copy a document's blob from ``src`` to ``dst``'s content, durably, checking its
    SHA-256 on the way; the row to insert.  Raises CopyVerifyFailed, FileReferenceExpired."""
    blocks = -(-doc.size // HASH_BLOCK)
    with src.txn.run(write=False) as tx:
        rd = tx.readable_document(doc.id, (0, max(blocks, 1)), crc=True)
    if rd is None:
        raise errors.FileReferenceExpired(f"document {doc.id} vanished from the source")
    chunk = rd.chunk_size
    count = -(-doc.size // chunk) if chunk else 0
    h = hashlib.sha256()
    content = dst.content
    if count == 0:
        writer = content.start_blob()
        writer.finish()
        key = content.promote(writer.key, doc.sha256)
    else:
        up = _staging_upload(uid, doc.sha256)
        for i in range(count):
            data = src.content.read_range(rd.blob_key, chunk, i * chunk,
                                          min(chunk, doc.size - i * chunk))
            h.update(data)
            content.place_part(content.stage_part(data, sync=False), up, i)
        if h.hexdigest() != doc.sha256:
            raise CopyVerifyFailed(f"source document {doc.id}: its content does not hash "
                                   f"to its SHA-256 (run `fsmount fsck --deep` on the source)")
        content.sync_parts(up, count)
        key = content.promote(up, doc.sha256)
    return BlobRow(doc.sha256, doc.size, chunk, key, rd.block_hashes, rd.block_crcs)  # type: ignore[arg-type]


# --- the passes -------------------------------------------------------------------------


def _remove(tx: MetaTx, uid: int, rec: NodeRecord) -> None:
    """Remove a node and what hangs on it; documents no node links any more expire now
    (reclaimed at the end unless the fill links them again)."""
    node_id = rec.row.id
    tx.delete_names(uid, node_id)
    tx.delete_xattrs(uid, node_id)
    tx.delete_segments(uid, node_id)
    tx.delete_node(uid, node_id)
    for doc in rec.segments:
        if not tx.document_is_linked(doc.id):
            tx.set_document_expiry(doc.id, tx.now)


def _prune(src: Store, dst: Store, uid: int) -> int:
    removed = 0
    for page in _pages(dst, uid):
        theirs = _same_ids(src, uid, [r.row.id for r in page])
        stale = [r for r in page if theirs.get(r.row.id) != r]
        if stale:
            with dst.txn.run() as tx:
                for rec in stale:
                    _remove(tx, uid, rec)
            removed += len(stale)
    return removed


@dataclass
class _Counts:
    nodes: int = 0
    written: int = 0
    documents: int = 0
    blobs: int = 0
    bytes: int = 0


def _fill(src: Store, dst: Store, uid: int, counts: _Counts,
          progress: Callable[[str], None]) -> None:
    batch: list[NodeRecord] = []
    needed: dict[str, Document] = {}  #: blobs the batch needs that the destination lacks
    batch_bytes = 0

    def flush() -> None:
        nonlocal batch_bytes
        if not batch:
            return
        # Blobs are independent: copied several at once (fsync and object-store round
        # trips are latency, not bandwidth), each durable before the commit below.
        with ThreadPoolExecutor(COPY_THREADS) as pool:
            blobs = list(pool.map(lambda d: _copy_blob(src, dst, uid, d), needed.values()))
        with dst.txn.run() as tx:
            for blob in blobs:
                if tx.blob_key(blob.sha256) is None:
                    tx.insert_blob(blob)
            for rec in batch:
                for doc in rec.segments:
                    _ensure_document(dst, tx, uid, doc)
                tx.insert_node(uid, rec.row)
                for i, doc in enumerate(rec.segments):
                    tx.insert_segment(uid, rec.row.id, i, doc.id)
                for name in rec.names:
                    tx.insert_name(uid, rec.row.id, name.parent, name.name)
                for xname, value in rec.xattrs:
                    tx.put_xattr(uid, rec.row.id, xname, value)
        counts.written += len(batch)
        counts.blobs += len(blobs)
        counts.bytes += sum(b.size for b in blobs)
        progress(f"user {uid}: {counts.written} nodes written, {counts.blobs} blobs "
                 f"({counts.bytes} bytes) copied")
        batch.clear()
        needed.clear()
        batch_bytes = 0

    for page in _pages(src, uid):
        counts.nodes += len(page)
        counts.documents += sum(len(r.segments) for r in page)
        theirs = _same_ids(dst, uid, [r.row.id for r in page])
        missing = [r for r in page if r.row.id not in theirs]  # the prune left the others
        _clear_conflicts(dst, uid, [d for r in missing for d in r.segments])
        with dst.txn.run(write=False) as tx:
            present = {d.sha256 for r in missing for d in r.segments
                       if tx.blob_key(d.sha256) is not None}
        for rec in missing:
            for doc in rec.segments:
                if doc.sha256 not in present and doc.sha256 not in needed:
                    needed[doc.sha256] = doc
                    batch_bytes += doc.size
            batch.append(rec)
            if len(batch) >= BATCH_NODES or batch_bytes >= BATCH_BYTES:
                present.update(needed)
                flush()
    flush()


def _conflicts(tx: MetaTx, uid: int, doc: Document) -> bool:
    """Whether the destination has another document under ``doc``'s id."""
    have = tx.document(doc.id)
    if have is None:
        return False
    ref = tx.document_ref(doc.id)
    return have != doc or ref is None or ref.user_id != uid


def _clear_conflicts(dst: Store, uid: int, docs: list[Document]) -> None:
    """Reclaim the destination's other documents under these ids (it went its own way
    after an earlier copy; the prune removed every node that linked them), before their
    blobs are looked for: one may go with its last document."""
    with dst.txn.run(write=False) as tx:
        bad = sorted({d.id for d in docs if _conflicts(tx, uid, d)})
    if bad:
        with dst.txn.run() as tx:
            for doc_id in bad:
                dst.lifetime.reclaim_document(tx, doc_id)


def _ensure_document(dst: Store, tx: MetaTx, uid: int, doc: Document) -> None:
    """The destination has ``doc`` under its id, linked (no expiry).  Raises
    CopyVerifyFailed (another document under its id: :func:`_clear_conflicts` ran)."""
    if _conflicts(tx, uid, doc):
        raise CopyVerifyFailed(f"document {doc.id} is another one at the destination")
    if tx.document(doc.id) is None:
        tx.drop_tombstone(doc.id)  # the destination's own, reclaimed, document of that id
        tx.insert_document(doc, uid, None)
    else:
        tx.set_document_expiry(doc.id, None)


def _verify(src: Store, dst: Store, users: list[UserEntry],
            progress: Callable[[str], None]) -> tuple[int, int]:
    """Compare every node again and re-read every document from the destination; returns
    (documents, bytes) read.  Raises CopyVerifyFailed."""
    seen: set[int] = set()
    nbytes = 0
    for u in users:
        src_ids: list[int] = []
        for page in _pages(src, u.id):
            src_ids.extend(r.row.id for r in page)
            theirs = _same_ids(dst, u.id, [r.row.id for r in page])
            for rec in page:
                if theirs.get(rec.row.id) != rec:
                    raise CopyVerifyFailed(f"user {u.name!r} node {rec.row.id} "
                                           f"({rec.row.name!r}) differs at the destination")
                for doc in rec.segments:
                    if doc.id not in seen:
                        _verify_document(dst, u.id, doc)
                        seen.add(doc.id)
                        nbytes += doc.size
        dst_count = sum(len(p) for p in _pages(dst, u.id))
        if dst_count != len(src_ids):
            raise CopyVerifyFailed(f"user {u.name!r}: {dst_count} nodes at the destination, "
                                   f"{len(src_ids)} in the source")
        progress(f"user {u.name!r}: {len(src_ids)} nodes verified")
    return len(seen), nbytes


def _verify_document(dst: Store, uid: int, doc: Document) -> None:
    """Re-read ``doc`` from the destination as a mount reads it (windows with their block
    checks) and compare every block's check and the whole SHA-256.  Raises
    CopyVerifyFailed."""
    h = hashlib.sha256()
    offset = 0
    for _ in range(doc.size // WINDOW + 2):
        if offset >= doc.size:
            break
        windows, checks = dst.get_file_windows(uid, doc.location, offset, VERIFY_WINDOWS,
                                               hashes=True, crc32c=True)
        data = b"".join(w.bytes for w in windows)
        for c in checks:
            start = c.offset - offset
            if not c.matches(data[start : start + c.limit]):
                raise CopyVerifyFailed(f"document {doc.id}: the block at {c.offset} does not "
                                       f"match its check at the destination{_DAMAGED}")
        h.update(data)
        offset += len(data)
        if not windows or len(windows[-1].bytes) < WINDOW:
            break
    if offset != doc.size or h.hexdigest() != doc.sha256:
        raise CopyVerifyFailed(f"document {doc.id} reads back from the destination as "
                               f"{offset} bytes with another SHA-256{_DAMAGED}")


# --- entry points -----------------------------------------------------------------------


def copy_store(src: Store, dst: Store, *, dst_spec: StoreSpec, verify: bool = True,
               progress: Callable[[str], None] = log.info) -> CopyReport:
    """Copy (or bring up to date) the open store ``src`` into the open store ``dst``,
    which stays marked as an unfinished copy (:meth:`~fsmount.store.Store.set_copying`):
    the caller clears the mark once whatever else belongs to the store has moved too.

    Raises DestinationNotEmpty (before writing anything), CopyVerifyFailed, and what the
    stores raise (StoreLocked, OSError, FileReferenceExpired, ...).
    """
    with src.txn.run(write=False) as tx:
        users = tx.user_entries()
    _check_destination(src, dst, dst_spec, users)
    # Until the copy is done (verified), nobody else may open the destination.
    dst.set_copying(True)
    dst.set_store_id(src.store_id())
    with dst.txn.run() as tx:
        for u in users:
            tx.put_user_entry(u)
    removed = 0
    for u in users:
        removed += _prune(src, dst, u.id)
    counts = _Counts()
    for u in users:
        _fill(src, dst, u.id, counts, progress)
    with src.txn.run() as tx:
        next_doc, cursor = tx.next_document_id(), tx.change_cursor()
        users = tx.user_entries()  # final counters (unchanged: the store is ours)
    with dst.txn.run() as tx:
        for u in users:
            tx.put_user_entry(u)
        tx.restart_numbering(next_doc, cursor)
    dst.expire()
    docs = nbytes = 0
    if verify:
        docs, nbytes = _verify(src, dst, users, progress)
    return CopyReport(len(users), counts.nodes, counts.written, removed, counts.documents,
                      counts.blobs, counts.bytes, 0, docs, nbytes)


@contextmanager
def _opened(spec: StoreSpec, *, copying: bool = False) -> Iterator[Store]:
    store = spec.open(copying=copying)
    try:
        yield store
    finally:
        store.close()


def run_copy(src_spec: StoreSpec, dst_spec: StoreSpec, *, verify: bool = True,
             progress: Callable[[str], None] = log.info) -> CopyReport:
    """``fsmount store copy``: open both stores exclusively, copy, verify, and mirror the
    server's state (tokens, share links) that belongs to the store.

    Raises InvalidArgument (the same store twice; a source that is not a store),
    DestinationNotEmpty, CopyVerifyFailed, StoreLocked (a store is served or in use), and
    what the stores raise.
    """
    if src_spec.location == dst_spec.location:
        raise errors.InvalidArgument(f"{src_spec.describe()} is both source and destination")
    if not src_spec.exists():
        raise errors.NotFound(f"no store at {src_spec.describe()}")
    with _opened(src_spec) as src, _opened(dst_spec, copying=True) as dst:
        report = copy_store(src, dst, dst_spec=dst_spec, verify=verify, progress=progress)
        rows = _mirror_server_state(src_spec, dst_spec)
        dst.set_copying(False)
    return report._replace(server_rows=rows)


def _mirror_server_state(src_spec: StoreSpec, dst_spec: StoreSpec) -> int:
    """Mirror the server's store-wide state (``auth.sqlite``) when the source has one."""
    if not (Path(src_spec.auth_dir()) / "auth.sqlite").is_file():
        return 0
    try:
        from ..server.auth import AuthDB
    except ModuleNotFoundError:  # the server extra is not installed: no state to move
        return 0
    src, dst = AuthDB(src_spec.auth_dir()), AuthDB(dst_spec.auth_dir())
    try:
        return dst.mirror_from(src)
    finally:
        src.close()
        dst.close()
