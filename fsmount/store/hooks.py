"""Test hooks: named points where a test may pause the store, passed in as an object.

Production code opens a :class:`~fsmount.store.Store` without hooks (:data:`NO_HOOKS`, whose
points do nothing).  The crash tests run the store in a child process that must stop at a
chosen moment (just before a commit, just after it but before files are cleaned up) so that
the SIGKILL lands there: such a child builds its hooks with :func:`hooks_from_spec`, the one
test-only entry, from a spec the test hands it (on its command line), and passes them to
``Store(..., hooks=...)``.  The store never reads hooks from the environment.
"""

from __future__ import annotations

import enum
import os
import threading
from pathlib import Path

__all__ = ["NO_HOOKS", "HookPoint", "PauseAt", "StoreHooks", "hooks_from_spec"]


class HookPoint(enum.StrEnum):
    """The points the store passes (the values are the names a spec uses)."""

    #: Every write transaction, just before COMMIT ...
    COMMIT = "commit"
    #: ... and just after it, before any cleanup.
    COMMITTED = "committed"
    FINALIZE_BEFORE_COMMIT = "finalize-before-commit"
    FINALIZE_AFTER_COMMIT = "finalize-after-commit"
    SET_CONTENT_BEFORE_COMMIT = "set-content-before-commit"
    SET_CONTENT_AFTER_COMMIT = "set-content-after-commit"
    RENAME_BEFORE_COMMIT = "rename-before-commit"
    RENAME_AFTER_COMMIT = "rename-after-commit"


class StoreHooks:
    """Hook points that do nothing; tests pass a subclass."""

    def reached(self, point: HookPoint) -> None:
        """Called each time the store passes ``point`` (from any of its threads)."""


NO_HOOKS = StoreHooks()


class PauseAt(StoreHooks):
    """The ``count``-th pass through ``point`` writes ``pid point`` to ``path`` and then
    blocks that thread until the process is killed."""

    def __init__(self, point: HookPoint, path: str, count: int = 1) -> None:
        self.point = point
        self.path = path
        self._left = count
        self._lock = threading.Lock()

    def reached(self, point: HookPoint) -> None:
        if point is not self.point:
            return
        with self._lock:
            self._left -= 1
            if self._left > 0:
                return
        Path(self.path).write_text(f"{os.getpid()} {point.value}\n")
        threading.Event().wait()  # until the test kills this process


def hooks_from_spec(spec: str) -> StoreHooks:
    """Test-only: ``NAME[:N]=PATH`` (a :class:`HookPoint` value, N defaulting to 1) as a
    :class:`PauseAt`; an empty spec is :data:`NO_HOOKS`.

    Raises:
        ValueError: the spec names no hook point, or N is not a positive integer.
    """
    if not spec:
        return NO_HOOKS
    name, sep, path = spec.partition("=")
    if not sep or not path:
        raise ValueError(f"hook spec {spec!r} is not NAME[:N]=PATH")
    name, _, n = name.partition(":")
    count = int(n) if n else 1
    if count < 1:
        raise ValueError(f"hook spec {spec!r}: N must be at least 1")
    return PauseAt(HookPoint(name), path, count)
