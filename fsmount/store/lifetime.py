"""Lifetimes: parts and documents expire, documents are reclaimed, a crash is swept up.

Document lifetime: a fresh document lives ``limits.part_lifetime`` unless a file links it;
a linked one lives while a file links it and ``limits.unlinked_grace`` after; then it is
reclaimed (a tombstone keeps ``FILE_REFERENCE_EXPIRED`` distinct from ``FILE_ID_INVALID``),
and its blob with the last document using it.  Parts live ``limits.part_lifetime`` from
their save.

Expiry runs in bounded batches, one transaction each: on request (:meth:`Lifetime.expire`,
and at open) and opportunistically inside other calls' transactions at most every
:data:`SWEEP_INTERVAL` seconds of the store's clock.  Files go only after the transaction
that unreferences them has committed (blobs: and has been made durable), so a crash leaves
unreferenced files, never references to missing ones; :meth:`Lifetime.sweep_orphans` (run
by an opener that has the store to itself) makes files and metadata agree again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..protocol import Limits
from .content import ContentBackend
from .deleter import Deleter
from .meta import MetaTx
from .rows import Tombstone, UploadKey
from .txn import TxRunner

__all__ = ["EXPIRE_BATCH", "SWEEP_INTERVAL", "Lifetime"]

#: Seconds of the store's clock between two opportunistic expiry sweeps.
SWEEP_INTERVAL = 30.0
#: Parts / documents expired per transaction (bounds the latency a sweep adds to a call).
EXPIRE_BATCH = 500


class Lifetime:
    """Expiry and reclamation of one store's parts and documents."""

    def __init__(self, txn: TxRunner, content: ContentBackend, deleter: Deleter,
                 limits: Limits, forget_upload: Callable[[UploadKey], None]) -> None:
        self.txn = txn
        self.content = content
        self.deleter = deleter
        self.limits = limits
        #: Called when an upload's parts change under it (drops its in-memory hashing).
        self.forget_upload = forget_upload
        self._last_sweep = float("-inf")

    def expire(self, now: float | None = None) -> tuple[int, int]:
        """Delete parts and unlinked documents whose lifetime has passed.

        Returns (parts removed, documents reclaimed).  Their files go after each commit;
        the work is done in bounded batches, one transaction each.
        """
        parts = docs = 0
        for _ in range(1_000_000):
            with self.txn.run() as tx:
                if now is not None:
                    tx.now = now
                p, d, more = self._expire_batch(tx)
                self._last_sweep = tx.now
            parts += p
            docs += d
            if not more:
                break
        return parts, docs

    def maybe_sweep(self, tx: MetaTx) -> None:
        """An expiry batch inside another call's transaction, at most every SWEEP_INTERVAL
        seconds of the store's clock (sooner while a backlog remains)."""
        if tx.now - self._last_sweep >= min(SWEEP_INTERVAL, self.limits.part_lifetime / 4):
            _, _, more = self._expire_batch(tx)
            if not more:
                self._last_sweep = tx.now

    def _expire_batch(self, tx: MetaTx) -> tuple[int, int, bool]:
        """One bounded batch: (parts removed, documents reclaimed, more left)."""
        cutoff = tx.now - self.limits.part_lifetime
        stale = tx.stale_parts(cutoff, EXPIRE_BATCH)
        for p in stale:
            self.drop_part(tx, UploadKey(p.user_id, p.file_id), p.part)
        for up in {UploadKey(p.user_id, p.file_id) for p in stale}:
            self.drop_upload_if_empty(tx, up)
        docs = tx.expired_documents(tx.now, EXPIRE_BATCH)
        for doc_id in docs:
            self.reclaim_document(tx, doc_id)
        return len(stale), len(docs), len(stale) == EXPIRE_BATCH or len(docs) == EXPIRE_BATCH

    def expire_upload(self, tx: MetaTx, up: UploadKey) -> None:
        """Drop the upload's parts whose lifetime ran out (and the upload, if none is left)."""
        stale = tx.stale_upload_parts(up, tx.now - self.limits.part_lifetime)
        for p in stale:
            self.drop_part(tx, up, p)
        if stale:
            self.drop_upload_if_empty(tx, up)

    def drop_part(self, tx: MetaTx, up: UploadKey, part: int) -> None:
        tx.delete_part(up, part)
        # Under the store lock: a re-sent part with the same name cannot be placed between
        # the commit and this delete.
        tx.after_locked.append(lambda: self.content.delete_part(up, part))
        self.forget_upload(up)

    def drop_upload_if_empty(self, tx: MetaTx, up: UploadKey) -> None:
        if not tx.upload_has_parts(up):
            tx.delete_upload(up)
            tx.after_locked.append(lambda: self.content.delete_upload(up))

    def reclaim_document(self, tx: MetaTx, doc_id: int) -> None:
        """Delete a document (and its blob if nothing else uses it); leaves a tombstone."""
        ref = tx.document_ref(doc_id)
        if ref is None:
            return
        tx.delete_document(doc_id, Tombstone(ref.user_id, ref.access_hash))
        if not tx.blob_in_use(ref.sha256):
            key = tx.blob_key(ref.sha256)
            tx.delete_blob(ref.sha256)
            if key is not None:
                tx.after.append(lambda: self.deleter.discard(key))
                tx.sync_before_cleanup = True

    def release_documents(self, tx: MetaTx, doc_ids: Iterable[int]) -> None:
        """Documents that may just have lost their last file: they stay readable for
        ``limits.unlinked_grace`` seconds (open handles keep reading the old content), then
        the expiry sweep reclaims them."""
        grace = self.limits.unlinked_grace
        for doc_id in set(doc_ids):
            if tx.document_is_linked(doc_id):
                continue
            life = tx.document_life(doc_id)
            if life is None or life.expires_at is not None:
                continue
            if grace > 0:
                tx.set_document_expiry(doc_id, tx.now + grace)
            else:
                self.reclaim_document(tx, doc_id)

    def sweep_orphans(self) -> list[str]:
        """Make files and metadata agree after a crash (only while nobody else has the
        store); returns the content keys removed."""
        with self.txn.run() as tx:
            blob_keys = tx.blob_keys()
            keep: dict[UploadKey, set[int]] = {}
            for p in tx.all_parts():
                up = UploadKey(p.user_id, p.file_id)
                if self.content.part_size(up, p.part) == p.size:
                    keep.setdefault(up, set()).add(p.part)
                else:
                    # A crash between writing a part and recording it: the part is lost,
                    # which the protocol allows (finalize names it missing).
                    tx.delete_part(up, p.part)
            for up in tx.uploads():
                self.drop_upload_if_empty(tx, up)
            tx.after_locked.clear()
        return self.content.sweep_orphans(blob_keys, keep)
