"""
Every example DAG, run on a real Airflow 3 deployment: its runs succeed and their task logs hold no
ERROR-level line; a failed generate task logs its real error once. ``dag.test()`` does not show
these lines: they come from the task runner's calls to the API server (``airflow/sdk/api/client.py``).
"""

from __future__ import annotations

import pytest

from tests.support.deployment import AirflowDeployment
from tests.support.examples import FAILING_DAG_ID, SCHEDULED, TRIGGERED, ExampleRuns, run_error_lines

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(420)]


@pytest.mark.parametrize("dag_id", [*TRIGGERED, SCHEDULED])
def test_a_successful_run_logs_no_error(
    ui_deployment: AirflowDeployment, example_runs: ExampleRuns, dag_id: str
) -> None:
    dep = ui_deployment
    run_id = example_runs.runs[dag_id]
    assert dep.run_state(dag_id, run_id) == "success", (dep.task_states(dag_id, run_id), dep.audit_log(dag_id, run_id))
    assert f"run_id={run_id}" in dep.task_log_text(dag_id, run_id)  # the scan reads real logs
    assert run_error_lines(dep, dag_id, run_id) == []


def test_a_failed_generate_task_logs_its_error_once(
    ui_deployment: AirflowDeployment, example_runs: ExampleRuns
) -> None:
    dep = ui_deployment
    assert dep.run_state(FAILING_DAG_ID, example_runs.failing) == "failed"
    assert dep.task_states(FAILING_DAG_ID, example_runs.failing) == {"generate": "failed", "refused": "failed"}
    assert "simulated failure" in dep.task_log_text(FAILING_DAG_ID, example_runs.failing, "generate")
    assert "aspect_ratio='16:10' is not supported" in dep.task_log_text(FAILING_DAG_ID, example_runs.failing, "refused")
    errors = run_error_lines(dep, FAILING_DAG_ID, example_runs.failing)
    # Each task's failure, in its log (and as the supervisor printed it): nothing else.
    assert errors
    assert all("Task failed with exception" in line for line in errors), errors
    assert len([line for line in errors if line.startswith("{")]) == 2, errors
