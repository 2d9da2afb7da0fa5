"""
The benchmark suite of the Luma waits, one command: ``bash scripts/bench`` (= ``python -m benchmarks.run``).

Parts (each can be skipped; each part's failure is reported without losing the others):

1. One event loop (:mod:`benchmarks.client`, a fresh measured process per scenario): N concurrent
   ``LumaGenerationTrigger`` waits (long polls; and all finishing in the same second, "burst") against
   two baselines at 5 s and 60 s: a bare aiohttp poller on one shared session, and Airflow's own
   ``HttpSensorTrigger`` (a new session and a connection lookup per poll) pointed at the video URL,
   which answers 404 until the generation completes. Time compressed by a factor; ``--runs`` times.
2. Worker-slot seconds of the sensor's modes in a real Airflow 3 (:mod:`benchmarks.deployment`).
3. A real triggerer, no time compression (:mod:`benchmarks.triggerer`): N deferred sensors vs N
   deferrable ``HttpSensor``s, API calls, triggerer CPU/RSS, slot seconds, end-to-end latency.
4. Two triggerers, one SIGKILLed mid-wait, on PostgreSQL and on SQLite (:mod:`benchmarks.ha`).
5. A virtual-time model of 100,000 waits across K triggerers (:mod:`benchmarks.model`), checked
   against part 3.

Results go to ``benchmarks/RESULTS.md`` (raw figures: ``RESULTS.json``; plots: ``benchmarks/results/``).

    python -m benchmarks.run            # everything (about 45 min on 2 cores)
    python -m benchmarks.run --quick    # a smoke run of every part (a few minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import (
    API_KEY,
    BASELINE_INTERVALS,
    BUDGET_TARGET,
    BUDGET_VARIANT,
    COLUMNS,
    GENERATION_PATH,
    REAL_HOLD,
    ROOT,
    UNIVERSAL_PATH,
    SimulatorProcess,
    fmt,
    machine,
    percentile,
    pin,
    wait_key,
    window_peak,
)
from benchmarks.common import parse_time as _parse_time

SPREAD_STEPS = 400  # distinct generation lengths of the spread case


@dataclass
class Scenario:
    n: int
    factor: float
    generation_seconds: float  # compressed T
    variant: str  # "long-poll", "long-poll burst", "bare poll 5s", "HttpSensorTrigger 5s", ...
    mode: str  # "trigger", "poll" (bare aiohttp, one shared session) or "http-trigger" (HttpSensorTrigger)
    burst: bool = False
    interval: float = 0.0  # compressed poll interval
    universal: bool = False  # universal (luma/ray-2) generations instead of luma-ai ones
    extras: dict[str, Any] = field(default_factory=dict)  # more connection extras (e.g. a call budget)
    #: Generation lengths spread evenly over this window (seconds after creation) instead of [T/2, 3T/2].
    window: tuple[float, float] | None = None
    stagger: bool = True  # waits start spread over one hold (a triggerer's steady state), or all at once

    @property
    def hold(self) -> float:
        return REAL_HOLD / self.factor


@dataclass
class Outcome:
    scenario: Scenario
    row: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace, sim: SimulatorProcess, session: aiohttp.ClientSession) -> None:
        self.args = args
        self.sim = sim
        self.session = session
        self.work = Path(tempfile.mkdtemp(prefix="luma-bench-"))
        self.extra_env: dict[str, str] = {}  # e.g. the Redis connection of the shared budget's row

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.session.post(self.sim.base_url + path, json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def _get(self, path: str) -> Any:
        async with self.session.get(self.sim.base_url + path) as response:
            response.raise_for_status()
            return await response.json()

    async def _create(self, prompt: str, universal: bool = False) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        body = {"prompt": prompt, "aspect_ratio": "16:9"}
        path = GENERATION_PATH
        if universal:  # the universal create answers no created_at: take the time of the answer
            body, path = {"prompt": prompt, "model": "luma/ray-2"}, UNIVERSAL_PATH
        for attempt in range(5):
            try:
                async with self.session.post(self.sim.base_url + path, json=body, headers=headers) as response:
                    response.raise_for_status()
                    answer = await response.json()
                    answer.setdefault("created_at", dt.datetime.now(dt.UTC).isoformat())
                    return answer
            except aiohttp.ClientError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    async def loopback_round_trip(self, count: int = 300) -> dict[str, float]:
        """The latency floor: one bare aiohttp request over loopback (keep-alive), sequential."""
        times = []
        async with aiohttp.ClientSession() as session:
            for _ in range(count):
                started = time.perf_counter()
                async with session.get(self.sim.base_url + "/_sim/health") as response:
                    await response.read()
                times.append(time.perf_counter() - started)
        return {"p50_ms": percentile(times, 0.5) * 1000, "p99_ms": percentile(times, 0.99) * 1000}

    async def _create_all(self, scenario: Scenario) -> tuple[list[str], list[float]]:
        """Create the N generations; return their ids and the wall-clock times they reach ``completed``."""
        n, t = scenario.n, scenario.generation_seconds
        semaphore = asyncio.Semaphore(200)

        async def create(prompt: str) -> dict[str, Any]:
            async with semaphore:
                return await self._create(prompt, scenario.universal)

        generations: list[tuple[dict[str, Any], float]] = []
        if not scenario.burst:
            # Completions spread evenly over [T/2, 3T/2] after creation (SPREAD_STEPS scripted durations),
            # as for generations started at random times: about N/T completions per second.
            low, high = scenario.window or (t / 2, 3 * t / 2)
            durations = [low + (high - low) * j / SPREAD_STEPS for j in range(SPREAD_STEPS)]
            for j, duration in enumerate(durations):
                await self._post(
                    "/_sim/script", {"prompt_contains": f"[s{j}]", "queued_seconds": 0, "dreaming_seconds": duration}
                )
            steps = [i * SPREAD_STEPS // n for i in range(n)]
            created = await asyncio.gather(*(create(f"bench [s{j}] {i}") for i, j in enumerate(steps)))
            generations = [(g, durations[j]) for g, j in zip(created, steps, strict=True)]
        else:
            # All complete at the same moment: batches of 250, each scripted to finish at `target`.
            target = time.time() + n / 800 + t
            batch = 250
            for k, start in enumerate(range(0, n, batch)):
                duration = max(0.0, target - time.time())
                await self._post(
                    "/_sim/script", {"prompt_contains": f"[b{k}]", "queued_seconds": 0, "dreaming_seconds": duration}
                )
                created = await asyncio.gather(
                    *(create(f"bench [b{k}] {i}") for i in range(start, min(n, start + batch)))
                )
                generations.extend((g, duration) for g in created)
        ids = [g["id"] for g, _ in generations]
        # created_at has millisecond precision: done_at may be up to 1 ms early (latency up to 1 ms high).
        done_at = [_parse_time(g["created_at"]) + duration for g, duration in generations]
        return ids, done_at

    def _client_env(self, scenario: Scenario) -> dict[str, str]:
        # long_poll_hold: the hook takes an answer much sooner than this hold for a server that ignores the
        # hold parameter, so a compressed hold must be declared.
        extras = {
            "min_poll_interval": 5.0 / scenario.factor,
            "max_backoff": 60.0 / scenario.factor,
            "long_poll_hold": scenario.hold,
        }
        extras.update(budget_extras(self.args))
        extras.update(scenario.extras)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
        env.update(
            {
                "AIRFLOW_CONN_LUMA_DEFAULT": self.sim.connection(**extras),
                "AIRFLOW_CONN_HTTP_CDN": self.sim.cdn_connection(),
                "AIRFLOW_HOME": str(self.work / "airflow-home"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
                **self.extra_env,
            }
        )
        return env

    async def run(self, scenario: Scenario) -> Outcome:
        await self._post("/_sim/reset", {})
        await self._post("/_sim/config", {"hold_seconds": scenario.hold})
        await self._post("/_sim/script", {"prompt_contains": "[warm]", "queued_seconds": 0, "dreaming_seconds": 0})
        warm = await self._create("bench [warm]")
        config = {
            "mode": scenario.mode,
            "interval": scenario.interval,
            "warmup_id": warm["id"],
            "base_url": self.sim.base_url,
            "cdn_url": self.sim.cdn_url,
            "api_key": API_KEY,
            "deadline_seconds": scenario.generation_seconds * 3 + 120 + scenario.interval * 2,
            # Spread case: starts staggered over one hold (a triggerer's steady state); burst: all at once.
            "stagger_seconds": scenario.hold if scenario.stagger and not scenario.burst else 0.0,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.client",
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._client_env(scenario),
            cwd=str(ROOT),
            limit=2**28,
        )
        pin(process.pid, 0)
        try:
            ready = await asyncio.wait_for(_read_tagged(process, "READY"), 120)
            ids, done_at = await self._create_all(scenario)
            # A variant's label may hold "/" ("budget 20/s"): keep the file name to safe characters.
            safe = re.sub(r"[^A-Za-z0-9._-]+", "-", scenario.variant)
            plan = self.work / f"plan-{scenario.n}-{safe}.json"
            plan.write_text(json.dumps({"ids": ids, "done_at": done_at}))
            assert process.stdin is not None
            process.stdin.write(f"{plan}\n".encode())
            await process.stdin.drain()
            result = await asyncio.wait_for(_read_tagged(process, "RESULT"), config["deadline_seconds"] + 120)
        finally:
            if process.returncode is None:
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        log = await self._get("/_sim/requests")
        row = self._row(scenario, ids, done_at, result, log)
        row["log levels"] = ready.get("log_levels", {})
        return Outcome(scenario, row, result | {"done_at": done_at})

    def _row(self, s: Scenario, ids: list[str], done_at: list[float], result: dict, log: list[dict]) -> dict:
        wanted = set(ids)
        calls = {i: 0 for i in ids}
        answered = {i: 0.0 for i in ids}  # when the simulator sent its last answer for the id
        first = {i: math.inf for i in ids}  # when the first call of the wait reached the simulator
        wanted |= {i.partition(":")[0] for i in ids}  # the video URL carries the uuid part of a universal id
        arrivals = []
        for entry in log:
            generation_id = wait_key(entry)  # a fetch's generation_id, or the video URL's uuid (HttpSensorTrigger)
            if generation_id in wanted and generation_id not in calls:
                generation_id = next(i for i in ids if i.partition(":")[0] == generation_id)
            if generation_id in wanted:
                arrivals.append(entry["time"])
                calls[generation_id] += 1
                answered[generation_id] = max(answered[generation_id], entry["time"] + entry["elapsed"])
                first[generation_id] = min(first[generation_id], entry["time"])
        sim_latencies = [answered[i] - done for i, done in zip(ids, done_at, strict=True)]
        ends, statuses = result["ends"], result["statuses"]
        ok = sum(1 for status in statuses if status == "success")
        latencies = [end - done for end, done, st in zip(ends, done_at, statuses, strict=True) if st == "success"]
        started = result["started"]
        # One call per server hold from the wait's first call: ceil(time to completion / hold), 2 % slack.
        floor = statistics.fmean(
            max(1, math.ceil((done - first[i]) / s.hold - 0.02)) for i, done in zip(ids, done_at, strict=True)
        )
        first_call_delays = [first[i] - started for i in ids if first[i] < math.inf]
        wall = result["wall_seconds"]
        cpu_per_wait_minute = result["cpu_seconds"] / (s.n * wall / 60) / s.factor if wall > 0 else float("nan")
        return {
            "N": s.n,
            "factor": s.factor,
            "T s": s.generation_seconds,
            "variant": s.variant,
            "wall s": wall,
            "RSS/wait KB": (result["peak_rss"] - result["baseline_rss"]) / s.n / 1024,
            "peak RSS MB": result["peak_rss"] / 2**20,
            "CPU ms/wait-min": cpu_per_wait_minute * 1000,
            "CPU ms/wait": result["cpu_seconds"] / s.n * 1000,
            # Arrival times at the API (the simulator's log); compressed runs' windows mean nothing in real time.
            "peak calls/s": window_peak(arrivals) if s.factor == 1 else float("nan"),
            "peak sockets": result["peak_sockets"] - result["baseline_sockets"],
            "calls/wait": sum(calls.values()) / s.n,
            "floor": floor,
            "p50 ms": percentile(latencies, 0.5) * 1000 if latencies else float("nan"),
            "p99 ms": percentile(latencies, 0.99) * 1000 if latencies else float("nan"),
            "max ms": max(latencies) * 1000 if latencies else float("nan"),
            "sim p99 ms": percentile(sim_latencies, 0.99) * 1000,
            "1st call p99 s": percentile(first_call_delays, 0.99) if first_call_delays else float("nan"),
            "ok": f"{ok}/{s.n}",
            "max calls": max(calls.values()) if calls else 0,
            "cpu_seconds": result["cpu_seconds"],
            "client_errors": result.get("client_errors", 0),
            "peak_fds": result["peak_fds"],
            "fd_limit": result["fd_limit"],
        }


async def _read_tagged(process: asyncio.subprocess.Process, tag: str) -> dict[str, Any]:
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"the measured process exited ({await process.wait()}) before {tag}")
        text = line.decode(errors="replace").strip()
        if text.startswith(tag + " "):
            return json.loads(text[len(tag) + 1 :])


def budget_extras(args: argparse.Namespace) -> dict[str, Any]:
    """The call-budget connection extras asked for on the command line (passed through as they are)."""
    out: dict[str, Any] = {}
    if getattr(args, "max_calls_per_second", None) is not None:
        out["max_calls_per_second"] = args.max_calls_per_second
    if getattr(args, "max_call_burst", None) is not None:
        out["max_call_burst"] = args.max_call_burst
    return out


def scenarios_for(n: int, args: argparse.Namespace) -> list[Scenario]:
    # Compressing time multiplies the request rate: lower the factor for large N so that our own long
    # polls (N / hold per second) stay under --max-rate, what one simulator process serves on one core.
    factor = args.factor if args.real_time else min(args.factor, max(1.0, REAL_HOLD * args.max_rate / n))
    t = args.generation_seconds / factor
    out = [Scenario(n, factor, t, "long-poll", "trigger")]
    if not args.no_burst:
        out.append(Scenario(n, factor, t, "long-poll burst", "trigger", burst=True))
    if not args.no_baseline:
        for interval in BASELINE_INTERVALS:
            out.append(Scenario(n, factor, t, f"bare poll {interval:g}s", "poll", interval=interval / factor))
            if n <= args.max_fair_n:
                out.append(
                    Scenario(
                        n, factor, t, f"HttpSensorTrigger {interval:g}s", "http-trigger", interval=interval / factor
                    )
                )
    if n <= 1000:
        # Generations that finish within one hold (completions 9-27 s in: one long poll each).
        one = 18.0 / factor
        out.append(Scenario(n, factor, one, "long-poll 1-hold", "trigger"))
        if not args.no_baseline:
            out.append(Scenario(n, factor, one, "bare poll 5s 1-hold", "poll", interval=5.0 / factor))
            out.append(Scenario(n, factor, one, "HttpSensorTrigger 5s 1-hold", "http-trigger", interval=5.0 / factor))
    return out


#: Issue 23's real-time case: generations completing 20-30 s after each wait starts (the creates of
#: 1,000 take under 3 s, so 23-30 s after creation), all waits started at once: one held long poll per
#: wait, while a 5 s poller makes 5-6 calls. No time compression: compression shrinks the poller's calls.
COST_WINDOW = (23.0, 30.0)


def cost_scenarios(args: argparse.Namespace) -> list[Scenario]:
    """
    Issue 23's CPU-per-wait rows in real time: ours, the bare held-GET floor, a bare 5 s poller (and
    the Redis budget). ``--quick`` compresses them like the other rows: a smoke run checks the columns only.
    """
    n, factor = (20, args.factor) if args.quick else (args.cost_n, 1.0)
    low, high = COST_WINDOW
    common: dict[str, Any] = {"window": (low / factor, high / factor), "stagger": False}
    t = (low + high) / 2 / factor
    out = [
        Scenario(n, factor, t, "real-time long-poll", "trigger", **common),
        Scenario(n, factor, t, "real-time held GET", "held-get", **common),
        Scenario(n, factor, t, "real-time bare poll 5s", "poll", interval=5.0 / factor, **common),
    ]
    if args.redis_conn:
        budget = {"max_calls_per_second": 1000.0, "max_call_burst": 1000, "budget_redis_conn_id": args.redis_conn}
        out.append(Scenario(n, factor, t, "real-time long-poll, Redis budget", "trigger", extras=budget, **common))
    return out


def budget_scenario(args: argparse.Namespace) -> Scenario:
    """
    Issue 12's budget target: 1,000 universal waits (no time compression, 10 s polls) with
    ``max_calls_per_second`` 20 and ``max_call_burst`` 20 in the connection; the report checks that
    no one-second window of the simulator's log holds more than rate + burst calls and that every
    wait succeeded.
    """
    n = 50 if args.quick else BUDGET_TARGET["n"]
    t = 20.0 if args.quick else 90.0
    extras = {k: v for k, v in BUDGET_TARGET.items() if k != "n"}
    return Scenario(n, 1.0, t, BUDGET_VARIANT, "trigger", universal=True, extras=extras)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run of every part: small N, short generations")
    p.add_argument("--real-time", action="store_true", help="no time compression in the one-loop part (slow)")
    p.add_argument("--sizes", default="100,1000,5000", help="comma-separated numbers of concurrent waits (one loop)")
    p.add_argument("--runs", type=int, default=3, help="repetitions of each one-loop scenario (median, min-max)")
    p.add_argument("--factor", type=float, default=30.0, help="time compression factor (default 30)")
    p.add_argument(
        "--max-rate",
        type=float,
        default=1000.0,
        help="cap of our long polls per second (N*factor/30); large N get a smaller factor (default 1000)",
    )
    p.add_argument(
        "--max-fair-n",
        type=int,
        default=1000,
        help="largest N of the HttpSensorTrigger baseline in one loop (a session per poll; default 1000)",
    )
    p.add_argument("--generation-seconds", type=float, default=120.0, help="real-time generation length T")
    p.add_argument("--no-baseline", action="store_true", help="skip the interval pollers")
    p.add_argument("--no-burst", action="store_true", help="skip the burst case")
    p.add_argument("--no-loop", action="store_true", help="skip the one-loop part")
    p.add_argument("--no-deployment", action="store_true", help="skip the worker-slot part (real Airflow)")
    p.add_argument("--deployment-factor", type=float, default=4.0, help="time compression of the deployment part")
    p.add_argument("--no-triggerer", action="store_true", help="skip the real-triggerer part (item 3)")
    p.add_argument("--triggerer-n", type=int, default=60, help="waits per variant in the real-triggerer part")
    p.add_argument("--no-ha", action="store_true", help="skip the two-triggerers part (item 4)")
    p.add_argument("--ha-n", type=int, default=36, help="deferred tasks in the two-triggerers part (each database)")
    p.add_argument("--no-model", action="store_true", help="skip the virtual-time model (item 5)")
    p.add_argument("--model-waits", type=int, default=100_000, help="waits in the virtual-time model")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-budget", action="store_true", help="skip the universal-endpoint budget scenario")
    p.add_argument("--no-cost", action="store_true", help="skip the real-time CPU-per-wait rows (issue 23)")
    p.add_argument("--cost-n", type=int, default=1000, help="waits of the real-time CPU-per-wait rows")
    p.add_argument(
        "--no-many", action="store_true", help="skip the 10,000 waits in one process (issue 23; off with --quick)"
    )
    p.add_argument("--many-n", type=int, default=10_000, help="waits of the many-waits part")
    p.add_argument("--redis-conn", default=None, help=argparse.SUPPRESS)  # set by main when redis-server exists
    p.add_argument("--max-calls-per-second", type=float, default=None, help="budget extra passed to the connection")
    p.add_argument("--max-call-burst", type=int, default=None, help="burst extra passed to the connection")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="the Markdown report")
    p.add_argument("--title", default="Benchmark results", help="heading of the report")
    args = p.parse_args(argv)
    if args.real_time:
        args.factor = 1.0
    if args.quick:
        args.sizes = "20"
        args.runs = 1
        args.no_deployment = True
        args.triggerer_n = min(args.triggerer_n, 10)
        args.ha_n = min(args.ha_n, 6)
        args.model_waits = min(args.model_waits, 2000)
        args.no_many = True  # real 30 s holds and completions 90-150 s away: no smoke size of it
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    return args


async def run_waits(args: argparse.Namespace) -> tuple[list[Outcome], dict[str, float]]:
    sim = SimulatorProcess(REAL_HOLD / args.factor)
    outcomes: list[Outcome] = []
    redis = _redis_for_the_budget_row(args)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
            bench = Bench(args, sim, session)
            if redis is not None:
                bench.extra_env[f"AIRFLOW_CONN_{args.redis_conn.upper()}"] = redis.connection_json()
            rtt = await bench.loopback_round_trip()
            print(f"loopback round trip: p50 {rtt['p50_ms']:.3f} ms, p99 {rtt['p99_ms']:.3f} ms", flush=True)
            for run in range(args.runs):
                for n in args.sizes:
                    for scenario in scenarios_for(n, args):
                        started = time.monotonic()
                        row = await _run_one(bench, scenario, run, outcomes)
                        print(
                            f"run {run + 1} N={n:>6} {scenario.variant:<22} f={scenario.factor:g} "
                            + " ".join(f"{c}={fmt(row[c])}" for c in COLUMNS[4:])
                            + f" ({time.monotonic() - started:.0f} s)",
                            flush=True,
                        )
            if not args.no_cost:
                for run in range(args.runs):  # the variants alternate: ratios of one run, on one machine state
                    for scenario in cost_scenarios(args):
                        row = await _run_one(bench, scenario, run, outcomes)
                        print(
                            f"cost run {run + 1} {scenario.variant:<34} CPU ms/wait={fmt(row['CPU ms/wait'])} "
                            f"calls/wait={fmt(row['calls/wait'])} p99 ms={fmt(row['p99 ms'])} ok={row['ok']}",
                            flush=True,
                        )
            if not args.no_budget:
                outcome = await bench.run(budget_scenario(args))
                outcome.row["run"] = 1
                outcomes.append(outcome)
                print(f"budget scenario: {outcome.row}", flush=True)
    finally:
        sim.stop()
        if redis is not None:
            redis.stop()
    return outcomes, rtt


async def _run_one(bench: Bench, scenario: Scenario, run: int, outcomes: list[Outcome]) -> dict[str, Any]:
    """Run ``scenario`` as run number ``run`` (from 0), keep its outcome; its row."""
    outcome = await bench.run(scenario)
    outcome.row["run"] = run + 1
    outcomes.append(outcome)
    return outcome.row


def _redis_for_the_budget_row(args: argparse.Namespace) -> Any:
    """A redis-server of the run's own for the shared budget's real-time row, or ``None`` (the row is left out)."""
    import shutil

    binary = shutil.which("redis-server")
    if args.no_cost or binary is None:
        print("redis-server not installed: the Redis budget's real-time row is left out", flush=True)
        return None
    from tests.support.redis_server import RedisServer

    args.redis_conn = "luma_budget_bench"
    return RedisServer(binary).start()


def _part(name: str, function: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one part; on failure keep the other parts' results and say what failed."""
    started = time.monotonic()
    print(f"== {name} ==", flush=True)
    try:
        result = function(*args, **kwargs)
    except Exception as error:
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {str(error)[:3000]}"}
    result["seconds"] = time.monotonic() - started
    print(f"== {name}: {result['seconds']:.0f} s ==", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report: dict[str, Any] = {
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": when,
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items()},
    }
    if not args.no_loop:
        outcomes, rtt = asyncio.run(run_waits(args))
        report["loopback"] = rtt
        report["rows"] = [o.row for o in outcomes]
        report["scenarios"] = [asdict(o.scenario) for o in outcomes]
    if not args.no_many:
        from benchmarks.many_waits import measure_many_waits

        report["many"] = _part(f"{args.many_n:,} waits in one process", measure_many_waits, args.many_n)
    if not args.no_deployment:
        from benchmarks.deployment import measure_worker_slots

        report["worker_slots"] = _part("worker slots", measure_worker_slots, args.deployment_factor)
    if not args.no_triggerer:
        from benchmarks.triggerer import measure_real_triggerer

        report["triggerer"] = _part("real triggerer", measure_real_triggerer, args)
    if not args.no_ha:
        from benchmarks.ha import measure_two_triggerers

        report["ha"] = _part("two triggerers, one killed", measure_two_triggerers, args.ha_n, quick=args.quick)
    if not args.no_model:
        from benchmarks.model import model_report

        report["model"] = _part("virtual-time model", model_report, args.model_waits, report.get("triggerer"))
    report["seconds"] = time.monotonic() - started
    if not args.no_plots:
        from benchmarks.plots import make_plots

        report["plots"] = make_plots(report, Path(args.out).parent / "results")
    from benchmarks.report import write_report

    write_report(report, Path(args.out))
    print(f"wrote {args.out} in {report['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
