"""The HTTP client's retry policy: transient failures are retried for a bounded time (not a
count), failures that waiting cannot mend fail at once."""

from __future__ import annotations

import pytest
import trio

from fsmount import errors
from fsmount.httpremote import HttpRemote

from .conftest import Srv


async def _closed_port() -> int:
    s = trio.socket.socket()
    await s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


async def test_a_refused_connection_is_retried_for_the_retry_time() -> None:
    port = await _closed_port()
    dead = HttpRemote(f"http://127.0.0.1:{port}", "tok", retry_time=1.0, backoff=0.01,
                      backoff_max=0.05)
    start = trio.current_time()
    with trio.fail_after(10), pytest.raises(errors.ConnectionRefused):
        await dead.statfs()
    took = trio.current_time() - start
    # Many attempts (far more than the old fixed 5), for about the retry time.
    assert dead.retried > 5 and 1.0 <= took < 5.0
    assert dead.failed == 1
    await dead.aclose()


async def test_an_unresolvable_name_fails_at_once() -> None:
    remote = HttpRemote("http://no-such-host.invalid:8080", "tok", retry_time=300)
    with trio.fail_after(30), pytest.raises(errors.HostNotFound):
        await remote.statfs()
    assert remote.retried == 0
    await remote.aclose()


async def test_tls_against_a_plain_server_and_a_4xx_fail_at_once(srv: Srv) -> None:
    tls = HttpRemote(srv.url.replace("http://", "https://"), srv.tok_a, retry_time=300)
    with trio.fail_after(30), pytest.raises(errors.NotTlsServer):
        await tls.statfs()
    assert tls.retried == 0
    await tls.aclose()
    plain = HttpRemote(srv.url, srv.tok_a, retry_time=300)
    with trio.fail_after(30), pytest.raises(errors.NotFound):
        await plain.getattr(987654321)
    assert plain.retried == 0
    await plain.aclose()


async def test_patience_shortens_the_window_for_the_block() -> None:
    port = await _closed_port()
    dead = HttpRemote(f"http://127.0.0.1:{port}", "tok", retry_time=300, backoff=0.01,
                      backoff_max=0.05)
    with trio.fail_after(10), pytest.raises(errors.ConnectionRefused), dead.patience(0.3):
        await dead.statfs()
    assert dead.retry_time == 300
    await dead.aclose()
