"""Fixtures of the filesystem tests (helpers live in fs_mounting.py).

* ``mounted``: a fresh store in ``tmp_path`` mounted at ``tmp_path / "mnt"``, unmounted and
  reaped afterwards whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fs_mounting import MountProc, mount_store


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[MountProc]:
    """A fresh store mounted in the foreground at ``tmp_path / "mnt"``."""
    with mount_store(tmp_path / "store", tmp_path / "mnt") as mp:
        yield mp
