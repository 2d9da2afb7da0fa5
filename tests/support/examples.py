"""The example DAGs run on a real deployment (tests/support/deployment.py): what the UI tests look at."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.support.deployment import AirflowDeployment

EXAMPLE_DAGS = Path(__file__).parents[2] / "example_dags"
#: The example DAGs a user triggers, and the one the producer's Asset event triggers.
TRIGGERED = ("luma_text_to_video", "luma_fan_out", "luma_extend", "luma_universal", "luma_assets_producer")
SCHEDULED = "luma_assets_consumer"
#: Two generate tasks that fail: a generation the simulator fails (``[sim:fail]``), a refused parameter.
FAILING_DAG_ID = "luma_failing_generate"
FAILING_DAG = f"""
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator

with DAG("{FAILING_DAG_ID}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False):
    # The generation fails (after the create); the other task's rendered parameter is refused before any call.
    # (Waiting in the worker: a deferral would expose it to Airflow's resume race, tests/deployment/AIRFLOW_RACE.md.)
    LumaGenerateVideoOperator(
        task_id="generate", prompt="a storm at sea [sim:fail]", model="ray-flash-2", deferrable=False
    )
    LumaGenerateVideoOperator(task_id="refused", prompt="a storm at sea", aspect_ratio="{{{{ '16:10' }}}}")
"""


#: How often a run that Airflow's resume-after-defer race failed is triggered again (a loaded 2-core
#: machine meets the race in a few runs of twenty; tests/deployment/AIRFLOW_RACE.md).
RACE_RERUNS = 3


@dataclass
class ExampleRuns:
    """The run id of each example DAG's run, and of the failing generate DAG's."""

    runs: dict[str, str]
    failing: str


def run_examples(dep: AirflowDeployment) -> ExampleRuns:
    """
    Each example DAG run once on ``dep`` (the consumer triggered by the producer's Asset event; the
    deployment needs ``[scheduler] use_job_schedule``), and the failing generate DAG; all finished.
    """
    files = {path.stem.removeprefix("example_"): (path.read_text(), path.name) for path in EXAMPLE_DAGS.glob("*.py")}
    files[FAILING_DAG_ID] = (FAILING_DAG, f"{FAILING_DAG_ID}.py")
    for source, name in files.values():  # all at once: the processor parses them in one pass
        (dep.dags_folder / name).write_text(source)
    for dag_id, (source, name) in files.items():
        dep.add_dag(source, name, dag_id=dag_id)
    with ThreadPoolExecutor(max_workers=len(TRIGGERED) + 1) as pool:  # each trigger is a CLI start-up
        started = {dag_id: pool.submit(dep.trigger, dag_id) for dag_id in (*TRIGGERED, FAILING_DAG_ID)}
        runs = {dag_id: future.result() for dag_id, future in started.items()}
    failing = runs.pop(FAILING_DAG_ID)
    for dag_id in runs:
        for _ in range(RACE_RERUNS):
            if dep.wait_for_run(dag_id, runs[dag_id], timeout=240) == "success":
                break
            if not failed_by_airflows_race(dep, dag_id, runs[dag_id]):
                break  # a failure of its own: the tests show it
            runs[dag_id] = dep.trigger(dag_id)
        dep.wait_for_run(dag_id, runs[dag_id], timeout=240)
    dep.wait_for_run(FAILING_DAG_ID, failing, timeout=120)
    deadline = time.monotonic() + 60
    while not (consumer := dep.query("SELECT run_id FROM dag_run WHERE dag_id = ?", (SCHEDULED,))):
        assert time.monotonic() < deadline, f"{SCHEDULED} was not triggered by the producer's Asset event"
        time.sleep(0.5)
    runs[SCHEDULED] = consumer[0][0]
    dep.wait_for_run(SCHEDULED, runs[SCHEDULED], timeout=120)
    return ExampleRuns(runs, failing)


def failed_by_airflows_race(dep: AirflowDeployment, dag_id: str, run_id: str) -> bool:
    """
    Whether every failed task of the run was failed by Airflow's resume-after-defer race (audit log
    "state mismatch": the executor reported ``success`` for a task still running;
    tests/deployment/AIRFLOW_RACE.md), not by anything the task did.
    """
    failed = dep.query(
        "SELECT task_id, map_index FROM task_instance WHERE dag_id = ? AND run_id = ? AND state = 'failed'",
        (dag_id, run_id),
    )
    raced = {
        (task_id, map_index)
        for task_id, map_index, extra in dep.query(
            "SELECT task_id, map_index, extra FROM log WHERE dag_id = ? AND run_id = ? AND event = 'state mismatch'",
            (dag_id, run_id),
        )
        if "finished with state success" in str(extra)
    }
    return bool(failed) and all(tuple(row) in raced for row in failed)


def run_error_lines(dep: AirflowDeployment, dag_id: str, run_id: str) -> list[str]:
    """
    The ERROR- and CRITICAL-level lines about a run: in its task logs (one JSON object per line) and
    in what the components printed, where a LocalExecutor's task supervisors write (Airflow's client
    logs "XCom not found" there, ``airflow/sdk/api/client.py``), found by dag id, run id or ti id.
    """
    found = []
    for line in dep.task_log_text(dag_id, run_id).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and str(record.get("level", "")).lower() in {"error", "critical"}:
            found.append(line)
    ti_ids = [
        str(row[0])
        for row in dep.query("SELECT id FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
    ]
    marks = [f"dag_id={dag_id}", f"{dag_id}.", run_id, *ti_ids]
    for text in dep.component_logs().values():
        found += [
            line
            for line in text.splitlines()
            if re.search(r"\[(error|critical)\s*\]", line) and any(mark in line for mark in marks)
        ]
    return found
