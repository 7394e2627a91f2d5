"""Browser sessions of the web UI: a token given once at sign-in becomes an HTTP-only
cookie session, with a CSRF token per session.

Design
------
* ``POST /login`` with a valid bearer token creates a session row (table ``web_sessions``
  in ``DIR/auth.sqlite``) and sets the cookie :data:`COOKIE` (``HttpOnly``,
  ``SameSite=Strict``, ``Path=/``, ``Secure`` over https) holding a random session id;
  only its SHA-256 is stored.  The token itself is never kept, put in a page or in a link;
  the session remembers the token's id, so revoking the token ends its sessions too.
* Sessions end after :data:`IDLE_SECONDS` without a request, after :data:`MAX_SECONDS` in
  any case, and at ``POST /logout``.
* Every session has a CSRF token (random, stored with it).  A request authenticated by the
  cookie that changes state (any method but GET, HEAD, OPTIONS) must carry it in the
  ``X-CSRF-Token`` header (the page's JavaScript sends it; a form posts it as the
  ``csrf`` field, checked by the page's handler), so another site cannot forge API calls
  with the user's cookie.  Requests with a bearer token are not affected.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import errors

COOKIE = "fsm_session"
CSRF_HEADER = "x-csrf-token"
IDLE_SECONDS = 7 * 24 * 3600.0
MAX_SECONDS = 30 * 24 * 3600.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS web_sessions (
    id_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    token_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""


class CsrfRejected(errors.FsmountError):
    """A cookie-authenticated request that changes state came without the session's CSRF
    token (HTTP 403)."""

    name = "CSRF_TOKEN_INVALID"
    http_status = 403


@dataclass(frozen=True)
class WebSession:
    user: str
    token_id: str
    csrf: str


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class WebSessions:
    """Cookie sessions on the auth database's connection."""

    def __init__(self, db: sqlite3.Connection, token_active: Callable[[str], bool], *,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._token_active = token_active
        self.clock = clock
        self._db.executescript(_SCHEMA)

    def create(self, user: str, token_id: str) -> tuple[str, WebSession]:
        """A new session; returns the cookie value and the session."""
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = self.clock()
        self._db.execute(
            "INSERT INTO web_sessions(id_hash, user, token_id, csrf, created, last_seen)"
            " VALUES (?,?,?,?,?,?)", (_sha256(sid), user, token_id, csrf, now, now))
        return sid, WebSession(user, token_id, csrf)

    def get(self, cookie: str | None) -> WebSession | None:
        """The live session a cookie value names, or None (and an ended one is removed)."""
        if not cookie:
            return None
        key = _sha256(cookie)
        row = self._db.execute(
            "SELECT user, token_id, csrf, created, last_seen FROM web_sessions WHERE id_hash=?",
            (key,)).fetchone()
        if row is None:
            return None
        now = self.clock()
        if (now - float(row[4]) > IDLE_SECONDS or now - float(row[3]) > MAX_SECONDS
                or not self._token_active(str(row[1]))):
            self._db.execute("DELETE FROM web_sessions WHERE id_hash=?", (key,))
            return None
        if now - float(row[4]) > 60:  # one write a minute at most per session
            self._db.execute("UPDATE web_sessions SET last_seen=? WHERE id_hash=?", (now, key))
        return WebSession(str(row[0]), str(row[1]), str(row[2]))

    def end(self, cookie: str | None) -> None:
        if cookie:
            self._db.execute("DELETE FROM web_sessions WHERE id_hash=?", (_sha256(cookie),))

    @staticmethod
    def check_csrf(session: WebSession, method: str, presented: str | None) -> None:
        """Raises CsrfRejected unless ``method`` is safe or ``presented`` is the session's
        CSRF token."""
        if method in SAFE_METHODS:
            return
        if not presented or not hmac.compare_digest(presented, session.csrf):
            raise CsrfRejected("missing or wrong CSRF token (X-CSRF-Token header)")


def cookie_header(name: str, value: str, *, path: str = "/", max_age: int | None = None,
                  secure: bool = False, same_site: str = "Strict") -> str:
    """A ``Set-Cookie`` value, always ``HttpOnly``."""
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", f"SameSite={same_site}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def cookie_value(raw: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header."""
    if not raw:
        return None
    for piece in raw.split(";"):
        k, _, v = piece.strip().partition("=")
        if k == name:
            return v
    return None
