"""
The benchmark suite of the Luma waits, one command: ``bash scripts/bench`` (= ``python -m benchmarks.run``).

It starts the simulator CLI in its own process, then, for each N, runs N concurrent waits in ONE
asyncio event loop in a fresh measured process (:mod:`benchmarks.client`): our
``LumaGenerationTrigger`` (long polls), the same with every generation finishing in the same
second (burst), and the interval polling users write today at 5 s and 60 s. Time is compressed by
a factor (hold 30 s / f, generation T / f, poll intervals / f); CPU per wait-minute is reported in
real time (measured value / f). Optionally (default on) the worker-slot seconds of the sensor in a
real Airflow 3 deployment (:mod:`benchmarks.deployment`). Results go to ``benchmarks/RESULTS.md``
(and the raw figures to the same name with ``.json``).

    python -m benchmarks.run                 # default: N = 100,1000,5000,10000, factor 30, ~10 min
    python -m benchmarks.run --quick         # a smoke run: N = 20, no deployment
    python -m benchmarks.run --real-time     # factor 1: 30 s holds (slow)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from airflow_provider_luma.testing.process import SimulatorProcess as _SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
GENERATION_PATH = "/v2/generate/video/luma-ai/generation"
REAL_HOLD = 30.0  # the service's long-poll hold, seconds
BASELINE_INTERVALS = (5.0, 60.0)  # real-time seconds of the interval pollers compared against
SPREAD_STEPS = 400  # distinct generation lengths of the spread case

COLUMNS = (
    "N",
    "factor",
    "T s",
    "variant",
    "wall s",
    "RSS/wait KB",
    "peak RSS MB",
    "CPU ms/wait-min",
    "peak sockets",
    "calls/wait",
    "floor",
    "p50 ms",
    "p99 ms",
    "max ms",
    "sim p99 ms",
    "1st call p99 s",
    "ok",
)


@dataclass
class Scenario:
    n: int
    factor: float
    generation_seconds: float  # compressed T
    variant: str  # "long-poll", "long-poll burst", "poll 5s", "poll 60s"
    mode: str  # "trigger" or "poll"
    burst: bool = False
    interval: float = 0.0  # compressed poll interval

    @property
    def hold(self) -> float:
        return REAL_HOLD / self.factor


@dataclass
class Outcome:
    scenario: Scenario
    row: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def _pin(pid: int, cpu: int) -> None:
    """Pin a process to one CPU when the machine has several (the simulator and the waits never share one)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(pid, {cpus[cpu % len(cpus)]})


class SimulatorProcess(_SimulatorProcess):
    """The simulator CLI in its own process, pinned to CPU 1 (the waits measured run on CPU 0)."""

    def __init__(self, hold: float) -> None:
        super().__init__(["--hold", str(hold)], api_key=API_KEY)
        _pin(self.pid, 1)


