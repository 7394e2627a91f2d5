"""The change feed's follower (fsmount.feed) and what the filesystem does with each change
(fsmount.fuse_ops.Operations.apply_changes on the node cache), in-process over a real
store: up at start, every batch handed over, a reset or a lost store brings the caches down
and the follower up again, a server without the feed is fallen back from and said so; each
change kind drops exactly its node, names and folders, and a change of this mount's own is
skipped."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import trio
from server.harness import running_server

from fsmount import fuse_ops
from fsmount.embedded import EmbeddedRemote
from fsmount.feed import FeedFollower, start_feed_follower
from fsmount.httpremote import HttpRemote
from fsmount.inodes import FEED_TIMEOUT
from fsmount.remote import ROOT_ID, Change, ChangeKind
from fsmount.store import Store

DEADLINE = 10.0


class Recorder:
    """A FeedTarget that records what the follower tells it (and can hold a batch)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.changes: list[Change] = []
        self.hold: trio.Event | None = None

    async def apply_changes(self, changes: Sequence[Change]) -> None:
        self.changes.extend(changes)
        self.events.append("changes")
        if self.hold is not None:
            await self.hold.wait()

    async def feed_up(self) -> None:
        self.events.append("up")

    async def feed_down(self) -> None:
        self.events.append("down")


async def until(cond: object, what: str) -> None:
    with trio.fail_after(DEADLINE):
        while not cond():  # type: ignore[operator]
            await trio.sleep(0.005)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "s")
    try:
        yield s
    finally:
        s.close()


async def test_the_follower_comes_up_and_hands_over_every_change(store: Store) -> None:
    remote = EmbeddedRemote(store, store.default_user_id)
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        follower = start_feed_follower(nursery, remote, rec)
        await until(lambda: follower.healthy, "the feed up")
        assert rec.events == ["up"]
        await remote.mkdir(ROOT_ID, "d")
        f = await remote.create_file(ROOT_ID, "f")
        await remote.setattr(f.id, mode=0o600)
        await until(lambda: len(rec.changes) == 3, "three changes")
        assert [c.kind for c in rec.changes] == [ChangeKind.CREATE, ChangeKind.CREATE,
                                                 ChangeKind.ATTR]
        assert "down" not in rec.events
        nursery.cancel_scope.cancel()


async def test_a_reset_brings_the_caches_down_and_up_again(store: Store) -> None:
    remote = EmbeddedRemote(store, store.default_user_id)
    store.changes.keep = 1
    rec = Recorder()
    rec.hold = trio.Event()
    async with trio.open_nursery() as nursery:
        follower = start_feed_follower(nursery, remote, rec)
        await until(lambda: follower.healthy, "the feed up")
        await remote.mkdir(ROOT_ID, "first")
        await until(lambda: rec.changes, "the first batch")
        # While the mount is busy with that batch, the log moves on past its cursor.
        for i in range(70):
            await remote.mkdir(ROOT_ID, f"d{i}")
        rec.hold.set()
        await until(lambda: rec.events[-2:] == ["down", "up"], "down and up again")
        assert follower.fallbacks == 1 and follower.healthy
        nursery.cancel_scope.cancel()


async def test_a_closed_store_is_a_lost_feed(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    store = Store(tmp_path / "s")
    remote = EmbeddedRemote(store, store.default_user_id)
    rec = Recorder()
    caplog.set_level(logging.INFO, logger="fsmount.feed")
    async with trio.open_nursery() as nursery:
        follower = FeedFollower(remote, rec, poll_timeout=0.2, restart_interval=0.05)
        nursery.start_soon(follower.run)
        await until(lambda: follower.healthy, "the feed up")
        await trio.to_thread.run_sync(store.close)
        await until(lambda: "down" in rec.events, "the fallback")
        assert not follower.healthy
        await trio.sleep(0.3)  # several failed restarts: still one line
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if "1 s only" in r.getMessage()]
    assert len(lines) == 1, lines


