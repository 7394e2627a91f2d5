"""The store package: users, a namespace of folders/files/symlinks, uploads and documents.

Callers import from here (``from fsmount.store import Store``); the modules of the package
are its internals.  See :mod:`fsmount.store.core` for the design.
"""

from __future__ import annotations

from .core import (
    DEFAULT_USER,
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
from .hooks import NO_HOOKS, HookPoint, StoreHooks, hooks_from_spec

__all__ = ["DEFAULT_USER", "LIMITS_ENV", "MAX_NAME_BYTES", "NO_HOOKS", "Hasher", "Hashes",
           "HookPoint", "Store", "StoreHooks", "blob_relpath", "block_sums", "check_name",
           "file_id_key", "hooks_from_spec", "limits_from_env", "sweep_files",
           "upload_relpath"]
