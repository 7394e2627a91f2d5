"""Users: accounts with a root folder, a quota (0 = unlimited) and a premium flag.

A user is created with its empty root folder in one transaction; its usage (bytes of its
files, count of its nodes) is kept by the namespace as nodes change, and checked here
against the quota.
"""

from __future__ import annotations

from .. import errors
from ..protocol import Limits
from ..remote import ROOT_ID, NodeKind, Usage, UserConfig
from .meta import MetaTx
from .rows import NodeRow, UserRow
from .txn import TxRunner

__all__ = ["DEFAULT_USER", "Users"]

DEFAULT_USER = "default"


class Users:
    """The users of a store."""

    def __init__(self, txn: TxRunner, limits: Limits) -> None:
        self.txn = txn
        self.limits = limits

    def ensure(self, name: str, *, quota_bytes: int = 0, premium: bool = False) -> int:
        """The id of user ``name``, created (with an empty root folder) if needed; an
        existing user keeps its settings.  Raises InvalidArgument (an empty name)."""
        if not isinstance(name, str) or not name:
            raise errors.InvalidArgument("a user needs a non-empty name")
        with self.txn.run() as tx:
            uid = tx.user_id_by_name(name)
            if uid is not None:
                return uid
            uid = tx.insert_user(name, quota_bytes, premium)
            ns = int(tx.now * 1e9)
            tx.insert_node(uid, NodeRow(ROOT_ID, ROOT_ID, "", NodeKind.DIR, 0o755, 0, ns, ns, 0,
                                        None, nlink=2))
            tx.adjust_usage(uid, nodes=1)
            return uid

    def user_id(self, name: str) -> int:
        """Raises NotFound if there is no user ``name``."""
        with self.txn.run(write=False) as tx:
            uid = tx.user_id_by_name(name)
        if uid is None:
            raise errors.NotFound(f"no user {name!r}")
        return uid

    def set(self, user_id: int, *, quota_bytes: int | None = None,
            premium: bool | None = None) -> None:
        """Change a user's quota (0 = unlimited) or premium flag.

        Raises NotFound, InvalidArgument (a negative quota).
        """
        with self.txn.run() as tx:
            self.row(tx, user_id)
            if quota_bytes is not None:
                if quota_bytes < 0:
                    raise errors.InvalidArgument("quota_bytes must be >= 0")
                tx.set_user_quota(user_id, quota_bytes)
            if premium is not None:
                tx.set_user_premium(user_id, premium)

    @staticmethod
    def row(tx: MetaTx, user_id: int) -> UserRow:
        """The user's row.  Raises NotFound."""
        row = tx.user(user_id)
        if row is None:
            raise errors.NotFound(f"no user {user_id}")
        return row

    def premium(self, user_id: int) -> bool:
        """Raises NotFound."""
        with self.txn.run(write=False) as tx:
            return self.row(tx, user_id).premium

    @staticmethod
    def check_quota(user: UserRow, grow: int) -> None:
        """Raises QuotaExceeded if ``grow`` more bytes do not fit in the user's quota."""
        if grow > 0 and user.quota_bytes and user.used_bytes + grow > user.quota_bytes:
            raise errors.QuotaExceeded(
                f"{user.used_bytes} + {grow} bytes exceeds the quota {user.quota_bytes}")

    def config(self, user_id: int) -> UserConfig:
        """Raises NotFound."""
        premium = self.premium(user_id)
        return UserConfig(
            max_parts=self.limits.max_parts(premium),
            big_file_threshold=self.limits.big_file_threshold,
            part_lifetime=self.limits.part_lifetime,
            premium=premium,
        )

    def usage(self, user_id: int) -> Usage:
        """Raises NotFound."""
        with self.txn.run(write=False) as tx:
            user = self.row(tx, user_id)
        return Usage(used_bytes=user.used_bytes, quota_bytes=user.quota_bytes,
                     files=user.node_count)
