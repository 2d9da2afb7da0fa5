"""
Worker-slot seconds of ``LumaGenerationSensor`` in a real Airflow 3 deployment: deferrable vs poke vs reschedule.

The deployment is ``tests/support/deployment.py`` (scheduler, triggerer, DAG processor and API server
as separate processes, LocalExecutor on SQLite); the simulator CLI runs in its own process. One DAG run
per generation length T (60 s and 120 s, compressed by ``factor``) holds the three sensors side by
side, each waiting for its own generation. A thread samples every task instance's state from the
metadata DB every 0.1 s; a worker slot counts as occupied while the task instance is ``queued`` or
``running`` (the executor holds the slot from queueing to the end of the task process), and the number
of separate ``running`` stints is counted (one per worker process: reschedule pokes, deferral resumes).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks.common import REAL_HOLD, SimulatorProcess, import_harness, table

MODES = ("deferrable", "poke", "reschedule")
REAL_LENGTHS = (60.0, 120.0)
DAG_ID = "luma_bench_worker_slots"

DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import LumaGenerationSensor


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     params={{"token": "[t0]"}})
def luma_bench_worker_slots():
    for mode in {modes!r}:

        @task(task_id=f"submit_{{mode}}")
        def submit(params=None) -> str:
            return LumaHook().create_generation(f"worker slots {{params['token']}}").id

        LumaGenerationSensor(
            task_id=f"wait_{{mode}}",
            generation_id=submit(),
            deferrable=mode == "deferrable",
            mode="reschedule" if mode == "reschedule" else "poke",
            poke_interval={poke_interval},
            timeout=600,
        )


luma_bench_worker_slots()
"""


class StateClock(threading.Thread):
    """Seconds each task instance spends in each state, sampled from the metadata DB."""

    def __init__(self, deployment: Any, period: float = 0.1, dag_id: str = DAG_ID) -> None:
        super().__init__(name="state-clock", daemon=True)
        self.deployment = deployment
        self.dag_id = dag_id
        self.period = period
        self.stop_event = threading.Event()
        self.seconds: dict[tuple[str, str], dict[str, float]] = {}
        self.stints: dict[tuple[str, str], int] = {}
        self._last: dict[tuple[str, str], str | None] = {}

    def run(self) -> None:
        previous = time.monotonic()
        while not self.stop_event.wait(self.period):
            try:
                rows = self.deployment.query(
                    "SELECT run_id, task_id, state FROM task_instance WHERE dag_id = ?", (self.dag_id,)
                )
            except Exception:  # the DB may be locked for a moment: sample again
                continue
            now = time.monotonic()
            elapsed, previous = now - previous, now
            for run_id, task_id, state in rows:
                key = (run_id, task_id)
                per_state = self.seconds.setdefault(key, {})
                last = self._last.get(key)
                if last is not None:
                    per_state[last] = per_state.get(last, 0.0) + elapsed
                if state == "running" and last != "running":
                    self.stints[key] = self.stints.get(key, 0) + 1
                self._last[key] = state


def measure_worker_slots(factor: float = 4.0) -> dict[str, Any]:
    """Run the DAG once per generation length; return the rows and a Markdown table."""
    deployment = import_harness().deployment

    hold = REAL_HOLD / factor
    sim = SimulatorProcess(hold)
    started = time.monotonic()
    try:
        for k, length in enumerate(REAL_LENGTHS):
            sim.script(f"[t{k}]", length / factor)
        extras = {"min_poll_interval": 5.0 / factor, "max_backoff": 60.0 / factor, "long_poll_hold": hold}
        with deployment(extra_env={"AIRFLOW_CONN_LUMA_DEFAULT": sim.connection(**extras)}) as dep:
            source = DAG_SOURCE.format(dag_id=DAG_ID, modes=MODES, poke_interval=60.0 / factor)
            dep.add_dag(source, f"{DAG_ID}.py")
            clock = StateClock(dep)
            clock.start()
            runs = {length: dep.trigger(DAG_ID, conf={"token": f"[t{k}]"}) for k, length in enumerate(REAL_LENGTHS)}
            states = {length: dep.wait_for_run(DAG_ID, run_id, timeout=300) for length, run_id in runs.items()}
            time.sleep(0.5)
            clock.stop_event.set()
            clock.join()
            rows = []
            for length, run_id in runs.items():
                task_states = dep.task_states(DAG_ID, run_id)
                for mode in MODES:
                    key = (run_id, f"wait_{mode}")
                    seconds = clock.seconds.get(key, {})
                    rows.append(
                        {
                            "mode": mode,
                            "T real s": length,
                            "T compressed s": length / factor,
                            "slot s (queued+running)": seconds.get("queued", 0.0) + seconds.get("running", 0.0),
                            "running s": seconds.get("running", 0.0),
                            "deferred s": seconds.get("deferred", 0.0),
                            "up_for_reschedule s": seconds.get("up_for_reschedule", 0.0),
                            "worker processes": clock.stints.get(key, 0),
                            "state": task_states.get(f"wait_{mode}"),
                            "run": states[length],
                        }
                    )
    finally:
        sim.stop()
    columns = (
        "mode",
        "T real s",
        "T compressed s",
        "slot s (queued+running)",
        "running s",
        "deferred s",
        "up_for_reschedule s",
        "worker processes",
        "state",
    )
    markdown = (
        f"Factor {factor:g}: hold {hold:g} s, poke_interval {60 / factor:g} s (Airflow's default 60 s / factor), "
        f"generation T as shown; states sampled every 0.1 s from the metadata DB. Took "
        f"{time.monotonic() - started:.0f} s.\n\n" + table(rows, columns)
    )
    return {"factor": factor, "rows": rows, "markdown": markdown}
