"""A 300 MB random file written through the mount with cp and with dd, read back by
SHA-256 before and after unmount and remount (stored in the mount's 32 MiB segments); and a
file larger than one upload may hold
(a store limited to 4 parts per upload) written and read back through the mount.  The
store's fsck finds nothing wrong afterwards."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest
import trio
from fs_mounting import mount_store

from fsmount.embedded import EmbeddedRemote
from fsmount.fsck import check as fsck
from fsmount.protocol import Limits
from fsmount.remote import ROOT_ID
from fsmount.upload import PART_SIZE, STREAM_SEGMENT_PARTS

MIB = 1024 * 1024
SIZE = 300 * 1000 * 1000


def segment_sizes(store: Path, name: str, limits: Limits | None = None) -> list[int]:
    async def sizes() -> list[int]:
        remote = EmbeddedRemote.open(store, limits=limits)
        try:
            node = await remote.lookup(ROOT_ID, name)
            return [d.size for d in node.segments]
        finally:
            await remote.aclose()

    return trio.run(sizes)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def run(*args: str | os.PathLike[str]) -> None:
    res = subprocess.run([os.fspath(a) for a in args], capture_output=True, timeout=600,
                         check=False)
    assert res.returncode == 0, res.stderr.decode(errors="replace")


def test_cp_and_dd_of_300_mb_survive_remount(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        rng = random.Random(300)
        left = SIZE
        while left:
            block = rng.randbytes(min(8 * MIB, left))
            h.update(block)
            f.write(block)
            left -= len(block)
    want = h.hexdigest()
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mount_store(store, mnt) as mp:
        run("cp", src, mp.mnt / "cp.bin")
        run("dd", f"if={src}", f"of={mp.mnt / 'dd.bin'}", "bs=1M", "status=none")
        assert os.stat(mp.mnt / "cp.bin").st_size == SIZE
        assert sha256_file(mp.mnt / "cp.bin") == want
        assert sha256_file(mp.mnt / "dd.bin") == want
    assert fsck(store) == []
    # Streamed through the mount: segments of 64 parts, each finalized while the file grew.
    seg = STREAM_SEGMENT_PARTS * PART_SIZE
    for name in ("cp.bin", "dd.bin"):
        assert segment_sizes(store, name) == [seg] * (SIZE // seg) + [SIZE % seg]
    with mount_store(store, mnt) as mp:
        assert sha256_file(mp.mnt / "cp.bin") == want
        assert sha256_file(mp.mnt / "dd.bin") == want
    assert fsck(store) == []


def test_file_larger_than_one_upload_is_several_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    # Uploads of at most 4 parts (2 MiB), for the mount subprocess too (it inherits this).
    monkeypatch.setenv("FSMOUNT_STORE_LIMITS", "upload_max_fileparts_default=4")
    data = random.Random(4).randbytes(9 * MIB + 4321)
    with mount_store(store, mnt) as mp:
        (mp.mnt / "seg.bin").write_bytes(data)
        assert (mp.mnt / "seg.bin").read_bytes() == data
        with open(mp.mnt / "seg.bin", "r+b") as f:  # a random write re-uploads it all
            f.seek(3 * MIB)
            f.write(b"X" * 10)
        data = data[: 3 * MIB] + b"X" * 10 + data[3 * MIB + 10 :]
    assert fsck(store) == []
    sizes = segment_sizes(store, "seg.bin", Limits(upload_max_fileparts_default=4))
    assert sizes == [2 * MIB] * 4 + [len(data) - 8 * MIB]
    with mount_store(store, mnt) as mp:
        assert (mp.mnt / "seg.bin").read_bytes() == data
