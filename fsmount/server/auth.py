"""The server's own state next to the store: bearer tokens, users' settings, share secrets,
resumable upload sessions, and the per-token rate limiter.

Everything lives in ``DIR/auth.sqlite`` (WAL mode, so ``fsmount token add`` and ``revoke``
work while a server runs and take effect on the next request).  The store itself is not
opened here: the server creates a user in the store the first time one of its tokens is
used (:meth:`fsmount.store.Store.ensure_user`).

Tokens look like ``fsm_<id>_<secret>``.  Only their SHA-256 is stored; a presented token is
found by its id and compared with :func:`hmac.compare_digest`, so the comparison takes the
same time whatever the token.  Share secrets are stored hashed the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import errors

AUTH_DB = "auth.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    quota_bytes INTEGER,
    premium INTEGER
);
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS shares (
    owner TEXT NOT NULL,
    node_id INTEGER NOT NULL,
    secret_hash TEXT NOT NULL,
    PRIMARY KEY (owner, node_id)
);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    last_active REAL NOT NULL
);
"""


#: The tables that belong to the store rather than to one node: what ``fsmount store copy``
#: moves (:meth:`AuthDB.mirror_from`).
STORE_STATE_TABLES = ("users", "tokens", "shares", "share_links", "server_keys")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    name: str
    created: float
    revoked: bool


@dataclass(frozen=True)
class UserSettings:
    name: str
    quota_bytes: int | None  #: None: never set (the store's setting stands)
    premium: bool | None


