"""Deployment scenarios run on both harnesses (SQLite + LocalExecutor, and the production shape): one body, two shapes.

- :func:`check_retry_reuse`: a retried generate task reuses the generation of its first try (the task
  state store, Airflow 3.3+), with exactly one create;
- :func:`check_asset_pair`: the example producer/consumer pair: the download's Asset event triggers the
  consumer, which reads the generation from the event's extra. The deployment must run with
  ``LUMA_DEMO_OUTPUT_DIR`` set to ``output_dir`` and ``[scheduler] use_job_schedule`` on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from airflow_provider_luma.operators.lineage import file_uri
from tests.support.deployment import AirflowDeployment, DeploymentError
from tests.support.simulator_calls import prompt_of

EXAMPLE_DAGS = Path(__file__).parents[2] / "example_dags"
PRODUCER, CONSUMER = "luma_assets_producer", "luma_assets_consumer"

REUSE_DAG_ID = "luma_deploy_reuse"
REUSE_PROMPT = "a paper boat on a rainy street (reuse test)"
REUSE_DAG_SOURCE = f'''
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator

with DAG("{REUSE_DAG_ID}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False):
    LumaGenerateVideoOperator(
        task_id="generate",
        prompt="{REUSE_PROMPT}",
        wait_timeout=3,                     # the first try's wait fails: the generation takes longer
        retries=1,
        retry_delay=timedelta(seconds=3),
    )
'''


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    """``condition()``'s first truthy value within ``timeout`` seconds (polled every 0.2 s), else AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def check_retry_reuse(dep: AirflowDeployment, sim: Any) -> None:
    """The first try's wait times out; the retry reuses its generation (one create) and clears the record."""
    sim.script(REUSE_PROMPT, queued_seconds=600)  # never completes on its own: the test decides when
    dep.add_dag(REUSE_DAG_SOURCE, f"{REUSE_DAG_ID}.py")
    run_id = dep.trigger(REUSE_DAG_ID)

    def ours() -> list[dict[str, Any]]:
        return [g for g in sim.generations() if prompt_of(g) == REUSE_PROMPT]

    (generation,) = wait_for(ours, 60, "the generation to be created")
    # The first try's wait times out; once the task awaits its retry, let the generation finish.
    wait_for(
        lambda: dep.task_states(REUSE_DAG_ID, run_id).get("generate") == "up_for_retry", 90, "the first try to fail"
    )
    sim.set_state(generation["id"], "completed")

    assert dep.wait_for_run(REUSE_DAG_ID, run_id, timeout=90) == "success", dep.logs_tail()
    result = dep.xcom(REUSE_DAG_ID, run_id, "generate")
    assert result["id"] == generation["id"]
    assert result["state"] == "completed"
    creates = [r for r in sim.requests("create") if r.get("json", {}).get("prompt") == REUSE_PROMPT]
    assert len(creates) == 1, "the retry paid for a second generation"
    assert len(ours()) == 1
    log = dep.task_log_text(REUSE_DAG_ID, run_id, "generate")
    assert f"Reusing generation {generation['id']} from try 1 (completed)" in log
    # Success cleared the record: clearing the task later would submit a new generation.
    assert dep.query("SELECT key FROM task_state_store WHERE dag_id = ?", (REUSE_DAG_ID,)) == []


def asset_settings(output_dir: Path) -> dict[str, str]:
    """The environment the Asset pair needs: where the producer writes, and the scheduler's own DAG run creation
    (asset-triggered runs need it; the SQLite harness turns it off)."""
    return {"LUMA_DEMO_OUTPUT_DIR": str(output_dir), "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True"}


def add_asset_pair(dep: AirflowDeployment) -> None:
    """Add the example producer and consumer DAGs (the consumer first: it must exist when the event comes)."""
    for dag_id in (CONSUMER, PRODUCER):
        name = f"example_{dag_id}.py"
        dep.add_dag((EXAMPLE_DAGS / name).read_text(), name, dag_id=dag_id)


def wait_for_triggered_run(dep: AirflowDeployment, dag_id: str, timeout: float = 120.0) -> str:
    """The first asset-triggered run of ``dag_id`` once it finished (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep.check_alive()
        rows = dep.query(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND run_type = 'asset_triggered' ORDER BY id", (dag_id,)
        )
        if rows and rows[0][1] in ("success", "failed"):
            return rows[0][0]
        time.sleep(0.5)
    raise DeploymentError(f"No finished asset-triggered run of {dag_id} within {timeout:.0f} s.\n{dep.logs_tail()}")


def check_asset_pair(dep: AirflowDeployment, output_dir: Path) -> None:
    """Run the producer; the consumer runs for its Asset event and reads the video from the event's extra."""
    producer_run = dep.trigger(PRODUCER, conf={"prompt": "Paper boats on a rainy street"})
    assert dep.wait_for_run(PRODUCER, producer_run, timeout=150) == "success", (
        dep.task_states(PRODUCER, producer_run),
        dep.task_log_text(PRODUCER, producer_run)[-4000:],
    )
    generation_id = dep.xcom(PRODUCER, producer_run, "generate", key="generation_id")
    video = output_dir / f"{generation_id}.mp4"
    assert video.stat().st_size > 0

    # The scheduler saw the folder's Asset event and ran the consumer for it.
    consumer_run = wait_for_triggered_run(dep, CONSUMER)
    assert dep.run_state(CONSUMER, consumer_run) == "success", dep.task_log_text(CONSUMER, consumer_run)[-4000:]
    (consumed,) = dep.query(
        "SELECT a.uri, e.extra, e.source_run_id FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "JOIN dagrun_asset_event d ON d.event_id = e.id JOIN dag_run r ON r.id = d.dag_run_id "
        "WHERE r.dag_id = ? AND r.run_id = ?",
        (CONSUMER, consumer_run),
    )
    uri, extra, source_run = consumed
    assert (uri, source_run) == (file_uri(output_dir), producer_run)
    assert json.loads(extra)["generation_id"] == generation_id

    # The consumer read the generation id (and the rest) from the event's extra.
    (read,) = dep.xcom(CONSUMER, consumer_run, "describe_videos")
    assert read["generation_id"] == generation_id
    assert read["uri"] == f"file://{video}"
    assert read["size"] == video.stat().st_size
    assert read["prompt"] == "Paper boats on a rainy street"
    assert read["model"] == "ray-flash-2"
    assert f"Luma generation {generation_id}" in dep.task_log_text(CONSUMER, consumer_run, "describe_videos")

    # The alias gave the file its own Asset, with the same video in its event.
    file_events = dep.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?", (f"file://{video}",)
    )
    assert [json.loads(row[0])["generation_id"] for row in file_events] == [generation_id]
