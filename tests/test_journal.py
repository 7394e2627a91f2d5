"""The write-back journal on its own (fsmount.journal): framing, recovery after a torn tail
or a crash between content and record, superseding and dropping, and an idempotent replay
by the uploader against the embedded store (a finalized upload already linked is not linked
again), plus the conflict rule; inline records under a crash at every byte, group commit, lazy
records, and an upload resumed at the part after a crash (remote calls counted)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import time
from pathlib import Path

import trio
import trio.testing

from fsmount.embedded import EmbeddedRemote
from fsmount.journal import INLINE_MAX, Journal, Uploader, node_sha256
from fsmount.journal.log import read_records
from fsmount.journal.records import ContentRecord, DoneRecord, decode_all, encode
from fsmount.observe import MeteredRemote, MountStats
from fsmount.remote import ROOT_ID
from fsmount.upload import PART_SIZE, upload_file


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


def _lose_page_cache_of_inline_copies(jdir: Path) -> None:
    """What a power cut may leave of the content files of inline records (never fsynced):
    each one gone, emptied or cut, in turn."""
    for i, f in enumerate(sorted((jdir / "content").iterdir())):
        if f.suffix or f.stat().st_size > INLINE_MAX:
            continue
        if i % 3 == 0:
            f.unlink()
        elif i % 3 == 1:
            f.write_bytes(b"")
        else:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def test_inline_records_survive_a_crash_at_every_byte(tmp_path: Path) -> None:
    """The new record format under a crash at any byte of the log: a record is trusted
    whole or not at all, an inline content's file is written again from its record, and
    appends go on after the cut."""
    jdir = tmp_path / "j"
    big = os.urandom(INLINE_MAX + 5000)
    closes = [(10, b"a" * 100), (11, b""), (12, big), (10, os.urandom(INLINE_MAX)),
              (13, b"x\ny\n" * 50)]

    async def write_all() -> list[int]:
        j = Journal.open(str(jdir))
        ends = []
        for node, data in closes:
            if len(data) <= INLINE_MAX:
                path = j.new_work_path()
                Path(path).write_bytes(data)
                await j.commit_content(path, node=node, parent=ROOT_ID, name=f"n{node}",
                                       size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                       base_version=0, mtime_ns=0, data=data)
            else:
                await _close(j, node, data, name=f"n{node}")
            ends.append(os.path.getsize(jdir / "journal.log"))
        records = list(read_records(str(jdir)))
        assert [r.inline for r in records] == [True, True, False, True, True]  # type: ignore[union-attr]
        j.close()
        return ends

    ends = trio.run(write_all)
    log = (jdir / "journal.log").read_bytes()
    content = {p.name: p.read_bytes() for p in (jdir / "content").iterdir()}
    # In every record: each byte of its header and JSON, then every 4099th of its inline
    # bytes, and its last.
    cuts = {len(log)}
    for start, end in zip([0, *ends[:-1]], ends, strict=True):
        cuts |= set(range(start, min(end, start + 300))) | set(range(start, end, 4099))
        cuts.add(end - 1)

    async def check(cut: int) -> None:
        (jdir / "journal.log").write_bytes(log[:cut])
        for name, data in content.items():
            (jdir / "content" / name).write_bytes(data)
        _lose_page_cache_of_inline_copies(jdir)
        j = Journal.open(str(jdir))
        whole = sum(1 for e in ends if e <= cut)
        want: dict[int, bytes] = {}
        for node, data in closes[:whole]:
            want[node] = data
        assert {n: Path(j.content_path(p.content.id)).read_bytes()
                for n, p in j.pending.items()} == want, cut
        assert os.path.getsize(jdir / "journal.log") == (ends[whole - 1] if whole else 0)
        # Appends go on after the cut, and are read back.
        path = j.new_work_path()
        Path(path).write_bytes(b"after")
        await j.commit_content(path, node=99, parent=ROOT_ID, name="after", size=5,
                               sha256=hashlib.sha256(b"after").hexdigest(), base_version=0,
                               mtime_ns=0, data=b"after")
        j.close()
        j = Journal.open(str(jdir))
        assert Path(j.content_path(j.pending[99].content.id)).read_bytes() == b"after"
        assert set(j.pending) == set(want) | {99}
        j.close()

    for cut in sorted(cuts):
        trio.run(check, cut)


def test_concurrent_closes_share_an_fdatasync(tmp_path: Path) -> None:
    async def main() -> None:
        j = Journal.open(str(tmp_path / "j"))

        async def close(node: int) -> None:
            data = b"%d" % node
            path = j.new_work_path()
            Path(path).write_bytes(data)
            await j.commit_content(path, node=node, parent=ROOT_ID, name=str(node),
                                   size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                   base_version=0, mtime_ns=0, data=data)
            assert j.pending[node].content.inline  # durable when the close returns

        async with trio.open_nursery() as n:
            for node in range(100, 120):
                n.start_soon(close, node)
        # The first close writes its batch alone; the 19 that queued meanwhile share one.
        assert j.syncs == 2
        j.close()
        j = Journal.open(str(tmp_path / "j"))
        assert sorted(j.pending) == list(range(100, 120))
        j.close()

    trio.run(main)


def test_a_chmod_while_written_is_durable_with_the_content(tmp_path: Path) -> None:
    async def main() -> None:
        j = Journal.open(str(tmp_path / "j"))
        path = j.new_work_path()
        Path(path).write_bytes(b"x")
        await j.commit_content(path, node=10, parent=ROOT_ID, name="x", size=1,
                               sha256=hashlib.sha256(b"x").hexdigest(), base_version=0,
                               mtime_ns=0, data=b"x", mode=0o640)
        assert j.syncs == 1 and j.durable(j.pending[10])
        j.close()
        j = Journal.open(str(tmp_path / "j"))  # as after a crash: one batch held both
        assert j.pending[10].mode == 0o640
        j.close()

    trio.run(main)


def test_lazy_records_wait_for_the_next_batch(tmp_path: Path) -> None:
    """A chmod and a done record take effect at once but cost no fdatasync of their own;
    a file-backed content stays on disk until its done record is durable."""

    async def main() -> None:
        j = Journal.open(str(tmp_path / "j"))
        big = os.urandom(INLINE_MAX + 1)
        await _close(j, 10, big)
        p = j.pending[10]
        syncs = j.syncs
        await j.meta(10, mode=0o600, mtime_ns=None)
        assert j.pending[10].mode == 0o600 and j.syncs == syncs
        assert not j.durable(j.pending[10])  # the uploader waits for it
        await j.done(j.pending[10], 5)
        assert 10 not in j.pending and j.syncs == syncs
        assert Path(j.content_path(p.content.id)).exists()
        await j.flush()
        assert not Path(j.content_path(p.content.id)).exists()
        assert j.syncs == syncs + 1
        # Nothing pending: that batch started the log afresh and dropped the lazy records.
        assert os.path.getsize(tmp_path / "j" / "journal.log") == 0
        j.close()

    trio.run(main)


class _CutAfter:
    """A remote whose part saves hang (the mount is killed meanwhile) after ``n``."""

    def __init__(self, inner: EmbeddedRemote, n: int) -> None:
        self._inner, self._left = inner, n

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def save_file_part(self, file_id: int, number: int, data: bytes) -> bool:
        if self._left <= 0:
            await trio.sleep_forever()
        self._left -= 1
        return await self._inner.save_file_part(file_id, number, data)


async def _upload_cut_after(j: Journal, remote: EmbeddedRemote, tmp_path: Path,
                            parts: int) -> int:
    """Start uploading the journal's one pending content, and "kill" the uploader once
    ``parts`` parts are saved and noted.  Returns the content id."""
    (p,) = j.pending.values()
    up = Uploader(j, _CutAfter(remote, parts), cache_dir=str(tmp_path),  # type: ignore[arg-type]
                  host="h")
    async with trio.open_nursery() as n:
        n.start_soon(up.run)
        with trio.fail_after(30):
            while len(j.saved_parts(p.content.id)) < parts:
                await trio.sleep(0.01)
        n.cancel_scope.cancel()
    return p.content.id


def test_an_upload_cut_by_a_crash_resumes_at_the_part(tmp_path: Path) -> None:
    async def main() -> None:
        remote = EmbeddedRemote.open(tmp_path / "store")
        try:
            node = await remote.create_file(ROOT_ID, "big", ())
            data = os.urandom(6 * PART_SIZE - 1000)  # 6 parts, a small (MD5) upload
            j = Journal.open(str(tmp_path / "j"))
            await _close(j, node.id, data, base_version=node.version, name="big")
            await _upload_cut_after(j, remote, tmp_path, 3)
            j.close()
            # The next mount: the 3 parts noted are not sent again.
            j = Journal.open(str(tmp_path / "j"))
            stats = MountStats()
            await _drain(j, MeteredRemote(remote, stats), tmp_path)  # type: ignore[arg-type]
            assert stats.calls["save_file_part"] == 3
            assert stats.calls["save_big_file_part"] == 0
            assert stats.calls["upload_media"] == 1
            stored = await remote.getattr(node.id)
            assert node_sha256(stored) == hashlib.sha256(data).hexdigest()
            assert stored.size == len(data)
            assert not j.pending and os.listdir(tmp_path / "j" / "content") == []
            j.close()
        finally:
            await remote.aclose()

    trio.run(main)


def test_parts_older_than_half_their_lifetime_are_sent_again(tmp_path: Path) -> None:
    async def main() -> None:
        remote = EmbeddedRemote.open(tmp_path / "store")
        try:
            node = await remote.create_file(ROOT_ID, "big", ())
            data = os.urandom(4 * PART_SIZE)
            j = Journal.open(str(tmp_path / "j"))
            await _close(j, node.id, data, base_version=node.version, name="big")
            cid = await _upload_cut_after(j, remote, tmp_path, 2)
            j.close()
            lifetime = (await remote.get_config()).part_lifetime
            side = Path(j.content_path(cid) + ".parts")
            old = [dataclasses.replace(r, saved_at=time.time() - lifetime / 2 - 1)
                   for r in decode_all(side.read_bytes())[0]]
            side.write_bytes(b"".join(encode(r) for r in old))
            j = Journal.open(str(tmp_path / "j"))
            stats = MountStats()
            await _drain(j, MeteredRemote(remote, stats), tmp_path)  # type: ignore[arg-type]
            assert stats.calls["save_file_part"] == 4
            assert node_sha256(await remote.getattr(node.id)) == hashlib.sha256(data).hexdigest()
            j.close()
        finally:
            await remote.aclose()

    trio.run(main)



def test_own_delete_in_flight_is_not_taken_for_another_clients(tmp_path: Path) -> None:
    """The moment between the store's delete of a pending file and the journal's drop (the
    mount's unlink, or a rename over it, waiting for its answer): the uploader finds the
    node gone, but its delete is this mount's own, so no conflict copy is stored."""

    async def main() -> None:
        remote = EmbeddedRemote.open(tmp_path / "store")
        try:
            d = await remote.mkdir(ROOT_ID, "d")
            node = await remote.create_file(d.id, "f", ())
            kept = await remote.create_file(ROOT_ID, "kept", ())
            j = Journal.open(str(tmp_path / "j"))
            path = j.new_work_path()
            Path(path).write_bytes(b"doomed")
            await j.commit_content(path, node=node.id, parent=d.id, name="f", size=6,
                                   sha256=hashlib.sha256(b"doomed").hexdigest(),
                                   base_version=node.version, mtime_ns=10**18)
            await _close(j, kept.id, b"kept", base_version=kept.version, name="kept")
            assert j.deleting(d.id, "f") == node.id and j.deleting(d.id, "none") is None
            await remote.unlink(d.id, "f")  # the store has deleted it; no answer yet
            up = Uploader(j, remote, cache_dir=str(tmp_path), host="h")
            async with trio.open_nursery() as n:
                n.start_soon(up.run)
                # The other file goes through; the deleted one is offered again and again
                # (each RETRY_PAUSE, in the mock clock's time) without a conflict copy.
                await j.wait_stored(kept.id)
                await trio.sleep(30)
                assert up.conflicts == [] and node.id in j.pending
                assert up.last_error is None  # nothing to say about it either
                # The answer arrives: the mount drops the content and ends the mark.
                await j.drop(node.id)
                j.deleted(node.id)
                with trio.fail_after(30):
                    await j.wait_drained()
                n.cancel_scope.cancel()
            assert up.conflicts == []
            assert (await remote.list_folder(d.id)).entries == ()
            assert [e.name for e in (await remote.list_folder(ROOT_ID)).entries] == ["d", "kept"]
            assert not j.is_deleting(node.id)
            j.close()
        finally:
            await remote.aclose()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
