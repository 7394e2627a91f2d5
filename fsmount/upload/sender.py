"""The part sender: saving parts in the store with bounded concurrency, and finalizing segments.

Everything that talks to the store on an upload's behalf, for the streaming uploader and the
REST server alike:

* :func:`save_part` saves one part with the call the segment policy picks
  (``saveFilePart`` or ``saveBigFilePart``);
* :class:`PartSender` is a pool of workers reading parts from one bounded channel (so a
  producer waits for the store: back-pressure), started by :meth:`PartSender.start` in the
  caller's nursery; a worker's failure goes to the caller's ``on_error`` and each saved
  part to its ``on_saved``.  At least ``parallel`` parts are in flight, and more, up to
  :data:`PARALLEL_MAX`, where the link's bandwidth-delay product asks for it: each save is
  a sample of the remote's :class:`~fsmount.bdp.LinkEstimator` (one per remote, shared by
  its uploads), as reads size their read-ahead (over a 100 ms link whose connections each
  carry a TCP window per round trip, four 512 KiB parts in flight carry 20 MB/s);
* :func:`send_parts` saves (or re-sends) a set of parts, at most ``parallel`` at a time;
* :func:`finalize_segment` finalizes one segment (``uploadMedia``), sending parts again that
  the store reports missing, as the policy says, when the caller can still produce them.

Retries of a failed call are the transport's business (fsmount.httpremote); a part re-sent
here is one the store lost, not one whose request failed.  :func:`cached_config` remembers
the store's limits per remote, :func:`new_file_id` names a new segment.
"""

from __future__ import annotations

import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, Protocol, TypeVar

import trio

from .. import errors
from ..bdp import LinkEstimator
from ..nursery import open_nursery
from ..remote import Document, InputFile, InputFileBig, Remote, UserConfig
from . import policy

log = logging.getLogger(__name__)

#: Parts saved at once per upload, unless the caller says otherwise.
DEFAULT_PARALLEL = 4
#: Parts a PartSender may grow to in flight where the link's bandwidth-delay product asks.
PARALLEL_MAX = 32
_links: weakref.WeakKeyDictionary[Remote, LinkEstimator] = weakref.WeakKeyDictionary()


def upload_link(remote: Remote) -> LinkEstimator:
    """The estimator of the upload direction of ``remote``'s link (one per remote)."""
    try:
        link = _links.get(remote)
        if link is None:
            link = _links[remote] = LinkEstimator()
        return link
    except TypeError:  # not weak-referenceable: a private one
        return LinkEstimator()
#: How long :func:`cached_config` trusts a remote's answer (limits change rarely, if ever).
CONFIG_TTL = 60.0
_configs: weakref.WeakKeyDictionary[Remote, tuple[float, UserConfig]] = (
    weakref.WeakKeyDictionary())


async def cached_config(remote: Remote) -> UserConfig:
    """``remote.get_config()``, remembered per remote for :data:`CONFIG_TTL` seconds.

    Every upload needs the limits; over HTTP, asking once per file would add a round trip
    to each small file (rsync, tar x).

    Raises:
        FsmountError: whatever ``get_config`` raises.
    """
    now = time.monotonic()
    try:
        hit = _configs.get(remote)
    except TypeError:  # not weak-referenceable: no cache
        return await remote.get_config()
    if hit is not None and now - hit[0] < CONFIG_TTL:
        return hit[1]
    config = await remote.get_config()
    _configs[remote] = (now, config)
    return config


def new_file_id() -> int:
    """A random client file id, positive and within the signed 64-bit range."""
    return secrets.randbits(63) or 1


async def save_part(remote: Remote, name: str, file_id: int, number: int, data: bytes, *,
                    small: bool, total: int) -> None:
    """Save part ``number`` of segment ``file_id``: ``saveFilePart`` if ``small``, else
    ``saveBigFilePart`` with ``total`` parts (see :func:`fsmount.upload.policy.total_parts`).

    Raises:
        TransportError: the store answered false.
        FsmountError: whatever the call raises (after the transport's retries).
    """
    if small:
        ok = await remote.save_file_part(file_id, number, data)
    else:
        ok = await remote.save_big_file_part(file_id, number, total, data)
    if ok is False:
        raise errors.TransportError(f"the store refused part {number} of {name!r}")


class OutgoingPart(Protocol):
    """What a :class:`PartSender` needs of a part: where it goes and how it is sent."""

    @property
    def file_id(self) -> int: ...
    @property
    def number(self) -> int: ...
    #: The bytes; the sender drops them (sets None) once the part is saved.
    data: bytes | None
    @property
    def total(self) -> int: ...
    @property
    def small(self) -> bool: ...


P = TypeVar("P", bound=OutgoingPart)


