"""How the command line fails: the errors of the CLI itself, and the one table that turns
any exception into one line on stderr and an exit status.

Every verb lets its errors escape; :func:`describe` is the only place that looks at them.
It unwraps trio's exception groups (a Ctrl-C inside a nursery arrives as a group holding a
``KeyboardInterrupt``), picks the error that matters, and finds its line in
:data:`MESSAGES` by walking the exception's MRO, like :data:`fsmount.errors.ERRNO` does for
errno: the most specific entry wins, and a domain error without an entry of its own is
printed as itself (``NAME: message``).  The line says what happened and, where there is
one, what to do.  Exit statuses: 130 for Ctrl-C, 2 for a usage error (as argparse), 1
for everything else.  A traceback is never printed; an unexpected exception (a bug) is
one line too, its traceback logged at DEBUG level.
"""

from __future__ import annotations

import errno
import logging
import shlex
import urllib.parse
from collections.abc import Callable
from typing import Any, NamedTuple

import trio

from . import errors

__all__ = [
    "UsageError",
    "StoreMissing",
    "StoreNotADirectory",
    "LocalFileExists",
    "CannotListen",
    "Failure",
    "MESSAGES",
    "describe",
    "leaf_errors",
]

log = logging.getLogger(__name__)

#: Exit status after Ctrl-C (128 + SIGINT, what shells report).
EXIT_INTERRUPTED = 130
#: Exit status of a usage error (the options contradict each other), as argparse's.
EXIT_USAGE = 2
EXIT_FAILURE = 1


# --- errors of the command line itself --------------------------------------------------


class UsageError(errors.InvalidArgument):
    """The options given cannot work together (exit status 2)."""


class StoreMissing(errors.NotFound):
    """``--store`` names a directory that holds no store, for a verb that does not create one."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"no store in {path}")


class StoreNotADirectory(errors.NotADirectory):
    """``--store`` names something that is not a directory (a regular file, ...)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"--store {path} is not a directory")


