"""A real Airflow 3 deployment: the triggerer is SIGKILLed while the sensor is deferred, then restarted; the
run still succeeds with exactly one paid generation. Afterwards every log, XCom, rendered field, trigger row
and exception text is scanned for the API key."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from tests.support.deployment import AirflowDeployment, DeploymentError
from tests.support.logs import find_leaks

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(300)]

DAG_ID = "luma_chaos_triggerer_kill"
PROMPT = "chaos-kill a lighthouse in a gale"
FAILING_PROMPT = "chaos-kill-failing a storm [sim:fail]"
DAG_SOURCE = f'''
from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator
from airflow_provider_luma.sensors.luma import LumaGenerationSensor


@dag(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     params={{"prompt": "unset"}})
def luma_chaos_triggerer_kill():
    generate = LumaGenerateVideoOperator(
        task_id="generate", prompt="{{{{ params.prompt }}}}", wait_for_completion=False
    )
    # retries: only for Airflow's own resume-after-defer race (checked below): tests/deployment/AIRFLOW_RACE.md.
    LumaGenerationSensor(
        task_id="wait", generation_id=generate.output, timeout=300, poke_interval=1, retries=1, retry_delay=1
    )


luma_chaos_triggerer_kill()
'''


@dataclass
class KillRun:
    ok: str
    failing: str
    generation_id: str
    killed_at: float
    restarted_at: float
    state_at_kill: str


def wait_until(condition, timeout: float, what: str, dep: AirflowDeployment):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep.check_alive(["scheduler", "dag-processor", "api-server"])
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise DeploymentError(f"{what} did not happen within {timeout:.0f} s.\n{dep.logs_tail()}")


@pytest.fixture(scope="module")
def kill_run(chaos_deployment: AirflowDeployment) -> KillRun:
    dep = chaos_deployment
    sim = dep.simulator
    # Dreaming until the test completes it, once the restarted triggerer polled: no window to overrun.
    sim.script("chaos-kill a lighthouse", queued_seconds=3, dreaming_seconds=3600)
    dep.add_dag(DAG_SOURCE, f"{DAG_ID}.py")
    ok = dep.trigger(DAG_ID, conf={"prompt": PROMPT})
    failing = dep.trigger(DAG_ID, conf={"prompt": FAILING_PROMPT})

    def deferred_and_polled():
        if not dep.saw_state(DAG_ID, ok, "wait", "deferred"):
            return None
        rows = dep.query(
            "SELECT t.id FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id "
            "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = 'wait' AND t.triggerer_id IS NOT NULL",
            (DAG_ID, ok),
        )
        if not rows:
            return None
        generation_id = dep.xcom(DAG_ID, ok, "generate", key="generation_id")
        # The triggerer's own long polls (the sensor's check before deferring asks without a state).
        polls = [e for e in sim.requests("get") if e["query"].get("generation_id") == generation_id]
        return generation_id if any("state" in e["query"] for e in polls) else None

    generation_id = wait_until(deferred_and_polled, 90, "The sensor deferring and its trigger polling", dep)
    dep.kill_triggerer()
    killed_at = time.time()
    state_at_kill = sim.generation(generation_id)["state"]
    assert dep.components["triggerer"].process.poll() is not None
    time.sleep(2)
    dep.start_triggerer()
    restarted_at = time.time()

    def polled_again():
        return any(
            e["query"].get("generation_id") == generation_id and e["time"] >= restarted_at for e in sim.requests("get")
        )

    wait_until(polled_again, 120, "The restarted triggerer polling the generation", dep)
    sim.set_state(generation_id, "completed")
    dep.wait_for_run(DAG_ID, ok, timeout=150)
    dep.wait_for_run(DAG_ID, failing, timeout=60)
    return KillRun(ok, failing, generation_id, killed_at, restarted_at, state_at_kill)


def test_run_survives_a_triggerer_kill_with_one_paid_generation(chaos_deployment: AirflowDeployment, kill_run):
    dep, sim = chaos_deployment, chaos_deployment.simulator
    assert dep.run_state(DAG_ID, kill_run.ok) == "success", dep.task_states(DAG_ID, kill_run.ok)
    assert dep.task_states(DAG_ID, kill_run.ok) == {"generate": "success", "wait": "success"}

    # Exactly one create for this run: neither the kill nor the resume paid for a second generation.
    creates = [e for e in sim.requests("create") if e["json"]["prompt"] == PROMPT]
    assert len(creates) == 1
    assert sum(1 for g in sim.generations() if g["request"]["prompt"] == PROMPT) == 1
    # Killed mid-wait: the generation was not finished when the triggerer died.
    assert kill_run.state_at_kill in ("queued", "dreaming")

    result = dep.xcom(DAG_ID, kill_run.ok, "wait")
    assert result["id"] == kill_run.generation_id
    assert result["state"] == "completed"
    assert result["video_url"]

    # The same trigger (not a second deferral) was resumed by the restarted triggerer, which polled on.
    evidence = dep.deferral_evidence(DAG_ID, kill_run.ok, "wait")
    assert len(evidence["trigger_ids"]) == 1, evidence
    # Try 1, or try 2 only after Airflow's own race failed try 1 of this very task instance
    # (tests/deployment/AIRFLOW_RACE.md): never a retry for anything the provider did.
    assert dep.retried_only_for_airflows_race(DAG_ID, kill_run.ok, "wait"), dep.audit_log(DAG_ID, kill_run.ok)
    resumed = [
        e
        for e in sim.requests("get")
        if e["query"].get("generation_id") == kill_run.generation_id and e["time"] >= kill_run.restarted_at
    ]
    assert resumed
    assert all(e["status"] == 200 for e in resumed)
    assert dep.component_logs()["triggerer"].count("===== starting triggerer") == 2

    # The other run, whose generation failed, failed with the reason (also across the restart).
    assert dep.task_states(DAG_ID, kill_run.failing) == {"generate": "success", "wait": "failed"}
    assert "simulated failure" in dep.task_log_text(DAG_ID, kill_run.failing, "wait")


def test_api_key_leaks_nowhere_after_the_chaos(chaos_deployment: AirflowDeployment, kill_run):
    dep = chaos_deployment
    task_logs = dep.task_log_text()
    component_logs = dep.component_logs()
    db_text = dep.db_dump_text()
    xcoms = {
        (run, task): dep.xcom(DAG_ID, run, task)
        for run in (kill_run.ok, kill_run.failing)
        for task in ("generate", "wait")
        if (run, task) != (kill_run.failing, "wait")
    }

    # The scan saw real material: both runs' task logs, every component's output, XCom, rendered
    # template fields, trigger rows and the failed task's exception text.
    assert f"run_id={kill_run.ok}" in task_logs
    assert f"run_id={kill_run.failing}" in task_logs
    assert {"scheduler", "triggerer", "dag-processor", "api-server"} <= set(component_logs)
    assert all(text.strip() for text in component_logs.values())
    lines = db_text.splitlines()

    def rows(table: str, needle: str) -> list[str]:
        return [line for line in lines if line.startswith(f"{table}:") and needle in line]

    assert rows("trigger (sampled)", kill_run.generation_id), "no trigger row of the wait was seen"
    assert "LumaGenerationTrigger" in rows("trigger (sampled)", kill_run.generation_id)[0]
    assert rows("rendered_task_instance_fields", PROMPT), "no rendered prompt"
    assert rows("xcom", kill_run.generation_id), "no XCom row"
    assert "Luma wait ended" in component_logs["triggerer"] + task_logs
    assert "simulated failure" in task_logs  # the failure's exception text
    assert "Traceback" in task_logs or "LumaError" in task_logs or "AirflowFailException" in task_logs
    assert xcoms[(kill_run.ok, "wait")]["id"] == kill_run.generation_id
    # Every call reached the simulator with the key (it answers 401 otherwise).
    assert all(e["status"] < 400 for e in dep.simulator.requests() if e["endpoint"] in ("create", "get", "list"))

    leaks = find_leaks({"task logs": task_logs, "database": db_text, "xcom": repr(xcoms), **component_logs})
    assert not leaks, f"the API key leaked: {leaks}"
