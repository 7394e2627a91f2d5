"""The ``fsmount fsck`` verb: check an embedded store's invariants (read-only).

It prints one line per problem and exits 1 if there are any, 0 when the store is sound.
It only reads; run it while the store is idle (an upload in flight in another process
shows up as orphan part files).
"""

from __future__ import annotations

import argparse
import sys

from . import fsck
from .cli_common import default_store_dir, store_dir


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "fsck", help="check an embedded store's invariants",
        description="Check the metadata and the files of an embedded store: tree shape, "
                    "names, documents, blobs, usage, orphans. Prints one line per problem; "
                    "exit status 1 if there is any.",
    )
    p.add_argument("--store", metavar="DIR", default=None,
                   help=f"store directory (default {default_store_dir()})")
    p.add_argument("--deep", action="store_true",
                   help="also re-hash every blob and compare with its SHA-256 and block hashes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = store_dir(args)
    problems = fsck.check(path, deep=args.deep)
    for line in problems:
        print(line)
    if problems:
        print(f"fsmount: {len(problems)} problem(s) in {path}", file=sys.stderr)
        return 1
    print(f"{path}: clean")
    return 0
