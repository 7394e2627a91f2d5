"""The read path in-process (no kernel): a counting proxy around the real EmbeddedRemote
shows sequential detection, window growth, one fetch per chunk under concurrency, streams
that keep their own windows, random access that collapses read-ahead, cancellation of stale
read-ahead, segment mapping, and verification against the block hashes."""

from __future__ import annotations

import io
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from fsmount import errors
from fsmount.embedded import EmbeddedRemote
from fsmount.reader import CHUNK, ChunkCache, FileReader, open_chunk_cache
from fsmount.remote import Document, FileLocation, UploadFile, WindowRun
from fsmount.upload import upload_file

MIB = 1024 * 1024


class Counting:
    """Forwards to a real remote, counting the chunks fetched per (document, chunk) by
    get_file_windows (the reader's runs) and get_file (its re-fetches).  With
    ``send_checks`` False the runs come without block checks, as from a store that sends
    none, so the reader asks get_file_checksums."""

    def __init__(self, remote: Any, *, send_checks: bool = True) -> None:
        self.remote = remote
        self.calls: Counter[tuple[int, int]] = Counter()
        self.runs: list[int] = []  # chunks asked for per get_file_windows call
        self.hash_calls = 0
        self.gate: trio.Event | None = None  # when set, fetches wait for it
        self.corrupt: set[tuple[int, int]] = set()  # flip a byte of these chunks
        self.started = 0
        self.send_checks = send_checks

    def _bad(self, key: tuple[int, int], res: UploadFile) -> UploadFile:
        if key not in self.corrupt:
            return res
        data = bytearray(res.bytes)
        data[7] ^= 0xFF
        return UploadFile(res.type, res.mtime, bytes(data))

    async def get_file(self, location: FileLocation, offset: int, limit: int,
                       precise: bool = False) -> UploadFile:
        key = (location.id, offset // CHUNK)
        self.calls[key] += 1
        self.started += 1
        if self.gate is not None:
            await self.gate.wait()
        return self._bad(key, await self.remote.get_file(location, offset, limit, precise))

    async def get_file_windows(self, location: FileLocation, offset: int, count: int,
                               hashes: bool = True, crc32c: bool = True) -> WindowRun:
        self.runs.append(count)
        self.started += 1
        if self.gate is not None:
            await self.gate.wait()
        got = await self.remote.get_file_windows(location, offset, count, hashes, crc32c)
        first = offset // CHUNK
        for i in range(len(got.windows)):
            self.calls[(location.id, first + i)] += 1
        windows = [self._bad((location.id, first + i), w) for i, w in enumerate(got.windows)]
        return WindowRun(windows, got.checks if self.send_checks else None)

    async def get_file_checksums(self, location: FileLocation, offset: int) -> Any:
        self.hash_calls += 1
        return await self.remote.get_file_checksums(location, offset)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.remote, name)


@pytest.fixture
def remote(embedded_remote: EmbeddedRemote) -> EmbeddedRemote:
    return embedded_remote


async def upload(remote: EmbeddedRemote, data: bytes) -> Document:
    docs = await upload_file(remote, io.BytesIO(data), "f")
    assert len(docs) == 1
    return docs[0]


DATA = random.Random(5).randbytes(40 * MIB + 4321)


