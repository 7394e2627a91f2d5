"""The ASGI application of ``fsmount serve``: authentication, rate limiting, the protocol
API, and dispatch to the REST shapes.

The server is a thin translation layer.  Each authenticated user gets an
:class:`fsmount.embedded.EmbeddedRemote` over the one shared store; every rule is enforced
there and its error is sent back as JSON ``{"error": NAME, "error_description": ...}`` with
the error's ``http_status``, so the HTTP client can raise the same exception again.

The protocol API (``/api/v1/proto/<method>``) is handled here directly on ASGI messages,
without a framework in the path, because it carries the bulk transfers: part bodies and
getFile answers are raw bytes, never JSON or base64.  Everything else goes to the Starlette
application of :mod:`fsmount.server.rest`.

Methods that change state and are not idempotent by nature accept an ``Idempotency-Key``
header: the answer to a key is remembered for a while (bounded in count), and a repeated
request with that key (a client retry after a lost connection) gets the first answer
instead of running again.  A request that arrives while the first one with its key is
still running waits for it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .. import errors
from ..protocol import MAX_PART_SIZE, WINDOW
from ..remote import FileLocation, NodeKind, Owner, XattrMode
from . import wire
from .auth import AuthDB, RateLimiter
from .metrics import Observer
from .shares import ShareLinks
from .thumbnails import DEFAULT_CACHE_BYTES
from .websession import COOKIE, CSRF_HEADER, WebSessions, cookie_value

if TYPE_CHECKING:
    from ..embedded import EmbeddedRemote

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: How long and how many idempotency keys are remembered.
IDEMPOTENCY_TTL = 600.0
IDEMPOTENCY_MAX = 10_000


@dataclass
class UserCtx:
    """The authenticated caller of one request."""

    name: str
    user_id: int
    token_id: str
    remote: EmbeddedRemote


@dataclass
class _IdemEntry:
    done: trio.Event = field(default_factory=trio.Event)
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | list[bytes] = b""
    at: float = 0.0


RemoteFactory = Callable[[Any, int], "EmbeddedRemote"]


def _embedded_factory() -> RemoteFactory:
    from ..embedded import DEFAULT_THREADS, EmbeddedRemote

    # One thread limiter for all users: the store's threads are bounded together.
    limiter = trio.CapacityLimiter(DEFAULT_THREADS * 2)

    def make(store: Any, user_id: int) -> EmbeddedRemote:
        return EmbeddedRemote(store, user_id, limiter=limiter)

    return make


class ServerState:
    """What every request handler shares: the store, the auth database, the per-user
    remotes, the rate limiter, the idempotency cache and the thumbnail cache directory."""

    def __init__(
        self,
        store: Any,
        store_dir: str | os.PathLike[str],
        *,
        rate_limit: float = 0.0,
        burst: float | None = None,
        clock: Callable[[], float] = time.time,
        remote_factory: RemoteFactory | None = None,
        upload_idle: float = 24 * 3600.0,
        thumb_cache_bytes: int | None = None,
        change_feed: bool = True,
    ) -> None:
        self.store = store
        self.store_dir = os.fspath(store_dir)
        self.clock = clock
        self.auth = AuthDB(self.store_dir, clock=clock)
        self.shares = ShareLinks(self.auth.connection, clock=clock)
        self.sessions = WebSessions(self.auth.connection, self.auth.token_active, clock=clock)
        self.limiter = RateLimiter(rate_limit, burst)
        self.remote_factory = remote_factory or _embedded_factory()
        self.upload_idle = upload_idle
        #: False: answer getChanges 404 like a server from before the feed (tests).
        self.change_feed = change_feed
        self.thumb_dir = os.path.join(self.store_dir, "thumbnails")
        self.thumb_cache_bytes = (DEFAULT_CACHE_BYTES if thumb_cache_bytes is None
                                  else thumb_cache_bytes)
        self.upload_dir = os.path.join(self.store_dir, "uploads")
        self._users: dict[str, tuple[int, EmbeddedRemote]] = {}
        self._by_id: dict[int, EmbeddedRemote] = {}
        self._user_lock = trio.Lock()
        self._idem: OrderedDict[tuple[int, str], _IdemEntry] = OrderedDict()

    # --- users ---------------------------------------------------------------------------

    async def user_remote(self, name: str) -> tuple[int, EmbeddedRemote]:
        """The user's id and remote, creating the user in the store on first use."""
        hit = self._users.get(name)
        if hit is not None:
            return hit
        async with self._user_lock:
            hit = self._users.get(name)
            if hit is not None:
                return hit
            settings = self.auth.user(name)
            def ensure() -> int:
                uid = self.store.ensure_user(name)
                # The user takes the settings `fsmount token add` recorded, if any.
                if settings.quota_bytes is not None or settings.premium is not None:
                    self.store.set_user(uid, quota_bytes=settings.quota_bytes,
                                        premium=settings.premium)
                return uid

            uid = await trio.to_thread.run_sync(ensure)
            remote = self.remote_for_id(uid)
            self._users[name] = (uid, remote)
            return uid, remote

    def remote_for_id(self, user_id: int) -> EmbeddedRemote:
        """The remote of an existing user id (for reading another user's shared file)."""
        remote = self._by_id.get(user_id)
        if remote is None:
            remote = self.remote_factory(self.store, user_id)
            self._by_id[user_id] = remote
        return remote

    async def aclose(self) -> None:
        for remote in list(self._by_id.values()):
            try:
                await remote.aclose()
            except Exception:  # closing must go on for the others
                log.exception("closing a user's remote failed")
        self._by_id.clear()
        self._users.clear()
        self.auth.close()

    # --- idempotency -----------------------------------------------------------------------

    def idem_get(self, key: tuple[int, str]) -> tuple[_IdemEntry, bool]:
        """The entry for ``key`` and whether it is new (the caller must then fill it)."""
        now = time.monotonic()
        while self._idem:
            oldest = next(iter(self._idem.values()))
            if len(self._idem) <= IDEMPOTENCY_MAX and (not oldest.done.is_set()
                                                       or now - oldest.at < IDEMPOTENCY_TTL):
                break
            self._idem.popitem(last=False)
        entry = self._idem.get(key)
        if entry is not None:
            return entry, False
        entry = _IdemEntry(at=now)
        self._idem[key] = entry
        return entry, True


