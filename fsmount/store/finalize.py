"""Finalize (``messages.uploadMedia``): an upload's parts become a document and its blob.

The parts are checked (all present, sizes as recorded), hashed -- usually already, by
:class:`~fsmount.store.parts.UploadStates` while they arrived, else in one pass here,
continuing from what that state hashed (parts that arrived at another node of a shared
store are read from the content backend) -- and
linked in one transaction: the parts become the blob (promoted by the content backend, no
copy), or, if a blob of that SHA-256 exists, the document shares it and the parts go to the
trash.  Uploads of parts below :data:`MIN_CHUNK` are concatenated into one chunk first (a
blob of thousands of 1 KiB chunk files would make every read open many files).

If the parts change between the checks and the commit (a part re-sent, expired -- here or
on another node), the attempt is dropped and retried: the commit's transaction compares the
part rows and stamps again under the store's write lock, which a shared (PostgreSQL) store
holds across all nodes.  Reclaiming never deletes a blob this commit is about to share: the
commit looks the blob up under that lock, and a reclamation either committed before (the
blob row is gone, so this upload's own parts are promoted under a new key) or runs after
(the new document keeps the blob in use); the blob is synced before the commit that references it,
and a failed commit puts the parts back.
"""

from __future__ import annotations

import secrets

from .. import errors, protocol
from ..protocol import Limits
from ..remote import Document, InputFile, InputFileBig
from .content import ContentBackend, StagedBlob
from .deleter import Deleter
from .hashing import Hasher, Hashes
from .hooks import HookPoint, StoreHooks
from .lifetime import Lifetime
from .parts import SYNC_AT_FINALIZE_PARTS, UploadStates, file_id_key
from .rows import BlobRow, PartRow, PartStamp, UploadKey
from .txn import TxRunner
from .users import Users

__all__ = ["FINALIZE_ATTEMPTS", "MIN_CHUNK", "Finalizer"]

#: Uploads whose part size is below this are concatenated into one file at finalize.
MIN_CHUNK = 64 * 1024
#: Finalize gives up (asking the client to retry) after the parts changed this many times.
FINALIZE_ATTEMPTS = 5
#: Bytes of a document's start that decide its file type and MIME type.
HEAD_BYTES = 64


