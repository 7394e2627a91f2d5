"""The local directory content backend: parts and blobs as files under the store directory.

Layout (unchanged since the first stores; ``tests/test_store_layout.py`` guards it)::

    DIR/blobs/ab/<sha256>.<token>/<n>   content, deduplicated by SHA-256; chunk n of the blob
    DIR/parts/<user>/<file_id hex>/<n>  part n of an upload that is not finalized yet
    DIR/parts/tmp/                      files being written, and trash being deleted

A blob is a directory of equally sized chunks (the last one smaller): promoting an upload
renames its part directory into ``blobs/`` instead of copying a gigabyte again, and reads
take a range from one or two chunk files.  Keys are paths relative to ``DIR``; the blob key
is what the metadata's ``blobs.path`` column has always held.

Durability: a blob's files and directories are fsynced by :meth:`LocalDir.promote`, before
the commit that references it (parts saved with ``sync`` were synced already).  Hot paths
build paths as plain strings: pathlib costs more than the system call.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from io import BufferedWriter
from pathlib import Path

from ..protocol import WINDOW
from .content import DiskSpace
from .rows import PartStamp, UploadKey

__all__ = ["LocalDir", "blob_relpath", "sweep_files", "upload_relpath"]

_U64 = 1 << 64

_read_buffers = threading.local()


def upload_relpath(user_id: int, file_id: int) -> str:
    """Directory of an upload's parts, relative to the store directory."""
    return f"parts/{user_id}/{file_id & (_U64 - 1):016x}"


def blob_relpath(sha256: str, token: str) -> str:
    """Directory of a blob, relative to the store directory."""
    return f"blobs/{sha256[:2]}/{sha256}.{token}"


def sweep_files(root: Path, blob_paths: set[str], part_files: dict[str, set[str]]) -> list[str]:
    """Remove files the metadata does not reference; return their relative paths.

    ``blob_paths`` are the referenced blob directories, ``part_files`` maps an upload
    directory to the part file names that are referenced.  Everything under ``parts/tmp``
    goes.  Only call this while no other process has the store open.
    """
    removed: list[str] = []
    blobs = root / "blobs"
    if blobs.is_dir():
        for prefix in sorted(blobs.iterdir()):
            if not prefix.is_dir():
                removed.append(str(prefix.relative_to(root)))
                prefix.unlink()
                continue
            for entry in sorted(prefix.iterdir()):
                rel = str(entry.relative_to(root))
                if rel not in blob_paths:
                    removed.append(rel)
                    remove_tree(entry)
            if not any(prefix.iterdir()):
                prefix.rmdir()
    parts = root / "parts"
    if parts.is_dir():
        for user_dir in sorted(parts.iterdir()):
            if user_dir.name == "tmp":
                for entry in sorted(user_dir.iterdir()):
                    removed.append(str(entry.relative_to(root)))
                    remove_tree(entry)
                continue
            if not user_dir.is_dir():
                removed.append(str(user_dir.relative_to(root)))
                user_dir.unlink()
                continue
            for up in sorted(user_dir.iterdir()):
                rel = str(up.relative_to(root))
                keep = part_files.get(rel)
                if keep is None or not up.is_dir():
                    removed.append(rel)
                    remove_tree(up)
                    continue
                for f in sorted(up.iterdir()):
                    if f.name not in keep:
                        removed.append(str(f.relative_to(root)))
                        remove_tree(f)
                if not any(up.iterdir()):
                    up.rmdir()
            if not any(user_dir.iterdir()):
                user_dir.rmdir()
    return removed


