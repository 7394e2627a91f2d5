"""``GET /api/v1/proto/getChanges`` on the wire: its JSON shape, INVALID_ARGUMENT for bad
parameters, a token's view limited to its user, and the 404 of a server started without the
feed (what an older server answers, and what makes a mount fall back to short timeouts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from fsmount import errors
from fsmount.httpremote import HttpRemote
from fsmount.store import Store

from .conftest import SMALL_LIMITS, Srv
from .harness import running_server

URL = "/api/v1/proto/getChanges"


async def test_get_changes_json_shape_and_errors(srv: Srv) -> None:
    async with srv.client() as c:
        now = (await c.get(URL, headers=srv.h())).json()
        assert now == {"cursor": now["cursor"], "reset": False, "changes": []}
        mk = await c.post("/api/v1/proto/mkdir", headers=srv.h(),
                          json={"parent": 1, "name": "d"})
        assert mk.status_code == 200
        got = (await c.get(URL, params={"cursor": now["cursor"], "timeout": 5},
                           headers=srv.h())).json()
        assert got["reset"] is False and len(got["changes"]) == 1
        change = got["changes"][0]
        assert {k: change[k] for k in ("kind", "node_id", "parent", "name", "old_parent",
                                       "old_name")} == {
            "kind": "create", "node_id": mk.json()["id"], "parent": 1, "name": "d",
            "old_parent": None, "old_name": None}
        assert change["cursor"] == got["cursor"] and isinstance(change["at_ns"], int)
        # Bob's token does not see Alice's change.
        bob = (await c.get(URL, params={"cursor": now["cursor"], "timeout": 0},
                           headers=srv.h(srv.tok_b))).json()
        assert bob["changes"] == []
        for params in ({"cursor": "x"}, {"cursor": -1}, {"cursor": 0, "timeout": "soon"},
                       {"cursor": 0, "timeout": 3600}):
            bad = await c.get(URL, params=params, headers=srv.h())
            assert bad.status_code == 400 and bad.json()["error"] == "INVALID_ARGUMENT", params
        assert (await c.post(URL, headers=srv.h())).status_code == 405


async def test_a_server_without_the_feed_answers_404(tmp_path: Path, manual_clock: Any) -> None:
    path = tmp_path / "store"
    with Store(path, limits=SMALL_LIMITS, clock=manual_clock) as store:
        async with running_server(store, path, clock=manual_clock,
                                  change_feed=False) as running:
            token = running.state.auth.add_token("alice")
            async with httpx.AsyncClient(base_url=running.url, timeout=30) as c:
                ans = await c.get(URL, headers={"Authorization": f"Bearer {token}"})
            assert ans.status_code == 404 and ans.json()["error"] == "NOT_FOUND"
            remote = HttpRemote(running.url, token)
            try:
                try:
                    await remote.get_changes(None, 0)
                except errors.NotFound:
                    pass
                else:
                    raise AssertionError("getChanges answered on a server without the feed")
                # The rest of the protocol works as before.
                assert (await remote.getattr(1)).is_dir
            finally:
                await remote.aclose()
