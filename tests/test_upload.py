"""In-process tests of the streaming uploader (fsmount/upload.py) against the real store.

The remote is a real :class:`EmbeddedRemote` on a temporary store, wrapped in
:class:`Probe`, which counts calls, records how each part was sent, and can hold parts back
(to prove several are in flight), fail one call, or move the store's manual clock (so that
parts really expire and the store reports ``FILE_PART_X_MISSING``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import random
import subprocess
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsmount import errors, protocol
from fsmount.embedded import EmbeddedRemote
from fsmount.fsck import check as fsck
from fsmount.remote import ROOT_ID, Document, InputFile, InputFileBig
from fsmount.upload import (
    PART_SIZE,
    RetainBudget,
    SpillFile,
    StreamingUpload,
    read_segments,
    upload_file,
)

MIB = protocol.MIB
THRESHOLD = protocol.Limits().big_file_threshold


@dataclass(eq=False)
class Probe:
    """A real remote, with counting and fault injection on the upload calls."""

    inner: EmbeddedRemote
    #: ("small", part, None, size) or ("big", part, total, size), in call order.
    saves: list[tuple[str, int, int | None, int]] = field(default_factory=list)
    finals: list[InputFile | InputFileBig] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    #: Hold each save until this many are in flight at once (proves parallelism).
    hold_until: int = 0
    #: Raise TransportError on the save call with this index (0-based), once.
    fail_save: int | None = None
    #: Called with the part number after each successful save.
    after_save: Callable[[int], None] | None = None
    #: Called before each finalize call with its 0-based index.
    before_final: Callable[[int], None] | None = None
    get_file_calls: int = 0
    get_config_calls: int = 0
    _enough: trio.Event = field(default_factory=trio.Event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _save(self, kind: str, part: int, total: int | None, data: bytes,
                    call: Callable[[], Any]) -> bool:
        index = len(self.saves)
        self.saves.append((kind, part, total, len(data)))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.in_flight >= self.hold_until:
                self._enough.set()
            if self.hold_until and not self._enough.is_set():
                with trio.fail_after(20):
                    await self._enough.wait()
            if self.fail_save == index:
                raise errors.TransportError("injected: connection reset")
            ok = await call()
            if self.after_save is not None:
                self.after_save(part)
            return ok
        finally:
            self.in_flight -= 1

    async def save_file_part(self, file_id: int, file_part: int, data: bytes) -> bool:
        return await self._save("small", file_part, None, data,
                                lambda: self.inner.save_file_part(file_id, file_part, data))

    async def save_big_file_part(self, file_id: int, file_part: int, file_total_parts: int,
                                 data: bytes) -> bool:
        return await self._save(
            "big", file_part, file_total_parts, data,
            lambda: self.inner.save_big_file_part(file_id, file_part, file_total_parts, data))

    async def upload_media(self, file: InputFile | InputFileBig) -> Document:
        if self.before_final is not None:
            self.before_final(len(self.finals))
        self.finals.append(file)
        return await self.inner.upload_media(file)

    async def get_config(self) -> Any:
        self.get_config_calls += 1
        return await self.inner.get_config()

    async def get_file(self, *args: Any, **kwargs: Any) -> Any:
        self.get_file_calls += 1
        return await self.inner.get_file(*args, **kwargs)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    remote: Probe
    clock: ManualClock
    path: Path
    limits: protocol.Limits


def open_env(tmp_path: Path, **limits: Any) -> Env:
    lim = protocol.Limits(**limits)
    clock = ManualClock()
    inner = EmbeddedRemote.open(tmp_path / "store", limits=lim, clock=clock)
    return Env(Probe(inner), clock, tmp_path / "store", lim)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = open_env(tmp_path)
    try:
        yield e
    finally:
        await e.remote.inner.aclose()
    assert fsck(e.path) == []


@pytest.fixture
async def small_env(tmp_path: Path) -> AsyncIterator[Env]:
    """A store whose uploads hold at most 4 parts (2 MiB): files become several segments."""
    e = open_env(tmp_path, upload_max_fileparts_default=4)
    try:
        yield e
    finally:
        await e.remote.inner.aclose()
    assert fsck(e.path) == []


def open_files_under(directory: Path) -> list[str]:
    """Paths of this process's open files inside ``directory`` (spill files are unlinked,
    so they never show in a listing, only here)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory) + "/"):
            out.append(target)
    return out


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


