"""First contact with a server through the real command line (``python -m fsmount`` in a
subprocess): every failure is one line on stderr that says what happened and what to do,
with exit status 1 (130 after Ctrl-C), and never a traceback.

The cases: a port already in use, a refused token, a wrong URL path, https against an http
server and http against an https one, nothing listening, a host name that does not
resolve, a mount that fails while it starts, and Ctrl-C during ``put`` and ``get``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import FSMOUNT, free_port, run
from .harness import start_serve

DEADLINE = 30.0
#: A host name that cannot resolve, and is refused without asking any DNS server: longer
#: than the 255 bytes a DNS name may have, so the resolver gives up before sending.
UNRESOLVABLE = ".".join(["x" * 60] * 5) + ".invalid"


def one_line(res: subprocess.CompletedProcess[str], status: int = 1) -> str:
    """The single stderr line of a failed command, after checking status and no traceback."""
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert res.returncode == status, res.stderr
    assert lines[0].startswith("fsmount: ")
    return lines[0]


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """End a process this test started (by its own handle) and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=DEADLINE)


def new_store(path: Path, user: str = "alice") -> Path:
    """An initialised store with a token for ``user``; returns the token file."""
    assert run("init", "--store", str(path)).returncode == 0
    token = run("token", "add", "--store", str(path), user).stdout.strip()
    assert token
    token_file = path.parent / f"{path.name}-{user}.token"
    token_file.write_text(token + "\n")
    return token_file


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``fsmount serve`` with a self-signed certificate: (port, token file)."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True,
                   timeout=60)
    store = tmp_path / "tls-store"
    token_file = new_store(store)
    port = free_port()
    proc, _log = start_serve(store, port, "--certfile", str(cert), "--keyfile", str(key))
    try:
        yield port, token_file
    finally:
        stop(proc)


def test_serve_on_a_busy_port_names_the_address(served, tmp_path: Path) -> None:
    _store, url, _proc = served
    other = tmp_path / "other"
    new_store(other)
    address = url.removeprefix("http://")
    res = subprocess.run([*FSMOUNT, "serve", "--store", str(other), "--listen", address],
                         capture_output=True, text=True, timeout=60)
    line = one_line(res)
    assert f"cannot listen on {address}" in line
    assert "in use" in line and "--listen" in line


def test_serve_creates_a_missing_store_and_says_so(tmp_path: Path) -> None:
    store = tmp_path / "fresh"
    proc, log = start_serve(store, free_port())
    try:
        assert f"created a new empty store in {store}" in log.read_text()
        assert (store / "meta.sqlite").is_file()
    finally:
        stop(proc)
    assert proc.returncode == 0


def test_a_refused_token_says_401_and_how_to_make_one(served, tmp_path: Path) -> None:
    store, url, _proc = served
    good = tmp_path / "good.token"
    good.write_text(run("token", "add", "--store", str(store), "alice").stdout)
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")
    assert run("put", "--server", url, "--token-file", str(good), str(src), "/f").returncode == 0
    bad = tmp_path / "bad.token"
    bad.write_text("fsm_000000000000_not-a-token\n")
    out = tmp_path / "out.bin"
    for verb in (["ls", "/"], ["get", "/f", str(out)], ["put", str(src), "/g"]):
        line = one_line(run(verb[0], "--server", url, "--token-file", str(bad), *verb[1:]))
        assert "refused the token (401" in line, line
        assert "fsmount token add" in line
    assert not out.exists()
    assert "g" not in run("ls", "--server", url, "--token-file", str(good), "/").stdout.split()


def test_a_wrong_url_path_says_404_and_base_url(served, tmp_path: Path) -> None:
    store, url, _proc = served
    token = tmp_path / "t"
    token.write_text(run("token", "add", "--store", str(store), "alice").stdout)
    for wrong in (f"{url}/wrong/", f"{url}/api/v1"):
        line = one_line(run("ls", "--server", wrong, "--token-file", str(token), "/"))
        assert "404" in line and f"at {wrong.rstrip('/')}/api/v1/proto/getattr" in line, line
        assert f"base URL, e.g. {url}" in line


def test_https_against_an_http_server(served, tmp_path: Path) -> None:
    store, url, _proc = served
    token = tmp_path / "t"
    token.write_text(run("token", "add", "--store", str(store), "alice").stdout)
    https = url.replace("http://", "https://")
    line = one_line(run("ls", "--server", https, "--token-file", str(token), "/"))
    assert f"{https}: the server does not speak TLS" in line, line
    assert f"use --server {url}" in line
    assert "BrokenResourceError" not in line


