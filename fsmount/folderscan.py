"""Small files of one folder read one after another: the next ones are fetched ahead.

``cat dir/*``, ``grep -r``, a compiler reading its sources or ``git`` checking a work tree
open the small files of a folder one after another, in name order more often than not.
Over a long link each such open-and-read costs a round trip of its own; read-ahead within
a file (:mod:`fsmount.reader`) cannot help, since every file is a single chunk.  This is
read-ahead one level up: the access pattern is the sequence of files opened in a folder.

Design: :class:`FolderScan` remembers, per folder, where in the folder's listing (kept by
the node cache while the change feed vouches for it) the last small file was opened for
reading.  When a small file is opened after an earlier one of the same folder, further on
in name order and at most :data:`SCAN_OPENS` opens (of any folder) later, the folder is
being scanned (counted in opens, not seconds, so that a scan over a slow link, or one that
goes through several folders at once, is still one): the
small files that follow it in the listing are fetched into the chunk cache at once (each
one ``get_file_windows`` call, all in flight together), up to :data:`AHEAD_FILES` files
or :data:`AHEAD_BYTES` beyond the one opened, and topped up as the scan moves on.  The
files' opens then find their node cached (no call) and their read finds the chunk cached
(no call).  Nothing is fetched for a folder read out of order, for a single file, or for
files larger than :data:`SMALL_FILE` (their own read-ahead serves them).
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from .inodes import NodeCache
from .reader import ChunkCache, chunk_count
from .remote import Node, NodeKind

#: Files up to this size are fetched ahead (a whole file, usually one chunk).
SMALL_FILE = 256 * 1024
#: How many files, and how many bytes, ahead of the one opened.
AHEAD_FILES = 32
AHEAD_BYTES = 4 * 1024 * 1024
#: Two opens of a folder with more opens than this between them are not one scan ...
SCAN_OPENS = 64
#: ... nor two further apart than this, in seconds.
SCAN_GAP = 30.0
#: Folders remembered at most.
FOLDERS_MAX = 64


class _Position(NamedTuple):
    """Where a folder's scan is: the name last opened, when, and the last name fetched
    ahead (``""``: none yet)."""

    name: str
    at: float
    #: The mount's count of opens at the time.
    opens: int
    ahead: str


class FolderScan:
    """Detects folder scans and fetches their next small files (see the module doc)."""

    def __init__(self, nodes: NodeCache, cache: ChunkCache,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._nodes = nodes
        self._cache = cache
        self._clock = clock
        self._folders: OrderedDict[int, _Position] = OrderedDict()
        self._opens = 0
        #: Files fetched ahead so far (for ``fsmount status`` and the tests).
        self.fetched_ahead = 0

    def opened(self, node: Node) -> None:
        """``node`` was opened for reading: note it, and fetch ahead if its folder is being
        scanned."""
        if node.kind is not NodeKind.FILE or node.size > SMALL_FILE:
            return
        now = self._clock()
        self._opens += 1
        last = self._folders.pop(node.parent, None)
        ahead = last.ahead if last is not None else ""
        scanning = (last is not None and last.name < node.name and now - last.at < SCAN_GAP
                    and self._opens - last.opens <= SCAN_OPENS)
        if scanning:
            ahead = self._fetch_ahead(node, max(ahead, node.name)) or ahead
        self._folders[node.parent] = _Position(node.name, now, self._opens, ahead)
        while len(self._folders) > FOLDERS_MAX:
            self._folders.popitem(last=False)

    def _fetch_ahead(self, node: Node, after: str) -> str | None:
        """Start fetching the small files after ``after`` in ``node``'s folder, keeping
        the scan :data:`AHEAD_FILES` files ahead of ``node``; returns the last name
        fetched (None: nothing new)."""
        listed = self._nodes.listing(node.parent)
        if listed is None:
            return None
        entries = listed.entries
        here = bisect.bisect_right(entries, node.name, key=lambda n: n.name)
        start = bisect.bisect_right(entries, after, key=lambda n: n.name)
        stop = min(len(entries), here + AHEAD_FILES)
        budget, last = AHEAD_BYTES, None
        for entry in entries[start:stop]:
            if entry.kind is not NodeKind.FILE or entry.size > SMALL_FILE:
                continue
            if entry.size > budget:
                break
            budget -= entry.size
            last = entry.name
            for doc in entry.segments:
                self._cache.prefetch(doc, 0, chunk_count(doc.size))
            self.fetched_ahead += 1
        return last
