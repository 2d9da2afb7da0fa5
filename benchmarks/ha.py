"""
Two triggerers share the waits; one is SIGKILLed mid-wait (issue 12 item 4).

A real deployment (``tests/support/deployment.py``, SQLite, LocalExecutor) runs a second triggerer
(``airflow triggerer --skip-serve-logs``: two on one host cannot share the log-server port; the
first one's port is a free one) with ``[triggerer] triggerer_health_check_threshold`` lowered to
``THRESHOLD`` seconds (default 30) and heartbeats every second. One DAG run holds N deferred tasks:
N/2 ``LumaGenerationSensor``s on generations the benchmark created and N/2
``LumaGenerateVideoOperator``s that create their own generation and wait for it in the triggerer. Once
every task is deferred, the triggerer holding more triggers is SIGKILLed (its whole process group).

Measured: every task's end state; creates per prompt in the simulator's log (0 duplicates wanted);
the recovery time of each orphaned trigger, from the kill to (a) the trigger row pointing at the
survivor and (b) the survivor's first poll of that generation (the simulator's log); and duplicate
polls: two polls of one generation held at the same time (on SQLite, row locks lock nothing, so both
triggerers may briefly run one trigger). Target: recovery within the threshold plus two triggerer
loops (one loop: about a second).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from typing import Any

from benchmarks.common import REAL_HOLD, SimulatorProcess, import_harness, table, wait_key

DAG_ID = "bench_two_triggerers"
THRESHOLD = 10.0  # [triggerer] triggerer_health_check_threshold, seconds (Airflow's default: 30)
LOOP_SECONDS = 1.0  # one triggerer loop (heartbeat and trigger assignment), with job_heartbeat_sec = 1
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator
from airflow_provider_luma.sensors.luma import LumaGenerationSensor


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     max_active_tasks=10000)
def bench_two_triggerers():
    for i in range({sensors}):
        LumaGenerationSensor(task_id=f"wait_{{i}}", generation_id="{{{{ dag_run.conf['ids'][%d] }}}}" % i,
                             timeout=1800)
    for i in range({generates}):
        LumaGenerateVideoOperator(task_id=f"generate_{{i}}", prompt=f"ha generate {{i}} [ha-gen]", aspect_ratio="16:9")


bench_two_triggerers()
"""


class TriggerWatch(threading.Thread):
    """Samples the trigger table: which triggerer job holds each trigger, and what it waits for."""

    def __init__(self, dep: Any, period: float = 0.2) -> None:
        super().__init__(name="trigger-watch", daemon=True)
        self.dep = dep
        self.period = period
        self.stop_event = threading.Event()
        self.history: dict[int, list[tuple[float, Any]]] = {}  # trigger id -> [(time, triggerer_id)]
        self.generations: dict[int, list[str]] = {}

    def run(self) -> None:
        while not self.stop_event.wait(self.period):
            try:
                rows = self.dep.query("SELECT id, triggerer_id, kwargs FROM trigger")
            except Exception:
                continue
            now = time.time()
            for trigger_id, triggerer_id, kwargs in rows:
                seen = self.history.setdefault(trigger_id, [])
                if not seen or seen[-1][1] != triggerer_id:
                    seen.append((now, triggerer_id))
                if trigger_id not in self.generations:
                    text = kwargs.decode(errors="replace") if isinstance(kwargs, bytes) else str(kwargs)
                    self.generations[trigger_id] = _UUID.findall(text)

    def holder_at(self, trigger_id: int, when: float) -> Any:
        holder = None
        for t, triggerer_id in self.history.get(trigger_id, []):
            if t <= when:
                holder = triggerer_id
        return holder


def _running_triggerer_jobs(dep: Any) -> list[int]:
    rows = dep.query("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' ORDER BY id")
    return [r[0] for r in rows]


