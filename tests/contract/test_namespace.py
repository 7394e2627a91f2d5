"""The namespace: lookup, listing, mkdir, files, symlinks, setattr, rename, unlink, rmdir."""

from __future__ import annotations

import os

import pytest

from fsmount import errors
from fsmount.remote import ROOT_ID, NodeKind

from .helpers import Harness, after_grace, read_all, upload

R = ROOT_ID


async def test_root_exists_for_every_user(harness: Harness) -> None:
    for remote in (harness.remote, harness.remote_b):
        root = await remote.getattr(R)
        assert root.is_dir and root.id == R
        assert (await remote.list_folder(R)).entries == ()


async def test_mkdir_lookup_getattr(harness: Harness) -> None:
    r = harness.remote
    d = await r.mkdir(R, "docs", 0o700)
    assert d.kind is NodeKind.DIR and d.mode == 0o700 and d.parent == R and d.name == "docs"
    assert (await r.lookup(R, "docs")).id == d.id
    assert (await r.getattr(d.id)).name == "docs"
    with pytest.raises(errors.AlreadyExists):
        await r.mkdir(R, "docs")
    with pytest.raises(errors.NotFound):
        await r.lookup(R, "nope")
    with pytest.raises(errors.NotFound):
        await r.getattr(999_999)
    with pytest.raises(errors.NotFound):
        await r.mkdir(999_999, "x")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "nul\0", "x" * 256, "é" * 128])
async def test_invalid_names(harness: Harness, name: str) -> None:
    r = harness.remote
    with pytest.raises(errors.InvalidName):
        await r.mkdir(R, name)
    with pytest.raises(errors.InvalidName):
        await r.create_file(R, name)
    with pytest.raises(errors.InvalidName):
        await r.symlink(R, name, "target")
    await r.create_file(R, "ok")
    with pytest.raises(errors.InvalidName):
        await r.rename(R, "ok", R, name)


async def test_longest_name_is_255_bytes(harness: Harness) -> None:
    name = "é" * 127 + "x"  # 255 bytes of UTF-8
    node = await harness.remote.create_file(R, name)
    assert (await harness.remote.lookup(R, name)).id == node.id


async def test_not_a_directory_errors(harness: Harness) -> None:
    r = harness.remote
    f = await r.create_file(R, "file")
    with pytest.raises(errors.NotADirectory):
        await r.mkdir(f.id, "x")
    with pytest.raises(errors.NotADirectory):
        await r.lookup(f.id, "x")
    with pytest.raises(errors.NotADirectory):
        await r.list_folder(f.id)
    with pytest.raises(errors.NotADirectory):
        await r.create_file(f.id, "x")
    with pytest.raises(errors.NotADirectory):
        await r.rmdir(R, "file")


async def test_list_folder_pages_in_name_order(harness: Harness) -> None:
    r = harness.remote
    names = [f"n{i:03d}" for i in range(25)] + ["B", "a", "é"]
    for n in names:
        await r.create_file(R, n)
    seen: list[str] = []
    after = None
    for _ in range(100):
        page = await r.list_folder(R, after, limit=7)
        seen += [e.name for e in page.entries]
        after = page.next_after
        if after is None:
            break
    assert seen == sorted(names)
    with pytest.raises(errors.InvalidArgument):
        await r.list_folder(R, None, limit=0)


async def test_list_folder_is_per_folder(harness: Harness) -> None:
    r = harness.remote
    d = await r.mkdir(R, "d")
    await r.create_file(d.id, "inner")
    await r.create_file(R, "outer")
    assert [e.name for e in (await r.list_folder(R)).entries] == ["d", "outer"]
    assert [e.name for e in (await r.list_folder(d.id)).entries] == ["inner"]


async def test_create_file_with_content_and_replace(harness: Harness) -> None:
    r = harness.remote
    one = await upload(r, b"one")
    two = await upload(r, b"two, longer")
    f = await r.create_file(R, "f", (one.location,), mode=0o600, mtime_ns=123)
    assert f.size == 3 and f.mode == 0o600 and f.mtime_ns == 123
    assert f.segments[0].location == one.location
    with pytest.raises(errors.AlreadyExists):
        await r.create_file(R, "f", (two.location,))
    g = await r.create_file(R, "f", (two.location,), replace=True)
    assert g.size == len(b"two, longer")
    got = await r.lookup(R, "f")
    assert got.id == g.id and got.segments[0].location == two.location
    # The old content had no other file: it goes after the grace period.
    assert (await r.get_file(one.location, 0, 4096)).bytes == b"one"
    await after_grace(harness)
    with pytest.raises(errors.FileReferenceExpired):
        await r.get_file(one.location, 0, 4096)
    await r.mkdir(R, "dir")
    with pytest.raises(errors.IsADirectory):
        await r.create_file(R, "dir", replace=True)


