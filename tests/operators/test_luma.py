"""Tests of the generate and download operators, and of LumaHook.download_video, against the simulator."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath, TaskDeferred

from airflow_provider_luma.errors import (
    LumaConnectionError,
    LumaError,
    LumaGenerationFailedError,
    LumaInputError,
)
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import Generation
from airflow_provider_luma.operators.luma import (
    LumaDownloadVideoOperator,
    LumaGenerateVideoOperator,
    LumaVideoLink,
    normalize_keyframes,
)
from airflow_provider_luma.sensors.luma import DEFERRAL_TIMEOUT_MARGIN
from airflow_provider_luma.testing import SAMPLE_VIDEO_PATH, LumaSimulator
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger

SAMPLE = SAMPLE_VIDEO_PATH.read_bytes()
IMAGE_0 = "https://example.com/start.jpg"
IMAGE_1 = "https://example.com/end.jpg"


class FakeTaskInstance:
    """The part of a task instance the operators use: ``xcom_push`` and ``try_number``."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}
        self.try_number = 1

    def xcom_push(self, key: str, value: Any, **_: Any) -> None:
        self.xcom[key] = value


@pytest.fixture
def context() -> dict[str, Any]:
    return {"ti": FakeTaskInstance()}


def completed_generation(sim: LumaSimulator, prompt: str = "a finished clip") -> dict[str, Any]:
    """A generation the simulator reports as completed right away (as the sensor would return it)."""
    generation = LumaHook().create_generation(prompt)
    sim.set_state(generation.id, "completed")
    return LumaHook().get_generation(generation.id).to_dict()


def created_bodies(sim: LumaSimulator) -> list[dict[str, Any]]:
    return [entry["json"] for entry in sim.requests("create")]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part-" in p.name or p.name.startswith(".luma-write-check"))


# ---------------------------------------------------------------- generate: modes and request bodies


def test_text_to_video_waits_in_worker_and_sends_every_parameter(luma_conn, context) -> None:
    operator = LumaGenerateVideoOperator(
        task_id="t2v",
        prompt="A red fox in fresh snow",
        aspect_ratio="16:9",
        model="ray-flash-2",
        resolution="720p",
        duration="5s",
        loop=True,
        callback_url="https://example.com/hook",
        deferrable=False,
    )
    result = operator.execute(context)

    assert created_bodies(luma_conn) == [
        {
            "prompt": "A red fox in fresh snow",
            "aspect_ratio": "16:9",
            "model": "ray-flash-2",
            "resolution": "720p",
            "duration": "5s",
            "loop": True,
            "callback_url": "https://example.com/hook",
        }
    ]
    assert result["state"] == "completed"
    assert result["video_url"] == f"{luma_conn.cdn_url}/videos/{result['id']}.mp4"
    assert "request" not in result  # the echo of the request (often pre-signed URLs) is not stored
    assert context["ti"].xcom == {"generation_id": result["id"], "video_url": result["video_url"]}


@pytest.mark.parametrize(
    ("keyframes", "expected"),
    [
        pytest.param(
            {"frame0": {"type": "image", "url": IMAGE_0}}, {"frame0": {"type": "image", "url": IMAGE_0}}, id="image"
        ),
        pytest.param(
            {"frame0": {"type": "image", "url": IMAGE_0}, "frame1": {"type": "image", "url": IMAGE_1}},
            {"frame0": {"type": "image", "url": IMAGE_0}, "frame1": {"type": "image", "url": IMAGE_1}},
            id="image-start-and-end",
        ),
    ],
)
def test_image_to_video(luma_conn, context, keyframes, expected) -> None:
    operator = LumaGenerateVideoOperator(
        task_id="i2v", prompt="The fox walks away", keyframes=keyframes, wait_for_completion=False
    )
    result = operator.execute(context)

    assert created_bodies(luma_conn) == [{"prompt": "The fox walks away", "keyframes": expected}]
    assert luma_conn.generation(result["id"])["request"]["keyframes"] == expected


