"""HttpRemote's own HTTP/1.1 framing (request heads written and answer heads parsed by
hand, h11 only for bodies without a Content-Length), against a scripted server on a
loopback port: every framing a server may use gives the same body, and malformed answers
are network errors (retried, then TransportError), never a traceback."""

from __future__ import annotations

import functools
import json

import pytest
import trio

from fsmount import errors
from fsmount.httpremote import HttpRemote

BODY = json.dumps({"ok": True, "pad": "x" * 3000}).encode()


def _chunked(body: bytes) -> bytes:
    out = b""
    for i in range(0, len(body), 1000):
        piece = body[i:i + 1000]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n\r\n"


ANSWERS = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY,
    "continue": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: %d\r\n"
                 b"X-A: 1\r\nx-a: 2\r\n\r\n" % len(BODY) + BODY),
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(BODY),
    "close": b"HTTP/1.0 200 OK\r\n\r\n" + BODY,
}


async def _serve(answer: bytes, requests: list[bytes], stream: trio.SocketStream,
                 close: bool = False) -> None:
    """Answer every request on the connection with ``answer``; close after an answer
    that is not keep-alive HTTP/1.1 with a length, or after the first with ``close``."""
    async with stream:
        buf = bytearray()
        while True:
            while (end := buf.find(b"\r\n\r\n")) < 0:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            head = bytes(buf[:end + 4])
            del buf[:end + 4]
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(buf) < length:
                buf += await stream.receive_some(65536)
            requests.append(head + bytes(buf[:length]))
            del buf[:length]
            await stream.send_all(answer)
            if close or b"content-length" not in answer.lower():
                return


@pytest.mark.parametrize("kind", sorted(ANSWERS))
async def test_every_framing_gives_the_same_body(kind: str) -> None:
    requests: list[bytes] = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(
            trio.serve_tcp, functools.partial(_serve, ANSWERS[kind], requests), 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        remote = HttpRemote(f"http://127.0.0.1:{port}/base", "tok")
        try:
            for n in range(3):
                ans = await remote._request("saveFilePart", http="POST", body=b"p" * (n + 1),
                                            bulk=True, query={"file_id": 7, "file_part": n,
                                                              "name": "a b&c", "flag": True})
                assert ans.status == 200 and ans.body == BODY
            if kind == "continue":
                assert ans.headers["x-a"] == "1, 2"
            # Keep-alive only where the framing allows it.
            assert remote._bulk.opened == (1 if kind in ("length", "continue") else 3)
            assert remote.retried == 0
        finally:
            await remote.aclose()
        nursery.cancel_scope.cancel()
    head, _, body = requests[2].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == (b"POST /base/api/v1/proto/saveFilePart?file_id=7&file_part=2"
                        b"&name=a+b%26c&flag=true HTTP/1.1")
    assert b"authorization: Bearer tok" in lines and b"content-length: 3" in lines
    assert body == b"ppp"


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 OK\r\n\r\n",
    b"SPDY/3 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
])
async def test_malformed_answers_are_retried_then_a_transport_error(answer: bytes) -> None:
    requests: list[bytes] = []

    async def once(stream: trio.SocketStream) -> None:
        await _serve(answer, requests, stream, close=True)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, once, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        remote = HttpRemote(f"http://127.0.0.1:{port}", "tok", retries=2, backoff=0.001, timeout=5)
        try:
            with pytest.raises(errors.TransportError):
                await remote._request("statfs")
            assert remote.retried == 2 and len(requests) == 3
        finally:
            await remote.aclose()
        nursery.cancel_scope.cancel()


def test_a_non_ascii_server_address_is_a_clear_error() -> None:
    with pytest.raises(errors.InvalidArgument):
        HttpRemote("http://bücher.example:8080", "tok")
