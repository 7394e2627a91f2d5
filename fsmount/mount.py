"""The mount's lifecycle: checks, start (foreground or daemon), kernel tuning, signals, and
clean unmount.

``fsmount mount`` reports every failure synchronously: the cheap checks (mountpoint,
``/dev/fuse``, ``fusermount3``) run first; then, unless in the foreground, the process
forks and the parent waits on a pipe while the child opens the store (which may be locked
by another mount), mounts, and writes back either ``ok`` or a one-line error.  Only then
does the parent exit, with status 0 or 1.

The daemon records its pid under the runtime directory so that ``fsmount unmount`` can
wait for it to finish (and release the store) before returning.

With ``--write-back`` the mount opens its journal (:mod:`fsmount.journal`) before mounting,
runs the uploader beside the FUSE session, and after the session ends keeps uploading until
the journal is drained (writing its progress to the journal's ``status.json``, which
``fsmount unmount`` prints as a progress line; the journal directory is named in a file
beside the pid file), unless told not to (``fsmount unmount --no-wait``) or signalled again:
then the journal stays and the next mount sends it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from . import control, errors, observe, sdnotify
from .cli_errors import describe
from .journal import DEFAULT_LIMIT, Journal, journal_dir
from .memory import tune_malloc
from .reader import DEFAULT_CACHE_BYTES, DEFAULT_READ_AHEAD, DEFAULT_READ_AHEAD_MAX
from .remote import Remote
from .upload import DEFAULT_WRITE_MEMORY
from .view import OwnershipView

if TYPE_CHECKING:
    from . import fuse_ops as fuse_ops_t

log = logging.getLogger(__name__)

#: The kernel's read-ahead for the mount, in KiB (1 MiB is what FUSE accepts at most).
READ_AHEAD_KB = 1024
#: How long ``fsmount mount`` waits for the background filesystem to report ready.
READY_TIMEOUT = 120.0
#: How long ``fsmount unmount`` waits for the filesystem process to exit.
UNMOUNT_WAIT = 30.0


class MountError(errors.FsmountError):
    """The mount could not be set up (bad mountpoint, no FUSE, ...)."""

    name = "MOUNT_FAILED"

    def __str__(self) -> str:
        return self.message


@dataclass
class MountConfig:
    mountpoint: str
    options: set[str] = field(default_factory=set)
    cache_bytes: int = DEFAULT_CACHE_BYTES
    read_ahead: int = DEFAULT_READ_AHEAD
    read_ahead_max: int = DEFAULT_READ_AHEAD_MAX
    foreground: bool = False
    log_file: str | None = None
    read_ahead_kb: int = READ_AHEAD_KB
    fsname: str = "fsmount"
    #: Staging and spill files (default: default_cache_dir(); created by run()).
    cache_dir: str | None = None
    #: Memory for parts of uploads in progress, shared by all files being written.
    write_memory: int = DEFAULT_WRITE_MEMORY
    #: -o uid=,gid=,umask=,file_mode=,dir_mode= (what stat shows).
    view: OwnershipView = field(default_factory=OwnershipView)
    #: --metrics-addr: serve Prometheus metrics of the mount there.
    metrics_addr: tuple[str, int] | None = None
    #: What is mounted (a store directory or a server URL), for fsmount status.
    source: str = ""
    #: ``--write-back``: close returns once the content is in the local journal.
    write_back: bool = False
    write_back_limit: int = DEFAULT_LIMIT
    #: What the journal is kept per (the store directory, or server URL and user).
    identity: str = ""

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


RemoteFactory = Callable[[], Awaitable[Remote]]


# --- checks ----------------------------------------------------------------------------


def _mount_table() -> list[tuple[str, str]]:
    """(major:minor, mountpoint) of every mount of this process's namespace."""
    out = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4:
                    out.append((fields[2], _unescape(fields[4])))
    except OSError:
        pass
    return out


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return (path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def is_mounted(mountpoint: str) -> bool:
    """True if something is mounted at ``mountpoint`` (also a dead FUSE mount)."""
    path = os.path.abspath(mountpoint)
    return any(mp == path for _, mp in _mount_table())


def check_mountpoint(mountpoint: str) -> str:
    """The absolute mountpoint, after checking it can be mounted on.

    Raises MountError: missing, not a directory, already mounted, no FUSE.
    """
    path = os.path.abspath(mountpoint)
    if is_mounted(path):
        raise MountError(f"{mountpoint} is already mounted (fsmount unmount {mountpoint})")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mountpoint {mountpoint} does not exist") from None
    except OSError as exc:
        raise MountError(f"mountpoint {mountpoint}: {exc.strerror}") from None
    import stat as stat_mod

    if not stat_mod.S_ISDIR(st.st_mode):
        raise MountError(f"mountpoint {mountpoint} is not a directory")
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing: load the fuse module or install fuse3")
    if shutil.which("fusermount3") is None:
        raise MountError("fusermount3 is not installed (install the fuse3 package)")
    return path


# --- pid files -------------------------------------------------------------------------


_runtime_dir = control.runtime_dir


def pid_file(mountpoint: str) -> str:
    key = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:16]
    return os.path.join(_runtime_dir(), f"{key}.pid")


