"""LumaGenerationSensor on the universal endpoint: routing by id form, api=, poke_interval, dag.test() runs."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import LumaGenerationSensor
from tests.support.dag_runner import RECORD_TASK, recorded, run_dag_source

UNIVERSAL_DAG = (
    RECORD_TASK
    + """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import LumaGenerationSensor

class Submit(BaseOperator):
    def execute(self, context):
        return LumaHook().create_generation("PROMPT", model="luma/ray-2").id  # a plain id, no dict

with DAG("DAG_ID", schedule=None, start_date=pendulum.datetime(2026, 1, 1), render_template_as_native_obj=True):
    submit = Submit(task_id="submit")
    wait = LumaGenerationSensor(task_id="wait", generation_id=submit.output, timeout=60, poke_interval=2,
                                SENSOR_ARGS)
    record = Record(task_id="record", value="{{ ti.xcom_pull('wait') }}")
    submit >> wait >> record
"""
)


def run_universal_dag(tmp_path, monkeypatch, dag_id, prompt, sensor_args="deferrable=True"):
    monkeypatch.setenv("LUMA_TEST_RESULT", str(tmp_path / "result.jsonl"))
    source = UNIVERSAL_DAG.replace("DAG_ID", dag_id).replace("PROMPT", prompt).replace("SENSOR_ARGS", sensor_args)
    return run_dag_source(source, dag_id), recorded(tmp_path / "result.jsonl")


def test_dag_waits_for_a_universal_generation_by_its_id_form(luma_conn, airflow_db, tmp_path, monkeypatch):
    luma_conn.script("lighthouse", queued_seconds=1.5, dreaming_seconds=1.5)
    result, values = run_universal_dag(tmp_path, monkeypatch, "luma_universal_sensor", "a lighthouse")
    assert result.state == "success", result
    assert values["record"]["state"] == "completed"
    assert values["record"]["api"] == "video"
    assert values["record"]["usage"]["credits_used"] > 0
    assert luma_conn.count("get") == luma_conn.count("list") == 0  # the id's suffix routed every poll


def test_dag_a_bare_id_is_routed_by_api(luma_conn, airflow_db, tmp_path, monkeypatch):
    luma_conn.universal_id_suffix = False
    luma_conn.script("bare", queued_seconds=1.0, dreaming_seconds=1.0)
    result, values = run_universal_dag(tmp_path, monkeypatch, "luma_universal_bare", "a bare id", 'api="video"')
    assert result.state == "success", result
    assert ":" not in values["record"]["id"]
    assert luma_conn.count("get") == 0


def test_dag_poke_mode_on_the_universal_endpoint(luma_conn, airflow_db, tmp_path, monkeypatch):
    luma_conn.script("poked", queued_seconds=1.0, dreaming_seconds=1.0)
    result, values = run_universal_dag(
        tmp_path, monkeypatch, "luma_universal_poke", "poked", 'deferrable=False, mode="poke"'
    )
    assert result.state == "success", result
    assert values["record"]["state"] == "completed"


def test_the_deferred_trigger_carries_the_family_and_the_given_poke_interval(luma_conn):
    luma_conn.script("slow", queued_seconds=30)
    generation = LumaHook().create_generation("slow", model="luma/ray-2")
    sensor = LumaGenerationSensor(task_id="wait", generation_id=generation.id, poke_interval=7, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    _, kwargs = deferred.value.trigger.serialize()
    assert kwargs["refs"] == [{"id": generation.id, "api": "video"}]
    assert kwargs["poll_interval"] == 7.0

    default = LumaGenerationSensor(task_id="wait2", generation_id=generation.id, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        default.execute({})
    assert "poll_interval" not in deferred.value.trigger.serialize()[1]  # the connection's 10 s, not Airflow's 60


def test_api_must_name_a_family():
    with pytest.raises(ValueError, match="api='universal' is not an endpoint family: use one of 'luma-ai', 'video'"):
        LumaGenerationSensor(task_id="wait", generation_id="g", api="universal")
