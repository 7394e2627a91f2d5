"""The ``fsmount serve`` and ``fsmount token`` verbs.

Only argparse is imported at module level: the server's dependencies (hypercorn,
Starlette, Pillow) are imported when ``serve`` runs, so ``fsmount --help`` works without
the ``server`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any


def _size(text: str) -> int:
    from ..cli_common import parse_size

    try:
        return parse_size(text)
    except Exception as exc:
        raise argparse.ArgumentTypeError(f"bad size {text!r}") from exc


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:8080``).  Raises ArgumentTypeError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _create_with_backends(args: argparse.Namespace) -> None:
    """Create a missing store directory with ``--content`` and/or ``--metadata``
    (``store_dir`` would make both local); a directory joining a shared (PostgreSQL) store
    is created the same way.

    Raises:
        InvalidArgument: a bad content or metadata URL, an unusable bucket or database.
    """
    from pathlib import Path

    from ..cli_common import default_store_dir
    from ..store import Store
    from ..store.meta_select import store_exists

    path = os.path.abspath(args.store or default_store_dir())
    if store_exists(Path(path)):
        return
    os.makedirs(path, exist_ok=True)
    Store(path, content=args.content, metadata=args.metadata).close()
    where = [f"content at {args.content}"] if args.content else []
    if args.metadata:
        where.append(f"metadata at {args.metadata.split('?', 1)[0]}")
    print(f"fsmount: created a new store directory in {path}, {', '.join(where)}",
          file=sys.stderr, flush=True)


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a store over HTTP (protocol API and REST)",
                       description="Serve a store directory over HTTP with hypercorn (trio).")
    p.add_argument("--store", metavar="DIR", default=None,
                   help="store directory (default $XDG_DATA_HOME/fsmount)")
    p.add_argument("--listen", metavar="HOST:PORT", type=parse_listen,
                   default=("127.0.0.1", 8080), help="address to listen on (default 127.0.0.1:8080)")
    p.add_argument("--certfile", help="TLS certificate (PEM); enables HTTPS with --keyfile")
    p.add_argument("--keyfile", help="TLS private key (PEM)")
    p.add_argument("--rate-limit", type=float, default=0.0, metavar="N",
                   help="requests per second per token (0: unlimited, the default)")
    p.add_argument("--burst", type=float, default=None, metavar="N",
                   help="bucket size of the rate limit (default: max(1, rate))")
    p.add_argument("--graceful-timeout", type=float, default=30.0, metavar="S",
                   help="seconds in-flight requests get to finish on SIGTERM (default 30)")
    p.add_argument("--thumbnail-cache", type=_size, default=None, metavar="SIZE",
                   help="disk kept for thumbnails, least recently used dropped first "
                        "(default 256M)")
    p.add_argument("--access-log", default="-", metavar="PATH",
                   help="one line per request (method, path without the query, status, "
                   "bytes, seconds, user): - for stderr (the default; the journal under "
                   "systemd), a file to append to, or off")
    p.add_argument("--no-change-feed", action="store_true",
                   help="answer getChanges 404, like a server from before the change feed "
                   "(mounts then trust attributes for 1 s; for tests)")
    p.add_argument("--content", metavar="URL", default=None,
                   help="where the store's bytes live: s3://BUCKET[/PREFIX]?endpoint=URL "
                        "(credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
                        "a credentials file; default: the store directory, or what the "
                        "store was created with)")
    p.add_argument("--metadata", metavar="URL", default=None,
                   help="where the store's namespace lives: postgresql://USER@HOST:PORT/DB "
                        "(the password from PGPASSWORD, PGPASSFILE or ~/.pgpass, never the "
                        "URL; default: DIR/meta.sqlite, or what the store directory was "
                        "created with).  Nodes with the same --metadata and --content, each "
                        "with a --store directory of its own, serve one store")
    p.set_defaults(func=cmd_serve)

    t = sub.add_parser("token", help="manage bearer tokens of `fsmount serve`",
                       description="Create, revoke and list bearer tokens (stored hashed).")
    tsub = t.add_subparsers(dest="token_cmd", metavar="CMD")
    a = tsub.add_parser("add", help="print a new token for user NAME (creating the user)")
    a.add_argument("--store", metavar="DIR", default=None,
                   help="store directory (default $XDG_DATA_HOME/fsmount)")
    a.add_argument("--quota", type=_size, default=None, metavar="SIZE",
                   help="the user's quota, e.g. 10G (0: unlimited)")
    a.add_argument("--premium", action="store_true", default=None,
                   help="premium user (upload_max_fileparts_premium)")
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=cmd_token_add)
    r = tsub.add_parser("revoke", help="revoke one token, or every token of a user")
    r.add_argument("--store", metavar="DIR", default=None,
                   help="store directory (default $XDG_DATA_HOME/fsmount)")
    r.add_argument("what", metavar="NAME|TOKEN")
    r.set_defaults(func=cmd_token_revoke)
    ls = tsub.add_parser("list", help="list tokens (ids and users, never the secrets)")
    ls.add_argument("--store", metavar="DIR", default=None,
                    help="store directory (default $XDG_DATA_HOME/fsmount)")
    ls.set_defaults(func=cmd_token_list)
    t.set_defaults(func=lambda args: (t.print_help(sys.stderr), 2)[1])


def _auth(args: argparse.Namespace) -> Any:
    """The token database of an existing store.  Raises StoreMissing, StoreNotADirectory."""
    from ..cli_common import store_dir
    from .auth import AuthDB

    return AuthDB(store_dir(args))


def cmd_token_add(args: argparse.Namespace) -> int:
    db = _auth(args)
    try:
        print(db.add_token(args.name, quota_bytes=args.quota, premium=args.premium))
    finally:
        db.close()
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    db = _auth(args)
    try:
        n = db.revoke(args.what)
    finally:
        db.close()
    if n == 0:
        print(f"fsmount: no active token matches {args.what!r}", file=sys.stderr)
        return 1
    print(f"revoked {n} token{'s' if n != 1 else ''}", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    db = _auth(args)
    try:
        for tok in db.list_tokens():
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tok.created))
            print(f"{tok.token_id}\t{tok.name}\t{when}\t{'revoked' if tok.revoked else 'active'}")
    finally:
        db.close()
    return 0


def tune_hypercorn() -> None:
    """Let hypercorn read up to 1 MiB per receive instead of 64 KiB.

    A 512 KiB part then arrives in a few ASGI messages instead of eight or more; measured on
    loopback this cuts the server's CPU time per uploaded byte by about a quarter
    (docs/performance.md).  hypercorn reads the module constant at each receive.
    """
    try:
        import hypercorn.trio.tcp_server as tcp_server
    except ImportError:  # pragma: no cover - hypercorn without its trio worker
        return
    if getattr(tcp_server, "MAX_RECV", 0) < 1 << 20:
        tcp_server.MAX_RECV = 1 << 20


def hypercorn_config(host: str, port: int, *, certfile: str | None = None,
                     keyfile: str | None = None, graceful_timeout: float = 30.0) -> Any:
    """A hypercorn Config for one listening address.

    Raises InvalidArgument if only one of certfile and keyfile is given.
    """
    from hypercorn.config import Config

    from .. import errors

    tune_hypercorn()
    if bool(certfile) != bool(keyfile):
        raise errors.InvalidArgument("TLS needs both --certfile and --keyfile")
    cfg = Config()
    cfg.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    cfg.accesslog = None
    cfg.errorlog = "-"
    cfg.graceful_timeout = graceful_timeout
    cfg.keep_alive_timeout = 75
    cfg.loglevel = "WARNING"
    if certfile:
        cfg.certfile = certfile
        cfg.keyfile = keyfile
    return cfg


def setup_access_log(where: str) -> None:
    """Send the access log (logger ``fsmount.access``) to stderr (``-``), a file, or
    nowhere (``off``).  Raises OSError if the file cannot be opened."""
    import logging

    logger = logging.getLogger("fsmount.access")
    if where == "off":
        logger.setLevel(logging.WARNING)
        return
    logger.setLevel(logging.INFO)
    if where != "-":
        from ..cli import log_format

        handler = logging.FileHandler(where, encoding="utf-8")
        handler.setFormatter(logging.Formatter(log_format(), datefmt="%Y-%m-%dT%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    import trio
    from hypercorn.trio import serve

    from ..cli_common import store_dir
    from ..cli_errors import CannotListen, UsageError, leaf_errors
    from ..memory import tune_malloc
    from ..store import Store
    from .app import create_app

    # Every option is checked before the store is opened (or created).
    if bool(args.certfile) != bool(args.keyfile):
        raise UsageError("TLS needs both --certfile and --keyfile")
    if args.certfile:
        for path in (args.certfile, args.keyfile):
            if not os.path.isfile(path):
                raise FileNotFoundError(2, "No such file", path)
    host, port = args.listen
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cfg = hypercorn_config(host, port, certfile=args.certfile, keyfile=args.keyfile,
                           graceful_timeout=args.graceful_timeout)
    setup_access_log(args.access_log)
    if args.content or args.metadata:
        _create_with_backends(args)
    store_path = store_dir(args, create=True)
    store = Store(store_path, exclusive=True, content=args.content, metadata=args.metadata)
    tune_malloc()

    async def main() -> None:
        app = create_app(store, store_path, rate_limit=args.rate_limit, burst=args.burst,
                         thumb_cache_bytes=args.thumbnail_cache,
                         change_feed=not args.no_change_feed)

        async def shutdown_trigger() -> None:
            # hypercorn stops accepting, lets requests in flight finish (graceful_timeout),
            # then returns.
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    # Long polls of the change feed answer now rather than hold the
                    # shutdown for their timeout.
                    store.changes.close()
                    return

        try:
            async with trio.open_nursery() as nursery:
                try:
                    binds = await nursery.start(lambda task_status: serve(
                        app, cfg, shutdown_trigger=shutdown_trigger, task_status=task_status))
                except BaseException as exc:
                    # Before serving, hypercorn fails only at binding the address (an
                    # OSError inside its nurseries' groups).
                    leaves = leaf_errors(exc)
                    if len(leaves) == 1 and isinstance(leaves[0], OSError):
                        raise CannotListen(address, leaves[0]) from None
                    raise
                print(f"fsmount: serving {store_path} on {' '.join(binds)}", file=sys.stderr,
                      flush=True)
        finally:
            await app.state.aclose()

    try:
        trio.run(main)
    finally:
        store.close()
    return 0
