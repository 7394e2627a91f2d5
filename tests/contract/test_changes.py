"""The change feed: get_changes(cursor, timeout), a long poll of the user's namespace
changes (cursor None, wake on a change, timeout with none, per-user isolation, reset for a
cursor outside the log, bad arguments)."""

from __future__ import annotations

import pytest
import trio

from fsmount import errors
from fsmount.remote import ROOT_ID, ChangeBatch, ChangeKind

from .helpers import Harness, upload

R = ROOT_ID


async def test_no_cursor_answers_the_current_one_at_once(harness: Harness) -> None:
    r = harness.remote
    first = await r.get_changes(None, 30)  # the timeout does not apply without a cursor
    assert first.changes == () and not first.reset
    await r.mkdir(R, "d")
    second = await r.get_changes(None, 0)
    assert second.cursor > first.cursor and second.changes == ()


async def test_each_change_kind_is_reported_in_order(harness: Harness) -> None:
    r = harness.remote
    cursor = (await r.get_changes(None, 0)).cursor
    d = await r.mkdir(R, "d")
    f = await r.create_file(R, "f")
    doc = await upload(r, b"new content")
    await r.set_content(f.id, (doc.location,))
    await r.setattr(f.id, mode=0o600)
    await r.rename(R, "f", d.id, "g")
    await r.unlink(d.id, "g")
    await r.rmdir(R, "d")
    batch = await r.get_changes(cursor, 0)
    assert [(c.kind, c.node_id, c.parent, c.name) for c in batch.changes] == [
        (ChangeKind.CREATE, d.id, R, "d"),
        (ChangeKind.CREATE, f.id, R, "f"),
        (ChangeKind.CONTENT, f.id, R, "f"),
        (ChangeKind.ATTR, f.id, R, "f"),
        (ChangeKind.RENAME, f.id, d.id, "g"),
        (ChangeKind.DELETE, f.id, d.id, "g"),
        (ChangeKind.DELETE, d.id, R, "d"),
    ]
    rename = batch.changes[4]
    assert (rename.old_parent, rename.old_name) == (R, "f")
    assert batch.cursor == batch.changes[-1].cursor > cursor
    # Asking again from the answered cursor: nothing new.
    again = await r.get_changes(batch.cursor, 0)
    assert again.changes == () and again.cursor == batch.cursor and not again.reset


async def test_xattr_changes_are_reported_as_attr_changes_of_the_node(harness: Harness
                                                                      ) -> None:
    r = harness.remote
    d = await r.mkdir(R, "d")
    f = await r.create_file(d.id, "f")
    cursor = (await r.get_changes(None, 0)).cursor
    await r.set_xattr(f.id, "user.tag", b"red")
    set_ctime = (await r.getattr(f.id)).ctime_ns
    await r.remove_xattr(f.id, "user.tag")
    batch = await r.get_changes(cursor, 0)
    assert [(c.kind, c.node_id, c.parent, c.name) for c in batch.changes] == [
        (ChangeKind.ATTR, f.id, d.id, "f"), (ChangeKind.ATTR, f.id, d.id, "f")]
    assert batch.changes[0].at_ns == set_ctime
    assert batch.changes[1].at_ns == (await r.getattr(f.id)).ctime_ns


async def test_a_long_poll_wakes_on_a_change(harness: Harness) -> None:
    r = harness.remote
    cursor = (await r.get_changes(None, 0)).cursor
    got: list[ChangeBatch] = []
    waited = trio.Event()

    async def poll() -> None:
        waited.set()
        got.append(await r.get_changes(cursor, 30))

    with trio.fail_after(20):  # far less than the poll's 30 s: the change woke it
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await waited.wait()
            await trio.sleep(0.05)  # let the poll reach the store first (not needed for truth)
            await r.mkdir(R, "woke")
    assert [c.name for c in got[0].changes] == ["woke"]


async def test_a_long_poll_without_changes_answers_after_its_timeout(harness: Harness) -> None:
    r = harness.remote
    cursor = (await r.get_changes(None, 0)).cursor
    start = trio.current_time()
    with trio.fail_after(20):
        batch = await r.get_changes(cursor, 0.3)
    assert trio.current_time() - start >= 0.25
    assert batch.changes == () and not batch.reset and batch.cursor >= cursor


async def test_a_user_sees_only_its_own_changes(harness: Harness) -> None:
    a, b = harness.remote, harness.remote_b
    cursor_b = (await b.get_changes(None, 0)).cursor
    cursor_a = (await a.get_changes(None, 0)).cursor
    await a.mkdir(R, "alices")
    await b.mkdir(R, "bobs")
    assert [c.name for c in (await a.get_changes(cursor_a, 0)).changes] == ["alices"]
    assert [c.name for c in (await b.get_changes(cursor_b, 0)).changes] == ["bobs"]


async def test_a_cursor_outside_the_log_is_answered_with_a_reset(harness: Harness) -> None:
    r = harness.remote
    assert harness.store is not None
    harness.store.changes.keep = 2
    old = (await r.get_changes(None, 0)).cursor
    for i in range(70):  # the log is pruned every 64 cursors
        await r.mkdir(R, f"d{i}")
    batch = await r.get_changes(old, 0)
    assert batch.reset and batch.changes == ()
    now = (await r.get_changes(None, 0)).cursor
    assert batch.cursor == now
    assert not (await r.get_changes(now, 0)).reset
    future = await r.get_changes(now + 1000, 0)
    assert future.reset and future.cursor == now


@pytest.mark.parametrize("cursor, timeout", [(-1, 0), (0, -1), (0, 61), (0, float("inf"))])
async def test_bad_arguments_are_invalid(harness: Harness, cursor: int, timeout: float) -> None:
    with pytest.raises(errors.InvalidArgument):
        await harness.remote.get_changes(cursor, timeout)
