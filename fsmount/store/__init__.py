"""The store package: users, a namespace of folders/files/symlinks, uploads and documents.

Callers import from here (``from fsmount.store import Store``); :mod:`fsmount.store.core`
describes the design and how the modules of the package fit together.
"""

from __future__ import annotations

from .core import LIMITS_ENV, Store, limits_from_env
from .hashing import Hasher, Hashes, block_sums
from .hooks import NO_HOOKS, HookPoint, StoreHooks, hooks_from_spec
from .localdir import blob_relpath, sweep_files, upload_relpath
from .namespace import MAX_NAME_BYTES, check_name
from .parts import file_id_key
from .users import DEFAULT_USER

__all__ = ["DEFAULT_USER", "LIMITS_ENV", "MAX_NAME_BYTES", "NO_HOOKS", "Hasher", "Hashes",
           "HookPoint", "Store", "StoreHooks", "blob_relpath", "block_sums", "check_name",
           "file_id_key", "hooks_from_spec", "limits_from_env", "sweep_files",
           "upload_relpath"]
