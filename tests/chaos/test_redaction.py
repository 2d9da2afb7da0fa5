"""
Redaction at the boundary (issue 19 item 3): a server that quotes the request's key back puts it in
no exception, event or log line of the provider; a host is never shown with userinfo, query or
fragment. The autouse check of ``tests/conftest.py`` scans everything each test logged for the key.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_luma.errors import LumaConfigurationError, LumaError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.sensors.luma import LumaGenerationSensor
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY
from tests.support.events import the_event
from tests.support.raw_server import RawRequest, RawServer, Reply

GEN = "4f1c0000-0000-4000-8000-0000000000e1"


def quoting(status: int) -> Any:
    """A server that answers ``status`` with an error message quoting the request's key (as some proxies do)."""

    def answer(request: RawRequest) -> Reply:
        message = f"key {request.key} is not valid here (Authorization: Bearer {request.key})"
        return Reply(status, json.dumps({"message": message, "statusCode": status}))

    return answer


def use(monkeypatch: pytest.MonkeyPatch, server: RawServer) -> None:
    extra = {"max_retries": 0, "min_poll_interval": 0.05, "max_backoff": 0.2, "timeout": 5}
    conn = {"conn_type": "luma", "host": server.url, "password": SENTINEL_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(conn))


def assert_key_free(error: BaseException) -> None:
    texts = [str(error), repr(error.args), getattr(error, "message", ""), getattr(error, "server_message", "") or ""]
    assert not [text for text in texts if SENTINEL_KEY in text], texts


@pytest.mark.parametrize("status", [400, 401, 403, 500])
@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_key_the_server_quotes_stays_out_of_create_errors(monkeypatch, status, path):
    with RawServer(quoting(status)) as server:
        use(monkeypatch, server)
        hook = LumaHook()
        with pytest.raises(LumaError) as raised:
            hook.create_generation("quote") if path == "sync" else asyncio.run(hook.acreate_generation("quote"))
    assert_key_free(raised.value)
    assert "***" in raised.value.message  # the server's words are kept, the key replaced


@pytest.mark.parametrize("status", [400, 404, 401])
def test_a_key_the_server_quotes_stays_out_of_fetch_errors(monkeypatch, status):
    with RawServer(quoting(status)) as server:
        use(monkeypatch, server)
        with pytest.raises(LumaError) as raised:
            LumaHook().get_generation(GEN)
    assert_key_free(raised.value)


@pytest.mark.parametrize("status", [401, 404])
async def test_a_key_the_server_quotes_stays_out_of_the_trigger_event(monkeypatch, status):
    with RawServer(quoting(status)) as server:
        use(monkeypatch, server)
        event = await the_event(LumaGenerationTrigger([GEN], deadline=time.time() + 10))  # checks the key
    assert event["status"] == "error"
    assert "***" in event["message"]


def failed_quoting_the_key(request: RawRequest) -> Reply:
    reason = f"the upstream refused key {request.key}"
    return Reply(200, json.dumps({"id": GEN, "state": "failed", "failure_reason": reason}))


async def test_a_failure_reason_quoting_the_key_stays_out_of_the_event_and_the_sensor(monkeypatch):
    with RawServer(failed_quoting_the_key) as server:
        use(monkeypatch, server)
        event = await the_event(LumaGenerationTrigger([GEN], deadline=time.time() + 10))
        assert event["status"] == "failed"
        with pytest.raises(AirflowFailException) as raised:
            LumaGenerationSensor(task_id="wait", generation_id=GEN).execute_complete({}, event)
        assert_key_free(raised.value)
        with pytest.raises(LumaError) as in_worker:
            await LumaHook().await_for_generation(GEN, timeout=10)
    assert_key_free(in_worker.value)


@pytest.mark.parametrize(
    "host",
    [
        "https://api.example.com/v2?token=tok-SECRET-1",
        "https://api.example.com/#tok-SECRET-1",
        "https://api.example.com/v2?access_token=tok-SECRET-1#x",
    ],
)
def test_a_host_with_a_token_in_its_query_or_fragment_is_refused_without_quoting_it(monkeypatch, host):
    conn = {"conn_type": "luma", "host": host, "password": SENTINEL_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(conn))
    with pytest.raises(LumaConfigurationError, match="query or fragment") as raised:
        _ = LumaHook().settings
    assert "tok-SECRET-1" not in str(raised.value)
    assert "api.example.com" in str(raised.value)  # the host itself, shown without its query
