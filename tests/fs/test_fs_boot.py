"""Boot integration through the real tools: util-linux ``mount -t fuse.fsmount`` and an
fstab line (``mount -T FSTAB MNT``) reach fsmount through fuse3's ``mount.fuse3``, with
``_netdev``, ``nofail`` and ``x-systemd.*`` accepted; ``umount`` ends the mount; and a
mount under systemd (``$NOTIFY_SOCKET``) reports ``READY=1`` once it answers.

mount(8) clears ``PATH``, so mount.fuse3 finds ``fsmount`` in the shell's default path
(``/usr/local/bin``, ...).  So that the test needs no install on the machine, it runs in a
private mount namespace (``unshare -m``) where a temporary folder holding an ``fsmount``
that runs this worktree's code is bind-mounted on ``/usr/local/bin``; the FUSE mount, its
use and its unmount all happen in that namespace, which ends with the script.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from fs_mounting import DEADLINE, mount_store, populate, wait_until

from fsmount import errors
from fsmount import mount as mount_mod
from fsmount.embedded import EmbeddedRemote
from fsmount.protocol import WINDOW
from fsmount.remote import ROOT_ID


@pytest.fixture(scope="module", params=["embedded"])
def fs_backend(request: pytest.FixtureRequest) -> str:
    """The backends are chosen per test here (a store path or a server URL as SOURCE)."""
    return str(request.param)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "fsmount"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} -m fsmount "$@"\n')
    exe.chmod(0o755)
    return bin_dir


def in_namespace(bin_dir: Path, mnt: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) in a private mount namespace with ``bin_dir`` on /usr/local/bin;
    whatever happens, the mount at ``mnt`` is detached when the script ends."""
    body = textwrap.dedent(f"""\
        set -eu
        trap 'umount -l "$MNT" 2>/dev/null || true' EXIT
        mount --bind "$BIN" /usr/local/bin
        {textwrap.indent(textwrap.dedent(script), "        ").strip()}
        """)
    full_env = {**os.environ, "BIN": str(bin_dir), "MNT": str(mnt),
                "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[2]),
                                                          os.environ.get("PYTHONPATH"))
                                              if p), **env}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", body],
                          capture_output=True, text=True, timeout=DEADLINE * 3, env=full_env,
                          check=False)


def _read_store(store: Path, name: str) -> bytes:
    """A file's bytes straight from the store, once the mount has let go of it."""

    async def main() -> bytes | None:
        try:
            remote = EmbeddedRemote.open(store, exclusive=True)
        except errors.StoreLocked:
            return None
        try:
            node = await remote.lookup(ROOT_ID, name)
            out = b""
            for doc in node.segments:  # small files: one window each
                out += (await remote.get_file(doc.location, 0, WINDOW)).bytes[:doc.size]
            return out
        finally:
            await remote.aclose()

    got: list[bytes] = []

    def ready() -> bool:
        data = trio.run(main)
        if data is not None:
            got.append(data)
        return bool(got)

    wait_until(ready, "the mount to release the store")
    return got[0]


def test_mount_t_fuse_fsmount_and_umount(tmp_path: Path, fake_bin: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    populate(store, {"hello.txt": b"hello from the store\n"})
    res = in_namespace(fake_bin, mnt, """\
        mount -t fuse.fsmount "$STORE" "$MNT" \\
            -o uid=1234,_netdev,nofail,x-systemd.automount,x-systemd.idle-timeout=60
        echo "uid=$(stat -c %u "$MNT/hello.txt")"
        cat "$MNT/hello.txt"
        echo "written by mount(8)" > "$MNT/new.txt"
        grep -q "fuse.fsmount" /proc/self/mounts && echo "type=fuse.fsmount"
        umount "$MNT"
        echo unmounted
        """, STORE=str(store))
    assert res.returncode == 0, res.stderr + res.stdout
    assert "uid=1234" in res.stdout
    assert "hello from the store" in res.stdout
    assert "type=fuse.fsmount" in res.stdout and "unmounted" in res.stdout
    assert "Traceback" not in res.stderr
    assert _read_store(store, "new.txt") == b"written by mount(8)\n"
    assert not mount_mod.is_mounted(str(mnt))


def test_an_fstab_line_and_a_server_url(tmp_path: Path, fake_bin: Path) -> None:
    from server.harness import serve_subprocess

    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    populate(store, {"a.txt": b"over http\n"})
    with serve_subprocess(store) as (url, token_file):
        fstab = tmp_path / "fstab"
        fstab.write_text(
            "# a comment\n"
            f"{url} {mnt} fuse.fsmount _netdev,nofail,noauto,"
            f"x-systemd.requires=network-online.target,token_file={token_file},"
            f"file_mode=0600 0 0\n")
        res = in_namespace(fake_bin, mnt, """\
            mount -T "$FSTAB" "$MNT"
            stat -c 'mode=%a' "$MNT/a.txt"
            cat "$MNT/a.txt"
            umount "$MNT"
            """, FSTAB=str(fstab))
    assert res.returncode == 0, res.stderr + res.stdout
    assert "mode=600" in res.stdout and "over http" in res.stdout


def test_the_helper_names_a_bad_command_line(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "fsmount.mounthelper", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and "SOURCE and MOUNTPOINT" in res.stderr


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock, path
    finally:
        sock.close()


def test_sd_notify_ready_after_the_mount_answers(tmp_path: Path,
                                                 notify_socket: tuple[socket.socket, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = notify_socket
    populate(tmp_path / "store", {"f": b"x"})
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    sock.settimeout(DEADLINE)
    mnt = tmp_path / "mnt"
    with mount_store(tmp_path / "store", mnt):
        message = sock.recv(4096).decode()
        # Sent only once the mount answered: it is in the mount table already.
        assert mount_mod.is_mounted(str(mnt))
        assert "READY=1" in message.splitlines()
        assert (mnt / "f").read_bytes() == b"x"
    sock.settimeout(DEADLINE)
    assert "STOPPING=1" in sock.recv(4096).decode()


def test_tools_are_there() -> None:
    # What the boot tests drive: util-linux mount/umount/unshare and fuse3's helper.
    for tool in ("mount", "umount", "unshare", "mount.fuse3"):
        assert shutil.which(tool) or os.path.exists(f"/sbin/{tool}"), tool
