"""
Every call has a total deadline (issue 19 item 2): a server dripping its answer one byte at a time,
or a call budget paused by a 429 asking for a minute, never keeps a wait, a trigger, the sensor's
first check, a create or a download past its bound.

Timed by nature: the bounds are generous (a 60 s drip must end within 10 s of a 2 s deadline).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_luma.errors import LumaConnectionError, LumaError, LumaWaitTimeoutError
from airflow_provider_luma.hooks import download
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import FIRST_CHECK_SECONDS, LumaGenerationSensor
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY
from tests.support.deployment import airflow_version
from tests.support.events import the_event
from tests.support.raw_server import RawRequest, RawServer, Reply

pytestmark = pytest.mark.timeout(240)

GEN = "4f1c0000-0000-4000-8000-0000000000d1"
#: How long the server drips: far past every bound here.
DRIP_SECONDS = 60.0
#: A wait's deadline, in seconds.
DEADLINE = 2.0
#: The slack every bound gets on a loaded 2-core machine.
SLACK = 10.0
QUEUED = json.dumps({"id": GEN, "state": "queued"}).encode()
#: The hook's own calls (requests, aiohttp, urllib3: the same versions in every lock) run no Airflow code:
#: timed, they run on the newest Airflow line only, as CI's allowance asks; the trigger and the sensor on all.
transport_only = pytest.mark.skipif(airflow_version() < (3, 3), reason="Airflow-independent and timed: run on 3.3+")


def dripping(headers: bool = False) -> Reply:
    """An answer sent one byte every 0.5 s, for a minute (each read gets a byte: no read time-out fires)."""
    return Reply(200, QUEUED + b" " * 200, drip=0.5, drip_headers=headers, drip_for=DRIP_SECONDS)


def use(monkeypatch: pytest.MonkeyPatch, server: RawServer, **extras: Any) -> None:
    extra = {"timeout": 30, "max_retries": 1, "min_poll_interval": 0.05, "max_backoff": 0.2, **extras}
    conn = {"conn_type": "luma", "host": server.url, "password": SENTINEL_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(conn))


@pytest.fixture
def drip_server(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    headers = getattr(request, "param", "body") == "headers"
    with RawServer(lambda _: dripping(headers)) as server:
        yield server


def elapsed_since(started: float) -> float:
    return time.monotonic() - started


@transport_only
@pytest.mark.parametrize("drip_server", ["body", "headers"], indirect=True)
def test_a_dripping_answer_ends_a_sync_wait_at_its_deadline(monkeypatch, drip_server):
    use(monkeypatch, drip_server)
    started = time.monotonic()
    with pytest.raises(LumaWaitTimeoutError):
        LumaHook().wait_for_generation(GEN, timeout=DEADLINE)
    assert elapsed_since(started) < DEADLINE + SLACK


@pytest.mark.parametrize("drip_server", ["body", "headers"], indirect=True)
async def test_a_dripping_answer_ends_a_trigger_at_its_deadline(monkeypatch, drip_server):
    use(monkeypatch, drip_server)
    started = time.monotonic()
    event = await the_event(LumaGenerationTrigger([GEN], deadline=time.time() + DEADLINE))
    assert event["status"] == "timeout", event
    assert elapsed_since(started) < DEADLINE + SLACK


def test_a_dripping_answer_ends_the_sensors_first_check_within_its_bound(monkeypatch, drip_server):
    use(monkeypatch, drip_server)
    sensor = LumaGenerationSensor(task_id="wait", generation_id=GEN, timeout=600)
    started = time.monotonic()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert elapsed_since(started) < FIRST_CHECK_SECONDS + SLACK
    assert deferred.value.trigger.serialize()[1]["deadline"] >= time.time() + 500  # the trigger keeps the rest


@transport_only
@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_dripping_create_answer_ends_within_the_calls_own_bound(monkeypatch, drip_server, path):
    # A create has no wait deadline: each attempt is bounded by the connection's time-out, in total.
    use(monkeypatch, drip_server, timeout=2)
    hook = LumaHook()
    started = time.monotonic()
    with pytest.raises(LumaConnectionError, match="did not answer in time") as raised:
        hook.create_generation("a drip") if path == "sync" else asyncio.run(hook.acreate_generation("a drip"))
    assert elapsed_since(started) < 2 + SLACK
    assert raised.value.maybe_created  # the request was sent: it may have been acted on
    assert drip_server.count("POST") == 1  # and so never resent


def rate_limited_once(request: RawRequest, answered: list[int]) -> Reply:
    """A 429 asking for a minute, then answers that never end the wait."""
    answered.append(1)
    if len(answered) == 1:
        return Reply(429, b'{"message": "slow down"}', headers={"Retry-After": "60"})
    return Reply(200, QUEUED)


@transport_only
@pytest.mark.parametrize("path", ["sync", "async"])
def test_the_call_budgets_429_pause_ends_at_the_wait_deadline(monkeypatch, path):
    calls: list[int] = []
    with RawServer(lambda request: rate_limited_once(request, calls)) as server:
        use(monkeypatch, server, max_calls_per_second=5)
        hook = LumaHook()
        wait = (
            (lambda: hook.wait_for_generation(GEN, timeout=DEADLINE))
            if path == "sync"
            else (lambda: asyncio.run(hook.await_for_generation(GEN, timeout=DEADLINE)))
        )
        started = time.monotonic()
        with pytest.raises(LumaWaitTimeoutError):
            wait()
        assert elapsed_since(started) < DEADLINE + SLACK
    assert calls  # the 429 did come


#: The documented download limit for a max_video_bytes of 1 KiB is about 10 s.
VIDEO_BOUND = 20.0


@transport_only
def test_a_dripping_video_ends_within_the_download_limit(monkeypatch, tmp_path):
    mp4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 1000
    with RawServer(lambda _: Reply(200, mp4, {"Content-Type": "video/mp4"}, drip=0.5, drip_for=120)) as server:
        use(monkeypatch, server, max_video_bytes=1024)
        generation = {"id": GEN, "state": "completed", "video_url": f"{server.url}/videos/{GEN}.mp4"}
        started = time.monotonic()
        with pytest.raises(LumaError):
            LumaHook().download_video(generation, tmp_path / "video.mp4")
        assert elapsed_since(started) < VIDEO_BOUND + SLACK
    assert not list(tmp_path.iterdir())  # nothing left behind
    assert download.download_limit(1024) <= VIDEO_BOUND  # the limit scales down with max_video_bytes
