"""PostgreSQL for the production-shaped harness, started by the test run on loopback (Redis: ``redis_server``).

Debian's server (``apt-get install -y postgresql``; ``.ci/run`` installs it), in a temporary folder of
its own, in its own process group, listening on 127.0.0.1 and a free port only, and removed with that
folder when stopped. ``initdb`` and ``postgres`` refuse to run as root: as root, they run as the
``postgres`` user (``setpriv``), in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: What to run when a server is missing (CI's ``.ci/run`` does it).
INSTALL_HINT = "apt-get install -y postgresql redis-server (.ci/run installs them)"
#: Seconds for a server to answer after its start.
START_TIMEOUT = 60.0


class ServiceError(AssertionError):
    """A service would not start; the message carries its log's tail."""


def free_port() -> int:
    """A free TCP port on loopback (free now; good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_binary(name: str) -> str:
    """``name`` on ``PATH``, else in Debian's versioned PostgreSQL folder (the newest); raise if absent."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if candidates:
        return candidates[-1]
    raise ServiceError(f"{name} not found: {INSTALL_HINT}")


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parts[-3]
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _start(command: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``command`` in the foreground of a process group of its own (stopped with it), output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{name} exited {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise ServiceError(f"{name} not listening on 127.0.0.1:{port} within {START_TIMEOUT:.0f} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def _stop_group(process: subprocess.Popen[bytes] | None, sig: int, wait: float = 20.0) -> None:
    """``sig`` to the process group, then SIGKILL to whatever of it is left."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=wait)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


class PostgresServer:
    """A throw-away PostgreSQL cluster with one database, ``dbname``, owned by ``user`` (trust auth on loopback).

    :param user: The role the deployment connects as (created by ``initdb`` as the superuser).
    :param dbname: The database created for the deployment.
    """

    def __init__(self, user: str = "airflow", dbname: str = "airflow") -> None:
        self.user, self.dbname = user, dbname
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="luma-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses root: the cluster belongs to the postgres user, who must own the folder.
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as_postgres = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups"]

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self) -> PostgresServer:
        """``initdb``, then ``postgres`` in the foreground of its own process group; return once it answers."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        initdb = [
            *self._as_postgres,
            find_binary("initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
        result = subprocess.run(initdb, env=env, cwd=self.root, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise ServiceError(f"initdb exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),  # not /var/run/postgresql: nothing outside our folder
            "max_connections": "300",  # every Airflow process keeps a pool; Celery's result backend too
            # A test database: durability buys nothing, speed does.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # What a stalled component waited for, in the server's log: lock waits over 1 s, statements over 2 s.
            "log_lock_waits": "on",
            "deadlock_timeout": "1s",
            "log_min_duration_statement": "2000",
        }
        command = [*self._as_postgres, find_binary("postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        self.process = _start(command, self.root, self.log, env)
        _wait_for_port(self.port, self.process, self.log, "postgres")
        self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg2

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
                break
            except psycopg2.OperationalError:  # "the database system is starting up"
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{self.dbname}"')
        finally:
            conn.close()

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the group), SIGKILL after 20 s; remove the folder. Idempotent."""
        _stop_group(self.process, signal.SIGINT)
        shutil.rmtree(self.root, ignore_errors=True)
