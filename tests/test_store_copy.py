"""``fsmount store copy``: a whole store moved between store directories and S3 content,
compared file by file (bytes, every POSIX field, xattrs, hard links, ids), fsck clean,
idempotent, resumable after a SIGKILL at a random moment, and refusing an unrelated
destination (fsmount/store/copy.py)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fsmount import errors, fsck
from fsmount.protocol import KIB, MIB
from fsmount.remote import ROOT_ID, InputFileBig, NodeKind, Owner
from fsmount.server.auth import AuthDB
from fsmount.server.shares import ShareLinks
from fsmount.store import Store
from fsmount.store.copy import DestinationNotEmpty, StoreSpec, run_copy


def put(store: Store, uid: int, parent: int, name: str, data: bytes, fid: int,
        part: int = 512 * KIB) -> Any:
    chunks = [data[i : i + part] for i in range(0, len(data), part)] or []
    if not chunks:
        return store.create_file(uid, parent, name, ())
    for i, c in enumerate(chunks):
        store.save_big_file_part(uid, fid, i, len(chunks), c)
    doc = store.upload_media(uid, InputFileBig(fid, len(chunks), name))
    return store.create_file(uid, parent, name, (doc.location,), replace=True,
                             mtime_ns=1_600_000_000_123_456_789)


def build(path: Path, *, content: str | None = None, big: int = 0) -> dict[str, str]:
    """A store with every kind of thing a copy must carry; returns tokens by user."""
    rnd = random.Random(7)
    with Store(path, content=content) as s:
        uid = s.default_user_id
        d = s.mkdir(uid, ROOT_ID, "dir", 0o750, owner=Owner(1000, 100))
        sub = s.mkdir(uid, d.id, "sub", 0o700)
        f1 = put(s, uid, d.id, "multi", rnd.randbytes(1300 * KIB), 1)
        put(s, uid, sub.id, "small-parts", rnd.randbytes(40 * KIB), 2, part=4 * KIB)
        put(s, uid, ROOT_ID, "dup", b"x" * 3000, 3)
        put(s, uid, sub.id, "dup-too", b"x" * 3000, 4)
        put(s, uid, ROOT_ID, "empty", b"", 5)
        s.symlink(uid, ROOT_ID, "link", "dir/multi", owner=Owner(0, 0))
        s.mknod(uid, ROOT_ID, "fifo", NodeKind.FIFO, 0o600)
        s.mknod(uid, d.id, "dev", NodeKind.CHARDEV, 0o644, rdev=(1 << 8) | 3)
        s.link(uid, f1.id, ROOT_ID, "hard")
        s.link(uid, f1.id, sub.id, "hard2")
        s.set_xattr(uid, f1.id, "user.a", b"\x00\xffvalue")
        s.set_xattr(uid, d.id, "user.dir", b"on a folder")
        s.chown(uid, f1.id, uid=1234, gid=5678)
        s.set_times(uid, f1.id, atime_ns=1_500_000_000_000_000_001)
        gone = put(s, uid, ROOT_ID, "gone", b"deleted before the copy", 6)
        s.unlink(uid, ROOT_ID, gone.name)
        s.rename(uid, ROOT_ID, "dup", d.id, "dup-moved")
        alice = s.ensure_user("alice", quota_bytes=50 * MIB, premium=True)
        put(s, alice, ROOT_ID, "hers", rnd.randbytes(700 * KIB), 7)
        put(s, alice, ROOT_ID, "same-as-default", b"x" * 3000, 8)
        for i in range(big):
            put(s, uid, sub.id, f"big{i:03d}", rnd.randbytes(2 * MIB), 100 + i)
    auth = AuthDB(path)
    try:
        tokens = {"default": auth.add_token("default"),
                  "alice": auth.add_token("alice", quota_bytes=50 * MIB, premium=True)}
        links = ShareLinks(auth.connection)
        links.create("alice", 2, 2, "hers", password="pw")
    finally:
        auth.close()
    return tokens


def snapshot(path: Path) -> dict[str, Any]:
    """Everything a user sees of the store, by user and path, read through the public
    Store methods (ids included), with each file's bytes as a SHA-256."""
    out: dict[str, Any] = {}
    with Store(path) as s:
        out["store_id"] = s.store_id()
        for name in ("default", "alice"):
            try:
                uid = s.user_id(name)
            except errors.NotFound:
                continue
            usage = s.statfs(uid)
            out[f"{name}:usage"] = (usage.used_bytes, usage.quota_bytes, usage.files)
            out[f"{name}:config"] = s.get_config(uid)
            todo = [(ROOT_ID, "")]
            while todo:
                folder, prefix = todo.pop()
                after = None
                for _ in range(1000):
                    page = s.list_folder(uid, folder, after)
                    for n in page.entries:
                        if n.id == ROOT_ID and folder == ROOT_ID:
                            continue
                        p = f"{prefix}/{n.name}"
                        xattrs = {x: s.get_xattr(uid, n.id, x) for x in s.list_xattrs(uid, n.id)}
                        body = None
                        if n.kind is NodeKind.FILE:
                            h = hashlib.sha256()
                            for doc in n.segments:
                                for off in range(0, doc.size, MIB):
                                    h.update(s.get_file(uid, doc.location, off, MIB).bytes)
                            body = h.hexdigest()
                        out[f"{name}:{p}"] = (n, xattrs, body)
                        if n.kind is NodeKind.DIR:
                            todo.append((n.id, p))
                    after = page.next_after
                    if after is None:
                        break
            out[f"{name}:/"] = s.getattr(uid, ROOT_ID)
    return out


