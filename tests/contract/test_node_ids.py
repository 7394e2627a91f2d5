"""Reserved node ids (reserveNodeIds): a caller knows a new node's id before the store has it.

The mount takes ids in batches and creates files with them at close (one round trip for
create + content); these tests hold the store's side of that contract on every store.
"""

from __future__ import annotations

import hashlib

import pytest

from fsmount import errors
from fsmount.remote import ROOT_ID, NodeKind, Owner

from .helpers import Harness

R = ROOT_ID


async def test_reserved_ids_are_handed_out_once_and_used_by_creates(harness: Harness) -> None:
    r = harness.remote
    first = await r.reserve_node_ids(3)
    second = await r.reserve_node_ids(2)
    assert first > R and second >= first + 3  # never handed out twice
    made = await r.create_file(R, "f", node_id=first)
    assert made.id == first and (await r.lookup(R, "f")).id == first
    d = await r.mkdir(R, "d", node_id=first + 2)
    assert d.id == first + 2 and d.kind is NodeKind.DIR
    s = await r.symlink(R, "s", "f", node_id=second)
    assert s.id == second and s.target == "f"
    data = b"small file, one call"
    p = await r.put_file(d.id, "p", data, md5_checksum=hashlib.md5(data).hexdigest(),
                         mode=0o600, owner=Owner(1234, 5678), node_id=first + 1)
    assert (p.id, p.size, p.mode, p.uid, p.gid) == (first + 1, len(data), 0o600, 1234, 5678)
    # Ids not reserved for a create go on after the reservations.
    plain = await r.create_file(R, "plain")
    assert plain.id >= second + 2


async def test_an_id_in_use_or_never_reserved_is_node_id_invalid(harness: Harness) -> None:
    r = harness.remote
    first = await r.reserve_node_ids(1)
    await r.create_file(R, "a", node_id=first)
    with pytest.raises(errors.NodeIdInvalid):
        await r.create_file(R, "b", node_id=first)  # in use
    with pytest.raises(errors.NodeIdInvalid):
        await r.mkdir(R, "c", node_id=first + 10_000)  # never reserved
    with pytest.raises(errors.NodeIdInvalid):
        await r.put_file(R, "d", b"", md5_checksum=hashlib.md5(b"").hexdigest(), node_id=R)
    # Nothing of the failed calls stayed.
    names = {n.name for n in (await r.list_folder(R)).entries}
    assert names == {"a"}


async def test_a_replace_with_a_reserved_id_gives_the_new_file_that_id(harness: Harness) -> None:
    r = harness.remote
    old = await r.create_file(R, "f")
    new_id = await r.reserve_node_ids(1)
    data = b"new"
    node = await r.put_file(R, "f", data, md5_checksum=hashlib.md5(data).hexdigest(),
                            node_id=new_id)
    assert node.id == new_id != old.id
    with pytest.raises(errors.NotFound):
        await r.getattr(old.id)


@pytest.mark.parametrize("count", [0, -1, 10_001])
async def test_reserve_counts_out_of_range(harness: Harness, count: int) -> None:
    with pytest.raises(errors.InvalidArgument):
        await harness.remote.reserve_node_ids(count)


async def test_reservations_are_per_user(harness: Harness) -> None:
    a = await harness.remote.reserve_node_ids(5)
    # Another user's ids are numbered on their own; an id reserved by one user cannot be
    # used by another (it was never reserved there) unless that user reserved it too.
    b = await harness.remote_b.reserve_node_ids(1)
    with pytest.raises(errors.NodeIdInvalid):
        await harness.remote_b.create_file(R, "x", node_id=max(a, b) + 100)
