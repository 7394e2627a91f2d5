"""The REST shapes of ``scaidrive-uploads-and-downloads.md`` and ``easemob-chatfiles.md``
for ordinary HTTP clients (curl, browsers, rclone's ``http`` remote), on Starlette.

Everything here is mapped onto the same protocol calls the filesystem makes; nothing writes
the store behind the protocol's back:

* ``POST /api/v1/files`` (multipart) and resumable sessions (``/api/v1/uploads``) cut the
  bytes into 512 KiB protocol parts, use ``saveFilePart`` + ``inputFile`` (with MD5) for
  uploads of at most 10 MB and ``saveBigFilePart`` + ``inputFileBig`` above, and split a
  file larger than one upload may hold (the user's max parts x 512 KiB) into several
  uploads, the segments of one file, balanced to about the same number of parts.  The
  cutting is the write path's segment policy (:mod:`fsmount.upload.policy`); a multipart
  body goes through the same uploader as ``fsmount put`` (:func:`fsmount.upload.upload_file`),
  a session's parts through its part sender (:mod:`fsmount.upload.sender`).  Uploading a
  name that exists makes a new version of that file: same id, content replaced atomically
  (``set_content``).
* Downloads read 1 MiB ``getFile`` windows and stream them; ``Range`` gives 206.
* File ids are ``fil_<user>_<node>`` and folder ids ``fld_<user>_<node>`` (``root`` is the
  caller's root folder).  Another user's file is visible only with the ``share-secret`` of
  a file uploaded with ``restrict-access: true``; everything else of another user is 404.

Resumable sessions: ``chunk_size`` must be a multiple of 512 KiB (so a chunk is a whole
number of protocol parts) and at most 32 MiB; every chunk but the last has exactly
``chunk_size`` bytes.  Chunks of a segment above 10 MB go straight into the store as parts;
chunks of a small segment (which needs its MD5 in order) are kept in ``DIR/uploads`` until
``complete``.  A session expires after 24 hours without a request.  Parts in the store
live for the store's part lifetime (default one hour): a chunk whose parts expired is
reported by ``complete`` as missing (409 ``CHUNKS_MISSING`` with ``missing_chunks``) and is
simply sent again.
"""

from __future__ import annotations

import datetime
import hashlib
import html
import json
import math
import os
import re
import secrets
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import cachetools
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from .. import errors
from ..protocol import MAX_PART_SIZE, WINDOW
from ..remote import ROOT_ID, Document, InputFile, InputFileBig, Node, NodeKind, Remote, UserConfig
from ..upload import policy, sender
from ..upload.files import upload_file as upload_body
from . import thumbnails, wire
from .app import ServerState, UserCtx, error_answer

PIECE = MAX_PART_SIZE
MAX_CHUNK_SIZE = 32 << 20
DEFAULT_CHUNK_SIZE = 4 << 20
#: Largest multipart upload (the ScaiDrive seed's hard limit of 5 GB per request); the body
#: is spooled to a temporary file before it goes into the store.
MAX_SIMPLE_UPLOAD = 5 * 10**9
#: Largest file a resumable session accepts (a sanity bound; quota applies as well).
MAX_UPLOAD_SIZE = 1 << 40
#: Parts saved at once while a REST upload is fed into the store.
PARALLEL_PARTS = 4


class ChunksMissing(errors.FsmountError):
    """``complete`` was called before every chunk of the session arrived (or some chunk's
    parts expired in the store): send those chunks again."""

    name = "CHUNKS_MISSING"
    http_status = 409

    def __init__(self, missing: list[int], message: str | None = None) -> None:
        self.missing = missing
        super().__init__(message or f"missing chunks {missing[:20]}")


# --- ids -----------------------------------------------------------------------------------

_ID = re.compile(r"^(fil|fld)_(\d{1,19})_(\d{1,19})$")


def file_id(user_id: int, node_id: int) -> str:
    return f"fil_{user_id}_{node_id}"


def folder_id(user_id: int, node_id: int) -> str:
    return f"fld_{user_id}_{node_id}"


