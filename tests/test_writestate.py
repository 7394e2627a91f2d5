"""In-process tests of the write state's modes and transitions (fsmount/writestate.py)
against the real store: which mode each operation leads to, what readers of the open file
see in each, and what a commit links."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from fsmount import protocol
from fsmount.embedded import EmbeddedRemote
from fsmount.fsck import check as fsck
from fsmount.remote import ROOT_ID, Node
from fsmount.upload import PART_SIZE, RetainBudget, read_segments, upload_file
from fsmount.writestate import (
    Emptied,
    Staging,
    Streaming,
    Unchanged,
    WriteSettings,
    WriteState,
    WriteStates,
)

MIB = protocol.MIB


@dataclass
class Env:
    remote: EmbeddedRemote
    states: WriteStates

    async def file(self, name: str, data: bytes = b"") -> Node:
        docs = await upload_file(self.remote, io.BytesIO(data), name) if data else ()
        return await self.remote.create_file(ROOT_ID, name, tuple(d.location for d in docs))

    async def content(self, node: Node) -> bytes:
        got = await self.remote.getattr(node.id)
        return await read_segments(self.remote, got.segments, 0, got.size)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    remote = EmbeddedRemote.open(tmp_path / "store")
    try:
        async with trio.open_nursery() as nursery:
            settings = WriteSettings(remote, nursery, cache_dir=str(tmp_path / "cache"),
                                     budget=RetainBudget(8 * MIB))
            yield Env(remote, WriteStates(settings))
            nursery.cancel_scope.cancel()
    finally:
        await remote.aclose()
    assert fsck(tmp_path / "store") == []


def payload(size: int, seed: int = 3) -> bytes:
    return random.Random(seed).randbytes(size)


async def read_all(state: WriteState) -> bytes | None:
    data, _base = await state.read(0, state.size + 1)
    return data


async def test_a_new_file_streams_from_zero_and_commits(env: Env) -> None:
    node = await env.file("new.bin")
    state = env.states.open(node, truncate=True)
    assert isinstance(state.mode, Unchanged) and not state.dirty and state.reads_from_base
    data = payload(3 * PART_SIZE + 17)
    pos = 0
    for size in (1000, PART_SIZE, 2 * PART_SIZE):
        await state.write(pos, data[pos:pos + size])
        pos += size
        assert isinstance(state.mode, Streaming) and state.dirty
        assert await read_all(state) == data[:pos]
    await state.write(pos, data[pos:])
    committed = await state.commit()
    assert committed is not None and committed.size == len(data)
    assert isinstance(state.mode, Unchanged) and not state.dirty
    assert await read_all(state) is None  # reads go to the committed documents
    assert await env.content(node) == data
    assert await state.commit() is None  # nothing pending


async def test_a_write_back_moves_the_stream_to_staging(env: Env) -> None:
    node = await env.file("seek.bin")
    state = env.states.open(node)
    data = bytearray(payload(PART_SIZE + 100))
    await state.write(0, bytes(data))
    assert isinstance(state.mode, Streaming)
    await state.write(10, b"XYZ")
    data[10:13] = b"XYZ"
    assert isinstance(state.mode, Staging)
    assert await read_all(state) == bytes(data)
    await state.write(len(data), b"tail")  # at the end, but staging stays staging
    data += b"tail"
    assert isinstance(state.mode, Staging)
    await state.commit()
    assert isinstance(state.mode, Unchanged)
    assert await env.content(node) == bytes(data)


async def test_existing_content_changed_in_place_goes_through_staging(env: Env) -> None:
    old = payload(2 * MIB + 5, seed=9)
    node = await env.file("old.bin", old)
    state = env.states.open(node)
    assert isinstance(state.mode, Unchanged) and state.size == len(old)
    data, base = await state.read(0, 10)
    assert data is None and base == node.segments
    await state.write(MIB, b"new")
    assert isinstance(state.mode, Staging) and state.dirty
    await state.commit()
    assert await env.content(node) == old[:MIB] + b"new" + old[MIB + 3:]


async def test_truncate_modes(env: Env) -> None:
    old = payload(100_000, seed=4)
    node = await env.file("trunc.bin", old)
    state = env.states.open(node, truncate=True)  # O_TRUNC of existing content
    assert isinstance(state.mode, Emptied) and state.dirty and state.size == 0
    assert await read_all(state) == b""
    await state.write(0, b"abc")
    assert isinstance(state.mode, Streaming)
    await state.truncate(0)
    assert isinstance(state.mode, Emptied) and state.size == 0
    await state.commit()
    assert isinstance(state.mode, Unchanged) and await env.content(node) == b""

    node2 = await env.file("grow.bin", old)
    state2 = env.states.open(node2)
    await state2.truncate(len(old) + 10)
    assert isinstance(state2.mode, Staging) and state2.size == len(old) + 10
    await state2.commit()
    assert await env.content(node2) == old + bytes(10)


async def test_mtime_is_deferred_only_while_content_is_pending(env: Env) -> None:
    node = await env.file("mtime.bin")
    state = env.states.open(node)
    assert not await state.defer_mtime(1_000_000_000)
    await state.write(0, b"x")
    assert await state.defer_mtime(2_000_000_000)
    committed = await state.commit()
    assert committed is not None and committed.mtime_ns == 2_000_000_000


async def test_discard_drops_pending_content(env: Env) -> None:
    node = await env.file("gone.bin", b"kept")
    state = env.states.open(node)
    await state.write(1, b"ZZ")
    assert isinstance(state.mode, Staging)
    await state.discard()
    assert not isinstance(state.mode, Staging | Streaming)  # nothing is kept locally
    assert await env.content(node) == b"kept"
