"""Retention of sent parts until their segment is finalized, in memory or in spill files.

A segment's parts stay available until its finalize succeeds so that a part the store
reports missing (``FILE_PART_X_MISSING``, e.g. after the part lifetime ran out) can be sent
again.  Each segment keeps a :class:`RetainedParts`: parts in memory as far as the
:class:`RetainBudget` (shared by all a mount's uploads) allows, the rest on their way to or
in the segment's :class:`~fsmount.upload.spill.SpillFile`.  :meth:`RetainedParts.release`
drops them all once the segment is finalized (or the upload failed).

The :class:`Spiller` task copies the parts the budget had no room for to their spill files,
in a thread and beside the part sends, not before them: a spill write that is slow (on a
busy machine, a thread's write waits for the CPU and the GIL behind the store's hashing
threads) only fills the spill queue (bounded: :data:`SPILL_QUEUE`) instead of starving the
part workers (see docs/performance.md).  Everything here runs on the trio thread except the
file writes themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import trio

from .. import protocol
from .policy import part_offset
from .spill import SpillFile, SpillWrite, spill_writes

log = logging.getLogger(__name__)

#: Bytes of sent-but-unfinalized parts an upload keeps in memory before it spills to disk,
#: unless it is given a :class:`RetainBudget` shared with other uploads.
RETAIN_IN_MEMORY = 4 * protocol.MIB
#: Memory a mount's streaming uploads may keep their sent-but-unfinalized parts in, together
#: (beyond it, parts go to spill files).  Writing through the kernel already costs the mount
#: more CPU than ``fsmount put``; writing every part a second time, to a spill file, cost
#: another ~1 s of CPU per GiB (docs/performance.md).
DEFAULT_WRITE_MEMORY = 96 * protocol.MIB
#: Parts queued for the spill file (at most this many are held in memory for it).
SPILL_QUEUE = 16
#: Queued parts the spiller writes in one thread call at most.
SPILL_BATCH = 8


class RetainBudget:
    """Bytes of sent-but-unfinalized parts that uploads may keep in memory, together.

    A mount gives one to all its streaming uploads, so that memory stays bounded however
    many files are written at once; a part that does not fit goes to its upload's spill
    file instead.  Used from the trio thread only.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (nothing reserved) if they do not fit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


@dataclass(eq=False)
class RetainedParts:
    """The sent parts of one segment kept until its finalize, by part number."""

    #: Parts kept in memory (counted in the budget).
    memory: dict[int, bytes] = field(default_factory=dict)
    #: Parts on their way to the spill file.
    spilling: dict[int, bytes] = field(default_factory=dict)
    #: Parts written to the spill file (at ``part_offset(number)``).
    spilled: set[int] = field(default_factory=set)
    spill: SpillFile | None = None
    #: Spill writes running in a thread right now (the file is closed when they end).
    writing: int = 0
    released: bool = False

    def keep(self, number: int, data: bytes, budget: RetainBudget) -> bool:
        """Retain part ``number``: in memory if the budget has room, else queued for the
        spill file.  True if the caller must hand it to the :class:`Spiller`."""
        if budget.take(len(data)):
            self.memory[number] = data
            return False
        self.spilling[number] = data
        return True

    def get(self, number: int, size: int) -> bytes | None:
        """Part ``number`` (``size`` bytes) from memory or the spill file; None if not
        retained.

        Synchronous on purpose: a finalize that releases the spill file cannot run in the
        middle of it.

        Raises:
            OSError: reading the spill file failed.
        """
        data = self.memory.get(number)
        if data is None:
            data = self.spilling.get(number)
        if data is not None:
            return data
        if number in self.spilled and self.spill is not None:
            return self.spill.read(size, part_offset(number))
        return None

    def release(self) -> tuple[int, SpillFile | None]:
        """Drop retained data.

        Returns the bytes freed from the memory budget and the spill file for the caller to
        close (in a thread: closing an unlinked file drops its pages, which can take a
        while), or None if there is none or a spill write still uses it (the spiller closes
        it then).
        """
        freed = sum(len(b) for b in self.memory.values())
        self.memory.clear()
        self.spilling.clear()
        self.spilled.clear()
        self.released = True
        spill = None
        if self.spill is not None and self.writing == 0:
            spill, self.spill = self.spill, None
        return freed, spill


class SpillJob(NamedTuple):
    """A part :meth:`RetainedParts.keep` queued for the spill file."""

    parts: RetainedParts
    number: int


class _Batch(NamedTuple):
    parts: RetainedParts
    spill: SpillFile
    number: int
    data: bytes


class Spiller:
    """The task that writes the parts a memory budget had no room for to their segment's
    spill file.  Start it with :meth:`start`; queue parts on :attr:`inbox` (bounded)."""

    def __init__(self, new_file: Callable[[], SpillFile]) -> None:
        self._new_file = new_file
        self.inbox, self._recv = trio.open_memory_channel[SpillJob](SPILL_QUEUE)

    @classmethod
    def start(cls, nursery: trio.Nursery, new_file: Callable[[], SpillFile],
              on_error: Callable[[Exception], None]) -> Spiller:
        """Start the spiller in ``nursery``.  ``new_file()`` (blocking, run in a thread)
        makes a segment's spill file; a failure (a full cache directory) is handed to
        ``on_error`` and ends the task."""
        spiller = cls(new_file)
        nursery.start_soon(spiller._run, on_error)
        return spiller

    def close(self) -> None:
        """Stop accepting parts (an upload that ended: a sender blocked on :attr:`inbox`
        gets ``BrokenResourceError``)."""
        self._recv.close()

    async def _run(self, on_error: Callable[[Exception], None]) -> None:
        try:
            await self._loop()
        except Exception as exc:  # noqa: BLE001 - handed to the upload, raised to its writer
            on_error(exc)

    async def _loop(self) -> None:
        # Parts queued together are written in one thread call: one hand-off per batch
        # instead of one per part.
        async for first in self._recv:
            batch = [first]
            while len(batch) < SPILL_BATCH:
                try:
                    batch.append(self._recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            jobs: list[_Batch] = []
            for parts, number in batch:
                data = parts.spilling.get(number)
                if parts.released or data is None:
                    continue
                if parts.spill is None:
                    new = await trio.to_thread.run_sync(self._new_file)
                    if parts.released:
                        await trio.to_thread.run_sync(new.close)
                        continue
                    parts.spill = new
                jobs.append(_Batch(parts, parts.spill, number, data))
            if not jobs:
                continue
            for job in jobs:
                job.parts.writing += 1
            try:
                await trio.to_thread.run_sync(
                    spill_writes,
                    [SpillWrite(j.spill, j.data, part_offset(j.number)) for j in jobs])
            finally:
                for job in jobs:
                    job.parts.writing -= 1
            for parts, spill, number, _data in jobs:
                if parts.released:
                    # Finalized (or failed) meanwhile: the file is ours to close.
                    if parts.spill is spill and parts.writing == 0:
                        parts.spill = None
                        await trio.to_thread.run_sync(spill.close)
                    continue
                parts.spilled.add(number)
                parts.spilling.pop(number, None)
