"""Image thumbnails for the REST API (Pillow), cached on disk next to the store.

Sizes follow the Telegram seed's box filters: ``s`` 100, ``m`` 320, ``x`` 800 pixels (the
longer side fits the box, the aspect ratio is kept, images are never enlarged).  A
thumbnail is cached under ``DIR/thumbnails`` keyed by the SHA-256 of the file's content and
the size type, so a changed file gets a new thumbnail and an old one can never be served
for it; the cache is bounded in bytes, least recently used first out.  Work runs in a
thread, off the trio loop.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import OrderedDict

import trio

from .. import errors

#: Size type -> box side in pixels (telegram-files-api-current.md, "Image thumbnail types").
BOXES = {"s": 100, "m": 320, "x": 800}
#: The size served for easemob's ``thumbnail: true`` header.
DEFAULT_TYPE = "m"
#: Images larger than this are not thumbnailed (the whole image is read into memory).
MAX_SOURCE_BYTES = 64 << 20
#: Pillow refuses to decode images with more pixels than this (decompression bombs).
MAX_PIXELS = 100_000_000
#: Bytes of thumbnails kept on disk by default (``fsmount serve --thumbnail-cache``).
DEFAULT_CACHE_BYTES = 256 << 20


class NotAnImage(errors.FsmountError):
    """The file is not an image Pillow can read, so it has no thumbnail."""

    name = "NOT_AN_IMAGE"
    http_status = 415


def check_type(size_type: str) -> int:
    """The box side of ``size_type``.  Raises InvalidArgument for an unknown type."""
    try:
        return BOXES[size_type]
    except KeyError:
        raise errors.InvalidArgument(
            f"thumbnail type must be one of {', '.join(BOXES)}, not {size_type!r}") from None


def render(data: bytes, box: int) -> tuple[bytes, str]:
    """Make a thumbnail of image ``data`` fitting a ``box`` square: (bytes, MIME type).

    Images with transparency become PNG, the rest JPEG.

    Raises:
        NotAnImage: Pillow cannot decode ``data``.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (box, box))  # lets JPEG decode at a reduced scale: much faster
            img.load()
            img.thumbnail((box, box))
            out = io.BytesIO()
            if img.mode in ("RGBA", "LA", "P") and ("A" in img.mode or "transparency" in img.info):
                img.convert("RGBA").save(out, "PNG", optimize=True)
                return out.getvalue(), "image/png"
            img.convert("RGB").save(out, "JPEG", quality=85)
            return out.getvalue(), "image/jpeg"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise NotAnImage(f"cannot make a thumbnail: {exc}") from exc


class ThumbnailCache:
    """Thumbnails on disk, keyed by content SHA-256 and size type, at most ``max_bytes``
    of them: the least recently used go first (what was on disk when the server started
    counts as used in the order of its mtimes)."""

    def __init__(self, directory: str, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        #: How many thumbnails were rendered (not served from the cache); tests read it.
        self.rendered = 0
        #: Path -> size of every cached thumbnail, least recently used first (loaded from
        #: the directory on first use).  Touched only on the trio thread.
        self._lru: OrderedDict[str, int] | None = None
        self._bytes = 0
        self._load_lock = trio.Lock()

    async def _index(self) -> OrderedDict[str, int]:
        async with self._load_lock:
            if self._lru is None:
                entries = await trio.to_thread.run_sync(_scan, self.directory)
                self._lru = OrderedDict((path, size) for _, path, size in sorted(entries))
                self._bytes = sum(self._lru.values())
        return self._lru

    async def _used(self, path: str, size: int) -> None:
        """Note a hit or a new thumbnail; delete the least recently used beyond the bound."""
        lru = await self._index()
        self._bytes += size - lru.pop(path, 0)
        lru[path] = size
        victims = []
        while self._bytes > self.max_bytes and len(lru) > 1:
            old, old_size = lru.popitem(last=False)
            self._bytes -= old_size
            victims.append(old)
        if victims:
            await trio.to_thread.run_sync(_unlink_all, victims)

    def _path(self, sha256: str, size_type: str, ext: str) -> str:
        return os.path.join(self.directory, f"{sha256}-{size_type}.{ext}")

    def cached(self, sha256: str, size_type: str) -> tuple[str, str] | None:
        """(path, MIME type) of a cached thumbnail, or None."""
        for ext, mime in (("jpg", "image/jpeg"), ("png", "image/png")):
            path = self._path(sha256, size_type, ext)
            if os.path.exists(path):
                return path, mime
        return None

    async def get(self, sha256: str, size_type: str, load: object) -> tuple[bytes, str]:
        """The thumbnail's bytes and MIME type, rendering it with ``await load()`` (the
        image bytes) the first time.

        Raises NotAnImage, InvalidArgument (unknown size type).
        """
        box = check_type(size_type)
        hit = self.cached(sha256, size_type)
        if hit is not None:
            path, mime = hit
            try:
                data = await trio.to_thread.run_sync(_read, path)
            except FileNotFoundError:
                pass  # evicted meanwhile: render it again
            else:
                await self._used(path, len(data))
                return data, mime
        data = await load()  # type: ignore[operator]
        thumb, mime = await trio.to_thread.run_sync(render, data, box)
        self.rendered += 1
        ext = "png" if mime == "image/png" else "jpg"
        path = self._path(sha256, size_type, ext)
        await trio.to_thread.run_sync(self._store, path, thumb)
        await self._used(path, len(thumb))
        return thumb, mime

    def _store(self, path: str, data: bytes) -> None:
        # Write then rename, so a reader never sees half a thumbnail.
        os.makedirs(self.directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _scan(directory: str) -> list[tuple[int, str, int]]:
    """(mtime, path, size) of the cached thumbnails in ``directory``."""
    out = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith(".tmp-") or not entry.is_file():
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                out.append((st.st_mtime_ns, entry.path, st.st_size))
    except FileNotFoundError:
        pass
    return out


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
