"""Upload rules: saveFilePart / saveBigFilePart / finalize, part expiry, quota.

Seeds: telegram-files-api-current.md "Uploading files"; telegram-saveBigFilePart.md;
telegram-files-api-2014.md (error list).
"""

from __future__ import annotations

import hashlib
import os

import pytest
import trio

from fsmount import errors
from fsmount.protocol import KIB, TOTAL_PARTS_UNKNOWN
from fsmount.remote import InputFile, InputFileBig

from .helpers import Harness, new_file_id, read_all, upload

P = 512 * KIB


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- one part on its own ------------------------------------------------------------------


async def test_empty_part_is_FILE_PART_EMPTY(harness: Harness) -> None:
    with pytest.raises(errors.FilePartEmpty) as ei:
        await harness.remote.save_file_part(new_file_id(), 0, b"")
    assert ei.value.name == "FILE_PART_EMPTY"
    with pytest.raises(errors.FilePartEmpty):
        await harness.remote.save_big_file_part(new_file_id(), 0, 3, b"")


async def test_part_above_512_KiB_is_FILE_PART_TOO_BIG(harness: Harness) -> None:
    with pytest.raises(errors.FilePartTooBig) as ei:
        await harness.remote.save_file_part(new_file_id(), 0, b"x" * (P + 1))
    assert ei.value.name == "FILE_PART_TOO_BIG"
    with pytest.raises(errors.FilePartTooBig):
        await harness.remote.save_big_file_part(new_file_id(), 0, 3, b"x" * (P + 1024))


async def test_part_number_range_is_FILE_PART_INVALID(harness: Harness) -> None:
    r = harness.remote
    for bad in (-1, harness.limits.upload_max_fileparts_default):
        with pytest.raises(errors.FilePartInvalid) as ei:
            await r.save_big_file_part(new_file_id(), bad, TOTAL_PARTS_UNKNOWN, b"x" * KIB)
        assert ei.value.name == "FILE_PART_INVALID"
    # The highest allowed number works.
    top = harness.limits.upload_max_fileparts_default - 1
    assert await r.save_big_file_part(new_file_id(), top, TOTAL_PARTS_UNKNOWN, b"x" * KIB)


async def test_premium_users_get_more_parts(harness: Harness) -> None:
    r = harness.remote
    n = harness.limits.upload_max_fileparts_default
    assert (await r.get_config()).max_parts == n
    with pytest.raises(errors.FilePartInvalid):
        await r.save_big_file_part(new_file_id(), n, TOTAL_PARTS_UNKNOWN, b"x" * KIB)
    harness.set_premium(True)
    cfg = await r.get_config()
    assert cfg.premium and cfg.max_parts == harness.limits.upload_max_fileparts_premium
    assert await r.save_big_file_part(new_file_id(), n, TOTAL_PARTS_UNKNOWN, b"x" * KIB)
    # The other user is not premium.
    assert (await harness.remote_b.get_config()).max_parts == n


async def test_get_config_reports_limits(harness: Harness) -> None:
    cfg = await harness.remote.get_config()
    assert cfg.big_file_threshold == harness.limits.big_file_threshold
    assert cfg.part_lifetime == harness.limits.part_lifetime
    assert cfg.premium is False


# --- part sizes -----------------------------------------------------------------------------


