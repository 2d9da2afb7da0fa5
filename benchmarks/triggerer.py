"""
Waits in a real Airflow triggerer, without time compression (issue 12 item 3).

One deployment (``tests/support/deployment.py``: scheduler, triggerer, DAG processor, API server;
LocalExecutor on SQLite) and one simulator process (30 s long-poll hold, real time). Variants run
one after the other, each a DAG run of N ``sensor_i >> after_i`` pairs, each sensor waiting for its
own generation (created by the benchmark just before the run, completing evenly spread over
``lengths`` seconds after creation):

* ``luma long-poll``: ``LumaGenerationSensor`` (deferrable) on ``luma-ai`` generations (30 s holds);
* ``luma universal``: the same on universal (``luma/ray-2``) generations, polled every 10 s (the
  connection's default ``poll_interval``);
* ``HttpSensor 5s`` / ``HttpSensor 60s``: ``HttpSensor(deferrable=True)`` (``HttpSensorTrigger``)
  on the generation's video URL on the simulator's CDN, which answers 404 until the generation is
  completed: a stand-in for "a URL that turns from 404 to 200" (a user could not know the video URL
  in advance; ``HttpSensorTrigger`` never runs a ``response_check``).

Per wait: API calls (the simulator's request log, the sensor's first check from the worker
included), triggerer CPU and RSS (psutil on the triggerer's process tree, minus its idle rate
measured before the first variant), worker-slot seconds (``queued`` + ``running`` seconds of each
sensor, sampled from the metadata DB every 0.1 s: the DB keeps no per-deferral durations), wake-up
latency (the simulator's answer that ended the wait − the generation's completion) and end-to-end
latency (``after_i``'s ``start_date`` − the generation's completion). In the same run, a control DAG
run of sensors on generations already completed gives the scheduler's own latency
(``after_i.start_date`` − ``sensor_i.queued_dttm``: a worker start, one check, and the downstream
scheduling; the deferred path adds the trigger's wake-up and re-queueing the task).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import (
    REAL_HOLD,
    SimulatorProcess,
    import_harness,
    parse_time,
    percentile,
    table,
    wait_key,
    window_peak,
)
from benchmarks.deployment import StateClock
from benchmarks.spy import Spy
from benchmarks.spy import binary as spy_binary
from benchmarks.spy import markdown as spy_markdown

CONTROL_DAG = "bench_trig_control"
CONTROL_N = 5

DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

KIND = {kind!r}


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     max_active_tasks=10000)
def bench_dag():
    for i in range({n}):
        ident = "{{{{ dag_run.conf['ids'][%d] }}}}" % i
        if KIND == "http":
            from airflow.providers.http.sensors.http import HttpSensor

            sensor = HttpSensor(task_id=f"wait_{{i}}", http_conn_id="http_cdn", endpoint="videos/" + ident + ".mp4",
                                poke_interval={interval}, timeout=1800, deferrable=True)
        else:
            from airflow_provider_luma.sensors.luma import LumaGenerationSensor

            sensor = LumaGenerationSensor(task_id=f"wait_{{i}}", generation_id=ident, timeout=1800)

        @task(task_id=f"after_{{i}}")
        def after() -> None:
            return None

        sensor >> after()


bench_dag()
"""


@dataclass(frozen=True)
class Variant:
    name: str
    dag_id: str
    kind: str  # "luma" or "http"
    universal: bool = False
    interval: float = 0.0


VARIANTS = (
    Variant("luma long-poll", "bench_trig_luma", "luma"),
    Variant("luma universal", "bench_trig_universal", "luma", universal=True),
    Variant("HttpSensor 5s", "bench_trig_http5", "http", interval=5.0),
    Variant("HttpSensor 60s", "bench_trig_http60", "http", interval=60.0),
)
QUICK_VARIANTS = ("luma long-poll", "HttpSensor 5s")


def _utc(text: Any) -> float | None:
    """A UNIX time from the metadata DB's datetime text (UTC)."""
    if not text:
        return None
    value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


