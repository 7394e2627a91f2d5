"""POSIX calls of the Remote interface: ownership, special files, hard links, times and
extended attributes, on every implementation (docs/protocol.md, "POSIX")."""

from __future__ import annotations

import pytest

from fsmount import errors
from fsmount.remote import (
    MAX_XATTR_TOTAL,
    MAX_XATTR_VALUE,
    ROOT_ID,
    NodeKind,
    Owner,
    XattrMode,
)

from .helpers import Harness, after_grace, read_all, upload

R = ROOT_ID


async def test_new_nodes_keep_the_owner_given_and_none_without(harness: Harness) -> None:
    r = harness.remote
    d = await r.mkdir(R, "d", 0o750, owner=Owner(1000, 100))
    f = await r.create_file(d.id, "f", (), mode=0o600, owner=Owner(1001, 101))
    s = await r.symlink(d.id, "s", "f", owner=Owner(1002, 102))
    plain = await r.create_file(R, "plain")
    assert (d.uid, d.gid, f.uid, f.gid, s.uid, s.gid) == (1000, 100, 1001, 101, 1002, 102)
    assert (plain.uid, plain.gid) == (None, None)
    assert (await r.lookup(d.id, "f")).uid == 1001
    assert [(n.name, n.uid) for n in (await r.list_folder(d.id)).entries] == [
        ("f", 1001), ("s", 1002)]
    with pytest.raises(errors.InvalidArgument):
        await r.mkdir(R, "bad", owner=Owner(-1, 0))


async def test_chown_sets_ids_and_ctime_and_keeps_the_other(harness: Harness) -> None:
    r = harness.remote
    f = await r.create_file(R, "f", (), owner=Owner(1, 2))
    harness.clock.advance(5)
    g = await r.chown(f.id, uid=0)
    assert (g.uid, g.gid) == (0, 2) and g.ctime_ns > f.ctime_ns
    assert g.mtime_ns == f.mtime_ns
    h = await r.chown(f.id, gid=4_000_000_000)
    assert (h.uid, h.gid) == (0, 4_000_000_000)
    assert (await r.getattr(f.id)).gid == 4_000_000_000
    with pytest.raises(errors.InvalidArgument):
        await r.chown(f.id, uid=2**32 - 1)
    with pytest.raises(errors.NotFound):
        await r.chown(999_999, uid=1)


async def test_set_times_keeps_nanoseconds_and_moves_ctime(harness: Harness) -> None:
    r = harness.remote
    f = await r.create_file(R, "f")
    assert f.atime_ns is None
    harness.clock.advance(3)
    g = await r.set_times(f.id, atime_ns=1_000_000_123, mtime_ns=2_000_000_456)
    assert (g.atime_ns, g.mtime_ns) == (1_000_000_123, 2_000_000_456)
    assert g.ctime_ns > f.ctime_ns
    h = await r.set_times(f.id, atime_ns=7)
    assert (h.atime_ns, h.mtime_ns) == (7, 2_000_000_456)
    with pytest.raises(errors.NotFound):
        await r.set_times(999_999, atime_ns=1)


@pytest.mark.parametrize("kind", [NodeKind.FIFO, NodeKind.SOCKET, NodeKind.CHARDEV,
                                  NodeKind.BLOCKDEV])
async def test_mknod_makes_special_files_without_content(harness: Harness,
                                                         kind: NodeKind) -> None:
    r = harness.remote
    n = await r.mknod(R, "n", kind, 0o640, 0x0103, owner=Owner(5, 6))
    assert (n.kind, n.mode, n.size, n.segments, n.uid, n.gid) == (kind, 0o640, 0, (), 5, 6)
    devices = (NodeKind.CHARDEV, NodeKind.BLOCKDEV)
    assert n.rdev == (0x0103 if kind in devices else 0)
    assert (await r.lookup(R, "n")).kind is kind
    with pytest.raises(errors.AlreadyExists):
        await r.mknod(R, "n", kind, 0o640)
    with pytest.raises(errors.InvalidArgument):
        await r.set_content(n.id, ())
    await r.unlink(R, "n")
    with pytest.raises(errors.NotFound):
        await r.lookup(R, "n")
    assert harness.fsck() == []


async def test_mknod_refuses_kinds_that_are_not_special(harness: Harness) -> None:
    for kind in (NodeKind.FILE, NodeKind.DIR, NodeKind.SYMLINK):
        with pytest.raises(errors.InvalidArgument):
            await harness.remote.mknod(R, "x", kind, 0o644)
    with pytest.raises(errors.NotFound):
        await harness.remote.mknod(999_999, "x", NodeKind.FIFO, 0o644)