def parse_id(raw: str, user: UserCtx, *, folder: bool) -> tuple[int, int]:
    """``(owner user id, node id)`` of a REST id; a bare number or ``root`` is the caller's.

    Raises NotFound for anything that is not an id (so probing reveals nothing).
    """
    if folder and raw in ("root", ""):
        return user.user_id, ROOT_ID
    if raw.isdigit() and len(raw) <= 19:
        return user.user_id, int(raw)
    m = _ID.match(raw)
    if not m or (m.group(1) == "fld") != folder:
        raise errors.NotFound(f"no {'folder' if folder else 'file'} {raw!r}")
    return int(m.group(2)), int(m.group(3))


def iso(ns: int | float) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).isoformat().replace("+00:00", "Z")


# --- helpers ---------------------------------------------------------------------------------


def ctx(request: Request) -> UserCtx:
    return request.scope["state"]["fsm_user"]


def state_of(request: Request) -> ServerState:
    return request.app.state.fsm


async def drain(request: Request, cap: int = 64 << 20) -> None:
    """Read and drop what is left of the request body (bounded), so that the client gets
    the error answer instead of a connection reset while it is still sending."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        return  # too much to read for nothing: the connection closes after the answer
    got = 0
    try:
        async for data in request.stream():
            got += len(data)
            if got > cap:
                return
    except Exception:  # already consumed, or the client went away: nothing left to drop
        return


async def error_response(request: Request, exc: Exception) -> Response:
    await drain(request)
    if not isinstance(exc, errors.FsmountError):
        exc = errors.FsmountError("internal server error")
    status, headers, body = error_answer(exc)
    if isinstance(exc, ChunksMissing):
        obj = json.loads(body)
        obj["missing_chunks"] = exc.missing
        body = json.dumps(obj).encode()
    return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    await drain(request)
    if exc.status_code == 405:
        err: errors.FsmountError = errors.InvalidArgument("method not allowed")
        status, headers, body = error_answer(err)
        return Response(body, status_code=405, headers={k.decode(): v.decode() for k, v in headers})
    if exc.status_code == 404:
        return await error_response(request, errors.NotFound("no such endpoint"))
    err = errors.InvalidArgument(str(exc.detail))
    status, headers, body = error_answer(err)
    return Response(body, status_code=exc.status_code if 400 <= exc.status_code < 500 else 400,
                    headers={k.decode(): v.decode() for k, v in headers})


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body.  Raises InvalidArgument if it is not one."""
    return wire.json_object(await request.body())


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


class Resolver:
    """Finds the node a REST id names, applying the visibility rules."""

    def __init__(self, st: ServerState) -> None:
        self.st = st

    async def file(self, request: Request, raw: str) -> tuple[int, Remote, Node]:
        """(owner id, owner's remote, file node).  Another user's file needs its share
        secret.  Raises NotFound, IsADirectory."""
        user = ctx(request)
        owner, node_id = parse_id(raw, user, folder=False)
        if owner != user.user_id:
            secret = request.headers.get("share-secret")
            if not secret or not self.st.auth.check_share(str(owner), node_id, secret):
                raise errors.NotFound(f"no file {raw!r}")
            remote = self.st.remote_for_id(owner)
        else:
            remote = user.remote
        try:
            node = await remote.getattr(node_id)
        except (errors.NotFound, errors.FileIdInvalid, errors.InvalidArgument):
            raise errors.NotFound(f"no file {raw!r}") from None
        if node.kind is NodeKind.DIR:
            raise errors.IsADirectory(f"{raw!r} is a folder")
        if node.kind is not NodeKind.FILE:
            raise errors.NotFound(f"no file {raw!r}")
        return owner, remote, node

    async def folder(self, request: Request, raw: str | None) -> int:
        """The node id of one of the caller's own folders.  Raises NotFound, NotADirectory."""
        user = ctx(request)
        owner, node_id = parse_id(raw or "root", user, folder=True)
        if owner != user.user_id:
            raise errors.NotFound(f"no folder {raw!r}")
        try:
            node = await user.remote.getattr(node_id)
        except (errors.NotFound, errors.InvalidArgument):
            raise errors.NotFound(f"no folder {raw!r}") from None
        if node.kind is not NodeKind.DIR:
            raise errors.NotADirectory(f"{raw!r} is not a folder")
        return node_id


# --- content -------------------------------------------------------------------------------


