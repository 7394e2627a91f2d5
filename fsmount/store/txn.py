"""The transaction runner: one metadata transaction at a time, and what runs around it.

Every state change of the store is one transaction of the metadata backend
(:mod:`fsmount.store.meta`), run under the store's lock by :meth:`TxRunner.run`.  Around the
commit it passes the test hook points, makes the commit durable when the transaction asks
(before files it unreferenced are deleted), and runs the transaction's effects: files
cleaned up after the commit (under the lock, or without it), renames undone on rollback.
Backend exceptions leave as the domain errors the backend maps them to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .. import errors
from .hooks import HookPoint, StoreHooks
from .meta import MetaBackend, MetaTx

__all__ = ["TxRunner"]


class TxRunner:
    """Runs the transactions of one open store (thread-safe; re-entrant from callbacks)."""

    def __init__(self, meta: MetaBackend, clock: Callable[[], float],
                 hooks: StoreHooks) -> None:
        self.meta = meta
        self.clock = clock
        self.hooks = hooks
        #: Held for each transaction and for the ``after_locked`` effects.
        self.lock = threading.RLock()
        self.closed = False

    @contextmanager
    def run(self, *, write: bool = True) -> Iterator[MetaTx]:
        """One transaction under the store lock.

        Raises:
            InvalidArgument: the store is closed.
            StoreLocked, InvalidArgument, FsmountError, OSError: what the backend's errors
                map to (busy, damaged, full, ...).
        """
        if self.closed:
            raise errors.InvalidArgument("the store is closed")
        meta, hooks = self.meta, self.hooks
        after: list[Callable[[], None]] = []
        with self.lock:
            try:
                tx = meta.begin(self.clock(), write=write)
            except Exception as exc:
                mapped = meta.domain_error(exc)
                if mapped is None:
                    raise
                raise mapped from exc
            try:
                yield tx
                if write:
                    hooks.reached(HookPoint.COMMIT)  # every write transaction, before COMMIT
                meta.commit(tx)
                if write:
                    hooks.reached(HookPoint.COMMITTED)  # ... and after, before any cleanup
                if tx.sync_before_cleanup:
                    # Blob files go only once the commit that dropped them is durable, so a
                    # power cut can never leave a reference to a deleted blob.
                    meta.make_durable()
                if tx.hook_after is not None:
                    hooks.reached(tx.hook_after)
            except BaseException as exc:
                meta.rollback(tx)
                try:
                    # Still under the write lock of a shared database: no other process
                    # sees what these undo.
                    for fn in tx.on_rollback:
                        try:
                            fn()
                        except OSError:
                            pass
                finally:
                    meta.release(tx)
                mapped = meta.domain_error(exc)
                if mapped is not None:
                    raise mapped from exc
                raise
            try:
                for fn in tx.after_locked:
                    fn()
            finally:
                meta.release(tx)
            after = tx.after
        for fn in after:
            fn()
