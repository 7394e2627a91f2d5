"""What a running mount tells about itself: counters of its remote calls, its status (for
``fsmount status`` over :mod:`fsmount.control`) and Prometheus metrics
(``--metrics-addr``).

One source of numbers: :class:`MountStats` counts every remote call the filesystem makes
(by method, bytes each way, failures by error name, calls in flight) through
:class:`MeteredRemote`, a thin wrapper around the mount's remote; the chunk cache keeps its
own counters (:class:`fsmount.reader.CacheStats`) and the HTTP client its retries.
:func:`status` gathers them into one JSON-able dict, and :class:`StatusCollector` exposes
the same dict to ``prometheus_client`` (built from it on each scrape, so the metrics never
disagree with ``fsmount status``).
"""

from __future__ import annotations

import errno
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .remote import Remote

__all__ = ["MeteredRemote", "MountStats", "StatusCollector", "start_metrics_server"]

#: Calls that carry file bytes up (the part's data is their last argument).
_UPLOADS = frozenset({"save_file_part", "save_big_file_part"})
#: Errors that are answers, not failures (a lookup of a name that is not there, ...):
#: not counted as errors.
_ANSWERS = frozenset({errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR,
                      errno.EISDIR})
#: Calls whose answer carries file bytes.
_DOWNLOADS = frozenset({"get_file", "get_file_windows"})


@dataclass
class MountStats:
    """Counters of the mount's remote calls."""

    started: float = field(default_factory=time.time)
    calls: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  #: by error name
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0
    in_flight: int = 0
    uploads_finalized: int = 0


def _answer_bytes(name: str, result: Any) -> int:
    if name == "get_file":
        return len(result.bytes)
    return sum(len(w.bytes) for w in result.windows)


class MeteredRemote:
    """A Remote that counts each call in a :class:`MountStats` and passes it on.  Bound
    methods are wrapped once, on first use."""

    def __init__(self, remote: Remote, stats: MountStats) -> None:
        self._remote = remote
        self.stats = stats

    @property
    def inner(self) -> Remote:
        return self._remote

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._remote, name)
        if name.startswith("_") or not callable(attr):
            return attr
        stats = self.stats

        async def call(*args: Any, **kwargs: Any) -> Any:
            stats.calls[name] += 1
            stats.in_flight += 1
            try:
                result = await attr(*args, **kwargs)
            except errors.FsmountError as exc:
                if errors.errno_for(exc) not in _ANSWERS:
                    stats.failures[exc.name or type(exc).__name__] += 1
                raise
            finally:
                stats.in_flight -= 1
            if name in _UPLOADS:
                stats.bytes_uploaded += len(args[-1])
            elif name in _DOWNLOADS:
                stats.bytes_downloaded += _answer_bytes(name, result)
            elif name == "upload_media":
                stats.uploads_finalized += 1
            elif name == "put_file":  # parts and finalize in one call
                stats.bytes_uploaded += len(args[2])
                stats.uploads_finalized += 1
            return result

        call.__name__ = name
        setattr(self, name, call)  # later lookups find it without __getattr__
        return call


def status(stats: MountStats, remote: Remote, cache: Any, *, files_writing: int,
           files_open: int, mountpoint: str, source: str) -> dict[str, Any]:
    """The status of a mount as a JSON-able dict (what ``fsmount status`` prints and the
    metrics expose).  ``cache`` is the mount's :class:`fsmount.reader.ChunkCache`."""
    cs = cache.stats
    return {
        "mountpoint": mountpoint,
        "source": source,
        "uptime_seconds": round(time.time() - stats.started, 1),
        "cache": {"used_bytes": cache.used_bytes, "capacity_bytes": cache.cache_bytes,
                  "hits": cs.hits, "misses": cs.misses, "fetches": cs.fetches,
                  "prefetches": cs.prefetches, "mismatches": cs.mismatches},
        "transfers": {"calls_in_flight": stats.in_flight, "fetches_in_flight":
                      cache.fetches_in_flight, "files_writing": files_writing,
                      "files_open": files_open, "uploads_finalized": stats.uploads_finalized,
                      "bytes_uploaded": stats.bytes_uploaded,
                      "bytes_downloaded": stats.bytes_downloaded},
        "calls": dict(stats.calls),
        "errors": dict(stats.failures),
        "retries": int(getattr(remote, "retried", 0)),
        # With --server: the node requests go to now, and how often they moved (failover).
        "server": getattr(remote, "base_url", None),
        "server_switches": int(getattr(remote, "switches", 0)),
    }


class StatusCollector:
    """A ``prometheus_client`` collector over a status function (see :func:`status`)."""

    def __init__(self, status_fn: Callable[[], dict[str, Any]]) -> None:
        self._status = status_fn

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self._status()
        c, t = s["cache"], s["transfers"]
        yield GaugeMetricFamily("fsmount_cache_used_bytes", "Bytes in the chunk cache",
                                value=c["used_bytes"])
        yield GaugeMetricFamily("fsmount_cache_capacity_bytes", "Chunk cache size",
                                value=c["capacity_bytes"])
        for key, doc in (("hits", "Chunk reads answered from the cache"),
                         ("misses", "Chunk reads that had to fetch"),
                         ("fetches", "Chunks fetched from the remote"),
                         ("prefetches", "Chunks fetched ahead of readers")):
            yield CounterMetricFamily(f"fsmount_cache_{key}", doc, value=c[key])
        yield CounterMetricFamily("fsmount_uploaded_bytes", "File bytes sent to the remote",
                                  value=t["bytes_uploaded"])
        yield CounterMetricFamily("fsmount_downloaded_bytes", "File bytes fetched",
                                  value=t["bytes_downloaded"])
        yield CounterMetricFamily("fsmount_uploads_finalized", "Segments finalized",
                                  value=t["uploads_finalized"])
        yield GaugeMetricFamily("fsmount_files_writing", "Files open for writing",
                                value=t["files_writing"])
        yield GaugeMetricFamily("fsmount_remote_calls_in_flight", "Remote calls running",
                                value=t["calls_in_flight"])
        calls = CounterMetricFamily("fsmount_remote_calls", "Remote calls by method",
                                    labels=["method"])
        for method, n in sorted(s["calls"].items()):
            calls.add_metric([method], n)
        yield calls
        errs = CounterMetricFamily("fsmount_remote_errors", "Failed remote calls by error",
                                   labels=["error"])
        for name, n in sorted(s["errors"].items()):
            errs.add_metric([name], n)
        yield errs
        yield CounterMetricFamily("fsmount_retries", "Attempts the transport retried",
                                  value=s["retries"])
        yield CounterMetricFamily("fsmount_server_switches",
                                  "Times requests moved to the next server node",
                                  value=s.get("server_switches", 0))


def start_metrics_server(host: str, port: int, status_fn: Callable[[], dict[str, Any]]
                         ) -> tuple[str, int]:
    """Serve ``/metrics`` for the mount on ``host:port`` (in a thread of
    ``prometheus_client``); returns the address bound.  Raises OSError if it cannot
    listen."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status_fn))  # type: ignore[arg-type]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = server.server_address
    return str(bound[0]), int(bound[1])