def measure_two_triggerers(n: int, quick: bool = False) -> dict[str, Any]:
    harness = import_harness()
    n = max(2, n)
    sensors, generates = n - n // 2, n // 2
    length = 50.0 if quick else 90.0  # seconds from creation to completion: long enough to defer them all
    sim = SimulatorProcess(REAL_HOLD, cpu=None)
    env = {
        "AIRFLOW_CONN_LUMA_DEFAULT": sim.connection(),
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(THRESHOLD),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "10000",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(harness.free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(harness.free_port()),
    }
    started = time.monotonic()
    result: dict[str, Any] = {"n": n, "threshold": THRESHOLD}
    try:
        with harness.deployment(extra_env=env) as dep:
            first = _running_triggerer_jobs(dep)
            dep.start_component("triggerer-2", ("triggerer", "--skip-serve-logs"))
            deadline = time.monotonic() + 90
            while len(_running_triggerer_jobs(dep)) < len(first) + 1:
                dep.check_alive(("scheduler", "triggerer", "triggerer-2"))
                if time.monotonic() > deadline:
                    raise harness.DeploymentError("the second triggerer never heartbeat\n" + dep.logs_tail())
                time.sleep(0.5)
            jobs = {"triggerer": max(first), "triggerer-2": max(_running_triggerer_jobs(dep))}
            dep.add_dag(DAG_SOURCE.format(dag_id=DAG_ID, sensors=sensors, generates=generates), f"{DAG_ID}.py")
            sim.script("[ha-gen]", length)
            sim.script("[ha-wait]", length)
            ids = [sim.create(f"ha wait {i} [ha-wait]")["id"] for i in range(sensors)]
            watch = TriggerWatch(dep)
            watch.start()
            run_id = dep.trigger(DAG_ID, conf={"ids": ids})
            # Kill once every task is deferred (or, at the latest, 15 s before the generations complete).
            kill_by = time.monotonic() + length - 15
            while time.monotonic() < kill_by:
                states = dep.task_states(DAG_ID, run_id)
                if len(states) == n and all(s == "deferred" for s in states.values()):
                    time.sleep(2)  # let both triggerers pick their triggers up
                    break
                time.sleep(0.5)
            held: dict[str, int] = {name: 0 for name in jobs}
            now = time.time()
            for trigger_id in watch.history:
                holder = watch.holder_at(trigger_id, now)
                for name, job_id in jobs.items():
                    if holder == job_id:
                        held[name] += 1
            victim = max(held, key=lambda name: held[name])
            survivor = next(name for name in jobs if name != victim)
            orphans = [t for t in watch.history if watch.holder_at(t, now) == jobs[victim]]
            deferred_at_kill = sum(1 for s in dep.task_states(DAG_ID, run_id).values() if s == "deferred")
            killed_at = time.time()
            dep.kill_component(victim)
            # A dead component fails the harness's liveness checks: it is gone for good, forget it.
            dep.components.pop(victim)
            state = dep.wait_for_run(DAG_ID, run_id, timeout=length + 600)
            time.sleep(1)
            watch.stop_event.set()
            watch.join()
            tasks = dep.task_states(DAG_ID, run_id)
            log = sim.requests_log()
    finally:
        sim.stop()

    creates: dict[str, int] = {}
    for entry in log:
        if entry["endpoint"] == "create":
            prompt = (entry.get("json") or {}).get("prompt", "")
            creates[prompt] = creates.get(prompt, 0) + 1
    polls: dict[str, list[dict[str, Any]]] = {}
    for entry in log:
        key = wait_key(entry)
        if key and entry["endpoint"] in ("get", "list"):
            polls.setdefault(key, []).append(entry)
    duplicates = 0
    for entries in polls.values():
        entries.sort(key=lambda e: e["time"])
        for a, b in itertools.pairwise(entries):
            if b["time"] < a["time"] + a["elapsed"] - 0.05:
                duplicates += 1
    reassigned, resumed = [], []
    for trigger_id in orphans:
        moved = [t for t, holder in watch.history.get(trigger_id, []) if t > killed_at and holder == jobs[survivor]]
        if moved:
            reassigned.append(moved[0] - killed_at)
        for generation_id in watch.generations.get(trigger_id, []):
            after = [e["time"] for e in polls.get(generation_id, []) if e["time"] > killed_at]
            if after:
                resumed.append(min(after) - killed_at)
    bound = THRESHOLD + 2 * LOOP_SECONDS
    ok = sum(1 for s in tasks.values() if s == "success")
    result.update(
        {
            "run_state": state,
            "tasks_ok": ok,
            "tasks": len(tasks),
            "deferred_at_kill": deferred_at_kill,
            "held_at_kill": held,
            "victim": victim,
            "orphans": len(orphans),
            "reassigned_s": reassigned,
            "resumed_s": resumed,
            "duplicate_creates": sum(c - 1 for c in creates.values() if c > 1),
            "creates": len(creates),
            "duplicate_polls": duplicates,
            "bound_s": bound,
            "seconds": time.monotonic() - started,
        }
    )
    row = {
        "N": n,
        "deferred at kill": deferred_at_kill,
        "held (A/B)": "/".join(str(held[k]) for k in jobs),
        "killed": victim,
        "orphaned": len(orphans),
        "reassigned max s": max(reassigned) if reassigned else float("nan"),
        "first poll after kill max s": max(resumed) if resumed else float("nan"),
        "bound s": bound,
        "ended right": f"{ok}/{len(tasks)}",
        "duplicate creates": result["duplicate_creates"],
        "duplicate polls": duplicates,
    }
    result["row"] = row
    result["markdown"] = (
        f"SQLite, LocalExecutor, two triggerers on one host (the second with `--skip-serve-logs`), "
        f"`[triggerer] triggerer_health_check_threshold` = {THRESHOLD:g} s (default 30), heartbeats every 1 s; "
        f"{sensors} sensors + {generates} generate operators, generations completing {length:g} s after creation; "
        f"the triggerer holding more triggers SIGKILLed once all were deferred. Took {result['seconds']:.0f} s.\n\n"
        + table([row], list(row))
    )
    return result