async def test_empty_file_has_no_segments(harness: Harness) -> None:
    f = await harness.remote.create_file(R, "empty")
    assert f.size == 0 and f.segments == () and f.kind is NodeKind.FILE


async def test_multi_segment_file(harness: Harness) -> None:
    r = harness.remote
    a = await upload(r, b"a" * 5000)
    b = await upload(r, b"b" * 7)
    f = await r.create_file(R, "two", (a.location, b.location, a.location))
    assert f.size == 10007
    assert [s.id for s in f.segments] == [a.id, b.id, a.id]


async def test_set_content_swaps_atomically_and_bumps_version(harness: Harness) -> None:
    r = harness.remote
    one = await upload(r, b"first")
    f = await r.create_file(R, "f", (one.location,))
    harness.clock.advance(5)
    two = await upload(r, b"second!")
    g = await r.set_content(f.id, (two.location,))
    assert g.id == f.id and g.size == 7 and g.version == f.version + 1
    assert g.mtime_ns > f.mtime_ns and g.ctime_ns > f.ctime_ns
    assert await read_all(r, g.segments[0]) == b"second!"
    h = await r.set_content(f.id, (), mtime_ns=42)
    assert h.size == 0 and h.mtime_ns == 42 and h.version == g.version + 1
    d = await r.mkdir(R, "d")
    with pytest.raises(errors.IsADirectory):
        await r.set_content(d.id, ())
    with pytest.raises(errors.NotFound):
        await r.set_content(987654, ())


async def test_symlink(harness: Harness) -> None:
    r = harness.remote
    s = await r.symlink(R, "link", "../some/where")
    assert s.kind is NodeKind.SYMLINK and s.target == "../some/where"
    assert s.size == len("../some/where")
    assert (await r.lookup(R, "link")).target == "../some/where"
    with pytest.raises(errors.AlreadyExists):
        await r.symlink(R, "link", "x")
    with pytest.raises(errors.InvalidArgument):
        await r.symlink(R, "bad", "")
    await r.unlink(R, "link")


async def test_setattr_mode_and_mtime(harness: Harness) -> None:
    r = harness.remote
    f = await r.create_file(R, "f")
    harness.clock.advance(1)
    g = await r.setattr(f.id, mode=0o4751)
    assert g.mode == 0o4751 and g.ctime_ns > f.ctime_ns and g.mtime_ns == f.mtime_ns
    h = await r.setattr(f.id, mtime_ns=5_000_000_000)
    assert h.mtime_ns == 5_000_000_000 and h.mode == 0o4751
    with pytest.raises(errors.NotFound):
        await r.setattr(424242, mode=0o644)


async def test_changes_update_parent_mtime_and_ctime(harness: Harness) -> None:
    r = harness.remote
    d = await r.mkdir(R, "d")
    harness.clock.advance(2)
    await r.create_file(d.id, "f")
    d2 = await r.getattr(d.id)
    assert d2.mtime_ns > d.mtime_ns


async def test_rename_within_and_across_folders_keeps_id(harness: Harness) -> None:
    r = harness.remote
    doc = await upload(r, b"payload")
    f = await r.create_file(R, "a", (doc.location,))
    g = await r.rename(R, "a", R, "b")
    assert g.id == f.id and g.name == "b"
    with pytest.raises(errors.NotFound):
        await r.lookup(R, "a")
    d = await r.mkdir(R, "d")
    h = await r.rename(R, "b", d.id, "c")
    assert h.id == f.id and h.parent == d.id
    assert (await r.lookup(d.id, "c")).segments[0].location == doc.location
    with pytest.raises(errors.NotFound):
        await r.rename(R, "missing", R, "x")


async def test_folder_move_carries_its_subtree(harness: Harness) -> None:
    r = harness.remote
    a = await r.mkdir(R, "a")
    b = await r.mkdir(a.id, "b")
    f = await r.create_file(b.id, "deep")
    dest = await r.mkdir(R, "dest")
    moved = await r.rename(R, "a", dest.id, "a2")
    assert moved.id == a.id
    assert (await r.lookup(b.id, "deep")).id == f.id
    assert (await r.lookup((await r.lookup(dest.id, "a2")).id, "b")).id == b.id


