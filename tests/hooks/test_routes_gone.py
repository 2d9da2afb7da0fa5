"""When the service no longer has the luma-ai routes: creates fall back, waits say why they cannot go on."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_luma.errors import LumaInputError, LumaRouteNotFoundError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import ApiFamily
from airflow_provider_luma.testing import LumaSimulator
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY, connection_json

LUMA_AI_ID = "4f1c0000-0000-4000-8000-00000000000a"


@pytest.fixture
def gone(monkeypatch):
    with LumaSimulator(
        api_key=SENTINEL_KEY, hold_seconds=1, queued_seconds=0.3, dreaming_seconds=0.6, luma_ai_routes_gone=True
    ) as sim:
        monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim, poll_interval=2))
        yield sim


@pytest.mark.parametrize(
    ("params", "expected_body"),
    [
        ({}, {"prompt": "a fox", "model": "luma/ray-2"}),
        ({"model": "ray-2", "duration": "5s"}, {"prompt": "a fox", "model": "luma/ray-2", "duration": 5}),
        (
            {"model": "ray-flash-2", "aspect_ratio": "9:16"},
            {"prompt": "a fox", "model": "luma/ray-flash-2", "aspect_ratio": "9:16"},
        ),
    ],
)
def test_a_create_falls_back_to_the_universal_endpoint_once(gone, params, expected_body, caplog):
    hook = LumaHook()
    generation = hook.create_generation("a fox", **params)
    assert generation.api is ApiFamily.VIDEO
    # The luma-ai create answered the framework's route 404, which created nothing; exactly one paid create.
    assert [r["status"] for r in gone.requests("create")] == [404]
    assert [r["json"] for r in gone.requests("video_create")] == [expected_body]
    assert len(gone.generations()) == 1
    assert hook.wait_for_generation(generation, timeout=30).state == "completed"

    LumaHook().create_generation("another fox", **params)  # remembered for the process: no second try
    assert gone.count("create") == 1
    assert gone.count("video_create") == 2
    warnings = [r for r in caplog.records if "no longer serves the luma-ai endpoints" in r.getMessage()]
    assert len(warnings) == 1


def test_a_parameter_with_no_universal_equivalent_is_a_clear_error(gone):
    with pytest.raises(LumaInputError, match="universal endpoint has no callback_url: remove it"):
        LumaHook().create_generation("a fox", callback_url="https://hooks.example.com/luma")
    assert gone.generations() == []


def test_a_wait_for_a_luma_ai_id_ends_with_an_error_that_says_so(gone):
    with pytest.raises(LumaRouteNotFoundError, match="no longer serves the luma-ai endpoints") as raised:
        LumaHook().wait_for_generation(LUMA_AI_ID, timeout=30)
    assert f"generation(s) {LUMA_AI_ID} were created there" in raised.value.message
    assert gone.count("get") == 1  # not retried: it will not come back


def test_the_trigger_ends_with_one_error_event(gone):
    async def events():
        trigger = LumaGenerationTrigger([LUMA_AI_ID], deadline=time.time() + 30)
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    assert event["status"] == "error"
    assert "no longer serves the luma-ai endpoints" in event["message"]


def test_test_connection_reports_which_families_the_key_reaches(gone):
    assert LumaHook().test_connection() == (
        True,
        f"The Luma API at {gone.base_url} accepted the key on the video endpoints. The luma-ai endpoints are gone "
        "from this server.",
    )
