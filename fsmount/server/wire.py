"""JSON encoding of the remote interface's value types, shared by the server and the client.

Only the standard library and :mod:`fsmount.remote` are imported here, so that the HTTP
client (:mod:`fsmount.httpremote`) can use this module without the server's extra
dependencies.  Bulk bytes never pass through JSON: parts and getFile payloads travel as raw
HTTP bodies, and only hashes are hex strings.

Every ``*_from_json`` function raises :class:`fsmount.errors.InvalidArgument` when the value
does not have the expected shape, so malformed input from either side is a named error.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .. import errors
from ..protocol import HASH_BLOCK, FileType
from ..remote import (
    MAX_RUN_WINDOWS,
    BlockCheck,
    BlockChecksum,
    Change,
    ChangeBatch,
    ChangeKind,
    Document,
    FileHash,
    FileLocation,
    InputFile,
    InputFileBig,
    Listing,
    Node,
    NodeKind,
    Owner,
    Usage,
    UserConfig,
)

#: Prefix of every protocol endpoint; the method name follows (``getFile``, ``mkdir``, ...).
PROTO_PREFIX = "/api/v1/proto/"

#: Methods of the protocol API that change state and are not naturally idempotent: the
#: client sends an ``Idempotency-Key`` with them and the server answers a repeated key
#: with the first answer instead of executing the call again.
NON_IDEMPOTENT = frozenset(
    {"uploadMedia", "mkdir", "createFile", "setContent", "symlink", "rename", "unlink", "rmdir",
     "putFile", "mknod", "link", "setXattr", "removeXattr", "reserveNodeIds"}
)

#: Methods sent as GET with their arguments in the query string.
GET_METHODS = frozenset(
    {"getConfig", "getFile", "getFileHashes", "getFileChecksums", "getDocumentByHash",
     "lookup", "getattr", "listFolder", "statfs", "getChanges", "getXattr", "listXattrs"}
)

#: Methods whose request body is raw part bytes, arguments in the query string.
PART_METHODS = frozenset({"saveFilePart", "saveBigFilePart"})

#: Methods sent as POST with a JSON object body.
JSON_METHODS = frozenset(
    {"uploadMedia", "mkdir", "createFile", "setContent", "symlink", "setattr", "rename",
     "unlink", "rmdir", "mknod", "link", "chown", "setTimes", "setXattr", "removeXattr",
     "reserveNodeIds"}
)

#: Methods whose request body is a whole small file, arguments in the query string.
CONTENT_METHODS = frozenset({"putFile"})

ALL_METHODS = GET_METHODS | PART_METHODS | JSON_METHODS | CONTENT_METHODS

#: getFileHashes takes ``windows=N`` (an extension): the hashes of N consecutive 1 MiB
#: windows from the offset's window on, so that a sequential reader needs one hash request
#: per N chunks.
MAX_HASH_WINDOWS = 16

#: getFile takes ``windows=N`` (an extension) for N whole consecutive 1 MiB windows in one
#: answer, cut by its ``X-Window-Sizes`` header; with ``hashes=true`` the answer's
#: ``X-Block-Hashes`` header carries the block hashes of those windows (or, asked with
#: ``checksums=crc32c`` too, ``X-Block-Crc32c`` their CRC32Cs when the store has them).
MAX_GETFILE_WINDOWS = MAX_RUN_WINDOWS


def _bad(what: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"malformed {what}")


#: Largest JSON request body either API accepts.
MAX_JSON_BODY = 1 << 20


def json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object (empty means ``{}``).

    Raises:
        InvalidArgument: the body is too large, not JSON, or not an object.
    """
    if len(body) > MAX_JSON_BODY:
        raise errors.InvalidArgument("request body too large")
    try:
        obj = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidArgument("malformed JSON body") from exc
    if not isinstance(obj, dict):
        raise errors.InvalidArgument("the JSON body must be an object")
    return obj


def req_int(obj: dict[str, Any], key: str, *, default: Any = ..., signed64: bool = True) -> int:
    """An integer field of a decoded JSON object (bools are not integers here).

    Raises:
        InvalidArgument: the field is missing (and has no default) or not an integer.
    """
    if key not in obj or obj[key] is None:
        if default is ...:
            raise errors.InvalidArgument(f"missing field {key!r}")
        return default
    val = obj[key]
    if isinstance(val, bool) or not isinstance(val, int):
        raise errors.InvalidArgument(f"field {key!r} must be an integer")
    if signed64 and not -(2**63) <= val < 2**63:
        raise errors.InvalidArgument(f"field {key!r} is out of range")
    return val


