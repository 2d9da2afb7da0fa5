"""Run a DAG file with ``dag.test()`` the way Airflow 2.11 and 3.x both accept (see airflow-notes.md)."""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class DagTestResult:
    """How a ``dag.test()`` run ended: the run's state and each task's state (mapped tasks: a list)."""

    state: str
    task_states: dict[str, Any]


def latest_run_id(airflow_home: Path, dag_id: str) -> str:
    """The run id of the DAG's latest run, read from the metadata DB (SQLite) of ``airflow_home``."""
    import sqlite3

    with sqlite3.connect(airflow_home / "airflow.db") as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
    return str(run_id)


def load_dag(path: Path, dag_id: str):
    """Load ``dag_id`` from ``path`` with a DagBag; fail on import errors."""
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 2
    bag = DagBag(dag_folder=str(path))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags.get(dag_id)
    assert dag is not None, f"{dag_id} not found in {path}"
    return dag


def run_dag_source(source: str, dag_id: str) -> DagTestResult:
    """Write ``source`` into the DAGs folder and run it once with ``dag.test()``."""
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    path.write_text(textwrap.dedent(source))
    return run_dag_file(path, dag_id)


def run_dag_file(path: Path, dag_id: str) -> DagTestResult:
    """Run the DAG ``dag_id`` of the file at ``path`` (inside the DAGs folder) with ``dag.test()``."""
    dag_run = load_dag(path, dag_id).test()
    states: dict[str, Any] = {}
    for ti in dag_run.get_task_instances():
        state = str(getattr(ti.state, "value", ti.state))
        if ti.map_index is not None and ti.map_index >= 0:
            states.setdefault(ti.task_id, []).append(state)
        else:
            states[ti.task_id] = state
    return DagTestResult(str(getattr(dag_run.state, "value", dag_run.state)), states)


RECORD_TASK = '''
import json as _json, os as _os
from airflow.providers.common.compat.sdk import BaseOperator

class Record(BaseOperator):
    """Writes its templated value to the file named by $LUMA_TEST_RESULT (tests read it back)."""
    template_fields = ("value",)
    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self.value = value
    def execute(self, context):
        with open(_os.environ["LUMA_TEST_RESULT"], "a") as out:
            out.write(_json.dumps({"task_id": self.task_id, "value": self.value}) + "\\n")
'''


SUBMIT_TASK = '''
from airflow.providers.common.compat.sdk import BaseOperator
from airflow_provider_luma.hooks.luma import LumaHook

class Submit(BaseOperator):
    """Creates a generation of its prompt (the connection's defaults) and returns it as a dict."""
    def __init__(self, prompt, **kwargs):
        super().__init__(**kwargs)
        self.prompt = prompt
    def execute(self, context):
        return LumaHook().create_generation(self.prompt).to_dict()
'''


def recorded(path: Path) -> dict[str, Any]:
    """What the ``Record`` tasks wrote, by task id."""
    if not path.exists():
        return {}
    return {row["task_id"]: row["value"] for row in map(json.loads, path.read_text().splitlines())}


def activate_declared_assets(dag: Any, airflow_db: Path) -> None:
    """
    Store a DAG with its Assets (outlets, Asset schedule) and mark them active, as Airflow's DAG
    processor does. Airflow 3.0's ``dag.test()`` does neither: a task with an inactive outlet fails
    before it runs, an event on an Asset it does not know is dropped, and a consumer it did not store
    is never queued. 3.3 does all of it itself; 2.11 has no such check (its tests call ``sync_to_db``).
    """
    import inspect
    import sqlite3

    with sqlite3.connect(airflow_db / "airflow.db") as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'asset_active'").fetchone():
            return  # Airflow 2
    from airflow.models.dag import DAG as SchedulerDAG

    bulk_write = getattr(SchedulerDAG, "bulk_write_to_db", None)  # gone in 3.3, whose dag.test() does it all
    if bulk_write is not None and "bundle_name" in inspect.signature(bulk_write).parameters:
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.serialization.serialized_objects import LazyDeserializedDAG, SerializedDAG

        DagBundlesManager().sync_bundles_to_db()  # the "dags-folder" bundle the DAG row points at
        serialized = LazyDeserializedDAG(data=SerializedDAG.to_dict(dag))
        SchedulerDAG.bulk_write_to_db("dags-folder", None, [serialized])  # stores and activates its Assets


#: A generate task whose create answer the tests lose: with retries=2, it must still be tried once.
LOST_ANSWER_DAG = """
from datetime import timedelta
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator

with DAG("luma_lost_answer", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
    LumaGenerateVideoOperator(task_id="generate", prompt="lost answer", retries=2, retry_delay=timedelta(seconds=0))
"""
