"""Data hygiene (issue 11, items 15-16): what is stored of an answer; cookies and proxies on both paths."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import pytest
import requests
from yarl import URL

from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.hooks.sessions import _new_session, proxy_for
from airflow_provider_luma.models import EVENT_KEYS, Generation
from airflow_provider_luma.sensors.luma import LumaGenerationSensor
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY
from tests.support.stub_server import StubRequest, StubServer

GEN = "4f1c0000-0000-4000-8000-00000000000a"
SIGNED = "https://bucket.example/keyframe.png?X-Amz-Signature=deadbeef-presigned"


def generation_answer(extra_headers: Mapping[str, str] | None = None) -> Callable[[StubRequest], Any]:
    """An answer of a completed generation, echoing a request with a pre-signed URL, as the API does."""
    body = {
        "id": GEN,
        "generation_type": "video",
        "state": "completed",
        "failure_reason": None,
        "created_at": "2026-01-01T00:00:00Z",
        "assets": {"video": "https://cdn.example/v.mp4", "image": "https://cdn.example/i.jpg"},
        "model": "ray-2",
        "request": {"prompt": "a fox", "keyframes": {"frame0": {"type": "image", "url": SIGNED}}},
    }
    headers = {"Content-Type": "application/json", **(extra_headers or {})}
    return lambda request: (200, headers, json.dumps(body).encode())


def set_conn(monkeypatch: pytest.MonkeyPatch, host: str, **extra: Any) -> None:
    conn = {"conn_type": "luma", "host": host, "password": SENTINEL_KEY, "extra": {"max_retries": 0, **extra}}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(conn))


# -- 15. the request echo is not stored; events are small ------------------------------------------


def test_to_dict_leaves_out_the_request_echo_and_round_trips():
    generation = Generation.from_api(json.loads(generation_answer()(None)[2]))
    stored = generation.to_dict()
    assert "request" not in stored
    assert SIGNED not in json.dumps(stored)
    assert stored["assets"]["image"] == "https://cdn.example/i.jpg"  # the API's own fields stay
    assert Generation.from_dict(stored) == generation
    assert Generation.from_dict(stored).to_dict() == stored


def test_compact_form_keeps_only_the_event_keys():
    generation = Generation.from_api({**json.loads(generation_answer()(None)[2]), "meta": {"usage": {"credits": 3}}})
    compact = generation.to_dict(compact=True)
    assert set(compact) == set(EVENT_KEYS)
    assert compact["video_url"] == "https://cdn.example/v.mp4"
    assert (compact["model"], compact["generation_type"], compact["usage"]) == ("ray-2", "video", {"credits": 3})
    assert Generation.from_dict(compact) == generation


def test_trigger_events_and_sensor_xcom_carry_no_request_echo(luma_conn):
    generation = LumaHook().create_generation("a fox", callback_url="https://hooks.example/cb?sig=presigned-cb")
    luma_conn.set_state(generation.id, "completed")
    assert "request" in LumaHook().get_generation(generation.id).raw  # the simulator echoes it, as the API does

    async def events() -> list[dict]:
        return [e.payload async for e in LumaGenerationTrigger([generation.id], deadline=time.time() + 30).run()]

    (event,) = asyncio.run(events())
    assert event["status"] == "success"
    assert all(set(g) <= set(EVENT_KEYS) for g in event["generations"]), event
    assert "presigned-cb" not in json.dumps(event)

    xcom = LumaGenerationSensor(task_id="wait", generation_id=generation.id).execute({})
    assert "presigned-cb" not in json.dumps(xcom)
    assert xcom["video_url"]


# -- 16. no cookies kept; proxies from the environment on both paths --------------------------------


def test_the_async_session_keeps_no_cookies_and_reads_the_environment_proxies_once(monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "direct.invalid")

    async def check() -> None:
        session = _new_session()
        try:
            assert isinstance(session.cookie_jar, aiohttp.DummyCookieJar)
            # Not aiohttp's trust_env: that reads the environment and ~/.netrc in a thread on every call.
            assert session.trust_env is False
            assert proxy_for(session, URL("http://luma-api.invalid/v2/x")) == URL("http://127.0.0.1:9")
            assert proxy_for(session, URL("http://direct.invalid/v2/x")) is None  # NO_PROXY honoured
            assert proxy_for(session, URL("https://luma-api.invalid/v2/x")) is None  # no HTTPS_PROXY set
        finally:
            await session.close()

    asyncio.run(check())


def test_a_netrc_entry_for_the_api_host_does_not_break_the_async_calls(monkeypatch, tmp_path):
    # aiohttp's trust_env took the host's .netrc login as auth and then refused it beside the key's
    # Authorization header ("Cannot combine AUTHORIZATION header with AUTH argument"): every async call failed.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password elsewhere\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with StubServer(generation_answer()) as server:
        set_conn(monkeypatch, server.url)
        generation = asyncio.run(LumaHook().aget_generation(GEN))
    assert generation.id == GEN
    assert [r.headers.get("Authorization") for r in server.requests] == [f"Bearer {SENTINEL_KEY}"]


def test_a_cookie_set_by_the_server_is_not_sent_back(monkeypatch):
    # "localhost", not 127.0.0.1: aiohttp's default jar refuses cookies of IP hosts, which would hide the leak.
    with StubServer(generation_answer({"Set-Cookie": "session=from-server; Path=/"})) as server:
        set_conn(monkeypatch, server.url.replace("127.0.0.1", "localhost"))
        hook = LumaHook()
        hook.get_generation(GEN)
        hook.get_generation(GEN)

        async def twice() -> None:
            async with LumaHook() as async_hook:
                await async_hook.aget_generation(GEN)
                await async_hook.aget_generation(GEN)

        asyncio.run(twice())
    assert len(server.requests) == 4
    assert [r.headers.get("Cookie") for r in server.requests] == [None] * 4


@pytest.mark.parametrize("path", ["sync", "async"])
def test_both_paths_go_through_the_proxy_the_environment_names(monkeypatch, path):
    with StubServer(generation_answer()) as proxy:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        # A name that resolves nowhere: only the proxy can answer for it.
        set_conn(monkeypatch, "http://luma-api.invalid", allow_insecure_http=True, connect_timeout=2)
        hook = LumaHook()
        generation = hook.get_generation(GEN) if path == "sync" else asyncio.run(hook.aget_generation(GEN))
    assert generation.id == GEN
    (request,) = proxy.requests
    assert request.path.startswith("http://luma-api.invalid/v2/generate/video/luma-ai/generation?")


def test_requests_is_what_the_stub_expects():
    # The stub itself: a plain client gets the answer (so a failure above is the hook's, not the stub's).
    with StubServer(generation_answer()) as server:
        assert requests.get(server.url + "/x", timeout=5).json()["id"] == GEN
