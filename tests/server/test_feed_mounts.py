"""Two mounts of one server (``fsmount serve`` subprocesses on loopback) kept coherent by
the change feed (docs/SEMANTICS.md, "Caches and the change feed").

Mount B holds what it shows in caches the kernel may keep for 300 s while the feed is
healthy; each test first makes B cache the state (stat, listing, read), then changes it
through mount A, and polls B until it shows the change (deadline 5 s, far below 300 s: so
the feed invalidated it).  The delays are printed (``-s``) as the measured propagation.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fsmount import mount as mount_mod

from .conftest import free_port, run
from .harness import start_serve

DEADLINE = 30.0
#: How long a change may take to show on the other mount before the test fails.
VISIBLE_WITHIN = 5.0
FOLLOWING = "change feed: following"
FELL_BACK = "trusting attributes and entries for 1 s only"


def wait_until(cond: Callable[[], bool], what: str, timeout: float = DEADLINE) -> float:
    """Poll ``cond`` until true; return the seconds it took.  Fails after ``timeout``."""
    start = time.monotonic()
    delay = 0.002
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return time.monotonic() - start


@dataclass
class Server:
    store: Path
    port: int
    token_file: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> None:
        self.proc, _ = start_serve(self.store, self.port, *extra)

    def kill(self) -> None:
        """SIGKILL: the server dies without closing anything (its sockets reset)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=DEADLINE)
        self.proc = None


@contextlib.contextmanager
def server(tmp_path: Path, *extra: str) -> Iterator[Server]:
    store = tmp_path / "store"
    assert run("init", "--store", str(store)).returncode == 0
    token = run("token", "add", "--store", str(store), "alice").stdout.strip()
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    srv = Server(store, free_port(), token_file)
    srv.start(*extra)
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Mount:
    mnt: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def offset(self) -> int:
        return self.log.stat().st_size

    def calls_since(self, offset: int) -> list[str]:
        return re.findall(r"remote call: (\w+)", self.log.read_bytes()[offset:].decode(
            errors="replace"))


@contextlib.contextmanager
def mounted(srv: Server, mnt: Path, *, wait_feed: bool = True) -> Iterator[Mount]:
    """``fsmount mount -f --server`` at ``mnt`` (DEBUG log: remote calls are logged), up
    and (``wait_feed``) following the feed; always unmounted and reaped after."""
    mnt.mkdir()
    log = mnt.parent / f"{mnt.name}.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fsmount", "--log-level", "DEBUG", "mount", "-f",
             "--server", srv.url, "--token-file", str(srv.token_file), str(mnt)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    m = Mount(mnt, log, proc)
    try:
        wait_until(lambda: mount_mod.is_mounted(str(mnt)) or proc.poll() is not None,
                   f"the mount at {mnt}")
        assert proc.poll() is None, m.text()
        if wait_feed:
            wait_until(lambda: FOLLOWING in m.text(), "the mount to follow the feed")
        yield m
    finally:
        if mount_mod.is_mounted(str(mnt)):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False,
                           timeout=DEADLINE)
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=DEADLINE)
        if mount_mod.is_mounted(str(mnt)):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, check=False,
                           timeout=DEADLINE)


def _exists(p: Path) -> bool:
    return os.path.lexists(p)


def _mode(p: Path) -> int | None:
    try:
        return os.stat(p).st_mode & 0o7777
    except FileNotFoundError:
        return None


