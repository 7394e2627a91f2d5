"""The write-back journal on its own (fsmount.journal): framing, recovery after a torn tail
or a crash between content and record, superseding and dropping, and an idempotent replay
by the uploader against the embedded store (a finalized upload already linked is not linked
again), plus the conflict rule."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import trio

from fsmount.embedded import EmbeddedRemote
from fsmount.journal import Journal, Uploader, node_sha256
from fsmount.journal.log import read_records
from fsmount.journal.records import ContentRecord, DoneRecord, decode_all, encode
from fsmount.remote import ROOT_ID
from fsmount.upload import upload_file


async def _close(j: Journal, node: int, data: bytes, *, base_version: int = 0,
                 name: str = "f") -> None:
    path = j.new_work_path()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    await j.commit_content(path, node=node, parent=ROOT_ID, name=name, size=len(data),
                           sha256=hashlib.sha256(data).hexdigest(), base_version=base_version,
                           mtime_ns=1_000_000_000 * 10**9)


def test_framing_stops_at_a_torn_or_corrupt_tail() -> None:
    r1 = DoneRecord(1, 2, 3, 4, 0)
    r2 = ContentRecord(2, 5, 1, "x", 3, "ab", 0, 7, 1.5)
    data = encode(r1) + encode(r2)
    assert decode_all(data) == ([r1, r2], len(data))
    torn = data[:-3]
    assert decode_all(torn) == ([r1], len(encode(r1)))
    flipped = bytearray(data)
    flipped[-1] ^= 1
    assert decode_all(bytes(flipped))[0] == [r1]


def test_torn_tail_is_cut_and_appends_go_on(tmp_path: Path) -> None:
    async def main() -> None:
        j = Journal.open(str(tmp_path / "j"))
        await _close(j, 10, b"one")
        j.close()
        with open(tmp_path / "j" / "journal.log", "ab") as f:
            f.write(encode(ContentRecord(99, 11, 1, "y", 1, "00", 0, 0, 0.0))[:-2])
        j = Journal.open(str(tmp_path / "j"))
        assert list(j.pending) == [10]
        await _close(j, 12, b"two")
        j.close()
        j = Journal.open(str(tmp_path / "j"))
        assert sorted(j.pending) == [10, 12]
        assert Path(j.content_path(j.pending[12].content.id)).read_bytes() == b"two"
        j.close()

    trio.run(main)


def test_content_without_record_and_work_files_are_discarded(tmp_path: Path) -> None:
    async def main() -> None:
        j = Journal.open(str(tmp_path / "j"))
        await _close(j, 10, b"kept")
        # A crash after the content file moved in, before its record: no record, no file.
        Path(j.content_path(1234)).write_bytes(b"orphan")
        Path(j.new_work_path()).write_bytes(b"never closed")
        j.close()
        j = Journal.open(str(tmp_path / "j"))
        assert list(j.pending) == [10]
        assert sorted(os.listdir(tmp_path / "j" / "content")) == [str(j.pending[10].content.id)]
        assert os.listdir(j.work_dir) == []
        j.close()

    trio.run(main)


def test_superseded_and_dropped_content_is_never_pending(tmp_path: Path) -> None:
    async def main() -> None:
        j = Journal.open(str(tmp_path / "j"))
        await _close(j, 10, b"v1")
        await _close(j, 10, b"v2")
        await _close(j, 11, b"gone")
        await j.drop(11)
        j.close()
        j = Journal.open(str(tmp_path / "j"))
        assert list(j.pending) == [10]
        assert Path(j.content_path(j.pending[10].content.id)).read_bytes() == b"v2"
        assert len(os.listdir(tmp_path / "j" / "content")) == 1
        j.close()

    trio.run(main)


def test_locked_against_a_second_mount(tmp_path: Path) -> None:
    j = Journal.open(str(tmp_path / "j"))
    try:
        from fsmount.journal import JournalLocked
        try:
            Journal.open(str(tmp_path / "j"))
        except JournalLocked:
            pass
        else:
            raise AssertionError("a second open of a journal in use succeeded")
    finally:
        j.close()


async def _drain(j: Journal, remote: EmbeddedRemote, tmp_path: Path) -> Uploader:
    up = Uploader(j, remote, cache_dir=str(tmp_path), host="h")
    async with trio.open_nursery() as n:
        n.start_soon(up.run)
        with trio.fail_after(30):
            await j.wait_drained()
        n.cancel_scope.cancel()
    return up


def test_replay_is_idempotent(tmp_path: Path) -> None:
    async def main() -> None:
        remote = EmbeddedRemote.open(tmp_path / "store")
        try:
            node = await remote.create_file(ROOT_ID, "f", ())
            j = Journal.open(str(tmp_path / "j"))
            await _close(j, node.id, b"hello", base_version=node.version)
            log_before_done = (tmp_path / "j" / "journal.log").read_bytes()
            content = Path(j.content_path(j.pending[node.id].content.id)).read_bytes()
            await _drain(j, remote, tmp_path)
            stored = await remote.getattr(node.id)
            assert node_sha256(stored) == hashlib.sha256(b"hello").hexdigest()
            j.close()
            # A crash after setContent, before the done record: the log as it was, the
            # content file back.  The replay recognises the linked content.
            (tmp_path / "j" / "journal.log").write_bytes(log_before_done)
            j = Journal.open(str(tmp_path / "j"))
            Path(j.content_path(j.pending[node.id].content.id)).write_bytes(content)
            up = await _drain(j, remote, tmp_path)
            again = await remote.getattr(node.id)
            assert again.version == stored.version  # not linked a second time
            assert up.conflicts == []
            j.close()
            j = Journal.open(str(tmp_path / "j"))
            assert not j.pending and not list(read_records(str(tmp_path / "j")))
            j.close()
        finally:
            await remote.aclose()

    trio.run(main)


def test_other_clients_change_makes_a_conflict_copy(tmp_path: Path) -> None:
    async def main() -> None:
        remote = EmbeddedRemote.open(tmp_path / "store")
        try:
            node = await remote.create_file(ROOT_ID, "doc", ())
            j = Journal.open(str(tmp_path / "j"))
            await _close(j, node.id, b"mine", base_version=node.version, name="doc")
            docs = await upload_file(remote, io.BytesIO(b"theirs"), "doc")
            await remote.set_content(node.id, tuple(d.location for d in docs))
            up = await _drain(j, remote, tmp_path)
            assert len(up.conflicts) == 1 and up.conflicts[0].startswith("doc.conflict-h-")
            theirs = await remote.getattr(node.id)
            assert node_sha256(theirs) == hashlib.sha256(b"theirs").hexdigest()
            copy = await remote.lookup(ROOT_ID, up.conflicts[0])
            assert node_sha256(copy) == hashlib.sha256(b"mine").hexdigest()
            j.close()
        finally:
            await remote.aclose()

    trio.run(main)


def test_own_earlier_upload_is_not_a_conflict(tmp_path: Path) -> None:
    async def main() -> None:
        remote = EmbeddedRemote.open(tmp_path / "store")
        try:
            node = await remote.create_file(ROOT_ID, "f", ())
            j = Journal.open(str(tmp_path / "j"))
            await _close(j, node.id, b"first", base_version=node.version)
            await _drain(j, remote, tmp_path)
            # Written again from the same base the mount saw, before it learnt the new
            # version: the version its own upload produced is recognised.
            await _close(j, node.id, b"second", base_version=node.version)
            up = await _drain(j, remote, tmp_path)
            assert up.conflicts == []
            got = await remote.getattr(node.id)
            assert node_sha256(got) == hashlib.sha256(b"second").hexdigest()
            j.close()
        finally:
            await remote.aclose()

    trio.run(main)
