"""
"Never sent" is known (issue 19 item 4): a failure before the request's bytes could reach the server
says the generation was not created and what to fix; only failures after the request was sent keep
"may have been created". A key that cannot be sent, or https to a server that speaks plain http, ends
a wait at once instead of spinning until its deadline.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_luma.errors import MAYBE_CREATED_HINT, LumaConfigurationError, LumaConnectionError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY
from tests.support.events import the_event
from tests.support.raw_server import RawServer, Reply
from tests.support.tasks import TaskStateStore, task_context

GEN = "4f1c0000-0000-4000-8000-0000000000f1"
#: Seconds within which a refusal must come (no retries, no back-off); generous for a loaded machine.
AT_ONCE = 5.0
OK = Reply(200, json.dumps({"id": GEN, "state": "completed"}))


def use(monkeypatch: pytest.MonkeyPatch, host: str, password: str = SENTINEL_KEY, **extras: object) -> None:
    conn = {"conn_type": "luma", "host": host, "password": password, "extra": extras}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(conn))


def create(path: str) -> None:
    hook = LumaHook()
    hook.create_generation("never sent") if path == "sync" else asyncio.run(hook.acreate_generation("never sent"))


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_key_with_a_line_break_is_refused_before_sending_saying_what_to_fix(monkeypatch, path):
    with RawServer(lambda _: OK) as server:
        use(monkeypatch, server.url, password=f"{SENTINEL_KEY}\nsecond-line")
        with pytest.raises(LumaConfigurationError, match="API key") as raised:
            create(path)
        assert server.count() == 0  # nothing reached the server
    error = raised.value
    assert not error.maybe_created
    assert MAYBE_CREATED_HINT not in error.message
    assert "password" in error.message  # where to fix it
    assert SENTINEL_KEY not in str(error)


def test_the_generate_task_with_an_unsendable_key_is_not_told_to_look_for_a_paid_video(monkeypatch):
    with RawServer(lambda _: OK) as server:
        use(monkeypatch, server.url, password=f"{SENTINEL_KEY}\r\nx")
        operator = LumaGenerateVideoOperator(task_id="generate", prompt="never sent", deferrable=False)
        with pytest.raises(LumaConfigurationError) as raised:  # an ordinary failure: no "Not retrying" verdict
            operator.execute(task_context(1, TaskStateStore()))
    assert "may have been created" not in str(raised.value)


async def test_a_wait_with_an_unsendable_key_ends_at_once(monkeypatch):
    with RawServer(lambda _: OK) as server:
        use(monkeypatch, server.url, password=f"{SENTINEL_KEY}\nx", min_poll_interval=0.05, max_backoff=0.2)
        started = time.monotonic()
        event = await the_event(LumaGenerationTrigger([GEN], deadline=time.time() + 30))
        assert time.monotonic() - started < AT_ONCE  # not at its deadline
    assert event["status"] == "error"
    assert "API key" in event["message"]


@pytest.mark.parametrize("path", ["sync", "async"])
def test_https_to_a_plain_http_server_fails_at_once_with_the_fix(monkeypatch, path):
    with RawServer(lambda _: OK) as server:
        use(monkeypatch, server.url.replace("http://", "https://"))
        started = time.monotonic()
        with pytest.raises(LumaConfigurationError, match="write the host as http://") as raised:
            create(path)
        assert time.monotonic() - started < AT_ONCE
        assert server.connections == 1  # no retry
    assert not raised.value.maybe_created
    assert MAYBE_CREATED_HINT not in raised.value.message


def test_the_test_button_against_a_plain_http_server_answers_at_once_with_the_fix(monkeypatch):
    with RawServer(lambda _: OK) as server:
        use(monkeypatch, server.url.replace("http://", "https://"))
        started = time.monotonic()
        ok, message = LumaHook().test_connection()
        assert time.monotonic() - started < AT_ONCE
        assert server.connections <= 2  # one handshake per endpoint family at most, never retried
    assert not ok
    assert "write the host as http://" in message


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_refused_connection_is_not_created_and_is_retried(monkeypatch, path):
    with RawServer(lambda _: OK) as server:
        url = server.url  # closed below: connecting to it is refused
    use(monkeypatch, url, max_retries=1)
    with pytest.raises(LumaConnectionError) as raised:
        create(path)
    assert not raised.value.maybe_created
    assert "was not created" in raised.value.message
    assert raised.value.transient
