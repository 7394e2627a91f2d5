"""Content sharing: deduplication with reclaim, replace-on-finalize, isolation between users.

Seeds: telegram-files-api-current.md "Re-using pre-uploaded files";
scaidrive-uploads-and-downloads.md "Performance tips" (skip duplicates);
easemob-chatfiles.md (only the owner's users may read restricted files).
"""

from __future__ import annotations

import os

import pytest

from fsmount import errors
from fsmount.protocol import KIB
from fsmount.remote import ROOT_ID

from .helpers import Harness, after_grace, new_file_id, read_all, upload


def blob_dirs(h: Harness) -> list[str]:
    """The blobs' keys (directories, or object prefixes in S3)."""
    assert h.content_sizes is not None
    return sorted({k.rsplit("/", 1)[0] for k in h.content_sizes() if k.startswith("blobs/")})


async def test_dedup_shares_one_blob_and_reclaims_it_last(harness: Harness) -> None:
    r = harness.remote
    data = os.urandom(700 * KIB)
    d1 = await upload(r, data)
    d2 = await upload(r, data)
    assert d1.id != d2.id and d1.sha256 == d2.sha256
    await r.create_file(ROOT_ID, "one", (d1.location,))
    await r.create_file(ROOT_ID, "two", (d2.location,))
    assert len(blob_dirs(harness)) == 1
    assert harness.fsck() == []
    await r.unlink(ROOT_ID, "one")
    assert await read_all(r, d2) == data
    assert len(blob_dirs(harness)) == 1
    assert harness.fsck() == []
    await r.unlink(ROOT_ID, "two")
    # Unlinked content stays readable for the grace period (open handles), then goes.
    assert await read_all(r, d2) == data
    assert (await r.statfs()).used_bytes == 0
    await after_grace(harness)
    assert blob_dirs(harness) == []
    with pytest.raises(errors.FileReferenceExpired):
        await r.get_file(d2.location, 0, 4096)


async def test_one_document_in_two_files_lives_until_both_go(harness: Harness) -> None:
    r = harness.remote
    data = os.urandom(5000)
    doc = await upload(r, data)
    await r.create_file(ROOT_ID, "a", (doc.location,))
    await r.create_file(ROOT_ID, "b", (doc.location,))
    await r.unlink(ROOT_ID, "a")
    assert await read_all(r, doc) == data
    await r.unlink(ROOT_ID, "b")
    assert await read_all(r, doc) == data
    await after_grace(harness)
    with pytest.raises(errors.FileReferenceExpired):
        await r.get_file(doc.location, 0, 4096)
    assert blob_dirs(harness) == []


async def test_dedup_across_users_keeps_documents_private(harness: Harness) -> None:
    data = os.urandom(3000)
    a = await upload(harness.remote, data)
    b = await upload(harness.remote_b, data)
    assert a.id != b.id
    await harness.remote.create_file(ROOT_ID, "a", (a.location,))
    await harness.remote_b.create_file(ROOT_ID, "b", (b.location,))
    assert len(blob_dirs(harness)) == 1
    # Bob cannot find Alice's copy by hash, only his own.
    found = await harness.remote_b.get_document_by_hash(a.sha256, a.size, "")
    assert found is not None and found.id == b.id
    await harness.remote.unlink(ROOT_ID, "a")
    assert await read_all(harness.remote_b, b) == data
    await harness.remote_b.unlink(ROOT_ID, "b")
    await after_grace(harness)
    assert blob_dirs(harness) == []


async def test_replace_on_finalize_is_atomic_for_readers(harness: Harness) -> None:
    """A rewritten file is a new document swapped in with one call: a reader sees the
    whole old or the whole new content."""
    r = harness.remote
    old = os.urandom(300 * KIB)
    new = os.urandom(200 * KIB)
    f = await r.create_file(ROOT_ID, "doc", (( await upload(r, old)).location,))
    seen_old = await r.lookup(ROOT_ID, "doc")
    d_new = await upload(r, new)
    swapped = await r.set_content(f.id, (d_new.location,))
    now = await r.lookup(ROOT_ID, "doc")
    assert now.version == swapped.version and now.size == len(new)
    assert await read_all(r, now.segments[0]) == new
    # A reader that looked the file up before the swap still reads the whole old content
    # (for the grace period).
    assert await read_all(r, seen_old.segments[0]) == old
    await after_grace(harness)
    with pytest.raises(errors.FileReferenceExpired):
        await r.get_file(seen_old.segments[0].location, 0, 4096)
    # The same through create_file(replace=True).
    d3 = await upload(r, b"third")
    g = await r.create_file(ROOT_ID, "doc", (d3.location,), replace=True)
    assert await read_all(r, (await r.lookup(ROOT_ID, "doc")).segments[0]) == b"third"
    assert g.size == 5


async def test_dedup_finalize_of_known_content_frees_its_parts(harness: Harness) -> None:
    assert harness.content_sizes is not None
    r = harness.remote
    data = os.urandom(3 * 512 * KIB)
    d1 = await upload(r, data)
    await r.create_file(ROOT_ID, "a", (d1.location,))
    d2 = await upload(r, data, file_id=new_file_id())
    await r.create_file(ROOT_ID, "b", (d2.location,))
    parts = [k for k in harness.content_sizes() if k.startswith("parts/")]
    assert parts == []
    assert len(blob_dirs(harness)) == 1


async def test_content_in_grace_can_be_linked_again(harness: Harness) -> None:
    r = harness.remote
    data = os.urandom(4000)
    doc = await upload(r, data)
    await r.create_file(ROOT_ID, "a", (doc.location,))
    await r.unlink(ROOT_ID, "a")
    found = await r.get_document_by_hash(doc.sha256, doc.size, "")
    assert found is not None and found.id == doc.id
    await r.create_file(ROOT_ID, "back", (doc.location,))
    await after_grace(harness)
    assert await read_all(r, doc) == data
    assert len(blob_dirs(harness)) == 1
