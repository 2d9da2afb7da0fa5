"""Luma's own Dream Machine API as the connection's backend, through LumaHook, over real HTTP (the simulator)."""

from __future__ import annotations

import asyncio
import json

import pytest
from airflow.models import Connection

from airflow_provider_luma.errors import LumaError, LumaInputError, LumaNotFoundError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.hooks.settings import LumaSettings
from airflow_provider_luma.models import ApiFamily, Generation
from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import SENTINEL_KEY, connection_json


def luma_backend(monkeypatch, sim: LumaSimulator, conn_id: str = "luma_default", **extras) -> LumaHook:
    extra = {"backend": "luma", "poll_interval": 2, **extras}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(sim, **extra))
    return LumaHook(luma_conn_id=conn_id)


def settings_of(host: str | None, **extra) -> LumaSettings:
    conn = Connection(conn_id="c", conn_type="luma", host=host, password=SENTINEL_KEY, extra=json.dumps(extra))
    return LumaSettings.from_connection(conn, conn.extra_dejson)


def test_the_backend_is_chosen_by_the_host_unless_the_extra_says():
    luma = settings_of("https://api.lumalabs.ai")
    assert (luma.backend, luma.base_url, luma.api) == (
        "luma",
        "https://api.lumalabs.ai/dream-machine/v1",
        ApiFamily.DREAM_MACHINE,
    )
    assert (
        settings_of("https://api.lumalabs.ai/dream-machine/v1").base_url == "https://api.lumalabs.ai/dream-machine/v1"
    )
    assert (settings_of(None).backend, settings_of(None).base_url) == ("aimlapi", "https://api.aimlapi.com")
    proxy = settings_of("https://luma-proxy.example.com", backend="luma")
    assert proxy.base_url == "https://luma-proxy.example.com/dream-machine/v1"
    assert settings_of("https://api.lumalabs.ai", backend="aimlapi").base_url == "https://api.lumalabs.ai"
    assert luma.headers["Authorization"] == f"Bearer {SENTINEL_KEY}"


def test_create_wait_and_cancel_map_the_ai_ml_names_to_lumas(monkeypatch, simulator):
    hook = luma_backend(monkeypatch, simulator)
    generation = hook.create_generation("a fox in snow", model="luma/ray-flash-2", duration=5, resolution="720p")
    assert generation.api is ApiFamily.DREAM_MACHINE
    (create,) = simulator.requests("dm_create")
    assert create["json"] == {"prompt": "a fox in snow", "model": "ray-flash-2", "duration": "5s", "resolution": "720p"}
    assert create["path"] == "/dream-machine/v1/generations/video"

    done = hook.wait_for_generation(generation.to_dict(), timeout=30)
    assert done.state == "completed"
    assert done.video_url.startswith(simulator.cdn_url)
    assert simulator.count("dm_get") >= 1
    assert simulator.count("create") == simulator.count("video_create") == 0  # the AI/ML API never asked

    second = hook.create_generation("another fox")  # no model: ray-2, Luma's create requires one
    assert simulator.requests("dm_create")[-1]["json"] == {"prompt": "another fox", "model": "ray-2"}
    hook.cancel_generation(second.id)
    (delete,) = simulator.requests("dm_delete")
    assert delete["path"] == f"/dream-machine/v1/generations/{second.id}"
    with pytest.raises(LumaNotFoundError, match="Generation not found"):  # Luma's {"detail"} in the message
        hook.get_generation(second.id)


def test_async_twins_on_lumas_api(monkeypatch, simulator):
    hook = luma_backend(monkeypatch, simulator)

    async def go() -> Generation:
        generation = await hook.acreate_generation("a fox", model="ray-2", duration="9s")
        done = await hook.await_for_generation(generation, timeout=30)
        doomed = await hook.acreate_generation("doomed", model="ray-flash-2")
        await hook.acancel_generation(doomed)
        return done

    done = asyncio.run(go())
    assert (done.state, done.api) == ("completed", ApiFamily.DREAM_MACHINE)
    assert simulator.requests("dm_create")[0]["json"]["duration"] == "9s"
    assert simulator.count("dm_delete") == 1


def test_what_a_backend_cannot_do_is_refused_before_any_call(monkeypatch, simulator):
    hook = luma_backend(monkeypatch, simulator)
    with pytest.raises(LumaInputError, match="not available on Luma's Dream Machine API"):
        hook.create_generation("hdr", model="luma/ray-3.2", hdr=True)
    with pytest.raises(LumaInputError, match="made on the AI/ML API"):
        hook.get_generation({"id": "7c880e75-0000-4000-8000-000000000001", "api": "video"})
    aimlapi = LumaHook(luma_conn_id="luma_aimlapi")
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_AIMLAPI", connection_json(simulator))
    with pytest.raises(LumaInputError, match=r"^The AI/ML API has no cancel: generation g-1"):
        aimlapi.cancel_generation("g-1")
    with pytest.raises(LumaInputError, match="made on Luma's Dream Machine API"):
        aimlapi.get_generation({"id": "g-2", "api": "dream-machine"})
    assert simulator.requests() == []


def test_lumas_detail_errors_reach_the_message_without_the_key(monkeypatch):
    with LumaSimulator(api_key=SENTINEL_KEY, echo_key_in_errors=True) as sim:
        hook = luma_backend(monkeypatch, sim, max_retries=0)
        with pytest.raises(LumaNotFoundError) as missing:
            hook.get_generation("00000000-0000-4000-8000-00000000beef")
        sim.inject_fault("429", endpoint="dm_create")
        with pytest.raises(LumaError) as limited:
            hook.create_generation("x", model="ray-2")
        for error in (missing.value, limited.value):
            assert SENTINEL_KEY not in str(error)
            assert SENTINEL_KEY not in (error.server_message or "")
            assert "***" in error.message  # the server quoted the key: redacted, the rest kept
        assert "Generation not found" in missing.value.message
        assert "429" in limited.value.message


def test_the_test_button_names_the_backend(monkeypatch, simulator):
    ok, message = luma_backend(monkeypatch, simulator).test_connection()
    assert ok, message
    assert message.startswith(f"Luma's Dream Machine API at {simulator.base_url}/dream-machine/v1 accepted the key")
    assert [r["path"] for r in simulator.requests()] == [
        "/dream-machine/v1/generations/00000000-0000-4000-8000-000000000000"
    ]
