"""The server explains itself: ``/metrics`` (Prometheus text) counts requests, bytes,
latency and errors by name; the access log has one line per request, without the query
string."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
import trio
import trio.testing

from fsmount import errors
from fsmount.httpremote import HttpRemote
from fsmount.remote import ROOT_ID
from fsmount.server.metrics import route_of

from .conftest import Srv


async def _metrics(url: str) -> str:
    async with httpx.AsyncClient() as client:
        res = await client.get(f"{url}/metrics")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/plain")
    return res.text


def _value(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_bytes_latency_and_errors(srv: Srv) -> None:
    before = await _metrics(srv.url)
    remote = HttpRemote(srv.url, srv.tok_a)
    try:
        for _ in range(3):
            await remote.getattr(ROOT_ID)
        with pytest.raises(errors.NotFound):
            await remote.lookup(ROOT_ID, "no-such-name")
    finally:
        await remote.aclose()
    after = await _metrics(srv.url)
    key = dict(route="getattr", status="200")
    assert _value(after, "fsmount_server_requests_total", **key) == \
        _value(before, "fsmount_server_requests_total", **key) + 3
    assert _value(after, "fsmount_server_errors_total", error="NOT_FOUND") >= 1
    assert _value(after, "fsmount_server_request_seconds_count", route="getattr") >= 3
    assert _value(after, "fsmount_server_sent_bytes_total", route="getattr") > 0


async def test_the_access_log_has_one_line_per_request_without_the_query(
        srv: Srv, caplog: pytest.LogCaptureFixture) -> None:
    remote = HttpRemote(srv.url, srv.tok_a)
    with caplog.at_level(logging.INFO, logger="fsmount.access"):
        try:
            await remote.getattr(ROOT_ID)
        finally:
            await remote.aclose()
        async with httpx.AsyncClient() as client:
            res = await client.get(
                f"{srv.url}/api/v1/proto/getattr?node_id=1&access_token={srv.tok_a}")
            assert res.status_code == 200
        # The line is written once the answer is out: let the server's task finish.
        await trio.testing.wait_all_tasks_blocked()
    lines = [r.getMessage() for r in caplog.records if r.name == "fsmount.access"]
    assert any(re.fullmatch(r"GET /api/v1/proto/getattr 200 \d+ \d+\.\d{3}s alice", m)
               for m in lines), lines
    assert not any(srv.tok_a in m or "node_id" in m for m in lines)
    # The token in the query authenticated the second request: its user is named.
    assert sum(1 for m in lines if m.startswith("GET /api/v1/proto/getattr 200")) == 2


def test_routes_are_a_bounded_set() -> None:
    assert route_of("/api/v1/proto/getFile") == "getFile"
    assert route_of("/api/v1/proto/evil-" + "x" * 50) == "proto:unknown"
    assert route_of("/browse/a/b") == "/browse"
    assert route_of("/random-" + "y" * 10) == "other"
