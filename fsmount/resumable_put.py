"""``fsmount put`` of a local file that survives an interruption and skips known content.

Design
------
The file is cut up front into the segment policy's balanced segments
(:func:`fsmount.upload.policy.plan_segments`, the same plan the REST server's sessions use),
so that a second run plans the very same segments and parts.  For each segment:

1. **Dedup.**  The segment's bytes are hashed locally (SHA-256) and the store is asked for a
   document with that hash and size (``get_document_by_hash``).  If it has one, nothing is
   sent for that segment.  The same bytes under a new name therefore send no parts.
2. **Resume.**  Otherwise its parts are saved with the segment's file id; each saved part is
   appended to a *journal* in the state directory (``$XDG_STATE_HOME/fsmount/puts``, else
   ``~/.local/state/fsmount/puts``).  The journal is keyed by the local file (absolute path,
   size, mtime) and the destination (the store or server, the user, the remote path), so a
   changed file or another destination never reuses it.  A later run with the same key
   reuses the file id and sends only the parts not in the journal.
3. **Finalize** (``uploadMedia``; MD5 re-read from the file for a small segment).  A part the
   store no longer has (it outlived the store's part lifetime) is re-read from the file and
   sent again (:func:`fsmount.upload.sender.finalize_segment`).

The journal is removed once the file is linked.  It is an append-only text file of JSON
lines, flushed after each part, so a SIGKILL loses at most the parts in flight (which are
then sent again: harmless, a part may be saved twice).  Works the same for the embedded
store, whose parts survive the process as the server's do.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from . import errors
from .remote import Document, InputFile, InputFileBig, Remote
from .upload import policy, sender

#: Bytes read at once while hashing (a multiple of the part size).
READ_BLOCK = 8 * policy.PART_SIZE


def default_state_dir() -> str:
    """``$XDG_STATE_HOME/fsmount``, else ``~/.local/state/fsmount``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(base, "fsmount")


@dataclass(frozen=True)
class PutKey:
    """What makes two runs of ``put`` the same upload."""

    path: str  #: absolute local path
    size: int
    mtime_ns: int
    destination: str  #: the store or server and user
    remote_path: str

    def digest(self) -> str:
        text = json.dumps([self.path, self.size, self.mtime_ns, self.destination,
                           self.remote_path])
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class SegmentState:
    """What the journal knows about one segment: its file id, when it was started (parts
    older than the store's part lifetime are gone), and the parts saved."""

    file_id: int
    started: float
    saved: set[int] = field(default_factory=set)


@dataclass
class PutStats:
    """What one run did (for tests and ``--verbose`` output)."""

    parts_sent: int = 0
    parts_resumed: int = 0  #: parts a previous run had saved and this one did not send
    segments_deduplicated: int = 0
    #: The whole file's SHA-256 (hex), computed on the way by the segments' dedup hashing,
    #: so that a file of several segments is linked with its digest.
    sha256: str = ""