def req_str(obj: dict[str, Any], key: str, *, default: Any = ...) -> str:
    """A string field of a decoded JSON object.

    Raises:
        InvalidArgument: the field is missing (and has no default) or not a string.
    """
    if key not in obj or obj[key] is None:
        if default is ...:
            raise errors.InvalidArgument(f"missing field {key!r}")
        return default
    val = obj[key]
    if not isinstance(val, str):
        raise errors.InvalidArgument(f"field {key!r} must be a string")
    return val


def req_bool(obj: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean field of a decoded JSON object.  Raises InvalidArgument if not a bool."""
    val = obj.get(key, default)
    if val is None:
        return default
    if not isinstance(val, bool):
        raise errors.InvalidArgument(f"field {key!r} must be a boolean")
    return val


# --- value types ---------------------------------------------------------------------------


def document_to_json(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "access_hash": doc.access_hash,
        "size": doc.size,
        "mime_type": doc.mime_type,
        "sha256": doc.sha256,
        "md5": doc.md5,
        "date": doc.date,
        "file_type": str(doc.file_type),
    }


def document_from_json(obj: Any) -> Document:
    """Raises InvalidArgument on a malformed document."""
    if not isinstance(obj, dict):
        raise _bad("document")
    try:
        ftype = FileType(obj.get("file_type", FileType.UNKNOWN))
    except ValueError:
        ftype = FileType.UNKNOWN
    date = obj.get("date", 0.0)
    if isinstance(date, bool) or not isinstance(date, int | float):
        raise _bad("document date")
    return Document(
        id=req_int(obj, "id"),
        access_hash=req_int(obj, "access_hash"),
        size=req_int(obj, "size"),
        mime_type=req_str(obj, "mime_type"),
        sha256=req_str(obj, "sha256"),
        md5=req_str(obj, "md5"),
        date=float(date),
        file_type=ftype,
    )


def location_to_json(loc: FileLocation) -> dict[str, int]:
    return {"id": loc.id, "access_hash": loc.access_hash}


def location_from_json(obj: Any) -> FileLocation:
    """Raises InvalidArgument on a malformed location."""
    if not isinstance(obj, dict):
        raise _bad("file location")
    return FileLocation(req_int(obj, "id"), req_int(obj, "access_hash"))


def locations_from_json(obj: Any) -> tuple[FileLocation, ...]:
    """Raises InvalidArgument unless ``obj`` is a list of locations."""
    if obj is None:
        return ()
    if not isinstance(obj, list):
        raise _bad("segments")
    return tuple(location_from_json(o) for o in obj)


def node_to_json(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "parent": node.parent,
        "name": node.name,
        "kind": str(node.kind),
        "mode": node.mode,
        "size": node.size,
        "mtime_ns": node.mtime_ns,
        "ctime_ns": node.ctime_ns,
        "version": node.version,
        "segments": [document_to_json(d) for d in node.segments],
        "target": node.target,
        "restricted": node.restricted,
        "sha256": node.sha256,
        "uid": node.uid,
        "gid": node.gid,
        "rdev": node.rdev,
        "atime_ns": node.atime_ns,
        "nlink": node.nlink,
    }


def node_from_json(obj: Any) -> Node:
    """Raises InvalidArgument on a malformed node."""
    if not isinstance(obj, dict):
        raise _bad("node")
    try:
        kind = NodeKind(obj.get("kind"))
    except ValueError as exc:
        raise _bad("node kind") from exc
    segs = obj.get("segments") or []
    if not isinstance(segs, list):
        raise _bad("node segments")
    target = obj.get("target")
    if target is not None and not isinstance(target, str):
        raise _bad("node target")
    sha256 = obj.get("sha256")
    if sha256 is not None and not isinstance(sha256, str):
        raise _bad("node sha256")
    return Node(
        id=req_int(obj, "id"),
        parent=req_int(obj, "parent"),
        name=req_str(obj, "name"),
        kind=kind,
        mode=req_int(obj, "mode"),
        size=req_int(obj, "size"),
        mtime_ns=req_int(obj, "mtime_ns"),
        ctime_ns=req_int(obj, "ctime_ns"),
        version=req_int(obj, "version", default=0),
        segments=tuple(document_from_json(d) for d in segs),
        target=target,
        restricted=req_bool(obj, "restricted", False),
        sha256=sha256,
        uid=req_int(obj, "uid", default=None),
        gid=req_int(obj, "gid", default=None),
        rdev=req_int(obj, "rdev", default=0),
        atime_ns=req_int(obj, "atime_ns", default=None),
        nlink=req_int(obj, "nlink", default=1),
    )


def change_batch_to_json(batch: ChangeBatch) -> dict[str, Any]:
    return {"cursor": batch.cursor, "reset": batch.reset, "changes": [
        {"cursor": c.cursor, "kind": str(c.kind), "node_id": c.node_id, "parent": c.parent,
         "name": c.name, "at_ns": c.at_ns, "old_parent": c.old_parent,
         "old_name": c.old_name} for c in batch.changes]}


def change_batch_from_json(obj: Any) -> ChangeBatch:
    """Raises InvalidArgument on a malformed answer of getChanges."""
    if not isinstance(obj, dict) or not isinstance(obj.get("changes"), list):
        raise _bad("change batch")
    changes = []
    for c in obj["changes"]:
        if not isinstance(c, dict):
            raise _bad("change")
        try:
            kind = ChangeKind(c.get("kind"))
        except ValueError as exc:
            raise _bad("change kind") from exc
        old_name = c.get("old_name")
        if old_name is not None and not isinstance(old_name, str):
            raise _bad("change old_name")
        changes.append(Change(
            cursor=req_int(c, "cursor"), kind=kind, node_id=req_int(c, "node_id"),
            parent=req_int(c, "parent"), name=req_str(c, "name"), at_ns=req_int(c, "at_ns"),
            old_parent=req_int(c, "old_parent", default=None), old_name=old_name))
    return ChangeBatch(req_int(obj, "cursor"), tuple(changes), req_bool(obj, "reset", False))


def owner_to_json(owner: Owner | None) -> dict[str, int] | None:
    return None if owner is None else {"uid": owner.uid, "gid": owner.gid}


def owner_from_json(obj: Any) -> Owner | None:
    """Raises InvalidArgument unless ``obj`` is null or ``{"uid": N, "gid": N}``."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise _bad("owner")
    return Owner(req_int(obj, "uid"), req_int(obj, "gid"))


def bytes_to_json(value: bytes) -> str:
    """An attribute value in JSON: base64 (values are arbitrary bytes)."""
    return base64.b64encode(value).decode("ascii")


def bytes_from_json(obj: dict[str, Any], key: str) -> bytes:
    """Raises InvalidArgument unless ``obj[key]`` is base64 text."""
    text = req_str(obj, key)
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise _bad(f"{key} (base64)") from exc


def listing_to_json(listing: Listing) -> dict[str, Any]:
    return {"entries": [node_to_json(n) for n in listing.entries], "next_after": listing.next_after}


def listing_from_json(obj: Any) -> Listing:
    """Raises InvalidArgument on a malformed listing."""
    if not isinstance(obj, dict) or not isinstance(obj.get("entries"), list):
        raise _bad("listing")
    nxt = obj.get("next_after")
    if nxt is not None and not isinstance(nxt, str):
        raise _bad("listing next_after")
    return Listing(tuple(node_from_json(n) for n in obj["entries"]), nxt)


def usage_to_json(u: Usage) -> dict[str, int]:
    out = {"used_bytes": u.used_bytes, "quota_bytes": u.quota_bytes, "files": u.files,
           "max_files": u.max_files}
    if u.disk_free_bytes is not None and u.disk_total_bytes is not None:
        out["disk_free_bytes"] = u.disk_free_bytes
        out["disk_total_bytes"] = u.disk_total_bytes
    return out


def usage_from_json(obj: Any) -> Usage:
    """Raises InvalidArgument on a malformed usage object."""
    if not isinstance(obj, dict):
        raise _bad("usage")
    free, total = obj.get("disk_free_bytes"), obj.get("disk_total_bytes")
    if not (isinstance(free, int) and isinstance(total, int)) or free < 0 or total < 0:
        free = total = None  # an older server, or nonsense: unknown
    return Usage(req_int(obj, "used_bytes"), req_int(obj, "quota_bytes"), req_int(obj, "files"),
                 req_int(obj, "max_files", default=0), disk_free_bytes=free,
                 disk_total_bytes=total)


def config_to_json(c: UserConfig) -> dict[str, Any]:
    return {"max_parts": c.max_parts, "big_file_threshold": c.big_file_threshold,
            "part_lifetime": c.part_lifetime, "premium": c.premium, "extra": dict(c.extra)}


def config_from_json(obj: Any) -> UserConfig:
    """Raises InvalidArgument on a malformed config object."""
    if not isinstance(obj, dict):
        raise _bad("config")
    lifetime = obj.get("part_lifetime")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float):
        raise _bad("config part_lifetime")
    extra = obj.get("extra") or {}
    return UserConfig(req_int(obj, "max_parts"), req_int(obj, "big_file_threshold"),
                      float(lifetime), req_bool(obj, "premium", False),
                      dict(extra) if isinstance(extra, dict) else {})


