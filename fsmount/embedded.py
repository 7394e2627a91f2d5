"""EmbeddedRemote: the store behind the :class:`~fsmount.remote.Remote` interface, in-process.

Every call runs the store's blocking method in a worker thread
(``trio.to_thread.run_sync``), bounded by a :class:`trio.CapacityLimiter`, so the trio loop
(and with it the FUSE request loop) never waits on SQLite or the disk.

The long polls of :meth:`EmbeddedRemote.get_changes` wait in threads of their own
(:data:`POLL_THREADS` at most per remote, not the store calls' limiter, so a waiting poll
never holds back a read); a cancelled poll abandons its thread, which ends within the
poll's timeout (bounded by :data:`fsmount.remote.MAX_CHANGES_TIMEOUT`) or when the store
closes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from . import errors
from .protocol import Limits
from .remote import (
    MAX_RUN_WINDOWS,
    BlockCheck,
    ChangeBatch,
    Document,
    FileHash,
    FileLocation,
    InputFile,
    InputFileBig,
    Listing,
    Node,
    NodeKind,
    Owner,
    UploadFile,
    Usage,
    UserConfig,
    WindowRun,
    XattrMode,
)
from .store import DEFAULT_USER, Store

__all__ = ["EmbeddedRemote", "DEFAULT_THREADS", "POLL_THREADS"]

#: Worker threads per store: enough for a few parts in flight plus reads and metadata.
DEFAULT_THREADS = 8
#: Long polls of the change feed waiting at once, per remote (a user's mounts, over a server).
POLL_THREADS = 16

T = TypeVar("T")


class EmbeddedRemote:
    """One user's view of a :class:`~fsmount.store.Store` running in this process.

    Several EmbeddedRemotes (one per user) may share one store; pass the same ``limiter``
    to bound their threads together.  Raises what the store raises.
    """

    def __init__(
        self,
        store: Store,
        user_id: int,
        *,
        limiter: trio.CapacityLimiter | None = None,
        owns_store: bool = False,
    ) -> None:
        self.store = store
        self.user_id = user_id
        self._limiter = limiter or trio.CapacityLimiter(DEFAULT_THREADS)
        self._owns_store = owns_store
        self._poll_limiter = trio.CapacityLimiter(POLL_THREADS)
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        user: str = DEFAULT_USER,
        *,
        limits: Limits | None = None,
        **store_kwargs: Any,
    ) -> EmbeddedRemote:
        """Open (creating if needed) the store at ``path`` as ``user``; ``aclose`` closes it.

        Blocking (opens SQLite, may sweep orphans); call it before the trio loop's hot path.
        ``store_kwargs`` go to :class:`Store` (``clock``, ``exclusive``).

        Raises StoreLocked (``exclusive=True`` and the store is in use).
        """
        if limits is not None:
            store_kwargs["limits"] = limits
        store = Store(path, **store_kwargs)
        try:
            uid = store.ensure_user(user)
        except BaseException:
            store.close()
            raise
        return cls(store, uid, owns_store=True)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        call = functools.partial(fn, self.user_id, *args, **kwargs)
        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    # --- configuration -------------------------------------------------------------------

    async def get_config(self) -> UserConfig:
        return await self._run(self.store.get_config)

    # --- upload --------------------------------------------------------------------------

    async def save_file_part(self, file_id: int, file_part: int, data: bytes) -> bool:
        return await self._run(self.store.save_file_part, file_id, file_part, data)

    async def save_big_file_part(
        self, file_id: int, file_part: int, file_total_parts: int, data: bytes
    ) -> bool:
        return await self._run(
            self.store.save_big_file_part, file_id, file_part, file_total_parts, data
        )

    async def upload_media(self, file: InputFile | InputFileBig) -> Document:
        return await self._run(self.store.upload_media, file)

    # --- download ------------------------------------------------------------------------

    async def get_file(
        self, location: FileLocation, offset: int, limit: int, precise: bool = False
    ) -> UploadFile:
        return await self._run(self.store.get_file, location, offset, limit, precise)

    async def get_file_windows(self, location: FileLocation, offset: int, count: int,
                               hashes: bool = True, crc32c: bool = True) -> WindowRun:
        """See :meth:`fsmount.remote.Remote.get_file_windows`: one store call and one
        transaction (:meth:`fsmount.store.Store.get_file_windows`, also what the server's
        ``windows=N`` extension answers from).  Without ``hashes`` the checks are empty.

        Raises OffsetInvalid, InvalidArgument, FileIdInvalid, FileReferenceExpired.
        """
        if not isinstance(count, int) or not 1 <= count <= MAX_RUN_WINDOWS:
            raise errors.InvalidArgument(f"count must be in 1..{MAX_RUN_WINDOWS}, not {count!r}")
        windows, checks = await self._run(self.store.get_file_windows, location, offset,
                                          count, hashes, crc32c)
        return WindowRun(windows, checks)

    async def get_file_hashes(self, location: FileLocation, offset: int,
                              windows: int = 1) -> list[FileHash]:
        """See :meth:`fsmount.remote.Remote.get_file_hashes`; ``windows`` = N answers what N
        consecutive calls from ``offset``'s window on would, in one store call (the
        server's ``windows=N`` extension).

        Raises what the interface says, and InvalidArgument for ``windows`` < 1.
        """
        return await self._run(self.store.get_file_hashes, location, offset, windows)

    async def get_file_checksums(self, location: FileLocation, offset: int,
                                 windows: int = 1) -> list[BlockCheck]:
        """See :meth:`fsmount.remote.Remote.get_file_checksums`; ``windows`` as for
        ``get_file_hashes``.

        Raises what ``get_file_hashes`` raises.
        """
        return await self._run(self.store.get_file_checksums, location, offset, windows)

    async def get_document_by_hash(self, sha256: str, size: int, mime_type: str) -> Document | None:
        return await self._run(self.store.get_document_by_hash, sha256, size, mime_type)

    # --- namespace -----------------------------------------------------------------------

    async def lookup(self, parent: int, name: str) -> Node:
        return await self._run(self.store.lookup, parent, name)

    async def getattr(self, node_id: int) -> Node:
        return await self._run(self.store.getattr, node_id)

    async def list_folder(
        self, folder_id: int, after: str | None = None, limit: int = 1000
    ) -> Listing:
        return await self._run(self.store.list_folder, folder_id, after, limit)

    async def reserve_node_ids(self, count: int) -> int:
        return await self._run(self.store.reserve_node_ids, count)

    async def mkdir(self, parent: int, name: str, mode: int = 0o755, *,
                    owner: Owner | None = None, node_id: int | None = None) -> Node:
        return await self._run(self.store.mkdir, parent, name, mode, owner=owner,
                               node_id=node_id)

    async def create_file(
        self,
        parent: int,
        name: str,
        segments: tuple[FileLocation, ...] = (),
        *,
        mode: int = 0o644,
        mtime_ns: int | None = None,
        replace: bool = False,
        sha256: str | None = None,
        owner: Owner | None = None,
        node_id: int | None = None,
    ) -> Node:
        return await self._run(
            self.store.create_file, parent, name, tuple(segments), mode=mode,
            mtime_ns=mtime_ns, replace=replace, sha256=sha256, owner=owner, node_id=node_id,
        )

    async def put_file(self, parent: int, name: str, data: bytes, *, md5_checksum: str,
                       mode: int = 0o644, mtime_ns: int | None = None,
                       replace: bool = True, owner: Owner | None = None,
                       node_id: int | None = None) -> Node:
        return await self._run(self.store.put_file, parent, name, data,
                               md5_checksum=md5_checksum, mode=mode, mtime_ns=mtime_ns,
                               replace=replace, owner=owner, node_id=node_id)

    async def set_content(
        self, node_id: int, segments: tuple[FileLocation, ...], *, mtime_ns: int | None = None,
        sha256: str | None = None,
    ) -> Node:
        return await self._run(self.store.set_content, node_id, tuple(segments),
                               mtime_ns=mtime_ns, sha256=sha256)

    async def symlink(self, parent: int, name: str, target: str, *,
                      owner: Owner | None = None, node_id: int | None = None) -> Node:
        return await self._run(self.store.symlink, parent, name, target, owner=owner,
                               node_id=node_id)

    async def setattr(
        self, node_id: int, *, mode: int | None = None, mtime_ns: int | None = None
    ) -> Node:
        return await self._run(self.store.setattr, node_id, mode=mode, mtime_ns=mtime_ns)

    async def rename(
        self, parent: int, name: str, new_parent: int, new_name: str, *, replace: bool = True
    ) -> Node:
        return await self._run(self.store.rename, parent, name, new_parent, new_name,
                               replace=replace)

    async def unlink(self, parent: int, name: str) -> int | None:
        return await self._run(self.store.unlink, parent, name)

    async def rmdir(self, parent: int, name: str) -> int | None:
        return await self._run(self.store.rmdir, parent, name)

    async def statfs(self) -> Usage:
        return await self._run(self.store.statfs)

    # --- change feed ---------------------------------------------------------------------

    async def get_changes(self, cursor: int | None, timeout: float) -> ChangeBatch:
        """See :meth:`fsmount.remote.Remote.get_changes`.  Raises InvalidArgument."""
        call = functools.partial(self.store.get_changes, self.user_id, cursor, timeout)
        return await trio.to_thread.run_sync(call, limiter=self._poll_limiter,
                                             abandon_on_cancel=True)

    # --- POSIX ---------------------------------------------------------------------------

    async def mknod(self, parent: int, name: str, kind: NodeKind, mode: int, rdev: int = 0,
                    *, owner: Owner | None = None) -> Node:
        return await self._run(self.store.mknod, parent, name, NodeKind(kind), mode, rdev,
                               owner=owner)

    async def link(self, node_id: int, new_parent: int, new_name: str) -> Node:
        return await self._run(self.store.link, node_id, new_parent, new_name)

    async def chown(self, node_id: int, *, uid: int | None = None,
                    gid: int | None = None) -> Node:
        return await self._run(self.store.chown, node_id, uid=uid, gid=gid)

    async def set_times(self, node_id: int, *, atime_ns: int | None = None,
                        mtime_ns: int | None = None) -> Node:
        return await self._run(self.store.set_times, node_id, atime_ns=atime_ns,
                               mtime_ns=mtime_ns)

    async def get_xattr(self, node_id: int, name: str) -> bytes:
        return await self._run(self.store.get_xattr, node_id, name)

    async def list_xattrs(self, node_id: int) -> list[str]:
        return await self._run(self.store.list_xattrs, node_id)

    async def set_xattr(self, node_id: int, name: str, value: bytes,
                        mode: XattrMode = XattrMode.EITHER) -> None:
        await self._run(self.store.set_xattr, node_id, name, value, XattrMode(mode))

    async def remove_xattr(self, node_id: int, name: str) -> None:
        await self._run(self.store.remove_xattr, node_id, name)

    async def aclose(self) -> None:
        """Close the store if :meth:`open` opened it; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_store:
            await trio.to_thread.run_sync(self.store.close)
