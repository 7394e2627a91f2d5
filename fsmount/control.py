"""The control channel of a running mount: one request, one answer, JSON over a Unix socket.

A mount listens on :func:`socket_path` (in the runtime directory, private to the user,
keyed by the mountpoint like the pid file).  A client (``fsmount status MOUNTPOINT``, and
any later command such as ``fsmount sync``) connects, sends one line of JSON
``{"cmd": NAME, "args": {...}}`` and reads one line back: ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": MESSAGE}``.  The mount's side is one handler table
(:data:`Handlers`: command name -> ``async (args) -> result``) given to :func:`serve`, so a
new command is one more entry, in whatever module owns its state.

Only the mounting user can connect (the socket's directory is 0700); a request line is
bounded (:data:`MAX_LINE`) and a connection that sends nothing is dropped after
:data:`IDLE_TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from . import errors

__all__ = ["ControlError", "Handler", "Handlers", "request", "serve", "socket_path"]

log = logging.getLogger(__name__)

#: One request or answer line, at most.
MAX_LINE = 1 << 20
#: A client that sends no complete request in this long is dropped.
IDLE_TIMEOUT = 10.0

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
Handlers = dict[str, Handler]


class ControlError(errors.FsmountError):
    """The control channel of a mount cannot be used: nothing mounted there by this user,
    no answer, or the command failed in the mount."""

    name = "CONTROL_FAILED"

    def __str__(self) -> str:
        return self.message


def runtime_dir() -> str:
    """``$XDG_RUNTIME_DIR/fsmount-UID`` (else under /tmp): pid files and control sockets."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(base, f"fsmount-{os.getuid()}")


def socket_path(mountpoint: str) -> str:
    """Where the mount at ``mountpoint`` listens."""
    import hashlib

    key = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:16]
    return os.path.join(runtime_dir(), f"{key}.sock")


async def serve(path: str, handlers: Handlers, *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Answer requests on a Unix socket at ``path`` until cancelled (then the socket file
    is removed).  Start with ``nursery.start``.  Raises OSError if it cannot listen."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale socket of a mount that died
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(_answer, stream, handlers)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        await trio.aclose_forcefully(listener)


async def _answer(stream: trio.SocketStream, handlers: Handlers) -> None:
    async with stream:
        try:
            line = b""
            with trio.move_on_after(IDLE_TIMEOUT):
                while b"\n" not in line and len(line) <= MAX_LINE:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    line += data
            answer = await _run(line.split(b"\n", 1)[0], handlers)
            await stream.send_all(json.dumps(answer).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away


async def _run(line: bytes, handlers: Handlers) -> dict[str, Any]:
    try:
        req = json.loads(line)
        cmd, args = req["cmd"], req.get("args") or {}
        if not isinstance(cmd, str) or not isinstance(args, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return {"ok": False, "error": "malformed request"}
    handler = handlers.get(cmd)
    if handler is None:
        return {"ok": False, "error": f"unknown command {cmd!r} (known: "
                                      f"{', '.join(sorted(handlers))})"}
    try:
        return {"ok": True, "result": await handler(args)}
    except errors.FsmountError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # a bug in a handler: the mount keeps running
        log.exception("control command %s failed", cmd)
        return {"ok": False, "error": f"{cmd} failed: {type(exc).__name__}"}


def request(mountpoint: str, cmd: str, args: dict[str, Any] | None = None, *,
            timeout: float = 30.0) -> Any:
    """Send ``cmd`` to the mount at ``mountpoint`` and return its result (blocking).

    Raises:
        ControlError: no mount of this user answers there, it answered an error, or no
            answer came within ``timeout`` seconds.
    """
    path = socket_path(mountpoint)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
            buf = b""
            while b"\n" not in buf and len(buf) <= MAX_LINE:
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
        except FileNotFoundError:
            raise ControlError(f"no fsmount mount of this user at {mountpoint}") from None
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                raise ControlError(f"no fsmount mount of this user at {mountpoint}") from None
            raise ControlError(f"{mountpoint}: the mount did not answer "
                               f"({exc.strerror or type(exc).__name__})") from None
    try:
        answer = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        raise ControlError(f"{mountpoint}: the mount sent no answer") from None
    if not answer.get("ok"):
        raise ControlError(f"{mountpoint}: {answer.get('error', 'failed')}")
    return answer.get("result")
