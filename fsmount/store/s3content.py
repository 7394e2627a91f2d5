"""The S3 content backend: parts and blobs as objects in an S3-compatible bucket.

Selected by a content URL ``s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT[&region=R]``
(:func:`parse_s3_url`); credentials come from botocore's usual chain -- the environment
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``) or a credentials file
(``AWS_SHARED_CREDENTIALS_FILE``, ``~/.aws/credentials``) -- never from the URL.

Layout under ``PREFIX/`` (the local directory layout's relative paths, as object keys)::

    blobs/ab/<sha256>.<token>/<n>   chunk n of a finalized blob
    parts/<user>/<file_id hex>/<n>  part n of an upload in progress (any node can finish it)
    tmp/b<token>/0                  a concatenated blob being staged
    tmp/t<token>/...                (never written: see trash below)

How the local-file semantics of :class:`~fsmount.store.content.ContentBackend` map:

* **Staging, placing**: :meth:`S3Content.stage_part` keeps the bytes in this process (the
  part is already in memory); :meth:`place_part` is one PUT to the part's key, atomic in S3
  (a reader sees the old object or the new one), durable when it returns -- so ``sync`` and
  :meth:`sync_parts` are no-ops.
* **Part stamp** (inode, size, mtime on disk): each PUT carries a random 63-bit
  ``x-amz-meta-stamp``; the stamp is ``PartStamp(that token, ContentLength, 0)``, read back
  with a HEAD.  A re-sent part therefore always has a new stamp, like a new inode.
* **Blob chunks**: a blob keeps the upload's parts as its chunks, one object per chunk
  (reads are ranged GETs within one or two chunk objects).  One object per chunk, not one
  per blob: promoting is then a server-side copy per part, with no 5 MiB minimum part size
  as S3 multipart copies have, and no data through this process.
* **Rename** (promote, demote): a server-side CopyObject of each object, then deletion of
  the sources.  Not atomic as a whole, but the metadata commit that references the blob
  comes after all copies, and a crash in between leaves objects nobody references, which
  the orphan sweep and fsck find -- the same crash story as the local directory's.
* **Trash**: an upload's "trash" key is its own prefix ``parts/<user>/<file_id>``, deleted
  by the deleter after the commit (its upload row is gone by then; a client does not reuse
  a finalized upload's random file_id).
* **fsync of directories**: nothing to do; a successful PUT/copy is durable.
* **prefetch**: a no-op (no page cache to warm; read-ahead happens in the client's runs).
* **Deleted blob**: ``NoSuchKey`` on a GET raises FileNotFoundError, as a missing file does.

Client: botocore through boto3, synchronous (the store runs in worker threads), with a
connection pool sized for the server's worker threads, connect/read time-outs and
botocore's "standard" retry mode (throttling and 5xx are retried with back-off inside the
S3 transport; errors that remain surface as OSError to the store).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import errors
from .content import DiskSpace
from .localdir import blob_relpath, upload_relpath
from .rows import PartStamp, UploadKey

__all__ = ["S3Content", "S3Location", "parse_s3_url"]

#: Objects per DeleteObjects call (the S3 maximum).
DELETE_BATCH = 1000
#: Connections kept to the store (the server runs up to this many store calls at once).
POOL_CONNECTIONS = 32
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
#: Attempts per request in botocore's "standard" retry mode (1 = no retry).
MAX_ATTEMPTS = 4
#: Server-side copies in flight while a blob is promoted.
COPY_THREADS = 8
#: A staged blob above this size spills from memory to a temporary file before its PUT.
SPOOL_BYTES = 8 << 20


@dataclass(frozen=True)
class S3Location:
    """Where a store's content lives (no credentials in it)."""

    bucket: str
    prefix: str  #: "" or ends without a slash
    endpoint: str | None
    region: str

    def url(self) -> str:
        """The canonical content URL."""
        path = f"/{self.prefix}" if self.prefix else ""
        query = f"?endpoint={self.endpoint}" if self.endpoint else ""
        if self.region != "us-east-1":
            query += ("&" if query else "?") + f"region={self.region}"
        return f"s3://{self.bucket}{path}{query}"