async def iter_content(remote: Remote, node: Node, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes ``start..end`` (inclusive) of a file, fetched in 1 MiB getFile windows."""
    base = 0
    for doc in node.segments:
        lo, hi = max(start, base), min(end, base + doc.size - 1)
        if lo <= hi:
            off = (lo - base) // WINDOW * WINDOW
            while off <= hi - base:
                res = await remote.get_file(doc.location, off, WINDOW)
                if not res.bytes:
                    raise errors.FileReferenceExpired("content shorter than its size")
                a = max(lo - base - off, 0)
                b = min(hi - base - off + 1, len(res.bytes))
                yield res.bytes[a:b]
                off += WINDOW
        base += doc.size
        if base > end:
            break


async def read_all(remote: Remote, node: Node, cap: int) -> bytes:
    """The whole file (for thumbnails).  Raises FileTooBig beyond ``cap`` bytes."""
    if node.size > cap:
        raise errors.FileTooBig(f"{node.size} bytes is too big for a thumbnail")
    out = bytearray()
    if node.size:
        async for piece in iter_content(remote, node, 0, node.size - 1):
            out += piece
    return bytes(out)


#: Whole-file SHA-256 of multi-segment files by their segments' hashes: least recently used
#: out (cachetools; the hand-written OrderedDict it replaced evicted the oldest insert).
_SHA_CACHE: cachetools.LRUCache[tuple[str, ...], str] = cachetools.LRUCache(maxsize=1000)


async def checksum_sha256(remote: Remote, node: Node) -> str:
    """SHA-256 of the whole file: the document's own for one segment, computed (and
    remembered) for a file of several segments."""
    if not node.segments:
        return hashlib.sha256(b"").hexdigest()
    if len(node.segments) == 1:
        return node.segments[0].sha256
    key = tuple(d.sha256 for d in node.segments)
    hit = _SHA_CACHE.get(key)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    async for piece in iter_content(remote, node, 0, node.size - 1):
        h.update(piece)
    _SHA_CACHE[key] = digest = h.hexdigest()
    return digest


def mime_of(node: Node) -> str:
    return node.segments[0].mime_type if node.segments else "application/octet-stream"


def parse_range(value: str | None, size: int) -> tuple[int, int] | None | str:
    """A single ``bytes=`` range as (start, end inclusive); None to serve everything (no or
    an unparseable or multi-range header, which RFC 9110 lets a server ignore);
    ``"unsatisfiable"`` when it lies past the end."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):
        n = int(m.group(2))
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(m.group(1))
    # Past the end before the order check: "bytes=SIZE-" is unsatisfiable (416), not a
    # malformed range to ignore.
    if start >= size:
        return "unsatisfiable"
    end = int(m.group(2)) if m.group(2) else size - 1
    if end < start:
        return None
    return start, min(end, size - 1)


def http_date(ns: int) -> str:
    from email.utils import formatdate

    return formatdate(ns / 1e9, usegmt=True)


async def content_response(request: Request, remote: Remote, node: Node) -> Response:
    """The file's bytes, streamed, honouring ``Range`` (206, or 416 past the end)."""
    size = node.size
    headers = {
        "accept-ranges": "bytes",
        "content-type": mime_of(node),
        "last-modified": http_date(node.mtime_ns),
        "etag": f'"{node.id}-{node.version}"',
    }
    rng = parse_range(request.headers.get("range"), size)
    if rng == "unsatisfiable":
        status, hdrs, body = error_answer(errors.InvalidArgument(
            f"range {request.headers.get('range')} is past the end ({size} bytes)"))
        h = {k.decode(): v.decode() for k, v in hdrs}
        h["content-range"] = f"bytes */{size}"
        h["error-name"] = "RANGE_NOT_SATISFIABLE"
        obj = json.loads(body)
        obj["error"] = "RANGE_NOT_SATISFIABLE"
        return Response(json.dumps(obj), status_code=416, headers=h)
    status = 200
    start, end = 0, size - 1
    if isinstance(rng, tuple):
        start, end = rng
        status = 206
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    headers["content-length"] = str(max(0, end - start + 1))
    if request.method == "HEAD" or size == 0:
        return Response(b"", status_code=status, headers=headers)
    return StreamingResponse(iter_content(remote, node, start, end), status_code=status,
                             headers=headers)


