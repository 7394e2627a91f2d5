"""The store's invariant check (an fsck): tests run it after every change to a store.

:func:`check` opens the store's SQLite database read-only (or, for a store whose metadata
is in PostgreSQL, ``DIR/metadata.url``, one read-only snapshot of that database: the same
tables and statements) and compares it with itself and with the files on disk.  It never repairs anything; it returns one line per problem.
A store whose content is in S3 (``DIR/content.url``) has its blobs and parts checked
against the bucket's object listing under its prefix instead (:func:`_check_objects`):
every blob's chunks present with the right sizes, every part object there, and every
object nobody references reported as an orphan (``fsmount fsck --reclaim``... no: the
next exclusive open's orphan sweep reclaims them, as for local files).
Run it while the store is quiescent (files of an upload in flight in another process would
be reported as orphans).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import errors
from .protocol import HASH_BLOCK
from .remote import ROOT_ID, NodeKind
from .store import Hasher, upload_relpath
from .store.content_select import content_url
from .store.meta_select import metadata_url

if TYPE_CHECKING:
    from .store.s3content import S3Content

__all__ = ["check"]

#: Walking up from a node stops after this many steps (a cycle, or a broken tree).
MAX_DEPTH = 100_000


def check(store_path: str | os.PathLike[str], *, deep: bool = False) -> list[str]:
    """Return the store's problems (empty when every invariant holds).

    With ``deep`` also re-hash every blob and compare with its SHA-256 and block hashes.

    Raises:
        FileNotFoundError: there is no store at ``store_path``.
        InvalidArgument: its database cannot be read.
    """
    root = Path(store_path)
    pg_url = metadata_url(root)
    if pg_url is not None:
        return _check_pg(root, pg_url, deep)
    dbfile = root / "meta.sqlite"
    if not dbfile.exists():
        raise FileNotFoundError(f"no store at {root}")
    db = sqlite3.connect(f"file:{dbfile}?mode=ro", uri=True, timeout=30.0)
    try:
        db.execute("BEGIN")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return _check_all(db, root, deep, tables)
    except sqlite3.Error as exc:
        raise errors.InvalidArgument(f"{dbfile} is not a usable store database: {exc}") from None
    finally:
        db.close()


def _check_pg(root: Path, url: str, deep: bool) -> list[str]:
    """The same checks on a store whose metadata is in PostgreSQL: the same tables and
    statements, read in one snapshot (``REPEATABLE READ READ ONLY``).

    Raises InvalidArgument (no store tables there), FsmountError (unreachable).
    """
    import psycopg

    from .store.pg_meta import check_pg_url

    try:
        with psycopg.connect(check_pg_url(url), connect_timeout=10) as db:
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            tables = {r[0] for r in db.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()")}
            if "nodes" not in tables:
                raise errors.InvalidArgument(f"no store in {url.split('?', 1)[0]}")
            return _check_all(db, root, deep, tables)
    except psycopg.Error as exc:
        raise errors.FsmountError(
            f"metadata database {url.split('?', 1)[0]}: {exc}") from None


def _check_all(db: Any, root: Path, deep: bool, tables: set[str]) -> list[str]:
    """Every check, on an open read-only snapshot ``db`` (sqlite3 or psycopg)."""
    url = content_url(root)
    if url is not None:
        from .store.s3content import S3Content, parse_s3_url

        objects = S3Content(parse_s3_url(url))
        problems = _check(db, root, deep, objects, tables)
        return problems + _check_objects(db, objects, deep)
    return _check(db, root, deep, None, tables)


def _check(db: Any, root: Path, deep: bool, objects: S3Content | None, tables: set[str]
           ) -> list[str]:
    """Everything; with ``objects`` (S3 content) not the content files, which
    :func:`_check_objects` compares with the object listing."""
    problems: list[str] = []
    p = problems.append

    users = {r[0]: r for r in db.execute(
        "SELECT id, name, next_node_id, used_bytes, node_count FROM users")}
    nodes: dict[tuple[int, int], tuple] = {}
    for r in db.execute("SELECT user_id, id, parent, name, kind, size, target FROM nodes"):
        nodes[(r[0], r[1])] = r
    # --- roots and tree shape --------------------------------------------------------
    for uid, u in users.items():
        rootnode = nodes.get((uid, ROOT_ID))
        if rootnode is None:
            p(f"user {uid} ({u[1]}) has no root folder")
        elif rootnode[4] != "dir" or rootnode[2] != ROOT_ID:
            p(f"user {uid} root is not a folder that is its own parent")
    names: set[tuple[int, int, str]] = set()
    for (uid, nid), r in nodes.items():
        if uid not in users:
            p(f"node {uid}/{nid} belongs to no user")
            continue
        if nid >= users[uid][2]:
            p(f"node {uid}/{nid} is not below the user's next id {users[uid][2]}")
        if r[4] not in _KINDS:
            p(f"node {uid}/{nid} has kind {r[4]!r}")
        if nid == ROOT_ID:
            continue
        parent = nodes.get((uid, r[2]))
        if parent is None:
            p(f"node {uid}/{nid} has a missing parent {r[2]}")
        elif parent[4] != "dir":
            p(f"node {uid}/{nid} has a parent {r[2]} that is not a folder")
        key = (uid, r[2], r[3])
        if key in names:
            p(f"name {r[3]!r} appears twice in folder {uid}/{r[2]}")
        names.add(key)
        if not r[3] or "/" in r[3] or "\0" in r[3] or r[3] in (".", ".."):
            p(f"node {uid}/{nid} has an invalid name {r[3]!r}")
        if r[4] == "symlink" and not r[6]:
            p(f"symlink {uid}/{nid} has no target")
        # No cycles: every node reaches the root.
        cur, steps = r, 0
        while cur is not None and cur[1] != ROOT_ID and steps < MAX_DEPTH:
            cur = nodes.get((uid, cur[2]))
            steps += 1
        if cur is None or cur[1] != ROOT_ID:
            p(f"node {uid}/{nid} does not reach the root (cycle or broken chain)")

    # --- extra names (hard links) and extended attributes ------------------------------
    _check_names(db, nodes, names, p, tables)

    # --- documents and segments --------------------------------------------------------
    docs = {r[0]: r for r in db.execute(
        "SELECT id, user_id, sha256, size, expires_at FROM documents")}
    next_doc = db.execute("SELECT value FROM meta WHERE key = 'next_doc_id'").fetchone()
    next_doc_id = next_doc[0] if next_doc else 1
    for doc_id in docs:
        if doc_id >= next_doc_id:
            p(f"document {doc_id} is not below next_doc_id {next_doc_id}")
    for (tid,) in db.execute("SELECT id FROM doc_tombstones"):
        if tid in docs:
            p(f"document {tid} is both live and a tombstone")
    seg_sizes: dict[tuple[int, int], int] = {}
    linked: set[int] = set()
    for uid, nid, _idx, doc_id in db.execute(
        "SELECT user_id, node_id, idx, doc_id FROM segments ORDER BY user_id, node_id, idx"
    ):
        node = nodes.get((uid, nid))
        if node is None:
            p(f"segment of missing node {uid}/{nid}")
            continue
        if node[4] != "file":
            p(f"segment on non-file node {uid}/{nid}")
        d = docs.get(doc_id)
        if d is None:
            p(f"node {uid}/{nid} references missing document {doc_id}")
            continue
        if d[1] != uid:
            p(f"node {uid}/{nid} references document {doc_id} of user {d[1]}")
        if d[4] is not None:
            p(f"document {doc_id} is linked by {uid}/{nid} but still has an expiry")
        linked.add(doc_id)
        seg_sizes[(uid, nid)] = seg_sizes.get((uid, nid), 0) + d[3]
    for (uid, nid), r in nodes.items():
        if r[4] == "file" and r[5] != seg_sizes.get((uid, nid), 0):
            p(f"file {uid}/{nid} has size {r[5]}, its segments add up to "
              f"{seg_sizes.get((uid, nid), 0)}")
    for doc_id, d in docs.items():
        if doc_id not in linked and d[4] is None:
            p(f"document {doc_id} is referenced by no file and never expires (leak)")

    # --- usage -------------------------------------------------------------------------
    for uid, u in users.items():
        used = sum(r[5] for (nu, _), r in nodes.items() if nu == uid and r[4] == "file")
        count = sum(1 for (nu, _) in nodes if nu == uid)
        if used != u[3]:
            p(f"user {uid} used_bytes {u[3]} != sum of file sizes {used}")
        if count != u[4]:
            p(f"user {uid} node_count {u[4]} != number of nodes {count}")

    # --- blobs ---------------------------------------------------------------------------
    blobs = {r[0]: r for r in db.execute(
        "SELECT sha256, size, chunk_size, path, block_hashes, block_crc32c FROM blobs")}
    used_blobs = {d[2] for d in docs.values()}
    for doc_id, d in docs.items():
        b = blobs.get(d[2])
        if b is None:
            p(f"document {doc_id} references missing blob {d[2]}")
        elif b[1] != d[3]:
            p(f"document {doc_id} has size {d[3]}, its blob {b[1]}")
    for sha, b in blobs.items():
        if sha not in used_blobs:
            p(f"blob {sha} is referenced by no document (leak)")
        if objects is None:
            _check_blob(root, b, deep, p)
    if objects is not None:
        return problems
    blob_paths = {b[3] for b in blobs.values()}
    blob_dir = root / "blobs"
    if blob_dir.is_dir():
        for prefix in blob_dir.iterdir():
            if not prefix.is_dir():
                p(f"stray file {prefix.relative_to(root)}")
                continue
            for entry in prefix.iterdir():
                rel = str(entry.relative_to(root))
                if rel not in blob_paths:
                    p(f"orphan blob {rel}")

    # --- uploads and parts ---------------------------------------------------------------
    part_rows: dict[str, set[str]] = {}
    uploads = {(r[0], r[1]) for r in db.execute("SELECT user_id, file_id FROM uploads")}
    for uid, fid, part, size in db.execute("SELECT user_id, file_id, part, size FROM parts"):
        if (uid, fid) not in uploads:
            p(f"part {part} of upload {uid}/{fid} has no upload row")
        rel = upload_relpath(uid, fid)
        part_rows.setdefault(rel, set()).add(str(part))
        try:
            actual = (root / rel / str(part)).stat().st_size
        except OSError:
            p(f"part file {rel}/{part} is missing")
            continue
        if actual != size:
            p(f"part file {rel}/{part} has {actual} bytes, recorded {size}")
    for uid, fid in uploads:
        if upload_relpath(uid, fid) not in part_rows:
            p(f"upload {uid}/{fid} has no parts")
    parts_dir = root / "parts"
    if parts_dir.is_dir():
        for user_dir in parts_dir.iterdir():
            if user_dir.name == "tmp" or not user_dir.is_dir():
                continue
            for up in user_dir.iterdir():
                rel = str(up.relative_to(root))
                keep = part_rows.get(rel, set())
                for f in up.iterdir() if up.is_dir() else [up]:
                    if f.name not in keep:
                        p(f"orphan part file {f.relative_to(root)}")
    return problems


#: Node kinds a store may hold.
_KINDS = frozenset(k.value for k in NodeKind)


def _check_names(db: Any, nodes: dict[tuple[int, int], tuple],
                 names: set[tuple[int, int, str]], p: Callable[[str], None],
                 tables: set[str]) -> None:
    """Extra names name an existing non-folder node in an existing folder, each name once
    among all names of the folder, and each node's ``nlink`` is 1 plus its extra names;
    every extended attribute belongs to an existing node."""
    if "node_names" not in tables:
        return  # a store from before hard links (schema version 2)
    extra: dict[tuple[int, int], int] = {}
    for uid, parent, name, nid in db.execute(
            "SELECT user_id, parent, name, node_id FROM node_names"):
        node = nodes.get((uid, nid))
        if node is None:
            p(f"extra name {name!r} in folder {uid}/{parent} names a missing node {nid}")
        elif node[4] == "dir":
            p(f"extra name {name!r} in folder {uid}/{parent} names folder {uid}/{nid}")
        folder = nodes.get((uid, parent))
        if folder is None or folder[4] != "dir":
            p(f"extra name {name!r} of node {uid}/{nid} is in {uid}/{parent}, not a folder")
        if (uid, parent, name) in names:
            p(f"name {name!r} appears twice in folder {uid}/{parent}")
        names.add((uid, parent, name))
        extra[(uid, nid)] = extra.get((uid, nid), 0) + 1
    subdirs: dict[tuple[int, int], int] = {}
    for (uid, nid), r in nodes.items():
        if r[4] == "dir" and nid != ROOT_ID:
            subdirs[(uid, r[2])] = subdirs.get((uid, r[2]), 0) + 1
    for uid, nid, nlink in db.execute("SELECT user_id, id, nlink FROM nodes"):
        if nodes[(uid, nid)][4] == "dir":
            if nlink != 2 + subdirs.get((uid, nid), 0):
                p(f"folder {uid}/{nid} has nlink {nlink}, but "
                  f"{subdirs.get((uid, nid), 0)} subfolders")
        elif nlink != 1 + extra.get((uid, nid), 0):
            p(f"node {uid}/{nid} has nlink {nlink}, but {1 + extra.get((uid, nid), 0)} names")
    for uid, nid, name in db.execute("SELECT user_id, node_id, name FROM xattrs"):
        if (uid, nid) not in nodes:
            p(f"attribute {name!r} belongs to a missing node {uid}/{nid}")


def _check_blob(root: Path, b: tuple, deep: bool, report: Callable[[str], None]) -> None:
    sha, size, chunk, rel, blocks, crcs = b
    path = root / rel
    if not path.is_dir():
        report(f"blob {sha} directory {rel} is missing")
        return
    if chunk <= 0:
        report(f"blob {sha} has chunk size {chunk}")
        return
    count = max(1, -(-size // chunk))
    expected = {str(i) for i in range(count)}
    present = {f.name for f in path.iterdir()}
    if present != expected:
        report(f"blob {rel} holds {sorted(present)[:5]}..., expected {count} chunks")
        return
    total = 0
    for i in range(count):
        s = (path / str(i)).stat().st_size
        want = chunk if i < count - 1 else size - chunk * (count - 1)
        if s != want:
            report(f"blob {rel} chunk {i} has {s} bytes, expected {want}")
        total += s
    nblocks = -(-size // HASH_BLOCK)
    if len(blocks) != 32 * nblocks:
        report(f"blob {sha} has {len(blocks) // 32} block hashes for {size} bytes")
    if crcs is not None and len(crcs) != 4 * nblocks:
        report(f"blob {sha} has {len(crcs) // 4} block CRC32Cs for {size} bytes")
    if deep and total == size:
        # The hasher finalize uses, fed the chunks as they are on disk now.
        h = Hasher()
        for i in range(count):
            h.update((path / str(i)).read_bytes())
        got = h.result()
        if got.sha256 != sha:
            report(f"blob {rel} content does not match its SHA-256")
        if got.blocks != bytes(blocks):
            report(f"blob {rel} block hashes do not match its content")
        if crcs is not None and got.crcs != bytes(crcs):
            report(f"blob {rel} block CRC32Cs do not match its content")


def _check_objects(db: Any, objects: S3Content, deep: bool) -> list[str]:
    """Blobs and parts of the metadata against the S3 object listing (one LIST pass)."""
    problems: list[str] = []
    p = problems.append
    listing = dict(objects.list_keys())
    seen: set[str] = set()
    for sha, size, chunk, rel, blocks, crcs in db.execute(
            "SELECT sha256, size, chunk_size, path, block_hashes, block_crc32c FROM blobs"):
        if chunk <= 0:
            p(f"blob {sha} has chunk size {chunk}")
            continue
        count = max(1, -(-size // chunk))
        names = [f"{rel}/{i}" for i in range(count)]
        seen.update(names)
        missing = [n for n in names if n not in listing]
        if len(missing) == count:
            p(f"blob {sha} objects {rel}/* are missing")
            continue
        if missing:
            p(f"blob {rel} lacks chunk objects {missing[:5]}")
            continue
        for i, n in enumerate(names):
            want = chunk if i < count - 1 else size - chunk * (count - 1)
            if listing[n] != want:
                p(f"blob {rel} chunk {i} has {listing[n]} bytes, expected {want}")
        nblocks = -(-size // HASH_BLOCK)
        if len(blocks) != 32 * nblocks:
            p(f"blob {sha} has {len(blocks) // 32} block hashes for {size} bytes")
        if deep:
            h = Hasher()
            for i in range(count):
                h.update(objects.read_range(rel, chunk, i * chunk, chunk))
            got = h.result()
            if got.sha256 != sha:
                p(f"blob {rel} content does not match its SHA-256")
            if got.blocks != bytes(blocks):
                p(f"blob {rel} block hashes do not match its content")
            if crcs is not None and got.crcs != bytes(crcs):
                p(f"blob {rel} block CRC32Cs do not match its content")
    uploads = {(r[0], r[1]) for r in db.execute("SELECT user_id, file_id FROM uploads")}
    with_parts: set[tuple[int, int]] = set()
    for uid, fid, part, size in db.execute("SELECT user_id, file_id, part, size FROM parts"):
        if (uid, fid) not in uploads:
            p(f"part {part} of upload {uid}/{fid} has no upload row")
        with_parts.add((uid, fid))
        name = f"{upload_relpath(uid, fid)}/{part}"
        seen.add(name)
        if name not in listing:
            p(f"part object {name} is missing")
        elif listing[name] != size:
            p(f"part object {name} has {listing[name]} bytes, recorded {size}")
    for uid, fid in sorted(uploads - with_parts):
        p(f"upload {uid}/{fid} has no parts")
    orphan_blobs: set[str] = set()
    for name in sorted(listing):
        if name in seen:
            continue
        if name.startswith("blobs/"):
            orphan_blobs.add(name.rsplit("/", 1)[0])
        elif name.startswith("parts/"):
            p(f"orphan part object {name}")
        elif not name.startswith("tmp/"):
            p(f"stray object {name}")
    for rel in sorted(orphan_blobs):
        p(f"orphan blob {rel}")
    return problems
