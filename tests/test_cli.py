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
