"""The simulator in a process of its own (``python -m airflow_provider_luma.testing``), for load tests and benchmarks.

In-process, the simulator would share the event loop's CPU with the client being measured; in its
own process it does not, and it can be killed and restarted like a real server.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from types import TracebackType

from airflow_provider_luma.testing.client import SimulatorClient
from airflow_provider_luma.testing.options import DEFAULT_API_KEY

_URL = re.compile(r"Luma simulator on (http://\S+) ")


class SimulatorProcess:
    """
    A simulator CLI process on free loopback ports, started at construction, ended by :meth:`stop`.

    :param args: Further CLI flags, e.g. ``["--hold", "1", "--queued", "1"]``.
    :param api_key: The key it accepts; passed through the environment, so it never shows in ``ps``.
    :param start_timeout: Seconds to wait for the line that says where it listens.
    :param env: Extra environment variables for the process.
    """

    def __init__(
        self,
        args: list[str] | tuple[str, ...] = (),
        *,
        api_key: str = DEFAULT_API_KEY,
        start_timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.api_key = api_key
        self.command = [sys.executable, "-m", "airflow_provider_luma.testing", "--port", "0", "--cdn-port", "0", *args]
        self.process = subprocess.Popen(
            self.command,
            env={**os.environ, **(env or {}), "LUMA_SIMULATOR_API_KEY": api_key},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # a signal to the test's process group does not reach it
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], start_timeout)
        #: The line the CLI printed on start (never holds a custom key).
        self.banner = self.process.stdout.readline() if ready else ""
        match = _URL.search(self.banner)
        if match is None:
            self.stop()
            raise RuntimeError(f"The simulator did not start: {self.banner!r}")
        #: The API origin, e.g. ``http://127.0.0.1:40123``.
        self.base_url = match.group(1)

    @property
    def client(self) -> SimulatorClient:
        """Its control API (``script``, ``inject_fault``, ``requests`` ...) from this process."""
        return SimulatorClient(self.base_url)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def stop(self) -> None:
        """End the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
