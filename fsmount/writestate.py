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

import os
import time
from dataclasses import dataclass

import trio

from .journal import Journal
from .remote import Document, Node, Remote
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


@dataclass(eq=False)
class Journaled:
    """Write-back: changed in a named staging file that the journal takes over on commit."""

    staging: StagingFile
    #: The journal's pending content this staging file reads old bytes from (-1: none, the
    #: old content comes from the store).
    base_fd: int = -1
    dirty: bool = False


#: The modes of a file open for writing.
Mode = Unchanged | Emptied | Streaming | Staging | Journaled


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

    def __init__(self, settings: WriteSettings, node: Node, *, truncate: bool) -> None:
        self._settings = settings
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
        return self.mode.dirty or self._truncate_pending

    @property
    def reads_from_base(self) -> bool:
        """True while the content is still exactly ``base`` (reads go to the chunk cache)."""
        return isinstance(self.mode, Unchanged)

    # -- transitions (lock held) -------------------------------------------------------

    async def _start_streaming(self) -> Streaming:
        s = self._settings
        upload = await StreamingUpload.open(
            s.nursery, s.remote, self.name, parallel=s.parallel, parallel_max=s.parallel_max,
            spill_dir=s.cache_dir, budget=s.budget, segment_parts=STREAM_SEGMENT_PARTS,
            whole_sha256=True)
        mode = Streaming(upload, dirty=self.mode.dirty)
        self.mode = mode
        return mode

    async def _to_staging(self) -> Staging:
        mode = self.mode
        if isinstance(mode, Staging):
            return mode
        if isinstance(mode, Streaming):
            staging = await mode.upload.into_staging(self._settings.cache_dir)
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
            if size == 0:
                await self._drop_pending()
                self.base = ()
                self.size = 0
                self.mode = Emptied()
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
            # The whole content's SHA-256, computed while it went out (the store keeps it
            # per node: user.fsmount.sha256); None where the store knows it itself.
            sha256: str | None = None
            if isinstance(mode, Staging):
                docs = await mode.staging.upload(self.name, parallel=self._settings.parallel)
                sha256 = mode.staging.sha256
            elif isinstance(mode, Streaming):
                # The upload is consumed whatever happens: afterwards the content is what
                # it links (or, if the link fails, the empty rest of ``base``).
                self.mode = Emptied()
                try:
                    docs = await mode.upload.finish()
                    sha256 = mode.upload.sha256
                except BaseException:
                    # The written bytes are gone with the upload: the file keeps its old
                    # content, and this close reports the error.
                    self.size = sum(d.size for d in self.base)
                    self.mode = Unchanged()
                    raise
            else:
                docs = self.base
            mtime = self.mtime_ns if self.mtime_ns is not None else time.time_ns()
            node = await self.remote.set_content(self.node_id, tuple(d.location for d in docs),
                                                 mtime_ns=mtime, sha256=sha256)
            self.base = tuple(node.segments)
            self.size = node.size
            self.mtime_ns = None
            if isinstance(mode, Staging):
                await mode.staging.aclose()
            self.mode = Unchanged()
            return node

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


def _close_fd(fd: int) -> None:
    if fd >= 0:
        os.close(fd)
