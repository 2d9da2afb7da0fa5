"""
What the call budget costs per call: the in-process budget next to the budget shared in Redis.

    python -m benchmarks.shared_budget             # 20,000 calls per variant (about a minute)
    python -m benchmarks.shared_budget --calls 2000

Each variant takes a slot and hands it back (acquire + release, what the transport does around
every API call) ``--calls`` times, with a rate far above what is asked (so nothing waits and only
the budget's own work is measured): from one thread, and from 100 tasks on one event loop. The
shared variant talks to a redis-server of its own on 127.0.0.1 (one round trip to take a slot, one
to hand it back, on the loop in a task of its own). Variants alternate within the run, and the
figures are the median of ``--runs`` rounds: ratios between them hold, absolute numbers depend on
the machine. Redis's own time per script call (``INFO commandstats``) says how many calls one
Redis core serves for every process together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from airflow_provider_luma.hooks.budget import CallBudget, forget_budgets, key_fingerprint
from airflow_provider_luma.hooks.shared_budget import SharedCallBudget

RATE = 1e6  # never the limit: the cost of the budget, not its waiting
TASKS = 100
REDIS_CONN = "luma_budget_bench"


def sync_pairs(budget: CallBudget, calls: int) -> float:
    """Seconds for ``calls`` acquire + release from this thread."""
    began = time.perf_counter()
    for _ in range(calls):
        budget.release(budget.acquire(), 200)
    return time.perf_counter() - began


def async_pairs(budget: CallBudget, calls: int) -> float:
    """Seconds for ``calls`` acquire + release from :data:`TASKS` tasks on one loop (until Redis has every release)."""

    async def task(count: int) -> None:
        for _ in range(count):
            budget.release(await budget.aacquire(), 200)

    async def main() -> float:
        await budget.aacquire()  # the loop's Redis client is set up before timing
        began = time.perf_counter()
        await asyncio.gather(*(task(calls // TASKS) for _ in range(TASKS)))
        await asyncio.gather(*getattr(budget, "_tasks", ()))  # the shared budget's releases on their way to Redis
        return time.perf_counter() - began

    return asyncio.run(main())


def measure(calls: int, runs: int) -> dict[str, Any]:
    from tests.support.redis_server import RedisServer

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(binary).start()
    os.environ[f"AIRFLOW_CONN_{REDIS_CONN.upper()}"] = server.connection_json()
    fingerprint = key_fingerprint("benchmark-key")
    variants: dict[str, Callable[[], CallBudget]] = {
        "in-process": lambda: CallBudget(RATE, 0),
        "shared (Redis)": lambda: SharedCallBudget(RATE, 0, redis_conn_id=REDIS_CONN, fingerprint=fingerprint),
    }
    seconds: dict[str, dict[str, list[float]]] = {name: {"thread": [], "event loop": []} for name in variants}
    try:
        warm = variants["shared (Redis)"]()
        sync_pairs(warm, 100)  # imports, the connection read and the script load, out of the timing
        for _ in range(runs):
            for name, make in variants.items():
                seconds[name]["thread"].append(sync_pairs(make(), calls))
                seconds[name]["event loop"].append(async_pairs(make(), calls))
        import redis

        # What one call of the script costs Redis itself: one Redis core serves every process.
        script = redis.Redis(host="127.0.0.1", port=server.port).info("commandstats").get("cmdstat_evalsha", {})
    finally:
        forget_budgets()
        server.stop()
    figures: dict[str, Any] = {"calls": calls, "runs": runs, "python": sys.version.split()[0], "variants": {}}
    figures["redis_us_per_script_call"] = script.get("usec_per_call")
    for name, by_mode in seconds.items():
        figures["variants"][name] = {
            mode: {
                "us_per_call": round(statistics.median(values) / calls * 1e6, 1),
                "calls_per_second": round(calls / statistics.median(values)),
            }
            for mode, values in by_mode.items()
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = measure(args.calls, args.runs)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{args.calls} acquire + release per variant and mode, median of {args.runs} rounds:")
    print(f"{'budget':<16} {'mode':<11} {'µs per call':>12} {'calls/s':>10}")
    for name, by_mode in figures["variants"].items():
        for mode, figure in by_mode.items():
            print(f"{name:<16} {mode:<11} {figure['us_per_call']:>12} {figure['calls_per_second']:>10}")
    print(f"Redis's own time per script call (two per API call): {figures['redis_us_per_script_call']} µs")


if __name__ == "__main__":
    main()
