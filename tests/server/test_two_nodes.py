"""Two ``fsmount serve`` processes ("nodes") over one PostgreSQL + S3 store, as
docs/deploy.md deploys them: each node has a directory of its own (its token database is a
copy of the first node's), the same ``--metadata`` and ``--content``.  Clients reach the
store through either node (HttpRemote, the mount's transport).

* a file written through one node reads through the other, with its parts saved through
  both; a replacement through the second reads back through the first;
* a change committed through node A wakes a long poll held on node B within 1 s;
* a FUSE mount through each node, writes and reads alternating;
* 16 clients, 8 per node, create/replace (empty files, and files with content), rename and
  delete in one folder for a bounded time: the store's change log (its commit order) accounts for exactly the operations that
  succeeded, replaying it gives the final listing, every file holds the content of the
  write that created it, and fsck is clean.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from fsmount import errors, fsck
from fsmount.httpremote import HttpRemote
from fsmount.remote import ROOT_ID, Change, ChangeKind, InputFileBig

from .harness import start_serve, stop_process

#: The concurrent clients run at least this long and until :data:`RACE_OPS` calls succeeded,
#: at most :data:`RACE_MAX_SECONDS` (a loaded machine makes fewer calls per second).
RACE_SECONDS = 4.0
RACE_OPS = 60
RACE_MAX_SECONDS = 60.0
CLIENTS_PER_NODE = 8
NAMES = [f"n{i}" for i in range(6)]


@dataclass
class Nodes:
    url_a: str
    url_b: str
    token: str
    dir_a: Path
    dir_b: Path
    port_a: int
    port_b: int
    token_file: Path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str, s3_url: str) -> Iterator[Nodes]:
    dir_a, dir_b = tmp_path / "node-a", tmp_path / "node-b"
    backends = ("--metadata", pg_url, "--content", s3_url)
    port_a, port_b = _free_port(), _free_port()
    proc_a, _ = start_serve(dir_a, port_a, *backends)
    procs = [proc_a]
    try:
        token = subprocess.run(
            [sys.executable, "-m", "fsmount", "token", "add", "--store", str(dir_a), "alice"],
            capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        # The second node's directory gets a copy of the first's token database.
        dir_b.mkdir()
        with sqlite3.connect(dir_a / "auth.sqlite") as src, \
                sqlite3.connect(dir_b / "auth.sqlite") as dst:
            src.backup(dst)
        proc_b, _ = start_serve(dir_b, port_b, *backends)
        procs.append(proc_b)
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        yield Nodes(f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}", token, dir_a,
                    dir_b, port_a, port_b, token_file)
    finally:
        for p in procs:
            stop_process(p)
    assert fsck.check(dir_a) == []
    # The command line's fsck on the other node's directory (the same PostgreSQL store).
    done = subprocess.run([sys.executable, "-m", "fsmount", "fsck", "--store", str(dir_b)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "clean" in done.stdout, done.stdout + done.stderr


async def _all_changes(remote: HttpRemote, cursor: int) -> list[Change]:
    out: list[Change] = []
    for _ in range(10_000):
        batch = await remote.get_changes(cursor, 0)
        assert not batch.reset
        if not batch.changes:
            return out
        out += batch.changes
        cursor = batch.cursor
    raise AssertionError("the change log did not end")


async def test_a_file_written_through_one_node_reads_through_the_other(nodes: Nodes) -> None:
    a = HttpRemote(nodes.url_a, nodes.token)
    b = HttpRemote(nodes.url_b, nodes.token)
    try:
        data = random.randbytes(3 * 512 * 1024 + 777)
        parts = [data[i:i + 512 * 1024] for i in range(0, len(data), 512 * 1024)]
        fid = random.getrandbits(62)
        for i, part in enumerate(parts):
            await (a if i % 2 else b).save_big_file_part(fid, i, len(parts), part)
        doc = await b.upload_media(InputFileBig(fid, len(parts), "both.bin"))
        assert doc.sha256 == hashlib.sha256(data).hexdigest()
        f = await a.create_file(ROOT_ID, "both.bin", (doc.location,))
        node = await b.lookup(ROOT_ID, "both.bin")
        assert node.id == f.id and node.size == len(data)
        got = bytearray()
        for off in range(0, len(data), 1 << 20):
            got += (await b.get_file(doc.location, off, 1 << 20)).bytes
        assert bytes(got) == data
        small = b"replaced through B\n"
        await b.put_file(ROOT_ID, "both.bin", small,
                         md5_checksum=hashlib.md5(small).hexdigest())
        again = await a.lookup(ROOT_ID, "both.bin")
        assert again.size == len(small)
        read = await a.get_file(again.segments[0].location, 0, 4096)
        assert read.bytes == small
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_change_through_node_a_wakes_a_long_poll_on_node_b(nodes: Nodes) -> None:
    a = HttpRemote(nodes.url_a, nodes.token)
    b = HttpRemote(nodes.url_b, nodes.token)
    try:
        cursor = (await b.get_changes(None, 0)).cursor
        woke: list[float] = []
        answered = trio.Event()
        answers: list[list[Change]] = []

        async def poll() -> None:
            batch = await b.get_changes(cursor, 20)
            woke.append(trio.current_time())
            answers.append(list(batch.changes))
            answered.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            # The poll must still be waiting: nothing has changed yet.
            with trio.move_on_after(0.5):
                await answered.wait()
            assert not woke, "the long poll answered with nothing to answer"
            node = await a.mkdir(ROOT_ID, "through-a")
            committed = trio.current_time()
        assert [c.node_id for c in answers[0]] == [node.id]
        assert woke[0] - committed < 1.0, woke[0] - committed
    finally:
        await a.aclose()
        await b.aclose()


@dataclass
class _Done:
    """What the clients' successful calls did."""

    puts: dict[int, bytes]  #: node id -> content written
    renames: Counter[tuple[int, str, str]]  #: (node id, old name, new name)
    unlinks: Counter[str]  #: names unlinked


    def count(self) -> int:
        return len(self.puts) + sum(self.renames.values()) + sum(self.unlinks.values())


