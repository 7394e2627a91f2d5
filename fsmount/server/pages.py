"""The HTML every page of the server shares: the layout, the style sheet, human sizes and
escaping, and the error pages people (not programs) see.

Pages are rendered on the server as plain HTML (no template engine, no build step); every
value that comes from a user (names, paths, messages) goes through :func:`esc`.  The style
sheet is served at ``/ui/style.css`` and the script at ``/ui/app.js``
(:mod:`fsmount.server.webui_assets`); pages carry a ``Content-Security-Policy`` that allows
only those, so an injected script could not run even if escaping failed.
"""

from __future__ import annotations

import html

from starlette.responses import HTMLResponse

#: Only our own script, style and media; no inline script; no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def human(n: float) -> str:
    """``1536`` -> ``1.5 KiB`` (what people read; the API keeps exact bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def page(title: str, body: str, *, status: int = 200, csrf: str | None = None,
         headers: dict[str, str] | None = None, user: str | None = None) -> HTMLResponse:
    """A whole HTML page.  ``csrf`` goes into a ``<meta>`` for the script to send back as
    the ``X-CSRF-Token`` header; ``user`` shows who is signed in (with a sign-out form)."""
    meta = f'<meta name="csrf-token" content="{esc(csrf)}">' if csrf else ""
    top = ""
    if user is not None:
        top = (
            '<header class="top"><a class="brand" href="/">fsmount</a>'
            '<nav aria-label="Main"><a href="/">Files</a> <a href="/shares">Share links</a></nav>'
            f'<span class="who">{esc(user)}</span>'
            '<form method="post" action="/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{esc(csrf or "")}">'
            '<button type="submit">Sign out</button></form></header>'
        )
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{esc(title)} - fsmount</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/ui/style.css">'
        '<script src="/ui/app.js" defer></script></head>'
        f"<body>{top}<main id=\"main\">{body}</main></body></html>\n"
    )
    hdrs = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer", "cache-control": "no-store"}
    hdrs.update(headers or {})
    return HTMLResponse(doc, status_code=status, headers=hdrs)


def message_page(title: str, text: str, *, status: int) -> HTMLResponse:
    """A page that says one thing (an expired link, a missing file)."""
    return page(title, f'<h1>{esc(title)}</h1><p class="message">{esc(text)}</p>',
                status=status)