def _content(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except FileNotFoundError:
        return None


@pytest.mark.fuse
def test_two_mounts_see_each_others_changes_through_the_feed(tmp_path: Path) -> None:
    with server(tmp_path) as srv, mounted(srv, tmp_path / "a") as a, \
            mounted(srv, tmp_path / "b") as b:
        delays: dict[str, float] = {}
        # B caches the (empty) listing of the root; a create must still show at once.
        assert os.listdir(b.mnt) == []
        (a.mnt / "f").write_bytes(b"one " * 1000)
        delays["create"] = wait_until(lambda: _exists(b.mnt / "f"), "the create on B",
                                      VISIBLE_WITHIN)
        assert os.listdir(b.mnt) == ["f"]
        # Replace: B has the old pages in the kernel's cache, and the same size comes back.
        assert (b.mnt / "f").read_bytes() == b"one " * 1000
        with open(a.mnt / "f", "r+b") as fh:
            fh.write(b"two " * 1000)
        delays["replace"] = wait_until(lambda: _content(b.mnt / "f") == b"two " * 1000,
                                       "the new content on B", VISIBLE_WITHIN)
        # chmod: B has the attributes cached (for 300 s while the feed is healthy).
        assert _mode(b.mnt / "f") == 0o644
        os.chmod(a.mnt / "f", 0o600)
        delays["chmod"] = wait_until(lambda: _mode(b.mnt / "f") == 0o600, "the chmod on B",
                                     VISIBLE_WITHIN)
        # Rename: B has the old entry cached.
        assert _exists(b.mnt / "f")
        os.rename(a.mnt / "f", a.mnt / "g")
        delays["rename"] = wait_until(
            lambda: not _exists(b.mnt / "f") and _content(b.mnt / "g") == b"two " * 1000,
            "the rename on B", VISIBLE_WITHIN)
        # Replaced by a rename over it (a new node under the name, as rsync and editors do):
        # B's kernel has the name bound to the old node.
        assert _content(b.mnt / "g") == b"two " * 1000
        (a.mnt / "tmp").write_bytes(b"three " * 500)
        os.replace(a.mnt / "tmp", a.mnt / "g")
        delays["rename over"] = wait_until(
            lambda: _content(b.mnt / "g") == b"three " * 500 and not _exists(b.mnt / "tmp"),
            "the replacing rename on B", VISIBLE_WITHIN)
        # A folder made and filled on A.
        assert sorted(os.listdir(b.mnt)) == ["g"]
        os.mkdir(a.mnt / "d")
        (a.mnt / "d" / "x").write_bytes(b"x")
        delays["mkdir"] = wait_until(lambda: _content(b.mnt / "d" / "x") == b"x",
                                     "the folder on B", VISIBLE_WITHIN)
        # Delete.
        os.unlink(a.mnt / "g")
        delays["delete"] = wait_until(lambda: not _exists(b.mnt / "g"), "the delete on B",
                                      VISIBLE_WITHIN)
        assert sorted(os.listdir(b.mnt)) == ["d"]
        # And the other way round: B's change shows on A.
        (b.mnt / "d" / "y").write_bytes(b"from b")
        delays["create B->A"] = wait_until(lambda: _content(a.mnt / "d" / "y") == b"from b",
                                           "B's file on A", VISIBLE_WITHIN)
        print("change feed propagation, seconds:",
              {k: round(v, 3) for k, v in delays.items()})
        assert FELL_BACK not in a.text() + b.text()


def _ctime(p: Path) -> int:
    return os.stat(p).st_ctime_ns


def _xattr(p: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(p, name)
    except OSError:
        return None


@pytest.mark.fuse
def test_an_xattr_change_shows_its_ctime_on_the_other_mount(tmp_path: Path) -> None:
    with server(tmp_path) as srv, mounted(srv, tmp_path / "a") as a, \
            mounted(srv, tmp_path / "b") as b:
        (a.mnt / "f").write_bytes(b"tagged")
        wait_until(lambda: _content(b.mnt / "f") == b"tagged", "the file on B")
        before = _ctime(b.mnt / "f")  # B caches the attributes (300 s while following)
        os.setxattr(a.mnt / "f", "user.tag", b"red")
        set_ctime = _ctime(a.mnt / "f")
        assert set_ctime > before
        delay = wait_until(lambda: _ctime(b.mnt / "f") == set_ctime, "the setxattr's ctime on B",
                           VISIBLE_WITHIN)
        assert _xattr(b.mnt / "f", "user.tag") == b"red"
        os.removexattr(a.mnt / "f", "user.tag")
        removed_ctime = _ctime(a.mnt / "f")
        assert removed_ctime > set_ctime
        delay = max(delay, wait_until(lambda: _ctime(b.mnt / "f") == removed_ctime,
                                      "the removexattr's ctime on B", VISIBLE_WITHIN))
        assert _xattr(b.mnt / "f", "user.tag") is None
        print(f"xattr ctime propagation: {delay:.3f} s")
        assert FELL_BACK not in a.text() + b.text()


@pytest.mark.fuse
def test_a_warm_tree_walk_makes_no_remote_call(tmp_path: Path) -> None:
    with server(tmp_path) as srv, mounted(srv, tmp_path / "a") as a, \
            mounted(srv, tmp_path / "b") as b:
        for d in range(3):
            (a.mnt / f"d{d}" / "sub").mkdir(parents=True)
            for f in range(5):
                (a.mnt / f"d{d}" / f"f{f}").write_bytes(b"%d" % f)
                (a.mnt / f"d{d}" / "sub" / f"s{f}").write_bytes(b"s")
        wait_until(lambda: _exists(b.mnt / "d2" / "sub" / "s4"), "the tree on B")
        paths = [str(p) for p in sorted(b.mnt.rglob("*"))]
        assert len(paths) == 3 * (2 + 5 + 5)  # d, d/sub, 5 files in each

        def walk() -> None:
            for cmd in (["ls", "-lR", str(b.mnt)], ["find", str(b.mnt)],
                        ["stat", *paths]):
                res = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
                assert res.returncode == 0, res.stderr

        walk()  # cold: fills the caches
        start = b.offset()
        walk()
        walk()
        # find asks for the filesystem's usage (statfs, one per run): not namespace state,
        # and not cached here.
        calls = [c for c in b.calls_since(start) if c != "statfs"]
        assert calls == [], calls
        # Also on the mount that wrote the tree.
        walk_a = [["ls", "-lR", str(a.mnt)], ["find", str(a.mnt)]]
        for cmd in walk_a:
            subprocess.run(cmd, capture_output=True, timeout=60, check=True)
        start = a.offset()
        for cmd in walk_a:
            subprocess.run(cmd, capture_output=True, timeout=60, check=True)
        assert [c for c in a.calls_since(start) if c != "statfs"] == []


@pytest.mark.fuse
def test_mounts_stay_coherent_when_the_server_is_killed_and_restarted(tmp_path: Path) -> None:
    with server(tmp_path) as srv, mounted(srv, tmp_path / "a") as a, \
            mounted(srv, tmp_path / "b") as b:
        (a.mnt / "f").write_bytes(b"before")
        wait_until(lambda: _content(b.mnt / "f") == b"before", "the file on B")
        assert _mode(b.mnt / "f") == 0o644  # cached by B's kernel with a long timeout
        srv.kill()
        # The feed's connection broke: both mounts fall back and say so, once.
        for m in (a, b):
            wait_until(lambda m=m: FELL_BACK in m.text(), "the fallback line")  # type: ignore[misc]
        srv.start()
        for m in (a, b):
            wait_until(lambda m=m: "following the server's feed again" in m.text(),  # type: ignore[misc]
                       "the feed back")
        os.chmod(a.mnt / "f", 0o600)
        (a.mnt / "f2").write_bytes(b"after")
        wait_until(lambda: _mode(b.mnt / "f") == 0o600 and _content(b.mnt / "f2") == b"after",
                   "the changes after the restart on B", VISIBLE_WITHIN)
        assert b.text().count(FELL_BACK) == 1, b.text()


@pytest.mark.fuse
def test_a_server_without_the_feed_gets_short_timeouts(tmp_path: Path) -> None:
    with server(tmp_path, "--no-change-feed") as srv, \
            mounted(srv, tmp_path / "a", wait_feed=False) as a, \
            mounted(srv, tmp_path / "b", wait_feed=False) as b:
        for m in (a, b):
            wait_until(lambda m=m: "the server has no change feed" in m.text(),  # type: ignore[misc]
                       "the fallback line")
        (a.mnt / "f").write_bytes(b"one")
        wait_until(lambda: _content(b.mnt / "f") == b"one", "the file on B")
        assert _mode(b.mnt / "f") == 0o644
        os.chmod(a.mnt / "f", 0o600)
        # Without the feed B trusts its cached attributes for 1 s only (today's timeouts).
        wait_until(lambda: _mode(b.mnt / "f") == 0o600, "the chmod on B", VISIBLE_WITHIN)
        start = b.offset()
        os.stat(b.mnt / "f")
        wait_until(lambda: (os.stat(b.mnt / "f"), "getattr" in b.calls_since(start))[1],
                   "a getattr once the 1 s attribute timeout passed", VISIBLE_WITHIN)
        assert FOLLOWING not in b.text()
