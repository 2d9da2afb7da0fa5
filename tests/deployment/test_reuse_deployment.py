"""A retried generate task reuses the generation of its first try, on a real Airflow 3.3 deployment."""

from __future__ import annotations

import time

import pytest

from tests.support.deployment import AirflowDeployment

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(240)]

DAG_ID = "luma_deploy_reuse"
PROMPT = "a paper boat on a rainy street (reuse test)"

DAG_SOURCE = f'''
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator

with DAG("{DAG_ID}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False):
    LumaGenerateVideoOperator(
        task_id="generate",
        prompt="{PROMPT}",
        wait_timeout=3,                     # the first try's wait fails: the generation takes longer
        retries=1,
        retry_delay=timedelta(seconds=3),
    )
'''


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_retry_reuses_the_first_tries_generation(airflow_deployment: AirflowDeployment) -> None:
    dep, sim = airflow_deployment, airflow_deployment.simulator
    sim.script(PROMPT, queued_seconds=600)  # never completes on its own: the test decides when
    dep.add_dag(DAG_SOURCE, f"{DAG_ID}.py")
    run_id = dep.trigger(DAG_ID)

    def ours():
        return [g for g in sim.generations() if g["request"]["prompt"] == PROMPT]

    (generation,) = wait_for(ours, 60, "the generation to be created")
    # The first try's wait times out; once the task awaits its retry, let the generation finish.
    wait_for(lambda: dep.task_states(DAG_ID, run_id).get("generate") == "up_for_retry", 60, "the first try to fail")
    sim.set_state(generation["id"], "completed")

    assert dep.wait_for_run(DAG_ID, run_id, timeout=90) == "success", dep.logs_tail()
    result = dep.xcom(DAG_ID, run_id, "generate")
    assert result["id"] == generation["id"]
    assert result["state"] == "completed"
    creates = [r for r in sim.requests("create") if r.get("json", {}).get("prompt") == PROMPT]
    assert len(creates) == 1, "the retry paid for a second generation"
    assert len(ours()) == 1
    log = dep.task_log_text(DAG_ID, run_id, "generate")
    assert f"Reusing generation {generation['id']} from try 1 (completed)" in log
    # Success cleared the record: clearing the task later would submit a new generation.
    assert dep.query("SELECT key FROM task_state_store WHERE dag_id = ?", (DAG_ID,)) == []
