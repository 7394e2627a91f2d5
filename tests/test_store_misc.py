"""Store behaviour below the Remote interface: locking, persistence, indexes, fsck's
findings, concurrency, and reads that deliberately do not verify hashes."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import crc32c
import pytest

from fsmount import errors, fsck
from fsmount.protocol import KIB, MIB, Limits
from fsmount.remote import ROOT_ID, BlockChecksum, FileHash, InputFile, InputFileBig
from fsmount.store import NO_HOOKS, HookPoint, Store, StoreHooks, hooks_from_spec
from fsmount.store.sqlite_meta import SCHEMA_VERSION


def put(store: Store, uid: int, name: str, data: bytes, fid: int, parent: int = ROOT_ID):
    chunks = [data[i : i + 512 * KIB] for i in range(0, len(data), 512 * KIB)]
    for i, c in enumerate(chunks):
        store.save_big_file_part(uid, fid, i, len(chunks), c)
    doc = store.upload_media(uid, InputFileBig(fid, len(chunks), name))
    return store.create_file(uid, parent, name, (doc.location,), replace=True)


def test_exclusive_open_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "s"
    first = Store(path, exclusive=True)
    try:
        with pytest.raises(errors.StoreLocked) as ei:
            Store(path, exclusive=True)
        assert f"pid {os.getpid()}" in str(ei.value)
        assert str(path) in str(ei.value)
        # A non-exclusive opener (``fsmount put``) may share the store.
        with Store(path) as other:
            assert other.statfs(other.default_user_id).files == 1
    finally:
        first.close()
    Store(path, exclusive=True).close()


def test_data_and_id_counters_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s"
    data = os.urandom(700 * KIB)
    with Store(path) as store:
        uid = store.ensure_user("carol", quota_bytes=5 * MIB, premium=True)
        assert store.ensure_user("carol") == uid
        node = put(store, uid, "f", data, 1)
        store.unlink(uid, ROOT_ID, "f")
        node = put(store, uid, "f", data, 2)
    with Store(path) as store:
        assert store.user_id("carol") == uid
        cfg = store.get_config(uid)
        assert cfg.premium and cfg.max_parts == Limits().upload_max_fileparts_premium
        got = store.lookup(uid, ROOT_ID, "f")
        assert got.id == node.id
        seg = got.segments[0]
        assert store.get_file(uid, seg.location, 0, MIB).bytes == data
        again = store.create_file(uid, ROOT_ID, "g")
        assert again.id > node.id
        assert store.statfs(uid).quota_bytes == 5 * MIB
    assert fsck.check(path, deep=True) == []


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.close()
    store.close()
    with pytest.raises(errors.FsmountError):
        store.getattr(store.default_user_id, ROOT_ID)


def test_listing_and_lookup_use_the_name_index(tmp_path: Path) -> None:
    """Paged listing of a 100,000-entry folder stays fast because every page is one index
    range scan (the timing itself is in scripts/bench_store.py --entries)."""
    path = tmp_path / "s"
    with Store(path):
        pass
    db = sqlite3.connect(path / "meta.sqlite")
    try:
        plan = " ".join(r[-1] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM nodes WHERE user_id = 1 AND parent = 1 "
            "AND name > 'x' ORDER BY name LIMIT 1000"))
        assert "INDEX nodes_by_name" in plan and "TEMP B-TREE" not in plan, plan
        plan = " ".join(r[-1] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM nodes WHERE user_id = 1 AND parent = 1 "
            "AND name = 'x'"))
        assert "INDEX nodes_by_name" in plan, plan
    finally:
        db.close()


def test_get_file_does_not_verify_but_hashes_expose_corruption(tmp_path: Path) -> None:
    path = tmp_path / "s"
    data = os.urandom(300 * KIB)
    with Store(path) as store:
        uid = store.default_user_id
        doc = put(store, uid, "f", data, 1).segments[0]
        files = store.blob_files(uid, doc.location)
        assert len(files) == 1 and files[0].stat().st_size == len(data)
        chunk = files[0]
        raw = bytearray(chunk.read_bytes())
        raw[1000] ^= 0xFF
        chunk.write_bytes(bytes(raw))
        got = store.get_file(uid, doc.location, 0, MIB).bytes
        assert got != data and len(got) == len(data)
        hashes = store.get_file_hashes(uid, doc.location, 0)
        assert hashes[0].hash == hashlib.sha256(data[: 128 * KIB]).digest()
        assert hashes[0].hash != hashlib.sha256(got[: 128 * KIB]).digest()
    problems = fsck.check(path, deep=True)
    assert any("does not match" in p for p in problems), problems
    assert fsck.check(path) == []  # the shallow check looks at sizes only


def tamper(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path / "meta.sqlite")
    try:
        db.execute(sql, args)
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize(
    ("sql", "finding"),
    [
        ("UPDATE users SET used_bytes = used_bytes + 1", "used_bytes"),
        ("UPDATE users SET node_count = 99", "node_count"),
        ("UPDATE nodes SET parent = 424242 WHERE name = 'a'", "missing parent"),
        ("UPDATE nodes SET parent = (SELECT id FROM nodes WHERE name = 'b') WHERE name = 'a'",
         "does not reach the root"),
        ("UPDATE nodes SET size = size + 1 WHERE name = 'f'", "segments add up"),
        ("DELETE FROM blobs", "missing blob"),
        ("DELETE FROM documents", "missing document"),
        ("DELETE FROM nodes WHERE id = 1", "no root folder"),
        ("UPDATE documents SET expires_at = NULL WHERE id = (SELECT MAX(id) FROM documents)",
         "never expires"),
        ("DELETE FROM segments", "never expires"),
        ("UPDATE nodes SET parent = (SELECT id FROM nodes WHERE name = 'f') WHERE name = 'b'",
         "not a folder"),
    ],
)
def test_fsck_finds_broken_invariants(tmp_path: Path, sql: str, finding: str) -> None:
    path = tmp_path / "s"
    with Store(path) as store:
        uid = store.default_user_id
        a = store.mkdir(uid, ROOT_ID, "a")
        store.mkdir(uid, a.id, "b")
        put(store, uid, "f", b"content of f", 1)
        store.save_file_part(uid, 2, 0, b"loose")
        store.upload_media(uid, InputFile(2, 1, "loose", hashlib.md5(b"loose").hexdigest()))
    assert fsck.check(path) == []
    tamper(path, sql)
    problems = fsck.check(path)
    assert any(finding in p for p in problems), problems


def test_fsck_finds_orphan_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store(path) as store:
        uid = store.default_user_id
        put(store, uid, "f", b"x" * 5000, 1)
        store.save_file_part(uid, 9, 0, b"part")
    (path / "blobs" / "ee").mkdir()
    (path / "blobs" / "ee" / ("e" * 64 + ".zz")).mkdir()
    (path / "parts" / "1" / "0000000000000009" / "7").write_bytes(b"stray")
    problems = fsck.check(path)
    assert any("orphan blob" in p for p in problems), problems
    assert any("orphan part file" in p for p in problems), problems
    for chunk in (path / "blobs").rglob("0"):
        chunk.unlink()
    assert any("chunks" in p for p in fsck.check(path))
    with pytest.raises(FileNotFoundError):
        fsck.check(tmp_path / "nothing-here")


def test_expire_sweeps_parts_and_fresh_documents(tmp_path: Path) -> None:
    now = [1000.0]
    with Store(tmp_path / "s", clock=lambda: now[0],
               limits=Limits(part_lifetime=60)) as store:
        uid = store.default_user_id
        store.save_file_part(uid, 1, 0, b"a")
        store.save_file_part(uid, 2, 0, b"b")
        store.upload_media(uid, InputFile(2, 1, "b", hashlib.md5(b"b").hexdigest()))
        assert store.expire() == (0, 0)
        now[0] += 61
        assert store.expire() == (1, 1)
        assert not [p for p in (tmp_path / "s" / "blobs").rglob("*") if p.is_file()]
    assert fsck.check(tmp_path / "s") == []


def test_concurrent_threads_keep_the_store_consistent(tmp_path: Path) -> None:
    path = tmp_path / "s"
    failures: list[BaseException] = []
    with Store(path) as store:
        uid = store.default_user_id
        dirs = [store.mkdir(uid, ROOT_ID, f"d{i}").id for i in range(4)]

        def worker(n: int) -> None:
            try:
                for k in range(6):
                    data = os.urandom(200 * KIB + n * 1000 + k)
                    node = put(store, uid, f"f{n}-{k}", data, n * 100 + k, dirs[n % 4])
                    got = store.get_file(uid, node.segments[0].location, 0, MIB).bytes
                    assert got == data
                    store.rename(uid, dirs[n % 4], f"f{n}-{k}", dirs[(n + 1) % 4], f"g{n}-{k}")
                    if k % 2:
                        store.unlink(uid, dirs[(n + 1) % 4], f"g{n}-{k}")
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert failures == []
        listed = sum(len(store.list_folder(uid, d).entries) for d in dirs)
        assert listed == 6 * 3
    assert fsck.check(path, deep=True) == []


def expected_digests(data: bytes) -> tuple[str, str, list[bytes]]:
    blocks = [hashlib.sha256(data[o : o + 128 * KIB]).digest()
              for o in range(0, len(data), 128 * KIB)]
    return hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(), blocks


def expected_crcs(data: bytes) -> list[int]:
    return [crc32c.crc32c(data[o : o + 128 * KIB]) for o in range(0, len(data), 128 * KIB)]


@pytest.mark.parametrize("part_size", [64 * KIB, 128 * KIB, 512 * KIB])
@pytest.mark.parametrize("order", ["in-order", "reversed", "resend-fed", "resend-pending"])
def test_digests_are_right_whatever_the_arrival_order(tmp_path: Path, part_size: int,
                                                      order: str) -> None:
    """Incremental hashing (in order), the parts held back for it, and the fallback pass
    (parts out of order beyond what is held, or re-sent) all give the same digests."""
    n = 40 if part_size < 512 * KIB else 6
    data = os.urandom(part_size * (n - 1) + 5000)
    chunks = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    with Store(tmp_path / "s") as store:
        uid = store.default_user_id
        seq = list(range(len(chunks)))
        if order == "reversed":
            seq.reverse()
        for i in seq:
            if order == "resend-fed" and i == 3:
                # Part 1 was already hashed; a re-send changes it (twice, back to the truth).
                store.save_big_file_part(uid, 1, 1, len(chunks), b"\0" * part_size)
                store.save_big_file_part(uid, 1, 1, len(chunks), chunks[1])
            store.save_big_file_part(uid, 1, i, len(chunks), chunks[i])
        if order == "resend-pending":
            store.save_big_file_part(uid, 1, len(chunks) - 1, len(chunks), b"junk")
            store.save_big_file_part(uid, 1, len(chunks) - 1, len(chunks), chunks[-1])
        doc = store.upload_media(uid, InputFileBig(1, len(chunks), "x"))
        sha, md5, blocks = expected_digests(data)
        assert (doc.sha256, doc.md5) == (sha, md5)
        got: dict[int, bytes] = {}
        for off in range(0, len(data), MIB):
            got.update((h.offset, h.hash) for h in store.get_file_hashes(uid, doc.location, off))
        assert [got[o] for o in sorted(got)] == blocks
        crcs: dict[int, int] = {}
        for off in range(0, len(data), MIB):
            for c in store.get_file_checksums(uid, doc.location, off):
                assert isinstance(c, BlockChecksum)
                crcs[c.offset] = c.crc32c
        assert [crcs[o] for o in sorted(crcs)] == expected_crcs(data)
        assert store.states.pending_bytes == 0
    assert fsck.check(tmp_path / "s", deep=True) == []


def test_checksums_match_the_hashes_block_for_block(tmp_path: Path) -> None:
    data = os.urandom(2 * MIB + 300 * KIB)
    with Store(tmp_path / "s") as store:
        uid = store.default_user_id
        doc = put(store, uid, "f", data, 1).segments[0]
        for off in (0, 300 * KIB, MIB, 2 * MIB + 256 * KIB):
            hashes = store.get_file_hashes(uid, doc.location, off)
            checks = store.get_file_checksums(uid, doc.location, off)
            assert [(c.offset, c.limit) for c in checks] == [(h.offset, h.limit) for h in hashes]
            assert all(c.matches(data[c.offset : c.offset + c.limit]) for c in checks)
            assert not checks[0].matches(b"x" + data[checks[0].offset + 1 :
                                                      checks[0].offset + checks[0].limit])
        two = store.get_file_checksums(uid, doc.location, 0, windows=2)
        assert len(two) == 16 and two[-1].offset == MIB + 896 * KIB
        assert store.get_file_checksums(uid, doc.location, 3 * MIB) == []
        with pytest.raises(errors.OffsetInvalid):
            store.get_file_checksums(uid, doc.location, 100)
        with pytest.raises(errors.InvalidArgument):
            store.get_file_checksums(uid, doc.location, 0, windows=0)


def test_a_store_from_before_checksums_is_upgraded_and_verified_by_sha256(
        tmp_path: Path) -> None:
    """A version-1 store (no block_crc32c column) gains the column when opened; its old
    blobs answer getFileChecksums with their SHA-256 hashes, new ones with CRC32Cs, and the
    reader verifies both kinds."""
    path = tmp_path / "s"
    old_data, new_data = os.urandom(MIB + 5), os.urandom(MIB + 7)
    with Store(path) as store:
        uid = store.default_user_id
        put(store, uid, "old", old_data, 1)
    tamper(path, "ALTER TABLE blobs DROP COLUMN block_crc32c")
    tamper(path, "UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    with Store(path) as store:
        old = store.lookup(uid, ROOT_ID, "old").segments[0]
        new = put(store, uid, "new", new_data, 2).segments[0]
        old_checks = store.get_file_checksums(uid, old.location, 0)
        assert old_checks == store.get_file_hashes(uid, old.location, 0)
        assert all(isinstance(c, FileHash) for c in old_checks)
        new_checks = store.get_file_checksums(uid, new.location, 0)
        assert [c.crc32c for c in new_checks if isinstance(c, BlockChecksum)] == (
            expected_crcs(new_data[:MIB]))
        assert store.get_file_windows(uid, old.location, 0, 2, hashes=True, crc32c=True)[1] == (
            store.get_file_hashes(uid, old.location, 0, windows=2))
    db = sqlite3.connect(path / "meta.sqlite")
    try:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            SCHEMA_VERSION,)
    finally:
        db.close()
    assert fsck.check(path, deep=True) == []


def test_fsck_finds_a_block_checksum_that_does_not_match(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store(path) as store:
        put(store, store.default_user_id, "f", os.urandom(200 * KIB), 1)
    tamper(path, "UPDATE blobs SET block_crc32c = x'0000000000000000'")
    assert fsck.check(path) == []  # lengths only
    assert any("CRC32Cs do not match" in p for p in fsck.check(path, deep=True))
    tamper(path, "UPDATE blobs SET block_crc32c = x'00000000'")
    assert any("block CRC32Cs for" in p for p in fsck.check(path))


def test_limits_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMOUNT_STORE_LIMITS", "upload_max_fileparts_default=4, part_lifetime=60.5")
    with Store(tmp_path / "s") as store:
        assert store.limits == Limits(upload_max_fileparts_default=4, part_lifetime=60.5)
        assert store.get_config(store.default_user_id).max_parts == 4
    # Explicit limits win over the environment.
    with Store(tmp_path / "s", limits=Limits()) as store:
        assert store.limits == Limits()
    for bad in ("nonsense=1", "part_lifetime=soon"):
        monkeypatch.setenv("FSMOUNT_STORE_LIMITS", bad)
        with pytest.raises(errors.InvalidArgument):
            Store(tmp_path / "s")


def test_big_blobs_are_deleted_in_the_background(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "s"
    with Store(path, clock=lambda: now[0], limits=Limits(unlinked_grace=10)) as store:
        uid = store.default_user_id
        data = os.urandom(20 * 64 * KIB)  # 20 chunk files: more than are deleted inline
        for i in range(20):
            store.save_big_file_part(uid, 1, i, 20, data[i * 64 * KIB : (i + 1) * 64 * KIB])
        doc = store.upload_media(uid, InputFileBig(1, 20, "big"))
        store.create_file(uid, ROOT_ID, "big", (doc.location,))
        files = store.blob_files(uid, doc.location)
        assert len(files) == 20
        store.unlink(uid, ROOT_ID, "big")
        now[0] += 11
        assert store.expire() == (0, 1)
        store.deleter.wait(timeout=60)
        assert not files[0].parent.exists()
        # Deduplicated finalize: the new upload's parts are trash, deleted the same way.
        for i in range(20):
            store.save_big_file_part(uid, 2, i, 20, data[i * 64 * KIB : (i + 1) * 64 * KIB])
            store.save_big_file_part(uid, 3, i, 20, data[i * 64 * KIB : (i + 1) * 64 * KIB])
        store.upload_media(uid, InputFileBig(2, 20, "again"))
        store.upload_media(uid, InputFileBig(3, 20, "and again"))
    # close() waited for the deleter: nothing but the one blob is left.
    assert not [p for p in (path / "parts").rglob("*") if p.is_file()]
    assert len(list((path / "blobs").glob("*/*"))) == 1
    assert fsck.check(path) == []


class RecordingHooks(StoreHooks):
    """Records the hook points the store passes, in order."""

    def __init__(self) -> None:
        self.points: list[HookPoint] = []

    def reached(self, point: HookPoint) -> None:
        self.points.append(point)


def test_hooks_object_sees_the_points_of_a_rename_in_order(tmp_path: Path) -> None:
    hooks = RecordingHooks()
    with Store(tmp_path / "s", hooks=hooks) as store:
        uid = store.default_user_id
        store.create_file(uid, ROOT_ID, "a")
        hooks.points.clear()
        store.rename(uid, ROOT_ID, "a", ROOT_ID, "b")
        assert hooks.points == [HookPoint.RENAME_BEFORE_COMMIT, HookPoint.COMMIT,
                                HookPoint.COMMITTED, HookPoint.RENAME_AFTER_COMMIT]
        hooks.points.clear()
        store.lookup(uid, ROOT_ID, "b")  # a read transaction passes no point
        assert hooks.points == []


def test_hook_specs_are_parsed_in_one_place() -> None:
    assert hooks_from_spec("") is NO_HOOKS
    pause = hooks_from_spec("commit:3=/dev/null")
    assert (pause.point, pause.path) == (HookPoint.COMMIT, "/dev/null")  # type: ignore[attr-defined]
    for bad in ("commit", "nonsense=/dev/null", "commit:0=/dev/null", "commit:x=/dev/null"):
        with pytest.raises(ValueError):
            hooks_from_spec(bad)


def test_a_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.mkdir()
    (path / "meta.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(errors.InvalidArgument) as ei:
        Store(path)
    assert "meta.sqlite" in str(ei.value)
    # The locks were released: a good store opens exclusively afterwards.
    (path / "meta.sqlite").unlink()
    Store(path, exclusive=True).close()


def fsck_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsmount.cli", "fsck", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_fsck_verb(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store(path) as store:
        put(store, store.default_user_id, "f", b"x" * 3000, 1)
    res = fsck_cli("--store", str(path), "--deep")
    assert res.returncode == 0 and "clean" in res.stdout, res.stderr
    (path / "blobs" / "ee").mkdir()
    (path / "blobs" / "ee" / ("e" * 64 + ".zz")).mkdir()
    res = fsck_cli("--store", str(path))
    assert res.returncode == 1 and "orphan blob" in res.stdout
    res = fsck_cli("--store", str(tmp_path / "nowhere"))
    assert res.returncode == 1 and "no store" in res.stderr and "Traceback" not in res.stderr
    (path / "meta.sqlite").write_bytes(b"garbage" * 1000)
    for extra in ("meta.sqlite-wal", "meta.sqlite-shm"):
        (path / extra).unlink(missing_ok=True)
    res = fsck_cli("--store", str(path))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr


def test_expiry_works_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsmount.store.lifetime as store_module

    monkeypatch.setattr(store_module, "EXPIRE_BATCH", 3)
    now = [1000.0]
    with Store(tmp_path / "s", clock=lambda: now[0], limits=Limits(part_lifetime=60)) as store:
        uid = store.default_user_id
        for i in range(10):
            store.save_file_part(uid, 50 + i, 0, b"p")
        now[0] += 61
        assert store.expire() == (10, 0)
        assert not [p for p in (tmp_path / "s" / "parts").rglob("*") if p.is_file()]
    assert fsck.check(tmp_path / "s") == []



def test_file_hashes_answer_exactly_the_offsets_window(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 5)
    with Store(tmp_path / "s") as store:
        uid = store.default_user_id
        doc = put(store, uid, "f", data, 1).segments[0]
        got = store.get_file_hashes(uid, doc.location, MIB + 300 * KIB)
        assert got[0].offset == MIB + 256 * KIB
        assert got[-1].offset + got[-1].limit == 2 * MIB
        assert len(store.get_file_hashes(uid, doc.location, 0)) == 8
        tail = store.get_file_hashes(uid, doc.location, 3 * MIB)
        assert [(h.offset, h.limit) for h in tail] == [(3 * MIB, 5)]
        # Each answer carries the SHA-256 of its own block (the store reads only the slice
        # of the document's block hashes that it answers).
        for off in (0, MIB + 300 * KIB, 2 * MIB, 3 * MIB):
            for h in store.get_file_hashes(uid, doc.location, off):
                assert h.hash == hashlib.sha256(data[h.offset : h.offset + h.limit]).digest()
        # windows=N answers what N calls from the offset's window on would, in one call.
        two = store.get_file_hashes(uid, doc.location, MIB + 300 * KIB, windows=2)
        assert two == (store.get_file_hashes(uid, doc.location, MIB + 300 * KIB)
                       + store.get_file_hashes(uid, doc.location, 2 * MIB))
        assert store.get_file_hashes(uid, doc.location, 0, windows=9)[-1] == tail[-1]
        with pytest.raises(errors.InvalidArgument):
            store.get_file_hashes(uid, doc.location, 0, windows=0)


async def test_embedded_remote_reads_several_windows_in_one_call(tmp_path: Path) -> None:
    from fsmount.embedded import EmbeddedRemote
    from fsmount.remote import FileLocation

    remote = EmbeddedRemote.open(tmp_path / "s")
    try:
        data = os.urandom(3 * MIB + 5)
        doc = put(remote.store, remote.user_id, "f", data, 1).segments[0]
        got, hashes = await remote.get_file_windows(doc.location, MIB, 8, hashes=False)
        assert hashes == []  # not asked for
        # Stops after the short last window.
        assert [len(r.bytes) for r in got] == [MIB, MIB, 5]
        assert b"".join(r.bytes for r in got) == data[MIB:]
        # With hashes: exactly what getFileHashes answers for those windows.
        got, hashes = await remote.get_file_windows(doc.location, MIB, 8, hashes=True,
                                                    crc32c=False)
        assert b"".join(r.bytes for r in got) == data[MIB:]
        assert hashes == remote.store.get_file_hashes(remote.user_id, doc.location, MIB, windows=3)
        assert [h.offset for h in hashes] == list(range(MIB, 3 * MIB + 5, 128 * 1024))
        assert all(h.hash == hashlib.sha256(data[h.offset:h.offset + h.limit]).digest()
                   for h in hashes)
        # Fewer windows than the document has: hashes of those only, the next one prefetched.
        got, hashes = await remote.get_file_windows(doc.location, 0, 2, hashes=True,
                                                    crc32c=False)
        assert [len(r.bytes) for r in got] == [MIB, MIB]
        assert hashes[-1].offset + hashes[-1].limit == 2 * MIB and len(hashes) == 16
        # Past the end: one empty window, as getFile answers there, and no hashes.
        parts, hashes = await remote.get_file_windows(doc.location, 4 * MIB, 2, hashes=True)
        assert [r.bytes for r in parts] == [b""] and hashes == []
        # The first window's error is the answer.
        with pytest.raises(errors.FileIdInvalid):
            await remote.get_file_windows(FileLocation(doc.id, doc.access_hash + 1), 0, 2)
        with pytest.raises(errors.OffsetInvalid):
            await remote.get_file_windows(doc.location, -MIB, 2)
        with pytest.raises(errors.OffsetInvalid):
            await remote.get_file_windows(doc.location, 4096, 2)
        with pytest.raises(errors.InvalidArgument):
            await remote.get_file_windows(doc.location, 0, 0)
        with pytest.raises(errors.InvalidArgument):
            await remote.get_file_windows(doc.location, 0, 9)  # more than MAX_RUN_WINDOWS
        # By default the checks are what a reader verifies with (CRC32Cs here).
        got, checks = await remote.get_file_windows(doc.location, 0, 8)
        assert checks == await remote.get_file_checksums(doc.location, 0) + [
            c for w in (1, 2, 3) for c in await remote.get_file_checksums(doc.location, w * MIB)]
    finally:
        await remote.aclose()


async def test_embedded_remote_is_a_remote(tmp_path: Path) -> None:
    from fsmount.embedded import EmbeddedRemote
    from fsmount.remote import Remote

    remote = EmbeddedRemote.open(tmp_path / "s", user="erin")
    try:
        assert isinstance(remote, Remote)
        assert remote.user_id == remote.store.user_id("erin")
        assert (await remote.getattr(ROOT_ID)).is_dir
    finally:
        await remote.aclose()
        await remote.aclose()  # idempotent
    with pytest.raises(errors.FsmountError):
        remote.store.getattr(remote.user_id, ROOT_ID)  # the store was closed with it
