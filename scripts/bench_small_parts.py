#!/usr/bin/env python3
"""Measure the small hand-written parts against the well-kept libraries that could replace
them, to decide replacements on numbers (issue 18): Range parsing, the rate limiter, the
CLI progress bar, and the small caches.

For each: correctness on a table of cases where it applies, the cost per call, and the
import time the library would add to a CLI start.  A library that is not installed is
reported as such (install it to compare).  Prints a table; no test depends on it.

    PYTHONPATH=. python3 scripts/bench_small_parts.py
"""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import timeit
from collections import OrderedDict
from typing import Any

N = 200_000


def per_call_us(fn: Any, n: int = N) -> float:
    return min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6


def import_ms(module: str) -> float | None:
    code = f"import time; t=time.perf_counter(); import {module}; print(time.perf_counter()-t)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    return float(res.stdout) * 1000 if res.returncode == 0 else None


def have(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def ranges() -> None:
    from fsmount.server.rest import parse_range

    size = 1000
    cases = {  # header -> what RFC 9110 asks of a single-range server
        "bytes=0-99": (0, 99), "bytes=900-": (900, 999), "bytes=-100": (900, 999),
        "bytes=990-2000": (990, 999), "bytes=1000-": "unsatisfiable",
        "bytes=-0": "unsatisfiable", "bytes=5-1": None, "bytes=0-1,5-6": None,
        "items=0-1": None, "bytes=abc": None,
    }
    ours = sum(parse_range(h, size) == want for h, want in cases.items())
    print(f"Range parsing: fsmount.server.rest.parse_range {ours}/{len(cases)} cases, "
          f"{per_call_us(lambda: parse_range('bytes=100-199', size)):.2f} us/call")
    if have("werkzeug"):
        from werkzeug.http import parse_range_header

        def wz(h: str) -> Any:
            r = parse_range_header(h)
            if r is None or len(r.ranges) != 1:
                return None
            span = r.range_for_length(size)
            if span is None:
                return "unsatisfiable"
            return span[0], span[1] - 1

        theirs = sum(wz(h) == want for h, want in cases.items())
        print(f"  werkzeug.http.parse_range_header {theirs}/{len(cases)} cases, "
              f"{per_call_us(lambda: parse_range_header('bytes=100-199')):.2f} us/call, "
              f"import {import_ms('werkzeug.http'):.0f} ms (a new server dependency)")
    else:
        print("  werkzeug: not installed")


def limiter() -> None:
    from fsmount.server.auth import RateLimiter

    ours = RateLimiter(1e9, 1e9)
    print(f"Rate limiter: fsmount RateLimiter.take "
          f"{per_call_us(lambda: ours.take('k')):.2f} us/call")
    if have("pyrate_limiter"):
        import pyrate_limiter as pl

        lim = pl.Limiter(pl.InMemoryBucket([pl.Rate(10**9, pl.Duration.SECOND)]))
        print(f"  pyrate_limiter Limiter.try_acquire "
              f"{per_call_us(lambda: lim.try_acquire('k'), 20_000):.2f} us/call, "
              f"import {import_ms('pyrate_limiter'):.0f} ms")
    else:
        print("  pyrate_limiter: not installed")


def progress() -> None:
    from fsmount.cli_common import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    p = Progress("file", 10**12, Tty())
    i = iter(range(10**9))
    print(f"Progress bar: fsmount Progress.update {per_call_us(lambda: p.update(next(i))):.2f}"
          f" us/call, import 0 ms (in cli_common)")
    for mod in ("tqdm", "rich.progress"):
        ms = import_ms(mod)
        print(f"  {mod}: " + (f"import {ms:.0f} ms (added to every CLI start)" if ms
                              else "not installed"))


def caches() -> None:
    od: OrderedDict[int, int] = OrderedDict((k, k) for k in range(1000))

    def od_hit() -> int:
        od.move_to_end(500)
        return od[500]

    print(f"Small caches: OrderedDict LRU hit {per_call_us(od_hit):.2f} us/call")
    import cachetools

    lru: cachetools.LRUCache[int, int] = cachetools.LRUCache(1000)
    for k in range(1000):
        lru[k] = k
    print(f"  cachetools.LRUCache hit {per_call_us(lambda: lru[500]):.2f} us/call "
          f"(already a dependency)")


if __name__ == "__main__":
    ranges()
    limiter()
    progress()
    caches()
