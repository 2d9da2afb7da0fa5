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
import queue
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
    A client process: it reads its Luma connections from ``env``, says it is ready, and on each
    :meth:`go` waits for ``waits`` (generation dicts) as triggers on an event loop of its own while a
    thread of its own fetches each of ``fetches`` once, synchronously, through the connection named;
    then it reports the round (:meth:`report`). :meth:`kill` ends it.

    :param env: ``AIRFLOW_CONN_...`` variables (the Luma connections, the Redis one).
    :param waits: Generations to wait for, one trigger each.
    :param fetches: Generations to fetch from the thread.
    :param timeout: Seconds each wait may take.
    :param conn_ids: The Luma connections its rounds may use (read before it says it is ready).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        waits: list[dict],
        fetches: Sequence[dict] = (),
        timeout: float = 120,
        conn_ids: Sequence[str] = ("luma_default",),
    ) -> None:
        self.waits = waits
        plan = {"waits": waits, "fetches": list(fetches), "timeout": timeout, "conn_ids": list(conn_ids)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.budget", json.dumps(plan)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._news: queue.Queue[str | None] = queue.Queue()
        # Read all along: a process whose pipe is full would stop while the test sleeps.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)
            self._news.put(line)
        self._news.put(None)

    @property
    def ids(self) -> set[str]:
        """The ids of the generations this client waits for."""
        return {generation["id"] for generation in self.waits}

    def _read_until(self, marker: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while (line := self._news.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            if line.startswith(marker):
                return line
        raise RuntimeError(f"The budget client ended ({self.process.wait(10)}): {self.output[-3000:]}")

    def ready(self) -> None:
        """Block until the process has imported everything and read its connections."""
        self._read_until(READY)

    def go(self, conn_id: str = "luma_default") -> None:
        """Start a round of the waits and fetches through ``conn_id``."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"go {conn_id}\n")
        self.process.stdin.flush()

    def report(self) -> dict[str, Any]:
        """The round's ``events`` (statuses), ``fetched`` (states), the budget's ``warnings`` so far, ``errors``."""
        return json.loads(self._read_until(REPORT)[len(REPORT) :])

    @property
    def output(self) -> str:
        """What the process logged and printed so far."""
        return "".join(self._lines)

    def kill(self) -> None:
        """End the process if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


Plan = tuple[Mapping[str, str], list[dict], list[dict]]  # env, waits, fetches


def start_clients(plans: list[Plan], conn_ids: Sequence[str] = ("luma_default",)) -> list[BudgetClient]:
    """Start a client per ``(env, waits, fetches)``; return them once all are ready (then ``go`` them together)."""
    clients = [BudgetClient(env, waits, fetches, conn_ids=conn_ids) for env, waits, fetches in plans]
    try:
        for client in clients:
            client.ready()
    except BaseException:
        for client in clients:
            client.kill()
        raise
    return clients


@contextlib.contextmanager
def running_clients(plans: list[Plan], conn_ids: Sequence[str] = ("luma_default",)) -> Iterator[list[BudgetClient]]:
    """
    A client per plan, ready (a round is started with each one's :meth:`~BudgetClient.go`); ended on
    the way out, and what they logged and printed scanned for the API key.
    """
    clients = start_clients(plans, conn_ids)
    try:
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


def _main(plan: dict[str, Any]) -> None:
    from airflow_provider_luma.hooks.budget import forget_budgets
    from airflow_provider_luma.hooks.luma import LumaHook
    from airflow_provider_luma.triggers.luma import LumaGenerationTrigger

    recorder = _Recorder()
    logging.getLogger("airflow_provider_luma.hooks.shared_budget").addHandler(recorder)
    for conn_id in plan["conn_ids"]:  # read before "ready": the rounds start together
        _ = LumaHook(luma_conn_id=conn_id).settings
    print(READY, flush=True)
    for line in sys.stdin:
        conn_id = line.split()[1]
        # A process keeps one budget per URL and key, set by the first connection it reads: each
        # round starts afresh, as a process of its own would.
        forget_budgets()
        errors: list[str] = []
        fetched: list[str] = []

        def fetch(conn_id: str = conn_id, fetched: list[str] = fetched, errors: list[str] = errors) -> None:
            hook = LumaHook(luma_conn_id=conn_id)  # a worker task's hook, in a thread of its own
            for generation in plan["fetches"]:
                try:
                    fetched.append(hook.get_generation(generation).state)
                except Exception as error:
                    errors.append(f"fetch: {type(error).__name__}: {error}")

        async def wait(generation: dict, conn_id: str = conn_id) -> str:
            trigger = LumaGenerationTrigger([generation], luma_conn_id=conn_id, deadline=time.time() + plan["timeout"])
            async for event in trigger.run():
                return event.payload["status"]
            return "no event"

        async def waits() -> list[str]:
            return await asyncio.gather(*(wait(generation) for generation in plan["waits"]))

        thread = threading.Thread(target=fetch)
        thread.start()
        events = asyncio.run(waits())
        thread.join()
        report = {"events": events, "fetched": fetched, "warnings": recorder.messages, "errors": errors}
        print(REPORT + json.dumps(report), flush=True)


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