async def stream(remote: Any, data: bytes, *, chunk: int = 128 * 1024, parallel: int = 4,
                 spill_dir: Path | None = None, name: str = "f",
                 **options: Any) -> tuple[Document, ...]:
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(nursery, remote, name, parallel=parallel,
                                        spill_dir=spill_dir, **options)
        try:
            for pos in range(0, len(data), chunk):
                await up.write(data[pos : pos + chunk])
            docs = await up.finish()
        except Exception as exc:
            failure = exc
    if failure is not None:
        raise failure
    return docs


async def read_back(remote: Any, docs: tuple[Document, ...]) -> bytes:
    return await read_segments(remote, docs, 0, sum(d.size for d in docs))


async def test_parts_in_flight_md5_and_small_big_switch(env: Env, tmp_path: Path) -> None:
    env.remote.hold_until = 3
    data = payload(THRESHOLD + 3 * PART_SIZE + 1000)
    docs = await stream(env.remote, data, spill_dir=tmp_path)

    assert len(docs) == 1
    assert env.remote.max_in_flight >= 3
    assert env.remote.max_in_flight <= 4
    assert await read_back(env.remote, docs) == data
    assert docs[0].sha256 == hashlib.sha256(data).hexdigest()
    assert docs[0].md5 == hashlib.md5(data).hexdigest()
    nparts = -(-len(data) // PART_SIZE)
    saves = sorted(env.remote.saves, key=lambda s: s[1])
    assert [s[1] for s in saves] == list(range(nparts))
    for kind, part, total, size in saves:
        end = part * PART_SIZE + size
        assert kind == ("small" if end <= THRESHOLD else "big")
        assert size == (PART_SIZE if part < nparts - 1 else len(data) - part * PART_SIZE)
        if kind == "big":
            assert total == (nparts if part == nparts - 1 else protocol.TOTAL_PARTS_UNKNOWN)
    assert env.remote.finals == [InputFileBig(env.remote.finals[0].id, nparts, "f")]


@pytest.mark.parametrize("size, kinds, final", [
    (3 * MIB + 5, {"small"}, InputFile),
    (THRESHOLD, {"small"}, InputFile),
    (THRESHOLD + 1, {"small", "big"}, InputFileBig),
])
async def test_threshold_boundary(env: Env, size: int, kinds: set[str], final: type) -> None:
    data = payload(size, seed=size)
    docs = await stream(env.remote, data, chunk=300_000)
    assert await read_back(env.remote, docs) == data
    assert {s[0] for s in env.remote.saves} == kinds
    (fin,) = env.remote.finals
    assert type(fin) is final
    if isinstance(fin, InputFile):
        assert fin.md5_checksum == hashlib.md5(data).hexdigest()
    # The last part is the only short one and the only one sent with a known total.
    last = max(env.remote.saves, key=lambda s: s[1])
    assert last[3] == size - last[1] * PART_SIZE
    if last[0] == "big":
        assert last[2] == last[1] + 1


async def test_empty_file_uploads_nothing(env: Env) -> None:
    assert await stream(env.remote, b"") == ()
    assert env.remote.saves == [] and env.remote.finals == []


async def test_one_expired_part_is_sent_again(env: Env, tmp_path: Path) -> None:
    lifetime = env.limits.part_lifetime

    def after_save(part: int) -> None:
        # Part 0 is saved long before the others, so only it outlives the part lifetime.
        if part == 0 and env.clock.now < 1_700_000_000.0 + lifetime:
            env.clock.now += lifetime * 0.6

    def before_final(index: int) -> None:
        if index == 0:
            env.clock.now += lifetime * 0.5

    env.remote.after_save = after_save
    env.remote.before_final = before_final
    data = payload(5 * MIB + 77)
    # One part at a time, so that part 0 is saved before the clock moves.
    docs = await stream(env.remote, data, parallel=1, spill_dir=tmp_path)
    assert await read_back(env.remote, docs) == data
    assert len(env.remote.finals) == 2
    nparts = -(-len(data) // PART_SIZE)
    assert [s[1] for s in env.remote.saves] == [*range(nparts), 0]


@pytest.mark.parametrize("source", ["stream", "path"])
async def test_all_parts_expired_are_sent_again(env: Env, tmp_path: Path, source: str) -> None:
    def before_final(index: int) -> None:
        if index == 0:
            env.clock.now += env.limits.part_lifetime + 1

    env.remote.before_final = before_final
    data = payload(THRESHOLD + 2 * MIB + 3)
    if source == "stream":
        # The stream keeps its parts (memory, then spill file) until finalize succeeds.
        docs = await stream(env.remote, data, spill_dir=tmp_path)
    else:
        # From a file the parts are re-read from the source instead.
        local = tmp_path / "local.bin"
        local.write_bytes(data)
        docs = await upload_file(env.remote, local, "local.bin")
    assert await read_back(env.remote, docs) == data
    nparts = -(-len(data) // PART_SIZE)
    sent = [s[1] for s in env.remote.saves]
    # Finalize names part 0: it alone is sent again; then part 1: it and every later part.
    assert sorted(sent) == sorted([*range(nparts), 0, *range(1, nparts)])
    assert len(env.remote.finals) == 3
    # Re-sent parts use the same call as the first time, now with the known total.
    for kind, part, total, size in env.remote.saves[nparts:]:
        assert kind == ("small" if part * PART_SIZE + size <= THRESHOLD else "big")
        assert total in (None, nparts)


async def test_missing_part_that_never_comes_back_fails(env: Env, tmp_path: Path) -> None:
    def before_final(index: int) -> None:
        env.clock.now += env.limits.part_lifetime + 1  # every attempt finds parts expired

    env.remote.before_final = before_final
    with pytest.raises(errors.FilePartMissing):
        await stream(env.remote, payload(2 * MIB), spill_dir=tmp_path)
    assert 1 < len(env.remote.finals) <= 5


async def test_failed_part_surfaces_from_write_or_finish(env: Env) -> None:
    env.remote.fail_save = 5
    data = payload(8 * MIB)
    raised: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(nursery, env.remote, "f")
        try:
            for pos in range(0, len(data), 128 * 1024):
                await up.write(data[pos : pos + 128 * 1024])
            await up.finish()
        except errors.TransportError as exc:
            raised.append(exc)
    assert raised and "injected" in str(raised[0])
    assert up.closed or up.size <= len(data)
    # The caller's nursery survived; a later write fails clearly instead of hanging.
    with pytest.raises((errors.TransportError, RuntimeError)):
        await up.write(b"x")


async def test_finalize_error_surfaces(env: Env) -> None:
    env.remote.inner.store.set_user(env.remote.inner.user_id, quota_bytes=MIB)
    with pytest.raises(errors.QuotaExceeded):
        await stream(env.remote, payload(2 * MIB))


async def test_memory_stays_bounded(env: Env, tmp_path: Path) -> None:
    size = 64 * MIB
    block = payload(256 * 1024)
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        async with trio.open_nursery() as nursery:
            up = await StreamingUpload.open(nursery, env.remote, "big", spill_dir=spill_dir)
            for _ in range(size // len(block)):
                await up.write(block)
            # Parts went out while the file was being written, not at finish.
            saved_while_writing = up.saved_bytes
            # Sent parts beyond the first few MiB wait in a spill file, not in memory.
            spilling = open_files_under(spill_dir)
            docs = await up.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert docs[0].size == size
    # Queue + in flight + retained-in-memory is ~10 MiB; the store may hold a few parts
    # for hashing.  Far below the 64 MiB streamed.
    assert peak < 24 * MIB, f"peak {peak / MIB:.1f} MiB"
    assert saved_while_writing >= size - 8 * MIB
    assert spilling
    assert open_files_under(spill_dir) == []


async def test_several_segments(small_env: Env, tmp_path: Path) -> None:
    data = payload(9 * MIB + 12345)
    docs = await stream(small_env.remote, data, chunk=1000 * 1000, spill_dir=tmp_path)
    seg = 4 * PART_SIZE
    assert [d.size for d in docs] == [seg] * 4 + [len(data) - 4 * seg]
    assert await read_back(small_env.remote, docs) == data
    # Each segment is its own upload: parts 0..3 under its own file id, finalized in order.
    assert len({f.id for f in small_env.remote.finals}) == 5
    node = await small_env.remote.create_file(ROOT_ID, "seg.bin",
                                              tuple(d.location for d in docs))
    assert node.size == len(data)
    got = await small_env.remote.getattr(node.id)
    assert await read_back(small_env.remote, got.segments) == data


async def test_big_segments(tmp_path: Path) -> None:
    # Segments of 4 parts above a 1 MiB threshold: each is a big upload that starts with
    # saveFilePart and switches to saveBigFilePart.
    e = open_env(tmp_path, upload_max_fileparts_default=4, big_file_threshold=MIB)
    try:
        data = payload(5 * MIB)
        docs = await upload_file(e.remote, io.BytesIO(data), "b")
        assert [d.size for d in docs] == [2 * MIB, 2 * MIB, MIB]
        assert await read_back(e.remote, docs) == data
        # Segments may finalize in any order; the result keeps the file's order.
        assert sorted(type(f).__name__ for f in e.remote.finals) == [
            "InputFile", "InputFileBig", "InputFileBig"]
        kinds = {(s[1], s[0]) for s in e.remote.saves}
        assert kinds == {(0, "small"), (1, "small"), (2, "big"), (3, "big")}
    finally:
        await e.remote.inner.aclose()
    assert fsck(e.path) == []


async def test_segments_within_the_budget_stay_in_memory(env: Env, tmp_path: Path) -> None:
    # Segments of 24 parts (12 MiB, big uploads) are finalized as soon as their parts are
    # saved, which drops their parts from the budget: 30 MiB stream through 64 MiB of budget
    # without a spill file (the spill directory does not exist: a spill would fail).
    budget = RetainBudget(64 * MIB)
    data = payload(30 * MIB + 5)
    docs = await stream(env.remote, data, spill_dir=tmp_path / "missing", budget=budget,
                        segment_parts=24)
    assert [d.size for d in docs] == [12 * MIB, 12 * MIB, 6 * MIB + 5]
    assert await read_back(env.remote, docs) == data
    assert budget.used == 0
    # The last segment is a small upload: its MD5 (checked by the store) was computed at
    # finalize from the retained parts, the first segment's as the bytes passed.
    assert sorted(type(f).__name__ for f in env.remote.finals) == [
        "InputFile", "InputFileBig", "InputFileBig"]


async def test_parts_beyond_a_shared_budget_spill(env: Env, tmp_path: Path) -> None:
    budget = RetainBudget(2 * MIB)
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    first, second = payload(6 * MIB, seed=1), payload(3 * MIB, seed=2)
    async with trio.open_nursery() as nursery:
        a = await StreamingUpload.open(nursery, env.remote, "a", spill_dir=spill_dir,
                                       budget=budget)
        b = await StreamingUpload.open(nursery, env.remote, "b", spill_dir=spill_dir,
                                       budget=budget)
        await a.write(first)
        # The first 2 MiB of a's parts took the whole budget; b's parts go to its spill
        # file, and so do a's later ones: two spill files.
        assert budget.used == 2 * MIB
        await b.write(second)
        assert budget.used == 2 * MIB
        with trio.fail_after(10):
            while len(open_files_under(spill_dir)) < 2:
                await trio.sleep(0.01)
        docs_a = await a.finish()
        docs_b = await b.finish()
    assert budget.used == 0
    assert open_files_under(spill_dir) == []
    assert await read_back(env.remote, docs_a) == first
    assert await read_back(env.remote, docs_b) == second


async def until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    """Poll ``condition`` in real time (for tests whose trio clock only moves by hand)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await trio.to_thread.run_sync(time.sleep, 0.005)


async def test_slow_writer_segments_are_uploaded_again_before_they_expire(
        env: Env, tmp_path: Path, mock_clock: Any) -> None:
    # A file written over longer than the part lifetime: its first segments were finalized
    # (and their parts dropped) long before close links them.  Each is uploaded again from
    # the store at half the lifetime, so the file is whole when it is linked.  trio's clock
    # (the uploader's) and the store's clock move only by hand here.
    lifetime = env.limits.part_lifetime
    data = payload(5 * MIB + 3)
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(nursery, env.remote, "slow", segment_parts=4,
                                        budget=RetainBudget(64 * MIB),
                                        spill_dir=tmp_path / "missing")
        await up.write(data[: 4 * MIB + 1])
        await until(lambda: all(seg.document is not None for seg in up._segments))
        originals = [seg.document for seg in up._segments]
        assert len(originals) == 2
        env.clock.now += lifetime / 2 + 1
        mock_clock.jump(lifetime / 2 + 1)
        await until(lambda: not any(seg.document in originals for seg in up._segments))
        env.clock.now += lifetime / 2 + 100
        # The first documents are gone now; without the refresh the file would be lost.
        with pytest.raises(errors.FsmountError):
            await read_segments(env.remote, (originals[0],), 0, 1)
        await up.write(data[4 * MIB + 1 :])
        docs = await up.finish()
    node = await env.remote.create_file(ROOT_ID, "slow", tuple(d.location for d in docs))
    got = await env.remote.getattr(node.id)
    assert await read_back(env.remote, got.segments) == data


async def test_read_back_while_writing(small_env: Env, tmp_path: Path) -> None:
    data = payload(5 * MIB + 999)
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(nursery, small_env.remote, "r", spill_dir=tmp_path)
        rng = random.Random(3)
        for pos in range(0, len(data), 100_000):
            await up.write(data[pos : pos + 100_000])
            off = rng.randrange(0, up.size)
            assert await up.read(off, 300_000) == data[off : min(off + 300_000, up.size)]
        # Across finalized segments, retained parts and the unsent tail at once.
        assert await up.read(0, len(data) + 10) == data
        docs = await up.finish()
    assert await read_back(small_env.remote, docs) == data


async def test_into_staging_keeps_what_was_written(small_env: Env, tmp_path: Path) -> None:
    data = payload(5 * MIB + 1)
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(nursery, small_env.remote, "s", spill_dir=tmp_path)
        await up.write(data)
        staging = await up.into_staging(tmp_path / "cache")
    assert up.closed
    try:
        await staging.pwrite(0, b"HEADER")
        model = b"HEADER" + data[6:]
        assert await staging.pread(0, len(data)) == model
        docs = await staging.upload("s")
        assert await read_back(small_env.remote, docs) == model
    finally:
        await staging.aclose()


async def test_abort_releases_everything(env: Env, tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(nursery, env.remote, "a", spill_dir=spill_dir)
        await up.write(payload(12 * MIB))
        with trio.fail_after(10):
            while not open_files_under(spill_dir):
                await trio.sleep(0.01)
        await up.abort()
        await up.abort()
    assert env.remote.finals == []
    assert open_files_under(spill_dir) == []
    with pytest.raises(RuntimeError):
        await up.finish()


class _Pipe(io.RawIOBase):
    """A non-seekable source, like stdin from a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b: Any) -> int:
        chunk = self._data.read(min(len(b), 70_000))
        b[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("kind", ["path", "bytesio", "pipe"])
async def test_upload_file_sources_and_progress(env: Env, tmp_path: Path, kind: str) -> None:
    data = payload(3 * MIB + 17)
    seen: list[int] = []
    src: Any
    if kind == "path":
        src = tmp_path / "x.bin"
        src.write_bytes(data)
    elif kind == "bytesio":
        src = io.BytesIO(b"skipped" + data)
        src.seek(7)
    else:
        src = io.BufferedReader(_Pipe(data))
    docs = await upload_file(env.remote, src, "x.bin", progress=seen.append, spill_dir=tmp_path)
    assert await read_back(env.remote, docs) == data
    assert seen == sorted(seen) and seen[-1] == len(data)


async def test_upload_file_errors(env: Env, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await upload_file(env.remote, tmp_path / "nope", "nope")
    with pytest.raises(IsADirectoryError):
        await upload_file(env.remote, tmp_path, "dir")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert await upload_file(env.remote, empty, "empty") == ()


async def test_upload_file_from_a_device_streams_to_eof(env: Env) -> None:
    # Not a regular file: no size up front, read until EOF, nothing to re-read from.
    assert await upload_file(env.remote, os.devnull, "null") == ()


async def test_spill_failure_fails_the_upload_clearly(env: Env, tmp_path: Path) -> None:
    # The cache directory is gone: the first spill fails, and so does the upload (no hang).
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(nursery, env.remote, "s", spill_dir=tmp_path / "gone")
        try:
            with trio.fail_after(30):
                for _ in range(40):
                    await up.write(payload(MIB))
                await up.finish()
        except OSError as exc:
            failure = exc
    assert isinstance(failure, FileNotFoundError)
    assert env.remote.finals == []


def resident_bytes(fd: int) -> int:
    """Bytes of the file open as ``fd`` in the kernel's page cache (util-linux fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                          f"/proc/{os.getpid()}/fd/{fd}"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def supports_direct_io(directory: Path) -> bool:
    try:
        fd = os.open(directory / "probe", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(directory / "probe")
    return True


def test_spill_file_keeps_parts_out_of_the_page_cache(tmp_path: Path) -> None:
    parts = [payload(PART_SIZE, seed=1), payload(PART_SIZE, seed=2), payload(1000, seed=3)]
    spill = SpillFile(str(tmp_path), 8 * PART_SIZE)
    try:
        for n, data in enumerate(parts):
            spill.write(data, n * PART_SIZE)
        for n, data in enumerate(parts):
            assert spill.read(len(data), n * PART_SIZE) == data
        # Direct I/O wherever the filesystem of the cache directory offers it, and then
        # the spilled bytes take no page cache.
        assert spill.direct == supports_direct_io(tmp_path)
        if spill.direct:
            assert resident_bytes(spill.fd) == 0
    finally:
        spill.close()


def test_spill_file_falls_back_to_buffered_writes(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A device whose alignment rules refuse a direct write (EINVAL): the part is written
    # buffered instead, and the file stays buffered.
    real = os.pwrite
    refused: list[int] = []

    def picky(fd: int, data: Any, offset: int) -> int:
        if not refused:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", picky)
    spill = SpillFile(str(tmp_path), 4 * PART_SIZE)
    try:
        spill.direct = True  # as if the filesystem had accepted O_DIRECT
        data = payload(PART_SIZE + 7)[:PART_SIZE]
        spill.write(data, PART_SIZE)
        assert refused == [PART_SIZE]
        assert not spill.direct
        assert not fcntl.fcntl(spill.fd, fcntl.F_GETFL) & os.O_DIRECT
        assert spill.read(PART_SIZE, PART_SIZE) == data
    finally:
        spill.close()


async def test_limits_are_asked_once_for_many_files(env: Env) -> None:
    for i in range(20):
        docs = await stream(env.remote, payload(1000 + i, seed=i), name=f"f{i}")
        assert docs[0].size == 1000 + i
    assert env.remote.get_config_calls == 1


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunks=st.lists(st.integers(min_value=1, max_value=700_000), min_size=0, max_size=14),
    fail_at=st.one_of(st.none(), st.integers(min_value=0, max_value=12)),
    parallel=st.integers(min_value=1, max_value=5),
)
async def test_any_write_pattern_gives_the_bytes_or_a_clean_error(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[int], fail_at: int | None,
    parallel: int,
) -> None:
    """Random write sizes, several segments (4 parts each), a save that may fail: either the
    segments hold exactly the bytes written, or finish/write raise the injected error; no
    hang, no spill file left open."""
    base = tmp_path_factory.mktemp("prop")
    e = open_env(base, upload_max_fileparts_default=4)
    e.remote.fail_save = fail_at
    spill_dir = base / "spill"
    spill_dir.mkdir()
    rng = random.Random(len(chunks))
    data = rng.randbytes(sum(chunks))
    try:
        with trio.fail_after(60):
            try:
                docs = await stream_chunks(e.remote, data, chunks, parallel, spill_dir)
            except errors.TransportError as exc:
                assert fail_at is not None and fail_at < len(e.remote.saves)
                assert "injected" in str(exc)
            else:
                assert fail_at is None or fail_at >= len(e.remote.saves)
                assert await read_back(e.remote, docs) == data
                assert [d.size for d in docs[:-1]] == [4 * PART_SIZE] * (len(docs) - 1)
        assert open_files_under(spill_dir) == []
    finally:
        await e.remote.inner.aclose()


async def stream_chunks(remote: Any, data: bytes, chunks: list[int], parallel: int,
                        spill_dir: Path) -> tuple[Document, ...]:
    failure: Exception | None = None
    docs: tuple[Document, ...] = ()
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(nursery, remote, "p", parallel=parallel,
                                        spill_dir=spill_dir)
        try:
            pos = 0
            for n in chunks:
                await up.write(data[pos : pos + n])
                pos += n
            docs = await up.finish()
        except Exception as exc:
            await up.abort()
            failure = exc
    if failure is not None:
        raise failure
    return docs


async def test_reads_concurrent_with_writes_never_see_a_gap(small_env: Env, tmp_path: Path) -> None:
    data = payload(7 * MIB + 5, seed=9)
    checked = 0
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(nursery, small_env.remote, "c", spill_dir=tmp_path)
        writing = trio.Event()

        async def reader() -> None:
            nonlocal checked
            rng = random.Random(4)
            while not writing.is_set() and checked < 2000:
                size = up.size
                if size:
                    off = rng.randrange(0, size)
                    got = await up.read(off, 700_000)
                    assert got == data[off : off + len(got)]
                    assert len(got) >= min(700_000, size - off)
                    checked += 1
                await trio.lowlevel.checkpoint()

        nursery.start_soon(reader)
        for pos in range(0, len(data), 333_333):
            await up.write(data[pos : pos + 333_333])
        writing.set()
        docs = await up.finish()
    assert checked > 0
    assert await read_back(small_env.remote, docs) == data


class _DistantRemote:
    """A real EmbeddedRemote whose part saves each take a simulated round trip (50 ms of
    trio time, like a far link), counting how many are in flight at once."""

    def __init__(self, inner: EmbeddedRemote) -> None:
        self.inner = inner
        self.in_flight = 0
        self.most = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _save(self, call: Any, *args: Any) -> bool:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await trio.sleep(0.05)  # the link's delay, not a synchronisation
            return await call(*args)
        finally:
            self.in_flight -= 1

    async def save_file_part(self, *args: Any) -> bool:
        return await self._save(self.inner.save_file_part, *args)

    async def save_big_file_part(self, *args: Any) -> bool:
        return await self._save(self.inner.save_big_file_part, *args)


@pytest.mark.parametrize("parallel_max", [None, 16])
async def test_parts_in_flight_grow_to_the_links_bandwidth_delay_product(
        tmp_path: Path, parallel_max: int | None) -> None:
    """Over a link whose saves take a round trip each, a stream keeps more than its
    ``parallel`` parts in flight when ``parallel_max`` lets it (the link estimator sees the
    rate grow with what is in flight), and exactly ``parallel`` when it does not; the
    content arrives whole either way."""
    from fsmount.upload import StreamingUpload, read_segments

    inner = EmbeddedRemote.open(tmp_path / "store")
    remote = _DistantRemote(inner)
    data = random.Random(3).randbytes(24 * protocol.MIB)
    try:
        async with trio.open_nursery() as nursery:
            up = await StreamingUpload.open(nursery, remote, "far.bin", parallel=2,  # type: ignore[arg-type]
                                            parallel_max=parallel_max, spill_dir=tmp_path)
            for off in range(0, len(data), protocol.MIB):
                await up.write(data[off:off + protocol.MIB])
            docs = await up.finish()
        assert await read_segments(inner, docs, 0, len(data)) == data
        if parallel_max is None:
            assert remote.most == 2
        else:
            assert 2 < remote.most <= parallel_max
    finally:
        await inner.aclose()
