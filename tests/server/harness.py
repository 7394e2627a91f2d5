"""Run the real server in-process on 127.0.0.1 (an ephemeral port) for tests.

The server runs in a trio task of the test, over a store object the test may also hold,
so a manual clock shared with the store drives part expiry and session expiry alike.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from hypercorn.trio import serve

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
                yield Harness.over_store(store, path, clock, limits, a, remote, remote_b)
            finally:
                await remote.aclose()
                await remote_b.aclose()
    finally:
        store.close()


@contextlib.contextmanager
def serve_subprocess(store_dir: Path | str, user: str = "default") -> Iterator[tuple[str, Path]]:
    """``fsmount serve`` on ``store_dir`` in a subprocess on a free 127.0.0.1 port, with a
    token for ``user`` (the embedded store's default user, so that files written through
    the store API are visible): yields ``(url, token_file)``; SIGTERM and reaped after.

    For mount tests that want to run against the server: ``fsmount mount -f --server URL
    --token-file TOKEN_FILE MOUNTPOINT``.
    """
    import socket
    import subprocess
    import sys

    store_dir = Path(store_dir)
    subprocess.run([sys.executable, "-m", "fsmount", "init", "--store", str(store_dir)],
                   capture_output=True, check=True, timeout=60)
    token = subprocess.run([sys.executable, "-m", "fsmount", "token", "add", "--store",
                            str(store_dir), user], capture_output=True, text=True, check=True,
                           timeout=60).stdout.strip()
    token_file = store_dir / f"token-{user}"
    token_file.write_text(token + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, log = start_serve(store_dir, port)
    try:
        yield f"http://127.0.0.1:{port}", token_file
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a server (or mount) this test started and reap it; SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def start_serve(store_dir: Path, port: int, *extra: str) -> tuple[Any, Path]:
    """Start ``fsmount serve`` (stderr to ``store_dir.parent/serve-PORT.log``, never a pipe
    that could fill up) and wait, bounded, for its ready line.  Returns (process, log)."""
    import subprocess
    import sys
    import time

    log = store_dir.parent / f"serve-{port}.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "fsmount", "serve", "--store", str(store_dir),
                                 "--listen", f"127.0.0.1:{port}", *extra],
                                stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while "serving" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=30)
            raise RuntimeError(f"fsmount serve did not start: {log.read_text(errors='replace')}")
        time.sleep(0.02)
    return proc, log
