"""
Every example DAG, run on a real Airflow 3 deployment: its runs succeed and their task logs hold no
ERROR-level line; a failed generate task logs its real error once. ``dag.test()`` does not show
these lines: they come from the task runner's calls to the API server (``airflow/sdk/api/client.py``).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.support.deployment import AirflowDeployment
from tests.support.examples import FAILING_DAG_ID, SCHEDULED, TRIGGERED, ExampleRuns

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(420)]


def error_lines(text: str) -> list[str]:
    """The ERROR- and CRITICAL-level lines of task logs (Airflow 3 writes one JSON object per line)."""
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if re.search(r"\b(ERROR|CRITICAL)\b", line):
                found.append(line)
            continue
        if isinstance(record, dict) and str(record.get("level", "")).lower() in {"error", "critical"}:
            found.append(line)
    return found


@pytest.mark.parametrize("dag_id", [*TRIGGERED, SCHEDULED])
def test_a_successful_run_logs_no_error(
    ui_deployment: AirflowDeployment, example_runs: ExampleRuns, dag_id: str
) -> None:
    dep = ui_deployment
    run_id = example_runs.runs[dag_id]
    assert dep.run_state(dag_id, run_id) == "success", (dep.task_states(dag_id, run_id), dep.audit_log(dag_id, run_id))
    logs = dep.task_log_text(dag_id, run_id)
    assert f"run_id={run_id}" in logs  # the scan reads real logs
    assert error_lines(logs) == []


def test_a_failed_generate_task_logs_its_error_once(
    ui_deployment: AirflowDeployment, example_runs: ExampleRuns
) -> None:
    dep = ui_deployment
    assert dep.run_state(FAILING_DAG_ID, example_runs.failing) == "failed"
    logs = dep.task_log_text(FAILING_DAG_ID, example_runs.failing, "generate")
    errors = error_lines(logs)
    assert len(errors) == 1, errors
    assert "simulated failure" in logs
    assert "XCom not found" not in logs
