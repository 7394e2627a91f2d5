"""Real engines for tests: an S3-compatible object store and a throwaway PostgreSQL cluster.

Both run from Debian's packages as this test run's own processes, on 127.0.0.1 and a free
port, with every file (configuration, rings, data, logs) in a temporary directory that is
removed afterwards; they are stopped by PID.  Readiness is polled with a deadline.

* :func:`swift_s3` -- OpenStack Swift (``swift-proxy-server`` with the ``s3api`` and
  ``tempauth`` middlewares, ``swift-account-server``, ``swift-container-server``,
  ``swift-object-server``): one replica, rings of one device built with
  ``swift-ring-builder``, ``workers = 0`` so that each daemon is one process.  The
  configuration points every daemon at the temporary directory (``swift_dir``), never at
  ``/etc/swift``.  Yields an :class:`S3Endpoint` with the S3 credentials of tempauth's test
  user and a bucket already created.
* :func:`postgres` -- ``initdb`` + ``postgres`` from ``/usr/lib/postgresql/<v>/bin`` as a
  non-root user (PostgreSQL refuses root: :data:`PG_USER`, else ``nobody``), durability
  switched off (tests throw the cluster away), a database created.  Yields a
  :class:`PgCluster` with the DSN.

Why Swift rather than Ceph's radosgw: see docs/performance.md ("Object store for tests").
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PG_USER", "PgCluster", "S3Endpoint", "free_port", "postgres", "swift_s3"]

#: The system user the PostgreSQL cluster runs as when the tests run as root.
PG_USER = "fsmount-test"
#: How long an engine may take to answer.
START_DEADLINE = 60.0
STOP_DEADLINE = 20.0
SWIFT_BIN = Path("/usr/bin")
#: tempauth's test user: the S3 access key is "account:user", the secret its password.
S3_ACCESS_KEY = "test:tester"
S3_SECRET_KEY = "testing"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process we started, by its PID; SIGKILL after :data:`STOP_DEADLINE`."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_DEADLINE)


def _log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --- Swift + s3api -----------------------------------------------------------------------


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3-compatible store."""

    endpoint: str  #: http://127.0.0.1:PORT
    bucket: str  #: created, empty at start
    access_key: str
    secret_key: str
    startup_seconds: float  #: from the first process start to the bucket created

    def url(self, prefix: str = "") -> str:
        """The ``s3://`` content URL fsmount takes (credentials not in it)."""
        path = f"/{prefix}" if prefix else ""
        return f"s3://{self.bucket}{path}?endpoint={self.endpoint}"

    def env(self) -> dict[str, str]:
        """The environment variables that carry the credentials."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


_SERVER_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
swift_dir = {root}
devices = {root}/srv
mount_check = false
log_level = WARNING
log_address = {root}/no-syslog
user = {user}

[pipeline:main]
pipeline = {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}
{extra}
[{kind}-replicator]
[{kind}-updater]
[{kind}-auditor]
"""

_PROXY_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
swift_dir = {root}
log_level = WARNING
log_address = {root}/no-syslog
user = {user}

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
# Path-style and virtual-host requests both work; location is the client's region.
location = us-east-1
s3_acl = false
check_bucket_owner = false
min_segment_size = 5242880

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = {secret} .admin

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcache_port}
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
"""

_SWIFT_CONF = """\
[swift-hash]
swift_hash_path_suffix = fsmount-test-suffix
swift_hash_path_prefix = fsmount-test-prefix

[storage-policy:0]
name = Policy-0
default = yes
"""


#: Builds the three rings in one interpreter (``swift-ring-builder`` would start nine).
_RING_SCRIPT = """
import sys
from swift.common.ring import RingBuilder
root = sys.argv[1]
for arg in sys.argv[2:]:
    kind, port = arg.split("=")
    b = RingBuilder(6, 1, 1)
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
               "device": "d1", "weight": 100.0})
    b.rebalance()
    b.save(f"{root}/{kind}.builder")
    b.get_ring().save(f"{root}/{kind}.ring.gz")
