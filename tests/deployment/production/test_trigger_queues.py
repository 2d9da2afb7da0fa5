"""Trigger queues (Airflow 3.2+): a sensor with ``queue="luma"`` waits only in the triggerer started with
``--queues luma``; a sensor without a queue in the two of the ``default`` queue.

With ``[triggerer] queues_enabled``, a deferring task's trigger takes the task's ``queue``
(``airflow/sdk/execution_time/task_runner.py``, ``_defer_task``), and a triggerer takes only the
triggers of its ``--queues`` (``airflow/models/trigger.py``, ``get_sorted_triggers`` and
``ids_for_triggerer``). The task's queue also routes its worker part: the Celery worker consumes ``luma``.
"""

from __future__ import annotations

import pytest

from tests.support.deployment import DeploymentError
from tests.support.production import ProductionDeployment
from tests.support.scenarios import wait_for
from tests.support.simulator_calls import prompt_of

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(300)]

DAG_ID = "luma_trigger_queues"
TOKEN = "[queues]"
DAG_SOURCE = f'''
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import LumaGenerationSensor


@dag(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def luma_trigger_queues():
    @task
    def submit(name: str) -> str:
        return LumaHook().create_generation(f"queues {{name}} {TOKEN}").id

    # retries: only for Airflow's own resume-after-defer race (checked): tests/deployment/AIRFLOW_RACE.md.
    LumaGenerationSensor(task_id="wait_luma", generation_id=submit.override(task_id="submit_luma")("luma"),
                         queue="luma", timeout=300, poke_interval=1, retries=1, retry_delay=1)
    LumaGenerationSensor(task_id="wait_default", generation_id=submit.override(task_id="submit_default")("default"),
                         timeout=300, poke_interval=1, retries=1, retry_delay=1)


luma_trigger_queues()
'''


def test_a_luma_queue_sensor_waits_only_in_the_luma_triggerer(production: ProductionDeployment) -> None:
    dep, sim = production, production.simulator
    sim.script(TOKEN, queued_seconds=1, dreaming_seconds=36000)  # until the test completes them
    dep.add_dag(DAG_SOURCE, f"{DAG_ID}.py")
    run_id = dep.trigger(DAG_ID)

    def held_triggers():
        rows = dep.query(
            "SELECT ti.task_id, t.id, t.created_date, t.queue, t.triggerer_id FROM trigger t "
            "JOIN task_instance ti ON ti.trigger_id = t.id WHERE ti.dag_id = ? AND ti.run_id = ?",
            (DAG_ID, run_id),
        )
        held = len(rows) == 2 and all(r[4] is not None for r in rows)
        return {task: ((tid, str(created)), queue, job) for task, tid, created, queue, job in rows} if held else None

    try:
        triggers = wait_for(held_triggers, 150, "both sensors deferred and their triggers taken")
    except AssertionError as error:
        raise DeploymentError(f"{error}: {dep.task_states(DAG_ID, run_id)}\n{dep.logs_tail()}") from None
    luma_id, luma_queue, _ = triggers["wait_luma"]
    default_id, default_queue, _ = triggers["wait_default"]
    assert (luma_queue, default_queue) == ("luma", "default")

    for generation in [g for g in sim.generations() if TOKEN in prompt_of(g)]:
        sim.set_state(generation["id"], "completed")
    assert dep.wait_for_run(DAG_ID, run_id, timeout=120) == "success", dep.task_states(DAG_ID, run_id)
    assert all(dep.retried_only_for_airflows_race(DAG_ID, run_id, t) for t in ("wait_luma", "wait_default"))

    # Every holder the sampler saw (trigger rows every 0.2 s): the luma one only, the default ones only.
    jobs = dep.triggerer_jobs
    holders = dep.trigger_holders()
    luma_holders = {h for _, h in holders[luma_id] if h is not None}
    default_holders = {h for _, h in holders[default_id] if h is not None}
    assert luma_holders == {jobs["triggerer-luma"]}, (luma_holders, jobs)
    assert default_holders, holders[default_id]
    assert default_holders <= {jobs["triggerer"], jobs["triggerer-2"]}, (default_holders, jobs)
    # The task's queue routed its worker part too.
    rows = dep.query("SELECT task_id, queue FROM task_instance WHERE dag_id = ? AND run_id = ?", (DAG_ID, run_id))
    assert dict(rows)["wait_luma"] == "luma"
    assert dict(rows)["wait_default"] == "default"
    for task_id in ("wait_luma", "wait_default"):
        assert dep.xcom(DAG_ID, run_id, task_id)["state"] == "completed"
