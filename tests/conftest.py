"""Fixtures shared by every test directory (keep this small; per-area fixtures live in
their own directory's conftest.py)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
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


@pytest.fixture(scope="session")
def s3_engine() -> Iterator[object]:
    """A real S3 store (Swift + s3api, tests/engines.py) for the whole session, started on
    first use; its credentials are put in the environment, where fsmount's S3 content
    backend (botocore's chain) and child processes find them."""
    from engines import swift_s3

    with swift_s3() as s3:
        saved = {k: os.environ.get(k) for k in s3.env()}
        os.environ.update(s3.env())
        try:
            yield s3
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def s3_url(s3_engine: object) -> str:
    """A content URL with a prefix of its own in the session's bucket (tests stay apart)."""
    return s3_engine.url(f"t{secrets.token_hex(6)}")  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[object]:
    """A throwaway PostgreSQL cluster (tests/engines.py) for the whole session."""
    from engines import postgres

    with postgres() as pg:
        yield pg


@pytest.fixture
def pg_url(pg_engine: object) -> str:
    """A metadata URL whose ``search_path`` is a fresh schema of the session's cluster (one
    store per test, no database created per test)."""
    import psycopg

    schema = f"t{secrets.token_hex(6)}"
    dsn = pg_engine.dsn  # type: ignore[attr-defined]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{dsn}?options=-csearch_path%3D{schema}"
