"""No paid work twice: a retried generate task reconnects to the generation an earlier try submitted."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_luma.errors import LumaGenerationFailedError, LumaWaitTimeoutError
from airflow_provider_luma.operators.luma import REUSE_STATE_KEY, LumaGenerateVideoOperator
from tests.support.dag_runner import LOST_ANSWER_DAG, RECORD_TASK, latest_run_id, recorded, run_dag_source
from tests.support.logs import logged_text
from tests.support.tasks import AIRFLOW_HAS_TASK_STATE, TaskStateStore, task_context


def operator(prompt: str = "a paper boat", **kwargs: Any) -> LumaGenerateVideoOperator:
    return LumaGenerateVideoOperator(task_id="generate", prompt=prompt, deferrable=False, wait_timeout=1.5, **kwargs)


def test_retry_after_a_failed_wait_reuses_the_generation(luma_conn, caplog, capsys):
    luma_conn.script("paper boat", queued_seconds=600)
    store = TaskStateStore()
    with pytest.raises(LumaWaitTimeoutError):
        operator().execute(task_context(1, store))
    (generation,) = luma_conn.generations()
    assert store.values[REUSE_STATE_KEY]["id"] == generation["id"]

    luma_conn.set_state(generation["id"], "dreaming")
    retry = task_context(2, store)
    with pytest.raises(LumaWaitTimeoutError):  # still dreaming: the retry waits for it, it does not resubmit
        operator().execute(retry)
    assert retry["ti"].xcom["generation_id"] == generation["id"]
    luma_conn.set_state(generation["id"], "completed")
    result = operator().execute(task_context(3, store))

    assert result["id"] == generation["id"]
    assert luma_conn.count("create") == 1
    text = logged_text(caplog, capsys)
    assert f"Reusing generation {generation['id']} from try 1 (dreaming)" in text
    assert f"Reusing generation {generation['id']} from try 1 (completed)" in text
    assert REUSE_STATE_KEY not in store.values  # success clears the record


def test_deferrable_retry_reuses_the_generation(luma_conn):
    luma_conn.script("deferred boat", queued_seconds=600)
    store = TaskStateStore()
    first = LumaGenerateVideoOperator(task_id="generate", prompt="deferred boat", wait_timeout=60)
    with pytest.raises(TaskDeferred):
        first.execute(task_context(1, store))
    # The trigger timed out: the first try fails in execute_complete.
    with pytest.raises(LumaWaitTimeoutError):
        first.execute_complete(task_context(1, store), {"status": "timeout", "message": "Timed out", "generations": []})
    (generation,) = luma_conn.generations()
    luma_conn.set_state(generation["id"], "completed")
    retry = LumaGenerateVideoOperator(task_id="generate", prompt="deferred boat", wait_timeout=60)
    assert retry.execute(task_context(2, store))["id"] == generation["id"]
    assert luma_conn.count("create") == 1


def test_a_failed_generation_is_not_reused(luma_conn, caplog, capsys):
    luma_conn.script("doomed boat", outcome="failed", failure_reason="moderation", queued_seconds=0.1)
    store = TaskStateStore()
    with pytest.raises(LumaGenerationFailedError):
        operator("doomed boat").execute(task_context(1, store))
    (failed,) = luma_conn.generations()
    with pytest.raises(LumaGenerationFailedError):
        operator("doomed boat").execute(task_context(2, store))
    assert luma_conn.count("create") == 2
    assert f"Previous generation {failed['id']} failed: submitting a new one." in logged_text(caplog, capsys)


def test_no_reuse_after_success(luma_conn):
    store = TaskStateStore()
    first = operator().execute(task_context(1, store))
    assert store.values == {}
    # The user clears the succeeded task to get a new video: the next run submits anew.
    second = operator().execute(task_context(1, store))
    assert second["id"] != first["id"]
    assert luma_conn.count("create") == 2


def test_no_reuse_when_the_rendered_request_changed(luma_conn, caplog, capsys):
    luma_conn.script("boat", queued_seconds=600)
    store = TaskStateStore()
    with pytest.raises(LumaWaitTimeoutError):
        operator("a paper boat, try 1").execute(task_context(1, store))
    with pytest.raises(LumaWaitTimeoutError):
        operator("a paper boat, try 2").execute(task_context(2, store))
    assert luma_conn.count("create") == 2
    assert "The request changed since try 1" in logged_text(caplog, capsys)
    with pytest.raises(LumaWaitTimeoutError):
        operator("a paper boat, try 2", aspect_ratio="1:1").execute(task_context(3, store))
    assert luma_conn.count("create") == 3  # any parameter counts, not only the prompt


def test_without_a_task_state_store_a_retry_submits_anew_and_says_so(luma_conn, caplog, capsys):
    operator().execute(task_context(2, None))
    assert luma_conn.count("create") == 1
    assert "keeps no task state between tries" in logged_text(caplog, capsys)


# -- with Airflow's own task state store (3.3+), through dag.test() ------------------------------

REUSE_DAG = (
    RECORD_TASK
    + """
