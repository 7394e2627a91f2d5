"""``fsmount mount --write-back`` through the real mount, over the embedded store and over
``--server``: pending changes are seen at once, ``sync`` / ``status`` / ``pause`` and the
``user.fsmount.state`` attribute, ``fsync`` waits for the store, unmount drains (and
``--no-wait`` leaves the journal for the next mount), a file written then deleted before
upload is never sent (remote calls counted from the DEBUG log), a conflict with another
client keeps both versions, and SIGKILL of the mount at random moments loses nothing whose
close returned and shows nothing half written."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import fs_mounting
import trio
from fs_mounting import MountProc, mount_store, start_mount

from fsmount.embedded import EmbeddedRemote
from fsmount.remote import ROOT_ID
from fsmount.upload import upload_file

#: A whole-second mtime (exact through every layer).
MTIME_NS = 1_200_000_000 * 10**9


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsmount", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def _ok(*args: str) -> str:
    res = _cli(*args)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _status(mnt: Path) -> dict[str, object]:
    status = json.loads(_ok("status", "--json", str(mnt)))
    assert isinstance(status, dict)
    return status


def _state(path: Path) -> str:
    return os.getxattr(path, "user.fsmount.state").decode()


def _wb(tmp_path: Path, *extra: str) -> tuple[str, ...]:
    return ("--write-back", "--cache-dir", str(tmp_path / "cache"), *extra)


def test_pending_changes_are_seen_at_once_and_sync_stores_them(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    data = os.urandom(3 * (1 << 20) + 123)
    with mount_store(store, mnt, *_wb(tmp_path)):
        _ok("pause", str(mnt))
        (mnt / "d").mkdir()
        (mnt / "d" / "a").write_bytes(data)
        (mnt / "d" / "b").write_bytes(b"small")
        with open(mnt / "d" / "b", "ab") as f:  # old content from the journal
            f.write(b"+more")
        os.rename(mnt / "d" / "a", mnt / "d" / "a2")
        os.chmod(mnt / "d" / "b", 0o600)
        os.utime(mnt / "d" / "b", ns=(MTIME_NS, MTIME_NS))
        with open(mnt / "d" / "c", "wb") as f:  # tar's fchmod before close
            f.write(b"cc")
            os.fchmod(f.fileno(), 0o640)
            assert os.fstat(f.fileno()).st_mode & 0o777 == 0o640
        assert os.stat(mnt / "d" / "c").st_mode & 0o777 == 0o640
        assert (mnt / "d" / "a2").read_bytes() == data
        assert (mnt / "d" / "b").read_bytes() == b"small+more"
        assert sorted(os.listdir(mnt / "d")) == ["a2", "b", "c"]
        st = os.stat(mnt / "d" / "b")
        assert (st.st_size, st.st_mode & 0o777, st.st_mtime_ns) == (10, 0o600, MTIME_NS)
        assert _state(mnt / "d" / "a2") == "pending"
        status = _status(mnt)
        assert (status["files"], status["bytes"], status["paused"]) == (3, len(data) + 12, True)
        assert "pending: 3 files" in _ok("status", str(mnt))
        _ok("resume", str(mnt))
        _ok("sync", str(mnt))
        assert _state(mnt / "d" / "a2") == _state(mnt / "d" / "b") == "stored"
        assert _status(mnt)["files"] == 0
        assert (mnt / "d" / "a2").read_bytes() == data
    with mount_store(store, mnt):  # a fresh mount, no write-back: the store has it all
        assert (mnt / "d" / "a2").read_bytes() == data
        assert (mnt / "d" / "b").read_bytes() == b"small+more"
        st = os.stat(mnt / "d" / "b")
        assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o600, MTIME_NS)
        assert os.stat(mnt / "d" / "c").st_mode & 0o777 == 0o640


def _calls(mp: MountProc, start: int) -> collections.Counter[str]:
    text = mp.log.read_bytes()[start:].decode(errors="replace")
    return collections.Counter(re.findall(r"remote call: (\w+)", text))


def test_written_then_deleted_before_upload_is_never_sent(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mount_store(store, mnt, *_wb(tmp_path, "--log-level", "DEBUG")) as mp:
        _ok("pause", str(mnt))
        start = mp.log.stat().st_size
        (mnt / "gone").write_bytes(os.urandom(5000))
        os.unlink(mnt / "gone")
        for i in range(3):  # written three times: only the last content is sent
            (mnt / "kept").write_bytes(b"v%d" % i * 1000)
        (mnt / "old").write_bytes(b"replaced before upload")
        (mnt / "new").write_bytes(b"the new content")
        os.rename(mnt / "new", mnt / "old")
        _ok("resume", str(mnt))
        _ok("sync", str(mnt))
        calls = _calls(mp, start)
        assert calls["save_file_part"] == 2, calls
        assert calls["upload_media"] == 2, calls
        assert calls["set_content"] == 2, calls
    with mount_store(store, mnt):
        assert sorted(os.listdir(mnt)) == ["kept", "old"]
        assert (mnt / "kept").read_bytes() == b"v2" * 1000
        assert (mnt / "old").read_bytes() == b"the new content"


def test_pending_files_ctime_moves_with_each_change_and_never_back(tmp_path: Path) -> None:
    """POSIX (pjdfstest truncate/00.t): truncate, chmod, utimes and writes move the ctime,
    also of a file whose content waits in the journal (uploads paused), and the ctime the
    store gives it when it is uploaded is not older than what was shown."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mount_store(store, mnt, *_wb(tmp_path)):
        _ok("pause", str(mnt))
        f = mnt / "f"
        f.write_bytes(b"")
        seen = [os.stat(f).st_ctime_ns]

        def moved(what: str) -> None:
            now = os.stat(f).st_ctime_ns
            assert now > seen[-1], f"{what}: ctime {now} not after {seen[-1]}"
            seen.append(now)

        os.truncate(f, 123)
        moved("truncate")
        os.chmod(f, 0o600)
        moved("chmod")
        os.utime(f, ns=(MTIME_NS, MTIME_NS))
        moved("utimes")
        with open(f, "r+b") as fh:
            fh.write(b"x")
            fh.flush()
            moved("write")
        assert os.stat(f).st_ctime_ns >= seen[-1], "the close took the ctime back"
        assert _state(f) == "pending"
        _ok("resume", str(mnt))
        _ok("sync", str(mnt))
        assert _state(f) == "stored"
        st = os.stat(f)
        assert st.st_ctime_ns >= seen[-1] and st.st_size == 123
        assert st.st_mode & 0o777 == 0o600


