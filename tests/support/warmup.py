"""Warm every triggerer of a deployment before measuring: each one runs a Luma wait to its end, on a connection
stored in the metadata DB.

Why (Airflow 3.3.2, read in the venv and seen with py-spy): a triggerer answers its triggers' first lookup of a
connection that is not in their environment (``GetConnection``) in the loop that also heartbeats
(``TriggerRunnerSupervisor._handle_request`` → ``handle_get_connection``, ``airflow/jobs/triggerer_job_runner.py``
line 613), through an in-process execution API that it builds on that first request
(``make_client`` → ``in_process_api_server()``; Cadwyn then generates its versioned routers,
``Cadwyn._cadwyn_initialize``). Cold, on a loaded 2-core machine, that took 12-29 s: no heartbeat meanwhile,
so with ``[triggerer] triggerer_health_check_threshold`` below that, the other triggerer takes the stalled
one's triggers while it still runs them, and both poll one generation until the stalled one's next loop
cancels its copy. A failover measured on a cold stack measures that, not the failover. A connection given as
``AIRFLOW_CONN_...`` in the triggerer's environment is read in the trigger's own process and warms nothing:
the warm-up's connection lives in the DB only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tests.support.connection import connection_json
from tests.support.deployment import AirflowDeployment, DeploymentError
from tests.support.simulator_calls import control, create

DAG_ID = "luma_warm_up"
CONN_ID = "luma_warm_up"
TAG = "[warm-up]"
DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_luma.sensors.luma import LumaGenerationSensor


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     max_active_tasks=1000)
def warm_up():
    for i, queue in enumerate({queues!r}):
        LumaGenerationSensor(task_id=f"wait_{{i}}", generation_id="{{{{ dag_run.conf['ids'][%d] }}}}" % i,
                             queue=queue, luma_conn_id="{conn_id}", timeout=600, poke_interval=1,
                             retries=1, retry_delay=1)


warm_up()
"""


def warm_up_triggerers(
    dep: AirflowDeployment,
    sim: Any,
    *,
    queues: Mapping[str, str | None] | None = None,
    per_triggerer: int = 3,
    attempts: int = 4,
) -> dict[str, Any]:
    """Run short Luma waits until every triggerer of ``dep`` has held one to its end; return what it took.

    :param queues: ``{triggerer: its --queues value or None}`` (default: none has one); the waits of a
        queue are spread over the triggerers of that queue by Airflow, so each run holds
        ``per_triggerer`` waits per triggerer of the queue, and runs repeat (up to ``attempts``) until each
        triggerer has held one.
    """
    started = time.monotonic()
    queues = dict(queues or dict.fromkeys(dep.triggerer_jobs))
    task_queues: list[str] = []
    for name in dep.triggerer_jobs:
        task_queues += [queues.get(name) or "default"] * per_triggerer
    dep.add_connection(CONN_ID, connection_json(sim, timeout=60))  # a read time-out above any hold
    dep.add_dag(DAG_SOURCE.format(dag_id=DAG_ID, queues=task_queues, conn_id=CONN_ID), f"{DAG_ID}.py")
    # Long enough that every sensor defers (its first check happens from a Celery worker: seconds after the run).
    control(sim, "POST", "/_sim/script", {"prompt_contains": TAG, "queued_seconds": 1, "dreaming_seconds": 15})
    warmed: set[str] = set()
    runs = 0
    for _ in range(attempts):
        runs += 1
        ids = [create(sim, f"warm up {i} {TAG}")["id"] for i in range(len(task_queues))]
        run_id = dep.trigger(DAG_ID, conf={"ids": ids})
        if dep.wait_for_run(DAG_ID, run_id, timeout=300) != "success":
            raise DeploymentError(f"the warm-up run failed: {dep.task_states(DAG_ID, run_id)}\n{dep.logs_tail()}")
        names = {job: name for name, job in dep.triggerer_jobs.items()}
        ours = dep.run_trigger_ids(DAG_ID, run_id)
        for trigger, history in dep.trigger_holders().items():
            if trigger in ours:
                warmed |= {names[h] for _, h in history if h in names}
        if warmed >= set(dep.triggerer_jobs):
            break
    missing = set(dep.triggerer_jobs) - warmed
    if missing:
        raise DeploymentError(f"triggerer(s) {sorted(missing)} never ran a warm-up wait in {runs} runs")
    return {"runs": runs, "seconds": time.monotonic() - started, "stalls": heartbeat_stalls(dep)}


def heartbeat_stalls(dep: AirflowDeployment) -> dict[str, list[str]]:
    """``{triggerer: ["Heartbeat recovered after N seconds", ...]}``: the gaps Airflow logged in each one's output
    (``airflow/jobs/job.py``: a heartbeat later than the health-check threshold logs its delay)."""
    logs = dep.component_logs()
    out: dict[str, list[str]] = {}
    for name in dep.triggerer_jobs:
        lines = [line for line in logs.get(name, "").splitlines() if "Heartbeat recovered after" in line]
        out[name] = [line[line.index("Heartbeat recovered") :].split("[")[0].strip() for line in lines]
    return out
