"""What ``fsmount serve`` tells about itself: an access log line per request and Prometheus
metrics at ``/metrics``.

Both come from one ASGI wrapper (:class:`Observer`) around the application, so every
request is seen the same way whichever part of the server answers it.  The access log
(logger ``fsmount.access``, INFO) has one line per request: method, path (never the query
string, which may carry ``access_token=`` or a share secret), status, bytes sent, duration
and the authenticated user (``-`` when none).  The metrics (``prometheus_client``, one
registry per application so that several servers in one process stay apart) count
requests by route and status, bytes each way, latency per route as a histogram, and error
answers by the protocol's error name.  Routes are protocol method names or the first path
component, from a fixed set: a client cannot grow the label space.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import wire

__all__ = ["Observer"]

access_log = logging.getLogger("fsmount.access")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: First path components that name a route of their own in the metrics.
_ROUTES = frozenset({"api", "browse", "healthz", "openapi.json", "metrics", "s", "share",
                     "static", "login", "logout", "ui", ""})
#: Latency buckets (seconds): loopback metadata calls to slow multi-MiB transfers.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0)
#: Bytes of an error answer read to find the error's name.
_ERROR_PEEK = 4096


def route_of(path: str) -> str:
    """The metrics label of a request path (bounded set)."""
    if path.startswith(wire.PROTO_PREFIX):
        method = path[len(wire.PROTO_PREFIX):]
        return method if method in wire.ALL_METHODS else "proto:unknown"
    first = path.lstrip("/").split("/", 1)[0]
    return f"/{first}" if first in _ROUTES else "other"


class Observer:
    """ASGI wrapper: access log, metrics, and the ``/metrics`` endpoint itself."""

    def __init__(self, app: App) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.app = app
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("fsmount_server_requests", "HTTP requests answered",
                                ["route", "status"], registry=self.registry)
        self.bytes_in = Counter("fsmount_server_received_bytes", "Request body bytes",
                                ["route"], registry=self.registry)
        self.bytes_out = Counter("fsmount_server_sent_bytes", "Response body bytes",
                                 ["route"], registry=self.registry)
        self.latency = Histogram("fsmount_server_request_seconds",
                                 "Time from request to the end of the answer", ["route"],
                                 buckets=_BUCKETS, registry=self.registry)
        self.errors = Counter("fsmount_server_errors", "Error answers by error name",
                              ["error"], registry=self.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/metrics":
            await self._metrics(send)
            return
        start = time.monotonic()
        route = route_of(scope["path"])
        status = 0
        sent = 0
        received = 0
        peek = bytearray()

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            msg = await receive()
            received += len(msg.get("body", b""))
            return msg

        async def counting_send(msg: dict[str, Any]) -> None:
            nonlocal status, sent
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            elif msg["type"] == "http.response.body":
                body = msg.get("body", b"")
                sent += len(body)
                if status >= 400 and len(peek) < _ERROR_PEEK:
                    peek.extend(body[: _ERROR_PEEK - len(peek)])
            await send(msg)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            took = time.monotonic() - start
            self.requests.labels(route, str(status or 500)).inc()
            self.bytes_in.labels(route).inc(received)
            self.bytes_out.labels(route).inc(sent)
            self.latency.labels(route).observe(took)
            if status >= 400 or status == 0:
                self.errors.labels(_error_name(bytes(peek), status)).inc()
            user = scope.get("state", {}).get("fsm_user")
            access_log.info("%s %s %d %d %.3fs %s", scope["method"], scope["path"],
                            status or 500, sent, took, getattr(user, "name", "-"))

    async def _metrics(self, send: Send) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.registry)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _error_name(body: bytes, status: int) -> str:
    """The protocol error name of an error answer's JSON body, else ``HTTP_<status>``."""
    try:
        name = json.loads(body).get("error")
    except (ValueError, AttributeError):
        name = None
    if isinstance(name, str) and name.replace("_", "").isalnum() and len(name) <= 64:
        return name
    return f"HTTP_{status or 500}"
