"""The ``fsmount init`` verb: create an empty embedded store.

The other verbs that take ``--store`` refuse a directory without a store (a mistyped path
must not become a new, empty store); ``mount`` and ``serve`` create one on first use, and
``init`` creates one without mounting or serving, e.g. to add tokens before the first
``fsmount serve``.  It is idempotent: an existing store is left as it is.
"""

from __future__ import annotations

import argparse
import sys

from .cli_common import default_store_dir, store_dir
from .cli_errors import StoreMissing


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("init", help="create an empty store",
                       description="Create an empty embedded store in DIR (made if missing). "
                                   "An existing store is left as it is.")
    p.add_argument("--store", metavar="DIR", default=None,
                   help=f"store directory (default {default_store_dir()})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Raises StoreNotADirectory, OSError (the store cannot be created)."""
    try:
        path = store_dir(args)
    except StoreMissing:
        store_dir(args, create=True)  # says "created a new empty store in DIR"
        return 0
    print(f"fsmount: {path} holds a store already; left as it is", file=sys.stderr)
    return 0
