"""The store with its content in S3 (Swift + s3api from tests/engines.py): the object
layout, fsck against the object listing, the orphan sweep, and the selection rules."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fsmount import errors, fsck
from fsmount.protocol import KIB
from fsmount.remote import ROOT_ID, InputFile, InputFileBig
from fsmount.store import Store
from fsmount.store.s3content import S3Content, parse_s3_url


def put(store: Store, uid: int, name: str, data: bytes, fid: int):
    chunks = [data[i : i + 512 * KIB] for i in range(0, len(data), 512 * KIB)]
    for i, c in enumerate(chunks):
        store.save_big_file_part(uid, fid, i, len(chunks), c)
    doc = store.upload_media(uid, InputFileBig(fid, len(chunks), name))
    return store.create_file(uid, ROOT_ID, name, (doc.location,), replace=True)


def objects(url: str) -> dict[str, int]:
    return dict(S3Content(parse_s3_url(url)).list_keys())


def test_blob_is_one_object_per_chunk_and_reads_are_ranges(tmp_path: Path, s3_url: str) -> None:
    path = tmp_path / "s"
    data = os.urandom(1300 * KIB)
    with Store(path, content=s3_url) as store:
        uid = store.default_user_id
        node = put(store, uid, "f", data, 1)
        loc = node.segments[0].location
        # A range across the first chunk boundary (two ranged GETs).
        assert store.get_file(uid, loc, 504 * KIB, 16 * KIB).bytes == data[504 * KIB : 520 * KIB]
        keys = objects(s3_url)
        blob = [k for k in keys if k.startswith("blobs/")]
        assert sorted(keys[k] for k in blob) == [276 * KIB, 512 * KIB, 512 * KIB]
        assert not [k for k in keys if k.startswith("parts/")]
    assert (path / "content.url").read_text().startswith("s3://")
    assert not (path / "blobs").exists()
    # Reopened without a URL, the store finds its content again.
    with Store(path) as store:
        assert store.get_file(store.default_user_id, loc, 0, 4 * KIB).bytes == data[:4 * KIB]
    assert fsck.check(path, deep=True) == []


def test_parts_in_progress_are_objects_another_opener_can_finish(tmp_path: Path,
                                                                 s3_url: str) -> None:
    path = tmp_path / "s"
    with Store(path, content=s3_url) as store:
        store.save_file_part(store.default_user_id, 7, 0, b"a" * KIB)
    assert "parts/1/0000000000000007/0" in objects(s3_url)
    with Store(path) as store:
        uid = store.default_user_id
        store.save_file_part(uid, 7, 1, b"world!")
        whole = b"a" * KIB + b"world!"
        doc = store.upload_media(uid, InputFile(7, 2, "hw", hashlib.md5(whole).hexdigest()))
        assert doc.size == len(whole)
        assert store.get_file(uid, doc.location, 0, 4 * KIB).bytes == whole
    assert fsck.check(path) == []


def test_fsck_reports_missing_blob_and_orphans_and_the_sweep_reclaims_them(
        tmp_path: Path, s3_url: str) -> None:
    path = tmp_path / "s"
    with Store(path, content=s3_url) as store:
        uid = store.default_user_id
        put(store, uid, "keep", b"k" * 3000, 1)
        put(store, uid, "lose", b"l" * 4000, 2)
    content = S3Content(parse_s3_url(s3_url))
    blobs = sorted(k for k, _ in content.list_keys("blobs/"))
    assert len(blobs) == 2
    content._put("blobs/ee/" + "e" * 64 + ".zz/0", b"orphan")
    content._put("parts/1/0000000000000009/3", b"stray")
    assert sorted(fsck.check(path)) == sorted([
        "orphan blob blobs/ee/" + "e" * 64 + ".zz",
        "orphan part object parts/1/0000000000000009/3"])
    # The next opener that has the store to itself reclaims the orphans.
    Store(path).close()
    assert fsck.check(path) == []
    content.delete(blobs[0].rsplit("/", 1)[0])
    problems = fsck.check(path)
    assert len(problems) == 1 and "objects" in problems[0] and "missing" in problems[0], problems


def test_fsck_verb_on_s3_content(tmp_path: Path, s3_url: str) -> None:
    path = tmp_path / "s"
    with Store(path, content=s3_url) as store:
        put(store, store.default_user_id, "f", b"x" * 3000, 1)
    S3Content(parse_s3_url(s3_url))._put("blobs/aa/" + "a" * 64 + ".x/0", b"?")
    res = subprocess.run([sys.executable, "-m", "fsmount", "fsck", "--store", str(path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 1 and "orphan blob blobs/aa/" in res.stdout, res.stderr


def test_content_selection_is_checked(tmp_path: Path, s3_url: str) -> None:
    local = tmp_path / "local"
    Store(local).close()
    with pytest.raises(errors.InvalidArgument, match="cannot switch"):
        Store(local, content=s3_url)
    s3 = tmp_path / "s3"
    Store(s3, content=s3_url).close()
    with pytest.raises(errors.InvalidArgument, match="keeps its content at"):
        Store(s3, content=s3_url + "x")
    with pytest.raises(errors.InvalidArgument, match="credentials"):
        parse_s3_url("s3://key:secret@bucket/p")
    with pytest.raises(errors.InvalidArgument, match="unknown"):
        parse_s3_url("s3://bucket/p?colour=red")
    with pytest.raises(errors.InvalidArgument, match="not usable"):
        Store(tmp_path / "nobucket", content=s3_url.replace("s3://fsmount-test", "s3://absent"))


def test_serve_with_content_creates_an_s3_store(tmp_path: Path, s3_url: str) -> None:
    import signal

    from engines import free_port
    from server.harness import start_serve

    path = tmp_path / "s"
    proc, log = start_serve(path, free_port(), "--content", s3_url)
    try:
        assert "content at s3://" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert parse_s3_url((path / "content.url").read_text().strip()) == parse_s3_url(s3_url)
    with Store(path) as store:
        put(store, store.default_user_id, "f", b"served" * 100, 1)
    assert fsck.check(path) == []
