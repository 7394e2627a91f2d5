"""Which content backend a store directory uses, and remembering it.

A store's content is the local directory (the default) or an S3 bucket named by a content
URL (:mod:`fsmount.store.s3content`).  The first open with a URL writes it to
``DIR/content.url`` (no credentials are ever in it), so later opens -- ``fsmount fsck DIR``,
a ``serve`` without ``--content`` -- find the same content; an open with a different URL,
or with a URL on a store whose content is local, is refused rather than served with the
blobs somewhere else.  A store without that file is a local-directory store, byte for byte
as before.
"""

from __future__ import annotations

from pathlib import Path

from .. import errors
from .content import ContentBackend
from .localdir import LocalDir
from .meta_select import store_exists

__all__ = ["CONTENT_URL_FILE", "content_url", "select_content"]

CONTENT_URL_FILE = "content.url"


def content_url(path: Path) -> str | None:
    """The content URL a store directory was created with; None for local content."""
    try:
        return (path / CONTENT_URL_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def select_content(path: Path, content: str | ContentBackend | None) -> ContentBackend:
    """The (unopened) content backend for the store at ``path``.

    ``content`` is None (what the store recorded, else the local directory), an
    ``s3://`` URL, or a backend object (tests).

    Raises:
        InvalidArgument: a malformed URL, or one that disagrees with the store's.
    """
    if content is not None and not isinstance(content, str):
        return content
    recorded = content_url(path)
    if content is None:
        if recorded is None:
            return LocalDir(path)
        content = recorded
    from .s3content import S3Content, parse_s3_url

    loc = parse_s3_url(content)
    if recorded is None:
        if store_exists(path):
            raise errors.InvalidArgument(
                f"store {path} keeps its content in the directory; it cannot switch to "
                f"{loc.url()}")
        (path / CONTENT_URL_FILE).write_text(loc.url() + "\n")
    elif parse_s3_url(recorded) != loc:
        raise errors.InvalidArgument(f"store {path} keeps its content at {recorded}, "
                                     f"not {loc.url()}")
    return S3Content(loc)
