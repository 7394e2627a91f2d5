"""The command line as a user meets it: help for every verb, one-line errors."""

from __future__ import annotations

import os
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


def one_line(res: subprocess.CompletedProcess[str], status: int = 1) -> str:
    """The single stderr line of a failed command, after checking status and no traceback."""
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert res.returncode == status, res.stderr
    return lines[0]


def test_a_missing_store_is_an_error_not_a_new_store(tmp_path) -> None:
    """A mistyped --store fails every verb that does not create stores, in one line that
    says how to create one, and creates nothing."""
    missing = tmp_path / "no-such-store"
    (tmp_path / "f").write_bytes(b"x")
    for verb in (["ls", "/"], ["get", "/f", str(tmp_path / "out")],
                 ["put", str(tmp_path / "f"), "/f"], ["fsck"], ["token", "add", "alice"],
                 ["token", "list"], ["token", "revoke", "alice"]):
        cut = 2 if verb[0] == "token" else 1  # after the verb (and token's sub-verb)
        args = [*verb[:cut], "--store", str(missing), *verb[cut:]]
        line = one_line(run(*args))
        assert f"no store in {missing}" in line, (verb, line)
        assert f"fsmount init --store {missing}" in line
        assert not missing.exists(), verb
    assert not (tmp_path / "out").exists()


def test_a_store_that_is_a_file_is_not_a_directory(tmp_path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("not a store\n")
    for verb in (["ls", "/"], ["init"], ["fsck"], ["serve", "--listen", "127.0.0.1:0"]):
        line = one_line(run(verb[0], "--store", str(plain), *verb[1:]))
        assert line == f"fsmount: --store {plain} is not a directory", line
    assert plain.read_text() == "not a store\n"


def test_init_creates_a_store_once_and_says_so(tmp_path) -> None:
    store = tmp_path / "a" / "store"
    res = run("init", "--store", str(store))
    assert res.returncode == 0 and "Traceback" not in res.stderr
    assert res.stderr == f"fsmount: created a new empty store in {store}\n"
    assert run("ls", "--store", str(store), "/").returncode == 0
    again = run("init", "--store", str(store))
    assert again.returncode == 0 and "created" not in again.stderr and "already" in again.stderr


def test_get_does_not_overwrite_without_force(tmp_path) -> None:
    store = tmp_path / "store"
    assert run("init", "--store", str(store)).returncode == 0
    src = tmp_path / "src"
    src.write_bytes(b"new content")
    assert run("put", "--store", str(store), str(src), "/f").returncode == 0
    old = tmp_path / "old"
    old.write_bytes(b"precious")
    line = one_line(run("get", "--store", str(store), "/f", str(old)))
    assert line == f"fsmount: {old} exists: pass --force to overwrite it"
    assert old.read_bytes() == b"precious"
    # The same for the file of that name in a directory.
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "f").write_bytes(b"precious too")
    assert "--force" in one_line(run("get", "--store", str(store), "/f", str(folder)))
    assert (folder / "f").read_bytes() == b"precious too"
    assert run("get", "--store", str(store), "/f", str(old), "--force").returncode == 0
    assert old.read_bytes() == b"new content"
    assert run("get", "--store", str(store), "--force", "/f", str(folder)).returncode == 0
    assert (folder / "f").read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "old", "src", "store"]


def test_contradictory_options_are_usage_errors(tmp_path) -> None:
    store = tmp_path / "store"
    assert run("init", "--store", str(store)).returncode == 0
    line = one_line(run("ls", "--store", str(store), "--server", "http://127.0.0.1:1", "/"),
                    status=2)
    assert "exclude each other" in line
    env_run = subprocess.run([sys.executable, "-m", "fsmount", "ls", "--server",
                              "http://127.0.0.1:1", "/"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "FSMOUNT_TOKEN": ""})
    assert "needs a token" in one_line(env_run, status=2)


def test_describe_unwraps_groups_and_ctrl_c_wins() -> None:
    from fsmount import errors
    from fsmount.cli_errors import Failure, UsageError, describe

    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [errors.NotFound("gone")])])
    assert describe(nested) == Failure("NOT_FOUND: gone", 1)
    interrupted = BaseExceptionGroup("g", [errors.TransportError("cancelled"),
                                           BaseExceptionGroup("h", [KeyboardInterrupt()])])
    assert describe(interrupted) == Failure("interrupted", 130)
    two = ExceptionGroup("g", [errors.NotFound("a"), OSError(28, "No space left on device")])
    assert describe(two) == Failure("NOT_FOUND: a (and 1 other error)", 1)
    assert describe(UsageError("--a and --b exclude each other")).status == 2
    assert describe(OSError(2, "No such file or directory", "/x")).message == \
        "No such file or directory: /x"
    bug = describe(ZeroDivisionError("division by zero"))
    assert bug.status == 1 and bug.message.startswith("internal error: ZeroDivisionError")
    assert "\n" not in describe(errors.FsmountError("two\nlines")).message


@pytest.mark.fuse
def test_mount_creates_a_missing_store_and_says_so(tmp_path) -> None:
    from fsmount.mount import is_mounted

    store = tmp_path / "new-store"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # A mount that cannot happen creates nothing.
    line = one_line(run("mount", "--store", str(store), str(tmp_path / "missing")))
    assert "does not exist" in line and not store.exists()
    res = run("mount", "--store", str(store), str(mnt))
    try:
        assert res.returncode == 0, res.stderr
        assert res.stderr == f"fsmount: created a new empty store in {store}\n"
        assert os.listdir(mnt) == []
    finally:
        if is_mounted(str(mnt)):
            assert run("unmount", str(mnt)).returncode == 0
    assert not is_mounted(str(mnt))
    plain = tmp_path / "plain"
    plain.write_text("x")
    for foreground in ([], ["-f"]):
        line = one_line(run("mount", *foreground, "--store", str(plain), str(mnt)))
        assert line == f"fsmount: --store {plain} is not a directory"
        assert not is_mounted(str(mnt))


def test_put_of_a_file_of_several_segments_links_its_whole_sha256(tmp_path, monkeypatch) -> None:
    """put hashes each segment for dedup anyway; the same pass gives the whole file's
    SHA-256, which the file is linked with (user.fsmount.sha256 through a mount)."""
    import hashlib

    import trio

    from fsmount.embedded import EmbeddedRemote
    from fsmount.remote import ROOT_ID

    # Two parts per upload: a file of 3 MiB and 5 bytes becomes four segments.
    monkeypatch.setenv("FSMOUNT_STORE_LIMITS", "upload_max_fileparts_default=2")
    store, local = tmp_path / "store", tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 5)
    local.write_bytes(data)
    assert run("init", "--store", str(store)).returncode == 0
    res = run("put", "--store", str(store), "--state-dir", str(tmp_path / "state"),
              str(local), "/big.bin")
    assert res.returncode == 0, res.stderr

    async def check() -> None:
        remote = EmbeddedRemote.open(store)
        try:
            node = await remote.lookup(ROOT_ID, "big.bin")
            assert len(node.segments) == 4  # 1 MiB each, the last 5 bytes
            assert node.sha256 == hashlib.sha256(data).hexdigest()
        finally:
            await remote.aclose()

    trio.run(check)
