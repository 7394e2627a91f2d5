#!/usr/bin/env python3
"""Benchmark: embedded-store upload and getFile throughput against the raw disk.

For one file of ``--size`` bytes (default 1 GiB) it measures, interleaved in the same run
(the machine is shared, so only side-by-side ratios mean much):

* raw write: the same bytes written to one file in 512 KiB writes, then fsync;
* store upload: saveBigFilePart through EmbeddedRemote with ``--inflight`` parts in flight
  (512 KiB parts), then finalize (upload_media) and create_file;
* raw read: the file read back in 1 MiB reads;
* raw write + hashes: the raw write that also computes the digests the store keeps
  (SHA-256, MD5, 128 KiB block SHA-256s): the floor for any hashing store;
* store read: getFile of every 1 MiB window through EmbeddedRemote, one at a time and
  with ``--inflight`` requests outstanding (as the filesystem's read-ahead does).

Before each read the files' pages are dropped from the page cache (posix_fadvise
DONTNEED), so reads come from the disk for both.  Prints MB/s and the ratio store/raw.

    python3 scripts/bench_store.py --size 64M     # a quick run
    python3 scripts/bench_store.py                # the 1 GiB figure of docs/performance.md

With ``--content URL`` it compares content backends instead, side by side in one run:
the store with its content in the local directory against the same store with its content
at ``URL`` (``s3://BUCKET/PREFIX?endpoint=...``, credentials in AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY), or ``--content swift`` to start the tests' throwaway Swift + s3api
(tests/engines.py) on 127.0.0.1 for the run: upload of ``--size`` bytes, getFile of it
(one at a time and ``--inflight`` at once) and ``--small`` small files (putFile of 4 KiB,
then a read of each).

    python3 scripts/bench_store.py --content swift --size 64M --small 200

With ``--metadata URL`` (or ``--metadata postgres``: a throwaway cluster of tests/engines.py)
it compares metadata backends, side by side per round: SQLite, PostgreSQL, and PostgreSQL
without its cross-node write lock (unsafe with several nodes: it prices the lock) --
microseconds per mkdir, create, rename, lookup and listed entry, and ``--small`` 4 KiB
files put and read per second (content in the store directory for all); then
``--threads`` threads making metadata calls at once through one node, two nodes, and two
nodes without the lock (calls per second).

    python3 scripts/bench_store.py --metadata postgres --ops 500 --small 200 --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from fsmount.cli_common import parse_size
from fsmount.embedded import EmbeddedRemote
from fsmount.protocol import KIB, MIB, Limits
from fsmount.remote import ROOT_ID, InputFileBig
from fsmount.store.s3content import parse_s3_url

PART = 512 * 1024


def make_parts(size: int, salt: int = 0) -> list[bytes]:
    # Distinct content per part and per round (no accidental dedup), cheap to generate.
    pool = os.urandom(PART + 4096)
    parts = []
    for i in range(0, size, PART):
        n = min(PART, size - i)
        k = (i // PART) % 4096
        head = ((salt << 40) | (i // PART)).to_bytes(8, "little")
        parts.append(head + pool[k : k + n - 8] if n > 8 else pool[:n])
    return parts


def drop_cache(paths: list[Path]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def raw_write(path: Path, parts: list[bytes]) -> float:
    t = time.perf_counter()
    with open(path, "wb") as f:
        for p in parts:
            f.write(p)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t


def raw_write_hashed(path: Path, parts: list[bytes]) -> float:
    """Raw write plus the three digests the store computes (SHA-256, MD5, 128 KiB blocks):
    the least any store that hashes its content must spend."""
    t = time.perf_counter()
    sha, md5 = hashlib.sha256(), hashlib.md5()
    blocks = []
    with open(path, "wb") as f:
        for p in parts:
            f.write(p)
            sha.update(p)
            md5.update(p)
            for o in range(0, len(p), 128 * 1024):
                blocks.append(hashlib.sha256(p[o : o + 128 * 1024]).digest())
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t


def raw_read(path: Path, size: int) -> tuple[float, str]:
    drop_cache([path])
    h = hashlib.sha256()
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(MIB)
            if not b:
                break
            h.update(b)  # the store's reader verifies hashes too; keep the work comparable
    return time.perf_counter() - t, h.hexdigest()


async def store_upload(remote: EmbeddedRemote, parts: list[bytes], inflight: int, name: str
                       ) -> tuple[float, float, object]:
    fid = int.from_bytes(os.urandom(8), "little") >> 1
    sem = trio.Semaphore(inflight)
    t = time.perf_counter()

    async def one(i: int) -> None:
        try:
            await remote.save_big_file_part(fid, i, len(parts), parts[i])
        finally:
            sem.release()

    async with trio.open_nursery() as n:
        for i in range(len(parts)):
            await sem.acquire()
            n.start_soon(one, i)
    t_fin = time.perf_counter()
    doc = await remote.upload_media(InputFileBig(fid, len(parts), name))
    end = time.perf_counter()
    await remote.create_file(ROOT_ID, name, (doc.location,))
    return end - t, end - t_fin, doc


async def store_read(remote: EmbeddedRemote, doc: object, size: int, store_dir: Path
                     ) -> tuple[float, str]:
    drop_cache([p for p in (store_dir / "blobs").rglob("*") if p.is_file()])
    h = hashlib.sha256()
    t = time.perf_counter()
    for off in range(0, size, MIB):
        r = await remote.get_file(doc.location, off, MIB)  # type: ignore[attr-defined]
        h.update(r.bytes)
    return time.perf_counter() - t, h.hexdigest()


async def store_read_parallel(remote: EmbeddedRemote, doc: object, size: int, store_dir: Path,
                              inflight: int) -> float:
    """getFile of every window with ``inflight`` requests outstanding (like read-ahead)."""
    drop_cache([p for p in (store_dir / "blobs").rglob("*") if p.is_file()])
    sem = trio.Semaphore(inflight)
    got = [0]
    t = time.perf_counter()

    async def one(off: int) -> None:
        try:
            r = await remote.get_file(doc.location, off, MIB)  # type: ignore[attr-defined]
            got[0] += len(r.bytes)
        finally:
            sem.release()

    async with trio.open_nursery() as n:
        for off in range(0, size, MIB):
            await sem.acquire()
            n.start_soon(one, off)
    assert got[0] == size
    return time.perf_counter() - t


async def bench_listing(base: Path, entries: int) -> None:
    """A folder of ``entries`` files: paged list_folder against scandir+stat of a real
    directory with as many files, and lookups against os.stat."""
    remote = EmbeddedRemote.open(base / "list-store")
    raw_dir = base / "list-raw"
    raw_dir.mkdir()
    try:
        store, uid = remote.store, remote.user_id
        t = time.perf_counter()
        folder = store.mkdir(uid, ROOT_ID, "big").id
        for i in range(entries):
            store.create_file(uid, folder, f"file-{i:07d}")
        t_create = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(entries):
            (raw_dir / f"file-{i:07d}").touch()
        t_raw_create = time.perf_counter() - t

        t = time.perf_counter()
        seen, after, pages = 0, None, 0
        worst = 0.0
        while True:
            tp = time.perf_counter()
            page = await remote.list_folder(folder, after, 1000)
            worst = max(worst, time.perf_counter() - tp)
            seen += len(page.entries)
            pages += 1
            after = page.next_after
            if after is None:
                break
        t_list = time.perf_counter() - t
        assert seen == entries
        t = time.perf_counter()
        n = 0
        with os.scandir(raw_dir) as it:
            for e in it:
                e.stat()
                n += 1
        t_raw_list = time.perf_counter() - t
        assert n == entries

        names = [f"file-{(i * 7919) % entries:07d}" for i in range(2000)]
        t = time.perf_counter()
        for name in names:
            await remote.lookup(folder, name)
        t_lookup = (time.perf_counter() - t) / len(names)
        t = time.perf_counter()
        for name in names:
            os.stat(raw_dir / name)
        t_raw_lookup = (time.perf_counter() - t) / len(names)
        print(f"\nfolder of {entries} entries:")
        print(f"  create   store {entries / t_create:8.0f}/s   raw touch {entries / t_raw_create:8.0f}/s")
        print(f"  list all store {t_list * 1000:8.0f} ms ({pages} pages of 1000, slowest page "
              f"{worst * 1000:.1f} ms)   raw scandir+stat {t_raw_list * 1000:8.0f} ms   "
              f"ratio {t_raw_list / t_list:.2f}")
        print(f"  lookup   store {t_lookup * 1e6:8.0f} us   raw stat {t_raw_lookup * 1e6:8.1f} us")
    finally:
        await remote.aclose()


async def main_async(args: argparse.Namespace) -> int:
    size = parse_size(args.size)
    base = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        if args.entries:
            await bench_listing(base, args.entries)
        if not size:
            return 0
        parts = make_parts(size)
        expect = hashlib.sha256(b"".join(parts)).hexdigest() if size <= 2 << 30 else None
        limits = Limits(upload_max_fileparts_default=max(4000, len(parts)))
        remote = EmbeddedRemote.open(base / "store", limits=limits)
        raw = base / "raw.bin"
        mb = size / 1e6
        results: dict[str, list[float]] = {k: [] for k in (
            "raw_w", "raw_wh", "store_w", "fin", "raw_r", "store_r", "store_rp")}
        try:
            for rnd in range(args.rounds):
                if rnd:
                    parts = make_parts(size, rnd)
                    expect = (hashlib.sha256(b"".join(parts)).hexdigest()
                              if size <= 2 << 30 else None)
                results["raw_w"].append(raw_write(raw, parts))
                # A second file: truncating the first would free a gigabyte, which ext4
                # with ``discard`` trims during whatever syncs next (the store's upload).
                results["raw_wh"].append(raw_write_hashed(raw.with_suffix(".h"), parts))
                dt, fin, doc = await store_upload(remote, parts, args.inflight, f"f{rnd}")
                results["store_w"].append(dt)
                results["fin"].append(fin)
                dt_r, digest_raw = raw_read(raw, size)
                results["raw_r"].append(dt_r)
                dt_s, digest_store = await store_read(remote, doc, size, base / "store")
                results["store_r"].append(dt_s)
                results["store_rp"].append(
                    await store_read_parallel(remote, doc, size, base / "store", args.inflight))
                assert digest_raw == digest_store, "store returned different bytes"
                if expect:
                    assert digest_store == expect
                print(
                    f"round {rnd + 1}: write raw {mb / results['raw_w'][-1]:7.1f} MB/s, "
                    f"raw+hashes {mb / results['raw_wh'][-1]:7.1f} MB/s, "
                    f"store {mb / dt:7.1f} MB/s (finalize {fin * 1000:.0f} ms); "
                    f"read raw {mb / dt_r:7.1f} MB/s, store {mb / dt_s:7.1f} MB/s, "
                    f"store {args.inflight} in flight {mb / results['store_rp'][-1]:7.1f} MB/s",
                    flush=True,
                )
                raw.unlink()
                raw.with_suffix(".h").unlink()
                # ext4 mounted with ``discard`` trims the freed gigabyte at the next journal
                # commit; force that commit now so no timed section pays for it.
                fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        finally:
            await remote.aclose()
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"\nsize {size} bytes ({size / MIB:.0f} MiB), {args.inflight} parts in flight, "
              f"{args.rounds} rounds (medians):")
        print(f"  upload   raw {mb / med['raw_w']:7.1f} MB/s   store {mb / med['store_w']:7.1f} "
              f"MB/s   ratio {med['raw_w'] / med['store_w']:.2f}   finalize {med['fin'] * 1000:.0f} ms")
        print(f"           raw+hashes {mb / med['raw_wh']:7.1f} MB/s   ratio store/(raw+hashes) "
              f"{med['raw_wh'] / med['store_w']:.2f}")
        print(f"  get_file raw {mb / med['raw_r']:7.1f} MB/s   store {mb / med['store_r']:7.1f} "
              f"MB/s   ratio {med['raw_r'] / med['store_r']:.2f}")
        print(f"           store, {args.inflight} in flight {mb / med['store_rp']:7.1f} MB/s   "
              f"ratio {med['raw_r'] / med['store_rp']:.2f}")
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def bench_small(remote: EmbeddedRemote, count: int) -> tuple[float, float]:
    """putFile ``count`` 4 KiB files, then read each back: (files/s written, read)."""
    datas = [os.urandom(4 * KIB) for _ in range(count)]
    t = time.perf_counter()
    nodes = []
    for i, d in enumerate(datas):
        nodes.append(await remote.put_file(ROOT_ID, f"small{i}", d,
                                           md5_checksum=hashlib.md5(d).hexdigest()))
    t_w = time.perf_counter() - t
    t = time.perf_counter()
    for n, d in zip(nodes, datas, strict=True):
        got = await remote.get_file(n.segments[0].location, 0, 4 * KIB)
        assert got.bytes == d
    return count / t_w, count / (time.perf_counter() - t)


async def bench_content(base: Path, args: argparse.Namespace, url: str) -> None:
    """Local directory against ``url``, interleaved per round (medians printed)."""
    size = parse_size(args.size)
    limits = Limits(upload_max_fileparts_default=max(4000, size // (512 * KIB) + 1))
    names = ("local", "s3")
    rows: dict[str, dict[str, list[float]]] = {n: {k: [] for k in ("w", "r", "rp", "sw", "sr")}
                                               for n in names}
    mb = size / 1e6
    for rnd in range(args.rounds):
        parts = make_parts(size, rnd)
        for name in names:
            content = None
            if name == "s3":  # a fresh prefix per store
                loc = parse_s3_url(url)
                sub = f"bench{os.urandom(4).hex()}"
                content = dataclasses.replace(
                    loc, prefix=f"{loc.prefix}/{sub}" if loc.prefix else sub).url()
            remote = EmbeddedRemote.open(base / f"{name}-{rnd}", limits=limits,
                                         content=content)
            try:
                dt, _fin, doc = await store_upload(remote, parts, args.inflight, "big")
                row = rows[name]
                row["w"].append(mb / dt)
                dt_r, _ = await store_read(remote, doc, size, base / f"{name}-{rnd}")
                row["r"].append(mb / dt_r)
                row["rp"].append(mb / await store_read_parallel(
                    remote, doc, size, base / f"{name}-{rnd}", args.inflight))
                sw, sr = await bench_small(remote, args.small)
                row["sw"].append(sw)
                row["sr"].append(sr)
                print(f"round {rnd + 1} {name:5}: upload {row['w'][-1]:7.1f} MB/s, read "
                      f"{row['r'][-1]:7.1f} MB/s, {args.inflight} in flight "
                      f"{row['rp'][-1]:7.1f} MB/s; {args.small} small files: put "
                      f"{sw:6.1f}/s, read {sr:6.1f}/s", flush=True)
            finally:
                await remote.aclose()
    print(f"\nsize {size / MIB:.0f} MiB, {args.inflight} in flight, {args.small} small files, "
          f"{args.rounds} rounds (medians):")
    for name in names:
        m = {k: statistics.median(v) for k, v in rows[name].items()}
        print(f"  {name:5} upload {m['w']:7.1f} MB/s  read {m['r']:7.1f} MB/s  "
              f"read {args.inflight} in flight {m['rp']:7.1f} MB/s  small put {m['sw']:6.1f}/s "
              f"small read {m['sr']:6.1f}/s")


async def content_main(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="bench-content-", dir=args.dir))
    try:
        if args.content != "swift":
            await bench_content(base, args, args.content)
            return 0
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from engines import swift_s3

        with swift_s3() as s3:
            print(f"swift + s3api up in {s3.startup_seconds:.1f} s at {s3.endpoint}",
                  flush=True)
            os.environ.update(s3.env())
            await bench_content(base, args, s3.url())
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def bench_metadata_round(remote: EmbeddedRemote, ops: int, small: int
                               ) -> dict[str, float]:
    """Per-call microseconds of metadata calls on a fresh store, and small-file rates."""
    out: dict[str, float] = {}
    folder = (await remote.mkdir(ROOT_ID, "bench")).id
    t = time.perf_counter()
    for i in range(ops):
        await remote.mkdir(folder, f"d{i}")
    out["mkdir"] = (time.perf_counter() - t) / ops * 1e6
    t = time.perf_counter()
    for i in range(ops):
        await remote.create_file(folder, f"f{i}")
    out["create"] = (time.perf_counter() - t) / ops * 1e6
    t = time.perf_counter()
    for i in range(ops):
        await remote.rename(folder, f"f{i}", folder, f"g{i}")
    out["rename"] = (time.perf_counter() - t) / ops * 1e6
    t = time.perf_counter()
    for i in range(ops):
        await remote.lookup(folder, f"g{i}")
    out["lookup"] = (time.perf_counter() - t) / ops * 1e6
    t = time.perf_counter()
    after, entries = None, 0
    for _ in range(10_000):
        page = await remote.list_folder(folder, after, 1000)
        entries += len(page.entries)
        after = page.next_after
        if after is None:
            break
    assert entries == 2 * ops
    out["list"] = (time.perf_counter() - t) / entries * 1e6
    sw, sr = await bench_small(remote, small)
    out["small_put"], out["small_read"] = sw, sr
    return out


async def bench_metadata(base: Path, args: argparse.Namespace, dsn: str) -> None:
    """SQLite against PostgreSQL metadata (content in the directory for both), and
    PostgreSQL without its cross-node write lock (unsafe; what the lock costs), interleaved
    per round; medians printed."""
    import psycopg

    from fsmount.store import pg_meta

    locked_begin = pg_meta.PgMeta.begin

    def unlocked_begin(self: pg_meta.PgMeta, now: float, *, write: bool) -> pg_meta.PgTx:
        conn = self._connection()
        conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED" if write else
                     "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return pg_meta.PgTx(now, db=conn, write=write)

    names = ("sqlite", "pg", "pg-nolock")
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for rnd in range(args.rounds):
        for name in names:
            metadata = None
            if name != "sqlite":
                schema = f"bench{os.urandom(4).hex()}"
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"CREATE SCHEMA {schema}")
                metadata = f"{dsn}?options=-csearch_path%3D{schema}"
            pg_meta.PgMeta.begin = unlocked_begin if name == "pg-nolock" else locked_begin  # type: ignore[method-assign]
            remote = EmbeddedRemote.open(base / f"{name}-{rnd}", metadata=metadata)
            try:
                row = await bench_metadata_round(remote, args.ops, args.small)
            finally:
                await remote.aclose()
                pg_meta.PgMeta.begin = locked_begin  # type: ignore[method-assign]
            rows[name].append(row)
            print(f"round {rnd + 1} {name:9}: " + "  ".join(
                f"{k} {v:.0f}" for k, v in row.items()), flush=True)
    print(f"\n{args.ops} calls each, {args.small} small files, {args.rounds} rounds (medians; "
          "us per call, small files per second):")
    for name in names:
        m = {k: statistics.median(r[k] for r in rows[name]) for k in rows[name][0]}
        print(f"  {name:9} mkdir {m['mkdir']:6.0f}  create {m['create']:6.0f}  rename "
              f"{m['rename']:6.0f}  lookup {m['lookup']:6.0f}  list/entry {m['list']:5.1f}  "
              f"small put {m['small_put']:6.1f}/s  small read {m['small_read']:7.1f}/s")


def bench_concurrent(base: Path, dsn: str, threads: int, ops: int, nodes: int,
                     locked: bool) -> float:
    """Calls per second of ``threads`` threads (each: create, rename, unlink in a folder of
    its own, so that they never conflict) over ``nodes`` in-process stores ("nodes": one
    database connection each) of one PostgreSQL store."""
    import threading

    import psycopg

    from fsmount.store import Store, pg_meta

    schema = f"bench{os.urandom(4).hex()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{dsn}?options=-csearch_path%3D{schema}"
    locked_begin = pg_meta.PgMeta.begin
    if not locked:
        def unlocked_begin(self: pg_meta.PgMeta, now: float, *, write: bool) -> pg_meta.PgTx:
            conn = self._connection()
            conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED" if write else
                         "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return pg_meta.PgTx(now, db=conn, write=write)
        pg_meta.PgMeta.begin = unlocked_begin  # type: ignore[method-assign]
    stores = [Store(base / f"conc-{schema}-{i}", metadata=url) for i in range(nodes)]
    try:
        uid = stores[0].default_user_id
        folders = [stores[0].mkdir(uid, ROOT_ID, f"t{i}").id for i in range(threads)]

        def work(i: int) -> None:
            st = stores[i % nodes]
            for k in range(ops):
                st.create_file(uid, folders[i], f"a{k}")
                st.rename(uid, folders[i], f"a{k}", folders[i], f"b{k}")
                st.unlink(uid, folders[i], f"b{k}")

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return threads * ops * 3 / (time.perf_counter() - t)
    finally:
        for st in stores:
            st.close()
        pg_meta.PgMeta.begin = locked_begin  # type: ignore[method-assign]


def concurrent(base: Path, args: argparse.Namespace, dsn: str) -> None:
    """The concurrent figures, interleaved per round (medians)."""
    configs = [("1 node", 1, True), ("2 nodes", 2, True), ("2 nodes, no lock", 2, False)]
    rates: dict[str, list[float]] = {c[0]: [] for c in configs}
    for rnd in range(args.rounds):
        for name, nodes, locked in configs:
            rates[name].append(bench_concurrent(base, dsn, args.threads, args.ops // 5,
                                                nodes, locked))
        print(f"round {rnd + 1} concurrent: " + "  ".join(
            f"{n} {r[-1]:.0f}/s" for n, r in rates.items()), flush=True)
    print(f"\n{args.threads} threads, create+rename+unlink in folders of their own "
          f"(calls per second, medians):")
    for name, r in rates.items():
        print(f"  {name:17} {statistics.median(r):7.0f}/s")


async def metadata_main(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="bench-metadata-", dir=args.dir))
    try:
        if args.metadata != "postgres":
            await bench_metadata(base, args, args.metadata)
            concurrent(base, args, args.metadata)
            return 0
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from engines import postgres

        with postgres() as pg:
            print(f"postgresql up in {pg.startup_seconds:.1f} s on port {pg.port}", flush=True)
            await bench_metadata(base, args, pg.dsn)
            concurrent(base, args, pg.dsn)
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="file size, e.g. 64M, 1G (default 1G)")
    ap.add_argument("--inflight", type=int, default=4, help="parts in flight (default 4)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--entries", type=int, default=0,
                    help="also time a folder of this many entries (e.g. 100000)")
    ap.add_argument("--dir", default=None, help="where to put the store and the raw file")
    ap.add_argument("--content", default=None, metavar="URL",
                    help="compare the local directory with this content backend "
                         "(s3://BUCKET/PREFIX?endpoint=..., or 'swift' to start a "
                         "throwaway Swift + s3api)")
    ap.add_argument("--small", type=int, default=200,
                    help="small files per round with --content (default 200)")
    ap.add_argument("--metadata", default=None, metavar="URL",
                    help="compare SQLite metadata with this PostgreSQL database "
                         "(postgresql://..., or 'postgres' to start a throwaway cluster)")
    ap.add_argument("--ops", type=int, default=500,
                    help="calls of each kind with --metadata (default 500)")
    ap.add_argument("--threads", type=int, default=8,
                    help="concurrent callers with --metadata (default 8)")
    args = ap.parse_args()
    if args.metadata:
        return trio.run(metadata_main, args)
    if args.content:
        return trio.run(content_main, args)
    return trio.run(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
