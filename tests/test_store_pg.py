"""Two store processes ("nodes") over one PostgreSQL + S3 store, in this process: each node
is a :class:`Store` with a directory of its own and the same metadata and content URLs.

What a node keeps in memory must never be needed by the other: parts of one upload saved at
both nodes finalize at either; a commit on one wakes a long poll on the other; reclaiming
content on one waits for a finalize in flight on the other.  The engines are the session's
(tests/engines.py); each test has a schema and a bucket prefix of its own.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from pathlib import Path

import pytest

from fsmount import errors, fsck
from fsmount.protocol import KIB, Limits
from fsmount.remote import ROOT_ID, FileLocation, InputFile, InputFileBig
from fsmount.store import HookPoint, Store, StoreHooks, file_id_key
from fsmount.store.rows import UploadKey

LIMITS = Limits(part_lifetime=3600.0, unlinked_grace=0.0)
#: Parts of this size are hashed and promoted as they are (no concatenation at finalize).
PART = 64 * KIB


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _nodes(tmp_path: Path, pg_url: str, s3_url: str, **kw: object) -> tuple[Store, Store]:
    a = Store(tmp_path / "node-a", metadata=pg_url, content=s3_url, limits=LIMITS, **kw)
    try:
        b = Store(tmp_path / "node-b", metadata=pg_url, content=s3_url, limits=LIMITS)
    except BaseException:
        a.close()
        raise
    return a, b


def _read(store: Store, uid: int, loc: FileLocation, size: int) -> bytes:
    out = bytearray()
    for off in range(0, size, 1 << 20):
        out += store.get_file(uid, loc, off, 1 << 20).bytes
    return bytes(out)


def test_two_nodes_serve_one_namespace_and_one_store_id(tmp_path: Path, pg_url: str,
                                                         s3_url: str) -> None:
    a, b = _nodes(tmp_path, pg_url, s3_url)
    try:
        assert a.default_user_id == b.default_user_id
        uid = a.default_user_id
        d = a.mkdir(uid, ROOT_ID, "made-on-a")
        assert b.lookup(uid, ROOT_ID, "made-on-a").id == d.id
        e = b.mkdir(uid, d.id, "made-on-b")
        assert e.id != d.id  # node ids come from one counter
        assert [n.name for n in a.list_folder(uid, d.id).entries] == ["made-on-b"]
        assert a.store_id() == b.store_id()
        assert (tmp_path / "node-a" / "metadata.url").read_text().strip() == pg_url
    finally:
        b.close()
        a.close()
    assert fsck.check(tmp_path / "node-a") == []


def test_parts_saved_at_both_nodes_finalize_at_either(tmp_path: Path, pg_url: str,
                                                      s3_url: str) -> None:
    a, b = _nodes(tmp_path, pg_url, s3_url)
    try:
        uid = a.default_user_id
        data = secrets.token_bytes(PART * 9 + 1000)
        pieces = [data[i:i + PART] for i in range(0, len(data), PART)]
        # Alternating nodes: neither node's incremental hashing sees the whole upload.
        fid = secrets.randbits(62)
        for i, piece in enumerate(pieces):
            (a if i % 2 == 0 else b).save_big_file_part(uid, fid, i, len(pieces), piece)
        doc = b.upload_media(uid, InputFileBig(fid, len(pieces), "alt.bin"))
        assert doc.sha256 == hashlib.sha256(data).hexdigest()
        assert doc.md5 == hashlib.md5(data).hexdigest()
        assert _read(a, uid, doc.location, len(data)) == data
        # The first parts through A, the rest through B (a client that moved to B after
        # A went away), finalized at A: A continues from what it hashed.
        data2 = secrets.token_bytes(PART * 8)
        fid2 = secrets.randbits(62)
        for i in range(8):
            (a if i < 5 else b).save_big_file_part(uid, fid2, i, 8, data2[i * PART:(i + 1) * PART])
        up = UploadKey(uid, file_id_key(fid2))
        stamps = [a.content.part_stamp(up, i) for i in range(8)]
        resumed = a.states.resume(up, stamps)  # type: ignore[arg-type]
        assert resumed is not None and resumed[1] == 5
        doc2 = a.upload_media(uid, InputFileBig(fid2, 8, "moved.bin"))
        assert doc2.sha256 == hashlib.sha256(data2).hexdigest()
        f = b.create_file(uid, ROOT_ID, "moved.bin", (doc2.location,))
        assert b.getattr(uid, f.id).size == len(data2)
        assert _read(b, uid, doc2.location, len(data2)) == data2
    finally:
        b.close()
        a.close()
    assert fsck.check(tmp_path / "node-a") == []


def test_a_commit_on_one_node_wakes_a_long_poll_on_the_other(tmp_path: Path, pg_url: str,
                                                             s3_url: str) -> None:
    a, b = _nodes(tmp_path, pg_url, s3_url)
    try:
        uid = a.default_user_id
        cursor = b.get_changes(uid, None, 0).cursor
        # Only a notification can wake B's poll within the bound: its own looks at the log
        # are turned off.
        b.changes.poll = 30.0
        answers: list[object] = []
        waiter = threading.Thread(target=lambda: answers.append(b.get_changes(uid, cursor, 20)))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive(), "the poll answered with nothing to answer"
        t0 = time.monotonic()
        node = a.mkdir(uid, ROOT_ID, "wake-up")
        waiter.join(5)
        woke_after = time.monotonic() - t0
        assert not waiter.is_alive()
        batch = answers[0]
        assert [c.node_id for c in batch.changes] == [node.id]  # type: ignore[attr-defined]
        assert woke_after < 1.0, woke_after
    finally:
        b.close()
        a.close()


class _PauseOnce(StoreHooks):
    """Blocks the first thread that reaches ``point`` (once ``armed``) until ``go`` is set."""

    def __init__(self, point: HookPoint, armed: bool = True) -> None:
        self.point = point
        self.armed = armed
        self.reached_it = threading.Event()
        self.go = threading.Event()

    def reached(self, point: HookPoint) -> None:
        if point is self.point and self.armed and not self.reached_it.is_set():
            self.reached_it.set()
            self.go.wait(30)


def test_reclaiming_on_one_node_never_deletes_a_blob_a_finalize_on_the_other_shares(
        tmp_path: Path, pg_url: str, s3_url: str) -> None:
    hooks = _PauseOnce(HookPoint.FINALIZE_BEFORE_COMMIT)
    clock_a, clock_b = Clock(), Clock()
    a = Store(tmp_path / "node-a", metadata=pg_url, content=s3_url, limits=LIMITS,
              clock=clock_a, hooks=hooks)
    b = Store(tmp_path / "node-b", metadata=pg_url, content=s3_url, limits=LIMITS,
              clock=clock_b)
    try:
        uid = a.default_user_id
        data = secrets.token_bytes(3 * PART)
        md5 = hashlib.md5(data).hexdigest()
        # An unlinked document of that content, made through B: it expires first.
        fid = secrets.randbits(62)
        for i in range(3):
            b.save_file_part(uid, fid, i, data[i * PART:(i + 1) * PART])
        old = b.upload_media(uid, InputFile(fid, 3, "old.bin", md5))
        # The same content again through A, 10 s later: its finalize shares old's blob.
        clock_a.now += 10
        fid2 = secrets.randbits(62)
        for i in range(3):
            a.save_file_part(uid, fid2, i, data[i * PART:(i + 1) * PART])
        done: list[object] = []
        fin = threading.Thread(
            target=lambda: done.append(a.upload_media(uid, InputFile(fid2, 3, "new.bin", md5))))
        fin.start()
        assert hooks.reached_it.wait(30)
        # B reclaims the old document (expired by its clock, the new one is not); it waits
        # for A's commit, which holds the store's write lock.
        clock_b.now += LIMITS.part_lifetime + 1
        reclaimed: list[tuple[int, int]] = []
        sweeper = threading.Thread(target=lambda: reclaimed.append(b.expire()))
        sweeper.start()
        sweeper.join(0.5)
        assert sweeper.is_alive(), "reclaiming ran while a finalize held the write lock"
        hooks.go.set()
        fin.join(30)
        sweeper.join(30)
        assert not fin.is_alive() and not sweeper.is_alive()
        assert reclaimed == [(0, 1)]
        new = done[0]
        with pytest.raises(errors.FileReferenceExpired):
            b.get_file(uid, old.location, 0, 4096)
        assert _read(b, uid, new.location, len(data)) == data  # type: ignore[attr-defined]
        b.create_file(uid, ROOT_ID, "kept.bin", (new.location,))  # type: ignore[attr-defined]
    finally:
        hooks.go.set()
        b.close()
        a.close()
    assert fsck.check(tmp_path / "node-a") == []


def test_a_node_whose_content_is_elsewhere_is_refused(tmp_path: Path, pg_url: str,
                                                      s3_url: str) -> None:
    a = Store(tmp_path / "node-a", metadata=pg_url, content=s3_url)
    try:
        with pytest.raises(errors.InvalidArgument, match="same --content"):
            Store(tmp_path / "node-b", metadata=pg_url)  # content in its own directory
    finally:
        a.close()


def test_nodes_with_local_content_must_share_the_directory(tmp_path: Path,
                                                           pg_url: str) -> None:
    a = Store(tmp_path / "node-a", metadata=pg_url)
    try:
        with Store(tmp_path / "node-a", metadata=pg_url):  # the same directory: fine
            pass
        with pytest.raises(errors.InvalidArgument, match="same store directory"):
            Store(tmp_path / "node-b", metadata=pg_url)  # its blobs would be elsewhere
    finally:
        a.close()


def test_a_metadata_url_with_a_password_or_on_a_sqlite_store_is_refused(
        tmp_path: Path, pg_url: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="PGPASSWORD"):
        Store(tmp_path / "s1", metadata="postgresql://u:secret@127.0.0.1:1/db")
    assert not (tmp_path / "s1" / "metadata.url").exists()
    # A database that cannot be reached: a clean error, and nothing recorded (a corrected
    # URL is not refused afterwards).
    with pytest.raises(errors.FsmountError, match="unavailable"):
        Store(tmp_path / "s1", metadata="postgresql://u@127.0.0.1:1/db")
    assert not (tmp_path / "s1" / "metadata.url").exists()
    Store(tmp_path / "s1", metadata=pg_url).close()
    assert (tmp_path / "s1" / "metadata.url").read_text().strip() == pg_url
    Store(tmp_path / "s2").close()
    with pytest.raises(errors.InvalidArgument, match="meta.sqlite"):
        Store(tmp_path / "s2", metadata=pg_url)


def test_fsck_of_a_pg_store_finds_a_missing_blob_object(tmp_path: Path, pg_url: str,
                                                        s3_url: str) -> None:
    a = Store(tmp_path / "node-a", metadata=pg_url, content=s3_url)
    try:
        uid = a.default_user_id
        data = b"fsck me" * 1000
        f = a.put_file(uid, ROOT_ID, "f", data, md5_checksum=hashlib.md5(data).hexdigest())
        assert fsck.check(tmp_path / "node-a") == []
        doc = f.segments[0]
        with a.txn.run(write=False) as tx:
            key = tx.blob_key(doc.sha256)
        assert key is not None
        a.content.delete(key)
        problems = fsck.check(tmp_path / "node-a")
        assert any("missing" in p for p in problems), problems
    finally:
        a.close()


def test_a_node_reconnects_after_its_database_connections_are_cut(
        tmp_path: Path, pg_url: str, pg_engine: object) -> None:
    """Connections cut while idle (as a PostgreSQL restart cuts them): the next call of each
    node reopens its connection before its transaction starts; the listener reconnects too
    and long polls still wake."""
    import psycopg

    a = Store(tmp_path / "node-a", metadata=pg_url)
    b = Store(tmp_path / "node-a", metadata=pg_url)  # the content directory they share
    try:
        uid = a.default_user_id
        a.mkdir(uid, ROOT_ID, "before")
        with psycopg.connect(pg_engine.dsn, autocommit=True) as admin:  # type: ignore[attr-defined]
            cut = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()").fetchone()
        assert cut is not None and cut[0] >= 2  # each node's connection (and listeners)
        # An idle connection found dead is reopened before the transaction starts.
        a.mkdir(uid, ROOT_ID, "after")
        assert b.lookup(uid, ROOT_ID, "after").kind.value == "dir"
        assert [n.name for n in b.list_folder(uid, ROOT_ID).entries] == ["after", "before"]
        # B's listener came back: a change through A wakes B's poll (its own looks off).
        b.changes.poll = 30.0
        cursor = b.get_changes(uid, None, 0).cursor
        answers: list[object] = []
        waiter = threading.Thread(target=lambda: answers.append(b.get_changes(uid, cursor, 20)))
        waiter.start()
        waiter.join(0.5)
        t0 = time.monotonic()
        a.mkdir(uid, ROOT_ID, "wake")
        waiter.join(10)
        assert not waiter.is_alive() and answers[0].changes  # type: ignore[attr-defined]
        assert time.monotonic() - t0 < 1.0
    finally:
        b.close()
        a.close()
    assert fsck.check(tmp_path / "node-a") == []


def test_a_transaction_cut_before_its_commit_changes_nothing(
        tmp_path: Path, pg_url: str, pg_engine: object) -> None:
    """The connection dies between a rename's statements and its COMMIT: the call fails
    with a clean error, the other node sees no part of it, and the next call works."""
    import psycopg

    hooks = _PauseOnce(HookPoint.COMMIT, armed=False)
    a = Store(tmp_path / "node-a", metadata=pg_url, hooks=hooks)
    b = Store(tmp_path / "node-a", metadata=pg_url)  # the content directory they share
    try:
        uid = a.default_user_id
        a.mkdir(uid, ROOT_ID, "old")
        hooks.armed = True
        failures: list[BaseException] = []

        def rename() -> None:
            try:
                a.rename(uid, ROOT_ID, "old", ROOT_ID, "new")
            except BaseException as exc:
                failures.append(exc)

        worker = threading.Thread(target=rename)
        worker.start()
        assert hooks.reached_it.wait(30)
        with psycopg.connect(pg_engine.dsn, autocommit=True) as admin:  # type: ignore[attr-defined]
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "application_name = '' AND pid <> pg_backend_pid() AND "
                          "state = 'idle in transaction'")
        hooks.go.set()
        worker.join(30)
        assert not worker.is_alive()
        assert len(failures) == 1 and isinstance(failures[0], errors.FsmountError), failures
        assert [n.name for n in b.list_folder(uid, ROOT_ID).entries] == ["old"]
        assert a.rename(uid, ROOT_ID, "old", ROOT_ID, "new").name == "new"
        assert [n.name for n in b.list_folder(uid, ROOT_ID).entries] == ["new"]
    finally:
        hooks.go.set()
        b.close()
        a.close()
    assert fsck.check(tmp_path / "node-a") == []


def test_the_orphan_sweep_at_open_runs_only_when_no_other_node_has_the_store_open(
        tmp_path: Path, pg_url: str, s3_url: str) -> None:
    """An object nobody references yet (what a finalize in flight on another node has just
    copied) survives the start of a second node; the start of a node alone reclaims it."""
    from fsmount.store.s3content import S3Content, parse_s3_url

    orphan = "blobs/ee/" + "e" * 64 + ".zz"
    a = Store(tmp_path / "node-a", metadata=pg_url, content=s3_url)
    try:
        S3Content(parse_s3_url(s3_url))._put(orphan + "/0", b"in flight")
        Store(tmp_path / "node-b", metadata=pg_url, content=s3_url).close()
        assert fsck.check(tmp_path / "node-a") == [f"orphan blob {orphan}"]
    finally:
        a.close()
    Store(tmp_path / "node-b").close()  # alone: sweeps
    assert fsck.check(tmp_path / "node-a") == []


def test_a_write_lock_held_too_long_is_store_locked_and_the_node_goes_on(
        tmp_path: Path, pg_url: str, pg_engine: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another session holds the store's write lock past ``lock_timeout``: the waiting call
    fails with STORE_LOCKED (HTTP 503, retried by clients) and the next call works."""
    import psycopg

    from fsmount.store import pg_meta

    monkeypatch.setattr(pg_meta, "LOCK_TIMEOUT_MS", 300)
    a = Store(tmp_path / "node-a", metadata=pg_url)
    try:
        uid = a.default_user_id
        key = pg_meta._lock_key(a.meta.schema, pg_meta.WRITE_LOCK)  # type: ignore[attr-defined]
        with psycopg.connect(pg_engine.dsn, autocommit=True) as holder:  # type: ignore[attr-defined]
            holder.execute("SELECT pg_advisory_lock(%s)", (key,))
            t0 = time.monotonic()
            with pytest.raises(errors.StoreLocked):
                a.mkdir(uid, ROOT_ID, "blocked")
            assert time.monotonic() - t0 < 10
            with pytest.raises(errors.NotFound):
                a.lookup(uid, ROOT_ID, "blocked")  # reads take no lock
            holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
        assert a.mkdir(uid, ROOT_ID, "after").name == "after"
    finally:
        a.close()


