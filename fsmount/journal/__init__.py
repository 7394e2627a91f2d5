"""The write-back journal (``fsmount mount --write-back``): pending changes kept durably on
local disk (:mod:`.log`, framed records in :mod:`.records`) and sent to the store in the
background (:mod:`.uploader`).  See docs/SEMANTICS.md, "Write-back"."""

from .log import DEFAULT_LIMIT, EMPTY_SHA256, Journal, JournalLocked, Pending, journal_dir
from .records import INLINE_MAX
from .uploader import Uploader, conflict_name, node_sha256

__all__ = ["DEFAULT_LIMIT", "EMPTY_SHA256", "INLINE_MAX", "Journal", "JournalLocked", "Pending", "Uploader",
           "conflict_name", "journal_dir", "node_sha256"]
