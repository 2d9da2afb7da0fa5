"""What a poll costs besides its HTTP exchange, counted (not timed): lookups, retry machinery, URLs built.

``scripts/profile_poll.py`` measures the CPU time of the same against the code before the change.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from yarl import URL

from airflow_provider_luma.hooks import luma as luma_module
from airflow_provider_luma.hooks import transport
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.hooks.settings import SETTINGS_CACHE
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger

#: Every test counts lookups from an empty settings cache.
pytestmark = pytest.mark.usefixtures("empty_settings_cache")

WAITS = 40


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts connection lookups, retry loops built and URLs built (the real ones run)."""
    counted = {"lookups": 0, "retry_loops": 0, "urls": 0}
    real_lookup = luma_module.get_async_connection

    async def lookup(*args, **kwargs):
        counted["lookups"] += 1
        return await real_lookup(*args, **kwargs)

    class CountedRetrying(transport.AsyncRetrying):
        def __init__(self, *args, **kwargs):
            counted["retry_loops"] += 1
            super().__init__(*args, **kwargs)

    def url(*args, **kwargs):
        counted["urls"] += 1
        return URL(*args, **kwargs)

    monkeypatch.setattr(luma_module, "get_async_connection", lookup)
    monkeypatch.setattr(transport, "AsyncRetrying", CountedRetrying)
    monkeypatch.setattr(transport, "URL", url)
    return counted


def run_waits(ids: list[str]) -> list[dict]:
    async def one(generation_id: str) -> dict:
        trigger = LumaGenerationTrigger([generation_id], deadline=time.time() + 60)
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    async def main() -> list[dict]:
        return await asyncio.gather(*(one(generation_id) for generation_id in ids))

    return asyncio.run(main())


def test_a_happy_wait_costs_no_lookup_no_retry_loop_and_one_url(luma_conn, counts):
    # Each wait polls several times: queued, then dreaming, then completed, each a held long poll.
    luma_conn.script("cheap", queued_seconds=0.3, dreaming_seconds=1.5)
    hook = LumaHook()
    ids = [hook.create_generation(f"cheap {i}").id for i in range(WAITS)]
    SETTINGS_CACHE.clear()  # the triggerer is another process: it starts with nothing kept

    events = run_waits(ids)

    assert {event["status"] for event in events} == {"success"}
    polls = luma_conn.count("get")
    assert polls >= 2 * WAITS  # more than one poll each, so "once per wait" is not "once per poll"
    assert counts["lookups"] == 1  # one for the process, not one per trigger
    assert counts["retry_loops"] == 0  # no failure: no retry machinery built
    assert counts["urls"] == WAITS  # one URL per wait, reused by each of its polls


def test_a_failed_call_builds_the_retry_loop_and_counts_its_attempt(luma_conn, counts):
    hook = LumaHook()
    generation = hook.create_generation("a fox")
    luma_conn.inject_fault("500", endpoint="get", times=2)

    (event,) = run_waits([generation.id])

    assert event["status"] == "success"
    assert counts["retry_loops"] == 1  # built after the first failure, then used for the rest
    statuses = [entry["status"] for entry in luma_conn.requests("get")]
    assert statuses[:3] == [500, 500, 200]


def test_the_retry_loop_keeps_the_attempt_limit(simulator, monkeypatch, counts):
    from tests.support.connection import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, max_retries=2))
    generation = LumaHook().create_generation("a fox")
    simulator.inject_fault("500", endpoint="get", times=10)

    async def once() -> None:
        await LumaHook().aget_generation(generation.id)

    from airflow_provider_luma.errors import LumaServerError

    with pytest.raises(LumaServerError):
        asyncio.run(once())
    assert simulator.count("get") == 3  # the first attempt and max_retries more, as before
