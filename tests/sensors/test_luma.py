"""LumaGenerationSensor: construction checks, deferral, every event kind, poke/reschedule, dag.test() runs."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_luma.errors import LumaError, LumaInputError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import DEFERRAL_TIMEOUT_MARGIN, LumaGenerationSensor
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY, connection_json
from tests.support.dag_runner import RECORD_TASK, SUBMIT_TASK, recorded, run_dag_source
from tests.support.logs import logged_text
from tests.support.polls import timeline_driven_by_polls

GEN_A = "4f1c0000-0000-4000-8000-00000000000a"
GEN_B = "4f1c0000-0000-4000-8000-00000000000b"


# -- construction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of generation_id or generation_ids"),
        ({"generation_id": GEN_A, "generation_ids": [GEN_B]}, "exactly one"),
        ({"generation_id": GEN_A, "target_state": "failed"}, "cannot target 'failed'"),
        ({"generation_id": GEN_A, "target_state": "done"}, "Unknown Luma generation state"),
        ({"generation_id": ""}, "empty"),
        ({"generation_id": "None"}, "rendered to 'None'"),
        ({"generation_ids": []}, "empty"),
        ({"generation_ids": [GEN_A, None]}, "None"),
        ({"generation_id": f"{GEN_A},{GEN_B}"}, "use generation_ids"),
    ],
)
def test_bad_construction_fails_at_parse_time(kwargs, match):
    with pytest.raises(LumaInputError, match=match):
        LumaGenerationSensor(task_id="wait", **kwargs)


def test_templates_and_generation_dicts_are_accepted_at_parse_time():
    LumaGenerationSensor(task_id="a", generation_id="{{ ti.xcom_pull('submit') }}")
    LumaGenerationSensor(task_id="b", generation_ids="{{ params.ids }}")
    LumaGenerationSensor(task_id="c", generation_id={"id": GEN_A, "state": "queued"})
    LumaGenerationSensor(task_id="d", generation_ids=[{"id": GEN_A}, GEN_B])


def test_deferrable_is_the_default_whatever_the_config_says(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert LumaGenerationSensor(task_id="wait", generation_id=GEN_A).deferrable is True


# -- execute and execute_complete -----------------------------------------------------------------


def test_defers_with_the_trigger_and_a_backstop_timeout(luma_conn):
    generation = LumaHook().create_generation("defer me")
    sensor = LumaGenerationSensor(task_id="wait", generation_id=generation.to_dict(), timeout=600)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, LumaGenerationTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["refs"] == [{"id": generation.id, "api": "luma-ai"}]
    assert kwargs["target_state"] == "completed"
    assert before + 600 <= kwargs["deadline"] <= time.time() + 600
    assert deferred.value.timeout == timedelta(seconds=600) + DEFERRAL_TIMEOUT_MARGIN
    assert deferred.value.method_name == "execute_complete"
    assert SENTINEL_KEY not in repr(kwargs)
    assert luma_conn.count("get") == 1  # checked once, without waiting


def test_does_not_defer_when_already_there(luma_conn):
    generation = LumaHook().create_generation("already")
    luma_conn.set_state(generation.id, "completed")
    result = LumaGenerationSensor(task_id="wait", generation_id=generation.id).execute({})
    assert result["id"] == generation.id
    assert result["video_url"]


def test_fails_without_deferring_when_already_failed(luma_conn):
    generation = LumaHook().create_generation("already failed")
    luma_conn.set_state(generation.id, "failed", failure_reason="bad keyframe")
    with pytest.raises(AirflowFailException, match="bad keyframe"):
        LumaGenerationSensor(task_id="wait", generation_id=generation.id).execute({})


def _event(status, generations=(), message="m"):
    return {"status": status, "message": message, "generations": list(generations)}


DONE_A = {"id": GEN_A, "state": "completed", "assets": {"video": "https://cdn.example/a.mp4"}}
DONE_B = {"id": GEN_B, "state": "completed", "video_url": "https://cdn.example/b.mp4"}


def test_execute_complete_success_one_and_several():
    one = LumaGenerationSensor(task_id="one", generation_id=GEN_A).execute_complete({}, _event("success", [DONE_A]))
    assert one["id"] == GEN_A
    assert one["video_url"] == "https://cdn.example/a.mp4"
    several = LumaGenerationSensor(task_id="many", generation_ids=[GEN_A, GEN_B]).execute_complete(
        {}, _event("success", [DONE_A, DONE_B])
    )
    assert [g["video_url"] for g in several] == ["https://cdn.example/a.mp4", "https://cdn.example/b.mp4"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        ("failed", AirflowFailException),  # no retries: a failed generation stays failed
        ("timeout", AirflowSensorTimeout),
        ("error", LumaError),
    ],
)
def test_execute_complete_failures(status, error):
    sensor = LumaGenerationSensor(task_id="wait", generation_id=GEN_A)
    with pytest.raises(error, match="what happened"):
        sensor.execute_complete({}, _event(status, message="what happened"))


@pytest.mark.parametrize("status", ["failed", "timeout", "error"])
def test_soft_fail_skips(status):
    sensor = LumaGenerationSensor(task_id="wait", generation_id=GEN_A, soft_fail=True)
    with pytest.raises(AirflowSkipException, match="what happened"):
        sensor.execute_complete({}, _event(status, message="what happened"))


def test_an_unusable_event_is_a_clear_error():
    with pytest.raises(AirflowException, match="no usable event"):
        LumaGenerationSensor(task_id="wait", generation_id=GEN_A).execute_complete({}, None)


# -- dag.test() runs: the trigger runs in-process against the simulator ---------------------------

SENSOR_DAG = (
    RECORD_TASK
    + SUBMIT_TASK
    + """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_luma.sensors.luma import LumaGenerationSensor

