"""The web UI of ``fsmount serve``: server-rendered pages for people.

Routes (all HTML, no bearer token; the cookie session of :mod:`fsmount.server.websession`):

* ``GET /login``, ``POST /login`` (the token, once), ``POST /logout``;
* ``GET /`` and ``GET /d/<path>/``: a folder, with thumbnails of images, human sizes, and
  forms to upload files (several at once, with progress, through the resumable upload
  sessions), make a folder, rename and delete entries, and search by name;
* ``GET /v/<path>``: one file: video and audio players, an image, a text preview, a
  download link, rename, delete, and a form that creates a share link;
* ``GET /search?q=``: names containing the text, anywhere in the tree;
* ``GET /shares``: the user's share links, each with a button to revoke it;
* ``GET /ui/app.js`` and ``GET /ui/style.css``: the one script and style sheet
  (:mod:`fsmount.server.webui_assets`).

The pages change nothing by themselves: the script calls the REST API (``/api/v1/...``)
with the session cookie and the session's CSRF token in ``X-CSRF-Token`` (taken from the
page's ``<meta name="csrf-token">``); the app checks it (:mod:`fsmount.server.app`).  The
only form posted to a page handler, sign-out, carries the CSRF token as a field.  A page
asked for without a session redirects to ``/login?next=...`` (a local path only).
"""

from __future__ import annotations

import datetime
import urllib.parse

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .. import errors
from ..remote import ROOT_ID, Node, NodeKind
from . import rest, webui_assets
from .app import ServerState, UserCtx
from .pages import esc, human, message_page, page
from .rest_manage import search
from .websession import COOKIE, WebSession, cookie_header

#: Text files up to this size are shown inline on their page.
TEXT_PREVIEW_BYTES = 256 << 10
THUMB_MIMES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp")


