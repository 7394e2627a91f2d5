"""Bad requests get their documented error and change nothing (the listing, usage and
the store's fsck are the same afterwards)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import trio

from fsmount.protocol import MIB

from .conftest import Srv


async def snapshot(srv: Srv) -> Any:
    _, remote = await srv.running.state.user_remote("alice")
    listing = await remote.list_folder(1)
    usage = await remote.statfs()
    return [(n.name, n.size, n.version) for n in listing.entries], usage.used_bytes, usage.files


@pytest.fixture
async def c(srv: Srv) -> Any:
    async with srv.client() as client:
        yield client


async def upload(c: httpx.AsyncClient, srv: Srv, name: str, data: bytes, **headers: str) -> dict:
    r = await c.post("/api/v1/files", headers=srv.h(**headers), files={"file": (name, data)})
    assert r.status_code == 201, r.text
    return r.json()


def check_error(r: httpx.Response, status: int, name: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == name and isinstance(body["error_description"], str)


async def test_no_wrong_or_revoked_token_is_401_in_easemob_shape(srv: Srv, c: Any) -> None:
    before = await snapshot(srv)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
                    {"Authorization": f"Bearer {srv.tok_a}x"}):
        for method, path in (("GET", "/api/v1/folders/root"), ("POST", "/api/v1/files"),
                             ("GET", "/api/v1/proto/getConfig"), ("GET", "/browse/")):
            r = await c.request(method, path, headers=headers, files={"file": ("x", b"y")}
                                if method == "POST" else None)
            check_error(r, 401, "auth_bad_access_token")
    token = srv.running.state.auth.add_token("carol")
    assert (await c.get("/api/v1/folders/root", headers=srv.h(token))).status_code == 200
    assert srv.running.state.auth.revoke(token) == 1
    check_error(await c.get("/api/v1/folders/root", headers=srv.h(token)), 401, "auth_bad_access_token")
    assert await snapshot(srv) == before


async def test_another_users_files_are_invisible(srv: Srv, c: Any) -> None:
    meta = await upload(c, srv, "private.txt", b"alice only")
    before = await snapshot(srv)
    bob = srv.h(srv.tok_b)
    for path in (f"/api/v1/files/{meta['id']}", f"/api/v1/files/{meta['id']}/content",
                 f"/api/v1/files/{meta['id']}/thumbnail", f"/api/v1/folders/{meta['folder_id']}"):
        check_error(await c.get(path, headers=bob), 404, "NOT_FOUND")
    check_error(await c.delete(f"/api/v1/files/{meta['id']}", headers=bob), 404, "NOT_FOUND")
    # Bob's own namespace does not hold Alice's node under the same number either.
    node_no = meta["id"].rsplit("_", 1)[1]
    r = await c.get(f"/api/v1/files/{node_no}", headers=bob)
    assert r.status_code == 404
    # Uploading into Alice's folder is refused the same way.
    r = await c.post("/api/v1/files", headers=bob, data={"folder_id": meta["folder_id"]},
                     files={"file": ("x", b"y")})
    check_error(r, 404, "NOT_FOUND")
    assert await snapshot(srv) == before


async def test_restricted_file_needs_its_share_secret(srv: Srv, c: Any) -> None:
    data = os.urandom(5000)
    meta = await upload(c, srv, "IMG_2953.JPG", data, **{"restrict-access": "true"})
    secret = meta["share-secret"]
    assert meta["restricted"] is True and len(secret) > 20
    open_meta = await upload(c, srv, "open.txt", b"x")
    assert "share-secret" not in open_meta
    bob = srv.h(srv.tok_b)
    url = f"/api/v1/files/{meta['id']}/content"
    check_error(await c.get(url, headers=bob), 404, "NOT_FOUND")
    check_error(await c.get(url, headers={**bob, "share-secret": secret[:-1] + ("x" if secret[-1] != "x" else "y")}), 404, "NOT_FOUND")
    r = await c.get(url, headers={**bob, "share-secret": secret, "Accept": "application/octet-stream"})
    assert r.status_code == 200 and r.content == data
    r = await c.get(f"/api/v1/files/{meta['id']}", headers={**bob, "share-secret": secret})
    assert r.json()["checksum_sha256"] and r.json()["restricted"] is True
    # The secret of one file opens nothing else.
    r = await c.get(f"/api/v1/files/{open_meta['id']}/content", headers={**bob, "share-secret": secret})
    check_error(r, 404, "NOT_FOUND")
    # The owner needs no secret.
    assert (await c.get(url, headers=srv.h())).content == data
    # A new version that is not restricted: the old secret no longer opens it.
    again = await upload(c, srv, "IMG_2953.JPG", b"new content")
    assert again["id"] == meta["id"] and again["restricted"] is False
    check_error(await c.get(url, headers={**bob, "share-secret": secret}), 404, "NOT_FOUND")


async def test_bad_chunks_and_bad_sessions(srv: Srv, c: Any) -> None:
    r = await c.post("/api/v1/uploads", headers=srv.h(), json={
        "file_name": "s.bin", "file_size": 2 * MIB + 10, "chunk_size": MIB})
    sid = r.json()["id"]
    before = await snapshot(srv)
    u = f"/api/v1/uploads/{sid}/chunks"
    check_error(await c.put(f"{u}/0", headers=srv.h(), content=b"x" * (MIB + 1)), 400, "FILE_PART_TOO_BIG")
    check_error(await c.put(f"{u}/0", headers=srv.h(), content=b"x" * 1000), 400, "FILE_PART_SIZE_INVALID")
    check_error(await c.put(f"{u}/2", headers=srv.h(), content=b"x" * 11), 400, "FILE_PART_TOO_BIG")
    check_error(await c.put(f"{u}/0", headers=srv.h(), content=b""), 400, "FILE_PART_EMPTY")
    check_error(await c.put(f"{u}/3", headers=srv.h(), content=b"x"), 400, "FILE_PART_INVALID")
    check_error(await c.put(f"{u}/-1", headers=srv.h(), content=b"x"), 400, "FILE_PART_INVALID")
    check_error(await c.put(f"{u}/abc", headers=srv.h(), content=b"x"), 400, "FILE_PART_INVALID")
    check_error(await c.put("/api/v1/uploads/ups_nope/chunks/0", headers=srv.h(), content=b"x"),
                404, "NOT_FOUND")
    check_error(await c.post(f"/api/v1/uploads/{sid}/complete", headers=srv.h()), 409, "CHUNKS_MISSING")
    r = await c.get(f"/api/v1/uploads/{sid}", headers=srv.h())
    assert r.json()["received_chunks"] == []
    for body in (b"{not json", b"[1,2]", b'{"file_name": "x", "file_size": -1}',
                 b'{"file_name": "x", "file_size": 10, "chunk_size": 1000}',
                 b'{"file_name": "a/b", "file_size": 10}', b'{"file_size": 10}'):
        r = await c.post("/api/v1/uploads", headers=srv.h(**{"content-type": "application/json"}),
                         content=body)
        assert r.status_code == 400 and r.json()["error"] in ("INVALID_ARGUMENT", "INVALID_NAME"), body
    check_error(await c.post("/api/v1/folders", headers=srv.h(), content=b"{oops"), 400, "INVALID_ARGUMENT")
    check_error(await c.post("/api/v1/files", headers=srv.h(), content=b"garbage",
                             ), 400, "INVALID_ARGUMENT")
    # Above the seed's 5 GB per request: refused from the headers, before any byte of body.
    host, port = srv.url.removeprefix("http://").split(":")
    with trio.fail_after(10):
        sock = await trio.open_tcp_stream(host, int(port))
        async with sock:
            await sock.send_all(
                f"POST /api/v1/files HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {srv.tok_a}\r\n"
                f"content-type: multipart/form-data; boundary=x\r\ncontent-length: {6 * 10**9}"
                "\r\n\r\n".encode())
            answer = b""
            while b"FILE_TOO_BIG" not in answer:  # bounded by fail_after
                data = await sock.receive_some(65536)
                if not data:
                    break
                answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error":"FILE_TOO_BIG"' in answer
    assert await snapshot(srv) == before


async def test_unknown_ids_and_ranges_past_the_end(srv: Srv, c: Any) -> None:
    meta = await upload(c, srv, "ten.bin", b"0123456789")
    before = await snapshot(srv)
    for fid in ("fil_1_999999", "fil_999_2", "nonsense", "99999999", "fld_1_1"):
        check_error(await c.get(f"/api/v1/files/{fid}", headers=srv.h()), 404, "NOT_FOUND")
        check_error(await c.get(f"/api/v1/files/{fid}/content", headers=srv.h()), 404, "NOT_FOUND")
    check_error(await c.get("/api/v1/nothing-here", headers=srv.h()), 404, "NOT_FOUND")
    url = f"/api/v1/files/{meta['id']}/content"
    r = await c.get(url, headers=srv.h(Range="bytes=10-20"))
    check_error(r, 416, "RANGE_NOT_SATISFIABLE")
    assert r.headers["content-range"] == "bytes */10"
    r = await c.get(url, headers=srv.h(Range="bytes=8-100"))
    assert r.status_code == 206 and r.content == b"89" and r.headers["content-range"] == "bytes 8-9/10"
    r = await c.get(url, headers=srv.h(Range="bytes=garbage"))
    assert r.status_code == 200 and r.content == b"0123456789"
    assert await snapshot(srv) == before


async def test_protocol_api_errors_keep_their_names(srv: Srv, c: Any) -> None:
    before = await snapshot(srv)
    p = "/api/v1/proto/"
    r = await c.post(f"{p}saveFilePart?file_id=1&file_part=0", headers=srv.h(), content=b"x" * (512 * 1024 + 1))
    check_error(r, 400, "FILE_PART_TOO_BIG")
    r = await c.post(f"{p}saveFilePart?file_id=1&file_part=0", headers=srv.h(), content=b"")
    check_error(r, 400, "FILE_PART_EMPTY")
    r = await c.post(f"{p}saveFilePart?file_id=x&file_part=0", headers=srv.h(), content=b"a")
    check_error(r, 400, "INVALID_ARGUMENT")
    r = await c.post(f"{p}mkdir", headers=srv.h(), content=b"{bad json")
    check_error(r, 400, "INVALID_ARGUMENT")
    r = await c.post(f"{p}mkdir", headers=srv.h(), json={"parent": "1", "name": "x"})
    check_error(r, 400, "INVALID_ARGUMENT")
    r = await c.get(f"{p}getFile?id=1&access_hash=2&offset=3&limit=4096", headers=srv.h())
    check_error(r, 400, "OFFSET_INVALID")
    r = await c.get(f"{p}getattr?node_id=424242", headers=srv.h())
    check_error(r, 404, "NOT_FOUND")
    r = await c.get(f"{p}noSuchMethod", headers=srv.h())
    check_error(r, 404, "NOT_FOUND")
    r = await c.get(f"{p}mkdir", headers=srv.h())
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await c.post(f"{p}uploadMedia", headers=srv.h(), json={"id": 5, "parts": 1, "name": "n",
                                                               "md5_checksum": "00"})
    assert r.status_code == 400 and r.json()["error"].startswith("FILE_PART")
    assert await snapshot(srv) == before


async def test_idempotency_key_replays_the_first_answer(srv: Srv, c: Any) -> None:
    h = srv.h(**{"Idempotency-Key": "k1"})
    r1 = await c.post("/api/v1/proto/mkdir", headers=h, json={"parent": 1, "name": "d"})
    r2 = await c.post("/api/v1/proto/mkdir", headers=h, json={"parent": 1, "name": "d"})
    assert r1.status_code == r2.status_code == 200
    assert r1.json() == r2.json() and r2.headers["idempotent-replay"] == "true"
    r3 = await c.post("/api/v1/proto/mkdir", headers=srv.h(), json={"parent": 1, "name": "d"})
    check_error(r3, 409, "ALREADY_EXISTS")
    # Keys belong to one user: Bob's request with the same key runs on its own.
    r4 = await c.post("/api/v1/proto/mkdir", headers=srv.h(srv.tok_b, **{"Idempotency-Key": "k1"}),
                      json={"parent": 1, "name": "d"})
    assert r4.status_code == 200 and "idempotent-replay" not in r4.headers
