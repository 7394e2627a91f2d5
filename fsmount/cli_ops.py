"""``fsmount rm``, ``fsmount mkdir`` and ``fsmount mv``: namespace changes without a mount.

They make the same :class:`~fsmount.remote.Remote` calls a mounted filesystem would
(``unlink``/``rmdir``, ``mkdir``, ``rename``), on the embedded store or a server alike, so
every rule (a folder moved with everything in it as one change, a file replaced
atomically) is the store's.  ``rm -r`` removes a folder's content depth first, then the
folder; ``mkdir -p`` makes missing parents and accepts an existing folder; ``mv`` into an
existing folder keeps the name, like mv(1).
"""

from __future__ import annotations

import argparse

import trio

from . import errors
from .cli_common import add_remote_options, open_remote, resolve, split_remote_path
from .remote import ROOT_ID, Node, Remote


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rm = sub.add_parser("rm", help="remove files or folders of the store",
                        description="Remove each REMOTE_PATH (a file or symlink; a folder "
                                    "with -r, everything in it too).")
    rm.add_argument("paths", metavar="REMOTE_PATH", nargs="+")
    rm.add_argument("-r", "--recursive", action="store_true",
                    help="remove folders and everything in them")
    add_remote_options(rm)
    rm.set_defaults(func=lambda a: trio.run(_rm, a))

    mk = sub.add_parser("mkdir", help="make folders in the store",
                        description="Make each folder REMOTE_PATH.")
    mk.add_argument("paths", metavar="REMOTE_PATH", nargs="+")
    mk.add_argument("-p", "--parents", action="store_true",
                    help="make missing parents too; an existing folder is no error")
    add_remote_options(mk)
    mk.set_defaults(func=lambda a: trio.run(_mkdir, a))

    mv = sub.add_parser("mv", help="move or rename in the store",
                        description="Move SOURCE to DEST (into DEST when it is a folder), "
                                    "replacing a file at DEST atomically.")
    mv.add_argument("source", metavar="SOURCE")
    mv.add_argument("dest", metavar="DEST")
    add_remote_options(mv)
    mv.set_defaults(func=lambda a: trio.run(_mv, a))


async def _parent_of(remote: Remote, path: str) -> tuple[Node, str]:
    """The folder holding ``path`` and the last name.  Raises InvalidName for the root,
    NotFound, NotADirectory."""
    parts = split_remote_path(path)
    if not parts:
        raise errors.InvalidName("the root folder cannot be changed")
    folder = await resolve(remote, "/".join(parts[:-1]))
    if not folder.is_dir:
        raise errors.NotADirectory(f"{'/'.join(parts[:-1])} is not a folder")
    return folder, parts[-1]


async def remove_tree(remote: Remote, folder: Node) -> None:
    """Remove everything in ``folder`` (depth first), not the folder itself.

    Raises the remote's errors (NotFound when something vanished meanwhile is ignored).
    """
    for _ in range(1 << 20):  # bounded: each round removes a page of entries
        page = await remote.list_folder(folder.id)
        if not page.entries:
            return
        for entry in page.entries:
            try:
                if entry.is_dir:
                    await remove_tree(remote, entry)
                    await remote.rmdir(folder.id, entry.name)
                else:
                    await remote.unlink(folder.id, entry.name)
            except errors.NotFound:
                continue


async def _rm(args: argparse.Namespace) -> int:
    remote = await open_remote(args, exclusive=False)
    try:
        for path in args.paths:
            folder, name = await _parent_of(remote, path)
            node = await remote.lookup(folder.id, name)
            if node.is_dir:
                if not args.recursive:
                    raise errors.IsADirectory(f"{path} is a folder (rm -r removes folders)")
                await remove_tree(remote, node)
                await remote.rmdir(folder.id, name)
            else:
                await remote.unlink(folder.id, name)
        return 0
    finally:
        with trio.CancelScope(shield=True):
            await remote.aclose()


async def _mkdir(args: argparse.Namespace) -> int:
    remote = await open_remote(args, exclusive=False)
    try:
        for path in args.paths:
            if not args.parents:
                folder, name = await _parent_of(remote, path)
                await remote.mkdir(folder.id, name)
                continue
            node = await remote.getattr(ROOT_ID)
            for part in split_remote_path(path):
                try:
                    node = await remote.lookup(node.id, part)
                except errors.NotFound:
                    try:
                        node = await remote.mkdir(node.id, part)
                    except errors.AlreadyExists:
                        node = await remote.lookup(node.id, part)
                if not node.is_dir:
                    raise errors.NotADirectory(f"{part} in {path} is not a folder")
        return 0
    finally:
        with trio.CancelScope(shield=True):
            await remote.aclose()


async def _mv(args: argparse.Namespace) -> int:
    remote = await open_remote(args, exclusive=False)
    try:
        src_folder, src_name = await _parent_of(remote, args.source)
        await remote.lookup(src_folder.id, src_name)  # NotFound names the source
        dest_parts = split_remote_path(args.dest)
        target: Node | None = None
        if dest_parts:
            try:
                target = await resolve(remote, args.dest)
            except errors.NotFound:
                target = None
        else:
            target = await remote.getattr(ROOT_ID)
        if target is not None and target.is_dir:
            new_parent, new_name = target, src_name
        else:
            new_parent, new_name = await _parent_of(remote, args.dest)
        await remote.rename(src_folder.id, src_name, new_parent.id, new_name, replace=True)
        return 0
    finally:
        with trio.CancelScope(shield=True):
            await remote.aclose()
