"""Download rules: getFile windows, getFileHashes, getDocumentByHash, stale locations.

Seeds: telegram-files-api-current.md "Downloading files", "Verifying downloaded chunks",
"Re-using pre-uploaded files"; scaidrive-uploads-and-downloads.md "Verifying downloads".
"""

from __future__ import annotations

import hashlib
import os

import pytest

from fsmount import errors
from fsmount.protocol import KIB, MIB
from fsmount.remote import FileLocation

from .helpers import Harness, after_grace, read_all, upload


@pytest.fixture
async def doc_and_data(harness: Harness):  # type: ignore[no-untyped-def]
    data = os.urandom(2 * MIB + 300 * KIB + 17)
    doc = await upload(harness.remote, data)
    await harness.remote.create_file(1, "data.bin", (doc.location,))
    return doc, data


async def test_get_file_reads_windows_and_is_short_at_eof(harness: Harness, doc_and_data) -> None:  # type: ignore[no-untyped-def]
    doc, data = doc_and_data
    r = harness.remote
    for off, lim in [(0, MIB), (MIB, 512 * KIB), (MIB + 512 * KIB, 512 * KIB), (4 * KIB, 4 * KIB),
                     (2 * MIB, MIB), (2 * MIB + 256 * KIB, 256 * KIB)]:
        got = await r.get_file(doc.location, off, lim)
        assert got.bytes == data[off : off + lim], (off, lim)
    last = await r.get_file(doc.location, 2 * MIB, MIB)
    assert len(last.bytes) == len(data) - 2 * MIB
    assert await read_all(r, doc) == data


async def test_get_file_past_eof_is_empty(harness: Harness, doc_and_data) -> None:  # type: ignore[no-untyped-def]
    doc, _ = doc_and_data
    got = await harness.remote.get_file(doc.location, 10 * MIB, MIB)
    assert got.bytes == b""


async def test_get_file_type_and_mtime(harness: Harness) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(3000)
    doc = await upload(harness.remote, jpeg, name="a.jpg")
    got = await harness.remote.get_file(doc.location, 0, 4 * KIB)
    assert got.type.value == "storage.fileJpeg"
    assert got.mtime == int(doc.date)
    # Any window of the document reports the document's type.
    later = await harness.remote.get_file(doc.location, 0, 1 * KIB, precise=True)
    assert later.type.value == "storage.fileJpeg"
    plain = await upload(harness.remote, b"no magic here")
    assert (await harness.remote.get_file(plain.location, 0, 4 * KIB)).type.value == (
        "storage.fileUnknown"
    )


@pytest.mark.parametrize(
    ("offset", "limit", "precise", "error"),
    [
        (1 * KIB, 4 * KIB, False, "OFFSET_INVALID"),  # offset not a 4 KiB multiple
        (-4 * KIB, 4 * KIB, False, "OFFSET_INVALID"),
        (0, 3 * KIB, False, "LIMIT_INVALID"),  # limit not a 4 KiB multiple
        (0, 12 * KIB, False, "LIMIT_INVALID"),  # 1 MiB not divisible by limit
        (0, 0, False, "LIMIT_INVALID"),
        (0, 2 * MIB, False, "LIMIT_INVALID"),
        (512 * KIB, MIB, False, "LIMIT_INVALID"),  # crosses a 1 MiB boundary
        (512, 1 * KIB, True, "OFFSET_INVALID"),  # precise: 1 KiB multiples
        (0, 1536, True, "LIMIT_INVALID"),
        (0, MIB + KIB, True, "LIMIT_INVALID"),  # precise: at most 1 MiB
        (MIB - KIB, 2 * KIB, True, "LIMIT_INVALID"),  # precise still within one window
    ],
)
async def test_get_file_window_rules(harness: Harness, doc_and_data, offset: int, limit: int,  # type: ignore[no-untyped-def]
                                     precise: bool, error: str) -> None:
    doc, _ = doc_and_data
    with pytest.raises(errors.ProtocolError) as ei:
        await harness.remote.get_file(doc.location, offset, limit, precise)
    assert ei.value.name == error


async def test_precise_reads_any_1k_range_in_a_window(harness: Harness, doc_and_data) -> None:  # type: ignore[no-untyped-def]
    doc, data = doc_and_data
    for off, lim in [(KIB, 3 * KIB), (MIB + 5 * KIB, 999 * KIB), (MIB - KIB, KIB)]:
        got = await harness.remote.get_file(doc.location, off, lim, precise=True)
        assert got.bytes == data[off : off + lim]


async def test_unknown_location_is_FILE_ID_INVALID(harness: Harness, doc_and_data) -> None:  # type: ignore[no-untyped-def]
    doc, _ = doc_and_data
    r = harness.remote
    for loc in (FileLocation(doc.id + 1000, doc.access_hash),
                FileLocation(doc.id, doc.access_hash ^ 1)):
        with pytest.raises(errors.FileIdInvalid) as ei:
            await r.get_file(loc, 0, 4 * KIB)
        assert ei.value.name == "FILE_ID_INVALID"
        with pytest.raises(errors.FileIdInvalid):
            await r.get_file_hashes(loc, 0)
        with pytest.raises(errors.FileIdInvalid):
            await r.create_file(1, "x", (loc,))


async def test_other_users_document_is_FILE_ID_INVALID(harness: Harness, doc_and_data) -> None:  # type: ignore[no-untyped-def]
    doc, _ = doc_and_data
    with pytest.raises(errors.FileIdInvalid):
        await harness.remote_b.get_file(doc.location, 0, 4 * KIB)
    with pytest.raises(errors.FileIdInvalid):
        await harness.remote_b.get_file_hashes(doc.location, 0)
    with pytest.raises(errors.FileIdInvalid):
        await harness.remote_b.create_file(1, "stolen", (doc.location,))


