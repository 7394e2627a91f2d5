"""HttpRemote: the :class:`~fsmount.remote.Remote` interface over ``fsmount serve``'s
protocol API, on trio.  The only place in fsmount that retries.

Transport
---------
A small pooled keep-alive HTTP/1.1 client over trio sockets (TLS via ``trio.SSLStream``
for ``https://`` URLs): request and answer heads are written and parsed here, bodies with a
Content-Length read straight into a buffer, and h11 frames only chunked or close-delimited
bodies.  It was chosen on measurement (see
``docs/performance.md``): fetching 1 MiB bodies over loopback from the same hypercorn
server, httpx on trio reached about 0.4-0.5 GB/s while h11 over a trio socket reached
0.7-0.8 GB/s, close to a raw socket loop.

Two pools, as the seed's "General Considerations" advise: bulk transfers (``getFile``,
``saveFilePart``, ``saveBigFilePart``) use their own connections, so metadata calls are
never queued behind 1 MiB bodies.  The change feed's long polls (``getChanges``) have a
third, dedicated connection, so a poll waiting on the server never holds a metadata
connection; its request timeout is the poll's plus :data:`POLL_MARGIN`.

Retries
-------
Connection errors, timeouts, 5xx answers (but not 501/507, which are final), 408 and 429
are retried with jittered exponential back-off (full jitter, capped), honouring
``Retry-After``, for a bounded *time* (``retry_time``, default :data:`RETRY_TIME`: five
minutes, ``fsmount mount --retry-time``) rather than a small count, so that a server
restart or a short network outage makes callers wait, not fail.  Failures that waiting
cannot mend are raised at once, never retried: a name that does not resolve, a rejected
certificate or any other TLS failure, TLS on one side only, and 4xx answers other than
408/429 (see :func:`permanent`).  The first call to a server (``fsmount`` checks the URL
and token with it) is given a short window of its own (:meth:`HttpRemote.patience`), so a
wrong URL still fails in seconds.  Every request is safe to repeat: reads are reads; a part is keyed by
``(file_id, file_part)`` so saving it twice stores it once; ``setattr`` sets absolute
values; every other state-changing call carries an ``Idempotency-Key`` that the server
uses to answer a repeated request with the first answer instead of running it twice.
Failover
--------
The client may be given several URLs of one store's nodes (a list, or one comma-separated
string: ``--server`` repeated).  Each node has its own pools; every request goes to the
current node, the first at the start.  A network failure that waiting can mend (refused,
reset, a timeout) moves the current node to the next in the list (:meth:`HttpRemote._fail_over`:
once, however many requests met the dead node together, with one warning per outage) and
the request is sent again there at once; only when every node failed in a row does it back
off.  Any request may go to another node because every request is safe to repeat (below);
the retry bound stays the call's ``retry_time``, except that every node is tried once per
call even past it (a node that times out must not use up a short window alone, such as the
first contact's).  An answer, even a 5xx, is no reason to switch: the node is there.

After the last attempt a connection failure raises a subclass of
:class:`~fsmount.errors.Unreachable` saying why (refused, unknown host, TLS on one side
only, ...; see :func:`unreachable`); an error answer raises the error the server named
(same class and ``.name`` via :func:`fsmount.errors.from_name`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import ssl
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import h11
import trio

from . import errors
from .protocol import WINDOW, FileType
from .remote import (
    MAX_CHANGES_TIMEOUT,
    BlockCheck,
    ChangeBatch,
    Document,
    FileHash,
    FileLocation,
    InputFile,
    InputFileBig,
    Listing,
    Node,
    NodeKind,
    Owner,
    UploadFile,
    Usage,
    UserConfig,
    WindowRun,
    XattrMode,
)
from .server import wire

__all__ = ["HttpRemote"]

log = logging.getLogger(__name__)

#: A long poll's request may take this much longer than the poll's own timeout (the server
#: answers within the timeout; this covers the round trip and a busy server).
POLL_MARGIN = 10.0

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: How long a call is retried by default before its error is raised (seconds).
RETRY_TIME = 300.0
_RECV = 1 << 20
_HEAD_RECV = 64 * 1024
_MAX_HEAD = 64 * 1024
#: Larger body buffers are dropped after use rather than kept per connection.
_KEEP_BUF = 4 << 20

_NET_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError,
               trio.TooSlowError, ssl.SSLError, ConnectionError)


#: OpenSSL's reasons for a handshake answered by something that is not TLS (a plain HTTP
#: server answers a ClientHello with "HTTP/1.1 400 ...").
_NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL",
                              "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, its causes and contexts and the members of any group among them
    (breadth first, bounded)."""
    out: list[BaseException] = []
    todo = [exc]
    while todo and len(out) < 64:
        e = todo.pop(0)
        if any(e is seen for seen in out):
            continue
        out.append(e)
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return out