@pytest.mark.parametrize(
    ("slots", "as_dict"),
    [
        pytest.param(("frame0",), False, id="extend-forward"),
        pytest.param(("frame1",), False, id="extend-backward"),
        pytest.param(("frame0", "frame1"), False, id="interpolate"),
        pytest.param(("frame0",), True, id="extend-forward-from-generation-dict"),
        pytest.param(("frame1",), True, id="extend-backward-from-generation-dict"),
        pytest.param(("frame0", "frame1"), True, id="interpolate-generation-dicts"),
    ],
)
def test_extend_and_interpolate(luma_conn, context, slots, as_dict) -> None:
    sources = [completed_generation(luma_conn, f"clip {slot}") for slot in slots]
    keyframes = {
        slot: source if as_dict else {"type": "generation", "id": source["id"]}
        for slot, source in zip(slots, sources, strict=True)
    }
    operator = LumaGenerateVideoOperator(
        task_id="extend", prompt="And then it snows", keyframes=keyframes, deferrable=False
    )
    result = operator.execute(context)

    expected = {slot: {"type": "generation", "id": s["id"]} for slot, s in zip(slots, sources, strict=True)}
    assert created_bodies(luma_conn)[-1] == {"prompt": "And then it snows", "keyframes": expected}
    assert result["state"] == "completed"


def test_keyframes_normalization() -> None:
    generation = Generation(id="g-1", state="completed")
    assert normalize_keyframes({"frame0": generation, "frame1": None}) == {
        "frame0": {"type": "generation", "id": "g-1"},
        "frame1": None,
    }
    image = {"type": "image", "url": IMAGE_0}
    assert normalize_keyframes({"frame0": image}) == {"frame0": image}
    assert normalize_keyframes(None) is None
    with pytest.raises(LumaInputError, match="only a completed generation can be extended"):
        normalize_keyframes({"frame0": {"id": "g-2", "state": "dreaming"}})


def test_wait_for_completion_false_returns_after_submitting(luma_conn, context) -> None:
    operator = LumaGenerateVideoOperator(task_id="submit", prompt="a cat", wait_for_completion=False)
    result = operator.execute(context)

    assert result["state"] == "queued"
    assert result["video_url"] is None
    assert luma_conn.count("create") == 1
    assert luma_conn.count("get") == luma_conn.count("list") == 0
    assert context["ti"].xcom == {"generation_id": result["id"]}  # no "video_url" until there is one


# ---------------------------------------------------------------- generate: deferral