async def _client(remote: HttpRemote, folder: int, seed: int, start: float,
                  done: _Done) -> None:
    rng = random.Random(seed)
    for n in range(1_000_000):
        now = trio.current_time() - start
        if now > RACE_MAX_SECONDS or (now > RACE_SECONDS and done.count() >= RACE_OPS):
            return
        # Mostly metadata-only calls (a few milliseconds each), so that they collide often.
        op = rng.choice(("put", "create", "create", "rename", "rename", "rename", "rename",
                         "unlink", "unlink"))
        name, other = rng.sample(NAMES, 2)
        try:
            if op == "create":
                node = await remote.create_file(folder, name, (), replace=True)
                done.puts[node.id] = b""
            elif op == "put":
                content = f"client {seed} write {n}\n".encode()
                node = await remote.put_file(folder, name, content,
                                             md5_checksum=hashlib.md5(content).hexdigest())
                done.puts[node.id] = content
            elif op == "rename":
                node = await remote.rename(folder, name, folder, other)
                done.renames[(node.id, name, other)] += 1
            else:
                await remote.unlink(folder, name)
                done.unlinks[name] += 1
        except errors.NotFound:
            pass  # another client moved or removed it first


async def test_clients_on_both_nodes_race_in_one_folder(nodes: Nodes) -> None:
    admin = HttpRemote(nodes.url_a, nodes.token)
    remotes = [HttpRemote(url, nodes.token, retry_time=10) for url in (nodes.url_a, nodes.url_b)
               for _ in range(CLIENTS_PER_NODE)]
    try:
        folder = (await admin.mkdir(ROOT_ID, "race")).id
        start = (await admin.get_changes(None, 0)).cursor
        done = _Done({}, Counter(), Counter())
        async with trio.open_nursery() as nursery:
            for seed, remote in enumerate(remotes):
                nursery.start_soon(_client, remote, folder, seed, trio.current_time(), done)
        assert done.count() >= RACE_OPS, f"only {done.count()} calls succeeded"
        assert done.renames and done.unlinks

        log = [c for c in await _all_changes(admin, start) if c.parent == folder]
        # Replay the log (the store's commit order) and account for every change.
        model: dict[str, int] = {}
        created: set[int] = set()
        renamed: Counter[tuple[int, str, str]] = Counter()
        unlinked: Counter[str] = Counter()
        for i, c in enumerate(log):
            if c.kind is ChangeKind.CREATE:
                created.add(c.node_id)
                model[c.name] = c.node_id
            elif c.kind is ChangeKind.RENAME:
                assert c.old_parent == folder and c.old_name is not None
                assert model.pop(c.old_name) == c.node_id
                renamed[(c.node_id, c.old_name, c.name)] += 1
                model[c.name] = c.node_id
            elif c.kind is ChangeKind.DELETE:
                assert model.pop(c.name) == c.node_id
                nxt = log[i + 1] if i + 1 < len(log) else None
                # A replacement: the same transaction (its time stamp) puts a node there.
                replaced = (nxt is not None and nxt.name == c.name and nxt.at_ns == c.at_ns
                            and nxt.kind in (ChangeKind.CREATE, ChangeKind.RENAME))
                if not replaced:
                    unlinked[c.name] += 1
            else:
                raise AssertionError(f"unexpected change {c}")
        # Exactly the successful operations, each once: nothing lost, nothing phantom.
        assert created == set(done.puts)
        assert renamed == done.renames
        assert unlinked == done.unlinks
        listing = {n.name: n for n in (await admin.list_folder(folder)).entries}
        assert {name: n.id for name, n in listing.items()} == model
        for name, n in listing.items():
            if not n.segments:
                assert done.puts[n.id] == b"" and n.size == 0, name
                continue
            read = await remotes[-1].get_file(n.segments[0].location, 0, 4096)
            assert read.bytes == done.puts[n.id], name
    finally:
        await admin.aclose()
        for r in remotes:
            await r.aclose()


