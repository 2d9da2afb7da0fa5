"""What every part of the benchmark shares: constants, the simulator process, tables, statistics.

Nothing here imports another ``benchmarks`` module, so ``run``, ``deployment``, ``triggerer``,
``ha``, ``model`` and ``report`` all import from here and never from each other's entry points.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import urllib.request
from pathlib import Path
from typing import Any

from airflow_provider_luma.testing.process import SimulatorProcess as _SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
GENERATION_PATH = "/v2/generate/video/luma-ai/generation"
UNIVERSAL_PATH = "/v2/video/generations"
REAL_HOLD = 30.0  # the service's long-poll hold, seconds
BASELINE_INTERVALS = (5.0, 60.0)  # real-time seconds of the interval pollers compared against
RESULTS_DIR = ROOT / "benchmarks" / "results"
#: The budget target of issue 12: 1,000 waits on the universal endpoint, 20 calls/s and a burst of 20.
BUDGET_TARGET = {"n": 1000, "max_calls_per_second": 20.0, "max_call_burst": 20}
BUDGET_VARIANT = f"universal, budget {BUDGET_TARGET['max_calls_per_second']:g}/s + {BUDGET_TARGET['max_call_burst']}"

COLUMNS = (
    "N",
    "factor",
    "T s",
    "variant",
    "wall s",
    "RSS/wait KB",
    "peak RSS MB",
    "CPU ms/wait-min",
    "CPU ms/wait",
    "peak sockets",
    "calls/wait",
    "peak calls/s",
    "floor",
    "p50 ms",
    "p99 ms",
    "max ms",
    "sim p99 ms",
    "1st call p99 s",
    "ok",
)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def pin(pid: int, cpu: int) -> None:
    """Pin a process to one CPU when the machine has several (the simulator and the waits never share one)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(pid, {cpus[cpu % len(cpus)]})


class SimulatorProcess(_SimulatorProcess):
    """The simulator CLI in its own process (optionally pinned to one CPU), with its control API at hand."""

    def __init__(self, hold: float, *, cpu: int | None = 1, args: tuple[str, ...] = ()) -> None:
        super().__init__(["--hold", str(hold), *args], api_key=API_KEY)
        if cpu is not None:
            pin(self.pid, cpu)
        health = self.control("GET", "/_sim/health")
        #: The video origin (``<cdn>/videos/<uuid>.mp4``: 404 until the generation is completed).
        self.cdn_url: str = health["cdn_url"]

    def control(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
        """Call the simulator's control API (``/_sim/...``) or any JSON route; return the decoded answer."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def script(self, token: str, seconds: float, queued: float = 0.0) -> None:
        """Generations whose prompt contains ``token`` complete ``queued + seconds`` after creation."""
        self.control(
            "POST", "/_sim/script", {"prompt_contains": token, "queued_seconds": queued, "dreaming_seconds": seconds}
        )

    def create(self, prompt: str, *, universal: bool = False) -> dict[str, Any]:
        """Create one generation (``luma-ai`` or, with ``universal``, ``luma/ray-2``); return the answer."""
        if universal:
            return self.control("POST", UNIVERSAL_PATH, {"model": "luma/ray-2", "prompt": prompt})
        return self.control("POST", GENERATION_PATH, {"prompt": prompt, "aspect_ratio": "16:9"})

    def requests_log(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return self.control("GET", "/_sim/requests" + (f"?endpoint={endpoint}" if endpoint else ""))

    def generations(self) -> list[dict[str, Any]]:
        return self.control("GET", "/_sim/generations")

    def connection(self, **extras: Any) -> str:
        """``AIRFLOW_CONN_LUMA_DEFAULT`` for this simulator, with ``extras``."""
        return json.dumps({"conn_type": "luma", "host": self.base_url, "password": API_KEY, "extra": extras})

    def cdn_connection(self) -> str:
        """An ``http`` connection to the video origin, for ``HttpSensor``."""
        return json.dumps({"conn_type": "http", "host": self.cdn_url})


def parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait_key(entry: dict[str, Any]) -> str | None:
    """The generation a logged request was about: ``generation_id`` of a fetch, or the uuid of a video URL."""
    query = entry.get("query") or {}
    if "generation_id" in query:
        return query["generation_id"]
    path = entry.get("path", "")
    if path.startswith("/videos/") and path.endswith(".mp4"):
        return path[len("/videos/") : -len(".mp4")]
    return None


def window_peak(times: list[float]) -> int:
    """The most events in any sliding one-second window."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: tuple[str, ...] | list[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def spread(values: list[float]) -> str:
    """``median (min–max)`` of several runs' values; the bare value for one run."""
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt(float(values[0]))
    return f"{fmt(float(statistics.median(values)))} ({fmt(float(min(values)))}–{fmt(float(max(values)))})"


def machine() -> str:
    import resource

    import aiohttp
    import psutil

    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs (`nproc` {len(os.sched_getaffinity(0))}), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.platform()}, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, open-file limit {files}, "
        f"load average at start {load}"
    )


def import_harness() -> Any:
    """``tests.support.deployment`` (the real-deployment harness the tests use), importable from the repo root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support import deployment as harness

    return harness
