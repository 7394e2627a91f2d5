"""Several ``fsmount serve`` nodes of one store, for the client's failover tests.

:class:`Cluster` gives the client a list of URLs and kills the node it is using:

* ``standby`` -- today's store (SQLite metadata: one serving process at a time, see
  fsmount/store/locks.py): node 0 serves; node 1's URL is in the client's list but nothing
  listens there until node 0 is SIGKILLed, then a new ``fsmount serve`` starts on the same
  store directory at node 1's port.
* ``postgres`` -- two live nodes over one PostgreSQL database and one S3 bucket
  (tests/engines.py), each with a directory of its own holding a copy of the first's token
  database (as docs/deploy.md deploys them); killing node 0 leaves node 1.  Listed in
  :data:`MODES` once the PostgreSQL metadata backend (``fsmount/store/pg_meta.py``) is in
  the tree.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from fsmount import fsck
from fsmount.store import Store

from .harness import start_serve

MODES = ["standby"] + (["postgres"] if importlib.util.find_spec("fsmount.store.pg_meta")
                       else [])
DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """Nodes of one store on loopback ports (see the module docstring)."""

    def __init__(self, mode: str, tmp: Path, request: Any = None) -> None:
        self.mode = mode
        #: Node 0's store directory (the standby's too; in postgres mode node 1 has its own).
        self.store = tmp / "store"
        self.dirs = [self.store, self.store if mode == "standby" else tmp / "node-b"]
        self.ports = [free_port(), free_port()]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.procs: list[subprocess.Popen[bytes] | None] = [None, None]
        self.extra: list[str] = []
        if mode == "postgres":
            pg_url = request.getfixturevalue("pg_url")
            s3_url = request.getfixturevalue("s3_url")
            self.extra = ["--metadata", pg_url, "--content", s3_url]
            Store(self.store, metadata=pg_url, content=s3_url).close()  # type: ignore[call-arg]
        else:
            subprocess.run([sys.executable, "-m", "fsmount", "init", "--store",
                            str(self.store)], capture_output=True, check=True, timeout=60)
        token = subprocess.run([sys.executable, "-m", "fsmount", "token", "add", "--store",
                                str(self.store), "default"], capture_output=True, text=True,
                               check=True, timeout=60).stdout.strip()
        if self.dirs[1] != self.store:
            # The second node's directory gets a copy of the first's token database.
            self.dirs[1].mkdir()
            with sqlite3.connect(self.store / "auth.sqlite") as src, \
                    sqlite3.connect(self.dirs[1] / "auth.sqlite") as dst:
                src.backup(dst)
        self.token_file = tmp / "token"
        self.token_file.write_text(token + "\n")
        self.token = token

    @property
    def server_args(self) -> list[str]:
        """``--server`` options naming every node, as a client is given them."""
        return [a for url in self.urls for a in ("--server", url)]

    def start(self, i: int) -> None:
        self.procs[i], _ = start_serve(self.dirs[i], self.ports[i], *self.extra)

    def start_serving(self) -> None:
        """Bring the cluster up: node 0 (standby), or both (postgres)."""
        self.start(0)
        if self.mode == "postgres":
            self.start(1)

    def kill_serving(self) -> None:
        """SIGKILL node 0 (the one the client uses first)."""
        proc = self.procs[0]
        assert proc is not None and proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE)

    def take_over(self) -> None:
        """After :meth:`kill_serving`: standby starts node 1 on the store (postgres: node 1
        serves already)."""
        if self.mode == "standby":
            self.start(1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=DEADLINE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=DEADLINE)

    def fsck(self) -> list[str]:
        """The store's problems (the nodes stopped first)."""
        return fsck.check(self.store)
