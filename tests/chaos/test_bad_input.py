"""Bad input: each a clear, early LumaError saying what to fix, before anything is paid for or sent."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from airflow_provider_luma.create_requests import build_create_request
from airflow_provider_luma.errors import LumaConfigurationError, LumaInputError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import GenerationState
from airflow_provider_luma.operators.luma import LumaDownloadVideoOperator, LumaGenerateVideoOperator
from airflow_provider_luma.sensors.luma import LumaGenerationSensor
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY
from tests.support.dag_runner import run_dag_source
from tests.support.logs import logged_text

pytestmark = pytest.mark.timeout(120)

ID = "0b7d2c1e-1111-4000-8000-000000000001"

# -- states --------------------------------------------------------------------------------------

STATES = [
    ("failed", "cannot target 'failed'"),
    ("FAILED", "cannot target 'failed'"),
    ("finished", "Unknown Luma generation state 'finished': wait for one of queued, dreaming, completed"),
    ("", "Unknown Luma generation state ''"),
    (None, "Unknown Luma generation state None"),
]


@pytest.mark.parametrize(("state", "message"), STATES)
def test_bad_target_state_everywhere(luma_conn, state, message):
    calls = [
        lambda: GenerationState.waitable(state),
        lambda: LumaHook().wait_for_generation(ID, state, timeout=5),
        lambda: asyncio.run(LumaHook().await_for_generation(ID, state, timeout=5)),
        *([lambda: LumaHook().get_generation(ID, state)] if state is not None else []),  # None: no long poll
        lambda: LumaGenerationTrigger([ID], target_state=state),
        lambda: LumaGenerationSensor(task_id="s", generation_id=ID, target_state=state),
    ]
    for call in calls:
        with pytest.raises(LumaInputError) as caught:
            call()
        assert message in caught.value.message
    assert luma_conn.count() == 0  # rejected before any call


# -- ids -----------------------------------------------------------------------------------------

BAD_IDS = [
    ("", "empty generation id"),
    ("a,,b", "empty generation id"),
    ([], "is empty: give at least one generation id"),
    ([""], "empty generation id"),
    ("None", "rendered to 'None'"),
    ("null", "rendered to 'null'"),
    ("two words", "malformed generation id 'two words'"),
    ("x" * 129, "malformed generation id"),
    (42, "holds int 42: expected an id string or a generation dict"),
    ([None], "holds None where a generation id was expected"),
    ({"state": "completed"}, "holds None"),
]


@pytest.mark.parametrize(("ids", "message"), BAD_IDS, ids=[repr(i)[:20] for i, _ in BAD_IDS])
def test_bad_generation_ids_everywhere(luma_conn, ids, message):
    calls = [
        lambda: LumaHook().get_generations(ids),
        lambda: LumaHook().wait_for_generations(ids, timeout=5),
        lambda: asyncio.run(LumaHook().aget_generations(ids)),
        lambda: LumaGenerationTrigger(ids),
        lambda: LumaGenerationSensor(task_id="s", generation_ids=ids),
    ]
    if isinstance(ids, str):
        calls += [
            lambda: LumaHook().get_generation(ids),
            lambda: asyncio.run(LumaHook().aget_generation(ids)),
        ]
    for call in calls:
        with pytest.raises(LumaInputError) as caught:
            call()
        assert message in caught.value.message
    assert luma_conn.count() == 0


def test_sensor_needs_exactly_one_of_the_id_parameters():
    for kwargs in ({}, {"generation_id": ID, "generation_ids": [ID]}):
        with pytest.raises(LumaInputError, match="give exactly one of generation_id or generation_ids"):
            LumaGenerationSensor(task_id="s", **kwargs)
    with pytest.raises(LumaInputError, match="generation_id must be one id, got 2: use generation_ids"):
        LumaGenerationSensor(task_id="s", generation_id=f"{ID},other")


# -- create parameters ---------------------------------------------------------------------------

BAD_CREATE = [
    ({"prompt": ""}, "prompt must be a non-empty string"),
    ({"prompt": "   "}, "prompt must be a non-empty string"),
    pytest.param({"prompt": None}, "prompt must be a non-empty string", id="prompt-None"),
    ({"prompt": "x" * 2049}, "prompt is 2049 characters long; the API accepts at most 2048"),
    ({"aspect_ratio": "2:1"}, "aspect_ratio='2:1' is not supported: use one of 1:1, 16:9"),
    ({"aspect_ratio": "16/9"}, "aspect_ratio='16/9' is not supported"),
    ({"model": "ray-3"}, "model='ray-3' is not supported: use one of ray-1-6, ray-2, ray-flash-2"),
    ({"resolution": "8k"}, "resolution='8k' is not supported: use one of 540p, 720p, 1080p, 4k"),
    ({"duration": "10s"}, "duration='10s' is not supported: use one of 5s, 9s"),
    ({"duration": 7}, "duration=7 is not supported: use one of 5s, 9s"),
    ({"loop": "yes"}, "loop must be True or False, not 'yes'"),
    ({"loop": 1}, "loop must be True or False, not 1"),
    ({"keyframes": "frame0"}, "keyframes must be a dict with 'frame0' and/or 'frame1'"),
    ({"keyframes": {}}, "keyframes is given but holds no frame"),
    ({"keyframes": {"frame2": None}}, "keyframes has unknown keys ['frame2']"),
    ({"keyframes": {"frame0": "https://x/a.jpg"}}, "keyframes.frame0 must be a dict"),
    ({"keyframes": {"frame0": {"type": "image"}}}, "keyframes.frame0 is an image keyframe: give its http(s) 'url'"),
    ({"keyframes": {"frame1": {"type": "image", "url": "ftp://x/a.jpg"}}}, "keyframes.frame1 is an image keyframe"),
    ({"keyframes": {"frame0": {"type": "generation"}}}, "keyframes.frame0 is a generation keyframe: give"),
    ({"keyframes": {"frame0": {"type": "generation", "id": " "}}}, "keyframes.frame0 is a generation keyframe"),
    ({"keyframes": {"frame0": {"type": "video", "url": "https://x"}}}, "has type 'video': use 'image' or 'generation'"),
    ({"callback_url": "ftp://hooks.example.com"}, "callback_url must be an http(s) URL"),
]


@pytest.mark.parametrize(("params", "message"), BAD_CREATE)
def test_bad_create_parameters_are_rejected_before_paying(luma_conn, params, message):
    params = {"prompt": "a fox", **params}
    calls = [
        lambda: build_create_request(**params),
        lambda: LumaHook().create_generation(**params),
        lambda: asyncio.run(LumaHook().acreate_generation(**params)),
        lambda: LumaGenerateVideoOperator(task_id="g", **params),  # literal values: at DAG parse time
    ]
    for call in calls:
        with pytest.raises(LumaInputError) as caught:
            call()
        assert message in caught.value.message, caught.value.message
    assert luma_conn.count("create") == 0
    assert luma_conn.generations() == []


def test_a_completed_generation_is_needed_to_extend(luma_conn):
    with pytest.raises(LumaInputError, match="which is dreaming: only a completed generation can be extended"):
        LumaGenerateVideoOperator(task_id="g", prompt="more", keyframes={"frame0": {"id": ID, "state": "dreaming"}})


# -- connections ---------------------------------------------------------------------------------

BAD_CONNECTIONS = [
    ({"host": "http://api.aimlapi.com", "password": "k-123456"}, "over plain http, which would send the API key"),
    ({"host": "api.example.com", "schema": "http", "password": "k-123456"}, "over plain http"),
    ({"host": "http://10.0.0.7:8080", "password": "k-123456"}, "over plain http"),
    ({"host": "ftp://api.example.com", "password": "k-123456"}, "has an invalid host"),
    ({"host": "https://api.aimlapi.com"}, "has no API key: put your AI/ML API or Luma API key in its password field"),
    ({"host": "https://api.aimlapi.com", "password": "   "}, "has no API key"),
    ({"password": "k-123456", "extra": {"timeout": "soon"}}, "Extra 'timeout' of connection 'luma_default' is"),
    ({"password": "k-123456", "extra": {"timeout": 0.1}}, "Extra 'timeout' of connection 'luma_default' must be at"),
    ({"password": "k-123456", "extra": {"max_retries": -1}}, "Extra 'max_retries'"),
    ({"password": "k-123456", "extra": {"allow_insecure_http": "maybe"}}, "Extra 'allow_insecure_http'"),
]


@pytest.mark.parametrize(("conn", "message"), BAD_CONNECTIONS, ids=[m[:30] for _, m in BAD_CONNECTIONS])
def test_unusable_connection_is_a_clear_error(monkeypatch, conn, message):
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps({"conn_type": "luma", **conn}))
    with pytest.raises(LumaConfigurationError, match=message):
        LumaHook().get_generation(ID)
    with pytest.raises(LumaConfigurationError, match=message):
        asyncio.run(LumaHook().aget_generation(ID))
    event = asyncio.run(first_event(LumaGenerationTrigger([ID], deadline=time.time() + 5)))
    assert event["status"] == "error", event
    assert message.split(":")[0] in event["message"]


def test_plain_http_is_fine_on_loopback_or_when_explicitly_allowed(monkeypatch):
    for conn in (
        {"host": "http://127.0.0.1:9", "password": "k-123456"},
        {"host": "http://localhost:9", "password": "k-123456"},
        {"host": "http://api.example.com", "password": "k-123456", "extra": {"allow_insecure_http": True}},
    ):
        monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps({"conn_type": "luma", **conn}))
        assert LumaHook().settings.base_url == conn["host"]


def test_missing_connection_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_LUMA_NOWHERE", raising=False)
    message = "The Airflow connection 'luma_nowhere' does not exist: add a connection of type 'luma'"
    with pytest.raises(LumaConfigurationError, match=message):
        LumaHook("luma_nowhere").create_generation("a fox")
    with pytest.raises(LumaConfigurationError, match=message):
        asyncio.run(LumaHook("luma_nowhere").acreate_generation("a fox"))
    event = asyncio.run(first_event(LumaGenerationTrigger([ID], luma_conn_id="luma_nowhere")))
    assert event["status"] == "error"
    assert "does not exist" in event["message"]


async def first_event(trigger: LumaGenerationTrigger) -> dict:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    assert SENTINEL_KEY not in json.dumps(events)
    return events[0]


# -- download destinations -----------------------------------------------------------------------


def unwritable_destinations(tmp_path: Path) -> list[tuple[Path, str]]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = [(blocker / "clip.mp4", "Cannot create the folder"), (blocker / "sub" / "clip.mp4", "Cannot create")]
    if os.geteuid() != 0:  # root writes anywhere: a read-only folder only stops other users
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o500)
        cases.append((read_only / "clip.mp4", "is not writable"))
    cases.append((Path("/proc/self/clip.mp4"), "is not writable"))  # not writable, not even for root
    return cases


def test_download_operator_to_an_unwritable_destination(luma_conn, tmp_path: Path):
    generation = {"id": ID, "state": "completed", "video_url": f"{luma_conn.cdn_url}/videos/{ID}.mp4"}
    for destination, message in unwritable_destinations(tmp_path):
        with pytest.raises(LumaInputError, match=message):
            LumaHook().check_video_destination(destination)
        operator = LumaDownloadVideoOperator(task_id="d", generation=generation, destination=str(destination))
        with pytest.raises(LumaInputError, match=message):
            operator.execute({})
    assert luma_conn.count("video") == 0  # checked before downloading anything


def test_hook_download_to_an_unwritable_destination(luma_conn, tmp_path: Path):
    hook = LumaHook()
    generation = hook.create_generation("a fox")
    luma_conn.set_state(generation.id, "completed")
    completed = hook.get_generation(generation.id).to_dict()
    for destination, message in unwritable_destinations(tmp_path):
        with pytest.raises(LumaInputError, match=message):
            hook.download_video(completed, destination)
    assert luma_conn.count("video") == 0


def test_download_destination_missing():
    for destination in (None, "", "  "):
        with pytest.raises(LumaInputError, match="give a destination for the videos"):
            LumaDownloadVideoOperator(task_id="d", generation={"id": ID}, destination=destination)


# -- templated ids that render to nothing, through dag.test() ----------------------------------------

TEMPLATED_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_luma.sensors.luma import LumaGenerationSensor

with DAG("DAG_ID", schedule=None, start_date=pendulum.datetime(2026, 1, 1), params={"gid": GID}):
    LumaGenerationSensor(task_id="wait", PARAM="TEMPLATE", timeout=10)
"""