async def test_link_shares_the_node_and_counts_names(harness: Harness) -> None:
    r = harness.remote
    data = b"shared content" * 100
    doc = await upload(r, data)
    f = await r.create_file(R, "a", (doc.location,))
    d = await r.mkdir(R, "d")
    harness.clock.advance(2)
    b = await r.link(f.id, d.id, "b")
    assert (b.id, b.name, b.parent, b.nlink) == (f.id, "b", d.id, 2)
    assert b.ctime_ns > f.ctime_ns
    assert (await r.getattr(d.id)).mtime_ns == b.ctime_ns
    assert (await r.lookup(R, "a")).nlink == 2
    assert [(n.name, n.id) for n in (await r.list_folder(d.id)).entries] == [("b", f.id)]
    # Content changes through one name are seen through the other.
    doc2 = await upload(r, b"new content")
    await r.set_content(f.id, (doc2.location,))
    seen = await r.lookup(d.id, "b")
    assert seen.size == len(b"new content")
    assert await read_all(r, seen.segments[0]) == b"new content"
    with pytest.raises(errors.AlreadyExists):
        await r.link(f.id, R, "a")
    with pytest.raises(errors.NotPermitted):
        await r.link(d.id, R, "dlink")
    with pytest.raises(errors.NotFound):
        await r.link(999_999, R, "x")
    with pytest.raises(errors.NotADirectory):
        await r.link(f.id, f.id, "x")
    with pytest.raises(errors.InvalidName):
        await r.link(f.id, R, "a/b")
    assert harness.fsck() == []


async def test_unlink_of_one_name_keeps_the_others(harness: Harness) -> None:
    r = harness.remote
    data = b"kept" * 1000
    doc = await upload(r, data)
    f = await r.create_file(R, "a", (doc.location,))
    d = await r.mkdir(R, "d")
    await r.link(f.id, d.id, "b")
    await r.link(f.id, R, "c")
    # The name on the node's own row goes first: another name takes its place.
    await r.unlink(R, "a")
    left = await r.getattr(f.id)
    assert left.nlink == 2 and (left.parent, left.name) in ((d.id, "b"), (R, "c"))
    assert sorted(n.name for n in (await r.list_folder(R)).entries) == ["c", "d"]
    await after_grace(harness)
    assert await read_all(r, (await r.lookup(R, "c")).segments[0]) == data
    await r.unlink(d.id, "b")
    assert (await r.lookup(R, "c")).nlink == 1
    with pytest.raises(errors.NotFound):
        await r.lookup(d.id, "b")
    await r.rmdir(R, "d")
    usage = await r.statfs()
    assert usage.used_bytes == len(data) and usage.files == 2  # root and the file
    await r.unlink(R, "c")
    with pytest.raises(errors.NotFound):
        await r.getattr(f.id)
    assert (await r.statfs()).used_bytes == 0
    assert harness.fsck() == []


async def test_a_folder_with_only_a_link_in_it_is_not_empty(harness: Harness) -> None:
    r = harness.remote
    f = await r.create_file(R, "a")
    d = await r.mkdir(R, "d")
    await r.link(f.id, d.id, "b")
    with pytest.raises(errors.NotEmpty):
        await r.rmdir(R, "d")
    e = await r.mkdir(R, "e")
    with pytest.raises(errors.NotEmpty):
        await r.rename(R, "e", R, "d")
    assert (await r.getattr(e.id)).name == "e"


async def test_rename_of_and_over_links(harness: Harness) -> None:
    r = harness.remote
    f = await r.create_file(R, "a")
    d = await r.mkdir(R, "d")
    await r.link(f.id, d.id, "b")
    # Two names of one node: rename does nothing (POSIX).
    same = await r.rename(R, "a", d.id, "b")
    assert same.id == f.id
    assert {n.name for n in (await r.list_folder(R)).entries} == {"a", "d"}
    # Renaming the extra name moves only that name.
    moved = await r.rename(d.id, "b", R, "b2")
    assert (moved.id, moved.name, moved.parent, moved.nlink) == (f.id, "b2", R, 2)
    assert (await r.list_folder(d.id)).entries == ()
    # Renaming another file over one name of a linked node keeps its other name.
    g = await r.create_file(R, "g")
    over = await r.rename(R, "g", R, "a")
    assert over.id == g.id and over.nlink == 1
    kept = await r.lookup(R, "b2")
    assert kept.id == f.id and kept.nlink == 1
    # Creating a file over a linked name (replace) keeps the other names, too.
    await r.link(f.id, R, "b3")
    new = await r.create_file(R, "b3", (), replace=True)
    assert new.id != f.id and (await r.lookup(R, "b2")).nlink == 1
    assert harness.fsck() == []