async def test_deferrable_defers_to_the_trigger_and_completes(luma_conn, context) -> None:
    operator = LumaGenerateVideoOperator(task_id="deferred", prompt="a dog", wait_timeout=timedelta(minutes=10))
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)

    generation_id = context["ti"].xcom["generation_id"]
    trigger = deferred.value.trigger
    assert isinstance(trigger, LumaGenerationTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(minutes=10) + DEFERRAL_TIMEOUT_MARGIN
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_luma.triggers.luma.LumaGenerationTrigger"
    assert kwargs["refs"] == [{"id": generation_id, "api": "luma-ai"}]
    assert kwargs["target_state"] == "completed"
    assert kwargs["luma_conn_id"] == "luma_default"
    assert before + 600 <= kwargs["deadline"] <= time.time() + 600

    event = await anext(trigger.run())
    result = operator.execute_complete(context, event.payload)

    assert result["id"] == generation_id
    assert result["state"] == "completed"
    assert context["ti"].xcom["video_url"] == result["video_url"]


def test_wait_timeout_accepts_seconds() -> None:
    operator = LumaGenerateVideoOperator(task_id="t", prompt="x", wait_timeout=90)
    assert operator.wait_timeout == timedelta(seconds=90)


# ---------------------------------------------------------------- generate: failures


def test_failed_generation_fails_the_task_in_the_worker(luma_conn, context) -> None:
    operator = LumaGenerateVideoOperator(task_id="fail", prompt="a cat [sim:fail]", deferrable=False)
    with pytest.raises(LumaGenerationFailedError, match="simulated failure") as failure:
        operator.execute(context)
    assert failure.value.generation_id == context["ti"].xcom["generation_id"]
    assert "video_url" not in context["ti"].xcom
    assert LumaVideoLink().get_link(operator, ti_key=context["ti"]) == ""  # no video: the link stays empty


async def test_failed_generation_fails_the_task_after_deferral(luma_conn, context) -> None:
    operator = LumaGenerateVideoOperator(task_id="fail", prompt="a cat [sim:fail]")
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    event = await anext(deferred.value.trigger.run())
    assert event.payload["status"] == "failed"
    with pytest.raises(LumaGenerationFailedError, match="simulated failure"):
        operator.execute_complete(context, event.payload)


def test_wait_timeout_fails_the_task_in_the_worker(luma_conn, context) -> None:
    luma_conn.script("slow", queued_seconds=30)
    operator = LumaGenerateVideoOperator(task_id="slow", prompt="slow", deferrable=False, wait_timeout=0.5)
    # No task state store in this context (as on Airflow 2.11-3.2): failed without retries.
    with pytest.raises(AirflowFailException, match="Timed out"):
        operator.execute(context)


async def test_wait_timeout_fails_the_task_after_deferral(luma_conn, context) -> None:
    luma_conn.script("slow", queued_seconds=30)
    operator = LumaGenerateVideoOperator(task_id="slow", prompt="slow", wait_timeout=0.5)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    event = await anext(deferred.value.trigger.run())
    with pytest.raises(AirflowFailException, match="Timed out"):  # no task state store: no retries
        operator.execute_complete(context, event.payload)


@pytest.mark.parametrize("event", [None, {}, {"message": "no status"}])
def test_execute_complete_without_a_usable_event(event, context) -> None:
    operator = LumaGenerateVideoOperator(task_id="t", prompt="x")
    with pytest.raises(AirflowFailException, match="no usable event"):  # no task state store: no retries
        operator.execute_complete(context, event)


def test_permanent_error_event_fails_with_its_message(context) -> None:
    operator = LumaGenerateVideoOperator(task_id="t", prompt="x")
    with pytest.raises(AirflowFailException, match="rejected the API key"):  # no task state store: no retries
        operator.execute_complete(context, {"status": "error", "message": "rejected the API key", "generations": []})


# ---------------------------------------------------------------- generate: validation


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"prompt": ""}, "prompt must be a non-empty string"),
        ({"prompt": "x" * 2049}, "at most 2048"),
        ({"model": "ray-3"}, "model='ray-3' is not supported"),
        ({"aspect_ratio": "2:1"}, "aspect_ratio='2:1'"),
        ({"resolution": "8k"}, "resolution='8k'"),
        ({"duration": "7s"}, "duration='7s'"),
        ({"loop": "yes"}, "loop must be True or False"),
        ({"callback_url": "ftp://example.com"}, "callback_url must be an http"),
        ({"keyframes": {"frame2": {"type": "image", "url": IMAGE_0}}}, "unknown keys"),
        ({"keyframes": {"frame0": {"type": "video", "url": IMAGE_0}}}, "has type 'video'"),
        ({"keyframes": {"frame0": {"type": "image"}}}, "give its http"),
        ({"keyframes": {"frame0": {"id": "g", "state": "queued"}}}, "only a completed generation"),
        ({"wait_timeout": 0}, "wait_timeout must be positive"),
        ({"wait_timeout": "1h"}, "wait_timeout must be a timedelta"),
    ],
)
def test_literal_parameters_are_checked_at_construction(parameters, message) -> None:
    with pytest.raises(LumaInputError, match=message):
        LumaGenerateVideoOperator(task_id="bad", **{"prompt": "a cat", **parameters})


def test_templated_parameters_are_checked_after_rendering(luma_conn, context) -> None:
    operator = LumaGenerateVideoOperator(
        task_id="templated", prompt="{{ params.prompt }}", model="{{ params.model }}", loop="{{ params.loop }}"
    )
    # What Airflow's rendering would produce from bad params.
    operator.prompt, operator.model, operator.loop = "a cat", "ray-9", "True"
    with pytest.raises(LumaInputError, match="model='ray-9'"):
        operator.execute(context)
    assert luma_conn.count("create") == 0

    operator.model, operator.wait_for_completion = "ray-2", False
    result = operator.execute(context)
    assert created_bodies(luma_conn) == [{"prompt": "a cat", "model": "ray-2", "loop": True}]
    assert result["state"] == "queued"


