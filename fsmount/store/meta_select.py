"""Which metadata backend a store directory uses, and remembering it.

A store's metadata is ``DIR/meta.sqlite`` (the default) or a PostgreSQL database named by a
metadata URL (:mod:`fsmount.store.pg_meta`).  The first open with a URL writes it to
``DIR/metadata.url`` (a password in it is refused: libpq finds credentials in the
environment or a password file), so later opens -- ``fsmount fsck DIR``, a ``serve``
without ``--metadata`` -- find the same database; an open with a different URL, or with a
URL on a store directory whose metadata is in SQLite, is refused.

Each node of a shared (PostgreSQL) store has a directory of its own; what every node must
agree on (the store's id, where its content lives) is kept in the database
(:meth:`fsmount.store.pg_meta.PgMeta.shared_setting`), not in the directory.
"""

from __future__ import annotations

from pathlib import Path

from .. import errors
from .sqlite_meta import DB_NAME

__all__ = ["METADATA_URL_FILE", "metadata_url", "record_metadata", "select_metadata",
           "store_exists"]

METADATA_URL_FILE = "metadata.url"


def metadata_url(path: Path) -> str | None:
    """The metadata URL a store directory was created with; None for SQLite."""
    try:
        return (path / METADATA_URL_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def store_exists(path: Path) -> bool:
    """Whether ``path`` holds a store (its SQLite database, or a metadata URL)."""
    return (path / DB_NAME).is_file() or (path / METADATA_URL_FILE).is_file()


def select_metadata(path: Path, metadata: str | None) -> str | None:
    """The metadata URL the store at ``path`` uses (None: SQLite in the directory); a new
    one is recorded by :func:`record_metadata` once the database has been opened.

    Raises:
        InvalidArgument: a malformed URL, a password in it, or one that disagrees with the
            store's (or a store whose metadata is in SQLite already).
    """
    recorded = metadata_url(path)
    if metadata is None:
        return recorded
    from .pg_meta import check_pg_url

    check_pg_url(metadata)
    if recorded is None:
        if (path / DB_NAME).exists():
            raise errors.InvalidArgument(
                f"store {path} keeps its metadata in {DB_NAME}; it cannot switch to "
                f"{metadata.split('?', 1)[0]}")
    elif recorded != metadata:
        raise errors.InvalidArgument(f"store {path} keeps its metadata at {recorded}, "
                                     f"not {metadata}")
    return metadata


def record_metadata(path: Path, url: str | None) -> None:
    """Remember ``url`` in the store directory (after a successful open with it)."""
    if url is not None and metadata_url(path) is None:
        (path / METADATA_URL_FILE).write_text(url + "\n")