"""


def _build_rings(root: Path, ports: dict[str, int]) -> None:
    """One ring per kind: 2^6 partitions, one replica, one device on 127.0.0.1.

    The same as ``swift-ring-builder KIND.builder create 6 1 1``, ``add
    r1z1-127.0.0.1:PORT/d1 100`` and ``rebalance`` (docs/deploy.md), with Debian's Swift
    modules, in one process.
    """
    subprocess.run(["/usr/bin/python3", "-c", _RING_SCRIPT, str(root),
                    *(f"{k}={p}" for k, p in ports.items())],
                   check=True, capture_output=True, timeout=120, cwd=root)


#: Where a throwaway Swift keeps its files by default: memory, so that its fsyncs (object
#: files, container databases) cost nothing -- the tests throw the data away anyway.
SWIFT_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@contextlib.contextmanager
def swift_s3(bucket: str = "fsmount-test", *, tmpdir: str | None = SWIFT_TMP
             ) -> Iterator[S3Endpoint]:
    """Start Swift with s3api in a temporary directory (under ``tmpdir``); yield its
    endpoint; stop it.

    Raises:
        RuntimeError: a daemon exited or did not answer within :data:`START_DEADLINE`.
    """
    root = Path(tempfile.mkdtemp(prefix="fsmount-swift-", dir=tmpdir))
    procs: list[subprocess.Popen[bytes]] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    t0 = time.monotonic()
    try:
        ports = {k: free_port() for k in ("account", "container", "object")}
        proxy_port = free_port()
        (root / "srv" / "d1").mkdir(parents=True)
        (root / "swift.conf").write_text(_SWIFT_CONF)
        _build_rings(root, ports)
        for kind, port in ports.items():
            extra = "allow_versions = true\n" if kind == "container" else ""
            (root / f"{kind}-server.conf").write_text(_SERVER_CONF.format(
                port=port, root=root, kind=kind, extra=extra, user=user))
        # The memcache middleware needs an address; nothing listens there (tempauth then
        # checks every S3 signature itself, which is what the tests want anyway).
        (root / "proxy-server.conf").write_text(_PROXY_CONF.format(
            port=proxy_port, root=root, user=user, secret=S3_SECRET_KEY,
            memcache_port=free_port()))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(root), "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1",
               # eventlet's green DNS imports dnspython and httpx: seconds per daemon.
               "EVENTLET_NO_GREENDNS": "yes"}
        for kind in ("account", "container", "object", "proxy"):
            log = open(root / f"{kind}.log", "wb")  # noqa: SIM115 -- closed below
            try:
                procs.append(subprocess.Popen(
                    [str(SWIFT_BIN / f"swift-{kind}-server"), str(root / f"{kind}-server.conf")],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, cwd=root))
            finally:
                log.close()
        endpoint = f"http://127.0.0.1:{proxy_port}"
        _wait_swift(root, procs, [*ports.values(), proxy_port])
        client = s3_client(endpoint, S3_ACCESS_KEY, S3_SECRET_KEY)
        _wait_bucket(root, procs, client, bucket)
        yield S3Endpoint(endpoint, bucket, S3_ACCESS_KEY, S3_SECRET_KEY,
                         time.monotonic() - t0)
    finally:
        for p in reversed(procs):
            _stop(p)
        shutil.rmtree(root, ignore_errors=True)


def _check_alive(root: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    for p, kind in zip(procs, ("account", "container", "object", "proxy"), strict=False):
        if p.poll() is not None:
            raise RuntimeError(f"swift-{kind}-server exited with {p.returncode}:\n"
                               f"{_log_tail(root / f'{kind}.log')}")


def _wait_swift(root: Path, procs: list[subprocess.Popen[bytes]], ports: list[int]) -> None:
    deadline = time.monotonic() + START_DEADLINE
    pending = list(ports)
    while pending:
        _check_alive(root, procs)
        pending = [p for p in pending if not _listening(p)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"swift did not listen on {pending} within {START_DEADLINE}s")
        time.sleep(0.05)


def _wait_bucket(root: Path, procs: list[subprocess.Popen[bytes]], client: object,
                 bucket: str) -> None:
    """Create the bucket, retrying while the servers finish starting."""
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + START_DEADLINE
    for _attempt in range(10_000):
        _check_alive(root, procs)
        try:
            client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            err: Exception = exc
        except BotoCoreError as exc:
            err = exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"swift s3api did not create a bucket: {err}\n"
                               f"{_log_tail(root / 'proxy.log')}")
        time.sleep(0.05)


def s3_client(endpoint: str, access_key: str, secret_key: str) -> object:
    """A plain boto3 S3 client for tests (path-style addressing, no retries)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=2, read_timeout=10))


