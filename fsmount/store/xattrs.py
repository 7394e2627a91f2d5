"""Extended attributes of nodes: named byte values kept beside the namespace.

Limits are ext4's with ``ea_inode`` where Linux fixes them (names up to 255 bytes with their
namespace prefix, values up to 64 KiB) and a bound of our own on a node's total (names and
values together, :data:`~fsmount.remote.MAX_XATTR_TOTAL`), so that one node cannot grow the
metadata without limit.  The store keeps the ``user.``, ``trusted.`` and ``security.``
namespaces; who may touch ``trusted.*`` (root) and which kinds of node take ``user.*`` are the
mount's rules.  Names under ``user.fsmount.`` are the mount's computed, read-only attributes
and cannot be stored.  Attributes belong to the node: they follow it through renames and
hard links and go with it.  Every change sets the node's ctime and is logged in the change
log (:mod:`fsmount.store.changes`) as an ``attr`` change of the node, in its transaction, so
that other mounts following the feed drop the node's cached attributes (its ctime).
"""

from __future__ import annotations

from .. import errors
from ..remote import (
    MAX_XATTR_NAME,
    MAX_XATTR_TOTAL,
    MAX_XATTR_VALUE,
    RESERVED_XATTR_PREFIX,
    XATTR_NAMESPACES,
    ChangeKind,
    XattrMode,
)
from .changes import ChangeLog
from .meta import MetaTx
from .rows import ChangeRecord, NodeRow
from .txn import TxRunner

__all__ = ["Xattrs", "check_xattr_name"]


def check_xattr_name(name: str) -> None:
    """Raises InvalidArgument (empty, too long, no kept namespace, NUL), NotPermitted (a
    name of the mount's read-only attributes)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise errors.InvalidArgument("an attribute name is a non-empty string without NUL")
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_XATTR_NAME:
        raise errors.InvalidArgument(f"attribute name of {size} bytes exceeds {MAX_XATTR_NAME}")
    if not name.startswith(XATTR_NAMESPACES) or name in XATTR_NAMESPACES:
        raise errors.InvalidArgument(
            f"attribute {name!r} is not in a kept namespace ({', '.join(XATTR_NAMESPACES)})")
    if name.startswith(RESERVED_XATTR_PREFIX):
        raise errors.NotPermitted(f"{name!r} is a read-only attribute of the mount")


class Xattrs:
    """The nodes' extended attributes (one transaction per call)."""

    def __init__(self, txn: TxRunner, changes: ChangeLog) -> None:
        self.txn = txn
        self.changes = changes

    @staticmethod
    def _need_node(tx: MetaTx, uid: int, node_id: int) -> NodeRow:
        row = tx.node(uid, node_id)
        if row is None:
            raise errors.NotFound(f"no node {node_id}")
        return row

    def _touch(self, tx: MetaTx, uid: int, row: NodeRow) -> None:
        """Set the node's ctime to this transaction's time and log the change so stamped."""
        ns = int(tx.now * 1e9)
        tx.set_node_ctime(uid, row.id, ns)
        self.changes.record(tx, uid, ChangeRecord(ChangeKind.ATTR, row.id, row.parent,
                                                  row.name, ns))

    def get(self, uid: int, node_id: int, name: str) -> bytes:
        """Raises NotFound, NoSuchAttribute."""
        with self.txn.run(write=False) as tx:
            self._need_node(tx, uid, node_id)
            value = tx.xattr(uid, node_id, name) if isinstance(name, str) else None
            if value is None:
                raise errors.NoSuchAttribute(f"node {node_id} has no attribute {name!r}")
            return value

    def list(self, uid: int, node_id: int) -> list[str]:
        """Raises NotFound."""
        with self.txn.run(write=False) as tx:
            self._need_node(tx, uid, node_id)
            return tx.xattr_names(uid, node_id)

    def set(self, uid: int, node_id: int, name: str, value: bytes,
            mode: XattrMode = XattrMode.EITHER) -> None:
        """Raises NotFound, AlreadyExists, NoSuchAttribute, InvalidArgument, NotPermitted,
        AttributeTooBig, AttributesFull."""
        check_xattr_name(name)
        if not isinstance(value, bytes | bytearray | memoryview):
            raise errors.InvalidArgument("an attribute value is bytes")
        value = bytes(value)
        if len(value) > MAX_XATTR_VALUE:
            raise errors.AttributeTooBig(
                f"attribute value of {len(value)} bytes exceeds {MAX_XATTR_VALUE}")
        mode = XattrMode(mode)
        with self.txn.run() as tx:
            row = self._need_node(tx, uid, node_id)
            exists = tx.xattr(uid, node_id, name) is not None
            if mode is XattrMode.CREATE and exists:
                raise errors.AlreadyExists(f"node {node_id} has attribute {name!r}")
            if mode is XattrMode.REPLACE and not exists:
                raise errors.NoSuchAttribute(f"node {node_id} has no attribute {name!r}")
            total = tx.xattr_bytes(uid, node_id, without=name) + len(name.encode(
                "utf-8", "surrogateescape")) + len(value)
            if total > MAX_XATTR_TOTAL:
                raise errors.AttributesFull(
                    f"node {node_id}'s attributes would take {total} bytes, over "
                    f"{MAX_XATTR_TOTAL}")
            tx.put_xattr(uid, node_id, name, value)
            self._touch(tx, uid, row)

    def remove(self, uid: int, node_id: int, name: str) -> None:
        """Raises NotFound, NoSuchAttribute."""
        with self.txn.run() as tx:
            row = self._need_node(tx, uid, node_id)
            if not isinstance(name, str) or tx.xattr(uid, node_id, name) is None:
                raise errors.NoSuchAttribute(f"node {node_id} has no attribute {name!r}")
            tx.delete_xattr(uid, node_id, name)
            self._touch(tx, uid, row)