class Journal:
    """The append-only record of one upload's saved parts (see the module docstring)."""

    def __init__(self, state_dir: str, key: PutKey) -> None:
        self.directory = os.path.join(state_dir, "puts")
        self.path = os.path.join(self.directory, key.digest() + ".jsonl")
        self.segments: dict[int, SegmentState] = {}
        self._f: object | None = None

    def load(self, max_age: float) -> None:
        """Read what a previous run recorded; segments older than ``max_age`` seconds are
        forgotten (their parts have expired in the store)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        now = time.time()
        for line in lines:
            try:
                rec = json.loads(line)
                seg = int(rec["seg"])
                if "file_id" in rec:
                    if now - float(rec["started"]) < max_age:
                        self.segments[seg] = SegmentState(int(rec["file_id"]),
                                                          float(rec["started"]))
                    else:
                        self.segments.pop(seg, None)
                elif seg in self.segments:
                    self.segments[seg].saved.add(int(rec["part"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a kill: ignore it

    def _append(self, rec: dict[str, object]) -> None:
        os.makedirs(self.directory, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    def start_segment(self, seg: int) -> SegmentState:
        hit = self.segments.get(seg)
        if hit is not None:
            return hit
        state = SegmentState(sender.new_file_id(), time.time())
        self.segments[seg] = state
        self._append({"seg": seg, "file_id": state.file_id, "started": state.started})
        return state

    def part_saved(self, seg: int, part: int) -> None:
        self.segments[seg].saved.add(part)
        self._append({"seg": seg, "part": part})

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _read(fd: int, offset: int, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = os.pread(fd, size - len(out), offset + len(out))
        if not chunk:
            raise errors.InvalidArgument("the local file shrank during the upload")
        out += chunk
    return bytes(out)


def _hash_range(fd: int, offset: int, size: int, whole: Any) -> str:
    """The SHA-256 of ``size`` bytes at ``offset``; ``whole`` (the file's hasher, ranges
    given in order) sees the same bytes."""
    h = hashlib.sha256()
    pos = 0
    while pos < size:
        n = min(READ_BLOCK, size - pos)
        data = _read(fd, offset + pos, n)
        h.update(data)
        whole.update(data)
        pos += n
    return h.hexdigest()


async def put_file(remote: Remote, path: str, name: str, key: PutKey, *, state_dir: str,
                   parallel: int = sender.DEFAULT_PARALLEL,
                   progress: Callable[[int], None] | None = None,
                   stats: PutStats | None = None) -> tuple[Document, ...]:
    """Upload the regular file at ``path`` as ``name``'s content, resuming a previous
    interrupted run with the same ``key`` and reusing content the store already has.

    Returns the segments in order (``()`` for an empty file); the caller links them and
    then calls :func:`forget` with the same key.

    Raises:
        OSError: the file cannot be read.
        InvalidArgument: the file changed size during the upload.
        FsmountError: the store's calls failed (after the transport's retries).
    """
    stats = stats if stats is not None else PutStats()
    cfg = await sender.cached_config(remote)
    plan = policy.plan_segments(key.size, cfg.max_parts, cfg.big_file_threshold)
    journal = Journal(state_dir, key)
    journal.load(max_age=cfg.part_lifetime * 0.9)
    fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY)
    done_bytes = 0
    whole = hashlib.sha256()
    try:
        docs: list[Document] = []
        for seg in plan:
            offset = policy.part_offset(seg.first_part)
            sha = await trio.to_thread.run_sync(_hash_range, fd, offset, seg.size, whole)
            known = await remote.get_document_by_hash(sha, seg.size, "")
            if known is not None:
                stats.segments_deduplicated += 1
                docs.append(known)
                done_bytes += seg.size
                if progress:
                    progress(done_bytes)
                continue
            def seg_progress(n: int, before: int = done_bytes) -> None:
                if progress:
                    progress(before + n)

            docs.append(await _send_segment(remote, fd, seg, name, journal, parallel, stats,
                                            seg_progress))
            done_bytes += seg.size
        stats.sha256 = whole.hexdigest()
        return tuple(docs)
    finally:
        os.close(fd)


def forget(state_dir: str, key: PutKey) -> None:
    """Drop the journal of a finished upload."""
    Journal(state_dir, key).remove()


async def _send_segment(remote: Remote, fd: int, seg: policy.SegmentPlan, name: str,
                        journal: Journal, parallel: int, stats: PutStats,
                        progress: Callable[[int], object]) -> Document:
    state = journal.start_segment(seg.index)
    base = policy.part_offset(seg.first_part)

    def part_len(n: int) -> int:
        return min(policy.PART_SIZE, seg.size - n * policy.PART_SIZE)

    async def send(n: int) -> None:
        data = await trio.to_thread.run_sync(_read, fd, base + n * policy.PART_SIZE,
                                             part_len(n))
        await sender.save_part(remote, name, state.file_id, n, data, small=not seg.big,
                               total=seg.parts)

    sent = 0

    async def send_and_record(n: int) -> None:
        nonlocal sent
        await send(n)
        journal.part_saved(seg.index, n)
        stats.parts_sent += 1
        sent += part_len(n)
        progress(sent)

    todo = [n for n in range(seg.parts) if n not in state.saved]
    stats.parts_resumed += seg.parts - len(todo)
    sent = sum(part_len(n) for n in range(seg.parts) if n in state.saved)
    progress(sent)
    await sender.send_parts(todo, send_and_record, max(1, parallel))

    async def resend(numbers: list[int]) -> None:
        await sender.send_parts(numbers, send, max(1, parallel))

    final: InputFile | InputFileBig
    if seg.big:
        final = InputFileBig(state.file_id, seg.parts, name)
    else:
        md5 = await trio.to_thread.run_sync(_md5_range, fd, base, seg.size)
        final = InputFile(state.file_id, seg.parts, name, md5)
    return await sender.finalize_segment(remote, final, name=name, index=seg.index,
                                         resend=resend)


def _md5_range(fd: int, offset: int, size: int) -> str:
    h = hashlib.md5()
    pos = 0
    while pos < size:
        n = min(READ_BLOCK, size - pos)
        h.update(_read(fd, offset + pos, n))
        pos += n
    return h.hexdigest()
