"""``fsmount mount`` and ``fsmount unmount``: argument parsing for the mount lifecycle
(which lives in :mod:`fsmount.mount`)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field

from . import control
from .cli_common import add_remote_options, human, open_remote, parse_size, store_dir
from .cli_errors import UsageError
from .cli_writeback import read_status, status_lines
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
from .sdnotify import under_systemd
from .server.cli import parse_listen
from .upload import DEFAULT_WRITE_MEMORY
from .view import VIEW_OPTIONS, OwnershipView

#: -o options passed through to the kernel mount as they are.
KNOWN_OPTIONS = {"allow_other", "allow_root", "default_permissions", "ro", "rw", "noatime",
                 "auto_unmount", "nosuid", "nodev", "noexec", "suid", "dev", "exec"}
#: Options of fstab, mount(8) and systemd that are not for the filesystem: accepted and
#: ignored, as fuse's own mount helper does (with every ``x-*``, e.g. ``x-systemd.*``).
IGNORED_OPTIONS = {"_netdev", "nofail", "auto", "noauto", "user", "users", "nouser", "owner",
                   "group", "defaults", "atime", "relatime", "strictatime", "lazytime",
                   "sync", "async"}


@dataclass(frozen=True)
class MountOptions:
    """What ``-o`` said: options for the kernel mount, and the ownership view."""

    kernel: set[str] = field(default_factory=set)
    view: OwnershipView = field(default_factory=OwnershipView)


def parse_options(values: list[str]) -> MountOptions:
    """``-o a,b -o uid=1000`` -> kernel options {a, b} and the view.  Raises UsageError for
    an unknown option or a bad value."""
    kernel: set[str] = set()
    view = OwnershipView()
    for value in values:
        for opt in value.split(","):
            opt = opt.strip()
            name, eq, val = opt.partition("=")
            if not opt or opt.startswith("x-") or opt.startswith("comment="):
                continue
            if eq and name in VIEW_OPTIONS:
                try:
                    view = view.with_option(name, val)
                except ValueError as exc:
                    raise UsageError(f"mount option {opt}: {exc}") from None
                continue
            if opt in KNOWN_OPTIONS:
                kernel.add(opt)
                continue
            if opt in IGNORED_OPTIONS:
                continue
            known = sorted(KNOWN_OPTIONS | {f"{n}=" for n in VIEW_OPTIONS})
            raise UsageError(f"unknown mount option {opt!r} (known: {', '.join(known)})")
    kernel.discard("rw")
    return MountOptions(kernel, view)


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
                   help="mount options: allow_other, default_permissions, ro, ...; "
                   "uid=N, gid=N, umask=OCTAL, file_mode=OCTAL, dir_mode=OCTAL set the "
                   "ownership and permissions stat shows (not what the store holds); "
                   "_netdev, nofail, auto, noauto, x-* (fstab, systemd) are accepted and "
                   "ignored")
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
                   help="where the background filesystem logs (default "
                   f"{default_log_file('MOUNTPOINT')}, named after the mountpoint; under "
                   "systemd, stderr, i.e. the journal; in the foreground, stderr)")
    p.add_argument("--metrics-addr", type=parse_listen, default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics of the mount (cache hits, fetches, "
                   "uploads, retries) at http://HOST:PORT/metrics")
    p.set_defaults(func=cmd_mount)

    s = sub.add_parser("status", help="what a mount is doing: cache, transfers, errors",
                       description="Ask the mount at MOUNTPOINT (over its control socket) "
                       "for its cache use, transfers in flight, errors and retries.")
    s.add_argument("mountpoint", metavar="MOUNTPOINT")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s.set_defaults(func=cmd_status)

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
    log_file = args.log_file
    if log_file is None and not args.foreground and not under_systemd():
        log_file = default_log_file(mountpoint)
        os.makedirs(os.path.dirname(log_file), mode=0o700, exist_ok=True)
    config = MountConfig(
        mountpoint=mountpoint,
        options=options.kernel,
        view=options.view,
        cache_bytes=args.cache_size,
        write_memory=args.write_memory,
        read_ahead=args.read_ahead,
        read_ahead_max=args.read_ahead_max,
        foreground=args.foreground,
        log_file=os.path.abspath(log_file) if log_file else None,
        metrics_addr=args.metrics_addr,
        source=args.server or args.store,
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


def default_log_file(mountpoint: str) -> str:
    """Where a background mount logs by default: ``$XDG_STATE_HOME/fsmount/log/NAME.log``
    (else ``~/.local/state/...``), NAME the mountpoint with ``/`` as ``-``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    name = os.path.abspath(mountpoint).strip("/").replace("/", "-") or "root"
    if mountpoint == "MOUNTPOINT":  # for --help
        name = mountpoint
    return os.path.join(base, "fsmount", "log", f"{name}.log")


def cmd_status(args: argparse.Namespace) -> int:
    s = control.request(args.mountpoint, "status")
    try:
        # Write-back's pending work (its keys do not overlap the control channel's).
        s.update(read_status(args.mountpoint))
    except UsageError:
        pass
    if args.json:
        print(json.dumps(s, indent=2, sort_keys=True))
        return 0
    c, t = s["cache"], s["transfers"]
    reads = c["hits"] + c["misses"]
    lines = [
        f"mountpoint   {s['mountpoint']}",
        f"source       {s['source']}",
        f"uptime       {s['uptime_seconds']:.0f} s",
        f"cache        {human(c['used_bytes'])} of {human(c['capacity_bytes'])}, "
        f"{c['hits']} hits / {c['misses']} misses"
        + (f" ({100 * c['hits'] / reads:.0f}% hits)" if reads else "")
        + f", {c['fetches']} chunks fetched",
        f"transfers    {t['calls_in_flight']} calls and {t['fetches_in_flight']} fetches in "
        f"flight, {t['files_writing']} files being written, {t['files_open']} open",
        f"moved        {human(t['bytes_uploaded'])} up ({t['uploads_finalized']} segments), "
        f"{human(t['bytes_downloaded'])} down",
        f"retries      {s['retries']}",
        *([f"server       {s['server']} ({s['server_switches']} switches)"]
          if s.get("server") else []),
        "errors       " + (", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items()))
                           or "none"),
        *status_lines(s),
    ]
    print("\n".join(lines))
    return 0


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
