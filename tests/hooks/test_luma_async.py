"""LumaHook's async path against the simulator: same behaviour as sync, one session, never blocking."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_luma.errors import (
    LumaAuthenticationError,
    LumaError,
    LumaGenerationFailedError,
    LumaNotFoundError,
    LumaServerError,
    LumaWaitTimeoutError,
)
from airflow_provider_luma.hooks.luma import LumaHook
from tests.support.connection import SENTINEL_KEY, connection_json

UNKNOWN_ID = "4f1c0000-0000-4000-8000-000000000001"


async def test_create_and_long_poll_return_early_on_the_target(luma_conn):
    luma_conn.hold_seconds = 10
    hook = LumaHook()
    generation = await hook.acreate_generation("async fox", aspect_ratio="9:16")
    assert luma_conn.generation(generation.id)["request"] == {"prompt": "async fox", "aspect_ratio": "9:16"}
    started = time.monotonic()
    assert (await hook.aget_generation(generation.id, "dreaming")).state == "dreaming"
    assert time.monotonic() - started < 5


async def test_long_poll_returns_a_later_state_and_the_current_state_at_the_hold(luma_conn):
    luma_conn.script("stuck", queued_seconds=60)
    hook = LumaHook()
    done = await hook.acreate_generation("done")
    stuck = await hook.acreate_generation("stuck")
    luma_conn.set_state(done.id, "completed")
    assert (await hook.aget_generation(done.id, "queued")).state == "completed"
    started = time.monotonic()
    assert (await hook.aget_generation(stuck.id, "completed")).state == "queued"
    assert time.monotonic() - started >= luma_conn.hold_seconds * 0.9


@pytest.mark.parametrize("shape", ["list", "generations", "data"])
async def test_multi_fetch_every_answer_shape_in_concurrent_chunks(monkeypatch, simulator, shape):
    simulator.multi_shape = shape
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, ids_per_request=2))
    hook = LumaHook()
    ids = [(await hook.acreate_generation(f"many {i}")).id for i in range(5)]
    assert [g.id for g in await hook.aget_generations(ids)] == ids
    assert simulator.count("list") == 3


@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "504", "drop", "malformed", "missing_fields"])
async def test_transient_faults_are_retried(luma_conn, kind):
    hook = LumaHook()
    generation = await hook.acreate_generation("faulty")
    luma_conn.inject_fault(kind, endpoint="get")
    assert (await hook.aget_generation(generation.id)).id == generation.id
    assert luma_conn.count("get") == 2


async def test_slow_answer_past_the_client_timeout_is_retried(monkeypatch, simulator):
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, timeout=1))
    hook = LumaHook()
    generation = await hook.acreate_generation("slow")
    simulator.inject_fault("slow", endpoint="get", delay=5)
    started = time.monotonic()
    assert (await hook.aget_generation(generation.id)).id == generation.id
    assert time.monotonic() - started < 4


async def test_create_is_not_resent_when_the_server_may_have_acted(luma_conn):
    luma_conn.inject_fault("500", endpoint="create", after=True)
    with pytest.raises(LumaServerError):
        await LumaHook().acreate_generation("maybe paid")
    assert luma_conn.count("create") == 1


async def test_auth_errors_are_not_retried_and_hide_the_key(luma_conn):
    luma_conn.inject_fault("401", endpoint="get")
    with pytest.raises(LumaAuthenticationError) as raised:
        await LumaHook().aget_generation(UNKNOWN_ID)
    assert luma_conn.count("get") == 1
    assert SENTINEL_KEY not in str(raised.value)


async def test_bounded_retries(monkeypatch, simulator):
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, max_retries=1))
    simulator.inject_fault("503", endpoint="get", times=5)
    with pytest.raises(LumaServerError):
        await LumaHook().aget_generation(UNKNOWN_ID)
    assert simulator.count("get") == 2


async def test_wait_completed_failed_and_timeout(luma_conn):
    luma_conn.script("doomed", outcome="failed", failure_reason="moderation")
    luma_conn.script("forever", queued_seconds=600)
    hook = LumaHook()
    ok, doomed, forever = [(await hook.acreate_generation(p)).id for p in ("fine", "doomed", "forever")]
    assert (await hook.await_for_generation(ok, timeout=30)).state == "completed"
    with pytest.raises(LumaGenerationFailedError, match="moderation"):
        await hook.await_for_generation(doomed, timeout=30)
    with pytest.raises(LumaWaitTimeoutError):
        await hook.await_for_generation(forever, timeout=1.5)
    with pytest.raises(LumaNotFoundError):
        await hook.await_for_generation(UNKNOWN_ID, timeout=30)


async def test_a_wait_reuses_one_connection_across_polls(luma_conn):
    luma_conn.script("several polls", queued_seconds=1.5, dreaming_seconds=1.5)
    hook = LumaHook()
    generation = await hook.acreate_generation("several polls")
    async with hook:
        await hook.await_for_generation(generation.id, timeout=30)
        connector = hook._async_session.connector
        assert connector.limit == 0  # no pool cap can queue concurrent long polls
    polls = luma_conn.requests("get")
    assert len(polls) >= 3
    assert len({entry["peer"] for entry in polls}) == 1, "each poll opened a new connection"


async def test_the_session_is_closed_when_the_context_ends(luma_conn):
    hook = LumaHook()
    async with hook:
        session = hook._async_session
        await hook.aget_generations([(await hook.acreate_generation("x")).id])
    assert session.closed
    assert hook._async_session is None


async def test_the_event_loop_keeps_running_during_a_long_poll(luma_conn):
    luma_conn.script("hold", queued_seconds=60)
    hook = LumaHook()
    generation = await hook.acreate_generation("hold")
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.02)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await hook.aget_generation(generation.id, "completed")
    held = time.monotonic() - started
    stop.set()
    await task
    assert held >= 0.9
    assert ticks >= held / 0.02 * 0.5, f"the loop was blocked: {ticks} ticks in {held:.2f} s"


async def test_missing_connection_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_LUMA_DEFAULT", raising=False)
    with pytest.raises(LumaError, match="does not exist"):
        await LumaHook(luma_conn_id="nowhere").aget_generation(UNKNOWN_ID)


async def test_hooks_on_one_event_loop_share_one_session_closed_by_the_last(luma_conn):
    first, second = LumaHook(), LumaHook()
    async with first:
        async with second:
            assert first._async_session is second._async_session
            shared = first._async_session
        assert not shared.closed  # the first hook still uses it
        await first.aget_generation((await first.acreate_generation("shared")).id)
    assert shared.closed
    async with LumaHook() as third:
        assert third._async_session is not shared  # a new one once the last user left


def test_each_event_loop_gets_its_own_session(luma_conn):
    # dag.test() runs each trigger under its own event loop: nothing may outlive its loop.
    sessions = []

    async def use():
        async with LumaHook() as hook:
            await hook.aget_generations([(await hook.acreate_generation("loop")).id])
            sessions.append(hook._async_session)

    asyncio.run(use())
    asyncio.run(use())
    assert sessions[0] is not sessions[1]
    assert all(session.closed for session in sessions)


async def test_one_hook_cannot_be_entered_twice(luma_conn):
    hook = LumaHook()
    async with hook:
        with pytest.raises(RuntimeError, match="already open"):
            await hook.__aenter__()
