"""The ``fsmount store`` verbs: whole-store operations (``store copy``).

``fsmount store copy --from SRC --to DST`` moves a store (:mod:`fsmount.store.copy`): SRC
and DST are store directories; ``--to-content s3://BUCKET/PREFIX?endpoint=...`` puts the
destination's content in S3 and ``--to-metadata postgresql://...`` its metadata in
PostgreSQL (DST is then that node's directory); ``--from-content`` / ``--from-metadata``
name the source's where its directory does not record them.  Both
stores must be idle (a served store is refused).  Progress goes to the log (``--log-level
INFO``), the summary to stdout; run it again after an interruption and it finishes.
"""

from __future__ import annotations

import argparse
import logging

from .store.copy import StoreSpec, run_copy


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("store", help="whole-store operations (copy a store elsewhere)",
                       description="Operations on a whole store.")
    verbs = p.add_subparsers(dest="store_verb", metavar="VERB", required=True)
    c = verbs.add_parser(
        "copy", help="copy a store into another (a directory, S3 content, ...), verified",
        description="Copy every user, token, quota, node (with its POSIX fields), "
                    "document and byte of the store SRC into DST, then re-read every "
                    "document from DST and compare its SHA-256. DST must be empty or an "
                    "earlier copy of SRC; an interrupted copy finishes when run again, "
                    "and a finished one is brought up to date. Stop `fsmount serve` on "
                    "both first.")
    c.add_argument("--from", dest="src", metavar="SRC", required=True,
                   help="the store to copy: its directory (a distributed store: this "
                        "node's)")
    c.add_argument("--to", dest="dst", metavar="DST", required=True,
                   help="where to: a store directory (created if missing; a distributed "
                        "store: this node's, with --to-metadata)")
    c.add_argument("--from-metadata", metavar="URL", default=None,
                   help="the source's metadata (postgresql://...) if its directory does not "
                        "record it")
    c.add_argument("--to-metadata", metavar="URL", default=None,
                   help="put the destination's metadata in PostgreSQL (postgresql://HOST/DB;"
                        " the password from the environment or ~/.pgpass)")
    c.add_argument("--from-content", metavar="URL", default=None,
                   help="the source's content (s3://BUCKET/PREFIX?endpoint=...) if it does "
                        "not record it")
    c.add_argument("--to-content", metavar="URL", default=None,
                   help="put the destination's content in S3 (s3://BUCKET/PREFIX?"
                        "endpoint=...; credentials from the environment)")
    c.add_argument("--no-verify", action="store_true",
                   help="skip re-reading every document from the destination")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    src = StoreSpec.parse(args.src, args.from_content, args.from_metadata)
    dst = StoreSpec.parse(args.dst, args.to_content, args.to_metadata)
    log = logging.getLogger("fsmount.store.copy")
    r = run_copy(src, dst, verify=not args.no_verify, progress=log.info)
    print(f"copied {src.describe()} -> {dst.describe()}: {r.users} users, {r.nodes} nodes "
          f"({r.nodes_written} written, {r.nodes_removed} removed), {r.documents} documents, "
          f"{r.blobs_copied} blobs ({r.bytes_copied} bytes) copied, {r.server_rows} rows of "
          f"server state")
    if not args.no_verify:
        print(f"verified: {r.verified_documents} documents ({r.verified_bytes} bytes) re-read "
              f"from the destination match their SHA-256")
    return 0
