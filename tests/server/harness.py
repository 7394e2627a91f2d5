"""Run the real server in-process on 127.0.0.1 (an ephemeral port) for tests.

The server runs in a trio task of the test, over a store object the test may also hold,
so a manual clock shared with the store drives part expiry and session expiry alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from hypercorn.trio import serve

from fsmount import fsck
from fsmount.httpremote import HttpRemote
from fsmount.protocol import Limits
from fsmount.server.app import FsmountApp, ServerState
from fsmount.server.cli import hypercorn_config
from fsmount.store import Store


@dataclass
class Running:
    url: str
    state: ServerState
    app: FsmountApp


@contextlib.asynccontextmanager
async def running_server(store: Any, store_dir: Path | str, **state_kwargs: Any
                         ) -> AsyncIterator[Running]:
    """Serve ``store`` on 127.0.0.1:<ephemeral> until the block ends (graceful shutdown)."""
    state = ServerState(store, store_dir, **state_kwargs)
    app = FsmountApp(state)
    cfg = hypercorn_config("127.0.0.1", 0, graceful_timeout=5.0)
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve(app, cfg, shutdown_trigger=stop.wait,
                                          task_status=task_status))
            try:
                yield Running(binds[0], state, app)
            finally:
                stop.set()
    finally:
        await state.aclose()


@contextlib.asynccontextmanager
async def make_http(tmp_path: Path, clock: Any, limits: Limits) -> AsyncIterator[Any]:
    """The contract suite's "http" implementation: HttpRemote against the real server."""
    from contract.conftest import Harness  # the contract suite's own type (tests/contract)

    path = tmp_path / "store"
    store = Store(path, limits=limits, clock=clock)
    a = store.ensure_user("alice")
    store.ensure_user("bob")
    try:
        async with running_server(store, path, clock=clock) as srv:
            tok_a = srv.state.auth.add_token("alice")
            tok_b = srv.state.auth.add_token("bob")
            remote = HttpRemote(srv.url, tok_a)
            remote_b = HttpRemote(srv.url, tok_b)
            try:
                yield Harness(
                    remote=remote,
                    remote_b=remote_b,
                    clock=clock,
                    limits=limits,
                    fsck=lambda: fsck.check(path),
                    set_premium=lambda on: store.set_user(a, premium=on),
                    store_path=path,
                    store=store,
                    set_quota=lambda q: store.set_user(a, quota_bytes=q),
                )
            finally:
                await remote.aclose()
                await remote_b.aclose()
    finally:
        store.close()
