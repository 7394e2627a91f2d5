"""The contract suite's harness: one fixture, parametrized over Remote implementations.

Every test in ``tests/contract`` takes the ``harness`` fixture and talks only to
``harness.remote`` (user A) and ``harness.remote_b`` (user B), so the same tests run
against every implementation of :class:`fsmount.remote.Remote`.

Adding an implementation (e.g. the HTTP client against a real server on 127.0.0.1):

1. write an async context manager ``make_http(tmp_path, clock, limits)`` that yields a
   :class:`Harness` whose remotes talk to that implementation, backed by a store opened
   with ``clock=clock`` and ``limits=limits`` (so ``harness.clock.advance`` drives part and
   document expiry), whose ``fsck`` runs :func:`fsmount.fsck.check` on that store's
   directory and whose ``set_premium`` flips user A's premium flag;
2. add it to :data:`FACTORIES` under its name ("http").

Stores over real engines (tests/engines.py, started once per session): "embedded-s3"
(SQLite + Swift's S3), "pg-localdir" and "pg-s3" (PostgreSQL metadata, a schema per test).

Nothing else changes: the ``harness`` fixture is parametrized over ``FACTORIES``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fsmount import fsck
from fsmount.embedded import EmbeddedRemote
from fsmount.protocol import MIB, Limits
from fsmount.remote import Remote
from fsmount.store import Store
from fsmount.store.s3content import S3Content

#: Small limits so that big-file rules are cheap to exercise.
TEST_LIMITS = Limits(
    upload_max_fileparts_default=40,
    upload_max_fileparts_premium=80,
    big_file_threshold=1 * MIB,
    part_lifetime=3600.0,
    unlinked_grace=600.0,
)


@dataclass
class Harness:
    remote: Remote  #: user A
    remote_b: Remote  #: user B, a different namespace
    clock: Any  #: ManualClock: ``advance(seconds)`` drives expiry
    limits: Limits
    fsck: Callable[[], list[str]]
    set_premium: Callable[[bool], None]
    #: Store directory, for tests that look at the disk (None if not local).
    store_path: Path | None = None
    #: The store object when it runs in this process (crash/disk tests), else None.
    store: Store | None = None
    #: Change user A's quota (0 = unlimited).
    set_quota: Callable[[int], None] | None = None
    #: Every content file or object of the store (blobs/..., parts/...; staging and trash
    #: left out) with its size, on disk or in the bucket.
    content_sizes: Callable[[], dict[str, int]] | None = None

    @classmethod
    def over_store(cls, store: Store, path: Path, clock: Any, limits: Limits, user_a: int,
                   remote: Remote, remote_b: Remote) -> Harness:
        """A harness whose remotes reach the in-process ``store`` (directly or over HTTP)."""
        return cls(
            remote=remote,
            remote_b=remote_b,
            clock=clock,
            limits=limits,
            fsck=lambda: fsck.check(path),
            set_premium=lambda on: store.set_user(user_a, premium=on),
            store_path=path,
            store=store,
            set_quota=lambda q: store.set_user(user_a, quota_bytes=q),
            content_sizes=lambda: content_sizes(store),
        )


def content_sizes(store: Store) -> dict[str, int]:
    """The store's content files (local) or objects (S3) and their sizes."""
    if isinstance(store.content, S3Content):
        return {k: n for k, n in store.content.list_keys() if not k.startswith("tmp/")}
    out: dict[str, int] = {}
    for sub in ("blobs", "parts"):
        for f in (store.path / sub).rglob("*"):
            rel = str(f.relative_to(store.path))
            if f.is_file() and not rel.startswith("parts/tmp/"):
                out[rel] = f.stat().st_size
    return out