async def test_xattrs_set_get_list_remove(harness: Harness) -> None:
    r = harness.remote
    f = await r.create_file(R, "f")
    assert await r.list_xattrs(f.id) == []
    harness.clock.advance(2)
    await r.set_xattr(f.id, "user.b", b"\x00\xffbinary")
    await r.set_xattr(f.id, "user.a", b"")
    await r.set_xattr(f.id, "trusted.t", b"t")
    await r.set_xattr(f.id, "security.s", b"s")
    assert (await r.getattr(f.id)).ctime_ns > f.ctime_ns
    assert await r.get_xattr(f.id, "user.b") == b"\x00\xffbinary"
    assert await r.get_xattr(f.id, "user.a") == b""
    assert await r.list_xattrs(f.id) == ["security.s", "trusted.t", "user.a", "user.b"]
    await r.remove_xattr(f.id, "user.a")
    with pytest.raises(errors.NoSuchAttribute):
        await r.get_xattr(f.id, "user.a")
    with pytest.raises(errors.NoSuchAttribute):
        await r.remove_xattr(f.id, "user.a")
    with pytest.raises(errors.NotFound):
        await r.get_xattr(999_999, "user.a")
    with pytest.raises(errors.NotFound):
        await r.list_xattrs(999_999)
    # Other users do not see them.
    with pytest.raises(errors.NotFound):
        await harness.remote_b.get_xattr(f.id, "user.b")


async def test_xattr_create_and_replace_modes(harness: Harness) -> None:
    r = harness.remote
    f = await r.create_file(R, "f")
    with pytest.raises(errors.NoSuchAttribute):
        await r.set_xattr(f.id, "user.k", b"1", XattrMode.REPLACE)
    await r.set_xattr(f.id, "user.k", b"1", XattrMode.CREATE)
    with pytest.raises(errors.AlreadyExists):
        await r.set_xattr(f.id, "user.k", b"2", XattrMode.CREATE)
    await r.set_xattr(f.id, "user.k", b"3", XattrMode.REPLACE)
    assert await r.get_xattr(f.id, "user.k") == b"3"
    await r.set_xattr(f.id, "user.k", b"4")
    assert await r.get_xattr(f.id, "user.k") == b"4"


async def test_xattr_names_and_limits(harness: Harness) -> None:
    r = harness.remote
    f = await r.create_file(R, "f")
    for bad in ("", "nonamespace", "user.", "system.posix_acl_access", "user." + "x" * 251,
                "user.nul\0"):
        with pytest.raises(errors.InvalidArgument):
            await r.set_xattr(f.id, bad, b"v")
    with pytest.raises(errors.NotPermitted):
        await r.set_xattr(f.id, "user.fsmount.sha256", b"v")
    await r.set_xattr(f.id, "user." + "x" * 250, b"v")  # 255 bytes: the longest
    await r.set_xattr(f.id, "user.big", b"v" * MAX_XATTR_VALUE)
    with pytest.raises(errors.AttributeTooBig):
        await r.set_xattr(f.id, "user.big", b"v" * (MAX_XATTR_VALUE + 1))
    for i in range(MAX_XATTR_TOTAL // MAX_XATTR_VALUE - 2):
        await r.set_xattr(f.id, f"user.more{i}", b"m" * (MAX_XATTR_VALUE - 20))
    with pytest.raises(errors.AttributesFull):
        await r.set_xattr(f.id, "user.last", b"l" * MAX_XATTR_VALUE)
    # Replacing a value counts the new one instead of the old one.
    await r.set_xattr(f.id, "user.big", b"w" * MAX_XATTR_VALUE)
    assert await r.get_xattr(f.id, "user.big") == b"w" * MAX_XATTR_VALUE


async def test_xattrs_follow_the_node_through_rename_and_links(harness: Harness) -> None:
    r = harness.remote
    f = await r.create_file(R, "f")
    d = await r.mkdir(R, "d")
    await r.set_xattr(f.id, "user.tag", b"red")
    await r.set_xattr(d.id, "user.tag", b"folder")
    await r.rename(R, "f", d.id, "g")
    moved = await r.lookup(d.id, "g")
    assert await r.get_xattr(moved.id, "user.tag") == b"red"
    linked = await r.link(f.id, R, "h")
    assert await r.get_xattr(linked.id, "user.tag") == b"red"
    await r.unlink(d.id, "g")
    assert await r.get_xattr(f.id, "user.tag") == b"red"
    await r.unlink(R, "h")
    with pytest.raises(errors.NotFound):
        await r.get_xattr(f.id, "user.tag")
    assert await r.get_xattr(d.id, "user.tag") == b"folder"
    assert harness.fsck() == []
