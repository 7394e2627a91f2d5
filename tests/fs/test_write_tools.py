"""Writes through the real mount with ordinary tools: rsync -a there and back, cp -a,
tar c/x inside the mount, git, sqlite3, sed -i, echo >>, truncate -s, reads of a file
while it is being written, and 8 parallel writers with 8 readers.  The store's fsck runs
after the mount is gone and must find nothing wrong."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fs_mounting import MountProc, mount_store

from fsmount.fsck import check as fsck

MIB = 1024 * 1024
TREE_FILES = 2000


def sh(*args: str | os.PathLike[str], cwd: Path | None = None, input: bytes | None = None,
       env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run([os.fspath(a) for a in args], capture_output=True, cwd=cwd, input=input,
                         env=env, timeout=timeout, check=False)
    assert res.returncode == 0, (
        f"{' '.join(map(str, args))} exited {res.returncode}: {res.stderr.decode(errors='replace')}"
    )
    return res


@pytest.fixture(scope="module")
def rw(tmp_path_factory: pytest.TempPathFactory, fs_backend: str) -> Iterator[MountProc]:
    base = tmp_path_factory.mktemp("write")
    with mount_store(base / "store", base / "mnt") as mp:
        yield mp
    assert fsck(base / "store") == []


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 mixed files: empty, text, binary up to 2 MiB, executables, symlinks, old mtimes."""
    root = tmp_path_factory.mktemp("tree") / "src"
    rng = random.Random(42)
    dirs = [root / f"d{i:02d}" / f"s{j}" for i in range(20) for j in range(2)]
    for d in dirs:
        d.mkdir(parents=True)
    for i in range(TREE_FILES):
        d = dirs[i % len(dirs)]
        kind = rng.random()
        path = d / f"f{i:04d}"
        if i % 100 == 99:
            os.symlink(f"../s0/f{(i - 1) % TREE_FILES:04d}", path)
            continue
        if kind < 0.05:
            data = b""
        elif kind < 0.6:
            data = (f"line {i} " * rng.randint(1, 200) + "\n").encode()
        elif kind < 0.9:
            data = rng.randbytes(rng.randint(2_000, 64_000))
        elif kind < 0.99:
            data = rng.randbytes(rng.randint(64_000, 300_000))
        else:
            data = rng.randbytes(rng.randint(1 * MIB, 2 * MIB))
        path.write_bytes(data)
        os.chmod(path, 0o755 if i % 7 == 0 else 0o644)
        t = 1_600_000_000 + i * 61
        os.utime(path, (t, t))
    return root


