"""A mount explains itself: ``fsmount status`` over the control socket, Prometheus metrics
with ``--metrics-addr``, time-stamped log lines in a default log file for background
mounts, and no timestamps under systemd (the journal adds them)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from fs_mounting import MountProc, mount_store, populate, wait_until

from fsmount import control
from fsmount import mount as mount_mod

DATA = os.urandom(3 << 20)
#: A log line of a mount outside systemd: UTC timestamp, pid, level, logger.
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z fsmount\[\d+\] [A-Z]+ fsmount\.")


def _status(mnt: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsmount", "status", *extra, str(mnt)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_status_reports_cache_transfers_and_errors(mounted: MountProc) -> None:
    (mounted.mnt / "f.bin").write_bytes(DATA)
    assert (mounted.mnt / "f.bin").read_bytes() == DATA
    res = _status(mounted.mnt, "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["mountpoint"] == str(mounted.mnt)
    assert s["transfers"]["bytes_uploaded"] >= len(DATA)
    assert s["transfers"]["uploads_finalized"] >= 1
    assert s["cache"]["capacity_bytes"] > 0 and s["cache"]["fetches"] >= 1
    assert s["calls"].get("put_file", 0) + s["calls"].get("create_file", 0) >= 1
    assert isinstance(s["retries"], int) and s["errors"] == {}
    human = _status(mounted.mnt)
    assert human.returncode == 0
    for field in ("cache", "transfers", "retries", "errors"):
        assert re.search(rf"^{field} ", human.stdout, re.M), human.stdout


def test_status_of_something_not_mounted_is_one_line(tmp_path: Path) -> None:
    res = _status(tmp_path)
    assert res.returncode == 1
    assert res.stderr.strip() == f"fsmount: no fsmount mount of this user at {tmp_path}"


def test_control_channel_names_unknown_commands(mounted: MountProc) -> None:
    with pytest.raises(control.ControlError, match="unknown command 'nope'.*status"):
        control.request(str(mounted.mnt), "nope")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as res:
        text = res.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_addr_serves_counters_that_move(tmp_path: Path) -> None:
    populate(tmp_path / "store", {"f.bin": DATA})
    port = _free_port()
    with mount_store(tmp_path / "store", tmp_path / "mnt", "--metrics-addr",
                     f"127.0.0.1:{port}") as mp:
        wait_until(lambda: "metrics on" in mp.log_text(), "the metrics endpoint")
        before = _scrape(port)
        assert (mp.mnt / "f.bin").read_bytes() == DATA
        (mp.mnt / "new.bin").write_bytes(DATA)
        after = _scrape(port)
    assert after["fsmount_cache_fetches_total"] >= before["fsmount_cache_fetches_total"] + 3
    assert after["fsmount_downloaded_bytes_total"] >= len(DATA)
    assert after["fsmount_uploaded_bytes_total"] >= len(DATA)
    assert after["fsmount_uploads_finalized_total"] >= 1
    assert "fsmount_retries_total" in after


def test_a_background_mount_logs_to_the_state_directory(tmp_path: Path) -> None:
    populate(tmp_path / "store", {"f": b"x"})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("INVOCATION_ID", None)
    env.pop("JOURNAL_STREAM", None)
    res = subprocess.run([sys.executable, "-m", "fsmount", "--log-level", "INFO", "mount",
                          "--store", str(tmp_path / "store"), str(mnt)], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    try:
        assert res.returncode == 0, res.stderr
        assert (mnt / "f").read_bytes() == b"x"
    finally:
        if mount_mod.is_mounted(str(mnt)):
            subprocess.run([sys.executable, "-m", "fsmount", "unmount", str(mnt)],
                           capture_output=True, timeout=60, check=False)
    name = str(mnt).strip("/").replace("/", "-")
    log = tmp_path / "state" / "fsmount" / "log" / f"{name}.log"
    lines = log.read_text().splitlines()
    assert lines and all(STAMPED.match(line) for line in lines if "fsmount." in line), lines
    assert not mount_mod.is_mounted(str(mnt))


def test_under_systemd_log_lines_go_to_stderr_without_timestamps(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    with mount_store(tmp_path / "store", tmp_path / "mnt") as mp:
        wait_until(lambda: "INFO fsmount." in mp.log_text(), "a log line")
    lines = [line for line in mp.log_text().splitlines() if "fsmount." in line]
    assert lines and all(line.startswith(("INFO ", "WARNING ", "ERROR ", "DEBUG "))
                         for line in lines), lines