def _write_pid(mountpoint: str, journal: str | None = None) -> None:
    try:
        os.makedirs(_runtime_dir(), mode=0o700, exist_ok=True)
        with open(pid_file(mountpoint), "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
        if journal is not None:
            with open(pid_file(mountpoint) + ".journal", "w", encoding="utf-8") as f:
                f.write(journal)
    except OSError as exc:
        log.warning("cannot write pid file: %s", exc)


def journal_of(mountpoint: str) -> str | None:
    """The journal directory of a write-back mount at ``mountpoint`` (None: not one)."""
    try:
        with open(pid_file(mountpoint) + ".journal", encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _remove_pid(mountpoint: str) -> None:
    try:
        path = pid_file(mountpoint)
        with open(path, encoding="ascii") as f:
            if int(f.read().strip() or 0) == os.getpid():
                os.unlink(path)
                if os.path.exists(path + ".journal"):
                    os.unlink(path + ".journal")
    except (OSError, ValueError):
        pass


def _read_pid(mountpoint: str) -> int | None:
    try:
        with open(pid_file(mountpoint), encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


# --- kernel tuning ---------------------------------------------------------------------


def tune_read_ahead(mountpoint: str, kb: int) -> bool:
    """Raise the mount's read-ahead (``/sys/class/bdi/<major>:<minor>/read_ahead_kb``) so
    the kernel sends 1 MiB reads instead of 128 KiB ones.  False if it could not."""
    path = os.path.abspath(mountpoint)
    dev = next((d for d, mp in reversed(_mount_table()) if mp == path), None)
    if dev is None:
        return False
    knob = f"/sys/class/bdi/{dev}/read_ahead_kb"
    try:
        with open(knob, "w", encoding="ascii") as f:
            f.write(str(kb))
        log.info("read_ahead_kb of %s set to %d", dev, kb)
        return True
    except OSError as exc:
        log.info("cannot raise %s (%s); the kernel keeps its 128 KiB reads", knob, exc.strerror)
        return False


# --- running ---------------------------------------------------------------------------


def default_cache_dir() -> str:
    """Where staging and spill files go: ``$XDG_CACHE_HOME/fsmount``, else
    ``~/.cache/fsmount``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fsmount")


def prepare_cache_dir(cache_dir: str | None) -> str:
    """Create the cache directory (private to the user) if needed; returns its path.

    Done before mounting so that a cache directory that cannot be used fails the mount
    with one line, not the first write big enough to spill.

    Raises:
        MountError: the directory cannot be created or is not a writable directory.
    """
    path = os.path.abspath(cache_dir or default_cache_dir())
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise MountError(f"cache directory {path}: {exc.strerror}") from None
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise MountError(f"cache directory {path} is not a writable directory")
    return path


def fuse_options(config: MountConfig) -> set[str]:
    opts = {f"fsname={config.fsname}", "subtype=fsmount", "default_permissions", "noatime"}
    return opts | set(config.options)


async def serve(config: MountConfig, factory: RemoteFactory,
                ready: Callable[[], None] | None = None) -> None:
    """Open the remote, mount, serve until unmounted (or SIGINT/SIGTERM), then clean up.

    ``ready`` is called once the mount is up.  Raises StoreLocked, MountError and the
    remote's errors when the mount cannot start.
    """
    from . import fuse_ops  # pyfuse3 is imported only where a mount is made

    remote = await factory()
    stats = observe.MountStats()
    journal = None
    try:
        if config.write_back:
            # Kept per store and user, by the id the store gives itself where it does (so
            # the journal is found again whatever address the store is reached at).
            store_id = (await remote.get_config()).extra.get("store_id")
            identity = f"id:{store_id}" if isinstance(store_id, str) else config.identity
            journal = Journal.open(
                journal_dir(config.cache_dir or default_cache_dir(), identity),
                limit=config.write_back_limit)
            if journal.pending:
                log.warning("write-back: %d files left by the last mount are uploaded now",
                            len(journal.pending))
        ops = fuse_ops.Operations(
            observe.MeteredRemote(remote, stats),  # type: ignore[arg-type]
            cache_bytes=config.cache_bytes,
            read_ahead=config.read_ahead,
            read_ahead_max=config.read_ahead_max,
            read_only=config.read_only,
            cache_dir=config.cache_dir,
            write_memory=config.write_memory,
            view=config.view,
            journal=journal,
        )
        async with trio.open_nursery() as uploads:
            if ops.uploader is not None:
                uploads.start_soon(ops.uploader.run)
            fuse_ops.session_open(ops, config.mountpoint, fuse_options(config))
            # The receiver stays open through the cleanup, so that a second signal cannot
            # interrupt the unmount.
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM,
                                           signal.SIGHUP) as sigs:
                unmount = True
                try:
                    unmount = await _serve_mounted(ops, config, sigs, ready, stats,
                                                    remote)
                finally:
                    if journal is None:
                        _remove_pid(config.mountpoint)
                    fuse_ops.session_close(unmount=unmount)
                if journal is not None:
                    try:
                        if not ops.no_wait:
                            await _drain(ops, journal, sigs)
                    finally:
                        _remove_pid(config.mountpoint)
            uploads.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await remote.aclose()
        if journal is not None:
            journal.close()


async def _drain(ops: fuse_ops_t.Operations, journal: Journal,
                 sigs: AsyncIterator[int]) -> None:
    """After the session: upload what is pending, with a progress line in ``status.json``
    and the log; a signal stops the wait (the journal stays for the next mount)."""
    if not journal.pending:
        return
    log.warning("unmount: uploading %d pending files (%d bytes) before exiting",
                len(journal.pending), journal.pending_bytes)
    uploader = ops.uploader
    if uploader is not None:
        uploader.pause(False)
    async with trio.open_nursery() as n:

        async def stop_on_signal() -> None:
            async for signum in sigs:
                log.warning("signal %d: unmount stops waiting; %d files stay in the journal "
                            "for the next mount", signum, len(journal.pending))
                n.cancel_scope.cancel()
                return

        n.start_soon(stop_on_signal)
        while journal.pending:
            extra = uploader.status() if uploader is not None else {}
            await trio.to_thread.run_sync(journal.write_status, extra)
            with trio.move_on_after(0.5):
                await journal.wait_drained()
        await trio.to_thread.run_sync(journal.write_status, {})
        log.warning("unmount: everything is uploaded")
        n.cancel_scope.cancel()


async def _serve_mounted(ops: fuse_ops_t.Operations, config: MountConfig,
                         sigs: AsyncIterator[int], ready: Callable[[], None] | None,
                         stats: observe.MountStats, remote: Remote) -> bool:
    """Serve until unmounted or signalled; True if the mount is still there to unmount."""
    from . import fuse_ops

    async with trio.open_nursery() as nursery:
        ops.start(nursery)
        nursery.start_soon(_watch_signals, sigs, nursery.cancel_scope)
        await _start_observers(ops, config, stats, remote, nursery)

        async def when_up() -> None:
            # The kernel resets the read-ahead when it processes FUSE_INIT, so wait for the
            # mount to answer before raising it.
            await trio.to_thread.run_sync(os.stat, config.mountpoint)
            tune_read_ahead(config.mountpoint, config.read_ahead_kb)
            _write_pid(config.mountpoint, ops.journal.path if ops.journal else None)
            if ready is not None:
                ready()
            # systemd (Type=notify): the mount answers now.
            sdnotify.notify(f"READY=1\nSTATUS=mounted at {config.mountpoint}")

        nursery.start_soon(when_up)
        await fuse_ops.session_main()
        # The kernel ended the session (fusermount3 -u): nothing is left to unmount.
        sdnotify.notify("STOPPING=1")
        nursery.cancel_scope.cancel()
        return False
    sdnotify.notify("STOPPING=1")
    return True


async def _start_observers(ops: fuse_ops_t.Operations, config: MountConfig,
                           stats: observe.MountStats, remote: Remote,
                           nursery: trio.Nursery) -> None:
    """The control channel (fsmount status) and, with --metrics-addr, the metrics
    endpoint.  Neither is worth failing a mount over: a problem is one log line."""

    def current() -> dict[str, Any]:
        return observe.status(stats, remote, ops.cache, files_writing=len(ops.writers),
                              files_open=len(ops.files), mountpoint=config.mountpoint,
                              source=config.source)

    async def status(args: dict[str, Any]) -> dict[str, Any]:
        return current()

    handlers: control.Handlers = {"status": status}
    try:
        await nursery.start(control.serve, control.socket_path(config.mountpoint), handlers)
    except OSError as exc:
        log.warning("no control channel (fsmount status will not answer): %s", exc)
    if config.metrics_addr is not None:
        host, port = config.metrics_addr
        try:
            bound = observe.start_metrics_server(host, port, current)
            log.info("metrics on http://%s:%d/metrics", *bound)
        except OSError as exc:
            log.warning("cannot serve metrics on %s:%d: %s", host, port, exc)


async def _watch_signals(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("signal %d: unmounting", signum)
        scope.cancel()
        return


def run(config: MountConfig, factory: RemoteFactory) -> int:
    """Mount per ``config``; returns the exit status.  In the background, returns once the
    mount is ready (or failed) with the daemon left running.

    Raises MountError for a bad mountpoint; in the foreground, whatever stops the mount
    from starting (StoreLocked, the remote's errors; possibly in an exception group).
    Failures of the background filesystem before it is ready are printed as one line
    (:func:`fsmount.cli_errors.describe`) and return 1.
    """
    config.mountpoint = check_mountpoint(config.mountpoint)
    config.cache_dir = prepare_cache_dir(config.cache_dir)
    tune_malloc()
    if config.foreground:
        trio.run(serve, config, factory)  # what fails becomes one line in fsmount.cli
        return 0
    return _daemonize(config, factory)


def _daemonize(config: MountConfig, factory: RemoteFactory) -> int:
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(wfd)
        chunks = []
        deadline = time.monotonic() + READY_TIMEOUT
        with os.fdopen(rfd, "rb", buffering=0) as r:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    chunks = [b"the filesystem did not become ready in time "
                              b"(see --log-file); it keeps trying in the background"]
                    break
                data = r.read(4096)
                if not data:
                    break
                chunks.append(data)
        msg = b"".join(chunks).decode("utf-8", "replace").strip()
        if msg == "ok":
            return 0
        # The child failed before mounting (reap it), or is still trying (leave it).
        try:
            os.waitpid(pid, os.WNOHANG if "in time" in msg else 0)
        except ChildProcessError:
            pass
        print(f"fsmount: {msg or 'the filesystem process exited before the mount was ready'}",
              file=sys.stderr)
        return 1
    # Child: become a daemon, then mount and report.
    os.close(rfd)
    status = 0
    try:
        os.setsid()
        os.chdir("/")
        _redirect_stdio(config.log_file)
        reported = False

        def ready() -> None:
            nonlocal reported
            os.write(wfd, b"ok")
            os.close(wfd)
            reported = True
            _silence_stdio(config.log_file)

        try:
            trio.run(serve, config, factory, ready)
        except BaseException as exc:  # reported to the parent as one line
            status = 1
            if not reported:
                os.write(wfd, describe(exc).message.encode())
                os.close(wfd)
            else:
                log.exception("filesystem failed")
    finally:
        os._exit(status)


def _redirect_stdio(log_file: str | None) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    os.close(devnull)


def _silence_stdio(log_file: str | None) -> None:
    """After the mount is up nobody reads the daemon's terminal output.  Under systemd
    stderr is the journal: the log stays there."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    if not log_file and not sdnotify.under_systemd():
        os.dup2(devnull, 2)
    os.close(devnull)


# --- unmounting ------------------------------------------------------------------------


def unmount(mountpoint: str, *, lazy: bool = False, wait: float = UNMOUNT_WAIT) -> None:
    """Unmount and wait for the filesystem process to finish.

    Raises MountError when nothing is mounted there or fusermount3 fails (e.g. busy).
    """
    path = os.path.abspath(mountpoint)
    if not is_mounted(path):
        raise MountError(f"{mountpoint} is not mounted")
    pid = _read_pid(path)
    cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [path]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        msg = (res.stderr.strip().splitlines() or ["fusermount3 failed"])[-1]
        msg = msg.removeprefix("fusermount3: ")
        if "busy" in msg and not lazy:
            msg += " (files are open there; fsmount unmount -z detaches it now)"
        raise MountError(msg)
    if pid is not None and wait > 0:
        _wait_exit(pid, wait)


#: ``fsmount unmount`` of a write-back mount gives up waiting when the uploads made no
#: progress (``status.json`` not rewritten) for this long.
DRAIN_STALL = 60.0


def wait_drained(mountpoint: str, journal: str) -> None:
    """Wait for a write-back mount's process to exit after its unmount, printing a progress
    line (files and bytes left, from the journal's ``status.json``) while it uploads."""
    pid = _read_pid(os.path.abspath(mountpoint))
    if pid is None:
        return
    status_path = os.path.join(journal, "status.json")
    shown = False
    while _alive(pid):
        try:
            st = os.stat(status_path)
            with open(status_path, encoding="utf-8") as f:
                status = json.load(f)
        except (OSError, ValueError):
            status, st = None, None
        if st is not None and time.time() - st.st_mtime > DRAIN_STALL:
            log.warning("uploads made no progress for %.0f s; the mount keeps trying "
                        "(pid %d)", DRAIN_STALL, pid)
            break
        if isinstance(status, dict) and status.get("files"):
            line = (f"uploading before unmount: {status['files']} files, "
                    f"{status.get('bytes', 0)} bytes left")
            if status.get("last_error"):
                line += f" (last error: {status['last_error']})"
            print(f"\r{line[:150]:<150}", end="", file=sys.stderr, flush=True)
            shown = True
        time.sleep(0.2)
    if shown:
        print(file=sys.stderr)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"fsmount" not in f.read():
                return False
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ")[-1][:1] != b"Z"
    except OSError:
        return False


def _wait_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"fsmount" not in f.read():
                    return  # pid reused by something else: ours is gone
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().split(b") ")[-1][:1] == b"Z":
                    return
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESRCH):
                return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    log.warning("filesystem process %d still running after %.0f s", pid, timeout)
