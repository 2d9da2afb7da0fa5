"""Videos as Assets on a real Airflow 3 deployment: the download's Asset event triggers the consumer DAG."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_luma.operators.lineage import file_uri
from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import connection_json
from tests.support.deployment import AirflowDeployment, DeploymentError, deployment

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(300)]

EXAMPLE_DAGS = Path(__file__).parents[2] / "example_dags"
PRODUCER, CONSUMER = "luma_assets_producer", "luma_assets_consumer"


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("luma-asset-videos")


@pytest.fixture(scope="module")
def assets_deployment(deployment_simulator: LumaSimulator, output_dir: Path) -> Iterator[AirflowDeployment]:
    """A deployment running the example pair, its videos going to ``output_dir``."""
    extra = {
        "AIRFLOW_CONN_LUMA_DEFAULT": connection_json(deployment_simulator),
        "LUMA_DEMO_OUTPUT_DIR": str(output_dir),
        # The harness turns the scheduler's own DAG run creation off; asset-triggered runs need it.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
    }
    with deployment(extra_env=extra) as dep:
        dep.simulator = deployment_simulator
        for dag_id in (CONSUMER, PRODUCER):
            name = f"example_{dag_id}.py"
            dep.add_dag((EXAMPLE_DAGS / name).read_text(), name, dag_id=dag_id)
        yield dep


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


def test_download_event_triggers_the_consumer(assets_deployment: AirflowDeployment, output_dir: Path) -> None:
    dep = assets_deployment
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