from datetime import timedelta
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator

with DAG("luma_reuse_dag_test", schedule=None, start_date=pendulum.datetime(2026, 1, 1),
         render_template_as_native_obj=True):
    generate = LumaGenerateVideoOperator(task_id="generate", prompt="a slow paper boat", wait_timeout=2,
                                         retries=1, retry_delay=timedelta(seconds=0))
    generate >> Record(task_id="record", value="{{ ti.xcom_pull('generate') }}")
"""
)


@pytest.mark.skipif(not AIRFLOW_HAS_TASK_STATE, reason="the task state store is new in Airflow 3.3")
def test_dag_retry_reuses_through_airflows_task_state_store(
    luma_conn, airflow_db, tmp_path, monkeypatch, caplog, capsys
):
    # 3.5 s in all: the first try's 2 s wait times out, its retry finds the generation and finishes it.
    luma_conn.script("slow paper boat", queued_seconds=1.5, dreaming_seconds=2.0)
    monkeypatch.setenv("LUMA_TEST_RESULT", str(tmp_path / "result.jsonl"))
    result = run_dag_source(REUSE_DAG, "luma_reuse_dag_test")
    assert result.state == "success", result
    (generation,) = luma_conn.generations()
    assert recorded(tmp_path / "result.jsonl")["record"]["id"] == generation["id"]
    assert luma_conn.count("create") == 1
    assert try_number(airflow_db, "luma_reuse_dag_test", "generate") == 2  # a retry did run, and only one
    assert f"Reusing generation {generation['id']} from try 1" in logged_text(caplog, capsys)


@pytest.mark.parametrize("kind", ["504", "drop", "missing_fields"])
def test_a_create_whose_answer_was_lost_fails_without_retries(luma_conn, kind):
    # The generation exists (the fault hits after the server acted) but its id never arrived:
    # a retry could not find it and would pay for a second one.
    luma_conn.inject_fault(kind, endpoint="create", after=True)
    with pytest.raises(AirflowFailException, match="Not retrying automatically"):
        operator().execute(task_context(1, TaskStateStore()))
    assert luma_conn.count("create") == 1


def test_dag_a_lost_create_answer_is_not_retried(luma_conn, airflow_db):
    luma_conn.inject_fault("502", endpoint="create", after=True)
    result = run_dag_source(LOST_ANSWER_DAG, "luma_lost_answer")
    assert result.state == "failed"
    assert try_number(airflow_db, "luma_lost_answer", "generate") == 1  # retries=2, yet one try
    assert luma_conn.count("create") == 1  # and no second (paid) create


def try_number(airflow_home: Path, dag_id: str, task_id: str) -> int:
    """The try the task instance of the DAG's latest run ended on, read from the metadata DB."""
    run_id = latest_run_id(airflow_home, dag_id)
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        ((tries,),) = db.execute(
            "SELECT try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            (dag_id, run_id, task_id),
        ).fetchall()
    return int(tries)