class AuthDB:
    """Tokens, users' settings, share secrets and upload sessions in ``DIR/auth.sqlite``.

    Methods are synchronous and short (single-row SQLite statements); the server calls them
    on the trio thread.
    """

    def __init__(self, store_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        os.makedirs(store_dir, exist_ok=True)
        self.path = os.path.join(os.fspath(store_dir), AUTH_DB)
        self.clock = clock
        self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- users and tokens ----------------------------------------------------------------

    def set_user(self, name: str, *, quota_bytes: int | None = None, premium: bool | None = None) -> None:
        """Create the user's settings row if missing; update the given settings."""
        if not name or len(name) > 200 or any(c in name for c in "\0/\n"):
            raise errors.InvalidName(f"bad user name {name!r}")
        self._db.execute("INSERT OR IGNORE INTO users(name) VALUES (?)", (name,))
        if quota_bytes is not None:
            self._db.execute("UPDATE users SET quota_bytes=? WHERE name=?", (quota_bytes, name))
        if premium is not None:
            self._db.execute("UPDATE users SET premium=? WHERE name=?", (int(premium), name))

    def user(self, name: str) -> UserSettings:
        row = self._db.execute("SELECT quota_bytes, premium FROM users WHERE name=?", (name,)).fetchone()
        if row is None:
            return UserSettings(name, None, None)
        return UserSettings(name, None if row[0] is None else int(row[0]),
                            None if row[1] is None else bool(row[1]))

    def add_token(self, name: str, *, quota_bytes: int | None = None, premium: bool | None = None) -> str:
        """Create a token for user ``name`` (creating the user's settings) and return it.

        Only the token's hash is kept; the returned string cannot be recovered later.
        """
        self.set_user(name, quota_bytes=quota_bytes, premium=premium)
        token_id = secrets.token_hex(6)
        token = f"fsm_{token_id}_{secrets.token_urlsafe(32)}"
        self._db.execute(
            "INSERT INTO tokens(token_id, name, hash, created) VALUES (?,?,?,?)",
            (token_id, name, _sha256(token), self.clock()),
        )
        return token

    def revoke(self, name_or_token: str) -> int:
        """Revoke one token (given in full) or every token of a user (given by name).

        Returns how many tokens were revoked.
        """
        tid = self._token_id(name_or_token)
        if tid is not None:
            row = self._db.execute("SELECT hash FROM tokens WHERE token_id=?", (tid,)).fetchone()
            if row and hmac.compare_digest(row[0], _sha256(name_or_token)):
                cur = self._db.execute(
                    "UPDATE tokens SET revoked=1 WHERE token_id=? AND revoked=0", (tid,))
                return cur.rowcount
        cur = self._db.execute("UPDATE tokens SET revoked=1 WHERE name=? AND revoked=0",
                               (name_or_token,))
        return cur.rowcount

    @property
    def connection(self) -> sqlite3.Connection:
        """The database connection, shared by the share links and web sessions modules
        (their tables live in the same file)."""
        return self._db

    def token_active(self, token_id: str) -> bool:
        """True if the token with this id exists and is not revoked."""
        row = self._db.execute("SELECT revoked FROM tokens WHERE token_id=?",
                               (token_id,)).fetchone()
        return row is not None and not row[0]

    def list_tokens(self) -> list[TokenInfo]:
        rows = self._db.execute(
            "SELECT token_id, name, created, revoked FROM tokens ORDER BY name, created").fetchall()
        return [TokenInfo(r[0], r[1], float(r[2]), bool(r[3])) for r in rows]

    @staticmethod
    def _token_id(token: str) -> str | None:
        parts = token.split("_", 2)
        if len(parts) == 3 and parts[0] == "fsm" and len(parts[1]) == 12:
            return parts[1]
        return None

    def authenticate(self, token: str) -> tuple[str, str]:
        """Return ``(token_id, user name)`` for a valid, unrevoked token.

        Raises:
            Unauthorized: the token is unknown, wrong or revoked.
        """
        tid = self._token_id(token)
        row = None
        if tid is not None:
            row = self._db.execute(
                "SELECT hash, name, revoked FROM tokens WHERE token_id=?", (tid,)).fetchone()
        # Compare even when the id is unknown so that timing does not tell ids apart.
        stored = row[0] if row else "0" * 64
        ok = hmac.compare_digest(stored, _sha256(token))
        if not ok or row is None or row[2]:
            raise errors.Unauthorized("Unable to authenticate due to corrupt access token")
        return tid, row[1]  # type: ignore[return-value]

    # --- moving the store (fsmount store copy) ----------------------------------------------

    def mirror_from(self, source: AuthDB) -> int:
        """Make this database's users' settings, token hashes, share secrets, share links
        and server keys exactly ``source``'s, in one transaction (``fsmount store copy``:
        tokens keep working and share links keep their URLs and cookies on the copy).
        Web sessions and resumable upload sessions stay as they are (a node's own).
        Returns the rows copied.  Raises sqlite3.Error (a damaged or busy database).
        """
        from .shares import ShareLinks

        for db in (self, source):
            ShareLinks(db.connection)  # creates share_links and server_keys if missing
        copied = 0
        src, dst = source.connection, self._db
        dst.execute("BEGIN IMMEDIATE")
        try:
            for table in STORE_STATE_TABLES:
                cur = src.execute(f"SELECT * FROM {table}")  # noqa: S608 (fixed names)
                columns = [d[0] for d in cur.description]
                rows = cur.fetchall()
                dst.execute(f"DELETE FROM {table}")  # noqa: S608
                marks = ",".join("?" * len(columns))
                dst.executemany(f"INSERT INTO {table}({','.join(columns)}) VALUES ({marks})",
                                rows)
                copied += len(rows)
            dst.execute("COMMIT")
        except BaseException:
            dst.execute("ROLLBACK")
            raise
        return copied

    # --- share secrets of restricted files -------------------------------------------------

    def new_share(self, owner: str, node_id: int) -> str:
        """Mark ``owner``'s file restricted and return a fresh share secret (replacing any)."""
        secret = secrets.token_urlsafe(36)
        self._db.execute(
            "INSERT OR REPLACE INTO shares(owner, node_id, secret_hash) VALUES (?,?,?)",
            (owner, node_id, _sha256(secret)),
        )
        return secret

    def drop_share(self, owner: str, node_id: int) -> None:
        """Forget a file's share secret (its content was replaced unrestricted, or deleted)."""
        self._db.execute("DELETE FROM shares WHERE owner=? AND node_id=?", (owner, node_id))

    def is_restricted(self, owner: str, node_id: int) -> bool:
        row = self._db.execute("SELECT 1 FROM shares WHERE owner=? AND node_id=?",
                               (owner, node_id)).fetchone()
        return row is not None

    def check_share(self, owner: str, node_id: int, secret: str) -> bool:
        """True if ``secret`` is the share secret of ``owner``'s restricted file."""
        row = self._db.execute("SELECT secret_hash FROM shares WHERE owner=? AND node_id=?",
                               (owner, node_id)).fetchone()
        stored = row[0] if row else "0" * 64
        return hmac.compare_digest(stored, _sha256(secret)) and row is not None

    def owner_names(self) -> dict[str, None]:
        return {r[0]: None for r in self._db.execute("SELECT name FROM users")}

    # --- resumable upload sessions -----------------------------------------------------------

    def save_upload(self, upload_id: str, owner: str, state: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO uploads(id, owner, state, last_active) VALUES (?,?,?,?)",
            (upload_id, owner, json.dumps(state), self.clock()),
        )

    def load_upload(self, upload_id: str, owner: str) -> tuple[dict[str, Any], float] | None:
        row = self._db.execute("SELECT state, last_active FROM uploads WHERE id=? AND owner=?",
                               (upload_id, owner)).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), float(row[1])

    def delete_upload(self, upload_id: str) -> None:
        self._db.execute("DELETE FROM uploads WHERE id=?", (upload_id,))

    def expired_uploads(self, max_idle: float) -> list[tuple[str, str, dict[str, Any]]]:
        rows = self._db.execute("SELECT id, owner, state FROM uploads WHERE last_active < ?",
                                (self.clock() - max_idle,)).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]


class RateLimiter:
    """A token bucket per bearer token: ``rate`` requests a second, bursts of ``burst``.

    ``rate`` 0 disables limiting.  :meth:`take` raises RateLimited with the seconds until a
    request would be allowed (the server sends them as ``Retry-After``).
    """

    def __init__(self, rate: float, burst: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> None:
        """Spend one request of ``key``'s bucket.

        Raises:
            RateLimited: the bucket is empty; ``retry_after`` says for how long.
        """
        if self.rate <= 0:
            return
        now = self.clock()
        level, last = self._buckets.get(key, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        if level < 1.0:
            self._buckets[key] = (level, now)
            wait = (1.0 - level) / self.rate
            raise errors.RateLimited(float(max(1, math.ceil(wait))),
                                     f"more than {self.rate:g} requests a second; retry later")
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()  # bounded memory; a reset only ever lets requests through
        self._buckets[key] = (level - 1.0, now)
