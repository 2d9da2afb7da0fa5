"""
One poisoned wait among healthy ones, on a real Airflow 3 triggerer (issue 19 item 1).

A generation whose ``failure_reason`` ends in half a UTF-16 surrogate pair (what a JavaScript service
emits when it cuts a string inside an emoji) used to raise ``UnicodeEncodeError`` in the triggerer's
msgpack encoder (``sync_state_to_supervisor`` survives only ``NotImplementedError``): the trigger
runner failed, the triggerer exited with code 0, and every other deferred task stayed deferred. Now
the poisoned wait fails alone with a clear message, the others succeed, and the triggerer stays up.
"""

from __future__ import annotations

import pytest

from airflow_provider_luma.testing import LumaSimulator
from tests.support.deployment import AirflowDeployment
from tests.support.logs import find_leaks

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(300)]

DAG_ID = "luma_poisoned_wait"
#: What the simulator puts in the poisoned generation's failure_reason: it ends inside an emoji.
POISON = "moderation flagged frame 12 \ud83d"
HEALTHY = ("calm sea", "calm lake", "calm river")

DAG_SOURCE = f'''
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import LumaGenerationSensor


@dag(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def luma_poisoned_wait():
    @task
    def submit(prompt: str) -> str:
        return LumaHook().create_generation(prompt).id

    for name in {(*HEALTHY, "poisoned sea")!r}:
        slug = name.replace(" ", "_")
        LumaGenerationSensor(
            task_id=f"wait_{{slug}}",
            generation_id=submit.override(task_id=f"submit_{{slug}}")(name),
            timeout=150,
            poke_interval=1,
            retries=1,  # only for Airflow's own resume-after-defer race (tests/deployment/AIRFLOW_RACE.md)
            retry_delay=1,
        )


luma_poisoned_wait()
'''


def test_one_poisoned_wait_fails_alone_and_the_triggerer_stays_up(chaos_deployment: AirflowDeployment) -> None:
    dep = chaos_deployment
    sim: LumaSimulator = dep.simulator
    # It fails while the others are still dreaming (they take 6 s): after the sensors deferred.
    sim.script("poisoned sea", outcome="failed", failure_reason=POISON, queued_seconds=5, dreaming_seconds=1)
    dep.add_dag(DAG_SOURCE, f"{DAG_ID}.py")
    run_id = dep.trigger(DAG_ID)
    state = dep.wait_for_run(DAG_ID, run_id, timeout=180)  # fails at once if the triggerer exits

    states = dep.task_states(DAG_ID, run_id)
    assert state == "failed", states  # the poisoned wait failed the run
    assert states["wait_poisoned_sea"] == "failed", states
    for name in HEALTHY:
        slug = name.replace(" ", "_")
        assert states[f"wait_{slug}"] == "success", (states, dep.task_log_text(DAG_ID, run_id, f"wait_{slug}")[-3000:])
        assert dep.saw_state(DAG_ID, run_id, f"wait_{slug}", "deferred")
    assert dep.saw_state(DAG_ID, run_id, "wait_poisoned_sea", "deferred")

    # The triggerer is alive and never lost its trigger runner.
    dep.check_alive(["triggerer"])
    triggerer_log = dep.component_logs()["triggerer"]
    assert "Trigger runner failed" not in triggerer_log
    assert "UnicodeEncodeError" not in triggerer_log

    # The poisoned task says why, in readable text: the generation, that it failed, the reason (cut cleanly).
    generation_id = dep.xcom(DAG_ID, run_id, "submit_poisoned_sea")
    poisoned_log = dep.task_log_text(DAG_ID, run_id, "wait_poisoned_sea")
    assert f"Luma generation failed ({generation_id}: moderation flagged frame 12" in poisoned_log, poisoned_log[-3000:]
    assert not find_leaks({"task logs": dep.task_log_text(), **dep.component_logs()})
