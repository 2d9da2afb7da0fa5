"""Bad settings and inputs (issue 11, items 9-11 and 14): numbers, host URLs, ids, the connection test."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from airflow_provider_luma.errors import LumaConfigurationError, LumaInputError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import normalize_generation_refs
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from airflow_provider_luma.waiting import MAX_SECONDS, PACING_FLOORS, checked_number
from tests.support.connection import SENTINEL_KEY
from tests.support.stub_server import StubServer

GEN = "4f1c0000-0000-4000-8000-00000000000a"


def set_conn(monkeypatch: pytest.MonkeyPatch, **fields) -> LumaHook:
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps({"conn_type": "luma", **fields}))
    return LumaHook()


def both_settings(hook: LumaHook) -> None:
    """Read the connection on the sync and on the async path (both must refuse alike)."""
    _ = hook.settings
    asyncio.run(hook.asettings())


# -- 9. numbers: finite, with floors -------------------------------------------------------------

NUMERIC_EXTRAS = [
    "timeout",
    "connect_timeout",
    "max_retries",
    "ids_per_request",
    "min_poll_interval",
    "poll_interval",
    "max_backoff",
    "long_poll_hold",
]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", math.nan, math.inf])
@pytest.mark.parametrize("name", NUMERIC_EXTRAS)
def test_extras_refuse_nan_and_infinity_naming_the_extra(monkeypatch, name, value):
    # JSON extras hold NaN/Infinity as floats (Python's json reads them); text extras as strings.
    hook = set_conn(monkeypatch, password=SENTINEL_KEY, extra={name: value})
    with pytest.raises(LumaConfigurationError, match=rf"Extra '{name}' of connection 'luma_default' is .*finite"):
        both_settings(hook)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("min_poll_interval", 0, "must be at least 0.05"),
        ("max_backoff", 0, "must be at least 0.1"),
        ("timeout", 1e300, f"must be at most {MAX_SECONDS:g}"),  # a socket time-out that overflows time_t
        ("max_retries", 2.5, "whole number"),
        ("max_retries", True, "finite"),
    ],
)
def test_extras_refuse_values_that_make_no_sense(monkeypatch, name, value, match):
    hook = set_conn(monkeypatch, password=SENTINEL_KEY, extra={name: value})
    with pytest.raises(LumaConfigurationError, match=rf"Extra '{name}' .*{match}"):
        both_settings(hook)


def test_sane_extras_still_pass(monkeypatch):
    extra = {"timeout": "90", "max_retries": "2", "min_poll_interval": 0.05, "max_backoff": 0.3, "ids_per_request": 3.0}
    settings = set_conn(monkeypatch, password=SENTINEL_KEY, extra=extra).settings
    assert (settings.timeout, settings.max_retries, settings.ids_per_request) == (90.0, 2, 3)
    assert isinstance(settings.max_retries, int)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "soon", None])
@pytest.mark.parametrize("name", sorted(PACING_FLOORS))
def test_trigger_refuses_unusable_tuning_naming_it(name, value):
    if value is None:
        value = PACING_FLOORS[name] / 2  # below the floor
    with pytest.raises(LumaInputError, match=rf"LumaGenerationTrigger setting '{name}' (is|must be)"):
        LumaGenerationTrigger([GEN], **{name: value})


@pytest.mark.parametrize("deadline", [math.nan, math.inf, "nan", "tomorrow"])
def test_trigger_refuses_a_deadline_that_is_not_a_finite_time(deadline):
    with pytest.raises(LumaInputError, match="LumaGenerationTrigger setting 'deadline' is"):
        LumaGenerationTrigger([GEN], deadline=deadline)


def test_trigger_accepts_tuning_at_the_floors_and_a_past_deadline():
    trigger = LumaGenerationTrigger([GEN], deadline=0, **PACING_FLOORS)
    assert trigger.serialize()[1]["deadline"] == 0.0
    assert {key: trigger.serialize()[1][key] for key in PACING_FLOORS} == PACING_FLOORS


def test_one_checking_function_for_both():
    with pytest.raises(LumaConfigurationError, match=r"^X is 'nan': expected a finite number\."):
        checked_number("nan", what="X", minimum=0, error=LumaConfigurationError)
    assert checked_number("7", what="X", minimum=0, whole=True) == 7


# -- 10. the host URL ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "http://evil\\@localhost",  # urllib3 sends to "evil", urlsplit sees localhost
        "http://evil\\@127.0.0.1:8089",
        "https://api.aimlapi.com\\@localhost",
        "http://localhost\\evil",
    ],
)
def test_a_backslash_in_the_host_is_refused(monkeypatch, host):
    hook = set_conn(monkeypatch, host=host, password=SENTINEL_KEY)
    with pytest.raises(LumaConfigurationError, match="backslash"):
        both_settings(hook)


@pytest.mark.parametrize(
    "host",
    [
        "https://someone:hunter2-secret@api.aimlapi.com",
        "https://hunter2-secret@api.aimlapi.com",
        "http://someone:hunter2-secret@127.0.0.1:8089",
        "https://:hunter2-secret@api.aimlapi.com",
    ],
)
def test_credentials_in_the_host_are_refused_without_echoing_them(monkeypatch, host):
    hook = set_conn(monkeypatch, host=host, password=SENTINEL_KEY)
    with pytest.raises(LumaConfigurationError, match="user name or password") as raised:
        _ = hook.settings
    assert "hunter2" not in str(raised.value)
    with pytest.raises(LumaConfigurationError, match="user name or password") as raised_async:
        asyncio.run(LumaHook().asettings())
    assert "hunter2" not in str(raised_async.value)


def test_the_trigger_reports_a_credential_host_as_one_error_event_without_the_secret(monkeypatch):
    set_conn(monkeypatch, host="http://someone:hunter2-secret@127.0.0.1:9", password=SENTINEL_KEY)

    async def events() -> list[dict]:
        return [event.payload async for event in LumaGenerationTrigger([GEN], deadline=0).run()]

    (event,) = asyncio.run(events())
    assert event["status"] == "error"
    assert "user name or password" in event["message"]
    assert "hunter2" not in json.dumps(event)


@pytest.mark.parametrize("host", ["https://api.aimlapi.com/?x=1", "https://api.aimlapi.com/#frag"])
def test_a_query_or_fragment_in_the_host_is_refused(monkeypatch, host):
    with pytest.raises(LumaConfigurationError, match="query or fragment"):
        _ = set_conn(monkeypatch, host=host, password=SENTINEL_KEY).settings


@pytest.mark.parametrize(
    "host", ["https://api.aimlapi.com", "https://api.aimlapi.com/prefix", "http://127.0.0.1:8089", "http://[::1]:9"]
)
def test_ordinary_hosts_still_pass(monkeypatch, host):
    assert set_conn(monkeypatch, host=host, password=SENTINEL_KEY).settings.base_url == host


# -- 11. a list rendered as text -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "['4f1c-a', '4f1c-b']",
        '["4f1c-a", "4f1c-b"]',
        "('4f1c-a', '4f1c-b')",
        "{'id': '4f1c-a'}",
        ["'4f1c-a'"],
    ],
)
def test_a_python_list_rendered_as_text_is_refused_pointing_at_native_rendering(value):
    with pytest.raises(LumaInputError, match="render_template_as_native_obj=True") as raised:
        normalize_generation_refs(value, parameter="generation_ids")
    assert "generation_ids" in raised.value.message


def test_universal_and_comma_separated_ids_still_pass():
    universal = "7c880e75-9892-4238-8464-49cb0c6deabd:luma/ray-2"
    refs = normalize_generation_refs(f"{GEN}, {universal}")
    assert [ref.id for ref in refs] == [GEN, universal]


# -- 14. test_connection: unknown generation vs unknown route --------------------------------------


def _nest_404(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    body = {"message": f"Cannot {method} {path}", "error": "Not Found", "statusCode": 404}
    return 404, {"Content-Type": "application/json"}, json.dumps(body).encode()


def test_test_connection_fails_when_every_route_is_unknown(monkeypatch):
    # A server with no Luma route at all (a wrong host or path prefix): its 404s are not "key accepted".
    with StubServer(lambda request: _nest_404(request.method, request.path.split("?")[0])) as server:
        hook = set_conn(monkeypatch, host=server.url, password=SENTINEL_KEY, extra={"max_retries": 0})
        ok, message = hook.test_connection()
    assert ok is False
    assert message == (
        f"The server at {server.url} has no Luma endpoints: it answered 'no such route' (404 'Cannot GET ...') on "
        "the luma-ai and the video endpoints, so the key was not checked. It is not the AI/ML API, or the host's "
        "path is wrong: check the connection's host."
    )
    assert len(server.requests) == 2  # one probe per family, no retries of a route 404


def test_test_connection_passes_when_only_the_generation_is_unknown(monkeypatch):
    def answer(request):
        body = {"message": "Generation not found", "path": request.path, "statusCode": 404, "requestId": "r-1"}
        return 404, {"Content-Type": "application/json"}, json.dumps(body).encode()

    with StubServer(answer) as server:
        ok, message = set_conn(monkeypatch, host=server.url, password=SENTINEL_KEY).test_connection()
    assert (ok, message) == (True, f"The Luma API at {server.url} accepted the key on the luma-ai and video endpoints.")