async def test_rename_over_existing_file_replaces_it(harness: Harness) -> None:
    r = harness.remote
    old = await upload(r, b"old")
    new = await upload(r, b"new")
    await r.create_file(R, "target", (old.location,))
    src = await r.create_file(R, "src", (new.location,))
    with pytest.raises(errors.AlreadyExists):
        await r.rename(R, "src", R, "target", replace=False)
    moved = await r.rename(R, "src", R, "target")
    assert moved.id == src.id
    assert (await r.lookup(R, "target")).segments[0].location == new.location
    assert [e.name for e in (await r.list_folder(R)).entries] == ["target"]
    assert (await r.get_file(old.location, 0, 4096)).bytes == b"old"
    await after_grace(harness)
    with pytest.raises(errors.FileReferenceExpired):
        await r.get_file(old.location, 0, 4096)


async def test_rename_kind_rules(harness: Harness) -> None:
    r = harness.remote
    await r.create_file(R, "file")
    d = await r.mkdir(R, "dir")
    await r.mkdir(R, "empty")
    full = await r.mkdir(R, "full")
    await r.create_file(full.id, "x")
    with pytest.raises(errors.IsADirectory):
        await r.rename(R, "file", R, "dir")
    with pytest.raises(errors.NotADirectory):
        await r.rename(R, "dir", R, "file")
    with pytest.raises(errors.NotEmpty):
        await r.rename(R, "dir", R, "full")
    with pytest.raises(errors.InvalidArgument):
        await r.rename(R, "dir", d.id, "inside")
    sub = await r.mkdir(d.id, "sub")
    with pytest.raises(errors.InvalidArgument):
        await r.rename(R, "dir", sub.id, "deeper")
    moved = await r.rename(R, "dir", R, "empty")
    assert moved.id == d.id
    assert [e.name for e in (await r.list_folder(R)).entries] == ["empty", "file", "full"]
    # Renaming onto itself is a no-op.
    same = await r.rename(R, "file", R, "file")
    assert same.name == "file"


async def test_unlink_and_rmdir(harness: Harness) -> None:
    r = harness.remote
    d = await r.mkdir(R, "d")
    await r.create_file(d.id, "f")
    with pytest.raises(errors.IsADirectory):
        await r.unlink(R, "d")
    with pytest.raises(errors.NotEmpty):
        await r.rmdir(R, "d")
    await r.unlink(d.id, "f")
    with pytest.raises(errors.NotFound):
        await r.unlink(d.id, "f")
    await r.rmdir(R, "d")
    with pytest.raises(errors.NotFound):
        await r.rmdir(R, "d")
    with pytest.raises(errors.NotFound):
        await r.getattr(d.id)


async def test_unlink_and_rmdir_answer_the_folders_new_mtime(harness: Harness) -> None:
    r = harness.remote
    d = await r.mkdir(R, "d")
    await r.create_file(d.id, "f")
    at = await r.unlink(d.id, "f")
    folder = await r.getattr(d.id)
    assert at is not None and at == folder.mtime_ns == folder.ctime_ns
    at = await r.rmdir(R, "d")
    root = await r.getattr(R)
    assert at is not None and at == root.mtime_ns == root.ctime_ns


async def test_node_ids_are_never_reused(harness: Harness) -> None:
    r = harness.remote
    ids = set()
    for i in range(5):
        n = await r.create_file(R, "same")
        assert n.id not in ids
        ids.add(n.id)
        await r.unlink(R, "same")
        del i


async def test_users_have_separate_namespaces(harness: Harness) -> None:
    a = await harness.remote.mkdir(R, "alice-only")
    with pytest.raises(errors.NotFound):
        await harness.remote_b.lookup(R, "alice-only")
    b = await harness.remote_b.mkdir(R, "alice-only")
    # Ids are per user: both may have the same number without seeing each other.
    assert a.id == b.id == 2
    await harness.remote_b.create_file(b.id, "bob-file")
    assert (await harness.remote.list_folder(a.id)).entries == ()


async def test_statfs_counts_files_and_bytes(harness: Harness) -> None:
    r = harness.remote
    before = await r.statfs()
    assert before.used_bytes == 0 and before.quota_bytes == 0
    doc = await upload(r, os.urandom(3000))
    await r.create_file(R, "a", (doc.location,))
    await r.create_file(R, "b", (doc.location,))
    await r.mkdir(R, "d")
    usage = await r.statfs()
    assert usage.used_bytes == 6000
    assert usage.files == before.files + 3
    assert (await harness.remote_b.statfs()).used_bytes == 0


