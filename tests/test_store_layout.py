"""The store's on-disk layout and its orphan sweep, on a fake filesystem (pyfakefs).

SQLite writes through its own C file layer, which pyfakefs cannot see, so these tests cover
the pure layout functions: where parts and blobs live, and what the sweep removes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from fsmount import errors
from fsmount.store import blob_relpath, file_id_key, sweep_files, upload_relpath

SHA = "ab" + "0" * 62


def test_upload_dir_names_the_user_and_the_unsigned_file_id() -> None:
    assert upload_relpath(3, 255) == "parts/3/00000000000000ff"
    # A negative ``long`` and its unsigned spelling are the same upload.
    assert file_id_key(-1) == file_id_key((1 << 64) - 1) == -1
    assert upload_relpath(1, file_id_key(-1)) == "parts/1/ffffffffffffffff"
    with pytest.raises(errors.InvalidArgument):
        file_id_key(1 << 64)
    with pytest.raises(errors.InvalidArgument):
        file_id_key(-(1 << 63) - 1)


def test_blob_dir_is_sharded_by_hash_prefix() -> None:
    assert blob_relpath(SHA, "t0k") == f"blobs/ab/{SHA}.t0k"


def test_sweep_removes_exactly_the_unreferenced_files(fs: FakeFilesystem) -> None:
    root = Path("/store")
    keep_blob = blob_relpath(SHA, "keep")
    for rel in (f"{keep_blob}/0", f"{keep_blob}/1", f"{blob_relpath(SHA, 'orphan')}/0",
                f"{blob_relpath('cd' + '1' * 62, 'x')}/0"):
        fs.create_file(root / rel, contents="b")
    fs.create_file(root / "blobs" / "stray-file", contents="?")
    live = upload_relpath(1, 7)
    dead = upload_relpath(1, 8)
    for rel in (f"{live}/0", f"{live}/1", f"{live}/2", f"{dead}/0"):
        fs.create_file(root / rel, contents="p")
    fs.create_file(root / "parts" / "tmp" / "p1234", contents="half-written")
    fs.create_file(root / "meta.sqlite", contents="db")

    removed = sweep_files(root, {keep_blob}, {live: {"0", "2"}})

    assert sorted(removed) == sorted([
        blob_relpath(SHA, "orphan"),
        blob_relpath("cd" + "1" * 62, "x"),
        "blobs/stray-file",
        f"{live}/1",
        dead,
        "parts/tmp/p1234",
    ])
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert left == sorted([f"{keep_blob}/0", f"{keep_blob}/1", f"{live}/0", f"{live}/2",
                           "meta.sqlite"])
    # Emptied shard directories go too; parts/tmp stays for the next writer.
    assert not (root / "blobs" / "cd").exists()
    assert (root / "parts" / "tmp").is_dir()


def test_sweep_of_an_empty_store_is_a_no_op(fs: FakeFilesystem) -> None:
    fs.create_dir("/s/blobs")
    fs.create_dir("/s/parts/tmp")
    assert sweep_files(Path("/s"), set(), {}) == []
    assert Path("/s/parts/tmp").is_dir()
