"""Fixtures for the server tests: the real server in-process on 127.0.0.1 over a fresh
store, with tokens for two users, and helpers to call it with httpx and curl."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fsmount import fsck
from fsmount.protocol import MIB, Limits
from fsmount.store import Store

from .harness import Running, running_server, start_serve

#: Small limits so that big files and several segments are cheap: 1 MiB makes a file big,
#: 8 parts (4 MiB) fill one upload.
SMALL_LIMITS = Limits(upload_max_fileparts_default=8, upload_max_fileparts_premium=16,
                      big_file_threshold=1 * MIB, part_lifetime=3600.0)


@dataclass
class Srv:
    url: str
    path: Path
    store: Store
    running: Running
    tok_a: str
    tok_b: str
    clock: Any

    def h(self, token: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.tok_a}", **extra}

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)

    def fsck(self) -> list[str]:
        return fsck.check(self.path)


@pytest.fixture
async def srv(tmp_path: Path, manual_clock: Any) -> AsyncIterator[Srv]:
    path = tmp_path / "store"
    store = Store(path, limits=SMALL_LIMITS, clock=manual_clock)
    try:
        async with running_server(store, path, clock=manual_clock) as running:
            tok_a = running.state.auth.add_token("alice")
            tok_b = running.state.auth.add_token("bob")
            yield Srv(running.url, path, store, running, tok_a, tok_b, manual_clock)
    finally:
        store.close()
    assert fsck.check(path) == []


FSMOUNT = [sys.executable, "-m", "fsmount"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FSMOUNT, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str, subprocess.Popen[bytes]]]:
    """`fsmount serve` in a subprocess on a free loopback port: (store dir, URL, process)."""
    store = tmp_path / "store"
    port = free_port()
    store.mkdir(parents=True, exist_ok=True)
    proc, _log = start_serve(store, port)
    try:
        yield store, f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


