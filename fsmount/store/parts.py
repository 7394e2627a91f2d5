"""Saving parts (``upload.saveFilePart`` / ``upload.saveBigFilePart``) and hashing them as
they arrive.

A part is checked against the protocol's rules and the upload's other live parts, written
outside the store lock (staged), and placed and recorded in one transaction.  The thread
that saves a part also hashes its whole 128 KiB blocks; :class:`UploadStates` then feeds
contiguous parts, in order, into the upload's :class:`~fsmount.store.hashing.Hasher`, so
that finalize usually only compares and links.  Parts that arrive ahead of a missing one
are held in memory (bounded: :data:`PENDING_PARTS`, :data:`PENDING_BYTES`) or read back;
a part re-sent, or one saved before this process saw the upload, breaks the incremental
state, and finalize hashes in one pass instead.  Parts saved through another process (a
node of a shared store) leave a gap this process never fills: finalize continues from the
parts hashed here (:meth:`UploadStates.resume`) and reads the rest from the content backend,
so the state is a cache, never something another node needs.

Durability: parts from the :data:`SYNC_AT_FINALIZE_PARTS`-th on are synced as they are
saved, in parallel, so that finalize never waits for a gigabyte of writeback; the first
ones are synced by finalize (a small file costs one data sync, not one per save call).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .. import errors, protocol
from ..protocol import Limits
from .content import ContentBackend
from .hashing import Hasher, Hashes, block_sums
from .lifetime import Lifetime
from .meta import MetaTx
from .rows import PartRow, PartStamp, UploadKey
from .txn import TxRunner
from .users import Users

__all__ = ["PENDING_BYTES", "PENDING_PARTS", "SYNC_AT_FINALIZE_PARTS", "Parts", "UploadStates",
           "file_id_key"]

#: Parts kept in memory for incremental hashing while an earlier part is still missing.
PENDING_PARTS = 32
#: ... and at most this many bytes of them across all uploads (the rest is read back).
PENDING_BYTES = 64 * 1024 * 1024
#: Parts below this number are synced to disk by finalize, the others when saved.
SYNC_AT_FINALIZE_PARTS = 8

_U64 = 1 << 64
_I63 = 1 << 63


def file_id_key(file_id: int) -> int:
    """The signed 64-bit form of a client file id (``long``); unsigned spellings alias it.

    Raises:
        InvalidArgument: the id does not fit in 64 bits.
    """
    if not isinstance(file_id, int) or not -_I63 <= file_id < _U64:
        raise errors.InvalidArgument(f"file_id {file_id!r} is not a 64-bit integer")
    return file_id - _U64 if file_id >= _I63 else file_id


@dataclass
class _UploadState:
    """In-memory incremental hashing of one upload, fed while contiguous parts arrive."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    hasher: Hasher = field(default_factory=Hasher)
    next_part: int = 0
    saved: dict[int, PartStamp] = field(default_factory=dict)
    fed: dict[int, PartStamp] = field(default_factory=dict)
    pending: dict[int, tuple[bytes, list[tuple[bytes, int]]]] = field(default_factory=dict)
    broken: bool = False


class UploadStates:
    """The incremental hashing of every upload in flight in this process."""

    def __init__(self, content: ContentBackend) -> None:
        self.content = content
        self._states: dict[UploadKey, _UploadState] = {}
        self._lock = threading.Lock()
        #: Bytes of parts held for hashing, across all uploads (at most PENDING_BYTES).
        self.pending_bytes = 0

    def note(self, up: UploadKey, part: int, stamp: PartStamp, data: bytes,
             full_blocks: list[tuple[bytes, int]], existed: bool) -> None:
        """A part was placed (``existed``: it replaced a saved one)."""
        with self._lock:
            st = self._states.get(up)
            if st is None:
                if existed:
                    return  # parts saved earlier were not seen by this state; hash at finalize
                st = self._states[up] = _UploadState()
            if part in st.saved or existed:
                st.broken = True
                self._drop_pending(st)
            st.saved[part] = stamp
            if (not st.broken and 0 <= part - st.next_part < PENDING_PARTS
                    and self.pending_bytes + len(data) <= PENDING_BYTES):
                st.pending[part] = (data, full_blocks)
                self.pending_bytes += len(data)

    def forget(self, up: UploadKey) -> None:
        """The upload's parts changed or went: drop its state."""
        with self._lock:
            st = self._states.pop(up, None)
            if st:
                st.broken = True
                self._drop_pending(st)

    def _drop_pending(self, st: _UploadState) -> None:
        """Forget the bytes an upload holds for hashing (caller holds ``_lock``)."""
        self.pending_bytes -= sum(len(d) for d, _ in st.pending.values())
        st.pending.clear()

    def advance(self, up: UploadKey) -> None:
        """Feed contiguous saved parts into the upload's hashers (whoever gets the lock)."""
        with self._lock:
            state = self._states.get(up)
        if state is None:
            return
        for _ in range(1_000_000):
            if state.broken or not state.lock.acquire(blocking=False):
                return
            try:
                while not state.broken:
                    k = state.next_part
                    with self._lock:
                        stamp = state.saved.get(k)
                        held = state.pending.pop(k, None)
                        if held is not None:
                            self.pending_bytes -= len(held[0])
                    if stamp is None:
                        break
                    if held is not None:
                        data, full_blocks = held
                    else:
                        full_blocks = []
                        read = self.content.read_part(up, k)
                        if read is None or len(read) != stamp.size:
                            state.broken = True
                            break
                        data = read
                    state.hasher.update(data, full_blocks)
                    state.fed[k] = stamp
                    state.next_part = k + 1
            finally:
                state.lock.release()
            with self._lock:
                # Re-check after releasing: a part may have arrived while we held the lock.
                if state.broken or state.next_part not in state.saved:
                    return

    def hashes(self, up: UploadKey, stamps: list[PartStamp]) -> Hashes | None:
        """The hashes of exactly these part versions, if they were all fed; else None."""
        with self._lock:
            state = self._states.get(up)
        if state is None:
            return None
        with state.lock:
            if state.broken or state.next_part != len(stamps):
                return None
            if any(state.fed.get(i) != s for i, s in enumerate(stamps)):
                return None
            # A copy: a failed finalize (bad MD5) must leave the upload usable.
            return state.hasher.copy().result()


    def resume(self, up: UploadKey, stamps: list[PartStamp]) -> tuple[Hasher, int] | None:
        """Where finalize may continue hashing: a copy of the upload's hasher and how many
        parts it was fed, when every part it was fed is one of these versions; else None.

        Parts saved through another process (another node of a shared store) never reach
        this state, so it stops at the first of them: finalize reads the rest from the
        content backend instead of hashing the whole upload again.
        """
        with self._lock:
            state = self._states.get(up)
        if state is None:
            return None
        with state.lock:
            n = state.next_part
            if state.broken or n == 0 or n > len(stamps):
                return None
            if any(state.fed.get(i) != stamps[i] for i in range(n)):
                return None
            return state.hasher.copy(), n


