"""Thumbnails, rate limiting, and the HTTP client's retries and error mapping."""

from __future__ import annotations

import base64
import functools
import io
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import crc32c
import pytest
import trio
from PIL import Image

from fsmount import errors
from fsmount.httpremote import HttpRemote
from fsmount.protocol import MIB
from fsmount.reader import FileReader, open_chunk_cache
from fsmount.remote import BlockChecksum, Document, FileLocation, InputFileBig
from fsmount.server import wire
from fsmount.store import Store

from .conftest import SMALL_LIMITS, Srv
from .harness import running_server


def png(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def upload_big(remote: HttpRemote, file_id: int, data: bytes, name: str) -> Document:
    """``data`` as a big upload of 512 KiB parts, finalized."""
    parts = [data[i:i + 512 * 1024] for i in range(0, len(data), 512 * 1024)]
    for i, part in enumerate(parts):
        await remote.save_big_file_part(file_id, i, len(parts), part)
    return await remote.upload_media(InputFileBig(file_id, len(parts), name))


async def read_through_cache(remote: HttpRemote, doc: Document) -> bytes:
    """The whole document read sequentially in 1 MiB reads, as the mount reads it."""
    async with open_chunk_cache(remote) as cache:
        reader = FileReader(cache, (doc,), "r.bin")
        out = bytearray()
        for _ in range(doc.size // MIB + 2):
            if len(out) >= doc.size:
                break
            out += await reader.read(len(out), MIB)
        return bytes(out)


async def test_thumbnails_by_type_and_header_are_cached(srv: Srv) -> None:
    async with srv.client() as c:
        r = await c.post("/api/v1/files", headers=srv.h(), files={"file": ("pic.png", png(1000, 500))})
        fid = r.json()["id"]
        cache = srv.running.app.rest.state.fsm  # the state: thumbnails render counter below
        sizes = {}
        for t in ("s", "m", "x"):
            r = await c.get(f"/api/v1/files/{fid}/thumbnail", params={"type": t}, headers=srv.h())
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            sizes[t] = Image.open(io.BytesIO(r.content)).size
        assert sizes == {"s": (100, 50), "m": (320, 160), "x": (800, 400)}
        files = sorted(os.listdir(cache.thumb_dir))
        assert len(files) == 3
        mtimes = [os.stat(os.path.join(cache.thumb_dir, f)).st_mtime_ns for f in files]
        # easemob's header form gives the m size, from the cache (not rendered again).
        r = await c.get(f"/api/v1/files/{fid}/content", headers=srv.h(thumbnail="true"))
        assert Image.open(io.BytesIO(r.content)).size == (320, 160)
        assert [os.stat(os.path.join(cache.thumb_dir, f)).st_mtime_ns for f in files] == mtimes
        assert sorted(os.listdir(cache.thumb_dir)) == files
        r = await c.get(f"/api/v1/files/{fid}/thumbnail", params={"type": "q"}, headers=srv.h())
        assert r.status_code == 400 and r.json()["error"] == "INVALID_ARGUMENT"
        r = await c.post("/api/v1/files", headers=srv.h(), files={"file": ("t.txt", b"not an image")})
        r = await c.get(f"/api/v1/files/{r.json()['id']}/thumbnail", headers=srv.h())
        assert r.status_code == 415 and r.json()["error"] == "NOT_AN_IMAGE"


def noise_png(seed: int, side: int = 120) -> bytes:
    """A PNG whose thumbnail does not compress to nothing (sizes differ by seed)."""
    img = Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


async def test_thumbnail_cache_is_bounded_least_recently_used_first(tmp_path) -> None:
    from fsmount.server.thumbnails import ThumbnailCache

    images = {f"{i:064x}": noise_png(i) for i in range(6)}

    def loader(key: str):
        async def load() -> bytes:
            return images[key]
        return load

    probe = ThumbnailCache(str(tmp_path / "probe"))
    one = len((await probe.get("0" * 64, "s", loader(f"{0:064x}")))[0])
    cache = ThumbnailCache(str(tmp_path / "t"), max_bytes=3 * one + one // 2)
    keys = list(images)

    def on_disk() -> list[str]:
        return sorted(n.split("-")[0] for n in os.listdir(tmp_path / "t"))

    for key in keys[:3]:
        await cache.get(key, "s", loader(key))
    assert on_disk() == sorted(keys[:3])
    await cache.get(keys[0], "s", loader(keys[0]))  # a hit: now the most recently used
    assert cache.rendered == 3
    await cache.get(keys[3], "s", loader(keys[3]))  # over the bound: keys[1] goes
    assert on_disk() == sorted([keys[0], keys[2], keys[3]])
    total = sum(os.path.getsize(tmp_path / "t" / n) for n in os.listdir(tmp_path / "t"))
    assert total <= cache.max_bytes
    # An evicted thumbnail is rendered again when asked for.
    await cache.get(keys[1], "s", loader(keys[1]))
    assert cache.rendered == 5 and keys[1] in on_disk()
    # A restarted server (a new cache on the same directory) knows what is there.
    again = ThumbnailCache(str(tmp_path / "t"), max_bytes=2 * one + one // 2)
    await again.get(keys[4], "s", loader(keys[4]))
    assert len(on_disk()) == 2 and keys[4] in on_disk()


async def test_rate_limit_429_with_retry_after_and_the_client_waits(tmp_path, manual_clock) -> None:
    path = tmp_path / "store"
    store = Store(path, limits=SMALL_LIMITS, clock=manual_clock)
    try:
        async with running_server(store, path, rate_limit=1.0, burst=2) as running:
            tok = running.state.auth.add_token("alice")
            import httpx

            async with httpx.AsyncClient(base_url=running.url) as c:
                h = {"Authorization": f"Bearer {tok}"}
                codes = []
                for _ in range(10):  # the bucket holds 2 and refills 1 a second
                    codes.append(await c.get("/api/v1/proto/statfs", headers=h))
                    if codes[-1].status_code != 200:
                        break
                assert [r.status_code for r in codes[:2]] == [200, 200]
                assert codes[-1].status_code == 429
                assert codes[-1].json()["error"] == "RATE_LIMITED"
                assert int(codes[-1].headers["retry-after"]) >= 1
            # HttpRemote honours Retry-After and gets through.
            remote = HttpRemote(running.url, tok)
            try:
                with trio.fail_after(20):
                    for _ in range(3):
                        await remote.statfs()
                assert remote.retried >= 1
                # With no retries left the caller sees the named error.
                impatient = HttpRemote(running.url, tok, retries=0)
                with pytest.raises(errors.RateLimited) as info:
                    for _ in range(5):
                        await impatient.statfs()
                assert info.value.name == "RATE_LIMITED" and info.value.retry_after >= 1
                await impatient.aclose()
            finally:
                await remote.aclose()
    finally:
        store.close()


async def test_client_maps_errors_and_gives_up_on_unreachable_servers(srv: Srv) -> None:
    remote = HttpRemote(srv.url, srv.tok_a)
    try:
        with pytest.raises(errors.NotFound):
            await remote.getattr(987654)
        with pytest.raises(errors.FilePartTooBig) as info:
            await remote.save_file_part(1, 0, b"x" * (512 * 1024 + 1))
        assert info.value.name == "FILE_PART_TOO_BIG"
        node = await remote.mkdir(1, "d")
        with pytest.raises(errors.AlreadyExists):
            await remote.mkdir(1, "d")
        assert (await remote.lookup(1, "d")).id == node.id
        assert remote._meta.opened == 1  # keep-alive: one connection for all of that
    finally:
        await remote.aclose()
    bad = HttpRemote(srv.url, "fsm_000000000000_nope")
    with pytest.raises(errors.Unauthorized) as info2:
        await bad.statfs()
    assert info2.value.name == "auth_bad_access_token"
    await bad.aclose()
    # Nothing listens on the port of a closed socket: connection refused, retried, then given up.
    s = trio.socket.socket()
    await s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    dead = HttpRemote(f"http://127.0.0.1:{port}", "tok", retries=2, backoff=0.01)
    with trio.fail_after(10), pytest.raises(errors.TransportError):
        await dead.statfs()
    assert dead.retried == 2
    await dead.aclose()
    with pytest.raises(errors.InvalidArgument):
        HttpRemote("ftp://x", "t")


async def test_retry_after_a_dropped_connection_does_not_repeat_a_mkdir(srv: Srv) -> None:
    """A proxy drops the first answer to mkdir after the server ran it; the client retries
    with the same Idempotency-Key and gets the first answer, not ALREADY_EXISTS."""
    host, port = srv.url.removeprefix("http://").split(":")
    dropped = trio.Event()

    async def handle(client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream(host, int(port))
        seen = bytearray()
        async with client, upstream, trio.open_nursery() as pumps:

            async def up() -> None:
                while data := await client.receive_some(65536):
                    seen.extend(data)
                    await upstream.send_all(data)

            async def down() -> None:
                while data := await upstream.receive_some(65536):
                    if b"/proto/mkdir" in seen and not dropped.is_set():
                        dropped.set()  # the server did the work; the client never hears of it
                        pumps.cancel_scope.cancel()
                        return
                    await client.send_all(data)
                pumps.cancel_scope.cancel()

            pumps.start_soon(up)
            pumps.start_soon(down)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        pport = listeners[0].socket.getsockname()[1]
        remote = HttpRemote(f"http://127.0.0.1:{pport}", srv.tok_a, backoff=0.01)
        try:
            node = await remote.mkdir(1, "once")
            assert dropped.is_set() and remote.retried >= 1
            assert node.name == "once"
            listing = await remote.list_folder(1)
            assert [n.name for n in listing.entries] == ["once"]
        finally:
            await remote.aclose()
        nursery.cancel_scope.cancel()


async def test_hash_answers_match_the_store(tmp_path, manual_clock) -> None:
    """Every getFileHashes answer through the client starts at the offset's block, reaches
    at least the end of its window, and agrees with the store's own hashes (the embedded
    remote of the same user)."""
    from fsmount.protocol import Limits

    store = Store(tmp_path / "store", limits=Limits(), clock=manual_clock)
    async with running_server(store, tmp_path / "store") as running:
        tok = running.state.auth.add_token("alice")
        _, embedded = await running.state.user_remote("alice")
        try:
            await _check_hash_prefetch(HttpRemote(running.url, tok), embedded)
        finally:
            store.close()


async def _check_hash_prefetch(remote: HttpRemote, embedded) -> None:  # type: ignore[no-untyped-def]

    try:
        data = os.urandom(11 * MIB + 5000)
        doc = await upload_big(remote, 77, data, "h.bin")
        await remote.create_file(1, "h.bin", (doc.location,))
        truth = {h.offset: h for h in await embedded.get_file_hashes(doc.location, 0)}
        off = 0
        while off < len(data):  # the store's own answers, all of them
            more = await embedded.get_file_hashes(doc.location, off)
            truth.update((h.offset, h) for h in more)
            off = more[-1].offset + more[-1].limit
        first = await remote.get_file_hashes(doc.location, 0)
        for off in [0, MIB, MIB + 200 * 1024, 2 * MIB, 7 * MIB, 8 * MIB, 11 * MIB, 11 * MIB + 4096]:
            got = first if off == 0 else await remote.get_file_hashes(doc.location, off)
            assert got[0].offset == off // (128 * 1024) * (128 * 1024)
            assert got[-1].offset + got[-1].limit >= min(len(data), (off // MIB + 1) * MIB)
            assert all(truth[h.offset] == h for h in got)
            assert [h.offset for h in got] == sorted({h.offset for h in got})
        assert await remote.get_file_hashes(doc.location, 12 * MIB) == []
        with pytest.raises(errors.OffsetInvalid):
            await remote.get_file_hashes(doc.location, MIB + 100)
    finally:
        await remote.aclose()


async def test_a_run_of_windows_is_one_request_with_the_same_bytes_and_checks(srv: Srv) -> None:
    """get_file_windows (the reader's run of read-ahead) is one getFile request: every
    window equals what the store answers for it, the block checks come along and match the
    bytes, the run stops after the short window at the end, and the client keeps nothing
    of its own between calls (the reader owns the access pattern)."""

    remote = HttpRemote(srv.url, srv.tok_a)
    _, embedded = await srv.running.state.user_remote("alice")
    try:
        data = os.urandom(4 * MIB - 1000)  # 8 parts: one upload of the small test limits
        doc = await upload_big(remote, 5, data, "s.bin")
        before = remote.requests["getFile"]
        run = await remote.get_file_windows(doc.location, 0, 8)
        assert remote.requests["getFile"] == before + 1
        assert [len(w.bytes) for w in run.windows] == [MIB, MIB, MIB, MIB - 1000]
        for w, window in enumerate(run.windows):
            assert window.bytes == data[w * MIB:(w + 1) * MIB], w
            assert window.bytes == (await embedded.get_file(doc.location, w * MIB, MIB)).bytes
        assert run.checks == await embedded.get_file_checksums(doc.location, 0) + [
            c for w in range(1, 4)
            for c in await embedded.get_file_checksums(doc.location, w * MIB)]
        assert all(c.matches(data[c.offset:c.offset + c.limit]) for c in run.checks)
        one = await remote.get_file_windows(doc.location, 2 * MIB, 1)
        assert [w.bytes for w in one.windows] == [data[2 * MIB:3 * MIB]]
        assert vars(remote).keys() == vars(HttpRemote(srv.url, srv.tok_a)).keys()
        with pytest.raises(errors.InvalidArgument):
            await remote.get_file_windows(doc.location, 0, 9)
        # The server refuses windows=N for anything but whole aligned windows.
        async with srv.client() as c:
            r = await c.get("/api/v1/proto/getFile", headers=srv.h(), params={
                "id": doc.id, "access_hash": doc.access_hash, "offset": 4096, "limit": MIB,
                "windows": 2})
            assert r.status_code == 400 and r.json()["error"] == "OFFSET_INVALID"
            r = await c.get("/api/v1/proto/getFile", headers=srv.h(), params={
                "id": doc.id, "access_hash": doc.access_hash, "offset": MIB, "limit": MIB,
                "windows": 8})
            assert r.headers["x-window-sizes"] == f"{MIB},{MIB},{MIB - 1000}"
            assert r.content == data[MIB:]
    finally:
        await remote.aclose()


@asynccontextmanager
async def uploaded_3_mib(srv: Srv, name: str) -> AsyncIterator[tuple[HttpRemote, bytes, Any, Any]]:
    """A client, the 3 MiB + 700 bytes it uploaded, getFile's location parameters for them,
    and a plain HTTP client for the raw API."""
    remote = HttpRemote(srv.url, srv.tok_a)
    try:
        data = os.urandom(3 * MIB + 700)
        doc = await upload_big(remote, 6, data, name)
        async with srv.client() as c:
            yield remote, data, {"id": doc.id, "access_hash": doc.access_hash, "limit": MIB}, c
    finally:
        await remote.aclose()


async def test_getfile_answers_carry_the_block_hashes_of_their_windows(srv: Srv) -> None:
    """``hashes=true``: X-Block-Hashes holds exactly the digests getFileHashes gives for the
    windows sent (one window or several, none past the end); anything but whole aligned
    windows is refused."""
    async with uploaded_3_mib(srv, "h.bin") as (_, _, loc, c):
        async def digests(**params: object) -> bytes:
            r = await c.get("/api/v1/proto/getFile", headers=srv.h(),
                            params={**loc, "hashes": "true", **params})
            assert r.status_code == 200, r.text
            return base64.b64decode(r.headers["x-block-hashes"])

        async def truth(offset: int, windows: int) -> bytes:
            r = await c.get("/api/v1/proto/getFileHashes", headers=srv.h(), params={
                "id": loc["id"], "access_hash": loc["access_hash"], "offset": offset,
                "windows": windows})
            return b"".join(bytes.fromhex(h["hash"]) for h in r.json())

        assert await digests(offset=0) == await truth(0, 1)
        assert len(await digests(offset=0)) == 8 * 32
        assert await digests(offset=MIB, windows=8) == await truth(MIB, 3)
        assert len(await digests(offset=MIB, windows=8)) == (2 * 8 + 1) * 32
        assert await digests(offset=4 * MIB) == b""  # past the end: no bytes, no hashes
        for bad, error in (({"offset": 4096}, "OFFSET_INVALID"),
                           ({"offset": 0, "precise": "true"}, "INVALID_ARGUMENT"),
                           ({"offset": 0, "limit": 512 * 1024}, "INVALID_ARGUMENT")):
            r = await c.get("/api/v1/proto/getFile", headers=srv.h(),
                            params={**loc, "hashes": "true", **bad})
            assert r.status_code == 400 and r.json()["error"] == error, bad


async def test_getfile_answers_carry_crc32c_checksums_when_asked(srv: Srv) -> None:
    """``checksums=crc32c``: X-Block-Crc32c (in place of X-Block-Hashes) holds the CRC32C
    of every block sent, exactly what getFileChecksums answers, and each matches the bytes;
    any other value is refused."""
    async with uploaded_3_mib(srv, "c.bin") as (remote, data, loc, c):
        async def crcs(offset: int, windows: int) -> list[int]:
            r = await c.get("/api/v1/proto/getFile", headers=srv.h(), params={
                **loc, "offset": offset, "windows": windows, "hashes": "true",
                "checksums": "crc32c"})
            assert r.status_code == 200, r.text
            assert "x-block-hashes" not in r.headers
            raw = base64.b64decode(r.headers["x-block-crc32c"])
            return [int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4)]

        async def truth(offset: int, windows: int, **other: int) -> Any:
            return await c.get("/api/v1/proto/getFileChecksums", headers=srv.h(), params={
                **loc, "offset": offset, "windows": windows, **other})

        blocks = [crc32c.crc32c(data[o : o + 128 * 1024])
                  for o in range(0, len(data), 128 * 1024)]
        assert await crcs(0, 1) == [h["crc32c"] for h in (await truth(0, 1)).json()]
        assert await crcs(0, 1) == blocks[:8]
        assert await crcs(MIB, 8) == [h["crc32c"] for h in (await truth(MIB, 3)).json()]
        assert await crcs(MIB, 8) == blocks[8:]
        r = await c.get("/api/v1/proto/getFile", headers=srv.h(), params={
            **loc, "offset": 0, "hashes": "true", "checksums": "sha1"})
        assert r.status_code == 400 and r.json()["error"] == "INVALID_ARGUMENT"
        r = await truth(0, 1, access_hash=loc["access_hash"] + 1)
        assert r.status_code == 404 and r.json()["error"] == "FILE_ID_INVALID"
        # The client's own call agrees.
        got = await remote.get_file_checksums(FileLocation(loc["id"], loc["access_hash"]), 0)
        assert [g.crc32c for g in got if isinstance(g, BlockChecksum)][:8] == blocks[:8]


async def test_a_sequential_read_needs_no_getfilehashes_and_still_catches_corruption(
        tmp_path, manual_clock) -> None:
    """Through HttpRemote, a reader gets every chunk's block hashes with the chunk itself:
    a sequential read of 21 MiB makes no getFileHashes request and few getFile requests,
    and a byte flipped on the server's disk is still caught (CHECKSUM_MISMATCH)."""
    from fsmount.protocol import Limits

    store = Store(tmp_path / "store", limits=Limits(), clock=manual_clock)
    async with running_server(store, tmp_path / "store") as running:
        tok = running.state.auth.add_token("alice")
        uid, _ = await running.state.user_remote("alice")
        remote = HttpRemote(running.url, tok)
        try:
            data = os.urandom(20 * MIB + 5000)
            docs = [await upload_big(remote, fid, data, "r.bin") for fid in (1, 2)]
            assert await read_through_cache(remote, docs[0]) == data
            assert remote.requests["getFileHashes"] == 0
            assert remote.requests["getFileChecksums"] == 0
            # 21 windows: runs of up to 4 (a quarter of the 16 MiB read-ahead, so that it
            # goes out over four connections), smaller while the window grows (1, 2, 4).
            assert 0 < remote.requests["getFile"] <= 10

            # Same bytes uploaded again: the store keeps one blob; flip a byte 5.5 MiB in.
            target, pos = 5 * MIB + MIB // 2, 0
            for path in store.blob_files(uid, docs[1].location):
                size = path.stat().st_size
                if pos + size > target:
                    raw = bytearray(path.read_bytes())
                    raw[target - pos] ^= 0xFF
                    path.write_bytes(bytes(raw))
                    break
                pos += size
            with pytest.raises(errors.ChecksumMismatch):
                await read_through_cache(remote, docs[1])
        finally:
            await remote.aclose()
            store.close()


async def test_reads_still_verify_against_a_server_without_the_hashes_extension(
        srv: Srv, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that ignores ``hashes=true`` and has no getFileChecksums (an older fsmount
    serve) answers one window as plain getFile and several without X-Block-Hashes: reads
    still return the right bytes, verified with hashes from getFileHashes (and the client
    asks for the missing method once)."""
    from fsmount.server import app as app_module

    real_q_bool = app_module.q_bool
    monkeypatch.setattr(app_module, "q_bool",
                        lambda p, key: False if key == "hashes" else real_q_bool(p, key))
    monkeypatch.setattr(wire, "ALL_METHODS", wire.ALL_METHODS - {"getFileChecksums"})
    remote = HttpRemote(srv.url, srv.tok_a)
    try:
        data = os.urandom(3 * MIB + 700)
        doc = await upload_big(remote, 8, data, "old.bin")
        assert await read_through_cache(remote, doc) == data
        asked = remote.requests["getFileChecksums"]
        assert asked >= 1
        assert remote.requests["getFileHashes"] >= 1
        doc2 = await upload_big(remote, 9, data[::-1], "old2.bin")
        assert await read_through_cache(remote, doc2) == data[::-1]
        assert remote.requests["getFileChecksums"] == asked
    finally:
        await remote.aclose()
