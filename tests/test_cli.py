"""The command line as a user meets it: help for every verb, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fsmount import cli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsmount.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def verbs() -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    return sorted(sub.choices)  # type: ignore[attr-defined]


def test_top_level_help_lists_verbs() -> None:
    res = run("--help")
    assert res.returncode == 0
    for verb in verbs():
        assert verb in res.stdout


@pytest.mark.parametrize("verb", verbs())
def test_every_verb_has_help(verb: str) -> None:
    res = run(verb, "--help")
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout
    assert "Traceback" not in res.stderr


def test_no_verb_is_usage_error() -> None:
    res = run()
    assert res.returncode == 2
    assert "Traceback" not in res.stderr


def test_get_of_a_corrupted_file_is_one_line_and_leaves_nothing(tmp_path) -> None:
    """A chunk that fails its checksum ends `fsmount get` with one error line and
    status 1: no traceback, and no partial file where the download was going."""
    from fsmount.remote import ROOT_ID
    from fsmount.store import Store

    src = tmp_path / "src"
    src.write_bytes(bytes(range(256)) * 12_000)  # 3 MB: three windows
    store_dir = tmp_path / "store"
    assert run("init", "--store", str(store_dir)).returncode == 0
    assert run("put", "--store", str(store_dir), str(src), "/f").returncode == 0
    with Store(store_dir) as store:
        uid = store.default_user_id
        node = store.lookup(uid, ROOT_ID, "f")
        blob = store.blob_files(uid, node.segments[0].location)[0]
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))

    out = tmp_path / "out"
    res = run("get", "--store", str(store_dir), "/f", str(out))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "CHECKSUM_MISMATCH" in res.stderr.splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "store"]


def test_transfers_tune_malloc_for_chunk_buffers() -> None:
    # The mount, the server and get/put call this before moving data (fsmount.memory).
    out = subprocess.run([sys.executable, "-c", "from fsmount.memory import tune_malloc; "
                          "print(tune_malloc())"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
