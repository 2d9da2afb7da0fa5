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
* ``poll``: a bare aiohttp poller, one shared session: a plain GET without ``state``, then
  ``sleep(interval)``, until the state is final. The cheapest interval poller one can write; not
  what Airflow's own triggers do.
* ``held-get``: the floor of any long-polling client: per wait one GET with ``state=completed`` on
  the bare shared session, held by the server, asked again only when a hold ends unfinished.
* ``http-trigger``: Airflow's ``HttpSensorTrigger`` (apache-airflow-providers-http), what a
  deferrable ``HttpSensor`` runs: a new ``ClientSession`` and a connection lookup per poll, firing on
  the first answer that is not a 404. It polls the generation's video URL on the simulator's CDN
  (``AIRFLOW_CONN_HTTP_CDN``), which answers 404 until the generation is completed. (A user could
  not know that URL in advance: it stands for "any URL that turns from 404 to 200".)

The logging level in force is reported in ``READY`` (``log_levels``): importing Airflow applies its
logging configuration (``[logging] logging_level``, INFO by default), which a ``basicConfig`` call
cannot override, so the level is measured rather than assumed.
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

    def __init__(self, cpu_series: bool = False) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.process = psutil.Process()
        #: With ``cpu_series``: (time, the process's CPU seconds without this thread's) every second.
        self.cpu_series: list[tuple[float, float]] | None = [] if cpu_series else None
        self.stop_event = threading.Event()
        self.peak_rss = self.process.memory_info().rss
        self.peak_sockets, self.peak_fds = _socket_fds()
        self.cpu_seconds = 0.0

    def run(self) -> None:
        tick = 0
        while not self.stop_event.wait(0.1):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            tick += 1
            if self.cpu_series is not None and tick % 10 == 0:
                self.cpu_series.append((time.time(), _cpu_seconds() - time.thread_time()))
            if tick % 5 == 0:
                sockets, fds = _socket_fds()
                self.peak_sockets = max(self.peak_sockets, sockets)
                self.peak_fds = max(self.peak_fds, fds)
        self.cpu_seconds = time.thread_time()


