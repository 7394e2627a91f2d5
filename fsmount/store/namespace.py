"""The namespace: each user's tree of folders, files, symlinks and special files on stable
node ids.

A node has one name on its own row and any number of extra names (hard links, rows of
their own in the metadata backend; ``nlink`` counts them all).  Removing a name removes the
node only with its last name; when the name on the node's own row goes, the node's first
extra name moves onto the row, so that a node's row always carries one of its names.
Folders have exactly one name.  Ownership is numeric and kept as given (None: made without
one); the rules of who may change it are the mount's (POSIX's), not the store's.

A file is an ordered tuple of documents (its segments).  Every change is one transaction:
creating a file over an existing one, replacing a file's content and renaming over a target
are atomic, and the documents a change unlinks are released to their grace period
(:meth:`fsmount.store.lifetime.Lifetime.release_documents`).  Every change appends its
rows to the user's change log (:mod:`fsmount.store.changes`) in the same transaction.  Usage (bytes of files, count
of nodes) is kept per user as nodes change; growth is checked against the quota.
"""

from __future__ import annotations

from .. import errors
from ..remote import (
    ROOT_ID,
    SPECIAL_KINDS,
    ChangeKind,
    Document,
    FileLocation,
    Listing,
    Node,
    NodeKind,
    Owner,
)
from .changes import ChangeLog
from .hooks import HookPoint, StoreHooks
from .lifetime import Lifetime
from .meta import MetaTx
from .reads import Reads
from .rows import ChangeRecord, NodeRow
from .txn import TxRunner
from .users import Users

__all__ = ["EMPTY_SHA256", "MAX_LIST_LIMIT", "MAX_NAME_BYTES", "MAX_SYMLINK_BYTES",
           "Namespace", "check_name", "whole_file_sha256"]

#: SHA-256 of no bytes.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_HEX = frozenset("0123456789abcdef")


def whole_file_sha256(tx: MetaTx, docs: list[tuple[int, int]], claimed: str | None
                      ) -> str | None:
    """The SHA-256 to keep for a file whose content is ``docs`` ((doc id, size) in
    order): the store's own where it knows it (no segment, or one: that document's),
    else what the writer computed (``claimed``: it saw every byte), else None.

    Raises InvalidArgument: ``claimed`` is not 64 lower-case hex digits, or contradicts
    what the store knows."""
    if claimed is not None and (len(claimed) != 64 or not set(claimed) <= _HEX):
        raise errors.InvalidArgument("sha256 must be 64 lower-case hex digits")
    if len(docs) > 1:
        return claimed
    known = EMPTY_SHA256
    if docs:
        doc = tx.document(docs[0][0])
        assert doc is not None, "a resolved location has its document"
        known = doc.sha256
    if claimed is not None and claimed != known:
        raise errors.InvalidArgument(f"sha256 {claimed} is not the content's ({known})")
    return known

MAX_NAME_BYTES = 255
MAX_SYMLINK_BYTES = 4096
MAX_LIST_LIMIT = 10_000
#: Most node ids one reserve_node_ids call hands out.
MAX_RESERVE = 10_000
#: Numeric ids (uid/gid) a store keeps: 0..2**32-2 (2**32-1 is chown's "no change").
MAX_OWNER_ID = 2**32 - 2


