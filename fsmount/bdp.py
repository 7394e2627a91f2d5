"""Bandwidth-delay product of the link to the store, as the read path observes it.

Read-ahead must keep about one bandwidth-delay product of fetches in flight: on loopback a
few MiB keep the store busy, but over a 100 ms link whose connections each carry at most a
TCP window per round trip, a fixed 16 MiB window caps a sequential read far below what the
link can carry.  :class:`LinkEstimator` measures the link the way BBR does, from the
fetches themselves, without probes of its own:

* every run of windows the reader fetches is a delivery-rate sample: the bytes *all*
  fetches delivered while this one was in flight, divided by its duration (so parallel
  fetches over several connections count together); the estimate is the highest recent
  sample;
* the latency is the shortest duration of a whole run of the size the reader sends now,
  over the last :data:`LATENCY_HORIZON` seconds (the link's round trip plus one run's
  transfer, with as little queueing as was seen; runs of each size are their own samples,
  since a larger run takes longer on a window-limited connection).  The horizon is long on purpose: once more in flight only
  queues, every run takes longer, and a minimum over recent runs alone would follow the
  queue up and let the window grow again.

:meth:`LinkEstimator.target` is then ``gain`` × rate × latency.  While read-ahead is what
limits the rate (rate = in-flight / latency, Little's law), the target is ``gain`` times
what is in flight, so the window grows geometrically; once the link is the limit, the rate
stops growing and so does the target, at about ``gain`` bandwidth-delay products.  The
callers clamp it between the configured read-ahead and its maximum.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: Rate samples kept (the newest ones).
SAMPLES = 32
#: How long a latency sample counts, in seconds.
LATENCY_HORIZON = 120.0
#: Target in-flight bytes as a multiple of the estimated bandwidth-delay product.
GAIN = 2.0


@dataclass(frozen=True)
class Ticket:
    """One fetch in flight: when it was sent and what the link had delivered by then."""

    sent: float
    delivered: int


class LinkEstimator:
    """Delivery rate and latency of one link, from the fetches made over it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, gain: float = GAIN) -> None:
        self._clock = clock
        self.gain = gain
        self.delivered = 0  #: bytes delivered by every fetch so far
        self._rates: deque[float] = deque(maxlen=SAMPLES)
        #: Per run size in bytes: (time, duration) of whole runs, durations increasing (a
        #: monotonic queue, so the oldest entry is the minimum over the horizon).
        self._latencies: dict[int, deque[tuple[float, float]]] = {}

    def begin(self) -> Ticket:
        """Note a fetch being sent."""
        return Ticket(self._clock(), self.delivered)

    def end(self, ticket: Ticket, nbytes: int, *, full: bool = True) -> None:
        """Note that the fetch of ``ticket`` delivered ``nbytes``.  ``full``: it delivered
        all it asked for, so its duration is a latency sample for runs of ``nbytes`` (a
        short one at the end of a file says less about the link)."""
        self.delivered += nbytes
        now = self._clock()
        elapsed = now - ticket.sent
        if elapsed <= 0 or nbytes <= 0:
            return
        self._rates.append((self.delivered - ticket.delivered) / elapsed)
        if full:
            lat = self._latencies.setdefault(nbytes, deque())
            while lat and lat[-1][1] >= elapsed:
                lat.pop()  # never the minimum again while this newer, shorter one counts
            lat.append((now, elapsed))

    @property
    def rate(self) -> float:
        """Highest recent delivery rate in bytes per second (0 before any sample)."""
        return max(self._rates, default=0.0)

    def latency(self, run_bytes: int | None = None) -> float:
        """Shortest duration of a whole run of ``run_bytes`` (or of the nearest size sampled;
        of any size when None) within the horizon, in seconds (0 before any)."""
        cutoff = self._clock() - LATENCY_HORIZON
        best: float | None = None
        sizes = sorted(self._latencies, key=lambda n: abs(n - (run_bytes or n)))
        for size in sizes:
            lat = self._latencies[size]
            while len(lat) > 1 and lat[0][0] < cutoff:
                lat.popleft()
            if run_bytes is not None:
                return lat[0][1]
            best = lat[0][1] if best is None else min(best, lat[0][1])
        return best or 0.0

    def target(self, floor: int, ceiling: int, run_bytes: int | None = None) -> int:
        """Bytes of read-ahead to keep in flight when fetching in runs of ``run_bytes``:
        ``gain`` bandwidth-delay products, clamped to ``floor`` .. ``ceiling``."""
        want = int(self.gain * self.rate * self.latency(run_bytes))
        return max(floor, min(ceiling, want))


__all__ = ["GAIN", "LATENCY_HORIZON", "SAMPLES", "LinkEstimator", "Ticket"]