async def test_sequential_reads_grow_the_window(remote: EmbeddedRemote) -> None:
    doc = await upload(remote, DATA)
    counting = Counting(remote)
    async with open_chunk_cache(counting) as cache:  # type: ignore[arg-type]
        r = FileReader(cache, (doc,), "f", read_ahead=8 * CHUNK)
        windows = []
        for i in range(12):
            assert await r.read(i * CHUNK // 2, CHUNK // 2) == DATA[i * CHUNK // 2:(i + 1) * CHUNK // 2]
            windows.append(r.streams[0].window)
        assert len(r.streams) == 1
        assert windows[0] >= 1 and windows == sorted(windows) and windows[-1] == 8
        # Read-ahead reached beyond what was read, and every chunk was fetched once.
        with trio.fail_after(10):
            while any(not f.done.is_set() for f in r.streams[0].fetches):
                await trio.sleep(0.001)
        assert max(c for _, c in counting.calls) >= 10
        assert set(counting.calls.values()) == {1}
        # Block checks come with the chunks; read-ahead asks for runs of several chunks.
        assert counting.hash_calls == 0
        assert max(counting.runs) > 1 and len(counting.runs) < len(counting.calls)
        r.close()


async def test_concurrent_reads_of_one_chunk_share_a_fetch(remote: EmbeddedRemote) -> None:
    doc = await upload(remote, DATA[: 3 * MIB])
    counting = Counting(remote)
    counting.gate = trio.Event()
    async with open_chunk_cache(counting) as cache:  # type: ignore[arg-type]
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            r = FileReader(cache, (doc,), "f", read_ahead=0)
            results[i] = bytes(await r.read(MIB + i * 4096, 4096))

        async with trio.open_nursery() as n:
            for i in range(20):
                n.start_soon(one, i)
            with trio.fail_after(10):
                while counting.started < 1:
                    await trio.sleep(0.001)
            await trio.sleep(0.01)  # let the other 19 readers join the fetch
            counting.gate.set()
        assert counting.calls == Counter({(doc.id, 1): 1})
        for i in range(20):
            assert results[i] == DATA[MIB + i * 4096 : MIB + (i + 1) * 4096]
        assert (cache.stats.misses, cache.stats.joined) == (1, 19)


async def test_out_of_order_reads_stay_sequential(remote: EmbeddedRemote) -> None:
    doc = await upload(remote, DATA)
    async with open_chunk_cache(remote) as cache:
        r = FileReader(cache, (doc,), "f", read_ahead=8 * CHUNK)
        # The kernel's read-ahead delivers a stream's requests a little out of order.
        order = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10]
        for i in order:
            off = i * 256 * 1024
            assert await r.read(off, 256 * 1024) == DATA[off : off + 256 * 1024]
        assert len(r.streams) == 1
        assert r.streams[0].window == 8
        r.close()


async def test_two_interleaved_streams_keep_their_windows(remote: EmbeddedRemote) -> None:
    doc = await upload(remote, DATA)
    async with open_chunk_cache(remote) as cache:
        r = FileReader(cache, (doc,), "f", read_ahead=8 * CHUNK)
        a, b = 0, 30 * MIB  # e.g. video from the start, audio further on
        for _ in range(8):
            assert await r.read(a, 128 * 1024) == DATA[a : a + 128 * 1024]
            assert await r.read(b, 128 * 1024) == DATA[b : b + 128 * 1024]
            a += 128 * 1024
            b += 128 * 1024
        assert len(r.streams) == 2
        assert sorted(s.pos for s in r.streams) == [a, b]
        assert all(s.window >= 4 for s in r.streams)
        r.close()


async def test_random_access_collapses_read_ahead(remote: EmbeddedRemote) -> None:
    doc = await upload(remote, DATA)
    counting = Counting(remote)
    async with open_chunk_cache(counting, cache_bytes=64 * MIB) as cache:  # type: ignore[arg-type]
        r = FileReader(cache, (doc,), "f", read_ahead=8 * CHUNK)
        for i in range(6):
            await r.read(i * CHUNK, CHUNK)
        assert r.streams[0].window == 8
        with trio.fail_after(10):
            while any(not f.done.is_set() for s in r.streams for f in s.fetches):
                await trio.sleep(0.001)
        before = sum(counting.calls.values())
        # Jumps further than a stream's tolerance from every earlier read.
        offsets = [c * CHUNK + 1000 for c in (38, 17, 28, 22, 33)]
        for off in offsets:
            assert await r.read(off, 4096) == DATA[off : off + 4096]
        # Only the chunks asked for were fetched: no read-ahead for random reads.
        assert sum(counting.calls.values()) - before == len(offsets)
        assert all(s.window == 0 for s in r.streams[-3:])
        assert len(r.streams) <= 4
        r.close()