def test_http_against_an_https_server_and_an_untrusted_certificate(tls_server) -> None:
    port, token = tls_server
    http = f"http://127.0.0.1:{port}"
    line = one_line(run("ls", "--server", http, "--token-file", str(token), "/"))
    assert f"{http}: the server closed the connection without answering" in line, line
    assert f"use --server https://127.0.0.1:{port}" in line
    https = f"https://127.0.0.1:{port}"
    line = one_line(run("ls", "--server", https, "--token-file", str(token), "/"))
    assert f"{https}: the server's TLS certificate was rejected" in line, line
    assert "self-signed" in line


def test_nothing_listening_and_a_name_that_does_not_resolve(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("fsm_000000000000_whatever\n")
    url = f"http://127.0.0.1:{free_port()}"  # closed again: nothing listens there
    line = one_line(run("ls", "--server", url, "--token-file", str(token), "/"))
    assert f"cannot connect to {url}: connection refused" in line, line
    assert "fsmount serve" in line
    url = f"http://{UNRESOLVABLE}:8080"
    line = one_line(run("get", "--server", url, "--token-file", str(token), "/f",
                        str(tmp_path / "out")))
    assert f"the host name {UNRESOLVABLE} does not resolve" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.fuse
def test_a_mount_that_cannot_start_fails_the_mount_command(served, tmp_path: Path) -> None:
    store, url, _proc = served
    good = tmp_path / "good.token"
    good.write_text(run("token", "add", "--store", str(store), "alice").stdout)
    bad = tmp_path / "bad.token"
    bad.write_text("fsm_000000000000_not-a-token\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cases = [
        (url, bad, "refused the token (401"),
        (f"{url}/wrong", good, "404"),
        (url.replace("http://", "https://"), good, "does not speak TLS"),
    ]
    try:
        for server, token, expected in cases:
            for foreground in ([], ["-f"]):
                res = run("mount", *foreground, "--server", server, "--token-file", str(token),
                          str(mnt))
                assert expected in one_line(res), res.stderr
                assert not os.path.ismount(mnt)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=60)


def test_ctrl_c_during_put_and_get_exits_130_and_leaves_no_partial_file(tmp_path: Path) -> None:
    store = tmp_path / "store"
    token = new_store(store, "default")
    # For get: a 48 MiB file, put before the server runs (the embedded store has no limit).
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(48 << 20))
    assert run("put", "--store", str(store), str(big), "/big.bin").returncode == 0
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(8 << 20))
    # One request a second: the put below (16 parts, one at a time) takes 16 s or more,
    # the get (6 requests of 8 windows, after 3 small ones) about 9 s, so each is still
    # under way when the signal comes, moments after it started moving bytes.
    port = free_port()
    server, _log = start_serve(store, port, "--rate-limit", "1")
    url = f"http://127.0.0.1:{port}"
    try:
        put = subprocess.Popen([*FSMOUNT, "put", "--parallel", "1", "--server", url,
                                "--token-file", str(token), str(small), "/again.bin"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        try:
            # Under way once a part arrives at the server.
            wait_until(lambda: put.poll() is not None
                       or any(p.is_file() for p in (store / "parts").rglob("*")),
                       "a part of the upload at the server")
            assert put.poll() is None, put.communicate()
            put.send_signal(signal.SIGINT)
            _out, err = put.communicate(timeout=DEADLINE)
        finally:
            stop(put)
        res = subprocess.CompletedProcess(put.args, put.returncode, "", err)
        assert one_line(res, status=130) == "fsmount: interrupted"
        listing = run("ls", "--store", str(store), "/")
        assert listing.returncode == 0 and "again.bin" not in listing.stdout, listing

        dest = tmp_path / "downloads"
        dest.mkdir()
        get = subprocess.Popen([*FSMOUNT, "get", "--server", url, "--token-file", str(token),
                                "/big.bin", str(dest / "big.bin")],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        try:
            # Under way once the first bytes are written (to a temporary name).
            wait_until(lambda: get.poll() is not None
                       or any(p.stat().st_size > 0 for p in dest.iterdir()),
                       "the first bytes of the download")
            assert get.poll() is None, get.communicate()
            get.send_signal(signal.SIGINT)
            _out, err = get.communicate(timeout=DEADLINE)
        finally:
            stop(get)
        res = subprocess.CompletedProcess(get.args, get.returncode, "", err)
        assert one_line(res, status=130) == "fsmount: interrupted"
        assert list(dest.iterdir()) == []  # no partial file, under any name
    finally:
        stop(server)
