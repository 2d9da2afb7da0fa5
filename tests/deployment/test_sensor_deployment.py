"""LumaGenerationSensor on a real Airflow 3 deployment: deferral, success, failure, no key leaks."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from tests.support.deployment import AirflowDeployment
from tests.support.logs import find_leaks

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(240)]

DAG_ID = "luma_deploy_sensor"

DAG_SOURCE = f'''
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import LumaGenerationSensor


@dag(
    dag_id="{DAG_ID}",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={{"prompt": "a lighthouse at dusk"}},
)
def luma_deploy_sensor():
    @task
    def submit(params=None) -> str:
        return LumaHook().create_generation(params["prompt"]).id

    # retries: only for Airflow's own resume-after-defer race on a loaded machine (the test checks that a retry
    # happened for no other reason: tests/deployment/AIRFLOW_RACE.md); a failed generation is never retried.
    LumaGenerationSensor(
        task_id="wait", generation_id=submit(), timeout=120, poke_interval=1, retries=1, retry_delay=1
    )


luma_deploy_sensor()
'''


@dataclass
class Runs:
    ok: str
    failing: str
    seconds: float


@pytest.fixture(scope="module")
def runs(airflow_deployment: AirflowDeployment) -> Runs:
    """Both runs (one succeeding, one whose generation fails), triggered together and finished."""
    started = time.monotonic()
    airflow_deployment.add_dag(DAG_SOURCE, f"{DAG_ID}.py")
    ok = airflow_deployment.trigger(DAG_ID, conf={"prompt": "a lighthouse at dusk"})
    failing = airflow_deployment.trigger(DAG_ID, conf={"prompt": "a storm at sea [sim:fail]"})
    airflow_deployment.wait_for_run(DAG_ID, ok, timeout=120)
    airflow_deployment.wait_for_run(DAG_ID, failing, timeout=120)
    return Runs(ok=ok, failing=failing, seconds=time.monotonic() - started)


def test_sensor_defers_and_succeeds(airflow_deployment: AirflowDeployment, runs: Runs) -> None:
    dep = airflow_deployment
    assert dep.run_state(DAG_ID, runs.ok) == "success", (
        dep.task_states(DAG_ID, runs.ok),
        dep.task_log_text(DAG_ID, runs.ok, "wait")[-4000:],
        dep.audit_log(DAG_ID, runs.ok),
    )
    assert dep.task_states(DAG_ID, runs.ok) == {"submit": "success", "wait": "success"}

    # Try 1, or try 2 after Airflow's own race failed try 1 of this task instance: tests/deployment/AIRFLOW_RACE.md.
    assert dep.retried_only_for_airflows_race(DAG_ID, runs.ok, "wait"), dep.audit_log(DAG_ID, runs.ok)

    evidence = dep.deferral_evidence(DAG_ID, runs.ok, "wait")
    assert dep.saw_state(DAG_ID, runs.ok, "wait", "deferred"), evidence
    assert evidence["log_says_deferred"], evidence
    assert evidence["trigger_ids"], evidence

    generation_id = dep.xcom(DAG_ID, runs.ok, "submit")
    result = dep.xcom(DAG_ID, runs.ok, "wait")
    assert result["id"] == generation_id
    assert result["state"] == "completed"
    assert result["video_url"], result
    assert result["video_url"].startswith(dep.simulator.cdn_url)
    # Exactly one generation per run was created: the sensor never re-submits.
    prompts = [r["json"]["prompt"] for r in dep.simulator.requests("create")]
    assert prompts.count("a lighthouse at dusk") == 1


def test_failed_generation_fails_the_sensor(airflow_deployment: AirflowDeployment, runs: Runs) -> None:
    dep = airflow_deployment
    assert dep.run_state(DAG_ID, runs.failing) == "failed"
    assert dep.task_states(DAG_ID, runs.failing) == {"submit": "success", "wait": "failed"}
    assert dep.saw_state(DAG_ID, runs.failing, "wait", "deferred"), dep.deferral_evidence(DAG_ID, runs.failing, "wait")
    assert "simulated failure" in dep.task_log_text(DAG_ID, runs.failing, "wait")
    with pytest.raises(KeyError):
        dep.xcom(DAG_ID, runs.failing, "wait")


def test_api_key_leaks_nowhere(airflow_deployment: AirflowDeployment, runs: Runs) -> None:
    dep = airflow_deployment
    task_logs = dep.task_log_text()
    component_logs = dep.component_logs()
    db_text = dep.db_dump_text()
    # The scans look at real material: both runs' logs, the triggerer's output, the XCom and trigger rows.
    assert f"run_id={runs.ok}" in task_logs
    assert f"run_id={runs.failing}" in task_logs
    assert {"scheduler", "triggerer", "dag-processor", "api-server"} <= set(component_logs)
    assert dep.xcom(DAG_ID, runs.ok, "submit") in db_text
    assert "LumaGenerationTrigger" in db_text
    # Every call reached the simulator with the key (it answers 401 otherwise).
    assert all(r["status"] < 400 for r in dep.simulator.requests() if r["endpoint"] != "video")

    leaks = find_leaks({"task logs": task_logs, "database": db_text, **component_logs})
    assert not leaks, f"the API key leaked: {leaks}"


def test_nothing_listens_beyond_loopback(airflow_deployment: AirflowDeployment) -> None:
    # The scheduler's and triggerer's log servers would bind every interface: the harness skips them.
    listening = airflow_deployment.listening_addresses()
    assert listening["api-server"] == {("127.0.0.1", airflow_deployment.port)}
    wide = {name: addrs for name, addrs in listening.items() if any(ip != "127.0.0.1" for ip, _ in addrs)}
    assert not wide, f"bound beyond 127.0.0.1: {wide}"
