"""One call budget for the whole production deployment (issue 20's target), measured at the simulator.

120 universal-endpoint waits (``poll_interval`` 2 s: 60 calls/s asked) in four deferred sensors of 30 ids
each, two routed to ``triggerer-luma`` (``queue="luma"``) and two to the ``default`` triggerers, so the
waits are certainly spread over more than one triggerer process. The Luma connection has
``max_calls_per_second=5`` and ``max_call_burst=5``: with ``budget_redis_conn_id`` no one-second window of
the simulator's log holds more than 10 of these calls; without it each process keeps a budget of its own
and the deployment goes above 10, or the first figure would prove nothing.
"""

from __future__ import annotations

import time

import pytest

from tests.support.budget import busiest_second, create_universal
from tests.support.connection import connection_json
from tests.support.deployment import DeploymentError
from tests.support.production import ProductionDeployment
from tests.support.scenarios import wait_for

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(480)]

WAITS, PER_SENSOR = 120, 30
RATE, BURST = 5, 5
BOUND = RATE + BURST
#: How long the waits poll once all four triggers are held, before the test completes the generations.
POLLING_SECONDS = 15.0
REDIS_CONN = "luma_budget_redis"

DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_luma.sensors.luma import LumaGenerationSensor

GROUPS = {groups!r}


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def budget_dag():
    for index, ids in enumerate(GROUPS):
        # retries: only for Airflow's own resume-after-defer race (checked): tests/deployment/AIRFLOW_RACE.md.
        LumaGenerationSensor(task_id=f"wait_{{index}}", generation_ids=ids, api="video", luma_conn_id="{conn_id}",
                             queue="luma" if index % 2 else "default", timeout=300, retries=1, retry_delay=1)


budget_dag()
"""


def budgeted_run(dep: ProductionDeployment, monkeypatch: pytest.MonkeyPatch, shared: bool) -> tuple[int, int]:
    """Run the four sensors on a connection with (``shared``) or without the Redis extra: the busiest second
    of their polls at the simulator, and how many polls there were."""
    sim = dep.simulator
    name = "shared" if shared else "local"
    token, dag_id, conn_id = f"[budget {name}]", f"luma_budget_{name}", f"luma_budget_{name}"
    sim.script(token, queued_seconds=1, dreaming_seconds=36000)  # until the test completes them
    ids = [generation["id"] for generation in create_universal(sim, monkeypatch, WAITS, token)]
    extras = {"poll_interval": 2, "max_calls_per_second": RATE, "max_call_burst": BURST}
    if shared:
        extras["budget_redis_conn_id"] = REDIS_CONN
    dep.add_connection(conn_id, connection_json(sim, **extras))
    groups = [ids[i : i + PER_SENSOR] for i in range(0, WAITS, PER_SENSOR)]
    dep.add_dag(DAG_SOURCE.format(groups=groups, dag_id=dag_id, conn_id=conn_id), f"{dag_id}.py")
    run_id = dep.trigger(dag_id)

    def triggers_held() -> bool:
        rows = dep.query(
            "SELECT t.triggerer_id FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id "
            "WHERE ti.dag_id = ? AND ti.run_id = ?",
            (dag_id, run_id),
        )
        return len(rows) == len(groups) and all(job is not None for (job,) in rows)

    try:
        wait_for(triggers_held, 180, "all four sensors deferred and their triggers taken")
    except AssertionError as error:
        raise DeploymentError(f"{error}: {dep.task_states(dag_id, run_id)}\n{dep.logs_tail()}") from None
    time.sleep(POLLING_SECONDS)
    for generation_id in ids:
        sim.set_state(generation_id, "completed")
    assert dep.wait_for_run(dag_id, run_id, timeout=180) == "success", dep.task_states(dag_id, run_id)
    assert all(dep.retried_only_for_airflows_race(dag_id, run_id, f"wait_{i}") for i in range(len(groups)))
    for index, group in enumerate(groups):
        assert [g["id"] for g in dep.xcom(dag_id, run_id, f"wait_{index}")] == group

    ours = set(ids)
    polls = [entry["time"] for entry in sim.requests("video_get") if entry["query"].get("generation_id") in ours]
    return busiest_second(polls), len(polls)


def test_one_budget_holds_for_every_process_with_the_redis_extra_and_not_without(
    production: ProductionDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    production.add_connection(REDIS_CONN, production.redis_connection(db=2))
    shared_busiest, shared_polls = budgeted_run(production, monkeypatch, shared=True)
    local_busiest, local_polls = budgeted_run(production, monkeypatch, shared=False)
    print(
        f"\nbusiest second at the API: {shared_busiest} with the Redis extra ({shared_polls} polls), "
        f"{local_busiest} without ({local_polls} polls); bound {BOUND}"
    )
    assert shared_busiest <= BOUND
    assert local_busiest > BOUND  # else the figure above proves nothing
