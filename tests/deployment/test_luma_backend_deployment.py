"""
Luma's own API as the backend on a real Airflow 3.3 deployment: the sensor defers and succeeds, and
``cancel_on_kill`` cancels a deferred wait the user marks failed (through Airflow's REST API, as the
UI does) with exactly one DELETE, while a cleared one is never cancelled.

The task instance's state is read by the real trigger in the real triggerer (``BaseTrigger.on_kill``,
Airflow 3.3+), through the Task SDK.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import SENTINEL_KEY, connection_json
from tests.support.deployment import AirflowDeployment, deployment
from tests.support.logs import find_leaks

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(300)]

DAG_ID = "luma_deploy_backend"
DAG_SOURCE = f'''
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import LumaGenerationSensor


@dag(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     params={{"prompt": "a lighthouse at dusk"}})
def luma_deploy_backend():
    @task
    def submit(params=None) -> dict:
        return LumaHook().create_generation(params["prompt"], model="luma/ray-flash-2", duration=5).to_dict()

    # retries: only for Airflow's own resume-after-defer race (tests/deployment/AIRFLOW_RACE.md), checked below.
    LumaGenerationSensor(
        task_id="wait", generation_id=submit(), timeout=200, cancel_on_kill=True, retries=1, retry_delay=1
    )


luma_deploy_backend()
'''


@pytest.fixture(scope="module")
def luma_deployment() -> Iterator[AirflowDeployment]:
    """A deployment whose ``luma_default`` is Luma's backend of a simulator; "kept waiting" prompts stay queued."""
    sim = LumaSimulator(api_key=SENTINEL_KEY, queued_seconds=2.0, dreaming_seconds=2.0, echo_key_in_errors=True)
    sim.start()
    sim.script("kept waiting", queued_seconds=600)
    extra = {
        "AIRFLOW_CONN_LUMA_DEFAULT": connection_json(sim, backend="luma", poll_interval=2),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    try:
        with deployment(extra_env=extra) as dep:
            dep.simulator = sim
            dep.add_dag(DAG_SOURCE, f"{DAG_ID}.py")
            yield dep
    finally:
        sim.stop()


def api(dep: AirflowDeployment, method: str, path: str, body: dict) -> requests.Response:
    """A call to Airflow's REST API, as the UI makes it (a token of the all-admins simple auth manager)."""
    token = requests.get(f"{dep.api_url}/auth/token", timeout=10).json()["access_token"]
    answer = requests.request(
        method, f"{dep.api_url}/api/v2{path}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert answer.status_code < 300, answer.text
    return answer


def polls_of(sim: LumaSimulator, generation_id: str) -> int:
    return sum(r["path"].endswith(generation_id) for r in sim.requests("dm_get"))


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_the_sensor_on_lumas_backend_defers_succeeds_and_a_mark_failed_cancels(luma_deployment) -> None:
    dep, sim = luma_deployment, luma_deployment.simulator
    ok = dep.trigger(DAG_ID, conf={"prompt": "a lighthouse at dusk"})
    killed = dep.trigger(DAG_ID, conf={"prompt": "kept waiting: marked failed"})
    cleared = dep.trigger(DAG_ID, conf={"prompt": "kept waiting: cleared"})
    for run in (killed, cleared):
        wait_until(lambda run=run: dep.task_states(DAG_ID, run).get("wait") == "deferred", 120, f"{run} deferred")
        # The trigger runs in the triggerer once it has polled: the sensor's first check, then the trigger's
        # poll (a task marked failed before the triggerer runs its trigger has no on_kill to call).
        generation_id = dep.xcom(DAG_ID, run, "submit")["id"]
        wait_until(lambda gid=generation_id: polls_of(sim, gid) >= 2, 120, f"{run}'s trigger polled")

    api(dep, "PATCH", f"/dags/{DAG_ID}/dagRuns/{killed}/taskInstances/wait", {"new_state": "failed"})
    api(
        dep,
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        {"dry_run": False, "task_ids": ["wait"], "dag_run_id": cleared, "only_failed": False},
    )
    killed_id = dep.xcom(DAG_ID, killed, "submit")["id"]
    wait_until(lambda: sim.count("dm_delete") >= 1, 60, dep.logs_tail())
    assert dep.wait_for_run(DAG_ID, ok, timeout=120) == "success", dep.task_log_text(DAG_ID, ok, "wait")[-3000:]
    time.sleep(5)  # time for a wrong second DELETE (the cleared run's) to arrive

    assert [r["path"].rsplit("/", 1)[-1] for r in sim.requests("dm_delete")] == [killed_id]
    assert dep.retried_only_for_airflows_race(DAG_ID, ok, "wait"), dep.audit_log(DAG_ID, ok)
    assert dep.task_states(DAG_ID, killed)["wait"] == "failed"
    assert dep.saw_state(DAG_ID, ok, "wait", "deferred"), dep.deferral_evidence(DAG_ID, ok, "wait")
    result = dep.xcom(DAG_ID, ok, "wait")
    assert (result["state"], result["api"]) == ("completed", "dream-machine")
    assert sim.count("create") == sim.count("video_create") == 0  # the AI/ML API's routes never asked
    # The trigger's own lines go to the task's log (its triggerer part); the cancel's, when it ends after
    # Airflow has given up on the trigger and closed its log (triggerer_job_runner.py:584-592), to the
    # triggerer's own log.
    told = f"Task marked failed: cancelled Luma generation(s) {killed_id}."

    def killed_log() -> str:
        return dep.task_log_text(DAG_ID, killed, "wait") + dep.component_logs()["triggerer"]

    wait_until(lambda: told in killed_log(), 30, "the cancel's line in the task's or the triggerer's log")
    assert told in killed_log(), killed_log()[-3000:]
    cleared_log = dep.task_log_text(DAG_ID, cleared, "wait")
    assert "not cancelling" in cleared_log, cleared_log[-3000:]
    leaks = find_leaks({"task logs": dep.task_log_text(), "database": dep.db_dump_text(), **dep.component_logs()})
    assert not leaks, f"the API key leaked: {leaks}"
