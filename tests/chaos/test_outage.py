"""The API is unreachable for a while (its process stopped for longer than one hold, then restarted on the
same port from its state file): a waiting trigger and a sync wait resume and end correctly before their deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.testing import LumaSimulator
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY, connection_json
from tests.support.logs import logged_text, sentinel_free
from tests.support.polls import wait_for_polls

pytestmark = pytest.mark.timeout(90)

HOLD = 1.0
OUTAGE = 2.5  # > HOLD: every long poll in flight is cut and several reconnects are refused
DEADLINE = 40.0


def simulator(state_file, port: int = 0, cdn_port: int = 0) -> LumaSimulator:
    return LumaSimulator(
        port=port,
        cdn_port=cdn_port,
        api_key=SENTINEL_KEY,
        hold_seconds=HOLD,
        queued_seconds=0.3,
        dreaming_seconds=6.0,  # still dreaming when the API comes back
        state_file=state_file,
    )


def test_waits_resume_after_the_api_was_unreachable(tmp_path, monkeypatch, caplog, capsys):
    state_file = tmp_path / "sim-state.json"
    first = simulator(state_file).start()
    second: LumaSimulator | None = None
    # Real back-off (no fast_retries); one retry per call, so the outage outlasts calls and the waits' own
    # back-off has to carry them through it.
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(first, max_retries=1))
    try:
        hook = LumaHook()
        for_trigger, for_sync = (hook.create_generation(f"outage {i}") for i in range(2))
        started = time.monotonic()

        async def scenario():
            nonlocal second
            trigger = LumaGenerationTrigger([for_trigger.id], deadline=time.time() + DEADLINE)
            events = asyncio.ensure_future(collect(trigger))
            sync_wait = asyncio.ensure_future(
                asyncio.to_thread(LumaHook().wait_for_generation, for_sync.id, timeout=DEADLINE)
            )
            for generation in (for_trigger, for_sync):  # both waits are polling the first API (however loaded)
                await asyncio.to_thread(wait_for_polls, first, generation.id)
            await asyncio.to_thread(first.stop)  # releases the held polls, then refuses connections
            down_at = time.time()
            await asyncio.sleep(OUTAGE)
            second = simulator(state_file, first.port, first.cdn_port)  # a new process, same port, state from file
            await asyncio.to_thread(second.start)
            up_at = time.time()
            return await asyncio.wait_for(asyncio.gather(events, sync_wait), DEADLINE + 10), down_at, up_at

        (events, waited), down_at, up_at = asyncio.run(scenario())
        elapsed = time.monotonic() - started
    finally:
        first.stop()
        if second is not None:
            second.stop()

    assert elapsed < DEADLINE
    (event,) = events
    sentinel_free(event)
    assert event["status"] == "success", event
    (trigger_result,) = event["generations"]
    assert trigger_result["id"] == for_trigger.id
    assert trigger_result["state"] == "completed"
    assert waited.id == for_sync.id
    assert waited.state == "completed"
    # Both videos are served by the restarted API (its CDN origin on the same port).
    assert trigger_result["video_url"].startswith(second.cdn_url)
    assert waited.video_url.startswith(second.cdn_url)
    # The restarted API knew both generations from its state file, answered the resumed polls, saw no create.
    assert {g["id"] for g in second.generations()} == {for_trigger.id, for_sync.id}
    resumed = {e["query"]["generation_id"] for e in second.requests("get") if e["status"] == 200}
    assert resumed == {for_trigger.id, for_sync.id}
    assert {e["query"]["generation_id"] for e in first.requests("get")} == {for_trigger.id, for_sync.id}
    assert second.count("create") == 0
    assert first.count("create") == 2
    assert up_at - down_at >= OUTAGE
    assert "could not be reached" in logged_text(caplog, capsys)  # the waits did meet the outage


async def collect(trigger: LumaGenerationTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]