class Bench:
    def __init__(self, args: argparse.Namespace, sim: SimulatorProcess, session: aiohttp.ClientSession) -> None:
        self.args = args
        self.sim = sim
        self.session = session
        self.work = Path(tempfile.mkdtemp(prefix="luma-bench-"))

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.session.post(self.sim.base_url + path, json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def _get(self, path: str) -> Any:
        async with self.session.get(self.sim.base_url + path) as response:
            response.raise_for_status()
            return await response.json()

    async def _create(self, prompt: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        body = {"prompt": prompt, "aspect_ratio": "16:9"}
        for attempt in range(5):
            try:
                async with self.session.post(
                    self.sim.base_url + GENERATION_PATH, json=body, headers=headers
                ) as response:
                    response.raise_for_status()
                    return await response.json()
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
                return await self._create(prompt)

        generations: list[tuple[dict[str, Any], float]] = []
        if not scenario.burst:
            # Completions spread evenly over [T/2, 3T/2] after creation (SPREAD_STEPS scripted durations),
            # as for generations started at random times: about N/T completions per second.
            durations = [t / 2 + t * j / SPREAD_STEPS for j in range(SPREAD_STEPS)]
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
        extras = {"min_poll_interval": 5.0 / scenario.factor, "max_backoff": 60.0 / scenario.factor}
        conn = {"conn_type": "luma", "host": self.sim.base_url, "password": API_KEY, "extra": extras}
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
        env.update(
            {
                "AIRFLOW_CONN_LUMA_DEFAULT": json.dumps(conn),
                "AIRFLOW_HOME": str(self.work / "airflow-home"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
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
            "api_key": API_KEY,
            "deadline_seconds": scenario.generation_seconds * 3 + 120 + scenario.interval * 2,
            # Spread case: starts staggered over one hold (a triggerer's steady state); burst: all at once.
            "stagger_seconds": 0.0 if scenario.burst else scenario.hold,
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
        _pin(process.pid, 0)
        try:
            ready = await asyncio.wait_for(_read_tagged(process, "READY"), 120)
            ids, done_at = await self._create_all(scenario)
            plan = self.work / f"plan-{scenario.n}-{scenario.variant.replace(' ', '-')}.json"
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
        del ready
        log = await self._get("/_sim/requests?endpoint=get")
        return Outcome(scenario, self._row(scenario, ids, done_at, result, log), result | {"done_at": done_at})

    def _row(self, s: Scenario, ids: list[str], done_at: list[float], result: dict, log: list[dict]) -> dict:
        wanted = set(ids)
        calls = {i: 0 for i in ids}
        answered = {i: 0.0 for i in ids}  # when the simulator sent its last answer for the id
        first = {i: math.inf for i in ids}  # when the first call of the wait reached the simulator
        for entry in log:
            generation_id = entry.get("query", {}).get("generation_id")
            if generation_id in wanted:
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


def _parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _read_tagged(process: asyncio.subprocess.Process, tag: str) -> dict[str, Any]:
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"the measured process exited ({await process.wait()}) before {tag}")
        text = line.decode(errors="replace").strip()
        if text.startswith(tag + " "):
            return json.loads(text[len(tag) + 1 :])


def scenarios_for(n: int, args: argparse.Namespace) -> list[Scenario]:
    # Compressing time multiplies the request rate: lower the factor for large N so that our own long
    # polls (N / hold per second) stay under --max-rate, what one simulator process serves on one core.
    factor = args.factor if args.real_time else min(args.factor, max(1.0, REAL_HOLD * args.max_rate / n))
    t = args.generation_seconds / factor
    out = [
        Scenario(n, factor, t, "long-poll", "trigger"),
        Scenario(n, factor, t, "long-poll burst", "trigger", burst=True),
    ]
    if not args.no_baseline:
        for interval in BASELINE_INTERVALS:
            out.append(Scenario(n, factor, t, f"poll {interval:g}s", "poll", interval=interval / factor))
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def ratio_table(rows: list[dict[str, Any]]) -> str:
    """Our long-poll figures divided by each interval poller's, per N (below 1: ours is lower)."""
    metrics = ("RSS/wait KB", "CPU ms/wait-min", "peak sockets", "calls/wait", "p50 ms", "p99 ms")
    columns = ("N", "vs", *metrics)
    out = []
    by_n: dict[int, dict[str, dict]] = {}
    for row in rows:
        by_n.setdefault(row["N"], {})[row["variant"]] = row
    for n, variants in sorted(by_n.items()):
        ours = variants.get("long-poll")
        for name in (f"poll {i:g}s" for i in BASELINE_INTERVALS):
            theirs = variants.get(name)
            if ours is None or theirs is None:
                continue
            ratios: dict[str, Any] = {"N": n, "vs": name}
            for metric in metrics:
                a, b = ours[metric], theirs[metric]
                ratios[metric] = f"{a / b:.2f}" if b and not math.isnan(b) else "n/a"
            out.append(ratios)
    return table(out, columns)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny smoke run: N = 20, no deployment")
    p.add_argument("--real-time", action="store_true", help="no time compression: 30 s holds (slow)")
    p.add_argument("--sizes", default="100,1000,5000,10000", help="comma-separated numbers of concurrent waits")
    p.add_argument("--factor", type=float, default=30.0, help="time compression factor (default 30)")
    p.add_argument(
        "--max-rate",
        type=float,
        default=1000.0,
        help="cap of our long polls per second (N*factor/30); large N get a smaller factor (default 1000)",
    )
    p.add_argument("--generation-seconds", type=float, default=120.0, help="real-time generation length T")
    p.add_argument("--no-baseline", action="store_true", help="skip the interval pollers")
    p.add_argument("--no-burst", action="store_true", help="skip the burst case")
    p.add_argument("--no-deployment", action="store_true", help="skip the worker-slot part (real Airflow)")
    p.add_argument("--deployment-factor", type=float, default=4.0, help="time compression of the deployment part")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="the Markdown report")
    p.add_argument("--title", default="Benchmark results", help="heading of the report")
    args = p.parse_args(argv)
    if args.real_time:
        args.factor = 1.0
    if args.quick:
        args.sizes = "20"
        args.no_deployment = True
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    return args


def machine() -> str:
    import resource

    import psutil

    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return (
        f"{os.cpu_count()} CPUs (`nproc` {len(os.sched_getaffinity(0))}), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.platform()}, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, open-file limit {files}"
    )


async def run_waits(args: argparse.Namespace) -> tuple[list[Outcome], dict[str, float]]:
    sim = SimulatorProcess(REAL_HOLD / args.factor)
    outcomes: list[Outcome] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
            bench = Bench(args, sim, session)
            rtt = await bench.loopback_round_trip()
            print(f"loopback round trip: p50 {rtt['p50_ms']:.3f} ms, p99 {rtt['p99_ms']:.3f} ms", flush=True)
            for n in args.sizes:
                for scenario in scenarios_for(n, args):
                    if scenario.burst and args.no_burst:
                        continue
                    started = time.monotonic()
                    outcome = await bench.run(scenario)
                    outcomes.append(outcome)
                    row = outcome.row
                    print(
                        f"N={n:>6} {scenario.variant:<16} f={scenario.factor:g} "
                        + " ".join(f"{c}={_fmt(row[c])}" for c in COLUMNS[4:])
                        + f" ({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
    finally:
        sim.stop()
    return outcomes, rtt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    outcomes, rtt = asyncio.run(run_waits(args))
    slots = None
    if not args.no_deployment:
        from benchmarks.deployment import measure_worker_slots

        try:
            slots = measure_worker_slots(args.deployment_factor)
        except Exception as error:  # keep the other results; say what failed
            slots = {"markdown": f"The deployment part failed: {type(error).__name__}: {str(error)[:2000]}"}
        print(slots["markdown"], flush=True)
    report = {
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": when,
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items()},
        "loopback": rtt,
        "rows": [o.row for o in outcomes],
        "scenarios": [asdict(o.scenario) for o in outcomes],
        "worker_slots": slots,
        "seconds": time.monotonic() - started,
    }
    from benchmarks.report import write_report

    write_report(report, Path(args.out))
    print(f"wrote {args.out} in {report['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
