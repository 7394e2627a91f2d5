"""How REST uploads cut files into segments (the write path's segment policy): a multipart
body and a resumable session of the same size get the same balanced segments, and small
and big segments are finalized the way the protocol wants (the store checks the MD5 of a
small one)."""

from __future__ import annotations

import hashlib
import os

from fsmount.protocol import MIB, Limits
from fsmount.upload import policy

from .conftest import SMALL_LIMITS, Srv

PIECE = policy.PART_SIZE


async def segment_sizes(srv: Srv, name: str) -> list[int]:
    _user, remote = await srv.running.state.user_remote("alice")
    node = await remote.lookup(1, name)
    return [d.size for d in node.segments]


def expected(size: int, limits: Limits) -> list[int]:
    return [s.size for s in policy.plan_segments(
        size, limits.max_parts(False), limits.big_file_threshold)]


async def test_multipart_and_session_cut_the_same_balanced_segments(srv: Srv) -> None:
    size = 11 * PIECE + 1  # 12 parts, at most 8 per upload: 6 + 6, not 8 + 4
    data = os.urandom(size)
    assert expected(size, SMALL_LIMITS) == [6 * PIECE, 5 * PIECE + 1]
    async with srv.client() as c:
        r = await c.post("/api/v1/files", headers=srv.h(), files={"file": ("multi.bin", data)})
        assert r.status_code == 201, r.text
        assert r.json()["checksum_sha256"] == hashlib.sha256(data).hexdigest()
        r = await c.post("/api/v1/uploads", headers=srv.h(), json={
            "file_name": "sess.bin", "file_size": size, "chunk_size": MIB})
        sid = r.json()["id"]
        for n in range(r.json()["total_chunks"]):
            r = await c.put(f"/api/v1/uploads/{sid}/chunks/{n}", headers=srv.h(),
                            content=data[n * MIB:(n + 1) * MIB])
            assert r.status_code == 200, r.text
        r = await c.post(f"/api/v1/uploads/{sid}/complete", headers=srv.h())
        assert r.status_code == 200, r.text
        r = await c.get(f"/api/v1/files/{r.json()['id']}/content", headers=srv.h())
        assert r.content == data
    assert await segment_sizes(srv, "multi.bin") == expected(size, SMALL_LIMITS)
    assert await segment_sizes(srv, "sess.bin") == expected(size, SMALL_LIMITS)


async def test_a_small_file_is_finalized_with_its_md5(srv: Srv) -> None:
    size = 2 * PIECE + 100  # one small upload (below the 1 MiB threshold): inputFile + MD5
    data = os.urandom(size)
    async with srv.client() as c:
        r = await c.post("/api/v1/files", headers=srv.h(), files={"file": ("small.bin", data)})
        assert r.status_code == 201, r.text
        r = await c.get(f"/api/v1/files/{r.json()['id']}/content", headers=srv.h())
        assert r.content == data
    _user, remote = await srv.running.state.user_remote("alice")
    node = await remote.lookup(1, "small.bin")
    assert [d.md5 for d in node.segments] == [hashlib.md5(data).hexdigest()]