@pytest.mark.parametrize(
    ("param", "gid", "template", "message"),
    [
        ("generation_id", "''", "{{ params.gid }}", "generation_id holds an empty generation id in ''"),
        ("generation_id", "None", "{{ params.gid }}", "generation_id rendered to 'None'"),
        ("generation_id", "''", "{{ ti.xcom_pull(task_ids='nothing') }}", "generation_id rendered to 'None'"),
        ("generation_ids", "''", "{{ params.gid }}", "generation_ids holds an empty generation id"),
    ],
    ids=["empty", "None", "xcom-of-nothing", "ids-empty"],
)
def test_templated_id_rendering_to_nothing_fails_the_task_naming_the_parameter(
    luma_conn, airflow_db, caplog, capsys, param, gid, template, message
):
    dag_id = f"luma_chaos_render_{param}_{abs(hash((gid, template))) % 10_000}"
    source = TEMPLATED_DAG.replace("DAG_ID", dag_id).replace("GID", gid).replace("PARAM", param)
    source = source.replace("TEMPLATE", template)
    result = run_dag_source(source, dag_id)
    assert result.state == "failed"
    assert result.task_states == {"wait": "failed"}
    assert message in logged_text(caplog, capsys)
    assert luma_conn.count() == 0  # failed before calling the API
