"""Share links, the web UI's cookie session and CSRF rule, and the REST management calls,
over HTTP against the real server (in-process; its clock is the test's, for expiry).
``fsmount share`` itself runs as a subprocess against ``fsmount serve``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Srv
from .harness import serve_subprocess


@pytest.fixture
async def c(srv: Srv) -> Any:
    async with srv.client() as client:
        yield client


async def upload(c: httpx.AsyncClient, srv: Srv, name: str, data: bytes,
                 folder: str = "root") -> dict[str, Any]:
    r = await c.post("/api/v1/files", headers=srv.h(), data={"folder_id": folder},
                     files={"file": (name, data)})
    assert r.status_code == 201, r.text
    return r.json()


def token_of(url: str) -> str:
    return url.rsplit("/s/", 1)[1]


async def share(c: httpx.AsyncClient, srv: Srv, **body: Any) -> dict[str, Any]:
    r = await c.post("/api/v1/shares", headers=srv.h(), json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["url"].startswith(srv.url + "/s/")
    return out


async def test_a_link_opens_without_a_token_and_streams_ranges(srv: Srv, c: Any) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    await upload(c, srv, "clip.mp4", data)
    link = await share(c, srv, path="/clip.mp4", expires="7d")
    path = "/s/" + token_of(link["url"])
    r = await c.get(path)  # no Authorization header at all
    assert r.status_code == 200 and "clip.mp4" in r.text and "<video" in r.text
    assert srv.tok_a not in r.text
    r = await c.get(path + "/content")
    assert r.status_code == 200 and r.content == data
    r = await c.get(path + "/content", headers={"Range": "bytes=1048570-2097160"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 1048570-2097160/{len(data)}"
    assert r.content == data[1048570:2097161]
    r = await c.get(path + "/content", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = await c.get(path + "/content", headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    r = await c.get(path + "/content?download=1")
    assert r.headers["content-disposition"].startswith("attachment;")
    # A wrong secret or an unknown id is a 404 page, the same for both.
    wrong = path[:-3] + ("xyz" if not path.endswith("xyz") else "abc")
    for bad in (wrong, "/s/000000000000_nothing", "/s/garbage"):
        r = await c.get(bad)
        assert r.status_code == 404 and "Link not found" in r.text
    # The owner lists it; another user neither sees nor revokes it.
    mine = (await c.get("/api/v1/shares", headers=srv.h())).json()["shares"]
    assert [s["id"] for s in mine] == [link["id"]] and mine[0]["state"] == "open"
    theirs = (await c.get("/api/v1/shares", headers=srv.h(srv.tok_b))).json()["shares"]
    assert theirs == []
    r = await c.delete(f"/api/v1/shares/{link['id']}", headers=srv.h(srv.tok_b))
    assert r.status_code == 404
    assert (await c.get(path)).status_code == 200


async def test_expired_and_revoked_links_say_so(srv: Srv, c: Any) -> None:
    await upload(c, srv, "a.txt", b"alpha")
    soon = await share(c, srv, path="/a.txt", expires_in=60)
    forever = await share(c, srv, path="/a.txt")
    assert forever["expires_at"] is None
    srv.clock.advance(61)
    for suffix in ("", "/content"):
        r = await c.get("/s/" + token_of(soon["url"]) + suffix)
        assert r.status_code == 410 and "expired" in r.text
    r = await c.get("/s/" + token_of(forever["url"]) + "/content")
    assert r.status_code == 200 and r.content == b"alpha"
    r = await c.delete(f"/api/v1/shares/{forever['id']}", headers=srv.h())
    assert r.status_code == 204
    for suffix in ("", "/content"):
        r = await c.get("/s/" + token_of(forever["url"]) + suffix)
        assert r.status_code == 410 and "revoked" in r.text
    states = {s["id"]: s["state"] for s in
              (await c.get("/api/v1/shares", headers=srv.h())).json()["shares"]}
    assert states == {soon["id"]: "expired", forever["id"]: "revoked"}
    # A file deleted after it was shared: 404.
    meta = await upload(c, srv, "gone.txt", b"x")
    gone = await share(c, srv, file_id=meta["id"])
    assert (await c.delete(f"/api/v1/files/{meta['id']}", headers=srv.h())).status_code == 204
    r = await c.get("/s/" + token_of(gone["url"]))
    assert r.status_code == 404 and "deleted" in r.text


async def test_password_form_then_a_cookie_scoped_to_the_link(srv: Srv, c: Any) -> None:
    data = b"secret bytes " * 1000
    await upload(c, srv, "p.bin", data)
    link = await share(c, srv, path="/p.bin", password="hunter2")
    other = await share(c, srv, path="/p.bin", password="hunter2")
    assert link["has_password"]
    path = "/s/" + token_of(link["url"])
    r = await c.get(path)
    assert r.status_code == 401 and 'type="password"' in r.text and "<label" in r.text
    assert (await c.get(path + "/content")).status_code == 401
    r = await c.post(path, data={"password": "wrong"})
    assert r.status_code == 401 and "not right" in r.text and "set-cookie" not in r.headers
    r = await c.post(path, data={"password": "hunter2"})
    assert r.status_code == 303 and r.headers["location"] == path  # no password in a URL
    cookie = r.headers["set-cookie"]
    assert f"Path={path}" in cookie and "HttpOnly" in cookie and "hunter2" not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    c.cookies.clear()
    jar = {"Cookie": f"fsm_share={value}"}
    r = await c.get(path, headers=jar)
    assert r.status_code == 200 and "p.bin" in r.text
    r = await c.get(path + "/content", headers={**jar, "Range": "bytes=7-12"})
    assert r.status_code == 206 and r.content == data[7:13]
    # The cookie opens only its own link, and a forged one opens nothing.
    r = await c.get("/s/" + token_of(other["url"]) + "/content", headers=jar)
    assert r.status_code == 401
    r = await c.get(path + "/content", headers={"Cookie": "fsm_share=9999999999.00"})
    assert r.status_code == 401
    # Guessing is throttled per link: a burst of tries, then 429.
    statuses = [(await c.post("/s/" + token_of(other["url"]), data={"password": "guess"}))
                .status_code for _ in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[-1] == 429
    # Revoking closes it even with the cookie.
    assert (await c.delete(f"/api/v1/shares/{link['id']}", headers=srv.h())).status_code == 204
    assert (await c.get(path + "/content", headers=jar)).status_code == 410


async def test_share_requests_are_checked(srv: Srv, c: Any) -> None:
    await upload(c, srv, "f.txt", b"f")
    r = await c.post("/api/v1/folders", headers=srv.h(), json={"name": "dir"})
    assert r.status_code == 201
    for body, status in (({"path": "/dir"}, 409), ({"path": "/nope"}, 404), ({}, 400),
                         ({"path": "/f.txt", "expires": "soon"}, 400),
                         ({"path": "/f.txt", "expires_in": -1}, 400),
                         ({"path": "/f.txt", "password": ""}, 400)):
        r = await c.post("/api/v1/shares", headers=srv.h(), json=body)
        assert r.status_code == status, (body, r.text)
    assert (await c.post("/api/v1/shares", json={"path": "/f.txt"})).status_code == 401


async def login(c: httpx.AsyncClient, token: str) -> str:
    r = await c.post("/login", data={"token": token, "next": "/"})
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
    return cookie.split(";")[0].split("=", 1)[1]


async def test_cookie_session_needs_csrf_for_changes(srv: Srv, c: Any) -> None:
    r = await c.get("/")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    r = await c.post("/login", data={"token": srv.tok_a + "x"})
    assert r.status_code == 401 and "not valid" in r.text
    sid = await login(c, srv.tok_a)
    c.cookies.clear()
    jar = {"Cookie": f"fsm_session={sid}"}
    r = await c.get("/", headers=jar)
    assert r.status_code == 200 and srv.tok_a not in r.text
    csrf = r.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    assert (await c.get("/api/v1/folders/root", headers=jar)).status_code == 200
    # A state change with the cookie alone (what another site could forge) is refused.
    r = await c.post("/api/v1/folders", headers=jar, json={"name": "forged"})
    assert r.status_code == 403 and r.json()["error"] == "CSRF_TOKEN_INVALID"
    r = await c.post("/api/v1/folders", json={"name": "forged"},
                     headers={**jar, "X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    listing = (await c.get("/api/v1/folders/root", headers=srv.h())).json()["entries"]
    assert [e["name"] for e in listing] == []
    r = await c.post("/api/v1/folders", json={"name": "real"},
                     headers={**jar, "X-CSRF-Token": csrf})
    assert r.status_code == 201
    # The protocol API is guarded the same way.
    r = await c.post("/api/v1/proto/mkdir", headers=jar, json={"parent": 1, "name": "p"})
    assert r.status_code == 403
    # Sign-out needs the CSRF field; revoking the token ends the session as well.
    assert (await c.post("/logout", headers=jar, data={})).status_code == 403
    sid2 = await login(c, srv.tok_b)
    assert (await c.post("/logout", headers=jar, data={"csrf": csrf})).status_code == 303
    assert (await c.get("/api/v1/folders/root", headers=jar)).status_code == 401
    c.cookies.clear()
    assert (await c.get("/", headers={"Cookie": f"fsm_session={sid2}"})).status_code == 200
    srv.running.state.auth.revoke(srv.tok_b)
    assert (await c.get("/", headers={"Cookie": f"fsm_session={sid2}"})).status_code == 303


async def test_rename_delete_folder_and_search(srv: Srv, c: Any) -> None:
    r = await c.post("/api/v1/folders", headers=srv.h(), json={"name": "Photos"})
    folder = r.json()["id"]
    meta = await upload(c, srv, "Holiday.JPG", b"jpeg?", folder=folder)
    await upload(c, srv, "holiday-notes.txt", b"notes")
    r = await c.get("/api/v1/search", params={"q": "HOLIDAY"}, headers=srv.h())
    assert sorted(x["path"] for x in r.json()["results"]) == \
        ["/Photos/Holiday.JPG", "/holiday-notes.txt"]
    r = await c.patch(f"/api/v1/files/{meta['id']}", headers=srv.h(), json={"name": "b.jpg"})
    assert r.status_code == 200 and r.json()["name"] == "b.jpg"
    r = await c.patch(f"/api/v1/files/{meta['id']}", headers=srv.h(),
                      json={"name": "holiday-notes.txt", "folder_id": "root"})
    assert r.status_code == 409  # taken: never replaced by a rename from the UI
    r = await c.patch(f"/api/v1/folders/{folder}", headers=srv.h(), json={"name": "Pics"})
    assert r.status_code == 200 and r.json()["name"] == "Pics"
    assert (await c.delete(f"/api/v1/folders/{folder}", headers=srv.h())).status_code == 409
    r = await c.delete(f"/api/v1/folders/{folder}?recursive=true", headers=srv.h())
    assert r.status_code == 204
    names = [e["name"] for e in
             (await c.get("/api/v1/folders/root", headers=srv.h())).json()["entries"]]
    assert names == ["holiday-notes.txt"]
    assert (await c.delete("/api/v1/folders/root", headers=srv.h())).status_code == 400


def test_share_cli(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fsmount", *args], input=stdin,
                              capture_output=True, text=True, timeout=120, env=env,
                              check=False)

    with serve_subprocess(store) as (url, token):
        remote = ["--server", url, "--token-file", str(token)]
        src = tmp_path / "movie.mp4"
        src.write_bytes(os.urandom(200_000))
        assert run("put", str(src), "/movie.mp4", *remote).returncode == 0
        res = run("share", "/movie.mp4", "--expires", "7d", *remote)
        assert res.returncode == 0, res.stderr
        link = res.stdout.strip()
        assert link.startswith(url + "/s/") and "\n" not in link
        r = httpx.get(link + "/content", headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == src.read_bytes()[10:20]
        res = run("share", "/movie.mp4", "--password", *remote, stdin="s3cret\n")
        assert res.returncode == 0, res.stderr
        locked = res.stdout.strip()
        assert "s3cret" not in locked
        assert httpx.get(locked).status_code == 401
        r = httpx.post(locked, data={"password": "s3cret"})
        assert r.status_code == 303
        listing = run("share", "list", *remote)
        assert listing.returncode == 0
        lines = listing.stdout.splitlines()
        assert len(lines) == 2 and all("movie.mp4" in x for x in lines)
        assert "password" in lines[1]
        link_id = lines[0].split()[0]
        assert run("share", "revoke", link_id, *remote).returncode == 0
        assert httpx.get(link).status_code == 410
        assert "revoked" in run("share", "list", *remote).stdout.splitlines()[0]
        bad = run("share", "revoke", "nope", *remote)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
        bad = run("share", "/missing", *remote)
        assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    # The embedded store: one line that says what to do.
    res = run("share", "/movie.mp4", "--store", str(store))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "fsmount serve" in res.stderr
