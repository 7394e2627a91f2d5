"""``fsmount put``, ``fsmount get`` and ``fsmount ls``: file transfer without a mount.

They use the same protocol calls as the filesystem: ``get`` reads through the same verified
chunk cache and read-ahead as a mounted read (:mod:`fsmount.reader`); ``put`` of a local
file goes through :mod:`fsmount.resumable_put` (content the store has is not sent again, an
interrupted put resumes where it stopped), ``put -`` streams stdin with the uploader
(:mod:`fsmount.upload`), and both link the result atomically.  ``-r`` walks a folder both
ways (files, folders and symlinks).  A progress bar is drawn on stderr when it is a
terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import time
from collections.abc import AsyncIterator

import trio

from . import errors
from .cli_common import (
    Progress,
    add_remote_options,
    default_store_dir,
    human,
    open_remote,
    resolve,
    split_remote_path,
)
from .cli_errors import LocalFileExists
from .memory import tune_malloc
from .reader import CHUNK, FileReader, open_chunk_cache
from .remote import ROOT_ID, Node, NodeKind, Remote
from .resumable_put import PutKey, PutStats, default_state_dir, forget, put_file

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
    p.add_argument("-r", "--recursive", action="store_true",
                   help="upload the folder LOCAL and everything in it into REMOTE_PATH")
    p.add_argument("--state-dir", metavar="DIR", default=None,
                   help="where interrupted uploads are remembered so that the next put "
                        "resumes them (default $XDG_STATE_HOME/fsmount)")
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
    g.add_argument("-r", "--recursive", action="store_true",
                   help="download the folder REMOTE_PATH and everything in it into LOCAL")
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
    if args.recursive:
        return await _get_tree(args)
    if args.local != "-" and not os.path.isdir(args.local):
        _check_overwrite(args.local, args.force)  # before any transfer
    remote = await open_remote(args, exclusive=False)
    try:
        node = await resolve(remote, args.remote_path)
        if node.kind is not NodeKind.FILE:
            raise errors.IsADirectory(f"{args.remote_path} is not a file (get -r for a folder)")
        if args.local == "-":
            await download(remote, node, sys.stdout.fileno())
            return 0
        target = args.local
        if os.path.isdir(target):
            target = os.path.join(target, node.name)
            _check_overwrite(target, args.force)
        await _download_to(remote, node, target)
        return 0
    finally:
        with trio.CancelScope(shield=True):
            await remote.aclose()


async def _download_to(remote: Remote, node: Node, target: str) -> None:
    """Download a file node to the local path ``target`` (replacing it).

    Into a temporary name, renamed at the end: a failed or interrupted download leaves
    neither a partial file nor a damaged old one.  Raises what :func:`download` raises.
    """
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
        os.chmod(tmp, node.mode & 0o777)
        os.utime(tmp, ns=(node.mtime_ns, node.mtime_ns))
        os.replace(tmp, target)
        done = True
    finally:
        if not done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


async def walk_remote(remote: Remote, folder: Node, prefix: str = ""
                      ) -> AsyncIterator[tuple[str, Node]]:
    """Every node under ``folder`` as (relative path, node), a folder before what it holds.

    Raises NotFound (something vanished during the walk) and the remote's errors.
    """
    after: str | None = None
    for _ in range(1 << 20):  # bounded: a billion entries at most
        page = await remote.list_folder(folder.id, after)
        for entry in page.entries:
            rel = f"{prefix}{entry.name}"
            yield rel, entry
            if entry.is_dir:
                async for item in walk_remote(remote, entry, rel + "/"):
                    yield item
        if page.next_after is None or not page.entries:
            return
        after = page.next_after


async def _get_tree(args: argparse.Namespace) -> int:
    """``get -r``: the folder REMOTE_PATH into LOCAL (created; LOCAL/NAME when LOCAL is an
    existing folder), existing files replaced only with ``--force``."""
    if args.local == "-":
        raise errors.InvalidArgument("get -r needs a local folder, not -")
    remote = await open_remote(args, exclusive=False)
    try:
        top = await resolve(remote, args.remote_path)
        if not top.is_dir:
            raise errors.NotADirectory(f"{args.remote_path} is not a folder")
        base = args.local
        if os.path.isdir(base) and split_remote_path(args.remote_path):
            base = os.path.join(base, top.name)
        os.makedirs(base, exist_ok=True)
        async for rel, node in walk_remote(remote, top):
            target = os.path.join(base, *rel.split("/"))
            if node.is_dir:
                os.makedirs(target, exist_ok=True)
            elif node.kind is NodeKind.SYMLINK:
                _check_overwrite(target, args.force)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
                os.symlink(node.target or "", target)
            else:
                _check_overwrite(target, args.force)
                await _download_to(remote, node, target)
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


def _destination(args: argparse.Namespace) -> str:
    """Names the store and user a put goes to (part of a resumable upload's key)."""
    if getattr(args, "server", None):
        token = os.environ.get("FSMOUNT_TOKEN", "")
        if args.token_file:
            with contextlib.suppress(OSError), open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        # The token's public id names the user; its secret stays out of the state files.
        return f"{args.server.rstrip('/')}#{token.split('_')[1] if token.count('_') >= 2 else ''}"
    return f"{os.path.abspath(args.store or default_store_dir())}#{args.user}"


async def put_one(remote: Remote, args: argparse.Namespace, local: str, parent: int,
                  name: str, remote_path: str) -> None:
    """Upload the local regular file ``local`` as ``name`` in folder ``parent`` (replacing a
    file of that name), resuming an interrupted run and skipping content the store has.

    Raises OSError, and the remote's errors.
    """
    st = os.stat(local)
    key = PutKey(os.path.abspath(local), st.st_size, st.st_mtime_ns, _destination(args),
                 remote_path)
    state_dir = args.state_dir or default_state_dir()
    progress = Progress(name, st.st_size)
    stats = PutStats()
    try:
        docs = await put_file(remote, local, name, key, state_dir=state_dir,
                              parallel=max(1, args.parallel), progress=progress.update,
                              stats=stats)
    finally:
        progress.close()  # ends the bar's line, so an error line starts afresh
    await remote.create_file(parent, name, tuple(d.location for d in docs),
                             mode=stat.S_IMODE(st.st_mode), mtime_ns=st.st_mtime_ns,
                             replace=True, sha256=stats.sha256 or None)
    forget(state_dir, key)


async def _put(args: argparse.Namespace) -> int:
    from .upload import upload_file

    if args.recursive:
        return await _put_tree(args)
    if args.local != "-":
        st = os.stat(args.local)
        if stat.S_ISDIR(st.st_mode):
            raise errors.IsADirectory(f"{args.local} is a directory (put -r for a folder)")
    remote = await open_remote(args, exclusive=False)
    try:
        parent, name = await _parent_and_name(remote, args.remote_path, args.local)
        if args.local != "-" and stat.S_ISREG(st.st_mode):
            await put_one(remote, args, args.local, parent, name, args.remote_path)
            return 0
        docs = await upload_file(remote, args.local if args.local != "-" else sys.stdin.buffer,
                                 name, parallel=max(1, args.parallel))
        await remote.create_file(parent, name, tuple(d.location for d in docs), mode=0o644,
                                 mtime_ns=time.time_ns(), replace=True)
        return 0
    finally:
        with trio.CancelScope(shield=True):
            await remote.aclose()


async def ensure_folder(remote: Remote, parent: int, name: str) -> Node:
    """The folder ``name`` in ``parent``, made if missing.  Raises NotADirectory when a
    file has that name, and the remote's errors."""
    try:
        node = await remote.lookup(parent, name)
    except errors.NotFound:
        try:
            return await remote.mkdir(parent, name)
        except errors.AlreadyExists:
            node = await remote.lookup(parent, name)
    if not node.is_dir:
        raise errors.NotADirectory(f"{name} exists and is not a folder")
    return node


async def _put_tree(args: argparse.Namespace) -> int:
    """``put -r``: the local folder LOCAL into REMOTE_PATH (LOCAL's name inside it when it
    is an existing folder, else REMOTE_PATH itself, made)."""
    if args.local == "-" or not os.path.isdir(args.local):
        raise errors.NotADirectory(f"{args.local} is not a folder")
    remote = await open_remote(args, exclusive=False)
    try:
        parts = split_remote_path(args.remote_path)
        parent = await resolve(remote, "/".join(parts[:-1])) if parts else None
        if parent is None:
            top = await ensure_folder(remote, ROOT_ID,
                                      os.path.basename(os.path.abspath(args.local)))
        else:
            try:
                existing = await remote.lookup(parent.id, parts[-1])
            except errors.NotFound:
                existing = None
            if existing is not None and existing.is_dir:
                top = await ensure_folder(remote, existing.id,
                                          os.path.basename(os.path.abspath(args.local)))
            else:
                top = await ensure_folder(remote, parent.id, parts[-1])
        folders: dict[str, int] = {os.path.abspath(args.local): top.id}
        base_remote = "/".join(parts)
        for dirpath, dirnames, filenames in os.walk(args.local, followlinks=False):
            here = folders[os.path.abspath(dirpath)]
            dirnames.sort()
            for d in list(dirnames):
                full = os.path.join(dirpath, d)
                if os.path.islink(full):
                    dirnames.remove(d)
                    filenames.append(d)  # a symlink to a folder is a symlink
                    continue
                folders[os.path.abspath(full)] = (await ensure_folder(remote, here, d)).id
            for f in sorted(filenames):
                full = os.path.join(dirpath, f)
                rel = os.path.relpath(full, args.local).replace(os.sep, "/")
                if os.path.islink(full):
                    with contextlib.suppress(errors.NotFound):
                        await remote.unlink(here, f)
                    await remote.symlink(here, f, os.readlink(full))
                elif os.path.isfile(full):
                    await put_one(remote, args, full, here, f, f"{base_remote}/{rel}")
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