def fsmount_cmd(*args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "fsmount", *args], capture_output=True,
                          text=True, timeout=600, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_copy_moves_everything_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    tokens = build(src)
    before = snapshot(src)
    report = run_copy(StoreSpec.parse(str(src)), StoreSpec.parse(str(dst)))
    assert report.users == 2 and report.nodes_written == report.nodes
    # Three documents of the same content (two users) share one blob.
    assert (report.documents, report.blobs_copied, report.verified_documents) == (6, 4, 6)
    assert report.server_rows >= 4
    assert snapshot(dst) == before == snapshot(src)
    assert fsck.check(dst, deep=True) == []
    # Tokens, users' settings and share links came along (hashes only).
    auth = AuthDB(dst)
    try:
        assert auth.authenticate(tokens["alice"])[1] == "alice"
        assert auth.user("alice").quota_bytes == 50 * MIB
        assert [link.name for link in ShareLinks(auth.connection).list("alice")] == ["hers"]
    finally:
        auth.close()
    # Idempotent: nothing to write, everything verified again.
    again = run_copy(StoreSpec.parse(str(src)), StoreSpec.parse(str(dst)))
    assert (again.nodes_written, again.nodes_removed, again.blobs_copied) == (0, 0, 0)
    assert again.verified_documents == report.verified_documents
    # The destination goes on numbering past the source: new ids are fresh.
    with Store(src) as s:
        biggest_doc = max(d.id for n in [s.getattr(s.default_user_id, s.lookup(
            s.default_user_id, ROOT_ID, "hard").id)] for d in n.segments)
    with Store(dst) as d:
        uid = d.default_user_id
        new = put(d, uid, ROOT_ID, "after", b"y" * 5000, 99)
        assert new.id > max(n[0].id for k, n in before.items()
                            if k.startswith("default:/") and isinstance(n, tuple))
        assert new.segments[0].id > biggest_doc
        # A client following the change feed from the source is told to reset.
        assert d.get_changes(uid, 3, 0).reset
    assert fsck.check(dst) == []


