"""
One chunking rule on both paths (issue 19 item 5): every chunk of a multi-id ``luma-ai`` poll is held
at once, as threads on the sync path and tasks on the async path, so a wait of many ids takes one hold
per poll, whichever path drives it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_luma.hooks.luma import LumaHook
from tests.support.connection import connection_json
from tests.support.deployment import airflow_version

#: The transport alone (requests, aiohttp, urllib3: the same versions in every lock), no Airflow code:
#: timed, so run on the newest Airflow line only, as CI's allowance asks.
pytestmark = pytest.mark.skipif(airflow_version() < (3, 3), reason="Airflow-independent and timed: run once, on 3.3+")

CHUNK = 2
IDS = 6  # three chunks


def held_together(requests: list[dict]) -> bool:
    """Whether the multi-fetch calls were held and overlapped (each started before the others ended)."""
    starts = [r["time"] for r in requests]  # the simulator logs a request's start and how long it took
    ends = [r["time"] + r["elapsed"] for r in requests]
    return all(r["held"] > 0 for r in requests) and max(starts) < min(ends)


@pytest.mark.parametrize("path", ["sync", "async"])
def test_every_chunk_of_a_poll_is_held_at_once(monkeypatch, simulator, path):
    simulator.script("held", queued_seconds=600)
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, ids_per_request=CHUNK))
    hook = LumaHook()
    ids = [hook.create_generation(f"held {i}").id for i in range(IDS)]
    started = time.monotonic()
    if path == "sync":
        generations = hook.get_generations(ids, "completed")
    else:
        generations = asyncio.run(hook.aget_generations(ids, "completed"))
    seconds = time.monotonic() - started
    assert [g.id for g in generations] == ids
    requests = simulator.requests("list")
    assert len(requests) == IDS // CHUNK
    assert all("status" in r["query"] for r in requests)  # every chunk asked to be held
    assert held_together(requests), requests
    assert seconds < 2 * simulator.hold_seconds + 1  # about one hold, not three


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_wait_of_many_ids_holds_every_chunk(monkeypatch, simulator, path):
    simulator.script("many", queued_seconds=0.3, dreaming_seconds=1.5)
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, ids_per_request=CHUNK))
    hook = LumaHook()
    ids = [hook.create_generation(f"many {i}").id for i in range(IDS)]
    if path == "sync":
        hook.wait_for_generations(ids, timeout=30)
    else:
        asyncio.run(hook.await_for_generations(ids, timeout=30))
    first_round = simulator.requests("list")[: IDS // CHUNK]
    assert held_together(first_round), first_round