def check_name(name: str) -> None:
    """Raises InvalidName unless ``name`` may name a node."""
    if not isinstance(name, str) or not name:
        raise errors.InvalidName("empty name")
    if name in (".", ".."):
        raise errors.InvalidName(f"{name!r} is reserved")
    if "/" in name or "\0" in name:
        raise errors.InvalidName(f"{name!r} contains '/' or NUL")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.InvalidName(f"{name!r} is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise errors.NameTooLong(f"name of {len(encoded)} bytes exceeds {MAX_NAME_BYTES}")


def _name_ok(name: object) -> bool:
    try:
        check_name(name)  # type: ignore[arg-type]
    except errors.InvalidName:
        return False
    return True


def _file_size(row: NodeRow) -> int:
    """What a node counts against its user's bytes (only files do)."""
    return row.size if row.kind is NodeKind.FILE else 0


class Namespace:
    """The users' trees."""

    def __init__(self, txn: TxRunner, users: Users, reads: Reads, lifetime: Lifetime,
                 hooks: StoreHooks, changes: ChangeLog) -> None:
        self.txn = txn
        self.changes = changes
        self.users = users
        self.reads = reads
        self.lifetime = lifetime
        self.hooks = hooks

    # --- rows -----------------------------------------------------------------------------

    def _log(self, tx: MetaTx, uid: int, kind: ChangeKind, row_id: int, parent: int,
             name: str, *, old: tuple[int, str] | None = None) -> None:
        """Log a change stamped with this transaction's time (the ctime it sets)."""
        self.changes.record(tx, uid, ChangeRecord(
            kind, row_id, parent, name, int(tx.now * 1e9),
            old[0] if old else None, old[1] if old else None))

    @staticmethod
    def _row(tx: MetaTx, uid: int, node_id: int) -> NodeRow:
        row = tx.node(uid, node_id)
        if row is None:
            raise errors.NotFound(f"no node {node_id}")
        return row

    def _dir_row(self, tx: MetaTx, uid: int, node_id: int) -> NodeRow:
        row = self._row(tx, uid, node_id)
        if row.kind is not NodeKind.DIR:
            raise errors.NotADirectory(f"node {node_id} is not a folder")
        return row

    @staticmethod
    def _with_segments(tx: MetaTx, uid: int, row: NodeRow) -> Node:
        if row.kind is not NodeKind.FILE:
            return row.node()
        segs = tx.segments(uid, [row.id]).get(row.id)
        return row.node(tuple(segs or ()))

    def _node(self, tx: MetaTx, uid: int, node_id: int) -> Node:
        return self._with_segments(tx, uid, self._row(tx, uid, node_id))

    @staticmethod
    def _check_reserved(tx: MetaTx, uid: int, node_id: int | None) -> None:
        """A node id a caller asks to create with: reserved (reserve_node_ids) and free.

        Raises NodeIdInvalid."""
        if node_id is None:
            return
        if not isinstance(node_id, int) or isinstance(node_id, bool) or not (
                ROOT_ID < node_id < tx.next_node_id(uid)):
            raise errors.NodeIdInvalid(f"node id {node_id!r} was never reserved")
        if tx.node(uid, node_id) is not None:
            raise errors.NodeIdInvalid(f"node id {node_id} is in use")

    def _new_node(self, tx: MetaTx, uid: int, parent: int, name: str, kind: NodeKind,
                  mode: int, size: int, mtime_ns: int | None, target: str | None = None, *,
                  owner: Owner | None = None, rdev: int = 0, node_id: int | None = None
                  ) -> int:
        """Insert a node (with ``node_id``, reserved and checked by the caller, or the
        next one); returns its id."""
        node_id = tx.allocate_node_id(uid, size if kind is NodeKind.FILE else 0, node_id)
        ns = int(tx.now * 1e9)
        o_uid, o_gid = (None, None) if owner is None else _check_owner(owner)
        is_dir = kind is NodeKind.DIR
        tx.insert_node(uid, NodeRow(node_id, parent, name, kind, mode & 0o7777, size,
                                    ns if mtime_ns is None else int(mtime_ns), ns, 0, target,
                                    uid=o_uid, gid=o_gid, rdev=int(rdev),
                                    nlink=2 if is_dir else 1))
        if is_dir:
            self._count_subfolder(tx, uid, parent, +1)
        return node_id

    @staticmethod
    def _count_subfolder(tx: MetaTx, uid: int, folder_id: int, delta: int) -> None:
        """A folder's nlink is 2 plus its subfolders (each one's ``..``), as on ext4."""
        row = tx.node(uid, folder_id)
        if row is not None and row.kind is NodeKind.DIR:
            tx.set_node_nlink(uid, folder_id, max(2, row.nlink + delta))

    @staticmethod
    def _touch_dir(tx: MetaTx, uid: int, dir_id: int) -> None:
        tx.touch_node(uid, dir_id, int(tx.now * 1e9))

    def _delete_node(self, tx: MetaTx, uid: int, row: NodeRow) -> None:
        """Delete a file, symlink, special file or empty folder row (with its extra names
        and attributes) and reclaim its content."""
        docs = tx.segment_doc_ids(uid, row.id)
        tx.delete_segments(uid, row.id)
        tx.delete_xattrs(uid, row.id)
        if row.kind is NodeKind.DIR:
            self._count_subfolder(tx, uid, row.parent, -1)
        elif row.nlink > 1:
            tx.delete_names(uid, row.id)
        tx.delete_node(uid, row.id)
        tx.adjust_usage(uid, nodes=-1, used_bytes=-_file_size(row))
        self.lifetime.release_documents(tx, docs)

    def _remove_name(self, tx: MetaTx, uid: int, row: NodeRow) -> bool:
        """Remove the name ``row`` was found by (:meth:`MetaTx.child`); the node goes with
        its last name.  Returns whether the node was deleted."""
        if row.nlink <= 1 or row.kind is NodeKind.DIR:
            self._delete_node(tx, uid, row)
            return True
        ns = int(tx.now * 1e9)
        own = self._row(tx, uid, row.id)
        if (own.parent, own.name) == (row.parent, row.name):
            # The node's own row loses its name: its first extra name moves onto the row.
            first = tx.names(uid, row.id)[0]
            tx.delete_name(uid, first.parent, first.name)
            tx.move_node(uid, row.id, first.parent, first.name, ns)
        else:
            tx.delete_name(uid, row.parent, row.name)
        tx.set_node_nlink(uid, row.id, row.nlink - 1)
        tx.set_node_ctime(uid, row.id, ns)
        return False

    def _documents_for(self, tx: MetaTx, uid: int, segments: tuple[FileLocation, ...]
                       ) -> list[tuple[int, int]]:
        """(doc id, size) of each location; raises FileIdInvalid, FileReferenceExpired."""
        if not isinstance(segments, tuple | list):
            raise errors.InvalidArgument("segments must be a tuple of FileLocation")
        return [(loc.id, self.reads.resolve(tx, uid, loc).size) for loc in segments]

    def _check_quota(self, tx: MetaTx, uid: int, grow: int) -> None:
        if grow > 0:
            self.users.check_quota(self.users.row(tx, uid), grow)

    @staticmethod
    def _set_segments(tx: MetaTx, uid: int, node_id: int, docs: list[tuple[int, int]]) -> None:
        for idx, (doc_id, _) in enumerate(docs):
            tx.insert_segment(uid, node_id, idx, doc_id)
            tx.set_document_expiry(doc_id, None)

    # --- reading --------------------------------------------------------------------------

    def getattr(self, uid: int, node_id: int) -> Node:
        """Raises NotFound."""
        with self.txn.run(write=False) as tx:
            return self._node(tx, uid, node_id)

    def lookup(self, uid: int, parent: int, name: str) -> Node:
        """Raises NotFound, NotADirectory, NameTooLong."""
        with self.txn.run(write=False) as tx:
            self._dir_row(tx, uid, parent)
            if isinstance(name, str) and len(name.encode("utf-8", "surrogateescape")) > (
                    MAX_NAME_BYTES):
                raise errors.NameTooLong(f"a name of more than {MAX_NAME_BYTES} bytes")
            if not _name_ok(name):
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            row = tx.child(uid, parent, name)
            if row is None:
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            return self._with_segments(tx, uid, row)

    def list_folder(self, uid: int, folder_id: int, after: str | None = None,
                    limit: int = 1000) -> Listing:
        """One page of a folder's entries in name order.  Raises NotFound, NotADirectory,
        InvalidArgument (limit not in 1..10000)."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise errors.InvalidArgument(f"limit {limit!r} is not in 1..{MAX_LIST_LIMIT}")
        with self.txn.run(write=False) as tx:
            self._dir_row(tx, uid, folder_id)
            rows = [r for r in tx.children(uid, folder_id, after or "", limit + 1)
                    if r.id != ROOT_ID]
            more = len(rows) > limit
            rows = rows[:limit]
            segs: dict[int, list[Document]] = tx.segments(
                uid, [r.id for r in rows if r.kind is NodeKind.FILE])
            entries = tuple(r.node(tuple(segs.get(r.id) or ())) for r in rows)
        return Listing(entries=entries, next_after=rows[-1].name if more and rows else None)

    # --- changing -------------------------------------------------------------------------

    def reserve_node_ids(self, uid: int, count: int) -> int:
        """Hand out ``count`` (1..MAX_RESERVE) node ids that nothing else will be given: the
        caller creates nodes with them later (``node_id=``), so that it knows a new node's
        id before the store has it.  Returns the first.  Raises InvalidArgument."""
        if not isinstance(count, int) or isinstance(count, bool) or not (
                1 <= count <= MAX_RESERVE):
            raise errors.InvalidArgument(f"count {count!r} is not in 1..{MAX_RESERVE}")
        with self.txn.run() as tx:
            return tx.reserve_node_ids(uid, count)

    def mkdir(self, uid: int, parent: int, name: str, mode: int = 0o755, *,
              owner: Owner | None = None, node_id: int | None = None) -> Node:
        """Raises AlreadyExists, NotFound, NotADirectory, InvalidName, InvalidArgument (an
        owner id out of range), NodeIdInvalid (``node_id`` not reserved, or in use)."""
        check_name(name)
        with self.txn.run() as tx:
            self._dir_row(tx, uid, parent)
            if tx.child(uid, parent, name):
                raise errors.AlreadyExists(f"{name!r} exists in folder {parent}")
            self._check_reserved(tx, uid, node_id)
            nid = self._new_node(tx, uid, parent, name, NodeKind.DIR, mode, 0, None,
                                 owner=owner, node_id=node_id)
            self._touch_dir(tx, uid, parent)
            self._log(tx, uid, ChangeKind.CREATE, nid, parent, name)
            return self._node(tx, uid, nid)

    def create_file(self, uid: int, parent: int, name: str,
                    segments: tuple[FileLocation, ...] = (), *, mode: int = 0o644,
                    mtime_ns: int | None = None, replace: bool = False,
                    sha256: str | None = None, owner: Owner | None = None,
                    node_id: int | None = None) -> Node:
        """Create a file from documents; with ``replace`` an existing file (or symlink) of
        that name is replaced in the same transaction (the new file gets a new node id:
        ``node_id`` if given, one the caller reserved; a replaced node with other names
        keeps them).

        Raises AlreadyExists, IsADirectory, NotFound, NotADirectory, InvalidName,
        FileIdInvalid, FileReferenceExpired, QuotaExceeded, InvalidArgument (owner),
        NodeIdInvalid.
        """
        check_name(name)
        with self.txn.run() as tx:
            self.lifetime.maybe_sweep(tx)
            self._dir_row(tx, uid, parent)
            docs = self._documents_for(tx, uid, tuple(segments))
            size = sum(s for _, s in docs)
            old = tx.child(uid, parent, name)
            old_size = 0
            if old is not None:
                if old.kind is NodeKind.DIR:
                    raise errors.IsADirectory(f"{name!r} is a folder")
                if not replace:
                    raise errors.AlreadyExists(f"{name!r} exists in folder {parent}")
                old_size = _file_size(old) if old.nlink <= 1 else 0
            self._check_quota(tx, uid, size - old_size)
            self._check_reserved(tx, uid, node_id)
            if old is not None:
                self._remove_name(tx, uid, old)
                self._log(tx, uid, ChangeKind.DELETE, old.id, parent, name)
            nid = self._new_node(tx, uid, parent, name, NodeKind.FILE, mode, size, mtime_ns,
                                 owner=owner, node_id=node_id)
            self._set_segments(tx, uid, nid, docs)
            tx.set_node_sha256(uid, nid, whole_file_sha256(tx, docs, sha256))
            self._touch_dir(tx, uid, parent)
            self._log(tx, uid, ChangeKind.CREATE, nid, parent, name)
            return self._node(tx, uid, nid)

    def set_content(self, uid: int, node_id: int, segments: tuple[FileLocation, ...], *,
                    mtime_ns: int | None = None, sha256: str | None = None) -> Node:
        """Atomically replace a file's content; bumps its version.

        Raises NotFound, IsADirectory, InvalidArgument (a symlink), FileIdInvalid,
        FileReferenceExpired, QuotaExceeded.
        """
        with self.txn.run() as tx:
            self.lifetime.maybe_sweep(tx)
            row = self._row(tx, uid, node_id)
            if row.kind is NodeKind.DIR:
                raise errors.IsADirectory(f"node {node_id} is a folder")
            if row.kind is not NodeKind.FILE:
                raise errors.InvalidArgument(f"node {node_id} is not a regular file")
            docs = self._documents_for(tx, uid, tuple(segments))
            size = sum(s for _, s in docs)
            self._check_quota(tx, uid, size - row.size)
            old_docs = tx.segment_doc_ids(uid, node_id)
            tx.delete_segments(uid, node_id)
            self._set_segments(tx, uid, node_id, docs)
            ns = int(tx.now * 1e9)
            tx.set_node_content(uid, node_id, size, ns if mtime_ns is None else int(mtime_ns), ns)
            tx.set_node_sha256(uid, node_id, whole_file_sha256(tx, docs, sha256))
            tx.adjust_usage(uid, used_bytes=size - row.size)
            self.lifetime.release_documents(tx, old_docs)
            self._log(tx, uid, ChangeKind.CONTENT, node_id, row.parent, row.name)
            self.hooks.reached(HookPoint.SET_CONTENT_BEFORE_COMMIT)
            tx.hook_after = HookPoint.SET_CONTENT_AFTER_COMMIT
            return self._node(tx, uid, node_id)

    def symlink(self, uid: int, parent: int, name: str, target: str, *,
                owner: Owner | None = None, node_id: int | None = None) -> Node:
        """Raises AlreadyExists, NotFound, NotADirectory, InvalidName, InvalidArgument,
        NodeIdInvalid."""
        check_name(name)
        if not isinstance(target, str) or not target or "\0" in target:
            raise errors.InvalidArgument("a symlink target is a non-empty string without NUL")
        size = len(target.encode("utf-8", "surrogateescape"))
        if size > MAX_SYMLINK_BYTES:
            raise errors.InvalidArgument(f"symlink target of {size} bytes is too long")
        with self.txn.run() as tx:
            self._dir_row(tx, uid, parent)
            if tx.child(uid, parent, name):
                raise errors.AlreadyExists(f"{name!r} exists in folder {parent}")
            self._check_reserved(tx, uid, node_id)
            nid = self._new_node(tx, uid, parent, name, NodeKind.SYMLINK, 0o777, size, None,
                                 target, owner=owner, node_id=node_id)
            self._touch_dir(tx, uid, parent)
            self._log(tx, uid, ChangeKind.CREATE, nid, parent, name)
            return self._node(tx, uid, nid)

    def setattr(self, uid: int, node_id: int, *, mode: int | None = None,
                mtime_ns: int | None = None) -> Node:
        """Change permission bits or mtime.  Raises NotFound."""
        with self.txn.run() as tx:
            row = self._row(tx, uid, node_id)
            ns = int(tx.now * 1e9)
            if mode is not None:
                tx.set_node_mode(uid, node_id, int(mode) & 0o7777)
            if mtime_ns is not None:
                tx.set_node_mtime(uid, node_id, int(mtime_ns))
            tx.set_node_ctime(uid, node_id, ns)
            self._log(tx, uid, ChangeKind.ATTR, node_id, row.parent, row.name)
            return self._node(tx, uid, node_id)

    def rename(self, uid: int, parent: int, name: str, new_parent: int, new_name: str, *,
               replace: bool = True) -> Node:
        """Move a node (a folder moves as one row change).  Over an existing file, or an
        empty folder for a folder, it replaces the target in the same transaction.

        Raises NotFound, NotADirectory, AlreadyExists (``replace=False``), NotEmpty,
        IsADirectory, InvalidArgument (a folder into its own subtree), InvalidName.
        """
        check_name(new_name)
        with self.txn.run() as tx:
            self._dir_row(tx, uid, parent)
            self._dir_row(tx, uid, new_parent)
            src = tx.child(uid, parent, name) if _name_ok(name) else None
            if src is None:
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            src_is_dir = src.kind is NodeKind.DIR
            if src_is_dir:
                # Walk up from the destination: moving a folder below itself would cut the
                # subtree off the root.
                cur = new_parent
                for _ in range(1_000_000):
                    if cur == src.id:
                        raise errors.InvalidArgument(f"cannot move folder {name!r} into itself")
                    if cur == ROOT_ID:
                        break
                    cur = self._row(tx, uid, cur).parent
            dst = tx.child(uid, new_parent, new_name)
            if dst is not None and dst.id == src.id:
                # The same name, or two names of one node (hard links): POSIX says rename
                # does nothing then.
                return self._with_segments(tx, uid, src)
            if dst is not None:
                if not replace:
                    raise errors.AlreadyExists(f"{new_name!r} exists in folder {new_parent}")
                dst_is_dir = dst.kind is NodeKind.DIR
                if src_is_dir and not dst_is_dir:
                    raise errors.NotADirectory(f"{new_name!r} is not a folder")
                if not src_is_dir and dst_is_dir:
                    raise errors.IsADirectory(f"{new_name!r} is a folder")
                if dst_is_dir and tx.has_children(uid, dst.id):
                    raise errors.NotEmpty(f"folder {new_name!r} is not empty")
                self._remove_name(tx, uid, dst)
                self._log(tx, uid, ChangeKind.DELETE, dst.id, new_parent, new_name)
            ns = int(tx.now * 1e9)
            own = self._row(tx, uid, src.id)
            if (own.parent, own.name) == (parent, name):
                tx.move_node(uid, src.id, new_parent, new_name, ns)
                if src_is_dir and new_parent != parent:
                    self._count_subfolder(tx, uid, parent, -1)
                    self._count_subfolder(tx, uid, new_parent, +1)
            else:
                tx.move_name(uid, parent, name, new_parent, new_name)
                tx.set_node_ctime(uid, src.id, ns)
            self._touch_dir(tx, uid, parent)
            if new_parent != parent:
                self._touch_dir(tx, uid, new_parent)
            self._log(tx, uid, ChangeKind.RENAME, src.id, new_parent, new_name,
                      old=(parent, src.name))
            self.hooks.reached(HookPoint.RENAME_BEFORE_COMMIT)
            tx.hook_after = HookPoint.RENAME_AFTER_COMMIT
            moved = tx.child(uid, new_parent, new_name)
            assert moved is not None, "the node just moved there"
            return self._with_segments(tx, uid, moved)

    def unlink(self, uid: int, parent: int, name: str) -> int:
        """Remove a name of a file, symlink or special file (the node goes with its last
        name).  Returns the change's stamp (the folder's new mtime and ctime, ns).  Raises
        NotFound, NotADirectory, IsADirectory."""
        with self.txn.run() as tx:
            self._dir_row(tx, uid, parent)
            row = tx.child(uid, parent, name) if _name_ok(name) else None
            if row is None:
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            if row.kind is NodeKind.DIR:
                raise errors.IsADirectory(f"{name!r} is a folder")
            self._remove_name(tx, uid, row)
            self._touch_dir(tx, uid, parent)
            self._log(tx, uid, ChangeKind.DELETE, row.id, parent, row.name)
            return int(tx.now * 1e9)

    def rmdir(self, uid: int, parent: int, name: str) -> int:
        """Remove an empty folder.  Returns the change's stamp (as :meth:`unlink`).  Raises
        NotFound, NotEmpty, NotADirectory."""
        with self.txn.run() as tx:
            self._dir_row(tx, uid, parent)
            row = tx.child(uid, parent, name) if _name_ok(name) else None
            if row is None:
                raise errors.NotFound(f"no {name!r} in folder {parent}")
            if row.kind is not NodeKind.DIR:
                raise errors.NotADirectory(f"{name!r} is not a folder")
            if tx.has_children(uid, row.id):
                raise errors.NotEmpty(f"folder {name!r} is not empty")
            self._delete_node(tx, uid, row)
            self._touch_dir(tx, uid, parent)
            self._log(tx, uid, ChangeKind.DELETE, row.id, parent, row.name)
            return int(tx.now * 1e9)

    # --- POSIX: special files, hard links, ownership, times -------------------------------

    def mknod(self, uid: int, parent: int, name: str, kind: NodeKind, mode: int,
              rdev: int = 0, *, owner: Owner | None = None) -> Node:
        """A FIFO, socket or device node.  Raises AlreadyExists, NotFound, NotADirectory,
        InvalidName, InvalidArgument (not a special kind; rdev or owner out of range)."""
        check_name(name)
        if kind not in SPECIAL_KINDS:
            raise errors.InvalidArgument(f"mknod makes special files, not {kind!s}")
        if not isinstance(rdev, int) or not 0 <= rdev < 2**63:
            raise errors.InvalidArgument(f"rdev {rdev!r} is out of range")
        if kind not in (NodeKind.CHARDEV, NodeKind.BLOCKDEV):
            rdev = 0
        with self.txn.run() as tx:
            self._dir_row(tx, uid, parent)
            if tx.child(uid, parent, name):
                raise errors.AlreadyExists(f"{name!r} exists in folder {parent}")
            nid = self._new_node(tx, uid, parent, name, kind, mode, 0, None, owner=owner,
                                 rdev=rdev)
            self._touch_dir(tx, uid, parent)
            self._log(tx, uid, ChangeKind.CREATE, nid, parent, name)
            return self._node(tx, uid, nid)

    def link(self, uid: int, node_id: int, new_parent: int, new_name: str) -> Node:
        """One more name of a node.  Raises NotFound, NotADirectory, AlreadyExists,
        InvalidName, NotPermitted (a folder)."""
        check_name(new_name)
        with self.txn.run() as tx:
            row = self._row(tx, uid, node_id)
            if row.kind is NodeKind.DIR:
                raise errors.NotPermitted("a folder has one name (no hard links to folders)")
            self._dir_row(tx, uid, new_parent)
            if tx.child(uid, new_parent, new_name):
                raise errors.AlreadyExists(f"{new_name!r} exists in folder {new_parent}")
            tx.insert_name(uid, node_id, new_parent, new_name)
            tx.set_node_nlink(uid, node_id, row.nlink + 1)
            tx.set_node_ctime(uid, node_id, int(tx.now * 1e9))
            self._touch_dir(tx, uid, new_parent)
            # A new name of an existing node: its attributes (nlink, ctime) and the folder.
            self._log(tx, uid, ChangeKind.CREATE, node_id, new_parent, new_name)
            self._log(tx, uid, ChangeKind.ATTR, node_id, row.parent, row.name)
            linked = tx.child(uid, new_parent, new_name)
            assert linked is not None, "the name was just inserted"
            return self._with_segments(tx, uid, linked)

    def chown(self, uid: int, node_id: int, *, owner_uid: int | None = None,
              owner_gid: int | None = None) -> Node:
        """Set the numeric owner and/or group; sets the ctime.  Raises NotFound,
        InvalidArgument (an id out of range)."""
        for v in (owner_uid, owner_gid):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                                  or not 0 <= v <= MAX_OWNER_ID):
                raise errors.InvalidArgument(f"owner id {v!r} is not in 0..{MAX_OWNER_ID}")
        with self.txn.run() as tx:
            row = self._row(tx, uid, node_id)
            tx.set_node_owner(uid, node_id, owner_uid, owner_gid)
            tx.set_node_ctime(uid, node_id, int(tx.now * 1e9))
            self._log(tx, uid, ChangeKind.ATTR, node_id, row.parent, row.name)
            return self._node(tx, uid, node_id)

    def set_times(self, uid: int, node_id: int, *, atime_ns: int | None = None,
                  mtime_ns: int | None = None) -> Node:
        """Set atime and/or mtime; sets the ctime.  Raises NotFound."""
        with self.txn.run() as tx:
            row = self._row(tx, uid, node_id)
            if atime_ns is not None:
                tx.set_node_atime(uid, node_id, int(atime_ns))
            if mtime_ns is not None:
                tx.set_node_mtime(uid, node_id, int(mtime_ns))
            tx.set_node_ctime(uid, node_id, int(tx.now * 1e9))
            self._log(tx, uid, ChangeKind.ATTR, node_id, row.parent, row.name)
            return self._node(tx, uid, node_id)


def _check_owner(owner: Owner) -> tuple[int, int]:
    """Raises InvalidArgument unless both ids are in 0..MAX_OWNER_ID."""
    for v in owner:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_OWNER_ID:
            raise errors.InvalidArgument(f"owner id {v!r} is not in 0..{MAX_OWNER_ID}")
    return int(owner[0]), int(owner[1])