class PartSender(Generic[P]):
    """Workers that save the parts put on :attr:`inbox` (a bounded channel), at least
    ``parallel`` and at most ``parallel_max`` at a time (see the module docstring).

    Start with :meth:`start`.  Closing :attr:`inbox` lets the workers end once it is
    drained; :meth:`close` stops them taking parts at all (the upload ended).
    """

    def __init__(self, remote: Remote, name: str, parallel: int,
                 on_saved: Callable[[P, int], None], parallel_max: int | None = None) -> None:
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        self.remote = remote
        self.name = name
        self.parallel = parallel
        self.parallel_max = max(parallel, parallel_max or parallel)
        self._on_saved = on_saved
        self.inbox, self._recv = trio.open_memory_channel[P](parallel)
        self.link = upload_link(remote)
        #: A worker takes a part only with a token: the tokens are the parts in flight.
        self._tokens = trio.CapacityLimiter(parallel)

    @classmethod
    def start(cls, nursery: trio.Nursery, remote: Remote, name: str, *, parallel: int,
              on_saved: Callable[[P, int], None],
              on_error: Callable[[Exception], None],
              parallel_max: int = PARALLEL_MAX) -> PartSender[P]:
        """Start the workers in ``nursery``.  ``on_saved(part, size)`` runs (on the trio
        thread) after each part is saved; a worker whose save failed hands the error to
        ``on_error`` and stops.

        Raises:
            ValueError: ``parallel`` is below 1.
        """
        sender = cls(remote, name, parallel, on_saved, parallel_max)
        for _ in range(sender.parallel_max):
            nursery.start_soon(sender._run, on_error)
        return sender

    @property
    def in_flight_limit(self) -> int:
        """Parts that may be in flight now."""
        return int(self._tokens.total_tokens)

    def close(self) -> None:
        self._recv.close()

    async def _run(self, on_error: Callable[[Exception], None]) -> None:
        try:
            while True:
                async with self._tokens:
                    try:
                        part = await self._recv.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return
                    assert part.data is not None
                    size = len(part.data)
                    ticket = self.link.begin()
                    await save_part(self.remote, self.name, part.file_id, part.number,
                                    part.data, small=part.small, total=part.total)
                    self.link.end(ticket, size)
                    # Dropped at once, not when the next part arrives: only retention (if
                    # any) keeps a saved part's bytes.
                    part.data = None
                    self._resize(size)
                self._on_saved(part, size)
        except Exception as exc:  # noqa: BLE001 - handed to the upload, raised to its writer
            on_error(exc)

    def _resize(self, part_size: int) -> None:
        target = self.link.target(self.parallel * part_size, self.parallel_max * part_size,
                                  part_size)
        tokens = max(self.parallel, min(self.parallel_max, target // max(1, part_size)))
        if tokens != self._tokens.total_tokens:
            log.debug("%s: %d parts in flight (link %.0f MB/s, %.0f ms)", self.name, tokens,
                      self.link.rate / 1e6, self.link.latency(part_size) * 1e3)
            self._tokens.total_tokens = tokens


async def send_parts(numbers: Iterable[int], send: Callable[[int], Awaitable[None]],
                     parallel: int) -> None:
    """Run ``send(number)`` for every number, at most ``parallel`` at a time (each part's
    bytes are produced inside ``send``, so at most ``parallel`` are in memory).

    Raises:
        whatever ``send`` raises (the first error cancels the others).
    """
    limiter = trio.CapacityLimiter(parallel)

    async def one(number: int) -> None:
        async with limiter:
            await send(number)

    async with open_nursery() as nursery:
        for number in numbers:
            nursery.start_soon(one, number)


async def finalize_segment(remote: Remote, final: InputFile | InputFileBig, *, name: str,
                           index: int,
                           resend: Callable[[list[int]], Awaitable[None]] | None
                           ) -> Document:
    """Finalize one segment (``uploadMedia``) and return its document.

    A part the store reports missing is sent again with ``resend(numbers)`` as
    :func:`fsmount.upload.policy.resend_numbers` says, and the finalize repeated, up to
    :data:`~fsmount.upload.policy.MAX_FINALIZE_ATTEMPTS` calls; with ``resend`` None the
    first report is final.

    Raises:
        FilePartMissing: a part is still (or, without ``resend``, was) missing.
        FsmountError: whatever ``upload_media`` or ``resend`` raise.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await remote.upload_media(final)
        except errors.FilePartMissing as exc:
            if resend is None or not policy.may_resend(exc.part, attempt, final.parts):
                raise
            log.info("upload of %r: part %d of segment %d missing, sending it again",
                     name, exc.part, index)
            await resend(policy.resend_numbers(exc.part, attempt, final.parts))
