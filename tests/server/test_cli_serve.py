"""``fsmount token`` and ``fsmount serve`` as a user runs them: a real subprocess on a
loopback port, tokens managed while it runs, and a SIGTERM that lets a download in flight
finish."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from .conftest import FSMOUNT, free_port, run
from .harness import start_serve


def test_tokens_while_serving_and_sigterm_finishes_a_download(served) -> None:
    store, url, proc = served
    out = run("token", "add", "--store", str(store), "--quota", "100M", "alice")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("fsm_")
    h = {"Authorization": f"Bearer {token}"}
    data = os.urandom(24 << 20)
    r = httpx.post(f"{url}/api/v1/files", headers=h, files={"file": ("big.bin", data)}, timeout=60)
    assert r.status_code == 201, r.text
    fid = r.json()["id"]
    usage = httpx.get(f"{url}/api/v1/proto/statfs", headers=h).json()
    assert usage["quota_bytes"] == 100 << 20 and usage["used_bytes"] >= len(data)
    listing = run("token", "list", "--store", str(store))
    assert "alice" in listing.stdout and "active" in listing.stdout and token not in listing.stdout

    # Start a download, read only its first bytes, then SIGTERM: it still completes.
    with httpx.stream("GET", f"{url}/api/v1/files/{fid}/content", headers=h, timeout=30) as resp:
        it = resp.iter_bytes()
        got = bytearray(next(it))
        proc.send_signal(signal.SIGTERM)
        for chunk in it:
            got += chunk
    assert bytes(got) == data
    assert proc.wait(timeout=30) == 0
    # Revoke with the server down; a new server sees it.
    assert run("token", "revoke", "--store", str(store), "alice").returncode == 0
    assert run("token", "revoke", "--store", str(store), "alice").returncode == 1


def test_revoked_token_is_refused_by_a_running_server(served) -> None:
    store, url, _proc = served
    token = run("token", "add", "--store", str(store), "bob").stdout.strip()
    h = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{url}/api/v1/folders/root", headers=h).status_code == 200
    assert run("token", "revoke", "--store", str(store), token).returncode == 0
    r = httpx.get(f"{url}/api/v1/folders/root", headers=h)
    assert r.status_code == 401 and r.json()["error"] == "auth_bad_access_token"


def test_serve_refuses_a_second_server_on_the_same_store_and_bad_options(served, tmp_path: Path) -> None:
    store, _url, _proc = served
    second = subprocess.run([*FSMOUNT, "serve", "--store", str(store), "--listen",
                             f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "STORE_LOCKED" in second.stderr
    assert "Traceback" not in second.stderr
    bad = run("serve", "--store", str(tmp_path / "s2"), "--listen", "nonsense")
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
    tls = run("serve", "--store", str(tmp_path / "s3"), "--certfile", "x.pem")
    assert tls.returncode == 2 and "keyfile" in tls.stderr  # a usage error, as argparse's
    assert not (tmp_path / "s3").exists()  # options are checked before a store is made


def test_openapi_document_needs_no_token(served) -> None:
    _store, url, _proc = served
    doc = httpx.get(f"{url}/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/api/v1/uploads/{id}/chunks/{n}" in doc["paths"]
    assert "/api/v1/proto/getFile" in doc["paths"]


async def test_tls_with_certfile_and_keyfile(tmp_path: Path) -> None:
    from fsmount.httpremote import HttpRemote

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True,
                   timeout=60)
    store = tmp_path / "store"
    assert run("init", "--store", str(store)).returncode == 0
    token = run("token", "add", "--store", str(store), "alice").stdout.strip()
    port = free_port()
    proc, log = start_serve(store, port, "--certfile", str(cert), "--keyfile", str(key))
    try:
        assert f"https://127.0.0.1:{port}" in log.read_text()
        remote = HttpRemote(f"https://127.0.0.1:{port}", token, ca_file=str(cert))
        try:
            node = await remote.mkdir(1, "over-tls")
            assert (await remote.lookup(1, "over-tls")).id == node.id
        finally:
            await remote.aclose()
        untrusting = HttpRemote(f"https://127.0.0.1:{port}", token, retries=0)
        from fsmount import errors

        with pytest.raises(errors.TransportError):
            await untrusting.statfs()  # self-signed: refused without its CA
        await untrusting.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(log.read_text()) from None