async def test_far_seek_cancels_stale_read_ahead(remote: EmbeddedRemote) -> None:
    doc = await upload(remote, DATA)
    counting = Counting(remote)
    async with open_chunk_cache(counting) as cache:  # type: ignore[arg-type]
        r = FileReader(cache, (doc,), "f", read_ahead=8 * CHUNK, max_streams=1)
        await r.read(0, CHUNK)
        await r.read(CHUNK, CHUNK)
        with trio.fail_after(10):
            while any(not f.done.is_set() for f in r.streams[0].fetches):
                await trio.sleep(0.001)
        counting.gate = trio.Event()  # hold further read-ahead in flight
        await r.read(2 * CHUNK, CHUNK // 2)
        stale = set(r.streams[0].fetches)
        assert stale
        counting.gate.set()
        counting.gate = None
        await r.read(35 * CHUNK, 4096)  # far away: the old stream is dropped
        with trio.fail_after(10):
            while not all(f.done.is_set() for f in stale):
                await trio.sleep(0.001)
        assert cache.stats.cancelled >= 1
        assert len(r.streams) == 1 and r.streams[0].pos == 35 * CHUNK + 4096
        r.close()


async def test_segments_with_unaligned_boundaries(remote: EmbeddedRemote) -> None:
    a, b, c = DATA[:3_000_000], DATA[3_000_000:3_000_500], DATA[3_000_500:7 * MIB]
    docs = (await upload(remote, a), await upload(remote, b), await upload(remote, c))
    whole = a + b + c
    async with open_chunk_cache(remote) as cache:
        r = FileReader(cache, docs, "f")
        assert r.size == len(whole)
        rnd = random.Random(8)
        for _ in range(300):
            off = rnd.randrange(0, len(whole) + 10)
            size = rnd.randrange(1, 3 * MIB)
            assert bytes(await r.read(off, size)) == whole[off : off + size]
        assert bytes(await r.read(2_999_000, 2000)) == whole[2_999_000:3_001_000]
        r.close()


async def test_corrupt_chunk_is_fetched_again_then_fails(remote: EmbeddedRemote,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    doc = await upload(remote, DATA[: 3 * MIB])
    counting = Counting(remote)
    counting.corrupt.add((doc.id, 1))
    async with open_chunk_cache(counting) as cache:  # type: ignore[arg-type]
        r = FileReader(cache, (doc,), "movie.mp4", read_ahead=0)
        assert await r.read(0, 100) == DATA[:100]
        with pytest.raises(errors.ChecksumMismatch):
            await r.read(MIB + 5, 100)
        assert counting.calls[(doc.id, 1)] == 2  # fetched once more before failing
        assert cache.cached(doc, 1) is None  # bad bytes never enter the cache
        assert "movie.mp4" in caplog.text
        counting.corrupt.clear()
        assert await r.read(MIB + 5, 100) == DATA[MIB + 5 : MIB + 105]  # transient: recovers
        r.close()


async def test_cache_is_bounded_in_bytes(remote: EmbeddedRemote) -> None:
    doc = await upload(remote, DATA)
    cache = ChunkCache(remote, cache_bytes=5 * MIB)
    async with trio.open_nursery() as n:
        cache.start(n)
        r = FileReader(cache, (doc,), "f", read_ahead=4 * CHUNK)
        pos = 0
        while pos < len(DATA):
            got = await r.read(pos, 512 * 1024)
            assert got == DATA[pos : pos + 512 * 1024]
            pos += len(got)
            assert cache._lru.currsize <= 5 * MIB
        r.close()
        n.cancel_scope.cancel()


async def test_a_sequential_scan_keeps_random_readers_chunks(remote: EmbeddedRemote) -> None:
    small = await upload(remote, DATA[: 3 * MIB])
    big = await upload(remote, DATA)
    counting = Counting(remote)
    async with open_chunk_cache(counting, cache_bytes=24 * MIB) as cache:  # type: ignore[arg-type]
        random_reader = FileReader(cache, (small,), "db", read_ahead=0)
        assert await random_reader.read(MIB + 100, 4096) == DATA[MIB + 100 : MIB + 4196]
        scan = FileReader(cache, (big,), "movie", read_ahead=4 * CHUNK)
        piece = 256 * 1024
        # 40 MiB in the kernel's order: sequential, with neighbouring requests swapped.
        count = -(-len(DATA) // piece)
        order = [j for i in range(0, count, 2) for j in (i + 1, i) if j < count]
        assert sorted(order) == list(range(count))
        for i in order:
            off = i * piece
            assert await scan.read(off, piece) == DATA[off : off + piece]
            # Behind the stream only the small tier of streamed chunks grows (8 MiB);
            # the main LRU holds the read-ahead and the chunks still within reach.
            assert cache._streamed.currsize <= 8 * MIB
            assert cache._lru.currsize <= 12 * MIB
        # The scan went through more than the whole cache, yet the random reader's chunk
        # is still there, and every chunk of the scan was fetched exactly once.
        calls = counting.calls[(small.id, 1)]
        assert await random_reader.read(MIB + 5000, 4096) == DATA[MIB + 5000 : MIB + 9096]
        assert counting.calls[(small.id, 1)] == calls == 1
        assert {n for (d, _), n in counting.calls.items() if d == big.id} == {1}
        assert sum(1 for d, _ in counting.calls if d == big.id) == 41
        scan.close()
        random_reader.close()


async def test_a_file_that_fits_in_the_cache_is_reread_from_it(remote: EmbeddedRemote) -> None:
    doc = await upload(remote, DATA)
    counting = Counting(remote)
    async with open_chunk_cache(counting, cache_bytes=48 * MIB) as cache:  # type: ignore[arg-type]
        for _ in range(2):  # the second pass is served from the cache
            r = FileReader(cache, (doc,), "f", read_ahead=4 * CHUNK)
            for off in range(0, len(DATA), 512 * 1024):
                assert await r.read(off, 512 * 1024) == DATA[off : off + 512 * 1024]
            r.close()
        assert set(counting.calls.values()) == {1}
        assert len(counting.calls) == 41
        assert cache._streamed.currsize == 0


async def test_empty_file_and_bad_arguments(remote: EmbeddedRemote) -> None:
    async with open_chunk_cache(remote) as cache:
        r = FileReader(cache, (), "empty")
        assert r.size == 0
        assert await r.read(0, 4096) == b""
        with pytest.raises(errors.InvalidArgument):
            await r.read(-1, 10)


def test_no_pyfuse3_outside_the_adapter() -> None:
    root = Path(__file__).resolve().parent.parent / "fsmount"
    importers = sorted(p.name for p in root.rglob("*.py")
                       if "import pyfuse3" in p.read_text() or "from pyfuse3" in p.read_text())
    assert importers == ["fuse_ops.py"]
    assert os.path.exists(root / "reader.py")


class LongHashes(Counting):
    """Answers get_file_checksums with more than asked: through the end of the document,
    with the last window cut short (as a server may), like the contract's "at least"."""

    async def get_file_checksums(self, location: FileLocation, offset: int) -> Any:
        self.hash_calls += 1
        out = []
        pos = offset - offset % (128 * 1024)
        while True:
            got = await self.remote.get_file_checksums(location, pos)
            if not got:
                break
            out.extend(got)
            if got[-1].limit < 128 * 1024:
                break  # the last block of the document
            pos = got[-1].offset + got[-1].limit
        if out and out[-1].offset // MIB != offset // MIB:
            out = out[:-1]  # a window after the one asked for, cut short
        return out


async def test_hashes_beyond_the_window_are_kept_only_when_complete(
        remote: EmbeddedRemote) -> None:
    size = 6 * MIB + 300 * 1024
    doc = await upload(remote, DATA[:size])
    counting = LongHashes(remote, send_checks=False)
    async with open_chunk_cache(counting) as cache:  # type: ignore[arg-type]
        r = FileReader(cache, (doc,), "f", read_ahead=0)
        for off in range(0, size, MIB):
            assert await r.read(off, MIB) == DATA[off : min(off + MIB, size)]
        # One answer covered windows 0..5 completely; the cut last window was asked again.
        assert counting.hash_calls == 2
