"""The client's server list (``--server URL1 --server URL2`` or ``URL1,URL2``): requests move
to the next node when one cannot be reached, upload parts and reads included, within the
retry bound, with one log line per outage (fsmount/httpremote.py)."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from fsmount import errors
from fsmount.cli import build_parser
from fsmount.httpremote import HttpRemote, split_server_urls
from fsmount.mounthelper import helper_argv
from fsmount.protocol import KIB, MIB
from fsmount.remote import ROOT_ID, InputFileBig

from .cluster import MODES, Cluster, free_port

FSMOUNT = [sys.executable, "-m", "fsmount"]


@pytest.fixture(params=MODES)
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(request.param, tmp_path, request)
    c.start_serving()
    try:
        yield c
    finally:
        c.stop()
    assert c.fsck() == []


def test_server_lists_parse() -> None:
    assert split_server_urls("http://a:1, http://b:2,,http://a:1") == ["http://a:1",
                                                                        "http://b:2"]
    assert split_server_urls(["http://a:1", "http://b:2,http://c:3"]) == [
        "http://a:1", "http://b:2", "http://c:3"]
    with pytest.raises(errors.InvalidArgument):
        split_server_urls(" , ")
    with pytest.raises(errors.InvalidArgument, match="ftp://x"):
        HttpRemote("http://a:1,ftp://x", "tok")
    args = build_parser().parse_args(["ls", "--server", "http://a:1,http://b:2", "--server",
                                      "http://c:3", "/"])
    assert args.server == "http://a:1,http://b:2,http://c:3"
    assert HttpRemote(args.server, "tok").base_urls == ["http://a:1", "http://b:2",
                                                         "http://c:3"]
    # An fstab source of several nodes reaches the mount as one --server list.
    argv = helper_argv(["http://a:1,http://b:2", "/mnt/x", "-o", "token_file=/t,allow_other"])
    parsed = build_parser().parse_args(argv)
    assert parsed.server == "http://a:1,http://b:2" and parsed.token_file == "/t"


def test_a_dead_first_server_is_skipped_by_every_verb(cluster: Cluster, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    data = os.urandom(3 * MIB + 5)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    env = {**os.environ, "FSMOUNT_TOKEN": cluster.token}
    servers = ["--server", dead, "--server", cluster.urls[0]]
    comma = ["--server", f"{dead},{cluster.urls[0]}"]
    for verb, args in [("put", [*servers, str(src), "/f.bin"]),
                       ("ls", [*comma, "/"]),
                       ("get", [*servers, "/f.bin", str(tmp_path / "back.bin")])]:
        proc = subprocess.run([*FSMOUNT, verb, *args], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        # One line says that the client moved on, and to where.
        assert proc.stderr.count("switching to") == 1, proc.stderr
        assert f"{dead}: connection refused; switching to {cluster.urls[0]}" in proc.stderr
    assert (tmp_path / "back.bin").read_bytes() == data
    # Every node dead: the usual error, within the retry bound.
    proc = subprocess.run([*FSMOUNT, "ls", "--server", dead, "--server",
                           f"http://127.0.0.1:{free_port()}", "/"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "connection refused" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_a_silent_first_node_does_not_use_up_the_retry_window(cluster: Cluster) -> None:
    """A node that accepts connections and never answers times out; the next node is
    still tried within the same call, though the timeout alone outlasts the window."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        remote = HttpRemote([url, cluster.urls[0]], cluster.token, timeout=1.0,
                            retry_time=0.2)
        try:
            start = trio.current_time()
            node = await remote.getattr(ROOT_ID)
            assert node.id == ROOT_ID and remote.base_url == cluster.urls[0]
            assert remote.switches == 1 and trio.current_time() - start < 10
        finally:
            await remote.aclose()


async def test_upload_parts_and_reads_go_on_through_the_other_node(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fsmount.httpremote")
    data = os.urandom(40 * 512 * KIB + 1234)
    parts = [data[i : i + 512 * KIB] for i in range(0, len(data), 512 * KIB)]
    remote = HttpRemote(cluster.urls, cluster.token, retry_time=60, backoff_max=0.5)
    try:
        fid = 0x5EED
        for i, part in enumerate(parts[:10]):
            await remote.save_big_file_part(fid, i, len(parts), part)
        cluster.kill_serving()
        async with trio.open_nursery() as nursery:
            # Node 1 comes up (standby) while the parts go on failing over and retrying.
            nursery.start_soon(trio.to_thread.run_sync, cluster.take_over)
            for i, part in enumerate(parts[10:], start=10):
                await remote.save_big_file_part(fid, i, len(parts), part)
        doc = await remote.upload_media(InputFileBig(fid, len(parts), "big.bin"))
        assert doc.sha256 == hashlib.sha256(data).hexdigest()
        node = await remote.create_file(ROOT_ID, "big.bin", (doc.location,))
        assert remote.base_url == cluster.urls[1] and remote.switches >= 1
        got = bytearray()
        for off in range(0, len(data), MIB):
            got += (await remote.get_file(doc.location, off, MIB)).bytes
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert (await remote.getattr(node.id)).size == len(data)
    finally:
        await remote.aclose()
    lines = [r for r in caplog.records if "switching to" in r.getMessage()]
    assert len(lines) == 1 and cluster.urls[1] in lines[0].getMessage()
