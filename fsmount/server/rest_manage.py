"""REST calls that manage the caller's files beyond upload and download, for the web UI and
any HTTP client: rename or move, delete a folder, search by name.

* ``PATCH /api/v1/files/{id}`` and ``PATCH /api/v1/folders/{id}`` with ``{"name": ...}``
  and/or ``{"folder_id": ...}`` rename or move (``rename`` without replacing: a name that
  is taken is 409 ``ALREADY_EXISTS``);
* ``DELETE /api/v1/folders/{id}`` removes a folder; with ``?recursive=true`` everything in
  it first (the CLI's ``rm -r``, :func:`fsmount.cli_ops.remove_tree`), else it must be
  empty (409 ``NOT_EMPTY``);
* ``GET /api/v1/search?q=TEXT`` finds names containing TEXT (case-insensitive) in the
  caller's whole tree, breadth first, at most :data:`SEARCH_RESULTS` results and
  :data:`SEARCH_VISIT` nodes visited (``"truncated": true`` says it stopped early).

All of it goes through the caller's :class:`~fsmount.remote.Remote`, like everything else.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import errors
from ..remote import ROOT_ID, Node, NodeKind, Remote
from . import rest

SEARCH_RESULTS = 200
SEARCH_VISIT = 100_000


class Hit(NamedTuple):
    path: str
    node: Node


async def search(remote: Remote, query: str, *, limit: int = SEARCH_RESULTS,
                 visit: int = SEARCH_VISIT) -> tuple[list[Hit], bool]:
    """Nodes whose name contains ``query`` (case-insensitive), with their paths; and
    whether the walk stopped early.  Raises the remote's errors."""
    needle = query.casefold()
    hits: list[Hit] = []
    queue: deque[tuple[int, str]] = deque([(ROOT_ID, "")])
    seen = 0
    while queue:
        folder, prefix = queue.popleft()
        after: str | None = None
        for _ in range(visit):
            page = await remote.list_folder(folder, after)
            for n in page.entries:
                seen += 1
                path = f"{prefix}/{n.name}"
                if needle in n.name.casefold():
                    hits.append(Hit(path, n))
                    if len(hits) >= limit:
                        return hits, True
                if n.kind is NodeKind.DIR:
                    queue.append((n.id, path))
                if seen >= visit:
                    return hits, True
            if page.next_after is None or not page.entries:
                break
            after = page.next_after
    return hits, False


def manage_routes(st: Any, resolver: rest.Resolver) -> list[Route]:
    """The routes of this module, for :func:`fsmount.server.rest.build_rest_app`."""

    async def move(request: Request, node: Node) -> Node:
        user = rest.ctx(request)
        body = await rest.read_json(request)
        name, target = body.get("name", node.name), body.get("folder_id")
        if not isinstance(name, str) or not name:
            raise errors.InvalidName("'name' must be a non-empty string")
        if target is not None and not isinstance(target, str):
            raise errors.InvalidArgument("'folder_id' must be a string")
        new_parent = await resolver.folder(request, target) if target else node.parent
        if (new_parent, name) == (node.parent, node.name):
            return node
        return await user.remote.rename(node.parent, node.name, new_parent, name,
                                        replace=False)

    async def patch_file(request: Request) -> Response:
        user = rest.ctx(request)
        owner, _remote, node = await resolver.file(request, request.path_params["id"])
        if owner != user.user_id:
            raise errors.NotFound("no such file")
        moved = await move(request, node)
        return JSONResponse(rest.entry_json(user.user_id, moved))

    async def own_folder(request: Request) -> Node:
        user = rest.ctx(request)
        folder = await resolver.folder(request, request.path_params["id"])
        if folder == ROOT_ID:
            raise errors.InvalidArgument("the root folder cannot be renamed or deleted")
        return await user.remote.getattr(folder)

    async def patch_folder(request: Request) -> Response:
        user = rest.ctx(request)
        moved = await move(request, await own_folder(request))
        return JSONResponse(rest.entry_json(user.user_id, moved))

    async def delete_folder(request: Request) -> Response:
        from ..cli_ops import remove_tree

        user = rest.ctx(request)
        node = await own_folder(request)
        if rest.truthy(request.query_params.get("recursive")):
            await remove_tree(user.remote, node)
        await user.remote.rmdir(node.parent, node.name)
        return Response(status_code=204)

    async def search_api(request: Request) -> Response:
        user = rest.ctx(request)
        query = request.query_params.get("q", "").strip()
        if not query:
            raise errors.InvalidArgument("'q' (the text to find) is required")
        hits, truncated = await search(user.remote, query)
        return JSONResponse({
            "query": query, "truncated": truncated,
            "results": [{**rest.entry_json(user.user_id, h.node), "path": h.path}
                        for h in hits],
        })

    return [
        Route("/api/v1/files/{id}", patch_file, methods=["PATCH"]),
        Route("/api/v1/folders/{id}", patch_folder, methods=["PATCH"]),
        Route("/api/v1/folders/{id}", delete_folder, methods=["DELETE"]),
        Route("/api/v1/search", search_api, methods=["GET"]),
    ]
