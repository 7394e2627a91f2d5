"""Fixtures shared by every test directory (keep this small; per-area fixtures live in
their own directory's conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fsmount.embedded import EmbeddedRemote


class ManualClock:
    """A clock for ``Store(clock=...)`` that only moves when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def embedded_remote(tmp_path: Path) -> AsyncIterator[EmbeddedRemote]:
    """An EmbeddedRemote (user "default") on a fresh store in ``tmp_path / "store"``."""
    remote = EmbeddedRemote.open(tmp_path / "store")
    try:
        yield remote
    finally:
        await remote.aclose()