class TreeSampler(threading.Thread):
    """CPU seconds and RSS of a process and its descendants (the triggerer and its trigger runner)."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        super().__init__(name="tree-sampler", daemon=True)
        self.root = psutil.Process(pid)
        self.period = period
        self.stop_event = threading.Event()
        self.peak_rss = 0
        self._lock = threading.Lock()

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu(self) -> float:
        total = 0.0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        total = 0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def reset_peak(self) -> int:
        with self._lock:
            self.peak_rss = self.rss()
            return self.peak_rss

    def run(self) -> None:
        while not self.stop_event.wait(self.period):
            rss = self.rss()
            with self._lock:
                self.peak_rss = max(self.peak_rss, rss)


def _dag_source(variant: Variant, n: int) -> str:
    return DAG_SOURCE.format(kind=variant.kind, dag_id=variant.dag_id, n=n, interval=variant.interval)


def _create(sim: SimulatorProcess, token: str, lengths: list[float], universal: bool) -> tuple[list[str], list[float]]:
    """Create one generation per length (completing that many seconds after creation); ids and completion times."""
    ids, done = [], []
    for j, length in enumerate(lengths):
        sim.script(f"[{token}-{j}]", length)
    for j, length in enumerate(lengths):
        before = time.time()
        answer = sim.create(f"bench [{token}-{j}]", universal=universal)
        after = time.time()
        ids.append(answer["id"])
        # luma-ai answers say when they were created; the universal create does not (midpoint of the call).
        created = parse_time(answer["created_at"]) if answer.get("created_at") else (before + after) / 2
        done.append(created + length)
    return ids, done


def _latencies(dep: Any, dag_id: str, run_id: str, n: int) -> dict[int, dict[str, float | None]]:
    rows = dep.query(
        "SELECT task_id, state, start_date, end_date, queued_dttm FROM task_instance WHERE dag_id = ? AND run_id = ?",
        (dag_id, run_id),
    )
    by_task = {task_id: (state, _utc(s), _utc(e), _utc(q)) for task_id, state, s, e, q in rows}
    out = {}
    for i in range(n):
        wait, after = by_task.get(f"wait_{i}"), by_task.get(f"after_{i}")
        out[i] = {
            "wait_state": wait[0] if wait else None,
            "wait_queued": wait[3] if wait else None,
            "after_start": after[1] if after else None,
            "after_state": after[0] if after else None,
        }
    return out


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99), "max": max(values)}


def measure_real_triggerer(args: Any) -> dict[str, Any]:
    """Run every variant in one deployment; return rows, per-wait raw figures and a Markdown table."""
    harness = import_harness()
    n = int(args.triggerer_n)
    quick = bool(args.quick)
    lengths_range = (45.0, 60.0) if quick else (60.0, 180.0)
    variants = [v for v in VARIANTS if not quick or v.name in QUICK_VARIANTS]
    sim = SimulatorProcess(REAL_HOLD, cpu=None)
    extras: dict[str, Any] = {}
    if getattr(args, "max_calls_per_second", None) is not None:
        extras["max_calls_per_second"] = args.max_calls_per_second
    if getattr(args, "max_call_burst", None) is not None:
        extras["max_call_burst"] = args.max_call_burst
    env = {
        "AIRFLOW_CONN_LUMA_DEFAULT": sim.connection(**extras),
        "AIRFLOW_CONN_HTTP_CDN": sim.cdn_connection(),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "10000",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(harness.free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(harness.free_port()),
    }
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {"variants": {}}
    profiles: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        with harness.deployment(extra_env=env) as dep:
            for variant in variants:
                dep.add_dag(_dag_source(variant, n), f"{variant.dag_id}.py", timeout=120)
            dep.add_dag(_dag_source(Variant("control", CONTROL_DAG, "luma"), CONTROL_N), f"{CONTROL_DAG}.py")
            sampler = TreeSampler(dep.components["triggerer"].process.pid)
            sampler.start()
            # The triggerer's idle CPU rate (heartbeats, DB polling), subtracted from each variant.
            idle_seconds = 10.0 if quick else 30.0
            cpu0, t0 = sampler.cpu(), time.monotonic()
            time.sleep(idle_seconds)
            idle_rate = (sampler.cpu() - cpu0) / (time.monotonic() - t0)
            raw["idle_cpu_per_s"] = idle_rate
            spies = Path(tempfile.mkdtemp(prefix="luma-spy-"))
            for k, variant in enumerate(variants):
                # Every variant under the same sampler (when py-spy is installed), so that their rows compare.
                with Spy(dep.components["triggerer"].process.pid, spies / f"{variant.dag_id}.txt") as spy:
                    row, detail = _run_variant(dep, sim, sampler, variant, k, n, lengths_range, idle_rate)
                if (profile := spy.summary()) is not None:
                    profiles[variant.name] = profile
                rows.append(row)
                raw["variants"][variant.name] = detail
                print(" ".join(f"{key}={value}" for key, value in row.items()), flush=True)
            sampler.stop_event.set()
            raw["log_level"] = dep.env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO (Airflow default)")
    finally:
        sim.stop()
    raw["budget"] = {"extras": extras}
    raw["profiles"] = profiles
    columns = (
        "variant",
        "N",
        "ok",
        "calls/wait",
        "peak calls/s",
        "trig CPU ms/wait",
        "trig CPU ms/wait-min",
        "trig RSS KB/wait",
        "slot s/wait",
        "wake p50 s",
        "wake p99 s",
        "e2e p50 s",
        "e2e p99 s",
        "sched p50 s",
        "sched p99 s",
        "wall s",
    )
    markdown = (
        f"N = {n} waits per variant, generations completing evenly over {lengths_range[0]:g}–{lengths_range[1]:g} s "
        f"after creation, real 30 s holds; triggerer idle CPU {idle_rate * 1000:.1f} ms/s subtracted; "
        f"logging level in the deployment: {raw.get('log_level')}. Took {time.monotonic() - started:.0f} s.\n\n"
        + table(rows, columns)
    )
    if profiles:
        markdown += (
            "\n\nWhere the triggerer's CPU went: py-spy samples of the triggerer's process tree (its trigger runner "
            "included) while each variant ran, by the file of the innermost frame (`benchmarks/spy.py`):\n\n"
            + spy_markdown(profiles)
        )
    elif spy_binary() is None:
        markdown += "\n\nNo profile: py-spy is not installed (`pip install py-spy` adds one)."
    else:
        markdown += "\n\nNo profile: py-spy is installed but recorded no samples (may it attach? ptrace)."
    return {"n": n, "lengths": lengths_range, "rows": rows, "raw": raw, "markdown": markdown}


def _run_variant(
    dep: Any,
    sim: SimulatorProcess,
    sampler: TreeSampler,
    variant: Variant,
    k: int,
    n: int,
    lengths_range: tuple[float, float],
    idle_rate: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    lo, hi = lengths_range
    lengths = [lo + (hi - lo) * i / max(1, n - 1) for i in range(n)]
    phase_start = time.time()
    rss0 = sampler.reset_peak()
    cpu0, mono0 = sampler.cpu(), time.monotonic()
    clock = StateClock(dep, dag_id=variant.dag_id)
    clock.start()
    ids, done_at = _create(sim, f"v{k}", lengths, variant.universal)
    keys = [i.partition(":")[0] for i in ids]
    conf_ids = keys if variant.kind == "http" else ids
    run_id = dep.trigger(variant.dag_id, conf={"ids": conf_ids})
    # The control run (sensors on generations already completed) starts when completions start.
    control_ids, _ = _create(sim, f"c{k}", [0.0] * CONTROL_N, False)
    time.sleep(max(0.0, min(done_at) - time.time()))
    control_run = dep.trigger(CONTROL_DAG, conf={"ids": control_ids})
    timeout = hi + variant.interval + 900
    state = dep.wait_for_run(variant.dag_id, run_id, timeout=timeout)
    dep.wait_for_run(CONTROL_DAG, control_run, timeout=300)
    wall = time.monotonic() - mono0
    cpu = sampler.cpu() - cpu0
    peak_rss = sampler.peak_rss
    clock.stop_event.set()
    clock.join()

    log = [e for e in sim.requests_log() if e["time"] >= phase_start - 1]
    wanted = {key: i for i, key in enumerate(keys)}
    calls: dict[int, list[dict[str, Any]]] = {i: [] for i in range(n)}
    for entry in log:
        key = wait_key(entry)
        if key is not None and key.partition(":")[0] in wanted:
            calls[wanted[key.partition(":")[0]]].append(entry)
    wake, per_wait = [], []
    for i in range(n):
        ok_answers = [e for e in calls[i] if e["status"] == 200 and e["time"] + e["elapsed"] >= done_at[i] - 0.05]
        ended = min((e["time"] + e["elapsed"] for e in ok_answers), default=None)
        if ended is not None:
            wake.append(max(0.0, ended - done_at[i]))
        per_wait.append(
            {
                "id": ids[i],
                "done_at": done_at[i],
                "calls": sorted(e["time"] for e in calls[i]),
                "first_call": min((e["time"] for e in calls[i]), default=None),
                "ended": ended,
            }
        )
    times = _latencies(dep, variant.dag_id, run_id, n)
    e2e = [
        times[i]["after_start"] - done_at[i]
        for i in range(n)
        if times[i]["after_start"] is not None and times[i]["after_state"] == "success"
    ]
    control = _latencies(dep, CONTROL_DAG, control_run, CONTROL_N)
    sched = [
        c["after_start"] - c["wait_queued"]
        for c in control.values()
        if c["after_start"] is not None and c["wait_queued"] is not None
    ]
    slot = [
        clock.seconds.get((run_id, f"wait_{i}"), {}).get("queued", 0.0)
        + clock.seconds.get((run_id, f"wait_{i}"), {}).get("running", 0.0)
        for i in range(n)
    ]
    deferred_minutes = sum(clock.seconds.get((run_id, f"wait_{i}"), {}).get("deferred", 0.0) for i in range(n)) / 60
    net_cpu = max(0.0, cpu - idle_rate * wall)
    ok = sum(1 for i in range(n) if times[i]["wait_state"] == "success" and times[i]["after_state"] == "success")
    all_calls = [t for w in per_wait for t in w["calls"]]
    w, e, s = _stats(wake), _stats(e2e), _stats(sched)
    row = {
        "variant": variant.name,
        "N": n,
        "ok": f"{ok}/{n}" + ("" if state == "success" else f" (run {state})"),
        "calls/wait": sum(len(c) for c in calls.values()) / n,
        "peak calls/s": window_peak(all_calls),
        "trig CPU ms/wait": net_cpu / n * 1000,
        "trig CPU ms/wait-min": net_cpu / deferred_minutes * 1000 if deferred_minutes else float("nan"),
        "trig RSS KB/wait": max(0, peak_rss - rss0) / n / 1024,
        "slot s/wait": statistics.fmean(slot),
        "wake p50 s": w["p50"],
        "wake p99 s": w["p99"],
        "e2e p50 s": e["p50"],
        "e2e p99 s": e["p99"],
        "sched p50 s": s["p50"],
        "sched p99 s": s["p99"],
        "wall s": wall,
    }
    detail = {
        "universal": variant.universal,
        "kind": variant.kind,
        "interval": variant.interval,
        "waits": per_wait,
        "wake": wake,
        "e2e": e2e,
        "sched": sched,
        "cpu_seconds": cpu,
        "net_cpu_seconds": net_cpu,
        "deferred_minutes": deferred_minutes,
    }
    return row, detail
