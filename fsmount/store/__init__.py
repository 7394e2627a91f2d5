"""The store package: users, a namespace of folders/files/symlinks, uploads and documents.

Callers import from here (``from fsmount.store import Store``); the modules of the package
are its internals.  See :mod:`fsmount.store.core` for the design.
"""

from __future__ import annotations

from .core import (
    DEFAULT_USER,
    HOOK_ENV,
    LIMITS_ENV,
    MAX_NAME_BYTES,
    Hasher,
    Hashes,
    Store,
    blob_relpath,
    block_sums,
    check_name,
    file_id_key,
    limits_from_env,
    sweep_files,
    upload_relpath,
)

__all__ = ["DEFAULT_USER", "HOOK_ENV", "LIMITS_ENV", "MAX_NAME_BYTES", "Hasher", "Hashes",
           "Store", "blob_relpath", "block_sums", "check_name", "file_id_key",
           "limits_from_env", "sweep_files", "upload_relpath"]
