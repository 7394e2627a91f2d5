"""The HTTP side of share links (:mod:`fsmount.server.shares`): the owner's API and the
public pages a link opens.

* ``POST /api/v1/shares`` (``{"path": ...}`` or ``{"file_id": ...}``, optional
  ``"expires_in"`` seconds or ``"expires": "7d"``, optional ``"password"``) creates a link
  and answers its URL once; ``GET /api/v1/shares`` lists the caller's links (never their
  secrets); ``DELETE /api/v1/shares/{id}`` revokes one.
* ``GET /s/<token>`` is the page a recipient opens in a browser, without a token: the
  file's name and size, a player for video and audio, the image, a download link.  A link
  with a password first shows a form (``POST /s/<token>``); the right password sets a
  cookie scoped to that link's path (HMAC-signed, see :class:`ShareLinks`) and redirects
  back; password tries are limited per link (a burst of 10, then one a second: 429).  ``GET /s/<token>/content`` streams the bytes with the REST download's ``Range``
  handling (206), so a video seeks.
* An expired or revoked link is a 410 page saying so; an unknown or mistyped link, or a
  file deleted since, is a 404 page.
"""

from __future__ import annotations

import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import errors
from ..remote import Node, NodeKind, Remote
from . import rest
from .app import ServerState
from .auth import RateLimiter
from .pages import esc, human, message_page, page
from .shares import LinkGone, LinkState, ShareLink, parse_duration

SHARE_COOKIE = "fsm_share"
PASSWORD_TRIES_PER_SECOND = 1.0
PASSWORD_TRIES_BURST = 10.0


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat().replace(
        "+00:00", "Z")


def link_json(st: ServerState, link: ShareLink) -> dict[str, Any]:
    return {
        "id": link.id,
        "name": link.name,
        "file_id": rest.file_id(link.user_id, link.node_id),
        "created_at": _iso(link.created),
        "expires_at": _iso(link.expires),
        "has_password": link.has_password,
        "state": link.state(st.clock()).value,
    }


