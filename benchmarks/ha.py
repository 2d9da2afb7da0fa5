"""
Two triggerers share the waits; the one holding more is SIGKILLed mid-wait (issue 12 item 4, issue 20 item 2).

Run twice, on the same scenario (``tests/support/failover.py``, which the deployment test
``tests/deployment/production/test_failover.py`` runs too):

* **PostgreSQL** (what Airflow supports for several triggerers): the production-shaped harness
  (``tests/support/production.py``: PostgreSQL, Redis, CeleryExecutor, two triggerers);
* **SQLite** (not supported by Airflow with more than one triggerer: trigger assignment's
  ``SELECT … FOR UPDATE SKIP LOCKED`` compiles to nothing on SQLite), kept beside it: the SQLite
  harness (LocalExecutor) with a second triggerer.

Both: ``[triggerer] triggerer_health_check_threshold`` = ``THRESHOLD`` (default 30), heartbeats every
second, ``max_trigger_to_select_per_loop`` 10 (both triggerers take triggers; orphans go over in a loop
or two), the simulator with the service's real 30 s hold, no time compression, every triggerer warmed
first (``tests/support/warmup.py``: a cold triggerer's first DB connection lookup pauses its heartbeat).
N tasks: two thirds deferred sensors, one third generate operators waiting in the triggerer; the
generations complete once the survivor has taken every orphaned wait. Measured: see
``tests/support/failover.py``.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import REAL_HOLD, SimulatorProcess, fmt, import_harness, table

THRESHOLD = 10  # [triggerer] triggerer_health_check_threshold, seconds (Airflow's default: 30); getint: whole
HEARTBEAT = 1.0  # [triggerer] job_heartbeat_sec
#: [triggerer] max_trigger_to_select_per_loop (default 50): low enough that both triggerers take some of the
#: deferring waits, high enough that the survivor takes the orphans in a loop or two (it claims this many a loop).
SELECT_PER_LOOP = 10
BACKENDS = ("PostgreSQL", "SQLite")


def _settings(sim: SimulatorProcess) -> dict[str, str]:
    return {
        "AIRFLOW_CONN_LUMA_DEFAULT": sim.connection(),
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(THRESHOLD),
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": str(HEARTBEAT),
        "AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP": str(SELECT_PER_LOOP),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "10000",
    }


def measure_one(backend: str, n: int) -> dict[str, Any]:
    """The failover scenario on ``backend`` ("PostgreSQL" or "SQLite"); the result's ``as_dict()`` plus a row."""
    harness = import_harness()
    from tests.support.failover import add_triggerer, run_failover
    from tests.support.production import production_deployment
    from tests.support.warmup import warm_up_triggerers

    sensors = max(1, n * 2 // 3)
    generates = max(1, n - sensors)
    sim = SimulatorProcess(REAL_HOLD, cpu=None)
    started = time.monotonic()
    try:
        env = _settings(sim)
        context = production_deployment(env) if backend == "PostgreSQL" else harness.deployment(extra_env=env)
        with context as dep:
            if backend == "SQLite":
                add_triggerer(dep, "triggerer-2")
            warm = warm_up_triggerers(dep, sim)
            dep.add_connection("luma_failover", sim.connection())
            result = run_failover(
                dep,
                sim,
                sensors=sensors,
                generates=generates,
                conn_id="luma_failover",
                threshold=THRESHOLD,
                heartbeat=HEARTBEAT,
                poll_interval=5.0,  # min_poll_interval's default: the connection sets none
            )
    finally:
        sim.stop()
    out = result.as_dict()
    out["warm_up"] = warm
    out["backend"] = backend
    out["total_s"] = time.monotonic() - started
    out["row"] = {
        "database": backend + ("" if backend == "PostgreSQL" else " (unsupported by Airflow)"),
        "N": n,
        "held (A/B)": "/".join(str(v) for v in result.held_at_kill.values()),
        "orphaned": result.orphans,
        "reassigned max s": max(result.reassigned_s or [float("nan")]),
        "bound s": result.reassign_bound,
        "first poll max s": max(result.first_poll_s or [float("nan")]),
        "bound + poll s": result.first_poll_bound,
        "ended right": f"{result.ended_right}/{result.n}",
        "duplicate creates": result.duplicate_creates,
        "dup. held polls (live)": result.duplicate_held_polls,
        "overlaps in log": result.overlaps_in_log,
        "moves before kill": result.extra["moves_before_kill"],
    }
    return out


def measure_two_triggerers(n: int, quick: bool = False) -> dict[str, Any]:
    """Both backends, one after the other (a failure of one keeps the other's figures). ``quick`` changes nothing:
    the scenario's length does not grow with ``n`` (``--quick`` already makes ``n`` 6)."""
    started = time.monotonic()
    out: dict[str, Any] = {"n": n, "threshold": THRESHOLD, "heartbeat": HEARTBEAT, "backends": {}}
    for backend in BACKENDS:
        try:
            out["backends"][backend] = measure_one(backend, n)
        except Exception as error:
            out["backends"][backend] = {"error": f"{type(error).__name__}: {str(error)[:6000]}"}
    rows = [b["row"] for b in out["backends"].values() if "row" in b]
    errors = [f"{name}: {b['error']}" for name, b in out["backends"].items() if "error" in b]
    out["seconds"] = time.monotonic() - started
    notes = []
    for name, b in out["backends"].items():
        if "row" in b:
            stalls = {k: v for k, v in b["warm_up"]["stalls"].items() if v}
            notes.append(
                f"{name}: warm-up {fmt(b['warm_up']['seconds'])} s ({b['warm_up']['runs']} run(s)); heartbeat "
                f"pauses it logged: {stalls or 'none'}; during the measured run: "
                f"{ {k: v for k, v in b['extra']['stalls'].items() if v} or 'none' }."
            )
    out["markdown"] = (
        f"`[triggerer] triggerer_health_check_threshold` = {THRESHOLD} s (default 30), `job_heartbeat_sec` "
        f"{HEARTBEAT:g} s, `max_trigger_to_select_per_loop` {SELECT_PER_LOOP}; two triggerers (`--skip-serve-logs`); "
        f"{max(1, n * 2 // 3)} sensors + {max(1, n - max(1, n * 2 // 3))} generate operators; real 30 s holds; "
        "the triggerer holding more triggers SIGKILLed once every task was deferred and polled; generations "
        f"completed once the survivor had taken every orphaned wait. Took {out['seconds']:.0f} s.\n\n"
        + (table(rows, list(rows[0])) if rows else "")
        + ("\n\n" + "\n".join(f"* {note}" for note in notes) if notes else "")
        + ("\n\nFailed: " + "; ".join(errors) if errors else "")
    )
    return out