def parse_s3_url(url: str) -> S3Location:
    """Parse ``s3://BUCKET[/PREFIX]?endpoint=URL&region=R``.

    Raises:
        InvalidArgument: not an s3:// URL, no bucket, credentials in it, or an unknown option.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.hostname:
        raise errors.InvalidArgument(f"content URL {url!r} is not s3://BUCKET[/PREFIX]?...")
    if parts.username or parts.password:
        raise errors.InvalidArgument("put S3 credentials in the environment "
                                     "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a "
                                     "credentials file, not in the URL")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"endpoint", "region"}
    if unknown:
        raise errors.InvalidArgument(f"unknown content URL option(s) {sorted(unknown)}")
    endpoint = query.get("endpoint", [None])[-1] or None
    region = query.get("region", ["us-east-1"])[-1] or "us-east-1"
    return S3Location(parts.netloc, parts.path.strip("/"), endpoint, region)


def _add_content_md5(params: dict[str, Any], **_kw: Any) -> None:
    """DeleteObjects needs Content-MD5 on older S3 implementations (Swift's s3api);
    recent botocore sends a CRC checksum instead."""
    body = params.get("body") or b""
    if isinstance(body, str):
        body = body.encode()
    params["headers"]["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()


def make_client(loc: S3Location) -> Any:
    """A botocore S3 client for ``loc`` (credentials from botocore's chain)."""
    import boto3
    from botocore.config import Config

    cfg = Config(
        region_name=loc.region,
        max_pool_connections=POOL_CONNECTIONS,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": "path"},
        # Hashes are the store's business (verified end to end); no extra CRC trailers,
        # which older S3 implementations reject.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = boto3.session.Session().client("s3", endpoint_url=loc.endpoint, config=cfg)
    client.meta.events.register("before-call.s3.DeleteObjects", _add_content_md5)
    return client


def _is_missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("NoSuchKey", "404", "NotFound") or status == 404


class _S3BlobWriter:
    """A staged concatenated blob: spooled here, one PUT at :meth:`finish`."""

    def __init__(self, owner: S3Content, key: str) -> None:
        self.key = key
        self._owner = owner
        self._buf: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115

    def write(self, data: bytes | memoryview) -> None:
        assert self._buf is not None, "write after finish or abort"
        self._buf.write(data)

    def finish(self) -> None:
        assert self._buf is not None, "finish after finish or abort"
        try:
            self._buf.seek(0)
            self._owner._put(f"{self.key}/0", self._buf)
        finally:
            self._buf.close()
            self._buf = None

    def abort(self) -> None:
        if self._buf is not None:
            self._buf.close()
            self._buf = None
        try:
            self._owner.delete(self.key)
        except OSError:
            pass


class S3Content:
    """Parts and blobs in an S3 bucket under a prefix (see the module docstring)."""

    def __init__(self, location: S3Location, client: Any | None = None) -> None:
        self.location = location
        self.bucket = location.bucket
        self._root = f"{location.prefix}/" if location.prefix else ""
        self._client = client if client is not None else make_client(location)
        self._staged: dict[str, bytes] = {}
        self._lock = threading.Lock()

    # --- plumbing -------------------------------------------------------------------------

    def _k(self, rel: str) -> str:
        return self._root + rel

    def _call(self, op: str, **kw: Any) -> Any:
        """One S3 call; transport errors become OSError (the store's I/O error)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, op)(Bucket=self.bucket, **kw)
        except ClientError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(kw.get("Key", "")) from None
            raise OSError(f"S3 {op} failed: {exc}") from None
        except BotoCoreError as exc:
            raise OSError(f"S3 {op} failed: {exc}") from None

    def _put(self, rel: str, body: Any, stamp: int | None = None) -> None:
        meta = {"stamp": str(stamp)} if stamp is not None else {}
        self._call("put_object", Key=self._k(rel), Body=body, Metadata=meta)

    def _get(self, rel: str, range_: str | None = None) -> bytes:
        kw: dict[str, Any] = {"Key": self._k(rel)}
        if range_ is not None:
            kw["Range"] = range_
        from botocore.exceptions import ClientError

        try:
            resp = self._client.get_object(Bucket=self.bucket, **kw)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "InvalidRange":  # a range past the end: nothing there
                return b""
            if _is_missing(exc):
                raise FileNotFoundError(rel) from None
            raise OSError(f"S3 get_object failed: {exc}") from None
        except Exception as exc:  # botocore transport errors
            raise OSError(f"S3 get_object failed: {exc}") from None
        body = resp["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def _head(self, rel: str) -> dict[str, Any] | None:
        try:
            return self._call("head_object", Key=self._k(rel))
        except FileNotFoundError:
            return None

    def _copy(self, src: str, dest: str) -> None:
        self._call("copy_object", Key=self._k(dest),
                   CopySource={"Bucket": self.bucket, "Key": self._k(src)},
                   MetadataDirective="COPY")

    def list_keys(self, rel_prefix: str = "") -> Iterator[tuple[str, int]]:
        """Every object under ``rel_prefix`` as (key relative to the store, size)."""
        token: str | None = None
        for _page in range(10_000_000):
            kw: dict[str, Any] = {"Prefix": self._k(rel_prefix), "MaxKeys": 1000}
            if token:
                kw["ContinuationToken"] = token
            resp = self._call("list_objects_v2", **kw)
            for obj in resp.get("Contents", ()):
                yield obj["Key"][len(self._root):], int(obj["Size"])
            if not resp.get("IsTruncated"):
                return
            token = resp.get("NextContinuationToken")

    def _delete_keys(self, rels: list[str]) -> None:
        for i in range(0, len(rels), DELETE_BATCH):
            batch = [{"Key": self._k(r)} for r in rels[i:i + DELETE_BATCH]]
            resp = self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
            failed = [e for e in resp.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
            if failed:
                raise OSError(f"S3 delete failed for {len(failed)} objects: {failed[0]}")

    def _move_tree(self, src: str, dest: str) -> None:
        """Copy every object under ``src/`` to ``dest/``, then delete the sources."""
        objs = [k for k, _ in self.list_keys(src + "/")]
        if not objs:
            raise FileNotFoundError(src)
        if len(objs) == 1:
            self._copy(objs[0], dest + objs[0][len(src):])
        else:
            # A gigabyte is 2048 chunk objects: copy them over several pooled connections
            # (each copy is a round trip that the store does server-side).
            with ThreadPoolExecutor(min(COPY_THREADS, len(objs)),
                                    thread_name_prefix="fsmount-s3-copy") as pool:
                for _ in pool.map(lambda k: self._copy(k, dest + k[len(src):]), objs):
                    pass
        self._delete_keys(objs)

    @staticmethod
    def _source(source: UploadKey | str) -> str:
        if isinstance(source, UploadKey):
            return upload_relpath(source.user_id, source.file_id)
        return source

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Check that the bucket answers (it is not created: that is the operator's job).

        Raises:
            InvalidArgument: the bucket does not exist or the credentials are refused.
        """
        try:
            self._call("list_objects_v2", Prefix=self._root, MaxKeys=1)
        except OSError as exc:
            raise errors.InvalidArgument(
                f"S3 content {self.location.url()} is not usable: {exc}") from None

    # --- parts ----------------------------------------------------------------------------

    def stage_part(self, data: bytes, *, sync: bool) -> str:
        key = f"mem:{secrets.token_hex(8)}"
        with self._lock:
            self._staged[key] = bytes(data)
        return key

    def place_part(self, staged: str, up: UploadKey, part: int) -> PartStamp:
        with self._lock:
            data = self._staged.pop(staged)
        stamp = secrets.randbits(63)
        try:
            self._put(f"{upload_relpath(up.user_id, up.file_id)}/{part}", data, stamp)
        except BaseException:
            with self._lock:
                self._staged[staged] = data  # so that drop_staged finds it
            raise
        return PartStamp(stamp, len(data), 0)

    def drop_staged(self, staged: str) -> None:
        with self._lock:
            self._staged.pop(staged, None)

    def _part_rel(self, up: UploadKey, part: int) -> str:
        return f"{upload_relpath(up.user_id, up.file_id)}/{part}"

    def part_stamp(self, up: UploadKey, part: int) -> PartStamp | None:
        head = self._head(self._part_rel(up, part))
        if head is None:
            return None
        token = head.get("Metadata", {}).get("stamp", "0")
        return PartStamp(int(token) if token.isdigit() else 0, int(head["ContentLength"]), 0)

    def read_part(self, up: UploadKey, part: int) -> bytes | None:
        try:
            return self._get(self._part_rel(up, part))
        except FileNotFoundError:
            return None

    def read_part_into(self, up: UploadKey, part: int, buf: memoryview) -> int | None:
        data = self.read_part(up, part)
        if data is None:
            return None
        n = min(len(data), len(buf))
        buf[:n] = data[:n]
        return n

    def part_head(self, up: UploadKey, size: int) -> bytes:
        return self._get(self._part_rel(up, 0), f"bytes=0-{max(size, 1) - 1}")

    def sync_parts(self, up: UploadKey, count: int) -> None:
        """Nothing to do: a PUT is durable when it returns."""

    def delete_part(self, up: UploadKey, part: int) -> None:
        self._delete_keys([self._part_rel(up, part)])

    def delete_upload(self, up: UploadKey) -> None:
        """Nothing to do: a prefix with no objects does not exist."""

    def trash_upload(self, up: UploadKey) -> str | None:
        rel = upload_relpath(up.user_id, up.file_id)
        for _ in self.list_keys(rel + "/"):
            return rel
        return None

    # --- blobs ----------------------------------------------------------------------------

    def start_blob(self) -> _S3BlobWriter:
        return _S3BlobWriter(self, f"tmp/b{secrets.token_hex(8)}")

    def staged_head(self, staged: str, size: int) -> bytes:
        return self._get(f"{staged}/0", f"bytes=0-{max(size, 1) - 1}")

    def promote(self, source: UploadKey | str, sha256: str) -> str:
        rel = blob_relpath(sha256, secrets.token_hex(6))
        self._move_tree(self._source(source), rel)
        return rel

    def demote(self, key: str, source: UploadKey | str) -> None:
        self._move_tree(key, self._source(source))

    def read_range(self, key: str, chunk_size: int, offset: int, length: int) -> bytes:
        out: list[bytes] = []
        pos, end = offset, offset + length
        while pos < end:
            idx, within = divmod(pos, chunk_size)
            want = min(chunk_size - within, end - pos)
            try:
                got = self._get(f"{key}/{idx}", f"bytes={within}-{within + want - 1}")
            except FileNotFoundError:
                if idx == offset // chunk_size:
                    raise
                break  # past the last chunk
            out.append(got)
            pos += len(got)
            if len(got) < want:
                break
        return b"".join(out)

    def prefetch(self, key: str, chunk_size: int, offset: int, length: int) -> None:
        """Nothing to warm (see the module docstring)."""

    def local_files(self, key: str, count: int) -> list[Path]:
        """None: the chunks are objects, not local files."""
        return []

    # --- deletion and listing -------------------------------------------------------------

    def entry_count(self, key: str) -> int | None:
        n = sum(1 for _ in self.list_keys(key + "/"))
        if n:
            return n
        return 1 if self._head(key) is not None else None

    def delete(self, key: str) -> None:
        if key.startswith("mem:"):
            self.drop_staged(key)
            return
        rels = [k for k, _ in self.list_keys(key + "/")]
        self._delete_keys(rels + [key])

    def part_size(self, up: UploadKey, part: int) -> int | None:
        head = self._head(self._part_rel(up, part))
        return int(head["ContentLength"]) if head is not None else None

    def disk_space(self) -> DiskSpace | None:
        """Unknown: an object store has no free space to report (statfs then shows the
        quota, or the large default)."""
        return None

    def sweep_orphans(self, blob_keys: set[str], parts: dict[UploadKey, set[int]]) -> list[str]:
        keep = {upload_relpath(up.user_id, up.file_id): {str(p) for p in nums}
                for up, nums in parts.items()}
        removed: list[str] = []
        doomed: list[str] = []
        for rel, _size in self.list_keys():
            kind, _, rest = rel.partition("/")
            if kind == "blobs":
                blob = rel.rsplit("/", 1)[0]
                if blob not in blob_keys:
                    doomed.append(rel)
                    if not removed or removed[-1] != blob:
                        removed.append(blob)
                continue
            if kind == "parts":
                up, _, name = rel.rpartition("/")
                if name not in keep.get(up, ()):
                    doomed.append(rel)
                    removed.append(rel)
                continue
            doomed.append(rel)  # tmp/ and anything else under the prefix
            removed.append(rel)
        self._delete_keys(doomed)
        return removed


def content_from_url(url: str) -> S3Content:
    """The content backend a content URL names.

    Raises:
        InvalidArgument: a malformed URL (see :func:`parse_s3_url`).
    """
    return S3Content(parse_s3_url(url))

