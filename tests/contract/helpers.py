"""Helpers shared by the contract tests (upload a file, read it back, ...)."""

from __future__ import annotations

import hashlib
import secrets

from fsmount.protocol import MIB
from fsmount.remote import Document, InputFile, InputFileBig, Remote

from .conftest import Harness

__all__ = ["Harness", "new_file_id", "upload", "read_all", "after_grace"]



def new_file_id() -> int:
    return secrets.randbits(63)


async def upload(
    remote: Remote, data: bytes, *, part_size: int = 512 * 1024, big: bool | None = None,
    name: str = "f.bin", file_id: int | None = None,
) -> Document:
    """Upload ``data`` in order and finalize it (small form unless ``big`` or too large)."""
    assert data, "parts are never empty; an empty file has no document"
    fid = new_file_id() if file_id is None else file_id
    chunks = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    cfg = await remote.get_config()
    if big is None:
        big = len(data) > cfg.big_file_threshold
    for i, chunk in enumerate(chunks):
        if big:
            await remote.save_big_file_part(fid, i, len(chunks), chunk)
        else:
            await remote.save_file_part(fid, i, chunk)
    if big:
        return await remote.upload_media(InputFileBig(fid, len(chunks), name))
    return await remote.upload_media(
        InputFile(fid, len(chunks), name, hashlib.md5(data).hexdigest())
    )


async def read_all(remote: Remote, doc: Document) -> bytes:
    out = bytearray()
    for off in range(0, doc.size, MIB):
        r = await remote.get_file(doc.location, off, MIB)
        out += r.bytes
    return bytes(out)


async def after_grace(h: Harness) -> None:
    """Let the unlinked-document grace period pass and have the store sweep.

    Any later store call may run the expiry sweep; saving a (harmless, temporary) part is
    one that every implementation passes to the store.
    """
    h.clock.advance(h.limits.unlinked_grace + 1)
    await h.remote.save_file_part(new_file_id(), 0, b"sweep")