class Parts:
    """Saving the parts of uploads."""

    def __init__(self, txn: TxRunner, content: ContentBackend, users: Users,
                 lifetime: Lifetime, states: UploadStates, limits: Limits) -> None:
        self.txn = txn
        self.content = content
        self.users = users
        self.lifetime = lifetime
        self.states = states
        self.limits = limits

    def save(self, uid: int, file_id: int, part: int, total: int | None, data: bytes, *,
             big: bool) -> bool:
        """Save one part; ``total`` is saveBigFilePart's ``file_total_parts`` (None for
        saveFilePart).

        Raises InvalidArgument, FilePartEmpty, FilePartTooBig, FilePartInvalid,
        FilePartsInvalid, FilePartSizeInvalid, FilePartSizeChanged, NotFound (no user).
        """
        up = UploadKey(uid, file_id_key(file_id))
        if not isinstance(data, bytes | bytearray | memoryview):
            raise errors.InvalidArgument(f"part data must be bytes, not {type(data).__name__}")
        data = bytes(data) if not isinstance(data, bytes) else data
        protocol.check_part_payload(len(data))
        max_parts = self.limits.max_parts(self.users.premium(uid))
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
        # Write outside the lock; place it inside so that the part and its row change
        # together as far as this process can tell.
        staged = self.content.stage_part(data, sync=part >= SYNC_AT_FINALIZE_PARTS)
        try:
            with self.txn.run() as tx:
                self.lifetime.maybe_sweep(tx)
                self._check_new_part(tx, up, part, total, len(data), big)
                known_total = total if total != protocol.TOTAL_PARTS_UNKNOWN else None
                tx.ensure_upload(up, known_total)
                existed = tx.part_exists(up, part)
                tx.put_part(up, PartRow(part, len(data), tx.now))
                stamp = self.content.place_part(staged, up, part)
                self.states.note(up, part, stamp, data, full_blocks, existed)
        except BaseException:
            self.content.drop_staged(staged)
            raise
        self.states.advance(up)
        return True

    def _check_new_part(self, tx: MetaTx, up: UploadKey, part: int, total: int | None,
                        size: int, big: bool) -> None:
        """Check a part against the live parts of its upload (expired ones dropped first)."""
        self.lifetime.expire_upload(tx, up)
        row = tx.upload(up)
        known = row.total_parts if row else None
        if big and total != protocol.TOTAL_PARTS_UNKNOWN and known is not None and known != total:
            raise errors.FilePartsInvalid(
                f"file_total_parts {total} disagrees with {known} given before")
        if known is not None and part >= known:
            raise errors.FilePartInvalid(f"part {part} is not below file_total_parts {known}")
        # The two highest other parts summarize the upload's layout (see docs/protocol.md):
        # the highest may be the last part, the next one has the part size.
        others = tx.highest_other_parts(up, part, 2)
        if big and total is not None and total != protocol.TOTAL_PARTS_UNKNOWN and others:
            if others[0].part >= total:
                raise errors.FilePartsInvalid(
                    f"part {others[0].part} was saved, beyond file_total_parts {total}")
        sizes = {p.part: p.size for p in others}
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
