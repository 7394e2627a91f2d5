"""``fsmount share``: public links to files of a server, for people without a token.

* ``fsmount share PATH [--expires 7d] [--password]`` prints the link (one line on stdout);
  with ``--password`` the password is asked on the terminal (twice), or read as the first
  line of standard input when that is not a terminal;
* ``fsmount share list`` lists the links (id, state, expiry, password or not, file name);
* ``fsmount share revoke ID`` revokes one.

Links are the server's (:mod:`fsmount.server.shares`), so the verb needs ``--server``: the
embedded store has no one to answer a browser, and says so in one line.  The calls are the
REST API's ``/api/v1/shares`` (not part of :class:`~fsmount.remote.Remote`, which is the
filesystem's contract); they are few and small, so a blocking ``urllib`` request in a
worker thread does.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import trio

from . import errors
from .cli_common import _token, add_remote_options
from .cli_errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "share", help="make, list or revoke public links to files (needs --server)",
        description="`fsmount share PATH` prints a public link to the file PATH that opens "
                    "in a browser without a token; `fsmount share list` lists the links; "
                    "`fsmount share revoke ID` revokes one. Needs --server (a link is "
                    "served by `fsmount serve`).")
    p.add_argument("target", metavar="PATH|list|revoke",
                   help="the file to share, or list, or revoke")
    p.add_argument("link_id", metavar="ID", nargs="?", help="the link to revoke")
    p.add_argument("--expires", metavar="DURATION",
                   help="the link stops working after DURATION (e.g. 7d, 12h, 30m)")
    p.add_argument("--password", action="store_true",
                   help="protect the link with a password (asked on the terminal, or the "
                        "first line of stdin)")
    add_remote_options(p)
    p.set_defaults(func=cmd_share)


def _request(server: str, token: str, method: str, path: str,
             body: dict[str, Any] | None = None) -> Any:
    """One REST call; returns the JSON answer (None for 204).  Raises the server's named
    error, or Unreachable."""
    from .httpremote import unreachable
    from .server.wire import error_from_body

    url = server.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json",
        **({"Content-Type": "application/json"} if data is not None else {})})
    try:
        with urllib.request.urlopen(req, timeout=60,
                                    context=ssl.create_default_context()) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            obj = json.loads(raw) if raw else None
        except ValueError:
            obj = None
        raise error_from_body(exc.code, obj) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise unreachable(server, reason if isinstance(reason, BaseException)
                          else OSError(str(reason))) from None


def _ask_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password for the link: ")
        if first != getpass.getpass("Again: "):
            raise UsageError("the passwords differ")
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if not first:
        raise UsageError("an empty password protects nothing")
    return first


def _when(iso: str | None) -> str:
    if iso is None:
        return "never"
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime(
        "%Y-%m-%d %H:%M UTC")


def cmd_share(args: argparse.Namespace) -> int:
    if not args.server:
        raise UsageError("sharing needs a server: run `fsmount serve` and use "
                         "`fsmount share --server URL ...` (the embedded store has no public "
                         "links)")
    token = _token(args)

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # Several nodes: the next one when a node refuses the connection (the request
        # never reached it, so it is not repeated anywhere).
        from .httpremote import split_server_urls

        urls = split_server_urls(args.server)
        for url in urls[:-1]:
            try:
                return trio.run(trio.to_thread.run_sync, _request, url, token, method, path,
                                body)
            except errors.ConnectionRefused:
                continue
        return trio.run(trio.to_thread.run_sync, _request, urls[-1], token, method, path,
                        body)

    if args.target == "list" and args.link_id is None:
        links = call("GET", "/api/v1/shares")["shares"]
        for link in links:
            print(f"{link['id']}  {link['state']:8} expires {_when(link['expires_at']):20} "
                  f"{'password' if link['has_password'] else 'open    '}  {link['name']}")
        return 0
    if args.target == "revoke":
        if not args.link_id:
            raise UsageError("fsmount share revoke needs the link's ID (see fsmount share list)")
        call("DELETE", f"/api/v1/shares/{urllib.parse.quote(args.link_id, safe='')}")
        return 0
    if args.link_id is not None:
        raise UsageError(f"unexpected argument {args.link_id!r}")
    body: dict[str, Any] = {"path": args.target}
    if args.expires:
        from .server.shares import parse_duration

        body["expires_in"] = parse_duration(args.expires)
    if args.password:
        body["password"] = _ask_password()
    try:
        link = call("POST", "/api/v1/shares", body)
    except errors.IsADirectory:
        raise errors.IsADirectory(f"{args.target} is a folder: only files can be shared") \
            from None
    print(link["url"])
    if sys.stderr.isatty():
        print(f"fsmount: link {link['id']}, expires {_when(link['expires_at'])}"
              f"{', with a password' if link['has_password'] else ''}", file=sys.stderr)
    return 0
