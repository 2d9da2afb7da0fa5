"""The connection test (Test button, ``airflow connections test``): what the key reaches, or what to fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import SENTINEL_KEY
from tests.support.deployment import free_port


def use_connection(monkeypatch: pytest.MonkeyPatch, **fields: object) -> str:
    value = json.dumps({"conn_type": "luma", "password": SENTINEL_KEY, **fields})
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", value)
    return value


class ClosingServer:
    """A loopback TCP server that takes each connection and closes it unanswered, counting them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def closing_server() -> Iterator[ClosingServer]:
    server = ClosingServer()
    yield server
    server.close()


def test_a_host_without_scheme_at_a_plain_http_server_fails_naming_http(monkeypatch, simulator) -> None:
    # luma://:key@127.0.0.1:PORT: no scheme, so https://, against the simulator's plain http.
    address = urlsplit(simulator.base_url)
    use_connection(monkeypatch, host=address.hostname, port=address.port)
    ok, message = LumaHook().test_connection()
    assert ok is False
    assert f"https://127.0.0.1:{address.port}" in message
    assert "http://" in message  # what to write instead
    assert simulator.count() == 0  # nothing the simulator could read as a request


def test_each_family_is_probed_once_without_retries(monkeypatch, closing_server: ClosingServer) -> None:
    # The connection's own max_retries (3 here) would retry a dropped connection with back-off.
    use_connection(monkeypatch, host=f"http://127.0.0.1:{closing_server.port}", extra={"max_retries": 3})
    ok, message = LumaHook().test_connection()
    assert ok is False
    assert "dropped the connection" in message
    assert f"Check the connection's host (http://127.0.0.1:{closing_server.port})" in message
    assert "write the host as http://" not in message  # it is http already
    # One probe, no retry: the first family's failure ends the test.
    assert closing_server.accepted == 1


def test_an_unreachable_host_says_what_to_check(monkeypatch) -> None:
    use_connection(monkeypatch, host=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    ok, message = LumaHook().test_connection()
    assert ok is False
    assert "could not be reached" in message
    assert "its scheme, address and port" in message


def test_an_unusable_connection_is_reported_not_raised(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps({"conn_type": "luma", "host": "http://127.0.0.1:9"}))
    ok, message = LumaHook().test_connection()
    assert ok is False
    assert "has no API key" in message


@pytest.mark.timeout(120)
def test_the_cli_says_why_at_once_for_a_host_without_scheme(simulator: LumaSimulator) -> None:
    """``airflow connections test`` (what the button calls) against the plain-http simulator, host without scheme."""
    address = urlsplit(simulator.base_url)
    env = {
        **os.environ,
        # The issue's own connection: luma://:key@127.0.0.1:PORT
        "AIRFLOW_CONN_LUMA_DEFAULT": f"luma://:{SENTINEL_KEY}@127.0.0.1:{address.port}",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    }
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "test", "luma_default"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    out = result.stdout + result.stderr
    assert "Connection failed!" in out, out[-3000:]
    assert f"https://127.0.0.1:{address.port}" in out
    assert "http://" in out.split("Connection failed!", 1)[1]
    assert SENTINEL_KEY not in out
