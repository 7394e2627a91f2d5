"""In-process tests of StagingFile (random writes over old content) and verified read-back,
against the real store, counting the remote's get_file calls."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fsmount import errors, protocol
from fsmount.embedded import EmbeddedRemote
from fsmount.fsck import check as fsck
from fsmount.remote import Document, UploadFile, WindowRun
from fsmount.upload import StagingFile, read_document, read_segments, upload_file

MIB = protocol.MIB


class Counting:
    """A real remote that counts get_file calls and can corrupt the next N replies."""

    def __init__(self, inner: EmbeddedRemote) -> None:
        self.inner = inner
        self.get_file_calls: list[int] = []
        self.corrupt_next = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_file(self, location: Any, offset: int, limit: int,
                       precise: bool = False) -> UploadFile:
        self.get_file_calls.append(offset)
        reply = await self.inner.get_file(location, offset, limit, precise)
        if self.corrupt_next and reply.bytes:
            self.corrupt_next -= 1
            bad = bytearray(reply.bytes)
            bad[len(bad) // 2] ^= 0xFF
            return UploadFile(reply.type, reply.mtime, bytes(bad))
        return reply

    async def get_file_windows(self, location: Any, offset: int, count: int,
                               hashes: bool = True, crc32c: bool = True) -> WindowRun:
        """The reader's runs, counted per window like get_file calls."""
        run = await self.inner.get_file_windows(location, offset, count, hashes, crc32c)
        windows = []
        for i, reply in enumerate(run.windows):
            self.get_file_calls.append(offset + i * MIB)
            if self.corrupt_next and reply.bytes:
                self.corrupt_next -= 1
                bad = bytearray(reply.bytes)
                bad[len(bad) // 2] ^= 0xFF
                reply = UploadFile(reply.type, reply.mtime, bytes(bad))
            windows.append(reply)
        return WindowRun(windows, run.checks)


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[Counting]:
    inner = EmbeddedRemote.open(tmp_path / "store")
    try:
        yield Counting(inner)
    finally:
        await inner.aclose()
    assert fsck(tmp_path / "store") == []


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


async def put(remote: Any, data: bytes) -> Document:
    import io

    (doc,) = await upload_file(remote, io.BytesIO(data), "old")
    return doc


async def test_old_content_is_fetched_lazily_per_window(remote: Counting, tmp_path: Path) -> None:
    old = payload(5 * MIB + 100)
    doc = await put(remote, old)
    sf = await StagingFile.create(tmp_path / "cache", remote, (doc,))
    try:
        assert sf.size == len(old) and not sf.dirty
        assert await sf.pread(10, 20) == old[10:30]
        assert remote.get_file_calls == [0]
        # Window 2 entirely overwritten: never fetched.
        await sf.pwrite(2 * MIB, b"\x01" * MIB)
        # Window 3 partly overwritten: fetched first, so the rest of it survives.
        await sf.pwrite(3 * MIB + 5, b"\x02" * 10)
        assert remote.get_file_calls == [0, 3 * MIB]
        assert sf.dirty
        model = bytearray(old)
        model[2 * MIB : 3 * MIB] = b"\x01" * MIB
        model[3 * MIB + 5 : 3 * MIB + 15] = b"\x02" * 10
        docs = await sf.upload("new")
        assert not sf.dirty
        # Upload fetched the rest (windows 1, 4, 5) exactly once each.
        assert sorted(remote.get_file_calls[2:]) == [MIB, 4 * MIB, 5 * MIB]
        assert await read_segments(remote, docs, 0, len(model)) == bytes(model)
    finally:
        await sf.aclose()


async def test_holes_and_truncate_both_ways(remote: Counting, tmp_path: Path) -> None:
    old = payload(3 * MIB)
    doc = await put(remote, old)
    sf = await StagingFile.create(tmp_path / "cache", remote, (doc,))
    try:
        # Shrink below windows that were never fetched, then grow: zeros, not old bytes.
        await sf.truncate(MIB + 10)
        await sf.truncate(3 * MIB)
        assert await sf.pread(MIB, 30) == old[MIB : MIB + 10] + bytes(20)
        assert await sf.pread(2 * MIB, MIB) == bytes(MIB)
        # A write past the end leaves a hole that reads as zeros.
        await sf.pwrite(4 * MIB, b"tail")
        assert sf.size == 4 * MIB + 4
        assert await sf.pread(3 * MIB - 2, 4) == bytes(4)
        assert await sf.pread(4 * MIB - 1, 100) == b"\0tail"
        assert await sf.pread(10 * MIB, 5) == b""
        docs = await sf.upload("h")
        expect = old[: MIB + 10] + bytes(4 * MIB - MIB - 10) + b"tail"
        assert await read_segments(remote, docs, 0, sf.size) == expect
        await sf.truncate(0)
        assert await sf.upload("z") == ()
    finally:
        await sf.aclose()
    with pytest.raises(ValueError):
        await sf.pread(0, 1)


async def test_random_ops_over_several_segments_match_a_model(
    remote: Counting, tmp_path: Path
) -> None:
    # Segments of odd sizes, so 1 MiB windows straddle segment boundaries.
    segs = [payload(3 * MIB // 2 + 3, 1), payload(700_001, 2), payload(3_000, 3)]
    docs = tuple([await put(remote, s) for s in segs])
    model = bytearray(b"".join(segs))
    rng = random.Random(2024)
    sf = await StagingFile.create(tmp_path / "cache", remote, docs)
    try:
        for _ in range(150):
            op = rng.random()
            if op < 0.45:
                off = rng.randrange(0, len(model) + 300_000)
                data = rng.randbytes(rng.choice([1, 100, 4096, 200_000, MIB + 7]))
                await sf.pwrite(off, data)
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off : off + len(data)] = data
            elif op < 0.6:
                size = rng.randrange(0, len(model) + 500_000)
                await sf.truncate(size)
                if size < len(model):
                    del model[size:]
                else:
                    model.extend(bytes(size - len(model)))
            else:
                off = rng.randrange(0, len(model) + 10)
                n = rng.choice([1, 4096, 300_000, 2 * MIB])
                assert await sf.pread(off, n) == bytes(model[off : off + n])
            assert sf.size == len(model)
        out = await sf.upload("m")
        assert await read_segments(remote, out, 0, len(model) + 1) == bytes(model)
    finally:
        await sf.aclose()


async def test_custom_fetch_replaces_the_remote(remote: Counting, tmp_path: Path) -> None:
    old = payload(2 * MIB + 1)
    asked: list[tuple[int, int]] = []

    async def fetch(offset: int, size: int) -> bytes:
        asked.append((offset, size))
        return old[offset : offset + size]

    sf = await StagingFile.create(tmp_path / "cache", remote, (), fetch=fetch)
    # No segments means no old content: the fetch function is never needed.
    assert sf.size == 0
    await sf.aclose()
    doc = await put(remote, old)
    remote.get_file_calls.clear()
    sf = await StagingFile.create(tmp_path / "cache", remote, (doc,), fetch=fetch)
    try:
        assert await sf.pread(MIB - 1, 2) == old[MIB - 1 : MIB + 1]
        assert asked == [(0, MIB), (MIB, MIB)]
        assert remote.get_file_calls == []
    finally:
        await sf.aclose()


async def test_corrupt_reply_is_fetched_again_then_fails(remote: Counting) -> None:
    old = payload(MIB + 5)
    doc = await put(remote, old)
    remote.corrupt_next = 1
    assert await read_document(remote, doc, 0, len(old)) == old
    remote.corrupt_next = 2
    with pytest.raises(errors.ChecksumMismatch):
        await read_document(remote, doc, 0, 10)


async def test_staging_fetch_failure_is_an_error_not_zeros(
    remote: Counting, tmp_path: Path
) -> None:
    doc = await put(remote, payload(MIB))
    sf = await StagingFile.create(tmp_path / "cache", remote, (doc,))
    try:
        remote.corrupt_next = 2
        with pytest.raises(errors.ChecksumMismatch):
            await sf.pread(0, 10)
        # Nothing was marked fetched: the next read tries again and succeeds.
        assert await sf.pread(0, 10) == payload(MIB)[:10]
    finally:
        await sf.aclose()
