"""``fsmount put``, ``fsmount get`` and ``fsmount ls``: file transfer without a mount.

They use the same protocol calls as the filesystem: ``get`` reads through the same verified
chunk cache and read-ahead as a mounted read (:mod:`fsmount.reader`), ``put`` streams parts
with the uploader (:mod:`fsmount.upload`) and links the result atomically.  A progress bar
is drawn on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import time

import trio

from . import errors
from .cli_common import Progress, add_remote_options, human, open_remote, resolve, split_remote_path
from .cli_errors import LocalFileExists
from .memory import tune_malloc
from .reader import CHUNK, FileReader, open_chunk_cache
from .remote import ROOT_ID, Node, NodeKind, Remote

#: Read-ahead of ``fsmount get`` (chunks in flight).
GET_READ_AHEAD = 16 * CHUNK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("put", help="upload a local file to the store",
                       description="Upload LOCAL (a file, or - for stdin) to REMOTE_PATH, "
                                   "replacing an existing file atomically. A REMOTE_PATH "
                                   "ending in / or naming a folder receives LOCAL's name.")
    p.add_argument("local", metavar="LOCAL")
    p.add_argument("remote_path", metavar="REMOTE_PATH")
    p.add_argument("--parallel", type=int, default=4, help="parts in flight (default 4)")
    add_remote_options(p)
    p.set_defaults(func=cmd_put)

    g = sub.add_parser("get", help="download a file from the store",
                       description="Download REMOTE_PATH to LOCAL (a file, a directory, or - "
                                   "for stdout). Every chunk is checked against the store's "
                                   "block checksums (CRC32C, or SHA-256 for content stored "
                                   "before it kept them). An existing file is replaced only "
                                   "with --force; the download goes to a temporary name "
                                   "first, so a failed or interrupted one leaves nothing.")
    g.add_argument("remote_path", metavar="REMOTE_PATH")
    g.add_argument("local", metavar="LOCAL")
    g.add_argument("--force", action="store_true",
                   help="overwrite LOCAL (or the file of that name in directory LOCAL) if "
                        "it exists")
    add_remote_options(g)
    g.set_defaults(func=cmd_get)

    ls = sub.add_parser("ls", help="list a folder of the store",
                        description="List REMOTE_PATH (a folder's entries, or one file) like "
                                    "ls -l: mode, size, modification time, name.")
    ls.add_argument("remote_path", metavar="REMOTE_PATH", nargs="?", default="/")
    add_remote_options(ls)
    ls.set_defaults(func=cmd_ls)


# --- get -------------------------------------------------------------------------------


async def download(remote: Remote, node: Node, out: int, progress: Progress | None = None,
                   *, read_ahead: int = GET_READ_AHEAD) -> int:
    """Write a file node's content to file descriptor ``out``; returns the bytes written.

    Raises ChecksumMismatch, the remote's errors, OSError from writing.
    """
    # One pass, in order: nothing read is read again, so no tier of streamed chunks.
    async with open_chunk_cache(remote, cache_bytes=read_ahead + 2 * CHUNK,
                                streamed_bytes=CHUNK) as cache:
        reader = FileReader(cache, node.segments, node.name, read_ahead=read_ahead)
        pos = 0
        while pos < reader.size:
            data = await reader.read(pos, CHUNK - pos % CHUNK)
            view = memoryview(data)
            while view:
                n = await trio.to_thread.run_sync(os.write, out, view)
                view = view[n:]
            pos += len(data)
            if progress:
                progress.update(pos)
        reader.close()
        return pos


async def _get(args: argparse.Namespace) -> int:
    if args.local != "-" and not os.path.isdir(args.local):
        _check_overwrite(args.local, args.force)  # before any transfer
    remote = await open_remote(args, exclusive=False)
    try:
        node = await resolve(remote, args.remote_path)
        if node.kind is not NodeKind.FILE:
            raise errors.IsADirectory(f"{args.remote_path} is not a file")
        if args.local == "-":
            await download(remote, node, sys.stdout.fileno())
            return 0
        target = args.local
        if os.path.isdir(target):
            target = os.path.join(target, node.name)
            _check_overwrite(target, args.force)
        # Into a temporary name, renamed at the end: a failed or interrupted download
        # leaves neither a partial file nor a damaged old one.
        tmp = f"{target}.fsmount-part"
        done = False
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                progress = Progress(node.name, node.size)
                try:
                    await download(remote, node, fd, progress)
                finally:
                    progress.close()  # ends the bar's line, so an error line starts afresh
                os.fsync(fd)
            finally:
                os.close(fd)
            os.utime(tmp, ns=(node.mtime_ns, node.mtime_ns))
            os.replace(tmp, target)
            done = True
        finally:
            if not done:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return 0
    finally:
        with trio.CancelScope(shield=True):
            await remote.aclose()


def _check_overwrite(path: str, force: bool) -> None:
    """Raises LocalFileExists if ``path`` exists and not ``force``."""
    if not force and os.path.lexists(path):
        raise LocalFileExists(path)


def cmd_get(args: argparse.Namespace) -> int:
    tune_malloc()
    return trio.run(_get, args)


# --- put -------------------------------------------------------------------------------


async def _parent_and_name(remote: Remote, remote_path: str, local: str) -> tuple[int, str]:
    parts = split_remote_path(remote_path)
    default_name = os.path.basename(local) if local != "-" else None
    if not parts:
        if not default_name:
            raise errors.InvalidName("put from stdin needs a file name in REMOTE_PATH")
        return ROOT_ID, default_name
    folder = await resolve(remote, "/".join(parts[:-1]))
    if not folder.is_dir:
        raise errors.NotADirectory(f"{'/'.join(parts[:-1])} is not a folder")
    try:
        last = await remote.lookup(folder.id, parts[-1])
    except errors.NotFound:
        last = None
    if (last is not None and last.is_dir) or remote_path.endswith("/"):
        if last is None:
            raise errors.NotFound(f"folder {remote_path} does not exist")
        if not default_name:
            raise errors.InvalidName("put from stdin needs a file name in REMOTE_PATH")
        return last.id, default_name
    return folder.id, parts[-1]


async def _put(args: argparse.Namespace) -> int:
    from .upload import upload_file

    if args.local != "-":
        st = os.stat(args.local)
        if stat.S_ISDIR(st.st_mode):
            raise errors.IsADirectory(f"{args.local} is a directory")
        size, mtime_ns, mode = st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode)
    else:
        size, mtime_ns, mode = 0, time.time_ns(), 0o644
    remote = await open_remote(args, exclusive=False)
    try:
        parent, name = await _parent_and_name(remote, args.remote_path, args.local)
        progress = Progress(name, size) if args.local != "-" else None
        source = args.local if args.local != "-" else sys.stdin.buffer
        try:
            docs = await upload_file(remote, source, name, parallel=max(1, args.parallel),
                                     progress=progress.update if progress else None)
        finally:
            if progress:
                progress.close()  # ends the bar's line, so an error line starts afresh
        await remote.create_file(parent, name, tuple(d.location for d in docs), mode=mode,
                                 mtime_ns=mtime_ns, replace=True)
        return 0
    finally:
        with trio.CancelScope(shield=True):
            await remote.aclose()


def cmd_put(args: argparse.Namespace) -> int:
    tune_malloc()
    return trio.run(_put, args)


# --- ls --------------------------------------------------------------------------------


def format_entry(node: Node) -> str:
    kind = {NodeKind.DIR: "d", NodeKind.SYMLINK: "l"}.get(node.kind, "-")
    mode = kind + stat.filemode(node.mode)[1:]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(node.mtime_ns / 1e9))
    name = node.name + (f" -> {node.target}" if node.kind is NodeKind.SYMLINK else "")
    return f"{mode} {node.size:>12} {when} {name}"


async def _ls(args: argparse.Namespace) -> int:
    remote = await open_remote(args, exclusive=False)
    try:
        node = await resolve(remote, args.remote_path)
        out = sys.stdout
        if not node.is_dir:
            out.write(format_entry(node) + "\n")
            return 0
        after: str | None = None
        total = 0
        for _ in range(1 << 30):
            page = await remote.list_folder(node.id, after)
            out.write("".join(format_entry(e) + "\n" for e in page.entries))
            total += sum(e.size for e in page.entries)
            if page.next_after is None or not page.entries:
                break
            after = page.next_after
        if out.isatty():
            out.write(f"total {human(total)}\n")
        return 0
    finally:
        with trio.CancelScope(shield=True):
            await remote.aclose()


def cmd_ls(args: argparse.Namespace) -> int:
    return trio.run(_ls, args)
