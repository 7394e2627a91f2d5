"""A trio nursery whose lone error leaves as itself.

Trio wraps every error that leaves a nursery in an ``ExceptionGroup``.  The callers of the
read path, the uploader and the server's handlers catch domain errors
(:class:`fsmount.errors.FsmountError` subclasses) to turn them into an errno, a JSON error
or one CLI line; a group around one such error would reach them as an unknown exception
(a traceback, EIO, or a 500).  :func:`open_nursery` hands back a lone error as itself;
several errors at once stay a group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """Like :func:`trio.open_nursery`; raises the error itself when exactly one escaped."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
