"""1,000 concurrent trigger waits in one event loop against a simulator process failing ~10 % of calls:
every wait ends with the right event, none hangs, and no session or socket is left open afterwards."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import urllib.request
from collections import Counter

import pytest

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.testing.process import SimulatorProcess
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY, connection_json

pytestmark = [pytest.mark.load, pytest.mark.timeout(240)]

WAITS = 1000
FAILING_EVERY = 10  # every 10th generation is scripted to fail
FAULT_RATE = 0.1
TRANSIENT_KINDS = ["429", "500", "502", "503", "504", "drop", "slow", "malformed", "missing_fields"]
BOUND = 150.0  # the whole load must end within this


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def simulator_process(monkeypatch):
    """``python -m airflow_provider_luma.testing`` in its own process: holds 1 s, queued 1 s, dreaming 2 s."""
    args = ["--hold", "1", "--queued", "1", "--dreaming", "2", "--seed", "7"]
    with SimulatorProcess(args, api_key=SENTINEL_KEY) as remote:
        assert SENTINEL_KEY not in remote.banner
        monkeypatch.setenv(
            "AIRFLOW_CONN_LUMA_DEFAULT", connection_json(remote, timeout=10, max_retries=2, long_poll_hold=1)
        )
        yield remote.base_url


def control(base_url: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def test_a_thousand_concurrent_waits_under_transient_faults(simulator_process):
    base_url = simulator_process
    gc.collect()
    baseline = open_fds()

    async def create_all() -> list[str]:
        async with LumaHook() as hook:
            prompts = [f"load {i}" + (" [sim:fail]" if i % FAILING_EVERY == 0 else "") for i in range(WAITS)]
            return [g.id for g in await asyncio.gather(*(hook.acreate_generation(p) for p in prompts))]

    async def wait_all(ids: list[str]) -> list[list[dict]]:
        deadline = time.time() + BOUND - 20

        async def one(generation_id: str) -> list[dict]:
            return [e.payload async for e in LumaGenerationTrigger([generation_id], deadline=deadline).run()]

        in_loop_before = open_fds()
        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in ids)), BOUND)
        await asyncio.sleep(0.1)  # let closed transports finish closing
        in_loop.extend([in_loop_before, open_fds()])
        return results

    in_loop: list[int] = []

    ids = asyncio.run(create_all())  # fault-free: creates are paid and not all faults are safe to resend
    control(base_url, "/_sim/config", {"fault_rate": FAULT_RATE, "fault_kinds": TRANSIENT_KINDS})
    started = time.monotonic()
    results = asyncio.run(wait_all(ids))
    elapsed = time.monotonic() - started
    gc.collect()
    after = open_fds()

    # Every wait yielded exactly one event, the right one.
    statuses = Counter()
    for index, (generation_id, events) in enumerate(zip(ids, results, strict=True)):
        assert len(events) == 1, events
        (event,) = events
        statuses[event["status"]] += 1
        (generation,) = event["generations"]
        assert generation["id"] == generation_id
        if index % FAILING_EVERY == 0:
            assert event["status"] == "failed", event
            assert "simulated failure" in event["message"]
        else:
            assert event["status"] == "success", event
            assert generation["state"] == "completed"
            assert generation["video_url"]
    assert statuses == {"success": WAITS - WAITS // FAILING_EVERY, "failed": WAITS // FAILING_EVERY}
    assert elapsed < BOUND

    # The faults really happened, and no generation was paid for twice.
    control(base_url, "/_sim/config", {"fault_rate": 0.0})
    log = control(base_url, "/_sim/requests")
    faults = Counter(entry["fault"] for entry in log if entry["fault"])
    polls = [entry for entry in log if entry["endpoint"] != "create"]
    assert sum(faults.values()) >= 0.05 * len(polls), faults  # ~10 % of the polls failed
    assert len(faults) >= 5, faults  # many kinds were met
    assert sum(1 for entry in log if entry["endpoint"] == "create") == WAITS
    assert len(control(base_url, "/_sim/generations")) == WAITS

    # Every HTTP session and socket was closed: back to the baseline, not one descriptor more.
    assert in_loop[1] <= in_loop[0], f"{in_loop[1] - in_loop[0]} file descriptors left open by the waits"
    assert after <= baseline, f"{after - baseline} file descriptors left open"
    print(f"load: {WAITS} waits in {elapsed:.1f} s, {len(log)} calls, faults {dict(faults)}, fds {baseline}→{after}")