def test_postgresql_restarted_during_traffic(tmp_path: Path) -> None:
    """Two nodes writing and reading while PostgreSQL restarts (fast shutdown: every
    connection cut, transactions in flight included): calls fail only with the store's
    clean errors while it is down, every call that succeeded is there afterwards, both
    nodes go on by themselves, and fsck finds at most orphans, which the next lone start
    reclaims."""
    import psycopg
    from engines import postgres

    with postgres() as pg:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA s")
        url = f"{pg.dsn}?options=-csearch_path%3Ds"
        # Content in one directory both nodes share (as on a shared file system).
        nodes = [Store(tmp_path / "node", metadata=url) for _ in range(2)]
        try:
            uid = nodes[0].default_user_id
            made: list[str] = []
            failed: list[BaseException] = []
            stop = threading.Event()

            def traffic(i: int) -> None:
                for k in range(100_000):
                    if stop.is_set():
                        return
                    name = f"n{i}-{k}"
                    data = name.encode() * 50
                    try:
                        nodes[i].put_file(uid, ROOT_ID, name, data,
                                          md5_checksum=hashlib.md5(data).hexdigest())
                        made.append(name)
                        nodes[1 - i].lookup(uid, ROOT_ID, name)
                    except errors.FsmountError as exc:
                        failed.append(exc)
                    except BaseException as exc:  # anything else is a failure of the test
                        failed.append(exc)
                        raise

            workers = [threading.Thread(target=traffic, args=(i,)) for i in range(2)]
            for w in workers:
                w.start()
            deadline = time.monotonic() + 30
            while len(made) < 10 and time.monotonic() < deadline:
                time.sleep(0.01)
            before = len(made)
            pg.restart()
            deadline = time.monotonic() + 30
            while len(made) < before + 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            stop.set()
            for w in workers:
                w.join(30)
            assert len(made) >= before + 20, "the nodes did not go on after the restart"
            assert all(isinstance(e, errors.FsmountError) for e in failed), failed
            listed = {n.name for n in nodes[1].list_folder(uid, ROOT_ID, limit=10000).entries}
            assert set(made) <= listed
            for name in made[::7]:
                node = nodes[0].lookup(uid, ROOT_ID, name)
                got = nodes[1].get_file(uid, node.segments[0].location, 0, 4096).bytes
                assert got == name.encode() * 50
        finally:
            for st in nodes:
                st.close()
        # What a call cut by the restart may leave is content nobody references (a part
        # placed whose row's commit failed), never a reference to missing content; the next
        # start of a node that has the store alone reclaims it.
        problems = fsck.check(tmp_path / "node")
        assert all(p.startswith("orphan ") for p in problems), problems
        Store(tmp_path / "node").close()
        assert fsck.check(tmp_path / "node") == []


