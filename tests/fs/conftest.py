"""Fixtures of the filesystem tests (helpers live in fs_mounting.py).

* ``fs_backend`` (autouse, module scope): every test here runs once per backend of
  ``fs_mounting.BACKENDS`` — the embedded store, and ``fsmount serve`` on a loopback port
  mounted with ``--server`` — so the same suites prove both.
* ``mounted``: a fresh store in ``tmp_path`` mounted at ``tmp_path / "mnt"``, unmounted and
  reaped afterwards whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fs_mounting
import pytest
from fs_mounting import MountProc, mount_store


@pytest.fixture(scope="module", params=fs_mounting.BACKENDS, autouse=True)
def fs_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Select the backend that ``mount_store`` mounts for the tests of this module."""
    previous = fs_mounting.BACKEND
    fs_mounting.BACKEND = request.param
    try:
        yield request.param
    finally:
        fs_mounting.BACKEND = previous


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[MountProc]:
    """A fresh store mounted in the foreground at ``tmp_path / "mnt"``."""
    with mount_store(tmp_path / "store", tmp_path / "mnt") as mp:
        yield mp