async def test_deleted_document_is_FILE_REFERENCE_EXPIRED(harness: Harness, doc_and_data) -> None:  # type: ignore[no-untyped-def]
    doc, data = doc_and_data
    await harness.remote.unlink(1, "data.bin")
    assert (await harness.remote.get_file(doc.location, 0, 4096)).bytes == data[:4096]
    await after_grace(harness)
    with pytest.raises(errors.FileReferenceExpired) as ei:
        await harness.remote.get_file(doc.location, 0, 4 * KIB)
    assert ei.value.name == "FILE_REFERENCE_EXPIRED"
    with pytest.raises(errors.FileReferenceExpired):
        await harness.remote.get_file_hashes(doc.location, 0)
    # ... but for another user it never existed.
    with pytest.raises(errors.FileIdInvalid):
        await harness.remote_b.get_file(doc.location, 0, 4 * KIB)


async def test_file_hashes_cover_the_offsets_window(harness: Harness, doc_and_data) -> None:  # type: ignore[no-untyped-def]
    """Entries start at the block holding the offset, are contiguous 128 KiB blocks with the
    right SHA-256 (the last one short), and reach at least the end of the offset's 1 MiB
    window (or the end of the document); nothing past the end."""
    doc, data = doc_and_data
    r = harness.remote

    async def check(offset: int) -> None:
        got = await r.get_file_hashes(doc.location, offset)
        first = offset // (128 * KIB) * (128 * KIB)
        assert got and got[0].offset == first
        for prev, h in zip(got, got[1:], strict=False):
            assert h.offset == prev.offset + 128 * KIB
        for h in got:
            assert h.limit == min(128 * KIB, len(data) - h.offset)
            assert h.hash == hashlib.sha256(data[h.offset : h.offset + h.limit]).digest()
        reach = got[-1].offset + got[-1].limit
        assert reach >= min(len(data), (offset // MIB + 1) * MIB)
        assert reach <= len(data)

    for offset in (0, 4 * KIB, MIB + 200 * KIB, 2 * MIB, len(data) // KIB * KIB):
        await check(offset)
    assert await r.get_file_hashes(doc.location, 4 * MIB) == []


@pytest.mark.parametrize("offset", [-1024, 100, 1023])
async def test_file_hashes_offset_rule(harness: Harness, doc_and_data, offset: int) -> None:  # type: ignore[no-untyped-def]
    doc, _ = doc_and_data
    with pytest.raises(errors.OffsetInvalid):
        await harness.remote.get_file_hashes(doc.location, offset)


async def test_get_document_by_hash_finds_own_content_only(harness: Harness, doc_and_data) -> None:  # type: ignore[no-untyped-def]
    doc, data = doc_and_data
    sha = hashlib.sha256(data).hexdigest()
    found = await harness.remote.get_document_by_hash(sha, len(data), "application/octet-stream")
    assert found is not None and found.location == doc.location
    assert await harness.remote.get_document_by_hash(sha.upper(), len(data), "") is not None
    # Wrong size, unknown hash, and another user's content: nothing.
    assert await harness.remote.get_document_by_hash(sha, len(data) + 1, "") is None
    assert await harness.remote.get_document_by_hash("0" * 64, len(data), "") is None
    assert await harness.remote_b.get_document_by_hash(sha, len(data), "") is None


async def test_create_file_from_found_document_without_upload(harness: Harness, doc_and_data) -> None:  # type: ignore[no-untyped-def]
    doc, data = doc_and_data
    found = await harness.remote.get_document_by_hash(doc.sha256, doc.size, "")
    assert found is not None
    node = await harness.remote.create_file(1, "copy.bin", (found.location,))
    assert node.size == len(data)
    await harness.remote.unlink(1, "data.bin")
    assert await read_all(harness.remote, node.segments[0]) == data


async def test_get_file_windows_is_a_run_of_get_file_answers_with_their_checks(
        harness: Harness, doc_and_data) -> None:  # type: ignore[no-untyped-def]
    """The reader's call: consecutive whole windows with the checks get_file_checksums
    gives for them, short after the last window, one empty window past the end; only whole
    aligned windows, 1..MAX_RUN_WINDOWS of them, are accepted."""
    from fsmount.remote import MAX_RUN_WINDOWS

    doc, data = doc_and_data
    r = harness.remote
    run = await r.get_file_windows(doc.location, 0, MAX_RUN_WINDOWS)
    assert [w.bytes for w in run.windows] == [data[:MIB], data[MIB:2 * MIB], data[2 * MIB:]]
    assert all(w.type.value == "storage.filePartial" or w.type for w in run.windows)
    assert run.checks is not None
    assert run.checks == [c for w in range(3) for c in
                          await r.get_file_checksums(doc.location, w * MIB)]
    assert all(c.matches(data[c.offset:c.offset + c.limit]) for c in run.checks)
    one = await r.get_file_windows(doc.location, MIB, 1)
    assert [w.bytes for w in one.windows] == [data[MIB:2 * MIB]]
    assert one.checks == await r.get_file_checksums(doc.location, MIB)
    past = await r.get_file_windows(doc.location, 4 * MIB, 2)
    assert [w.bytes for w in past.windows] == [b""] and not past.checks
    for offset, count in [(4 * KIB, 1), (-MIB, 1)]:
        with pytest.raises(errors.OffsetInvalid):
            await r.get_file_windows(doc.location, offset, count)
    for count in (0, MAX_RUN_WINDOWS + 1):
        with pytest.raises(errors.InvalidArgument):
            await r.get_file_windows(doc.location, 0, count)
    with pytest.raises(errors.FileIdInvalid):
        await r.get_file_windows(FileLocation(doc.id, doc.access_hash + 1), 0, 1)
