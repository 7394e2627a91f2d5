"""A bounded schemathesis run against /openapi.json: no answer is a 5xx, and every answer
matches the document (status codes, JSON bodies)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import trio

from .conftest import Srv


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(srv: Srv, tmp_path: Path) -> None:
    async with srv.client() as c:  # some content, so that not every id is unknown
        await c.post("/api/v1/files", headers=srv.h(), files={"file": ("a.txt", b"hello")})
        await c.post("/api/v1/folders", headers=srv.h(), json={"name": "d"})
    exe = shutil.which("schemathesis") or shutil.which("st")
    cmd = [exe] if exe else [sys.executable, "-m", "schemathesis.cli"]
    with trio.fail_after(240):
        proc = await trio.run_process(
            [*cmd, "run", f"{srv.url}/openapi.json", "-H", f"Authorization: Bearer {srv.tok_a}",
             "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance",
             "--max-examples", "8", "--phases", "examples,coverage,fuzzing",
             "--request-timeout", "20", "--generation-deterministic", "--no-color"],
            capture_stdout=True, capture_stderr=True, check=False, cwd=tmp_path)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out[-6000:] + proc.stderr.decode(errors="replace")[-2000:]
    assert "33/33" in out or "Tested:" in out
