"""The content of a file open for writing: one typed mode at a time, each change a method.

A :class:`WriteState` is shared by every handle of one inode (so reads from any handle see
what was written) and is in exactly one *mode*, each a type of its own (as mountpoint-s3's
``fs/handles.rs`` gives a handle's upload state one enum variant per state):

* :class:`Unchanged`: the content is exactly the documents ``base``; reads go through the
  chunk cache and a commit has nothing to do;
* :class:`Emptied`: truncated to 0 (or opened with ``O_TRUNC``) and nothing written since;
  a commit links the empty content;
* :class:`Streaming`: written sequentially from offset 0, uploaded while it grows by a
  :class:`~fsmount.upload.StreamingUpload`;
* :class:`Staging`: written anywhere else (seek back, append to existing content, truncate
  to a non-zero size), held in a :class:`~fsmount.upload.StagingFile` and uploaded as a
  whole on commit.

* :class:`Buffered`: a file created through this mount that the store does not have yet
  (:class:`Unborn`: its node id was reserved, :mod:`fsmount.idpool`), whose content is
  small enough to keep in memory: the commit sends node and content in one call
  (``put_file``), so creating, writing and closing a small file is one round trip.  A new
  file that outgrows :data:`BUFFER_MAX` (or the mount's write memory) moves to
  :class:`Streaming` or :class:`Staging` and is created with its documents at commit
  (``create_file(node_id=...)``).

* :class:`Journaled` (``fsmount mount --write-back`` only, where it replaces the three
  above): every change goes to a named staging file in the write-back journal's work
  directory (its old content fetched lazily from the store, or from the journal's pending
  content of the file); :meth:`WriteState.commit` fsyncs it and hands it to the journal
  (:meth:`fsmount.journal.Journal.commit_content`), which makes it durable and pending:
  the background uploader sends it.  While a file has pending content, reads of it come
  from the journal (see fsmount.fuse_ops).

The transitions: a write at the end of an empty :class:`Unchanged` or :class:`Emptied`
content starts :class:`Streaming`; any other write, or a truncate to a non-zero size, moves
the content to :class:`Staging` (a streaming upload hands over what it has); a truncate to 0
goes to :class:`Emptied`, dropping what was pending; :meth:`WriteState.commit` (close, fsync)
finalizes and links the content atomically and goes back to :class:`Unchanged`;
:meth:`WriteState.discard` drops pending content.  Operations are serialized by one lock.

:class:`WriteStates` is the one factory the FUSE adapter builds write states with: it holds
what every write state of a mount shares (remote, nursery, cache directory, memory budget).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

import trio

from .journal import Journal
from .protocol import MIB
from .remote import Document, Node, Owner, Remote
from .upload import (
    DEFAULT_PARALLEL,
    PARALLEL_MAX,
    STREAM_SEGMENT_PARTS,
    RetainBudget,
    StagingFile,
    StreamingUpload,
)


@dataclass(frozen=True)
class Unchanged:
    """The content is exactly ``base``: nothing pending."""

    #: Whether the content differs from what the store links (False: nothing to commit).
    dirty = False


@dataclass(frozen=True)
class Emptied:
    """Truncated to 0 with nothing written since: the empty content waits to be linked."""

    dirty = True


@dataclass(eq=False)
class Streaming:
    """Written sequentially from 0, streaming to the store."""

    upload: StreamingUpload
    #: Whether a commit is due: False only while no write into it has succeeded yet and
    #: the content it started from was linked already.
    dirty: bool = False


@dataclass(eq=False)
class Staging:
    """Held in a local staging file, uploaded as a whole on commit."""

    staging: StagingFile
    #: Whether a commit is due: False only while no change to it has succeeded yet and
    #: the content it started from was linked already.
    dirty: bool = False


#: A new file up to this size is kept in memory and sent with its node in one call.
BUFFER_MAX = 4 * MIB


@dataclass(eq=False)
class Buffered:
    """A new file's whole content in memory (``held`` bytes of the mount's write budget)."""

    data: bytearray = field(default_factory=bytearray)
    held: int = 0
    #: A new file is always due: the commit creates it.
    dirty: bool = True


@dataclass(eq=False)
class Unborn:
    """What a file created through this mount, not in the store yet, is created with at its
    first commit (the node id is the write state's): its permission bits and owner as the
    create gave them or chmod/chown changed them since, and whether the create was
    exclusive (``O_EXCL``: the store must not have the name; otherwise a file another
    client made meanwhile is replaced)."""

    mode: int
    owner: Owner
    exclusive: bool
    #: The mtime the create showed: kept when nothing is written before the commit, so
    #: that the kernel's cached attributes (and pages) stay valid.
    created_ns: int
    #: Whether the content changed since the create (write, truncate).
    touched: bool = False


@dataclass(eq=False)
class Journaled:
    """Write-back: changed in a named staging file that the journal takes over on commit."""

    staging: StagingFile
    #: The journal's pending content this staging file reads old bytes from (-1: none, the
    #: old content comes from the store).
    base_fd: int = -1
    dirty: bool = False


#: The modes of a file open for writing.
Mode = Unchanged | Emptied | Buffered | Streaming | Staging | Journaled


@dataclass(frozen=True)
class WriteSettings:
    """What every write state of one mount shares."""

    remote: Remote
    nursery: trio.Nursery
    cache_dir: str
    #: The mount's budget for the retained parts of all its streaming uploads.
    budget: RetainBudget
    parallel: int = DEFAULT_PARALLEL
    #: What the parts in flight may grow to over a long link (PartSender).
    parallel_max: int = PARALLEL_MAX
    #: The write-back journal (``--write-back``): every change goes through it.
    journal: Journal | None = None


class WriteState:
    """The content of a file open for writing, shared by every handle of that inode.

    Build with :meth:`WriteStates.open`.  :attr:`mode` says where the content is.
    """

    def __init__(self, settings: WriteSettings, node: Node, *, truncate: bool,
                 unborn: Unborn | None = None) -> None:
        self._settings = settings
        #: Set while the store does not have the file yet (see :class:`Unborn`).
        self.unborn = unborn
        self.remote = settings.remote
        self.node_id = node.id
        self.name = node.name
        #: Content the new bytes build on (the documents the store links, or () after a
        #: truncate to 0).
        self.base: tuple[Document, ...] = () if truncate else node.segments
        self.size = sum(d.size for d in self.base)
        #: The node's version when this write began (write-back's conflict check).
        self.base_version = node.version
        self.parent = node.parent
        self.mode: Mode = Emptied() if truncate and node.segments else Unchanged()
        if unborn is not None:
            self.mode = Buffered()
        self._journal = settings.journal
        #: Write-back: the file was deleted (or replaced) through this mount while open;
        #: its commit journals nothing.
        self.deleted = False
        pending = self._journal.pending_file(node.id) if self._journal is not None else None
        if pending is not None and not truncate:
            self.size = pending.content.size
        if self._journal is not None and isinstance(self.mode, Emptied):
            self.mode = Unchanged()
            self._truncate_pending = True
        else:
            #: Write-back: the file was opened truncated over content; the commit records
            #: the empty content even if nothing is written.
            self._truncate_pending = False
        #: Set by utimes while content is pending; linked with it at commit.
        self.mtime_ns: int | None = None
        self.handles = 0
        #: Handles of this writer opened with direct_io (see
        #: fsmount.fuse_ops.Operations._file_handle).
        self.direct_handles = 0
        self.lock = trio.Lock()

    @property
    def dirty(self) -> bool:
        """True while the content differs from what the store links (a commit is due)."""
        return self.mode.dirty or self._truncate_pending or self.unborn is not None

    @property
    def reads_from_base(self) -> bool:
        """True while the content is still exactly ``base`` (reads go to the chunk cache)."""
        return isinstance(self.mode, Unchanged)

    # -- transitions (lock held) -------------------------------------------------------

    def _hold(self, mode: Buffered, size: int) -> bool:
        """Grow what ``mode`` holds of the write budget to ``size``; False if it cannot."""
        if size > BUFFER_MAX:
            return False
        if size > mode.held:
            if not self._settings.budget.take(size - mode.held):
                return False
            mode.held = size
        return True

    def _release(self, mode: Buffered) -> None:
        self._settings.budget.give(mode.held)
        mode.held = 0

    async def _start_streaming(self) -> Streaming:
        s = self._settings
        old = self.mode
        upload = await StreamingUpload.open(
            s.nursery, s.remote, self.name, parallel=s.parallel, parallel_max=s.parallel_max,
            spill_dir=s.cache_dir, budget=s.budget, segment_parts=STREAM_SEGMENT_PARTS,
            whole_sha256=True)
        mode = Streaming(upload, dirty=old.dirty)
        self.mode = mode
        if isinstance(old, Buffered):
            data = bytes(old.data)
            self._release(old)
            if data:
                await upload.write(data)
        return mode

    async def _to_staging(self) -> Staging:
        mode = self.mode
        if isinstance(mode, Staging):
            return mode
        if isinstance(mode, Streaming):
            staging = await mode.upload.into_staging(self._settings.cache_dir)
        elif isinstance(mode, Buffered):
            staging = await StagingFile.create(self._settings.cache_dir, self.remote, ())
            if mode.data:
                await staging.pwrite(0, bytes(mode.data))
            self._release(mode)
        else:
            staging = await StagingFile.create(self._settings.cache_dir, self.remote, self.base)
        new = Staging(staging, dirty=mode.dirty)
        self.mode = new
        return new

    async def _to_journaled(self) -> Journaled:
        mode = self.mode
        if isinstance(mode, Journaled):
            return mode
        journal = self._journal
        assert journal is not None
        pending = journal.pending_file(self.node_id)
        base_fd = -1
        if pending is not None and not self._truncate_pending:
            # The file's pending content, held open: the uploader may delete the journal's
            # file once it is in the store while old bytes are still to be fetched from it.
            # Opened without a checkpoint in between: the uploader cannot delete it first.
            try:
                base_fd = os.open(journal.content_path(pending.content.id), os.O_RDONLY)
            except FileNotFoundError:
                pending = None  # a drop; a store would have updated base (stored())
        work = journal.new_work_path()
        if self._truncate_pending:
            staging = await StagingFile.create(journal.work_dir, self.remote, (), path=work)
        elif pending is not None:
            fd = base_fd

            async def fetch(offset: int, size: int) -> bytes:
                return await trio.to_thread.run_sync(os.pread, fd, size, offset)

            try:
                staging = await StagingFile.create(
                    journal.work_dir, self.remote, (), path=work, fetch=fetch,
                    orig_size=pending.content.size)
            except BaseException:
                _close_fd(base_fd)
                raise
        else:
            staging = await StagingFile.create(journal.work_dir, self.remote, self.base,
                                               path=work)
        new = Journaled(staging, base_fd, dirty=mode.dirty or self._truncate_pending)
        self._truncate_pending = False
        self.mode = new
        return new

    async def _drop_pending(self) -> None:
        mode = self.mode
        if isinstance(mode, Streaming):
            await mode.upload.abort()
        elif isinstance(mode, Staging):
            await mode.staging.aclose()
        elif isinstance(mode, Journaled):
            await mode.staging.aclose()
            _close_fd(mode.base_fd)
        elif isinstance(mode, Buffered):
            self._release(mode)
            mode.data = bytearray()

    # -- operations --------------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; returns its length.

        Raises:
            FsmountError: the streaming upload failed, or fetching old content did.
            OSError: the staging file could not be written.
        """
        if self._journal is not None:
            await self._journal.wait_room(len(data))
        async with self.lock:
            mode = self.mode
            if self._journal is not None:
                journaled = await self._to_journaled()
                await journaled.staging.pwrite(offset, data)
                journaled.dirty = True
            elif isinstance(mode, Buffered) and self._hold(mode, max(self.size,
                                                                     offset + len(data))):
                if offset > len(mode.data):
                    mode.data.extend(bytes(offset - len(mode.data)))  # a hole reads as zeros
                mode.data[offset:offset + len(data)] = data
            elif isinstance(mode, Buffered) and offset == self.size:
                streaming = await self._start_streaming()  # outgrew memory, written in order
                await streaming.upload.write(data)
            elif isinstance(mode, Streaming) and offset == self.size:
                await mode.upload.write(data)
                mode.dirty = True
            elif isinstance(mode, Unchanged | Emptied) and offset == self.size == 0:
                streaming = await self._start_streaming()
                await streaming.upload.write(data)
                streaming.dirty = True
            else:
                staging = await self._to_staging()
                await staging.staging.pwrite(offset, data)
                staging.dirty = True
            self.size = max(self.size, offset + len(data))
            if self.unborn is not None:
                self.unborn.touched = True
            return len(data)

    async def defer_mtime(self, mtime_ns: int) -> bool:
        """Keep ``mtime_ns`` for the commit if content is pending (the commit links the
        content with that mtime, so the store needs no separate setattr); False when nothing
        is pending, and the caller must set it on the store.  Under the lock, so that a
        commit in progress either takes this mtime or has finished before it is checked."""
        async with self.lock:
            if not self.dirty:
                return False
            self.mtime_ns = mtime_ns
            return True

    async def read(self, offset: int, size: int) -> tuple[bytes | None, tuple[Document, ...]]:
        """What a reader of the open file sees: the written bytes, or ``(None, base)`` when
        the content is exactly the documents ``base`` (read those through the chunk cache).
        Waits for a write, truncate or commit in progress, so a read never sees a commit
        half done.

        Raises:
            FsmountError: reading back from the upload or the staging file failed.
            OSError: the staging file could not be read.
        """
        async with self.lock:
            mode = self.mode
            if isinstance(mode, Buffered):
                return bytes(mode.data[offset:offset + size]), self.base
            if isinstance(mode, Staging | Journaled):
                return bytes(await mode.staging.pread(offset, size)), self.base
            if isinstance(mode, Streaming):
                return bytes(await mode.upload.read(offset, size)), self.base
            if isinstance(mode, Emptied):
                return b"", self.base  # truncated to 0, nothing written yet
            return None, self.base

    async def truncate(self, size: int) -> None:
        """Set the size: 0 drops pending content, anything else goes through staging.

        Raises:
            InvalidArgument: ``size`` is negative.
            FsmountError, OSError: moving the content to staging failed.
        """
        async with self.lock:
            if size == self.size:
                return
            if self._journal is not None:
                journaled = await self._to_journaled()
                await journaled.staging.truncate(size)
                journaled.dirty = True
                self.size = size
                return
            mode = self.mode
            if self.unborn is not None:
                self.unborn.touched = True
            if isinstance(mode, Buffered) and self._hold(mode, size):
                if size < len(mode.data):
                    del mode.data[size:]
                else:
                    mode.data.extend(bytes(size - len(mode.data)))
                self.size = size
                return
            if size == 0:
                await self._drop_pending()
                self.base = ()
                self.size = 0
                self.mode = Buffered() if self.unborn is not None else Emptied()
                return
            staging = await self._to_staging()
            await staging.staging.truncate(size)
            staging.dirty = True
            self.size = size

    async def commit(self) -> Node | None:
        """Upload what is pending and link it as the file's content; None if nothing was
        pending.

        Raises:
            FsmountError: the upload's errors and the remote's (NotFound if the file is
                gone).
            OSError: the staging file could not be read.
        """
        async with self.lock:
            mode = self.mode
            if not self.dirty:
                return None
            if self._journal is not None:
                await self._commit_journaled(self._journal)
                return None
            mtime = self.mtime_ns if self.mtime_ns is not None else time.time_ns()
            unborn = self.unborn
            if unborn is not None and self.mtime_ns is None and not unborn.touched:
                mtime = unborn.created_ns
            if unborn is not None and isinstance(mode, Buffered):
                # Node and content in one call.
                data = bytes(mode.data)
                node = await self.remote.put_file(
                    self.parent, self.name, data, md5_checksum=hashlib.md5(data).hexdigest(),
                    mode=unborn.mode, mtime_ns=mtime, replace=not unborn.exclusive,
                    owner=unborn.owner, node_id=self.node_id)
                self._release(mode)
            else:
                docs, sha256 = await self._upload_pending(mode)
                locations = tuple(d.location for d in docs)
                if unborn is not None:
                    node = await self.remote.create_file(
                        self.parent, self.name, locations, mode=unborn.mode, mtime_ns=mtime,
                        replace=not unborn.exclusive, sha256=sha256, owner=unborn.owner,
                        node_id=self.node_id)
                else:
                    node = await self.remote.set_content(self.node_id, locations,
                                                         mtime_ns=mtime, sha256=sha256)
            self.unborn = None
            self.base = tuple(node.segments)
            self.size = node.size
            self.mtime_ns = None
            if isinstance(mode, Staging):
                await mode.staging.aclose()
            self.mode = Unchanged()
            return node

    async def _upload_pending(self, mode: Mode) -> tuple[tuple[Document, ...], str | None]:
        """Finish uploading what ``mode`` holds (lock held): the documents of the content,
        and its whole SHA-256 as computed while it went out (the store keeps it per node:
        user.fsmount.sha256; None where the store knows it itself)."""
        if isinstance(mode, Staging):
            docs = await mode.staging.upload(self.name, parallel=self._settings.parallel)
            return tuple(docs), mode.staging.sha256
        if isinstance(mode, Streaming):
            # The upload is consumed whatever happens: afterwards the content is what it
            # links (or, if the link fails, the empty rest of ``base``).
            self.mode = Emptied()
            try:
                docs = await mode.upload.finish()
            except BaseException:
                # The written bytes are gone with the upload: the file keeps its old
                # content, and this close reports the error.
                self.size = sum(d.size for d in self.base)
                self.mode = Unchanged() if self.unborn is None else Buffered()
                if self.unborn is not None:
                    self.size = 0
                raise
            return tuple(docs), mode.upload.sha256
        return self.base, None

    async def _commit_journaled(self, journal: Journal) -> None:
        """Hand the changed content to the journal (lock held): durable when this returns."""
        if self.deleted:
            await self._drop_pending()
            self.mode = Unchanged()
            self._truncate_pending = False
            return
        mode = await self._to_journaled()  # a truncate-on-open with nothing written
        staging = mode.staging
        sha256 = await staging.sync(self._settings.parallel)
        path = staging.path
        assert path is not None
        mtime = self.mtime_ns if self.mtime_ns is not None else time.time_ns()
        await journal.commit_content(
            path, node=self.node_id, parent=self.parent, name=self.name, size=staging.size,
            sha256=sha256, base_version=self.base_version, mtime_ns=mtime)
        staging.disown()
        _close_fd(mode.base_fd)
        self.mtime_ns = None
        self.mode = Unchanged()

    def abandon(self) -> None:
        """A file created here that the store does not have yet lost its name before its
        first commit: it will never be created (later writes through open handles go
        nowhere the store keeps).  Synchronous: only a :class:`Buffered` content can be
        pending that early or later; any other is dropped by :meth:`discard`."""
        self.unborn = None
        if isinstance(self.mode, Buffered):
            self._release(self.mode)
            self.mode = Unchanged()
            self.size = 0

    def stored(self, node: Node) -> None:
        """The write-back uploader stored ``node``: an unchanged content is now its
        segments (reads go to the store once the journal has let go of it)."""
        if isinstance(self.mode, Unchanged) and not self._truncate_pending:
            self.base = tuple(node.segments)
            self.base_version = node.version

    async def discard(self) -> None:
        """Drop pending content (the upload is aborted, the staging file deleted).

        Raises:
            OSError: closing the staging file failed.
        """
        await self._drop_pending()
        if isinstance(self.mode, Journaled):
            self.mode = Unchanged()
        elif isinstance(self.mode, Streaming | Staging):
            self.mode = Unchanged() if not self.mode.dirty else Emptied()
        self._truncate_pending = False


class WriteStates:
    """The one factory of a mount's write states."""

    def __init__(self, settings: WriteSettings) -> None:
        self.settings = settings

    def open(self, node: Node, *, truncate: bool = False) -> WriteState:
        """A write state for ``node``: its content as the store has it, or (``truncate``)
        empty, to be linked as such at commit."""
        return WriteState(self.settings, node, truncate=truncate)

    def create(self, node: Node, unborn: Unborn) -> WriteState:
        """A write state for a new file the store does not have yet: ``node`` as this mount
        shows it (its reserved id, parent and name), created at the first commit."""
        return WriteState(self.settings, node, truncate=True, unborn=unborn)


def _close_fd(fd: int) -> None:
    if fd >= 0:
        os.close(fd)
