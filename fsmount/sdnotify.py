"""systemd integration: ``sd_notify`` readiness and "am I run by systemd?".

A unit with ``Type=notify`` waits for ``READY=1`` on the datagram socket named by
``$NOTIFY_SOCKET`` before it counts the service as started (and before units ordered after
it start).  The protocol is one ``AF_UNIX`` datagram of ``KEY=VALUE`` lines (see
sd_notify(3)); a path starting with ``@`` is in the abstract namespace.  It is a few lines,
so it is written here rather than taken from a library.  fsmount sends ``READY=1`` once
the mount answers (fsmount.mount) and ``STOPPING=1`` when it starts to unmount.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "under_systemd"]


def under_systemd() -> bool:
    """True when systemd started this process (a service, a mount unit's helper): then
    stderr goes to the journal, which time-stamps every line itself."""
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; False if there is none or
    it cannot be reached.  Never raises: readiness is a courtesy to the service manager,
    and a mount that works must not fail over it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True
