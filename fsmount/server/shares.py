"""Public share links: a file of one user that anyone with the link may read, without a
token, until the link expires or is revoked; optionally behind a password.

Design
------
Links live in the server's database (``DIR/auth.sqlite``, table ``share_links``), next to
the tokens, so ``fsmount share revoke`` takes effect on the next request of a running
server.  A link is ``/s/<id>_<secret>``: the id (12 hex digits) finds the row, the secret
(32 random bytes, URL-safe) proves the holder was given the link; only the secret's
SHA-256 is stored and it is compared in constant time.  A password is stored as a salted
scrypt hash.  After the right password the server sets a cookie scoped to that link's path
whose value is an HMAC (the server's own key, kept in the same database) of the link id and
an expiry, so a cookie opens only its own link, for a day at most, and stops working when
the link is revoked (the row is checked on every request) — the password never appears in
a URL.

Link states are typed (:class:`LinkState`): open, expired, revoked, unknown.  A link names
a node id; a file deleted afterwards is a 404 at use.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import errors

_SCHEMA = """
CREATE TABLE IF NOT EXISTS share_links (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    password TEXT,
    created REAL NOT NULL,
    expires REAL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS server_keys (
    purpose TEXT PRIMARY KEY,
    key BLOB NOT NULL
);
"""

#: How long the cookie set after the right password opens its link.
UNLOCK_SECONDS = 24 * 3600.0
#: scrypt parameters of stored passwords (about 16 MiB and 30 ms per check).
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1}


class LinkState(enum.Enum):
    OPEN = "open"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class ShareLink:
    """One row of ``share_links`` (never the secret or the password)."""

    id: str
    owner: str
    user_id: int
    node_id: int
    name: str
    created: float
    expires: float | None
    revoked: bool
    has_password: bool

    def state(self, now: float) -> LinkState:
        if self.revoked:
            return LinkState.REVOKED
        if self.expires is not None and now >= self.expires:
            return LinkState.EXPIRED
        return LinkState.OPEN


class LinkGone(errors.FsmountError):
    """The link exists but no longer opens: expired or revoked (HTTP 410)."""

    name = "SHARE_LINK_GONE"
    http_status = 410

    def __init__(self, state: LinkState) -> None:
        self.state = state
        super().__init__(f"this share link has been {state.value}")


def _hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)  # type: ignore[arg-type]
    return f"scrypt${salt.hex()}${digest.hex()}"


def _check_password(stored: str, password: str) -> bool:
    try:
        _, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt),
                             **_SCRYPT)  # type: ignore[arg-type]
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w`` or plain seconds -> seconds.

    Raises InvalidArgument for anything else or a duration that is not positive.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in units else "s"
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise errors.InvalidArgument(f"not a duration: {text!r} (e.g. 7d, 12h, 30m)") from None
    if not 0 < value < 100 * 365 * 86400:
        raise errors.InvalidArgument(f"the duration {text!r} must be positive")
    return value


class ShareLinks:
    """The share links of a server, on the auth database's connection (same file)."""

    def __init__(self, db: sqlite3.Connection, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.clock = clock
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT key FROM server_keys WHERE purpose='share'").fetchone()
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO server_keys(purpose, key) VALUES ('share', ?)",
                             (secrets.token_bytes(32),))
            row = self._db.execute("SELECT key FROM server_keys WHERE purpose='share'").fetchone()
        self._key: bytes = bytes(row[0])

    def create(self, owner: str, user_id: int, node_id: int, name: str, *,
               expires_in: float | None = None, password: str | None = None
               ) -> tuple[ShareLink, str]:
        """A new link to ``owner``'s file; returns it and its token (``id_secret``), which
        cannot be recovered later."""
        link_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        expires = now + expires_in if expires_in is not None else None
        self._db.execute(
            "INSERT INTO share_links(id, owner, user_id, node_id, name, secret_hash, password,"
            " created, expires) VALUES (?,?,?,?,?,?,?,?,?)",
            (link_id, owner, user_id, node_id, name, _sha256(secret),
             _hash_password(password) if password else None, now, expires))
        return self.get(link_id), f"{link_id}_{secret}"

    def _row(self, row: tuple[object, ...]) -> ShareLink:
        return ShareLink(str(row[0]), str(row[1]), int(row[2]),  # type: ignore[call-overload]
                         int(row[3]), str(row[4]), float(row[5]),  # type: ignore[arg-type]
                         None if row[6] is None else float(row[6]),  # type: ignore[arg-type]
                         bool(row[7]), row[8] is not None)

    _COLS = "id, owner, user_id, node_id, name, created, expires, revoked, password"

    def get(self, link_id: str) -> ShareLink:
        """Raises NotFound."""
        row = self._db.execute(f"SELECT {self._COLS} FROM share_links WHERE id=?",
                               (link_id,)).fetchone()
        if row is None:
            raise errors.NotFound(f"no share link {link_id!r}")
        return self._row(row)

    def list(self, owner: str) -> list[ShareLink]:
        rows = self._db.execute(
            f"SELECT {self._COLS} FROM share_links WHERE owner=? ORDER BY created",
            (owner,)).fetchall()
        return [self._row(r) for r in rows]

    def revoke(self, owner: str, link_id: str) -> None:
        """Raises NotFound (no such link of ``owner``)."""
        cur = self._db.execute("UPDATE share_links SET revoked=1 WHERE id=? AND owner=?",
                               (link_id, owner))
        if cur.rowcount == 0:
            raise errors.NotFound(f"no share link {link_id!r}")

    def open(self, token: str) -> ShareLink:
        """The link a token opens.

        Raises:
            NotFound: no such link, or a wrong secret (indistinguishable).
            LinkGone: the link expired or was revoked.
        """
        link_id, _, secret = token.partition("_")
        row = None
        if len(link_id) == 12 and secret:
            row = self._db.execute(
                f"SELECT {self._COLS}, secret_hash FROM share_links WHERE id=?",
                (link_id,)).fetchone()
        stored = str(row[9]) if row else "0" * 64
        if not hmac.compare_digest(stored, _sha256(secret)) or row is None:
            raise errors.NotFound("no such share link")
        link = self._row(row[:9])
        state = link.state(self.clock())
        if state is not LinkState.OPEN:
            raise LinkGone(state)
        return link

    def check_password(self, link: ShareLink, password: str) -> bool:
        row = self._db.execute("SELECT password FROM share_links WHERE id=?",
                               (link.id,)).fetchone()
        return bool(row and row[0] and _check_password(str(row[0]), password))

    # --- the unlock cookie ---------------------------------------------------------------

    def unlock_cookie(self, link: ShareLink) -> str:
        """The cookie value that proves the password of ``link`` was given."""
        until = int(self.clock() + UNLOCK_SECONDS)
        mac = hmac.new(self._key, f"{link.id}:{until}".encode(), hashlib.sha256).hexdigest()
        return f"{until}.{mac}"

    def unlocked(self, link: ShareLink, cookie: str | None) -> bool:
        """True if the link needs no password, or ``cookie`` is a valid unlock cookie of it."""
        if not link.has_password:
            return True
        if not cookie or "." not in cookie:
            return False
        until, _, mac = cookie.partition(".")
        if not until.isdigit() or int(until) < self.clock():
            return False
        want = hmac.new(self._key, f"{link.id}:{until}".encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, mac)
