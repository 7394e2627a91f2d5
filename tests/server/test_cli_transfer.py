"""``fsmount put``/``get``/``rm``/``mkdir``/``mv`` through the real CLI in a subprocess,
against the real server in-process (whose remotes count the parts they receive).

* an interrupted put (SIGKILL once some parts are saved) resumes: the second run sends
  exactly the parts the first had not recorded as saved;
* the same bytes under a new name send no parts (dedup by SHA-256 + size);
* ``put -r`` / ``get -r`` round-trip a tree (SHA-256 of every file, symlinks);
* rm, mkdir -p, mv without a mount.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from fsmount.embedded import EmbeddedRemote
from fsmount.protocol import MIB
from fsmount.remote import ROOT_ID
from fsmount.store import Store

from .conftest import SMALL_LIMITS
from .harness import running_server

#: Each part the server saves waits this long, so that a kill lands mid-file.
PART_DELAY = 0.08


class Counter:
    def __init__(self) -> None:
        self.parts = 0


def counting_factory(counter: Counter) -> Any:
    """Remotes over the real store that count (and pace) the parts they save."""
    limiter = trio.CapacityLimiter(8)

    class CountingRemote(EmbeddedRemote):
        async def save_file_part(self, file_id: int, file_part: int, data: bytes) -> bool:
            counter.parts += 1
            await trio.sleep(PART_DELAY)
            return await super().save_file_part(file_id, file_part, data)

        async def save_big_file_part(self, file_id: int, file_part: int,
                                     file_total_parts: int, data: bytes) -> bool:
            counter.parts += 1
            await trio.sleep(PART_DELAY)
            return await super().save_big_file_part(file_id, file_part, file_total_parts, data)

    def make(store: Any, user_id: int) -> EmbeddedRemote:
        return CountingRemote(store, user_id, limiter=limiter)

    return make


def cli(url: str, token_file: Path, state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fsmount", *args, "--server", url, "--token-file",
            str(token_file), *(["--state-dir", str(state)] if args[0] == "put" else [])]


async def run_cli(cmd: list[str]) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(120):
        return await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                      check=False)


def journal_parts(state: Path) -> int:
    total = 0
    for f in (state / "puts").glob("*.jsonl"):
        total += sum(1 for line in f.read_text().splitlines() if '"part"' in line)
    return total


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_interrupted_put_resumes_and_same_bytes_send_nothing(tmp_path: Path) -> None:
    counter = Counter()
    path = tmp_path / "store"
    store = Store(path, limits=SMALL_LIMITS)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(6 * MIB))  # 12 parts, two balanced segments of 6 parts
    total_parts = 12
    state = tmp_path / "state"
    try:
        async with running_server(store, path, remote_factory=counting_factory(counter)) as srv:
            token = tmp_path / "token"
            token.write_text(srv.state.auth.add_token("alice"))
            cmd = cli(srv.url, token, state, "put", "--parallel", "1", str(src), "/big.bin")
            proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL)
            try:
                with trio.fail_after(60):
                    while journal_parts(state) < 3:
                        assert proc.poll() is None, "put ended before it was interrupted"
                        await trio.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                with trio.fail_after(30):
                    await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            saved = journal_parts(state)
            assert 3 <= saved < total_parts
            first_run = counter.parts
            res = await run_cli(cmd)
            assert res.returncode == 0, res.stderr
            # Only the parts the first run had not saved went again.
            assert counter.parts - first_run == total_parts - saved
            assert not list((state / "puts").glob("*.jsonl")), "journal left after success"
            # Byte for byte.
            out = tmp_path / "back.bin"
            res = await run_cli(cli(srv.url, token, state, "get", "/big.bin", str(out)))
            assert res.returncode == 0, res.stderr
            assert sha(out) == sha(src)
            # The same bytes under a new name: no part is sent.
            before = counter.parts
            res = await run_cli(cli(srv.url, token, state, "put", str(src), "/again.bin"))
            assert res.returncode == 0, res.stderr
            assert counter.parts == before
            out2 = tmp_path / "again.bin"
            res = await run_cli(cli(srv.url, token, state, "get", "/again.bin", str(out2)))
            assert res.returncode == 0, res.stderr
            assert sha(out2) == sha(src)
    finally:
        store.close()


async def test_recursive_round_trip_and_namespace_verbs(tmp_path: Path) -> None:
    counter = Counter()
    path = tmp_path / "store"
    store = Store(path, limits=SMALL_LIMITS)
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "empty").mkdir()
    files = {
        "top.txt": b"hello\n",
        "a/one.bin": os.urandom(3 * MIB + 17),
        "a/b/two.bin": os.urandom(1000),
        "a/b/zero": b"",
    }
    for rel, data in files.items():
        (tree / rel).write_bytes(data)
    (tree / "a" / "link").symlink_to("one.bin")
    state = tmp_path / "state"
    try:
        async with running_server(store, path, remote_factory=counting_factory(counter)) as srv:
            token = tmp_path / "token"
            token.write_text(srv.state.auth.add_token("alice"))

            async def ok(*args: str) -> str:
                res = await run_cli(cli(srv.url, token, state, *args))
                assert res.returncode == 0, res.stderr
                return res.stdout.decode()

            await ok("put", "-r", str(tree), "/dest")
            back = tmp_path / "back"
            await ok("get", "-r", "/dest", str(back))
            for rel, data in files.items():
                assert hashlib.sha256((back / rel).read_bytes()).hexdigest() == \
                    hashlib.sha256(data).hexdigest(), rel
            assert os.readlink(back / "a" / "link") == "one.bin"
            assert (back / "empty").is_dir()
            # Into an existing folder, as cp -r: LOCAL/dest; again, it refuses to overwrite
            # without --force, and works with it.
            await ok("get", "-r", "/dest", str(back))
            assert (back / "dest" / "a" / "b" / "two.bin").read_bytes() == files["a/b/two.bin"]
            res = await run_cli(cli(srv.url, token, state, "get", "-r", "/dest", str(back)))
            assert res.returncode == 1 and b"exists" in res.stderr
            await ok("get", "-r", "--force", "/dest", str(back))
            # namespace verbs
            await ok("mkdir", "-p", "/x/y/z")
            await ok("mv", "/dest/top.txt", "/x/y")
            await ok("mv", "/x/y/top.txt", "/x/renamed.txt")
            listing = await ok("ls", "/x")
            assert "renamed.txt" in listing and "y" in listing
            res = await run_cli(cli(srv.url, token, state, "rm", "/x"))
            assert res.returncode == 1 and b"rm -r" in res.stderr
            await ok("rm", "-r", "/x", "/dest")
            alice = store.ensure_user("alice")
            assert [n.name for n in store.list_folder(alice, ROOT_ID).entries] == []
            res = await run_cli(cli(srv.url, token, state, "mkdir", "/no/such"))
            assert res.returncode == 1 and b"Traceback" not in res.stderr
    finally:
        store.close()


def test_embedded_put_dedups_and_resumes_state(tmp_path: Path) -> None:
    """The embedded store: same bytes twice make one document; the journal is gone after."""
    store_dir = tmp_path / "store"
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fsmount", *args], capture_output=True,
                              text=True, timeout=120, env=env, check=False)

    assert run("init", "--store", str(store_dir)).returncode == 0
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(2 * MIB + 5))
    for name in ("/one", "/two"):
        res = run("put", str(src), name, "--store", str(store_dir), "--state-dir", str(state))
        assert res.returncode == 0, res.stderr
    assert not list((state / "puts").glob("*.jsonl"))
    store = Store(store_dir)
    try:
        uid = store.ensure_user("default")
        one = store.lookup(uid, ROOT_ID, "one")
        two = store.lookup(uid, ROOT_ID, "two")
        assert [d.id for d in one.segments] == [d.id for d in two.segments]
    finally:
        store.close()