class Finalizer:
    """Turns uploads into documents."""

    def __init__(self, txn: TxRunner, content: ContentBackend, deleter: Deleter,
                 users: Users, lifetime: Lifetime, states: UploadStates, limits: Limits,
                 hooks: StoreHooks) -> None:
        self.txn = txn
        self.content = content
        self.deleter = deleter
        self.users = users
        self.lifetime = lifetime
        self.states = states
        self.limits = limits
        self.hooks = hooks

    def upload_media(self, uid: int, file: InputFile | InputFileBig) -> Document:
        """Finalize an upload into a fresh document; it lives for the part lifetime unless
        a file links it.

        Raises InvalidArgument, FilePartsInvalid, FilePartMissing, Md5ChecksumInvalid,
        QuotaExceeded, NotFound (no user).
        """
        if not isinstance(file, InputFile | InputFileBig):
            raise errors.InvalidArgument("upload_media takes an InputFile or InputFileBig")
        for _ in range(FINALIZE_ATTEMPTS):
            doc = self._finalize_once(uid, file)
            if doc is not None:
                return doc
        raise errors.InvalidArgument("the upload kept changing during finalize; retry")

    def _finalize_once(self, uid: int, file: InputFile | InputFileBig) -> Document | None:
        up = UploadKey(uid, file_id_key(file.id))
        small = isinstance(file, InputFile)
        parts = file.parts
        with self.txn.run() as tx:
            user = self.users.row(tx, uid)
            max_parts = self.limits.max_parts(user.premium)
            if not isinstance(parts, int):
                raise errors.FilePartsInvalid(f"parts {parts!r} is not an integer")
            protocol.check_total_parts(parts, max_parts)
            self.lifetime.expire_upload(tx, up)
            row = tx.upload(up)
            if row and row.total_parts is not None and row.total_parts != parts:
                raise errors.FilePartsInvalid(
                    f"{parts} parts, but the parts were saved with file_total_parts "
                    f"{row.total_parts}")
            rows = tx.parts(up)
        if rows and rows[-1].part >= parts:
            raise errors.FilePartsInvalid(f"part {rows[-1].part} was saved beyond {parts} parts")
        for i in range(parts):
            if i >= len(rows) or rows[i].part != i:
                raise errors.FilePartMissing(i)
        sizes = [r.size for r in rows]
        size = sum(sizes)
        if small and size > self.limits.big_file_threshold:
            raise errors.FilePartsInvalid(
                f"{size} bytes is above {self.limits.big_file_threshold}; use inputFileBig")
        stamps: list[PartStamp] = []
        for i in range(parts):
            stamp = self.content.part_stamp(up, i)
            if stamp is None or stamp.size != sizes[i]:
                raise errors.FilePartMissing(i)
            stamps.append(stamp)
        chunk_size = sizes[0]
        concat = parts > 1 and chunk_size < MIN_CHUNK
        hashed = self.states.hashes(up, stamps) if not concat else None
        staged: StagedBlob | None = None
        try:
            if hashed is None or concat:
                start = self.states.resume(up, stamps) if not concat else None
                hashed, staged = self._hash_pass(up, parts, concat, start)
            md5 = hashed.md5
            if small and md5.lower() != str(file.md5_checksum).strip().lower():
                raise errors.Md5ChecksumInvalid(f"md5 of the parts is {md5}")
            if user.quota_bytes and user.used_bytes + size > user.quota_bytes:
                raise errors.QuotaExceeded(f"{user.used_bytes} + {size} bytes exceeds the "
                                           f"quota {user.quota_bytes}")
            if staged is not None:
                head = self.content.staged_head(staged, HEAD_BYTES)
            else:
                head = self.content.part_head(up, HEAD_BYTES)
            if concat:
                chunk_size = size
            doc = self._commit_document(up, file.name, rows, stamps, size, chunk_size, hashed,
                                        head, staged)
            if doc is not None:
                staged = None
            return doc
        finally:
            if staged is not None:
                self.content.delete(staged)

    def _hash_pass(self, up: UploadKey, parts: int, concat: bool,
                   start: tuple[Hasher, int] | None = None
                   ) -> tuple[Hashes, StagedBlob | None]:
        """Hash the parts in one pass (from ``start``: a hasher already fed that many
        parts); with ``concat`` also write them as one chunk."""
        h, first = start if start is not None else (Hasher(), 0)
        writer = self.content.start_blob() if concat else None
        buf = bytearray(protocol.MAX_PART_SIZE)
        mv = memoryview(buf)
        try:
            for i in range(first, parts):
                n = self.content.read_part_into(up, i, mv)
                if n is None:
                    raise errors.FilePartMissing(i)
                h.update(mv[:n])
                if writer is not None:
                    writer.write(mv[:n])
            if writer is not None:
                writer.finish()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        return h.result(), writer.key if writer is not None else None

    def _commit_document(
        self, up: UploadKey, name: str, rows: list[PartRow], stamps: list[PartStamp],
        size: int, chunk_size: int, hashed: Hashes, head: bytes, staged: StagedBlob | None,
    ) -> Document | None:
        """Link the hashed upload into a document; None if the parts changed meanwhile."""
        sha, md5 = hashed.sha256, hashed.md5
        content = self.content
        synced = staged is not None  # a staged (concatenated) blob was synced when written
        if not synced and not self._blob_exists(sha):
            content.sync_parts(up, min(len(stamps), SYNC_AT_FINALIZE_PARTS))
            synced = True
        with self.txn.run() as tx:
            if tx.parts(up) != rows:
                return None
            for i, s in enumerate(stamps):
                if content.part_stamp(up, i) != s:
                    return None
            user = self.users.row(tx, up.user_id)
            if user.quota_bytes and user.used_bytes + size > user.quota_bytes:
                raise errors.QuotaExceeded(f"{user.used_bytes} + {size} bytes exceeds the "
                                           f"quota {user.quota_bytes}")
            promoted = False
            if tx.blob_key(sha) is None:
                if not synced:  # the blob we meant to share went away meanwhile
                    content.sync_parts(up, min(len(stamps), SYNC_AT_FINALIZE_PARTS))
                source: UploadKey | StagedBlob = staged if staged is not None else up
                key = content.promote(source, sha)
                # Should the commit fail, put the files back where they were.
                tx.on_rollback.append(lambda: content.demote(key, source))
                tx.insert_blob(BlobRow(sha, size, chunk_size, key, hashed.blocks, hashed.crcs))
                promoted = True
            doc = Document(id=tx.next_document_id(), access_hash=secrets.randbits(63),
                           size=size, mime_type=protocol.detect_mime_type(head, name or ""),
                           sha256=sha, md5=md5, date=tx.now,
                           file_type=protocol.detect_file_type(head))
            tx.insert_document(doc, up.user_id, tx.now + self.limits.part_lifetime)
            tx.delete_upload(up)
            if not promoted or staged is not None:
                # The parts are no longer needed (deduplicated, or concatenated): move them
                # aside under the lock, delete them after.
                def _trash() -> None:
                    trash = content.trash_upload(up)
                    if trash is not None:
                        tx.after.append(lambda: self.deleter.discard(trash))

                tx.after_locked.append(_trash)
            if staged is not None and not promoted:
                tx.after.append(lambda: self.deleter.discard(staged))
            self.hooks.reached(HookPoint.FINALIZE_BEFORE_COMMIT)
            tx.hook_after = HookPoint.FINALIZE_AFTER_COMMIT
            self.states.forget(up)
            return doc

    def _blob_exists(self, sha: str) -> bool:
        with self.txn.run(write=False) as tx:
            return tx.blob_key(sha) is not None