def test_fsync_waits_until_the_file_is_in_the_store(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mount_store(store, mnt, *_wb(tmp_path)):
        _ok("pause", str(mnt))
        with open(mnt / "f", "wb") as f:
            f.write(b"durable" * 1000)
            f.flush()
            done = threading.Event()

            def sync() -> None:
                os.fsync(f.fileno())
                done.set()

            t = threading.Thread(target=sync)
            t.start()
            try:
                # Paused: the file cannot reach the store, so fsync must not return.
                assert not done.wait(1.0)
                assert _state(mnt / "f") == "pending"
            finally:
                _ok("resume", str(mnt))
                t.join(30)
            assert done.is_set()
            assert _state(mnt / "f") == "stored"


def test_unmount_drains_and_no_wait_leaves_the_journal(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mount_store(store, mnt, *_wb(tmp_path)) as mp:
        _ok("pause", str(mnt))
        (mnt / "a").write_bytes(b"drained at unmount")
        _ok("unmount", str(mnt))  # resumes and waits for the upload
        assert mp.proc.wait(30) == 0
    with mount_store(store, mnt, *_wb(tmp_path)) as mp:
        assert (mnt / "a").read_bytes() == b"drained at unmount"
        _ok("pause", str(mnt))
        (mnt / "b").write_bytes(b"left in the journal")
        _ok("unmount", "--no-wait", str(mnt))
        assert mp.proc.wait(30) == 0
    with mount_store(store, mnt):
        assert os.stat(mnt / "b").st_size == 0  # created in the store, content not sent
    with mount_store(store, mnt, *_wb(tmp_path)):
        _ok("sync", str(mnt))  # the next write-back mount sends it
        assert (mnt / "b").read_bytes() == b"left in the journal"


def test_conflict_with_another_client_keeps_both_versions(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    fs_mounting.populate(store, {"doc.txt": b"original"})
    with mount_store(store, mnt, *_wb(tmp_path)) as mp:
        _ok("pause", str(mnt))
        (mnt / "doc.txt").write_bytes(b"this mount's version")
        _ok("unmount", "--no-wait", str(mnt))
        assert mp.proc.wait(30) == 0

    async def other_client() -> None:  # changes the file while the journal waits
        remote = EmbeddedRemote.open(store)
        try:
            node = await remote.lookup(ROOT_ID, "doc.txt")
            docs = await upload_file(remote, store.parent / "theirs.txt", "doc.txt")
            await remote.set_content(node.id, tuple(d.location for d in docs))
        finally:
            await remote.aclose()

    (tmp_path / "theirs.txt").write_bytes(b"the other client's version")
    trio.run(other_client)
    with mount_store(store, mnt, *_wb(tmp_path)) as mp:
        _ok("sync", str(mnt))
        status = _status(mnt)
        conflicts = status["conflicts"]
        assert isinstance(conflicts, list) and len(conflicts) == 1
        assert (mnt / "doc.txt").read_bytes() == b"the other client's version"
        assert (mnt / str(conflicts[0])).read_bytes() == b"this mount's version"
        assert str(conflicts[0]).startswith("doc.txt.conflict-")
        assert "write-back conflict: doc.txt was changed" in mp.log_text()


# --- crash safety -----------------------------------------------------------------------

#: SIGKILLs of the mount across the test (each at a random moment of a running workload).
KILLS = 20
#: Each kill comes this long (at random, seconds) after the mount answered.
KILL_AFTER = (0.0, 0.7)

Content = bytes | None  # None: the name does not exist


class _Workload:
    """Creates, overwrites, renames and deletes files in ``root`` until the mount dies,
    keeping for every name the contents it may have in the store: exactly the last one
    whose operation returned, plus, for the operation in flight when the mount died, what
    it would have made."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.want: dict[str, set[Content]] = {}
        self.seq = 0
        #: Names whose delete was in flight at a kill, with the content they had.
        self.unlink_in_flight: dict[str, bytes] = {}
        #: Every content a file had when it was unlinked: a kill after an unlink returned
        #: but before the journal's record of it reached the disk leaves that content as a
        #: conflict copy at the next mount (docs/SEMANTICS.md, "Write-back": an extra file,
        #: never a lost or altered one).
        self.unlinked: dict[str, set[bytes]] = {}

    def _known(self) -> list[str]:
        return [n for n, w in self.want.items() if len(w) == 1 and None not in w]

    def run(self, budget: int) -> None:
        for _ in range(budget):  # bounded; the kill ends it much earlier
            self.seq += 1
            known = self._known()
            op = self.rng.random()
            try:
                if op < 0.5 or len(known) < 3:
                    name = f"f{self.seq}"
                    data = os.urandom(self.rng.choice([0, 1, 100, 5000, 70_000, 1_300_000]))
                    # In flight: absent, created empty, or complete; never partial.
                    self.want[name] = {None, b"", data}
                    (self.root / name).write_bytes(data)
                    self.want[name] = {data}
                elif op < 0.7:
                    name = self.rng.choice(known)
                    (old,) = self.want[name]
                    data = os.urandom(self.rng.choice([10, 3000, 200_000]))
                    self.want[name] = {old, data}
                    (self.root / name).write_bytes(data)
                    self.want[name] = {data}
                elif op < 0.85:
                    name = self.rng.choice(known)
                    (old,) = self.want[name]
                    new = f"r{self.seq}"
                    self.want[name] = {old, None}
                    self.want[new] = {None, old}
                    os.rename(self.root / name, self.root / new)
                    self.want[name] = {None}
                    self.want[new] = {old}
                else:
                    name = self.rng.choice(known)
                    (old,) = self.want[name]
                    self.want[name] = {old, None}
                    self.unlink_in_flight[name] = old
                    self.unlinked.setdefault(name, set()).add(old)
                    os.unlink(self.root / name)
                    del self.unlink_in_flight[name]
                    self.want[name] = {None}
            except OSError:
                return  # the mount is gone


def _digest(c: Content) -> str:
    return "absent" if c is None else hashlib.sha256(c).hexdigest()[:12]


def test_sigkill_at_random_moments_loses_nothing_closed(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    work = _Workload(mnt, rng)
    for _ in range(KILLS):
        mp = start_mount(store, mnt, *_wb(tmp_path))
        try:
            t = threading.Thread(target=work.run, args=(10_000,))
            t.start()
            t.join(rng.uniform(*KILL_AFTER))  # the kill point (earlier if the work ran out)
            os.kill(mp.pid, signal.SIGKILL)
            t.join(fs_mounting.DEADLINE)
            assert not t.is_alive()
        finally:
            mp.unmount()
    # A last write-back mount replays the journal; its unmount drains it.
    with mount_store(store, mnt, *_wb(tmp_path)):
        _ok("sync", str(mnt))
    with mount_store(store, mnt):
        present = set(os.listdir(mnt))
        for copy in [n for n in present if ".conflict-" in n]:
            # A conflict copy may only be a file unlinked before a kill that came between
            # its delete in the store and the journal's record of it on disk
            # (docs/SEMANTICS.md), and it holds a content that file had when unlinked.
            base = copy.split(".conflict-")[0]
            assert base in work.unlinked, copy
            assert (mnt / copy).read_bytes() in work.unlinked[base], copy
            present.discard(copy)
        for name, allowed in work.want.items():
            got: Content = (mnt / name).read_bytes() if name in present else None
            assert got in allowed, (name, _digest(got), [_digest(a) for a in allowed])
        assert present <= set(work.want)
    res = _cli("fsck", "--store", str(store))
    assert res.returncode == 0, res.stdout + res.stderr
    assert sum(1 for w in work.want.values() if w != {None}) > KILLS  # a real workload ran
