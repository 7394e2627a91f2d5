"""Node ids taken from the store in batches, so that a create needs no round trip.

The kernel wants a new file's inode number in the answer to ``create``, and a mount's inode
numbers are the store's node ids.  Instead of asking the store for each new node (a round
trip per file, before the first byte is written), the mount reserves ids in batches
(:meth:`fsmount.remote.Remote.reserve_node_ids`, as JuiceFS's clients take inode numbers
from their metadata engine) and creates the node with its id later, together with its
content (``put_file(node_id=...)``) at close.

Design: a :class:`NodeIdPool` holds the ids left of the batches reserved so far.
:meth:`NodeIdPool.take` hands one out at once while any are left; below a low-water mark a
background task (started by :func:`start_id_pool` in the mount's nursery) reserves the
next batch, so that a steady stream of creates (``tar x``) never waits for one.  Only when
the pool runs dry does ``take`` wait for the reservation in flight.  A store that does not
know the call (an older server) turns the pool off: ``take`` answers None and the mount
creates nodes with a round trip as before.  Ids left at unmount are never used: gaps.
"""

from __future__ import annotations

import logging

import trio

from . import errors
from .remote import Remote

log = logging.getLogger(__name__)

#: Ids reserved per call.
BATCH = 1024
#: Below this many ids left, the next batch is reserved in the background.
LOW_WATER = 256


class NodeIdPool:
    """Reserved node ids, handed out one at a time.  Build with :func:`start_id_pool`."""

    def __init__(self, remote: Remote, batch: int = BATCH, low_water: int = LOW_WATER) -> None:
        self._remote = remote
        self._batch = batch
        self._low = low_water
        #: Reserved ranges not yet handed out: [next, end).
        self._ranges: list[tuple[int, int]] = []
        self._left = 0
        self._wanted = trio.Event()
        self._refilled = trio.Event()
        #: False once the store said it does not know reserveNodeIds.
        self.supported = True
        #: The last reservation's failure (a transport error), reported to a waiting take.
        self._error: BaseException | None = None

    def _add(self, first: int, count: int) -> None:
        self._ranges.append((first, first + count))
        self._left += count

    def take_nowait(self) -> int | None:
        """An id if one is left (asking for the next batch when few are), else None."""
        if self._left <= self._low:
            self._wanted.set()
        if not self._ranges:
            return None
        start, end = self._ranges[0]
        if start + 1 >= end:
            self._ranges.pop(0)
        else:
            self._ranges[0] = (start + 1, end)
        self._left -= 1
        return start

    async def take(self) -> int | None:
        """An id to create a node with, or None when the store cannot reserve ids (the
        caller creates the node the old way).  Waits for a reservation only when none is
        left.

        Raises the remote's transport errors when the store cannot be reached.
        """
        for _ in range(3):
            got = self.take_nowait()
            if got is not None or not self.supported:
                return got
            refilled = self._refilled
            self._wanted.set()
            await refilled.wait()
            if self._error is not None and not self._ranges:
                raise self._error
        return self.take_nowait()

    async def run(self) -> None:
        """Reserve a batch whenever asked (the pool's background task)."""
        while self.supported:
            await self._wanted.wait()
            self._wanted = trio.Event()
            try:
                first = await self._remote.reserve_node_ids(self._batch)
            except (errors.InvalidArgument, errors.NotFound, AttributeError) as exc:
                # An older store: no such call.  Creates go to the store one by one.
                log.info("the store cannot reserve node ids (%s): creates are not deferred",
                         exc)
                self.supported = False
            except errors.FsmountError as exc:
                self._error = exc
            else:
                self._error = None
                self._add(first, self._batch)
            self._refilled.set()
            self._refilled = trio.Event()


def start_id_pool(nursery: trio.Nursery, remote: Remote, **options: int) -> NodeIdPool:
    """A pool of reserved node ids whose refills run in ``nursery``; the first batch is
    asked for at once."""
    pool = NodeIdPool(remote, **options)
    pool._wanted.set()
    nursery.start_soon(pool.run, name="node id pool")
    return pool