def test_a_finalize_whose_commit_answer_is_lost_is_not_undone(
        tmp_path: Path, pg_url: str, s3_url: str) -> None:
    """The connection breaks after PostgreSQL committed a finalize but before its answer
    arrived: the node looks the transaction up and reports success -- it must not put the
    promoted parts back (that would leave the committed blob without its objects)."""
    import psycopg

    class LoseNextCommitAnswer(StoreHooks):
        armed = False

        def reached(self, point: HookPoint) -> None:
            if point is HookPoint.FINALIZE_BEFORE_COMMIT:
                self.armed = True

    hooks = LoseNextCommitAnswer()
    a = Store(tmp_path / "node-a", metadata=pg_url, content=s3_url, hooks=hooks)
    b = Store(tmp_path / "node-b", metadata=pg_url, content=s3_url)
    try:
        conn = a.meta._conn  # type: ignore[attr-defined]
        real = conn.execute

        def execute(sql: object, *args: object, **kw: object) -> object:
            out = real(sql, *args, **kw)
            if hooks.armed and isinstance(sql, str) and sql.endswith("COMMIT"):
                hooks.armed = False
                conn.close()  # the commit happened; its answer is lost with the connection
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return out

        conn.execute = execute
        uid = a.default_user_id
        data = secrets.token_bytes(2 * PART)
        fid = secrets.randbits(62)
        for i in range(2):
            a.save_big_file_part(uid, fid, i, 2, data[i * PART:(i + 1) * PART])
        doc = a.upload_media(uid, InputFileBig(fid, 2, "lost.bin"))
        assert not hooks.armed, "the finalize's commit was not the one answered"
        assert doc.sha256 == hashlib.sha256(data).hexdigest()
        b.create_file(uid, ROOT_ID, "lost.bin", (doc.location,))
        assert _read(b, uid, doc.location, len(data)) == data
    finally:
        b.close()
        a.close()
    assert fsck.check(tmp_path / "node-a") == []
