"""scripts/delay_proxy.py with real sockets on loopback: the round trip it adds, bytes
intact and in order both ways, and the window's bound on one connection's throughput.

Only lower bounds on time are asserted tightly (a slow machine can only make things
slower); the upper bound on the round trip has generous slack.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# The proxy is a script (scripts/ is not a package): import it from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from delay_proxy import DelayProxy, ProxyStats  # noqa: E402

MIB = 1 << 20
DEADLINE = 30.0  # every socket operation in these tests is bounded by this


@contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[tuple[str, int]]:
    """A server on 127.0.0.1 that runs ``handle`` for each connection in its own thread."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.settimeout(0.2)
    stop = threading.Event()
    workers: list[threading.Thread] = []

    def one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(DEADLINE)
            handle(conn)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            w = threading.Thread(target=one, args=(conn,), daemon=True)
            w.start()
            workers.append(w)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield lsock.getsockname()
    finally:
        stop.set()
        t.join(DEADLINE)
        for w in workers:
            w.join(DEADLINE)
        lsock.close()


def recv_all(conn: socket.socket, sink: Callable[[bytes], None]) -> int:
    """Read until EOF, feeding ``sink``; returns the byte count."""
    n = 0
    while data := conn.recv(256 * 1024):
        sink(data)
        n += len(data)
    return n


def echo(conn: socket.socket) -> None:
    while data := conn.recv(256 * 1024):
        conn.sendall(data)


def test_round_trip_is_at_least_the_rtt() -> None:
    rtt = 0.05
    with tcp_server(echo) as addr, DelayProxy(target=addr, rtt=rtt) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            times = []
            for i in range(4):
                t = time.perf_counter()
                s.sendall(bytes([i]))
                assert s.recv(1) == bytes([i])
                times.append(time.perf_counter() - t)
        stats = proxy.stats()
    # The first exchange also pays the modelled handshake (one more round trip).
    assert times[0] >= 2 * rtt
    for t in times[1:]:
        assert rtt <= t < rtt + 0.5, times
    assert stats == ProxyStats(connections=1, bytes_up=4, bytes_down=4)


def test_bytes_arrive_intact_and_in_order_both_ways() -> None:
    size = 6 * MIB + 12345
    payload = os.urandom(size)
    server_hash = hashlib.sha256()

    def hashing_echo(conn: socket.socket) -> None:
        while data := conn.recv(256 * 1024):
            server_hash.update(data)
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)  # the proxy forwards EOF after the last byte

    # Small chunks and a small window: many queued pieces, many waits for credit.
    with tcp_server(hashing_echo) as addr, \
            DelayProxy(target=addr, rtt=0.004, window=256 * 1024, chunk=64 * 1024) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE) as s:
            back = hashlib.sha256()

            def send() -> None:
                view = memoryview(payload)
                for i in range(0, size, 100_000):  # odd-sized writes
                    s.sendall(view[i:i + 100_000])
                s.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            got = recv_all(s, back.update)
            sender.join(DEADLINE)
        stats = proxy.stats()
    want = hashlib.sha256(payload).hexdigest()
    assert got == size
    assert server_hash.hexdigest() == want  # client -> server
    assert back.hexdigest() == want  # server -> client
    assert stats == ProxyStats(connections=1, bytes_up=size, bytes_down=size)


def test_window_bounds_one_connections_throughput() -> None:
    rtt, window, size = 0.05, 256 * 1024, 4 * MIB
    received: list[int] = []

    def sink(conn: socket.socket) -> None:
        received.append(recv_all(conn, lambda _: None))
        conn.sendall(b"k")

    with tcp_server(sink) as addr, DelayProxy(target=addr, rtt=rtt, window=window) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE) as s:
            t = time.perf_counter()
            s.sendall(bytes(size))
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b"k"
            elapsed = time.perf_counter() - t
    assert received == [size]
    # At most window/rtt = 5 MiB/s: 16 windows, the last one sent 15 round trips in and
    # delivered half a round trip later (0.775 s), plus the handshake's round trip.
    assert elapsed >= 0.7, elapsed


def test_connections_are_counted_and_stop_closes_them() -> None:
    with tcp_server(echo) as addr:
        proxy = DelayProxy(target=addr, rtt=0.0).start()
        socks = [socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE)
                 for _ in range(3)]
        try:
            for s in socks:
                s.sendall(b"ab")
                assert s.recv(2) == b"ab"
            assert proxy.stats().connections == 3
            proxy.stop()
            for s in socks:  # the proxy closed its side: EOF (or a reset), never a hang
                try:
                    assert s.recv(1) == b""
                except ConnectionResetError:
                    pass
        finally:
            for s in socks:
                s.close()
            proxy.stop()
