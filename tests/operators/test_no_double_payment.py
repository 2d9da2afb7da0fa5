"""
A retried generate task never pays twice (issue 11, items 5, 6, 7 and the create half of 8).

* A create answer that cannot be read (empty 201, cut body, a proxy's HTML page) means "the
  generation may exist": never resent, the task fails without retries.
* A failed write of the task state record after a successful create fails without retries, naming the id.
* Without a task state store (Airflow 2.11-3.2), a wait that times out or fails after a successful
  create, a trigger crash and the deferral time-out fail without retries, naming the generation to
  wait for.
* A create is resent only when the server cannot have acted on it (408, 429, 503, never connected),
  never after a 409.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider_luma.errors import LumaError, LumaGenerationFailedError, LumaWaitTimeoutError
from airflow_provider_luma.operators.luma import (
    GENERATION_ID_XCOM_KEY,
    REUSE_STATE_KEY,
    LumaGenerateVideoOperator,
)
from tests.support.dag_runner import LOST_ANSWER_DAG, run_dag_source
from tests.support.relay import Rewrite, create
from tests.support.tasks import AIRFLOW_HAS_TASK_STATE, FakeTaskInstance, TaskStateStore, task_context

CREATE = "/luma-ai/generation"


class FailingStore(TaskStateStore):
    """A task state store whose writes fail (a metadata DB hiccup)."""

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        raise RuntimeError("database is locked")


def operator(prompt: str = "a paper lantern", **kwargs: Any) -> LumaGenerateVideoOperator:
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("wait_timeout", 1.5)
    return LumaGenerateVideoOperator(task_id="generate", prompt=prompt, **kwargs)


# -- item 5: a 2xx create answer that cannot be read ---------------------------------------------

UNREADABLE = ["html", "empty", "malformed"]


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("kind", UNREADABLE)
def test_an_unreadable_create_answer_means_the_generation_may_exist(luma_conn, path, kind):
    luma_conn.inject_fault(kind, endpoint="create", after=True)
    with pytest.raises(LumaError) as caught:
        create(path, "unreadable lantern")
    assert caught.value.maybe_created
    assert "may have been created anyway" in caught.value.message
    assert luma_conn.count("create") == 1  # never resent
    assert len(luma_conn.generations()) == 1


@pytest.mark.parametrize("kind", UNREADABLE)
def test_an_unreadable_create_answer_fails_the_task_without_retries(luma_conn, kind):
    luma_conn.inject_fault(kind, endpoint="create", after=True)
    with pytest.raises(AirflowFailException, match="Not retrying automatically"):
        operator().execute(task_context(store=TaskStateStore()))
    assert luma_conn.count("create") == 1


def test_dag_a_201_with_an_html_body_and_retries_makes_exactly_one_create(luma_conn, airflow_db):
    luma_conn.inject_fault("html", endpoint="create", after=True)
    result = run_dag_source(LOST_ANSWER_DAG, "luma_lost_answer")  # retries=2
    assert result.state == "failed"
    assert [r["status"] for r in luma_conn.requests("create")] == [201]  # retries=2, yet one (paid) create


# -- item 6: the task state store write ----------------------------------------------------------


def test_a_failed_state_store_write_fails_without_retries_naming_the_id(luma_conn):
    ti = FakeTaskInstance()
    with pytest.raises(AirflowFailException) as caught:
        operator().execute(task_context(store=FailingStore(), ti=ti))
    (generation,) = luma_conn.generations()
    assert generation["id"] in str(caught.value)
    assert "RuntimeError: database is locked" in str(caught.value)
    assert f"LumaGenerationSensor(generation_id='{generation['id']}')" in str(caught.value)
    assert ti.xcom[GENERATION_ID_XCOM_KEY] == generation["id"]  # still findable
    assert luma_conn.count("create") == 1


def test_the_record_is_forgotten_only_after_the_xcom_pushes(luma_conn):
    store = TaskStateStore()
    ti = FakeTaskInstance(fail_push="video_url")
    with pytest.raises(RuntimeError, match="XCom backend refused video_url"):
        operator().execute(task_context(store=store, ti=ti))
    (generation,) = luma_conn.generations()
    assert store.values[REUSE_STATE_KEY]["id"] == generation["id"]  # a retry can still reuse it
    # ... and does: the retry reuses the completed generation instead of paying again.
    assert operator().execute(task_context(store=store, ti=FakeTaskInstance(try_number=2)))["id"] == generation["id"]
    assert luma_conn.count("create") == 1
    assert REUSE_STATE_KEY not in store.values


# -- item 7: no task state store (Airflow 2.11-3.2) ----------------------------------------------


def assert_names_the_generation(error: BaseException, generation_id: str) -> None:
    text = str(error)
    assert f"LumaGenerationSensor(generation_id='{generation_id}')" in text, text
    assert "not retrying" in text.lower(), text


def test_without_a_store_a_wait_time_out_fails_without_retries(luma_conn):
    luma_conn.script("slow lantern", queued_seconds=600)
    with pytest.raises(AirflowFailException) as caught:
        operator("slow lantern").execute(task_context())
    (generation,) = luma_conn.generations()
    assert_names_the_generation(caught.value, generation["id"])
    assert "Timed out" in str(caught.value)
    assert luma_conn.count("create") == 1


def test_without_a_store_a_wait_error_fails_without_retries(luma_conn):
    luma_conn.script("forbidden lantern", queued_seconds=600)
    luma_conn.inject_fault("403", endpoint="get", times=10)
    with pytest.raises(AirflowFailException) as caught:
        operator("forbidden lantern").execute(task_context())
    (generation,) = luma_conn.generations()
    assert_names_the_generation(caught.value, generation["id"])
    assert "403" in str(caught.value)


def test_without_a_store_a_failed_generation_may_still_be_retried(luma_conn):
    # A failed generation is no reason to stop: a retry submits a new one, as on Airflow 3.3+.
    luma_conn.script("doomed lantern", outcome="failed", failure_reason="moderation", queued_seconds=0.1)
    with pytest.raises(LumaGenerationFailedError):
        operator("doomed lantern").execute(task_context())


def test_with_a_store_a_wait_time_out_is_left_to_retry_and_reuse(luma_conn):
    luma_conn.script("slow lantern", queued_seconds=600)
    with pytest.raises(LumaWaitTimeoutError):
        operator("slow lantern").execute(task_context(store=TaskStateStore()))


def deferred(
    luma_conn, ti: FakeTaskInstance, store: TaskStateStore | None
) -> tuple[LumaGenerateVideoOperator, str, dict[str, Any]]:
    """A generate task deferred after its create; its generation id and the kwargs it deferred with."""
    luma_conn.script("deferred lantern", queued_seconds=600)
    task = operator("deferred lantern", deferrable=True, wait_timeout=60)
    with pytest.raises(TaskDeferred) as caught:
        task.execute(task_context(store=store, ti=ti))
    (generation,) = luma_conn.generations()
    return task, generation["id"], dict(caught.value.kwargs or {})


@pytest.mark.parametrize("status", ["timeout", "error"])
def test_without_a_store_a_deferred_wait_that_ends_badly_fails_without_retries(luma_conn, status):
    ti = FakeTaskInstance()
    task, generation_id, kwargs = deferred(luma_conn, ti, None)
    event = {"status": status, "message": f"the wait ended: {status}", "generations": []}
    with pytest.raises(AirflowFailException) as caught:
        # As Airflow resumes it: the event joins the kwargs the task deferred with.
        task.resume_execution("execute_complete", {**kwargs, "event": event}, task_context(ti=ti))
    assert_names_the_generation(caught.value, generation_id)
    assert f"the wait ended: {status}" in str(caught.value)


@pytest.mark.parametrize("error", ["Trigger failure", "Trigger timeout", "Trigger/execution timeout"])
def test_without_a_store_a_trigger_crash_or_deferral_timeout_fails_without_retries(luma_conn, error):
    ti = FakeTaskInstance()
    task, generation_id, _ = deferred(luma_conn, ti, None)
    failure = {"error": error, "traceback": ["Traceback ...", "RuntimeError: x"]}
    with pytest.raises(AirflowFailException) as caught:
        task.resume_execution("__fail__", failure, task_context(ti=ti))
    assert_names_the_generation(caught.value, generation_id)
    assert error in str(caught.value)


def test_with_a_store_a_trigger_crash_is_left_to_retry_and_reuse(luma_conn):
    ti, store = FakeTaskInstance(), TaskStateStore()
    task, generation_id, _ = deferred(luma_conn, ti, store)
    with pytest.raises(AirflowException, match="Trigger failure") as caught:
        task.resume_execution("__fail__", {"error": "Trigger failure"}, task_context(store=store, ti=ti))
    assert not isinstance(caught.value, AirflowFailException)  # an ordinary failure: Airflow retries
    assert store.values[REUSE_STATE_KEY]["id"] == generation_id


SLOW_DAG = """
from datetime import timedelta
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator

