"""The ``fsmount`` command: parses arguments and dispatches to the verb modules.

Each verb module exposes ``register(subparsers)``, which adds its sub-commands and sets
``func`` (a callable taking the parsed namespace and returning an exit status).  Whatever
escapes a verb (a domain error, an ``OSError``, Ctrl-C, a group of them from a trio
nursery, a bug) becomes one line on stderr and an exit status, never a traceback: see
:func:`fsmount.cli_errors.describe`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Sequence

from . import __version__
from .cli_errors import describe

#: Modules that contribute verbs, in the order their verbs appear in ``--help``.
VERB_MODULES = (
    "fsmount.cli_init",
    "fsmount.cli_mount",
    "fsmount.cli_files",
    "fsmount.cli_ops",
    "fsmount.cli_share",
    "fsmount.server.cli",
    "fsmount.cli_fsck",
    "fsmount.cli_store",
    "fsmount.cli_writeback",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsmount", description="Mount a chunked-transfer file store as a directory."
    )
    parser.add_argument("--version", action="version", version=f"fsmount {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging verbosity (default WARNING)",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for modname in VERB_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            # A verb module that is not installed (e.g. the server without its extra).
            if exc.name and (exc.name == modname or modname.startswith(exc.name + ".")):
                continue
            raise
        mod.register(sub)
    return parser


def log_format() -> str:
    """Log lines with a UTC timestamp and the process id; under systemd without the
    timestamp, which the journal adds to every line itself."""
    from .sdnotify import under_systemd

    if under_systemd():
        return "%(levelname)s %(name)s: %(message)s"
    logging.Formatter.converter = time.gmtime
    return ("%(asctime)s.%(msecs)03dZ fsmount[%(process)d] %(levelname)s %(name)s: "
            "%(message)s")


def _is_helper_call(parser: argparse.ArgumentParser, words: list[str]) -> bool:
    """True for a mount helper's command line: two words first, neither a flag, the first
    not a verb and looking like a source -- a path or URL (``SOURCE MOUNTPOINT [-o
    OPTS]``), so that a mistyped verb is still a usage error."""
    if len(words) < 2 or words[0].startswith("-") or words[1].startswith("-"):
        return False
    if "/" not in words[0] and not words[0].startswith("fsmount#"):
        return False
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return words[0] not in sub.choices


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits by itself, with 2, for
    a malformed command line)."""
    try:
        parser = build_parser()
        words = list(sys.argv[1:] if argv is None else argv)
        if _is_helper_call(parser, words):
            # ``fsmount SOURCE MNT -o ...``: how mount.fuse3 runs -t fuse.fsmount.
            from .mounthelper import main as helper

            return helper(words)
        args = parser.parse_args(words)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        logging.basicConfig(level=getattr(logging, args.log_level), format=log_format(),
                            datefmt="%Y-%m-%dT%H:%M:%S")
        return int(args.func(args) or 0)
    except SystemExit:
        raise
    except BaseException as exc:  # every failure, Ctrl-C included, becomes one line
        failure = describe(exc)
        print(f"fsmount: {failure.message}", file=sys.stderr)
        return failure.status


if __name__ == "__main__":
    sys.exit(main())