# --- raw ASGI helpers ------------------------------------------------------------------------


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def error_answer(exc: errors.FsmountError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = wire.error_body(exc)
    body["timestamp"] = int(time.time() * 1000)
    headers = [(b"content-type", b"application/json")]
    if isinstance(exc, errors.RateLimited):
        headers.append((b"retry-after", str(int(max(1, exc.retry_after))).encode()))
    if isinstance(exc, errors.Unauthorized):
        headers.append((b"www-authenticate", b'Bearer realm="fsmount"'))
    return exc.http_status, headers, json_bytes(body)


async def send_answer(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                      body: bytes | list[bytes], *, head_only: bool = False) -> None:
    """Send a whole answer; a list body goes out piece by piece (no joined copy)."""
    pieces = body if isinstance(body, list) else [body]
    hdrs = list(headers) + [(b"content-length", str(sum(map(len, pieces))).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    if head_only:
        await send({"type": "http.response.body", "body": b""})
        return
    for i, piece in enumerate(pieces):
        await send({"type": "http.response.body", "body": piece,
                    "more_body": i < len(pieces) - 1})


async def read_body(receive: Receive, cap: int) -> bytes:
    """The whole request body; bytes beyond ``cap`` are read and dropped (the caller checks
    the length: a body of ``cap + 1`` bytes or more means "too big")."""
    chunks: list[bytes] = []
    got = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise errors.InvalidArgument("the client went away during the request body")
        data = msg.get("body", b"")
        if got <= cap:
            chunks.append(data)
        got += len(data)
        if not msg.get("more_body"):
            break
    body = b"".join(chunks)
    return body[: cap + 1] if len(body) > cap else body


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


def query_params(scope: Scope) -> dict[str, str]:
    qs = scope.get("query_string", b"").decode("latin-1")
    try:
        return {k: v[-1] for k, v in urllib.parse.parse_qs(qs, keep_blank_values=True,
                                                            strict_parsing=False).items()}
    except ValueError as exc:
        raise errors.InvalidArgument("malformed query string") from exc


def q_int(params: dict[str, str], key: str, default: int | None = None) -> int:
    """An integer query parameter.  Raises InvalidArgument if missing or not an integer."""
    raw = params.get(key)
    if raw is None or raw == "":
        if default is None:
            raise errors.InvalidArgument(f"missing parameter {key!r}")
        return default
    try:
        val = int(raw, 10)
    except ValueError as exc:
        raise errors.InvalidArgument(f"parameter {key!r} must be an integer") from exc
    if not -(2**63) <= val < 2**63:
        raise errors.InvalidArgument(f"parameter {key!r} is out of range")
    return val


def q_str(params: dict[str, str], key: str) -> str:
    """A text query parameter.  Raises InvalidArgument if missing."""
    raw = params.get(key)
    if raw is None:
        raise errors.InvalidArgument(f"missing parameter {key!r}")
    return raw


def q_float(params: dict[str, str], key: str, default: float) -> float:
    """A number query parameter (``default`` if absent).  Raises InvalidArgument."""
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise errors.InvalidArgument(f"parameter {key!r} must be a number") from exc


def q_bool(params: dict[str, str], key: str) -> bool:
    raw = params.get(key, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise errors.InvalidArgument(f"parameter {key!r} must be true or false")


# --- the protocol API ---------------------------------------------------------------------


async def proto_call(method: str, remote: EmbeddedRemote, scope: Scope, receive: Receive
                     ) -> tuple[int, list[tuple[bytes, bytes]], bytes | list[bytes]]:
    """Run one protocol method and return the answer (status, headers, body).

    Raises FsmountError subclasses for every failure (the caller turns them into JSON).
    """
    p = query_params(scope)
    jh = [(b"content-type", b"application/json")]
    if method in wire.PART_METHODS:
        data = await read_body(receive, MAX_PART_SIZE)
        if method == "saveFilePart":
            ok = await remote.save_file_part(q_int(p, "file_id"), q_int(p, "file_part"), data)
        else:
            ok = await remote.save_big_file_part(
                q_int(p, "file_id"), q_int(p, "file_part"), q_int(p, "file_total_parts"), data)
        return 200, jh, json_bytes({"ok": bool(ok)})
    if method == "putFile":
        config = await remote.get_config()
        data = await read_body(receive, config.big_file_threshold)
        mtime = p.get("mtime_ns")
        has_owner = "uid" in p or "gid" in p
        node = await remote.put_file(
            q_int(p, "parent"), q_str(p, "name"), data,
            md5_checksum=q_str(p, "md5_checksum"), mode=q_int(p, "mode", 0o644),
            mtime_ns=q_int(p, "mtime_ns") if mtime is not None else None,
            replace="replace" not in p or q_bool(p, "replace"),
            owner=Owner(q_int(p, "uid"), q_int(p, "gid")) if has_owner else None,
            node_id=q_int(p, "node_id") if "node_id" in p else None)
        return 200, jh, json_bytes(wire.node_to_json(node))
    if method == "getFile":
        loc = FileLocation(q_int(p, "id"), q_int(p, "access_hash"))
        offset, limit, precise = q_int(p, "offset"), q_int(p, "limit"), q_bool(p, "precise")
        windows, hashes = q_int(p, "windows", 1), q_bool(p, "hashes")
        checksums = p.get("checksums")
        if checksums not in (None, "crc32c"):
            raise errors.InvalidArgument(f"checksums must be crc32c, not {checksums!r}")
        if windows != 1 or hashes:
            return await _get_windows(remote, loc, offset, limit, precise, windows, hashes,
                                      crc32c=checksums == "crc32c")
        res = await remote.get_file(loc, offset, limit, precise)
        return 200, [(b"content-type", b"application/octet-stream"),
                     (b"x-file-type", str(res.type).encode()),
                     (b"x-file-mtime", str(int(res.mtime)).encode())], res.bytes
    if method in wire.GET_METHODS:
        return 200, jh, json_bytes(await _proto_get(method, remote, p))
    args = wire.json_object(await read_body(receive, wire.MAX_JSON_BODY))
    return 200, jh, json_bytes(await _proto_post(method, remote, args))


async def _get_windows(remote: EmbeddedRemote, loc: FileLocation, offset: int, limit: int,
                       precise: bool, windows: int, hashes: bool, *, crc32c: bool
                       ) -> tuple[int, list[tuple[bytes, bytes]], list[bytes]]:
    """getFile extension ``windows=N``: N consecutive whole 1 MiB windows from ``offset``
    in one answer (what N getFile calls of the store would answer), so that a sequential
    reader pays the per-request cost once per N MiB.  ``X-Window-Sizes`` and
    ``X-Window-Types`` say how to cut the body; it stops after the first short window (the
    end).  With ``hashes=true`` (any N), ``X-Block-Hashes`` carries the block hashes of the
    windows sent, saving the reader its getFileHashes calls; with ``checksums=crc32c`` as
    well, ``X-Block-Crc32c`` carries their CRC32Cs instead when the store has them (what
    getFileChecksums would answer).

    Raises OffsetInvalid unless offset is window-aligned, InvalidArgument unless limit is
    1 MiB, not precise, and N is in 1..MAX_GETFILE_WINDOWS; otherwise what getFile raises
    for the first window.
    """
    if offset < 0 or offset % WINDOW:
        raise errors.OffsetInvalid(
            f"windows=N and hashes need an offset that is a multiple of {WINDOW}, not {offset}")
    if not 1 <= windows <= wire.MAX_GETFILE_WINDOWS or precise or limit != WINDOW:
        raise errors.InvalidArgument(
            f"windows=N (1..{wire.MAX_GETFILE_WINDOWS}) and hashes need whole 1 MiB windows, "
            "not precise")
    parts, checks = await remote.get_file_windows(loc, offset, windows, hashes, crc32c)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"x-file-type", str(parts[0].type).encode()),
        (b"x-file-mtime", str(int(parts[0].mtime)).encode()),
        (b"x-window-sizes", ",".join(str(len(r.bytes)) for r in parts).encode()),
        (b"x-window-types", ",".join(str(r.type) for r in parts).encode()),
    ]
    if hashes:
        headers.append(wire.block_checks_to_header(checks))
    return 200, headers, [r.bytes for r in parts]


async def _proto_get(method: str, remote: EmbeddedRemote, p: dict[str, str]) -> Any:
    if method == "getChanges":
        # A long poll: answers at once when there are changes after ``cursor``, else after
        # ``timeout`` seconds with none (no cursor: the current one, at once).
        raw = p.get("cursor")
        cursor = None if raw is None or raw == "" else q_int(p, "cursor")
        return wire.change_batch_to_json(await remote.get_changes(
            cursor, q_float(p, "timeout", 0.0)))
    if method == "getConfig":
        return wire.config_to_json(await remote.get_config())
    if method in ("getFileHashes", "getFileChecksums"):
        loc = FileLocation(q_int(p, "id"), q_int(p, "access_hash"))
        offset = q_int(p, "offset")
        windows = q_int(p, "windows", 1)
        if not 1 <= windows <= wire.MAX_HASH_WINDOWS:
            raise errors.InvalidArgument(f"windows must be in 1..{wire.MAX_HASH_WINDOWS}")
        # Extension: ``windows`` windows from the offset's window on, in one answer (one
        # request instead of several for a sequential reader).
        if method == "getFileHashes":
            return wire.hashes_to_json(await remote.get_file_hashes(loc, offset, windows))
        # Extension: the same blocks' CRC32Cs where the store has them.
        return wire.checks_to_json(await remote.get_file_checksums(loc, offset, windows))
    if method == "getDocumentByHash":
        sha = p.get("sha256")
        if not sha:
            raise errors.InvalidArgument("missing parameter 'sha256'")
        doc = await remote.get_document_by_hash(sha, q_int(p, "size"), p.get("mime_type", ""))
        return {"document": wire.document_to_json(doc) if doc else None}
    if method == "lookup":
        name = p.get("name")
        if name is None:
            raise errors.InvalidArgument("missing parameter 'name'")
        return wire.node_to_json(await remote.lookup(q_int(p, "parent"), name))
    if method == "getattr":
        return wire.node_to_json(await remote.getattr(q_int(p, "node_id")))
    if method == "listFolder":
        after = p.get("after")
        return wire.listing_to_json(await remote.list_folder(
            q_int(p, "folder_id"), after if after else None, q_int(p, "limit", 1000)))
    if method == "statfs":
        return wire.usage_to_json(await remote.statfs())
    if method == "getXattr":
        name = p.get("name")
        if name is None:
            raise errors.InvalidArgument("missing parameter 'name'")
        return {"value": wire.bytes_to_json(await remote.get_xattr(q_int(p, "node_id"), name))}
    if method == "listXattrs":
        return {"names": await remote.list_xattrs(q_int(p, "node_id"))}
    raise errors.NotFound(f"no protocol method {method!r}")


def _opt_str(a: dict[str, Any], key: str) -> str | None:
    """An optional string argument.  Raises InvalidArgument if present and not a string."""
    value = a.get(key)
    if value is not None and not isinstance(value, str):
        raise errors.InvalidArgument(f"{key} must be a string")
    return value


async def _proto_post(method: str, remote: EmbeddedRemote, a: dict[str, Any]) -> Any:
    ri, rs = wire.req_int, wire.req_str
    if method == "uploadMedia":
        return wire.document_to_json(await remote.upload_media(wire.input_file_from_json(a)))
    if method == "reserveNodeIds":
        return {"first": await remote.reserve_node_ids(ri(a, "count"))}
    if method == "mkdir":
        return wire.node_to_json(await remote.mkdir(ri(a, "parent"), rs(a, "name"),
                                                    ri(a, "mode", default=0o755),
                                                    owner=wire.owner_from_json(a.get("owner")),
                                                    node_id=ri(a, "node_id", default=None)))
    if method == "createFile":
        return wire.node_to_json(await remote.create_file(
            ri(a, "parent"), rs(a, "name"), wire.locations_from_json(a.get("segments")),
            mode=ri(a, "mode", default=0o644), mtime_ns=ri(a, "mtime_ns", default=None),
            replace=wire.req_bool(a, "replace", False), sha256=_opt_str(a, "sha256"),
            owner=wire.owner_from_json(a.get("owner")),
            node_id=ri(a, "node_id", default=None)))
    if method == "setContent":
        return wire.node_to_json(await remote.set_content(
            ri(a, "node_id"), wire.locations_from_json(a.get("segments")),
            mtime_ns=ri(a, "mtime_ns", default=None), sha256=_opt_str(a, "sha256")))
    if method == "symlink":
        return wire.node_to_json(await remote.symlink(
            ri(a, "parent"), rs(a, "name"), rs(a, "target"),
            owner=wire.owner_from_json(a.get("owner")),
            node_id=ri(a, "node_id", default=None)))
    if method == "setattr":
        return wire.node_to_json(await remote.setattr(
            ri(a, "node_id"), mode=ri(a, "mode", default=None),
            mtime_ns=ri(a, "mtime_ns", default=None)))
    if method == "rename":
        return wire.node_to_json(await remote.rename(
            ri(a, "parent"), rs(a, "name"), ri(a, "new_parent"), rs(a, "new_name"),
            replace=wire.req_bool(a, "replace", True)))
    if method == "unlink":
        return {"ok": True, "at_ns": await remote.unlink(ri(a, "parent"), rs(a, "name"))}
    if method == "rmdir":
        return {"ok": True, "at_ns": await remote.rmdir(ri(a, "parent"), rs(a, "name"))}
    if method == "mknod":
        try:
            kind = NodeKind(rs(a, "kind"))
        except ValueError:
            raise errors.InvalidArgument(f"unknown node kind {a.get('kind')!r}") from None
        return wire.node_to_json(await remote.mknod(
            ri(a, "parent"), rs(a, "name"), kind, ri(a, "mode", default=0o644),
            ri(a, "rdev", default=0), owner=wire.owner_from_json(a.get("owner"))))
    if method == "link":
        return wire.node_to_json(await remote.link(ri(a, "node_id"), ri(a, "new_parent"),
                                                   rs(a, "new_name")))
    if method == "chown":
        return wire.node_to_json(await remote.chown(
            ri(a, "node_id"), uid=ri(a, "uid", default=None), gid=ri(a, "gid", default=None)))
    if method == "setTimes":
        return wire.node_to_json(await remote.set_times(
            ri(a, "node_id"), atime_ns=ri(a, "atime_ns", default=None),
            mtime_ns=ri(a, "mtime_ns", default=None)))
    if method == "setXattr":
        try:
            xmode = XattrMode(rs(a, "mode", default="either"))
        except ValueError:
            raise errors.InvalidArgument(f"unknown setXattr mode {a.get('mode')!r}") from None
        await remote.set_xattr(ri(a, "node_id"), rs(a, "name"),
                               wire.bytes_from_json(a, "value"), xmode)
        return {"ok": True}
    if method == "removeXattr":
        await remote.remove_xattr(ri(a, "node_id"), rs(a, "name"))
        return {"ok": True}
    raise errors.NotFound(f"no protocol method {method!r}")


# --- the application ------------------------------------------------------------------------


class FsmountApp:
    """The ASGI callable.  ``rest`` is the Starlette app for everything but the protocol."""

    def __init__(self, state: ServerState) -> None:
        from .rest import build_rest_app

        self.state = state
        self.rest = build_rest_app(state)
        self._closed = False
        #: Access log and metrics around every request (``/metrics`` answers there).
        self.observer = Observer(self._handle)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.observer(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/openapi.json" or path == "/healthz" or is_public(path):
            # Share links and the web UI's pages check their own access (a link's secret
            # and password; the page's cookie session).
            await self.rest(scope, receive, send)
            return
        try:
            user = await self.authenticate(scope)
            self.state.limiter.take(user.token_id)
        except errors.FsmountError as exc:
            await self._drain(receive)
            await send_answer(send, *error_answer(exc), head_only=scope["method"] == "HEAD")
            return
        scope.setdefault("state", {})["fsm_user"] = user  # the access log names the user
        if path.startswith(wire.PROTO_PREFIX):
            await self.proto(path[len(wire.PROTO_PREFIX):], user, scope, receive, send)
            return
        await self.rest(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _drain(receive: Receive) -> None:
        # Read (and drop) a request body we refuse, so a keep-alive connection stays usable;
        # bounded, so an unauthenticated client cannot make us read forever.
        left = 64 << 20
        while left > 0:
            msg = await receive()
            left -= len(msg.get("body", b""))
            if msg["type"] != "http.request" or not msg.get("more_body"):
                return

    async def authenticate(self, scope: Scope) -> UserCtx:
        """Raises Unauthorized for a missing, malformed, wrong or revoked bearer token."""
        auth = header(scope, b"authorization")
        token = None
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
        if token is None:
            # Browsers cannot send a bearer header by hand: allow ?access_token= instead.
            token = query_params(scope).get("access_token") or None
        if token is None:
            # The web UI's cookie session; a state change needs its CSRF token as well.
            session = self.state.sessions.get(cookie_value(header(scope, b"cookie"), COOKIE))
            if session is not None:
                self.state.sessions.check_csrf(session, scope["method"],
                                               header(scope, CSRF_HEADER.encode()))
                uid, remote = await self.state.user_remote(session.user)
                return UserCtx(session.user, uid, session.token_id, remote)
        if token is None:
            raise errors.Unauthorized("Unable to authenticate: no access token")
        token_id, name = self.state.auth.authenticate(token)
        uid, remote = await self.state.user_remote(name)
        return UserCtx(name, uid, token_id, remote)

    async def proto(self, method: str, user: UserCtx, scope: Scope, receive: Receive,
                    send: Send) -> None:
        verb = scope["method"]
        want = "GET" if method in wire.GET_METHODS else "POST"
        if method not in wire.ALL_METHODS or (method == "getChanges"
                                               and not self.state.change_feed):
            await self._drain(receive)
            await send_answer(send, *error_answer(errors.NotFound(f"no protocol method {method!r}")))
            return
        if verb != want and not (verb == "HEAD" and want == "GET"):
            await self._drain(receive)
            exc = errors.InvalidArgument(f"{method} takes {want}")
            status, headers, body = error_answer(exc)
            await send_answer(send, 405, headers + [(b"allow", want.encode())], body)
            return
        key = header(scope, b"idempotency-key")
        entry: _IdemEntry | None = None
        if key and method in wire.NON_IDEMPOTENT:
            entry, fresh = self.state.idem_get((user.user_id, f"{method}:{key}"))
            if not fresh:
                await self._drain(receive)
                with trio.move_on_after(300):
                    await entry.done.wait()
                if entry.done.is_set():
                    await send_answer(send, entry.status,
                                      entry.headers + [(b"idempotent-replay", b"true")], entry.body)
                else:
                    await send_answer(send, *error_answer(
                        errors.TransportError("the first request with this key is still running")))
                return
        try:
            status, headers, body = await proto_call(method, user.remote, scope, receive)
        except errors.FsmountError as exc:
            status, headers, body = error_answer(exc)
        except Exception:
            log.exception("protocol method %s failed", method)
            status, headers, body = error_answer(errors.FsmountError("internal server error"))
        except BaseException:
            if entry is not None:
                # Let a retry run the call again rather than wait for an answer that never comes.
                self.state._idem.pop((user.user_id, f"{method}:{key}"), None)
                entry.status, entry.headers, entry.body = error_answer(
                    errors.TransportError("interrupted"))
                entry.done.set()
            raise
        if entry is not None:
            entry.status, entry.headers, entry.body = status, headers, body
            entry.at = time.monotonic()
            entry.done.set()
        await send_answer(send, status, headers, body, head_only=verb == "HEAD")


#: Paths served without a bearer token: the web UI's pages and assets, and share links.
PUBLIC_PREFIXES = ("/s/", "/ui/", "/d/", "/v/")
PUBLIC_PATHS = frozenset({"/", "/login", "/logout", "/search", "/shares"})


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def create_app(store: Any, store_dir: str | os.PathLike[str], **kwargs: Any) -> FsmountApp:
    """Build the ASGI app over an open store.  ``kwargs`` go to :class:`ServerState`."""
    return FsmountApp(ServerState(store, store_dir, **kwargs))
