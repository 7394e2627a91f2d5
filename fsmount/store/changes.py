"""The change log: every namespace change of a user, in order, for the change feed.

Each change of the tree (:mod:`fsmount.store.namespace`) appends a row to the user's log
through :meth:`ChangeLog.record`, *in the transaction of the change*, so the log never
misses a committed change nor reports one that rolled back.  The rows live in the metadata
backend (:meth:`fsmount.store.meta.MetaTx.log_change` and the queries after it), whose
cursor increases over the whole store and is never reused.

Retention is bounded: each user keeps its newest :data:`CHANGE_LOG_KEEP` rows (pruned every
:data:`PRUNE_EVERY` cursors).  A client whose cursor is older than what is kept (or newer
than the store's: another store, a restored backup) gets a *reset*: drop everything cached.

Long polls (:meth:`ChangeLog.get_changes`) wait on a ``threading.Condition`` that every
commit of a transaction that logged a change notifies (an ``after_locked`` effect), so a
waiter wakes as soon as the change is visible; the wait is bounded by its timeout and ends
at once when the store closes.  Commits of other processes: the metadata backend wakes the
waiters when it can hear them (PostgreSQL: LISTEN/NOTIFY, :meth:`ChangeLog.wake` called
from its listening thread), and a waiter looks at the log itself every :attr:`ChangeLog.poll`
seconds too -- what :meth:`fsmount.store.meta.MetaBackend.watch_changes` answered: 0.05 s
for SQLite (``fsmount put`` on a mounted store cannot notify), 0.5 s for PostgreSQL (only
a listener that is reconnecting misses notifications).
"""

from __future__ import annotations

import math
import threading
import time

from .. import errors
from ..remote import MAX_CHANGES_TIMEOUT, ChangeBatch
from .meta import MetaTx
from .rows import ChangeRecord
from .txn import TxRunner

__all__ = ["CHANGE_BATCH", "CHANGE_LOG_KEEP", "PRUNE_EVERY", "ChangeLog"]

#: Changes kept per user; a client more than this far behind is told to reset.
CHANGE_LOG_KEEP = 10_000
#: The log of the writing user is pruned when a cursor is a multiple of this.
PRUNE_EVERY = 64
#: Seconds between looks at the log for changes other processes committed (the default
#: of :attr:`ChangeLog.poll`).
OTHER_WRITERS_POLL = 0.05
#: Most changes one answer carries (the client asks again from the cursor answered).
CHANGE_BATCH = 1000


class ChangeLog:
    """The store's change log and its long-poll wake-ups (thread-safe)."""

    def __init__(self, txn: TxRunner, keep: int = CHANGE_LOG_KEEP) -> None:
        self.txn = txn
        #: Changes kept per user (tests lower it to reach a reset cheaply).
        self.keep = keep
        self._cond = threading.Condition()
        #: Bumped on every commit that logged a change, and at close.
        self._generation = 0
        self._closed = False
        #: Seconds between a waiter's own looks at the log (other processes' commits).
        self.poll = OTHER_WRITERS_POLL

    def record(self, tx: MetaTx, uid: int, change: ChangeRecord) -> None:
        """Log ``change`` in ``tx`` and wake the long polls once it commits."""
        cursor = tx.log_change(uid, change)
        if cursor % PRUNE_EVERY == 0:
            tx.prune_changes(uid, self.keep)
        tx.after_locked.append(self.wake)

    def wake(self) -> None:
        """A change was committed (here, or by another process): wake the waiters."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def close(self) -> None:
        """End every wait at once (the store is closing)."""
        with self._cond:
            self._closed = True
            self._generation += 1
            self._cond.notify_all()

    def get_changes(self, uid: int, cursor: int | None, timeout: float) -> ChangeBatch:
        """See :meth:`fsmount.remote.Remote.get_changes` (blocking: call from a thread).

        Raises InvalidArgument (a cursor that is not a non-negative integer, a timeout
        not in 0..MAX_CHANGES_TIMEOUT), InvalidArgument (the store is closed).
        """
        if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int)
                                   or cursor < 0):
            raise errors.InvalidArgument(f"cursor must be a non-negative integer, not {cursor!r}")
        if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                or not math.isfinite(timeout) or not 0 <= timeout <= MAX_CHANGES_TIMEOUT):
            raise errors.InvalidArgument(
                f"timeout must be in 0..{MAX_CHANGES_TIMEOUT:g} seconds, not {timeout!r}")
        if cursor is None:
            with self.txn.run(write=False) as tx:
                return ChangeBatch(tx.change_cursor())
        deadline = time.monotonic() + timeout
        batch = ChangeBatch(cursor)
        seen = -1  # the store's cursor at the last read
        for _ in range(1_000_000):  # bounded: each turn waits or answers
            with self._cond:
                generation = self._generation
            if seen < 0 or self._latest() != seen:
                batch = self._read(uid, cursor)
                if batch.changes or batch.reset:
                    return batch
                seen = batch.cursor
            with self._cond:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return batch
                if self._generation == generation:
                    # Woken by a commit here, or after a while to look for other processes'.
                    self._cond.wait(min(left, self.poll))
                if self._closed:
                    return batch
        return batch

    def _latest(self) -> int:
        """The store's newest cursor (one small read: what a waiter looks at)."""
        with self.txn.run(write=False) as tx:
            return tx.change_cursor()

    def _read(self, uid: int, cursor: int) -> ChangeBatch:
        """One snapshot: the changes after ``cursor``, or a reset, or none."""
        with self.txn.run(write=False) as tx:
            latest = tx.change_cursor()
            if cursor > latest or cursor < tx.change_floor(uid):
                return ChangeBatch(latest, reset=True)
            changes = tx.changes_after(uid, cursor, CHANGE_BATCH)
        if len(changes) == CHANGE_BATCH:
            return ChangeBatch(changes[-1].cursor, tuple(changes))
        # The whole rest up to ``latest`` was read in the same snapshot: nothing of this
        # user's lies between the last change and it.
        return ChangeBatch(latest, tuple(changes))
