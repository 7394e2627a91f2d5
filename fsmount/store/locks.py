"""The store directory's process locks: ``DIR/mount.lock`` and ``DIR/gc.lock`` (fcntl).

``mount.lock`` is taken exclusively (non-blocking) by ``fsmount mount`` and ``fsmount serve``
and holds the holder's pid, for the error message of the next one.  Every opener holds
``gc.lock`` for its lifetime: shared, except that an opener first tries to take it
exclusively -- only an opener that has the store to itself may sweep orphaned files, so a
concurrent ``fsmount put`` never loses an in-flight file.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .. import errors

__all__ = ["StoreLocks"]


class StoreLocks:
    """The locks one opener holds on a store directory; :meth:`release` drops them all."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self._fds: list[int] = []
        self._gc_fd: int | None = None

    def take_mount_lock(self) -> None:
        """Raises StoreLocked if another process holds the store exclusively."""
        fd = os.open(self.store_dir / "mount.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise errors.StoreLocked(
                f"store {self.store_dir} is in use by another mount (pid {pid})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fds.append(fd)

    def take_gc_lock(self) -> bool:
        """Hold ``gc.lock``: exclusively if no other opener holds it (True), else shared."""
        fd = os.open(self.store_dir / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._fds.append(fd)
        self._gc_fd = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return False

    def share_gc_lock(self) -> None:
        """Downgrade an exclusive ``gc.lock``: others may open the store from now on."""
        assert self._gc_fd is not None, "share_gc_lock before take_gc_lock"
        fcntl.flock(self._gc_fd, fcntl.LOCK_SH)

    def release(self) -> None:
        """Drop every lock; idempotent."""
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self._gc_fd = None
