"""A task instance's extra links as Airflow's web tier works them out, after a ``dag.test()`` run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.support.dag_runner import load_dag


def web_links(dag_run: Any, task_id: str, map_index: int = -1) -> dict[str, str | None]:
    """
    ``{link name: URL or None}`` as the API server (Airflow 3: ``routes/public/extra_links.py``) or the
    webserver (2.11) answers the UI: from the *serialized* task (its links named at parse time, a
    plugin's link in place of the operator's own) and the task instance in the metadata DB. The DAG
    is read from the DAGs folder, where the run's file is.
    """
    dag = load_dag(Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]), dag_run.dag_id)
    try:
        from airflow.serialization.serialized_objects import DagSerialization as Serialization  # Airflow 3.3+
    except ImportError:
        from airflow.serialization.serialized_objects import SerializedDAG as Serialization  # 2.11 - 3.2

    task = Serialization.from_dict(Serialization.to_dict(dag)).get_task(task_id)
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == task_id and ti.map_index == map_index]
    return {name: task.get_extra_links(ti, name) or None for name in task.extra_links}