def test_unrelated_destination_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    build(src)
    with Store(dst) as d:
        put(d, d.default_user_id, ROOT_ID, "mine", b"z" * 100, 1)
        dst_id = d.store_id()
    before = snapshot(dst)
    with pytest.raises(DestinationNotEmpty, match="not a copy of"):
        run_copy(StoreSpec.parse(str(src)), StoreSpec.parse(str(dst)))
    assert snapshot(dst) == before and before["store_id"] == dst_id
    proc = fsmount_cmd("store", "copy", "--from", str(src), "--to", str(dst), check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "not a copy of" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert fsck.check(dst) == []


def test_a_corrupt_source_blob_stops_the_copy(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    build(src)
    with Store(src) as s:
        uid = s.default_user_id
        node = s.lookup(uid, ROOT_ID, "hard")
        chunk = s.blob_files(uid, node.segments[0].location)[1]
    raw = bytearray(chunk.read_bytes())
    raw[100] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    proc = fsmount_cmd("store", "copy", "--from", str(src), "--to", str(dst), check=False)
    assert proc.returncode == 1 and "does not hash to its SHA-256" in proc.stderr
    assert (dst / "copy-incomplete").exists()  # nobody serves the partial copy


def test_a_run_over_a_copy_whose_content_rotted_says_so(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    build(src)
    run_copy(StoreSpec.parse(str(src)), StoreSpec.parse(str(dst)))
    with Store(dst) as d:
        uid = d.user_id("alice")
        node = d.lookup(uid, ROOT_ID, "hers")
        chunk = d.blob_files(uid, node.segments[0].location)[0]
    raw = bytearray(chunk.read_bytes())
    raw[5] ^= 0x01
    chunk.write_bytes(bytes(raw))
    proc = fsmount_cmd("store", "copy", "--from", str(src), "--to", str(dst), check=False)
    assert proc.returncode == 1, proc.stdout
    assert "does not match its check at the destination" in proc.stderr


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    build(tmp_path / "src")
    cases = [
        (["--from", str(tmp_path / "nothing"), "--to", str(tmp_path / "d")], "no store at"),
        (["--from", str(tmp_path / "src"), "--to", str(tmp_path / "src")], "both source"),
        (["--from", str(tmp_path / "src"), "--to", "postgresql://u@localhost/db"],
         "is given by its directory"),
        (["--from", str(tmp_path / "src"), "--to", "s3://bucket/x"], "is given by its"),
        (["--from", str(tmp_path / "src"), "--to", str(tmp_path / "d"), "--to-metadata",
          "mysql://x"], "must be a postgresql:// URL"),
        (["--from", str(tmp_path / "src"), "--to", str(tmp_path / "d"), "--to-content",
          "http://x"], "s3:// URL"),
    ]
    for args, text in cases:
        proc = fsmount_cmd("store", "copy", *args, check=False)
        assert proc.returncode != 0 and text in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_copy_back_brings_the_source_up_to_date(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    build(a)
    run_copy(StoreSpec.parse(str(a)), StoreSpec.parse(str(b)))
    same = os.urandom(700 * KIB)
    with Store(a) as s:  # A goes on too: its next node and document ids are B's next ones
        a_node = put(s, s.default_user_id, ROOT_ID, "only-in-a", same, 60)
    with Store(b) as s:  # B is used for a while
        put(s, s.default_user_id, ROOT_ID, "first-in-b", b"b" * 5000, 62)
        b_node = put(s, s.default_user_id, ROOT_ID, "only-in-b", same, 61)
        # The same document id for another document of the same content (the copy took
        # one id of A's): A's goes, and B's needs that content again.
        assert b_node.segments[0].id == a_node.segments[0].id
        assert b_node.segments[0] != a_node.segments[0]
        uid = s.default_user_id
        d = s.lookup(uid, ROOT_ID, "dir")
        s.rename(uid, d.id, "multi", ROOT_ID, "multi-moved")
        s.unlink(uid, ROOT_ID, "hard")
        put(s, uid, d.id, "new-in-b", os.urandom(900 * KIB), 50)
        s.set_xattr(uid, d.id, "user.dir", b"changed")
        s.chown(uid, s.lookup(uid, ROOT_ID, "link").id, uid=7, gid=8)
        s.set_user(s.user_id("alice"), quota_bytes=0)
        s.unlink(s.user_id("alice"), ROOT_ID, "hers")
    auth = AuthDB(b)
    token = auth.add_token("bob")
    auth.close()
    report = run_copy(StoreSpec.parse(str(b)), StoreSpec.parse(str(a)))
    # B's two new contents (the second one A had, but its document went).
    assert report.nodes_removed > 0 and report.blobs_copied == 3
    assert snapshot(a) == snapshot(b)
    assert fsck.check(a, deep=True) == []
    auth = AuthDB(a)
    assert auth.authenticate(token)[1] == "bob"
    auth.close()


def test_copy_into_s3_content_and_back(tmp_path: Path, s3_url: str) -> None:
    src, mid, back = tmp_path / "src", tmp_path / "s3store", tmp_path / "back"
    build(src)
    before = snapshot(src)
    fsmount_cmd("store", "copy", "--from", str(src), "--to", str(mid), "--to-content", s3_url)
    assert (mid / "content.url").read_text().startswith("s3://")
    assert not (mid / "blobs").exists()
    assert snapshot(mid) == before
    assert fsck.check(mid, deep=True) == []
    proc = fsmount_cmd("store", "copy", "--from", str(mid), "--to", str(back))
    assert "verified:" in proc.stdout
    assert snapshot(back) == before
    assert fsck.check(back, deep=True) == []
    # Again into the S3 store: nothing to copy, and it is still sound.
    proc = fsmount_cmd("store", "copy", "--from", str(src), "--to", str(mid))
    assert "0 written, 0 removed" in proc.stdout and "0 blobs" in proc.stdout
    assert fsck.check(mid) == []


@pytest.mark.parametrize("where", ["dir", "s3"])
def test_copy_killed_at_a_random_moment_finishes_when_run_again(
        tmp_path: Path, where: str, request: pytest.FixtureRequest) -> None:
    content = request.getfixturevalue("s3_url") if where == "s3" else None
    src, dst = tmp_path / "src", tmp_path / "dst"
    build(src, big=30)  # about 60 MiB in 30 files, and the rest
    before = snapshot(src)
    args = [sys.executable, "-m", "fsmount", "--log-level", "INFO", "store", "copy",
            "--from", str(src), "--to", str(dst)]
    if content:
        args += ["--to-content", content]
    kills = refused = 0
    rnd = random.Random()
    mark = dst / "copy-incomplete"
    for _ in range(3):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # A random moment once the copy is under way (it marks the destination unfinished
        # first, on every run, and clears the mark last).
        deadline = time.monotonic() + 30
        while not mark.exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rnd.uniform(0.0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0
            continue
        kills += 1
        if mark.exists():
            refused += 1
            # An unfinished copy is refused by everyone but the copy (its tree is partial).
            with pytest.raises(errors.InvalidArgument, match="has not finished"):
                Store(dst)
            ls = fsmount_cmd("ls", "--store", str(dst), "/", check=False)
            assert ls.returncode == 1 and "has not finished" in ls.stderr
        else:  # killed on its way out, the mark cleared: the copy is whole
            assert snapshot(dst) == before
    assert refused >= 1, "every kill came after the copy had finished: make it bigger"
    done = fsmount_cmd("store", "copy", "--from", str(src), "--to", str(dst),
                       *(["--to-content", content] if content else []))
    assert "verified:" in done.stdout
    assert not (dst / "copy-incomplete").exists()
    assert snapshot(dst) == before
    assert fsck.check(dst, deep=True) == []
    checked = fsmount_cmd("fsck", "--deep", "--store", str(dst))
    assert checked.stdout.strip().endswith("clean")
    again = fsmount_cmd("store", "copy", "--from", str(src), "--to", str(dst))
    assert "0 written, 0 removed" in again.stdout


def test_copy_into_postgres_and_s3_and_back(tmp_path: Path, pg_url: str, s3_url: str) -> None:
    """The embedded store moved to PostgreSQL metadata + S3 content (a node's directory),
    served from there, and moved back: the same store all along."""
    src, mid, back = tmp_path / "src", tmp_path / "node", tmp_path / "back"
    build(src)
    before = snapshot(src)
    fsmount_cmd("store", "copy", "--from", str(src), "--to", str(mid), "--to-metadata",
                pg_url, "--to-content", s3_url)
    assert (mid / "metadata.url").read_text().strip() == pg_url
    assert not (mid / "meta.sqlite").exists()
    assert snapshot(mid) == before
    assert fsck.check(mid, deep=True) == []
    # A user made on the PostgreSQL store is numbered above the copied ones.
    with Store(mid) as s:
        carol = s.ensure_user("carol")
        assert carol > max(s.user_id("default"), s.user_id("alice"))
        # Another node over the same database reports the copied store id.
        with Store(tmp_path / "node2", metadata=pg_url, content=s3_url) as other:
            assert other.store_id() == before["store_id"]
    proc = fsmount_cmd("store", "copy", "--from", str(mid), "--to", str(back))
    assert "verified:" in proc.stdout
    after = snapshot(back)
    assert after == before
    assert fsck.check(back, deep=True) == []