def describe(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: kind, permission bits, size, mtime (s), content hash."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, int(st.st_mtime), digest)
    return out


def test_rsync_a_there_and_back(rw: MountProc, tree: Path, tmp_path: Path,
                                fs_backend: str) -> None:
    """The whole 2,000-file tree on the embedded backend; through ``fsmount serve`` (about
    45 ms per small file over loopback HTTP) a quarter of it, d00–d04 (500 files), to keep
    the suite's time in bounds — the same code path, fewer repetitions."""
    src = tree
    if fs_backend == "server":
        src = tmp_path / "quarter"
        src.mkdir()
        for d in sorted(tree.iterdir())[:5]:
            sh("cp", "-a", d, src / d.name)
    dest = rw.mnt / "rsync"
    sh("rsync", "-a", f"{src}/", f"{dest}/")
    back = tmp_path / "back"
    sh("rsync", "-a", f"{dest}/", f"{back}/")
    sh("diff", "-r", "--no-dereference", src, back)
    want = describe(src)
    files = len([v for v in want.values() if v[0] != "dir"])
    assert files == (TREE_FILES if fs_backend != "server" else TREE_FILES // 4)
    assert describe(back) == want
    assert describe(dest) == want
    # A second run finds nothing to transfer: sizes and mtimes stuck.
    res = sh("rsync", "-a", "--itemize-changes", f"{src}/", f"{dest}/")
    assert res.stdout.strip() == b""


def test_tar_c_and_x_inside_the_mount(rw: MountProc, tree: Path) -> None:
    sh("cp", "-a", tree / "d03", rw.mnt / "tarsrc")
    assert describe(rw.mnt / "tarsrc") == describe(tree / "d03")
    sh("tar", "cf", rw.mnt / "a.tar", "-C", rw.mnt, "tarsrc")
    listing = sh("tar", "tf", rw.mnt / "a.tar").stdout.decode().split()
    assert len(listing) == len(describe(tree / "d03")) + 1
    (rw.mnt / "untar").mkdir()
    sh("tar", "xf", rw.mnt / "a.tar", "-C", rw.mnt / "untar")
    assert describe(rw.mnt / "untar" / "tarsrc") == describe(tree / "d03")


def test_git_init_add_commit_log_gc(rw: MountProc, tmp_path: Path) -> None:
    repo = rw.mnt / "repo"
    repo.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}

    def git(*args: str) -> subprocess.CompletedProcess[bytes]:
        return sh("git", "-c", "safe.directory=*", *args, cwd=repo, env=env)

    git("init", "-q")
    rng = random.Random(7)
    for i in range(40):
        (repo / f"file{i}.txt").write_text(f"content {i}\n" * rng.randint(1, 500))
    (repo / "blob.bin").write_bytes(rng.randbytes(2 * MIB))
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    for i in range(0, 40, 3):
        with open(repo / f"file{i}.txt", "a") as f:
            f.write("more\n")
    git("commit", "-q", "-a", "-m", "second")
    assert git("log", "--oneline").stdout.decode().count("\n") == 2
    git("gc", "-q")
    assert list((repo / ".git" / "objects" / "pack").glob("*.pack"))
    git("fsck", "--full", "--strict")
    assert git("status", "--porcelain").stdout == b""
    clone = tmp_path / "clone"
    sh("git", "-c", "safe.directory=*", "clone", "-q", repo, clone, env=env)
    assert (clone / "blob.bin").read_bytes() == (repo / "blob.bin").read_bytes()
    assert (clone / "file3.txt").read_text().endswith("more\n")


def test_sqlite3_10000_inserts_integrity(rw: MountProc) -> None:
    db = rw.mnt / "db.sqlite"
    script = ["CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, payload BLOB);", "BEGIN;"]
    script += [f"INSERT INTO t(name, payload) VALUES ('row {i}', randomblob({i % 300}));"
               for i in range(10_000)]
    script.append("COMMIT;")
    # A few autocommit transactions too: each one is its own journal + fsync cycle.
    script += [f"UPDATE t SET name = 'changed {i}' WHERE id = {i * 97 + 1};" for i in range(20)]
    sh("sqlite3", db, input="\n".join(script).encode())
    out = sh("sqlite3", db, input=b"PRAGMA integrity_check;\nSELECT count(*), "
             b"sum(length(payload)) FROM t;\nSELECT name FROM t WHERE id = 98;\n").stdout
    lines = out.decode().split()
    assert lines[0] == "ok"
    # randomblob(0) is one byte long.
    assert lines[1] == f"10000|{sum(max(1, i % 300) for i in range(10_000))}"
    assert out.decode().rstrip().endswith("changed 1")
    assert not (rw.mnt / "db.sqlite-journal").exists()


def test_sed_in_place(rw: MountProc) -> None:
    f = rw.mnt / "sed.txt"
    f.write_text("".join(f"foo {i}\n" for i in range(5000)))
    sh("sed", "-i", "s/foo/bar/", f)
    assert f.read_text() == "".join(f"bar {i}\n" for i in range(5000))


def test_echo_append_twice(rw: MountProc) -> None:
    f = rw.mnt / "log.txt"
    sh("sh", "-c", f"echo one >> '{f}'; echo two >> '{f}'")
    assert f.read_bytes() == b"one\ntwo\n"
    # Appends to an existing file larger than a part keep what was there.
    big = rw.mnt / "big.log"
    head = random.Random(5).randbytes(3 * MIB + 5)
    big.write_bytes(head)
    sh("sh", "-c", f"echo one >> '{big}'; echo two >> '{big}'")
    assert big.read_bytes() == head + b"one\ntwo\n"


def test_truncate_both_ways(rw: MountProc) -> None:
    f = rw.mnt / "trunc.bin"
    data = random.Random(9).randbytes(5 * MIB + 3)
    f.write_bytes(data)
    sh("truncate", "-s", "1M", f)
    assert f.stat().st_size == MIB
    sh("truncate", "-s", "3M", f)
    assert f.read_bytes() == data[:MIB] + bytes(2 * MIB)
    sh("truncate", "-s", "0", f)
    assert f.read_bytes() == b""
    sh("truncate", "-s", "10K", rw.mnt / "fresh.bin")
    assert (rw.mnt / "fresh.bin").read_bytes() == bytes(10 * 1024)


def test_reads_see_what_is_being_written(rw: MountProc) -> None:
    f = rw.mnt / "growing.bin"
    data = random.Random(11).randbytes(3 * MIB + 17)
    fd = os.open(f, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data[: 2 * MIB])
        # Same handle.
        assert os.pread(fd, 100, 2 * MIB - 50) == data[2 * MIB - 50 : 2 * MIB]
        # Another handle, while the first is still open for writing.
        with open(f, "rb") as other:
            assert other.read() == data[: 2 * MIB]
        os.write(fd, data[2 * MIB :])
        with open(f, "rb") as other:
            assert other.read() == data
    finally:
        os.close(fd)
    assert f.read_bytes() == data


def test_eight_parallel_writers_and_readers(rw: MountProc) -> None:
    d = rw.mnt / "par"
    d.mkdir()
    stable = {}
    for i in range(8):
        content = random.Random(100 + i).randbytes(MIB + i * 1000)
        (d / f"stable{i}").write_bytes(content)
        stable[i] = hashlib.sha256(content).hexdigest()
    written = {i: random.Random(200 + i).randbytes(4 * MIB + i * 4097) for i in range(8)}
    done = threading.Event()

    def writer(i: int) -> None:
        with open(d / f"w{i}", "wb", buffering=0) as f:
            data = written[i]
            for pos in range(0, len(data), 64 * 1024):
                f.write(data[pos : pos + 64 * 1024])

    def reader(i: int) -> int:
        rounds = 0
        while rounds < 200 and (rounds < 2 or not done.is_set()):
            got = hashlib.sha256((d / f"stable{i}").read_bytes()).hexdigest()
            assert got == stable[i]
            # A file still being written by another thread: what a reader sees is always
            # a prefix of what the writer writes (never garbage, never a hole).
            try:
                growing = (d / f"w{(i + 1) % 8}").read_bytes()
            except FileNotFoundError:
                growing = b""
            assert growing == written[(i + 1) % 8][: len(growing)]
            rounds += 1
        return rounds

    with ThreadPoolExecutor(16) as pool:
        readers = [pool.submit(reader, i) for i in range(8)]
        writers = [pool.submit(writer, i) for i in range(8)]
        for w in writers:
            w.result(timeout=300)
        done.set()
        assert all(r.result(timeout=300) >= 2 for r in readers)
    for i in range(8):
        assert (d / f"w{i}").read_bytes() == written[i]