@contextlib.asynccontextmanager
async def make_embedded(tmp_path: Path, clock: Any, limits: Limits) -> AsyncIterator[Harness]:
    path = tmp_path / "store"
    store = Store(path, limits=limits, clock=clock)
    a = store.ensure_user("alice")
    b = store.ensure_user("bob")
    remote = EmbeddedRemote(store, a)
    remote_b = EmbeddedRemote(store, b)
    try:
        yield Harness.over_store(store, path, clock, limits, a, remote, remote_b)
    finally:
        await remote.aclose()
        await remote_b.aclose()
        store.close()


@contextlib.asynccontextmanager
async def make_embedded_s3(tmp_path: Path, clock: Any, limits: Limits, content: str
                           ) -> AsyncIterator[Harness]:
    """The embedded store with its content in S3 (Swift + s3api; metadata in SQLite)."""
    path = tmp_path / "store"
    path.mkdir()
    store = Store(path, limits=limits, clock=clock, content=content)
    a = store.ensure_user("alice")
    b = store.ensure_user("bob")
    remote = EmbeddedRemote(store, a)
    remote_b = EmbeddedRemote(store, b)
    try:
        h = Harness.over_store(store, path, clock, limits, a, remote, remote_b)
        h.store_path = None  # the bytes are not on this disk
        yield h
    finally:
        await remote.aclose()
        await remote_b.aclose()
        store.close()


@contextlib.asynccontextmanager
async def make_pg(tmp_path: Path, clock: Any, limits: Limits, metadata: str,
                  content: str | None) -> AsyncIterator[Harness]:
    """The store with its metadata in PostgreSQL (a schema of the session's cluster) and its
    content in the directory (``content`` None) or in S3."""
    path = tmp_path / "store"
    store = Store(path, limits=limits, clock=clock, content=content, metadata=metadata)
    a = store.ensure_user("alice")
    b = store.ensure_user("bob")
    remote = EmbeddedRemote(store, a)
    remote_b = EmbeddedRemote(store, b)
    try:
        h = Harness.over_store(store, path, clock, limits, a, remote, remote_b)
        if content is not None:
            h.store_path = None  # the bytes are not on this disk
        yield h
    finally:
        await remote.aclose()
        await remote_b.aclose()
        store.close()


@contextlib.asynccontextmanager
async def make_http(tmp_path: Path, clock: Any, limits: Limits) -> AsyncIterator[Harness]:
    """HttpRemote against the real server on 127.0.0.1 (tests/server/harness.py, SERVER's)."""
    from server.harness import make_http as make

    async with make(tmp_path, clock, limits) as h:
        yield h


FACTORIES: dict[str, Callable[[Path, Any, Limits], contextlib.AbstractAsyncContextManager[Harness]]] = {
    "embedded": make_embedded,
    "http": make_http,
}
#: Factories that also take a content URL (the session's S3 store, a prefix per test).
CONTENT_FACTORIES: dict[str, Callable[[Path, Any, Limits, str],
                                      contextlib.AbstractAsyncContextManager[Harness]]] = {
    "embedded-s3": make_embedded_s3,
}


#: Stores with their metadata in PostgreSQL: (content in S3?) by name.
PG_FACTORIES: dict[str, bool] = {"pg-localdir": False, "pg-s3": True}


@pytest.fixture(params=sorted([*FACTORIES, *CONTENT_FACTORIES, *PG_FACTORIES]))
async def harness(request: pytest.FixtureRequest, tmp_path: Path, manual_clock: Any
                  ) -> AsyncIterator[Harness]:
    if request.param in PG_FACTORIES:
        metadata = request.getfixturevalue("pg_url")
        content = request.getfixturevalue("s3_url") if PG_FACTORIES[request.param] else None
        cm = make_pg(tmp_path, manual_clock, TEST_LIMITS, metadata, content)
    elif request.param in CONTENT_FACTORIES:
        url = request.getfixturevalue("s3_url")
        cm = CONTENT_FACTORIES[request.param](tmp_path, manual_clock, TEST_LIMITS, url)
    else:
        cm = FACTORIES[request.param](tmp_path, manual_clock, TEST_LIMITS)
    async with cm as h:
        yield h
        problems = h.fsck()
        assert problems == [], problems