# --- PostgreSQL --------------------------------------------------------------------------


@dataclass(frozen=True)
class PgCluster:
    """A running throwaway PostgreSQL cluster."""

    dsn: str  #: postgresql://USER@127.0.0.1:PORT/DB
    port: int
    datadir: Path
    startup_seconds: float  #: initdb + start + database created
    #: Stop the server (fast shutdown: clients are cut off) and start it again on the same
    #: port and data, waiting until it answers (tests of a database restart).
    restart: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)


def pg_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<v>/bin`` with ``initdb``.

    Raises:
        FileNotFoundError: PostgreSQL is not installed.
    """
    base = Path("/usr/lib/postgresql")
    versions = sorted((p for p in base.glob("*/bin/initdb")), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
    return versions[-1].parent


def _pg_user() -> pwd.struct_passwd | None:
    """Whom to run PostgreSQL as: ourselves unless root, then :data:`PG_USER` or nobody."""
    if os.getuid() != 0:
        return None
    for name in (PG_USER, "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(f"running as root and neither {PG_USER} nor nobody exists")


@contextlib.contextmanager
def postgres(database: str = "fsmount_test") -> Iterator[PgCluster]:
    """Start a throwaway PostgreSQL cluster; yield its DSN; stop it and remove its files.

    Raises:
        RuntimeError: initdb failed, or the server did not answer in :data:`START_DEADLINE`.
        FileNotFoundError: PostgreSQL is not installed.
    """
    import psycopg

    bindir = pg_bindir()
    owner = _pg_user()
    # Not under pytest's tmp_path: that is private to root, and the cluster's user must
    # own its data directory.
    root = Path(tempfile.mkdtemp(prefix="fsmount-pg-"))
    prefix: list[str] = []
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
        # setpriv execs (no fork): the PID we hold is the postmaster's.
        prefix = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}",
                  "--clear-groups", "--"]
    dbuser = "fsmount"
    datadir = root / "data"
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(root)}
    procs: list[subprocess.Popen[bytes]] = []
    admin = f"postgresql://{dbuser}@127.0.0.1:{port}/postgres"

    def start() -> None:
        log = open(root / "postgres.log", "ab")  # noqa: SIM115 -- closed below
        try:
            # Durability off: the cluster lives for one test session.
            procs.append(subprocess.Popen(
                [*prefix, str(bindir / "postgres"), "-D", str(datadir),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
                 "-c", f"unix_socket_directories={root}", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=100"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=root))
        finally:
            log.close()

    def answer(sql: str | None) -> None:
        """Poll (bounded) until the server answers; run ``sql`` there once it does."""
        deadline = time.monotonic() + START_DEADLINE
        for _attempt in range(100_000):
            if procs[-1].poll() is not None:
                raise RuntimeError(f"postgres exited with {procs[-1].returncode}:\n"
                                   f"{_log_tail(root / 'postgres.log')}")
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                    conn.execute(sql or "SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not answer: {exc}") from None
                time.sleep(0.05)

    def restart() -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected.
        _stop(procs[-1], signal.SIGINT)
        start()
        answer(None)

    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(datadir), "-U", dbuser, "-A", "trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            env=env, cwd=root, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')}")
        start()
        answer(f'CREATE DATABASE "{database}"')
        yield PgCluster(f"postgresql://{dbuser}@127.0.0.1:{port}/{database}", port, datadir,
                        time.monotonic() - t0, restart)
    finally:
        if procs:
            _stop(procs[-1], signal.SIGINT)
        shutil.rmtree(root, ignore_errors=True)