# ---------------------------------------------------------------- download: hook


def test_download_to_a_file_path_without_the_api_key(luma_conn, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    written = LumaHook().download_video(generation, tmp_path / "clip.mp4")

    assert written == tmp_path / "clip.mp4"
    assert written.read_bytes() == SAMPLE
    assert leftovers(tmp_path) == []
    (video_request,) = luma_conn.requests("video")
    assert video_request["authorization"] is None
    assert video_request["status"] == 200


def test_download_into_folders(luma_conn, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    hook = LumaHook()

    assert hook.download_video(generation, tmp_path).read_bytes() == SAMPLE
    assert (tmp_path / f"{generation['id']}.mp4").read_bytes() == SAMPLE
    # A path ending in "/" is a folder, created if missing.
    written = hook.download_video(generation, f"{tmp_path}/new/nested/")
    assert written == tmp_path / "new" / "nested" / f"{generation['id']}.mp4"
    assert written.read_bytes() == SAMPLE


def test_download_by_id_fetches_the_generation_first(luma_conn, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    gets = luma_conn.count("get")
    written = LumaHook().download_video(generation["id"], tmp_path / "by-id.mp4")
    assert written.read_bytes() == SAMPLE
    assert luma_conn.count("get") == gets + 1


def test_download_accepts_a_generation_object_and_overwrites(luma_conn, tmp_path: Path) -> None:
    generation = Generation.from_dict(completed_generation(luma_conn))
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"an older video")
    LumaHook().download_video(generation, target)
    assert target.read_bytes() == SAMPLE


def test_download_to_object_storage(luma_conn, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    hook = LumaHook()

    written = hook.download_video(generation, ObjectStoragePath(f"file://{tmp_path}/store/clip.mp4"))
    assert isinstance(written, ObjectStoragePath)
    assert (tmp_path / "store" / "clip.mp4").read_bytes() == SAMPLE

    folder = ObjectStoragePath(f"file://{tmp_path}/store")
    written = hook.download_video(generation, folder)
    assert str(written).endswith(f"/store/{generation['id']}.mp4")
    assert (tmp_path / "store" / f"{generation['id']}.mp4").read_bytes() == SAMPLE
    assert leftovers(tmp_path / "store") == []


def test_interrupted_download_leaves_no_file(luma_conn, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    luma_conn.inject_fault("drop", endpoint="video", times=5)
    target = tmp_path / "clip.mp4"

    with pytest.raises(LumaConnectionError, match="video host"):
        LumaHook().download_video(generation, target, max_retries=2)

    assert not target.exists()
    assert leftovers(tmp_path) == []
    assert luma_conn.count("video") == 3


def test_interrupted_object_storage_download_leaves_no_object(luma_conn, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    luma_conn.inject_fault("drop", endpoint="video", times=5)

    with pytest.raises(LumaConnectionError):
        LumaHook().download_video(generation, ObjectStoragePath(f"file://{tmp_path}/clip.mp4"), max_retries=1)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fault", ["drop", "503", "429"])
def test_transient_cdn_errors_are_retried(luma_conn, tmp_path: Path, fault: str) -> None:
    generation = completed_generation(luma_conn)
    luma_conn.inject_fault(fault, endpoint="video")

    written = LumaHook().download_video(generation, tmp_path / "clip.mp4")

    assert written.read_bytes() == SAMPLE
    assert luma_conn.count("video") == 2
    assert all(entry["authorization"] is None for entry in luma_conn.requests("video"))


def test_expired_video_link_is_a_clear_error(luma_conn, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    # The API puts the URL in assets.video; the parsed copy in video_url comes second.
    generation["assets"]["video"] = generation["video_url"] = f"{luma_conn.cdn_url}/videos/unknown.mp4"
    with pytest.raises(LumaError, match=r"answered 404.*link may have expired"):
        LumaHook().download_video(generation, tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("generation", "message"),
    [
        ({"id": "g-1", "state": "dreaming"}, "g-1 is dreaming, not completed"),
        ({"id": "g-1"}, "unknown state, not completed"),
        ({"id": "g-1", "state": "failed", "failure_reason": "bad prompt"}, "failed \\(bad prompt\\)"),
        ({"id": "g-1", "state": "completed"}, "reported no video URL"),
        (42, "Cannot download the video of int"),
    ],
)
def test_download_needs_a_completed_generation_with_a_video(generation, message, tmp_path: Path) -> None:
    with pytest.raises(LumaError, match=message):
        LumaHook().download_video(generation, tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


def test_download_of_an_unfinished_generation_by_id(luma_conn, tmp_path: Path) -> None:
    generation = LumaHook().create_generation("still dreaming [sim:slow]")
    with pytest.raises(LumaError, match="is queued, not completed"):
        LumaHook().download_video(generation.id, tmp_path / "clip.mp4")
    assert luma_conn.count("video") == 0


def test_unwritable_destination_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(LumaInputError, match="Cannot create the folder"):
        LumaHook().check_video_destination(blocker / "clip.mp4")
    with pytest.raises(LumaInputError, match="Cannot create the folder"):
        LumaHook().check_video_destination(blocker, into_folder=True)
    LumaHook().check_video_destination(tmp_path / "fine" / "clip.mp4")
    assert (tmp_path / "fine").is_dir()
    assert leftovers(tmp_path / "fine") == []


# ---------------------------------------------------------------- download: operator


def test_download_operator_one_generation(luma_conn, context, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    operator = LumaDownloadVideoOperator(task_id="download", generation=generation, destination=str(tmp_path))
    assert operator.execute(context) == str(tmp_path / f"{generation['id']}.mp4")


def test_download_operator_several_generations_into_a_new_folder(luma_conn, context, tmp_path: Path) -> None:
    generations = [completed_generation(luma_conn, f"clip {n}") for n in range(3)]
    destination = tmp_path / "videos"
    operator = LumaDownloadVideoOperator(
        task_id="download", generation=[generations[0], generations[1]["id"], generations[2]], destination=destination
    )
    paths = operator.execute(context)

    assert paths == [str(destination / f"{g['id']}.mp4") for g in generations]
    assert all(Path(p).read_bytes() == SAMPLE for p in paths)
    assert all(entry["authorization"] is None for entry in luma_conn.requests("video"))


def test_download_operator_comma_separated_ids_and_object_storage_url(luma_conn, context, tmp_path: Path) -> None:
    generations = [completed_generation(luma_conn, f"clip {n}") for n in range(2)]
    operator = LumaDownloadVideoOperator(
        task_id="download",
        generation=",".join(g["id"] for g in generations),
        destination=f"file://{tmp_path}/bucket/",
    )
    paths = operator.execute(context)

    assert [Path(p.removeprefix("file://")).name for p in paths] == [f"{g['id']}.mp4" for g in generations]
    assert all((tmp_path / "bucket" / f"{g['id']}.mp4").read_bytes() == SAMPLE for g in generations)


def test_download_operator_checks_the_destination_before_downloading(luma_conn, context, tmp_path: Path) -> None:
    generation = completed_generation(luma_conn)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    operator = LumaDownloadVideoOperator(task_id="download", generation=[generation], destination=blocker)
    with pytest.raises(LumaInputError, match="Cannot create the folder"):
        operator.execute(context)
    assert luma_conn.count("video") == 0


@pytest.mark.parametrize(
    ("generation", "message"),
    [
        ([], "empty list"),
        ("", "empty generation id"),
        ([{"id": "g"}, 3], "holds int"),
        (3.5, "expected a generation dict"),
    ],
)
def test_download_operator_rejects_bad_generations_at_construction(generation, message) -> None:
    with pytest.raises(LumaInputError, match=message):
        LumaDownloadVideoOperator(task_id="download", generation=generation, destination="/tmp/x/")


def test_download_operator_needs_a_destination() -> None:
    with pytest.raises(LumaInputError, match="give a destination"):
        LumaDownloadVideoOperator(task_id="download", generation="g-1", destination=" ")
