"""The mount's follower of the store's change feed (``Remote.get_changes``).

While the feed is healthy the mount trusts what it has cached (attributes, directory
entries, listings) until the feed says otherwise, and gives the kernel long timeouts; when
it is not, the mount falls back to short timeouts.  This module decides which of the two
holds and tells the filesystem through :class:`FeedTarget` (implemented by
:mod:`fsmount.fuse_ops`, which alone talks to the kernel):

* at start the follower reads the current cursor (``cursor=None``), then has the target
  drop everything it cached before that point (:meth:`FeedTarget.feed_up`), so that what
  it caches from then on is covered by the feed;
* it long-polls from the cursor (:data:`POLL_TIMEOUT` seconds; the server answers within
  that even with no change) and hands every batch of changes to
  :meth:`FeedTarget.apply_changes`, which invalidates exactly what changed;
* a poll that fails (a broken connection, an error answer), does not answer within
  ``POLL_TIMEOUT + POLL_MARGIN`` (a feed that died silently), or answers *reset* (the
  cursor fell out of the log) makes the target fall back (:meth:`FeedTarget.feed_down`:
  short timeouts, everything cached dropped) and the follower start over from the current
  cursor.  A server without the feed (``NotFound``: older than the feed) is asked again
  only every :data:`UNSUPPORTED_RECHECK` seconds.

So nothing stale is trusted for longer than ``POLL_TIMEOUT + POLL_MARGIN`` after the feed
is lost, plus the short timeout (docs/SEMANTICS.md, "Caches and the change feed").  One log
line says when the mount falls back, one when it follows the feed again.  Retries of the
transport stay in the transport (:mod:`fsmount.httpremote`): a failed start is tried again
after :data:`RESTART_INTERVAL`, a fixed pace, not a back-off.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import trio

from . import errors
from .remote import Change, Remote

__all__ = ["POLL_MARGIN", "POLL_TIMEOUT", "FeedFollower", "FeedTarget", "start_feed_follower"]

log = logging.getLogger(__name__)

#: Seconds each long poll may wait on the server for a change.
POLL_TIMEOUT = 5.0
#: A poll that has not answered this long after its timeout counts as a lost feed.
POLL_MARGIN = 2.0
#: Seconds between attempts to start following again after a failure.
RESTART_INTERVAL = 1.0
#: Seconds between asks of a server that had no change feed.
UNSUPPORTED_RECHECK = 60.0


class FeedTarget(Protocol):
    """What the follower drives: the filesystem's caches (see :mod:`fsmount.fuse_ops`)."""

    async def apply_changes(self, changes: Sequence[Change]) -> None:
        """Invalidate what these changes (oldest first) touched."""
        ...

    async def feed_up(self) -> None:
        """The feed is followed from now on: drop everything cached so far, then trust
        what is cached until the feed says otherwise (long timeouts)."""
        ...

    async def feed_down(self) -> None:
        """The feed is lost: short timeouts from now on, and drop everything cached."""
        ...


class FeedFollower:
    """Follows one remote's change feed for one target (run it with :meth:`run`)."""

    def __init__(self, remote: Remote, target: FeedTarget, *,
                 poll_timeout: float = POLL_TIMEOUT, poll_margin: float = POLL_MARGIN,
                 restart_interval: float = RESTART_INTERVAL,
                 unsupported_recheck: float = UNSUPPORTED_RECHECK) -> None:
        self.remote = remote
        self.target = target
        self.poll_timeout = poll_timeout
        self.poll_margin = poll_margin
        self.restart_interval = restart_interval
        self.unsupported_recheck = unsupported_recheck
        #: Whether the target trusts its caches now (tests and the status read it).
        self.healthy = False
        #: Batches applied and fallbacks so far (tests read them).
        self.batches = 0
        self.fallbacks = 0
        self._said_down: str | None = None

    async def run(self) -> None:
        """Follow until cancelled; never raises but Cancelled."""
        while True:
            cursor = await self._start()
            if cursor is None:
                continue
            await self._follow(cursor)

    async def _start(self) -> int | None:
        """Read the current cursor and bring the target up; None after a failure (waited)."""
        try:
            with trio.fail_after(self.poll_timeout + self.poll_margin):
                batch = await self.remote.get_changes(None, 0)
        except trio.TooSlowError:
            self._down_line("no answer from the change feed")
            await trio.sleep(self.restart_interval)
            return None
        except errors.NotFound:
            self._down_line("the server has no change feed (getChanges)")
            await trio.sleep(self.unsupported_recheck)
            return None
        except errors.FsmountError as exc:  # TransportError and the rest
            self._down_line(f"the change feed cannot be read ({exc})")
            await trio.sleep(self.restart_interval)
            return None
        await self.target.feed_up()
        self.healthy = True
        if self._said_down is not None:
            log.warning("change feed: following the server's feed again; attributes and "
                        "entries are trusted until it reports a change")
        else:
            log.info("change feed: following from cursor %d", batch.cursor)
        self._said_down = None
        return batch.cursor

    async def _follow(self, cursor: int) -> None:
        """Poll from ``cursor`` until the feed is lost (then the target is down)."""
        while True:
            why: str | None = None
            try:
                with trio.fail_after(self.poll_timeout + self.poll_margin):
                    batch = await self.remote.get_changes(cursor, self.poll_timeout)
            except trio.TooSlowError:
                why = (f"no answer from the change feed within "
                       f"{self.poll_timeout + self.poll_margin:g} s")
            except errors.FsmountError as exc:
                why = f"the change feed failed ({exc})"
            else:
                if batch.reset:
                    why = "the change feed was reset (this mount fell behind its log)"
                elif batch.changes:
                    await self.target.apply_changes(batch.changes)
                    self.batches += 1
                if why is None:
                    cursor = batch.cursor
                    continue
            await self._fall_back(why)
            return

    async def _fall_back(self, why: str) -> None:
        self.healthy = False
        self.fallbacks += 1
        await self.target.feed_down()
        self._down_line(why)

    def _down_line(self, why: str) -> None:
        """One log line per outage (not one per failed attempt)."""
        if self._said_down is None:
            log.warning("change feed: %s; trusting attributes and entries for 1 s only "
                        "until it is back", why)
            self._said_down = why


def start_feed_follower(nursery: trio.Nursery, remote: Remote, target: FeedTarget,
                        **options: float) -> FeedFollower:
    """Start following ``remote``'s feed for ``target`` in ``nursery``; ``options`` go to
    :class:`FeedFollower` (timeouts, for tests)."""
    follower = FeedFollower(remote, target, **options)
    nursery.start_soon(follower.run, name="change feed")
    return follower
