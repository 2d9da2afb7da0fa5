"""The process's cache of connection settings: one lookup for many waits, a fresh read after a 401, a TTL."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_luma.errors import LumaAuthenticationError
from airflow_provider_luma.hooks import luma as luma_module
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.hooks.settings import SETTINGS_CACHE, SETTINGS_TTL, LumaSettings, SettingsCache
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY, connection_json
from tests.support.polls import wait_for_polls

#: Every test counts lookups from an empty settings cache.
pytestmark = pytest.mark.usefixtures("empty_settings_cache")

ROTATED_KEY = "sk-luma-ROTATED-8e1f00aa"


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the connection lookups of the hook (the real ones run; only counted)."""
    counts = {"async": 0, "sync": 0}
    real_async = luma_module.get_async_connection
    real_sync = LumaHook.get_connection

    async def counted_async(*args, **kwargs):
        counts["async"] += 1
        return await real_async(*args, **kwargs)

    def counted_sync(cls, conn_id):
        counts["sync"] += 1
        return real_sync(conn_id)

    monkeypatch.setattr(luma_module, "get_async_connection", counted_async)
    monkeypatch.setattr(LumaHook, "get_connection", classmethod(counted_sync))
    return counts


async def run_trigger(generation_id: str, timeout: float = 30) -> dict:
    trigger = LumaGenerationTrigger([generation_id], deadline=time.time() + timeout)
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def test_one_lookup_for_many_triggers_in_one_process(luma_conn, lookups):
    hook = LumaHook()
    ids = [hook.create_generation(f"a cat {i}").id for i in range(100)]
    assert lookups["sync"] == 1  # 100 creates, one hook: one lookup (as before)
    SETTINGS_CACHE.clear()  # the triggerer is another process: it starts with nothing kept

    async def main() -> list[dict]:
        return await asyncio.gather(*(run_trigger(generation_id) for generation_id in ids))

    events = asyncio.run(main())
    assert {event["status"] for event in events} == {"success"}
    # 100 triggers starting together made one lookup between them (before: one each).
    assert lookups["async"] == 1
    # On Airflow 2.11, common.compat's async lookup runs the sync one in a thread: count it once.
    after_triggers = lookups["sync"]
    assert after_triggers in (1, 2)
    # Sync hooks of the same process share it too.
    assert [LumaHook().settings.base_url for _ in range(10)] == [luma_conn.base_url] * 10
    assert lookups["sync"] == after_triggers  # served by what the triggers read


def test_the_settings_are_read_again_after_the_ttl(luma_conn, lookups, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(SETTINGS_CACHE, "clock", lambda: now[0])
    _ = LumaHook().settings
    now[0] += SETTINGS_TTL - 1
    _ = LumaHook().settings
    assert lookups["sync"] == 1
    now[0] += 2
    _ = LumaHook().settings
    assert lookups["sync"] == 2


def test_a_changed_environment_connection_is_read_at_once(simulator, lookups, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, timeout=10))
    assert LumaHook().settings.timeout == 10
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, timeout=20))
    assert LumaHook().settings.timeout == 20
    assert lookups["sync"] == 2


def rotate_key(sim, monkeypatch) -> None:
    """The account's owner rotates the key: the API takes only the new one, the connection is updated."""
    sim._api_key = ROTATED_KEY  # the simulator has no public setter: its key is fixed at start in real use
    conn = json.loads(connection_json(sim))
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps({**conn, "password": ROTATED_KEY}))


def test_a_wait_recovers_when_the_key_is_rotated_under_it(luma_conn, lookups, monkeypatch):
    luma_conn.script("rotating", queued_seconds=0.2, dreaming_seconds=3.0)
    generation = LumaHook().create_generation("rotating key")
    SETTINGS_CACHE.clear()  # the triggerer is another process: it starts with nothing kept

    async def main() -> dict:
        waiting = asyncio.ensure_future(run_trigger(generation.id))
        await asyncio.to_thread(wait_for_polls, luma_conn, generation.id, "completed")
        rotate_key(luma_conn, monkeypatch)
        return await waiting

    event = asyncio.run(main())
    assert event["status"] == "success", event
    statuses = [entry["status"] for entry in luma_conn.requests("get")]
    assert 401 in statuses
    assert statuses[-1] == 200
    assert lookups["async"] == 2  # the first read, and one after the 401