def unreachable(url: str, exc: BaseException) -> errors.Unreachable:
    """The domain error for a request to ``url`` that failed with the network error
    ``exc`` on its last attempt: refused, unknown host, TLS on one side only, a
    certificate, a timeout, a closed connection (see :class:`fsmount.errors.Unreachable`)."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, socket.gaierror):
            return errors.HostNotFound(url, e.strerror or str(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return errors.TlsCertificateRejected(url, e.verify_message or e.reason or str(e))
        if isinstance(e, ssl.SSLError):
            if e.reason in _NOT_TLS_REASONS:
                return errors.NotTlsServer(url)
            return errors.TlsFailed(url, e.reason or str(e))
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return errors.ConnectionRefused(url)
        if isinstance(e, trio.TooSlowError):
            return errors.ConnectTimeout(url)
    first = chain[0]
    if isinstance(first, trio.BrokenResourceError | ConnectionResetError):
        return errors.ConnectionClosed(url)
    return errors.Unreachable(url, f"{type(first).__name__}: {first}" if str(first)
                              else type(first).__name__)


def permanent(exc: BaseException) -> bool:
    """True for a network failure that retrying cannot mend: the host name does not
    resolve, the certificate is rejected, the TLS handshake fails or the other side does
    not speak TLS."""
    return isinstance(unreachable("", exc), errors.HostNotFound | errors.TlsCertificateRejected
                      | errors.NotTlsServer | errors.TlsFailed)


class _Conn:
    def __init__(self, stream: trio.abc.Stream, authority: str) -> None:
        self.stream = stream
        #: The Host header of requests on this connection (its node's).
        self.authority = authority
        #: Bytes received past the end of the last answer (none with a sane server).
        self.leftover = bytearray()
        self.reusable = False
        #: Receive buffer for bodies, reused from answer to answer.
        self.buf = bytearray()

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
            except _NET_ERRORS:
                pass


class _Pool:
    """Keep-alive connections to one server, at most ``size`` at once."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, size: int,
                 connect_timeout: float, authority: str = "") -> None:
        self.host, self.port, self.tls = host, port, tls
        self.authority = authority or host
        self.sem = trio.Semaphore(size)
        self.idle: list[_Conn] = []
        self.connect_timeout = connect_timeout
        self.opened = 0  #: connections opened so far (tests read it)

    async def connect(self) -> _Conn:
        with trio.fail_after(self.connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(self.host, self.port)
            if self.tls is not None:
                tls_stream = trio.SSLStream(stream, self.tls, server_hostname=self.host,
                                            https_compatible=True)
                try:
                    await tls_stream.do_handshake()
                except BaseException:
                    # Never leave a half-open socket behind (a server would wait for it).
                    await trio.aclose_forcefully(stream)
                    raise
                stream = tls_stream
        self.opened += 1
        return _Conn(stream, self.authority)

    async def aclose(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            await conn.aclose()


class _Answer:
    __slots__ = ("status", "headers", "body", "parts")

    def __init__(self, status: int, headers: dict[str, str], body: bytes,
                 parts: list[bytearray] | None = None) -> None:
        self.status, self.headers, self.body = status, headers, body
        #: A multi-window getFile answer, already cut by its X-Window-Sizes (body is empty).
        self.parts = parts


def split_server_urls(urls: str | Sequence[str]) -> list[str]:
    """The server URLs of ``--server`` (repeated, or a comma list), in order, duplicates
    dropped.  Raises InvalidArgument (none given)."""
    items = [urls] if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for item in items:
        for url in item.split(","):
            url = url.strip()
            if url and url not in out:
                out.append(url)
    if not out:
        raise errors.InvalidArgument("no server URL given")
    return out


class _Node:
    """One server of the list: its URL, where requests go, and its three pools."""

    def __init__(self, base_url: str, tls: ssl.SSLContext | None, meta: int, bulk: int,
                 connect_timeout: float) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise errors.InvalidArgument(
                f"server URL must be http(s)://HOST[:PORT], not {base_url!r}")
        self.url = base_url
        self.tls = tls if url.scheme == "https" else None
        host = url.hostname
        port = url.port or (443 if url.scheme == "https" else 80)
        self.prefix = urllib.parse.quote(url.path.rstrip("/"), safe="/%")
        authority = url.netloc.rpartition("@")[2]
        if not authority.isascii():
            raise errors.InvalidArgument(
                f"server URL must be ASCII (IDNA-encoded), not {base_url!r}")
        self.meta = _Pool(host, port, self.tls, meta, connect_timeout, authority)
        self.bulk = _Pool(host, port, self.tls, bulk, connect_timeout, authority)
        #: The change feed's own connection (long polls never wait for, or block, the others).
        self.feed = _Pool(host, port, self.tls, 1, connect_timeout, authority)

    async def aclose(self) -> None:
        await self.meta.aclose()
        await self.bulk.aclose()
        await self.feed.aclose()


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return urllib.parse.quote_plus(str(v))


def _stamp(answer: Any) -> int | None:
    """The ``at_ns`` of an unlink/rmdir answer (absent from an older server's)."""
    at = answer.get("at_ns") if isinstance(answer, dict) else None
    return at if isinstance(at, int) and not isinstance(at, bool) else None


def _parse_head(raw: bytes) -> tuple[int, bytes, dict[str, str]]:
    """Status, HTTP minor version string and headers (names lower-cased; repeated headers
    joined with ", ") of a response head ending in CRLF CRLF.  Raises
    h11.RemoteProtocolError on anything malformed (a network error: retried)."""
    lines = raw[:-4].split(b"\r\n")
    first = lines[0].split(b" ", 2)
    if (len(first) < 2 or not first[0].startswith(b"HTTP/1.") or len(first[1]) != 3
            or not first[1].isdigit()):
        raise h11.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name or b"\t" in name:
            raise h11.RemoteProtocolError(f"malformed header line {line[:80]!r}")
        key = name.decode("latin-1").lower()
        val = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key == "content-length" and headers[key] != val:
                raise h11.RemoteProtocolError("conflicting Content-Length headers")
            if key != "content-length":
                headers[key] = f"{headers[key]}, {val}"
        else:
            headers[key] = val
    return int(first[1]), first[0][5:], headers


def _window_sizes(status: int, headers: dict[str, str], length: int) -> list[int] | None:
    """The window sizes of a multi-window getFile answer of ``length`` bytes (its
    ``X-Window-Sizes``), or None for any other answer."""
    raw = headers.get("x-window-sizes")
    if status != 200 or raw is None:
        return None
    try:
        sizes = [int(x) for x in raw.split(",")]
    except ValueError:
        return None
    if sum(sizes) != length or any(n < 0 for n in sizes):
        return None
    return sizes


class HttpRemote:
    """One user's view of a store served by ``fsmount serve`` at ``base_url``.

    The constructor does no I/O; connections open on first use.  Options: ``timeout``
    (seconds per attempt, default 60), ``connect_timeout`` (10), ``retry_time`` (seconds
    a failing call is retried for, default :data:`RETRY_TIME`), ``retries`` (at most this
    many attempts after the first as well, default unbounded), ``backoff`` (first back-off
    ceiling in seconds, 0.1), ``backoff_max`` (2), ``retry_after_max`` (60), ``meta_connections`` (16),
    ``bulk_connections`` (32), ``ca_file`` (a CA bundle for https), ``verify`` (False
    turns certificate checks off).
    """

    def __init__(self, base_url: str | Sequence[str], token: str, **opts: Any) -> None:
        urls = split_server_urls(base_url)
        for u in urls:
            parsed = urllib.parse.urlsplit(u)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise errors.InvalidArgument(
                    f"server URL must be http(s)://HOST[:PORT], not {u!r}")
        if not token or any(c in token for c in "\r\n"):
            raise errors.Unauthorized("no usable bearer token")
        self._auth = f"Bearer {token}"
        self.timeout = float(opts.pop("timeout", 60.0))
        connect_timeout = float(opts.pop("connect_timeout", 10.0))
        retries = opts.pop("retries", None)
        self.retries: int | None = None if retries is None else int(retries)
        self.retry_time = float(opts.pop("retry_time", RETRY_TIME))
        self.backoff = float(opts.pop("backoff", 0.1))
        # Short enough that a restarted server is used again within seconds.
        self.backoff_max = float(opts.pop("backoff_max", 2.0))
        self.retry_after_max = float(opts.pop("retry_after_max", 60.0))
        meta = int(opts.pop("meta_connections", 16))
        bulk = int(opts.pop("bulk_connections", 32))
        tls: ssl.SSLContext | None = None
        if any(u.startswith("https:") for u in urls):
            tls = ssl.create_default_context(cafile=opts.pop("ca_file", None))
            if opts.pop("verify", True) is False:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        else:
            opts.pop("ca_file", None)
            opts.pop("verify", None)
        if opts:
            raise TypeError(f"unknown HttpRemote options: {', '.join(sorted(opts))}")
        #: The servers, in the order given; requests go to ``_nodes[_current]`` and move to
        #: the next when it cannot be reached (:meth:`_fail_over`).
        self._nodes = [_Node(u, tls, meta, bulk, connect_timeout) for u in urls]
        self._current = 0
        #: How many times the requests moved to another server (tests, ``fsmount status``).
        self.switches = 0
        #: Switched since the last answer (further switches of the outage are not logged).
        self._switching = False
        #: How many attempts were retried (tests, benchmarks and ``fsmount status`` read it).
        self.retried = 0
        #: Calls that failed after their retries (``fsmount status`` reads it).
        self.failed = 0
        #: Requests sent per protocol method, retries included (tests and benchmarks).
        self.requests: Counter[str] = Counter()
        #: Set once the server turned out to predate getFileChecksums.
        self._no_checksums = False
        self._closed = False

    @property
    def base_url(self) -> str:
        """The URL of the server requests go to now."""
        return self._nodes[self._current].url

    @property
    def base_urls(self) -> list[str]:
        """Every server URL, in the order given."""
        return [n.url for n in self._nodes]

    @property
    def _meta(self) -> _Pool:
        return self._nodes[self._current].meta

    @property
    def _bulk(self) -> _Pool:
        return self._nodes[self._current].bulk

    async def _fail_over(self, index: int, reason: str) -> None:
        """Server ``index`` could not be reached: send requests to the next one (once, if
        several requests fail on it together), log one line, drop its idle connections."""
        if index != self._current or len(self._nodes) < 2:
            return
        self._current = (index + 1) % len(self._nodes)
        self.switches += 1
        # One line per outage: while every server fails (no answer since the last switch)
        # the switches go on quietly, and the retry warnings say how long they will.
        log.log(logging.DEBUG if self._switching else logging.WARNING,
                "%s: %s; switching to %s", self._nodes[index].url, reason,
                self._nodes[self._current].url)
        self._switching = True
        with trio.CancelScope(shield=True):
            await self._nodes[index].aclose()

    @contextlib.contextmanager
    def patience(self, seconds: float) -> Iterator[None]:
        """Retry calls made inside the block for ``seconds`` at most (the first call to a
        server: a wrong URL should fail at once, not after minutes)."""
        before, self.retry_time = self.retry_time, seconds
        try:
            yield
        finally:
            self.retry_time = before

    # --- transport ---------------------------------------------------------------------------

    async def _once(self, pool: _Pool, method: str, target: str, headers: list[tuple[str, str]],
                    body: bytes | None, timeout: float | None = None) -> _Answer:
        async with pool.sem:
            conn = pool.idle.pop() if pool.idle else await pool.connect()
            reusable = False
            try:
                with trio.fail_after(self.timeout if timeout is None else timeout):
                    answer = await self._exchange(conn, method, target, headers, body)
                reusable = conn.reusable
                if reusable:
                    pool.idle.append(conn)
                return answer
            finally:
                if not reusable:
                    await conn.aclose()

    async def _exchange(self, conn: _Conn, method: str, target: str,
                        headers: list[tuple[str, str]], body: bytes | None) -> _Answer:
        """One request and its answer.  The request head is formatted here and the answer's
        head parsed by :func:`_parse_head`; a body with a Content-Length is then read
        straight into its final buffer with ``recv_into`` (h11's own body path copies
        every byte three times: measured, that was most of the client's CPU per GiB).  Any
        other framing (chunked, close-delimited) goes through h11 (:meth:`_h11_body`)."""
        conn.reusable = False
        # The request head is written by hand, not by h11: every name and value here is
        # ours (the token was checked for CR/LF, the target is percent-encoded), and h11's
        # event validation and state machine cost about a third of the client's CPU per
        # 512 KiB part (measured with cProfile; see docs/performance.md).
        head = [f"{method} {target} HTTP/1.1\r\nhost: {conn.authority}\r\n"
                f"authorization: {self._auth}\r\nuser-agent: fsmount\r\n"]
        for k, v in headers:
            head.append(f"{k}: {v}\r\n")
        if body is not None:
            head.append(f"content-length: {len(body)}\r\n")
        head.append("\r\n")
        out = "".join(head).encode("latin-1")
        if body:
            # Head and body in separate writes: no copy of a 512 KiB body (TCP_NODELAY is
            # on, trio's default, so the small head does not wait for an ACK).
            await conn.stream.send_all(out)
            await conn.stream.send_all(body)
        else:
            await conn.stream.send_all(out)

        buf = conn.leftover
        conn.leftover = bytearray()
        while True:  # heads until the final (non-1xx) response
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if len(buf) > _MAX_HEAD:
                    raise h11.RemoteProtocolError("response head too large")
                data = await conn.stream.receive_some(_HEAD_RECV)
                if not data:
                    raise trio.BrokenResourceError("server closed the connection")
                buf += data
            raw_head = bytes(buf[: end + 4])
            del buf[: end + 4]
            status, version, rh = _parse_head(raw_head)
            if status >= 200:
                break
            if status == 101:
                raise h11.RemoteProtocolError("unexpected protocol switch")
        length = None
        if status in (204, 304) or method == "HEAD":
            length = 0
        elif "transfer-encoding" not in rh and rh.get("content-length", "").isdigit():
            length = int(rh["content-length"])
        if length is None:
            return await self._h11_body(conn, method, target, raw_head, status, rh, buf)
        conn.leftover = buf[length:]
        del buf[length:]
        sizes = _window_sizes(status, rh, length)
        parts: list[bytearray] | None = None
        answer = b""
        if sizes is not None:
            # A multi-window getFile answer is received straight into one buffer per window,
            # which goes into the chunk cache as it is: no copy.
            parts = [bytearray(n) for n in sizes]
            for part in parts:
                with memoryview(part) as pv:
                    await self._recv_into(conn, pv, buf)
        else:
            # The connection's own buffer, reused: a fresh 1 MiB buffer per answer costs a
            # page fault per 4 KiB (measured: more system time than the copy itself).
            if len(conn.buf) < length:
                conn.buf = bytearray(length)
            with memoryview(conn.buf)[:length] as view:
                await self._recv_into(conn, view, buf)
                answer = bytes(view)  # the one copy, into bytes
            if len(conn.buf) > _KEEP_BUF:
                conn.buf = bytearray()
        conn.reusable = version == b"1.1" and "close" not in rh.get("connection", "").lower()
        return _Answer(status, rh, answer, parts)

    @staticmethod
    async def _recv_into(conn: _Conn, view: memoryview, pending: bytearray) -> None:
        """Fill ``view``: first from ``pending`` (bytes received already, consumed), then
        from the connection.  Raises BrokenResourceError if it closes first."""
        got = min(len(pending), len(view))
        view[:got] = pending[:got]
        del pending[:got]
        sock = getattr(conn.stream, "socket", None)
        while got < len(view):
            if sock is not None:
                n = await sock.recv_into(view[got:])
            else:  # TLS: no recv_into on an SSLStream
                data = await conn.stream.receive_some(min(_RECV, len(view) - got))
                n = len(data)
                view[got : got + n] = data
            if n == 0:
                raise trio.BrokenResourceError("server closed the connection inside a body")
            got += n

    async def _h11_body(self, conn: _Conn, method: str, target: str, raw_head: bytes,
                        status: int, rh: dict[str, str], rest: bytearray) -> _Answer:
        """A body without a usable Content-Length (chunked, close-delimited), read by h11;
        the connection is not reused.  h11 is brought to the state of a client whose
        request is complete (the bytes it would send are dropped: the request went out
        already), then given the answer's head and what followed it."""
        hc = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        hc.send(h11.Request(method=method, target=target, headers=[("host", conn.authority)]))
        hc.send(h11.EndOfMessage())
        hc.receive_data(raw_head)
        ev = hc.next_event()
        if not isinstance(ev, h11.Response) or ev.status_code != status:
            raise h11.RemoteProtocolError("unexpected response head")
        hc.receive_data(bytes(rest))
        chunks: list[bytes] = []
        while True:
            ev = hc.next_event()
            if ev is h11.NEED_DATA:
                # b"" (EOF) tells h11 the peer closed; next_event then reports or raises.
                hc.receive_data(await conn.stream.receive_some(_RECV))
                continue
            if isinstance(ev, h11.Data):
                chunks.append(ev.data)
            elif isinstance(ev, h11.EndOfMessage | h11.ConnectionClosed):
                break
        return _Answer(status, rh, b"".join(chunks))

    async def _request(self, method_name: str, *, http: str = "GET",
                       query: dict[str, Any] | None = None, body: bytes | None = None,
                       json_body: Any = None, bulk: bool = False, idempotent_key: bool = False,
                       poll: float | None = None) -> _Answer:
        """One protocol call with retries.  Raises the server's named error, or
        Unreachable (a TransportError) when the server cannot be reached after every
        retry.  ``poll`` (seconds) makes it a long poll of the change feed: on the feed's
        own connection, with that much more time, and not retried (its caller falls back
        at once rather than trust caches while the feed is down)."""
        if self._closed:
            raise errors.TransportError("the remote is closed")
        path = f"{wire.PROTO_PREFIX}{method_name}"
        if query:
            # By hand rather than urlencode: most values are ints (cheaper per part).
            path += "?" + "&".join(
                f"{k}={_query_value(v)}" for k, v in query.items() if v is not None)
        headers: list[tuple[str, str]] = []
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            headers.append(("content-type", "application/json"))
        elif body is not None:
            headers.append(("content-type", "application/octet-stream"))
        if idempotent_key:
            headers.append(("idempotency-key", uuid.uuid4().hex))
        timeout: float | None = None
        deadline = trio.current_time() + self.retry_time
        if poll is not None:
            # Not retried: the follower falls back to short timeouts at once instead.
            timeout, deadline = poll + POLL_MARGIN, trio.current_time()
        attempt = 0
        #: Servers that failed one after another in this call (a full round backs off).
        hops = 0
        while True:
            wait: float | None = None
            self.requests[method_name] += 1
            index = self._current
            node = self._nodes[index]
            pool = node.feed if poll is not None else node.bulk if bulk else node.meta
            try:
                ans = await self._once(pool, http, node.prefix + path, headers, body, timeout)
            except _NET_ERRORS as exc:
                if permanent(exc):
                    self.failed += 1
                    raise unreachable(node.url, exc) from exc
                reason = unreachable(node.url, exc).what
                # Any request -- they are all idempotent, parts by (file_id, part) -- goes
                # on with the next server; the retry bound stays this call's deadline.
                await self._fail_over(index, reason)
                hops += 1
                # Every server is tried once per call, even past the deadline (a node that
                # times out must not use up a short first-contact window alone).
                untried = poll is None and 1 < len(self._nodes) and hops < len(self._nodes)
                if not untried and not self._may_retry(attempt, deadline):
                    self.failed += 1
                    raise unreachable(node.url, exc) from exc
                log.debug("%s failed (%r), retrying", method_name, exc)
                if len(self._nodes) > 1 and hops % len(self._nodes):
                    wait = 0.0  # the next server at once; a round of failures backs off
            else:
                hops = 0
                self._switching = False
                if ans.status < 400:
                    return ans
                if ans.status not in _RETRY_STATUS or not self._may_retry(attempt, deadline):
                    if ans.status >= 500 or ans.status in _RETRY_STATUS:
                        self.failed += 1
                    raise self._error(ans)
                wait = self._retry_after(ans)
                reason = f"HTTP {ans.status}"
            if wait is None:
                wait = random.uniform(0, min(self.backoff_max, self.backoff * 2 ** attempt))
            # Never sleep past the deadline: the last attempt is made at it.
            wait = max(0.0, min(wait, deadline - trio.current_time()))
            if attempt % 20 in (0, 10):
                # The first failure quietly (most are blips); a longer outage is a warning
                # every few attempts, so the log shows it without a line per attempt.
                log.log(logging.INFO if attempt == 0 else logging.WARNING,
                        "%s: %s; retrying for up to %.0f s more", method_name, reason,
                        deadline - trio.current_time())
            attempt += 1
            self.retried += 1
            await trio.sleep(wait)

    def _may_retry(self, attempt: int, deadline: float) -> bool:
        if self.retries is not None and attempt >= self.retries:
            return False
        return trio.current_time() < deadline

    def _retry_after(self, ans: _Answer) -> float | None:
        raw = ans.headers.get("retry-after")
        if raw is None:
            return None
        try:
            return min(self.retry_after_max, max(0.0, float(raw)))
        except ValueError:
            return None

    @staticmethod
    def _error(ans: _Answer) -> errors.FsmountError:
        try:
            body = json.loads(ans.body) if ans.body else None
        except ValueError:
            body = None
        exc = wire.error_from_body(ans.status, body)
        if isinstance(exc, errors.RateLimited) and "retry-after" in ans.headers:
            try:
                exc.retry_after = float(ans.headers["retry-after"])
            except ValueError:
                pass
        return exc

    async def _json(self, method_name: str, **kw: Any) -> Any:
        ans = await self._request(method_name, **kw)
        try:
            return json.loads(ans.body)
        except ValueError as exc:
            raise errors.TransportError(f"{method_name}: the server sent malformed JSON") from exc

    async def _post(self, method_name: str, args: dict[str, Any], *, key: bool = True) -> Any:
        return await self._json(method_name, http="POST", json_body=args, idempotent_key=key)

    # --- configuration -------------------------------------------------------------------------

    async def get_config(self) -> UserConfig:
        return wire.config_from_json(await self._json("getConfig"))

    # --- upload --------------------------------------------------------------------------------

    async def save_file_part(self, file_id: int, file_part: int, data: bytes) -> bool:
        res = await self._json("saveFilePart", http="POST", body=bytes(data), bulk=True,
                               query={"file_id": file_id, "file_part": file_part})
        return bool(res.get("ok")) if isinstance(res, dict) else False

    async def save_big_file_part(self, file_id: int, file_part: int, file_total_parts: int,
                                 data: bytes) -> bool:
        res = await self._json("saveBigFilePart", http="POST", body=bytes(data), bulk=True,
                               query={"file_id": file_id, "file_part": file_part,
                                      "file_total_parts": file_total_parts})
        return bool(res.get("ok")) if isinstance(res, dict) else False

    async def upload_media(self, file: InputFile | InputFileBig) -> Document:
        return wire.document_from_json(await self._post("uploadMedia", wire.input_file_to_json(file)))

    # --- download ------------------------------------------------------------------------------

    async def get_file(self, location: FileLocation, offset: int, limit: int,
                       precise: bool = False) -> UploadFile:
        ans = await self._request("getFile", bulk=True, query={
            "id": location.id, "access_hash": location.access_hash, "offset": offset,
            "limit": limit, "precise": precise or None})
        return UploadFile(self._ftype(ans.headers.get("x-file-type", FileType.UNKNOWN)),
                          self._mtime(ans), ans.body)

    async def get_file_windows(self, location: FileLocation, offset: int, count: int,
                               hashes: bool = True, crc32c: bool = True) -> WindowRun:
        """One getFile request with the server's ``windows=N`` + ``hashes=true``
        (+ ``checksums=crc32c``) extension.  A server without the extensions answers one
        window as plain getFile: then the run is that window, without checks."""
        ans = await self._request("getFile", bulk=True, query={
            "id": location.id, "access_hash": location.access_hash, "offset": offset,
            "limit": WINDOW, "windows": count, "hashes": hashes or None,
            "checksums": "crc32c" if hashes and crc32c else None})
        parts: list[bytes] | list[bytearray] | None = ans.parts
        types = ans.headers.get("x-window-types", "").split(",")
        if parts is None:
            parts, types = [ans.body], [ans.headers.get("x-file-type", "")]
        if not parts or len(types) != len(parts):
            raise errors.TransportError("getFile: malformed multi-window answer")
        checks: list[BlockCheck] | None = None
        if hashes:
            try:
                checks = wire.block_checks_from_headers(ans.headers, offset,
                                                        sum(len(p) for p in parts))
            except errors.InvalidArgument as exc:
                raise errors.TransportError(f"getFile: {exc}") from None
        mtime = self._mtime(ans)
        return WindowRun([UploadFile(self._ftype(t), mtime, data)
                          for t, data in zip(types, parts, strict=True)], checks)

    @staticmethod
    def _ftype(raw: str) -> FileType:
        try:
            return FileType(raw)
        except ValueError:
            return FileType.UNKNOWN

    @staticmethod
    def _mtime(ans: _Answer) -> int:
        try:
            return int(ans.headers.get("x-file-mtime", "0"))
        except ValueError:
            return 0

    async def get_file_hashes(self, location: FileLocation, offset: int) -> list[FileHash]:
        got = await self._ask_checks("getFileHashes", location, offset)
        return [h for h in got if isinstance(h, FileHash)]

    async def get_file_checksums(self, location: FileLocation, offset: int) -> list[BlockCheck]:
        if not self._no_checksums:
            try:
                return await self._ask_checks("getFileChecksums", location, offset)
            except errors.NotFound:
                # A server from before the extension: it has no such method.
                self._no_checksums = True
        return await self.get_file_hashes(location, offset)

    async def _ask_checks(self, method: str, location: FileLocation, offset: int
                          ) -> list[BlockCheck]:
        return wire.checks_from_json(await self._json(method, query={
            "id": location.id, "access_hash": location.access_hash, "offset": offset}))

    async def get_document_by_hash(self, sha256: str, size: int, mime_type: str) -> Document | None:
        res = await self._json("getDocumentByHash",
                               query={"sha256": sha256, "size": size, "mime_type": mime_type})
        doc = res.get("document") if isinstance(res, dict) else None
        return wire.document_from_json(doc) if doc is not None else None

    # --- namespace -----------------------------------------------------------------------------

    async def lookup(self, parent: int, name: str) -> Node:
        return wire.node_from_json(await self._json("lookup", query={"parent": parent, "name": name}))

    async def getattr(self, node_id: int) -> Node:
        return wire.node_from_json(await self._json("getattr", query={"node_id": node_id}))

    async def list_folder(self, folder_id: int, after: str | None = None, limit: int = 1000) -> Listing:
        return wire.listing_from_json(await self._json(
            "listFolder", query={"folder_id": folder_id, "after": after, "limit": limit}))

    async def reserve_node_ids(self, count: int) -> int:
        return wire.req_int(await self._post("reserveNodeIds", {"count": count}), "first")

    async def mkdir(self, parent: int, name: str, mode: int = 0o755, *,
                    owner: Owner | None = None, node_id: int | None = None) -> Node:
        return wire.node_from_json(await self._post("mkdir", {
            "parent": parent, "name": name, "mode": mode, "owner": wire.owner_to_json(owner),
            "node_id": node_id}))

    async def create_file(self, parent: int, name: str, segments: tuple[FileLocation, ...] = (), *,
                          mode: int = 0o644, mtime_ns: int | None = None,
                          replace: bool = False, sha256: str | None = None,
                          owner: Owner | None = None, node_id: int | None = None) -> Node:
        args = {"parent": parent, "name": name,
                "segments": [wire.location_to_json(s) for s in segments],
                "mode": mode, "mtime_ns": mtime_ns, "replace": replace,
                "owner": wire.owner_to_json(owner), "node_id": node_id}
        if sha256 is not None:
            args["sha256"] = sha256
        return wire.node_from_json(await self._post("createFile", args))

    async def put_file(self, parent: int, name: str, data: bytes, *, md5_checksum: str,
                       mode: int = 0o644, mtime_ns: int | None = None,
                       replace: bool = True, owner: Owner | None = None,
                       node_id: int | None = None) -> Node:
        # The metadata pool: a small file is one short request, and a burst of them (tar x)
        # should not queue behind 1 MiB bodies.
        return wire.node_from_json(await self._json("putFile", http="POST", body=bytes(data),
                                                    idempotent_key=True, query={
            "parent": parent, "name": name, "md5_checksum": md5_checksum, "mode": mode,
            "mtime_ns": mtime_ns, "replace": replace, "node_id": node_id,
            "uid": None if owner is None else owner.uid,
            "gid": None if owner is None else owner.gid}))

    async def set_content(self, node_id: int, segments: tuple[FileLocation, ...], *,
                          mtime_ns: int | None = None, sha256: str | None = None) -> Node:
        args = {"node_id": node_id, "segments": [wire.location_to_json(s) for s in segments],
                "mtime_ns": mtime_ns}
        if sha256 is not None:
            args["sha256"] = sha256
        return wire.node_from_json(await self._post("setContent", args))

    async def symlink(self, parent: int, name: str, target: str, *,
                      owner: Owner | None = None, node_id: int | None = None) -> Node:
        return wire.node_from_json(await self._post("symlink", {
            "parent": parent, "name": name, "target": target, "node_id": node_id,
            "owner": wire.owner_to_json(owner)}))

    async def setattr(self, node_id: int, *, mode: int | None = None,
                      mtime_ns: int | None = None) -> Node:
        # Absolute values: repeating it is harmless, no idempotency key needed.
        return wire.node_from_json(await self._post(
            "setattr", {"node_id": node_id, "mode": mode, "mtime_ns": mtime_ns}, key=False))

    async def rename(self, parent: int, name: str, new_parent: int, new_name: str, *,
                     replace: bool = True) -> Node:
        return wire.node_from_json(await self._post("rename", {
            "parent": parent, "name": name, "new_parent": new_parent, "new_name": new_name,
            "replace": replace}))

    async def unlink(self, parent: int, name: str) -> int | None:
        return _stamp(await self._post("unlink", {"parent": parent, "name": name}))

    async def rmdir(self, parent: int, name: str) -> int | None:
        return _stamp(await self._post("rmdir", {"parent": parent, "name": name}))

    async def statfs(self) -> Usage:
        return wire.usage_from_json(await self._json("statfs"))

    # --- change feed ---------------------------------------------------------------------------

    async def get_changes(self, cursor: int | None, timeout: float) -> ChangeBatch:
        """``GET getChanges?cursor=N&timeout=T``: with a cursor a long poll on the feed's
        own connection, not retried; without one an ordinary (retried) metadata call.

        Raises InvalidArgument, NotFound (a server from before the feed), Unreachable.
        """
        query = {"cursor": cursor, "timeout": timeout}
        if cursor is None:
            return wire.change_batch_from_json(await self._json("getChanges", query=query))
        if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                or not 0 <= timeout <= MAX_CHANGES_TIMEOUT):
            raise errors.InvalidArgument(f"timeout must be in 0..{MAX_CHANGES_TIMEOUT:g}")
        return wire.change_batch_from_json(await self._json(
            "getChanges", query=query, poll=float(timeout)))

    # --- POSIX ---------------------------------------------------------------------------------

    async def mknod(self, parent: int, name: str, kind: NodeKind, mode: int, rdev: int = 0,
                    *, owner: Owner | None = None) -> Node:
        return wire.node_from_json(await self._post("mknod", {
            "parent": parent, "name": name, "kind": str(kind), "mode": mode, "rdev": rdev,
            "owner": wire.owner_to_json(owner)}))

    async def link(self, node_id: int, new_parent: int, new_name: str) -> Node:
        return wire.node_from_json(await self._post("link", {
            "node_id": node_id, "new_parent": new_parent, "new_name": new_name}))

    async def chown(self, node_id: int, *, uid: int | None = None,
                    gid: int | None = None) -> Node:
        # Absolute values: repeating it is harmless, no idempotency key needed.
        return wire.node_from_json(await self._post(
            "chown", {"node_id": node_id, "uid": uid, "gid": gid}, key=False))

    async def set_times(self, node_id: int, *, atime_ns: int | None = None,
                        mtime_ns: int | None = None) -> Node:
        return wire.node_from_json(await self._post(
            "setTimes", {"node_id": node_id, "atime_ns": atime_ns, "mtime_ns": mtime_ns},
            key=False))

    async def get_xattr(self, node_id: int, name: str) -> bytes:
        res = await self._json("getXattr", query={"node_id": node_id, "name": name})
        if not isinstance(res, dict):
            raise errors.InvalidArgument("malformed getXattr answer")
        return wire.bytes_from_json(res, "value")

    async def list_xattrs(self, node_id: int) -> list[str]:
        res = await self._json("listXattrs", query={"node_id": node_id})
        names = res.get("names") if isinstance(res, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise errors.InvalidArgument("malformed listXattrs answer")
        return names

    async def set_xattr(self, node_id: int, name: str, value: bytes,
                        mode: XattrMode = XattrMode.EITHER) -> None:
        await self._post("setXattr", {"node_id": node_id, "name": name,
                                      "value": wire.bytes_to_json(bytes(value)),
                                      "mode": str(XattrMode(mode))})

    async def remove_xattr(self, node_id: int, name: str) -> None:
        await self._post("removeXattr", {"node_id": node_id, "name": name})

    async def aclose(self) -> None:
        """Close every pooled connection; later calls raise TransportError."""
        self._closed = True
        for node in self._nodes:
            await node.aclose()