# --- uploading into the store ------------------------------------------------------------------


def plan_segments(size: int, cfg: UserConfig) -> list[dict[str, Any]]:
    """A resumable session's segments as the session stores them (JSON): the segment
    policy's balanced plan (:func:`fsmount.upload.policy.plan_segments`), each segment with
    a new file id."""
    return [{"first": seg.first_part, "count": seg.parts, "size": seg.size, "big": seg.big,
             "file_id": sender.new_file_id()}
            for seg in policy.plan_segments(size, cfg.max_parts, cfg.big_file_threshold)]


def segment_of(plan: list[dict[str, Any]], piece: int) -> dict[str, Any]:
    for seg in plan:
        if seg["first"] <= piece < seg["first"] + seg["count"]:
            return seg
    raise errors.FilePartInvalid(f"piece {piece} is outside the file")


async def finalize_segment(remote: Remote, seg: dict[str, Any], name: str,
                           get_piece: Callable[[int], Awaitable[bytes]]) -> Document:
    """Upload (small segments: in order, with MD5) and finalize one segment of a session.

    For a big segment the parts must already be in the store; ``get_piece`` is then unused.
    A part the store reports missing is not sent again here: its chunk is the client's to
    send again.

    Raises:
        FilePartMissing: a part of the segment expired in the store.
        FsmountError: whatever the store's calls raise.
    """
    if seg["big"]:
        final: InputFile | InputFileBig = InputFileBig(seg["file_id"], seg["count"], name)
    else:
        md5 = hashlib.md5()
        for i in range(seg["count"]):
            data = await get_piece(seg["first"] + i)
            md5.update(data)
            await sender.save_part(remote, name, seg["file_id"], i, data, small=True,
                                   total=seg["count"])
        final = InputFile(seg["file_id"], seg["count"], name, md5.hexdigest())
    return await sender.finalize_segment(remote, final, name=name, index=0, resend=None)


async def save_big_piece(remote: Remote, seg: dict[str, Any], piece: int, data: bytes,
                         name: str) -> None:
    """Save file piece ``piece`` as a part of its (big) segment, the part count known."""
    await sender.save_part(remote, name, seg["file_id"], piece - seg["first"], data,
                           small=False, total=seg["count"])


# --- metadata shapes ---------------------------------------------------------------------------


async def file_json(st: ServerState, owner: int, remote: Remote, node: Node) -> dict[str, Any]:
    return {
        "id": file_id(owner, node.id),
        "type": "file",
        "name": node.name,
        "folder_id": folder_id(owner, node.parent),
        "size": node.size,
        "mime_type": mime_of(node),
        "checksum_sha256": await checksum_sha256(remote, node),
        "md5": node.segments[0].md5 if len(node.segments) == 1 else None,
        "created_at": iso(node.ctime_ns),
        "modified_at": iso(node.mtime_ns),
        "version": node.version,
        "restricted": st.auth.is_restricted(str(owner), node.id),
        **posix_json(node),
    }


def posix_json(node: Node) -> dict[str, Any]:
    """The POSIX fields of a node's metadata: permission bits, numeric owner (null: made
    without one, e.g. by this API), link count, device number of a device node."""
    return {"mode": node.mode, "uid": node.uid, "gid": node.gid, "nlink": node.nlink,
            "rdev": node.rdev}


def entry_json(owner: int, node: Node) -> dict[str, Any]:
    is_dir = node.kind is NodeKind.DIR
    return {
        "id": (folder_id if is_dir else file_id)(owner, node.id),
        "type": "folder" if is_dir else (
            "file" if node.kind is NodeKind.FILE else str(node.kind)),
        "name": node.name,
        "size": node.size,
        "modified_at": iso(node.mtime_ns),
        **posix_json(node),
    }