def test_a_sync_call_recovers_when_the_key_is_rotated(luma_conn, lookups, monkeypatch):
    hook = LumaHook()
    generation = hook.create_generation("a dog")
    rotate_key(luma_conn, monkeypatch)
    assert hook.get_generation(generation.id).id == generation.id
    assert hook.get_generation(generation.id).id == generation.id  # the hook keeps the new key
    assert [entry["status"] for entry in luma_conn.requests("get")] == [401, 200, 200]
    assert lookups["sync"] == 2
    assert ROTATED_KEY not in repr(hook.settings)


def test_an_async_call_outside_async_with_recovers_when_the_key_is_rotated(luma_conn, lookups, monkeypatch):
    generation = LumaHook().create_generation("a dog")

    async def main() -> str:
        hook = LumaHook()
        await hook.aget_generation(generation.id)  # the hook keeps the old key
        rotate_key(luma_conn, monkeypatch)
        return (await hook.aget_generation(generation.id)).id  # a session of its own per call

    assert asyncio.run(main()) == generation.id
    assert [entry["status"] for entry in luma_conn.requests("get")] == [200, 401, 200]
    assert lookups["async"] == 1  # after the 401 (the first settings came from the create's read)


def test_an_async_call_whose_new_key_is_refused_too_ends_with_the_401(luma_conn, lookups, monkeypatch):
    generation = LumaHook().create_generation("a dog")

    async def main() -> None:
        hook = LumaHook()
        async with hook:
            await hook.aget_generation(generation.id)  # the hook keeps the old key
            rotate_key(luma_conn, monkeypatch)
            luma_conn._api_key = "sk-luma-NEITHER-77aa0011"  # the API takes neither the old key nor the new one
            await hook.aget_generation(generation.id)

    with pytest.raises(LumaAuthenticationError):
        asyncio.run(main())
    # The old key, then the new one once: no third call, no third read.
    assert [entry["status"] for entry in luma_conn.requests("get")] == [200, 401, 401]
    assert lookups["async"] == 1


def test_a_wrong_key_stays_a_401_after_one_fresh_read(luma_conn, lookups, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(SETTINGS_CACHE, "clock", lambda: now[0])
    luma_conn._api_key = ROTATED_KEY  # the connection keeps the old key: the API refuses it
    _ = LumaHook().settings
    now[0] += 30  # settings read a while ago: a 401 reads the connection again, once
    with pytest.raises(LumaAuthenticationError):
        LumaHook().get_generation("00000000-0000-4000-8000-000000000001")
    assert lookups["sync"] == 2
    with pytest.raises(LumaAuthenticationError):  # read just now: not read again
        LumaHook().get_generation("00000000-0000-4000-8000-000000000001")
    assert lookups["sync"] == 2
    assert [entry["status"] for entry in luma_conn.requests("get")] == [401, 401]


def test_a_burst_of_401s_makes_one_fresh_read():
    cache = SettingsCache(clock=lambda: now[0])
    now = [0.0]
    reads: list[int] = []
    settings = LumaSettings(conn_id="x", base_url="http://127.0.0.1:1", api_key=SENTINEL_KEY)

    def read() -> LumaSettings:
        reads.append(1)
        return settings

    cache.get("x", read)
    now[0] = 10.0
    cache.forget("x", rejected_key=SENTINEL_KEY)  # read 10 s ago: dropped
    cache.get("x", read)
    for _ in range(1000):  # a thousand waits turned away at once: the entry is fresh, kept
        cache.forget("x", rejected_key=SENTINEL_KEY)
        cache.get("x", read)
    cache.forget("x", rejected_key="another key")  # not the key that was refused: kept
    cache.get("x", read)
    assert len(reads) == 2
    assert all(SENTINEL_KEY not in str(key) for key in cache._entries)
    assert SENTINEL_KEY not in repr(cache)
