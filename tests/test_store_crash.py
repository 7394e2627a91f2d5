"""Crash safety: a process killed with SIGKILL in the middle of finalize, of a content swap
and of rename leaves a store that fsck finds clean, with every file wholly old or wholly new.

The child process runs the real store; the test hook (a spec on its command line, turned into
``Store(hooks=...)`` by :func:`fsmount.store.hooks_from_spec`) makes it announce the hook
point on a pipe and wait there, so the kill lands at a chosen moment
(before the transaction commits, or after it commits but before files are cleaned up).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fsmount import fsck
from fsmount.remote import ROOT_ID
from fsmount.store import Store

OLD = b"old content " * 50_000  # ~600 KB: two 512 KiB parts
NEW = b"NEW CONTENT! " * 90_000  # ~1.2 MB: three parts
NEWER = b"newer, written by the child " * 40_000  # ~1.1 MB: three parts

CHILD = textwrap.dedent(
    """
    import sys
    from fsmount.store import Store, hooks_from_spec
    from fsmount.remote import InputFileBig, ROOT_ID

    path, op, hook = sys.argv[1], sys.argv[2], sys.argv[3]
    new = b"newer, written by the child " * 40_000
    store = Store(path, hooks=hooks_from_spec(hook))
    uid = store.default_user_id
    if op in ("finalize", "swap"):
        chunks = [new[i:i + 524288] for i in range(0, len(new), 524288)]
        for i, c in enumerate(chunks):
            store.save_big_file_part(uid, 99, i, len(chunks), c)
        doc = store.upload_media(uid, InputFileBig(99, len(chunks), "f"))
        node = store.lookup(uid, ROOT_ID, "f")
        store.set_content(uid, node.id, (doc.location,))
    elif op == "rename":
        store.rename(uid, ROOT_ID, "g", ROOT_ID, "f")
    print("finished", flush=True)
    """
)


def prepare(path: Path) -> None:
    """A store with file ``f`` = OLD and file ``g`` = NEW."""
    with Store(path) as store:
        uid = store.default_user_id
        for name, data, fid in (("f", OLD, 1), ("g", NEW, 2)):
            chunks = [data[i : i + 524288] for i in range(0, len(data), 524288)]
            for i, c in enumerate(chunks):
                store.save_big_file_part(uid, fid, i, len(chunks), c)
            from fsmount.remote import InputFileBig

            doc = store.upload_media(uid, InputFileBig(fid, len(chunks), name))
            store.create_file(uid, ROOT_ID, name, (doc.location,))
    assert fsck.check(path) == []


def read_file(store: Store, name: str) -> bytes | None:
    uid = store.default_user_id
    try:
        node = store.lookup(uid, ROOT_ID, name)
    except Exception:
        return None
    out = bytearray()
    for seg in node.segments:
        for off in range(0, seg.size, 1 << 20):
            out += store.get_file(uid, seg.location, off, 1 << 20).bytes
    return bytes(out)


def run_until_hook(path: Path, op: str, hook: str) -> None:
    """Start the child doing ``op``, wait until it reaches ``hook``, then SIGKILL it."""
    kill_at_hook([sys.executable, "-c", CHILD, str(path), op], hook)


def kill_at_hook(argv: list[str], hook: str, timeout: float = 60.0) -> None:
    """Start ``argv`` with the hook spec ``hook=PIPE`` as its last argument, wait (bounded)
    until it reaches store hook ``hook``, then SIGKILL it."""
    rfd, wfd = os.pipe()
    proc = subprocess.Popen(
        [*argv, f"{hook}=/dev/fd/{wfd}"], pass_fds=(wfd,), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(wfd)
    try:
        ready, _, _ = select.select([rfd], [], [], timeout)
        assert ready, "the child never reached the hook"
        msg = os.read(rfd, 200)
        if not msg:  # EOF: the child exited without reaching the hook
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"child ended early: {out!r} {err.decode()[-2000:]}")
        assert hook.split(":")[0].encode() in msg  # "NAME:N" hooks report NAME
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        os.close(rfd)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def blob_dirs(path: Path) -> set[str]:
    return {p.name for p in (path / "blobs").glob("*/*")}


@pytest.mark.parametrize(
    ("op", "hook", "f_state", "g_state"),
    [
        # Killed after the parts were renamed into blobs/ but before the commit.
        ("finalize", "finalize-before-commit", "old", "new"),
        # Killed after the finalize committed: a fresh document, the file unchanged.
        ("finalize", "finalize-after-commit", "old", "new"),
        # Killed in the middle of the content swap, before and after its commit.
        ("swap", "set-content-before-commit", "old", "new"),
        ("swap", "set-content-after-commit", "newer", "new"),
        # Killed in the middle of rename g -> f (over an existing file).
        ("rename", "rename-before-commit", "old", "new"),
        ("rename", "rename-after-commit", "new", None),
    ],
)
def test_sigkill_leaves_files_wholly_old_or_new(
    tmp_path: Path, op: str, hook: str, f_state: str, g_state: str | None
) -> None:
    content = {"old": OLD, "new": NEW, "newer": NEWER, None: None}
    f_after, g_after = content[f_state], content[g_state]
    assert f_after is not None
    path = tmp_path / "store"
    prepare(path)
    run_until_hook(path, op, hook)
    # Reopening (alone) sweeps whatever the dead process left behind.
    with Store(path) as store:
        assert read_file(store, "f") == f_after
        assert read_file(store, "g") == g_after
        uid = store.default_user_id
        usage = store.statfs(uid)
        assert usage.used_bytes == len(f_after) + (len(g_after) if g_after else 0)
    assert fsck.check(path, deep=True) == []
    # Only content somebody references is left on disk.
    with Store(path) as store:
        store.expire(now=store.clock() + 10 * 3600)  # let fresh documents lapse
    assert len(blob_dirs(path)) == len({f_after, g_after} - {None})
    assert not [p for p in (path / "parts").rglob("*") if p.is_file()], "parts expired too"
    assert fsck.check(path) == []


def test_a_concurrent_opener_does_not_sweep_files_in_flight(tmp_path: Path) -> None:
    """The orphan sweep runs only for an opener that has the store to itself."""
    path = tmp_path / "store"
    first = Store(path)
    try:
        uid = first.default_user_id
        first.save_file_part(uid, 5, 0, b"in flight")
        stray = path / "parts" / "tmp" / "p-writing"
        stray.write_bytes(b"being written by the first opener")
        second = Store(path)
        second.close()
        assert stray.exists()
        assert first.get_config(uid).max_parts > 0
        stray.unlink()
    finally:
        first.close()
    # Alone, an opener sweeps.
    stray.write_bytes(b"left by a crash")
    Store(path).close()
    assert not stray.exists()
    assert fsck.check(path) == []


BUSY_CHILD = textwrap.dedent(
    """
    import sys
    from fsmount.store import Store, hooks_from_spec
    from fsmount.remote import InputFileBig, ROOT_ID

    def version(i):
        return (b"version %d " % i) * (60_000 + 997 * i)   # 2..3 parts of 512 KiB

    store = Store(sys.argv[1], hooks=hooks_from_spec(sys.argv[2]))
    uid = store.default_user_id
    for i in range(1, 1000):
        data = version(i)
        chunks = [data[k:k + 524288] for k in range(0, len(data), 524288)]
        for k, c in enumerate(chunks):
            store.save_big_file_part(uid, 1000 + i, k, len(chunks), c)
        doc = store.upload_media(uid, InputFileBig(1000 + i, len(chunks), "v"))
        if i % 3 == 0:
            node = store.lookup(uid, ROOT_ID, "f")
            store.set_content(uid, node.id, (doc.location,))
        elif i % 3 == 1:
            store.create_file(uid, ROOT_ID, "g", (doc.location,), replace=True)
        else:
            store.rename(uid, ROOT_ID, "g", ROOT_ID, "f")
            store.create_file(uid, ROOT_ID, "g", (doc.location,))
    """
)


def version(i: int) -> bytes:
    return (b"version %d " % i) * (60_000 + 997 * i)


@pytest.mark.parametrize("hook", ["commit:7", "committed:7", "commit:23", "committed:40",
                                  "commit:61", "committed:88"])
def test_sigkill_at_any_commit_of_a_busy_writer(tmp_path: Path, hook: str) -> None:
    """A writer that keeps uploading, swapping, replacing and renaming is killed just before
    or just after its N-th commit; every file is then one whole version, fsck is clean."""
    path = tmp_path / "store"
    with Store(path) as store:
        store.create_file(store.default_user_id, ROOT_ID, "f")
    kill_at_hook([sys.executable, "-c", BUSY_CHILD, str(path)], hook, timeout=120.0)
    versions = {version(i) for i in range(1, 40)} | {b""}
    with Store(path) as store:
        for name in ("f", "g"):
            content = read_file(store, name)
            assert content is None or content in versions, (name, len(content or b""))
        assert read_file(store, "f") is not None
    assert fsck.check(path, deep=True) == []
