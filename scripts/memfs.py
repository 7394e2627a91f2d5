#!/usr/bin/env python3
"""A minimal in-memory pyfuse3 filesystem: the read ceiling of a Python FUSE filesystem on
this machine, for scripts/bench_read.py.

It serves one read-only file, ``data``, whose bytes are a local file's, loaded into memory,
with the same kernel settings as ``fsmount mount`` (1 MiB ``read_ahead_kb``, 1 MiB
``st_blksize``, ``keep_cache`` on reopen).  Every read is a slice of one ``bytes`` object,
so whatever it costs is the price of pyfuse3 and the kernel, not of a store.

Usage: ``python scripts/memfs.py SOURCE MOUNTPOINT`` (foreground; SIGINT/SIGTERM or
``fusermount3 -u`` to stop).  Prints ``ready`` on stdout once mounted.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
import time

import pyfuse3
import trio

FILE_INODE = pyfuse3.ROOT_INODE + 1
NAME = b"data"


class MemFS(pyfuse3.Operations):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data
        self.view = memoryview(data)
        self.now = time.time_ns()

    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        a.entry_timeout = a.attr_timeout = 1.0
        if inode == pyfuse3.ROOT_INODE:
            a.st_mode = stat.S_IFDIR | 0o755
            a.st_nlink = 2
        else:
            a.st_mode = stat.S_IFREG | 0o444
            a.st_nlink = 1
            a.st_size = len(self.data)
        a.st_uid, a.st_gid = os.getuid(), os.getgid()
        a.st_blksize = 1 << 20
        a.st_blocks = -(-a.st_size // 512)
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.now
        return a

    async def getattr(self, inode, ctx=None):  # type: ignore[no-untyped-def]
        if inode not in (pyfuse3.ROOT_INODE, FILE_INODE):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(inode)

    async def lookup(self, parent_inode, name, ctx=None):  # type: ignore[no-untyped-def]
        if parent_inode != pyfuse3.ROOT_INODE or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(FILE_INODE)

    async def opendir(self, inode, ctx):  # type: ignore[no-untyped-def]
        return inode

    async def readdir(self, fh, start_id, token):  # type: ignore[no-untyped-def]
        if start_id == 0:
            pyfuse3.readdir_reply(token, NAME, self._attrs(FILE_INODE), 1)

    async def open(self, inode, flags, ctx):  # type: ignore[no-untyped-def]
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh, off, size):  # type: ignore[no-untyped-def]
        return self.view[off : off + size]


def _tune(mountpoint: str) -> None:
    path = os.path.abspath(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        devs = [line.split()[2] for line in f if line.split()[4] == path]
    if devs:
        try:
            with open(f"/sys/class/bdi/{devs[-1]}/read_ahead_kb", "w", encoding="ascii") as f:
                f.write("1024")
        except OSError:
            pass


async def _main(mountpoint: str) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async def stop() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            async def up() -> None:
                await trio.to_thread.run_sync(os.stat, mountpoint)
                _tune(mountpoint)
                print("ready", flush=True)

            nursery.start_soon(stop)
            nursery.start_soon(up)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source, mountpoint = sys.argv[1:]
    with open(source, "rb") as f:
        data = f.read()
    pyfuse3.init(MemFS(data), mountpoint, {"fsname=memfs", "subtype=memfs", "noatime"})
    try:
        trio.run(_main, mountpoint)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