async def test_inner_part_not_dividing_512_KiB_is_FILE_PART_SIZE_INVALID(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    # 3 KiB is a multiple of 1 KiB but does not divide 512 KiB; part 1 arriving first shows
    # part 0 is not the last part.
    await r.save_big_file_part(fid, 1, TOTAL_PARTS_UNKNOWN, b"x" * KIB)
    with pytest.raises(errors.FilePartSizeInvalid) as ei:
        await r.save_big_file_part(fid, 0, TOTAL_PARTS_UNKNOWN, b"x" * 3 * KIB)
    assert ei.value.name == "FILE_PART_SIZE_INVALID"
    # Not a multiple of 1 KiB either.
    with pytest.raises(errors.FilePartSizeInvalid):
        await r.save_big_file_part(fid, 0, TOTAL_PARTS_UNKNOWN, b"x" * 1000)


async def test_last_part_may_be_any_smaller_size(harness: Harness) -> None:
    data = os.urandom(3 * 64 * KIB + 7)
    doc = await upload(harness.remote, data, part_size=64 * KIB)
    assert doc.size == len(data)
    assert await read_all(harness.remote, doc) == data


async def test_a_lone_part_of_odd_size_is_a_whole_file(harness: Harness) -> None:
    data = os.urandom(1000)
    doc = await upload(harness.remote, data)
    assert await read_all(harness.remote, doc) == data


async def test_different_inner_sizes_are_FILE_PART_SIZE_CHANGED(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    await r.save_file_part(fid, 0, b"a" * 64 * KIB)
    await r.save_file_part(fid, 2, b"c" * 10)
    with pytest.raises(errors.FilePartSizeChanged) as ei:
        await r.save_file_part(fid, 1, b"b" * 32 * KIB)
    assert ei.value.name == "FILE_PART_SIZE_CHANGED"


async def test_last_part_larger_than_part_size_is_FILE_PART_SIZE_CHANGED(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    await r.save_file_part(fid, 0, b"a" * 32 * KIB)
    with pytest.raises(errors.FilePartSizeChanged):
        await r.save_file_part(fid, 1, b"b" * 64 * KIB)


async def test_a_short_part_that_turns_out_not_last_is_FILE_PART_SIZE_CHANGED(
    harness: Harness,
) -> None:
    r, fid = harness.remote, new_file_id()
    await r.save_file_part(fid, 0, b"a" * 64 * KIB)
    await r.save_file_part(fid, 1, b"b" * 10)  # fine while it may be the last part
    with pytest.raises(errors.FilePartSizeChanged):
        await r.save_file_part(fid, 2, b"c" * 64 * KIB)


async def test_rejected_part_leaves_the_upload_intact(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    data = os.urandom(2 * 64 * KIB)
    await r.save_file_part(fid, 0, data[: 64 * KIB])
    with pytest.raises(errors.FilePartSizeChanged):
        await r.save_file_part(fid, 1, b"x" * 128 * KIB)
    await r.save_file_part(fid, 1, data[64 * KIB :])
    doc = await r.upload_media(InputFile(fid, 2, "a", md5(data)))
    assert await read_all(r, doc) == data


# --- ordering, parallelism, re-sending ------------------------------------------------------


async def test_parts_in_any_order_and_in_parallel(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    data = os.urandom(7 * 64 * KIB + 123)
    chunks = [data[i : i + 64 * KIB] for i in range(0, len(data), 64 * KIB)]
    order = [5, 2, 7, 0, 3, 6, 1, 4]

    async with trio.open_nursery() as n:
        for i in order:
            n.start_soon(r.save_big_file_part, fid, i, len(chunks), chunks[i])
    doc = await r.upload_media(InputFileBig(fid, len(chunks), "p.bin"))
    assert doc.sha256 == hashlib.sha256(data).hexdigest()
    assert doc.md5 == md5(data)
    assert await read_all(r, doc) == data


async def test_parallel_512k_parts_hash_incrementally_and_read_back(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    data = os.urandom(6 * P + 5000)
    chunks = [data[i : i + P] for i in range(0, len(data), P)]
    send = trio.Semaphore(3)

    async def one(i: int) -> None:
        async with send:
            await r.save_big_file_part(fid, i, len(chunks), chunks[i])

    async with trio.open_nursery() as n:
        for i in range(len(chunks)):
            n.start_soon(one, i)
    doc = await r.upload_media(InputFileBig(fid, len(chunks), "big.bin"))
    assert doc.sha256 == hashlib.sha256(data).hexdigest()
    assert await read_all(r, doc) == data
    hashes = await r.get_file_hashes(doc.location, 0)
    assert [h.hash for h in hashes][:8] == [
        hashlib.sha256(data[o : o + 128 * KIB]).digest() for o in range(0, 1024 * KIB, 128 * KIB)
    ]


async def test_resending_a_part_overwrites_it(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    await r.save_file_part(fid, 0, b"A" * 64 * KIB)
    await r.save_file_part(fid, 1, b"old")
    await r.save_file_part(fid, 1, b"new!")
    await r.save_file_part(fid, 0, b"B" * 64 * KIB)
    data = b"B" * 64 * KIB + b"new!"
    doc = await r.upload_media(InputFile(fid, 2, "x", md5(data)))
    assert await read_all(r, doc) == data


# --- saveFilePart vs saveBigFilePart ----------------------------------------------------------


async def test_save_file_part_beyond_small_threshold_is_FILE_PART_INVALID(
    harness: Harness,
) -> None:
    r = harness.remote
    threshold = harness.limits.big_file_threshold
    last_small = threshold // P - 1  # the last 512 KiB part that starts below the threshold
    assert await r.save_file_part(new_file_id(), last_small, b"x" * P)
    with pytest.raises(errors.FilePartInvalid):
        await r.save_file_part(new_file_id(), threshold // P, b"x" * P)


async def test_writer_switches_from_small_to_big_parts(harness: Harness) -> None:
    """A writer that does not know its final size starts with saveFilePart and continues
    with saveBigFilePart (unknown total) for the same file id; both are one upload."""
    r, fid = harness.remote, new_file_id()
    threshold = harness.limits.big_file_threshold
    data = os.urandom(threshold + 3 * P + 99)
    chunks = [data[i : i + P] for i in range(0, len(data), P)]
    small = threshold // P
    for i in range(small):
        await r.save_file_part(fid, i, chunks[i])
    for i in range(small, len(chunks) - 1):
        await r.save_big_file_part(fid, i, TOTAL_PARTS_UNKNOWN, chunks[i])
    # The last part states the true total.
    await r.save_big_file_part(fid, len(chunks) - 1, len(chunks), chunks[-1])
    doc = await r.upload_media(InputFileBig(fid, len(chunks), "grown.bin"))
    assert doc.size == len(data)
    assert await read_all(r, doc) == data


async def test_small_form_above_threshold_is_FILE_PARTS_INVALID(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    data = os.urandom(harness.limits.big_file_threshold + 1)
    chunks = [data[i : i + P] for i in range(0, len(data), P)]
    for i, c in enumerate(chunks):
        await r.save_big_file_part(fid, i, len(chunks), c)
    with pytest.raises(errors.FilePartsInvalid) as ei:
        await r.upload_media(InputFile(fid, len(chunks), "x", md5(data)))
    assert ei.value.name == "FILE_PARTS_INVALID"
    doc = await r.upload_media(InputFileBig(fid, len(chunks), "x"))
    assert doc.size == len(data)


async def test_big_form_for_a_small_file_is_allowed(harness: Harness) -> None:
    data = os.urandom(5000)
    doc = await upload(harness.remote, data, big=True)
    assert await read_all(harness.remote, doc) == data


async def test_file_total_parts_rules(harness: Harness) -> None:
    r = harness.remote
    maxp = harness.limits.upload_max_fileparts_default
    for bad in (0, -2, maxp + 1):
        with pytest.raises(errors.FilePartsInvalid):
            await r.save_big_file_part(new_file_id(), 0, bad, b"x" * KIB)
    # A part at or beyond a known total.
    with pytest.raises(errors.FilePartInvalid):
        await r.save_big_file_part(new_file_id(), 3, 3, b"x" * KIB)
    # Known totals must agree with each other.
    fid = new_file_id()
    await r.save_big_file_part(fid, 0, 3, b"x" * KIB)
    with pytest.raises(errors.FilePartsInvalid):
        await r.save_big_file_part(fid, 1, 4, b"x" * KIB)
    # Unknown is always compatible, but still bounded by the known total.
    await r.save_big_file_part(fid, 1, TOTAL_PARTS_UNKNOWN, b"x" * KIB)
    with pytest.raises(errors.FilePartInvalid):
        await r.save_big_file_part(fid, 3, TOTAL_PARTS_UNKNOWN, b"x" * KIB)
    # A total that would leave an already saved part beyond the end.
    fid2 = new_file_id()
    await r.save_big_file_part(fid2, 5, TOTAL_PARTS_UNKNOWN, b"x" * KIB)
    with pytest.raises(errors.FilePartsInvalid):
        await r.save_big_file_part(fid2, 0, 4, b"x" * KIB)


# --- finalize ---------------------------------------------------------------------------------


async def test_finalize_parts_out_of_range_is_FILE_PARTS_INVALID(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    await r.save_file_part(fid, 0, b"x")
    for parts in (0, -1, harness.limits.upload_max_fileparts_default + 1):
        with pytest.raises(errors.FilePartsInvalid):
            await r.upload_media(InputFile(fid, parts, "x", md5(b"x")))
        with pytest.raises(errors.FilePartsInvalid):
            await r.upload_media(InputFileBig(fid, parts, "x"))


async def test_finalize_with_parts_beyond_count_is_FILE_PARTS_INVALID(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    for i in range(3):
        await r.save_file_part(fid, i, b"x" * KIB)
    with pytest.raises(errors.FilePartsInvalid):
        await r.upload_media(InputFile(fid, 2, "x", md5(b"x" * 2 * KIB)))


async def test_finalize_disagreeing_with_total_is_FILE_PARTS_INVALID(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    await r.save_big_file_part(fid, 0, 3, b"x" * KIB)
    await r.save_big_file_part(fid, 1, 3, b"x" * KIB)
    with pytest.raises(errors.FilePartsInvalid):
        await r.upload_media(InputFileBig(fid, 2, "x"))


async def test_missing_part_is_FILE_PART_X_MISSING_first_missing(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    await r.save_big_file_part(fid, 0, 6, b"x" * KIB)
    await r.save_big_file_part(fid, 2, 6, b"x" * KIB)
    await r.save_big_file_part(fid, 5, 6, b"x" * 10)
    with pytest.raises(errors.FilePartMissing) as ei:
        await r.upload_media(InputFileBig(fid, 6, "x"))
    assert ei.value.name == "FILE_PART_1_MISSING"
    assert ei.value.part == 1
    await r.save_big_file_part(fid, 1, 6, b"x" * KIB)
    with pytest.raises(errors.FilePartMissing) as ei:
        await r.upload_media(InputFileBig(fid, 6, "x"))
    assert ei.value.name == "FILE_PART_3_MISSING"


async def test_finalize_unknown_file_id_is_FILE_PART_0_MISSING(harness: Harness) -> None:
    with pytest.raises(errors.FilePartMissing) as ei:
        await harness.remote.upload_media(InputFile(new_file_id(), 1, "x", md5(b"")))
    assert ei.value.name == "FILE_PART_0_MISSING"


async def test_wrong_md5_is_MD5_CHECKSUM_INVALID_and_parts_survive(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    data = b"hello world"
    await r.save_file_part(fid, 0, data)
    with pytest.raises(errors.Md5ChecksumInvalid) as ei:
        await r.upload_media(InputFile(fid, 1, "x", md5(b"something else")))
    assert ei.value.name == "MD5_CHECKSUM_INVALID"
    # Upper-case hex is the same checksum.
    doc = await r.upload_media(InputFile(fid, 1, "x", md5(data).upper()))
    assert await read_all(r, doc) == data


async def test_finalize_consumes_the_upload(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    data = os.urandom(3000)
    doc = await upload(r, data, file_id=fid)
    with pytest.raises(errors.FilePartMissing):
        await r.upload_media(InputFile(fid, 1, "x", md5(data)))
    # The same file id can start a new upload.
    doc2 = await upload(r, b"other", file_id=fid)
    assert doc2.id != doc.id


async def test_document_fields(harness: Harness) -> None:
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    doc = await upload(harness.remote, png, name="pic.png")
    assert doc.size == len(png)
    assert doc.sha256 == hashlib.sha256(png).hexdigest()
    assert doc.md5 == md5(png)
    assert doc.mime_type == "image/png"
    assert doc.file_type.value == "storage.filePng"
    assert doc.date == harness.clock()
    txt = await upload(harness.remote, b"plain words", name="notes.txt")
    assert txt.mime_type == "text/plain"


async def test_file_ids_are_per_user(harness: Harness) -> None:
    fid = new_file_id()
    await harness.remote.save_file_part(fid, 0, b"alice")
    await harness.remote_b.save_file_part(fid, 0, b"bob!!")
    a = await harness.remote.upload_media(InputFile(fid, 1, "a", md5(b"alice")))
    b = await harness.remote_b.upload_media(InputFile(fid, 1, "b", md5(b"bob!!")))
    assert await read_all(harness.remote, a) == b"alice"
    assert await read_all(harness.remote_b, b) == b"bob!!"


async def test_file_id_must_be_64_bit(harness: Harness) -> None:
    with pytest.raises(errors.FsmountError):
        await harness.remote.save_file_part(1 << 64, 0, b"x")
    # Negative ids are fine (a ``long``).
    doc = await upload(harness.remote, b"neg", file_id=-5)
    assert doc.size == 3


# --- expiry -----------------------------------------------------------------------------------


async def test_parts_expire_after_their_lifetime(harness: Harness) -> None:
    r, fid = harness.remote, new_file_id()
    await r.save_file_part(fid, 0, b"a" * KIB)
    harness.clock.advance(harness.limits.part_lifetime / 2)
    await r.save_file_part(fid, 1, b"b" * KIB)
    harness.clock.advance(harness.limits.part_lifetime / 2 + 1)
    # Part 0 is gone, part 1 is still there.
    with pytest.raises(errors.FilePartMissing) as ei:
        await r.upload_media(InputFile(fid, 2, "x", md5(b"a" * KIB + b"b" * KIB)))
    assert ei.value.part == 0
    await r.save_file_part(fid, 0, b"a" * KIB)
    doc = await r.upload_media(InputFile(fid, 2, "x", md5(b"a" * KIB + b"b" * KIB)))
    assert doc.size == 2 * KIB


async def test_expired_parts_free_their_space(harness: Harness) -> None:
    sizes = harness.content_sizes
    assert sizes is not None
    r, fid = harness.remote, new_file_id()
    for i in range(4):
        await r.save_big_file_part(fid, i, 4, os.urandom(P))

    def part_bytes() -> int:
        return sum(n for k, n in sizes().items() if k.startswith("parts/"))

    assert part_bytes() >= 4 * P
    harness.clock.advance(harness.limits.part_lifetime + 1)
    # Any later call sweeps expired parts off the disk.
    await r.save_file_part(new_file_id(), 0, b"z")
    assert part_bytes() == 1
    with pytest.raises(errors.FilePartMissing):
        await r.upload_media(InputFileBig(fid, 4, "x"))


async def test_unlinked_document_expires_but_linked_one_stays(harness: Harness) -> None:
    r = harness.remote
    loose = await upload(r, b"loose content")
    kept = await upload(r, b"kept content")
    await r.create_file(1, "kept", (kept.location,))
    harness.clock.advance(harness.limits.part_lifetime + 1)
    with pytest.raises(errors.FileReferenceExpired):
        await r.get_file(loose.location, 0, 4096)
    with pytest.raises(errors.FileReferenceExpired):
        await r.create_file(1, "late", (loose.location,))
    assert (await r.get_file(kept.location, 0, 4096)).bytes == b"kept content"


# --- quota ------------------------------------------------------------------------------------


async def test_quota_limits_finalize_and_files(harness: Harness) -> None:
    r = harness.remote
    assert harness.set_quota is not None
    harness.set_quota(10 * KIB)
    first = await upload(r, os.urandom(6 * KIB))
    await r.create_file(1, "first", (first.location,))
    usage = await r.statfs()
    assert usage.used_bytes == 6 * KIB and usage.quota_bytes == 10 * KIB
    with pytest.raises(errors.QuotaExceeded) as ei:
        await upload(r, os.urandom(5 * KIB))
    assert ei.value.name == "QUOTA_EXCEEDED"
    # A second link to the same content counts again (usage is the sum of file sizes).
    with pytest.raises(errors.QuotaExceeded):
        await r.create_file(1, "second", (first.location,))
    # Replacing a file with smaller content is fine; the other user is not limited.
    small = await upload(r, b"tiny")
    await r.create_file(1, "first", (small.location,), replace=True)
    assert (await r.statfs()).used_bytes == 4
    await upload(harness.remote_b, os.urandom(20 * KIB))