async def test_put_file_creates_and_replaces_a_small_file_in_one_call(harness: Harness) -> None:
    """putFile: a small file with its whole content, checked by MD5, created or replaced
    by name (the node of a replaced file is a new one, as createFile replace= makes it),
    hashed as any upload; the errors of its parts, finalize and link."""
    import hashlib

    r = harness.remote
    data = os.urandom(700 * 1024 + 3)  # two parts
    md5 = hashlib.md5(data).hexdigest()
    node = await r.put_file(R, "small.bin", data, md5_checksum=md5, mode=0o600,
                            mtime_ns=1_600_000_000_123_456_789)
    assert node.kind is NodeKind.FILE and node.size == len(data) and node.mode == 0o600
    assert node.mtime_ns == 1_600_000_000_123_456_789
    assert (await r.lookup(R, "small.bin")).id == node.id
    (doc,) = node.segments
    assert doc.sha256 == hashlib.sha256(data).hexdigest() and doc.md5 == md5
    assert await read_all(r, doc) == data
    again = os.urandom(5000)
    new = await r.put_file(R, "small.bin", again, md5_checksum=hashlib.md5(again).hexdigest())
    assert new.id != node.id and new.size == 5000
    assert [n.name for n in (await r.list_folder(R)).entries] == ["small.bin"]
    assert await read_all(r, new.segments[0]) == again
    empty = await r.put_file(R, "empty", b"", md5_checksum=hashlib.md5(b"").hexdigest())
    assert empty.size == 0 and empty.segments == ()
    with pytest.raises(errors.AlreadyExists):
        await r.put_file(R, "empty", b"x", md5_checksum=hashlib.md5(b"x").hexdigest(),
                         replace=False)
    with pytest.raises(errors.Md5ChecksumInvalid):
        await r.put_file(R, "bad", data, md5_checksum="0" * 32)
    with pytest.raises(errors.NotFound):
        await r.lookup(R, "bad")  # nothing linked
    d = await r.mkdir(R, "dir")
    with pytest.raises(errors.IsADirectory):
        await r.put_file(R, "dir", b"x", md5_checksum=hashlib.md5(b"x").hexdigest())
    with pytest.raises(errors.NotFound):
        await r.put_file(999_999, "x", b"x", md5_checksum=hashlib.md5(b"x").hexdigest())
    with pytest.raises(errors.InvalidName):
        await r.put_file(d.id, "a/b", b"x", md5_checksum=hashlib.md5(b"x").hexdigest())
    big = b"\0" * (harness.limits.big_file_threshold + 1)
    with pytest.raises(errors.InvalidArgument):
        await r.put_file(R, "big", big, md5_checksum=hashlib.md5(big).hexdigest())
    assert harness.fsck() == []


async def test_statfs_reports_the_free_space_of_the_stores_disk(harness: Harness) -> None:
    usage = await harness.remote.statfs()
    if harness.store_path is None:
        # Content in an object store: there is no disk whose free space it could report.
        assert usage.disk_free_bytes is None and usage.disk_total_bytes is None
        return
    st = os.statvfs(harness.store_path)
    assert usage.disk_total_bytes == st.f_blocks * st.f_frsize
    assert usage.disk_free_bytes is not None
    # Other processes write to the same disk meanwhile: within 256 MiB.
    assert abs(usage.disk_free_bytes - st.f_bavail * st.f_frsize) < 256 << 20


async def test_a_files_whole_sha256_is_kept_with_its_content(harness: Harness) -> None:
    import hashlib

    r = harness.remote
    a, b = os.urandom(5000), os.urandom(7000)
    da, db = await upload(r, a), await upload(r, b)
    whole = hashlib.sha256(a + b).hexdigest()
    # Two segments: the writer's digest is kept (the store cannot know it without reading).
    f = await r.create_file(R, "two", (da.location, db.location), sha256=whole)
    assert f.sha256 == whole and (await r.getattr(f.id)).sha256 == whole
    assert (await r.lookup(R, "two")).sha256 == whole
    listed = {n.name: n for n in (await r.list_folder(R)).entries}
    assert listed["two"].sha256 == whole
    # Without one, a multi-segment file has none; one segment or none: the store's own.
    g = await r.set_content(f.id, (da.location, db.location))
    assert g.sha256 is None
    assert (await r.set_content(f.id, (db.location,))).sha256 == db.sha256
    assert (await r.create_file(R, "empty")).sha256 == hashlib.sha256(b"").hexdigest()
    # A digest that contradicts the one segment's, or is not hex, is refused.
    with pytest.raises(errors.InvalidArgument):
        await r.set_content(f.id, (da.location,), sha256=db.sha256)
    with pytest.raises(errors.InvalidArgument):
        await r.create_file(R, "bad", (da.location, db.location), sha256="XYZ")
    assert (await r.getattr(f.id)).sha256 == db.sha256  # unchanged by the refusals

