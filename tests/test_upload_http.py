"""The streaming uploader over every Remote: the embedded store and the HTTP client against
the real server on 127.0.0.1 (the contract suite's harness), so that the small/big switch,
segments, FILE_PART_X_MISSING recovery and staging work through the transport too."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from contract.conftest import FACTORIES, Harness

from fsmount import errors
from fsmount.protocol import MIB, Limits
from fsmount.remote import ROOT_ID, Document
from fsmount.upload import StagingFile, StreamingUpload, read_segments, upload_file

#: 1 MiB threshold and 8 parts (4 MiB) per upload: big uploads and segments stay cheap.
LIMITS = Limits(upload_max_fileparts_default=8, upload_max_fileparts_premium=16,
                big_file_threshold=MIB, part_lifetime=3600.0)


@pytest.fixture(params=sorted(FACTORIES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path, manual_clock: Any
                  ) -> AsyncIterator[Harness]:
    async with FACTORIES[request.param](tmp_path, manual_clock, LIMITS) as h:
        yield h
        assert h.fsck() == []


class ExpireBeforeFirstFinalize:
    """Forwards to a remote; moves the clock past the part lifetime before the first
    finalize, so every part saved until then has expired."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.finals = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.h.remote, name)

    async def upload_media(self, file: Any) -> Document:
        self.finals += 1
        if self.finals == 1:
            self.h.clock.advance(self.h.limits.part_lifetime + 1)
        return await self.h.remote.upload_media(file)


async def test_segments_big_switch_and_expiry_recovery(harness: Harness, tmp_path: Path) -> None:
    remote = ExpireBeforeFirstFinalize(harness)
    data = random.Random(1).randbytes(10 * MIB + 333)
    async with trio.open_nursery() as nursery:
        up = await StreamingUpload.open(nursery, remote, "f.bin", spill_dir=tmp_path)
        for pos in range(0, len(data), 200_000):
            await up.write(data[pos : pos + 200_000])
        docs = await up.finish()
    assert [d.size for d in docs] == [4 * MIB, 4 * MIB, len(data) - 8 * MIB]
    # The first segment's parts all expired before its finalize and were sent again
    # (one finalize that names part 0, one that names part 1, then success).
    assert remote.finals >= len(docs) + 2
    node = await harness.remote.create_file(ROOT_ID, "f.bin", tuple(d.location for d in docs))
    got = await harness.remote.getattr(node.id)
    assert await read_segments(harness.remote, got.segments, 0, len(data)) == data
    assert hashlib.sha256(data[: 4 * MIB]).hexdigest() == docs[0].sha256


async def test_put_then_edit_through_staging(harness: Harness, tmp_path: Path) -> None:
    data = random.Random(2).randbytes(5 * MIB)
    docs = await upload_file(harness.remote, io.BytesIO(data), "e.bin")
    sf = await StagingFile.create(tmp_path / "cache", harness.remote, docs)
    try:
        await sf.pwrite(MIB + 10, b"patch")
        await sf.truncate(len(data) - 7)
        new = await sf.upload("e.bin")
    finally:
        await sf.aclose()
    want = data[: MIB + 10] + b"patch" + data[MIB + 15 : len(data) - 7]
    assert await read_segments(harness.remote, new, 0, len(want)) == want


async def test_quota_error_comes_back_by_name(harness: Harness) -> None:
    assert harness.set_quota is not None
    harness.set_quota(MIB)
    with pytest.raises(errors.QuotaExceeded):
        await upload_file(harness.remote, io.BytesIO(bytes(2 * MIB)), "q.bin")
