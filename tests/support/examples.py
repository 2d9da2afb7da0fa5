"""The example DAGs run on a real deployment (tests/support/deployment.py): what the UI tests look at."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.deployment import AirflowDeployment

EXAMPLE_DAGS = Path(__file__).parents[2] / "example_dags"
#: The example DAGs a user triggers, and the one the producer's Asset event triggers.
TRIGGERED = ("luma_text_to_video", "luma_fan_out", "luma_extend", "luma_universal", "luma_assets_producer")
SCHEDULED = "luma_assets_consumer"
#: A generate task whose generation fails (the simulator's ``[sim:fail]``).
FAILING_DAG_ID = "luma_failing_generate"
FAILING_DAG = f"""
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator

with DAG("{FAILING_DAG_ID}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False):
    LumaGenerateVideoOperator(task_id="generate", prompt="a storm at sea [sim:fail]", model="ray-flash-2")
"""


@dataclass
class ExampleRuns:
    """The run id of each example DAG's run, and of the failing generate DAG's."""

    runs: dict[str, str]
    failing: str


def run_examples(dep: AirflowDeployment) -> ExampleRuns:
    """Each example DAG run once, finished (the consumer triggered by the producer's event), and a failing one."""
    for path in sorted(EXAMPLE_DAGS.glob("example_*.py")):
        dep.add_dag(path.read_text(), path.name, dag_id=path.stem.removeprefix("example_"))
    dep.add_dag(FAILING_DAG, f"{FAILING_DAG_ID}.py")
    runs = {dag_id: dep.trigger(dag_id) for dag_id in TRIGGERED}
    failing = dep.trigger(FAILING_DAG_ID)
    for dag_id, run_id in runs.items():
        dep.wait_for_run(dag_id, run_id, timeout=240)
    dep.wait_for_run(FAILING_DAG_ID, failing, timeout=120)
    deadline = time.monotonic() + 120
    while not (consumer := dep.query("SELECT run_id FROM dag_run WHERE dag_id = ?", (SCHEDULED,))):
        assert time.monotonic() < deadline, f"{SCHEDULED} was not triggered by the producer's Asset event"
        time.sleep(1)
    runs[SCHEDULED] = consumer[0][0]
    dep.wait_for_run(SCHEDULED, runs[SCHEDULED], timeout=120)
    return ExampleRuns(runs, failing)
