"""What the CLI verbs share: the options that choose a remote, opening it, path
resolution on a remote, size arguments, and a progress bar for terminals.

``--store DIR`` (default ``$XDG_DATA_HOME/fsmount``, else ``~/.local/share/fsmount``) names
the embedded store; ``--server URL`` with a token (``--token-file`` or ``$FSMOUNT_TOKEN``)
uses the HTTP client instead.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import time
from typing import TextIO

from . import errors
from .remote import ROOT_ID, Node, Remote


def default_store_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return os.path.join(base, "fsmount")


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    """Add --store, --server, --token-file and --user to a verb's parser."""
    g = parser.add_argument_group("remote")
    g.add_argument("--store", metavar="DIR", default=None,
                   help=f"embedded store directory (default {default_store_dir()})")
    g.add_argument("--server", metavar="URL", default=None,
                   help="use the fsmount server at URL instead of an embedded store")
    g.add_argument("--token-file", metavar="PATH", default=None,
                   help="file holding the bearer token for --server (default $FSMOUNT_TOKEN)")
    g.add_argument("--user", default="default",
                   help="user of the embedded store (default: default)")


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
        raise errors.InvalidArgument("--server needs a token: --token-file PATH or $FSMOUNT_TOKEN")
    return token


async def open_remote(args: argparse.Namespace, *, exclusive: bool) -> Remote:
    """The remote the options name, opened (call inside trio; ``aclose`` it after use).

    Raises StoreLocked (another mount holds the store and ``exclusive``), InvalidArgument
    (bad options), TransportError.
    """
    if getattr(args, "server", None):
        if args.store:
            raise errors.InvalidArgument("--store and --server exclude each other")
        from .httpremote import HttpRemote

        return HttpRemote(args.server, _token(args))
    from .embedded import EmbeddedRemote

    store = args.store or default_store_dir()
    os.makedirs(store, exist_ok=True)
    opened = EmbeddedRemote.open(store, user=getattr(args, "user", "default"),
                                 exclusive=exclusive)
    if inspect.isawaitable(opened):
        opened = await opened
    return opened  # type: ignore[no-any-return]


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
