"""A redis-server of the test's own on 127.0.0.1: a free port, a temporary folder, nothing saved."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.services import free_port

#: How to get the server where it is missing (CI's .ci/run installs it).
INSTALL_HINT = "apt-get install redis-server"


def redis_server_binary() -> str:
    """The redis-server on the PATH; the test is skipped without it (and fails in CI, which must have it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = f"redis-server is not installed ({INSTALL_HINT}): the shared call budget needs a real Redis"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)
    return binary


__all__ = ["INSTALL_HINT", "RedisServer", "free_port", "redis_server_binary"]


class RedisServer:
    """
    One redis-server process, started by :meth:`start` (again after :meth:`kill`, on the same port).

    :param binary: The redis-server executable.
    """

    #: Where it listens.
    host = "127.0.0.1"

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="luma-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start the server and wait until it answers."""
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a signal to the test's process group does not reach it
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        """Whether the server answers PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server (as a crash would end it)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """End the server and remove its folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, db: int = 0) -> str:
        """``redis://127.0.0.1:PORT/DB`` (the form of Celery's broker URL)."""
        return f"redis://{self.host}:{self.port}/{db}"

    def connection_json(self, db: int = 0) -> str:
        """An ``AIRFLOW_CONN_...`` value naming this server (as a deployment names Celery's broker)."""
        return json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": self.port, "extra": {"db": db}})