with DAG("luma_slow_retries", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
    LumaGenerateVideoOperator(task_id="generate", prompt="endless lantern", wait_timeout=1, deferrable=False,
                              retries=2, retry_delay=timedelta(seconds=0))
"""


def test_dag_a_wait_time_out_with_retries_makes_exactly_one_create(luma_conn, airflow_db):
    # 3.3+: each retry reuses the generation; below: the first try fails without retries.
    luma_conn.script("endless lantern", queued_seconds=600)
    result = run_dag_source(SLOW_DAG, "luma_slow_retries")
    assert result.state == "failed"
    assert luma_conn.count("create") == 1
    if not AIRFLOW_HAS_TASK_STATE:
        assert luma_conn.count("get") >= 1


# -- item 8: a create is resent only when the server cannot have acted on it -----------------------


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("status", [408, 429, 503])
def test_a_create_the_server_did_not_act_on_is_resent_once(simulator, relay, path, status):
    relay.rewrite(Rewrite(CREATE, status=status))
    generation = create(path, "resent lantern")
    assert [s for _, s in relay.sent(CREATE)] == [status, 201]
    assert [g["id"] for g in simulator.generations()] == [generation.id]


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_create_is_never_resent_after_a_409(simulator, relay, path):
    relay.rewrite(Rewrite(CREATE, status=409))
    with pytest.raises(LumaError) as caught:
        create(path, "conflict lantern")
    assert [s for _, s in relay.sent(CREATE)] == [409]
    assert caught.value.maybe_created  # a conflict with something the server already holds
    assert "relay says 409" in caught.value.message


def test_a_409_on_create_fails_the_task_without_retries(simulator, relay):
    relay.rewrite(Rewrite(CREATE, status=409))
    with pytest.raises(AirflowFailException, match="Not retrying automatically"):
        operator().execute(task_context(store=TaskStateStore()))
    assert len(relay.sent(CREATE)) == 1