def _when(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _href(prefix: str, names: list[str], *, folder: bool) -> str:
    path = "/".join(urllib.parse.quote(n, safe="") for n in names)
    if folder:
        return f"{prefix}{path}/" if path else "/"
    return f"{prefix}{path}"


def _safe_next(raw: str | None) -> str:
    """A redirect target after sign-in: a local path only (never another site)."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/"


def webui_routes(st: ServerState) -> list[Route]:
    """The routes of this module, for :func:`fsmount.server.rest.build_rest_app`."""

    def session_of(request: Request) -> WebSession | None:
        return st.sessions.get(request.cookies.get(COOKIE))

    async def signed_in(request: Request) -> tuple[WebSession, UserCtx] | Response:
        session = session_of(request)
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}),
                                    status_code=303)
        uid, remote = await st.user_remote(session.user)
        return session, UserCtx(session.user, uid, session.token_id, remote)

    def login_form(next_path: str, *, error: str = "", status: int = 200) -> Response:
        note = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
        body = (
            "<h1>Sign in to fsmount</h1>"
            "<p>Paste an access token (from <code>fsmount token add</code>). It is used once "
            "to start a session in this browser and is not kept in any page or link.</p>"
            f"{note}"
            '<form method="post" action="/login">'
            f'<input type="hidden" name="next" value="{esc(next_path)}">'
            '<label for="token">Access token</label> '
            '<input id="token" name="token" type="password" required autofocus '
            'autocomplete="off" spellcheck="false"> '
            '<button type="submit">Sign in</button></form>'
        )
        return page("Sign in", body, status=status)

    async def login_get(request: Request) -> Response:
        if session_of(request) is not None:
            return RedirectResponse(_safe_next(request.query_params.get("next")), 303)
        return login_form(_safe_next(request.query_params.get("next")))

    async def login_post(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=5)
        token = form.get("token")
        next_path = _safe_next(form.get("next") if isinstance(form.get("next"), str)
                               else None)  # type: ignore[arg-type]
        try:
            if not isinstance(token, str) or not token.strip():
                raise errors.Unauthorized("no token")
            token_id, name = st.auth.authenticate(token.strip())
        except errors.Unauthorized:
            return login_form(next_path, error="That token is not valid (unknown, mistyped "
                              "or revoked).", status=401)
        sid, _session = st.sessions.create(name, token_id)
        resp = RedirectResponse(next_path, status_code=303)
        resp.headers.append("set-cookie", cookie_header(
            COOKIE, sid, secure=request.url.scheme == "https"))
        return resp

    async def logout(request: Request) -> Response:
        session = session_of(request)
        form = await request.form(max_files=0, max_fields=5)
        csrf = form.get("csrf")
        if session is not None:
            st.sessions.check_csrf(session, "POST", csrf if isinstance(csrf, str) else None)
            st.sessions.end(request.cookies.get(COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.headers.append("set-cookie", cookie_header(COOKIE, "", max_age=0))
        return resp

    async def walk(user: UserCtx, path: str) -> tuple[list[str], Node]:
        names = [urllib.parse.unquote(p) for p in path.split("/") if p]
        node = await user.remote.getattr(ROOT_ID)
        for name in names:
            node = await user.remote.lookup(node.id, name)
        return names, node

    def crumbs(names: list[str]) -> str:
        parts = ['<a href="/">Files</a>']
        for i, name in enumerate(names):
            parts.append(f'<a href="{esc(_href("/d/", names[: i + 1], folder=True))}">'
                         f"{esc(name)}</a>")
        return '<nav aria-label="Breadcrumb" class="crumbs">' + " / ".join(parts) + "</nav>"

    def search_form(q: str = "") -> str:
        return ('<form role="search" method="get" action="/search" class="search">'
                '<label for="search-q">Search by name</label> '
                f'<input id="search-q" type="search" name="q" value="{esc(q)}" required> '
                '<button type="submit">Search</button></form>')

    def row_actions(user: UserCtx, node: Node, i: int) -> str:
        is_dir = node.kind is NodeKind.DIR
        rid = (rest.folder_id if is_dir else rest.file_id)(user.user_id, node.id)
        kind = "folder" if is_dir else "file"
        return (
            '<details class="rename"><summary>Rename</summary>'
            f'<form class="rename-form" data-id="{esc(rid)}" data-kind="{kind}">'
            f'<label for="rn-{i}">New name for {esc(node.name)}</label> '
            f'<input id="rn-{i}" name="name" value="{esc(node.name)}" required> '
            '<button type="submit">Save</button></form></details> '
            f'<button type="button" class="delete" data-id="{esc(rid)}" data-kind="{kind}" '
            f'data-name="{esc(node.name)}" aria-label="Delete {esc(node.name)}">Delete</button>'
        )

    def entry_row(user: UserCtx, names: list[str], node: Node, i: int) -> str:
        is_dir = node.kind is NodeKind.DIR
        href = _href("/d/" if is_dir else "/v/", [*names, node.name], folder=is_dir)
        mime = rest.mime_of(node) if node.kind is NodeKind.FILE else ""
        if mime in THUMB_MIMES:
            thumb = (f'<img class="thumb" src="/api/v1/files/'
                     f'{esc(rest.file_id(user.user_id, node.id))}/thumbnail?type=s" '
                     'alt="" loading="lazy" width="48" height="48">')
        else:
            kind = "folder" if is_dir else "video" if mime.startswith("video/") else \
                "audio" if mime.startswith("audio/") else "file"
            thumb = f'<span class="icon {kind}" aria-hidden="true">{kind}</span>'
        size = "—" if is_dir else esc(human(node.size))
        return (f'<tr><td class="t">{thumb}</td>'
                f'<td><a href="{esc(href)}">{esc(node.name)}{"/" if is_dir else ""}</a></td>'
                f'<td class="n">{size}</td><td>{esc(_when(node.mtime_ns))}</td>'
                f"<td>{row_actions(user, node, i)}</td></tr>")

    async def folder_page(request: Request) -> Response:
        got = await signed_in(request)
        if isinstance(got, Response):
            return got
        session, user = got
        try:
            names, node = await walk(user, request.path_params.get("path", ""))
        except (errors.NotFound, errors.NotADirectory):
            return message_page("Not found", "There is nothing at this path.", status=404)
        if node.kind is not NodeKind.DIR:
            return RedirectResponse(_href("/v/", names, folder=False), 303)
        rows: list[str] = []
        after: str | None = None
        for _ in range(100):  # 100 000 entries at most on one page
            listing = await user.remote.list_folder(node.id, after)
            rows += [entry_row(user, names, n, len(rows) + k)
                     for k, n in enumerate(listing.entries) if n.kind is not NodeKind.SYMLINK]
            after = listing.next_after
            if after is None:
                break
        fid = rest.folder_id(user.user_id, node.id)
        table = ('<table class="listing"><caption class="sr-only">Contents</caption><thead><tr>'
                 '<th scope="col"><span class="sr-only">Preview</span></th>'
                 '<th scope="col">Name</th><th scope="col">Size</th>'
                 '<th scope="col">Modified</th><th scope="col">Actions</th></tr></thead>'
                 f'<tbody>{"".join(rows)}</tbody></table>' if rows
                 else '<p class="empty">This folder is empty.</p>')
        title = "/" + "/".join(names)
        body = (
            f"{crumbs(names)}<h1>{esc(title)}</h1>{search_form()}"
            '<section class="tools" aria-label="Add to this folder">'
            f'<form id="upload-form" data-folder="{esc(fid)}">'
            '<label for="upload-files">Files to upload</label> '
            '<input id="upload-files" type="file" name="files" multiple required> '
            '<button type="submit">Upload</button></form>'
            f'<form id="mkdir-form" data-parent="{esc(fid)}">'
            '<label for="new-folder">New folder name</label> '
            '<input id="new-folder" name="name" required> '
            '<button type="submit">Create folder</button></form>'
            '<ul id="upload-progress" class="progress" aria-live="polite"></ul>'
            '</section>'
            '<p id="status" role="status" aria-live="polite"></p>'
            f"{table}"
        )
        return page(title, body, csrf=session.csrf, user=user.name)

    async def file_page(request: Request) -> Response:
        got = await signed_in(request)
        if isinstance(got, Response):
            return got
        session, user = got
        try:
            names, node = await walk(user, request.path_params.get("path", ""))
        except (errors.NotFound, errors.NotADirectory):
            return message_page("Not found", "There is nothing at this path.", status=404)
        if node.kind is NodeKind.DIR:
            return RedirectResponse(_href("/d/", names, folder=True), 303)
        if node.kind is not NodeKind.FILE:
            return message_page("Not a file", "Symlinks are not shown here.", status=404)
        fid = rest.file_id(user.user_id, node.id)
        src = f"/api/v1/files/{esc(fid)}/content"
        mime = rest.mime_of(node)
        if mime.startswith("video/"):
            preview = f'<video controls preload="metadata" src="{src}"></video>'
        elif mime.startswith("audio/"):
            preview = f'<audio controls preload="metadata" src="{src}"></audio>'
        elif mime.startswith("image/"):
            preview = f'<img class="preview" src="{src}" alt="{esc(node.name)}">'
        elif (mime.startswith("text/") or mime in ("application/json", "application/xml")
              or node.name.endswith((".txt", ".md", ".log", ".csv", ".py", ".json"))) \
                and node.size <= TEXT_PREVIEW_BYTES:
            text = (await rest.read_all(user.remote, node, TEXT_PREVIEW_BYTES)).decode(
                "utf-8", "replace")
            preview = f'<pre class="text" tabindex="0" aria-label="Content">{esc(text)}</pre>'
        else:
            preview = '<p class="empty">No preview for this kind of file.</p>'
        body = (
            f"{crumbs(names[:-1])}<h1>{esc(node.name)}</h1>"
            f'<p class="meta">{esc(human(node.size))} · {esc(mime)} · modified '
            f"{esc(_when(node.mtime_ns))}</p>{preview}"
            f'<p><a class="button" href="{src}" download="{esc(node.name)}">Download</a></p>'
            f'<section aria-label="Change">{row_actions(user, node, 0)}</section>'
            '<section aria-labelledby="share-h"><h2 id="share-h">Share</h2>'
            f'<form id="share-form" data-id="{esc(fid)}">'
            '<label for="share-expires">Link expires</label> '
            '<select id="share-expires" name="expires">'
            '<option value="1d">in a day</option><option value="7d" selected>in a week'
            '</option><option value="30d">in 30 days</option><option value="">never</option>'
            '</select> <label for="share-password">Password (optional)</label> '
            '<input id="share-password" name="password" type="password" '
            'autocomplete="new-password"> '
            '<button type="submit">Create share link</button></form>'
            '<div id="share-result" aria-live="polite"></div></section>'
            '<p id="status" role="status" aria-live="polite"></p>'
        )
        return page(node.name, body, csrf=session.csrf, user=user.name)

    async def search_page(request: Request) -> Response:
        got = await signed_in(request)
        if isinstance(got, Response):
            return got
        session, user = got
        q = request.query_params.get("q", "").strip()
        items: list[str] = []
        truncated = False
        if q:
            hits, truncated = await search(user.remote, q)
            for hit in hits:
                names = [n for n in hit.path.split("/") if n]
                is_dir = hit.node.kind is NodeKind.DIR
                if hit.node.kind is NodeKind.SYMLINK:
                    continue
                href = _href("/d/" if is_dir else "/v/", names, folder=is_dir)
                size = "" if is_dir else f" ({esc(human(hit.node.size))})"
                items.append(f'<li><a href="{esc(href)}">{esc(hit.path)}</a>{size}</li>')
        result = (f'<ul class="results">{"".join(items)}</ul>' if items
                  else f'<p class="empty">Nothing is named like “{esc(q)}”.</p>' if q else "")
        more = '<p class="meta">Only the first results are shown.</p>' if truncated else ""
        body = f'{crumbs([])}<h1>Search</h1>{search_form(q)}{result}{more}'
        return page(f"Search {q}", body, csrf=session.csrf, user=user.name)

    async def shares_page(request: Request) -> Response:
        got = await signed_in(request)
        if isinstance(got, Response):
            return got
        session, user = got
        now = st.clock()
        rows = []
        for link in st.shares.list(user.name):
            state = link.state(now).value
            expires = ("never" if link.expires is None else
                       datetime.datetime.fromtimestamp(link.expires, datetime.UTC)
                       .strftime("%Y-%m-%d %H:%M"))
            action = (f'<button type="button" class="revoke" data-share-id="{esc(link.id)}" '
                      f'aria-label="Revoke the link to {esc(link.name)}">Revoke</button>'
                      if state == "open" else "")
            rows.append(f"<tr><td>{esc(link.name)}</td><td>{esc(link.id)}</td>"
                        f"<td>{esc(state)}</td><td>{esc(expires)}</td>"
                        f"<td>{'yes' if link.has_password else 'no'}</td><td>{action}</td></tr>")
        table = ('<table class="listing"><thead><tr><th scope="col">File</th>'
                 '<th scope="col">Link id</th><th scope="col">State</th>'
                 '<th scope="col">Expires</th><th scope="col">Password</th>'
                 '<th scope="col">Actions</th></tr></thead>'
                 f'<tbody>{"".join(rows)}</tbody></table>' if rows
                 else '<p class="empty">No share links yet. Open a file to share it.</p>')
        body = (f'{crumbs([])}<h1>Share links</h1>'
                '<p id="status" role="status" aria-live="polite"></p>'
                f"{table}")
        return page("Share links", body, csrf=session.csrf, user=user.name)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        body, mime = webui_assets.ASSETS.get(name, (None, None))
        if body is None:
            return message_page("Not found", "No such file.", status=404)
        return Response(body, media_type=mime, headers={"cache-control": "no-cache",
                                                        "x-content-type-options": "nosniff"})

    return [
        Route("/", folder_page, methods=["GET"]),
        Route("/d/{path:path}", folder_page, methods=["GET"]),
        Route("/v/{path:path}", file_page, methods=["GET"]),
        Route("/search", search_page, methods=["GET"]),
        Route("/shares", shares_page, methods=["GET"]),
        Route("/login", login_get, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/ui/{name}", asset, methods=["GET"]),
    ]