async def link_file(st: ServerState, request: Request, folder: int, name: str,
                    docs: tuple[Document, ...], restricted: bool) -> dict[str, Any]:
    user = ctx(request)
    locs = tuple(d.location for d in docs)
    node = None
    for _ in range(3):  # bounded: a concurrent create or delete of the same name
        try:
            old = await user.remote.lookup(folder, name)
        except errors.NotFound:
            try:
                node = await user.remote.create_file(folder, name, locs)
                break
            except errors.AlreadyExists:
                continue
        if old.kind is not NodeKind.FILE:
            raise errors.IsADirectory(f"{name!r} exists and is not a file")
        try:
            # A new version keeps the file's id (and replaces its content atomically).
            node = await user.remote.set_content(old.id, locs)
            break
        except errors.NotFound:
            continue
    if node is None:
        node = await user.remote.create_file(folder, name, locs, replace=True)
    out = await file_json(st, user.user_id, user.remote, node)
    if restricted:
        out["share-secret"] = st.auth.new_share(str(user.user_id), node.id)
        out["restricted"] = True
    elif out["restricted"]:
        # New content uploaded without restriction: the old secret must not open it.
        st.auth.drop_share(str(user.user_id), node.id)
        out["restricted"] = False
    return out


# --- endpoints ---------------------------------------------------------------------------------


