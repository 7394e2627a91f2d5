"""The mount helper: ``mount -t fuse.fsmount SOURCE MNT -o OPTS`` and ``/etc/fstab`` lines.

How mount(8) gets here: for a type ``fuse.fsmount`` util-linux runs
``/sbin/mount.fuse.fsmount`` if it exists, else fuse3's ``mount.fuse`` (``mount.fuse3``),
which runs the program named after the subtype -- ``fsmount SOURCE MNT -o OPTS`` -- through
``/bin/sh`` (mount(8) clears ``PATH``, so the shell's default one applies: ``fsmount``
must be in ``/usr/local/bin`` or ``/usr/bin``).  The old form ``-t fuse`` with source
``fsmount#SOURCE`` comes the same way.  So this module is reached either as the
``mount.fsmount`` console script (link it as ``/sbin/mount.fuse.fsmount``) or as
``fsmount SOURCE MNT ...`` (:func:`fsmount.cli.main` hands a command line whose first
word is not a verb here).

``SOURCE`` is a store directory or a server URL (``http(s)://...``; the token comes from
``-o token_file=PATH``).  The ``-o`` options that set fsmount's own flags are taken out
(:data:`FLAG_OPTIONS`); the rest (kernel options, ``uid=`` and the other view options,
``_netdev``/``nofail``/``x-*``, which are accepted and ignored) go to ``fsmount mount -o``.
The mount runs in the background, and the helper returns once it answers, as mount(8)
expects; with ``-o foreground`` it stays in the foreground (a systemd service).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["FLAG_OPTIONS", "helper_argv", "main"]

#: ``-o NAME=VALUE`` -> the ``fsmount mount`` flag it sets.
FLAG_OPTIONS = {
    "token_file": "--token-file",
    "cache_dir": "--cache-dir",
    "cache_size": "--cache-size",
    "read_ahead": "--read-ahead",
    "read_ahead_max": "--read-ahead-max",
    "write_memory": "--write-memory",
    "log_file": "--log-file",
    "retry_time": "--retry-time",
    "store_user": "--user",
    "metrics_addr": "--metrics-addr",
}
#: ``-o`` values given to ``fsmount`` itself (before the verb).
GLOBAL_OPTIONS = {"log_level": "--log-level"}
USAGE = ("usage: mount.fsmount SOURCE MOUNTPOINT [-o OPTION[,OPTION...]] [-n] [-s] [-f] [-v]\n"
         "  SOURCE: a store directory or http(s)://HOST:PORT (with -o token_file=PATH)")


class HelperUsage(ValueError):
    """The helper's command line is malformed."""


def helper_argv(args: Sequence[str]) -> list[str]:
    """The ``fsmount`` command line for a mount helper's ``args`` (``SOURCE MNT [-o OPTS]
    [-t TYPE] [-n -s -f -v]``).  Raises HelperUsage."""
    positional: list[str] = []
    options: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in ("-o", "-t"):
            value = next(it, None)
            if value is None:
                raise HelperUsage(f"{arg} needs a value")
            if arg == "-o":
                options.extend(o for o in value.split(",") if o)
        elif arg.startswith("-o") and len(arg) > 2:
            options.extend(o for o in arg[2:].split(",") if o)
        elif arg in ("-n", "-s", "-f", "-v", "-r", "-w"):
            # mount(8)'s own flags: no mtab, sloppy, fake, verbose; -r / -w are ro / rw.
            if arg in ("-r", "-w"):
                options.append("ro" if arg == "-r" else "rw")
            continue
        elif arg.startswith("-"):
            raise HelperUsage(f"unknown flag {arg}")
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise HelperUsage("SOURCE and MOUNTPOINT are needed")
    source, mountpoint = positional
    source = source.removeprefix("fsmount#")
    front: list[str] = []
    flags: list[str] = []
    rest: list[str] = []
    for opt in options:
        name, eq, value = opt.partition("=")
        if eq and name in FLAG_OPTIONS:
            flags += [FLAG_OPTIONS[name], value]
        elif eq and name in GLOBAL_OPTIONS:
            front += [GLOBAL_OPTIONS[name], value.upper()]
        elif opt == "foreground":
            flags.append("-f")
        else:
            rest.append(opt)
    if source.startswith(("http://", "https://")):
        remote = ["--server", source]
    else:
        remote = ["--store", os.path.abspath(source)]
    return [*front, "mount", *remote, *flags, *(["-o", ",".join(rest)] if rest else []),
            mountpoint]


def main(argv: Sequence[str] | None = None) -> int:
    """``mount.fsmount SOURCE MOUNTPOINT [-o OPTS]``; returns the exit status."""
    from .cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        command = helper_argv(args)
    except HelperUsage as exc:
        print(f"mount.fsmount: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    return cli_main(command)


if __name__ == "__main__":
    sys.exit(main())
