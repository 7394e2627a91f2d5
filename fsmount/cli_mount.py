"""``fsmount mount`` and ``fsmount unmount``: argument parsing for the mount lifecycle
(which lives in :mod:`fsmount.mount`)."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os

from .cli_common import add_remote_options, open_remote, parse_size, store_dir
from .cli_errors import UsageError
from .journal import DEFAULT_LIMIT
from .mount import (
    UNMOUNT_WAIT,
    MountConfig,
    MountError,
    check_mountpoint,
    journal_of,
    prepare_cache_dir,
    run,
    unmount,
    wait_drained,
)
from .reader import DEFAULT_CACHE_BYTES, DEFAULT_READ_AHEAD, DEFAULT_READ_AHEAD_MAX
from .remote import Remote
from .upload import DEFAULT_WRITE_MEMORY

#: -o options passed through to the kernel mount as they are.
KNOWN_OPTIONS = {"allow_other", "allow_root", "default_permissions", "ro", "rw", "noatime",
                 "auto_unmount", "nosuid", "nodev", "noexec", "suid", "dev", "exec"}


def parse_options(values: list[str]) -> set[str]:
    """``-o a,b -o c`` -> {a, b, c}.  Raises UsageError for an unknown option."""
    out: set[str] = set()
    for value in values:
        for opt in value.split(","):
            opt = opt.strip()
            if not opt:
                continue
            if opt not in KNOWN_OPTIONS:
                raise UsageError(
                    f"unknown mount option {opt!r} (known: {', '.join(sorted(KNOWN_OPTIONS))})")
            out.add(opt)
    out.discard("rw")
    return out


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("mount", help="mount a store as a directory",
                       description="Mount the store at MOUNTPOINT. Returns once the mount is "
                                   "ready; the filesystem keeps running in the background. "
                                   "An embedded store that does not exist yet is created "
                                   "(and the command says so).")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    add_remote_options(p)
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground (SIGINT/SIGTERM unmount)")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                   help="mount options: allow_other, default_permissions, ro, ...")
    p.add_argument("--cache-size", type=parse_size, default=DEFAULT_CACHE_BYTES, metavar="SIZE",
                   help="chunk cache size in bytes, e.g. 256M (default 256M)")
    p.add_argument("--read-ahead", type=parse_size, default=DEFAULT_READ_AHEAD, metavar="SIZE",
                   help="read-ahead in flight per open file, e.g. 16M (default 16M)")
    p.add_argument("--read-ahead-max", type=parse_size, default=DEFAULT_READ_AHEAD_MAX,
                   metavar="SIZE",
                   help="what read-ahead may grow to per open file where the link's "
                   "bandwidth-delay product asks for more (default 128M)")
    p.add_argument("--write-memory", type=parse_size, default=DEFAULT_WRITE_MEMORY,
                   metavar="SIZE",
                   help="memory for parts of files being written, kept until each part's "
                   "upload is finalized, shared by all files; the rest waits in the cache "
                   "directory (default 96M)")
    p.add_argument("--write-back", action="store_true",
                   help="close returns once the content is durable in a local journal in "
                   "the cache directory; a background uploader sends it to the store "
                   "(fsmount sync waits for it, fsmount status shows it)")
    p.add_argument("--write-back-limit", type=parse_size, default=DEFAULT_LIMIT,
                   metavar="SIZE",
                   help="bytes the journal may hold before writes wait for uploads (never "
                   "past the cache directory's free space; default 4G)")
    p.add_argument("--log-level", default=argparse.SUPPRESS,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="logging verbosity (default WARNING)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="staging files of random writes and spilled parts of uploads in "
                   "progress; created if missing (default $XDG_CACHE_HOME/fsmount)")
    p.add_argument("--log-file", default=None, metavar="PATH",
                   help="where the background filesystem logs (default: nowhere)")
    p.set_defaults(func=cmd_mount)

    u = sub.add_parser("unmount", aliases=["umount"], help="unmount a mounted store",
                       description="Unmount MOUNTPOINT (like fusermount3 -u) and wait for the "
                                   "filesystem process to finish.")
    u.add_argument("mountpoint", metavar="MOUNTPOINT")
    u.add_argument("-z", "--lazy", action="store_true",
                   help="detach now even if busy; finish when no longer in use")
    u.add_argument("--no-wait", action="store_true",
                   help="with --write-back: do not wait for pending uploads; the journal "
                   "stays and the next mount of the store sends it")
    u.set_defaults(func=cmd_unmount)


def cmd_mount(args: argparse.Namespace) -> int:
    options = parse_options(args.options)
    if args.server and args.store:
        raise UsageError("--store and --server exclude each other")
    # The cheap checks first, so that a mount that cannot happen creates no store.
    mountpoint = check_mountpoint(args.mountpoint)
    cache_dir = prepare_cache_dir(args.cache_dir)
    if not args.server:
        # Absolute: the daemon changes to / before it opens the store.
        args.store = store_dir(args, create=True)
    if args.token_file:
        args.token_file = os.path.abspath(args.token_file)
    config = MountConfig(
        mountpoint=mountpoint,
        options=options,
        cache_bytes=args.cache_size,
        write_memory=args.write_memory,
        read_ahead=args.read_ahead,
        read_ahead_max=args.read_ahead_max,
        foreground=args.foreground,
        log_file=os.path.abspath(args.log_file) if args.log_file else None,
        cache_dir=cache_dir,
        fsname=f"fsmount:{args.server or args.store}"[:120].replace(",", "_"),
        write_back=args.write_back,
        write_back_limit=args.write_back_limit,
        identity=_identity(args),
    )
    logging.getLogger().setLevel(getattr(args, "log_level", "WARNING"))

    async def factory() -> Remote:
        return await open_remote(args, exclusive=True)

    return run(config, factory)


def _identity(args: argparse.Namespace) -> str:
    """What a write-back journal is kept per: the store directory and user, or the server
    URL and the token's user (a hash of the token: the token itself is never written)."""
    if args.server:
        token = ""
        if args.token_file:
            try:
                with open(args.token_file, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError:
                pass
        token = token or os.environ.get("FSMOUNT_TOKEN", "")
        return f"server:{args.server.rstrip('/')}:{hashlib.sha256(token.encode()).hexdigest()}"
    return f"store:{args.store}:{args.user}"


def cmd_unmount(args: argparse.Namespace) -> int:
    journal = journal_of(args.mountpoint)
    if args.no_wait and journal is not None:
        try:
            os.setxattr(args.mountpoint, "user.fsmount.nowait", b"1")
        except OSError as exc:
            raise MountError(f"cannot tell {args.mountpoint} not to wait: {exc.strerror}"
                             ) from None
    unmount(args.mountpoint, lazy=args.lazy, wait=0 if journal else UNMOUNT_WAIT)
    if journal is not None:
        wait_drained(args.mountpoint, journal)
    return 0