def hashes_to_json(hashes: list[FileHash]) -> list[dict[str, Any]]:
    return checks_to_json(list(hashes))


def block_checks_to_header(checks: list[BlockCheck]) -> tuple[bytes, bytes]:
    """The header carrying the block checks of a getFile answer, name and value:
    ``X-Block-Hashes`` with the 32-byte SHA-256 digests of consecutive blocks in order, or
    ``X-Block-Crc32c`` with their CRC32Cs (4 bytes big-endian each), base64 either way
    (offsets and limits follow from the answer's offset and window sizes)."""
    crcs = [c.crc32c.to_bytes(4, "big") for c in checks if isinstance(c, BlockChecksum)]
    if crcs and len(crcs) == len(checks):
        return b"x-block-crc32c", base64.b64encode(b"".join(crcs))
    return b"x-block-hashes", base64.b64encode(
        b"".join(h.hash for h in checks if isinstance(h, FileHash)))


def block_checks_from_headers(headers: dict[str, str], offset: int, length: int
                              ) -> list[BlockCheck] | None:
    """The block checks of a getFile answer of ``length`` bytes at ``offset`` (a multiple
    of the block size), from its ``X-Block-Crc32c`` or ``X-Block-Hashes`` header (lower-case
    keys in ``headers``); None if it has neither.  Raises InvalidArgument unless the value
    is base64 of exactly one digest per block of the answer."""
    for name, size in (("x-block-crc32c", 4), ("x-block-hashes", 32)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            digests = base64.b64decode(raw, validate=True)
        except ValueError as exc:
            raise _bad(name) from exc
        if offset % HASH_BLOCK or len(digests) != size * -(-length // HASH_BLOCK):
            raise _bad(name)
        if size == 4:
            return list(BlockChecksum.unpack(digests, offset, offset + length))
        return list(FileHash.unpack(digests, offset, offset + length))
    return None


def checks_to_json(checks: list[BlockCheck]) -> list[dict[str, Any]]:
    """getFileChecksums' answer (and getFileHashes', all of whose entries are hashes):
    offset, limit and the hex ``hash``, or ``crc32c`` in place of it for CRC32C checksums."""
    return [{"offset": c.offset, "limit": c.limit, "crc32c": c.crc32c}
            if isinstance(c, BlockChecksum) else
            {"offset": c.offset, "limit": c.limit, "hash": c.hash.hex()} for c in checks]


def checks_from_json(obj: Any) -> list[BlockCheck]:
    """Raises InvalidArgument on a malformed list."""
    if not isinstance(obj, list):
        raise _bad("checksum list")
    out: list[BlockCheck] = []
    for c in obj:
        if isinstance(c, dict) and "crc32c" in c:
            value = req_int(c, "crc32c")
            if not 0 <= value < 1 << 32:
                raise _bad("crc32c value")
            out.append(BlockChecksum(req_int(c, "offset"), req_int(c, "limit"), value))
        else:
            out.extend(hashes_from_json([c]))
    return out


def hashes_from_json(obj: Any) -> list[FileHash]:
    """Raises InvalidArgument on a malformed hash list."""
    if not isinstance(obj, list):
        raise _bad("hash list")
    out = []
    for h in obj:
        if not isinstance(h, dict):
            raise _bad("hash entry")
        try:
            digest = bytes.fromhex(req_str(h, "hash"))
        except ValueError as exc:
            raise _bad("hash value") from exc
        out.append(FileHash(req_int(h, "offset"), req_int(h, "limit"), digest))
    return out


def input_file_to_json(f: InputFile | InputFileBig) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f.id, "parts": f.parts, "name": f.name,
                           "big": isinstance(f, InputFileBig)}
    if isinstance(f, InputFile):
        out["md5_checksum"] = f.md5_checksum
    return out


def input_file_from_json(obj: Any) -> InputFile | InputFileBig:
    """``{"big": true}`` selects ``inputFileBig``; otherwise ``md5_checksum`` is required.

    Raises InvalidArgument on a malformed object.
    """
    if not isinstance(obj, dict):
        raise _bad("input file")
    if req_bool(obj, "big", False):
        return InputFileBig(req_int(obj, "id"), req_int(obj, "parts"), req_str(obj, "name"))
    return InputFile(req_int(obj, "id"), req_int(obj, "parts"), req_str(obj, "name"),
                     req_str(obj, "md5_checksum"))


def error_body(exc: errors.FsmountError) -> dict[str, Any]:
    """The JSON body of an error answer (easemob's shape: ``error``, ``error_description``)."""
    body: dict[str, Any] = {"error": exc.name, "error_description": exc.message}
    if isinstance(exc, errors.RateLimited):
        body["retry_after"] = exc.retry_after
    if isinstance(exc, errors.FilePartMissing):
        body["part"] = exc.part
    return body


def error_from_body(status: int, body: Any) -> errors.FsmountError:
    """Rebuild the exception a server answer describes (same class and ``.name``)."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        desc = body.get("error_description")
        extra = {}
        if "retry_after" in body:
            extra["retry_after"] = body["retry_after"]
        return errors.from_name(body["error"], desc if isinstance(desc, str) else None, **extra)
    if status == 401:
        return errors.Unauthorized()
    if status == 404:
        return errors.NotFound()
    return errors.TransportError(f"HTTP {status} without an error body")