def remove_tree(path: Path | str) -> None:
    """Delete a file or a directory tree; a missing one is not an error."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileBlobWriter:
    """A staged blob of one chunk file (``DIR/parts/tmp/b<token>/0``)."""

    def __init__(self, root: str, key: str) -> None:
        self.key = key
        self._dir = root + key
        os.mkdir(self._dir)
        self._out: BufferedWriter | None = open(self._dir + "/0", "wb")  # noqa: SIM115

    def write(self, data: bytes | memoryview) -> None:
        assert self._out is not None, "write after finish or abort"
        self._out.write(data)

    def finish(self) -> None:
        assert self._out is not None, "finish after finish or abort"
        try:
            self._out.flush()
            os.fdatasync(self._out.fileno())
        finally:
            self._out.close()
            self._out = None
        _fsync_dir(self._dir)

    def abort(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except OSError:
                pass
            self._out = None
        remove_tree(self._dir)


class LocalDir:
    """Parts and blobs under a store directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._prefix = f"{root}/"

    def open(self) -> None:
        for sub in ("blobs", "parts", "parts/tmp"):
            (self.root / sub).mkdir(exist_ok=True)

    def _part(self, up: UploadKey, part: int) -> str:
        return f"{self._prefix}{upload_relpath(up.user_id, up.file_id)}/{part}"

    def _source(self, source: UploadKey | str) -> str:
        if isinstance(source, UploadKey):
            return self._prefix + upload_relpath(source.user_id, source.file_id)
        return self._prefix + source

    # --- parts ----------------------------------------------------------------------------

    def stage_part(self, data: bytes, *, sync: bool) -> str:
        key = f"parts/tmp/p{secrets.token_hex(8)}"
        with open(self._prefix + key, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fdatasync(f.fileno())
        return key

    def place_part(self, staged: str, up: UploadKey, part: int) -> PartStamp:
        updir = self._prefix + upload_relpath(up.user_id, up.file_id)
        os.makedirs(updir, exist_ok=True)
        dest = f"{updir}/{part}"
        os.rename(self._prefix + staged, dest)
        st = os.stat(dest)
        return PartStamp(st.st_ino, st.st_size, st.st_mtime_ns)

    def drop_staged(self, staged: str) -> None:
        remove_tree(self._prefix + staged)

    def part_stamp(self, up: UploadKey, part: int) -> PartStamp | None:
        try:
            st = os.stat(self._part(up, part))
        except FileNotFoundError:
            return None
        return PartStamp(st.st_ino, st.st_size, st.st_mtime_ns)

    def read_part(self, up: UploadKey, part: int) -> bytes | None:
        try:
            with open(self._part(up, part), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def read_part_into(self, up: UploadKey, part: int, buf: memoryview) -> int | None:
        try:
            fd = os.open(self._part(up, part), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            n = 0
            while n < len(buf):
                got = os.readv(fd, [buf[n:]])
                if not got:
                    break
                n += got
            return n
        finally:
            os.close(fd)

    def part_head(self, up: UploadKey, size: int) -> bytes:
        with open(self._part(up, 0), "rb") as f:
            return f.read(size)

    def sync_parts(self, up: UploadKey, count: int) -> None:
        for i in range(count):
            fd = os.open(self._part(up, i), os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def delete_part(self, up: UploadKey, part: int) -> None:
        try:
            os.unlink(self._part(up, part))
        except FileNotFoundError:
            pass

    def delete_upload(self, up: UploadKey) -> None:
        try:
            os.rmdir(self._source(up))
        except OSError:
            pass

    def trash_upload(self, up: UploadKey) -> str | None:
        trash = f"parts/tmp/t{secrets.token_hex(8)}"
        try:
            os.rename(self._source(up), self._prefix + trash)
        except OSError:
            return None
        return trash

    # --- blobs ----------------------------------------------------------------------------

    def start_blob(self) -> _FileBlobWriter:
        return _FileBlobWriter(self._prefix, f"parts/tmp/b{secrets.token_hex(8)}")

    def staged_head(self, staged: str, size: int) -> bytes:
        with open(f"{self._prefix}{staged}/0", "rb") as f:
            return f.read(size)

    def promote(self, source: UploadKey | str, sha256: str) -> str:
        rel = blob_relpath(sha256, secrets.token_hex(6))
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self._source(source)
        os.rename(src, dest)
        try:
            _fsync_dir(dest)
            _fsync_dir(dest.parent)
        except BaseException:
            os.rename(dest, src)
            raise
        return rel

    def demote(self, key: str, source: UploadKey | str) -> None:
        os.rename(self._prefix + key, self._source(source))

    def read_range(self, key: str, chunk_size: int, offset: int, length: int) -> bytes:
        # The chunks are read into one reused per-thread buffer and copied out once:
        # allocating fresh ``pread`` results and joining them costs several times more
        # (page faults).
        buf: bytearray | None = getattr(_read_buffers, "buf", None)
        if buf is None or len(buf) < length:
            buf = _read_buffers.buf = bytearray(max(length, WINDOW))
        mv = memoryview(buf)
        prefix = f"{self._prefix}{key}/"
        pos = offset
        end = offset + length
        filled = 0
        while pos < end:
            idx, within = divmod(pos, chunk_size)
            want = min(chunk_size - within, end - pos)
            fd = os.open(prefix + str(idx), os.O_RDONLY)
            try:
                got = os.preadv(fd, [mv[filled : filled + want]], within)
            finally:
                os.close(fd)
            filled += got
            pos += got
            if got < want:
                break
        return bytes(mv[:filled])

    def prefetch(self, key: str, chunk_size: int, offset: int, length: int) -> None:
        prefix = f"{self._prefix}{key}/"
        pos, end = offset, offset + length
        while pos < end:
            idx, within = divmod(pos, chunk_size)
            want = min(chunk_size - within, end - pos)
            try:
                fd = os.open(prefix + str(idx), os.O_RDONLY)
            except OSError:
                return
            try:
                os.posix_fadvise(fd, within, want, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
            pos += want

    def local_files(self, key: str, count: int) -> list[Path]:
        return [self.root / key / str(i) for i in range(count)]

    # --- deletion and listing -------------------------------------------------------------

    def entry_count(self, key: str) -> int | None:
        try:
            return len(os.listdir(self._prefix + key))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return 1

    def delete(self, key: str) -> None:
        remove_tree(self._prefix + key)

    def part_size(self, up: UploadKey, part: int) -> int | None:
        try:
            return os.stat(self._part(up, part)).st_size
        except OSError:
            return None

    def disk_space(self) -> DiskSpace | None:
        try:
            st = os.statvfs(self.root)
        except OSError:
            return None
        return DiskSpace(free=st.f_bavail * st.f_frsize, total=st.f_blocks * st.f_frsize)

    def sweep_orphans(self, blob_keys: set[str], parts: dict[UploadKey, set[int]]) -> list[str]:
        part_files = {upload_relpath(up.user_id, up.file_id): {str(p) for p in nums}
                      for up, nums in parts.items()}
        return sweep_files(self.root, blob_keys, part_files)
