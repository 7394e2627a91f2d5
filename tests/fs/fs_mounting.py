"""Helpers that mount the real filesystem through /dev/fuse in a subprocess (imported by
tests/fs/conftest.py and by the tests: ``from fs_mounting import mount_store, populate``).

* :func:`mount_store` (a context manager, usable from any test or fixture) runs
  ``python -m fsmount mount -f --store DIR [OPTIONS] MOUNTPOINT``, waits (bounded) until the
  mount answers, and in every case unmounts and reaps the process afterwards.
* :func:`populate` fills a store directly through the store API (``EmbeddedRemote``), not
  through a mount: ``{"dir/name": bytes | list[bytes] (segments) | Symlink(target)}``.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from fsmount import mount as mount_mod
from fsmount.embedded import EmbeddedRemote
from fsmount.remote import ROOT_ID, FileLocation, Remote
from fsmount.upload import upload_file

#: Bound on waiting for a mount to come up or a process to exit.
DEADLINE = 30.0


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass
class MountProc:
    """A running foreground mount."""

    mnt: Path
    store: Path
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def unmount(self) -> None:
        """Unmount (fusermount3 -u, lazily if busy) and reap the process; idempotent."""
        if mount_mod.is_mounted(str(self.mnt)):
            res = subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True,
                                 check=False, timeout=DEADLINE)
            if res.returncode != 0:
                subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True,
                               check=False, timeout=DEADLINE)
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=DEADLINE)
        if mount_mod.is_mounted(str(self.mnt)):
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True,
                           check=False, timeout=DEADLINE)
        server = self.extra.get("server")
        if isinstance(server, contextlib.ExitStack):
            server.close()  # the server (backend "server") stops after the mount


def wait_until(cond: object, what: str, timeout: float = DEADLINE) -> None:
    """Poll ``cond()`` until true, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


#: The backends every mount test runs against (tests/fs/conftest.py parametrizes over them):
#: ``embedded`` mounts ``--store DIR``; ``server`` starts ``fsmount serve`` on 127.0.0.1 over the
#: same store directory and mounts ``--server URL --token-file F``.  FSMOUNT_TEST_BACKENDS
#: (comma-separated) narrows the list, e.g. for a quick local run.
BACKENDS = [
    b for b in os.environ.get("FSMOUNT_TEST_BACKENDS", "embedded,server").split(",") if b
]
#: The backend of the test now running; set by the ``fs_backend`` fixture.
BACKEND = BACKENDS[0] if BACKENDS else "embedded"


def start_mount(store: Path, mnt: Path, *options: str) -> MountProc:
    """Start a foreground mount and wait until it answers.  Caller must ``unmount()``."""
    mnt.mkdir(parents=True, exist_ok=True)
    log = mnt.parent / f"{mnt.name}.log"
    server = contextlib.ExitStack()
    if BACKEND == "server":
        from server.harness import serve_subprocess

        store.mkdir(parents=True, exist_ok=True)
        url, token_file = server.enter_context(serve_subprocess(store))
        remote_args = ["--server", url, "--token-file", str(token_file)]
    else:
        remote_args = ["--store", str(store)]
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fsmount", "--log-level", "INFO", "mount", "-f",
             *remote_args, *options, str(mnt)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
        )
    mp = MountProc(mnt, store, proc, log, {"server": server})
    try:
        wait_until(lambda: mount_mod.is_mounted(str(mnt)) or proc.poll() is not None,
                   f"mount at {mnt}")
        if proc.poll() is not None:
            raise AssertionError(f"mount exited with {proc.returncode}: {mp.log_text()}")
        os.stat(mnt)  # answered once the FUSE loop runs
    except BaseException:
        mp.unmount()
        raise
    return mp


@contextlib.contextmanager
def mount_store(store: Path, mnt: Path, *options: str) -> Iterator[MountProc]:
    """Mount ``store`` at ``mnt`` for the duration of the block (always unmounted after)."""
    mp = start_mount(store, mnt, *options)
    try:
        yield mp
    finally:
        mp.unmount()


Content = bytes | list[bytes] | Symlink


async def _ensure_dirs(remote: Remote, parts: list[str], cache: dict[str, int]) -> int:
    parent = ROOT_ID
    for i, name in enumerate(parts):
        key = "/".join(parts[: i + 1])
        if key not in cache:
            try:
                cache[key] = (await remote.mkdir(parent, name)).id
            except Exception:
                cache[key] = (await remote.lookup(parent, name)).id
        parent = cache[key]
    return parent


async def populate_remote(remote: Remote, files: Mapping[str, Content]) -> None:
    dirs: dict[str, int] = {}
    uploaded: dict[bytes, tuple[FileLocation, ...]] = {}  # same bytes, same document
    for path, content in files.items():
        parts = [p for p in path.split("/") if p]
        parent = await _ensure_dirs(remote, parts[:-1], dirs)
        name = parts[-1]
        if isinstance(content, Symlink):
            await remote.symlink(parent, name, content.target)
            continue
        if content == b"/":
            await _ensure_dirs(remote, parts, dirs)
            continue
        segments = content if isinstance(content, list) else [content]
        locs: list[FileLocation] = []
        for seg in segments:
            if seg:
                if seg not in uploaded:
                    docs = await upload_file(remote, io.BytesIO(seg), name)
                    uploaded[seg] = tuple(d.location for d in docs)
                locs.extend(uploaded[seg])
        await remote.create_file(parent, name, tuple(locs), replace=True)


def populate(store: Path, files: Mapping[str, Content]) -> None:
    """Write files into a store through the store API (not through a mount)."""

    async def main() -> None:
        remote = EmbeddedRemote.open(store)
        try:
            await populate_remote(remote, files)
        finally:
            await remote.aclose()

    trio.run(main)


