"""
The call budget's test helpers: windows of a request log, generations to wait for, and client
processes (``python -m tests.support.budget``) that each run waits on their own event loop and
calls from a thread of their own, as a triggerer and a worker would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import connection_json
from tests.support.logs import find_leaks

ROOT = Path(__file__).resolve().parents[2]
#: How the client process marks its own lines on stdout (Airflow may log there too).
READY, REPORT = "budget-client: ready", "budget-client: report "


def busiest_second(times: list[float], window: float = 1.0) -> int:
    """The most of ``times`` in any half-open window of ``window`` seconds."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def create_universal(sim: LumaSimulator, monkeypatch: pytest.MonkeyPatch, count: int, prompt: str) -> list[dict]:
    """``count`` universal generations, created without a budget (only the waits are measured)."""
    from airflow_provider_luma.hooks.luma import LumaHook

    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim, poll_interval=2))

    async def create() -> list[dict]:
        hook = LumaHook()
        async with hook:
            made = await asyncio.gather(
                *(hook.acreate_generation(f"{prompt} {i}", model="luma/ray-2") for i in range(count))
            )
        return [generation.to_dict() for generation in made]

    return asyncio.run(create())


class BudgetClient:
    """
    A client process: it reads its Luma connection from ``env``, says it is ready, and on :meth:`go`
    waits for ``waits`` (generation dicts) as triggers on its event loop while a thread of its own
    fetches each of ``fetches`` once, synchronously; then it reports.

    :param env: ``AIRFLOW_CONN_...`` variables (the Luma connection, the Redis one).
    :param waits: Generations to wait for, one trigger each.
    :param fetches: Generations to fetch from the thread.
    :param timeout: Seconds each wait may take.
    """

    def __init__(
        self, env: Mapping[str, str], waits: list[dict], fetches: Sequence[dict] = (), timeout: float = 120
    ) -> None:
        self.waits = waits
        plan = {"waits": waits, "fetches": list(fetches), "timeout": timeout}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.budget", json.dumps(plan)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._stderr: list[str] = []
        #: What the process printed (known once :meth:`report` returned).
        self.stdout = ""
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    @property
    def ids(self) -> set[str]:
        """The ids of the generations this client waits for."""
        return {generation["id"] for generation in self.waits}

    def ready(self) -> None:
        """Block until the process has imported everything and read its connection."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == READY:
                return
        raise RuntimeError(f"The budget client did not start: {self.output[-3000:]}")

    def go(self) -> None:
        """Start the waits and fetches."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def report(self, timeout: float = 180) -> dict[str, Any]:
        """What the process did: ``events`` (statuses), ``fetched``, ``warnings`` of the budget, ``errors``."""
        out, _ = self.process.communicate(timeout=timeout)
        self._drain.join(5)
        self.stdout = out
        lines = [line for line in out.splitlines() if line.startswith(REPORT)]
        if self.process.returncode != 0 or not lines:
            raise RuntimeError(f"The budget client failed ({self.process.returncode}): {self.output[-3000:]}")
        return json.loads(lines[-1][len(REPORT) :])

    @property
    def output(self) -> str:
        """What the process logged and printed (stderr, then stdout once it ended)."""
        return "".join(self._stderr) + self.stdout

    def kill(self) -> None:
        """End the process if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


Plan = tuple[Mapping[str, str], list[dict], list[dict]]  # env, waits, fetches


def start_clients(plans: list[Plan]) -> list[BudgetClient]:
    """Start a client per ``(env, waits, fetches)``; return them once all are ready (then ``go`` them together)."""
    clients = [BudgetClient(env, waits, fetches) for env, waits, fetches in plans]
    try:
        for client in clients:
            client.ready()
    except BaseException:
        for client in clients:
            client.kill()
        raise
    return clients


@contextlib.contextmanager
def running_clients(plans: list[Plan]) -> Iterator[list[BudgetClient]]:
    """
    A client per plan, told to go together once all are ready; ended on the way out, and what they
    logged and printed scanned for the API key (call each one's :meth:`~BudgetClient.report` inside).
    """
    clients = start_clients(plans)
    try:
        for client in clients:
            client.go()
        yield clients
    finally:
        for client in clients:
            client.kill()
    leaks = find_leaks({f"client {index}": client.output for index, client in enumerate(clients)})
    assert not leaks, leaks


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _main(plan: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_luma.hooks.luma import LumaHook
    from airflow_provider_luma.triggers.luma import LumaGenerationTrigger

    recorder = _Recorder()
    logging.getLogger("airflow_provider_luma.hooks.shared_budget").addHandler(recorder)
    _ = LumaHook().settings  # the connection read before "ready": the runs start together
    print(READY, flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")
    errors: list[str] = []
    fetched: list[str] = []

    def fetch() -> None:
        hook = LumaHook()  # a worker task's hook, in a thread of its own
        for generation in plan["fetches"]:
            try:
                fetched.append(hook.get_generation(generation).state)
            except Exception as error:
                errors.append(f"fetch: {type(error).__name__}: {error}")

    async def wait(generation: dict) -> str:
        trigger = LumaGenerationTrigger([generation], deadline=time.time() + plan["timeout"])
        async for event in trigger.run():
            return event.payload["status"]
        return "no event"

    async def waits() -> list[str]:
        return await asyncio.gather(*(wait(generation) for generation in plan["waits"]))

    thread = threading.Thread(target=fetch)
    thread.start()
    events = asyncio.run(waits())
    thread.join()
    return {"events": events, "fetched": fetched, "warnings": recorder.messages, "errors": errors}


if __name__ == "__main__":
    print(REPORT + json.dumps(_main(json.loads(sys.argv[1]))), flush=True)
