"""Benchmark ``fsmount store copy`` (fsmount/store/copy.py): a whole store copied between
store directories, and into S3 content (Swift + s3api from tests/engines.py, ``--s3``).

It builds one source store (``--big`` files of ``--file-size`` bytes and ``--small``
files of 4 KiB, in 20 folders), then times, side by side in one run:

* the copy into a new directory without verification, and with it (every document
  re-read from the destination and its SHA-256 compared);
* a second run over the finished copy (nothing to write: the cost of checking);
* with ``--s3``, the copy into a directory whose content is in S3 (a smaller store:
  ``--s3-big`` files; the test engine is slow, see docs/performance.md).

    python3 scripts/bench_copy.py --big 8 --file-size 32M --small 2000 [--s3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from fsmount.protocol import MAX_PART_SIZE
from fsmount.remote import ROOT_ID, InputFileBig
from fsmount.store import Store
from fsmount.store.copy import StoreSpec, run_copy


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def build(path: Path, big: int, file_size: int, small: int) -> int:
    """The source store; returns its bytes."""
    total = 0
    with Store(path) as s:
        uid = s.default_user_id
        folders = [s.mkdir(uid, ROOT_ID, f"d{i:02d}").id for i in range(20)]
        for i in range(big):
            data = os.urandom(file_size)
            parts = [data[o : o + MAX_PART_SIZE] for o in range(0, len(data), MAX_PART_SIZE)]
            fid = 1000 + i
            for n, part in enumerate(parts):
                s.save_big_file_part(uid, fid, n, len(parts), part)
            doc = s.upload_media(uid, InputFileBig(fid, len(parts), f"big{i}"))
            s.create_file(uid, folders[i % 20], f"big{i}", (doc.location,))
            total += file_size
        for i in range(small):
            data = os.urandom(4096)
            s.put_file(uid, folders[i % 20], f"small{i:05d}", data,
                       md5_checksum=hashlib.md5(data).hexdigest())
            total += len(data)
    return total


def timed(src: Path, dst: Path, content: str | None = None, verify: bool = True
          ) -> tuple[float, object]:
    t0 = time.perf_counter()
    report = run_copy(StoreSpec.parse(str(src)), StoreSpec.parse(str(dst), content),
                      verify=verify)
    return time.perf_counter() - t0, report


def row(name: str, seconds: float, nbytes: int, nodes: int) -> None:
    print(f"| {name} | {seconds:.2f} s | {nbytes / seconds / 1e6:.1f} MB/s | "
          f"{nodes / seconds:,.0f} nodes/s |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--big", type=int, default=8)
    ap.add_argument("--file-size", type=parse_size, default=parse_size("32M"))
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--s3", action="store_true", help="also copy into S3 content (Swift)")
    ap.add_argument("--s3-big", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        base = Path(tmp)
        src = base / "src"
        nbytes = build(src, args.big, args.file_size, args.small)
        nodes = args.big + args.small + 21
        print(f"source: {args.big} x {args.file_size} B + {args.small} x 4 KiB "
              f"({nbytes / 1e6:.0f} MB, {nodes} nodes)\n")
        print("| copy | time | content | namespace |\n|---|---|---|---|")
        t, _ = timed(src, base / "a", verify=False)
        row("into a new directory, --no-verify", t, nbytes, nodes)
        t, _ = timed(src, base / "b")
        row("into a new directory, verified", t, nbytes, nodes)
        t, _ = timed(src, base / "b")
        row("again over the finished copy (checks only)", t, nbytes, nodes)
        if args.s3:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from engines import swift_s3

            small_src = base / "src-s3"
            n3 = build(small_src, args.s3_big, args.file_size, min(args.small, 100))
            nodes3 = args.s3_big + min(args.small, 100) + 21
            with swift_s3() as s3:
                os.environ.update(s3.env())
                t, _ = timed(small_src, base / "s3", s3.url("bench"))
                row(f"into S3 content, verified ({n3 / 1e6:.0f} MB)", t, n3, nodes3)
                t, _ = timed(base / "s3", base / "back")
                row(f"S3 content into a directory, verified ({n3 / 1e6:.0f} MB)", t, n3,
                    nodes3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