class CollectorPauses:
    """The garbage collector's pauses while the waits run (``gc.callbacks``): how often, how long, the longest."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def summary(self) -> dict[str, Any]:
        """Counts, total seconds and the longest pause of full (generation 2) and of all collections."""
        full = [seconds for generation, seconds in self.pauses if generation == 2]
        every = [seconds for _, seconds in self.pauses]
        return {
            "gc_collections": len(every),
            "gc_seconds": sum(every),
            "gc_full_collections": len(full),
            "gc_full_seconds": sum(full),
            "gc_longest_pause_ms": 1000 * max(every, default=0.0),
        }


def _cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


async def _trigger_wait(trigger: Any, index: int, ends: list[float], statuses: list[str], delay: float) -> None:
    if delay:
        await asyncio.sleep(delay)
    async for event in trigger.run():
        ends[index] = time.time()
        payload = event.payload
        # HttpSensorTrigger's event is a bare True.
        statuses[index] = payload.get("status", "?") if isinstance(payload, dict) else ("success" if payload else "?")


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
    held: bool = False,
) -> None:
    if delay:
        await asyncio.sleep(delay)
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
    params = {"generation_id": generation_id, **({"state": "completed"} if held else {})}
    while True:
        try:
            async with session.get(url, params=params, headers=headers, timeout=timeout) as response:
                body = await response.json() if response.status == 200 else {}
            state = body.get("state")
            if state in FINAL_STATES:
                ends[index] = time.time()
                statuses[index] = "success" if state == "completed" else "failed"
                return
        except (TimeoutError, aiohttp.ClientError, ValueError):
            errors[0] += 1
        await asyncio.sleep(interval)


def _make_triggers(ids: list[str], deadline: float, config: dict[str, Any]) -> list[Any]:
    if config["mode"] == "http-trigger":
        from airflow.providers.http.triggers.http import HttpSensorTrigger

        interval = float(config["interval"])
        return [HttpSensorTrigger(f"videos/{i}.mp4", http_conn_id="http_cdn", poke_interval=interval) for i in ids]
    from airflow_provider_luma.triggers.luma import LumaGenerationTrigger

    return [LumaGenerationTrigger([generation_id], "completed", deadline=deadline) for generation_id in ids]


def log_levels() -> dict[str, str]:
    """The logging levels in force for the loggers a wait writes to (after Airflow configured logging)."""
    from airflow_provider_luma.triggers.luma import LumaGenerationTrigger

    names = {
        "root": logging.getLogger(),
        "airflow_provider_luma.waiting": logging.getLogger("airflow_provider_luma.waiting"),
        "trigger.log": LumaGenerationTrigger(["x"]).log,
    }
    out = {}
    for name, logger in names.items():
        level = logger.getEffectiveLevel() if hasattr(logger, "getEffectiveLevel") else None
        out[name] = logging.getLevelName(level) if level is not None else type(logger).__name__
    return out


async def _run_waits(config: dict[str, Any], ids: list[str], ends: list[float], statuses: list[str]) -> dict:
    """Run the waits for ``ids``; return mode-specific extras."""
    deadline = time.time() + float(config["deadline_seconds"])
    stagger = float(config.get("stagger_seconds", 0.0)) / max(1, len(ids))
    if config["mode"] in ("trigger", "http-trigger"):
        triggers = _make_triggers(ids, deadline, config)
        tasks = [asyncio.create_task(_trigger_wait(t, i, ends, statuses, i * stagger)) for i, t in enumerate(triggers)]
        await asyncio.gather(*tasks)
        return {}
    errors = [0]
    url = config["base_url"] + GENERATION_PATH
    headers = {"Authorization": f"Bearer {config['api_key']}", "Accept": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [
            asyncio.create_task(
                _poll_wait(
                    session,
                    url,
                    headers,
                    g,
                    float(config["interval"]),
                    i,
                    ends,
                    statuses,
                    errors,
                    i * stagger,
                    held=config["mode"] == "held-get",
                )
            )
            for i, g in enumerate(ids)
        ]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=float(config["deadline_seconds"]))
    return {"client_errors": errors[0]}


async def _main(config: dict[str, Any]) -> None:
    # Asks for WARNING; Airflow's logging configuration, applied on import, may win: log_levels() says.
    logging.basicConfig(level=logging.WARNING)
    warm_ends, warm_statuses = [0.0], [""]
    await _run_waits(config, [config["warmup_id"]], warm_ends, warm_statuses)
    if warm_statuses[0] != "success":
        raise SystemExit(f"warm-up wait ended {warm_statuses[0]!r}")
    levels = log_levels()  # imports Airflow in every mode, before the baseline is taken
    gc.collect()
    process = psutil.Process()
    baseline_rss = process.memory_info().rss
    baseline_sockets, baseline_fds = _socket_fds()
    ready = {"baseline_rss": baseline_rss, "baseline_sockets": baseline_sockets, "log_levels": levels}
    print("READY " + json.dumps(ready), flush=True)

    path = (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()
    plan = json.loads(Path(path).read_text(encoding="utf-8"))  # noqa: ASYNC240 - before the clock starts
    ids: list[str] = plan["ids"]
    ends = [0.0] * len(ids)
    statuses = [""] * len(ids)

    sampler = Sampler(cpu_series=bool(config.get("cpu_series")))
    pauses = CollectorPauses()
    gc.callbacks.append(pauses)
    sampler.start()
    cpu_start = _cpu_seconds()
    started = time.time()
    try:
        extras = await _run_waits(config, ids, ends, statuses)
    finally:
        gc.callbacks.remove(pauses)
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
        **({"cpu_series": sampler.cpu_series} if sampler.cpu_series is not None else {}),
        **pauses.summary(),
        **extras,
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    """Entry point: ``python -m benchmarks.client '<config json>'``."""
    asyncio.run(_main(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
