"""The REST shapes of the ScaiDrive seed, driven by the seed's own curl examples (run as
subprocesses) and httpx: simple upload, download, range download, resumable session,
checksum verification; files larger than one upload; folders; the HTML listing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import trio

from fsmount.protocol import MIB

from .conftest import Srv


async def curl(*args: str) -> tuple[int, bytes]:
    """Run curl (silent, fail on nothing) and return (HTTP status, body)."""
    proc = await trio.run_process(["curl", "-sS", "-w", "\n%{http_code}", *args],
                                  capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == 0, proc.stderr
    body, _, status = proc.stdout.rpartition(b"\n")
    return int(status), body


async def test_seed_simple_upload_download_range_and_checksum_with_curl(srv: Srv, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 12345)  # above the 1 MiB big-file threshold: saveBigFilePart
    src = tmp_path / "spec.pdf"
    src.write_bytes(data)
    auth = f"Authorization: Bearer {srv.tok_a}"
    status, body = await curl("-X", "POST", f"{srv.url}/api/v1/files", "-H", auth,
                              "-F", "share_id=shr_01J3H", "-F", "folder_id=root",
                              "-F", f"file=@{src}")
    assert status == 201, body
    meta = json.loads(body)
    fid = meta["id"]
    assert meta["name"] == "spec.pdf" and meta["size"] == len(data)
    assert meta["checksum_sha256"] == hashlib.sha256(data).hexdigest()

    out = tmp_path / "out.pdf"
    status, _ = await curl("-H", auth, "-o", str(out), f"{srv.url}/api/v1/files/{fid}/content")
    assert status == 200 and out.read_bytes() == data

    proc = await trio.run_process(
        ["curl", "-sS", "-D", "-", "-o", str(out), "-H", auth, "-H", "Range: bytes=1048576-2097151",
         f"{srv.url}/api/v1/files/{fid}/content"], capture_stdout=True)
    head = proc.stdout.decode().lower()
    assert " 206" in head.splitlines()[0]
    assert f"content-range: bytes 1048576-2097151/{len(data)}" in head
    assert out.read_bytes() == data[1048576:2097152]


async def test_seed_python_examples_with_httpx(srv: Srv, tmp_path: Path) -> None:
    """The seed's httpx snippets, verbatim apart from names, in a subprocess."""
    data = os.urandom(700_000)
    (tmp_path / "spec.pdf").write_bytes(data)
    script = f'''
import hashlib, httpx
url, token = {srv.url!r}, {srv.tok_a!r}
with open("spec.pdf", "rb") as f:
    resp = httpx.post(
        f"{{url}}/api/v1/files",
        headers={{"Authorization": f"Bearer {{token}}"}},
        data={{"share_id": "shr_01J3H"}},
        files={{"file": ("spec.pdf", f, "application/pdf")}},
        timeout=300,
    )
    resp.raise_for_status()
    fid = resp.json()["id"]
with httpx.stream("GET", f"{{url}}/api/v1/files/{{fid}}/content",
                  headers={{"Authorization": f"Bearer {{token}}"}}) as r:
    r.raise_for_status()
    with open("got.pdf", "wb") as out:
        for chunk in r.iter_bytes():
            out.write(chunk)
meta = httpx.get(f"{{url}}/api/v1/files/{{fid}}", headers={{"Authorization": f"Bearer {{token}}"}}).json()
with httpx.stream("GET", f"{{url}}/api/v1/files/{{fid}}/content",
                  headers={{"Authorization": f"Bearer {{token}}"}}) as r:
    h = hashlib.sha256()
    for chunk in r.iter_bytes():
        h.update(chunk)
assert h.hexdigest() == meta["checksum_sha256"], "content corruption"
print("OK", fid)
'''
    proc = await trio.run_process(["python3", "-c", script], cwd=tmp_path, capture_stdout=True,
                                  capture_stderr=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.startswith(b"OK fil_")
    assert (tmp_path / "got.pdf").read_bytes() == data


async def test_resumable_session_chunks_in_any_order_and_parallel(srv: Srv, tmp_path: Path) -> None:
    chunk = MIB
    data = os.urandom(9 * MIB + 4321)  # 10 chunks; 19 parts > 8 per upload: 3 segments
    auth = f"Authorization: Bearer {srv.tok_a}"
    status, body = await curl(
        "-X", "POST", f"{srv.url}/api/v1/uploads", "-H", auth, "-H", "Content-Type: application/json",
        "-d", json.dumps({"share_id": "shr_01J3H", "folder_id": "root", "file_name": "big-video.mp4",
                          "file_size": len(data), "chunk_size": chunk}))
    assert status == 201, body
    sess = json.loads(body)
    assert sess["total_chunks"] == 10 and sess["chunk_size"] == chunk and sess["expires_at"]
    for n in range(10):
        (tmp_path / f"chunk_{n:03d}").write_bytes(data[n * chunk:(n + 1) * chunk])

    async def put(n: int) -> None:
        status, body = await curl("-X", "PUT", f"{srv.url}/api/v1/uploads/{sess['id']}/chunks/{n}",
                                  "-H", auth, "--data-binary", f"@{tmp_path / f'chunk_{n:03d}'}")
        assert status == 200, body

    async with trio.open_nursery() as nursery:
        for n in reversed(range(10)):
            nursery.start_soon(put, n)
    status, body = await curl("-X", "POST", f"{srv.url}/api/v1/uploads/{sess['id']}/complete",
                              "-H", auth)
    assert status == 200, body
    meta = json.loads(body)
    assert meta["file_id"].startswith("fil_")
    assert meta["checksum_sha256"] == hashlib.sha256(data).hexdigest()
    node = await srv.running.state.user_remote("alice")
    n = await node[1].lookup(1, "big-video.mp4")
    assert len(n.segments) == 3 and n.size == len(data)
    out = tmp_path / "out"
    status, _ = await curl("-H", auth, "-o", str(out), f"{srv.url}/api/v1/files/{meta['id']}/content")
    assert out.read_bytes() == data
    # The session is gone once complete.
    status, body = await curl("-X", "POST", f"{srv.url}/api/v1/uploads/{sess['id']}/complete", "-H", auth)
    assert status == 404 and json.loads(body)["error"] == "NOT_FOUND"


async def test_small_session_and_missing_chunks_listed(srv: Srv) -> None:
    data = os.urandom(700_000)  # below 1 MiB: one small upload with MD5, kept on disk until complete
    async with srv.client() as c:
        r = await c.post("/api/v1/uploads", headers=srv.h(), json={
            "file_name": "small.bin", "file_size": len(data), "chunk_size": 512 * 1024})
        sid = r.json()["id"]
        r = await c.put(f"/api/v1/uploads/{sid}/chunks/1", headers=srv.h(), content=data[512 * 1024:])
        assert r.status_code == 200
        r = await c.post(f"/api/v1/uploads/{sid}/complete", headers=srv.h())
        assert r.status_code == 409
        assert r.json()["error"] == "CHUNKS_MISSING" and r.json()["missing_chunks"] == [0]
        r = await c.get(f"/api/v1/uploads/{sid}", headers=srv.h())
        assert r.json()["received_chunks"] == [1]
        r = await c.put(f"/api/v1/uploads/{sid}/chunks/0", headers=srv.h(), content=data[:512 * 1024])
        r = await c.post(f"/api/v1/uploads/{sid}/complete", headers=srv.h())
        assert r.status_code == 200, r.text
        r = await c.get(f"/api/v1/files/{r.json()['id']}/content", headers=srv.h())
        assert r.content == data


async def test_session_expires_after_24h_of_inactivity(srv: Srv) -> None:
    async with srv.client() as c:
        r = await c.post("/api/v1/uploads", headers=srv.h(), json={
            "file_name": "x.bin", "file_size": 2 * MIB, "chunk_size": MIB})
        sid = r.json()["id"]
        srv.clock.advance(23 * 3600)
        r = await c.put(f"/api/v1/uploads/{sid}/chunks/0", headers=srv.h(), content=os.urandom(MIB))
        assert r.status_code == 200  # activity: the 24 hours start again
        srv.clock.advance(23 * 3600)
        assert (await c.get(f"/api/v1/uploads/{sid}", headers=srv.h())).status_code == 200
        srv.clock.advance(24 * 3600 + 1)
        r = await c.put(f"/api/v1/uploads/{sid}/chunks/1", headers=srv.h(), content=os.urandom(MIB))
        assert r.status_code == 404 and "expired" in r.json()["error_description"]


async def test_multipart_file_larger_than_one_upload_becomes_segments(srv: Srv) -> None:
    data = os.urandom(5 * MIB + 1)  # 11 parts > 8: two uploads behind one file
    async with srv.client() as c:
        r = await c.post("/api/v1/files", headers=srv.h(), files={"file": ("two.bin", data)})
        assert r.status_code == 201, r.text
        meta = r.json()
        assert meta["checksum_sha256"] == hashlib.sha256(data).hexdigest()
        r = await c.get(f"/api/v1/files/{meta['id']}/content", headers=srv.h(Range="bytes=2621000-2622999"))
        assert r.status_code == 206 and r.content == data[2621000:2623000]
        r = await c.get(f"/api/v1/files/{meta['id']}/content", headers=srv.h(Range="bytes=-10"))
        assert r.content == data[-10:]


async def test_folders_listing_and_uploads_into_a_folder(srv: Srv) -> None:
    async with srv.client() as c:
        r = await c.post("/api/v1/folders", headers=srv.h(), json={"name": "docs"})
        assert r.status_code == 201
        fld = r.json()["id"]
        r = await c.post("/api/v1/files", headers=srv.h(), data={"folder_id": fld},
                         files={"file": ("a b&c.txt", b"hello")})
        assert r.status_code == 201 and r.json()["folder_id"] == fld
        r = await c.get(f"/api/v1/folders/{fld}", headers=srv.h())
        assert [e["name"] for e in r.json()["entries"]] == ["a b&c.txt"]
        # The HTML listing, as a browser or rclone's http remote reads it.
        r = await c.get("/browse/", headers=srv.h())
        assert r.status_code == 200 and 'href="docs/"' in r.text
        r = await c.get("/browse/docs", headers=srv.h())
        assert r.status_code == 301 and r.headers["location"].endswith("/browse/docs/")
        r = await c.get("/browse/docs/", headers=srv.h())
        assert 'href="a%20b%26c.txt"' in r.text and "a b&amp;c.txt" in r.text
        r = await c.get("/browse/docs/a%20b%26c.txt", headers=srv.h(Range="bytes=1-3"))
        assert r.status_code == 206 and r.content == b"ell"
        r = await c.head("/browse/docs/a%20b%26c.txt", headers=srv.h())
        assert r.headers["content-length"] == "5" and "last-modified" in r.headers
        # A browser can pass the token in the query string instead.
        r = await c.get(f"/browse/docs/?access_token={srv.tok_a}")
        assert r.status_code == 200 and "access_token=" in r.text
        # ... and upload with the listing's form, which carries it along.
        assert f'action="/api/v1/files?access_token={srv.tok_a}"' in r.text
        r = await c.post(f"/api/v1/files?access_token={srv.tok_a}", data={"folder_id": fld},
                         files={"file": ("from-browser.txt", b"hi")})
        assert r.status_code == 201 and r.json()["folder_id"] == fld


async def test_rest_metadata_shows_owner_links_and_special_files(srv: Srv) -> None:
    """The protocol's POSIX calls (chown, link, mknod, setXattr) over HTTP, and what the
    REST metadata shows of them: mode, numeric owner, link count, special file types."""
    proto = "/api/v1/proto/"
    async with srv.client() as c:
        r = await c.post("/api/v1/folders", headers=srv.h(), json={"name": "px"})
        fld = r.json()["id"]
        r = await c.get(proto + "lookup", headers=srv.h(), params={"parent": 1, "name": "px"})
        folder = r.json()["id"]
        r = await c.post(proto + "createFile", headers=srv.h(), json={
            "parent": folder, "name": "f", "mode": 0o640, "owner": {"uid": 1000, "gid": 100}})
        node = r.json()
        assert r.status_code == 200 and (node["uid"], node["gid"], node["nlink"]) == (1000, 100, 1)
        r = await c.post(proto + "chown", headers=srv.h(), json={"node_id": node["id"],
                                                                  "gid": 7})
        assert (r.json()["uid"], r.json()["gid"]) == (1000, 7)
        r = await c.post(proto + "link", headers=srv.h(), json={
            "node_id": node["id"], "new_parent": folder, "new_name": "g"})
        assert r.status_code == 200 and r.json()["nlink"] == 2 and r.json()["name"] == "g"
        r = await c.post(proto + "mknod", headers=srv.h(), json={
            "parent": folder, "name": "p", "kind": "fifo", "mode": 0o600})
        assert r.status_code == 200 and r.json()["kind"] == "fifo"
        r = await c.post(proto + "mknod", headers=srv.h(), json={
            "parent": folder, "name": "q", "kind": "file"})
        assert r.status_code == 400 and r.json()["error"] == "INVALID_ARGUMENT"
        r = await c.post(proto + "setXattr", headers=srv.h(), json={
            "node_id": node["id"], "name": "user.tag", "value": "cmVk"})
        assert r.status_code == 200
        r = await c.get(proto + "getXattr", headers=srv.h(),
                        params={"node_id": node["id"], "name": "user.tag"})
        assert r.json() == {"value": "cmVk"}
        r = await c.get(proto + "getXattr", headers=srv.h(),
                        params={"node_id": node["id"], "name": "user.none"})
        assert r.status_code == 404 and r.json()["error"] == "NO_SUCH_ATTRIBUTE"
        r = await c.get(proto + "listXattrs", headers=srv.h(), params={"node_id": node["id"]})
        assert r.json() == {"names": ["user.tag"]}
        r = await c.get(f"/api/v1/folders/{fld}", headers=srv.h())
        entries = {e["name"]: e for e in r.json()["entries"]}
        assert entries["f"]["type"] == "file" and entries["p"]["type"] == "fifo"
        assert (entries["f"]["uid"], entries["f"]["gid"], entries["f"]["nlink"],
                entries["f"]["mode"]) == (1000, 7, 2, 0o640)
        assert entries["g"]["id"] == entries["f"]["id"]
        r = await c.get(f"/api/v1/files/{entries['f']['id']}", headers=srv.h())
        assert r.status_code == 200 and r.json()["nlink"] == 2 and r.json()["uid"] == 1000
