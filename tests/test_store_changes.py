"""The store's change log: a row per namespace change in the change's own transaction,
bounded retention with a reset for a cursor that fell out of it, long polls that wake on a
commit, and the schema upgrade of a store from before the log (version 2)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from fsmount import errors
from fsmount.remote import ROOT_ID, ChangeKind
from fsmount.store import Store
from fsmount.store.sqlite_meta import SCHEMA_VERSION


def _kinds(store: Store, uid: int, cursor: int) -> list[tuple[ChangeKind, str]]:
    return [(c.kind, c.name) for c in store.get_changes(uid, cursor, 0).changes]


def test_every_namespace_change_is_logged_with_its_folder_and_stamp(tmp_path: Path) -> None:
    with Store(tmp_path / "s") as store:
        uid = store.default_user_id
        start = store.get_changes(uid, None, 0).cursor
        d = store.mkdir(uid, ROOT_ID, "d")
        f = store.create_file(uid, d.id, "f")
        store.setattr(uid, f.id, mode=0o600)
        store.set_content(uid, f.id, ())
        store.symlink(uid, d.id, "l", "f")
        g = store.create_file(uid, d.id, "f", replace=True)  # a delete and a create
        store.rename(uid, d.id, "f", ROOT_ID, "g")
        store.unlink(uid, ROOT_ID, "g")
        store.unlink(uid, d.id, "l")
        store.rmdir(uid, ROOT_ID, "d")
        batch = store.get_changes(uid, start, 0)
        got = [(c.kind, c.node_id, c.parent, c.name, c.old_parent, c.old_name)
               for c in batch.changes]
        assert got[:4] == [
            (ChangeKind.CREATE, d.id, ROOT_ID, "d", None, None),
            (ChangeKind.CREATE, f.id, d.id, "f", None, None),
            (ChangeKind.ATTR, f.id, d.id, "f", None, None),
            (ChangeKind.CONTENT, f.id, d.id, "f", None, None),
        ]
        assert [k for k, *_ in got[4:]] == [ChangeKind.CREATE, ChangeKind.DELETE,
                                             ChangeKind.CREATE, ChangeKind.RENAME,
                                             ChangeKind.DELETE, ChangeKind.DELETE,
                                             ChangeKind.DELETE]
        assert got[6][1] == g.id and got[7] == (ChangeKind.RENAME, g.id, ROOT_ID, "g", d.id, "f")
        cursors = [c.cursor for c in batch.changes]
        assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
        assert batch.cursor == cursors[-1] and not batch.reset
        # The stamp is the ctime the change gave the node (what a cache compares with).
        assert batch.changes[0].at_ns == d.ctime_ns
        # A failed change logs nothing: it rolled back with its row.
        with pytest.raises(errors.NotFound):
            store.unlink(uid, ROOT_ID, "nothing")
        assert store.get_changes(uid, batch.cursor, 0).changes == ()


def test_an_xattr_change_is_logged_as_an_attr_change_stamped_with_the_new_ctime(
        tmp_path: Path) -> None:
    with Store(tmp_path / "s") as store:
        uid = store.default_user_id
        d = store.mkdir(uid, ROOT_ID, "d")
        f = store.create_file(uid, d.id, "f")
        start = store.get_changes(uid, None, 0).cursor
        store.set_xattr(uid, f.id, "user.tag", b"red")
        set_ctime = store.getattr(uid, f.id).ctime_ns
        store.remove_xattr(uid, f.id, "user.tag")
        removed_ctime = store.getattr(uid, f.id).ctime_ns
        batch = store.get_changes(uid, start, 0)
        assert [(c.kind, c.node_id, c.parent, c.name, c.at_ns) for c in batch.changes] == [
            (ChangeKind.ATTR, f.id, d.id, "f", set_ctime),
            (ChangeKind.ATTR, f.id, d.id, "f", removed_ctime),
        ]
        # Refused changes roll back with their log rows.
        with pytest.raises(errors.NoSuchAttribute):
            store.remove_xattr(uid, f.id, "user.tag")
        with pytest.raises(errors.NotPermitted):
            store.set_xattr(uid, f.id, "user.fsmount.sha256", b"x")
        assert store.get_changes(uid, batch.cursor, 0).changes == ()


def test_a_cursor_older_than_the_log_keeps_or_from_the_future_resets(tmp_path: Path) -> None:
    with Store(tmp_path / "s") as store:
        uid = store.default_user_id
        store.changes.keep = 3
        start = store.get_changes(uid, None, 0).cursor
        for i in range(200):
            store.mkdir(uid, ROOT_ID, f"d{i}")
        late = store.get_changes(uid, start, 0)
        assert late.reset and late.changes == ()
        now = late.cursor
        assert _kinds(store, uid, now - 1) == [(ChangeKind.CREATE, "d199")]
        rows = sqlite3.connect(tmp_path / "s" / "meta.sqlite").execute(
            "SELECT COUNT(*) FROM changes").fetchone()[0]
        assert rows <= 3 + 64  # pruned every 64 cursors down to 3
        assert store.get_changes(uid, now + 10, 0).reset
        for bad in (-1, "1", 1.5, True):
            with pytest.raises(errors.InvalidArgument):
                store.get_changes(uid, bad, 0)  # type: ignore[arg-type]
        for bad_t in (-1, 61, float("nan"), "1"):
            with pytest.raises(errors.InvalidArgument):
                store.get_changes(uid, now, bad_t)  # type: ignore[arg-type]


def test_a_long_poll_wakes_on_a_commit_and_close_ends_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    uid = store.default_user_id
    other = store.ensure_user("other")
    cursor = store.get_changes(uid, None, 0).cursor
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(store.get_changes(uid, cursor, 30)))
    t.start()
    store.mkdir(other, ROOT_ID, "not-mine")  # wakes the poll, which finds nothing of its user
    store.mkdir(uid, ROOT_ID, "mine")
    t.join(timeout=30)
    assert not t.is_alive()
    batch = got[0]
    assert [c.name for c in batch.changes] == ["mine"]  # type: ignore[attr-defined]
    # A poll with no change answers after its timeout, with the cursor unchanged for it.
    t0 = time.monotonic()
    idle = store.get_changes(uid, batch.cursor, 0.2)  # type: ignore[attr-defined]
    assert idle.changes == () and time.monotonic() - t0 >= 0.2
    t = threading.Thread(target=lambda: got.append(store.get_changes(uid, idle.cursor, 60)))
    t.start()
    store.close()
    t.join(timeout=30)
    assert not t.is_alive() and got[-1].changes == ()  # type: ignore[attr-defined]


def test_a_store_from_before_the_change_log_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store(path) as store:
        uid = store.default_user_id
        store.mkdir(uid, ROOT_ID, "old")
    db = sqlite3.connect(path / "meta.sqlite")
    db.execute("DROP TABLE changes")
    db.execute("DROP TABLE change_floors")
    db.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with Store(path) as store:
        start = store.get_changes(uid, None, 0).cursor
        assert start == 0
        store.mkdir(uid, ROOT_ID, "new")
        assert _kinds(store, uid, start) == [(ChangeKind.CREATE, "new")]
    db = sqlite3.connect(path / "meta.sqlite")
    try:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            SCHEMA_VERSION,) == (3,)
    finally:
        db.close()
