"""
10,000 concurrent Luma waits in one process, real 30 s holds (issue 23, item 3).

    python -m benchmarks.many_waits                  # N = 10,000, about 4 minutes
    python -m benchmarks.many_waits --waits 2000 --servers 2

The package's simulator keeps its generations in one process, which cannot serve 10,000 held polls
and their 333 re-polls per second without becoming what is measured. This part uses a server for the
benchmark only, with no state: a generation id says when it completes (``mw-<done_ms>-<i>``), so
``--servers`` processes share one port (``SO_REUSEPORT``) and any of them answers any poll, held
until the generation completes or 30 s pass, as the service does. The servers run on the second
core, the waits (``LumaGenerationTrigger`` in one event loop, :mod:`benchmarks.client`) on the first.

Waits start spread over one hold and their generations complete 90-150 s after creation, so after
the first hold every second brings N / 30 re-polls: the steady state, whose CPU (as a share of one
core, from the client's own CPU series without its sampling thread) is measured over the window
``--steady`` (seconds after the start). Reported: that share, RSS per wait, the wake-up percentiles
(end of the wait minus the generation's completion), the garbage collector's full collections and its
longest pause, and the servers' own lateness and CPU. ``bash scripts/bench`` runs it as one of its parts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import API_KEY, GENERATION_PATH, REAL_HOLD, ROOT, percentile, pin

ID_PREFIX = "mw-"


def done_at(generation_id: str) -> float:
    """When the generation named ``generation_id`` completes (UNIX time)."""
    return int(generation_id.split("-")[1]) / 1000


# -- the server -----------------------------------------------------------------------------------


def serve(port: int, hold: float, stats_path: str) -> None:
    """One server process on ``port`` (shared with the others); writes its lateness figures on SIGTERM."""
    from aiohttp import web

    lateness: list[float] = []
    calls = [0]

    async def generation(request: web.Request) -> web.Response:
        calls[0] += 1
        generation_id = request.query.get("generation_id", "")
        if not generation_id.startswith(ID_PREFIX):
            return web.json_response({"detail": "unknown generation"}, status=404)
        done = done_at(generation_id)
        now = time.time()
        if request.query.get("state") and now < done:
            await asyncio.sleep(min(done - now, hold))
        now = time.time()
        completed = now >= done
        if completed and request.query.get("state"):
            lateness.append(now - done)
        body = {
            "id": generation_id,
            "generation_type": "video",
            "state": "completed" if completed else "dreaming",
            "created_at": "2026-12-02T00:00:00.000Z",
            "assets": {"video": f"http://127.0.0.1:{port}/videos/{generation_id}.mp4"} if completed else None,
        }
        return web.json_response(body)

    def write_stats(*_: Any) -> None:
        Path(stats_path).write_text(json.dumps({"calls": calls[0], "lateness": lateness}))
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, write_stats)
    app = web.Application()
    app.router.add_get(GENERATION_PATH, generation)

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=4096).start()
        await asyncio.Event().wait()  # until SIGTERM

    asyncio.run(run())


# -- the run --------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure_many_waits(
    waits: int = 10_000,
    servers: int = 2,
    steady: tuple[float, float] = (40.0, 100.0),
    completes_after: tuple[float, float] = (90.0, 150.0),
    stagger: float = REAL_HOLD,
) -> dict:
    """
    Run the waits against ``servers`` server processes; the figures as a dict (see the module's text).

    :param waits: Concurrent waits in the one process.
    :param servers: Server processes behind the one port.
    :param steady: The window (seconds after the start) whose CPU share is the steady state's.
    :param completes_after: ``(first, last)``: the generations complete evenly between ``first`` and
        ``last`` seconds after creation.
    :param stagger: The waits start evenly over this many seconds.
    """
    port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="luma-many-"))
    procs = []
    for index in range(servers):
        stats = tmp / f"server-{index}.json"
        command = [sys.executable, "-m", "benchmarks.many_waits", "serve", str(port), str(REAL_HOLD), str(stats)]
        procs.append((subprocess.Popen(command, cwd=ROOT), stats))
        pin(procs[-1][0].pid, 1)
    base_url = f"http://127.0.0.1:{port}"
    _wait_for_port(port)
    extras = {"min_poll_interval": 5.0, "long_poll_hold": REAL_HOLD, "timeout": REAL_HOLD + 30}
    conn = {"conn_type": "luma", "host": base_url, "password": API_KEY, "extra": extras}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env |= {
        "AIRFLOW_CONN_LUMA_DEFAULT": json.dumps(conn),
        "AIRFLOW_HOME": str(tmp / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    }
    config = {
        "mode": "trigger",
        "interval": 0.0,
        "warmup_id": f"{ID_PREFIX}{int(time.time() * 1000)}-warm",
        "base_url": base_url,
        "api_key": API_KEY,
        "deadline_seconds": 400.0,
        "stagger_seconds": stagger,
        "cpu_series": True,
    }
    server_cpu_before = sum(_cpu(p) for p, _ in procs)
    client = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.client", json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    pin(client.pid, 0)
    try:
        ready = _read_tagged(client, "READY")
        now = time.time()
        # By default 90-150 s after creation: two to five holds each, none in the steady window's first part.
        first, last = completes_after
        ids = [f"{ID_PREFIX}{int((now + first + (last - first) * i / waits) * 1000)}-{i}" for i in range(waits)]
        plan = tmp / "plan.json"
        plan.write_text(json.dumps({"ids": ids, "done_at": [done_at(i) for i in ids]}))
        assert client.stdin is not None
        client.stdin.write(f"{plan}\n")
        client.stdin.flush()
        result = _read_tagged(client, "RESULT")
        client.wait(60)
    finally:
        if client.poll() is None:
            client.kill()
        server_cpu = sum(_cpu(p) for p, _ in procs) - server_cpu_before
        for process, _ in procs:
            process.send_signal(signal.SIGTERM)
        for process, _ in procs:
            process.wait(30)
    lateness = [x for _, stats in procs if stats.exists() for x in json.loads(stats.read_text())["lateness"]]
    server_calls = sum(json.loads(stats.read_text())["calls"] for _, stats in procs if stats.exists())
    started = result["started"]
    ended = zip(result["ends"], ids, result["statuses"], strict=True)
    wakeups = [end - done_at(i) for end, i, status in ended if status == "success"]
    series = [(t - started, cpu) for t, cpu in result["cpu_series"]]
    window = [(t, cpu) for t, cpu in series if steady[0] <= t <= steady[1]]
    steady_share = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) if len(window) > 1 else float("nan")
    wall = result["finished"] - started
    return {
        "waits": waits,
        "servers": servers,
        "ok": sum(1 for s in result["statuses"] if s == "success"),
        "steady window s": list(steady),
        "steady CPU share of a core": steady_share,
        "whole-run CPU s": result["cpu_seconds"],
        "CPU ms/wait": 1000 * result["cpu_seconds"] / waits,
        "wall s": wall,
        "RSS/wait KB": (result["peak_rss"] - result["baseline_rss"]) / waits / 1024,
        "peak sockets": result["peak_sockets"] - result["baseline_sockets"],
        "wake-up p50 ms": 1000 * percentile(wakeups, 0.5),
        "wake-up p99 ms": 1000 * percentile(wakeups, 0.99),
        "wake-up max ms": 1000 * max(wakeups),
        "server lateness p99 ms": 1000 * percentile(lateness, 0.99) if lateness else float("nan"),
        "server calls": server_calls,
        "calls/wait": server_calls / waits,
        "server CPU share of a core": server_cpu / wall if wall > 0 else float("nan"),
        "GC full collections": result.get("gc_full_collections"),
        "GC full seconds": result.get("gc_full_seconds"),
        "GC longest pause ms": result.get("gc_longest_pause_ms"),
        "log levels": ready.get("log_levels", {}),
    }


def _cpu(process: subprocess.Popen[Any]) -> float:
    import psutil

    try:
        times = psutil.Process(process.pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the benchmark's server did not listen on 127.0.0.1:{port}")


def _read_tagged(process: subprocess.Popen[str], tag: str) -> dict[str, Any]:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise RuntimeError(f"the measured process exited ({process.wait()}) before {tag}")


def main() -> None:
    """``python -m benchmarks.many_waits [--waits N]``, or ``serve PORT HOLD STATS`` (a server process)."""
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waits", type=int, default=10_000)
    parser.add_argument("--servers", type=int, default=2, help="server processes behind the one port")
    args = parser.parse_args()
    print(json.dumps(measure_many_waits(args.waits, args.servers), indent=2))


if __name__ == "__main__":
    main()