def build_rest_app(st: ServerState) -> Starlette:
    resolver = Resolver(st)
    thumbs = thumbnails.ThumbnailCache(st.thumb_dir, st.thumb_cache_bytes)
    session_locks: dict[str, trio.Lock] = {}

    async def upload_file(request: Request) -> Response:
        user = ctx(request)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_SIMPLE_UPLOAD:
            raise errors.FileTooBig(
                f"a simple upload is at most {MAX_SIMPLE_UPLOAD} bytes; use /api/v1/uploads")
        try:
            form = await request.form(max_files=1, max_fields=20)
        except Exception as exc:  # python-multipart's errors differ between versions
            raise errors.InvalidArgument(f"malformed multipart body: {exc}") from None
        try:
            up = form.get("file")
            if up is None or isinstance(up, str):
                raise errors.InvalidArgument("multipart field 'file' (a file) is required")
            fid = form.get("folder_id")
            folder = await resolver.folder(request, fid if isinstance(fid, str) else None)
            name = os.path.basename(up.filename or "") or "upload"
            size = up.size if up.size is not None else 0
            cfg = await user.remote.get_config()
            # The spooled body goes through the uploader, cut into balanced segments as a
            # resumable session of that size would be; parts the store loses are re-read.
            await up.seek(0)
            docs = await upload_body(
                user.remote, up.file, name, parallel=PARALLEL_PARTS, config=cfg,
                segment_parts=policy.balanced_segment_parts(size, cfg.max_parts))
            out = await link_file(st, request, folder, name, docs,
                                  truthy(request.headers.get("restrict-access")))
            return JSONResponse(out, status_code=201)
        finally:
            await form.close()

    async def file_meta(request: Request) -> Response:
        owner, remote, node = await resolver.file(request, request.path_params["id"])
        return JSONResponse(await file_json(st, owner, remote, node))

    async def delete_file(request: Request) -> Response:
        user = ctx(request)
        owner, remote, node = await resolver.file(request, request.path_params["id"])
        if owner != user.user_id:
            raise errors.NotFound("no such file")
        await remote.unlink(node.parent, node.name)
        st.auth.drop_share(str(owner), node.id)
        return Response(status_code=204)

    async def thumb_response(request: Request, remote: Remote, node: Node, size_type: str) -> Response:
        thumbnails.check_type(size_type)
        if not node.segments:
            raise thumbnails.NotAnImage("the file is empty")
        key = await checksum_sha256(remote, node)
        data, mime = await thumbs.get(
            key, size_type, lambda: read_all(remote, node, thumbnails.MAX_SOURCE_BYTES))
        return Response(data, media_type=mime, headers={"x-thumbnail-type": size_type})

    async def file_content(request: Request) -> Response:
        owner, remote, node = await resolver.file(request, request.path_params["id"])
        if truthy(request.headers.get("thumbnail")):
            return await thumb_response(request, remote, node,
                                        request.query_params.get("type", thumbnails.DEFAULT_TYPE))
        return await content_response(request, remote, node)

    async def file_thumbnail(request: Request) -> Response:
        owner, remote, node = await resolver.file(request, request.path_params["id"])
        return await thumb_response(request, remote, node,
                                    request.query_params.get("type", thumbnails.DEFAULT_TYPE))

    async def create_folder(request: Request) -> Response:
        user = ctx(request)
        body = await read_json(request)
        name = body.get("name")
        parent = body.get("parent_id")
        if not isinstance(name, str) or (parent is not None and not isinstance(parent, str)):
            raise errors.InvalidArgument("'name' (string) is required; 'parent_id' is a string")
        folder = await resolver.folder(request, parent)
        node = await user.remote.mkdir(folder, name)
        return JSONResponse({"id": folder_id(user.user_id, node.id), "name": node.name,
                             "parent_id": folder_id(user.user_id, folder)}, status_code=201)

    async def list_folder(request: Request) -> Response:
        user = ctx(request)
        folder = await resolver.folder(request, request.path_params["id"])
        after = request.query_params.get("after") or None
        try:
            limit = int(request.query_params.get("limit", "1000"))
        except ValueError:
            raise errors.InvalidArgument("'limit' must be an integer") from None
        if not 1 <= limit <= 1000:
            raise errors.InvalidArgument("'limit' must be in 1..1000")
        node = await user.remote.getattr(folder)
        listing = await user.remote.list_folder(folder, after, limit)
        return JSONResponse({
            "id": folder_id(user.user_id, folder), "name": node.name,
            "parent_id": folder_id(user.user_id, node.parent) if folder != ROOT_ID else None,
            "entries": [entry_json(user.user_id, n) for n in listing.entries],
            "next_after": listing.next_after,
        })

    # --- resumable sessions ---------------------------------------------------------------

    def sweep_uploads() -> None:
        for upload_id, _owner, _state in st.auth.expired_uploads(st.upload_idle):
            st.auth.delete_upload(upload_id)
            shutil.rmtree(os.path.join(st.upload_dir, upload_id), ignore_errors=True)

    def load_session(request: Request) -> tuple[str, dict[str, Any]]:
        user = ctx(request)
        upload_id = request.path_params["id"]
        hit = st.auth.load_upload(upload_id, str(user.user_id)) if re.fullmatch(
            r"ups_[0-9a-f]{24}", upload_id) else None
        if hit is None:
            raise errors.NotFound(f"no upload session {upload_id!r}")
        state, last = hit
        if st.clock() - last > st.upload_idle:
            st.auth.delete_upload(upload_id)
            shutil.rmtree(os.path.join(st.upload_dir, upload_id), ignore_errors=True)
            raise errors.NotFound(f"upload session {upload_id!r} expired")
        return upload_id, state

    def session_json(upload_id: str, state: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": upload_id,
            "file_name": state["name"],
            "file_size": state["size"],
            "total_chunks": state["total_chunks"],
            "chunk_size": state["chunk_size"],
            "received_chunks": sorted(state["received"]),
            "expires_at": iso((st.clock() + st.upload_idle) * 1e9),
        }

    async def create_upload(request: Request) -> Response:
        user = ctx(request)
        body = await read_json(request)
        name = body.get("file_name")
        size = body.get("file_size")
        chunk = body.get("chunk_size", DEFAULT_CHUNK_SIZE)
        if not isinstance(name, str) or not name or "/" in name:
            raise errors.InvalidName("'file_name' must be a non-empty name without '/'")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_UPLOAD_SIZE:
            raise errors.InvalidArgument(f"'file_size' must be an integer in 0..{MAX_UPLOAD_SIZE}")
        if (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0
                or chunk % PIECE or chunk > MAX_CHUNK_SIZE):
            raise errors.InvalidArgument(
                f"'chunk_size' must be a multiple of {PIECE} up to {MAX_CHUNK_SIZE}")
        fid = body.get("folder_id")
        if fid is not None and not isinstance(fid, str):
            raise errors.InvalidArgument("'folder_id' must be a string")
        folder = await resolver.folder(request, fid)
        sweep_uploads()
        cfg = await user.remote.get_config()
        state = {
            "name": name, "size": size, "chunk_size": chunk, "folder": folder,
            "total_chunks": math.ceil(size / chunk), "received": [],
            "restricted": truthy(request.headers.get("restrict-access"))
            or body.get("restrict_access") is True,
            "plan": plan_segments(size, cfg),
        }
        upload_id = "ups_" + secrets.token_hex(12)
        st.auth.save_upload(upload_id, str(user.user_id), state)
        return JSONResponse(session_json(upload_id, state), status_code=201)

    async def upload_status(request: Request) -> Response:
        upload_id, state = load_session(request)
        return JSONResponse(session_json(upload_id, state))

    async def delete_upload(request: Request) -> Response:
        upload_id, _state = load_session(request)
        st.auth.delete_upload(upload_id)
        shutil.rmtree(os.path.join(st.upload_dir, upload_id), ignore_errors=True)
        return Response(status_code=204)

    async def put_chunk(request: Request) -> Response:
        user = ctx(request)
        upload_id, state = load_session(request)
        try:
            n = int(request.path_params["n"])
        except ValueError:
            raise errors.FilePartInvalid("the chunk number must be an integer") from None
        if not 0 <= n < state["total_chunks"]:
            raise errors.FilePartInvalid(f"chunk {n} is not in 0..{state['total_chunks'] - 1}")
        expect = min(state["chunk_size"], state["size"] - n * state["chunk_size"])
        buf = bytearray()
        got = 0
        async for data in request.stream():
            got += len(data)
            if got <= expect:
                buf += data
            elif got > 2 * MAX_CHUNK_SIZE:
                break  # stop reading; the connection is closed after the answer
        if got > expect:
            # The body was read (and dropped) so the client sees the answer, not a reset.
            raise errors.FilePartTooBig(f"chunk {n} must have {expect} bytes, not {got}")
        if not buf:
            raise errors.FilePartEmpty(f"chunk {n} is empty")
        if len(buf) != expect:
            raise errors.FilePartSizeInvalid(f"chunk {n} must have {expect} bytes, not {len(buf)}")
        first = n * state["chunk_size"] // PIECE
        count = math.ceil(len(buf) / PIECE)
        sdir = os.path.join(st.upload_dir, upload_id)

        async def one(i: int) -> None:
            piece = first + i
            data = bytes(buf[i * PIECE:(i + 1) * PIECE])
            seg = segment_of(state["plan"], piece)
            if seg["big"]:
                await save_big_piece(user.remote, seg, piece, data, state["name"])
            else:
                await trio.to_thread.run_sync(_write_piece, sdir, piece, data)

        await sender.send_parts(range(count), one, PARALLEL_PARTS)
        # Reload: other chunks may have arrived while this one was being saved.
        upload_id, state = load_session(request)
        if n not in state["received"]:
            state["received"].append(n)
        st.auth.save_upload(upload_id, str(user.user_id), state)
        return JSONResponse({"id": upload_id, "chunk": n, "size": len(buf),
                             "received_chunks": len(state["received"]),
                             "total_chunks": state["total_chunks"]})

    async def complete_upload(request: Request) -> Response:
        user = ctx(request)
        upload_id, _ = load_session(request)
        lock = session_locks.setdefault(upload_id, trio.Lock())
        async with lock:
            upload_id, state = load_session(request)
            missing = sorted(set(range(state["total_chunks"])) - set(state["received"]))
            if missing:
                raise ChunksMissing(missing)
            sdir = os.path.join(st.upload_dir, upload_id)

            async def get_piece(i: int) -> bytes:
                return await trio.to_thread.run_sync(_read_piece, sdir, i)

            docs = []
            for seg in state["plan"]:
                try:
                    docs.append(await finalize_segment(user.remote, seg, state["name"], get_piece))
                except errors.FilePartMissing as exc:
                    # The store let this part expire: the client must send its chunk again.
                    chunk = (seg["first"] + exc.part) * PIECE // state["chunk_size"]
                    state["received"] = [c for c in state["received"] if c != chunk]
                    st.auth.save_upload(upload_id, str(user.user_id), state)
                    raise ChunksMissing([chunk], f"chunk {chunk} expired in the store") from None
            out = await link_file(st, request, state["folder"], state["name"], tuple(docs),
                                  state["restricted"])
            st.auth.delete_upload(upload_id)
            shutil.rmtree(sdir, ignore_errors=True)
        session_locks.pop(upload_id, None)
        out["file_id"] = out["id"]
        return JSONResponse(out)

    # --- browsing (HTML listing for browsers and rclone's http remote) -----------------------

    async def browse(request: Request) -> Response:
        user = ctx(request)
        path = request.path_params.get("path", "")
        names = [urllib.parse.unquote(p) for p in path.split("/") if p]
        node = await user.remote.getattr(ROOT_ID)
        for name in names:
            node = await user.remote.lookup(node.id, name)
        if node.kind is NodeKind.DIR:
            if path and not path.endswith("/"):
                target = request.url.path + "/"
                if request.url.query:
                    target += "?" + request.url.query
                return RedirectResponse(target, status_code=301)
            return await listing_html(request, user, node, "/" + "/".join(names))
        if node.kind is NodeKind.SYMLINK:
            raise errors.NotFound("symlinks are not served")
        return await content_response(request, user.remote, node)

    async def listing_html(request: Request, user: UserCtx, node: Node, shown: str) -> Response:
        suffix = ""
        if "access_token" in request.query_params:
            suffix = "?" + urllib.parse.urlencode({"access_token": request.query_params["access_token"]})
        rows = []
        after: str | None = None
        for _ in range(10_000):  # bounded: 10 million entries at most
            page = await user.remote.list_folder(node.id, after, 1000)
            for n in page.entries:
                if n.kind is NodeKind.SYMLINK:
                    continue
                slash = "/" if n.kind is NodeKind.DIR else ""
                href = urllib.parse.quote(n.name) + slash + suffix
                rows.append(
                    f'<tr><td><a href="{html.escape(href)}">{html.escape(n.name)}{slash}</a></td>'
                    f"<td>{'-' if slash else n.size}</td><td>{iso(n.mtime_ns)}</td></tr>")
            after = page.next_after
            if after is None:
                break
        title = html.escape(shown if shown.endswith("/") else shown + "/")
        up = f'<a href="../{html.escape(suffix)}">../</a>' if node.id != ROOT_ID else ""
        doc = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title>"
               f"</head><body><h1>Index of {title}</h1>{up}\n<table>\n"
               "<tr><th>Name</th><th>Size</th><th>Modified</th></tr>\n"
               + "\n".join(rows) + "\n</table>\n"
               f'<form method="post" action="/api/v1/files{html.escape(suffix)}" enctype="multipart/form-data">'
               f'<input type="hidden" name="folder_id" value="{folder_id(user.user_id, node.id)}">'
               '<input type="file" name="file"><button>Upload</button></form>'
               "</body></html>\n")
        return HTMLResponse(doc)

    async def openapi(request: Request) -> Response:
        from .openapi import openapi_document

        return JSONResponse(openapi_document())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    from .rest_manage import manage_routes
    from .share_routes import share_routes
    from .webui import webui_routes

    routes = [
        *webui_routes(st),
        *share_routes(st, resolver),
        *manage_routes(st, resolver),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/api/v1/files", upload_file, methods=["POST"]),
        Route("/api/v1/files/{id}", file_meta, methods=["GET"]),
        Route("/api/v1/files/{id}", delete_file, methods=["DELETE"]),
        Route("/api/v1/files/{id}/content", file_content, methods=["GET", "HEAD"]),
        Route("/api/v1/files/{id}/thumbnail", file_thumbnail, methods=["GET"]),
        Route("/api/v1/folders", create_folder, methods=["POST"]),
        Route("/api/v1/folders/{id}", list_folder, methods=["GET"]),
        Route("/api/v1/uploads", create_upload, methods=["POST"]),
        Route("/api/v1/uploads/{id}", upload_status, methods=["GET"]),
        Route("/api/v1/uploads/{id}", delete_upload, methods=["DELETE"]),
        Route("/api/v1/uploads/{id}/chunks/{n}", put_chunk, methods=["PUT"]),
        Route("/api/v1/uploads/{id}/complete", complete_upload, methods=["POST"]),
        Route("/browse/{path:path}", browse, methods=["GET", "HEAD"]),
    ]
    app = Starlette(routes=routes, exception_handlers={
        errors.FsmountError: error_response,
        HTTPException: http_error,
        Exception: error_response,
    })
    app.state.fsm = st
    return app


def _write_piece(directory: str, piece: int, data: bytes) -> None:
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{piece}.{secrets.token_hex(4)}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, os.path.join(directory, str(piece)))


def _read_piece(directory: str, piece: int) -> bytes:
    try:
        with open(os.path.join(directory, str(piece)), "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise errors.NotFound(f"piece {piece} of the upload is missing on the server") from None
