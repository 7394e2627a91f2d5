"""``fsmount sync MOUNTPOINT`` and ``fsmount status MOUNTPOINT``: the control verbs of a
write-back mount (``fsmount mount --write-back``).

They talk to the mount through extended attributes of its root, served by
:mod:`fsmount.fuse_ops` (no socket, nothing to find or secure beyond the mount itself):
setting ``user.fsmount.sync`` returns once the journal is drained; ``user.fsmount.status``
reads as JSON (files and bytes pending, oldest age, uploads in flight, last error,
conflict copies made).
"""

from __future__ import annotations

import argparse
import errno
import json
import os

from .cli_errors import UsageError

SYNC_XATTR = "user.fsmount.sync"
STATUS_XATTR = "user.fsmount.status"
UPLOADS_XATTR = "user.fsmount.uploads"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("sync", help="wait until a write-back mount has uploaded everything",
                       description="Return once everything written through MOUNTPOINT "
                                   "(mounted with --write-back) is in the store.")
    s.add_argument("mountpoint", metavar="MOUNTPOINT")
    s.set_defaults(func=cmd_sync)
    for verb, text in (("pause", "start no new uploads (writes go on into the journal)"),
                       ("resume", "start uploading again after fsmount pause")):
        v = sub.add_parser(verb, help=f"write-back mount: {text}",
                           description=f"Write-back mount at MOUNTPOINT: {text}.")
        v.add_argument("mountpoint", metavar="MOUNTPOINT")
        v.set_defaults(func=cmd_uploads, uploads=verb)


def _not_write_back(mountpoint: str, exc: OSError) -> UsageError:
    if exc.errno in (errno.ENOTSUP, errno.ENODATA):
        return UsageError(f"{mountpoint} is not an fsmount mount with --write-back")
    return UsageError(f"{mountpoint}: {exc.strerror}")


def cmd_sync(args: argparse.Namespace) -> int:
    try:
        os.setxattr(args.mountpoint, SYNC_XATTR, b"1")
    except OSError as exc:
        raise _not_write_back(args.mountpoint, exc) from None
    return 0


def cmd_uploads(args: argparse.Namespace) -> int:
    try:
        os.setxattr(args.mountpoint, UPLOADS_XATTR, args.uploads.encode())
    except OSError as exc:
        raise _not_write_back(args.mountpoint, exc) from None
    return 0


def read_status(mountpoint: str) -> dict[str, object]:
    """The status of a mount (``{"write_back": False}`` for one without write-back).

    Raises:
        UsageError: not an fsmount mount.
    """
    try:
        raw = os.getxattr(mountpoint, STATUS_XATTR)
    except OSError as exc:
        raise _not_write_back(mountpoint, exc) from None
    status = json.loads(raw)
    assert isinstance(status, dict)
    return status


def status_lines(status: dict[str, object]) -> list[str]:
    """What ``fsmount status`` prints of a write-back mount's pending work (nothing for a
    mount without write-back)."""
    if not status.get("write_back"):
        return ["write-back   off (every close is stored)"]
    lines = [f"pending: {status['files']} files, {status['bytes']} bytes"
             f" (oldest {status['oldest_age']} s), uploading {status['uploading']}"]
    if status.get("full"):
        lines.append("journal full: writes wait for uploads")
    if status.get("paused"):
        lines.append("uploads paused (fsmount resume)")
    lines.append(f"last error: {status.get('last_error') or 'none'}")
    conflicts = status.get("conflicts") or []
    if conflicts:
        lines.append("conflict copies: " + ", ".join(str(c) for c in conflicts))  # type: ignore[union-attr]
    return lines