with DAG("DAG_ID", schedule=None, start_date=pendulum.datetime(2026, 1, 1), render_template_as_native_obj=True):
    submit = Submit(task_id="submit", prompt="PROMPT")
    dreaming = LumaGenerationSensor(task_id="dreaming", generation_id=submit.output, target_state="dreaming",
                                    SENSOR_ARGS)
    completed = LumaGenerationSensor(task_id="completed", generation_id="{{ ti.xcom_pull('submit')['id'] }}",
                                     SENSOR_ARGS)
    record = Record(task_id="record", value="{{ ti.xcom_pull('completed') }}")
    submit >> dreaming >> completed >> record
"""
)


def run_sensor_dag(tmp_path, monkeypatch, dag_id, prompt, sensor_args="timeout=60"):
    monkeypatch.setenv("LUMA_TEST_RESULT", str(tmp_path / "result.jsonl"))
    source = SENSOR_DAG.replace("DAG_ID", dag_id).replace("PROMPT", prompt).replace("SENSOR_ARGS", sensor_args)
    result = run_dag_source(source, dag_id)
    return result, recorded(tmp_path / "result.jsonl")


def test_dag_waits_for_dreaming_then_completed(luma_conn, airflow_db, tmp_path, monkeypatch):
    luma_conn.script("fox", queued_seconds=1.5, dreaming_seconds=1.5)
    result, values = run_sensor_dag(tmp_path, monkeypatch, "luma_sensor_ok", "a fox")
    assert result.state == "success", result
    assert values["record"]["state"] == "completed"
    assert values["record"]["video_url"].startswith(luma_conn.cdn_url)


def test_dag_failing_generation_fails_the_sensor_with_its_reason(
    luma_conn, airflow_db, tmp_path, monkeypatch, caplog, capsys
):
    # The first sensor sees 'dreaming', the second 'failed', however long the run takes between them.
    luma_conn.script("doomed", queued_seconds=600)
    steps = [("dreaming", "dreaming"), ("completed", "failed")]
    with timeline_driven_by_polls(luma_conn, "doomed", steps, failure_reason="blocked by content policy"):
        result, _ = run_sensor_dag(tmp_path, monkeypatch, "luma_sensor_fail", "doomed")
    assert result.state == "failed"
    assert result.task_states["completed"] == "failed"
    assert "blocked by content policy" in logged_text(caplog, capsys)


def test_dag_wait_timing_out_ends_as_a_sensor_timeout(luma_conn, airflow_db, tmp_path, monkeypatch, caplog, capsys):
    luma_conn.script("forever", queued_seconds=600)
    result, _ = run_sensor_dag(tmp_path, monkeypatch, "luma_sensor_timeout", "forever", "timeout=3")
    assert result.state == "failed"
    assert result.task_states["dreaming"] == "failed"
    text = logged_text(caplog, capsys)
    assert "Timed out waiting for Luma generation" in text
    assert "AirflowSensorTimeout" in text


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_dag_not_deferrable_in_poke_and_reschedule_modes(luma_conn, airflow_db, tmp_path, monkeypatch, mode):
    luma_conn.script("poked", queued_seconds=1.5, dreaming_seconds=1.5)
    args = f"timeout=60, deferrable=False, mode='{mode}', poke_interval=0.5"
    result, values = run_sensor_dag(tmp_path, monkeypatch, f"luma_sensor_{mode}", "poked", args)
    assert result.state == "success", result
    assert values["record"]["state"] == "completed"


def test_dag_poke_mode_fails_on_a_failed_generation(luma_conn, airflow_db, tmp_path, monkeypatch):
    # The first sensor sees 'dreaming', the second 'failed', however long the run takes between them.
    luma_conn.script("doomed", queued_seconds=600)
    args = "timeout=60, deferrable=False, mode='poke', poke_interval=0.5"
    with timeline_driven_by_polls(luma_conn, "doomed", [("dreaming", "dreaming"), ("completed", "failed")], "nope"):
        result, _ = run_sensor_dag(tmp_path, monkeypatch, "luma_sensor_poke_fail", "doomed", args)
    assert result.state == "failed"
    assert result.task_states["completed"] == "failed"


def test_soft_fail_skips_a_permanent_error_at_the_first_check(luma_conn):
    sensor = LumaGenerationSensor(task_id="wait", generation_id=GEN_A, soft_fail=True)
    with pytest.raises(AirflowSkipException, match="Not found"):
        sensor.execute({})


def test_soft_fail_skips_a_permanent_error_in_poke_mode(luma_conn):
    sensor = LumaGenerationSensor(task_id="wait", generation_id=GEN_A, soft_fail=True, deferrable=False)
    with pytest.raises(AirflowSkipException, match="Not found"):
        sensor.poke({})


def test_a_transient_error_at_the_first_check_still_defers(monkeypatch, simulator):
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, max_retries=0))
    generation = LumaHook().create_generation("flaky check")
    simulator.inject_fault("503", endpoint="get", times=5)
    with pytest.raises(TaskDeferred):
        LumaGenerationSensor(task_id="wait", generation_id=generation.id).execute({})
