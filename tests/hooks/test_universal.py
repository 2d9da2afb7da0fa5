"""The universal video endpoint (luma/ray-2, luma/ray-3.2 ...) through LumaHook, over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from aiohttp import web

from airflow_provider_luma.create_requests import build_create_request
from airflow_provider_luma.errors import LumaGenerationFailedError, LumaInputError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import ApiFamily, Generation, parse_generation_list
from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import connection_json
from tests.support.logs import LineRecorder


def use_connection(monkeypatch, sim: LumaSimulator, **extras) -> LumaHook:
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim, poll_interval=2, **extras))
    return LumaHook()


def test_create_wait_and_complete_on_the_universal_endpoint(monkeypatch, simulator):
    hook = use_connection(monkeypatch, simulator)
    generation = hook.create_generation("a fox in snow", model="luma/ray-2", duration="5s", resolution="720p")
    assert generation.api is ApiFamily.VIDEO
    assert generation.id.endswith(":luma/ray-2")
    (create,) = simulator.requests("video_create")
    # "5s" from the user is the integer this endpoint documents.
    assert create["json"] == {"prompt": "a fox in snow", "model": "luma/ray-2", "duration": 5, "resolution": "720p"}

    recorder = LineRecorder()
    (done,) = hook.run_wait(hook.new_wait([generation.to_dict()], "completed", timeout=30, logger=recorder)).result()
    assert done.state == "completed"
    assert done.video_url.startswith(simulator.cdn_url)
    assert done.usage == {"credits_used": done.usage["credits_used"], "usd_spent": done.usage["usd_spent"]}
    assert done.usage["credits_used"] > 0
    assert done.to_dict()["usage"] == dict(done.usage)  # kept in XCom
    assert simulator.count("get") == simulator.count("list") == 0  # never asked the luma-ai endpoints
    usage_lines = [line for line in recorder.at("info") if "usage:" in line]
    assert len(usage_lines) == 1, recorder.records  # logged once, when it completed: what it cost is INFO
    assert "credits_used" in usage_lines[0]


def test_async_wait_on_the_universal_endpoint(monkeypatch, simulator):
    hook = use_connection(monkeypatch, simulator)

    async def go() -> Generation:
        generation = await hook.acreate_generation("a fox", model="luma/ray-flash-2")
        return await hook.await_for_generation(generation, timeout=30)

    done = asyncio.run(go())
    assert done.state == "completed"
    assert done.api is ApiFamily.VIDEO
    assert simulator.count("video_get") >= 1


def test_universal_polls_are_spaced_by_poll_interval(monkeypatch, simulator):
    simulator.script("slow fox", queued_seconds=3, dreaming_seconds=2)
    hook = use_connection(monkeypatch, simulator)
    generation = hook.create_generation("slow fox", model="luma/ray-2")
    hook.wait_for_generation(generation, timeout=30)
    times = [r["time"] for r in simulator.requests("video_get")]
    assert 2 <= len(times) <= 4, times  # 5 s at one poll per 2 s: no hot loop, no hold to wait on
    assert all(later - earlier >= 1.9 for earlier, later in itertools.pairwise(times)), times


def test_error_ends_the_wait_at_the_first_poll_that_sees_it(monkeypatch, simulator):
    simulator.script("doomed", outcome="failed", failure_reason="blocked by moderation")
    hook = use_connection(monkeypatch, simulator)
    generation = hook.create_generation("doomed", model="luma/ray-2")
    with pytest.raises(LumaGenerationFailedError, match="blocked by moderation"):
        hook.wait_for_generation(generation, timeout=30)
    polls = simulator.requests("video_get")
    failed_at = simulator.requests("video_create")[0]["time"] + 0.9  # queued 0.3 s + dreaming 0.6 s
    assert [p["time"] >= failed_at for p in polls].count(True) == 1, polls  # no poll after the one that saw it


RAY_32_BAD = [
    ({"edit_type": "video_edit"}, "edit_type='video_edit' needs source_video_url"),
    ({"edit_type": "remix"}, "edit_type='remix' is not supported: use one of video, video_edit, video_reframe"),
    ({"hdr": True, "duration": 10}, "hdr=True needs duration 5 and resolution 720p or 1080p"),
    ({"hdr": True, "resolution": "540p"}, "hdr=True needs duration 5"),
    ({"exr_export": True}, "exr_export=True needs hdr=True"),
    ({"aspect_ratio": "9:21"}, "aspect_ratio='9:21' is not supported"),
    ({"resolution": "4k"}, "resolution='4k' is not supported: use one of 360p, 540p, 720p, 1080p"),
    ({"duration": 9}, "duration=9 is not supported: use one of 5, 10"),
    ({"keyframes": {"frame0": {"type": "image", "url": "https://x/a.jpg"}}}, "keyframes is not a parameter of"),
    ({"callback_url": "https://hooks.example.com"}, "callback_url is not a parameter of model 'luma/ray-3.2'"),
    ({"source_video_url": {"id": "g1", "state": "dreaming"}}, "generation 'g1', which has no video yet"),
    ({"image_url": "ftp://x/a.jpg"}, "image_url must be an http(s) URL"),
]


@pytest.mark.parametrize(("params", "message"), RAY_32_BAD)
def test_ray_32_parameters_are_checked_before_any_call(monkeypatch, simulator, params, message):
    hook = use_connection(monkeypatch, simulator)
    with pytest.raises(LumaInputError) as raised:
        hook.create_generation("a fox", model="luma/ray-3.2", **params)
    assert message in raised.value.message
    assert simulator.count() == 0


def test_ray_32_user_names_map_to_the_api_names(monkeypatch, simulator):
    hook = use_connection(monkeypatch, simulator)
    source = hook.wait_for_generation(hook.create_generation("a fox", model="luma/ray-2"), timeout=30)
    edited = hook.create_generation(
        "make it winter",
        model="luma/ray-3.2",
        edit_type="video_edit",
        source_video_url=source.to_dict(),  # a generation of ours stands for its video
        hdr=True,
        resolution="1080p",
        duration=5,
    )
    body = simulator.requests("video_create")[-1]["json"]
    assert body["type"] == "video_edit"
    assert body["video_url"] == source.video_url
    assert "edit_type" not in body
    assert "source_video_url" not in body
    assert hook.wait_for_generation(edited, timeout=30).state == "completed"


def test_a_ray_2_parameter_on_the_luma_ai_models_says_which_it_takes():
    with pytest.raises(LumaInputError, match="hdr is not a parameter of model 'ray-2'"):
        build_create_request("a fox", model="ray-2", hdr=True)


def test_a_generation_dict_routes_a_later_wait_and_download(monkeypatch, tmp_path):
    # Bare UUIDs (as the schema shows them): only the dict's "api" tells the endpoint.
    with LumaSimulator(api_key="k", hold_seconds=1, queued_seconds=0.3, dreaming_seconds=0.6,
                       universal_id_suffix=False) as sim:  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim, poll_interval=2))
        created = LumaHook().create_generation("a fox", model="luma/ray-2").to_dict()
        assert ":" not in created["id"]
        assert created["api"] == "video"
        done = LumaHook().wait_for_generation(created, timeout=30)
        path = LumaHook().download_video(done.to_dict(), tmp_path / "videos/")
        assert path.read_bytes()[4:8] == b"ftyp"
        assert sim.count("get") == 0
        assert sim.count("video_get") >= 1


def test_a_bare_id_uses_the_connections_api_extra(monkeypatch):
    with LumaSimulator(api_key="k", hold_seconds=1, queued_seconds=0.3, dreaming_seconds=0.6,
                       universal_id_suffix=False) as sim:  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim, poll_interval=2, api="video"))
        bare_id = LumaHook().create_generation("a fox", model="luma/ray-2").id
        assert LumaHook().get_generation(bare_id).api is ApiFamily.VIDEO
        assert sim.count("video_get") == 1
        assert sim.count("get") == 0


def test_the_create_answer_may_name_the_id_generation_id(monkeypatch):
    with LumaSimulator(api_key="k", universal_id_field="generation_id") as sim:
        monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim))
        generation = LumaHook().create_generation("a fox", model="luma/ray-2")
        assert generation.id == sim.generations()[0]["id"]


def test_an_unknown_luma_model_is_sent_as_is_with_one_warning(monkeypatch, simulator, caplog):
    hook = use_connection(monkeypatch, simulator)
    for _ in range(2):
        generation = hook.create_generation("a fox", model="luma/ray-9", duration=7, edit_type="x")
    assert generation.api is ApiFamily.VIDEO
    assert simulator.requests("video_create")[-1]["json"] == {
        "prompt": "a fox",
        "model": "luma/ray-9",
        "duration": 7,
        "type": "x",
    }
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "luma/ray-9" in r.getMessage()]
    assert len(warnings) == 1


def test_a_mixed_wait_keeps_each_familys_pace(monkeypatch, simulator):
    # One wait, one luma-ai and one universal generation: the universal one is polled on its interval
    # while a long poll for the other is held.
    simulator.hold_seconds = 4
    simulator.script("both", queued_seconds=4, dreaming_seconds=1)
    hook = use_connection(monkeypatch, simulator, long_poll_hold=4)
    old = hook.create_generation("both")
    new = hook.create_generation("both", model="luma/ray-2")
    assert {old.api, new.api} == {ApiFamily.LUMA_AI, ApiFamily.VIDEO}

    done = asyncio.run(hook.await_for_generations([old, new], timeout=30))
    assert [g.id for g in done] == [old.id, new.id]
    assert {g.state for g in done} == {"completed"}
    held = [r for r in simulator.requests("get") if r["held"] > 1]
    polled = simulator.requests("video_get")
    assert held
    assert len(polled) >= 2
    overlaps = [p for p in polled for h in held if h["time"] < p["time"] < h["time"] + h["held"]]
    assert overlaps, "no universal poll happened while the long poll was held"

    done_sync = hook.wait_for_generations([old.to_dict(), new.to_dict()], timeout=30)
    assert {g.state for g in done_sync} == {"completed"}


# -- tolerant answers --------------------------------------------------------------------------------


def test_universal_words_map_to_ours():
    for word, ours in [
        ("queued", "queued"),
        ("waiting", "queued"),
        ("pending", "queued"),
        ("generating", "dreaming"),
        ("active", "dreaming"),
        ("processing", "dreaming"),
        ("completed", "completed"),
        ("error", "failed"),
        ("failed", "failed"),
    ]:
        assert Generation.from_api({"id": "g", "status": word}).state == ours
    failed = Generation.from_api({"id": "g", "status": "error", "error": {"name": "E", "message": "no credits"}})
    assert failed.is_failed
    assert failed.failure_reason == "no credits"


def test_one_malformed_item_does_not_hide_the_others():
    good = {"id": "g1", "state": "completed", "assets": {"video": "https://cdn/x.mp4"}}
    parsed = parse_generation_list([{"state": "completed"}, "nonsense", good])
    assert [g.id for g in parsed] == ["g1"]


def test_a_malformed_multi_item_leaves_the_other_waits_unharmed(monkeypatch):
    # A server whose multi-fetch answer holds one broken item beside a good one, over real HTTP.
    async def multi(request: web.Request) -> web.Response:
        good = {"id": "g-good", "state": "completed", "assets": {"video": "https://cdn.example/v.mp4"}}
        return web.json_response([{"state": "dreaming", "id": None}, good])

    async def serve() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/v2/generate/video/luma-ai/generations", multi)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    async def go():
        runner, port = await serve()
        try:
            monkeypatch.setenv(
                "AIRFLOW_CONN_LUMA_DEFAULT",
                f'{{"conn_type": "luma", "host": "http://127.0.0.1:{port}", "password": "k", '
                '"extra": {"min_poll_interval": 0.05, "max_retries": 0}}',
            )
            hook = LumaHook()
            return await hook.arun_wait(hook.new_wait(["g-good", "g-bad"], "completed", timeout=10))
        finally:
            await runner.cleanup()

    both = asyncio.run(go())
    # g-good is seen completed at the first answer; the broken item counts as g-bad missing, so g-bad
    # alone is asked for next, and the wait ends naming it (before, the whole answer was a transient
    # error and the wait ran to its deadline without ever seeing g-good).
    assert both.status == "error"
    assert "g-bad" in both.message
    assert [(g.id, g.state) for g in both.generations] == [("g-good", "completed")]
