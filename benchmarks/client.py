"""
One measured "triggerer" process: N concurrent waits in ONE asyncio event loop.

Started by :mod:`benchmarks.run` (one fresh process per scenario, so RSS baselines are clean)::

    python -m benchmarks.client '{"mode": "trigger", "warmup_id": "...", ...}'

Protocol on stdin/stdout: after imports and one warm-up wait it prints ``READY <json>`` (baseline
figures); the parent then creates the generations and writes the path of a JSON file
``{"ids": [...], "done_at": [...]}`` on stdin; the process runs the waits and prints ``RESULT <json>``.

Modes:

* ``trigger``: ``LumaGenerationTrigger`` objects, each driven by ``async for event in trigger.run()``
  in its own task, as Airflow's triggerer does. The connection comes from ``AIRFLOW_CONN_LUMA_DEFAULT``.
* ``poll``: the interval polling users write today (like the http/dbt-cloud triggers): a plain GET
  without ``state``, then ``sleep(interval)``, until the state is final. One shared aiohttp session.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

FINAL_STATES = ("completed", "failed")
GENERATION_PATH = "/v2/generate/video/luma-ai/generation"


def _socket_fds() -> tuple[int, int]:
    """(open sockets, open fds) of this process, read from /proc/self/fd (what psutil matches on)."""
    sockets = fds = 0
    for entry in os.scandir("/proc/self/fd"):
        fds += 1
        try:
            if os.readlink(entry.path).startswith("socket:"):
                sockets += 1
        except OSError:
            pass
    return sockets, fds


class Sampler(threading.Thread):
    """Peak RSS (every 0.1 s) and peak open sockets (every 0.5 s); its own CPU time is reported apart."""

    def __init__(self) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.process = psutil.Process()
        self.stop_event = threading.Event()
        self.peak_rss = self.process.memory_info().rss
        self.peak_sockets, self.peak_fds = _socket_fds()
        self.cpu_seconds = 0.0

    def run(self) -> None:
        tick = 0
        while not self.stop_event.wait(0.1):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            tick += 1
            if tick % 5 == 0:
                sockets, fds = _socket_fds()
                self.peak_sockets = max(self.peak_sockets, sockets)
                self.peak_fds = max(self.peak_fds, fds)
        self.cpu_seconds = time.thread_time()


def _cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


async def _trigger_wait(trigger: Any, index: int, ends: list[float], statuses: list[str], delay: float) -> None:
    if delay:
        await asyncio.sleep(delay)
    async for event in trigger.run():
        ends[index] = time.time()
        statuses[index] = event.payload.get("status", "?")


async def _poll_wait(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    generation_id: str,
    interval: float,
    index: int,
    ends: list[float],
    statuses: list[str],
    errors: list[int],
    delay: float,
) -> None:
    if delay:
        await asyncio.sleep(delay)
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
    while True:
        try:
            async with session.get(
                url, params={"generation_id": generation_id}, headers=headers, timeout=timeout
            ) as response:
                body = await response.json() if response.status == 200 else {}
            state = body.get("state")
            if state in FINAL_STATES:
                ends[index] = time.time()
                statuses[index] = "success" if state == "completed" else "failed"
                return
        except (TimeoutError, aiohttp.ClientError, ValueError):
            errors[0] += 1
        await asyncio.sleep(interval)


def _make_triggers(ids: list[str], deadline: float) -> list[Any]:
    from airflow_provider_luma.triggers.luma import LumaGenerationTrigger

    return [LumaGenerationTrigger([generation_id], "completed", deadline=deadline) for generation_id in ids]


async def _run_waits(config: dict[str, Any], ids: list[str], ends: list[float], statuses: list[str]) -> dict:
    """Run the waits for ``ids``; return mode-specific extras."""
    deadline = time.time() + float(config["deadline_seconds"])
    stagger = float(config.get("stagger_seconds", 0.0)) / max(1, len(ids))
    if config["mode"] == "trigger":
        triggers = _make_triggers(ids, deadline)
        tasks = [asyncio.create_task(_trigger_wait(t, i, ends, statuses, i * stagger)) for i, t in enumerate(triggers)]
        await asyncio.gather(*tasks)
        return {}
    errors = [0]
    url = config["base_url"] + GENERATION_PATH
    headers = {"Authorization": f"Bearer {config['api_key']}", "Accept": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [
            asyncio.create_task(
                _poll_wait(session, url, headers, g, float(config["interval"]), i, ends, statuses, errors, i * stagger)
            )
            for i, g in enumerate(ids)
        ]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=float(config["deadline_seconds"]))
    return {"client_errors": errors[0]}


async def _main(config: dict[str, Any]) -> None:
    # The triggerer would log these lines through its own handlers; here they would only cost terminal I/O.
    logging.basicConfig(level=logging.WARNING)
    warm_ends, warm_statuses = [0.0], [""]
    await _run_waits(config, [config["warmup_id"]], warm_ends, warm_statuses)
    if warm_statuses[0] != "success":
        raise SystemExit(f"warm-up wait ended {warm_statuses[0]!r}")
    gc.collect()
    process = psutil.Process()
    baseline_rss = process.memory_info().rss
    baseline_sockets, baseline_fds = _socket_fds()
    print("READY " + json.dumps({"baseline_rss": baseline_rss, "baseline_sockets": baseline_sockets}), flush=True)

    path = (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()
    plan = json.loads(Path(path).read_text(encoding="utf-8"))  # noqa: ASYNC240 - before the clock starts
    ids: list[str] = plan["ids"]
    ends = [0.0] * len(ids)
    statuses = [""] * len(ids)

    sampler = Sampler()
    sampler.start()
    cpu_start = _cpu_seconds()
    started = time.time()
    extras = await _run_waits(config, ids, ends, statuses)
    finished = time.time()
    cpu = _cpu_seconds() - cpu_start
    sampler.stop_event.set()
    sampler.join()
    result = {
        "started": started,
        "finished": finished,
        "wall_seconds": max(ends) - started,
        "cpu_seconds": cpu - sampler.cpu_seconds,
        "sampler_cpu_seconds": sampler.cpu_seconds,
        "baseline_rss": baseline_rss,
        "peak_rss": sampler.peak_rss,
        "baseline_sockets": baseline_sockets,
        "peak_sockets": sampler.peak_sockets,
        "baseline_fds": baseline_fds,
        "peak_fds": sampler.peak_fds,
        "fd_limit": __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[0],
        "ends": ends,
        "statuses": statuses,
        **extras,
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    """Entry point: ``python -m benchmarks.client '<config json>'``."""
    asyncio.run(_main(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
