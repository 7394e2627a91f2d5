"""The ownership view of a mount: ``-o uid=,gid=,umask=,file_mode=,dir_mode=`` as sshfs and
rclone users know them.

They change what ``stat`` shows, never what the store holds: a media server running as
its own user can be given files it owns without any chown in the store.  The view is
applied last, where the FUSE adapter builds a node's attributes
(``fuse_ops.Operations._attrs``): whatever ownership and mode the node has (the mounting
user's, or the store's own per node where it keeps them) is the base, and every option
that is given overrides it.  With ``default_permissions`` (always on) the kernel checks
access against these shown attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OwnershipView", "VIEW_OPTIONS", "parse_view_option"]

#: The ``-o`` names that set the view.
VIEW_OPTIONS = frozenset({"uid", "gid", "umask", "file_mode", "dir_mode"})


@dataclass(frozen=True)
class OwnershipView:
    """Overrides for shown ownership and permission bits (None: keep the node's)."""

    uid: int | None = None
    gid: int | None = None
    #: Bits cleared from every shown mode (after file_mode/dir_mode).
    umask: int | None = None
    #: Permission bits shown for every regular file (symlinks always show 0777).
    file_mode: int | None = None
    #: Permission bits shown for every folder.
    dir_mode: int | None = None

    def owner(self, uid: int, gid: int) -> tuple[int, int]:
        """The shown (uid, gid) of a node owned by (uid, gid)."""
        return (uid if self.uid is None else self.uid, gid if self.gid is None else self.gid)

    def perms(self, perms: int, *, is_dir: bool) -> int:
        """The shown permission bits (0o7777 part of st_mode) for a node's ``perms``."""
        chosen = self.dir_mode if is_dir else self.file_mode
        if chosen is not None:
            perms = chosen
        if self.umask is not None:
            perms &= ~self.umask
        return perms & 0o7777

    def with_option(self, name: str, value: str) -> OwnershipView:
        """This view with one ``-o name=value`` applied.  Raises ValueError for a bad value
        or a name not in :data:`VIEW_OPTIONS`."""
        return OwnershipView(**{**self.__dict__, name: parse_view_option(name, value)})


def parse_view_option(name: str, value: str) -> int:
    """The number of one view option: ``uid``/``gid`` decimal, the modes octal (``022``,
    ``0644``).  Raises ValueError."""
    if name not in VIEW_OPTIONS:
        raise ValueError(f"{name} is not an ownership option")
    if name in ("uid", "gid"):
        n = int(value, 10)
        if not 0 <= n < 1 << 32:
            raise ValueError(f"{name}={value} is out of range")
        return n
    n = int(value, 8)
    if not 0 <= n <= 0o7777:
        raise ValueError(f"{name}={value} is not a mode (octal, at most 7777)")
    return n
