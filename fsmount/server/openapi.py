"""The OpenAPI 3.0 document served at ``/openapi.json``, written by hand.

It describes every endpoint of :mod:`fsmount.server.rest` and of the protocol API in
:mod:`fsmount.server.app`.  Every error answer has the same JSON shape (``Error``), listed
as the ``default`` response.  ``tests/server/test_schemathesis.py`` checks the server
against this document.
"""

from __future__ import annotations

from typing import Any

from .. import __version__

_JSON = "application/json"
_BIN = "application/octet-stream"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], desc: str = "OK") -> dict[str, Any]:
    return {"description": desc, "content": {_JSON: {"schema": schema}}}


_ERR = {"description": "Error (see the error name)", "content": {_JSON: {"schema": _ref("Error")}}}


def _op(summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, tag: str = "rest") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {**responses, "default": _ERR}}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    return op


def _q(name: str, typ: str = "integer", required: bool = True, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": typ, **extra}
    if typ == "integer":
        schema.setdefault("format", "int64")
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _p(name: str, typ: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": typ}}


def _h(name: str, desc: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
            "description": desc}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {_JSON: {"schema": schema}}}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


_I = {"type": "integer", "format": "int64"}
_S = {"type": "string"}
_B = {"type": "boolean"}
_NS = {"type": "string", "nullable": True}
_NI = {"type": "integer", "format": "int64", "nullable": True}


def _schemas() -> dict[str, Any]:
    return {
        "Error": _obj({"error": _S, "error_description": _S, "timestamp": _I,
                       "retry_after": {"type": "number"}, "part": _I,
                       "missing_chunks": {"type": "array", "items": _I}},
                      ["error", "error_description"]),
        "FileMeta": _obj({
            "id": _S, "type": _S, "name": _S, "folder_id": _S, "size": _I, "mime_type": _S,
            "checksum_sha256": _S, "md5": _NS, "created_at": _S, "modified_at": _S,
            "version": _I, "restricted": _B, "share-secret": _S, "file_id": _S,
            "mode": _I, "uid": _NI, "gid": _NI, "nlink": _I, "rdev": _I,
        }, ["id", "name", "size", "checksum_sha256"]),
        "Entry": _obj({"id": _S, "type": _S, "name": _S, "size": _I, "modified_at": _S,
                       "mode": _I, "uid": _NI, "gid": _NI, "nlink": _I, "rdev": _I},
                      ["id", "type", "name"]),
        "Folder": _obj({"id": _S, "name": _S, "parent_id": _NS,
                        "entries": {"type": "array", "items": _ref("Entry")},
                        "next_after": _NS}, ["id", "entries"]),
        "NewFolder": _obj({"id": _S, "name": _S, "parent_id": _S}, ["id", "name"]),
        "ShareLink": _obj({
            "id": _S, "name": _S, "file_id": _S, "created_at": _S, "expires_at": _NS,
            "has_password": _B, "state": {"type": "string", "enum": ["open", "expired", "revoked"]},
            "url": _S}, ["id", "name", "file_id", "state"]),
        "ShareLinks": _obj({"shares": {"type": "array", "items": _ref("ShareLink")}},
                           ["shares"]),
        "SearchResults": _obj({"query": _S, "truncated": _B, "results": {
            "type": "array", "items": _obj({"id": _S, "type": _S, "name": _S, "size": _I,
                                            "modified_at": _S, "path": _S},
                                           ["id", "name", "path"])}}, ["results"]),
        "UploadSession": _obj({
            "id": _S, "file_name": _S, "file_size": _I, "total_chunks": _I, "chunk_size": _I,
            "received_chunks": {"type": "array", "items": _I}, "expires_at": _S,
        }, ["id", "total_chunks", "chunk_size", "expires_at"]),
        "ChunkAck": _obj({"id": _S, "chunk": _I, "size": _I, "received_chunks": _I,
                          "total_chunks": _I}, ["id", "chunk"]),
        "Document": _obj({"id": _I, "access_hash": _I, "size": _I, "mime_type": _S,
                          "sha256": _S, "md5": _S, "date": {"type": "number"}, "file_type": _S},
                         ["id", "access_hash", "size", "sha256"]),
        "Node": _obj({"id": _I, "parent": _I, "name": _S, "kind": _S, "mode": _I, "size": _I,
                      "mtime_ns": _I, "ctime_ns": _I, "version": _I,
                      "segments": {"type": "array", "items": _ref("Document")},
                      "target": _NS, "restricted": _B, "sha256": _NS, "uid": _NI, "gid": _NI, "rdev": _I,
                      "atime_ns": _NI, "nlink": _I}, ["id", "parent", "name", "kind"]),
        "Owner": _obj({"uid": _I, "gid": _I}, ["uid", "gid"]),
        "Listing": _obj({"entries": {"type": "array", "items": _ref("Node")}, "next_after": _NS},
                        ["entries"]),
        "Ok": _obj({"ok": _B}, ["ok"]),
        "Location": _obj({"id": _I, "access_hash": _I}, ["id", "access_hash"]),
    }


def _proto_paths() -> dict[str, Any]:
    t = "protocol"
    loc = [_q("id"), _q("access_hash")]
    part_body = {"required": True, "content": {_BIN: {"schema": {"type": "string", "format": "binary"}}}}
    segs = {"type": "array", "items": _ref("Location")}
    node = _json(_ref("Node"))
    ok = _json(_ref("Ok"))
    owner = {**_ref("Owner"), "nullable": True}
    idem = _h("Idempotency-Key", "a retry with the same key returns the first answer")
    p = "/api/v1/proto/"
    return {
        p + "getConfig": {"get": _op("The caller's limits (appConfig)", {"200": _json(_obj({
            "max_parts": _I, "big_file_threshold": _I, "part_lifetime": {"type": "number"},
            "premium": _B, "extra": {"type": "object"}}, ["max_parts"]))}, tag=t)},
        p + "saveFilePart": {"post": _op("upload.saveFilePart (raw part bytes)", {"200": ok},
                                         params=[_q("file_id"), _q("file_part")], body=part_body, tag=t)},
        p + "saveBigFilePart": {"post": _op("upload.saveBigFilePart (raw part bytes)", {"200": ok},
                                            params=[_q("file_id"), _q("file_part"),
                                                    _q("file_total_parts")], body=part_body, tag=t)},
        p + "uploadMedia": {"post": _op("Finalize an upload (inputFile / inputFileBig)",
                                        {"200": _json(_ref("Document"))}, params=[idem], tag=t,
                                        body=_json_body(_obj({"id": _I, "parts": _I, "name": _S,
                                                              "md5_checksum": _S, "big": _B},
                                                             ["id", "parts", "name"])))},
        p + "getFile": {"get": _op("upload.getFile: raw bytes; X-File-Type and X-File-Mtime headers"
                                   " (windows=N: X-Window-Sizes/-Types; hashes=true: "
                                   "X-Block-Hashes, base64 SHA-256 per 128 KiB block; with "
                                   "checksums=crc32c: X-Block-Crc32c, base64 CRC32C per "
                                   "block, where the store has them)",
                                   {"200": {"description": "the bytes", "content": {
                                       _BIN: {"schema": {"type": "string", "format": "binary"}}}}},
                                   params=loc + [_q("offset"), _q("limit"),
                                                 _q("precise", "boolean", False),
                                                 _q("windows", required=False, minimum=1,
                                                    maximum=8),
                                                 _q("hashes", "boolean", False),
                                                 _q("checksums", "string", False,
                                                    enum=["crc32c"])], tag=t)},
        p + "getFileHashes": {"get": _op("upload.getFileHashes (hex SHA-256 per 128 KiB)", {
            "200": _json({"type": "array", "items": _obj({"offset": _I, "limit": _I, "hash": _S},
                                                         ["offset", "limit", "hash"])})},
            params=loc + [_q("offset"), _q("windows", required=False, minimum=1, maximum=16)],
            tag=t)},
        p + "getFileChecksums": {"get": _op(
            "Extension: getFileHashes' blocks as CRC32C (or hex SHA-256 where the store has "
            "no CRC32Cs for the document)", {
                "200": _json({"type": "array", "items": _obj(
                    {"offset": _I, "limit": _I, "crc32c": {"type": "integer", "minimum": 0,
                                                           "maximum": 4294967295},
                     "hash": _S}, ["offset", "limit"])})},
            params=loc + [_q("offset"), _q("windows", required=False, minimum=1, maximum=16)],
            tag=t)},
        p + "getDocumentByHash": {"get": _op("messages.getDocumentByHash", {
            "200": _json(_obj({"document": {**_ref("Document"), "nullable": True}}, ["document"]))},
            params=[_q("sha256", "string"), _q("size"), _q("mime_type", "string", False)], tag=t)},
        p + "lookup": {"get": _op("Find a name in a folder", {"200": node},
                                  params=[_q("parent"), _q("name", "string")], tag=t)},
        p + "getattr": {"get": _op("A node by id", {"200": node}, params=[_q("node_id")], tag=t)},
        p + "listFolder": {"get": _op("One page of a folder", {"200": _json(_ref("Listing"))},
                                      params=[_q("folder_id"), _q("after", "string", False),
                                              _q("limit", required=False)], tag=t)},
        p + "statfs": {"get": _op("Usage and quota", {"200": _json(_obj({
            "used_bytes": _I, "quota_bytes": _I, "files": _I, "max_files": _I,
            "disk_free_bytes": _I, "disk_total_bytes": _I}, ["used_bytes"]))},
            tag=t)},
        p + "reserveNodeIds": {"post": _op(
            "Extension: hand out count (1..10000) node ids to create nodes with later "
            "(node_id of mkdir, createFile, putFile, symlink)", {"200": _json(_obj(
                {"first": _I}, ["first"]))}, params=[idem], tag=t,
            body=_json_body(_obj({"count": _I}, ["count"])))},
        p + "mkdir": {"post": _op("Make a folder", {"200": node}, params=[idem], tag=t,
                                  body=_json_body(_obj({"parent": _I, "name": _S, "mode": _I,
                                                        "owner": owner, "node_id": _NI},
                                                       ["parent", "name"])))},
        p + "putFile": {"post": _op(
            "Extension: create (or replace) a small file with its whole content (raw body, at "
            "most big_file_threshold bytes) in one call", {"200": node},
            params=[_q("parent"), _q("name", "string"), _q("md5_checksum", "string"),
                    _q("mode", required=False), _q("mtime_ns", required=False),
                    _q("replace", "boolean", False), _q("uid", required=False),
                    _q("gid", required=False), _q("node_id", required=False), idem],
            body=part_body, tag=t)},
        p + "createFile": {"post": _op("Create (or replace) a file from documents", {"200": node},
                                       params=[idem], tag=t, body=_json_body(_obj({
                                           "parent": _I, "name": _S, "segments": segs, "mode": _I,
                                           "mtime_ns": _I, "replace": _B, "sha256": _NS,
                                           "owner": owner, "node_id": _NI},
                                           ["parent", "name"])))},
        p + "setContent": {"post": _op("Replace a file's content", {"200": node}, params=[idem],
                                       tag=t, body=_json_body(_obj({
                                           "node_id": _I, "segments": segs, "mtime_ns": _I,
                                           "sha256": _NS},
                                           ["node_id"])))},
        p + "symlink": {"post": _op("Make a symlink", {"200": node}, params=[idem], tag=t,
                                    body=_json_body(_obj({"parent": _I, "name": _S, "target": _S,
                                                          "owner": owner, "node_id": _NI},
                                                         ["parent", "name", "target"])))},
        p + "mknod": {"post": _op("Make a FIFO, socket or device node (no content)", {"200": node},
                                  params=[idem], tag=t, body=_json_body(_obj({
                                      "parent": _I, "name": _S,
                                      "kind": {"type": "string", "enum": [
                                          "fifo", "socket", "chardev", "blockdev"]},
                                      "mode": _I, "rdev": _I, "owner": owner},
                                      ["parent", "name", "kind"])))},
        p + "link": {"post": _op("One more name for a node (a hard link)", {"200": node},
                                 params=[idem], tag=t, body=_json_body(_obj({
                                     "node_id": _I, "new_parent": _I, "new_name": _S},
                                     ["node_id", "new_parent", "new_name"])))},
        p + "chown": {"post": _op("Set the numeric owner and/or group", {"200": node}, tag=t,
                                  body=_json_body(_obj({"node_id": _I, "uid": _NI, "gid": _NI},
                                                       ["node_id"])))},
        p + "setTimes": {"post": _op("Set atime and/or mtime (ns)", {"200": node}, tag=t,
                                     body=_json_body(_obj({"node_id": _I, "atime_ns": _NI,
                                                           "mtime_ns": _NI}, ["node_id"])))},
        p + "getXattr": {"get": _op("One extended attribute (base64 value)", {"200": _json(_obj(
            {"value": _S}, ["value"]))}, params=[_q("node_id"), _q("name", "string")], tag=t)},
        p + "listXattrs": {"get": _op("A node's extended attribute names", {"200": _json(_obj(
            {"names": {"type": "array", "items": _S}}, ["names"]))}, params=[_q("node_id")],
            tag=t)},
        p + "setXattr": {"post": _op("Set an extended attribute (base64 value)", {"200": ok},
                                     params=[idem], tag=t, body=_json_body(_obj({
                                         "node_id": _I, "name": _S, "value": _S,
                                         "mode": {"type": "string",
                                                  "enum": ["either", "create", "replace"]}},
                                         ["node_id", "name", "value"])))},
        p + "removeXattr": {"post": _op("Remove an extended attribute", {"200": ok},
                                        params=[idem], tag=t, body=_json_body(_obj({
                                            "node_id": _I, "name": _S}, ["node_id", "name"])))},
        p + "setattr": {"post": _op("Change mode or mtime", {"200": node}, tag=t,
                                    body=_json_body(_obj({"node_id": _I, "mode": _I,
                                                          "mtime_ns": _I}, ["node_id"])))},
        p + "rename": {"post": _op("Move or rename", {"200": node}, params=[idem], tag=t,
                                   body=_json_body(_obj({"parent": _I, "name": _S,
                                                         "new_parent": _I, "new_name": _S,
                                                         "replace": _B},
                                                        ["parent", "name", "new_parent", "new_name"])))},
        p + "unlink": {"post": _op("Remove a file", {"200": ok}, params=[idem], tag=t,
                                   body=_json_body(_obj({"parent": _I, "name": _S},
                                                        ["parent", "name"])))},
        p + "rmdir": {"post": _op("Remove an empty folder", {"200": ok}, params=[idem], tag=t,
                                  body=_json_body(_obj({"parent": _I, "name": _S},
                                                       ["parent", "name"])))},
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 description of the whole HTTP API."""
    binary = {"type": "string", "format": "binary"}
    content_ok = {"description": "the bytes (streamed)", "content": {"*/*": {"schema": binary}}}
    share = _h("share-secret", "the share secret of another user's restricted file")
    paths: dict[str, Any] = {
        "/api/v1/files": {"post": _op(
            "Simple upload (multipart)", {"201": _json(_ref("FileMeta"), "Created")},
            params=[_h("restrict-access", "true: return a share-secret for other users")],
            body={"required": True, "content": {"multipart/form-data": {"schema": _obj(
                {"file": binary, "folder_id": _S, "share_id": _S}, ["file"])}}})},
        "/api/v1/files/{id}": {
            "get": _op("File metadata with checksum_sha256", {"200": _json(_ref("FileMeta"))},
                       params=[_p("id"), share]),
            "delete": _op("Delete a file", {"204": {"description": "Deleted"}}, params=[_p("id")]),
            "patch": _op("Rename and/or move a file (never replaces)",
                         {"200": _json(_ref("Entry"))}, params=[_p("id")],
                         body=_json_body(_obj({"name": _S, "folder_id": _S}))),
        },
        "/api/v1/files/{id}/content": {
            "get": _op("Download (Range: 206/416; thumbnail: true gives the m thumbnail)",
                       {"200": content_ok, "206": content_ok},
                       params=[_p("id"), share, _h("Range", "bytes=START-END"),
                               _h("thumbnail", "true: the image's thumbnail instead"),
                               _q("type", "string", False, enum=["s", "m", "x"])]),
            "head": _op("Size and type of the content", {"200": {"description": "headers only"},
                                                         "206": {"description": "headers only"}},
                        params=[_p("id"), share, _h("Range", "bytes=START-END")]),
        },
        "/api/v1/files/{id}/thumbnail": {"get": _op(
            "Thumbnail in a box of 100 (s), 320 (m) or 800 (x) pixels",
            {"200": {"description": "JPEG or PNG", "content": {"image/jpeg": {"schema": binary},
                                                              "image/png": {"schema": binary}}}},
            params=[_p("id"), share, _q("type", "string", False, enum=["s", "m", "x"])])},
        "/api/v1/folders": {"post": _op(
            "Make a folder", {"201": _json(_ref("NewFolder"), "Created")},
            body=_json_body(_obj({"name": _S, "parent_id": _S}, ["name"])))},
        "/api/v1/folders/{id}": {
            "get": _op("List a folder (root: the caller's root)", {"200": _json(_ref("Folder"))},
                       params=[_p("id"), _q("after", "string", False),
                               _q("limit", required=False, minimum=1, maximum=1000)]),
            "patch": _op("Rename and/or move a folder (never replaces)",
                         {"200": _json(_ref("Entry"))}, params=[_p("id")],
                         body=_json_body(_obj({"name": _S, "folder_id": _S}))),
            "delete": _op("Remove a folder (empty, or everything with recursive=true)",
                          {"204": {"description": "Deleted"}},
                          params=[_p("id"), _q("recursive", "boolean", False)]),
        },
        "/api/v1/shares": {
            "post": _op("Create a public share link (answers its url once)",
                        {"201": _json(_ref("ShareLink"), "Created")},
                        body=_json_body(_obj({"path": _S, "file_id": _S, "expires": _S,
                                              "expires_in": {"type": "number"},
                                              "password": _S}))),
            "get": _op("The caller's share links (no secrets)", {"200": _json(_ref("ShareLinks"))}),
        },
        "/api/v1/shares/{id}": {"delete": _op(
            "Revoke a share link", {"204": {"description": "Revoked"}}, params=[_p("id")])},
        "/api/v1/search": {"get": _op(
            "Names containing q (case-insensitive) in the caller's tree",
            {"200": _json(_ref("SearchResults"))}, params=[_q("q", "string")])},
        "/api/v1/uploads": {"post": _op(
            "Create a resumable upload session", {"201": _json(_ref("UploadSession"), "Created")},
            params=[_h("restrict-access", "true: complete returns a share-secret")],
            body=_json_body(_obj({"share_id": _S, "folder_id": _S, "file_name": _S,
                                  "file_size": _I, "chunk_size": _I, "restrict_access": _B},
                                 ["file_name", "file_size"])))},
        "/api/v1/uploads/{id}": {
            "get": _op("Session state (received chunks)", {"200": _json(_ref("UploadSession"))},
                       params=[_p("id")]),
            "delete": _op("Abandon a session", {"204": {"description": "Deleted"}}, params=[_p("id")]),
        },
        "/api/v1/uploads/{id}/chunks/{n}": {"put": _op(
            "Upload chunk n (any order, in parallel)", {"200": _json(_ref("ChunkAck"))},
            params=[_p("id"), _p("n", "integer")],
            body={"required": True, "content": {_BIN: {"schema": binary}}})},
        "/api/v1/uploads/{id}/complete": {"post": _op(
            "Finalize the session into a file", {"200": _json(_ref("FileMeta"))},
            params=[_p("id")])},
        "/browse/{path}": {"get": _op(
            "HTML listing of a folder, or a file's bytes (Range supported)",
            {"200": {"description": "HTML or bytes", "content": {"text/html": {"schema": _S},
                                                                 "*/*": {"schema": binary}}},
             "206": content_ok, "301": {"description": "folder without trailing slash"}},
            params=[{"name": "path", "in": "path", "required": True,
                     "schema": {"type": "string"}}])},
    }
    paths.update(_proto_paths())
    return {
        "openapi": "3.0.3",
        "info": {"title": "fsmount server", "version": __version__,
                 "description": "REST shapes of ScaiDrive and easemob chatfiles, and the "
                                "chunked transfer protocol API.  See docs/api.md."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