@pytest.mark.fuse
def test_a_mount_through_each_node(nodes: Nodes, tmp_path: Path) -> None:
    """A FUSE mount through node A and one through node B, writes and reads alternating:
    each sees the other's changes through the change feed of the other node."""
    from .test_feed_mounts import VISIBLE_WITHIN, Server, mounted, wait_until

    srv_a = Server(nodes.dir_a, nodes.port_a, nodes.token_file)
    srv_b = Server(nodes.dir_b, nodes.port_b, nodes.token_file)

    def content(p: Path) -> bytes | None:
        try:
            return p.read_bytes()
        except FileNotFoundError:
            return None

    with mounted(srv_a, tmp_path / "a") as a, mounted(srv_b, tmp_path / "b") as b:
        assert os.listdir(b.mnt) == []
        big = random.randbytes(3 * 1024 * 1024 + 5)
        (a.mnt / "big").write_bytes(big)
        wait_until(lambda: content(b.mnt / "big") == big, "A's file on B", VISIBLE_WITHIN)
        with open(b.mnt / "big", "r+b") as fh:  # B rewrites the start of A's file
            fh.write(b"B was here")
        want = b"B was here" + big[10:]
        wait_until(lambda: content(a.mnt / "big") == want, "B's write on A", VISIBLE_WITHIN)
        os.mkdir(b.mnt / "d")
        wait_until(lambda: (a.mnt / "d").is_dir(), "B's folder on A", VISIBLE_WITHIN)
        os.rename(a.mnt / "big", a.mnt / "d" / "moved")
        wait_until(lambda: content(b.mnt / "d" / "moved") == want and
                   not os.path.lexists(b.mnt / "big"), "A's rename on B", VISIBLE_WITHIN)
        os.unlink(b.mnt / "d" / "moved")
        wait_until(lambda: os.listdir(a.mnt / "d") == [], "B's delete on A", VISIBLE_WITHIN)
        assert sorted(os.listdir(a.mnt)) == sorted(os.listdir(b.mnt)) == ["d"]
