"""The store's POSIX schema (version 3): a version-2 store is upgraded in place, and fsck
checks link counts and extra names."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fsmount import fsck
from fsmount.remote import ROOT_ID, NodeKind, Owner
from fsmount.store import Store
from fsmount.store.sqlite_meta import SCHEMA_VERSION


def sql(path: Path, *statements: str) -> list[tuple]:
    db = sqlite3.connect(path / "meta.sqlite")
    try:
        rows: list[tuple] = []
        for s in statements:
            rows = db.execute(s).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


def test_a_version_2_store_is_upgraded_with_folder_link_counts(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store(path) as store:
        uid = store.default_user_id
        a = store.mkdir(uid, ROOT_ID, "a")
        store.mkdir(uid, a.id, "b")
        store.mkdir(uid, a.id, "c")
        store.create_file(uid, a.id, "f")
    # Back to what version 2 had: no POSIX columns, no extra names, no attributes.
    sql(path, *(f"ALTER TABLE nodes DROP COLUMN {c}"
                for c in ("uid", "gid", "rdev", "atime_ns", "nlink")),
        "DROP TABLE node_names", "DROP TABLE xattrs",
        "UPDATE meta SET value = 2 WHERE key = 'schema_version'")
    assert fsck.check(path) == []  # fsck reads version-2 stores too
    with Store(path) as store:
        node = store.lookup(uid, ROOT_ID, "a")
        assert (node.nlink, node.uid, node.gid, node.atime_ns) == (4, None, None, None)
        assert store.getattr(uid, ROOT_ID).nlink == 3
        assert store.lookup(uid, a.id, "f").nlink == 1
        f = store.lookup(uid, a.id, "f")
        store.link(uid, f.id, ROOT_ID, "g")
        store.set_xattr(uid, f.id, "user.x", b"1")
        store.mknod(uid, ROOT_ID, "p", NodeKind.FIFO, 0o600, owner=Owner(1, 2))
    assert sql(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (SCHEMA_VERSION,)]
    assert fsck.check(path) == []


def test_fsck_finds_wrong_link_counts_and_dangling_names(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store(path) as store:
        uid = store.default_user_id
        f = store.create_file(uid, ROOT_ID, "f")
        store.link(uid, f.id, ROOT_ID, "g")
        d = store.mkdir(uid, ROOT_ID, "d")
    sql(path, f"UPDATE nodes SET nlink = 5 WHERE id = {f.id}",
        f"UPDATE nodes SET nlink = 9 WHERE id = {d.id}",
        "INSERT INTO node_names(user_id, parent, name, node_id) VALUES "
        f"({uid}, {ROOT_ID}, 'ghost', 999)",
        f"INSERT INTO xattrs(user_id, node_id, name, value) VALUES ({uid}, 998, 'user.a', x'')")
    problems = "\n".join(fsck.check(path))
    assert f"node {uid}/{f.id} has nlink 5, but 2 names" in problems
    assert f"folder {uid}/{d.id} has nlink 9" in problems
    assert "names a missing node 999" in problems
    assert "belongs to a missing node" in problems