def public_url(request: Request, token: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/s/{token}"


def share_routes(st: ServerState, resolver: rest.Resolver) -> list[Route]:
    """The routes of this module, for :func:`fsmount.server.rest.build_rest_app`."""

    # Password tries per link: a burst of 10, then one a second, so that guessing a
    # password online is slow whatever the server's --rate-limit (off by default).
    tries = RateLimiter(PASSWORD_TRIES_PER_SECOND, PASSWORD_TRIES_BURST, clock=st.clock)

    async def create(request: Request) -> Response:
        user = rest.ctx(request)
        body = await rest.read_json(request)
        raw_path, raw_id = body.get("path"), body.get("file_id")
        if isinstance(raw_path, str):
            node = await _by_path(user.remote, raw_path)
        elif isinstance(raw_id, str):
            owner, _remote, node = await resolver.file(request, raw_id)
            if owner != user.user_id:
                raise errors.NotFound(f"no file {raw_id!r}")
        else:
            raise errors.InvalidArgument("'path' or 'file_id' (a string) is required")
        if node.kind is not NodeKind.FILE:
            raise errors.IsADirectory("only files can be shared")
        expires_in: float | None = None
        if body.get("expires") is not None:
            if not isinstance(body["expires"], str):
                raise errors.InvalidArgument("'expires' is a duration such as 7d")
            expires_in = parse_duration(body["expires"])
        elif body.get("expires_in") is not None:
            raw = body["expires_in"]
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
                raise errors.InvalidArgument("'expires_in' must be a positive number of seconds")
            expires_in = float(raw)
        password = body.get("password")
        if password is not None and (not isinstance(password, str) or not password):
            raise errors.InvalidArgument("'password' must be a non-empty string")
        link, token = st.shares.create(user.name, user.user_id, node.id, node.name,
                                       expires_in=expires_in, password=password)
        out = link_json(st, link)
        out["url"] = public_url(request, token)
        return JSONResponse(out, status_code=201)

    async def list_links(request: Request) -> Response:
        user = rest.ctx(request)
        return JSONResponse({"shares": [link_json(st, k) for k in st.shares.list(user.name)]})

    async def revoke(request: Request) -> Response:
        user = rest.ctx(request)
        st.shares.revoke(user.name, request.path_params["id"])
        return Response(status_code=204)

    # --- the public side ---------------------------------------------------------------

    async def opened(request: Request) -> tuple[ShareLink, Remote, Node] | Response:
        """The link, its owner's remote and the file; or the page to answer instead."""
        token = request.path_params["token"]
        try:
            link = st.shares.open(token)
        except LinkGone as exc:
            what = "expired" if exc.state is LinkState.EXPIRED else "revoked by its owner"
            return message_page("Link no longer available",
                                f"This share link has {what}. Ask the person who sent it "
                                "for a new one.", status=410)
        except errors.NotFound:
            return message_page("Link not found", "There is no file at this link. Check "
                                "that it was copied completely.", status=404)
        remote = st.remote_for_id(link.user_id)
        try:
            node = await remote.getattr(link.node_id)
        except errors.FsmountError:
            node = None
        if node is None or node.kind is not NodeKind.FILE:
            return message_page("File not found", "The shared file has been deleted.",
                                status=404)
        return link, remote, node

    def password_form(token: str, *, wrong: bool) -> Response:
        note = ('<p class="error" role="alert">That password is not right.</p>'
                if wrong else "")
        body = (
            "<h1>This file is protected</h1>"
            "<p>Enter the password you were given with the link.</p>"
            f"{note}"
            f'<form method="post" action="/s/{esc(token)}">'
            '<label for="share-password">Password</label> '
            '<input id="share-password" name="password" type="password" required autofocus '
            'autocomplete="current-password"> '
            '<button type="submit">Open</button></form>'
        )
        return page("Password required", body, status=401)

    async def share_page(request: Request) -> Response:
        got = await opened(request)
        if isinstance(got, Response):
            return got
        link, _remote, node = got
        token = request.path_params["token"]
        if not st.shares.unlocked(link, request.cookies.get(SHARE_COOKIE)):
            return password_form(token, wrong=False)
        mime = rest.mime_of(node)
        src = f"/s/{esc(token)}/content"
        if mime.startswith("video/"):
            media = f'<video controls preload="metadata" src="{src}"></video>'
        elif mime.startswith("audio/"):
            media = f'<audio controls preload="metadata" src="{src}"></audio>'
        elif mime.startswith("image/"):
            media = f'<img class="preview" src="{src}" alt="{esc(node.name)}">'
        else:
            media = ""
        body = (
            f"<h1>{esc(node.name)}</h1>"
            f'<p class="meta">{esc(human(node.size))} · {esc(mime)}</p>'
            f"{media}"
            f'<p><a class="button" href="{src}?download=1" download="{esc(node.name)}">'
            "Download</a></p>"
        )
        return page(node.name, body)

    async def unlock(request: Request) -> Response:
        got = await opened(request)
        if isinstance(got, Response):
            await rest.drain(request)
            return got
        link, _remote, _node = got
        token = request.path_params["token"]
        form = await request.form(max_files=0, max_fields=5)
        try:
            tries.take(link.id)
        except errors.RateLimited as exc:
            return message_page("Too many tries", f"Wait {exc.retry_after:.0f} seconds and "
                                "try the password again.", status=429)
        password = form.get("password")
        if not isinstance(password, str) or not st.shares.check_password(link, password):
            return password_form(token, wrong=True)
        resp = RedirectResponse(f"/s/{token}", status_code=303)
        resp.set_cookie(SHARE_COOKIE, st.shares.unlock_cookie(link), path=f"/s/{token}",
                        httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", max_age=24 * 3600)
        return resp

    async def content(request: Request) -> Response:
        got = await opened(request)
        if isinstance(got, Response):
            return got
        link, remote, node = got
        if not st.shares.unlocked(link, request.cookies.get(SHARE_COOKIE)):
            return message_page("Password required", "Open the link first and enter its "
                                "password.", status=401)
        resp = await rest.content_response(request, remote, node)
        if request.query_params.get("download"):
            resp.headers["content-disposition"] = _attachment(node.name)
        resp.headers["cache-control"] = "private, no-store"
        resp.headers["referrer-policy"] = "no-referrer"
        return resp

    return [
        Route("/api/v1/shares", create, methods=["POST"]),
        Route("/api/v1/shares", list_links, methods=["GET"]),
        Route("/api/v1/shares/{id}", revoke, methods=["DELETE"]),
        Route("/s/{token}", share_page, methods=["GET"]),
        Route("/s/{token}", unlock, methods=["POST"]),
        Route("/s/{token}/content", content, methods=["GET", "HEAD"]),
    ]


def _attachment(name: str) -> str:
    import urllib.parse

    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name)}"


async def _by_path(remote: Remote, path: str) -> Node:
    """The caller's node at a ``/a/b`` path.  Raises NotFound, InvalidName."""
    from ..cli_common import resolve

    return await resolve(remote, path)
