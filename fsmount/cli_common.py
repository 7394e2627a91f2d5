"""What the CLI verbs share: the options that choose a remote, opening it, path
resolution on a remote, size arguments, and a progress bar for terminals.

``--store DIR`` (default ``$XDG_DATA_HOME/fsmount``, else ``~/.local/share/fsmount``) names
the embedded store; ``--server URL`` with a token (``--token-file`` or ``$FSMOUNT_TOKEN``)
uses the HTTP client instead.

A store is never created by accident: only ``mount``, ``serve`` and ``init`` make a new one
(and say so on stderr), every other verb fails on a directory that holds none, so that a
mistyped ``--store`` is an error rather than an empty store (:func:`store_dir`).  A
``--server`` is checked with one call before it is used (:func:`open_remote`), so that a
wrong URL, scheme or token fails the command at once, in one line.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import trio

from . import errors
from .cli_errors import StoreMissing, StoreNotADirectory, UsageError
from .remote import ROOT_ID, Node, Remote

if TYPE_CHECKING:
    from .httpremote import HttpRemote

#: How long the first call to a server is retried: a wrong URL or a server that is not
#: running fails the command in seconds, while later calls wait through outages.
FIRST_CONTACT_RETRY_TIME = 3.0
#: The file that makes a directory a store: its metadata database (see fsmount.store).
STORE_DB = "meta.sqlite"


def default_store_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return os.path.join(base, "fsmount")


class ServerList(argparse.Action):
    """``--server`` given again adds to the list: ``args.server`` is one comma list of
    URLs (what :class:`fsmount.httpremote.HttpRemote` and ``mount.fsmount`` take)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{before},{values}" if before else str(values))


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    """Add --store, --server, --token-file and --user to a verb's parser."""
    g = parser.add_argument_group("remote")
    g.add_argument("--store", metavar="DIR", default=None,
                   help=f"embedded store directory (default {default_store_dir()})")
    g.add_argument("--server", metavar="URL", default=None, action=ServerList,
                   help="use the fsmount server at URL instead of an embedded store; "
                   "several nodes of one store: repeat --server or give a comma list "
                   "(requests move to the next when one cannot be reached)")
    g.add_argument("--token-file", metavar="PATH", default=None,
                   help="file holding the bearer token for --server (default $FSMOUNT_TOKEN)")
    g.add_argument("--user", default="default",
                   help="user of the embedded store (default: default)")
    g.add_argument("--retry-time", type=parse_duration, default=None, metavar="TIME",
                   help="with --server: how long a failing call is retried (server restart, "
                   "network outage) before it fails, e.g. 30s, 5m, 1h (default 5m); "
                   "a wrong name, certificate or token fails at once")


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise errors.InvalidArgument(
                f"cannot read token file {args.token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get("FSMOUNT_TOKEN", "").strip()
    if not token:
        raise UsageError("--server needs a token: --token-file PATH or $FSMOUNT_TOKEN")
    return token


def store_dir(args: argparse.Namespace, *, create: bool = False) -> str:
    """The absolute store directory that ``--store`` (or the default) names, checked.

    A directory that holds no store is an error, unless ``create`` (``mount``, ``serve``,
    ``init``): then a new empty store is made there and one line on stderr says so.

    Raises:
        StoreNotADirectory: the path exists and is not a directory.
        StoreMissing: no store there, and not ``create``.
        OSError: the store cannot be created (e.g. a parent is a file, no permission).
    """
    path = os.path.abspath(args.store or default_store_dir())
    if os.path.exists(path) and not os.path.isdir(path):
        raise StoreNotADirectory(path)
    from .store.meta_select import store_exists

    if store_exists(Path(path)):
        return path
    if not create:
        raise StoreMissing(path)
    from .store import Store

    os.makedirs(path, exist_ok=True)
    Store(path).close()
    print(f"fsmount: created a new empty store in {path}", file=sys.stderr, flush=True)
    return path


async def open_remote(args: argparse.Namespace, *, exclusive: bool) -> Remote:
    """The remote the options name, opened (call inside trio; ``aclose`` it after use).

    An embedded store must exist already (see :func:`store_dir`).  A server is asked for the
    root folder's attributes first, which every fsmount server answers.

    Raises StoreLocked (another mount holds the store and ``exclusive``), UsageError (bad
    options), StoreMissing, StoreNotADirectory, Unauthorized (the server refused the token),
    ServerURLNotFound (the URL is not the server's base URL), Unreachable.
    """
    if getattr(args, "server", None):
        if args.store:
            raise UsageError("--store and --server exclude each other")
        from .httpremote import HttpRemote

        retry = getattr(args, "retry_time", None)
        opts = {} if retry is None else {"retry_time": retry}
        return await _checked(HttpRemote(args.server, _token(args), **opts))
    from .embedded import EmbeddedRemote

    opened = EmbeddedRemote.open(store_dir(args), user=getattr(args, "user", "default"),
                                 exclusive=exclusive)
    if inspect.isawaitable(opened):
        opened = await opened
    return opened  # type: ignore[no-any-return]


async def _checked(remote: HttpRemote) -> HttpRemote:
    """``remote`` after one call every fsmount server answers, so that a wrong token, URL
    or scheme fails here, in one line, instead of at the first file operation (for a
    mount: as EACCES or ESTALE on every path).  Raises as :func:`open_remote`."""
    from .server.wire import PROTO_PREFIX

    try:
        with remote.patience(FIRST_CONTACT_RETRY_TIME):
            await remote.getattr(ROOT_ID)
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await remote.aclose()
        if isinstance(exc, errors.NotFound):
            # The root always exists: a 404 means the calls went to the wrong place.
            raise errors.ServerURLNotFound(
                f"{remote.base_url.rstrip('/')}{PROTO_PREFIX}getattr") from None
        raise
    return remote


# --- paths -----------------------------------------------------------------------------


def split_remote_path(path: str) -> list[str]:
    """Components of a remote path (``/a/b``, ``a/b`` and ``a//b/`` are the same)."""
    parts = [p for p in path.split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise errors.InvalidName(f"remote path {path!r} may not contain '..'")
    return parts


async def resolve(remote: Remote, path: str) -> Node:
    """The node at a remote path.  Raises NotFound, NotADirectory."""
    node = await remote.getattr(ROOT_ID)
    for part in split_remote_path(path):
        node = await remote.lookup(node.id, part)
    return node


# --- sizes -----------------------------------------------------------------------------

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``256M``, ``1g``, ``4096``, ``512KiB`` -> bytes (binary units).  For argparse."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256M, 1G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``30``, ``30s``, ``5m``, ``1.5h`` -> seconds.  For argparse (raises
    ArgumentTypeError)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhSMH]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 5m)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """A one-line progress bar on a terminal; silent when the stream is not a terminal."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self.total = total
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        rate = done / max(now - self._start, 1e-6)
        frac = done / self.total if self.total else 1.0
        width = 30
        bar = "#" * int(frac * width)
        self.stream.write(f"\r{self.label[:30]:30} [{bar:<{width}}] {frac * 100:5.1f}% "
                          f"{human(done)} {human(rate)}/s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(self.done)
            self.stream.write("\n")
            self.stream.flush()
