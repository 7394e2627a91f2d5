"""The deleter: content nobody references any more goes inline if small, else in a thread.

A reclaimed blob of a gigabyte is 2048 chunk files (and ext4 with ``discard`` trims as it
frees), so the call that happened to release it must not wait for it: a few objects are
deleted at once, bigger ones by one background thread that runs while there is work.  A
crash before they are gone leaves orphans for the next open's sweep.
"""

from __future__ import annotations

import threading

from .content import ContentBackend

__all__ = ["INLINE_DELETE_FILES", "Deleter"]

#: Keys holding at most this many objects are deleted in the calling thread.
INLINE_DELETE_FILES = 16


class Deleter:
    """Deletes content keys (blobs, staged data, trash) of one content backend."""

    def __init__(self, content: ContentBackend) -> None:
        self.content = content
        self._lock = threading.Lock()
        self._queue: list[str] = []
        self._worker: threading.Thread | None = None

    def discard(self, key: str) -> None:
        """Delete ``key`` now or soon; a key already gone is fine."""
        entries = self.content.entry_count(key)
        if entries is None:
            return
        if entries <= INLINE_DELETE_FILES:
            self.content.delete(key)
            return
        with self._lock:
            self._queue.append(key)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="fsmount-store-delete",
                                                daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._worker = None
                    return
                key = self._queue.pop(0)
            self.content.delete(key)

    def wait(self, timeout: float = 120.0) -> None:
        """Wait (bounded) until the background deletions queued so far are done."""
        with self._lock:
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