async def test_a_server_without_the_feed_is_fallen_back_from(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s"
    caplog.set_level(logging.INFO, logger="fsmount.feed")
    with Store(path) as store:
        async with running_server(store, path, change_feed=False) as srv:
            remote = HttpRemote(srv.url, srv.state.auth.add_token("alice"))
            rec = Recorder()
            try:
                async with trio.open_nursery() as nursery:
                    follower = start_feed_follower(nursery, remote, rec)
                    await until(lambda: any("no change feed" in r.getMessage()
                                            for r in caplog.records), "the fallback line")
                    assert not follower.healthy and rec.events == []
                    nursery.cancel_scope.cancel()
            finally:
                await remote.aclose()


class Freezer:
    """A TCP relay on 127.0.0.1 to a server that, once ``frozen``, stops relaying without
    closing anything: a feed that died silently (a cut network, a hung server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = trio.Event()

    async def _pipe(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        while not self.frozen.is_set():
            data = await src.receive_some(65536)
            if not data:
                return
            if self.frozen.is_set():
                return
            await dst.send_all(data)

    async def handle(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", self.port)
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, upstream)
            nursery.start_soon(self._pipe, upstream, client)
            await self.frozen.wait()
            await trio.sleep_forever()


async def test_a_feed_that_goes_silent_is_lost_within_its_poll_and_margin(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s"
    caplog.set_level(logging.INFO, logger="fsmount.feed")
    with Store(path) as store:
        async with running_server(store, path) as srv, trio.open_nursery() as nursery:
            relay = Freezer(int(srv.url.rsplit(":", 1)[1]))
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, relay.handle, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            remote = HttpRemote(f"http://127.0.0.1:{port}", srv.state.auth.add_token("alice"))
            rec = Recorder()
            follower = start_feed_follower(nursery, remote, rec, poll_timeout=0.3,
                                           poll_margin=0.3, restart_interval=0.05)
            await until(lambda: follower.healthy, "the feed up")
            relay.frozen.set()
            start = trio.current_time()
            await until(lambda: "down" in rec.events, "the fallback")
            # Within the poll's timeout plus its margin (and the scheduling around it).
            assert trio.current_time() - start < DEADLINE
            assert not follower.healthy
            assert any("no answer from the change feed within" in r.getMessage()
                       for r in caplog.records)
            nursery.cancel_scope.cancel()
        await remote.aclose()


async def _ops(store: Store) -> tuple[fuse_ops.Operations, EmbeddedRemote]:
    """A filesystem (not mounted, so no kernel) over ``store``, following the feed, and a
    second client of the same user."""
    ops = fuse_ops.Operations(EmbeddedRemote(store, store.default_user_id))
    ops.nodes.follow(True)
    return ops, EmbeddedRemote(store, store.default_user_id)


async def _changes_since(store: Store, cursor: int) -> tuple[Change, ...]:
    return store.get_changes(store.default_user_id, cursor, 0).changes


async def test_each_change_drops_exactly_its_node_names_and_folders(store: Store) -> None:
    ops, other = await _ops(store)
    nodes = ops.nodes
    d = await other.mkdir(ROOT_ID, "d")
    e = await other.mkdir(ROOT_ID, "e")
    f = await other.create_file(d.id, "f")
    g = await other.create_file(e.id, "g")
    for n in (d, e, f, g):
        await nodes.get(n.id)
    nodes.put_listing(d.id, (await other.list_folder(d.id)).entries, nodes.now())
    nodes.put_listing(e.id, (await other.list_folder(e.id)).entries, nodes.now())
    cached_f = nodes.peek(f.id)
    assert cached_f is not None and nodes.timeout(cached_f) == FEED_TIMEOUT

    # Attributes of f: f and its folder's listing (which holds f's old attributes) go; the
    # folder's own attributes and the other folder's listing stay.
    cursor = store.get_changes(store.default_user_id, None, 0).cursor
    await other.setattr(f.id, mode=0o600)
    await ops.apply_changes(await _changes_since(store, cursor))
    assert nodes.peek(f.id) is None and nodes.peek(d.id) is not None
    assert nodes.listing(d.id) is None and nodes.listing(e.id) is not None
    assert nodes.peek(g.id) is not None
    assert (await nodes.get(f.id)).mode == 0o600  # fetched again, and trusted again
    refetched = nodes.peek(f.id)
    assert refetched is not None and nodes.timeout(refetched) == FEED_TIMEOUT

    # A rename from d to e: f, both folders and both listings go; g stays.
    cursor = store.get_changes(store.default_user_id, None, 0).cursor
    await other.rename(d.id, "f", e.id, "f2")
    await ops.apply_changes(await _changes_since(store, cursor))
    assert nodes.peek(f.id) is None and nodes.peek(d.id) is None and nodes.peek(e.id) is None
    assert nodes.listing(d.id) is None and nodes.listing(e.id) is None
    assert nodes.peek(g.id) is not None

    # A delete: g and its folder's listing go.
    await nodes.get(e.id)
    nodes.put_listing(e.id, (await other.list_folder(e.id)).entries, nodes.now())
    cursor = store.get_changes(store.default_user_id, None, 0).cursor
    await other.unlink(e.id, "g")
    await ops.apply_changes(await _changes_since(store, cursor))
    assert nodes.peek(g.id) is None and nodes.listing(e.id) is None

    # An answer that was in flight when the feed invalidated it is trusted for 1 s only.
    stamp = nodes.now()
    await nodes.get(e.id)
    nodes.feed_invalidate(e.id)
    nodes.put(await other.getattr(e.id), stamp)
    late = nodes.peek(e.id)
    assert late is not None and nodes.timeout(late) == ops.attr_timeout

    # The mount's own change, reported back, changes nothing.
    node = await other.mkdir(ROOT_ID, "mine")
    cursor = store.get_changes(store.default_user_id, None, 0).cursor
    own = await other.setattr(node.id, mode=0o700)
    ops._own(nodes.put(own))
    reported = await _changes_since(store, cursor)
    assert [c.kind for c in reported] == [ChangeKind.ATTR]
    await ops.apply_changes(reported)
    assert nodes.peek(node.id) is own

    # Without the feed nothing is kept beyond the short timeout, and no listing at all.
    nodes.follow(False)
    assert nodes.peek(node.id) is None
    nodes.put_listing(e.id, (), nodes.now())
    assert nodes.listing(e.id) is None
    await ops.remote.aclose()
    await other.aclose()
