"""
CPU per poll of N triggers in one event loop: this tree against an older commit, in one run.

    .venv/airflow-3.3.2/bin/python scripts/profile_poll.py                 # against 853adc4 (before the CPU cuts)
    .venv/airflow-3.3.2/bin/python scripts/profile_poll.py --waits 500 --rounds 3 --profile
    .venv/airflow-3.3.2/bin/python scripts/profile_poll.py --floor --waits 1000   # and a bare held GET

``--floor`` adds the least any long-polling client can do: one held GET per wait on a bare aiohttp
session (each on its own connection, as concurrent long polls must be), and holds each wait's one
poll until its generation completes.

The older commit's ``airflow_provider_luma`` is taken with ``git archive`` into a temporary folder
(nothing in the tree changes, no flag keeps the old path alive in the product). Each variant runs
in a fresh interpreter, alternating round by round so that both see the same machine; the
simulator runs in a process of its own, so only the client's CPU is counted. Reported per variant:
client CPU seconds of the waits (``time.process_time``), polls made, CPU per poll, and connection
lookups (``get_async_connection``) per 1,000 triggers. ``--profile`` adds the top functions of a
cProfile run of each variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-luma-profile-key"

CHILD = r"""
import asyncio, cProfile, gc, io, json, os, pstats, sys, time

from airflow_provider_luma.hooks import luma as luma_module
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger

waits, profile, bare = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "bare"
counts = {"polls": 0, "lookups": 0}
real_lookup, real_apoll = luma_module.get_async_connection, LumaHook.apoll

async def lookup(*args, **kwargs):
    counts["lookups"] += 1
    return await real_lookup(*args, **kwargs)

async def apoll(self, step):
    counts["polls"] += 1
    return await real_apoll(self, step)

luma_module.get_async_connection, LumaHook.apoll = lookup, apoll
hook = LumaHook()
ids = [hook.create_generation(f"profile {i}").id for i in range(waits)]
try:  # a triggerer is another process: it starts with no settings kept
    from airflow_provider_luma.hooks.settings import SETTINGS_CACHE
    SETTINGS_CACHE.clear()
except ImportError:  # before the cache
    pass

async def one(generation_id):
    trigger = LumaGenerationTrigger([generation_id], deadline=time.time() + 300)
    async for event in trigger.run():
        return event.payload["status"]

async def held_get(session, generation_id):
    counts["polls"] += 1
    url = os.environ["LUMA_PROFILE_BASE_URL"] + "/v2/generate/video/luma-ai/generation"
    query = {"generation_id": generation_id, "state": "completed"}
    headers = {"Authorization": "Bearer " + os.environ["LUMA_PROFILE_KEY"]}
    async with session.get(url, params=query, headers=headers) as r:
        return "success" if (await r.json()).get("state") == "completed" else "error"

async def main():
    if bare:
        import aiohttp
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            return await asyncio.gather(*(held_get(session, i) for i in ids))
    return await asyncio.gather(*(one(i) for i in ids))

# The garbage collector's share: a full collection walks every object of the process (Airflow's included).
collections = {"gc_seconds": 0.0, "full_collections": 0}
def on_gc(phase, info, started=[0.0]):
    if phase == "start":
        started[0] = time.process_time()
        return
    collections["gc_seconds"] += time.process_time() - started[0]
    collections["full_collections"] += info["generation"] == 2
gc.callbacks.append(on_gc)

profiler = cProfile.Profile() if profile else None
cpu = time.process_time()
if profiler:
    profiler.enable()
statuses = asyncio.run(main())
if profiler:
    profiler.disable()
cpu = time.process_time() - cpu
top = ""
if profiler:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
    top = out.getvalue()
print(json.dumps({"cpu": cpu, "ok": statuses.count("success"), **counts, **collections, "top": top}))
"""


def extract(rev: str, into: Path) -> Path:
    """The package of ``rev`` under ``into``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "airflow_provider_luma"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_child(
    source: Path, base_url: str, waits: int, profile: bool, home: str, mode: str = "trigger", hold: float = 1.0
) -> dict:
    extra = {"min_poll_interval": 0.05, "long_poll_hold": hold, "timeout": hold + 30, "max_retries": 3}
    conn = {"conn_type": "luma", "host": base_url, "password": KEY, "extra": extra}
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_LUMA_DEFAULT": json.dumps(conn),
        "LUMA_PROFILE_BASE_URL": base_url,
        "LUMA_PROFILE_KEY": KEY,
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(waits), "1" if profile else "0", mode],
        env=env,
        cwd=source,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--baseline", default="853adc4", help="the commit to compare with (before this round's CPU work)"
    )
    parser.add_argument("--waits", type=int, default=300, help="triggers in the loop")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant, alternating")
    parser.add_argument("--profile", action="store_true", help="also print each variant's top functions")
    parser.add_argument("--floor", action="store_true", help="compare with a bare held GET per wait, not a commit")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from airflow_provider_luma.testing.process import SimulatorProcess

    with tempfile.TemporaryDirectory(prefix="luma-profile-") as tmp:
        before = (extract(args.baseline, Path(tmp) / "before"), "trigger")
        if args.floor:
            # Each wait is one poll held until its generation completes (10 s after creation, well after
            # all waits started): the trigger before and after against a bare held GET, in one run.
            variants = {"held GET": (ROOT, "bare"), "before": before, "after": (ROOT, "trigger")}
            hold, timing = 30.0, ["--hold", "30", "--queued", "0.3", "--dreaming", "9.7"]
        else:
            variants = {"before": before, "after": (ROOT, "trigger")}
            # hold 1 s, queued 0.3 s, dreaming 1.5 s: each wait makes two or three held polls.
            hold, timing = 1.0, ["--hold", "1", "--queued", "0.3", "--dreaming", "1.5"]
        results: dict[str, list[dict]] = {name: [] for name in variants}
        with SimulatorProcess(timing, api_key=KEY) as sim:
            for round_ in range(args.rounds):
                for name, (source, mode) in variants.items():
                    profile = args.profile and round_ == args.rounds - 1
                    result = run_child(source, sim.base_url, args.waits, profile, tmp, mode, hold)
                    results[name].append(result)
                    print(
                        f"round {round_ + 1} {name:8}: {result['cpu']:.2f} s CPU, {result['polls']} polls, "
                        f"{result['lookups']} lookups, {result['ok']}/{args.waits} succeeded, GC "
                        f"{result['gc_seconds']:.2f} s ({result['full_collections']} full collections)",
                        flush=True,
                    )
        print(f"\n{args.waits} triggers in one loop, {args.rounds} rounds each (medians):")
        for name, runs in results.items():
            per_poll = statistics.median(1000 * r["cpu"] / max(1, r["polls"]) for r in runs)
            per_wait = statistics.median(1000 * r["cpu"] / args.waits for r in runs)
            lookups = statistics.median(1000 * r["lookups"] / args.waits for r in runs)
            spread = [round(1000 * r["cpu"] / max(1, r["polls"]), 2) for r in runs]
            print(
                f"  {name:8} ({args.baseline if name == 'before' else 'this tree'}): {per_poll:.2f} ms CPU per poll "
                f"(runs: {spread}), {per_wait:.2f} ms per wait, {lookups:.0f} lookups per 1,000 triggers"
            )
        if args.profile:
            for name, runs in results.items():
                print(f"\n--- {name}: top functions by own time ---\n{runs[-1]['top']}")


if __name__ == "__main__":
    main()
