"""A model-based random test (fsx-style, fixed seeds, bounded op count) of writes,
truncates, renames, unlinks and reads through the real mount, against an in-memory model.

Each run applies random operations to a handful of files in two folders: whole-file
sequential writes (the streaming path), writes at random offsets on an existing file or
past its end (staging), appends, truncates, renames (over existing files too, across
folders), unlinks, and sessions that keep one handle open for a mix of writes and reads
(including a seek back after sequential writes).  Every read is compared with the model;
at the end every file is compared, then again after unmount and remount, and the store's
fsck must find nothing wrong.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from fs_mounting import mount_store

from fsmount.fsck import check as fsck

KIB = 1024
MIB = 1024 * KIB
MAX_SIZE = 3 * MIB
NAMES = ["a", "b", "c", "sub/d", "sub/e"]


class Run:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.model: dict[str, bytearray] = {}
        self.log: list[str] = []

    def path(self, name: str) -> Path:
        return self.root / name

    def data(self, limit: int) -> bytes:
        n = self.rng.choice([1, 17, 4 * KIB, 100 * KIB, 512 * KIB + 3, MIB + 1])
        return self.rng.randbytes(min(n, max(1, limit)))

    def check_read(self, name: str, fd: int | None = None) -> None:
        model = self.model[name]
        off = self.rng.randrange(0, len(model) + 10)
        n = self.rng.choice([1, 4 * KIB, 200 * KIB, 2 * MIB])
        if fd is None:
            with open(self.path(name), "rb") as f:
                f.seek(off)
                got = f.read(n)
        else:
            got = os.pread(fd, n, off)
        assert got == bytes(model[off : off + n]), f"{name} @{off}+{n} after {self.log[-5:]}"

    def step(self) -> None:
        name = self.rng.choice(NAMES)
        exists = name in self.model
        op = self.rng.random()
        if not exists or op < 0.15:
            self.log.append(f"write_new {name}")
            data = self.rng.randbytes(self.rng.choice([0, 100, 300 * KIB, MIB + 5, 2 * MIB]))
            with open(self.path(name), "wb") as f:
                for pos in range(0, len(data), 128 * KIB):
                    f.write(data[pos : pos + 128 * KIB])
            self.model[name] = bytearray(data)
        elif op < 0.35:
            m = self.model[name]
            off = self.rng.randrange(0, len(m) + 200 * KIB)
            data = self.data(MAX_SIZE - off)
            self.log.append(f"pwrite {name} @{off}+{len(data)}")
            fd = os.open(self.path(name), os.O_WRONLY)
            try:
                assert os.pwrite(fd, data, off) == len(data)
            finally:
                os.close(fd)
            self._apply_write(m, off, data)
        elif op < 0.45:
            m = self.model[name]
            data = self.data(MAX_SIZE - len(m))
            self.log.append(f"append {name} +{len(data)}")
            with open(self.path(name), "ab") as f:
                f.write(data)
            m += data
        elif op < 0.55:
            size = self.rng.randrange(0, MAX_SIZE)
            self.log.append(f"truncate {name} {size}")
            os.truncate(self.path(name), size)
            m = self.model[name]
            if size < len(m):
                del m[size:]
            else:
                m.extend(bytes(size - len(m)))
        elif op < 0.65:
            dest = self.rng.choice([n for n in NAMES if n != name])
            self.log.append(f"rename {name} -> {dest}")
            os.rename(self.path(name), self.path(dest))
            self.model[dest] = self.model.pop(name)
        elif op < 0.7:
            self.log.append(f"unlink {name}")
            os.unlink(self.path(name))
            del self.model[name]
            with pytest.raises(FileNotFoundError):
                os.stat(self.path(name))
        elif op < 0.8:
            self.session(name)
        else:
            self.log.append(f"read {name}")
            self.check_read(name)

    def session(self, name: str) -> None:
        """One handle, several operations, checked through the same handle."""
        truncate = self.rng.random() < 0.5
        self.log.append(f"session {name} trunc={truncate}")
        flags = os.O_RDWR | (os.O_TRUNC if truncate else 0)
        fd = os.open(self.path(name), flags)
        m = self.model[name]
        if truncate:
            del m[:]
        try:
            for _ in range(self.rng.randint(2, 6)):
                kind = self.rng.random()
                if kind < 0.4:
                    # Sequential at the current end, as a streaming writer does.
                    data = self.data(MAX_SIZE - len(m))
                    assert os.pwrite(fd, data, len(m)) == len(data)
                    m += data
                elif kind < 0.7:
                    off = self.rng.randrange(0, len(m) + 50 * KIB)
                    data = self.data(MAX_SIZE - off)
                    assert os.pwrite(fd, data, off) == len(data)
                    self._apply_write(m, off, data)
                elif kind < 0.8:
                    size = self.rng.randrange(0, MAX_SIZE)
                    os.ftruncate(fd, size)
                    if size < len(m):
                        del m[size:]
                    else:
                        m.extend(bytes(size - len(m)))
                else:
                    self.check_read(name, fd)
                assert os.fstat(fd).st_size == len(m)
        finally:
            os.close(fd)

    @staticmethod
    def _apply_write(m: bytearray, off: int, data: bytes) -> None:
        if off > len(m):
            m.extend(bytes(off - len(m)))
        m[off : off + len(data)] = data

    def verify_all(self) -> None:
        present = set()
        for base in (self.root, self.root / "sub"):
            for entry in os.listdir(base):
                p = base / entry
                if p.is_file():
                    present.add(str(p.relative_to(self.root)))
        assert present == set(self.model)
        for name, m in self.model.items():
            assert self.path(name).read_bytes() == bytes(m), f"{name} after {self.log[-8:]}"
            assert os.stat(self.path(name)).st_size == len(m)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_operations_match_the_model(tmp_path: Path, seed: int) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mount_store(store, mnt) as mp:
        root = mp.mnt / "model"
        (root / "sub").mkdir(parents=True)
        run = Run(root, seed)
        for _ in range(150):
            run.step()
        run.verify_all()
        # A hard link to one of the files: the same content under both names.
        first = run.path(next(iter(run.model)))
        os.link(first, root / "hardlink")
        assert (root / "hardlink").read_bytes() == first.read_bytes()
        assert os.stat(first).st_nlink == 2
        os.unlink(root / "hardlink")
    assert fsck(store) == []
    with mount_store(store, mnt) as mp:
        run.root = mp.mnt / "model"
        run.verify_all()
    assert fsck(store) == []