class LocalFileExists(errors.AlreadyExists):
    """``fsmount get`` would overwrite an existing local file without ``--force``."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} exists")


class CannotListen(errors.FsmountError):
    """``fsmount serve`` could not listen on its address (``os_error`` says why)."""

    name = "CANNOT_LISTEN"

    def __init__(self, address: str, os_error: OSError) -> None:
        self.address = address
        self.os_error = os_error
        super().__init__(f"cannot listen on {address}: {os_error.strerror or os_error}")


# --- the table ---------------------------------------------------------------------------


def _os_error(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def _scheme_swapped(url: str, scheme: str) -> str:
    return urllib.parse.urlsplit(url)._replace(scheme=scheme).geturl()


def _base_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _closed(exc: errors.ConnectionClosed) -> str:
    line = f"{exc.url}: the server closed the connection without answering"
    if exc.url.startswith("http://"):
        line += f" (if it serves HTTPS, use --server {_scheme_swapped(exc.url, 'https')})"
    return line


#: What a listening failure means, by errno.
_LISTEN_HINTS = {
    errno.EADDRINUSE: "another process listens there: stop it or choose another "
                      "--listen HOST:PORT",
    errno.EACCES: "ports below 1024 need privileges: choose another --listen HOST:PORT",
    errno.EADDRNOTAVAIL: "that host is not an address of this machine: choose another "
                         "--listen HOST:PORT",
}


def _listen(exc: CannotListen) -> str:
    hint = _LISTEN_HINTS.get(exc.os_error.errno or 0)
    return str(exc.message) + (f" ({hint})" if hint else "")


def _internal(exc: BaseException) -> str:
    return f"internal error: {type(exc).__name__}: {exc} (--log-level DEBUG logs where)"


Describer = Callable[[Any], str]

#: The one table from an exception's class to its line (without the ``fsmount:`` prefix).
#: Lookup walks the MRO; ``str(exc)`` of a domain error is the fallback.
MESSAGES: dict[type[BaseException], Describer] = {
    KeyboardInterrupt: lambda exc: "interrupted",
    StoreMissing: lambda exc: (
        f"no store in {exc.path}: create one with `fsmount init --store "
        f"{shlex.quote(exc.path)}` (mount and serve create it on first use)"),
    StoreNotADirectory: lambda exc: f"--store {exc.path} is not a directory",
    LocalFileExists: lambda exc: f"{exc.path} exists: pass --force to overwrite it",
    CannotListen: _listen,
    UsageError: lambda exc: str(exc.message),
    errors.Unauthorized: lambda exc: (
        "the server refused the token (401 Unauthorized): make one on the server with "
        "`fsmount token add --store DIR NAME` and pass it with --token-file FILE or "
        "$FSMOUNT_TOKEN"),
    errors.ServerURLNotFound: lambda exc: (
        f"the server answered 404 Not Found at {exc.url}: --server should be the "
        f"server's base URL, e.g. {_base_url(exc.url)}"),
    errors.ConnectionRefused: lambda exc: (
        f"cannot connect to {exc.url}: connection refused (is `fsmount serve` running "
        f"there, on that port?)"),
    errors.HostNotFound: lambda exc: (
        f"cannot connect to {exc.url}: the host name "
        f"{urllib.parse.urlsplit(exc.url).hostname} does not resolve (check --server)"),
    errors.ConnectTimeout: lambda exc: f"{exc.url}: the server did not answer in time",
    errors.ConnectionClosed: _closed,
    errors.NotTlsServer: lambda exc: (
        f"{exc.url}: the server does not speak TLS (https): use --server "
        f"{_scheme_swapped(exc.url, 'http')}"),
    errors.TlsCertificateRejected: lambda exc: (
        f"{exc.url}: the server's TLS certificate was rejected: {exc.detail}"),
    errors.TlsFailed: lambda exc: f"{exc.url}: the TLS handshake failed: {exc.detail}",
    errors.Unreachable: lambda exc: f"cannot reach {exc.url}: {exc.detail}",
    errors.FsmountError: str,
    OSError: _os_error,
    BaseException: _internal,
}

#: Exit status by class (MRO lookup as for MESSAGES).
STATUS: dict[type[BaseException], int] = {
    KeyboardInterrupt: EXIT_INTERRUPTED,
    UsageError: EXIT_USAGE,
    BaseException: EXIT_FAILURE,
}


class Failure(NamedTuple):
    """How the command ends: the line for stderr (without ``fsmount:``) and the status."""

    message: str
    status: int


def leaf_errors(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc`` and its (nested) groups, in order, without trio's
    Cancelled (the consequence of another error, never the cause)."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(leaf_errors(inner))
        return out
    return [] if isinstance(exc, trio.Cancelled) else [exc]


def _lookup(table: dict[type[BaseException], Any], exc: BaseException) -> Any:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return table[BaseException]


def describe(exc: BaseException) -> Failure:
    """The one line and exit status for ``exc`` (any exception, or a group of them).

    A Ctrl-C anywhere among them wins: the user asked to stop, the rest are its echoes.
    Otherwise the first error is described, with a count of the others.
    """
    leaves = leaf_errors(exc) or [exc]
    interrupt = next((e for e in leaves if isinstance(e, KeyboardInterrupt)), None)
    if interrupt is not None:
        return Failure(MESSAGES[KeyboardInterrupt](interrupt), EXIT_INTERRUPTED)
    first = leaves[0]
    if not isinstance(first, errors.FsmountError | OSError):
        log.debug("unexpected error", exc_info=first)
    line = " ".join(str(_lookup(MESSAGES, first)(first)).split())  # one line, always
    others = len(leaves) - 1
    if others:
        line += f" (and {others} other error{'s' if others > 1 else ''})"
    return Failure(line, int(_lookup(STATUS, first)))
